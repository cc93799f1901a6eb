--- The Prefect client: what a user calls. It checks the options and the
-- queries, builds the protocol (prefect.exchange) that every request goes
-- through, and hands reads to prefect.pager with a source of exchanges.
--
-- Run-time failures come back as `nil, err` (err from prefect.errors);
-- misuse (a wrong option, a bad argument) raises at once, before any request.
-- @module prefect.client

local errors = require("prefect.errors")
local exchange = require("prefect.exchange")
local follow = require("prefect.follow")
local include = require("prefect.include")
local options = require("prefect.options")
local pager = require("prefect.pager")
local retry = require("prefect.retry")
local transport = require("prefect.transport")

local client = {}

client.VERSION = options.VERSION
client.API_VERSION = options.API_VERSION
client.DEFAULT_URL = options.DEFAULT_URL
client.MAX_PAGE_SIZE = options.MAX_PAGE_SIZE
client.MAX_CONCURRENCY = options.MAX_CONCURRENCY

local misuse = options.misuse
client.misuse = misuse

local FILTER_PATH = "/task_runs/filter"
local COUNT_PATH = "/task_runs/count"
-- A count's body must be a JSON integer >= 0: the decoder refuses anything else (`[5]`, `"5"`,
-- `5.0`) as a protocol error. One table, so that counts reuse their decoders.
local COUNT_DECODE = { shape = "count" }
-- The largest offset or limit a JSON number carries exactly (2^53).
local MAX_EXACT = 9007199254740992

---------------------------------------------------------------------------
-- base64 (RFC 4648, with padding), in plain arithmetic so it runs on 5.1.

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

--- `s` in base64 (RFC 4648, with padding), as Basic authentication sends `user:pass`.
function client.base64(s)
   local out = {}
   for i = 1, #s, 3 do
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
-- Creating a client

local Client = {}
Client.__index = Client

-- The option from the environment, checked like the option itself.
local function from_env(getenv, name, option, level)
   local v = getenv(name)
   if v == nil or v == "" then return nil end
   local problem = options.BY_NAME[option].check(name, v)
   if problem then misuse("prefect.client: " .. problem, level + 1) end
   return v
end

-- api_key or auth_string (at most one of them), from the options or else the environment.
local function credentials(opts, getenv)
   local api_key, auth_string = opts.api_key, opts.auth_string
   if api_key and auth_string then
      misuse("prefect.client: give api_key or auth_string, not both (one auth mode per client)", 3)
   end
   if api_key == nil and auth_string == nil then
      -- Only when the caller chose no auth mode does the environment choose.
      api_key = from_env(getenv, "PREFECT_API_KEY", "api_key", 3)
      auth_string = from_env(getenv, "PREFECT_API_AUTH_STRING", "auth_string", 3)
      if api_key and auth_string then
         misuse("prefect.client: PREFECT_API_KEY and PREFECT_API_AUTH_STRING are both set; "
            .. "pass api_key or auth_string (or false) to choose one", 3)
      end
   end
   return api_key or nil, auth_string or nil
end

local function is_loopback(url)
   local host = url:match("^%a+://%[?([^/%]]*)")
   host = host and host:gsub(":%d+$", ""):lower()
   return host == "localhost" or host == "::1" or (host or ""):match("^127%.") ~= nil
end

local function default_logger(message)
   io.stderr:write("lua-prefect: warning: ", message, "\n")
end

-- The headers every request carries, the credentials among them.
local function base_headers(c, api_key, auth_string)
   local headers = { ["Accept"] = "application/json", ["User-Agent"] = c.user_agent }
   if c.api_version then headers["X-PREFECT-API-VERSION"] = c.api_version end
   for k, v in pairs(c.headers or {}) do
      -- the caller's value replaces ours whatever the letter case
      for mine in pairs(headers) do
         if mine:lower() == k:lower() then headers[mine] = nil end
      end
      headers[k] = tostring(v)
   end
   if api_key then
      headers["Authorization"] = "Bearer " .. api_key
      return headers, { api_key }
   elseif auth_string then
      local b64 = client.base64(auth_string)
      headers["Authorization"] = "Basic " .. b64
      return headers, { auth_string, b64 }
   end
   return headers, {}
end

--- A new client. See docs/client.md for every option.
function client.new(opts)
   options.check(opts, options.CLIENT, options.CLIENT_NAMES, "prefect.client", 2)
   opts = opts or {}
   local getenv = opts.getenv or os.getenv
   local layers = options.resolve(opts)
   local c = layers.client
   if opts.url == nil then c.url = from_env(getenv, "PREFECT_API_URL", "url", 2) or c.url end
   c.url = c.url:gsub("/+$", "")
   local api_key, auth_string = credentials(opts, getenv)
   c.user_agent = c.user_agent or ("lua-prefect/" .. client.VERSION
      .. (c.api_version and (" (API " .. c.api_version .. ")") or ""))

   local runtime = transport.pick(layers.transport, c.clock, c.sleep)
   if c.concurrency > 1 and not runtime.capabilities.concurrent then
      misuse("prefect.client: concurrency > 1 needs the curl transport (the " .. runtime.capabilities.name
         .. " transport reads one request at a time)", 2)
   end
   local random = c.random or math.random
   local headers, words = base_headers(c, api_key, auth_string)
   local policy = retry.new{
      retries = layers.retry.retries, retry_codes = layers.retry.retry_codes,
      max_retry_after = layers.retry.max_retry_after, sleep = runtime.sleep, random = random,
   }
   local self = setmetatable({
      url = c.url,
      auth = api_key and "bearer" or auth_string and "basic" or "none",
      page_size = c.page_size,
      concurrency = c.concurrency,
      api_version = c.api_version,
      user_agent = c.user_agent,
      server = c.server_version or nil,
      clock = runtime.clock,
      runtime = runtime,
      policy = policy,
      decode_defaults = layers.decoder,
      protocol = exchange.protocol{
         url = c.url, headers = headers, secrets = words, policy = policy, runtime = runtime,
         random = random, max_redirects = c.max_redirects,
      },
   }, Client)
   self.csrf = self.protocol.csrf

   local log = c.logger == nil and default_logger or c.logger
   if log then
      if api_key and c.url:match("^[hH][tT][tT][pP]://") and not is_loopback(c.url) then
         log("an API key is sent over plain http:// to " .. errors.safe_url(c.url)
            .. "; anyone on the path can read it (use https://)")
      end
      if layers.transport.insecure then
         log("insecure = true: TLS certificates are not verified for " .. errors.safe_url(c.url))
      end
   end
   return self
end

function Client:__tostring()
   return string.format("prefect.client(%s, auth=%s)", errors.safe_url(self.url), self.auth)
end

--- Closes the transport (open requests are cancelled). The client stays usable.
function Client:close()
   self.protocol:close()
end

---------------------------------------------------------------------------
-- Queries

local filter_mod
local function filter()
   if not filter_mod then filter_mod = require("prefect.filter") end
   return filter_mod
end

--- The request body of one page: the compiled query plus limit and offset.
function client.page_body(json_rest, limit, offset)
   local head = string.format('{"limit":%d,"offset":%d', limit, offset)
   if json_rest == "{}" or json_rest == "[]" then return head .. "}" end
   return head .. "," .. json_rest:sub(2)
end

-- The Prefect version queries are compiled for; "auto" asks the server once.
function Client:_server()
   if self.server ~= "auto" then return self.server end
   local v, err = self:server_version()
   if not v then return nil, err end
   self.server = v
   return v
end

-- Compiles a query (prefect.filter does the work): the body as a table and
-- as JSON, and the paging plan. Raises on misuse, naming the caller's line;
-- nil, err only when the server's version could not be read.
function Client:_query(q, call_opts, what, level)
   level = level + 1
   if q == nil then q = {} end
   if type(q) ~= "table" then misuse(what .. ": the query must be a table, got " .. type(q), level) end
   options.check(call_opts, options.CALL, options.CALL_NAMES, what, level)
   local server, err = self:_server()
   if err then return nil, err end
   local body, paging = filter().compile(q, { level = level, server = server })
   paging = paging or {}
   local offset = paging.offset or 0
   if offset > MAX_EXACT or (paging.limit or 0) > MAX_EXACT then
      misuse(what .. ": offset and limit must be at most 2^53", level)
   end
   local page_size = math.min(self.page_size, paging.page_size or client.MAX_PAGE_SIZE)
   return {
      body = body, json = filter().encode(body), limit = paging.limit, offset = offset,
      page_size = page_size,
   }
end

-- The count request's body: the query's filter without its sort.
local function count_json(query)
   local body = {}
   for k, v in pairs(query.body) do
      if k ~= "sort" then body[k] = v end
   end
   return filter().encode(body)
end

-- The page size the next request may ask for: the query's, or less when
-- the server said its maximum is lower.
local function page_size(protocol, query)
   local n = query.page_size
   if protocol.server_max and protocol.server_max < n then n = protocol.server_max end
   return n
end

-- The includer of one read (prefect.include), or nil when it includes nothing.
function Client:_includer(call_opts, decode)
   local spec = include.normalize(call_opts and call_opts.include)
   if not spec then return nil end
   local p = self.protocol
   return include.new{
      spec = spec, decode = decode,
      post = function(path, body, d, limit, body_for)
         return p:exchange("POST", path, { body = body, decode = d, limit = limit, body_for = body_for })
      end,
      max_ids = function() return math.min(include.MAX_IDS, p.server_max or include.MAX_IDS) end,
   }
end

-- The decoder options of a read's task runs (each page an array of runs): with
-- include, `fields` keeps flow_run_id.
local function run_decoder(defaults, call_opts, need_id)
   local d = options.decoder(defaults, call_opts, "runs", need_id)
   if d.fields and include.normalize(call_opts and call_opts.include) then
      local f = { "flow_run_id" }
      for _, x in ipairs(d.fields) do if x ~= "flow_run_id" then f[#f + 1] = x end end
      d.fields = f
   end
   return d
end

-- What a pager reads a query through: exchanges for its pages and its count,
-- and with include the job that fills in each page's flow runs and flows.
function Client:_source(query, decode, includer)
   local p = self.protocol
   return {
      include = includer and function(runs) return includer:attach(runs) end,
      page = function(offset, limit)
         return p:exchange("POST", FILTER_PATH, {
            body = client.page_body(query.json, limit, offset), decode = decode, limit = limit,
            body_for = function(n) return client.page_body(query.json, n, offset) end,
         })
      end,
      count = function()
         return p:exchange("POST", COUNT_PATH,
            { body = count_json(query), value = true, decode = COUNT_DECODE })
      end,
      page_size = function() return page_size(p, query) end,
      clock = p.clock, sleep = p.sleep,
   }
end

-- The paging options of a read (its options over the client's). Raises on
-- a combination that cannot be honoured.
function Client:_paging(call_opts, what, level)
   local prefetch = not (call_opts and call_opts.prefetch == false)
   local n = call_opts and call_opts.concurrency
   if n and n > 1 then
      if not prefetch then
         misuse(what .. ": concurrency = " .. n .. " asks for pages ahead, prefetch = false for none",
            level + 1)
      end
      if not self.runtime.capabilities.concurrent then
         misuse(what .. ": concurrency > 1 needs the curl transport (the " .. self.runtime.capabilities.name
            .. " transport reads one request at a time)", level + 1)
      end
   end
   -- prefetch = false: one request at a time, whatever the client's concurrency
   if not prefetch then n = 1 end
   return { prefetch = prefetch, concurrency = n or self.concurrency }
end

function Client:_reader(q, opts, what)
   local query, err = self:_query(q, opts, what, 3)
   if not query then error(err, 0) end
   local paging = self:_paging(opts, what, 3)
   local decode = run_decoder(self.decode_defaults, opts, true)
   return query, {
      source = self:_source(query, decode, self:_includer(opts, decode)),
      prefetch = paging.prefetch, concurrency = paging.concurrency,
   }
end

--- Runs matching `q`, as an iterator for a generic `for`. Raises the
-- structured error if a page fails for good. See docs/client.md.
function Client:task_runs(q, opts)
   return pager.new(self:_reader(q, opts, "client:task_runs")):iterator()
end

--- Starts a non-blocking read of the runs matching `q`, for loops that must
--- never stall (games, UIs, event loops): `h:poll(timeout_ms)` returns the
--- runs ready now (maybe none) and whether the read is complete, or nil, err.
--- Same paging, prefetch, de-duplication and retries as task_runs; a retry
--- waits on the client's clock instead of sleeping. `h:close()` stops it.
function Client:start(q, opts)
   return pager.start(self:_reader(q, opts, "client:start"))
end

--- Follows `q`: each run that matches it, handed out once as it reaches a
--- final state, oldest first, polling every `interval` seconds for the runs
--- that ended since the last one seen. Returns the follower: a generic `for`
--- iterates it (blocking; raises the error of a failed poll), `f:poll(ms)`
--- drives it from a frame loop, `f:check()` polls once (for ngx.timer.every),
--- `f:close()` stops it. See docs/follow.md.
function Client:follow(q, opts)
   if q == nil then q = {} end
   if type(q) ~= "table" then misuse("client:follow: the query must be a table, got " .. type(q), 2) end
   options.check(opts, options.FOLLOW, options.FOLLOW_NAMES, "client:follow", 2)
   local problem = follow.query_problem(q)
   if problem then misuse("client:follow: " .. problem, 2) end
   -- the query's own mistakes now, not at the first poll
   filter().compile(q, { level = 2, server = self.server ~= "auto" and self.server or nil })
   local own, read_opts = options.follow_defaults(opts), {}
   for k, v in pairs(opts or {}) do
      if options.BY_NAME[k].layer ~= "follow" then read_opts[k] = v end
   end
   local f = follow.new{
      q = q, read_opts = read_opts,
      read = function(fq, ro) return self:task_runs(fq, ro) end,
      start = function(fq, ro) return self:start(fq, ro) end,
      server = function() return self:_server() end,
      clock = self.clock, sleep = self.runtime.sleep,
      pollable = self.runtime.capabilities.name ~= "ngx",
      on = own.on, interval = own.interval, overlap = own.overlap, max_polls = own.max_polls,
      since = own.since ~= nil and follow.micros(own.since) or nil,
   }
   return f, nil, nil, f
end

--- One page of runs, as an array: `page_size` runs (or the query's limit
--- when smaller) from `offset` (default: the query's offset, or 0).
function Client:page(q, offset, opts)
   if offset ~= nil and (not options.is_integer(offset) or offset < 0 or offset > MAX_EXACT) then
      misuse("client:page: offset must be an integer >= 0 (at most 2^53), got " .. tostring(offset), 2)
   end
   local query, qerr = self:_query(q, opts, "client:page", 2)
   if not query then return nil, qerr end
   offset = offset or query.offset
   local decode = run_decoder(self.decode_defaults, opts, false)
   local limit = page_size(self.protocol, query)
   if query.limit and query.limit < limit then limit = query.limit end
   if limit == 0 then
      -- nothing wanted: Prefect would answer [] anyway
      return decode.array_mt and setmetatable({}, decode.array_mt) or {}
   end
   local ex = self:_source(query, decode).page(offset, limit)
   while true do
      local what, req = ex:wait()
      if not what then return nil, req end
      local list, n, err = {}, 0
      while true do
         local v, verr = req:next()
         if v == nil then
            err = verr
            break
         end
         n = n + 1
         if n > ex.limit then
            -- a server that ignores limit must not fill memory: stop at the first run too many
            return ex:fail(pager.too_many(ex.limit, ex.url))
         end
         list[n] = v
      end
      if not err then
         ex:close()
         local includer = self:_includer(opts, decode)
         if includer then
            local ok, ierr = include.wait(includer:attach(list), self.protocol.clock, self.protocol.sleep)
            if not ok then return nil, ierr end
         end
         if decode.array_mt then setmetatable(list, decode.array_mt) end
         return list
      end
      local again, rerr = ex:retry(err)
      if not again then return nil, rerr end
   end
end

-- The one answer of a value request, or nil, err.
function Client:_value(method, path, body, decode)
   local what, v = self.protocol:exchange(method, path, { body = body, value = true, decode = decode }):wait()
   if not what then return nil, v end
   return v
end

--- The number of runs matching `q` (POST /task_runs/count).
function Client:count(q)
   local query, qerr = self:_query(q, nil, "client:count", 2)
   if not query then return nil, qerr end
   local n, err = self:_value("POST", COUNT_PATH, count_json(query), COUNT_DECODE)
   if n == nil then return nil, err end
   return pager.count_of(n, self.url .. COUNT_PATH)
end

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local UUID_HEX = "^" .. ("%x"):rep(32) .. "$"

--- One task run by id (GET /task_runs/{id}); a 404 is nil, err with status 404.
--- The id is a UUID, with or without hyphens (as the filter takes it).
function Client:task_run(id, opts)
   if type(id) == "string" and id:match(UUID_HEX) then
      id = id:sub(1, 8) .. "-" .. id:sub(9, 12) .. "-" .. id:sub(13, 16) .. "-" .. id:sub(17, 20) .. "-"
         .. id:sub(21)
   end
   if type(id) ~= "string" or not id:match(UUID) then
      misuse("client:task_run: id must be a UUID string, got " .. (type(id) == "string"
         and string.format("%q", id:sub(1, 60)) or type(id)), 2)
   end
   options.check(opts, options.DECODE, options.DECODE_NAMES, "client:task_run", 2)
   local path = "/task_runs/" .. id:lower()
   -- the decoder checks that the body is an object with a string "id" (a protocol error if not)
   local run, err = self:_value("GET", path, nil, options.decoder(self.decode_defaults, opts, "run", false))
   if run == nil then return nil, err end
   return run
end

--- The server's Prefect version (GET /admin/version), e.g. "3.8.3".
function Client:server_version()
   local v, err = self:_value("GET", "/admin/version")
   if v == nil then return nil, err end
   if type(v) ~= "string" then
      return nil, errors.new("protocol", {
         message = "/admin/version answered " .. type(v) .. ", not a string",
         url = self.url .. "/admin/version",
      })
   end
   return v
end

client.Client = Client
return client
