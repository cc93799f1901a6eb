--- The Prefect client: configuration, authentication, headers, endpoints
-- and retries. Option checking lives in prefect.options, CSRF tokens in
-- prefect.csrf, paging in prefect.pager, the retry policy in prefect.retry,
-- the wire in prefect.transport.*.
--
-- Run-time failures come back as `nil, err` (err from prefect.errors);
-- misuse (a wrong option, a bad argument) raises at once, before any request.
-- @module prefect.client

local csrf = require("prefect.csrf")
local errors = require("prefect.errors")
local options = require("prefect.options")
local retry = require("prefect.retry")

local client = {}

client.VERSION = "scm-1"
client.API_VERSION = "0.8.4"
client.DEFAULT_URL = "http://127.0.0.1:4200/api"
client.MAX_PAGE_SIZE = options.MAX_PAGE_SIZE
client.MAX_CONCURRENCY = options.MAX_CONCURRENCY

local json -- lua-cjson, loaded on first use

local function cjson()
   if not json then json = require("cjson") end
   return json
end

local function json_decode(s)
   local ok, v = pcall(cjson().decode, s)
   if ok then return v end
   return nil
end

local misuse = options.misuse
client.misuse = misuse

---------------------------------------------------------------------------
-- base64 (RFC 4648, with padding), in plain arithmetic so it runs on 5.1.

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

--- `s` in base64 (RFC 4648, with padding), as Basic authentication sends `user:pass`.
function client.base64(s)
   local out = {}
   local n = #s
   for i = 1, n, 3 do
      local a, b, c = s:byte(i, i + 2)
      local v = a * 65536 + (b or 0) * 256 + (c or 0)
      local c1 = math.floor(v / 262144) % 64
      local c2 = math.floor(v / 4096) % 64
      local c3 = math.floor(v / 64) % 64
      local c4 = v % 64
      out[#out + 1] = B64:sub(c1 + 1, c1 + 1) .. B64:sub(c2 + 1, c2 + 1)
         .. (b and B64:sub(c3 + 1, c3 + 1) or "=")
         .. (c and B64:sub(c4 + 1, c4 + 1) or "=")
   end
   return table.concat(out)
end

---------------------------------------------------------------------------
-- The client object

local Client = {}
Client.__index = Client

-- Credentials live here, not in the client table, so that printing or
-- dumping a client can never show them.
local secrets = setmetatable({}, { __mode = "k" })

local function in_ngx_lua()
   local ngx = rawget(_G, "ngx")
   return type(ngx) == "table" and type(ngx.get_phase) == "function"
end

local function default_clock()
   if in_ngx_lua() then
      local ngx = rawget(_G, "ngx")
      return function()
         ngx.update_time()
         return ngx.now()
      end
   end
   local ok, socket = pcall(require, "socket")
   if ok and type(socket) == "table" and socket.gettime then return socket.gettime end
   return os.time
end

local function default_sleep()
   -- inside nginx: ngx.sleep where the phase allows it, blocking elsewhere
   if in_ngx_lua() then return require("prefect.transport.ngx").sleep end
   local ok, socket = pcall(require, "socket")
   if ok and type(socket) == "table" and socket.sleep then return socket.sleep end
   return function(s) os.execute("sleep " .. string.format("%.3f", s)) end
end

--- A new client. See docs/client.md for every option.
function client.new(opts)
   options.check(opts, options.CLIENT, options.CLIENT_NAMES, "prefect.client", 2)
   opts = opts or {}
   local getenv = opts.getenv or os.getenv
   local function env(name)
      local v = getenv(name)
      if v == "" then return nil end
      return v
   end

   local url = opts.url
   if url == nil then
      url = env("PREFECT_API_URL")
      if url then
         local problem = options.check_url("PREFECT_API_URL", url)
         if problem then misuse("prefect.client: " .. problem, 2) end
      end
   end
   url = (url or client.DEFAULT_URL):gsub("/+$", "")

   local api_key, auth_string = opts.api_key, opts.auth_string
   if api_key and auth_string then
      misuse("prefect.client: give api_key or auth_string, not both (one auth mode per client)", 2)
   end
   if api_key == nil and auth_string == nil then
      -- Only when the caller chose no auth mode does the environment choose.
      api_key, auth_string = env("PREFECT_API_KEY"), env("PREFECT_API_AUTH_STRING")
      if api_key and auth_string then
         misuse("prefect.client: PREFECT_API_KEY and PREFECT_API_AUTH_STRING are both set; "
            .. "pass api_key or auth_string (or false) to choose one", 2)
      end
   end
   if api_key == false then api_key = nil end
   if auth_string == false then auth_string = nil end

   local api_version = opts.api_version
   if api_version == nil then api_version = client.API_VERSION end

   local concurrency = opts.concurrency or 1
   if concurrency > 1 and (opts.transport == "ngx" or (opts.transport == nil and in_ngx_lua())) then
      misuse("prefect.client: concurrency > 1 needs the curl transport (the ngx transport reads one"
         .. " request at a time)", 2)
   end

   local self = setmetatable({
      url = url,
      auth = api_key and "bearer" or auth_string and "basic" or "none",
      page_size = opts.page_size or client.MAX_PAGE_SIZE,
      concurrency = concurrency,
      api_version = api_version,
      clock = opts.clock or default_clock(),
      random = opts.random or math.random,
      transport_options = {},
      decode_defaults = {},
   }, Client)
   -- What the transport gets: never the credentials (they travel as a header).
   for _, k in ipairs(options.TRANSPORT_NAMES) do self.transport_options[k] = opts[k] end
   self.transport_options.user_agent = nil
   for _, k in ipairs(options.DECODE_NAMES) do self.decode_defaults[k] = opts[k] end
   self.policy = retry.new{
      retries = opts.retries, retry_codes = opts.retry_codes,
      max_retry_after = opts.max_retry_after,
      sleep = opts.sleep or default_sleep(), random = self.random,
   }
   self.csrf_client = csrf.new_client_id(self.random)

   local ua = opts.user_agent or ("lua-prefect/" .. client.VERSION
      .. (api_version and (" (API " .. api_version .. ")") or ""))
   self.user_agent = ua
   local headers = {
      ["Accept"] = "application/json",
      ["User-Agent"] = ua,
   }
   if api_version then headers["X-PREFECT-API-VERSION"] = api_version end
   for k, v in pairs(opts.headers or {}) do
      -- the caller's value replaces ours whatever the letter case
      for mine in pairs(headers) do
         if mine:lower() == k:lower() then headers[mine] = nil end
      end
      headers[k] = tostring(v)
   end
   local secret = { headers = headers, words = {} }
   if api_key then
      headers["Authorization"] = "Bearer " .. api_key
      secret.words = { api_key }
   elseif auth_string then
      local b64 = client.base64(auth_string)
      headers["Authorization"] = "Basic " .. b64
      secret.words = { auth_string, b64 }
   end
   secrets[self] = secret
   return self
end

function Client:__tostring()
   return string.format("prefect.client(%s, auth=%s)", errors.safe_url(self.url), self.auth)
end

--- The transport, created on first use.
function Client:_transport()
   if self.transport then return self.transport end
   local t_opts = {}
   for k, v in pairs(self.transport_options) do t_opts[k] = v end
   t_opts.user_agent = self.user_agent
   local t = t_opts.transport
   if t == "ngx" or (t == nil and in_ngx_lua()) then
      -- inside nginx, libcurl would block the worker: cosockets where the phase allows them
      local chosen, err = require("prefect.transport.ngx").choose(t)
      if not chosen then error(err, 0) end
      t = chosen
   end
   local mod = t or "curl"
   if type(mod) == "string" then mod = require("prefect.transport." .. mod) end
   self.transport = mod.new(t_opts)
   return self.transport
end

--- Closes the transport (open requests are cancelled). The client stays usable.
function Client:close()
   if self.transport then
      self.transport:close()
      self.transport = nil
   end
end

local function escape_pattern(s)
   return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

local function scrub_table(t, words, seen)
   if seen[t] then return end
   seen[t] = true
   for k, v in pairs(t) do
      if type(v) == "string" then
         for _, w in ipairs(words) do v = v:gsub(escape_pattern(w), "***") end
         t[k] = v
      elseif type(v) == "table" then
         scrub_table(v, words, seen)
      end
   end
end

-- Removes the client's credentials from every string err holds, at any depth
-- (err.body is the server's decoded error body, which may echo them).
function Client:_scrub(err)
   local words = secrets[self].words
   if #words == 0 or type(err) ~= "table" then return err end
   scrub_table(err, words, {})
   return err
end

function Client:_headers(with_body)
   local h = {}
   for k, v in pairs(secrets[self].headers) do h[k] = v end
   if with_body then h["Content-Type"] = "application/json" end
   csrf.add_headers(self, h)
   return h
end

---------------------------------------------------------------------------
-- One exchange: start (non-blocking), then finish (status, errors, CSRF).

--- Starts a request; returns a handle or nil, err. Does not wait.
function Client:_start(method, path, body, decode)
   local ok, t = pcall(self._transport, self)
   if not ok then
      if errors.is(t) then return nil, t end
      return nil, errors.new("invalid", { message = "cannot create the transport: " .. tostring(t) })
   end
   local url = self.url .. path
   local req, err = t:request{
      method = method, url = url, headers = self:_headers(body ~= nil), body = body, decode = decode,
   }
   if not req then return nil, self:_scrub(err) end
   return { req = req, method = method, path = path, body = body, decode = decode, url = url }
end

local function lower_headers(h)
   local out = {}
   for k, v in pairs(h or {}) do out[k:lower()] = v end
   return out
end

local function excerpt(s)
   if type(s) ~= "string" then return nil end
   s = s:gsub("%s+", " ")
   if #s > 200 then s = s:sub(1, 197) .. "..." end
   return s
end

-- True when a response with this status and these (lowercase) headers has a
-- JSON body to stream; false when its body is to be read whole as an error.
local function streams_json(status, headers)
   if status < 200 or status >= 300 then return false end
   local ct = headers["content-type"] or ""
   return ct:lower():find("json", 1, true) ~= nil
end
client.streams_json = streams_json

--- The error for a finished response that does not stream JSON: a non-2xx
--- status, or a 2xx with another content type (named in the message).
function Client:_response_error(h, status, headers, body)
   if status >= 200 and status < 300 then
      local ct = headers["content-type"] or ""
      return self:_scrub(errors.new("decode", {
         message = "expected a JSON response, got Content-Type: " .. (ct ~= "" and ct or "(none)"),
         status = status, url = h.url, content_type = ct, detail = excerpt(body),
      }))
   end
   local ra = retry.parse_retry_after(headers["retry-after"], self.clock())
   return self:_scrub(errors.http(status, body, {
      url = h.url, retry_after = ra, content_type = headers["content-type"],
   }, json_decode))
end

-- Waits for the status line of a started request; returns the request ready
-- to stream a JSON body, or nil, err (the request then is closed).
function Client:_settle(h)
   local req = h.req
   local status, rh = req:response()
   if not status then
      req:close()
      return nil, self:_scrub(rh)
   end
   rh = lower_headers(rh)
   if streams_json(status, rh) then return req end
   local body = req:body()
   req:close()
   return nil, self:_response_error(h, status, rh, body)
end

client.lower_headers = lower_headers

-- The CSRF steps as client methods: _exchange uses them, and so does
-- prefect.pager's poller, which runs them one state at a time.
Client._csrf_path = csrf.path
Client._csrf_accept = csrf.accept
Client._csrf_switched_off = csrf.switched_off
Client._fetch_csrf = csrf.fetch
Client._csrf_due = csrf.due
Client._csrf_refused = csrf.refused

--- One attempt: start, wait for the status, handle CSRF. Returns a request
-- ready to stream, or nil, err. `started` is a handle already sent (prefetch).
function Client:_exchange(method, path, body, decode, started)
   if self:_csrf_due(method) then
      if started then started.req:close(); started = nil end
      local ok, err = self:_fetch_csrf()
      if ok == nil then return nil, err end
   end
   local h, err = started
   if not h then
      h, err = self:_start(method, path, body, decode)
      if not h then return nil, err end
   end
   local req
   req, err = self:_settle(h)
   if req or not self:_csrf_refused(method, err) then return req, err end
   -- The server wants a (new) CSRF token: fetch one and try this request once more.
   local ok, ferr = self:_fetch_csrf()
   if ok == nil then return nil, ferr end
   if not ok then return nil, err end
   h, err = self:_start(method, path, body, decode)
   if not h then return nil, err end
   return self:_settle(h)
end

--- _exchange with retries. `attempt` is the number of this attempt (1 for a
-- fresh call, more when a body failed part-way). Returns req, nil, attempt
-- or nil, err, attempt.
function Client:_open(method, path, body, decode, attempt, started)
   attempt = attempt or 1
   while true do
      local req, err = self:_exchange(method, path, body, decode, started)
      started = nil
      if req then return req, nil, attempt end
      if not self.policy:may_retry(err, attempt) then
         err.attempts = attempt
         return nil, err, attempt
      end
      self.policy:wait(attempt, err.retry_after)
      attempt = attempt + 1
   end
end

-- A request whose whole answer is one JSON value (count, one run, version).
function Client:_value(method, path, body, decode)
   local attempt = 1
   while true do
      local req, err, a = self:_open(method, path, body, decode or {}, attempt)
      if not req then return nil, err end
      local v, verr = req:next()
      req:close()
      if v ~= nil then return v end
      verr = verr or errors.new("decode", {
         message = "empty response body", url = errors.safe_url(self.url .. path),
      })
      if not self.policy:may_retry(verr, a) then
         verr.attempts = a
         return nil, self:_scrub(verr)
      end
      self.policy:wait(a, nil)
      attempt = a + 1
   end
end

---------------------------------------------------------------------------
-- Queries

local filter_mod
local function filter()
   if not filter_mod then filter_mod = require("prefect.filter") end
   return filter_mod
end

local function encode(body)
   return filter().encode(body)
end

--- Decoder options for a call: the client's, overridden by the call's.
function Client:_decode_options(call_opts, need_id)
   local d = {}
   for k, v in pairs(self.decode_defaults) do d[k] = v end
   if call_opts then
      for _, k in ipairs(options.DECODE_NAMES) do
         if call_opts[k] ~= nil then d[k] = call_opts[k] end
      end
   end
   if need_id and d.fields then
      local has = false
      for _, f in ipairs(d.fields) do if f == "id" then has = true end end
      if not has then
         local f = { "id" }
         for _, x in ipairs(d.fields) do f[#f + 1] = x end
         d.fields = f
      end
   end
   return d
end

-- The paging options of a call (its options over the client's): prefetch, and
-- the number of page requests in flight. Raises on a combination that cannot be honoured.
function Client:_paging(call_opts, what, level)
   local prefetch = not (call_opts and call_opts.prefetch == false)
   local n = call_opts and call_opts.concurrency
   if n and n > 1 then
      if not prefetch then
         misuse(what .. ": concurrency = " .. n .. " asks for pages ahead, prefetch = false for none",
            level + 1)
      end
      local t = self.transport_options.transport
      if t == "ngx" or (t == nil and in_ngx_lua()) then
         misuse(what .. ": concurrency > 1 needs the curl transport (the ngx transport reads one"
            .. " request at a time)", level + 1)
      end
   end
   -- prefetch = false: one request at a time, whatever the client's concurrency
   if not prefetch then n = 1 end
   return { prefetch = prefetch, concurrency = n or self.concurrency }
end

--- Compiles a query (prefect.filter does the work): the body as a table and
-- as JSON, and the paging plan (limit = total wanted or nil, page_size,
-- offset). Raises on misuse, naming the caller's line.
function Client._query(_, q, call_opts, what, level)
   level = (level or 1) + 1
   if q == nil then q = {} end
   if type(q) ~= "table" then misuse(what .. ": the query must be a table, got " .. type(q), level) end
   options.check(call_opts, options.CALL, options.CALL_NAMES, what, level)
   local f = filter()
   local body, paging = f.compile(q, { level = level })
   paging = paging or {}
   return {
      body = body, json = encode(body),
      limit = paging.limit, offset = paging.offset or 0,
      page_size = paging.page_size or client.MAX_PAGE_SIZE,
   }
end

--- The request body of one page: the compiled query plus limit and offset.
function client.page_body(json_rest, limit, offset)
   local head = string.format('{"limit":%d,"offset":%d', limit, offset)
   if json_rest == "{}" or json_rest == "[]" then return head .. "}" end
   return head .. "," .. json_rest:sub(2)
end

--- The page size the next request may ask for (the option, or less when the
--- server said its maximum is lower).
function Client:_page_size(query)
   local n = self.page_size
   if query and query.page_size < n then n = query.page_size end
   if self.server_max and self.server_max < n then n = self.server_max end
   return n
end

local FILTER_PATH = "/task_runs/filter"

local function limit_from_422(err)
   if err.kind ~= "http" or err.status ~= 422 or type(err.detail) ~= "string" then return nil end
   local n = err.detail:match("must be less than or equal to (%d+)")
   return n and tonumber(n)
end

--- Opens one page (with retries, and the one retry with the server's page
--- maximum after a 422). Returns req, nil, attempt, limit | nil, err.
function Client:_open_page(query, offset, limit, decode, attempt, started)
   local body = client.page_body(query.json, limit, offset)
   local req, err, a = self:_open("POST", FILTER_PATH, body, decode, attempt, started)
   if req then return req, nil, a, limit end
   local max = limit_from_422(err)
   if max and max >= 1 and max < limit then
      self.server_max = max
      limit = max
      body = client.page_body(query.json, limit, offset)
      req, err, a = self:_open("POST", FILTER_PATH, body, decode, a)
      if req then return req, nil, a, limit end
   end
   return nil, err, a, limit
end

--- Runs matching `q`, as an iterator for a generic `for`. Raises the
-- structured error if a page fails for good. See docs/client.md.
function Client:task_runs(q, opts)
   local query = self:_query(q, opts, "client:task_runs", 2)
   local paging = self:_paging(opts, "client:task_runs", 2)
   local pager = require("prefect.pager")
   local p = pager.new(self, query, {
      decode = self:_decode_options(opts, true),
      prefetch = paging.prefetch, concurrency = paging.concurrency,
   })
   return p:iterator()
end

--- Starts a non-blocking read of the runs matching `q`, for loops that must
--- never stall (games, UIs, event loops): `h:poll(timeout_ms)` returns the
--- runs ready now (maybe none) and whether the read is complete, or nil, err.
--- Same paging, prefetch, de-duplication and retries as task_runs; a retry
--- waits on the client's clock instead of sleeping. `h:close()` stops it.
function Client:start(q, opts)
   local query = self:_query(q, opts, "client:start", 2)
   local paging = self:_paging(opts, "client:start", 2)
   return require("prefect.pager").start(self, query, {
      decode = self:_decode_options(opts, true),
      prefetch = paging.prefetch, concurrency = paging.concurrency,
   })
end

--- One page of runs, as an array: `page_size` runs (or the query's limit
--- when smaller) from `offset` (default: the query's offset, or 0).
function Client:page(q, offset, opts)
   if offset ~= nil and (not options.is_integer(offset) or offset < 0) then
      misuse("client:page: offset must be an integer >= 0, got " .. tostring(offset), 2)
   end
   local query = self:_query(q, opts, "client:page", 2)
   offset = offset or query.offset
   local decode = self:_decode_options(opts, false)
   local limit = self:_page_size(query)
   if query.limit and query.limit < limit then limit = query.limit end
   if limit == 0 then
      -- nothing wanted: Prefect would answer [] anyway
      return decode.array_mt and setmetatable({}, decode.array_mt) or {}
   end
   local attempt = 1
   while true do
      local req, err, a, lim = self:_open_page(query, offset, limit, decode, attempt)
      if not req then return nil, err end
      limit = lim
      local list, n = {}, 0
      while true do
         local v, verr = req:next()
         if v ~= nil then
            n = n + 1
            list[n] = v
         elseif verr then
            err = verr
            break
         else
            req:close()
            if decode.array_mt then setmetatable(list, decode.array_mt) end
            return list
         end
      end
      req:close()
      if not self.policy:may_retry(err, a) then
         err.attempts = a
         return nil, self:_scrub(err)
      end
      self.policy:wait(a, nil)
      attempt = a + 1
   end
end

--- The number of runs matching `q` (POST /task_runs/count).
function Client:count(q)
   local query = self:_query(q, nil, "client:count", 2)
   local body = {}
   for k, v in pairs(query.body) do
      if k ~= "sort" then body[k] = v end
   end
   local n, err = self:_value("POST", "/task_runs/count", encode(body), {})
   if n == nil then return nil, err end
   if type(n) ~= "number" then
      return nil, errors.new("protocol", {
         message = "count answered " .. type(n) .. ", not a number",
         url = errors.safe_url(self.url .. "/task_runs/count"),
      })
   end
   if math.tointeger then n = math.tointeger(n) or n end
   return n
end

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

--- One task run by id (GET /task_runs/{id}); a 404 is nil, err with status 404.
function Client:task_run(id, opts)
   if type(id) ~= "string" or not id:match(UUID) then
      misuse("client:task_run: id must be a UUID string, got " .. (type(id) == "string"
         and string.format("%q", id:sub(1, 60)) or type(id)), 2)
   end
   options.check(opts, options.DECODE, options.DECODE_NAMES, "client:task_run", 2)
   return self:_value("GET", "/task_runs/" .. id:lower(), nil, self:_decode_options(opts, false))
end

--- The server's Prefect version (GET /admin/version), e.g. "3.8.3".
function Client:server_version()
   local v, err = self:_value("GET", "/admin/version", nil, {})
   if v == nil then return nil, err end
   if type(v) ~= "string" then
      return nil, errors.new("protocol", {
         message = "/admin/version answered " .. type(v) .. ", not a string",
         url = errors.safe_url(self.url .. "/admin/version"),
      })
   end
   return v
end

Client.page_body = client.page_body
client.Client = Client
return client
