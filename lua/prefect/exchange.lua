--- One request to Prefect, from the first byte sent to the response that
-- answers it, as a state machine that any driver can step.
--
-- An exchange owns every protocol step between the client and the wire:
-- the headers and credentials, CSRF tokens (fetched, sent, renewed), 307/308
-- redirects to the same origin, the server's page maximum (a 422 that names
-- it), the retry schedule (a due time, never a sleep) and the scrubbing of
-- secrets from every error at its single exit. `ex:step(wait_ms)` goes as far
-- as it can and says what the driver is to do next:
--
--   "ready", req   a 2xx JSON response whose body the caller now streams;
--   "value", v     the whole answer of a value request (count, one run);
--   "wait", due    nothing to do before the clock reaches `due` (a retry);
--   "busy"         waiting for the network (only when wait_ms is a number);
--   nil, err       failed for good.
--
-- `wait_ms = nil` blocks on the network (the blocking reads, and the ngx
-- transport, whose cosockets yield to nginx); a number waits at most that
-- long. `ex:wait()` is the blocking driver; prefect.pager's poller steps
-- with its own timeout. A body that fails part-way is handed back with
-- `ex:retry(err)`, which schedules the next attempt or fails for good.
-- @module prefect.exchange

local csrf = require("prefect.csrf")
local errors = require("prefect.errors")
local retry = require("prefect.retry")

local exchange = {}

-- Before any server has answered, a refused connection or a failed name
-- lookup is a wrong URL far more often than a server starting up: one short
-- retry, then the error, instead of a minute of backoff.
local FIRST_CONTACT_WAIT = 0.25

local json -- lua-cjson, loaded on first use (error bodies only)

local function json_decode(s)
   json = json or require("cjson")
   return json.decode(s)
end

---------------------------------------------------------------------------
-- Secrets: no run of SECRET_RUN characters of a credential survives in an error.

local SECRET_RUN = 6

local function escape_pattern(s)
   return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

-- Every run of `n` characters of each word, as a set; words shorter than
-- `n` are matched whole.
local function secret_runs(words)
   local runs, short = {}, {}
   for _, w in ipairs(words) do
      if #w < SECRET_RUN then
         short[#short + 1] = escape_pattern(w)
      else
         for i = 1, #w - SECRET_RUN + 1 do runs[w:sub(i, i + SECRET_RUN - 1)] = true end
      end
   end
   return { runs = runs, short = short }
end

local function scrub_string(s, secret)
   for _, p in ipairs(secret.short) do s = s:gsub(p, "***") end
   if #s < SECRET_RUN or next(secret.runs) == nil then return s end
   local out, i, n, last = {}, 1, #s, 1
   while i <= n - SECRET_RUN + 1 do
      if secret.runs[s:sub(i, i + SECRET_RUN - 1)] then
         -- extend over every overlapping run, so the whole occurrence goes
         local j = i + SECRET_RUN
         while j <= n and secret.runs[s:sub(j - SECRET_RUN + 1, j)] do j = j + 1 end
         out[#out + 1] = s:sub(last, i - 1)
         out[#out + 1] = "***"
         last, i = j, j
      else
         i = i + 1
      end
   end
   out[#out + 1] = s:sub(last)
   return table.concat(out)
end

local function scrub_table(t, secret, seen)
   if seen[t] then return end
   seen[t] = true
   for k, v in pairs(t) do
      if type(v) == "string" then
         t[k] = scrub_string(v, secret)
      elseif type(v) == "table" then
         scrub_table(v, secret, seen)
      end
   end
end

---------------------------------------------------------------------------
-- URLs of redirects

-- scheme, host, port (number) and the part from the path on, or nil.
local function split_url(url)
   local scheme, authority, rest = url:match("^(%a[%w+.-]*)://([^/?#]*)(.*)$")
   if not scheme then return nil end
   scheme = scheme:lower()
   local host, port = authority:match("^(%[[^%]]*%]):?(%d*)$")
   if not host then host, port = authority:match("^([^:]*):?(%d*)$") end
   if not host then return nil end
   port = tonumber(port) or (scheme == "https" and 443 or 80)
   return { scheme = scheme, host = host:lower(), port = port, authority = authority, rest = rest }
end

-- The absolute URL a Location header points to, from the URL that sent it.
local function resolve(base, location)
   if location:match("^%a[%w+.-]*://") then return location end
   local b = split_url(base)
   if not b then return nil end
   if location:sub(1, 2) == "//" then return b.scheme .. ":" .. location end
   local origin = b.scheme .. "://" .. b.authority
   if location:sub(1, 1) == "/" then return origin .. location end
   local dir = b.rest:gsub("[?#].*$", ""):gsub("[^/]*$", "")
   if dir == "" then dir = "/" end
   return origin .. dir .. location
end

local function same_origin(a, b)
   a, b = split_url(a), split_url(b)
   return a ~= nil and b ~= nil and a.scheme == b.scheme and a.host == b.host and a.port == b.port
end

---------------------------------------------------------------------------
-- Responses

local function lower_headers(h)
   local out = {}
   for k, v in pairs(h or {}) do out[k:lower()] = v end
   return out
end

-- True when a response with this status and these (lowercase) headers has a
-- JSON body to stream; false when its body is to be read whole as an error.
local function streams_json(status, headers)
   if status < 200 or status >= 300 then return false end
   local ct = headers["content-type"] or ""
   return ct:lower():find("json", 1, true) ~= nil
end

local function excerpt(s)
   if type(s) ~= "string" then return nil end
   s = s:gsub("%s+", " ")
   if #s > 200 then s = s:sub(1, 197) .. "..." end
   return s
end

-- The error for a response that does not stream JSON: a non-2xx status, or
-- a 2xx with another content type (named in the message).
local function response_error(status, headers, body, url, now)
   if status >= 200 and status < 300 then
      local ct = headers["content-type"] or ""
      return errors.new("decode", {
         message = "expected a JSON response, got Content-Type: " .. (ct ~= "" and ct or "(none)"),
         status = status, url = url, content_type = ct, detail = excerpt(body),
      })
   end
   return errors.http(status, body, {
      url = url, retry_after = retry.parse_retry_after(headers["retry-after"], now),
      content_type = headers["content-type"],
   }, json_decode)
end

local function page_limit_from_422(err)
   if err.kind ~= "http" or err.status ~= 422 or type(err.detail) ~= "string" then return nil end
   return tonumber(err.detail:match("must be less than or equal to (%d+)"))
end

---------------------------------------------------------------------------
-- The protocol: what every exchange of one client shares.

local Protocol = {}
Protocol.__index = Protocol

-- Credentials (the header values and the words to scrub) live here, not in
-- the protocol table, so that dumping a client or its protocol shows none.
local secrets = setmetatable({}, { __mode = "k" })

--- The protocol of one client.
-- @tparam table cfg `url` (base, no trailing slash), `headers` (name ->
-- value, with Authorization), `secrets` (the credential strings to scrub),
-- `policy` (prefect.retry), `runtime` (prefect.transport.pick), `random`,
-- `max_redirects`
function exchange.protocol(cfg)
   local p = setmetatable({
      url = cfg.url,
      policy = cfg.policy,
      runtime = cfg.runtime,
      clock = cfg.runtime.clock,
      sleep = cfg.runtime.sleep,
      max_redirects = cfg.max_redirects,
      csrf = csrf.new(cfg.random),
      answered = false, -- has any server answered this client yet?
      server_max = nil, -- the page maximum a 422 named
   }, Protocol)
   secrets[p] = { headers = cfg.headers, words = secret_runs(cfg.secrets or {}) }
   return p
end

--- The headers of a request (a copy): the client's, the content type when
--- there is a body, and the CSRF token when one is held.
function Protocol:headers(with_body)
   local h = {}
   for k, v in pairs(secrets[self].headers) do h[k] = v end
   if with_body then h["Content-Type"] = "application/json" end
   self.csrf:add_headers(h)
   return h
end

--- `err` with every run of a credential replaced by `***`, in every string
--- it holds at any depth (err.body is the server's decoded body, which may
--- echo them). The only way an error leaves an exchange.
function Protocol:scrub(err)
   local secret = secrets[self].words
   if type(err) == "table" and (next(secret.runs) or secret.short[1]) then scrub_table(err, secret, {}) end
   return err
end

--- A new exchange, not yet sent.
-- @tparam string method
-- @tparam string path under the base URL
-- @tparam[opt] table opts `body` (JSON text), `decode` (decoder options for a
-- streamed body), `value` (true: read the whole answer as one JSON value),
-- `limit` and `body_for(limit)` (a page request: how to ask for fewer runs
-- when the server names a lower page maximum), `retries` (false: fail at
-- the first failure, for requests made inside another exchange)
function Protocol:exchange(method, path, opts)
   opts = opts or {}
   return setmetatable({
      p = self, method = method, url = self.url .. path, body = opts.body,
      decode = opts.decode or (opts.value and {}) or nil, value = opts.value,
      limit = opts.limit, body_for = opts.body_for, retries = opts.retries ~= false,
      attempt = 1, redirects = 0, state = "start",
   }, exchange.Exchange)
end

--- Closes the client's transport; the next exchange opens a new one.
function Protocol:close()
   self.runtime:close()
end

---------------------------------------------------------------------------
-- One exchange

local Exchange = {}
Exchange.__index = Exchange
exchange.Exchange = Exchange

function Exchange:_close_request()
   if self.req then
      self.req:close()
      self.req = nil
   end
end

--- Stops the exchange: its request (and a token request under way) is cancelled.
function Exchange:close()
   self:_close_request()
   if self.token_ex then
      self.token_ex:close()
      self.token_ex = nil
   end
   if self.state ~= "failed" then self.state = "closed" end
end

-- The exchange's one exit for failures: the attempt count, and no secret.
function Exchange:_final(err)
   self:close()
   if self.attempt > 1 then err.attempts = self.attempt end
   self.err = self.p:scrub(err)
   self.state = "failed"
   return nil, self.err
end

-- A failed attempt: schedule the next one, or fail for good.
function Exchange:_failed(err)
   self:_close_request()
   local p = self.p
   -- An error of the decoder's (it names the byte: `offset`) is about what the server said, a
   -- body of the wrong shape included (a `protocol` error): asking again gets the same answer.
   if err.offset ~= nil or not (self.retries and p.policy:may_retry(err, self.attempt)) then
      return self:_final(err)
   end
   local delay
   if err.kind == "connect" and err.unreachable and not p.answered then
      if self.attempt > 1 then return self:_final(err) end
      delay = FIRST_CONTACT_WAIT
   else
      delay = p.policy:delay(self.attempt, err.retry_after)
   end
   self.due = p.clock() + delay
   self.attempt = self.attempt + 1
   -- a new attempt may meet an expired token again
   self.token_retried = nil
   self.state = "retry_wait"
   return "wait", self.due
end

--- A body that failed part-way: the next attempt's due time ("wait", due),
--- or nil, err when there is none.
function Exchange:retry(err)
   return self:_failed(err)
end

--- Fails the exchange for good with `err` (a wrong answer found by the
--- caller), through the same exit as every other failure.
function Exchange:fail(err)
   return self:_final(err)
end

function Exchange:_send()
   local p = self.p
   local t, terr = p.runtime:open()
   if not t then return self:_final(terr) end
   local req, err = t:request{
      method = self.method, url = self.url, headers = p:headers(self.body ~= nil), body = self.body,
      decode = self.decode,
   }
   if not req then return self:_failed(err) end
   self.req, self.sent_token = req, p.csrf.token
   self.state = "head"
end

--- Puts the request on the wire when nothing stands before it (no token to
--- fetch first), without waiting for anything: for pages asked for ahead.
function Exchange:launch()
   if self.state == "start" and not self.p.csrf:due(self.method, self.p.clock()) then self:_send() end
end

-- A token request, made inside this exchange; `refusal` is the 403 that
-- asked for it (nil: the token held is about to expire).
function Exchange:_fetch_token(refusal)
   self.refusal = refusal
   self.token_ex = self.p:exchange("GET", self.p.csrf:path(), { value = true, retries = false })
   self.state = "token"
end

function Exchange:_token(wait_ms)
   local what, v = self.token_ex:step(wait_ms)
   if what == "busy" then return "busy" end
   local token_url = self.token_ex.url
   self.token_ex = nil
   local csrf_state = self.p.csrf
   if what == "value" then
      local ok, err = csrf_state:accept(v, token_url)
      if not ok then return self:_failed(err) end
   elseif v.kind == "http" and csrf_state:switched_off(v.status) then
      if self.refusal then return self:_failed(self.refusal) end
   else
      return self:_failed(v)
   end
   -- straight to the wire: a token shorter-lived than the renewal margin is still the newest
   return self:_send()
end

function Exchange:_head(wait_ms)
   local status, headers = self.req:response(wait_ms)
   if status == false then return "busy" end
   if status == nil then return self:_failed(headers) end
   self.p.answered = true
   self.status, self.headers = status, lower_headers(headers)
   if not streams_json(status, self.headers) then
      self.state = "error_body"
   elseif self.value then
      self.state, self.values = "value", {}
   else
      self.state = "streaming"
      return "ready", self.req
   end
end

-- The whole body of a response that is not streamed (an error, or a 2xx
-- that is not JSON); "busy" while it is still arriving.
function Exchange:_error_body(wait_ms)
   local req = self.req
   if wait_ms ~= nil then
      -- the curl transport's poll says "not decoded" once such a body is complete
      local list, done = req:poll(wait_ms)
      if list ~= nil and not done then return "busy" end
   end
   local body, err = req:body()
   self:_close_request()
   if body == nil then return self:_failed(err) end
   return self:_refused(response_error(self.status, self.headers, body, self.url, self.p.clock()))
end

-- A response that is not a JSON success: follow it, ask again, or fail.
function Exchange:_refused(err)
   local status = self.status
   if status >= 300 and status < 400 then return self:_redirect(status, err) end
   local max = self.body_for and page_limit_from_422(err)
   if max and max >= 1 and max < self.limit and not self.limit_retried then
      self.limit_retried = true
      self.p.server_max = max
      self.limit, self.body = max, self.body_for(max)
      self.state = "start"
      return
   end
   local tokens = self.p.csrf
   if tokens:refused(self.method, err) and not self.token_retried then
      self.token_retried = true
      -- another exchange has fetched a token since this one was sent: send again with it
      if tokens.token ~= nil and tokens.token ~= self.sent_token then
         self.state = "start"
         return
      end
      return self:_fetch_token(err)
   end
   return self:_failed(err)
end

function Exchange:_redirect(status, err)
   local location = self.headers["location"]
   local target = type(location) == "string" and resolve(self.url, location)
   if not target then
      err.message = "HTTP " .. status .. " redirect without a usable Location"
      return self:_failed(err)
   end
   if (status == 307 or status == 308) and same_origin(self.url, target) then
      if self.redirects >= self.p.max_redirects then
         return self:_final(errors.new("protocol", {
            message = string.format("more than %d redirects (max_redirects)", self.p.max_redirects),
            url = self.url, status = status, location = errors.safe_url(target),
         }))
      end
      self.redirects = self.redirects + 1
      self.url = target
      self.state = "start"
      return
   end
   err.location = errors.safe_url(target)
   err.message = string.format("HTTP %d redirect to %s: only 307 and 308 redirects to the same scheme,"
      .. " host and port are followed (they keep the method and the body)", status, err.location)
   err.detail = nil
   return self:_final(err)
end

-- The whole answer of a value request, which must be exactly one JSON value.
function Exchange:_value(wait_ms)
   local req, values = self.req, self.values
   if wait_ms == nil then
      while true do
         local v, err = req:next()
         if err ~= nil then return self:_failed(err) end
         if v == nil then break end
         values[#values + 1] = v
         if #values > 1 then break end
      end
   else
      local list, done = req:poll(wait_ms)
      if list == nil then return self:_failed(done) end
      for _, v in ipairs(list) do values[#values + 1] = v end
      if not done and #values < 2 then return "busy" end
   end
   self:_close_request()
   if #values ~= 1 then
      return self:_final(errors.new("protocol", {
         message = #values == 0 and "empty response body" or "more than one JSON value in the response",
         url = self.url,
      }))
   end
   self.state, self.result = "done", values[1]
   return "value", values[1]
end

function Exchange:_retry_wait()
   if self.due and self.p.clock() < self.due then return "wait", self.due end
   self.state = "start"
end

--- The driver has slept until the due time: the next step retries, whatever
--- the clock says (an injected clock need not move with an injected sleep).
function Exchange:waited()
   self.due = nil
end

local STEPS = {
   start = function(self)
      if self.p.csrf:due(self.method, self.p.clock()) then return self:_fetch_token(nil) end
      return self:_send()
   end,
   token = Exchange._token,
   head = Exchange._head,
   error_body = Exchange._error_body,
   value = Exchange._value,
   retry_wait = Exchange._retry_wait,
   streaming = function(self) return "ready", self.req end,
   done = function(self) return "value", self.result end,
   failed = function(self) return nil, self.err end,
   closed = function(self)
      return nil, errors.new("aborted", { message = "the request was closed", url = self.url })
   end,
}

--- Goes as far as it can, waiting at most `wait_ms` for the network (nil:
--- as long as it takes); see the module comment for what it returns.
function Exchange:step(wait_ms)
   while true do
      local what, v = STEPS[self.state](self, wait_ms)
      if what ~= nil or v ~= nil then return what, v end
   end
end

--- Steps until there is a response, a value or a final error, sleeping
--- through retry waits: "ready", req | "value", v | nil, err.
function Exchange:wait()
   local p = self.p
   while true do
      local what, v = self:step(nil)
      if what ~= "wait" then return what, v end
      local left = v - p.clock()
      if left > 0 then p.sleep(left) end
      self:waited()
   end
end

exchange.resolve = resolve
return exchange
