--- HTTP/1.1 framing for the cosocket transport: the request's bytes, the
-- response head, and a body reader that hands out slices as they arrive
-- (Content-Length, chunked, or read until close).
--
-- It reads through a stream (ngx_http.stream) over any object with
-- `receiveany(max)` and `settimeouts(c, s, r)` (an `ngx.socket.tcp`), and
-- knows nothing of Prefect, TLS, pools or errors objects: failures come back
-- as `nil, message, class` where class is "timeout", "closed", "io",
-- "too_large" or "protocol", and the caller turns them into its own error
-- kinds.
--
-- Every read is bounded while it reads: in bytes (a line never grows past its
-- limit before it is refused) and in time (a read waits at most until the
-- whole request's deadline, or stall_timeout after the last data that
-- counted, whichever comes first). The limits are the curl transport's, with
-- its error kinds and messages, so a hostile server gets the same answer
-- whichever transport reads it (docs/reliability.md lists two differences).
-- @module prefect.transport.ngx_http

local ngx_http = {}

--- Largest response head accepted, in bytes: every status line and header
-- line of the interim 1xx heads and the final one, line ends included. The
-- trailers of a chunked body have the same limit of their own. The curl
-- transport's HTTP_MAX_HEAD_BYTES (csrc/http_internal.h).
ngx_http.MAX_HEAD_BYTES = 256 * 1024
local HEAD_LIMIT_TEXT = "256 KiB"

--- Longest single head, trailer or chunk-size line: libcurl's
-- CURL_MAX_HTTP_HEADER, so a header line that the curl transport refuses is
-- refused here too. (libcurl skips a chunk extension of any length; here a
-- chunk-size line past this limit is refused, since skipping would let a
-- server stream junk at full speed until stall_timeout.)
ngx_http.MAX_LINE_BYTES = 100 * 1024
local LINE_LIMIT_TEXT = "100 KiB"

--- Largest slice handed out by a body reader (bytes).
ngx_http.SLICE = 64 * 1024

-- Most bytes one socket read takes while a line is looked for.
local LINE_READ = 16 * 1024

local function has_ctl(s)
   return s:find("[%z\r\n]") ~= nil
end

--- The request's bytes, or nil and a message when a header name or value
-- would break the framing (CR, LF or NUL; a name with ':' or spaces).
-- `headers` maps names to values; Host, Content-Length and Connection are
-- set here and must not be given.
function ngx_http.build_request(method, host_header, target, headers, body)
   local lines = { method .. " " .. target .. " HTTP/1.1", "Host: " .. host_header }
   local names = {}
   for name in pairs(headers) do
      names[#names + 1] = name
   end
   -- A stable order keeps the bytes on the wire reproducible.
   table.sort(names)
   for _, name in ipairs(names) do
      local value = tostring(headers[name])
      if type(name) ~= "string" or name == "" or name:find("[%c%s:]") then
         return nil, "invalid header name " .. string.format("%q", tostring(name))
      end
      if has_ctl(value) then
         return nil, "header " .. name .. " has a CR, LF or NUL in its value"
      end
      local lower = name:lower()
      if lower ~= "host" and lower ~= "content-length" and lower ~= "connection"
         and lower ~= "transfer-encoding" then
         lines[#lines + 1] = name .. ": " .. value
      end
   end
   if body then
      lines[#lines + 1] = "Content-Length: " .. #body
   elseif method == "POST" or method == "PUT" or method == "PATCH" then
      lines[#lines + 1] = "Content-Length: 0"
   end
   lines[#lines + 1] = "Connection: keep-alive"
   lines[#lines + 1] = ""
   lines[#lines + 1] = body or ""
   return table.concat(lines, "\r\n")
end

local function classify(err)
   if err == "timeout" then
      return "timeout"
   elseif err == "closed" then
      return "closed"
   end
   return "io"
end

-- What a message shows of a line the server sent: its start, quoted.
local function excerpt(line)
   return string.format("%q", line:sub(1, 40))
end

local Stream = {}
Stream.__index = Stream

--- A buffered reader over `sock`, bounded in time by `timing`, a table the
-- caller keeps and may change between reads: `deadline` (absolute seconds,
-- on the clock of `now`), `timeout` (seconds, for messages), `stall`
-- (seconds waited on the socket without data that counts; nil for no
-- limit) and `now` (a function). Only time spent waiting on the socket runs
-- the stall clock: a caller that takes its time between reads is not a
-- stalled server. `stream.got_bytes` tells whether anything at all has
-- arrived.
function ngx_http.stream(sock, timing)
   return setmetatable({
      sock = sock, timing = timing, buf = "", pos = 1, got_bytes = false, waited = 0,
   }, Stream)
end

--- Notes data that counts for stall_timeout: a complete line, or body bytes.
function Stream:progress()
   self.waited = 0
end

--- True when bytes that nobody has read yet are buffered.
function Stream:buffered()
   return self.pos <= #self.buf
end

-- Milliseconds the next socket read may wait, or nil and the message of the limit that has passed.
function Stream:_wait_ms(what)
   local t = self.timing
   local now = t.now()
   local left = t.deadline - now
   if left <= 0 then
      return nil, string.format("timed out after %g s (timeout) %s", t.timeout, what)
   end
   if t.stall then
      local stall_left = t.stall - self.waited
      if stall_left <= 0 then
         return nil, string.format("no data for %g s (stall_timeout) %s", t.stall, what)
      end
      if stall_left < left then
         left = stall_left
      end
   end
   -- one millisecond past the limit, so that it has passed when the read times out
   return math.floor(left * 1000) + 1
end

-- Replaces the buffer with what the socket has next (at most `max` bytes), waiting no longer than
-- the limits allow. true, or nil, message, class.
function Stream:_refill(max, what)
   while true do
      local ms, expired = self:_wait_ms(what)
      if not ms then
         return nil, expired, "timeout"
      end
      self.sock:settimeouts(ms, ms, ms)
      local started = self.timing.now()
      local data, err = self.sock:receiveany(max)
      self.waited = self.waited + (self.timing.now() - started)
      if data then
         self.got_bytes = true
         self.buf, self.pos = data, 1
         return true
      end
      if err ~= "timeout" then
         return nil, what .. ": " .. tostring(err), classify(err)
      end
      -- Timed out: the next round names the limit that passed (or, had the
      -- timer fired a little early, waits out the rest).
   end
end

--- Up to `max` body bytes (at least one): buffered ones, or one socket read.
-- Body bytes count as data. The bytes, or nil, message, class.
function Stream:some(max, what)
   if not self:buffered() then
      local ok, err, class = self:_refill(max, what)
      if not ok then
         return nil, err, class
      end
   end
   local buf, pos = self.buf, self.pos
   local last = pos + max - 1
   if last > #buf then
      last = #buf
   end
   self.pos = last + 1
   self:progress()
   if pos == 1 and last == #buf then
      return buf
   end
   return buf:sub(pos, last)
end

--- The next line, without its LF (and the CR before it), and the bytes it
-- took; or nil, message, class. A line longer than `limit` bytes (its end
-- included) fails with class "too_long" as soon as it passes the limit,
-- before more of it is read, and its first bytes as a fourth value. Only a
-- complete line counts as data.
function Stream:line(limit, what)
   local parts, size = {}, 0
   while true do
      local buf, pos = self.buf, self.pos
      local lf = buf:find("\n", pos, true)
      size = size + (lf or #buf) - pos + 1
      if size > limit then
         return nil, what, "too_long", (parts[1] or buf:sub(pos)):sub(1, 40)
      end
      local last = (lf or #buf + 1) - 1 -- the line's last byte in buf, its LF excluded
      if last >= pos then
         parts[#parts + 1] = buf:sub(pos, last)
      end
      if lf then
         self.pos = lf + 1
         self:progress()
         local line = table.concat(parts)
         if line:sub(-1) == "\r" then
            line = line:sub(1, -2)
         end
         return line, size
      end
      local ok, err, class = self:_refill(LINE_READ, what)
      if not ok then
         return nil, err, class
      end
   end
end

-- The limits' messages for a response head and for trailers.
local HEAD_TEXTS = {
   what = "reading the response head",
   line = "a response header line longer than " .. LINE_LIMIT_TEXT,
   total = "response head larger than " .. HEAD_LIMIT_TEXT .. " (1xx heads included)",
}
local TRAILER_TEXTS = {
   what = "reading the trailers",
   line = "a trailer line longer than " .. LINE_LIMIT_TEXT,
   total = "response trailers larger than " .. HEAD_LIMIT_TEXT,
}

-- The next line of a head (or trailers) whose lines so far took `used`
-- bytes: the line and the bytes used with it, or nil, message, class.
local function head_line(stream, used, texts)
   local room = ngx_http.MAX_HEAD_BYTES - used
   local limit = room < ngx_http.MAX_LINE_BYTES and room or ngx_http.MAX_LINE_BYTES
   local line, size, class, start = stream:line(limit, texts.what)
   if line then
      return line, used + size
   elseif class ~= "too_long" then
      return nil, size, class
   end
   return nil, limit == ngx_http.MAX_LINE_BYTES and texts.line or texts.total, "too_large", start
end

-- "HTTP/1.x DDD reason" (the reason may be empty): the version and the
-- status (100 to 599), or nil.
local function parse_status_line(line)
   local minor, code, rest = line:match("^HTTP/1%.(%d) (%d%d%d)(.*)$")
   if not minor or (rest ~= "" and rest:sub(1, 1) ~= " ") then
      return nil
   end
   local status = tonumber(code)
   if status < 100 or status > 599 then
      return nil
   end
   return "1." .. minor, status
end

-- A Content-Length value: digits, or a list of equal ones (as a header
-- repeated by a proxy may come). The digits, or nil and why not.
local function parse_content_length(value)
   local digits
   for item in (value .. ","):gmatch("([^,]*),") do
      local d = item:match("^[ \t]*0*(%d-)[ \t]*$")
      if not d or not item:find("%d") or #d > 18 then
         return nil, "invalid Content-Length header"
      end
      d = d == "" and "0" or d
      if digits and d ~= digits then
         return nil, "conflicting Content-Length headers"
      end
      digits = d
   end
   return digits
end

-- Adds one header line to `headers`: repeated names are joined with ", ",
-- except Content-Length, which must agree. true, or nil and a message.
local function add_header(headers, line)
   local name, value = line:match("^([^:%s]+):[ \t]*(.-)[ \t]*$")
   if not name then
      return nil, "malformed header line: " .. excerpt(line)
   end
   name = name:lower()
   local prev = headers[name]
   if name == "content-length" then
      local digits, err = parse_content_length(value)
      if digits and prev and prev ~= digits then
         err, digits = "conflicting Content-Length headers", nil
      end
      if not digits then
         return nil, err
      end
      headers[name] = digits
   else
      headers[name] = prev and (prev .. ", " .. value) or value
   end
   return true
end

-- Reads heads until the final one (see read_head).
local function read_heads(stream)
   local used = 0
   while true do
      local line, err, class, start = head_line(stream, used, HEAD_TEXTS)
      if not line and class == "too_large" and not start:find("^HTTP/") then
         -- no head at all (HTTP/0.9, or not HTTP), however long its first line
         return nil, "malformed status line: " .. excerpt(start), "protocol"
      elseif not line then
         return nil, err, class
      end
      used = err
      local version, status = parse_status_line(line)
      if not version then
         return nil, "malformed status line: " .. excerpt(line), "protocol"
      end
      local headers = {}
      while true do
         local h, herr, hclass = head_line(stream, used, HEAD_TEXTS)
         if not h then
            return nil, herr, hclass
         end
         used = herr
         if h == "" then
            break
         end
         local ok, why = add_header(headers, h)
         if not ok then
            return nil, why, "protocol"
         end
      end
      if status >= 200 or status == 101 then
         return { status = status, version = version, headers = headers }
      end
   end
end

--- Reads the status line and headers from `stream`. Returns a head table
-- `{ status = n, version = "1.1", headers = { lowercase = value } }`
-- (repeated headers joined with ", "), or nil, message, class.
-- 1xx interim responses are skipped; their bytes count toward the limit.
-- `stream.got_bytes` then tells whether anything at all arrived (a reused
-- connection that the server had already closed delivers nothing).
function ngx_http.read_head(stream)
   local head, err, class = read_heads(stream)
   if not head and class == "closed" and stream.got_bytes then
      -- a head cut short, or bytes that were never a head (HTTP/0.9)
      return nil, "the connection closed inside the response head", "protocol"
   end
   return head, err, class
end

local function token_list_has(value, token)
   if not value then
      return false
   end
   for item in value:gmatch("[^,]+") do
      if item:match("^%s*(.-)%s*$"):lower() == token then
         return true
      end
   end
   return false
end

-- The chunk size of a chunk-size line ("1a", "1a;name=value"), or nil.
local function parse_chunk_size(line)
   local hex, rest = line:match("^(%x+)[ \t]*(.*)$")
   if not hex or #hex > 15 or (rest ~= "" and rest:sub(1, 1) ~= ";") then
      return nil
   end
   return tonumber(hex, 16)
end

--- A reader for the body of the response described by `head`, read from
-- `stream`: `reader:read()` returns the next slice (a non-empty string),
-- false at the clean end of the body, or nil, message, class.
-- `reader.length` is the announced Content-Length (or nil);
-- `reader.reusable` becomes true when the body ended cleanly on a
-- connection the server keeps open, with nothing after it.
function ngx_http.body_reader(stream, head, method)
   local headers = head.headers
   local reader = { length = nil, reusable = false, received = 0 }
   local keep = head.version == "1.1" and not token_list_has(headers["connection"], "close")

   local mode
   if method == "HEAD" or head.status == 204 or head.status == 304 then
      mode = "none"
   elseif headers["transfer-encoding"] then
      -- Only chunked alone: another coding (gzip, chunked) would hand out coded bytes.
      local te = headers["transfer-encoding"]:lower():gsub("%s", "")
      if te ~= "chunked" then
         return nil, "unsupported Transfer-Encoding: " .. headers["transfer-encoding"], "protocol"
      end
      mode = "chunked"
   elseif headers["content-length"] then
      -- (read_head checked it: digits only)
      local n = tonumber(headers["content-length"])
      reader.length = n
      mode = n == 0 and "none" or "length"
   else
      mode = "close"
      keep = false
   end

   local remaining = reader.length -- bytes left in the body (length) or chunk (chunked)
   local finished = false

   local function done()
      finished = true
      reader.reusable = keep and not stream:buffered()
      return false
   end

   local function read_some(max)
      local data, err, class = stream:some(max, "reading the body")
      if not data then
         return nil, err, class
      end
      reader.received = reader.received + #data
      return data
   end

   local function read_chunk_size()
      local line, err, class = stream:line(ngx_http.MAX_LINE_BYTES, "reading a chunk size")
      if class == "too_long" then
         return nil, "a chunk size line longer than " .. LINE_LIMIT_TEXT, "too_large"
      elseif not line then
         return nil, err, class == "closed" and "protocol" or class
      end
      local size = parse_chunk_size(line)
      if not size then
         return nil, "bad chunk size line: " .. excerpt(line), "protocol"
      end
      return size
   end

   local function read_chunk_end()
      local line, err, class = stream:line(2, "reading a chunk end")
      if line == "" then
         return true
      elseif line or class == "too_long" then
         return nil, "chunk not followed by CRLF", "protocol"
      end
      return nil, err, class == "closed" and "protocol" or class
   end

   local function read_trailers()
      local used = 0
      while true do
         local line, err, class = head_line(stream, used, TRAILER_TEXTS)
         if not line then
            return nil, err, class == "closed" and "protocol" or class
         end
         used = err
         if line == "" then
            return done()
         end
      end
   end

   local function read_chunked()
      if not remaining or remaining == 0 then
         if remaining == 0 then
            local ok, err, class = read_chunk_end()
            if not ok then
               return nil, err, class
            end
         end
         local size, err, class = read_chunk_size()
         if not size then
            return nil, err, class
         end
         if size == 0 then
            return read_trailers()
         end
         remaining = size
      end
      local data, err, class = read_some(remaining < ngx_http.SLICE and remaining or ngx_http.SLICE)
      if not data then
         if class == "closed" then
            return nil, "connection closed inside a chunk", "protocol"
         end
         return nil, err, class
      end
      remaining = remaining - #data
      return data
   end

   function reader.read()
      if finished then
         return false
      end
      if mode == "none" then
         return done()
      elseif mode == "length" then
         local data, err, class = read_some(remaining < ngx_http.SLICE and remaining or ngx_http.SLICE)
         if not data then
            if class == "closed" then
               return nil, string.format("connection closed after %d of %d body bytes",
                  reader.received, reader.length), "protocol"
            end
            return nil, err, class
         end
         remaining = remaining - #data
         if remaining == 0 then
            done()
         end
         return data
      elseif mode == "close" then
         local data, err, class = read_some(ngx_http.SLICE)
         if not data then
            if class == "closed" then
               return done()
            end
            return nil, err, class
         end
         return data
      end
      return read_chunked()
   end

   return reader
end

-- gzip/deflate content coding through zlib, which every nginx links, reached
-- with LuaJIT's FFI. Loaded on first use; nil when unavailable.
local zlib

local Z_OK, Z_STREAM_END, Z_BUF_ERROR = 0, 1, -5
local INFLATE_CHUNK = 64 * 1024

local function load_zlib()
   if zlib ~= nil then
      return zlib or nil
   end
   zlib = false
   local ok_ffi, ffi = pcall(require, "ffi")
   if not ok_ffi then
      return nil
   end
   -- Names of our own (the asm labels give the real symbols), so that another
   -- library's declarations of z_stream or inflate cannot clash with these.
   local ok = pcall(ffi.cdef, [[
      typedef struct prefect_z_stream {
         const unsigned char *next_in; unsigned int avail_in; unsigned long total_in;
         unsigned char *next_out; unsigned int avail_out; unsigned long total_out;
         const char *msg; void *state; void *zalloc; void *zfree; void *opaque;
         int data_type; unsigned long adler; unsigned long reserved;
      } prefect_z_stream;
      int prefect_inflateInit2_(prefect_z_stream *, int, const char *, int) __asm__("inflateInit2_");
      int prefect_inflate(prefect_z_stream *, int) __asm__("inflate");
      int prefect_inflateEnd(prefect_z_stream *) __asm__("inflateEnd");
      const char *prefect_zlibVersion(void) __asm__("zlibVersion");
   ]])
   if not ok then
      return nil
   end
   -- Through ffi.C, never ffi.load: a library object may be unloaded at
   -- lua_close before the finalizers that still call into it. nginx links zlib,
   -- so its symbols are usually there already; else dlopen it for good.
   local lib = ffi.C
   if not pcall(function()
      return lib.prefect_inflate
   end) then
      pcall(ffi.cdef, "void *dlopen(const char *, int);")
      local RTLD_NOW, RTLD_GLOBAL = 2, 0x100
      local dok, handle = pcall(function()
         return lib.dlopen("libz.so.1", RTLD_NOW + RTLD_GLOBAL)
      end)
      if not dok or handle == nil then
         return nil
      end
   end
   local fns = {}
   for _, fname in ipairs({ "inflateInit2_", "inflate", "inflateEnd", "zlibVersion" }) do
      local fok, fn = pcall(function()
         return lib["prefect_" .. fname]
      end)
      if not fok then
         return nil
      end
      fns[fname] = fn
   end
   fns.ffi = ffi
   zlib = fns
   return zlib
end

--- True when responses can be gzip-decoded here (so Accept-Encoding may be sent).
function ngx_http.can_inflate()
   return load_zlib() ~= nil
end

--- An inflater for a gzip or zlib-deflate body, or nil, message.
-- `inflater:feed(bytes, sink)` calls sink(piece) for each decoded piece
-- (at most 64 KiB, so a compression bomb never sits in memory at once) and
-- returns true, or nil, message; a sink returning nil, message stops it.
-- `inflater.ended` is true once the compressed stream is complete.
function ngx_http.inflater()
   local z = load_zlib()
   if not z then
      return nil, "zlib is not available to LuaJIT's FFI"
   end
   local ffi = z.ffi
   local stream = ffi.new("prefect_z_stream[1]")
   -- 15 + 32: the largest window, with gzip or zlib header detected.
   if z.inflateInit2_(stream, 15 + 32, z.zlibVersion(), ffi.sizeof("prefect_z_stream")) ~= Z_OK then
      return nil, "inflateInit2 failed"
   end
   stream = ffi.gc(stream, function(st)
      z.inflateEnd(st)
   end)
   local out = ffi.new("unsigned char[?]", INFLATE_CHUNK)
   local self = { ended = false }
   function self.feed(_, bytes, sink)
      if self.ended then
         return true -- what follows a complete stream is ignored, as zlib-based clients do
      end
      local st = stream[0]
      st.next_in = bytes
      st.avail_in = #bytes
      repeat
         st.next_out = out
         st.avail_out = INFLATE_CHUNK
         local rc = z.inflate(stream, 0)
         if rc ~= Z_OK and rc ~= Z_STREAM_END and rc ~= Z_BUF_ERROR then
            local msg = st.msg ~= nil and ffi.string(st.msg) or ("zlib error " .. rc)
            return nil, "bad compressed body: " .. msg
         end
         local produced = INFLATE_CHUNK - st.avail_out
         if produced > 0 then
            local ok, err = sink(ffi.string(out, produced))
            if not ok then
               return nil, err
            end
         end
         if rc == Z_STREAM_END then
            self.ended = true
            break
         end
         if rc == Z_BUF_ERROR and st.avail_in == 0 then
            break
         end
      until st.avail_out ~= 0 and st.avail_in == 0
      -- `bytes` stays referenced by this frame until zlib is done with it.
      st.next_in = nil
      return true
   end
   return self
end

return ngx_http
