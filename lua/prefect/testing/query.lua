-- The filter engine of the bundled test server: Prefect's body schemas (validated the way the
-- server's pydantic does it: v1 messages in Prefect 2 mode, v2 messages in Prefect 3 mode), the
-- meaning of every filter operator on a SQLite-backed server, the sorts, and paging.
--
-- Runs are kept as columns (store.tr.*) with NULL as `false`, timestamps as microseconds since
-- the epoch; every sort order is computed once and cached, so a page is a walk along a cached
-- order that stops as soon as offset + limit matches are found.
local calendar = require("prefect.calendar")
local dataset = require("prefect.testing.dataset")

local json = dataset.json
local NULL = json.null
local floor, format, concat = math.floor, string.format, table.concat

local query = {}

---------------------------------------------------------------------------------------------------
-- Datetimes

local function leap(y) return (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0 end
local MDAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

-- Returns micros | nil, kind where kind is "parse" (not a datetime at all) or a Python ValueError
-- text for out-of-range fields.
local function parse_iso(s, v3)
   local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
   if not y and not v3 then
      -- pendulum also reads a bare year-month as the first of that month
      y, mo = s:match("^(%d%d%d%d)%-(%d%d)$")
      if y then d, rest = "01", "" end
   end
   if not y then
      y, mo, d, rest = s:match("^(%d%d%d%d)(%d%d)(%d%d)(.*)$")
      if not y or v3 then return nil, "parse" end
   end
   y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
   local h, mi, sec, us, off = 0, 0, 0, 0, 0
   if rest ~= "" then
      local sep, tpart = rest:sub(1, 1), rest:sub(2)
      if not (sep == "T" or sep == " " or (v3 and (sep == "t" or sep == "_"))) then return nil, "parse" end
      local hh, mm, r2 = tpart:match("^(%d%d):(%d%d)(.*)$")
      if not hh then
         if v3 then return nil, "parse" end
         hh, mm, r2 = tpart:match("^(%d%d)(%d%d)(.*)$")
         if not hh then
            hh, r2 = tpart:match("^(%d%d)(.*)$")
            mm = "00"
         end
         if not hh then return nil, "parse" end
      end
      h, mi = tonumber(hh), tonumber(mm)
      local ss, r3 = r2:match("^:(%d%d)(.*)$")
      if not ss and not v3 then ss, r3 = r2:match("^(%d%d)(.*)$") end
      if ss then
         sec = tonumber(ss)
         local frac, r4 = r3:match("^[.,](%d+)(.*)$")
         if frac then
            us = tonumber((frac .. "00000"):sub(1, 6))
            r3 = r4
         end
      else
         r3 = r2
      end
      if r3 == "Z" or (v3 and r3 == "z") then
         off = 0
      elseif r3 ~= "" then
         local sign, oh, om = r3:match("^([-+])(%d%d):?(%d%d)$")
         if not sign then
            sign, oh = r3:match("^([-+])(%d%d)$")
            om = "00"
         end
         if not sign then return nil, "parse" end
         off = (tonumber(oh) * 60 + tonumber(om)) * 60
         if sign == "-" then off = -off end
      end
   end
   if mo < 1 or mo > 12 then return nil, "month must be in 1..12" end
   local dim = MDAYS[mo] + ((mo == 2 and leap(y)) and 1 or 0)
   if d < 1 or d > dim then return nil, "day is out of range for month" end
   if h > 23 then return nil, "hour must be in 0..23" end
   if mi > 59 then return nil, "minute must be in 0..59" end
   if sec > 59 then return nil, "second must be in 0..59" end
   local secs = calendar.days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off
   return secs * 1000000 + us
end
query.parse_timestamp = function(s) return (parse_iso(s, false)) end

-- Unix time as pydantic v2 reads it: seconds, or milliseconds above 2e10.
local function epoch_micros(x)
   if math.abs(x) > 2e10 then x = x / 1000 end
   return floor(x * 1000000 + 0.5)
end

---------------------------------------------------------------------------------------------------
-- Python-ish text of JSON values (pydantic v1 coerces numbers to str with str()).

local function py_str(v)
   if type(v) == "number" then return json.int_text(v) end
   if json.is_float(v) then return json.float_repr(v.value) end
   if v == true then return "True" end
   if v == false then return "False" end
   return nil
end

local function is_object(v)
   return type(v) == "table" and v ~= NULL and not json.is_array(v) and not json.is_float(v)
end

---------------------------------------------------------------------------------------------------
-- Schemas

local function list(of) return { kind = "list", of = of } end
-- values3: the members on a Prefect 3 server, when they differ from 2.x's.
local function enum(name, values, values3)
   return { kind = "enum", name = name, values = values, values3 = values3 or values }
end

local STATE_TYPES = { "SCHEDULED", "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "CRASHED",
   "PAUSED", "CANCELLING" }
local OPERATOR = enum("Operator", { "and_", "or_" })
local TASK_RUN_SORTS = { "ID_DESC", "EXPECTED_START_TIME_ASC", "EXPECTED_START_TIME_DESC", "NAME_ASC",
   "NAME_DESC", "NEXT_SCHEDULED_START_TIME_ASC", "END_TIME_DESC" }
-- Prefect 3.9.1 (not 3.8.3) adds the two duration sorts.
local TASK_RUN_SORTS_3 = { "ID_DESC", "EXPECTED_START_TIME_ASC", "EXPECTED_START_TIME_DESC", "NAME_ASC",
   "NAME_DESC", "NEXT_SCHEDULED_START_TIME_ASC", "END_TIME_DESC", "DURATION_DESC", "DURATION_ASC" }
local TASK_RUN_SORT = enum("TaskRunSort", TASK_RUN_SORTS, TASK_RUN_SORTS_3)
local FLOW_RUN_SORTS = { "ID_DESC", "START_TIME_ASC", "START_TIME_DESC", "EXPECTED_START_TIME_ASC",
   "EXPECTED_START_TIME_DESC", "NAME_ASC", "NAME_DESC", "NEXT_SCHEDULED_START_TIME_ASC", "END_TIME_DESC" }
-- FlowSort, in the enum's order; /flows/filter's default is NAME_ASC.
local FLOW_SORTS = { "CREATED_DESC", "UPDATED_DESC", "NAME_ASC", "NAME_DESC" }

local FLOW_SORT = enum("FlowSort", FLOW_SORTS)
FLOW_SORT.default = "NAME_ASC"

local UUIDS, STRS = list("uuid"), list("str")

-- model(name, has_operator, fields): each field { name, type, only = 2|3 (exists only in that
-- major version), required_bool = true (2.x `is_null_: bool = False`) }.
local function model(name, op, fields)
   return { kind = "model", name = name, op = op, fields = fields }
end

local function times(name, with_null)
   local f = { { "before_", "datetime" }, { "after_", "datetime" } }
   if with_null then f[3] = { "is_null_", "bool" } end
   return model(name, false, f)
end

local SCHEMAS = {}

SCHEMAS.FlowFilter = model("FlowFilter", true, {
   { "id", model("FlowFilterId", false, { { "any_", UUIDS }, { "not_any_", UUIDS, only = 3 } }) },
   { "deployment", model("FlowFilterDeployment", true, { { "is_null_", "bool" } }) },
   { "name", model("FlowFilterName", false, { { "any_", STRS }, { "like_", "str" } }) },
   { "tags", model("FlowFilterTags", true, { { "all_", STRS }, { "is_null_", "bool" } }) },
})

SCHEMAS.FlowRunFilter = model("FlowRunFilter", true, {
   { "id", model("FlowRunFilterId", false, { { "any_", UUIDS }, { "not_any_", UUIDS } }) },
   { "name", model("FlowRunFilterName", false, { { "any_", STRS }, { "like_", "str" } }) },
   { "tags", model("FlowRunFilterTags", true, { { "all_", STRS }, { "any_", STRS, only = 3 },
      { "is_null_", "bool" } }) },
   { "deployment_id", model("FlowRunFilterDeploymentId", true,
      { { "any_", UUIDS }, { "is_null_", "bool" } }) },
   { "work_queue_name", model("FlowRunFilterWorkQueueName", true,
      { { "any_", STRS }, { "is_null_", "bool" } }) },
   { "state", model("FlowRunFilterState", true, {
      { "type", model("FlowRunFilterStateType", false, { { "any_", list(enum("StateType", STATE_TYPES)) },
         { "not_any_", list(enum("StateType", STATE_TYPES)), only = 3 } }) },
      { "name", model("FlowRunFilterStateName", false,
         { { "any_", STRS }, { "not_any_", STRS, only = 3 } }) },
   }) },
   { "flow_version", model("FlowRunFilterFlowVersion", false, { { "any_", STRS } }) },
   { "start_time", times("FlowRunFilterStartTime", true) },
   { "end_time", times("FlowRunFilterEndTime", true), only = 3 },
   { "expected_start_time", times("FlowRunFilterExpectedStartTime", false) },
   { "next_scheduled_start_time", times("FlowRunFilterNextScheduledStartTime", false) },
   { "parent_flow_run_id", model("FlowRunFilterParentFlowRunId", true, { { "any_", UUIDS } }) },
   { "parent_task_run_id", model("FlowRunFilterParentTaskRunId", true, { { "any_", UUIDS },
      { "is_null_", "bool" } }) },
   { "idempotency_key", model("FlowRunFilterIdempotencyKey", false,
      { { "any_", STRS }, { "not_any_", STRS } }) },
   { "created_by", model("FlowRunFilterCreatedBy", true, { { "id_", UUIDS }, { "type_", STRS },
      { "is_null_", "bool" } }), only = 3 },
})

SCHEMAS.TaskRunFilter = model("TaskRunFilter", true, {
   { "id", model("TaskRunFilterId", false, { { "any_", UUIDS } }) },
   { "name", model("TaskRunFilterName", false, { { "any_", STRS }, { "like_", "str" } }) },
   { "tags", model("TaskRunFilterTags", true, { { "all_", STRS }, { "is_null_", "bool" } }) },
   { "state", model("TaskRunFilterState", true, {
      { "type", model("TaskRunFilterStateType", false,
         { { "any_", list(enum("StateType", STATE_TYPES)) } }) },
      { "name", model("TaskRunFilterStateName", false, { { "any_", STRS } }) },
   }) },
   { "start_time", times("TaskRunFilterStartTime", true) },
   { "end_time", times("TaskRunFilterEndTime", true), only = 3 },
   { "expected_start_time", times("TaskRunFilterExpectedStartTime", false), only = 3 },
   { "subflow_runs", model("TaskRunFilterSubFlowRuns", false, { { "exists_", "bool" } }) },
   { "flow_run_id", model("TaskRunFilterFlowRunId", true, { { "any_", UUIDS },
      { "is_null_", "bool", default = false, required_bool = 2 } }) },
})

SCHEMAS.DeploymentFilter = model("DeploymentFilter", true, {
   { "id", model("DeploymentFilterId", false, { { "any_", UUIDS }, { "not_any_", UUIDS, only = 3 } }) },
   { "name", model("DeploymentFilterName", false, { { "any_", STRS }, { "like_", "str" } }) },
   { "flow_or_deployment_name", model("DeploymentOrFlowNameFilter", false, { { "like_", "str" } }),
      only = 3 },
   { "paused", model("DeploymentFilterPaused", false, { { "eq_", "bool" } }) },
   { "is_schedule_active", model("DeploymentFilterIsScheduleActive", false, { { "eq_", "bool" } }),
      only = 2 },
   { "tags", model("DeploymentFilterTags", true, { { "all_", STRS }, { "any_", STRS, only = 3 },
      { "is_null_", "bool" } }) },
   { "work_queue_name", model("DeploymentFilterWorkQueueName", false, { { "any_", STRS } }) },
   { "concurrency_limit", model("DeploymentFilterConcurrencyLimit", false,
      { { "ge_", "int" }, { "le_", "int" },
      { "is_null_", "bool" } }), only = 3 },
})

SCHEMAS.WorkPoolFilter = model("WorkPoolFilter", true, {
   { "id", model("WorkPoolFilterId", false, { { "any_", UUIDS } }) },
   { "name", model("WorkPoolFilterName", false, { { "any_", STRS } }) },
   { "type", model("WorkPoolFilterType", false, { { "any_", STRS } }) },
})
SCHEMAS.WorkQueueFilter = model("WorkQueueFilter", true, {
   { "id", model("WorkQueueFilterId", false, { { "any_", UUIDS } }) },
   { "name", model("WorkQueueFilterName", false, { { "any_", STRS }, { "startswith_", STRS } }) },
})

-- The body parameters of each endpoint, in the order the server reports missing ones (the limit
-- sub-dependency is solved first).
local FILTERS = { { "flows", SCHEMAS.FlowFilter }, { "flow_runs", SCHEMAS.FlowRunFilter },
   { "task_runs", SCHEMAS.TaskRunFilter }, { "deployments", SCHEMAS.DeploymentFilter } }

local function params(...)
   local out = {}
   for _, group in ipairs({ ... }) do
      for _, p in ipairs(group) do out[#out + 1] = p end
   end
   return out
end

query.ENDPOINTS = {
   task_runs_filter = params({ { "limit", "limit" }, { "sort", TASK_RUN_SORT },
      { "offset", "offset" } }, FILTERS),
   task_runs_paginate = params({ { "limit", "limit" }, { "sort", TASK_RUN_SORT },
      { "page", "page" } }, FILTERS),
   task_runs_count = params(FILTERS),
   flow_runs_filter = params({ { "limit", "limit" }, { "sort", enum("FlowRunSort", FLOW_RUN_SORTS) },
      { "offset", "offset" } }, FILTERS, { { "work_pools", SCHEMAS.WorkPoolFilter },
      { "work_pool_queues", SCHEMAS.WorkQueueFilter } }),
   -- POST /flows/filter: no work_pool_queues, and a FlowSort whose default is NAME_ASC.
   flows_filter = params({ { "limit", "limit" }, { "offset", "offset" } }, FILTERS,
      { { "work_pools", SCHEMAS.WorkPoolFilter }, { "sort", FLOW_SORT } }),
}
query.TASK_RUN_SORTS, query.FLOW_RUN_SORTS, query.STATE_TYPES = TASK_RUN_SORTS, FLOW_RUN_SORTS, STATE_TYPES
query.FLOW_SORTS = FLOW_SORTS

---------------------------------------------------------------------------------------------------
-- Validation. Errors are { loc = {...}, msg, type, ctx = ordered object | nil, input = value }.

local function copy_loc(loc, extra)
   local out = {}
   for i = 1, #loc do out[i] = loc[i] end
   if extra ~= nil then out[#out + 1] = extra end
   return out
end

local function quoted_list(values, last_sep)
   local q = {}
   for i, v in ipairs(values) do q[i] = "'" .. v .. "'" end
   if not last_sep then return concat(q, ", ") end
   if #q == 1 then return q[1] end
   return concat(q, ", ", 1, #q - 1) .. last_sep .. q[#q]
end

local V = {} -- validators by kind, each (v3, t, value, loc, errs) --> converted | nil

local function add(errs, loc, msg, typ, input, ctx)
   errs[#errs + 1] = { loc = loc, msg = msg, type = typ, input = input, ctx = ctx }
end

-- Python's int() of a string: optional whitespace and sign, digits with single underscores.
local function py_int_string(s)
   local t = s:match("^%s*(.-)%s*$")
   local sign, digits = t:match("^([-+]?)(%d[%d_]*)$")
   if not digits or digits:find("__") or digits:sub(-1) == "_" then return nil end
   local n = tonumber((digits:gsub("_", "")))
   if sign == "-" then n = -n end
   return n
end

local function to_int(v3, value, loc, errs)
   local t = type(value)
   if t == "number" then return value end
   if t == "boolean" then return value and 1 or 0 end
   if json.is_float(value) then
      local x = value.value
      if x ~= x or x == math.huge or x == -math.huge then
         if v3 then add(errs, loc, "Input should be a finite number", "finite_number", value) return nil end
         add(errs, loc, "value is not a valid integer", "type_error.integer") return nil
      end
      if v3 and x ~= floor(x) then
         add(errs, loc, "Input should be a valid integer, got a number with a fractional part",
            "int_from_float", value)
         return nil
      end
      return x >= 0 and floor(x) or -floor(-x)
   end
   if t == "string" then
      local n = py_int_string(value)
      if n then return n end
      if v3 then
         add(errs, loc, "Input should be a valid integer, unable to parse string as an integer",
            "int_parsing", value)
      else
         add(errs, loc, "value is not a valid integer", "type_error.integer")
      end
      return nil
   end
   if v3 then add(errs, loc, "Input should be a valid integer", "int_type", value)
   else add(errs, loc, "value is not a valid integer", "type_error.integer") end
   return nil
end
V.int = function(v3, _, value, loc, errs) return to_int(v3, value, loc, errs) end

V.str = function(v3, _, value, loc, errs)
   if type(value) == "string" then return value end
   if not v3 then
      local s = py_str(value)
      if s then return s end
      add(errs, loc, "str type expected", "type_error.str")
      return nil
   end
   add(errs, loc, "Input should be a valid string", "string_type", value)
   return nil
end

local TRUE_WORDS = { ["1"] = true, on = true, t = true, ["true"] = true, y = true, yes = true }
local FALSE_WORDS = { ["0"] = false, off = false, f = false, ["false"] = false, n = false, no = false }

V.bool = function(v3, _, value, loc, errs)
   if type(value) == "boolean" then return value end
   local x = json.number(value)
   if x ~= nil then
      if x == 1 then return true end
      if x == 0 then return false end
   elseif type(value) == "string" then
      local w = value:lower()
      if v3 then w = w:match("^%s*(.-)%s*$") end
      if TRUE_WORDS[w] then return true end
      if FALSE_WORDS[w] == false then return false end
   end
   if v3 then
      if x ~= nil or type(value) == "string" then
         add(errs, loc, "Input should be a valid boolean, unable to interpret input", "bool_parsing", value)
      else
         add(errs, loc, "Input should be a valid boolean", "bool_type", value)
      end
   else
      add(errs, loc, "value could not be parsed to a boolean", "type_error.bool")
   end
   return nil
end

-- Canonical (lowercase, hyphenated) UUID text, the way Python's UUID() reads a string.
local function canonical_uuid(s)
   local h = s:gsub("urn:", ""):gsub("uuid:", "")
   h = h:gsub("^{+", ""):gsub("}+$", ""):gsub("-", "")
   if #h ~= 32 or h:find("[^%x]") then return nil end
   h = h:lower()
   return h:sub(1, 8) .. "-" .. h:sub(9, 12) .. "-" .. h:sub(13, 16) .. "-" .. h:sub(17, 20) .. "-"
      .. h:sub(21)
end
query.canonical_uuid = canonical_uuid

-- The reason pydantic-core (as Prefect 3.9.1 ships it) gives; positions count from 0.
local function v2_uuid_error(s)
   local body = s:gsub("^urn:uuid:", "")
   local bad = body:find("[^%x%-]")
   if bad then
      return format("invalid character: found `%s` at %d", body:sub(bad, bad), bad - 1 + (#s - #body))
   end
   if not body:find("-") then
      return format("invalid length: expected length 32 for simple format, found %d", #body)
   end
   local groups = 0
   for _ in (body .. "-"):gmatch("([^-]*)-") do groups = groups + 1 end
   if groups ~= 5 then return format("invalid group count: expected 5, found %d", groups) end
   return "invalid group length"
end

V.uuid = function(v3, _, value, loc, errs)
   if type(value) == "string" then
      local u = canonical_uuid(value)
      -- pydantic 2 takes the simple (32 digits), hyphenated and urn forms only.
      local v2_form = value:find("^%x+$") or value:find("^urn:uuid:")
         or value:find("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-")
      if u and (not v3 or v2_form) then
         return u
      end
      if v3 then
         local why = v2_uuid_error(value)
         add(errs, loc, "Input should be a valid UUID, " .. why, "uuid_parsing", value,
            json.object({ "error" }, { error = why }))
         return nil
      end
   elseif v3 then
      add(errs, loc, "UUID input should be a string, bytes or UUID object", "uuid_type", value)
      return nil
   end
   add(errs, loc, "value is not a valid uuid", "type_error.uuid")
   return nil
end

V.datetime = function(v3, _, value, loc, errs)
   if type(value) == "string" then
      local us, why = parse_iso(value, v3)
      if us then return us end
      if v3 then
         local n = tonumber(value)
         if n and value:find("^%s*[-+]?[%d.]+%s*$") then return epoch_micros(n) end
         if why == "parse" then
            -- Prefect 3.9.1 on Python 3.11 parses datetimes with pendulum, whose error has no fields.
            add(errs, loc, "Value error, Unable to parse string [" .. value .. "]", "value_error", value,
               json.object({ "error" }, { error = json.object({}, {}) }))
         else
            add(errs, loc, "Input should be a valid datetime, " .. why, "datetime_parsing", value,
               json.object({ "error" }, { error = why }))
         end
         return nil
      end
      if why == "parse" then
         add(errs, loc, "Unable to parse string [" .. value .. "]", "value_error.parser")
      else
         add(errs, loc, why, "value_error")
      end
      return nil
   end
   local x = json.number(value)
   if v3 and x ~= nil and x == x and x ~= math.huge and x ~= -math.huge then return epoch_micros(x) end
   if v3 then
      add(errs, loc, "Input should be a valid datetime", "datetime_type", value)
   else
      add(errs, loc, "Unrecognized datetime.", "value_error")
   end
   return nil
end

V.enum = function(v3, t, value, loc, errs)
   local members = v3 and t.values3 or t.values
   if type(value) == "string" then
      for _, allowed in ipairs(members) do
         if value == allowed then return value end
      end
   end
   local values = json.array({})
   for i, x in ipairs(members) do values[i] = x end
   if v3 then
      local expected = quoted_list(members, " or ")
      add(errs, loc, "Input should be " .. expected, "enum", value,
         json.object({ "expected" }, { expected = expected }))
   else
      add(errs, loc, "value is not a valid enumeration member; permitted: " .. quoted_list(t.values),
         "type_error.enum", nil, json.object({ "enum_values" }, { enum_values = values }))
   end
   return nil
end

local validate

V.list = function(v3, t, value, loc, errs)
   if not json.is_array(value) then
      if v3 then add(errs, loc, "Input should be a valid list", "list_type", value)
      else add(errs, loc, "value is not a valid list", "type_error.list") end
      return nil
   end
   local out, ok = {}, true
   for i = 1, #value do
      -- Items are not optional: a null item is an error.
      local r = validate(v3, t.of, value[i], copy_loc(loc, i - 1), errs, true)
      if r == nil then ok = false end
      out[i] = r
   end
   return ok and out or nil
end

-- dict(value) as pydantic v1 tries it: a list of [key, value] pairs is a dict too.
local function as_dict(value)
   if is_object(value) then return value end
   if not json.is_array(value) then return nil end
   local keys, obj = {}, {}
   for _, pair in ipairs(value) do
      if not json.is_array(pair) or #pair ~= 2 or type(pair[1]) ~= "string" then return nil end
      if obj[pair[1]] == nil then keys[#keys + 1] = pair[1] end
      obj[pair[1]] = pair[2]
   end
   return json.object(keys, obj)
end

V.model = function(v3, t, value, loc, errs)
   local obj
   if v3 then
      if is_object(value) then obj = value end
   else
      obj = as_dict(value)
   end
   if not obj then
      if v3 then
         add(errs, loc, "Input should be a valid dictionary or instance of " .. t.name, "model_type", value,
            json.object({ "class_name" }, { class_name = t.name }))
      else
         add(errs, loc, "value is not a valid dict", "type_error.dict")
      end
      return nil
   end
   local major = v3 and 3 or 2
   local out, known, failed = {}, {}, false
   local fields = t.fields
   if t.op then
      local ov = obj.operator
      known.operator = true
      if ov == nil then
         out.operator = "and_"
      else
         local r = validate(v3, OPERATOR, ov, copy_loc(loc, "operator"), errs, true)
         if r == nil then failed = true end
         out.operator = r
      end
   end
   for _, f in ipairs(fields) do
      local name, ftype = f[1], f[2]
      if not f.only or f.only == major then
         known[name] = true
         local fv = obj[name]
         if fv == nil then
            out[name] = f.default
         else
            if fv == NULL then
               if f.required_bool == major then
                  add(errs, copy_loc(loc, name), "none is not an allowed value",
                     "type_error.none.not_allowed")
                  failed = true
               end
               out[name] = nil
            else
               local r = validate(v3, ftype, fv, copy_loc(loc, name), errs, false)
               if r == nil then failed = true end
               out[name] = r
            end
         end
      end
   end
   for _, k in ipairs(json.keys(obj)) do
      if not known[k] and obj[k] ~= nil then
         if v3 then add(errs, copy_loc(loc, k), "Extra inputs are not permitted", "extra_forbidden", obj[k])
         else add(errs, copy_loc(loc, k), "extra fields not permitted", "value_error.extra") end
         failed = true
      end
   end
   if failed then return nil end
   return out
end

validate = function(v3, t, value, loc, errs, required)
   if value == NULL then
      if not required then return nil end
      if not v3 then
         add(errs, loc, "none is not an allowed value", "type_error.none.not_allowed")
         return nil
      end
   end
   local kind = type(t) == "string" and t or t.kind
   return V[kind](v3, t, value, loc, errs)
end

-- validate_body(body, endpoint, opts) --> params
--   | nil, { status = 422, detail = "..." }                  (limit out of range)
--   | nil, { status = 422, errors = {...} }                   (schema validation)
-- `body` is the decoded JSON value, nil for "no body", or { raw = "text" } for a body that was not
-- JSON (a non-JSON content type in Prefect 2 mode).
-- opts: { prefect = 2|3, default_limit = 200 }
function query.validate_body(body, endpoint, opts)
   local v3 = opts.prefect == 3
   local spec = assert(query.ENDPOINTS[endpoint], endpoint)
   local errs = {}
   local out = {}
   local dict = nil
   if body ~= nil and body ~= NULL then
      if is_object(body) then dict = body end
   end
   local not_a_dict = body ~= nil and body ~= NULL and dict == nil
   for _, p in ipairs(spec) do
      local name, t = p[1], p[2]
      local loc = { "body", name }
      if not_a_dict then
         if v3 then add(errs, loc, "Field required", "missing", NULL)
         else add(errs, loc, "field required", "value_error.missing") end
      else
         local value = dict and dict[name]
         if value == nil or value == NULL then
            value = nil
         end
         if t == "limit" then
            local limit = opts.default_limit
            if value ~= nil then
               local n = to_int(v3, value, loc, errs)
               if n ~= nil then limit = n else limit = nil end
            end
            if limit ~= nil then
               if limit < 0 then
                  return nil, { status = 422, detail = "Invalid limit: must be greater than or equal to 0." }
               end
               if limit > opts.default_limit then
                  return nil, { status = 422,
                     detail = format("Invalid limit: must be less than or equal to %s.",
                        json.int_text(opts.default_limit)) }
               end
               out.limit = limit
            end
         elseif t == "offset" or t == "page" then
            local minimum = t == "offset" and 0 or 1
            local n = minimum
            if value ~= nil then n = to_int(v3, value, loc, errs) end
            if n ~= nil then
               if n < minimum then
                  if v3 then
                     add(errs, loc, "Input should be greater than or equal to " .. minimum,
                        "greater_than_equal", value,
                        json.object({ "ge" }, { ge = minimum }))
                  else
                     add(errs, loc, "ensure this value is greater than or equal to " .. minimum,
                        "value_error.number.not_ge", nil,
                        json.object({ "limit_value" }, { limit_value = minimum }))
                  end
               else
                  out[t] = n
               end
            end
         elseif value ~= nil then
            out[name] = validate(v3, t, value, loc, errs, false)
         elseif type(t) == "table" and t.kind == "enum" then
            out[name] = t.default or t.values[1]
         end
      end
   end
   if #errs > 0 then return nil, { status = 422, errors = errs } end
   return out
end

---------------------------------------------------------------------------------------------------
-- The store: columns over the dataset.

local function ts(v)
   if type(v) ~= "string" then return false end
   return (parse_iso(v, true)) or (parse_iso(v, false)) or false
end

local function str_or_false(v)
   if type(v) == "string" then return v end
   return false
end

local function tag_list(v)
   local out = {}
   if json.is_array(v) then
      for i = 1, #v do out[i] = v[i] end
   end
   return out
end

local function flow_run_record(fr)
   local st = is_object(fr.state) and fr.state or {}
   return {
      obj = fr, id = fr.id, name = str_or_false(fr.name), flow_id = str_or_false(fr.flow_id),
      tags = tag_list(fr.tags), deployment_id = str_or_false(fr.deployment_id),
      work_queue_name = str_or_false(fr.work_queue_name), work_queue_id = str_or_false(fr.work_queue_id),
      work_pool_id = str_or_false(fr.work_pool_id), work_pool_name = str_or_false(fr.work_pool_name),
      state_type = str_or_false(fr.state_type or st.type),
      state_name = str_or_false(fr.state_name or st.name),
      flow_version = str_or_false(fr.flow_version),
      start_time = ts(fr.start_time), end_time = ts(fr.end_time),
      expected_start_time = ts(fr.expected_start_time),
      next_scheduled_start_time = ts(fr.next_scheduled_start_time),
      parent_task_run_id = str_or_false(fr.parent_task_run_id),
      idempotency_key = str_or_false(fr.idempotency_key),
      created_by = is_object(fr.created_by) and fr.created_by or false,
   }
end

-- The order rows were inserted in (SQLite's rowid), from their `created` times; the dataset's own
-- order breaks ties.
function query.insertion_order(objects, n)
   local created, idx = {}, {}
   for i = 1, n do
      idx[i] = i
      local c = objects[i].created
      created[i] = type(c) == "string" and ts(c) or false
   end
   table.sort(idx, function(a, b)
      local ca, cb = created[a], created[b]
      if ca ~= cb then
         if ca == false then return true end
         if cb == false then return false end
         return ca < cb
      end
      return a < b
   end)
   local rowid = {}
   for rank, i in ipairs(idx) do rowid[i] = rank end
   return rowid
end

-- db: whose NULL placement sorts follow, "sqlite" (the default) or "postgres".
function query.new_store(ds, db)
   local store = { ds = ds, orders = {}, fr_orders = {}, nulls_high = db == "postgres" }
   local tr
   if ds.columns then
      tr = ds.columns
   else
      local runs = ds.task_runs
      local n = #runs
      tr = { n = n, id = {}, name = {}, flow_run_id = {}, tags = {}, state_type = {}, state_name = {},
         start_time = {}, end_time = {}, expected_start_time = {}, next_scheduled_start_time = {} }
      for i = 1, n do
         local r = runs[i]
         tr.id[i] = r.id
         tr.name[i] = str_or_false(r.name)
         tr.flow_run_id[i] = str_or_false(r.flow_run_id)
         tr.tags[i] = tag_list(r.tags)
         local st = is_object(r.state) and r.state or {}
         tr.state_type[i] = str_or_false(r.state_type or st.type)
         tr.state_name[i] = str_or_false(r.state_name or st.name)
         tr.start_time[i] = ts(r.start_time)
         tr.end_time[i] = ts(r.end_time)
         tr.expected_start_time[i] = ts(r.expected_start_time)
         tr.next_scheduled_start_time[i] = ts(r.next_scheduled_start_time)
      end
   end
   store.tr = tr
   store.n = tr.n
   store.rowid = tr.rowid or query.insertion_order(ds.task_runs, tr.n)
   local by_id = {}
   for i = 1, tr.n do by_id[tr.id[i]] = i end
   store.by_id = by_id
   -- The lowercase names are what `like_` compares (SQLite: lower(name) LIKE lower(pattern)).
   local lower = {}
   for i = 1, tr.n do lower[i] = tr.name[i] and tr.name[i]:lower() or false end
   tr.name_lower = lower

   store.flows, store.flow_by_id = {}, {}
   for i = 1, #ds.flows do
      local f = ds.flows[i]
      local rec = { obj = f, id = f.id, name = str_or_false(f.name), tags = tag_list(f.tags),
         created = ts(f.created), updated = ts(f.updated) }
      store.flows[i] = rec
      store.flow_by_id[f.id] = rec
   end
   store.deployments, store.deployment_by_id, store.flows_with_deployment = {}, {}, {}
   local deps = ds.deployments or {}
   for i = 1, #deps do
      local d = deps[i]
      local rec = { obj = d, id = d.id, name = str_or_false(d.name), flow_id = str_or_false(d.flow_id),
         paused = d.paused == true, is_schedule_active = d.is_schedule_active ~= false,
         tags = tag_list(d.tags),
         work_queue_name = str_or_false(d.work_queue_name) }
      store.deployments[i] = rec
      store.deployment_by_id[d.id] = rec
      if rec.flow_id then store.flows_with_deployment[rec.flow_id] = true end
   end
   store.flow_runs, store.flow_run_by_id, store.subflow_parents = {}, {}, {}
   local fr_rowid = query.insertion_order(ds.flow_runs, #ds.flow_runs)
   for i = 1, #ds.flow_runs do
      local rec = flow_run_record(ds.flow_runs[i])
      rec.rowid = fr_rowid[i]
      store.flow_runs[i] = rec
      store.flow_run_by_id[rec.id] = rec
      if rec.parent_task_run_id then store.subflow_parents[rec.parent_task_run_id] = true end
   end
   return store
end

---------------------------------------------------------------------------------------------------
-- Predicates. A compiled criterion is `true` (no effective criterion: matches everything) or a
-- function(x) --> boolean over a task-run index or a flow-run record.

local function set_of(values)
   local s = {}
   for _, v in ipairs(values) do s[v] = true end
   return s
end

local function combine(parts, operator)
   local fns = {}
   for _, p in ipairs(parts) do
      if p == true then
         if operator == "or_" then return true end
      else
         fns[#fns + 1] = p
      end
   end
   if #fns == 0 then return true end
   if #fns == 1 then return fns[1] end
   if operator == "or_" then
      return function(x)
         for k = 1, #fns do if fns[k](x) then return true end end
         return false
      end
   end
   return function(x)
      for k = 1, #fns do if not fns[k](x) then return false end end
      return true
   end
end

-- SQL LIKE (SQLite): % any run, _ one character; ASCII case folding; no escape character.
local function like_matcher(pattern)
   local p = {}
   for ch in pattern:lower():gmatch("[^\128-\191][\128-\191]*") do
      if ch == "%" then p[#p + 1] = ".-"
      elseif ch == "_" then p[#p + 1] = "[^\128-\191][\128-\191]*"
      elseif ch:find("^%p$") then p[#p + 1] = "%" .. ch
      else p[#p + 1] = ch end
   end
   local lua_pattern = "^.-" .. concat(p) .. ".-$"
   return function(lowered) return lowered and lowered:find(lua_pattern) ~= nil end
end
query.like_matcher = like_matcher

local function has_all(tags, wanted)
   for _, w in ipairs(wanted) do
      local found = false
      for _, t in ipairs(tags) do if t == w then found = true break end end
      if not found then return false end
   end
   return true
end

local function has_any(tags, wanted_set)
   for _, t in ipairs(tags) do if wanted_set[t] then return true end end
   return false
end

-- Column-generic builders; `get(x)` reads the value (false for NULL).
local function in_list(get, values)
   local s = set_of(values)
   return function(x) local v = get(x) return v ~= false and s[v] == true end
end
local function not_in_list(get, values)
   if #values == 0 then return true end
   local s = set_of(values)
   return function(x) local v = get(x) return v ~= false and not s[v] end
end
local function null_check(get, is_null)
   if is_null then return function(x) return get(x) == false end end
   return function(x) return get(x) ~= false end
end

local function time_parts(f, get, parts)
   if f.before_ then
      local b = f.before_
      parts[#parts + 1] = function(x) local v = get(x) return v ~= false and v <= b end
   end
   if f.after_ then
      local a = f.after_
      parts[#parts + 1] = function(x) local v = get(x) return v ~= false and v >= a end
   end
   if f.is_null_ ~= nil then parts[#parts + 1] = null_check(get, f.is_null_) end
end

local function tags_filter(f, get)
   if not f then return nil end
   local parts = {}
   if f.all_ then
      local wanted = f.all_
      if #wanted == 0 then parts[#parts + 1] = true
      else parts[#parts + 1] = function(x) return has_all(get(x), wanted) end end
   end
   if f.any_ then
      local s = set_of(f.any_)
      parts[#parts + 1] = function(x) return has_any(get(x), s) end
   end
   if f.is_null_ ~= nil then
      if f.is_null_ then parts[#parts + 1] = function(x) return #get(x) == 0 end
      else parts[#parts + 1] = function(x) return #get(x) > 0 end end
   end
   return combine(parts, f.operator)
end

local function name_filter(f, get, get_lower)
   local parts = {}
   if f.any_ then parts[#parts + 1] = in_list(get, f.any_) end
   if f.like_ and f.like_ ~= "" then
      local m = like_matcher(f.like_)
      parts[#parts + 1] = function(x) return m(get_lower(x)) end
   end
   return combine(parts, "and_")
end

-- A sub-object contributes its criteria to the state object's list. (Prefect's 3.1.9 to 3.8
-- source keeps a sub-object only when it is a single comparison; a live 3.9.1 applies any_ and
-- not_any_ together, as 2.x does, and that is what this server follows.)
local function state_filter(f, get_type, get_name)
   local parts = {}
   local function sub(sf, get)
      if not sf then return end
      if sf.any_ then parts[#parts + 1] = in_list(get, sf.any_) end
      if sf.not_any_ and #sf.not_any_ > 0 then parts[#parts + 1] = not_in_list(get, sf.not_any_) end
   end
   sub(f.type, get_type)
   sub(f.name, get_name)
   return combine(parts, f.operator)
end

local function add_sub(parts, p) if p ~= nil then parts[#parts + 1] = p end end
local function lower_name(r) return r.name and r.name:lower() or false end
local function field(name) return function(r) return r[name] end end

-- any_ and not_any_ on one column, ANDed (either may be absent).
local function membership(get, c)
   local sub = {}
   if c.any_ then sub[#sub + 1] = in_list(get, c.any_) end
   if c.not_any_ then sub[#sub + 1] = not_in_list(get, c.not_any_) end
   return combine(sub, "and_")
end

-- Criteria on a flow-run record.
local function compile_flow_run_filter(store, f, v3)
   local parts = {}
   if f.id then add_sub(parts, membership(field("id"), f.id)) end
   if f.name then
      add_sub(parts, name_filter(f.name, field("name"), lower_name))
   end
   add_sub(parts, tags_filter(f.tags, field("tags")))
   if f.deployment_id then
      local sub = {}
      if f.deployment_id.any_ then sub[#sub + 1] = in_list(field("deployment_id"), f.deployment_id.any_) end
      if f.deployment_id.is_null_ ~= nil then
         sub[#sub + 1] = null_check(field("deployment_id"), f.deployment_id.is_null_)
      end
      add_sub(parts, combine(sub, f.deployment_id.operator))
   end
   if f.work_queue_name then
      local sub = {}
      local w = f.work_queue_name
      if w.any_ then sub[#sub + 1] = in_list(field("work_queue_name"), w.any_) end
      if w.is_null_ ~= nil then sub[#sub + 1] = null_check(field("work_queue_name"), w.is_null_) end
      add_sub(parts, combine(sub, w.operator))
   end
   if f.state then add_sub(parts, state_filter(f.state, field("state_type"), field("state_name"))) end
   if f.flow_version and f.flow_version.any_ then
      add_sub(parts, in_list(field("flow_version"), f.flow_version.any_))
   elseif f.flow_version then
      add_sub(parts, true)
   end
   if f.start_time then
      local sub = {}
      local get = field("start_time")
      if v3 then
         -- before_/after_ on COALESCE(start_time, expected_start_time); is_null_ on start_time.
         local coalesced = function(r)
            if r.start_time ~= false then return r.start_time end
            return r.expected_start_time
         end
         time_parts({ before_ = f.start_time.before_, after_ = f.start_time.after_ }, coalesced, sub)
         if f.start_time.is_null_ ~= nil then sub[#sub + 1] = null_check(get, f.start_time.is_null_) end
      else
         time_parts(f.start_time, get, sub)
      end
      add_sub(parts, combine(sub, "and_"))
   end
   for _, name in ipairs({ "end_time", "expected_start_time", "next_scheduled_start_time" }) do
      if f[name] then
         local sub = {}
         time_parts(f[name], field(name), sub)
         add_sub(parts, combine(sub, "and_"))
      end
   end
   if f.parent_flow_run_id then
      local p = f.parent_flow_run_id
      if p.any_ then
         local parents = set_of(p.any_)
         local tr = store.tr
         add_sub(parts, combine({ function(r)
            local ptr = r.parent_task_run_id
            if not ptr then return false end
            local i = store.by_id[ptr]
            return i ~= nil and tr.flow_run_id[i] ~= false and parents[tr.flow_run_id[i]] == true
         end }, p.operator))
      else
         add_sub(parts, true)
      end
   end
   if f.parent_task_run_id then
      local p = f.parent_task_run_id
      local sub = {}
      if p.any_ then sub[#sub + 1] = in_list(field("parent_task_run_id"), p.any_) end
      if p.is_null_ ~= nil then sub[#sub + 1] = null_check(field("parent_task_run_id"), p.is_null_) end
      add_sub(parts, combine(sub, p.operator))
   end
   if f.idempotency_key then add_sub(parts, membership(field("idempotency_key"), f.idempotency_key)) end
   if f.created_by then
      local c = f.created_by
      local sub = {}
      local function cb(key)
         return function(r)
            local v = r.created_by and r.created_by[key]
            if type(v) == "string" then return v end
            return false
         end
      end
      if c.id_ then sub[#sub + 1] = in_list(cb("id"), c.id_) end
      if c.type_ then sub[#sub + 1] = in_list(cb("type"), c.type_) end
      if c.is_null_ ~= nil then
         sub[#sub + 1] = null_check(function(r) return r.created_by end, c.is_null_)
      end
      add_sub(parts, combine(sub, c.operator))
   end
   return combine(parts, f.operator)
end

local function compile_flow_filter(store, f)
   local parts = {}
   if f.id then add_sub(parts, membership(field("id"), f.id)) end
   if f.deployment then
      local sub = {}
      if f.deployment.is_null_ ~= nil then
         local want_null = f.deployment.is_null_
         sub[1] = function(r) return (store.flows_with_deployment[r.id] == nil) == want_null end
      end
      add_sub(parts, combine(sub, f.deployment.operator))
   end
   if f.name then
      add_sub(parts, name_filter(f.name, field("name"), lower_name))
   end
   add_sub(parts, tags_filter(f.tags, field("tags")))
   return combine(parts, f.operator)
end

local function compile_deployment_filter(store, f)
   local parts = {}
   if f.id then add_sub(parts, membership(field("id"), f.id)) end
   if f.name then
      add_sub(parts, name_filter(f.name, field("name"), lower_name))
   end
   if f.flow_or_deployment_name then
      local like = f.flow_or_deployment_name.like_
      if like and like ~= "" then
         local m = like_matcher(like)
         add_sub(parts, function(r)
            local flow = r.flow_id and store.flow_by_id[r.flow_id]
            return m(r.name and r.name:lower() or false) or (flow ~= nil and flow and m(flow.name and
               flow.name:lower() or false))
         end)
      else
         add_sub(parts, true)
      end
   end
   if f.paused then
      if f.paused.eq_ ~= nil then
         local want = f.paused.eq_
         add_sub(parts, function(r) return r.paused == want end)
      else
         add_sub(parts, true)
      end
   end
   if f.is_schedule_active then
      if f.is_schedule_active.eq_ ~= nil then
         local want = f.is_schedule_active.eq_
         add_sub(parts, function(r) return r.is_schedule_active == want end)
      else
         add_sub(parts, true)
      end
   end
   add_sub(parts, tags_filter(f.tags, field("tags")))
   if f.work_queue_name then
      if f.work_queue_name.any_ then add_sub(parts, in_list(field("work_queue_name"), f.work_queue_name.any_))
      else add_sub(parts, true) end
   end
   -- f.concurrency_limit: deprecated, accepted and dropped (no criterion, not even TRUE under or_)
   return combine(parts, f.operator)
end

-- The flow-run side of a request (flows, flow_runs, deployments, work pools/queues):
-- nil when none of them is given, else a set of the ids of flow runs that satisfy all of them.
local function allowed_flow_runs(store, p, v3)
   if not (p.flows or p.flow_runs or p.deployments or p.work_pools or p.work_pool_queues) then return nil end
   local fr_pred = p.flow_runs and compile_flow_run_filter(store, p.flow_runs, v3) or true
   local flow_pred = p.flows and compile_flow_filter(store, p.flows) or nil
   local dep_pred = p.deployments and compile_deployment_filter(store, p.deployments) or nil
   local allowed = {}
   for _, r in ipairs(store.flow_runs) do
      local ok = fr_pred == true or fr_pred(r)
      if ok and flow_pred then
         local flow = r.flow_id and store.flow_by_id[r.flow_id]
         ok = flow and (flow_pred == true or flow_pred(flow)) or false
      end
      if ok and dep_pred then
         local dep = r.deployment_id and store.deployment_by_id[r.deployment_id]
         ok = dep and (dep_pred == true or dep_pred(dep)) or false
      end
      if ok and (p.work_pools or p.work_pool_queues) then
         -- The dataset has no work pools or queues: the join finds nothing.
         ok = false
      end
      if ok then allowed[r.id] = true end
   end
   return allowed
end

local function compile_task_run_filter(store, f, v3)
   local tr = store.tr
   local parts = {}
   if f.id then
      if f.id.any_ then add_sub(parts, in_list(function(i) return tr.id[i] end, f.id.any_))
      else add_sub(parts, true) end
   end
   if f.name then
      add_sub(parts, name_filter(f.name, function(i) return tr.name[i] end,
         function(i) return tr.name_lower[i] end))
   end
   add_sub(parts, tags_filter(f.tags, function(i) return tr.tags[i] end))
   if f.state then
      add_sub(parts, state_filter(f.state, function(i) return tr.state_type[i] end,
         function(i) return tr.state_name[i] end))
   end
   for _, name in ipairs({ "start_time", "end_time", "expected_start_time" }) do
      if f[name] then
         local col = tr[name]
         local sub = {}
         time_parts(f[name], function(i) return col[i] end, sub)
         add_sub(parts, combine(sub, "and_"))
      end
   end
   if f.subflow_runs then
      local e = f.subflow_runs.exists_
      local parents = store.subflow_parents
      if e == true then add_sub(parts, function(i) return parents[tr.id[i]] == true end)
      elseif e == false then add_sub(parts, function(i) return not parents[tr.id[i]] end)
      else add_sub(parts, true) end
   end
   if f.flow_run_id then
      local fr = f.flow_run_id
      local get = function(i) return tr.flow_run_id[i] end
      local sub = {}
      if fr.is_null_ == true then
         sub[1] = null_check(get, true)
      elseif v3 and fr.is_null_ == false and fr.any_ == nil then
         sub[1] = null_check(get, false)
      elseif fr.any_ then
         sub[1] = in_list(get, fr.any_)
      end
      add_sub(parts, combine(sub, fr.operator))
   end
   return combine(parts, f.operator)
end

-- compile(store, params, prefect) --> predicate over task-run indexes, or `true` for "all".
function query.compile(store, p, prefect)
   local v3 = prefect == 3
   local tr = store.tr
   local preds = {}
   if p.task_runs then preds[#preds + 1] = compile_task_run_filter(store, p.task_runs, v3) end
   local allowed = allowed_flow_runs(store, p, v3)
   if allowed then
      preds[#preds + 1] = function(i)
         local fr = tr.flow_run_id[i]
         return fr ~= false and allowed[fr] == true
      end
   end
   return combine(preds, "and_")
end

---------------------------------------------------------------------------------------------------
-- Sorting: SQLite puts NULLs first for ASC and last for DESC; only ID_DESC has a unique key.

local function sort_spec(sort)
   if sort == "ID_DESC" then return "id", true end
   if sort == "NAME_ASC" then return "name", false end
   if sort == "NAME_DESC" then return "name", true end
   if sort == "EXPECTED_START_TIME_ASC" then return "expected_start_time", false end
   if sort == "EXPECTED_START_TIME_DESC" then return "expected_start_time", true end
   if sort == "NEXT_SCHEDULED_START_TIME_ASC" then return "next_scheduled_start_time", false end
   if sort == "END_TIME_DESC" then return "end_time", true end
   if sort == "START_TIME_ASC" then return "start_or_expected", false end
   if sort == "START_TIME_DESC" then return "start_or_expected", true end
   error("unknown sort " .. tostring(sort))
end

-- Ties (NULLs included) come back in insertion order, forwards for ASC and backwards for DESC:
-- that is how SQLite walks the sort column's index, and what the recorded server did. PostgreSQL
-- (nulls_high) sorts NULL above every value: last for ASC, first for DESC; its ties have no
-- defined order, so no client can rely on one.
local function ordering(keys, rowid, count, desc, nulls_high)
   local null_first = (not desc) ~= (nulls_high == true)
   local order = {}
   for i = 1, count do order[i] = i end
   table.sort(order, function(a, b)
      local ka, kb = keys[a], keys[b]
      if ka ~= kb then
         if ka == false then return null_first end
         if kb == false then return not null_first end
         if desc then return ka > kb end
         return ka < kb
      end
      if desc then return rowid[a] > rowid[b] end
      return rowid[a] < rowid[b]
   end)
   return order
end

-- The page (p.offset, p.limit) of `rows` sorted by their `keys` (ties by `rowid`), as ordering
-- puts them.
local function sorted_page(rows, keys, rowid, desc, store, p)
   local order = ordering(keys, rowid, #rows, desc, store.nulls_high)
   local out = {}
   local offset, limit = p.offset or 0, p.limit
   for k = offset + 1, math.min(#rows, offset + limit) do out[#out + 1] = rows[order[k]] end
   return out
end

-- Seconds a run has run so far, as Prefect's estimated_run_time computes it at request time: the
-- recorded total, plus the time since a RUNNING run's state began.
local function estimated_run_time(run, now_us)
   local total = json.number(run.total_run_time) or 0
   local st = is_object(run.state) and run.state or nil
   if run.state_type == "RUNNING" and st and type(st.timestamp) == "string" then
      local began = ts(st.timestamp)
      if began and now_us > began then total = total + (now_us - began) / 1e6 end
   end
   return total
end

-- DURATION_DESC / DURATION_ASC (Prefect 3.9): estimated run time, then expected start time
-- descending, then id descending; computed per request, since running runs keep running.
local function duration_order(store, desc)
   local tr, runs = store.tr, store.ds.task_runs or {}
   local now_us = math.floor(os.time() * 1e6)
   local secs, exp, ids = {}, tr.expected_start_time, tr.id
   for i = 1, tr.n do secs[i] = runs[i] and estimated_run_time(runs[i], now_us) or 0 end
   local order = {}
   for i = 1, tr.n do order[i] = i end
   table.sort(order, function(a, b)
      if secs[a] ~= secs[b] then
         if desc then return secs[a] > secs[b] end
         return secs[a] < secs[b]
      end
      local ea, eb = exp[a], exp[b]
      if ea ~= eb then
         -- expected start time DESC: NULLs last on SQLite, first on PostgreSQL
         if ea == false then return store.nulls_high end
         if eb == false then return not store.nulls_high end
         return ea > eb
      end
      return ids[a] > ids[b]
   end)
   return order
end

function query.order(store, sort)
   if sort == "DURATION_DESC" or sort == "DURATION_ASC" then
      return duration_order(store, sort == "DURATION_DESC")
   end
   local cached = store.orders[sort]
   if cached then return cached end
   local tr = store.tr
   local key, desc = sort_spec(sort)
   local order
   if key == "id" then
      -- Already descending (generated Prefect 3 ids are time-ordered): no sort needed.
      local n, ids = tr.n, tr.id
      local rev = true
      for i = 2, n do if ids[i] > ids[i - 1] then rev = false break end end
      if rev then
         order = {}
         for i = 1, n do order[i] = i end
      else
         local asc = true
         for i = 2, n do if ids[i] < ids[i - 1] then asc = false break end end
         if asc then
            order = {}
            for i = 1, n do order[i] = n - i + 1 end
         else
            order = {}
            for i = 1, n do order[i] = i end
            table.sort(order, function(a, b) return ids[a] > ids[b] end)
         end
      end
   else
      order = ordering(tr[key], store.rowid, tr.n, desc, store.nulls_high)
   end
   store.orders[sort] = order
   return order
end

-- task_runs(store, params, prefect) --> array of task-run indexes for the page.
function query.task_runs(store, p, prefect)
   local pred = query.compile(store, p, prefect)
   local order = query.order(store, p.sort or "ID_DESC")
   local offset, limit = p.offset or 0, p.limit
   local out = {}
   if limit == 0 then return out end
   if pred == true then
      for k = offset + 1, math.min(store.n, offset + limit) do out[#out + 1] = order[k] end
      return out
   end
   local skipped = 0
   for k = 1, #order do
      local i = order[k]
      if pred(i) then
         if skipped < offset then skipped = skipped + 1
         else
            out[#out + 1] = i
            if #out >= limit then break end
         end
      end
   end
   return out
end

function query.count(store, p, prefect)
   local pred = query.compile(store, p, prefect)
   if pred == true then return store.n end
   local c = 0
   for i = 1, store.n do if pred(i) then c = c + 1 end end
   return c
end

-- flow_runs(store, params, prefect) --> array of flow-run records for /flow_runs/filter.
function query.flow_runs(store, p, prefect)
   local v3 = prefect == 3
   local fr_pred = p.flow_runs and compile_flow_run_filter(store, p.flow_runs, v3) or true
   local flow_pred = p.flows and compile_flow_filter(store, p.flows) or nil
   local dep_pred = p.deployments and compile_deployment_filter(store, p.deployments) or nil
   local task_pred = p.task_runs and compile_task_run_filter(store, p.task_runs, v3) or nil
   local with_task = nil
   if task_pred then
      with_task = {}
      local tr = store.tr
      for i = 1, store.n do
         local fr = tr.flow_run_id[i]
         if fr and not with_task[fr] and (task_pred == true or task_pred(i)) then with_task[fr] = true end
      end
   end
   local rows = {}
   for _, r in ipairs(store.flow_runs) do
      local ok = fr_pred == true or fr_pred(r)
      if ok and flow_pred then
         local flow = r.flow_id and store.flow_by_id[r.flow_id]
         ok = flow and (flow_pred == true or flow_pred(flow)) or false
      end
      if ok and dep_pred then
         local dep = r.deployment_id and store.deployment_by_id[r.deployment_id]
         ok = dep and (dep_pred == true or dep_pred(dep)) or false
      end
      if ok and (p.work_pools or p.work_pool_queues) then ok = false end
      if ok and with_task then ok = with_task[r.id] == true end
      if ok then rows[#rows + 1] = r end
   end
   local key, desc = sort_spec(p.sort or "ID_DESC")
   local keys, rowid = {}, {}
   for k, r in ipairs(rows) do
      rowid[k] = r.rowid
      if key == "start_or_expected" then
         keys[k] = r.start_time ~= false and r.start_time or r.expected_start_time
      else
         keys[k] = r[key]
      end
   end
   return sorted_page(rows, keys, rowid, desc, store, p)
end

-- flows(store, params, prefect) --> array of flow records for /flows/filter. As Prefect does it: the
-- `flows` filter on the flow itself; `flow_runs` and `task_runs` keep the flows that have a flow run
-- matching them (that flow run having a task run matching `task_runs`); `deployments` and
-- `work_pools` keep the flows that have a matching deployment (the dataset has no work pools, so a
-- `work_pools` filter keeps none).
function query.flows(store, p, prefect)
   local v3 = prefect == 3
   local flow_pred = p.flows and compile_flow_filter(store, p.flows) or true
   local with_run
   if p.flow_runs or p.task_runs then
      local fr_pred = p.flow_runs and compile_flow_run_filter(store, p.flow_runs, v3) or true
      local task_pred = p.task_runs and compile_task_run_filter(store, p.task_runs, v3) or nil
      local runs_with_task
      if task_pred then
         runs_with_task = {}
         local tr = store.tr
         for i = 1, store.n do
            local fr = tr.flow_run_id[i]
            if fr and (task_pred == true or task_pred(i)) then runs_with_task[fr] = true end
         end
      end
      with_run = {}
      for _, r in ipairs(store.flow_runs) do
         local ok = r.flow_id and (fr_pred == true or fr_pred(r))
         if ok and (not runs_with_task or runs_with_task[r.id]) then
            with_run[r.flow_id] = true
         end
      end
   end
   local with_deployment
   if p.deployments or p.work_pools then
      local dep_pred = p.deployments and compile_deployment_filter(store, p.deployments) or true
      with_deployment = {}
      for _, d in ipairs(store.deployments) do
         if d.flow_id and not p.work_pools and (dep_pred == true or dep_pred(d)) then
            with_deployment[d.flow_id] = true
         end
      end
   end
   local rows = {}
   for _, f in ipairs(store.flows) do
      if (flow_pred == true or flow_pred(f)) and (not with_run or with_run[f.id])
         and (not with_deployment or with_deployment[f.id]) then
         rows[#rows + 1] = f
      end
   end
   local sort = p.sort or "NAME_ASC"
   local key = (sort == "CREATED_DESC" and "created") or (sort == "UPDATED_DESC" and "updated") or "name"
   local desc = sort ~= "NAME_ASC"
   local keys, rowid = {}, {}
   for k, f in ipairs(rows) do keys[k], rowid[k] = f[key], k end
   return sorted_page(rows, keys, rowid, desc, store, p)
end

return query
