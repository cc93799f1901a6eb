-- The test server's HTTP side over real sockets: framing, keep-alive, concurrency, limits, gzip, the
-- test endpoints, every fault, TLS, and the launcher's own behaviour. Most tests use a small app defined
-- here (ECHO_APP) so that what the client sent and what it got back can be compared byte for byte.

local socket = require("socket")
local cjson = require("cjson")
local zlib = require("zlib")
local test_server = require("test_server")
local disk = require("disk")

local LUA = os.getenv("PREFECT_TEST_LUA") or "lua5.4"
local unpack = table.unpack or unpack -- luacheck: ignore

-- Runs in the server process (--app-file).
local ECHO_APP = [[
local cjson = require("cjson")
return function()
   return { handle = function(_, req)
      local n = tonumber((req.query or ""):match("n=(%d+)"))
      if req.path == "/api/echo" then
         return 200, { ["Content-Type"] = "application/octet-stream" }, req.body or ""
      elseif req.path == "/api/size" then
         return 200, { ["Content-Type"] = "application/json" }, '"' .. string.rep("a", n - 2) .. '"'
      elseif req.path == "/api/pieces" then
         local pieces = {}
         for i = 1, n do pieces[i] = ("%06d,"):format(i) end
         return 200, { ["Content-Type"] = "text/plain" }, pieces
      elseif req.path == "/api/stream" then
         local i = 0
         return 200, { ["Content-Type"] = "text/plain" }, function()
            i = i + 1
            if i <= n then return ("%06d,"):format(i) end
         end
      elseif req.path == "/api/boom" then
         error("boom")
      end
      return 200, { ["Content-Type"] = "application/json" }, cjson.encode{
         method = req.method, path = req.path, query = req.query, headers = req.headers,
         body_length = #(req.body or ""),
      }
   end }
end
]]

local function connect(srv, timeout)
   local sock = socket.tcp()
   sock:settimeout(timeout or 5)
   assert(sock:connect("127.0.0.1", srv.port))
   return sock
end

local function request_text(method, path, headers, body)
   local lines = { ("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"):format(method, path) }
   for _, h in ipairs(headers or {}) do lines[#lines + 1] = h .. "\r\n" end
   if body then lines[#lines + 1] = "Content-Length: " .. #body .. "\r\n" end
   lines[#lines + 1] = "\r\n"
   lines[#lines + 1] = body or ""
   return table.concat(lines)
end

local read_response = test_server.read_response

-- One request on an open connection.
local function roundtrip(sock, method, path, headers, body)
   assert(sock:send(request_text(method, path, headers, body)))
   return read_response(sock)
end

-- True when the peer closed in order (end of file), false on a reset, nil if still open after `wait`.
-- luasocket reports both ends as "closed"; after a reset, though, the next send fails at once.
local function closed_in_order(sock, wait)
   sock:settimeout(wait or 2)
   local data, err, partial = sock:receive("*a")
   if data then return data == "" end
   if err == "timeout" then return nil end
   return partial == "" and sock:send("\r\n") ~= nil
end

local function gunzip(data)
   return (zlib.inflate(31)(data))
end

local function elapsed(fn)
   local t = socket.gettime()
   local a, b, c = fn()
   return socket.gettime() - t, a, b, c
end

local function peak_memory_kb(pid)
   local status = disk.read("/proc/" .. pid .. "/status") or ""
   return tonumber(status:match("VmHWM:%s*(%d+)"))
end

describe("test server over HTTP", function()
   local dir, app_file, srv
   setup(function()
      dir = disk.tmpdir()
      app_file = dir .. "/echo_app.lua"
      disk.write(app_file, ECHO_APP)
      srv = test_server.start{ app_file = app_file }
   end)
   teardown(function()
      if srv then srv:stop() end
      disk.remove_tree(dir)
   end)
   before_each(function() srv:reset() end)

   describe("launcher", function()
      it("prints exactly one line naming the URL, on 127.0.0.1 and a free port", function()
         assert.matches("^http://127%.0%.0%.1:%d+/api$", srv.url)
         assert.is_true(srv.port > 0)
         assert.equals("listening " .. srv.url .. "\n", disk.read(srv.files.out))
      end)

      it("prints usage for --help and refuses other hosts than loopback", function()
         local cmd = ("%s %s"):format(LUA, test_server.LAUNCHER)
         local p = io.popen(cmd .. " --help 2>&1; echo rc=$?")
         local out = p:read("*a")
         p:close()
         assert.matches("usage: prefect%-test%-server", out)
         assert.matches("rc=0\n$", out)
         p = io.popen(cmd .. " --host 0.0.0.0 2>&1; echo rc=$?")
         out = p:read("*a")
         p:close()
         assert.matches("--host must be", out, 1, true)
         assert.matches("rc=2\n$", out)
      end)

      it("writes --port-file and takes --base-path", function()
         local port_file = dir .. "/port"
         local other = test_server.start{ app_file = app_file, base_path = "/custom/api",
            args = { "--port-file", port_file } }
         finally(function() other:stop() end)
         assert.equals(other.port .. "\n", disk.read(port_file))
         assert.matches("/custom/api$", other.url)
         local status, _, body = other:request{ path = "/custom/api/x" }
         assert.equals(200, status)
         assert.equals("/custom/api/x", cjson.decode(body).path)
      end)

      it("reports a start-up failure with the server's message", function()
         local ok, err = pcall(test_server.start, { dataset = dir .. "/missing.json" })
         assert.is_false(ok)
         assert.matches("did not start", err)
         assert.matches("missing.json", err)
      end)

      it("stops on SIGTERM and frees the port", function()
         local other = test_server.start{ app_file = app_file }
         local pid, port = other.pid, other.port
         other:stop()
         assert.is_nil(disk.read("/proc/" .. pid .. "/stat"))
         local sock = socket.tcp()
         sock:settimeout(1)
         assert.is_nil(sock:connect("127.0.0.1", port))
         sock:close()
      end)

      it("exits when standard input reaches end of file under --stdin-watch", function()
         local fifo, pid_file = dir .. "/stdin", dir .. "/pid"
         assert(os.execute("mkfifo '" .. fifo .. "'"))
         -- Started in the background, not as our child, so nothing here waits for it.
         assert(os.execute(("(%s %s --app-file '%s' --stdin-watch < '%s' > /dev/null 2>&1 & echo $! > '%s')")
            :format(LUA, test_server.LAUNCHER, app_file, fifo, pid_file)))
         local writer = assert(io.open(fifo, "w")) -- blocks until the server has opened it
         local pid = tonumber((disk.read(pid_file)))
         socket.sleep(0.3)
         local stat = disk.read("/proc/" .. pid .. "/stat")
         assert.truthy(stat and not stat:match("^%d+ %b() Z"), "server runs while the pipe is open")
         writer:close()
         local gone = false
         for _ = 1, 100 do
            stat = disk.read("/proc/" .. pid .. "/stat")
            if not stat or stat:match("^%d+ %b() Z") then
               gone = true
               break
            end
            socket.sleep(0.05)
         end
         if not gone then os.execute("kill " .. pid) end
         assert.is_true(gone)
      end)
   end)

   describe("HTTP/1.1", function()
      it("keeps a connection alive and counts it once", function()
         local sock = connect(srv)
         finally(function() sock:close() end)
         for i = 1, 3 do
            local status, headers, body = roundtrip(sock, "GET", "/api/n" .. i)
            assert.equals(200, status)
            assert.equals(tostring(#body), headers["content-length"])
            assert.equals("/api/n" .. i, cjson.decode(body).path)
         end
         local stats = srv:stats()
         assert.equals(1, stats.connections)
         assert.equals(3, stats.requests)
         -- looking at the stats does not change them
         assert.same(stats, srv:stats())
      end)

      it("honours Connection: close", function()
         local sock = connect(srv)
         finally(function() sock:close() end)
         local status, headers = roundtrip(sock, "GET", "/api/x", { "Connection: close" })
         assert.equals(200, status)
         assert.equals("close", headers.connection)
         assert.is_true(closed_in_order(sock))
      end)

      it("closes after an HTTP/1.0 request unless it asks for keep-alive", function()
         local sock = connect(srv)
         finally(function() sock:close() end)
         sock:send("GET /api/old HTTP/1.0\r\n\r\n")
         assert.equals(200, (read_response(sock)))
         assert.is_true(closed_in_order(sock))
      end)

      it("never sends chunked framing to an HTTP/1.0 client", function()
         local sock = connect(srv)
         finally(function() sock:close() end)
         sock:send("GET /api/stream?n=10 HTTP/1.0\r\nX-Test-Fault: chunked\r\n\r\n")
         local status, headers, body = read_response(sock)
         assert.equals(200, status)
         assert.is_nil(headers["transfer-encoding"])
         assert.equals("000001,000002,000003,000004,000005,000006,000007,000008,000009,000010,", body)
      end)

      it("answers pipelined requests in order", function()
         local sock = connect(srv)
         finally(function() sock:close() end)
         sock:send(request_text("GET", "/api/first") .. request_text("POST", "/api/echo", nil, "second"))
         local _, _, first = read_response(sock)
         local _, _, second = read_response(sock)
         assert.equals("/api/first", cjson.decode(first).path)
         assert.equals("second", second)
      end)

      it("reads request bodies by Content-Length, in any number of pieces", function()
         local body = string.rep("0123456789", 200000) -- 2 MB
         local sock = connect(srv)
         finally(function() sock:close() end)
         local text = request_text("POST", "/api/echo", nil, body)
         for i = 1, #text, 700001 do
            assert(sock:send(text, i, math.min(i + 700000, #text)))
            socket.sleep(0.01)
         end
         local status, _, echoed = read_response(sock)
         assert.equals(200, status)
         assert.equals(body, echoed)
      end)

      it("reads chunked request bodies, with extensions and trailers", function()
         local sock = connect(srv)
         finally(function() sock:close() end)
         sock:send("POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            .. "5;name=value\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: 1\r\n\r\n")
         local status, _, body = read_response(sock)
         assert.equals(200, status)
         assert.equals("hello world!", body)
         -- and the connection is still good
         assert.equals(200, (roundtrip(sock, "GET", "/api/after")))
      end)

      it("answers Expect: 100-continue before the body is sent", function()
         local sock = connect(srv)
         finally(function() sock:close() end)
         sock:send("POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
         assert.equals("HTTP/1.1 100 Continue", sock:receive("*l"))
         assert.equals("", sock:receive("*l"))
         sock:send("data")
         local status, _, body = read_response(sock)
         assert.equals(200, status)
         assert.equals("data", body)
      end)

      it("sends the app's array of pieces as one body with its length", function()
         local status, headers, body = srv:request{ path = "/api/pieces?n=50000" }
         assert.equals(200, status)
         assert.equals(350000, #body)
         assert.equals("350000", headers["content-length"])
         assert.equals("000001,", body:sub(1, 7))
         assert.equals("050000,", body:sub(-7))
      end)

      it("streams a body the app gives as a generator, chunked", function()
         local status, headers, body = srv:request{ path = "/api/stream?n=20000" }
         assert.equals(200, status)
         assert.equals("chunked", headers["transfer-encoding"])
         assert.equals(140000, #body)
         assert.equals("020000,", body:sub(-7))
      end)

      it("answers HEAD with the length and no body", function()
         local sock = connect(srv)
         finally(function() sock:close() end)
         sock:send("HEAD /api/size?n=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
         assert.equals("HTTP/1.1 200 OK", sock:receive("*l"))
         local length
         repeat
            local line = sock:receive("*l")
            length = length or line:match("^content%-length: (%d+)")
         until line == ""
         assert.equals("1000", length)
         assert.equals(200, (roundtrip(sock, "GET", "/api/next"))) -- no stray body bytes in between
      end)

      it("closes connections idle longer than the keep-alive timeout", function()
         local other = test_server.start{ app_file = app_file, keepalive_timeout = 0.3 }
         finally(function() other:stop() end)
         local sock = connect(other)
         finally(function() sock:close() end)
         assert.equals(200, (roundtrip(sock, "GET", "/api/x")))
         assert.is_true(closed_in_order(sock, 3))
      end)

      it("answers a Lua error in the app with 500 and goes on serving", function()
         local status, _, body = srv:request{ path = "/api/boom" }
         assert.equals(500, status)
         assert.equals("Internal Server Error", cjson.decode(body).exception_message)
         assert.equals(200, (srv:request{ path = "/api/x" }))
      end)
   end)

   describe("gzip", function()
      it("compresses bodies of 500 bytes or more when the client accepts gzip", function()
         local status, headers, body = srv:request{ path = "/api/size?n=500",
            headers = { ["Accept-Encoding"] = "deflate, gzip" } }
         assert.equals(200, status)
         assert.equals("gzip", headers["content-encoding"])
         assert.equals(tostring(#body), headers["content-length"])
         assert.equals('"' .. string.rep("a", 498) .. '"', gunzip(body))
      end)

      it("leaves small bodies, and clients that refuse gzip, alone", function()
         local function get(path, accept)
            return srv:request{ path = path, headers = { ["Accept-Encoding"] = accept } }
         end
         local _, headers, body = get("/api/size?n=499", "gzip")
         assert.is_nil(headers["content-encoding"])
         assert.equals(499, #body)
         _, headers, body = get("/api/size?n=5000", "gzip;q=0")
         assert.is_nil(headers["content-encoding"])
         assert.equals(5000, #body)
         _, headers = srv:request{ path = "/api/size?n=5000" }
         assert.is_nil(headers["content-encoding"])
      end)
   end)

   describe("concurrency", function()
      it("serves a second connection while the first stays open", function()
         local first = connect(srv)
         finally(function() first:close() end)
         assert.equals(200, (roundtrip(first, "GET", "/api/one")))
         local second = connect(srv)
         finally(function() second:close() end)
         local took, status = elapsed(function() return roundtrip(second, "GET", "/api/two") end)
         assert.equals(200, status)
         assert.is_true(took < 0.5)
         assert.equals(200, (roundtrip(first, "GET", "/api/one-again")))
         assert.equals(2, srv:stats().connections)
      end)

      it("is not held up by a client that sends half a request", function()
         local slow = connect(srv)
         finally(function() slow:close() end)
         slow:send("POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-")
         local took, status = elapsed(function() return srv:request{ path = "/api/quick" } end)
         assert.equals(200, status)
         assert.is_true(took < 0.5)
         slow:send("Length: 2\r\n\r\nok")
         local _, _, body = read_response(slow)
         assert.equals("ok", body)
      end)

      it("handles many connections at once", function()
         local socks = {}
         finally(function() for _, s in ipairs(socks) do s:close() end end)
         for i = 1, 60 do
            socks[i] = connect(srv)
            socks[i]:send(request_text("POST", "/api/echo", nil, "n" .. i))
         end
         for i = 1, 60 do
            local status, _, body = read_response(socks[i])
            assert.equals(200, status)
            assert.equals("n" .. i, body)
         end
         assert.equals(60, srv:stats().connections)
      end)
   end)

   describe("bad input", function()
      local function send_raw(text)
         local sock = connect(srv)
         sock:send(text)
         local status, headers, body = read_response(sock)
         local orderly = closed_in_order(sock)
         sock:close()
         return status, headers, body, orderly
      end

      it("answers garbage with 400 and closes", function()
         local status, headers, _, orderly = send_raw("\0\1\2 this is not HTTP\r\n\r\n")
         assert.equals(400, status)
         assert.equals("close", headers.connection)
         assert.is_true(orderly)
      end)

      for _, case in ipairs{
         { "a malformed header line", "GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400 },
         { "a folded header", "GET / HTTP/1.1\r\nA: b\r\n  folded\r\n\r\n", 400 },
         { "a bad Content-Length", "POST / HTTP/1.1\r\nContent-Length: 12x\r\n\r\n", 400 },
         { "two different Content-Lengths",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400 },
         { "both Content-Length and chunked",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400 },
         { "an unknown transfer coding", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501 },
         { "a bad chunk size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400 },
         { "an unknown HTTP version", "GET / HTTP/2.0\r\n\r\n", 505 },
         { "a target that is not a path", "GET http://example.com/ HTTP/1.1\r\n\r\n", 400 },
      } do
         it("answers " .. case[1] .. " with " .. case[3], function()
            local status, _, _, orderly = send_raw(case[2])
            assert.equals(case[3], status)
            assert.is_true(orderly)
         end)
      end

      it("answers headers over 64 KB with 431", function()
         local status = send_raw("GET / HTTP/1.1\r\nX-Big: " .. string.rep("a", 70000) .. "\r\n\r\n")
         assert.equals(431, status)
      end)

      it("refuses a body over 10 MB with 413 without reading it", function()
         local status = send_raw("POST /api/echo HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n")
         assert.equals(413, status)
         status = send_raw("POST /api/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nA00001\r\n")
         assert.equals(413, status)
      end)

      it("survives a few hundred mangled requests", function()
         local base = request_text("POST", "/api/echo?a=1", { "Transfer-Encoding: chunked", "X-A: b" })
            .. "5\r\nhello\r\n0\r\n\r\n"
         local seed = 12345
         local function random(n) -- a small LCG: the same cases under every interpreter
            seed = (seed * 1103515245 + 12345) % 2147483648
            return seed % n + 1
         end
         for _ = 1, 300 do
            local bytes = { base:byte(1, -1) }
            for _ = 1, random(8) do bytes[random(#bytes)] = random(256) - 1 end
            local text = string.char(unpack(bytes)):sub(1, random(#bytes))
            local sock = connect(srv)
            sock:send(text)
            sock:settimeout(0.01)
            sock:receive("*a")
            sock:close()
         end
         assert.equals(200, (srv:request{ path = "/api/x" }))
         assert.is_true(srv:alive())
         assert.is_nil(srv:stderr():find("failed", 1, true))
      end)

      it("survives clients that vanish mid-request", function()
         local partial = { "GET /api/x HTT", "POST /api/echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc" }
         for _, text in ipairs(partial) do
            local sock = connect(srv)
            sock:send(text)
            sock:close()
         end
         assert.equals(200, (srv:request{ path = "/api/x" }))
      end)
   end)

   describe("test endpoints", function()
      it("count connections and requests, and reset zeroes them", function()
         -- A server of its own: the shared one may still be taking in connections that earlier
         -- specs dropped half-way, and those would count here.
         local own = test_server.start{ app_file = app_file }
         finally(function() own:stop() end)
         for _ = 1, 2 do own:request{ path = "/api/x" } end
         local stats = own:stats()
         assert.equals(2, stats.connections)
         assert.equals(2, stats.requests)
         own:reset()
         stats = own:stats()
         assert.equals(0, stats.connections)
         assert.equals(0, stats.requests)
      end)

      it("live outside the base path and check the method", function()
         assert.equals(405, (srv:request{ method = "POST", path = "/__test/stats" }))
         assert.equals(405, (srv:request{ method = "GET", path = "/__test/reset" }))
         assert.equals(404, (srv:request{ path = "/__test/other" }))
      end)
   end)

   describe("faults", function()
      local function fault(text, path)
         return srv:request{ path = path or "/api/x", headers = { ["X-Test-Fault"] = text } }
      end

      for _, code in ipairs{ 408, 500, 502, 503 } do
         it("status=" .. code .. " answers " .. code .. " with a JSON body", function()
            local status, headers, body = fault("status=" .. code)
            assert.equals(code, status)
            assert.equals("application/json", headers["content-type"])
            assert.is_table(cjson.decode(body))
         end)
      end

      it("status=429 sends Retry-After in seconds or as an HTTP date", function()
         local status, headers = fault("status=429; retry_after=2")
         assert.equals(429, status)
         assert.equals("2", headers["retry-after"])
         status, headers = fault("status=429; retry_after=1.5")
         assert.equals(429, status)
         assert.equals("1.5", headers["retry-after"])
         status, headers = fault("status=429; retry_after_date=2")
         assert.equals(429, status)
         local d, mon, y, hh, mm, ss = headers["retry-after"]:match(
            "^%a%a%a, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
         assert.truthy(d, headers["retry-after"])
         local months = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9,
            Oct = 10, Nov = 11, Dec = 12 }
         -- seconds since the epoch of that UTC date, without relying on the local time zone
         local function days(yy, m, dd)
            if m <= 2 then yy, m = yy - 1, m + 12 end
            return 365 * yy + math.floor(yy / 4) - math.floor(yy / 100) + math.floor(yy / 400)
               + math.floor((153 * (m - 3) + 2) / 5) + dd - 719469
         end
         local t = days(tonumber(y), months[mon], tonumber(d)) * 86400 + hh * 3600 + mm * 60 + ss
         assert.is_true(t >= os.time() + 1 and t <= os.time() + 3)
      end)

      it("delay_ms holds the answer back without holding up other clients", function()
         local slow = connect(srv)
         finally(function() slow:close() end)
         local started = socket.gettime()
         slow:send(request_text("GET", "/api/x", { "X-Test-Fault: delay_ms=1000" }))
         local took, status = elapsed(function() return srv:request{ path = "/api/quick" } end)
         assert.equals(200, status)
         assert.is_true(took < 0.5)
         assert.equals(200, (read_response(slow)))
         assert.is_true(socket.gettime() - started >= 1)
      end)

      it("drips the body slowly and intact, other clients unaffected", function()
         local slow = connect(srv)
         finally(function() slow:close() end)
         local started = socket.gettime()
         slow:send(request_text("GET", "/api/size?n=100", { "X-Test-Fault: drip_bytes=10; drip_ms=100" }))
         local took = elapsed(function() return srv:request{ path = "/api/quick" } end)
         assert.is_true(took < 0.5)
         local status, _, body = read_response(slow)
         assert.equals(200, status)
         assert.equals('"' .. string.rep("a", 98) .. '"', body)
         assert.is_true(socket.gettime() - started >= 0.9) -- 9 pauses of 100 ms
      end)

      it("cut_after announces the full length, sends that many bytes and closes", function()
         local sock = connect(srv)
         finally(function() sock:close() end)
         sock:send(request_text("GET", "/api/size?n=1000", { "X-Test-Fault: cut_after=100" }))
         local status_line = sock:receive("*l")
         assert.equals("HTTP/1.1 200 OK", status_line)
         local length
         repeat
            local line = sock:receive("*l")
            length = length or line:match("^content%-length: (%d+)")
         until line == ""
         assert.equals("1000", length)
         local rest = sock:receive("*a")
         assert.equals(100, #rest)
      end)

      it("reset resets the connection instead of answering", function()
         local sock = connect(srv)
         finally(function() sock:close() end)
         sock:send(request_text("GET", "/api/x", { "X-Test-Fault: reset" }))
         assert.is_false(closed_in_order(sock))
      end)

      it("reset with cut_after resets after part of the body", function()
         local sock = connect(srv)
         finally(function() sock:close() end)
         sock:send(request_text("GET", "/api/size?n=1000", { "X-Test-Fault: cut_after=10; reset" }))
         local data, _, partial = sock:receive("*a")
         assert.is_nil(data)
         assert.matches("^HTTP/1.1 200 OK\r\n.*\r\n\r\n\"aaaaaaaaa$", partial)
      end)

      it("invalid_json sends a JSON content type and a body that does not parse", function()
         local status, headers, body = fault("invalid_json")
         assert.equals(200, status)
         assert.matches("application/json", headers["content-type"], 1, true)
         assert.is_false((pcall(cjson.decode, body)))
         assert.equals("[", body:sub(1, 1))
      end)

      it("html sends an HTML page with 200 or 502", function()
         for _, code in ipairs{ 200, 502 } do
            local status, headers, body = fault("html; status=" .. code)
            assert.equals(code, status)
            assert.equals("text/html", headers["content-type"])
            assert.matches("^<!DOCTYPE html>", body)
         end
         assert.equals(502, (fault("html")))
      end)

      it("huge streams a JSON array of exactly that size", function()
         local status, headers, body = fault("huge=5000000")
         assert.equals(200, status)
         assert.equals("5000000", headers["content-length"])
         assert.equals(5000000, #body)
         local runs = cjson.decode(body)
         assert.is_true(#runs > 1000)
         assert.equals("huge", runs[1].name)
      end)

      it("huge never holds the body in memory", function()
         local sock = connect(srv, 30)
         finally(function() sock:close() end)
         local size = 300 * 1024 * 1024
         sock:send(request_text("GET", "/api/x", { "X-Test-Fault: huge=" .. size }))
         local got = 0
         repeat
            local data, err, partial = sock:receive(1048576)
            got = got + #(data or partial)
         until err or got >= size + 100
         assert.is_true(got > size)
         local peak = peak_memory_kb(srv.pid)
         assert.is_true(peak < 100 * 1024, "server peak memory " .. tostring(peak) .. " kB")
      end)

      it("content_type replaces the app's content type and keeps its body", function()
         local status, headers, body = fault("content_type=text/plain")
         assert.equals(200, status)
         assert.equals("text/plain", headers["content-type"])
         assert.equals("/api/x", cjson.decode(body).path)
      end)

      it("redirect answers 307 to the same URL without the fault", function()
         local status, headers = srv:request{ path = "/api/x?a=1&fault=redirect&b=2" }
         assert.equals(307, status)
         assert.equals(("http://127.0.0.1:%d/api/x?a=1&b=2"):format(srv.port), headers.location)
         local target = headers.location:match("^http://[^/]+(.*)$")
         local again, _, body = srv:request{ path = target }
         assert.equals(200, again)
         assert.equals("a=1&b=2", cjson.decode(body).query)
      end)

      it("fail_first fails the first n requests with a key, then answers normally", function()
         local seen = {}
         for i = 1, 4 do seen[i] = (fault("fail_first=2; key=k1; status=503")) end
         assert.same({ 503, 503, 200, 200 }, seen)
         assert.equals(502, (fault("fail_first=1; key=k2; status=502")), "keys are independent")
         assert.equals(503, (fault("fail_first=1; key=k3")), "503 by default")
         srv:reset()
         assert.equals(503, (fault("fail_first=2; key=k1; status=503")), "reset forgets the counts")
      end)

      it("gzip_bomb sends a small gzip body that inflates to the size asked", function()
         local size = 20 * 1000 * 1000
         local status, headers, body = fault("gzip_bomb=" .. size)
         assert.equals(200, status)
         assert.equals("gzip", headers["content-encoding"])
         assert.is_true(#body < 40000)
         local inflated = gunzip(body)
         assert.equals(size, #inflated)
         assert.equals("[", inflated:sub(1, 1))
         assert.equals("]", inflated:sub(-1))
         inflated = nil -- luacheck: ignore
         local _, big = fault("gzip_bomb=1073741824")
         assert.is_true(tonumber(big["content-length"]) < 2 * 1024 * 1024)
      end)

      it("chunked sends the normal body with chunked framing", function()
         local status, headers, body = fault("chunked", "/api/pieces?n=100000")
         assert.equals(200, status)
         assert.equals("chunked", headers["transfer-encoding"])
         assert.is_nil(headers["content-length"])
         assert.equals(700000, #body)
      end)

      it("works from the query string, which the app does not see", function()
         local status, _, body = srv:request{ path = "/api/x?a=1&fault=content_type%3Dtext%2Fplain&b=2" }
         assert.equals(200, status)
         local seen = cjson.decode(body)
         assert.equals("a=1&b=2", seen.query)
         _, _, body = fault("chunked")
         assert.is_nil(cjson.decode(body).headers["x-test-fault"])
      end)

      it("names an unknown fault item in a 400", function()
         local status, _, body = fault("status=503; bogus=1")
         assert.equals(400, status)
         assert.matches("bogus", cjson.decode(body).detail)
      end)

      it("leaves the test endpoints alone", function()
         local status = srv:request{ path = "/__test/stats", headers = { ["X-Test-Fault"] = "status=503" } }
         assert.equals(200, status)
      end)

      it("applies --fault to requests without their own", function()
         local other = test_server.start{ app_file = app_file, fault = "status=503" }
         finally(function() other:stop() end)
         assert.equals(503, (other:request{ path = "/api/x" }))
         assert.equals(502, (other:request{ path = "/api/x", headers = { ["X-Test-Fault"] = "status=502" } }))
         assert.equals(200, (other:request{ path = "/api/x", headers = { ["X-Test-Fault"] = "none" } }))
         assert.equals(200, (other:request{ path = "/__test/stats" }))
      end)

      -- The head of a response as sent: its status line and its header lines in order, as {name, value}.
      local function read_head(sock)
         local status_line = assert(sock:receive("*l"))
         local lines = {}
         while true do
            local line = assert(sock:receive("*l"))
            if line == "" then break end
            local name, value = line:match("^([^:]+): (.*)$")
            lines[#lines + 1] = { name:lower(), value }
         end
         return status_line, lines
      end

      local function header(lines, name)
         for _, h in ipairs(lines) do
            if h[1] == name then return h[2] end
         end
      end

      -- Reads `n` bytes in pieces (never more than 1 MB held) and checks that none of them matches the
      -- pattern `bad`.
      local function read_flood(sock, n, bad)
         local got = 0
         while got < n do
            local data, err, partial = sock:receive(math.min(1048576, n - got))
            data = data or partial
            assert.is_nil(err)
            local at = data:find(bad)
            assert.is_nil(at, at and ("unexpected %q after %d bytes"):format(data:sub(at, at + 20), got + at))
            got = got + #data
         end
      end

      -- Reads a 200 head with chunked framing.
      local function read_chunked_head(sock)
         local status_line, lines = read_head(sock)
         assert.equals("HTTP/1.1 200 OK", status_line)
         assert.equals("chunked", header(lines, "transfer-encoding"))
         assert.is_nil(header(lines, "content-length"))
      end

      local function request_on(method, path, fault_text, body, extra)
         local sock = connect(srv, 30)
         local headers = { "X-Test-Fault: " .. fault_text }
         for _, h in ipairs(extra or {}) do headers[#headers + 1] = h end
         assert(sock:send(request_text(method, path, headers, body)))
         return sock
      end

      -- The flood on `sock` is still coming, the server answers another connection meanwhile, and
      -- once `sock` closes the server lets go of it and stays small.
      local function still_fed_and_others_served(sock)
         local status = srv:request{ path = "/api/quick", timeout = 10 }
         assert.equals(200, status)
         sock:settimeout(10)
         local more = sock:receive(65536)
         assert.equals(65536, #more)
         sock:close()
         local active
         for _ = 1, 100 do
            active = srv:stats().active
            if active == 1 then break end
            socket.sleep(0.05)
         end
         assert.equals(1, active, "the server still serves the closed connection")
         local peak = peak_memory_kb(srv.pid)
         assert.is_true(peak < 100 * 1024, "server peak memory " .. tostring(peak) .. " kB")
      end

      local FIVE_MB = 5 * 1024 * 1024

      it("head_line_endless sends a status line and then one header line that never ends", function()
         local sock = request_on("GET", "/api/x", "head_line_endless")
         finally(function() sock:close() end)
         assert.equals("HTTP/1.1 200 OK\r\nX-Endless: ", sock:receive(28))
         read_flood(sock, FIVE_MB, "[^a]")
         still_fed_and_others_served(sock)
      end)

      it("continue_flood sends 100 Continue heads and nothing else", function()
         local sock = request_on("GET", "/api/x", "continue_flood")
         finally(function() sock:close() end)
         local head = "HTTP/1.1 100 Continue\r\n\r\n"
         local total = 0
         local rest = ""
         while total < FIVE_MB do
            local data, err, partial = sock:receive(1048576)
            assert.is_nil(err)
            data = rest .. (data or partial)
            total = total + #data - #rest
            local whole = #data - #data % #head
            assert.equals(string.rep(head, math.floor(whole / #head)), data:sub(1, whole))
            rest = data:sub(whole + 1)
         end
         still_fed_and_others_served(sock)
      end)

      it("chunk_line_endless sends a chunked head, then a chunk-size line that never ends", function()
         local sock = request_on("GET", "/api/x", "chunk_line_endless")
         finally(function() sock:close() end)
         read_chunked_head(sock)
         assert.equals("1;", sock:receive(2))
         read_flood(sock, FIVE_MB, "[^x]")
         still_fed_and_others_served(sock)
      end)

      it("trailer_endless sends the whole chunked body, then trailer lines that never end", function()
         local sock = request_on("GET", "/api/pieces?n=1000", "trailer_endless")
         finally(function() sock:close() end)
         read_chunked_head(sock)
         local body = {}
         while true do
            local size = tonumber(assert(sock:receive("*l")), 16)
            if size == 0 then break end
            body[#body + 1] = sock:receive(size)
            assert.equals("", sock:receive("*l"))
         end
         assert.equals(7000, #table.concat(body))
         assert.equals("000001,", table.concat(body):sub(1, 7))
         local got = 0
         while got < FIVE_MB do
            local line = assert(sock:receive("*l"))
            assert.matches("^x%-trailer: t+$", line)
            got = got + #line + 2
         end
         still_fed_and_others_served(sock)
      end)

      it("head_drip_ms sends the head one byte every N ms, then the body as usual", function()
         local started = socket.gettime()
         local sock = request_on("GET", "/api/size?n=100", "head_drip_ms=10")
         finally(function() sock:close() end)
         local status_line, lines = read_head(sock)
         local took = socket.gettime() - started
         assert.equals("HTTP/1.1 200 OK", status_line)
         local head_length = #status_line + 2 + 2
         for _, h in ipairs(lines) do head_length = head_length + #h[1] + 2 + #h[2] + 2 end
         assert.is_true(took >= (head_length - 1) * 0.01, ("%d bytes in %.2f s"):format(head_length, took))
         assert.equals("100", header(lines, "content-length"))
         assert.equals('"' .. string.rep("a", 98) .. '"', sock:receive(100))
      end)

      it("status_line sends that exact status line, the response as usual, then closes", function()
         local sock = request_on("GET", "/api/x", "status_line=HTTP/1.1 2000 OK")
         finally(function() sock:close() end)
         local status_line, lines = read_head(sock)
         assert.equals("HTTP/1.1 2000 OK", status_line)
         assert.equals("close", header(lines, "connection"))
         local body = sock:receive(tonumber(header(lines, "content-length")))
         assert.equals("/api/x", cjson.decode(body).path)
         assert.is_true(closed_in_order(sock))
      end)

      it("http09 sends only the body, then closes", function()
         local sock = request_on("GET", "/api/size?n=100", "http09")
         finally(function() sock:close() end)
         assert.equals('"' .. string.rep("a", 98) .. '"', sock:receive("*a"))
      end)

      it("header_bytes adds an X-Big header of exactly N bytes, the body intact", function()
         local sock
         finally(function() if sock then sock:close() end end)
         for _, n in ipairs{ 10, 1048576, 20 * 1048576 } do
            sock = request_on("GET", "/api/size?n=100", "header_bytes=" .. n)
            local status_line, lines = read_head(sock)
            assert.equals("HTTP/1.1 200 OK", status_line)
            assert.equals("x-big", lines[#lines][1])
            assert.equals(string.rep("x", n), lines[#lines][2])
            assert.equals("100", header(lines, "content-length"))
            assert.equals('"' .. string.rep("a", 98) .. '"', sock:receive(100))
            sock:close()
         end
         local peak = peak_memory_kb(srv.pid)
         assert.is_true(peak < 100 * 1024, "server peak memory " .. tostring(peak) .. " kB")
      end)

      it("content_length2 adds a second, conflicting Content-Length", function()
         local sock = request_on("GET", "/api/size?n=100", "content_length2=7")
         finally(function() sock:close() end)
         local _, lines = read_head(sock)
         local lengths = {}
         for _, h in ipairs(lines) do
            if h[1] == "content-length" then lengths[#lengths + 1] = h[2] end
         end
         assert.same({ "100", "7" }, lengths)
         assert.equals('"' .. string.rep("a", 98) .. '"', sock:receive("*a"))
      end)

      it("bad_chunk sends a chunked body whose first chunk-size line is not hex", function()
         local sock = request_on("GET", "/api/size?n=100", "bad_chunk")
         finally(function() sock:close() end)
         local _, lines = read_head(sock)
         assert.equals("chunked", header(lines, "transfer-encoding"))
         assert.is_nil(header(lines, "content-length"))
         assert.equals("zz\r\n\"" .. string.rep("a", 98) .. "\"\r\n0\r\n\r\n", sock:receive("*a"))
      end)

      it("body sends exactly that text as JSON, with 200 or the status asked for", function()
         local status, headers, body = fault('body={"a": [1, 2]}')
         assert.equals(200, status)
         assert.equals("application/json", headers["content-type"])
         assert.equals('{"a": [1, 2]}', body)
         status, headers, body = fault("body=42; status=500")
         assert.equals(500, status)
         assert.equals("application/json", headers["content-type"])
         assert.equals("42", body)
         status, headers = fault("body=")
         assert.equals(200, status)
         assert.equals("0", headers["content-length"])
      end)

      it("echo_auth answers 401 repeating the Authorization header in the detail and X-Echo", function()
         local status, headers, body = srv:request{ path = "/api/x",
            headers = { ["X-Test-Fault"] = "echo_auth", Authorization = "Bearer SECRET-KEY-123" } }
         assert.equals(401, status)
         assert.equals("Bearer SECRET-KEY-123", headers["x-echo"])
         assert.matches("Bearer SECRET-KEY-123", cjson.decode(body).detail, 1, true)
      end)

      it("redirect_status and location answer that redirect", function()
         local status, headers = fault("redirect_status=302; location=/api/elsewhere")
         assert.equals(302, status)
         assert.equals("/api/elsewhere", headers.location)
         status, headers = fault("redirect_status=301", "/api/x?a=1")
         assert.equals(301, status)
         assert.equals(("http://127.0.0.1:%d/api/x?a=1"):format(srv.port), headers.location)
         status, headers = fault("location=https://example.invalid/api/x")
         assert.equals(307, status)
         assert.equals("https://example.invalid/api/x", headers.location)
         status = fault("redirect_status=200")
         assert.equals(400, status)
      end)
   end)
end)

describe("test server with the Prefect API", function()
   local srv
   setup(function() srv = test_server.start{ dataset = "fixture" } end)
   teardown(function() if srv then srv:stop() end end)

   it("serves 200-run pages cheaply, plain and gzipped, on one connection", function()
      local sock = connect(srv)
      finally(function() sock:close() end)
      local headers = { "Content-Type: application/json" }
      local gz_headers = { "Content-Type: application/json", "Accept-Encoding: gzip" }
      local PAGE = '{"limit": 200}'
      local took = elapsed(function()
         for _ = 1, 10 do
            local status, _, body = roundtrip(sock, "POST", "/api/task_runs/filter", headers, PAGE)
            assert.equals(200, status)
            assert.is_true(#body > 200000)
            local gz_status, h, gz = roundtrip(sock, "POST", "/api/task_runs/filter", gz_headers, PAGE)
            assert.equals(200, gz_status)
            assert.equals("gzip", h["content-encoding"])
            assert.equals(200, #cjson.decode(gunzip(gz)))
         end
      end)
      assert.is_true(took < 3, ("20 pages took %.2f s"):format(took))
      assert.equals(1, srv:stats().connections)
   end)
end)

describe("test server over TLS", function()
   local dir, srv
   setup(function()
      dir = disk.tmpdir()
      assert(os.execute(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
         .. "-keyout '%s/key.pem' -out '%s/cert.pem' -days 1 -subj /CN=127.0.0.1 > /dev/null 2>&1")
         :format(dir, dir)))
      srv = test_server.start{ tls = { cert = dir .. "/cert.pem", key = dir .. "/key.pem" } }
   end)
   teardown(function()
      if srv then srv:stop() end
      disk.remove_tree(dir)
   end)

   local function tls_connect()
      local ssl = require("ssl")
      local sock = connect(srv)
      local tls = assert(ssl.wrap(sock, { mode = "client", protocol = "any", verify = "none" }))
      tls:settimeout(5)
      assert(tls:dohandshake())
      return tls
   end

   it("serves https with keep-alive and gzip", function()
      assert.matches("^https://127%.0%.0%.1:%d+/api$", srv.url)
      local tls = tls_connect()
      finally(function() tls:close() end)
      local status, _, body = roundtrip(tls, "GET", "/api/health")
      assert.equals(200, status)
      assert.equals("true", body)
      local gz_status, headers, gz = roundtrip(tls, "POST", "/api/task_runs/filter",
         { "Content-Type: application/json", "Accept-Encoding: gzip" }, '{"limit": 50}')
      assert.equals(200, gz_status)
      assert.equals("gzip", headers["content-encoding"])
      assert.equals(50, #cjson.decode(gunzip(gz)))
      assert.equals(1, srv:stats().connections)
   end)

   it("resets TLS connections on the reset fault", function()
      local tls = tls_connect()
      finally(function() tls:close() end)
      tls:send(request_text("GET", "/api/health", { "X-Test-Fault: reset" }))
      local data = tls:receive("*a")
      assert.is_nil(data)
   end)

   it("drops a client that never completes the handshake without stopping others", function()
      local raw = connect(srv)
      finally(function() raw:close() end)
      raw:send("GET / HTTP/1.1\r\n\r\n") -- plain HTTP to a TLS port
      local took, status = elapsed(function() return srv:request{ path = "/api/health" } end)
      assert.equals(200, status)
      assert.is_true(took < 1)
   end)
end)
