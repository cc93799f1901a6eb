-- Data for the bundled test server: the recorded fixture format, a deterministic generator of
-- datasets of any size, and the small order-preserving JSON codec both need (Prefect's output
-- keeps its models' field order and writes 0.0 as a float; lua-cjson keeps neither).
--
-- JSON values as Lua values:
--   object  a table whose metatable lists the key order in `keys` (json.object(keys, t))
--   array   a table with the metatable json.ARRAY, elements 1..#t (no holes: null is json.null)
--   null    the sentinel json.null
--   number  a Lua number for integers; a float written with a fraction or exponent is a box
--           json.float(x) so that 0.0 encodes as 0.0 and 2.5 can be told from 2
--   string, boolean as themselves
local calendar = require("prefect.calendar")

local dataset = {}

local byte, char, sub, find, format = string.byte, string.char, string.sub, string.find, string.format
local concat, floor = table.concat, math.floor

local json = {}
dataset.json = json

json.null = setmetatable({}, { __name = "json.null", __tostring = function() return "null" end })
json.ARRAY = { __name = "json.array" }
local FLOAT = { __name = "json.float" }
json.FLOAT = FLOAT

function json.float(x) return setmetatable({ value = x }, FLOAT) end
function json.array(t) return setmetatable(t or {}, json.ARRAY) end

-- One metatable per distinct key list would be wasteful for decoded documents, but shapes built by
-- the generator share theirs (json.shape).
function json.object(keys, t) return setmetatable(t or {}, { keys = keys }) end
function json.shape(keys)
   local mt = { keys = keys }
   return function(t) return setmetatable(t, mt) end
end

function json.is_array(v) return type(v) == "table" and getmetatable(v) == json.ARRAY end
function json.is_float(v) return type(v) == "table" and getmetatable(v) == FLOAT end
function json.is_object(v)
   if type(v) ~= "table" then return false end
   local mt = getmetatable(v)
   return mt == nil or (mt.keys ~= nil)
end
function json.keys(obj)
   local mt = getmetatable(obj)
   if mt and mt.keys then return mt.keys end
   local keys = {}
   for k in pairs(obj) do keys[#keys + 1] = k end
   table.sort(keys)
   return keys
end

-- Numeric value of a JSON number (boxed or not); nil for anything else.
function json.number(v)
   if type(v) == "number" then return v end
   if type(v) == "table" and getmetatable(v) == FLOAT then return v.value end
   return nil
end

---------------------------------------------------------------------------------------------------
-- Decoding, with Python's json module's error messages and positions (FastAPI reports those).


local function skip_ws(s, i)
   local _, e = find(s, "^[ \t\n\r]*", i)
   return e + 1
end

local DecodeError = {}

local function fail(msg, pos) error(setmetatable({ msg = msg, pos = pos }, DecodeError), 0) end

local function utf8_char(cp)
   if cp < 0x80 then return char(cp) end
   if cp < 0x800 then return char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
   if cp < 0x10000 then
      return char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
   end
   return char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64, 0x80 + floor(cp / 64) % 64,
      0x80 + cp % 64)
end

local ESCAPES = { [34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n",
   [114] = "\r", [116] = "\t" }

local function parse_string(s, i) -- i: index of the opening quote
   local parts, n = {}, 0
   local j = i + 1
   local len = #s
   while true do
      local k = find(s, '["\\%c]', j)
      if not k then fail("Unterminated string starting at", i) end
      if k > j then n = n + 1; parts[n] = sub(s, j, k - 1) end
      local c = byte(s, k)
      if c == 34 then return concat(parts), k + 1 end
      if c ~= 92 then
         if c == 127 then -- %c matches DEL, which JSON allows raw
            n = n + 1; parts[n] = "\127"; j = k + 1
         else
            fail("Invalid control character at", k)
         end
      else
         if k >= len then fail("Unterminated string starting at", i) end
         local e = byte(s, k + 1)
         if e == 117 then
            local hex = sub(s, k + 2, k + 5)
            if k + 5 >= len then fail("Invalid \\uXXXX escape", k + 1) end
            if not find(hex, "^%x%x%x%x$") then fail("Invalid \\uXXXX escape", k + 1) end
            local cp = tonumber(hex, 16)
            local nexti = k + 6
            if cp >= 0xD800 and cp <= 0xDBFF and sub(s, nexti, nexti + 1) == "\\u" then
               local hex2 = sub(s, nexti + 2, nexti + 5)
               if find(hex2, "^%x%x%x%x$") then
                  local lo = tonumber(hex2, 16)
                  if lo >= 0xDC00 and lo <= 0xDFFF then
                     cp = 0x10000 + (cp - 0xD800) * 1024 + (lo - 0xDC00)
                     nexti = nexti + 6
                  end
               end
            end
            n = n + 1; parts[n] = utf8_char(cp)
            j = nexti
         else
            local r = ESCAPES[e]
            if not r then fail("Invalid \\escape", k) end
            n = n + 1; parts[n] = r
            j = k + 2
         end
      end
   end
end

local parse_value

local function parse_number(s, i)
   local ms, me = find(s, "^-?%d+", i)
   if not ms then return nil end
   local intpart = sub(s, ms, me)
   local digits = intpart:gsub("^-", "")
   if #digits > 1 and byte(digits, 1) == 48 then -- a leading zero ends the number after it
      me = ms + (intpart:sub(1, 1) == "-" and 1 or 0)
      return tonumber(sub(s, ms, me)), me + 1
   end
   local is_float = false
   local fs, fe = find(s, "^%.%d+", me + 1)
   if fs then is_float = true; me = fe end
   local es, ee = find(s, "^[eE][-+]?%d+", me + 1)
   if es then is_float = true; me = ee end
   local text = sub(s, ms, me)
   local x = tonumber(text)
   if is_float then return json.float(x), me + 1 end
   if math.tointeger then x = math.tointeger(x) or x end
   return x, me + 1
end

parse_value = function(s, i, depth)
   local c = byte(s, i)
   if c == 34 then return parse_string(s, i) end
   if c == 123 then
      if depth > 500 then fail("Maximum nesting depth exceeded", i) end
      local keys, obj = {}, {}
      local j = skip_ws(s, i + 1)
      if byte(s, j) == 125 then return json.object(keys, obj), j + 1 end
      while true do
         if byte(s, j) ~= 34 then fail("Expecting property name enclosed in double quotes", j) end
         local key
         key, j = parse_string(s, j)
         j = skip_ws(s, j)
         if byte(s, j) ~= 58 then fail("Expecting ':' delimiter", j) end
         j = skip_ws(s, j + 1)
         local v
         v, j = parse_value(s, j, depth + 1)
         if obj[key] == nil then keys[#keys + 1] = key end
         obj[key] = v
         j = skip_ws(s, j)
         local d = byte(s, j)
         if d == 125 then return json.object(keys, obj), j + 1 end
         if d ~= 44 then fail("Expecting ',' delimiter", j) end
         j = skip_ws(s, j + 1)
      end
   end
   if c == 91 then
      if depth > 500 then fail("Maximum nesting depth exceeded", i) end
      local arr, n = {}, 0
      local j = skip_ws(s, i + 1)
      if byte(s, j) == 93 then return json.array(arr), j + 1 end
      while true do
         local v
         v, j = parse_value(s, j, depth + 1)
         n = n + 1; arr[n] = v
         j = skip_ws(s, j)
         local d = byte(s, j)
         if d == 93 then return json.array(arr), j + 1 end
         if d ~= 44 then fail("Expecting ',' delimiter", j) end
         j = skip_ws(s, j + 1)
      end
   end
   if c == 110 and sub(s, i, i + 3) == "null" then return json.null, i + 4 end
   if c == 116 and sub(s, i, i + 3) == "true" then return true, i + 4 end
   if c == 102 and sub(s, i, i + 4) == "false" then return false, i + 5 end
   if c == 78 and sub(s, i, i + 2) == "NaN" then return json.float(0 / 0), i + 3 end
   if c == 73 and sub(s, i, i + 7) == "Infinity" then return json.float(math.huge), i + 8 end
   if c == 45 and sub(s, i, i + 8) == "-Infinity" then return json.float(-math.huge), i + 9 end
   local v, j = parse_number(s, i)
   if v == nil then fail("Expecting value", i) end
   return v, j
end

-- Python counts positions in characters, not bytes.
local function char_offset(s, byte_index)
   local prefix = sub(s, 1, byte_index - 1)
   local _, continuation = prefix:gsub("[\128-\191]", "")
   return #prefix - continuation
end

-- decode(text) --> value | nil, err where err = { msg = "Expecting value", pos = <0-based char
-- offset>, lineno, colno, message = "Expecting value: line 1 column 11 (char 10)" }
function json.decode(s)
   local ok, v, j = pcall(function()
      local i = skip_ws(s, 1)
      local value, after = parse_value(s, i, 0)
      after = skip_ws(s, after)
      if after <= #s then fail("Extra data", after) end
      return value, after
   end)
   if ok then return v end
   if getmetatable(v) ~= DecodeError then error(v, 0) end
   local pos = char_offset(s, v.pos)
   local before = sub(s, 1, v.pos - 1)
   local _, lines = before:gsub("\n", "")
   local last_nl = before:match(".*()\n")
   local colno = last_nl and pos - char_offset(s, last_nl) or pos + 1
   local _ = j
   return nil, { msg = v.msg, pos = pos, lineno = lines + 1, colno = colno,
      message = format("%s: line %d column %d (char %d)", v.msg, lines + 1, colno, pos) }
end

---------------------------------------------------------------------------------------------------
-- Encoding: compact, like Starlette's JSONResponse (separators ",", ":", UTF-8 kept as is).

local ESC_OUT = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
   ["\b"] = "\\b", ["\f"] = "\\f" }

local function escape_string(s)
   if not find(s, '[%c"\\]') then return '"' .. s .. '"' end
   return '"' .. s:gsub('[%c"\\]', function(c)
      if c == "\127" then return c end
      return ESC_OUT[c] or format("\\u%04x", byte(c))
   end) .. '"'
end
json.quote = escape_string

-- Python's repr of a float: the shortest digits that read back the same, in fixed notation for
-- decimal exponents -4 <= e < 16 and in scientific notation otherwise.
local function float_repr(x)
   if x ~= x then return "NaN" end
   if x == math.huge then return "Infinity" end
   if x == -math.huge then return "-Infinity" end
   if x == 0 then return (1 / x < 0) and "-0.0" or "0.0" end
   local e_text
   for p = 0, 16 do
      e_text = format("%." .. p .. "e", x)
      if tonumber(e_text) == x then break end
   end
   local sign, d1, rest, exp = e_text:match("^(-?)(%d)%.?(%d*)e([-+]%d+)$")
   local digits = (d1 .. rest):gsub("0+$", "")
   if digits == "" then digits = "0" end
   exp = tonumber(exp)
   if exp >= -4 and exp < 16 then
      local point = exp + 1 -- digits before the decimal point
      local out
      if point <= 0 then
         out = "0." .. string.rep("0", -point) .. digits
      elseif point >= #digits then
         out = digits .. string.rep("0", point - #digits) .. ".0"
      else
         out = digits:sub(1, point) .. "." .. digits:sub(point + 1)
      end
      return sign .. out
   end
   local mant = digits:sub(1, 1)
   if #digits > 1 then mant = mant .. "." .. digits:sub(2) end
   return format("%s%se%s%02d", sign, mant, exp < 0 and "-" or "+", math.abs(exp))
end
json.float_repr = float_repr

local function int_text(x)
   if math.type and math.type(x) == "integer" then return format("%d", x) end
   if x == floor(x) and x > -1e300 and x < 1e300 then return format("%.0f", x) end
   return float_repr(x)
end
json.int_text = int_text

-- Object keys repeat in every run: quote each once (a bounded number of them, since request
-- bodies echoed in errors can bring any keys).
local quoted_count = 0
local quoted_keys = setmetatable({}, { __index = function(t, k)
   local q = escape_string(k) .. ":"
   if quoted_count < 4096 then
      quoted_count = quoted_count + 1
      t[k] = q
   end
   return q
end })

local encode_into

encode_into = function(v, out, n)
   local t = type(v)
   if t == "string" then
      n = n + 1; out[n] = escape_string(v); return n
   elseif t == "number" then
      n = n + 1; out[n] = int_text(v); return n
   elseif t == "boolean" then
      n = n + 1; out[n] = v and "true" or "false"; return n
   elseif t == "table" then
      if v == json.null then n = n + 1; out[n] = "null"; return n end
      local mt = getmetatable(v)
      if mt == FLOAT then n = n + 1; out[n] = float_repr(v.value); return n end
      if mt == json.ARRAY then
         if v[1] == nil then n = n + 1; out[n] = "[]"; return n end
         n = n + 1; out[n] = "["
         for i = 1, #v do
            if i > 1 then n = n + 1; out[n] = "," end
            n = encode_into(v[i], out, n)
         end
         n = n + 1; out[n] = "]"
         return n
      end
      local keys = json.keys(v)
      n = n + 1; out[n] = "{"
      local first = true
      for _, k in ipairs(keys) do
         local val = v[k]
         if val ~= nil then
            if not first then n = n + 1; out[n] = "," end
            first = false
            n = n + 1; out[n] = quoted_keys[k]
            n = encode_into(val, out, n)
         end
      end
      n = n + 1; out[n] = "}"
      return n
   elseif v == nil then
      n = n + 1; out[n] = "null"; return n
   end
   error("json.encode: cannot encode a " .. t)
end

function json.encode(v)
   local out = {}
   local n = encode_into(v, out, 0)
   return concat(out, "", 1, n)
end

---------------------------------------------------------------------------------------------------
-- The fixture format.

function dataset.load(path)
   local f = assert(io.open(path, "rb"))
   local text = f:read("*a")
   f:close()
   local doc, err = json.decode(text)
   if not doc then error(path .. ": " .. err.message, 2) end
   local ds = {
      server_version = doc.server_version,
      api_version = doc.api_version,
      flows = doc.flows or json.array(),
      flow_runs = doc.flow_runs or json.array(),
      task_runs = doc.task_runs or json.array(),
      deployments = doc.deployments or json.array(),
   }
   return ds
end

local TIMESTAMP = "^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)"

-- Seconds since the epoch of a timestamp's date and time of day, or nil for any other string. The
-- offset and the fraction are left out: the shift below moves the wall clock and keeps both.
local function timestamp_seconds(s)
   local y, mo, d, h, mi, sec = s:match(TIMESTAMP)
   if not y then return nil end
   return calendar.epoch(tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec))
end

local function shift_strings(v, by, seen)
   if type(v) ~= "table" or seen[v] then return end
   seen[v] = true
   for k, x in pairs(v) do
      if type(x) == "string" then
         local t = timestamp_seconds(x)
         if t then
            local y, m, d = calendar.civil_from_days(floor((t + by) / 86400))
            local rem = (t + by) % 86400
            v[k] = format("%04d-%02d-%02dT%02d:%02d:%02d", y, m, d, floor(rem / 3600), floor(rem / 60) % 60,
               rem % 60) .. x:sub(20)
         end
      else
         shift_strings(x, by, seen)
      end
   end
end

--- Moves every timestamp of a loaded dataset (dataset.load) by the same whole number of seconds, so that
-- its latest `updated` falls in the second `now` (epoch seconds) and what was an hour old when it
-- was recorded is an hour old now. Durations, order and every other field stay as recorded.
-- Returns the shift in seconds.
function dataset.shift_to(ds, now)
   local latest
   for _, list in ipairs({ ds.task_runs, ds.flow_runs, ds.flows }) do
      for _, obj in ipairs(list) do
         local t = type(obj.updated) == "string" and timestamp_seconds(obj.updated)
         if t and (not latest or t > latest) then latest = t end
      end
   end
   if not latest then return 0 end
   local by = floor(now) - latest
   local seen = {}
   for _, list in ipairs({ ds.flows, ds.flow_runs, ds.task_runs, ds.deployments }) do
      shift_strings(list, by, seen)
   end
   return by
end

---------------------------------------------------------------------------------------------------
-- Generation. A Park-Miller generator (multiplier 48271, modulus 2^31 - 1): every product stays
-- below 2^53, so it gives the same numbers under LuaJIT's doubles and Lua 5.4's integers.

local MOD = 2147483647

local function rng(seed)
   local state = (seed % (MOD - 1)) + 1
   local self = {}
   function self.next() -- 1 .. MOD-1
      state = (state * 48271) % MOD
      return state
   end
   function self.int(lo, hi) -- inclusive
      state = (state * 48271) % MOD
      return lo + state % (hi - lo + 1)
   end
   function self.unit() -- [0, 1)
      state = (state * 48271) % MOD
      return (state - 1) / (MOD - 1)
   end
   return self
end
dataset.rng = rng

local function mix(a, b)
   -- A few LCG rounds over (a, b) so that neighbouring run indexes get unrelated streams.
   local s = (a * 69069 + b * 1103 + 12345) % MOD
   for _ = 1, 3 do s = (s * 48271 + b % 65521) % MOD end
   return s
end

local HEX = "0123456789abcdef"
local function hex_digits(r, count, out)
   for _ = 1, count do
      local d = r.int(0, 15) + 1
      out[#out + 1] = sub(HEX, d, d)
   end
end

local function uuid4(r)
   local d = {}
   hex_digits(r, 12, d); d[#d + 1] = "4"; hex_digits(r, 3, d)
   local v = r.int(8, 11) + 1
   d[#d + 1] = sub(HEX, v, v); hex_digits(r, 15, d)
   local s = concat(d)
   return sub(s, 1, 8) .. "-" .. sub(s, 9, 12) .. "-" .. sub(s, 13, 16) .. "-" .. sub(s, 17, 20) .. "-"
      .. sub(s, 21, 32)
end

local function uuid7(r, ms)
   local t = format("%012x", floor(ms))
   local d = { t }
   d[#d + 1] = "7"; hex_digits(r, 3, d)
   local v = r.int(8, 11) + 1
   d[#d + 1] = sub(HEX, v, v); hex_digits(r, 15, d)
   local s = concat(d)
   return sub(s, 1, 8) .. "-" .. sub(s, 9, 12) .. "-" .. sub(s, 13, 16) .. "-" .. sub(s, 17, 20) .. "-"
      .. sub(s, 21, 32)
end

local days_from_civil, civil_from_days = calendar.days_from_civil, calendar.civil_from_days

-- Microseconds since the epoch --> Prefect's text: shape 2 "+00:00" with 6 digits always,
-- shape 3 "Z" with the fraction dropped when it is zero.
local function format_micros(us, shape)
   local secs = floor(us / 1000000)
   local frac = us - secs * 1000000
   local days = floor(secs / 86400)
   local rem = secs - days * 86400
   local y, m, d = civil_from_days(days)
   local base = format("%04d-%02d-%02dT%02d:%02d:%02d", y, m, d, floor(rem / 3600),
      floor(rem / 60) % 60, rem % 60)
   if shape == 3 then
      if frac == 0 then return base .. "Z" end
      return base .. format(".%06dZ", frac)
   end
   return base .. format(".%06d+00:00", frac)
end
dataset.format_micros = format_micros

local STATES = { -- type, weight (per mille), names
   { "COMPLETED", 700, { "Completed", "Completed", "Completed", "Cached" } },
   { "FAILED", 80, { "Failed" } },
   { "RUNNING", 50, { "Running", "Retrying" } },
   { "SCHEDULED", 50, { "Scheduled", "AwaitingRetry", "Late" } },
   { "PENDING", 45, { "Pending", "NotReady" } },
   { "CANCELLED", 30, { "Cancelled" } },
   { "CRASHED", 25, { "Crashed" } },
   { "PAUSED", 15, { "Paused", "Suspended" } },
   { "CANCELLING", 5, { "Cancelling" } },
}

local TASKS = { "extract_orders", "extract_customers", "transform_orders", "load_warehouse",
   "validate_schema", "notify_slack", "compute_metrics", "refresh_cache", "fetch_page",
   "Upload_Report", "dedupe_events", "50%-sample", "score_model", "archive_logs" }
local TAGS = { "etl", "daily", "critical", "db", "ml", "nightly", "backfill", "reporting", "s3" }
local FLOW_NAMES = { "etl-pipeline", "reporting", "ml-training", "ingest-events", "billing-sync",
   "data-quality", "backfill", "exports" }
local MESSAGES = {
   FAILED = { "Task run encountered an exception: ValueError('bad row 17')",
      "Task run failed: TimeoutError after 300 seconds" },
   CRASHED = { "Execution was interrupted by an unexpected exception: KeyboardInterrupt" },
   CANCELLED = { "Cancelled by user" },
   COMPLETED = { "All states completed.", "Finished in state Completed()" },
}

local TASK_RUN_KEYS_2 = { "id", "created", "updated", "name", "flow_run_id", "task_key", "dynamic_key",
   "cache_key", "cache_expiration", "task_version", "empirical_policy", "tags", "state_id", "task_inputs",
   "state_type", "state_name", "run_count", "flow_run_run_count", "expected_start_time",
   "next_scheduled_start_time", "start_time", "end_time", "total_run_time", "estimated_run_time",
   "estimated_start_time_delta", "state" }
local TASK_RUN_KEYS_3 = {}
for _, k in ipairs(TASK_RUN_KEYS_2) do
   TASK_RUN_KEYS_3[#TASK_RUN_KEYS_3 + 1] = k
   if k == "tags" then TASK_RUN_KEYS_3[#TASK_RUN_KEYS_3 + 1] = "labels" end
end
local STATE_KEYS = { "id", "type", "name", "timestamp", "message", "data", "state_details" }
local DETAILS_KEYS_2 = { "flow_run_id", "task_run_id", "child_flow_run_id", "scheduled_time", "cache_key",
   "cache_expiration", "untrackable_result", "pause_timeout", "pause_reschedule", "pause_key",
   "run_input_keyset", "refresh_cache", "retriable", "transition_id", "task_parameters_id" }
local DETAILS_KEYS_3 = { "flow_run_id", "task_run_id", "child_flow_run_id", "scheduled_time", "cache_key",
   "cache_expiration", "deferred", "untrackable_result", "pause_timeout", "pause_reschedule", "pause_key",
   "run_input_keyset", "refresh_cache", "retriable", "transition_id", "task_parameters_id", "traceparent",
   "deployment_concurrency_lease_id" }
local POLICY_KEYS = { "max_retries", "retry_delay_seconds", "retries", "retry_delay", "retry_jitter_factor" }
local FLOW_KEYS_2 = { "id", "created", "updated", "name", "tags" }
local FLOW_KEYS_3 = { "id", "created", "updated", "name", "tags", "labels" }
local FLOW_RUN_KEYS = { "id", "created", "updated", "name", "flow_id", "state_id", "deployment_id",
   "deployment_version", "work_queue_id", "work_queue_name", "flow_version", "parameters",
   "idempotency_key", "context", "empirical_policy", "tags", "parent_task_run_id", "state_type",
   "state_name", "run_count", "expected_start_time", "next_scheduled_start_time", "start_time",
   "end_time", "total_run_time", "estimated_run_time", "estimated_start_time_delta", "auto_scheduled",
   "infrastructure_document_id", "infrastructure_pid", "created_by", "work_pool_id", "work_pool_name",
   "state", "job_variables" }
local FR_POLICY_KEYS = { "max_retries", "retry_delay_seconds", "retries", "retry_delay", "pause_keys",
   "resuming" }

local NULL = json.null
local BASE_MS = days_from_civil(2026, 8, 1) * 86400000 -- 2026-08-01T00:00:00Z

local function pick_state(r)
   local x = r.int(1, 1000)
   for _, s in ipairs(STATES) do
      if x <= s[2] then return s end
      x = x - s[2]
   end
   return STATES[1]
end

-- Everything the filters look at for run i, derived from (seed, i) alone; the full JSON object
-- (dataset.task_run) is derived from the same stream, so nothing needs to be kept per run but these.
local function run_facts(g, i)
   local r = rng(mix(g.seed, i))
   local f = {}
   f.r = r
   -- creation times advance by about 2.5 s per run; UUIDv7 ids (shape 3) follow them.
   local created_us = (g.base_ms + (i - 1) * 2500 + r.int(0, 1999)) * 1000 + r.int(0, 999)
   if g.shape == 3 and r.int(1, 20) == 1 then created_us = floor(created_us / 1000000) * 1000000 end
   f.created = created_us
   f.id = g.shape == 3 and uuid7(r, floor(created_us / 1000)) or uuid4(r)
   f.state_id = g.shape == 3 and uuid7(r, floor(created_us / 1000) + 5) or uuid4(r)
   local task = TASKS[r.int(1, #TASKS)]
   f.task = task
   f.dynamic_key = tostring(i)
   f.name = task .. "-" .. i
   if r.int(1, 50) == 1 then
      f.flow_run = false
   else
      f.flow_run = r.int(1, g.flow_run_count)
   end
   local tags = {}
   local tag_count = r.int(0, 3)
   local seen = {}
   for _ = 1, tag_count do
      local t = TAGS[r.int(1, #TAGS)]
      if not seen[t] then seen[t] = true; tags[#tags + 1] = t end
   end
   f.tags = tags
   local st = pick_state(r)
   f.state_type = st[1]
   f.state_name = st[3][r.int(1, #st[3])]
   local expected = created_us + r.int(1000, 90000)
   f.expected_start_time = expected
   f.next_scheduled_start_time = false
   f.start_time, f.end_time = false, false
   f.total_run_time = 0
   local t = st[1]
   if t == "SCHEDULED" then
      expected = created_us + r.int(60, 86400) * 1000000
      if g.shape == 3 then expected = floor(expected / 1000000) * 1000000 end
      f.expected_start_time = expected
      f.next_scheduled_start_time = expected
   elseif t ~= "PENDING" then
      local start = expected + r.int(500, 400000)
      f.start_time = start
      if t == "COMPLETED" or t == "FAILED" or t == "CRASHED" or t == "CANCELLED" then
         local dur = r.int(2000, 120000000)
         f.end_time = start + dur
         f.total_run_time = dur
      elseif t == "RUNNING" or t == "CANCELLING" or t == "PAUSED" then
         f.total_run_time = r.int(0, 5000000)
      end
   end
   return f
end

local function tsv(us, shape)
   if not us then return NULL end
   return format_micros(us, shape)
end

local function seconds(us) return json.float(us / 1000000) end

function dataset.task_run(g, i)
   local f = run_facts(g, i)
   local r, shape = f.r, g.shape
   local fr = f.flow_run and g.flow_runs[f.flow_run] or nil
   local fr_id = fr and fr.id or NULL
   local state_ts = f.end_time or f.start_time or f.created + 1500
   local updated = state_ts + r.int(100, 9000)
   local retries = r.int(1, 4) == 1 and r.int(1, 5) or nil
   local policy = json.object(POLICY_KEYS, {
      max_retries = 0, retry_delay_seconds = json.float(0), retries = retries or NULL,
      retry_delay = retries and (r.int(0, 1) == 0 and 10 * retries or json.array({ 1, 10, 60 })) or NULL,
      retry_jitter_factor = NULL,
   })
   local inputs_keys, inputs = {}, {}
   local n_inputs = r.int(0, 2)
   for k = 1, n_inputs do
      local pname = ({ "orders", "since", "batch", "config" })[k]
      inputs_keys[#inputs_keys + 1] = pname
      local kind = r.int(1, 3)
      local entry
      if kind == 1 then
         entry = json.object({ "input_type", "name" }, { input_type = "parameter", name = pname })
      elseif kind == 2 then
         entry = json.object({ "input_type", "type" }, { input_type = "constant", type = "int" })
      else
         entry = json.object({ "input_type", "id" }, { input_type = "task_run",
            id = uuid4(rng(mix(g.seed + 7, i * 4 + k))) })
      end
      inputs[pname] = json.array({ entry })
   end
   local messages = MESSAGES[f.state_type]
   local message = messages and messages[r.int(1, #messages)] or NULL
   local cached = f.state_name == "Cached"
   local cache_key = cached and ("ck-" .. f.task .. "-" .. (i % 97)) or NULL
   local cache_exp = cached and format_micros(state_ts + 86400000000, shape) or NULL
   local details = {
      flow_run_id = fr_id, task_run_id = f.id, child_flow_run_id = NULL,
      scheduled_time = f.next_scheduled_start_time and format_micros(f.next_scheduled_start_time, shape)
         or NULL,
      cache_key = cache_key, cache_expiration = cache_exp, untrackable_result = false,
      pause_timeout = NULL, pause_reschedule = false, pause_key = NULL, run_input_keyset = NULL,
      refresh_cache = NULL, retriable = NULL, transition_id = NULL, task_parameters_id = NULL,
   }
   if shape == 3 then
      details.deferred = false
      details.traceparent = r.int(1, 5) == 1 and format("00-%s-%s-01",
         (f.id:gsub("-", "")), sub((f.state_id:gsub("-", "")), 17, 32)) or NULL
      details.deployment_concurrency_lease_id = NULL
   end
   local data = NULL
   if f.state_type == "COMPLETED" and r.int(1, 3) == 1 then
      local key = "/results/" .. f.id:gsub("-", "")
      if shape == 3 then
         -- Prefect 3's result record metadata (the keys its own client needs to parse it; the
         -- rest take their defaults), not 2.x's string serializer, which that client refuses
         data = json.object({ "storage_key", "serializer" }, { storage_key = key,
            serializer = json.object({ "type", "picklelib" },
               { type = "pickle", picklelib = "cloudpickle" }) })
      else
         data = json.object({ "type", "storage_key", "serializer" }, { type = "reference",
            storage_key = key, serializer = "pickle" })
      end
   end
   local state = json.object(STATE_KEYS, {
      id = f.state_id, type = f.state_type, name = f.state_name, timestamp = format_micros(state_ts, shape),
      message = message, data = data,
      state_details = json.object(shape == 3 and DETAILS_KEYS_3 or DETAILS_KEYS_2, details),
   })
   local lateness = f.start_time and (f.start_time - f.expected_start_time) or 0
   local run = {
      id = f.id, created = format_micros(f.created, shape), updated = format_micros(updated, shape),
      name = f.name, flow_run_id = fr_id, task_key = "tasks." .. f.task .. "-" .. sub(f.id, 1, 6),
      dynamic_key = f.dynamic_key, cache_key = cache_key, cache_expiration = cache_exp,
      task_version = r.int(1, 3) == 1 and ("1." .. r.int(0, 9) .. "." .. r.int(0, 20)) or NULL,
      empirical_policy = policy, tags = json.array(f.tags), state_id = f.state_id,
      task_inputs = json.object(inputs_keys, inputs), state_type = f.state_type, state_name = f.state_name,
      run_count = f.start_time and (retries and r.int(1, retries + 1) or 1) or 0,
      flow_run_run_count = fr and 1 or 0,
      expected_start_time = tsv(f.expected_start_time, shape),
      next_scheduled_start_time = tsv(f.next_scheduled_start_time, shape),
      start_time = tsv(f.start_time, shape), end_time = tsv(f.end_time, shape),
      total_run_time = seconds(f.total_run_time), estimated_run_time = seconds(f.total_run_time),
      estimated_start_time_delta = seconds(lateness > 0 and lateness or 0), state = state,
   }
   if shape == 3 then
      local labels_keys, labels = {}, {}
      if fr then
         labels_keys = { "prefect.flow.id", "prefect.flow-run.id" }
         labels["prefect.flow.id"] = fr.flow_id
         labels["prefect.flow-run.id"] = fr.id
      end
      if r.int(1, 4) == 1 then
         labels_keys[#labels_keys + 1] = "team"
         labels.team = ({ "data", "platform", "ml" })[r.int(1, 3)]
      end
      run.labels = json.object(labels_keys, labels)
   end
   return json.object(shape == 3 and TASK_RUN_KEYS_3 or TASK_RUN_KEYS_2, run)
end

local function make_flows(g)
   local flows = json.array()
   local count = math.max(1, math.min(#FLOW_NAMES, floor(g.flow_run_count / 4) + 1))
   for k = 1, count do
      local r = rng(mix(g.seed + 101, k))
      local created = (g.base_ms - 86400000 * (count - k + 1)) * 1000 + r.int(0, 999999)
      local f = {
         id = g.shape == 3 and uuid7(r, floor(created / 1000)) or uuid4(r),
         created = format_micros(created, g.shape), updated = format_micros(created + 11, g.shape),
         name = FLOW_NAMES[k], tags = json.array(k % 2 == 1 and { "etl" } or {}),
      }
      if g.shape == 3 then f.labels = json.object({}, {}) end
      flows[k] = json.object(g.shape == 3 and FLOW_KEYS_3 or FLOW_KEYS_2, f)
   end
   return flows
end

local FR_STATES = { "COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "RUNNING", "CANCELLED" }

local function make_flow_runs(g, flows)
   local runs = json.array()
   for k = 1, g.flow_run_count do
      local r = rng(mix(g.seed + 202, k))
      local flow = flows[r.int(1, #flows)]
      local created = (g.base_ms - 3600000 + k * 1000) * 1000 + r.int(0, 999999)
      local id = g.shape == 3 and uuid7(r, floor(created / 1000)) or uuid4(r)
      local state_id = uuid4(r)
      local st = FR_STATES[r.int(1, #FR_STATES)]
      local start = created + r.int(1000, 900000)
      local finished = st ~= "RUNNING"
      local end_t = finished and start + r.int(1000000, 3600000000) or nil
      local ts = end_t or start
      local details = {
         flow_run_id = id, task_run_id = NULL, child_flow_run_id = NULL, scheduled_time = NULL,
         cache_key = NULL, cache_expiration = NULL, untrackable_result = false, pause_timeout = NULL,
         pause_reschedule = false, pause_key = NULL, run_input_keyset = NULL, refresh_cache = NULL,
         retriable = NULL, transition_id = NULL, task_parameters_id = NULL,
      }
      if g.shape == 3 then
         details.deferred = false; details.traceparent = NULL; details.deployment_concurrency_lease_id = NULL
      end
      local name = ({ "fr-alpha", "fr-beta", "fr-gamma", "fr-delta", "fr-epsilon", "fr-zeta", "fr-eta",
         "fr-theta" })[(k - 1) % 8 + 1] .. (k > 8 and ("-" .. k) or "")
      local fr = {
         id = id, created = format_micros(created, g.shape), updated = format_micros(ts + 5000, g.shape),
         name = name, flow_id = flow.id, state_id = state_id, deployment_id = NULL,
         deployment_version = NULL, work_queue_id = NULL,
         work_queue_name = r.int(1, 2) == 1 and "default" or NULL, flow_version = NULL,
         parameters = json.object({}, {}),
         idempotency_key = NULL, context = json.object({}, {}),
         empirical_policy = json.object(FR_POLICY_KEYS, { max_retries = 0,
            retry_delay_seconds = json.float(0), retries = NULL, retry_delay = NULL,
            pause_keys = json.array(), resuming = false }),
         tags = json.array(k % 3 == 0 and { "nightly" } or {}), parent_task_run_id = NULL,
         state_type = st, state_name = st:sub(1, 1) .. st:sub(2):lower(), run_count = 1,
         expected_start_time = format_micros(created + 100, g.shape), next_scheduled_start_time = NULL,
         start_time = format_micros(start, g.shape), end_time = tsv(end_t, g.shape),
         total_run_time = seconds((end_t or start) - start),
         estimated_run_time = seconds((end_t or start) - start),
         estimated_start_time_delta = seconds(start - created - 100), auto_scheduled = false,
         infrastructure_document_id = NULL, infrastructure_pid = NULL, created_by = NULL,
         work_pool_id = NULL, work_pool_name = NULL,
         state = json.object(STATE_KEYS, { id = state_id, type = st, name = st:sub(1, 1) .. st:sub(2):lower(),
            timestamp = format_micros(ts, g.shape), message = NULL, data = NULL,
            state_details = json.object(g.shape == 3 and DETAILS_KEYS_3 or DETAILS_KEYS_2, details) }),
         job_variables = json.object({}, {}),
      }
      runs[k] = json.object(FLOW_RUN_KEYS, fr)
   end
   return runs
end

-- A run's end comes at most this long after its creation (expected start, lateness, run time).
local LONGEST_RUN_MS = 90000 + 400000 + 120000 + 2000

-- generate{ n = 100000, seed = 1, shape = 2|3, flow_runs = k, ends_at = t } --> dataset. Runs are
-- created about 2.5 s apart from 2026-08-01, or, with `ends_at` (epoch seconds), late enough that
-- the last one has ended by then (only scheduled runs lie after it). `task_runs` is lazy: it
-- materialises run i on first access (and keeps it); `task_runs.n` (and # under Lua 5.4) is the
-- count. `columns` holds what the query engine filters and sorts on, so serving never needs the
-- objects of runs that are not returned.
function dataset.generate(opts)
   opts = opts or {}
   local n = opts.n or 1000
   local shape = opts.shape or 3
   assert(shape == 2 or shape == 3, "shape must be 2 or 3")
   local g = { seed = opts.seed or 1, shape = shape,
      flow_run_count = opts.flow_runs or math.max(1, math.min(500, floor(n / 60))),
      base_ms = opts.ends_at and floor(opts.ends_at) * 1000 - (n - 1) * 2500 - LONGEST_RUN_MS or BASE_MS }
   local flows = make_flows(g)
   g.flow_runs = make_flow_runs(g, flows)
   local cols = { n = n, id = {}, name = {}, flow_run_id = {}, tags = {}, state_type = {},
      state_name = {}, start_time = {}, end_time = {}, expected_start_time = {},
      next_scheduled_start_time = {}, rowid = {} }
   for i = 1, n do cols.rowid[i] = i end
   local id, name, frid, tags, stype, sname = cols.id, cols.name, cols.flow_run_id, cols.tags,
      cols.state_type, cols.state_name
   local st, et, est, nst = cols.start_time, cols.end_time, cols.expected_start_time,
      cols.next_scheduled_start_time
   local fr = g.flow_runs
   for i = 1, n do
      local f = run_facts(g, i)
      id[i] = f.id; name[i] = f.name
      frid[i] = f.flow_run and fr[f.flow_run].id or false
      tags[i] = f.tags; stype[i] = f.state_type; sname[i] = f.state_name
      st[i] = f.start_time; et[i] = f.end_time; est[i] = f.expected_start_time
      nst[i] = f.next_scheduled_start_time
   end
   local cache = {}
   local task_runs = setmetatable({ n = n }, {
      __index = function(_, i)
         if type(i) ~= "number" or i < 1 or i > n or i ~= floor(i) then return nil end
         local run = cache[i]
         if not run then run = dataset.task_run(g, i); cache[i] = run end
         return run
      end,
      __len = function() return n end,
   })
   return {
      server_version = shape == 3 and "3.8.3" or "2.19.9",
      api_version = "0.8.4",
      flows = flows,
      flow_runs = g.flow_runs,
      task_runs = task_runs,
      deployments = json.array(),
      columns = cols,
      -- Builds run i without keeping it (the server caches the encoded text instead).
      build_task_run = function(i) return dataset.task_run(g, i) end,
      shape = shape,
   }
end

--- The JSON text of a page of the first n runs of a generated Prefect 3 dataset, as the test server
-- sends it: for benchmarks and specs that need realistic bytes without a server.
function dataset.page_text(n, seed)
   local ds = dataset.generate{ n = n, seed = seed, shape = 3 }
   local parts = {}
   for i = 1, n do parts[i] = json.encode(ds.task_runs[i]) end
   return "[" .. table.concat(parts, ",") .. "]"
end

return dataset
