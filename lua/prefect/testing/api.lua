-- The Prefect API of the bundled test server, as a pure function of a request:
--   local app = api.new{ data = dataset, prefect = 2|3, db = "sqlite"|"postgres", base_path = "/api",
--                        api_key = nil,
--                        auth_string = nil, csrf = false, default_limit = 200, cache_runs = 20000,
--                        test_writes = false }
--   local status, headers, body = app:handle{ method =, path =, query =, headers = {lowercase → value},
--                                             body = raw string | nil }
-- It answers the way a real Prefect server does (Prefect 2.19 with prefect = 2, 3.x with prefect = 3):
-- routes, redirects, CSRF, auth, the API-version header, limit checks, validation errors in the
-- server's own shapes, and the filter semantics of prefect.testing.query.
local dataset = require("prefect.testing.dataset")
local query = require("prefect.testing.query")

local json = dataset.json
local NULL = json.null
local format, concat = string.format, table.concat

local api = {}
local App = {}
App.__index = App

local function json_headers(extra)
   local h = { ["content-type"] = "application/json" }
   if extra then for k, v in pairs(extra) do h[k] = v end end
   return h
end

local function detail(status, text, extra_headers)
   return status, json_headers(extra_headers), '{"detail":' .. json.quote(text) .. "}"
end

local REDUCED_KEYS = { "id", "created", "updated", "name", "flow_run_id", "task_key", "state_id", "state",
   "task_version", "task_inputs", "empirical_policy", "tags", "start_time", "end_time", "total_run_time",
   "estimated_run_time", "estimated_start_time_delta" }

local DEFAULT_CACHE_RUNS = 20000

-- A cache of at most 2 * limit entries (no limit: a plain table). Entries go into `young`; when it
-- is full it becomes `old` and the previous `old` is dropped. A hit in `old` moves the entry back
-- into `young`, so what is read again and again stays, and what was read once goes away.
local function new_cache(limit)
   return { young = {}, old = {}, count = 0, limit = limit }
end

local function cache_put(cache, i, s)
   local limit = cache.limit
   if limit and cache.count >= limit then
      cache.old, cache.young, cache.count = cache.young, {}, 0
   end
   cache.young[i] = s
   cache.count = cache.count + 1
end

local function cache_get(cache, i)
   local s = cache.young[i]
   if s or not cache.limit then return s end
   s = cache.old[i]
   if s then
      cache.old[i] = nil
      cache_put(cache, i, s)
   end
   return s
end

function api.new(opts)
   opts = opts or {}
   local ds = assert(opts.data, "api.new: `data` (a dataset) is required")
   local self = setmetatable({}, App)
   self.ds = ds
   -- Unless told, behave like the Prefect that produced the data (a recorded 2.19.9 fixture, or a
   -- generated dataset's shape); 2 when the dataset does not say.
   local major = ds.shape or tonumber(tostring(ds.server_version or ""):match("^(%d+)%."))
   self.prefect = opts.prefect or ((major == 3) and 3 or 2)
   assert(self.prefect == 2 or self.prefect == 3, "prefect must be 2 or 3")
   self.base_path = (opts.base_path or "/api"):gsub("/+$", "")
   self.api_key = opts.api_key
   self.auth_string = opts.auth_string
   self.csrf = opts.csrf and true or false
   self.default_limit = opts.default_limit or 200
   self.server_version = ds.server_version or (self.prefect == 3 and "3.9.1" or "2.19.9")
   self.api_version = ds.api_version or "0.8.4"
   assert(opts.db == nil or opts.db == "sqlite" or opts.db == "postgres", "db must be sqlite or postgres")
   self.db = opts.db
   self.test_writes = opts.test_writes and true or false
   self.store = query.new_store(ds, opts.db)
   -- task-run index -> JSON text, filled on first use. A recorded dataset is small and kept whole; a
   -- generated one can have millions of runs (~1.9 KB of text each), so its texts live in a cache of
   -- two generations of at most `cache_runs` entries each: reading every page of a large dataset
   -- keeps the server's memory flat, and a dataset of up to `cache_runs` runs stays fully cached.
   local bounded = ds.build_task_run and (opts.cache_runs or DEFAULT_CACHE_RUNS) or nil
   self.encoded = new_cache(bounded)
   self.encoded_reduced = new_cache(bounded)
   self.csrf_tokens = {}
   self.token_counter = 0
   self.clock = opts.clock or os.time
   -- The default order is needed by nearly every request: compute it before the first one.
   query.order(self.store, "ID_DESC")
   if not ds.build_task_run then
      -- A recorded dataset is small: encode it all now.
      for i = 1, self.store.n do self:task_run_json(i) end
   end
   return self
end

function App:task_run_object(i)
   local ds = self.ds
   if ds.build_task_run then return ds.build_task_run(i) end
   return ds.task_runs[i]
end

function App:task_run_json(i)
   local cache = self.encoded
   local s = cache_get(cache, i)
   if not s then
      s = json.encode(self:task_run_object(i))
      cache_put(cache, i, s)
   end
   return s
end

function App:task_run_reduced_json(i)
   local cache = self.encoded_reduced
   local s = cache_get(cache, i)
   if not s then
      local run = self:task_run_object(i)
      local t = {}
      for _, k in ipairs(REDUCED_KEYS) do t[k] = run[k] end
      s = json.encode(json.object(REDUCED_KEYS, t))
      cache_put(cache, i, s)
   end
   return s
end

local function page_json(self, indexes, reduced)
   local parts = {}
   for k, i in ipairs(indexes) do
      parts[k] = reduced and self:task_run_reduced_json(i) or self:task_run_json(i)
   end
   return "[" .. concat(parts, ",") .. "]"
end

---------------------------------------------------------------------------------------------------
-- Request bodies and validation errors

local function error_item(v3, e)
   if v3 then
      local keys = { "type", "loc", "msg", "input" }
      local t = { type = e.type, loc = json.array(e.loc), msg = e.msg,
         input = e.input == nil and NULL or e.input }
      if e.ctx then keys[#keys + 1] = "ctx"; t.ctx = e.ctx end
      return json.object(keys, t)
   end
   local keys = { "loc", "msg", "type" }
   local t = { loc = json.array(e.loc), msg = e.msg, type = e.type }
   if e.ctx then keys[#keys + 1] = "ctx"; t.ctx = e.ctx end
   return json.object(keys, t)
end

local function validation_error(self, errors, request_body)
   local v3 = self.prefect == 3
   local items = json.array()
   for k, e in ipairs(errors) do items[k] = error_item(v3, e) end
   local body = json.object({ "exception_message", "exception_detail", "request_body" }, {
      exception_message = "Invalid request received.",
      exception_detail = items,
      request_body = request_body == nil and NULL or request_body,
   })
   return 422, json_headers(), json.encode(body)
end

local function is_json_content_type(ct)
   local mt = ct:lower():match("^%s*([^;%s]+)")
   if not mt then return false end
   local main, subtype = mt:match("^([^/]+)/(.+)$")
   return main == "application" and (subtype == "json" or subtype:sub(-5) == "+json")
end

local function valid_utf8(s)
   local i, n = 1, #s
   while i <= n do
      local c = s:byte(i)
      local len
      if c < 0x80 then len = 1
      elseif c >= 0xC2 and c <= 0xDF then len = 2
      elseif c >= 0xE0 and c <= 0xEF then len = 3
      elseif c >= 0xF0 and c <= 0xF4 then len = 4
      else return false end
      for k = i + 1, i + len - 1 do
         local b = s:byte(k)
         if not b or b < 0x80 or b > 0xBF then return false end
      end
      i = i + len
   end
   return true
end

-- Reads the body the way FastAPI does for this server version.
-- Returns kind, value: "none" | "json", value | "raw", text | "error", status, headers, body.
function App:read_body(req)
   local raw = req.body
   if raw == nil or raw == "" then return "none" end
   local headers = req.headers or {}
   local ct = headers["content-type"]
   if self.prefect == 3 then
      -- Prefect 3 supplies a JSON content type only when there is a Content-Length; FastAPI then
      -- reads the body only for a JSON content type and otherwise ignores it.
      if not ct then
         if not headers["content-length"] then return "none" end
         ct = "application/json"
      end
      if not is_json_content_type(ct) then return "none" end
   elseif ct and not is_json_content_type(ct) then
      return "raw", raw
   end
   local text = raw
   if text:sub(1, 3) == "\239\187\191" then text = text:sub(4) end
   if not valid_utf8(text) then
      return "error", detail(400, "There was an error parsing the body")
   end
   local value, err = json.decode(text)
   if value == nil then
      local v3 = self.prefect == 3
      local e
      if v3 then
         e = { type = "json_invalid", loc = { "body", err.pos }, msg = "JSON decode error",
            input = json.object({}, {}), ctx = json.object({ "error" }, { error = err.msg }) }
      else
         e = { type = "value_error.jsondecode", loc = { "body", err.pos }, msg = err.message,
            ctx = json.object({ "msg", "doc", "pos", "lineno", "colno" }, { msg = err.msg, doc = text,
               pos = err.pos, lineno = err.lineno, colno = err.colno }) }
      end
      return "error", validation_error(self, { e }, text)
   end
   if value == NULL then return "none" end
   return "json", value
end

---------------------------------------------------------------------------------------------------
-- Checks that run before the endpoint

local function py_int(s)
   local t = s:match("^%s*(.-)%s*$")
   local sign, digits = t:match("^([-+]?)(%d[%d_]*)$")
   if not digits or digits:find("__") or digits:sub(-1) == "_" then return nil end
   local n = tonumber((digits:gsub("_", "")))
   return sign == "-" and -n or n
end

function App.check_api_version(_, req)
   local v = (req.headers or {})["x-prefect-api-version"]
   if v == nil or v == "" then return nil end
   local parts = {}
   for piece in (v .. "."):gmatch("([^.]*)%.") do parts[#parts + 1] = piece end
   local nums = {}
   local ok = #parts == 3
   if ok then
      for k = 1, 3 do
         nums[k] = py_int(parts[k])
         if not nums[k] then ok = false end
      end
   end
   if not ok then
      return { detail(400, "Invalid X-PREFECT-API-VERSION header format."
         .. "Expected header in format 'x.y.z' but received " .. v) }
   end
   local a, b, c = nums[1], nums[2], nums[3]
   if a < 0 or (a == 0 and (b < 8 or (b == 8 and c < 0))) then
      return { detail(400, format("The request specified API version %s but this server requires version "
         .. "0.8.0 or higher.", v)) }
   end
   return nil
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_INDEX = {}
for k = 1, 64 do B64_INDEX[B64:byte(k)] = k - 1 end

local function base64_decode(s)
   if #s % 4 ~= 0 or s:find("[^%w%+/=]") or s:find("=[^=]") then return nil end
   local out = {}
   for k = 1, #s, 4 do
      local a, b, c, d = s:byte(k, k + 3)
      local va, vb = B64_INDEX[a], B64_INDEX[b]
      if not va or not vb then return nil end
      local vc, vd = B64_INDEX[c], B64_INDEX[d]
      local n = va * 262144 + vb * 4096 + (vc or 0) * 64 + (vd or 0)
      out[#out + 1] = string.char(math.floor(n / 65536) % 256)
      if c ~= 61 then out[#out + 1] = string.char(math.floor(n / 256) % 256) end
      if d ~= 61 then out[#out + 1] = string.char(n % 256) end
   end
   return concat(out)
end
api.base64_decode = base64_decode

-- Constant-time comparison, as the server does it.
local function same(a, b)
   if #a ~= #b then return false end
   local diff = 0
   for k = 1, #a do if a:byte(k) ~= b:byte(k) then diff = diff + 1 end end
   return diff == 0
end

function App:check_auth(req, route_path)
   if not self.api_key and not self.auth_string then return nil end
   if route_path == "/health" or route_path == "/ready" then return nil end
   local h = (req.headers or {})["authorization"] or ""
   local scheme, cred = h:match("^(%S+) (%S+)$")
   if self.auth_string and scheme == "Basic" then
      local decoded = base64_decode(cred)
      if decoded and same(decoded, self.auth_string) then return nil end
   end
   if self.api_key and scheme == "Bearer" and same(cred, self.api_key) then return nil end
   if self.api_key and (not self.auth_string or scheme == "Bearer") then
      return { detail(401, "Invalid authentication credentials") }
   end
   return { 401, json_headers(), '{"exception_message":"Unauthorized"}' }
end

local function url_decode(s)
   return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function query_param(q, name)
   if not q then return nil end
   for pair in q:gmatch("[^&]+") do
      local k, v = pair:match("^([^=]*)=?(.*)$")
      if url_decode(k) == name then return url_decode(v) end
   end
   return nil
end

local UNSAFE = { POST = true, PUT = true, PATCH = true, DELETE = true }

function App:check_csrf(req)
   if not self.csrf or not UNSAFE[req.method] then return nil end
   local h = req.headers or {}
   local token, client = h["prefect-csrf-token"], h["prefect-csrf-client"]
   if token == nil then return { detail(403, "Missing CSRF token.") } end
   if client == nil then return { detail(403, "Missing client identifier.") } end
   local stored = self.csrf_tokens[client]
   if not stored or stored.expires <= self.clock() or not same(stored.token, token) then
      return { detail(403, "Invalid CSRF token or client identifier.") }
   end
   return nil
end

local function iso_now(t, prefect)
   return dataset.format_micros(t * 1000000, prefect == 3 and 3 or 2)
end

function App:issue_csrf_token(req)
   -- The required `client` query parameter is validated before the endpoint looks at the setting.
   local client = query_param(req.query, "client")
   if client == nil then
      local v3 = self.prefect == 3
      local e = v3 and { type = "missing", loc = { "query", "client" }, msg = "Field required", input = NULL }
         or { type = "value_error.missing", loc = { "query", "client" }, msg = "field required" }
      return validation_error(self, { e }, nil)
   end
   if not self.csrf then return detail(422, "CSRF protection is disabled.") end
   self.token_counter = self.token_counter + 1
   local now = self.clock()
   local r = dataset.rng(now % 2147483646 + self.token_counter * 7919)
   local hex = {}
   for k = 1, 16 do hex[k] = format("%04x", r.int(0, 65535)) end
   local token = concat(hex)
   local id = query.canonical_uuid(concat(hex, "", 1, 8))
   self.csrf_tokens[client] = { token = token, expires = now + 3600 }
   local created = iso_now(now, self.prefect)
   local body = json.object({ "id", "created", "updated", "token", "client", "expiration" }, {
      id = id, created = created, updated = created, token = token, client = client,
      expiration = iso_now(now + 3600, self.prefect) })
   return 200, json_headers(), json.encode(body)
end

---------------------------------------------------------------------------------------------------
-- Endpoints

-- Body-driven endpoints share: read body, API version, limit and schema validation. FastAPI reads
-- (and JSON-decodes) the body before it solves any dependency, so a malformed body is reported even
-- when the API-version header is also wrong.
function App:prepare(req, endpoint)
   local kind, a, b, c = self:read_body(req)
   if kind == "error" then return nil, { a, b, c } end
   local failure = self:check_api_version(req)
   if failure then return nil, failure end
   local body
   if kind == "json" then body = a elseif kind == "raw" then body = a end
   local p, err = query.validate_body(body, endpoint,
      { prefect = self.prefect, default_limit = self.default_limit })
   if not p then
      if err.detail then return nil, { detail(err.status, err.detail) } end
      return nil, { validation_error(self, err.errors, body) }
   end
   return p
end

function App:task_runs_filter(req)
   local p, failure = self:prepare(req, "task_runs_filter")
   if not p then return failure[1], failure[2], failure[3] end
   local indexes = query.task_runs(self.store, p, self.prefect)
   return 200, json_headers(), page_json(self, indexes, false)
end

function App:task_runs_count(req)
   local p, failure = self:prepare(req, "task_runs_count")
   if not p then return failure[1], failure[2], failure[3] end
   return 200, json_headers(), json.int_text(query.count(self.store, p, self.prefect))
end

function App:task_runs_paginate(req)
   local p, failure = self:prepare(req, "task_runs_paginate")
   if not p then return failure[1], failure[2], failure[3] end
   local limit, page = p.limit, p.page or 1
   p.offset = (page - 1) * limit
   local indexes = query.task_runs(self.store, p, self.prefect)
   local count = query.count(self.store, p, self.prefect)
   local pages = limit > 0 and math.floor((count + limit - 1) / limit) or 0
   return 200, json_headers(), format('{"results":%s,"count":%s,"limit":%s,"pages":%s,"page":%s}',
      page_json(self, indexes, true), json.int_text(count), json.int_text(limit), json.int_text(pages),
      json.int_text(page))
end

function App:flow_runs_filter(req)
   local p, failure = self:prepare(req, "flow_runs_filter")
   if not p then return failure[1], failure[2], failure[3] end
   local rows = query.flow_runs(self.store, p, self.prefect)
   local parts = {}
   for k, r in ipairs(rows) do parts[k] = json.encode(r.obj) end
   return 200, json_headers(), "[" .. concat(parts, ",") .. "]"
end

function App:flows_filter(req)
   local p, failure = self:prepare(req, "flows_filter")
   if not p then return failure[1], failure[2], failure[3] end
   local rows = query.flows(self.store, p, self.prefect)
   local parts = {}
   for k, r in ipairs(rows) do parts[k] = json.encode(r.obj) end
   return 200, json_headers(), "[" .. concat(parts, ",") .. "]"
end

-- GET /{kind}/{id}: Prefect 2 reads any path segment as the id and validates it (422); Prefect 3's
-- route only matches a hyphenated UUID (checked by the router).
function App:read_by_id(req, id, kind)
   local failure = self:check_api_version(req)
   if failure then return failure[1], failure[2], failure[3] end
   local canonical = query.canonical_uuid(id)
   if not canonical then
      return validation_error(self, { { loc = { "path", "id" }, msg = "value is not a valid uuid",
         type = "type_error.uuid" } }, nil)
   end
   if kind == "task_run" then
      local i = self.store.by_id[canonical]
      if not i then return detail(404, "Task not found") end
      return 200, json_headers(), self:task_run_json(i)
   end
   local fr = self.store.flow_run_by_id[canonical]
   if not fr then return detail(404, "Flow run not found") end
   return 200, json_headers(), json.encode(fr.obj)
end

function App:simple(req, body_text)
   local failure = self:check_api_version(req)
   if failure then return failure[1], failure[2], failure[3] end
   return 200, json_headers(), body_text
end

---------------------------------------------------------------------------------------------------
-- Test writes (only with test_writes = true): POST /admin/test/task_runs takes a JSON list of task
-- runs; a run whose id is in the dataset replaces it (a run moved to another state), any other is
-- added after the others (as a newly created row). Reads see them at once, with the same filter and
-- sort semantics as the recorded runs. Not a Prefect route: a real server answers it 404.

local function with_created(run, now)
   if run.created ~= nil then return run end
   local keys = { "created" }
   for _, k in ipairs(json.keys(run)) do keys[#keys + 1] = k end
   run.created = now
   return json.object(keys, run)
end

function App:write_task_runs(req)
   if self.ds.build_task_run then
      return detail(409, "a generated dataset is read-only; start the server with a recorded one")
   end
   local kind, list = self:read_body(req)
   if kind == "error" then return list[1], list[2], list[3] end
   if kind ~= "json" or not json.is_array(list) then
      return detail(422, "expected a JSON list of task runs")
   end
   local runs, index = self.ds.task_runs, {}
   for i, run in ipairs(runs) do index[run.id] = i end
   local now = iso_now(self.clock(), self.prefect)
   local added, replaced = 0, 0
   for k, run in ipairs(list) do
      local id = json.is_object(run) and type(run.id) == "string" and query.canonical_uuid(run.id)
      if not id or id ~= run.id then
         return detail(422, format("task run %d: expected an object with a lowercase hyphenated UUID id", k))
      end
      if index[id] then
         runs[index[id]] = run
         replaced = replaced + 1
      else
         runs[#runs + 1] = with_created(run, now)
         index[id] = #runs
         added = added + 1
      end
   end
   -- A recorded dataset is small: build the store and the texts again rather than patch them.
   self.store = query.new_store(self.ds, self.db)
   self.encoded, self.encoded_reduced = new_cache(nil), new_cache(nil)
   query.order(self.store, "ID_DESC")
   return 200, json_headers(), format('{"added":%d,"replaced":%d}', added, replaced)
end

---------------------------------------------------------------------------------------------------
-- Routing, the way Starlette does it: the first route matching path and method wins; a path
-- match with another method gives 405; no match at all tries the path with the trailing slash
-- toggled (307) before 404.

local UUID_SEGMENT = "%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x"

local function not_supported()
   return detail(501, "Not implemented by the lua-prefect test server")
end

local function build_routes(self)
   local v3 = self.prefect == 3
   local id_seg = v3 and UUID_SEGMENT or "[^/]+"
   local r = {}
   local function route(methods, pattern, handler)
      local set = {}
      for m in methods:gmatch("%S+") do set[m] = true end
      if set.GET then set.HEAD = true end
      r[#r + 1] = { methods = set, allow = methods:gsub(" ", ", ") .. (set.GET and ", HEAD" or ""),
         pattern = "^" .. pattern .. "$", handler = handler }
   end
   route("GET", "/health", function(_, req) return self:simple(req, "true") end)
   route("GET", "/ready", function(_, req) return self:simple(req, '{"message":"OK"}') end)
   route("GET", "/version", function(_, req) return self:simple(req, json.quote(self.api_version)) end)
   route("GET", "/admin/version", function(_, req)
      return self:simple(req, json.quote(self.server_version))
   end)
   route("GET", "/csrf%-token", function(_, req)
      local failure = self:check_api_version(req)
      if failure then return failure[1], failure[2], failure[3] end
      return self:issue_csrf_token(req)
   end)
   -- task_runs router, in Prefect's declaration order
   route("POST", "/task_runs/", not_supported)
   route("PATCH", "/task_runs/(" .. id_seg .. ")", not_supported)
   route("POST", "/task_runs/count", function(_, req) return self:task_runs_count(req) end)
   route("POST", "/task_runs/history", not_supported)
   route("GET", "/task_runs/(" .. id_seg .. ")", function(_, req, id)
      return self:read_by_id(req, id, "task_run")
   end)
   route("POST", "/task_runs/filter", function(_, req) return self:task_runs_filter(req) end)
   if v3 then
      route("POST", "/task_runs/paginate", function(_, req) return self:task_runs_paginate(req) end)
   end
   route("DELETE", "/task_runs/(" .. id_seg .. ")", not_supported)
   route("POST", "/task_runs/(" .. id_seg .. ")/set_state", not_supported)
   -- flow_runs router (the parts the test server serves)
   route("POST", "/flow_runs/", not_supported)
   route("PATCH", "/flow_runs/(" .. id_seg .. ")", not_supported)
   route("POST", "/flow_runs/count", not_supported)
   route("GET", "/flow_runs/(" .. id_seg .. ")", function(_, req, id)
      return self:read_by_id(req, id, "flow_run")
   end)
   route("POST", "/flow_runs/filter", function(_, req) return self:flow_runs_filter(req) end)
   route("DELETE", "/flow_runs/(" .. id_seg .. ")", not_supported)
   route("POST", "/flow_runs/(" .. id_seg .. ")/set_state", not_supported)
   if self.test_writes then
      route("POST", "/admin/test/task_runs", function(_, req) return self:write_task_runs(req) end)
   end
   -- flows router: only the filter
   route("POST", "/flows/", not_supported)
   route("POST", "/flows/filter", function(_, req) return self:flows_filter(req) end)
   return r
end

local function match(routes, method, path)
   local partial
   for _, rt in ipairs(routes) do
      local caps = { path:match(rt.pattern) }
      if caps[1] ~= nil then
         if rt.methods[method] then return rt, caps end
         partial = partial or rt
      end
   end
   return nil, nil, partial
end

local function unpack_result(t) return t[1], t[2], t[3] end

function App:handle(req)
   local method = (req.method or "GET"):upper()
   local full_path = req.path or "/"
   local base = self.base_path
   local path
   if base == "" then
      path = full_path
   elseif full_path == base then
      path = ""
   elseif full_path:sub(1, #base + 1) == base .. "/" then
      path = full_path:sub(#base + 1)
   else
      return detail(404, "Not Found")
   end
   self.routes = self.routes or build_routes(self)

   -- Middleware first: it sees every request under the API, routed or not.
   local failure = self:check_csrf(req)
   if failure then return unpack_result(failure) end
   failure = self:check_auth(req, path)
   if failure then return unpack_result(failure) end

   local rt, caps, partial = match(self.routes, method, path)
   if not rt and not partial then
      local other = path:sub(-1) == "/" and path:sub(1, -2) or path .. "/"
      if path ~= "/" and path ~= "" then
         local r2, _, p2 = match(self.routes, method, other)
         if r2 or p2 then
            local host = (req.headers or {})["host"]
            local location = base .. other
            if host then location = "http://" .. host .. location end
            if req.query and req.query ~= "" then location = location .. "?" .. req.query end
            return 307, { location = location, ["content-length"] = "0" }, ""
         end
      end
      return detail(404, "Not Found")
   end

   if not rt then
      return detail(405, "Method Not Allowed", { allow = partial.allow })
   end
   local status, headers, body = rt.handler(self, req, caps[1])
   if method == "HEAD" then body = "" end
   return status, headers, body
end

return api
