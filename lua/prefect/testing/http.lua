--- HTTP/1.1 wire format for the test server: reading one request from a connection, writing the status
-- line and headers, chunk framing, dates. Knows nothing of Prefect or of faults.
-- @module prefect.testing.http

local http = {}

http.REASONS = {
   [100] = "Continue", [200] = "OK", [201] = "Created", [204] = "No Content",
   [301] = "Moved Permanently", [302] = "Found", [304] = "Not Modified",
   [307] = "Temporary Redirect", [308] = "Permanent Redirect",
   [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
   [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict", [411] = "Length Required",
   [413] = "Request Entity Too Large", [415] = "Unsupported Media Type",
   [422] = "Unprocessable Entity", [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
   [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
   [503] = "Service Unavailable", [504] = "Gateway Timeout", [505] = "HTTP Version Not Supported",
}

--- An HTTP-date (RFC 9110 IMF-fixdate) for epoch seconds `t`.
function http.date(t)
   return os.date("!%a, %d %b %Y %H:%M:%S GMT", math.floor(t))
end

-- RFC 9110 token characters.
local TOKEN = "^[!#$%%&'*+%-.^_`|~%w]+$"

-- A request that cannot be served: the status to answer with, and a short reason.
local function refuse(status, message)
   return nil, { status = status, message = message }
end

--- Parses a request head (request line and header lines, without the blank line).
-- Returns req = { method, target, path, query, version = "1.0"|"1.1", headers = {lowercase -> value} }
-- or nil, {status, message}.
function http.parse_head(head)
   head = head:gsub("^[\r\n]+", "") -- RFC 9112 2.2: ignore empty lines before the request line
   local line_end = head:find("\n", 1, true)
   local request_line = (line_end and head:sub(1, line_end - 1) or head):gsub("\r$", "")
   local method, target, minor = request_line:match("^(%S+) (%S+) HTTP/1%.([01])$")
   if not method then
      if request_line:match("^%S+ %S+ HTTP/%d") then return refuse(505, "HTTP version not supported") end
      return refuse(400, "malformed request line")
   end
   if not method:match(TOKEN) then return refuse(400, "malformed method") end
   if target:sub(1, 1) ~= "/" or target:find("[%z\1-\32\127]") then
      return refuse(400, "malformed request target")
   end

   local headers = {}
   if line_end then
      for line in (head:sub(line_end + 1) .. "\n"):gmatch("([^\n]*)\n") do
         line = line:gsub("\r$", "")
         local name, value = line:match("^([^:]+):(.*)$")
         if not name or not name:match(TOKEN) then return refuse(400, "malformed header line") end
         value = value:match("^[ \t]*(.-)[ \t]*$")
         if value:find("[%z\r\n]") then return refuse(400, "malformed header value") end
         name = name:lower()
         local previous = headers[name]
         if previous then
            if name == "content-length" and previous ~= value then
               return refuse(400, "conflicting Content-Length headers")
            end
            if name ~= "content-length" then headers[name] = previous .. ", " .. value end
         else
            headers[name] = value
         end
      end
   end

   local path, query = target:match("^([^?]*)%??(.*)$")
   return {
      method = method,
      target = target,
      path = path,
      query = query,
      version = "1." .. minor,
      headers = headers,
   }
end

--- Whether a comma-separated header value lists `token` (case-insensitive).
function http.has_token(value, token)
   if not value then return false end
   token = token:lower()
   for item in value:gmatch("[^,]+") do
      if item:match("^%s*(.-)%s*$"):lower() == token then return true end
   end
   return false
end

--- Whether the client takes gzip: listed in Accept-Encoding without q=0.
function http.accepts_gzip(value)
   if not value then return false end
   for item in value:gmatch("[^,]+") do
      local coding, params = item:match("^%s*([^;%s]+)%s*(.-)%s*$")
      if coding and (coding:lower() == "gzip" or coding == "*") then
         local q = params:match("[qQ]%s*=%s*([%d.]+)")
         return not q or tonumber(q) ~= 0
      end
   end
   return false
end

--- Whether the connection stays open after this request.
function http.keep_alive(req)
   local connection = req.headers.connection
   if http.has_token(connection, "close") then return false end
   if req.version == "1.0" then return http.has_token(connection, "keep-alive") end
   return true
end

--- How the request body is framed: "none", "length", n or "chunked"; or nil, {status, message}.
function http.body_framing(req, max_body)
   local te = req.headers["transfer-encoding"]
   local cl = req.headers["content-length"]
   if te then
      if cl then return refuse(400, "both Transfer-Encoding and Content-Length") end
      if te:lower() ~= "chunked" then return refuse(501, "unsupported Transfer-Encoding") end
      return "chunked"
   end
   if cl then
      if not cl:match("^%d+$") then return refuse(400, "malformed Content-Length") end
      if #cl > 15 or tonumber(cl) > max_body then return refuse(413, "request body too large") end
      return "length", tonumber(cl)
   end
   return "none"
end

--- Reads a chunked request body (and its trailers) from `conn`; returns the decoded body.
function http.read_chunked(conn, max_body, deadline)
   local pieces, total = {}, 0
   while true do
      local line, err = conn:read_until("\r?\n", 1024, deadline)
      if not line then
         if err == "too_large" then return refuse(400, "malformed chunk size") end
         return nil, err
      end
      local hex = line:match("^(%x+)%s*;?.*$")
      if not hex or #hex > 8 then return refuse(400, "malformed chunk size") end
      local size = tonumber(hex, 16)
      if size == 0 then break end
      total = total + size
      if total > max_body then return refuse(413, "request body too large") end
      local data, derr = conn:read_exact(size, deadline)
      if not data then return nil, derr end
      pieces[#pieces + 1] = data
      local crlf, cerr = conn:read_until("\r?\n", 2, deadline)
      if not crlf then return nil, cerr == "too_large" and { status = 400 } or cerr end
      if crlf ~= "" then return refuse(400, "malformed chunk") end
   end
   -- Trailer fields end at an empty line; they are read and dropped.
   local trailer_bytes = 0
   while true do
      local line, err = conn:read_until("\r?\n", 8192, deadline)
      if not line then return nil, err == "too_large" and { status = 431 } or err end
      if line == "" then break end
      trailer_bytes = trailer_bytes + #line
      if trailer_bytes > 65536 then return refuse(431, "trailers too large") end
   end
   return table.concat(pieces)
end

--- The status line and header block for a response. `headers` is a list of {name, value} pairs;
-- `status_line` (optional, without CRLF) replaces the status line made from `status`.
function http.head(status, headers, status_line)
   local lines = { (status_line or ("HTTP/1.1 %d %s"):format(status, http.REASONS[status] or "Unknown"))
      .. "\r\n" }
   for _, h in ipairs(headers) do
      lines[#lines + 1] = h[1] .. ": " .. h[2] .. "\r\n"
   end
   lines[#lines + 1] = "\r\n"
   return table.concat(lines)
end

--- One chunk's framing around `n` bytes of data: the size line (the data and "\r\n" follow).
function http.chunk_size_line(n)
   return ("%x\r\n"):format(n)
end

http.LAST_CHUNK = "0\r\n\r\n"

return http
