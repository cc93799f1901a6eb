-- The OpenResty example as its comments say to run it: examples/openresty/run.sh, which starts nginx
-- on examples/openresty/nginx.conf with the port and the pid file given, in front of the test
-- server. Its answers to wrong arguments are checked here; the runs it serves, in spec/ngx_spec.lua.
-- nginx's Lua is LuaJIT and the example loads build/luajit: like ngx_spec, it runs under luajit.

local nginx = require("nginx")
local disk = require("disk")
local socket = require("socket")
local cjson = require("cjson")

local available, why_not = nginx.available()

local function quote(s)
   return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

describe("examples/openresty/run.sh", function()
   if not available then
      pending("skipped: " .. why_not)
      return
   end
   local test_server = require("test_server")
   local RUN = nginx.root .. "/examples/openresty/run.sh"
   local srv, dir, port, pid_file, launcher

   local function read(path) return disk.read(path) end

   local function get(path, accept)
      local sock = socket.tcp()
      sock:settimeout(10)
      assert(sock:connect("127.0.0.1", port))
      sock:send(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAccept: %s\r\n\r\n"):format(path,
         accept or "*/*"))
      local status, headers, body = test_server.read_response(sock)
      sock:close()
      return status, headers, body
   end

   setup(function()
      srv = test_server.start{ dataset = "fixture", relative_time = true }
      dir = disk.tmpdir()
      port = nginx.free_port()
      pid_file = dir .. "/nginx.pid"
      -- run.sh in the background; its own pid, to wait for it after nginx is stopped
      assert(os.execute(("PREFECT_API_URL=%s sh %s --port %d --pid %s > %s 2>&1 & echo $! > %s"):format(
         quote(srv.url), quote(RUN), port, quote(pid_file), quote(dir .. "/log"), quote(dir .. "/launcher"))))
      launcher = tonumber(read(dir .. "/launcher"))
      local deadline = socket.gettime() + 20
      while true do
         local s = socket.tcp()
         s:settimeout(0.2)
         local up = s:connect("127.0.0.1", port)
         s:close()
         if up and disk.exists(pid_file) then break end
         assert(socket.gettime() < deadline, "nginx did not start: " .. tostring(read(dir .. "/log")))
         socket.sleep(0.05)
      end
   end)

   teardown(function()
      local pid = pid_file and tonumber(read(pid_file) or "")
      if pid then os.execute("kill -QUIT " .. pid .. " 2>/dev/null") end
      -- run.sh ends when nginx has; then its copy of the config is gone
      for _ = 1, 200 do
         if not launcher or not disk.exists("/proc/" .. launcher) then break end
         socket.sleep(0.05)
      end
      if srv then srv:stop() end
      if dir then disk.remove_tree(dir) end
   end)

   it("listens on the port given and writes the pid file given", function()
      local pid = tonumber(read(pid_file))
      assert.is_number(pid)
      assert.is_truthy(disk.exists("/proc/" .. pid), "no process " .. pid)
      local status, _, body = get("/failed.json")
      assert.equal(200, status, body)
      local t = cjson.decode(body)
      assert.equal(1, t.hours)
      assert.is_true(t.count > 0, body) -- the recording ends now: its failed runs are an hour old at most
   end)

   it("answers 400 with the reason to a wrong hours or limit, in JSON and in HTML", function()
      local cases = {
         { "hours=abc", 'hours must be a number above 0 and at most 720, got "abc"' },
         { "hours=0", 'hours must be a number above 0 and at most 720, got "0"' },
         { "hours=721", 'hours must be a number above 0 and at most 720, got "721"' },
         { "hours=nan", 'hours must be a number above 0 and at most 720, got "nan"' },
         { "limit=0", 'limit must be a whole number from 1 to 1000, got "0"' },
         { "limit=2.5", 'limit must be a whole number from 1 to 1000, got "2.5"' },
         { "limit=1001", 'limit must be a whole number from 1 to 1000, got "1001"' },
         { "hours=2&limit=-1", 'limit must be a whole number from 1 to 1000, got "-1"' },
      }
      for _, case in ipairs(cases) do
         local status, headers, body = get("/failed.json?" .. case[1])
         assert.equal(400, status, case[1])
         assert.matches("application/json", headers["content-type"])
         assert.same({ error = { kind = "bad_request", message = case[2] } }, cjson.decode(body))
         status, headers, body = get("/failed?" .. case[1], "text/html")
         assert.equal(400, status, case[1])
         assert.matches("text/html", headers["content-type"])
         assert.is_truthy(body:find(case[2]:gsub('"', "&quot;"), 1, true), body)
      end
   end)

   it("takes the bounds themselves", function()
      local status, _, body = get("/failed.json?hours=720&limit=1000")
      assert.equal(200, status, body)
      status, _, body = get("/failed.json?hours=0.5&limit=1")
      assert.equal(200, status, body)
      assert.is_true(cjson.decode(body).count <= 1)
   end)

   it("refuses a port or a pid path it cannot use, before starting nginx", function()
      local p = assert(io.popen(("sh %s --port 70000 2>&1; echo status=$?"):format(quote(RUN))))
      local out = p:read("*a")
      p:close()
      assert.equal("run.sh: --port needs a number from 1 to 65535, got '70000'\nstatus=2\n", out)
      p = assert(io.popen(("sh %s --pid relative.pid 2>&1; echo status=$?"):format(quote(RUN))))
      out = p:read("*a")
      p:close()
      assert.equal("run.sh: --pid needs an absolute path, got 'relative.pid'\nstatus=2\n", out)
   end)
end)
