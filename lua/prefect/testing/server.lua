--- The Prefect-compatible test server's HTTP side: HTTP/1.1 on luasocket around an app's
-- `handle(req)`, with keep-alive, chunked bodies, gzip, optional TLS, test endpoints and fault injection.
-- One process, one coroutine per connection, every wait a yield to a `socket.select` loop.
--
--    local srv = server.new{ app = api.new{ data = dataset } }
--    local url = assert(srv:listen())   -- "http://127.0.0.1:PORT/api"
--    srv:run()                          -- until srv:stop()
--
-- @module prefect.testing.server

local socket = require("socket")
local loop_mod = require("prefect.testing.loop")
local conn_mod = require("prefect.testing.conn")
local http = require("prefect.testing.http")
local faults = require("prefect.testing.faults")
local gzip = require("prefect.testing.gzip")

local gettime = loop_mod.gettime

local DEFAULTS = {
   host = "127.0.0.1",
   port = 0,
   base_path = "/api",
   max_header_bytes = 65536,
   max_body_bytes = 10 * 1024 * 1024,
   keepalive_timeout = 5, -- seconds a connection may sit idle between requests (uvicorn's default)
   request_timeout = 30,  -- seconds to receive a request's head, and then its body
   write_timeout = 30,    -- seconds without progress while sending
   handshake_timeout = 10,
   gzip_min_size = 500,   -- Prefect's GZipMiddleware minimum
   gzip_level = 6,
   backlog = 128,
   server_header = "uvicorn",
   -- Safety caps on the endless fault modes, so that a broken test cannot keep one going for ever.
   endless_max_bytes = 2 * 1024 * 1024 * 1024,
   endless_max_seconds = 600,
}

-- Bodies up to this size go out in the same send as the head.
local SMALL_BODY = 16384
-- Pieces are sent in slices of this size, so a drip or a cut never copies a big string; after each
-- slice's worth of bytes a response lets the other connections run.
local SLICE = 262144
-- The endless fault modes send blocks of about this size, one per round of the loop.
local FLOOD_BLOCK = 65536
-- libcurl skips a chunk extension of any length at full speed, so an unpaced
-- chunk_line_endless would reach endless_max_bytes (and close) within about a
-- second on loopback: paced at 64 KiB every 5 ms, the client's stall_timeout
-- decides how the read ends, as it would against a server that never stops.
local CHUNK_EXTENSION_PAUSE = 0.005
-- header_bytes: the value of X-Big, sent a block at a time.
local FILLER = string.rep("x", FLOOD_BLOCK)
-- bad_chunk: the first chunk-size line, not hex.
local BAD_CHUNK_SIZE = "zz\r\n"
local CONTINUE_HEAD = "HTTP/1.1 100 Continue\r\n\r\n"
local TRAILER_LINE = "x-trailer: " .. string.rep("t", 50) .. "\r\n"

-- Fault items after which the connection cannot carry another response.
local BREAKS_CONNECTION = { "cut_after", "reset", "http09", "status_line", "content_length2", "bad_chunk",
   "chunk_line_endless", "trailer_endless", "endless_runs" }
-- Fault items that frame the body chunked.
local CHUNKED_ITEMS = { "chunked", "bad_chunk", "chunk_line_endless", "trailer_endless" }

local function any_item(spec, names)
   if not spec then return false end
   for _, name in ipairs(names) do
      if spec[name] then return true end
   end
   return false
end

local ALLOWED_HOSTS = { ["127.0.0.1"] = "127.0.0.1", ["::1"] = "::1", localhost = "127.0.0.1" }

local Server = {}
Server.__index = Server

local function log(self, ...)
   if self.opts.log then self.opts.log(table.concat({ ... })) end
end

--- A new server. opts: app (required: a table with `handle(self, req)`, or a function(req); either
-- returns status, headers {name -> value}, body, where body is a string, an array of strings (sent
-- without joining them) or a function returning pieces until nil (sent chunked)),
-- host ("127.0.0.1" | "::1" | "localhost"), port (0: a free one), base_path (for the printed URL),
-- fault (server-wide fault text), tls = { cert = path, key = path }, stdin_watch (stop when standard input
-- reaches end of file), log (function(line)), and the limits and timeouts in DEFAULTS.
local function new(opts)
   assert(type(opts) == "table", "prefect.testing.server.new: options table expected")
   local o = {}
   for k, v in pairs(DEFAULTS) do o[k] = v end
   for k, v in pairs(opts) do o[k] = v end
   local app = o.app
   if type(app) == "function" then
      local fn = app
      app = { handle = function(_, req) return fn(req) end }
   end
   assert(type(app) == "table" and app.handle, "prefect.testing.server.new: opts.app with handle expected")
   local host = ALLOWED_HOSTS[o.host]
   if not host then error("prefect.testing.server.new: host must be 127.0.0.1, ::1 or localhost", 2) end
   o.host = host

   local self = setmetatable({
      opts = o,
      app = app,
      loop = loop_mod.new(),
      injector = faults.new(o.fault),
      endless_ids = { n = 0 }, -- endless_runs: the last id handed out, so that ids never repeat
      stats = { connections = 0, requests = 0, active = 0, epoch = 0 },
   }, Server)
   if o.tls then
      local ssl = require("ssl")
      local ctx, err = ssl.newcontext{
         mode = "server", protocol = "any", key = o.tls.key, certificate = o.tls.cert,
         options = { "all", "no_sslv2", "no_sslv3" },
      }
      if not ctx then error("prefect.testing.server.new: TLS: " .. tostring(err), 2) end
      self.ssl, self.tls_ctx = ssl, ctx
   end
   return self
end

---------------------------------------------------------------------------------------------------
-- Sending a response

-- Writes body pieces with the framing, drip and cut the response asks for.
local Writer = {}
Writer.__index = Writer

local function new_writer(self, conn, spec, chunked)
   local drip = spec and (spec.drip_bytes or spec.drip_ms)
   return setmetatable({
      server = self, conn = conn, chunked = chunked,
      budget = spec and spec.cut_after,
      drip_bytes = drip and (spec.drip_bytes or 64),
      drip_s = drip and (spec.drip_ms or 10) / 1000,
      head_drip_s = spec and spec.head_drip_ms and spec.head_drip_ms / 1000,
      bad_size_line = spec and spec.bad_chunk and BAD_CHUNK_SIZE,
      unpaced = 0,
   }, Writer)
end

-- A client that reads as fast as the server writes never makes a send wait, so a long response would
-- keep the loop to itself: after every SLICE bytes it lets the other tasks run.
function Writer:pace(n)
   self.unpaced = self.unpaced + n
   if self.unpaced >= SLICE then
      self.unpaced = 0
      self.server.loop:sleep(0)
   end
end

function Writer:deadline()
   return gettime() + self.server.opts.write_timeout
end

-- Sends data[i..j] as-is (framing already applied), dripping if asked.
function Writer:raw(data, i, j)
   if not self.drip_bytes then
      local ok, err = self.conn:send(data, i, j, self:deadline())
      if ok then self:pace(j - i + 1) end
      return ok, err
   end
   local step = math.max(self.drip_bytes, 1)
   while i <= j do
      local last = math.min(i + step - 1, j)
      local ok, err = self.conn:send(data, i, last, self:deadline())
      if not ok then return nil, err end
      i = last + 1
      if i <= j then self.server.loop:sleep(self.drip_s) end
   end
   return true
end

-- Sends data[i..j] of the head, one byte every head_drip_ms if asked.
function Writer:head_bytes(data, i, j)
   if not self.head_drip_s then return self:raw(data, i, j) end
   for k = i, j do
      if self.head_started then self.server.loop:sleep(self.head_drip_s) end
      self.head_started = true
      local ok, err = self.conn:send(data, k, k, self:deadline())
      if not ok then return nil, err end
   end
   return true
end

-- Sends the head: `parts` are strings and, for header_bytes, a count of filler bytes.
function Writer:head(parts)
   for _, part in ipairs(parts) do
      local left = type(part) == "number" and part or 0
      local ok, err = true, nil
      if type(part) == "string" then ok, err = self:head_bytes(part, 1, #part) end
      while ok and left > 0 do
         local n = math.min(left, #FILLER)
         ok, err = self:head_bytes(FILLER, 1, n)
         left = left - n
      end
      if not ok then return nil, err end
   end
   return true
end

-- The next chunk-size line (under bad_chunk the first one is not hex).
function Writer:size_line(n)
   local bad = self.bad_size_line
   if bad then
      self.bad_size_line = nil
      return bad
   end
   return http.chunk_size_line(n)
end

-- The last chunk (not hex either under bad_chunk, if no chunk came before it).
function Writer:last_chunk()
   if self.bad_size_line then return self.bad_size_line .. "\r\n" end
   return http.LAST_CHUNK
end

-- Sends one body piece; returns false once a cut_after budget is spent.
function Writer:piece(data)
   local n = #data
   if self.budget then
      if self.budget <= 0 then return false end
      if n > self.budget then n = self.budget end
      self.budget = self.budget - n
   end
   local i = 1
   while i <= n do
      local j = math.min(i + SLICE - 1, n)
      local ok, err
      if self.chunked then
         local size_line = self:size_line(j - i + 1)
         ok, err = self:raw(size_line, 1, #size_line)
         if ok then ok, err = self:raw(data, i, j) end
         if ok then ok, err = self:raw("\r\n", 1, 2) end
      else
         ok, err = self:raw(data, i, j)
      end
      if not ok then return nil, err end
      i = j + 1
   end
   if self.budget and self.budget <= 0 then return false end
   return true
end

local function header_list(app_headers)
   local list, present = {}, {}
   local names = {}
   for name in pairs(app_headers or {}) do names[#names + 1] = name end
   table.sort(names)
   for _, name in ipairs(names) do
      local lname = name:lower()
      -- Framing is the server's business, not the app's.
      if lname ~= "content-length" and lname ~= "transfer-encoding" and lname ~= "connection" then
         local value = app_headers[name]
         if type(value) == "table" then
            for _, v in ipairs(value) do list[#list + 1] = { name, tostring(v) } end
         else
            list[#list + 1] = { name, tostring(value) }
         end
         present[lname] = #list
      end
   end
   return list, present
end

local function body_pieces(body)
   if body == nil then return {}, 0 end
   if type(body) == "string" then return { body }, #body end
   local length = 0
   for _, piece in ipairs(body) do length = length + #piece end
   return body, length
end

-- The head as parts for Writer:head, nil for none (http09).
local function head_parts(status, headers, spec)
   if spec and spec.http09 then return nil end
   local head = http.head(status, headers, spec and spec.status_line)
   if not (spec and spec.header_bytes) then return { head } end
   -- X-Big comes last and its value is sent a block at a time: it may be larger than the server
   -- should hold.
   return { head:sub(1, -3) .. "X-Big: ", spec.header_bytes, "\r\n\r\n" }
end

--- Sends `prefix` (if any), then `unit` over and over, `pause` seconds between blocks: the
-- endless fault modes. Ends when the client goes away or stops reading for write_timeout, or at
-- the caps endless_max_bytes and endless_max_seconds. Returns false: the connection is done.
function Server:flood(conn, unit, prefix, pause)
   local o = self.opts
   local block = string.rep(unit, math.max(1, math.floor(FLOOD_BLOCK / #unit)))
   if prefix and not conn:send(prefix, 1, #prefix, gettime() + o.write_timeout) then return false end
   local sent, stop_at = 0, gettime() + o.endless_max_seconds
   while sent < o.endless_max_bytes and gettime() < stop_at do
      if not conn:send(block, 1, #block, gettime() + o.write_timeout) then return false end
      sent = sent + #block
      -- A client that reads as fast as this writes never makes a send wait: let the others run.
      self.loop:sleep(pause or 0)
   end
   log(self, "endless response stopped at its cap")
   return false
end

--- Sends a response. res = { status, headers = {name -> value}, body = string | array of strings,
-- or iter = function returning pieces until nil, length = n or nil (then chunked), endless = true
-- (the iter ends only at a cap: leave the body unfinished) } or { flood = unit, flood_prefix = text }
-- (see Server:flood). Returns true when the connection may serve another request.
function Server:respond(conn, req, res, spec)
   if res.flood then return self:flood(conn, res.flood, res.flood_prefix) end
   local status = res.status
   local headers, present = header_list(res.headers)
   local no_body = req.method == "HEAD" or status == 204 or status == 304 or status < 200
   local pieces, length, iter = nil, res.length, res.iter
   if not iter then pieces, length = body_pieces(res.body) end
   local http09 = spec and spec.http09

   if pieces and not http09 and not present["content-encoding"] and length >= self.opts.gzip_min_size
      and http.accepts_gzip(req.headers["accept-encoding"]) and not no_body then
      pieces, length = gzip.compress(pieces, self.opts.gzip_level)
      headers[#headers + 1] = { "content-encoding", "gzip" }
      headers[#headers + 1] = { "vary", "Accept-Encoding" }
   end

   local keep = http.keep_alive(req) and not any_item(spec, BREAKS_CONNECTION)
   local chunked = any_item(spec, CHUNKED_ITEMS) or length == nil
   if http09 then
      -- the body alone, ended by the end of the connection
      chunked = false
   elseif chunked and req.version == "1.0" then
      -- HTTP/1.0 has no chunked coding: without a length the body ends with the connection
      chunked = false
      if length == nil then keep = false end
   end
   if status == 204 or status == 304 or status < 200 then
      chunked = false
   elseif chunked then
      headers[#headers + 1] = { "transfer-encoding", "chunked" }
   elseif length then
      headers[#headers + 1] = { "content-length", tostring(length) }
   end
   if spec and spec.content_length2 then
      headers[#headers + 1] = { "content-length", tostring(spec.content_length2) }
   end
   if not present["date"] then headers[#headers + 1] = { "date", http.date(os.time()) } end
   if not present["server"] then headers[#headers + 1] = { "server", self.opts.server_header } end
   if not keep then headers[#headers + 1] = { "connection", "close" } end

   local head = head_parts(status, headers, spec)
   local writer = new_writer(self, conn, spec, chunked)
   if no_body then
      local ok = not head or writer:head(head)
      return ok and keep
   end

   if head and #head == 1 and not writer.head_drip_s and not chunked and not writer.budget
      and not writer.drip_bytes and pieces and length <= SMALL_BODY then
      -- head and a small body in one send
      local ok = conn:send(head[1] .. table.concat(pieces), 1, nil, writer:deadline())
      return ok and keep
   end
   if head and not writer:head(head) then return false end
   if spec and spec.chunk_line_endless then
      return self:flood(conn, "x", "1;", CHUNK_EXTENSION_PAUSE)
   end

   local next_piece = iter
   if not next_piece then
      local i = 0
      next_piece = function()
         i = i + 1
         return pieces[i]
      end
   end
   for piece in next_piece do
      if #piece > 0 then
         local more, err = writer:piece(piece)
         if more == nil then
            log(self, "send failed: ", tostring(err))
            return false
         end
         if not more then break end
      end
   end
   if writer.budget and writer.budget <= 0 then
      -- cut_after: the announced length was not sent; end the connection
      if spec.reset then conn:reset() end
      return false
   end
   if spec and spec.reset then
      conn:reset()
      return false
   end
   -- endless_runs reached its cap: the body stays unfinished
   if res.endless then return false end
   if spec and spec.trailer_endless then return self:flood(conn, TRAILER_LINE, "0\r\n") end
   if chunked then
      local last = writer:last_chunk()
      if not writer:raw(last, 1, #last) then return false end
   end
   return keep
end

local function json_string(s)
   return '"' .. s:gsub('[%c"\\]', function(c)
      return c == '"' and '\\"' or c == "\\" and "\\\\" or ("\\u%04x"):format(c:byte())
   end) .. '"'
end

local function error_response(status, detail)
   return {
      status = status,
      headers = { ["content-type"] = "application/json" },
      body = '{"detail": ' .. json_string(detail) .. "}",
   }
end

---------------------------------------------------------------------------------------------------
-- Test endpoints and faults

function Server:test_endpoint(req)
   local json = { ["content-type"] = "application/json" }
   if req.path == "/__test/stats" then
      if req.method ~= "GET" and req.method ~= "HEAD" then
         return error_response(405, "Method Not Allowed")
      end
      local s = self.stats
      return {
         status = 200,
         headers = json,
         body = ('{"connections": %d, "requests": %d, "active": %d}'):format(s.connections, s.requests,
            s.active),
      }
   elseif req.path == "/__test/reset" then
      if req.method ~= "POST" then return error_response(405, "Method Not Allowed") end
      self.stats.connections, self.stats.requests = 0, 0
      self.stats.epoch = self.stats.epoch + 1
      self.injector:reset()
      return { status = 204, headers = {} }
   end
   return error_response(404, "Not Found")
end

function Server:call_app(req)
   local ok, status, headers, body = xpcall(function()
      return self.app:handle{
         method = req.method, path = req.path, query = req.query, headers = req.headers, body = req.body,
      }
   end, debug.traceback)
   if ok and type(status) ~= "number" then
      ok, status = false, "app:handle returned a status of type " .. type(status)
   end
   if not ok then
      io.stderr:write("prefect-test-server: app error: ", tostring(status), "\n")
      return {
         status = 500,
         headers = { ["content-type"] = "application/json" },
         body = faults.error_body(500, http.REASONS),
      }
   end
   if type(body) == "function" then
      -- a generator of pieces: streamed with chunked framing, its length unknown
      return { status = status, headers = headers or {}, iter = body }
   end
   return { status = status, headers = headers or {}, body = body }
end

local function set_header(headers, name, value)
   for k in pairs(headers) do
      if k:lower() == name then headers[k] = nil end
   end
   headers[name] = value
end

-- The response for a request under fault `spec` (nil: none).
function Server:faulted_response(req, spec)
   local reasons = http.REASONS
   local o = self.opts
   if spec.continue_flood then return { flood = CONTINUE_HEAD } end
   if spec.head_line_endless then
      return { flood = "a", flood_prefix = "HTTP/1.1 200 OK\r\nX-Endless: " }
   end
   if spec.ignore_offset and req.body and faults.is_filter(req) then
      req.body = faults.zero_offset(req.body)
      if req.headers["content-length"] then req.headers["content-length"] = tostring(#req.body) end
   end
   local res
   if spec.redirect or spec.redirect_status or spec.location then
      local location = spec.location
      if not location then
         local host = req.headers.host
         local scheme = self.tls_ctx and "https" or "http"
         location = req.target
         if host and not host:find("[%s/]") then location = scheme .. "://" .. host .. location end
      end
      res = { status = spec.redirect_status or 307, headers = { location = location } }
   elseif spec.echo_auth then
      local authorization = req.headers.authorization or ""
      res = { status = spec.status or 401, body = faults.echo_auth_body(authorization),
         headers = { ["content-type"] = "application/json", ["X-Echo"] = authorization } }
   elseif spec.body then
      res = { status = spec.status or 200, headers = { ["content-type"] = "application/json" },
         body = spec.body }
   elseif spec.endless_runs then
      local template = faults.run_template(self:call_app(req).body)
      res = { status = spec.status or 200, headers = { ["content-type"] = "application/json" },
         endless = true, iter = faults.endless_runs(template, self.endless_ids, o.endless_max_bytes,
            o.endless_max_seconds, gettime) }
   elseif spec.html then
      local status = spec.status or 502
      res = { status = status, headers = { ["content-type"] = "text/html" },
         body = faults.html_page(status, reasons) }
   elseif spec.gzip_bomb then
      local length, iter = gzip.bomb(spec.gzip_bomb)
      res = { status = spec.status or 200, length = length, iter = iter,
         headers = { ["content-type"] = "application/json", ["content-encoding"] = "gzip" } }
   elseif spec.huge then
      res = { status = spec.status or 200, length = spec.huge, iter = faults.huge_body(spec.huge),
         headers = { ["content-type"] = "application/json" } }
   elseif spec.invalid_json then
      res = { status = spec.status or 200, headers = { ["content-type"] = "application/json" },
         body = faults.INVALID_JSON }
   elseif spec.status and spec.status >= 300 then
      res = { status = spec.status, headers = { ["content-type"] = "application/json" },
         body = faults.error_body(spec.status, reasons) }
   else
      res = self:call_app(req)
      if spec.status then res.status = spec.status end
   end
   if spec.content_type then set_header(res.headers, "content-type", spec.content_type) end
   if spec.retry_after then set_header(res.headers, "retry-after", ("%g"):format(spec.retry_after)) end
   if spec.retry_after_date then
      set_header(res.headers, "retry-after", http.date(os.time() + math.ceil(spec.retry_after_date)))
   end
   return res
end

---------------------------------------------------------------------------------------------------
-- One connection

-- Reads one request; returns req, or nil, reason ("closed", "timeout") or nil, {status, message}.
function Server:read_request(conn, first)
   local o = self.opts
   -- Waiting for a request to start is bounded by the keep-alive timeout (the request timeout for the
   -- first one); once it has started, the whole head must come within the request timeout.
   conn:skip_blank_lines()
   while conn:buffered() == 0 do
      local ok, err = conn:fill(gettime() + (first and o.request_timeout or o.keepalive_timeout))
      if not ok then return nil, err == "timeout" and "idle" or err end
      conn:skip_blank_lines()
   end
   local head, err = conn:read_until("\r?\n\r?\n", o.max_header_bytes, gettime() + o.request_timeout)
   if not head then
      if err == "too_large" then return nil, { status = 431, message = "request header too large" } end
      if err == "timeout" then return nil, { status = 408, message = "request timeout" } end
      return nil, err
   end
   local req, perr = http.parse_head(head)
   if not req then return nil, perr end
   return req
end

function Server:read_body(conn, req)
   local o = self.opts
   local framing, length = http.body_framing(req, o.max_body_bytes)
   if not framing then return nil, length end
   if framing == "none" then return true end
   if http.has_token(req.headers.expect, "100-continue") and req.version == "1.1" then
      local continue = "HTTP/1.1 100 Continue\r\n\r\n"
      if not conn:send(continue, 1, #continue, gettime() + o.write_timeout) then return nil, "closed" end
   end
   local body, err
   if framing == "chunked" then
      body, err = http.read_chunked(conn, o.max_body_bytes, gettime() + o.request_timeout)
   else
      body, err = conn:read_exact(length, gettime() + o.request_timeout)
   end
   if not body then return nil, err end
   req.body = body
   return true
end

function Server:count_request(conn, req)
   local stats = self.stats
   if req and req.path:sub(1, 8) == "/__test/" then
      -- The helper's own look at the stats must not show up in them.
      if conn.requests == 0 and conn.epoch == stats.epoch then stats.connections = stats.connections - 1 end
   else
      stats.requests = stats.requests + 1
   end
   conn.requests = conn.requests + 1
end

-- Serves requests on one connection until it closes; never raises.
function Server:serve(conn)
   while true do
      local req, err = self:read_request(conn, conn.requests == 0)
      if not req then
         if type(err) == "table" then
            self:count_request(conn, nil)
            self:respond(conn, { method = "GET", version = "1.1", headers = { connection = "close" } },
               error_response(err.status, err.message or http.REASONS[err.status]), nil)
            conn:drain_close()
         end
         return
      end
      self:count_request(conn, req)
      local ok, berr = self:read_body(conn, req)
      if not ok then
         if type(berr) == "table" then
            req.headers.connection = "close"
            self:respond(conn, req, error_response(berr.status, berr.message or "bad request body"), nil)
            conn:drain_close()
         end
         return
      end

      local res, spec
      if req.path:sub(1, 8) == "/__test/" then
         res = self:test_endpoint(req)
      else
         local ferr
         spec, ferr = self.injector:take(req)
         if spec == false then
            res = error_response(400, "invalid X-Test-Fault: " .. ferr)
            spec = nil
         elseif spec then
            if spec.delay_ms then self.loop:sleep(spec.delay_ms / 1000) end
            if spec.reset and not spec.cut_after then
               conn:reset()
               return
            end
            res = self:faulted_response(req, spec)
         else
            res = self:call_app(req)
         end
      end
      if not self:respond(conn, req, res, spec) then return end
   end
end

function Server:connection(sock)
   local stats = self.stats
   stats.connections = stats.connections + 1
   stats.active = stats.active + 1
   sock:settimeout(0)
   sock:setoption("tcp-nodelay", true)
   local conn = conn_mod.new(self.loop, sock)
   conn.requests, conn.epoch = 0, stats.epoch
   local ok, err = pcall(function()
      if self.tls_ctx then
         local fd = sock:getfd()
         local tls, werr = self.ssl.wrap(sock, self.tls_ctx)
         if not tls then error("TLS wrap: " .. tostring(werr)) end
         tls:settimeout(0)
         conn.sock, conn.raw, conn.fd = tls, sock, fd
         local deadline = gettime() + self.opts.handshake_timeout
         while true do
            local done, herr = tls:dohandshake()
            if done then break end
            local waited
            if herr == "wantread" then
               waited = self.loop:wait_readable(tls, deadline)
            elseif herr == "wantwrite" then
               waited = self.loop:wait_writable(tls, deadline)
            end
            if not waited then
               log(self, "TLS handshake failed: ", tostring(herr))
               return
            end
         end
      end
      self:serve(conn)
   end)
   if not ok then io.stderr:write("prefect-test-server: connection failed: ", tostring(err), "\n") end
   conn:close()
   stats.active = stats.active - 1
end

---------------------------------------------------------------------------------------------------
-- Listening and running

local function accept_loop(self)
   local listener = self.listener
   while self.listener do
      local client, err = listener:accept()
      if client then
         if loop_mod.selectable(client) then
            self.loop:spawn(self.connection, self, client)
         else
            client:close() -- beyond what select() can watch
         end
      elseif err == "timeout" then
         self.loop:wait_readable(listener)
      else
         log(self, "accept failed: ", tostring(err))
         self.loop:sleep(0.05)
      end
   end
end

-- Standard input as something select() can watch: the launcher's parent holds the other end of a pipe,
-- and its end of file means the parent is gone.
local STDIN = { getfd = function() return 0 end }

local function stdin_watch(self)
   while true do
      self.loop:wait_readable(STDIN)
      if io.stdin:read(1) == nil then
         log(self, "standard input closed: stopping")
         self:stop()
         return
      end
   end
end

--- Binds and listens; returns the base URL ("http://127.0.0.1:PORT/api") or nil, err.
function Server:listen()
   if self.listener then return self.url end
   local o = self.opts
   local listener, err = socket.bind(o.host, o.port, o.backlog)
   if not listener then return nil, ("cannot listen on %s port %s: %s"):format(o.host, o.port, err) end
   listener:settimeout(0)
   local _, port = listener:getsockname()
   self.listener, self.port = listener, tonumber(port)
   local host = o.host:find(":", 1, true) and "[" .. o.host .. "]" or o.host
   self.url = ("%s://%s:%d%s"):format(self.tls_ctx and "https" or "http", host, self.port, o.base_path)
   self.loop:spawn(accept_loop, self)
   if o.stdin_watch then self.loop:spawn(stdin_watch, self) end
   return self.url
end

--- Serves until `stop` is called (listens first if needed). Returns true, or nil, err.
function Server:run()
   local ok, err = self:listen()
   if not ok then return nil, err end
   self.loop:run()
   return true
end

function Server:stop()
   self.loop:stop()
   if self.listener then
      self.listener:close()
      self.listener = nil
   end
end

return {
   new = new,
   DEFAULTS = DEFAULTS,
}
