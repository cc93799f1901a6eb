-- luacheck: read globals ngx
--- The peer inside OpenResty: one page of task runs read the way a handler is written by hand,
-- with ngx.socket.tcp, a hand-written HTTP/1.1 request, nginx's keepalive pool, lua-zlib for a
-- gzip body and cjson.decode of the whole body once it is in.
--   read(host, port, path, gzip) --> status, runs | nil, err
local cjson = require("cjson")
local zlib = require("zlib")

local BODY = '{"sort":"ID_DESC","limit":200,"offset":0}'

local function read_chunked(sock)
   local parts = {}
   while true do
      local line, err = sock:receive("*l")
      if not line then return nil, err end
      local size = tonumber(line:match("^%x+"), 16)
      if not size then return nil, "bad chunk size" end
      if size == 0 then
         repeat -- trailers, up to the empty line
            line, err = sock:receive("*l")
            if not line then return nil, err end
         until line == ""
         return table.concat(parts)
      end
      local chunk
      chunk, err = sock:receive(size)
      if not chunk then return nil, err end
      parts[#parts + 1] = chunk
      sock:receive(2)
   end
end

local function read(host, port, path, gzip)
   local sock = ngx.socket.tcp()
   sock:settimeout(10000)
   local ok, err = sock:connect(host, port)
   if not ok then return nil, err end
   ok, err = sock:send(table.concat({
      "POST ", path, " HTTP/1.1\r\nHost: ", host, ":", port,
      "\r\nContent-Type: application/json\r\nContent-Length: ", #BODY,
      gzip and "\r\nAccept-Encoding: gzip" or "", "\r\n\r\n", BODY,
   }))
   if not ok then return nil, err end
   local line
   line, err = sock:receive("*l")
   if not line then return nil, err end
   local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
   local length, chunked, encoding, close
   while true do
      line, err = sock:receive("*l")
      if not line then return nil, err end
      if line == "" then break end
      local name, value = line:match("^([^:]+):%s*(.-)%s*$")
      name = name and name:lower()
      if name == "content-length" then
         length = tonumber(value)
      elseif name == "transfer-encoding" then
         chunked = value:lower():find("chunked", 1, true) ~= nil
      elseif name == "content-encoding" then
         encoding = value:lower()
      elseif name == "connection" then
         close = value:lower() == "close"
      end
   end
   local data
   if chunked then
      data, err = read_chunked(sock)
   elseif length then
      data, err = sock:receive(length)
   else
      data, err, close = sock:receive("*a"), nil, true
   end
   if not data then return nil, err end
   if encoding == "gzip" then data = zlib.inflate()(data) end
   if close then sock:close() else sock:setkeepalive(60000, 32) end
   return status, cjson.decode(data)
end

return { name = "ngx.socket.tcp+cjson", read = read }
