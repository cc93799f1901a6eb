--- Fault injection for the test server: which fault a request asks for, and the canned bodies faults
-- answer with. A fault comes from the `X-Test-Fault` header, the `fault=` query parameter (both are
-- removed before the app sees the request) or the server-wide default; the syntax is `;`-separated
-- items, each `name` or `name=value`, e.g. `status=429; retry_after=2`. README.md lists every item.
-- @module prefect.testing.faults

local json = require("prefect.testing.dataset").json

local faults = {}

-- name -> kind of value
local ITEMS = {
   status = "integer", retry_after = "number", retry_after_date = "number",
   delay_ms = "number", drip_bytes = "integer", drip_ms = "number",
   cut_after = "integer", reset = "flag", invalid_json = "flag", html = "flag",
   huge = "integer", content_type = "text", redirect = "flag",
   fail_first = "integer", key = "text", gzip_bomb = "integer", chunked = "flag", none = "flag",
   head_line_endless = "flag", continue_flood = "flag", head_drip_ms = "number", status_line = "text",
   http09 = "flag", header_bytes = "integer", content_length2 = "integer", bad_chunk = "flag",
   chunk_line_endless = "flag", trailer_endless = "flag", ignore_offset = "flag", body = "any_text",
   endless_runs = "flag", echo_auth = "flag", redirect_status = "integer", location = "text",
   offset = "integer",
}

-- Items that choose which requests a fault applies to, not what happens to them.
local SELECTORS = { fail_first = true, key = true, offset = true }

--- Parses a fault text into a table (name -> value; flags are true). Returns nil, message when the text
-- names an unknown item or gives a bad value, so a typo in a test shows at once.
function faults.parse(text)
   local spec = {}
   for item in (text .. ";"):gmatch("([^;]*);") do
      item = item:match("^%s*(.-)%s*$")
      if item ~= "" then
         local name, value = item:match("^([%w_]+)%s*=%s*(.-)$")
         name = name or item
         local kind = ITEMS[name]
         if not kind then return nil, ("unknown fault item %q"):format(name:sub(1, 40)) end
         if kind == "flag" then
            if value then return nil, ("fault item %q takes no value"):format(name) end
            spec[name] = true
         elseif not value or (value == "" and kind ~= "any_text") then
            return nil, ("fault item %q needs a value"):format(name)
         elseif kind == "text" or kind == "any_text" then
            spec[name] = value
         else
            local n = tonumber(value)
            if not n or n < 0 or n ~= n or n == math.huge or (kind == "integer" and n ~= math.floor(n)) then
               return nil, ("fault item %q needs a non-negative %s"):format(name, kind)
            end
            spec[name] = n
         end
      end
   end
   if spec.status and (spec.status < 100 or spec.status > 599) then
      return nil, "fault item \"status\" must be 100..599"
   end
   if spec.redirect_status and (spec.redirect_status < 300 or spec.redirect_status > 399) then
      return nil, "fault item \"redirect_status\" must be 300..399"
   end
   if spec.none then return {} end
   if spec.fail_first then
      local fails = false
      for name in pairs(spec) do
         if not SELECTORS[name] then fails = true end
      end
      -- "fail_first=2" alone: fail like a briefly overloaded Prefect.
      if not fails then spec.status = 503 end
   end
   return spec
end

local function unescape(s)
   s = s:gsub("+", " ")
   return (s:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

-- Splits the `fault` parameter off a raw query string; returns its decoded value (or nil) and the query
-- without it, other parameters untouched.
local function split_query(query)
   if not query or query == "" then return nil, query end
   local value
   local kept = {}
   for param in query:gmatch("[^&]+") do
      local name, raw = param:match("^([^=]*)=?(.*)$")
      if unescape(name) == "fault" then
         value = unescape(raw)
      else
         kept[#kept + 1] = param
      end
   end
   return value, table.concat(kept, "&")
end
faults.split_query = split_query

-- A top-level `"offset": N` in a filter body (Prefect's bodies have no other key of that name).
local OFFSET = '("offset"%s*:%s*)(%d+)'

--- Whether `req` is a task run filter: POST to a path ending in /task_runs/filter.
function faults.is_filter(req)
   return req.method == "POST" and req.path:sub(-17) == "/task_runs/filter"
end

--- The offset a filter body asks for: its `"offset"`, 0 without one (Prefect's default), nil when it is
-- not a non-negative integer.
function faults.body_offset(body)
   body = body or ""
   local _, digits = body:match(OFFSET)
   if digits then return tonumber(digits) end
   if body:find('"offset"', 1, true) then return nil end
   return 0
end

--- `body` with its offset set to 0 (unchanged when it has none).
function faults.zero_offset(body)
   return (body:gsub(OFFSET, "%10", 1))
end

local Injector = {}
Injector.__index = Injector

--- An injector with a server-wide default fault text (or nil). Raises on an invalid default, since it
-- comes from the command line or the caller's options.
function faults.new(default_text)
   local default
   if default_text and default_text ~= "" then
      local err
      default, err = faults.parse(default_text)
      if not default then error("invalid fault: " .. err, 2) end
   end
   return setmetatable({ default = default, default_text = default_text, seen = {} }, Injector)
end

--- Takes the fault off a request: removes the header and the query parameter (so the app sees the
-- request as the client meant it) and returns the fault spec to apply, nil for none, or
-- false, message for a fault text that does not parse.
-- `offset=n` applies the rest of the spec only to task run filters whose body asks for offset n (other
-- requests get no fault and are not counted). `fail_first=n` applies it to the first n requests with the
-- same `key` (default: the fault text itself) and none after them.
function Injector:take(req)
   local header = req.headers["x-test-fault"]
   req.headers["x-test-fault"] = nil
   local from_query, query = split_query(req.query)
   if from_query then
      req.query = query
      req.target = req.path .. (query ~= "" and "?" .. query or "")
   end

   local text = header or from_query
   local spec
   if text then
      local err
      spec, err = faults.parse(text)
      if not spec then return false, err end
   else
      spec, text = self.default, self.default_text
   end
   if not spec or next(spec) == nil then return nil end

   if spec.offset and not (faults.is_filter(req) and faults.body_offset(req.body) == spec.offset) then
      return nil
   end
   if spec.fail_first then
      local key = spec.key or text
      local seen = (self.seen[key] or 0) + 1
      self.seen[key] = seen
      if seen > spec.fail_first then return nil end
   end
   return spec
end

--- Forgets the `fail_first` counts.
function Injector:reset()
   self.seen = {}
end

-- Bodies shaped like Prefect's (or its proxies') for each status a fault can ask for.
local ERROR_BODIES = {
   [500] = '{"exception_message": "Internal Server Error"}',
   [503] = '{"exception_message": "Service Unavailable"}',
}

--- A JSON error body for `status`.
function faults.error_body(status, reasons)
   return ERROR_BODIES[status] or ('{"detail": "%s"}'):format(reasons[status] or "Error")
end

--- An HTML error page of the kind a proxy or load balancer sends.
function faults.html_page(status, reasons)
   local title = ("%d %s"):format(status, reasons[status] or "")
   return table.concat({
      "<!DOCTYPE html>\n<html>\n<head><title>", title, "</title></head>\n<body>\n<center><h1>", title,
      "</h1></center>\n<hr><center>nginx</center>\n</body>\n</html>\n",
   })
end

--- A JSON array whose first element is fine and whose second is not: a streaming decoder hands out one
-- run, then fails at a known place.
faults.INVALID_JSON = '[{"id": "00000000-0000-4000-8000-000000000001", "name": "ok"}, {"id": nope}]'

local HUGE_ELEMENT = '{"id": "00000000-0000-4000-8000-000000000000", "name": "huge", '
   .. '"state_type": "COMPLETED", "state_name": "Completed", "tags": [], "run_count": 1}'
local HUGE_BLOCK = string.rep("," .. HUGE_ELEMENT, 400)

--- An iterator over the pieces of a body of exactly `n` bytes that reads as a JSON array of task-run-like
-- objects ("[" elements, whitespace, "]"); it is generated as it is sent, never held whole.
function faults.huge_body(n)
   local sent = 0
   local function emit(s)
      sent = sent + #s
      return s
   end
   return function()
      local left = n - sent
      if left <= 0 then return nil end
      if sent == 0 then
         if n >= #HUGE_ELEMENT + 2 then return emit("[" .. HUGE_ELEMENT) end
         return emit(("[" .. string.rep(" ", n - 2) .. "]"):sub(1, n))
      end
      if left > #HUGE_BLOCK + 1 then return emit(HUGE_BLOCK) end
      local whole = math.floor((left - 1) / (#HUGE_ELEMENT + 1))
      local tail = string.rep("," .. HUGE_ELEMENT, whole)
      return emit(tail .. string.rep(" ", left - 1 - #tail) .. "]")
   end
end

-- A task run in Prefect 2.19's shape, for `endless_runs` when the app's own answer has no run to copy.
local BUILTIN_RUN = '{"id":"00000000-0000-4000-8000-000000000000","created":"2024-01-01T00:00:00+00:00",'
   .. '"updated":"2024-01-01T00:00:01+00:00","name":"endless-0","flow_run_id":null,'
   .. '"task_key":"tasks.endless","dynamic_key":"0","cache_key":null,"cache_expiration":null,'
   .. '"task_version":null,"empirical_policy":{"max_retries":0,"retry_delay_seconds":0.0,"retries":0,'
   .. '"retry_delay":0,"retry_jitter_factor":null},"tags":["endless"],"state_id":null,"task_inputs":{},'
   .. '"state_type":"COMPLETED","state_name":"Completed","run_count":1,"flow_run_run_count":1,'
   .. '"expected_start_time":"2024-01-01T00:00:00+00:00","next_scheduled_start_time":null,'
   .. '"start_time":"2024-01-01T00:00:00+00:00","end_time":"2024-01-01T00:00:01+00:00",'
   .. '"total_run_time":1.0,"estimated_run_time":1.0,"estimated_start_time_delta":0.0,"state":null}'

-- The pieces of a run's JSON around every occurrence of its id (a run names itself in its state too).
local function split_at(text, id)
   local parts, from = {}, 1
   while true do
      local s, e = text:find(id, from, true)
      if not s then break end
      parts[#parts + 1] = text:sub(from, s - 1)
      from = e + 1
   end
   parts[#parts + 1] = text:sub(from)
   return parts
end

--- A template for the runs `endless_runs` sends, from the app's answer `body` (a JSON array of runs):
-- the first run's JSON split at its id, or a built-in run's when the body holds none.
function faults.run_template(body)
   local runs = type(body) == "string" and body:sub(1, 1) == "[" and json.decode(body)
   local run = json.is_array(runs) and runs[1]
   if json.is_object(run) and type(run.id) == "string" and #run.id >= 8 then
      return split_at(json.encode(run), run.id)
   end
   return split_at(BUILTIN_RUN, "00000000-0000-4000-8000-000000000000")
end

-- Runs per piece of an endless body.
local RUNS_PER_PIECE = 100

--- An iterator over the pieces of a JSON array of runs made from `template` (see run_template) that
-- does not end until `max_bytes` have been made or `max_seconds` have passed; it then returns nil
-- without closing the array. Each run gets the next id from `counter.n`, so ids are distinct for as long
-- as `counter` lives.
function faults.endless_runs(template, counter, max_bytes, max_seconds, clock)
   local made, stop_at = 0, clock() + max_seconds
   local parts = {}
   return function()
      if made >= max_bytes or clock() >= stop_at then return nil end
      for i = 1, RUNS_PER_PIECE do
         counter.n = counter.n + 1
         parts[i] = table.concat(template, ("eeeeeeee-0000-4000-8000-%012x"):format(counter.n))
      end
      local piece = (made == 0 and "[" or ",") .. table.concat(parts, ",", 1, RUNS_PER_PIECE)
      made = made + #piece
      return piece
   end
end

--- The body of a 401 from a server that echoes the credentials it refused.
function faults.echo_auth_body(authorization)
   return '{"detail": ' .. json.quote("Invalid credentials: " .. authorization) .. "}"
end

return faults
