--- The friendly keys: what each one means in Prefect's shape.
-- Each friendly field has a shape (how its value is read) and a target (the
-- Prefect field it fills). Values are checked and normalised here (UUIDs to
-- lowercase 8-4-4-4-12, state types to upper case, times to UTC ISO-8601 with
-- microseconds), and errors name the path as the caller wrote it.

local schema = require("prefect.filter.schema")
local values = require("prefect.filter.values")
local time = require("prefect.filter.time")
local fail = require("prefect.filter.fail")
local raw = require("prefect.filter.raw")
local suggest = require("prefect.filter.suggest")

local friendly = {}

local STATE_HELP = fail.list(schema.STATE_TYPES)

-- Friendly operator names, with or without Prefect's trailing underscore.
local OPERATORS = {
   any = "any_", not_any = "not_any_", like = "like_", all = "all_", is_null = "is_null_",
   before = "before_", after = "after_", exists = "exists_", eq = "eq_",
}
-- (Prefect's names are collected first: adding keys to a table while pairs()
-- walks it is undefined, and under 5.4's per-run hash seeds it skipped some.)
local prefect_names = {}
for _, op in pairs(OPERATORS) do prefect_names[#prefect_names + 1] = op end
for _, op in ipairs(prefect_names) do OPERATORS[op] = op end

local function got(v)
   return fail.kind(v, values.null)
end

local function no_null(v, path)
   if values.is_null(v) then
      fail.raise(path .. ": null is not a filter; leave the key out for no filter")
   end
end

-- A string or a list of strings, checked element by element with `each`.
local function list_of(v, path, each, what, allow_empty)
   if type(v) == "string" then return values.array({ each(v, path) }) end
   if type(v) ~= "table" or not values.is_list(v) then
      fail.raise(path .. ": expected " .. what .. ", got " .. got(v))
   end
   if #v == 0 and not allow_empty then
      fail.raise(path .. ": an empty list matches no run; leave the key out for no filter"
         .. " (or write {any = {}} to match nothing on purpose)")
   end
   local out = values.array()
   for i = 1, #v do out[i] = each(v[i], fail.path(path, i)) end
   return out
end

local function each_uuid(x, path)
   local u = values.uuid(x)
   if not u then fail.raise(path .. ": " .. fail.show(x) .. " is not " .. values.UUID_HELP) end
   return u
end

local function each_string(x, path)
   if type(x) ~= "string" then fail.raise(path .. ": expected a string, got " .. got(x)) end
   return x
end

local function each_state(x, path)
   local s = values.state_type(x, false)
   if not s then
      local msg = path .. ": " .. fail.show(x) .. " is not a state type (" .. STATE_HELP .. ")"
      local near = type(x) == "string" and suggest.nearest(x:upper(), schema.STATE_TYPES)
      if near then msg = msg .. "; did you mean " .. fail.show(near) .. "?" end
      fail.raise(msg)
   end
   return s
end

local function each_time(x, path)
   local s, why, key = time.normalize(x)
   if not s then
      if key ~= nil then
         raw.unknown_key(tostring(key), path .. " (a date table)", {
            "year", "month", "day", "hour", "min", "sec", "utc", "offset", "isdst", "yday", "wday",
         }, { mon = "month", mday = "day", minute = "min", second = "sec", hours = "hour" })
      end
      fail.raise(path .. ": " .. (type(x) == "table" and "the date table" or fail.show(x))
         .. " is not a time: " .. why)
   end
   return s
end

local function want_boolean(x, path)
   if type(x) ~= "boolean" then fail.raise(path .. ": expected true or false, got " .. got(x)) end
   return x
end

local LIST_TEXT = {
   uuid = "a UUID or a list of UUIDs", string = "a string or a list of strings",
   state = "a state type or a list of state types",
}
local EACH = { uuid = each_uuid, string = each_string, state = each_state }

-- Read an operator table {op = value, ...}; `ops` maps friendly op name -> reader(value, path).
local function operator_table(v, path, ops, order, prefect)
   local out = {}
   for _, k in ipairs(raw.sorted_keys(v, path)) do
      local op = OPERATORS[k]
      local reader = op and ops[op]
      if not reader then
         local names = {}
         for _, name in ipairs(order) do names[#names + 1] = name:sub(1, -2) end
         if op and prefect then
            fail.raise(path .. ": Prefect's " .. prefect .. " has no " .. op .. " (accepted: "
               .. fail.list(names) .. ")")
         end
         raw.unknown_key(k, path, names)
      end
      if out[op] ~= nil then
         local short = op:sub(1, -2)
         fail.raise(path .. ": " .. short .. " is given twice (as " .. short .. " and " .. op .. ")")
      end
      local x = v[k]
      no_null(x, fail.path(path, k))
      out[op] = reader(x, fail.path(path, k))
   end
   if next(out) == nil then
      fail.raise(path .. ": an empty table sets no criterion; leave the key out for no filter")
   end
   return out
end

local function is_operator_table(v)
   return type(v) == "table" and next(v) ~= nil and not values.is_list(v)
end

local function list_reader(kind)
   return function(x, p) return list_of(x, p, EACH[kind], LIST_TEXT[kind], true) end
end

local function ops_help(order)
   local names = {}
   for _, op in ipairs(order) do names[#names + 1] = op:sub(1, -2) .. " = ..." end
   return "{" .. table.concat(names, ", ") .. "}"
end

-- Shapes: each reads a friendly value into the Prefect object at the target.
-- `spec.ops` lists the Prefect operators the target has (in display order).
local shapes = {}

-- ids/strings/states: one value or a list -> any_; true/false -> is_null_ (false: not set).
local function list_shape(kind)
   return function(v, path, spec)
      local readers = {}
      for _, op in ipairs(spec.ops) do
         if op == "is_null_" then
            readers[op] = want_boolean
         else
            readers[op] = list_reader(kind)
         end
      end
      if type(v) == "boolean" and readers.is_null_ then return { is_null_ = not v } end
      if is_operator_table(v) then return operator_table(v, path, readers, spec.ops, spec.prefect) end
      if type(v) == "string" or type(v) == "table" then
         return { any_ = list_of(v, path, EACH[kind], LIST_TEXT[kind], false) }
      end
      local text = LIST_TEXT[kind]
      if readers.is_null_ then text = text .. ", true/false (set or not)" end
      fail.raise(path .. ": expected " .. text .. " or " .. ops_help(spec.ops) .. ", got " .. got(v))
   end
end
shapes.ids = list_shape("uuid")
shapes.strings = list_shape("string")
shapes.states = list_shape("state")

-- names: a string -> like_ (substring, case-insensitive); a list -> any_ (exact).
function shapes.names(v, path, spec)
   local readers = {
      any_ = list_reader("string"),
      like_ = function(x, p) return each_string(x, p) end,
   }
   if type(v) == "string" then return { like_ = v } end
   if is_operator_table(v) then return operator_table(v, path, readers, spec.ops, spec.prefect) end
   if type(v) == "table" then return { any_ = list_of(v, path, each_string, LIST_TEXT.string, false) } end
   fail.raise(path .. ": expected a string (like_: substring), a list of strings (any_: exact) or "
      .. ops_help(spec.ops) .. ", got " .. got(v))
end

-- like: a string -> like_.
function shapes.like(v, path, spec)
   if type(v) == "string" then return { like_ = v } end
   if is_operator_table(v) then
      return operator_table(v, path, { like_ = each_string }, spec.ops, spec.prefect)
   end
   fail.raise(path .. ": expected a string (like_: substring) or {like = ...}, got " .. got(v))
end

-- tags: a string or a list -> all_ (has every one); true/false -> has tags / has none.
function shapes.tags(v, path, spec)
   local readers = {}
   for _, op in ipairs(spec.ops) do
      readers[op] = (op == "is_null_") and want_boolean or list_reader("string")
   end
   if type(v) == "boolean" then return { is_null_ = not v } end
   if is_operator_table(v) then return operator_table(v, path, readers, spec.ops, spec.prefect) end
   if type(v) == "string" then return { all_ = values.array({ v }) } end
   if type(v) == "table" then
      if #v == 0 then
         fail.raise(path .. ": an empty list filters nothing (all_ [] is ignored by Prefect); leave the key"
            .. " out, or write false for runs without tags")
      end
      return { all_ = list_of(v, path, each_string, LIST_TEXT.string, false) }
   end
   fail.raise(path .. ": expected a tag, a list of tags (all_: has every one), true/false (has tags or"
      .. " not) or " .. ops_help(spec.ops) .. ", got " .. got(v))
end

-- times: {after = t, before = t} (inclusive), true/false -> has the time or not.
function shapes.times(v, path, spec)
   local readers = {}
   for _, op in ipairs(spec.ops) do
      readers[op] = (op == "is_null_") and want_boolean or each_time
   end
   if type(v) == "boolean" then
      if not readers.is_null_ then
         fail.raise(path .. ": Prefect's " .. spec.prefect .. " has no is_null_, so true/false cannot be"
            .. " asked; use " .. ops_help(spec.ops))
      end
      return { is_null_ = not v }
   end
   if is_operator_table(v) and v.year == nil then
      local out = operator_table(v, path, readers, spec.ops, spec.prefect)
      if out.after_ and out.before_ and out.after_ > out.before_ then
         fail.raise(path .. ": after (" .. out.after_ .. ") is later than before (" .. out.before_
            .. "), so nothing can match")
      end
      return out
   end
   local forms = ops_help(spec.ops)
   if readers.is_null_ then forms = forms .. " or true/false" end
   fail.raise(path .. ": expected " .. forms .. ", got " .. got(v)
      .. (type(v) ~= "boolean" and " (a time alone does not say after or before)" or ""))
end

-- flag: true/false -> the one boolean operator (exists_, eq_).
function shapes.flag(v, path, spec)
   local op = spec.ops[1]
   if type(v) == "boolean" then return { [op] = v } end
   if is_operator_table(v) then
      return operator_table(v, path, { [op] = want_boolean }, spec.ops, spec.prefect)
   end
   fail.raise(path .. ": expected true or false, got " .. got(v))
end

-- has: true -> has one (is_null_ = false); false -> has none.
function shapes.has(v, path, spec)
   if type(v) == "boolean" then return { is_null_ = not v } end
   if is_operator_table(v) then
      return operator_table(v, path, { is_null_ = want_boolean }, spec.ops, spec.prefect)
   end
   fail.raise(path .. ": expected true (has one) or false (has none), got " .. got(v))
end

-- created_by: {id = uuid(s), type = string(s), is_null = bool}, or true/false.
function shapes.created_by(v, path)
   if type(v) == "boolean" then return { is_null_ = not v } end
   if is_operator_table(v) then
      local out = {}
      for _, k in ipairs(raw.sorted_keys(v, path)) do
         local p, x = fail.path(path, k), v[k]
         no_null(x, p)
         if k == "id" or k == "id_" then
            out.id_ = list_of(x, p, each_uuid, LIST_TEXT.uuid, true)
         elseif k == "type" or k == "type_" then
            out.type_ = list_of(x, p, each_string, LIST_TEXT.string, true)
         elseif k == "is_null" or k == "is_null_" then
            out.is_null_ = want_boolean(x, p)
         else
            raw.unknown_key(k, path, { "id", "type", "is_null" })
         end
      end
      return out
   end
   fail.raise(path .. ": expected {id = ..., type = ..., is_null = ...} or true/false, got " .. got(v))
end

-- background: true -> no flow run (flow_run_id.is_null_ = true); false -> has a flow run.
function shapes.background(v, path)
   return { is_null_ = want_boolean(v, path) }
end

-- Field tables: friendly key -> { shape, target path in the group, Prefect operators }.
local function f(shape, target, ops)
   return { shape = shape, target = target, ops = ops }
end

local TASK_RUN_FIELDS = {
   id = f("ids", { "id" }, { "any_" }),
   name = f("names", { "name" }, { "like_", "any_" }),
   tags = f("tags", { "tags" }, { "all_", "is_null_" }),
   state = f("states", { "state", "type" }, { "any_" }),
   state_name = f("strings", { "state", "name" }, { "any_" }),
   started = f("times", { "start_time" }, { "after_", "before_", "is_null_" }),
   expected = f("times", { "expected_start_time" }, { "after_", "before_" }),
   ended = f("times", { "end_time" }, { "after_", "before_", "is_null_" }),
   flow_run_id = f("ids", { "flow_run_id" }, { "any_", "is_null_" }),
   background = f("background", { "flow_run_id" }, { "is_null_" }),
   subflow = f("flag", { "subflow_runs" }, { "exists_" }),
}

local FLOW_RUN_FIELDS = {
   id = f("ids", { "id" }, { "any_", "not_any_" }),
   name = f("names", { "name" }, { "like_", "any_" }),
   tags = f("tags", { "tags" }, { "all_", "any_", "is_null_" }),
   state = f("states", { "state", "type" }, { "any_", "not_any_" }),
   state_name = f("strings", { "state", "name" }, { "any_", "not_any_" }),
   deployment_id = f("ids", { "deployment_id" }, { "any_", "is_null_" }),
   work_queue_name = f("strings", { "work_queue_name" }, { "any_", "is_null_" }),
   flow_version = f("strings", { "flow_version" }, { "any_" }),
   started = f("times", { "start_time" }, { "after_", "before_", "is_null_" }),
   ended = f("times", { "end_time" }, { "after_", "before_", "is_null_" }),
   expected = f("times", { "expected_start_time" }, { "after_", "before_" }),
   next_scheduled = f("times", { "next_scheduled_start_time" }, { "after_", "before_" }),
   parent_flow_run_id = f("ids", { "parent_flow_run_id" }, { "any_" }),
   parent_task_run_id = f("ids", { "parent_task_run_id" }, { "any_", "is_null_" }),
   idempotency_key = f("strings", { "idempotency_key" }, { "any_", "not_any_" }),
   created_by = f("created_by", { "created_by" }, { "id_", "type_", "is_null_" }),
}

local FLOW_FIELDS = {
   id = f("ids", { "id" }, { "any_", "not_any_" }),
   name = f("names", { "name" }, { "like_", "any_" }),
   tags = f("tags", { "tags" }, { "all_", "is_null_" }),
   deployment = f("has", { "deployment" }, { "is_null_" }),
}

local DEPLOYMENT_FIELDS = {
   id = f("ids", { "id" }, { "any_", "not_any_" }),
   name = f("names", { "name" }, { "like_", "any_" }),
   flow_or_deployment_name = f("like", { "flow_or_deployment_name" }, { "like_" }),
   paused = f("flag", { "paused" }, { "eq_" }),
   tags = f("tags", { "tags" }, { "all_", "any_", "is_null_" }),
   work_queue_name = f("strings", { "work_queue_name" }, { "any_" }),
   is_schedule_active = f("flag", { "is_schedule_active" }, { "eq_" }),
}

-- The friendly scopes: where their keys write, and which keys they have.
friendly.SCOPES = {
   task_run = { group = "task_runs", fields = TASK_RUN_FIELDS },
   flow_run = { group = "flow_runs", fields = FLOW_RUN_FIELDS },
   flow = { group = "flows", fields = FLOW_FIELDS },
   deployment = { group = "deployments", fields = DEPLOYMENT_FIELDS },
}

-- Prefect's names, or likely slips, pointing at the friendly key (for "did you mean").
friendly.ALIASES = {
   start_time = "started", end_time = "ended", expected_start_time = "expected",
   next_scheduled_start_time = "next_scheduled", subflow_runs = "subflow", state_type = "state",
   states = "state", tag = "tags", flowrun = "flow_run", flows_runs = "flow_runs",
   deployment_name = "deployment", flow_name = "flow", flow_run_name = "flow_run",
}

function friendly.field_names(scope)
   local names = {}
   for k in pairs(friendly.SCOPES[scope].fields) do names[#names + 1] = k end
   table.sort(names)
   return names
end

local function prefect_path(group, target)
   return group .. "." .. table.concat(target, ".")
end

--- Compile one friendly key of a scope into a piece of the body ({group = {...}}).
-- @return the piece, or nil when `key` is not a field of the scope
function friendly.field(scope_name, key, v, path)
   local scope = friendly.SCOPES[scope_name]
   local spec = scope.fields[key]
   if not spec then return nil end
   no_null(v, path)
   local obj = shapes[spec.shape](v, path, {
      ops = spec.ops, prefect = prefect_path(scope.group, spec.target),
   })
   for i = #spec.target, 1, -1 do obj = { [spec.target[i]] = obj } end
   return { [scope.group] = obj }
end

return friendly
