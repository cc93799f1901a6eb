--- Combining compiled pieces of a filter body, and the checks on the result.
-- * `and_into` ANDs one piece into the body: fields that do not overlap are
--   joined; setting the same criterion twice, or adding to an object whose
--   criteria are ORed, is an error (Prefect has one operator per object).
-- * `any_of` ORs pieces: each must come down to one criterion of the same
--   object, each criterion once (lists of `any_` are joined, which means the
--   same); anything else cannot be said in Prefect's shape and is an error.
-- * `check` rejects bodies whose meaning Prefect would silently change: an
--   ineffective criterion under `or_` (it counts as true, §3.1 rule 6), a
--   flow-run state sub-filter with both `any_` and `not_any_` (dropped by the
--   3.1.9 to 3.8 source, §3.4; a live 3.9.1 applies both, so it passes when the
--   target server is 3.9 or later), `flow_run_id` with `is_null_ = true` and
--   `any_` (any_ ignored).

local schema = require("prefect.filter.schema")
local values = require("prefect.filter.values")
local fail = require("prefect.filter.fail")

local merge = {}

local function is_object(v)
   return type(v) == "table" and getmetatable(v) ~= values.ARRAY_MT and not values.is_null(v)
end

local function sorted_keys(t)
   local keys = {}
   for k in pairs(t) do keys[#keys + 1] = k end
   table.sort(keys)
   return keys
end

local function criteria(obj)
   local keys = {}
   for _, k in ipairs(sorted_keys(obj)) do
      if k ~= "operator" then keys[#keys + 1] = k end
   end
   return keys
end

local function join(path, k)
   if path == nil or path == "" then return k end
   return path .. "." .. k
end

local function record(origins, path, v, label)
   origins[path] = origins[path] or label
   if is_object(v) then
      for k, x in pairs(v) do record(origins, join(path, k), x, label) end
   end
end

--- AND `src` (a table of fields) into `dst` at `path` ("" or nil for the body itself).
-- `origins` maps each path already in dst to the label of what set it.
function merge.and_into(dst, src, path, origins, label)
   local dst_n = #criteria(dst)
   if #criteria(src) > 0 and dst_n > 0 and (src.operator == "or_" or dst.operator == "or_") then
      fail.raise(tostring(path) .. ": " .. fail.show(origins[path] or "?") .. " and " .. fail.show(label)
         .. " both filter it and one of them ORs its criteria; Prefect has one operator per object,"
         .. " so they cannot be combined (put both in one any_of, or AND them outside it)")
   end
   for _, k in ipairs(sorted_keys(src)) do
      local p = join(path, k)
      local a, b = dst[k], src[k]
      if k == "operator" then
         if a ~= b then
            if dst_n > 0 and b == "or_" then
               fail.raise(p .. ": " .. fail.show(label) .. " sets or_ on criteria set by "
                  .. fail.show(origins[path] or "?") .. "; say the OR in one place")
            end
            if dst_n == 0 or a == nil then dst[k] = b end
         end
         origins[p] = origins[p] or label
      elseif a == nil then
         dst[k] = b
         record(origins, p, b, label)
      elseif is_object(a) and is_object(b) then
         merge.and_into(a, b, p, origins, label)
      else
         fail.raise(p .. " is set by both " .. fail.show(origins[p] or "?") .. " and " .. fail.show(label)
            .. "; give it once")
      end
   end
end

local function union(lists)
   local out, seen = values.array(), {}
   for _, list in ipairs(lists) do
      for i = 1, #list do
         local x = list[i]
         if not seen[x] then
            seen[x] = true
            out[#out + 1] = x
         end
      end
   end
   return out
end

local function labels_of(items)
   local seen, out = {}, {}
   for _, it in ipairs(items) do
      if not seen[it.label] then
         seen[it.label] = true
         out[#out + 1] = it.label
      end
   end
   return table.concat(out, " and ")
end

-- OR the values of `items` ({value =, label =}), all filter objects of one kind at `path`.
local function or_object(object_name, items, path)
   local def = schema.objects[object_name]
   local by_field, fields = {}, {}
   for _, item in ipairs(items) do
      local v = item.value
      if not is_object(v) then
         fail.raise(item.label .. ": " .. path .. " is null, which is no criterion; under an OR it would"
            .. " match every task run")
      end
      local keys = criteria(v)
      if #keys == 0 then
         fail.raise(item.label .. " sets no criterion in " .. path .. "; under an OR an empty filter matches"
            .. " every task run (Prefect treats it as true)")
      end
      if #keys > 1 and v.operator ~= "or_" then
         fail.raise(item.label .. " sets " .. path .. "." .. keys[1] .. " and " .. path .. "." .. keys[2]
            .. ", which Prefect ANDs; inside any_of each branch must come down to one criterion, because"
            .. " Prefect has a single operator per object")
      end
      for _, k in ipairs(keys) do
         if not by_field[k] then
            by_field[k] = {}
            fields[#fields + 1] = k
         end
         local list = by_field[k]
         list[#list + 1] = { value = v[k], label = item.label }
      end
   end
   table.sort(fields)
   local out = {}
   for _, k in ipairs(fields) do
      local list, entry, p = by_field[k], def.fields[k], path .. "." .. k
      if #list == 1 then
         out[k] = list[1].value
      elseif entry.object then
         out[k] = or_object(entry.object, list, p)
      elseif k == "any_" then
         local lists = {}
         for i, it in ipairs(list) do
            if not (type(it.value) == "table" and values.is_list(it.value)) then
               fail.raise(it.label .. ": " .. p .. " is not a list, so it cannot be joined under an OR")
            end
            lists[i] = it.value
         end
         out[k] = union(lists)
      else
         fail.raise(labels_of(list) .. " each set " .. p .. "; Prefect can OR different criteria, but not"
            .. " two values of one (" .. k .. " can appear once)")
      end
   end
   if #fields > 1 then
      if not def.operator then
         fail.raise(labels_of(items) .. " would OR " .. path .. "." .. fields[1] .. " with " .. path .. "."
            .. fields[2] .. ", but Prefect always ANDs the criteria of " .. path)
      end
      out.operator = "or_"
   end
   return out
end

--- OR compiled bodies (each a table of groups). `labels[i]` names body i in messages.
function merge.any_of(bodies, labels)
   if #bodies == 1 then return bodies[1] end
   local group, group_label
   local items = {}
   for i, body in ipairs(bodies) do
      local groups = sorted_keys(body)
      if #groups == 0 then
         fail.raise(labels[i] .. " is empty; under an OR an empty filter matches every task run")
      elseif #groups > 1 then
         fail.raise(labels[i] .. " filters " .. table.concat(groups, " and ")
            .. ", which Prefect always ANDs; inside any_of each branch must filter one of task_runs,"
            .. " flow_runs, flows, deployments")
      elseif group and groups[1] ~= group then
         fail.raise(group_label .. " filters " .. group .. " but " .. labels[i] .. " filters " .. groups[1]
            .. "; Prefect ANDs task_runs, flow_runs, flows and deployments, so an OR across them cannot be"
            .. " expressed")
      end
      group, group_label = groups[1], group_label or labels[i]
      items[i] = { value = body[group], label = labels[i] }
   end
   return { [group] = or_object(schema.GROUP_OBJECT[group], items, group) }
end

local function value_effective(op, x)
   if values.is_null(x) then return false end
   if op == "like_" then return x ~= "" end
   if op == "all_" or op == "not_any_" then return #x > 0 end
   return true
end

--- Whether a filter object restricts anything (false: Prefect evaluates it as TRUE).
function merge.effective(v, object_name)
   if not is_object(v) then return false end
   local def = schema.objects[object_name]
   if def.ignored then return false end
   if def.empty_is_criterion and v.is_null_ == nil then return true end
   local n, any, all = 0, false, true
   for _, k in ipairs(criteria(v)) do
      local entry = def.fields[k]
      local e
      if entry.object then
         e = merge.effective(v[k], entry.object)
      else
         e = value_effective(k, v[k])
      end
      n = n + 1
      if e then any = true else all = false end
   end
   if n == 0 then return false end
   if v.operator == "or_" then return all end
   return any
end

-- A state sub-filter may hold both any_ and not_any_ from this version on (checked live on 3.9.1).
local BOTH_STATE_OPERATORS = { since = "3.9.0" }

local function check_object(v, object_name, path, server)
   if not is_object(v) then return end
   local def = schema.objects[object_name]
   if v.operator == "or_" and #criteria(v) > 1 then
      for _, k in ipairs(criteria(v)) do
         local entry = def.fields[k]
         local ok
         if entry.object and schema.objects[entry.object].ignored then
            ok = true -- not a criterion at all: the server drops it (checked live on 3.9.1)
         elseif entry.object then
            ok = merge.effective(v[k], entry.object)
         else
            ok = value_effective(k, v[k])
         end
         if not ok then
            fail.raise(path .. "." .. k .. " holds no effective criterion (an empty filter, like_ \"\","
               .. " all_ [], not_any_ [] or null); under " .. path .. "'s operator or_ Prefect counts it"
               .. " as true, so " .. path .. " would match everything")
         end
      end
   end
   if def.exclusive and not (server and schema.available(BOTH_STATE_OPERATORS, server)) then
      local a, b = def.exclusive[1], def.exclusive[2]
      if v[a] ~= nil and v[b] ~= nil and not values.is_null(v[a]) and not values.is_null(v[b]) then
         fail.raise(path .. " has both " .. a .. " and " .. b .. "; Prefect 3.1.9 to 3.8 silently ignore such"
            .. " a filter (3.9 applies both), so give only one of them, or the server option 3.9 or later")
      end
   end
   if object_name == "TaskRunFilterFlowRunId" and v.is_null_ == true and v.any_ ~= nil
      and not values.is_null(v.any_) then
      fail.raise(path .. " has is_null_ = true (no flow run) and any_; Prefect then ignores any_,"
         .. " so give only one of them")
   end
   for _, k in ipairs(criteria(v)) do
      local entry = def.fields[k]
      if entry and entry.object then check_object(v[k], entry.object, path .. "." .. k, server) end
   end
end

--- Raise if the body holds something Prefect would silently read differently than written.
function merge.check(body, server)
   for _, group in ipairs(schema.GROUPS) do
      check_object(body[group], schema.GROUP_OBJECT[group], group, server)
   end
end

return merge
