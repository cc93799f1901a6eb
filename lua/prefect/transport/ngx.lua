--- The transport interface of lua-prefect over OpenResty cosockets
-- (`ngx.socket.tcp`), for use inside nginx + ngx_lua, where a blocking
-- libcurl call would stall every request on the worker.
--
-- HTTP/1.1 with Content-Length, chunked and read-until-close bodies; a
-- keepalive pool per host, port, TLS, SNI and verify setting; TLS verified
-- against nginx's `lua_ssl_trusted_certificate`; the body fed slice by
-- slice into the C streaming decoder, so memory stays flat and the first
-- element is handed out before the response is complete.
--
-- Loading this module outside nginx is fine (`usable` works everywhere);
-- making requests needs ngx_lua. prefect.transport decides when it is used.
-- @module prefect.transport.ngx

local decoders = require("prefect.transport.decoders")
local errors = require("prefect.errors")
local http = require("prefect.transport.ngx_http")
local options = require("prefect.options")

local ngx_transport = {}

ngx_transport.name = "ngx"

-- Phases where ngx_lua lets a handler use cosockets (and ngx.sleep).
local COSOCKET_PHASES = {
   rewrite = true, server_rewrite = true, access = true, content = true, timer = true,
   ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

-- The transport options of prefect.options, with their defaults, for a
-- transport made without a client; and what only this transport has.
local DEFAULTS = {
   keepalive_timeout = 60, -- seconds an idle pooled connection is kept
   keepalive_pool = 32, -- connections per pool
}
for _, name in ipairs({ "timeout", "connect_timeout", "stall_timeout", "max_response", "accept_encoding" }) do
   DEFAULTS[name] = options.BY_NAME[name].default
end

--- True inside nginx with ngx_lua (there is an `ngx` with `get_phase`).
function ngx_transport.present()
   local ngx_table = rawget(_G, "ngx")
   return type(ngx_table) == "table" and type(ngx_table.get_phase) == "function"
end

--- Whether this transport can run here and now: true, or false and the
-- reason. Cosockets exist only inside ngx_lua, and only in the rewrite,
-- access and content phases, in `ngx.timer.at` callbacks and in a few SSL
-- phases; `init_by_lua`, `init_worker_by_lua`, header/body filters and log
-- handlers refuse them.
function ngx_transport.usable()
   if not ngx_transport.present() then
      return false, "not running inside nginx with ngx_lua (no ngx.get_phase)"
   end
   local phase = ngx.get_phase()
   if COSOCKET_PHASES[phase] then
      return true
   end
   return false, "ngx_lua does not allow cosockets in the " .. tostring(phase) .. " phase"
      .. " (only in rewrite, access, content and ngx.timer.at callbacks)"
end

local function now()
   ngx.update_time()
   return ngx.now()
end

-- scheme, host (no brackets), port, path+query, host header value; or nil, message.
local function parse_url(url)
   if type(url) ~= "string" then
      return nil, "the url must be a string"
   end
   local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
   if not scheme then
      return nil, "not an absolute http(s) URL"
   end
   scheme = scheme:lower()
   if scheme ~= "http" and scheme ~= "https" then
      return nil, "unsupported URL scheme " .. scheme
   end
   local authority, target = rest:match("^([^/?#]*)(.*)$")
   authority = authority:gsub("^.*@", "") -- credentials travel in headers, never in the URL
   target = target:gsub("#.*$", "")
   if target == "" or target:sub(1, 1) == "?" then
      target = "/" .. target
   end
   local host, port
   if authority:sub(1, 1) == "[" then
      host, port = authority:match("^%[([^%]]+)%]:?(%d*)$")
   else
      host, port = authority:match("^([^:]+):?(%d*)$")
   end
   if not host or host == "" then
      return nil, "no host in the URL"
   end
   local default_port = scheme == "https" and 443 or 80
   port = tonumber(port) or default_port
   if port < 1 or port > 65535 then
      return nil, "bad port in the URL"
   end
   local host_header = authority:gsub("^.*@", "")
   if port == default_port then
      host_header = host_header:gsub(":%d+$", "")
   end
   return { scheme = scheme, host = host:lower(), port = port, target = target, host_header = host_header }
end
ngx_transport.parse_url = parse_url

local function is_ip_literal(host)
   return host:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:find(":", 1, true) ~= nil
end

local Request = {}
Request.__index = Request

local Transport = {}
Transport.__index = Transport

--- A transport from the client's transport options: `timeout`,
-- `connect_timeout`, `stall_timeout` (seconds), `insecure`, `max_response`
-- (bytes), `accept_encoding`, and this transport's own `keepalive_timeout`
-- (seconds) and `keepalive_pool`. `ca_file`/`ca_path` cannot be set per connection in
-- ngx_lua: verification uses nginx's `lua_ssl_trusted_certificate`.
function ngx_transport.new(opts)
   opts = opts or {}
   local self = setmetatable({}, Transport)
   self.decoders = decoders.pool()
   for k, v in pairs(DEFAULTS) do
      self[k] = v
   end
   for k in pairs(DEFAULTS) do
      if opts[k] ~= nil then
         self[k] = opts[k]
      end
   end
   self.name = ngx_transport.name
   self.verify = not opts.insecure
   self.proxy = opts.proxy
   return self
end

local function fail(kind, message, url, extra)
   local fields = { message = message, url = url }
   if extra then
      for k, v in pairs(extra) do
         fields[k] = v
      end
   end
   return errors.new(kind, fields)
end

-- Milliseconds left before the deadline, at most `cap` seconds; nil when past it.
local function budget(deadline, cap)
   local left = deadline - now()
   if left <= 0 then
      return nil
   end
   if cap and cap < left then
      left = cap
   end
   local ms = math.floor(left * 1000)
   return ms < 1 and 1 or ms
end

function Transport:_pool_name(u)
   -- ngx_lua keys pools by host:port only; a connection verified for one SNI, or
   -- opened without verification, must never serve a request that expects otherwise.
   return table.concat({ "prefect", u.host, u.port, u.scheme == "https" and "tls" or "plain",
      u.sni or "-", self.verify and "verify" or "noverify" }, ":")
end

-- Connects (or takes a pooled connection) and does the TLS handshake.
-- Returns sock, reused | nil, err.
function Transport:_connect(u, deadline, safe_url)
   local sock = ngx.socket.tcp()
   local ms = budget(deadline, self.connect_timeout)
   if not ms then
      return nil, fail("timeout", "timed out before connecting", safe_url)
   end
   sock:settimeouts(ms, ms, ms)
   -- The nginx resolver does not read /etc/hosts; spare users a resolver for the usual name.
   local addr = u.host == "localhost" and "127.0.0.1" or u.host
   if addr:find(":", 1, true) then
      addr = "[" .. addr .. "]" -- ngx_lua parses an IPv6 literal only in brackets
   end
   local ok, err = sock:connect(addr, u.port, { pool = self:_pool_name(u) })
   if not ok then
      local kind = err == "timeout" and "timeout" or "connect"
      local msg = "connecting to " .. u.host .. ":" .. u.port .. ": " .. tostring(err)
      -- refused, or the name did not resolve: the exchange fails fast on a first contact
      local unreachable = kind == "connect" or nil
      return nil, fail(kind, msg, safe_url, { unreachable = unreachable })
   end
   local reused = (sock:getreusedtimes() or 0) > 0
   if u.scheme == "https" and not reused then
      -- ngx_lua 0.10.23 sometimes raises instead of returning on a failed verification.
      local pok, session, herr = pcall(sock.sslhandshake, sock, false, u.sni, self.verify)
      local why
      if not pok or not session then
         why = pok and herr or session
      elseif self.verify and not sock:getreusedtimes() then
         -- ngx_lua before 0.10.32 loses a failed verification (chain or host name) when the
         -- whole handshake completes within its first SSL_do_handshake call, which is
         -- routine when the server answers fast: it closes the connection yet
         -- sslhandshake returns true. A connection closed under us right after a verified
         -- handshake "succeeded" is that failure, and must not reach the caller as a
         -- "closed" connect error (retried as if the network had failed).
         why = "the server's certificate did not verify (ngx_lua closed the connection"
            .. " without giving the reason; nginx's error log has it unless lua_socket_log_errors is off)"
      end
      if why then
         sock:close()
         local kind = why == "timeout" and "timeout" or "tls"
         local msg = "TLS handshake with " .. u.host .. ":" .. u.port .. " failed: " .. tostring(why)
         if kind == "tls" and self.verify then
            msg = msg .. " (certificates are checked against nginx's lua_ssl_trusted_certificate)"
         end
         return nil, fail(kind, msg, safe_url)
      end
   end
   return sock, reused
end

-- The bytes of one request to `u`, or nil and an "invalid" error.
function Transport:_bytes(r, u, headers, safe_url)
   local h = {}
   local has_ua = false
   for k, v in pairs(headers or {}) do
      h[k] = v
      if type(k) == "string" and k:lower() == "user-agent" then
         has_ua = true
      end
   end
   if not has_ua and self.user_agent then
      h["User-Agent"] = self.user_agent
   end
   if self.accept_encoding and http.can_inflate() then
      local has_ae = false
      for k in pairs(h) do
         if type(k) == "string" and k:lower() == "accept-encoding" then
            has_ae = true
         end
      end
      if not has_ae then
         h["Accept-Encoding"] = "gzip"
      end
   end
   local bytes, err = http.build_request(r.method or "GET", u.host_header, u.target, h, r.body)
   if not bytes then
      return nil, fail("invalid", err, safe_url)
   end
   return bytes
end

-- Checks that a TLS URL can be verified here; sets u.sni. nil, err when not.
function Transport:_check_tls(u, safe_url)
   if u.scheme ~= "https" then
      return true
   end
   if not is_ip_literal(u.host) then
      u.sni = u.host
   elseif self.verify then
      -- ngx_lua checks the certificate's name only against an SNI host name
      -- (never an IP SAN): a verified connection to an IP would check the chain alone.
      return nil, fail("tls", "cannot verify a certificate for the IP address " .. u.host
         .. " inside nginx (ngx_lua matches host names only): use the server's host name"
         .. " in the URL, or insecure = true", safe_url)
   end
   return true
end

--- Starts a request: connects (or takes a pooled connection) and sends it.
-- The response head is read by the first response(), next() or body(), so a
-- caller can start the next page while it reads this one.
-- Returns a request object, or nil and a prefect error.
-- @tparam table r method, url, headers (name -> value), body, decode (decoder options or nil)
function Transport:request(r)
   local safe_url = errors.safe_url(r.url)
   if self.closed then
      return nil, fail("invalid", "the transport is closed", safe_url)
   end
   if self.proxy then
      return nil, fail("invalid", "the ngx transport does not support proxies", safe_url)
   end
   local ok, why = ngx_transport.usable()
   if not ok then
      return nil, fail("invalid", "the ngx transport cannot run here: " .. why, safe_url)
   end
   local u, uerr = parse_url(r.url)
   if not u then
      return nil, fail("invalid", uerr, safe_url)
   end
   local tok, terr = self:_check_tls(u, safe_url)
   if not tok then
      return nil, terr
   end
   local bytes, berr = self:_bytes(r, u, r.headers, safe_url)
   if not bytes then
      return nil, berr
   end
   local req = setmetatable({
      transport = self, r = r, u = u, headers = r.headers, bytes = bytes, url = safe_url,
      received = 0, chunks = {}, eof = false,
      -- Every wait of this request, connecting and each read, ends by the deadline.
      timing = { deadline = now() + self.timeout, timeout = self.timeout, stall = self.stall_timeout,
         now = now },
   }, Request)
   req.consume = function(piece)
      return req:_consume(piece)
   end
   local sent, serr = req:_send()
   if not sent then
      return nil, serr
   end
   return req
end

function Transport:close()
   self.closed = true
end

-- Connects and sends the request's bytes; a pooled connection that turns out
-- to be dead is dropped and the next one (or a new one) tried.
function Request:_send()
   local t = self.transport
   for _ = 0, t.keepalive_pool do
      local sock, reused = t:_connect(self.u, self.timing.deadline, self.url)
      if not sock then
         return self:_fail_early(reused)
      end
      local ms = budget(self.timing.deadline)
      if not ms then
         sock:close()
         return self:_fail_early(fail("timeout", "timed out after " .. t.timeout .. " s", self.url))
      end
      sock:settimeouts(ms, ms, ms)
      local sent, err = sock:send(self.bytes)
      if sent then
         self.sock, self.reused = sock, reused
         -- The stall clock starts once the request is out.
         self.stream = http.stream(sock, self.timing)
         return true
      end
      sock:close()
      if not reused or err == "timeout" then
         local kind = err == "timeout" and "timeout" or "connect"
         return self:_fail_early(fail(kind, "sending the request: " .. tostring(err), self.url))
      end
   end
   return self:_fail_early(fail("connect", "every pooled connection was dead", self.url))
end

function Request:_fail_early(err)
   self.failed = err
   return nil, err
end

-- The error kind of a response head that could not be read, by the class of the failure (a connection
-- that broke is "connect", which may be retried like a failed connect).
local HEAD_FAILURE_KINDS = { timeout = "timeout", protocol = "protocol", too_large = "too_large" }

-- The same for a body: one cut short or malformed is "protocol", a reset "connect".
local BODY_FAILURE_KINDS = { timeout = "timeout", io = "connect", too_large = "too_large" }

-- Reads the response head (once; prefect.exchange follows redirects), and sets up
-- the body reader and the decoder. true | nil, err.
function Request:_head()
   if self.head then
      return true
   end
   if self.failed then
      return nil, self.failed
   end
   local t = self.transport
   local head
   while true do
      local err, class
      head, err, class = http.read_head(self.stream)
      if head then
         break
      end
      self.sock:close()
      self.sock = nil
      if self.reused and not self.stream.got_bytes and class ~= "timeout" and not self.closing then
         -- The server closed this pooled connection while it was idle.
         local ok, serr = self:_send()
         if not ok then
            return nil, serr
         end
      else
         return self:_fail(HEAD_FAILURE_KINDS[class] or "connect", err)
      end
   end

   local reader, rerr = http.body_reader(self.stream, head, self.r.method or "GET")
   if not reader then
      return self:_fail("protocol", rerr)
   end
   self.head, self.reader = head, reader
   if reader.length and reader.length > t.max_response then
      return self:_fail("too_large", string.format("response of %d bytes is over the limit of %d bytes",
         reader.length, t.max_response))
   end
   local encoding = (head.headers["content-encoding"] or "identity"):lower()
   if encoding == "gzip" or encoding == "x-gzip" or encoding == "deflate" then
      local inflater, ierr = http.inflater()
      if not inflater then
         return self:_fail("protocol", "cannot decode Content-Encoding " .. encoding .. ": " .. ierr)
      end
      self.inflater = inflater
   elseif encoding ~= "identity" then
      return self:_fail("protocol", "unsupported Content-Encoding " .. encoding)
   end
   local ctype = (head.headers["content-type"] or ""):lower()
   local decode = self.r.decode
   if decode and head.status >= 200 and head.status < 300 and ctype:find("json", 1, true) then
      self.decoder = self.transport.decoders:take(decode)
   end
   return true
end

--- status, headers (lowercase name -> value; repeated ones joined by ", ")
-- | nil, err. Waits for the response head the first time.
function Request:response()
   local ok, err = self:_head()
   if not ok then
      return nil, err
   end
   return self.head.status, self.head.headers
end

-- Reads one slice of the body into the decoder or the chunk list.
-- Returns true (a slice arrived), false (the body is complete) or nil, err.
function Request:_fill()
   if self.eof then
      return false
   end
   if self.failed then
      return nil, self.failed
   end
   local data, err, class = self.reader.read()
   if data == nil then
      -- As with libcurl: a broken connection (reset) may be retried like a failed
      -- connect, a body cut short or malformed is a protocol error.
      return self:_fail(BODY_FAILURE_KINDS[class] or "protocol", err)
   end
   if data == false then
      if self.inflater and not self.inflater.ended then
         return self:_fail("protocol", "the compressed body ended before its compressed stream did")
      end
      self.eof = true
      self:_release()
      return false
   end
   if self.inflater then
      local ok, ierr = self.inflater:feed(data, self.consume)
      if not ok then
         if self.failed then
            return nil, self.failed
         end
         return self:_fail("protocol", ierr)
      end
      return true
   end
   local ok = self.consume(data)
   if not ok then
      return nil, self.failed
   end
   return true
end

-- Takes decoded body bytes: counts them against max_response and feeds them to
-- the decoder (or keeps them for body()). true | nil, message (self.failed set).
function Request:_consume(data)
   self.received = self.received + #data
   if self.received > self.transport.max_response then
      self:_fail("too_large", string.format("response is over the limit of %d bytes",
         self.transport.max_response))
      return nil, "too large"
   end
   if self.decoder then
      if not self.feed_error then
         local ok, derr = self.decoder:feed(data)
         if not ok then
            -- The elements completed before the bad byte are still handed out by
            -- next(); the error follows them.
            self.feed_error = derr
         end
      end
   else
      self.chunks[#self.chunks + 1] = data
   end
   return true
end

function Request:_fail(kind, message, extra)
   local fields = { status = self.head and self.head.status }
   for k, v in pairs(extra or {}) do
      fields[k] = v
   end
   self.failed = fail(kind, message, self.url, fields)
   self:close()
   return nil, self.failed
end

-- Gives a cleanly finished connection back to the pool.
function Request:_release()
   local sock = self.sock
   if not sock then
      return
   end
   self.sock = nil
   local t = self.transport
   if self.reader.reusable then
      local ok = sock:setkeepalive(t.keepalive_timeout * 1000, t.keepalive_pool)
      if ok then
         return
      end
   end
   sock:close()
end

--- The next decoded element | nil at the end of the body | nil, err.
-- Only for requests made with `decode` whose response was 2xx JSON.
function Request:next()
   local ok, herr = self:_head()
   if not ok then
      return nil, herr
   end
   local d = self.decoder
   if not d then
      if self.failed then
         return nil, self.failed
      end
      return nil, fail("invalid", "this response is not being decoded (not a 2xx JSON body); use body()",
         self.url)
   end
   while true do
      if self.failed then
         return nil, self.failed
      end
      local v, err = d:next()
      if v ~= nil then
         return v
      end
      if err ~= nil then
         return self:_fail(err.kind, err.message, err)
      end
      if d:done() then
         -- Whatever follows the document (normally nothing) must still be read
         -- for the connection to be reusable.
         while not self.eof do
            local more, ferr = self:_fill()
            if more == nil then
               return nil, ferr
            end
         end
         return nil
      end
      if self.finished then
         return self:_fail("decode", "the response ended before its JSON document did")
      end
      if self.feed_error then
         return self:_fail(self.feed_error.kind, self.feed_error.message, self.feed_error)
      end
      if self.eof then
         local finished, ferr = d:finish()
         if not finished then
            return self:_fail(ferr.kind, ferr.message, ferr)
         end
         self.finished = true
      else
         local more, ferr = self:_fill()
         if more == nil then
            return nil, ferr
         end
      end
   end
end

--- The whole body as a string, when it was not streamed into the decoder.
function Request:body()
   local ok, herr = self:_head()
   if not ok then
      return nil, herr
   end
   if self.decoder then
      return nil, fail("invalid", "the body was streamed into the decoder; use next()", self.url)
   end
   while true do
      local more, err = self:_fill()
      if more == nil then
         return nil, err
      elseif more == false then
         break
      end
   end
   local s = table.concat(self.chunks)
   self.chunks = { s }
   return s
end

--- Not available: inside nginx, next() already yields to other requests.
function Request:poll()
   return nil, fail("invalid", "poll() is for the curl transport; with cosockets use next()", self.url)
end

-- Most body bytes close() reads to save a connection, how long it waits for
-- them, and how long for a head not yet read (short: a remote server's answer
-- is not worth holding the caller for; one already here costs nothing).
local SALVAGE_BYTES, SALVAGE_SECONDS, SALVAGE_HEAD_SECONDS = 64 * 1024, 0.05, 0.005

-- A request closed before its end, whose response is small and already (or
-- nearly) here, such as the page a pager fetched ahead and did not need:
-- reading the rest keeps the connection for the next request. true when the
-- connection went back to the pool.
function Request:_salvage()
   if self.failed or not self.reader or not self.head then
      return false
   end
   local reader = self.reader
   if not reader.length or reader.length - reader.received > SALVAGE_BYTES then
      return false
   end
   local timing = self.timing
   local deadline = timing.deadline
   timing.deadline = math.min(deadline, now() + SALVAGE_SECONDS)
   local saved
   while true do
      local data = reader.read()
      if data == false then
         self.eof = true
         self:_release()
         saved = true
         break
      elseif data == nil then
         saved = false
         break
      end
   end
   timing.deadline = deadline
   return saved
end

--- Ends the request. A connection whose response was read to its end goes
-- back to nginx's keepalive pool; so does one whose small remaining body
-- arrives within a few milliseconds; any other is closed. Safe to call more
-- than once.
function Request:close()
   if self.sock and not self.eof and self:_head_if_ready() then
      self:_salvage()
   end
   if self.sock then
      self.sock:close()
      self.sock = nil
   end
   -- Nothing feeds the decoder once the socket is gone: the next page of
   -- the same query may have it, and this request answers as closed.
   if self.decoder then
      self.transport.decoders:give(self.r.decode, self.decoder)
      self.decoder = nil
      self.failed = self.failed or fail("aborted", "request is closed", self.url)
   end
end

-- Whether the head is (or can quickly be) read: true | false.
function Request:_head_if_ready()
   if self.head then
      return true
   end
   if self.failed then
      return false
   end
   local timing = self.timing
   local deadline = timing.deadline
   timing.deadline = math.min(deadline, now() + SALVAGE_HEAD_SECONDS)
   self.closing = true
   local ready = self:_head()
   timing.deadline = deadline
   return ready == true and not self.failed
end

return ngx_transport
