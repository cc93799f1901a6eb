--- Prefect's own filter shape: checked against the grammar and copied.
-- Values pass through unchanged (state types exact-case, UUIDs and times as
-- written, once checked); the copy is fresh, so the caller's tables are never
-- shared with, or changed by, the compiled body.

local schema = require("prefect.filter.schema")
local values = require("prefect.filter.values")
local time = require("prefect.filter.time")
local suggest = require("prefect.filter.suggest")
local fail = require("prefect.filter.fail")

local raw = {}

local STATE_HELP = fail.list(schema.STATE_TYPES)

local function sorted_keys(t, path)
   local keys = {}
   for k in pairs(t) do
      if type(k) ~= "string" then
         fail.raise(path .. ": unexpected key " .. fail.show(k)
            .. " (keys are names; a list is not accepted here)")
      end
      keys[#keys + 1] = k
   end
   table.sort(keys)
   return keys
end
raw.sorted_keys = sorted_keys

--- Raise "unknown key" naming the place, with the nearest name or the list of names.
function raw.unknown_key(key, where, candidates, aliases)
   local near = suggest.nearest(key, candidates, aliases)
   if near then
      fail.raise("unknown key " .. fail.show(key) .. " in " .. where .. "; did you mean "
         .. fail.show(near) .. "?")
   end
   local sorted = {}
   for i = 1, #candidates do sorted[i] = candidates[i] end
   table.sort(sorted)
   fail.raise("unknown key " .. fail.show(key) .. " in " .. where .. " (accepted: "
      .. fail.list(sorted) .. ")")
end

--- Raise when an entry of the grammar does not exist on the target server.
-- `label` names what the caller wrote when it differs from the Prefect path.
function raw.check_version(entry, path, ctx, label)
   if not ctx.server then return end
   local ok, why = schema.available(entry, ctx.server)
   if not ok then
      local what = (label and label ~= path) and (label .. " (" .. path .. ")") or path
      fail.raise(what .. " " .. why .. "; the target server is " .. ctx.server_text)
   end
end

--- Check every field and operator of a (compiled or copied) object against the server version.
function raw.check_versions(obj, object_name, path, ctx, label)
   if not ctx.server or type(obj) ~= "table" then return end
   local def = schema.objects[object_name]
   for _, k in ipairs(sorted_keys(obj, path)) do
      local entry = def.fields[k]
      if entry then
         local p = fail.path(path, k)
         raw.check_version(entry, p, ctx, label)
         if entry.object then raw.check_versions(obj[k], entry.object, p, ctx, label) end
      end
   end
end

local LIST_HELP = {
   uuid_list = "a list of UUIDs", string_list = "a list of strings",
   state_type_list = "a list of state types",
}

local function check_element(kind, x, path)
   if kind == "uuid_list" then
      if not values.uuid(x) then
         fail.raise(path .. ": " .. fail.show(x) .. " is not " .. values.UUID_HELP)
      end
   elseif kind == "state_type_list" then
      if not values.state_type(x, true) then
         local msg = path .. ": " .. fail.show(x) .. " is not a state type (" .. STATE_HELP .. ")"
         local up = values.state_type(x, false)
         if up then
            msg = msg .. "; Prefect's own shape is case-sensitive: write " .. fail.show(up)
               .. " (or use the friendly key state, which is not)"
         end
         fail.raise(msg)
      end
   elseif type(x) ~= "string" then
      fail.raise(path .. ": expected a string, got " .. fail.kind(x, values.null))
   end
end

local function copy_value(kind, v, path)
   if values.is_null(v) then return v end
   if LIST_HELP[kind] then
      if type(v) ~= "table" or not values.is_list(v) then
         fail.raise(path .. ": expected " .. LIST_HELP[kind] .. ", got " .. fail.kind(v, values.null))
      end
      local out = values.array()
      for i = 1, #v do
         check_element(kind, v[i], fail.path(path, i))
         out[i] = v[i]
      end
      return out
   elseif kind == "string" then
      if type(v) ~= "string" then
         fail.raise(path .. ": expected a string, got " .. fail.kind(v, values.null))
      end
   elseif kind == "boolean" then
      if type(v) ~= "boolean" then
         fail.raise(path .. ": expected a boolean, got " .. fail.kind(v, values.null))
      end
   elseif kind == "integer" then
      if not values.is_whole(v) then fail.raise(path .. ": expected an integer, got " .. fail.show(v)) end
   elseif kind == "datetime" then
      if type(v) ~= "string" then
         fail.raise(path .. ": expected an ISO-8601 string, got " .. fail.kind(v, values.null)
            .. " (Prefect's own shape takes strings; the friendly time keys also take epoch numbers"
            .. " and date tables)")
      end
      local ok, why = time.normalize(v)
      if not ok then fail.raise(path .. ": " .. fail.show(v) .. " is not an ISO-8601 time: " .. why) end
   end
   return v
end

-- An after_ later than the before_ of the same time filter can match nothing:
-- a mistake, reported as the friendly keys report it.
local function check_time_range(out, def, path)
   local a, b = out.after_, out.before_
   if type(a) ~= "string" or type(b) ~= "string" or def.fields.after_.value ~= "datetime" then return end
   local na, nb = time.normalize(a), time.normalize(b)
   if na > nb then
      fail.raise(fail.path(path, "after_") .. " (" .. a .. ") is later than " .. fail.path(path, "before_")
         .. " (" .. b .. "), so nothing can match")
   end
end

--- Check and copy one filter object of Prefect's shape.
-- @param v the caller's value (a table, or JSON null)
-- @param object_name a name from schema.objects
-- @param path where it is in the caller's query (for messages)
-- @param ctx { server = parsed version or nil, server_text = string }
function raw.copy_object(v, object_name, path, ctx)
   if values.is_null(v) then return v end
   local def = schema.objects[object_name]
   if type(v) ~= "table" or (next(v) ~= nil and values.is_list(v)) then
      fail.raise(path .. ": expected a table with keys " .. fail.list(schema.field_names(object_name))
         .. ", got " .. fail.kind(v, values.null))
   end
   local out = {}
   for _, k in ipairs(sorted_keys(v, path)) do
      local x = v[k]
      local p = fail.path(path, k)
      if k == "operator" and def.operator then
         if values.is_null(x) then
            fail.raise(p .. ": null is rejected by Prefect (422); leave the key out for the default and_")
         elseif x ~= "and_" and x ~= "or_" then
            fail.raise(p .. ": " .. fail.show(x) .. " is not an operator (and_, or_)")
         end
         out[k] = x
      else
         local entry = def.fields[k]
         if not entry then raw.unknown_key(k, path, schema.field_names(object_name)) end
         raw.check_version(entry, p, ctx)
         if entry.object then
            out[k] = raw.copy_object(x, entry.object, p, ctx)
         else
            out[k] = copy_value(entry.value, x, p)
         end
      end
   end
   check_time_range(out, def, path)
   return out
end

return raw
