--- Starts bin/prefect-test-server as a separate process for a spec, and stops it.
--
--    local test_server = require("test_server")
--    describe("...", function()
--       local srv
--       setup(function() srv = test_server.start{ dataset = "fixture", fault = "delay_ms=50" } end)
--       teardown(function() srv:stop() end)      -- always: teardown runs even when a test fails
--       it("...", function() ... srv.url ... srv:stats() ... end)
--    end)
--
-- A spec must stop what it starts: in `teardown`, or in `finally(function() srv:stop() end)` inside an
-- `it`. As a second line of defence the server runs with --stdin-watch and its standard input is a pipe
-- this process holds: when the test process ends, however it ends, the pipe closes and the server exits.
-- The interpreter is $PREFECT_TEST_LUA (default lua5.4).

local socket = require("socket")
local cjson = require("cjson")

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local ROOT = here .. "/../.."
local LAUNCHER = ROOT .. "/bin/prefect-test-server"

local test_server = {}
test_server.ROOT = ROOT
test_server.LAUNCHER = LAUNCHER

local running = {} -- server -> true

local function quote(s)
   return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local read_file = require("disk").read

-- Whether process `pid` has ended (gone, or a zombie waiting for us to reap it through pclose).
local function ended(pid)
   local stat = read_file("/proc/" .. pid .. "/stat")
   if not stat then return true end
   return stat:match("^%d+ %b() (%a)") == "Z"
end

local Server = {}
Server.__index = Server

--- Builds the launcher's arguments from the helper's options.
function test_server.args(opts)
   local args = { "--port", tostring(opts.port or 0), "--stdin-watch" }
   local function add(...)
      for _, a in ipairs({ ... }) do args[#args + 1] = a end
   end
   local dataset = opts.dataset
   if type(dataset) == "table" then
      add("--generate", dataset.generate, "--seed", dataset.seed or 1, "--shape", dataset.shape or 3)
   elseif dataset and dataset ~= "fixture" then
      add("--dataset", dataset)
   end
   if opts.prefect then add("--prefect", opts.prefect) end
   if opts.relative_time then add("--relative-time") end
   if opts.base_path then add("--base-path", opts.base_path) end
   if opts.api_key then add("--api-key", opts.api_key) end
   if opts.auth_string then add("--auth-string", opts.auth_string) end
   if opts.csrf then add("--csrf") end
   if opts.test_writes then add("--test-writes") end
   if opts.fault then add("--fault", opts.fault) end
   if opts.tls then add("--tls-cert", opts.tls.cert, "--tls-key", opts.tls.key) end
   if opts.keepalive_timeout then add("--keepalive-timeout", opts.keepalive_timeout) end
   if opts.app_file then add("--app-file", opts.app_file) end
   for _, a in ipairs(opts.args or {}) do add(a) end
   return args
end

--- Starts a server; raises (with the server's standard error) if it does not come up.
-- opts: dataset = "fixture" | path | { generate = n, seed = s, shape = 2|3 }, prefect, relative_time
-- (true: the dataset's times moved so that it ends now), base_path, api_key,
-- auth_string, csrf, test_writes (true: add_task_runs works), port (default 0: a free one; a
-- stopped server's port starts it again where its clients look), fault, tls = { cert, key },
-- keepalive_timeout, app_file, args (extra launcher arguments), lua (interpreter; default
-- $PREFECT_TEST_LUA or lua5.4), start_timeout (seconds, 30).
function test_server.start(opts)
   opts = opts or {}
   local lua = opts.lua or os.getenv("PREFECT_TEST_LUA") or "lua5.4"
   local argv = { lua, LAUNCHER }
   for _, a in ipairs(test_server.args(opts)) do argv[#argv + 1] = a end
   return test_server.launch(argv, opts.start_timeout, "prefect-test-server")
end

--- Starts the server process `argv` (a list of words), whose standard input is a pipe held by this
-- process and which prints "listening URL" once it serves; returns a Server for it, or raises with
-- the process's standard error, naming it `what`, if it has not done so within `start_timeout`
-- seconds (default 30). Other servers of the specs (a real Prefect) start through it too.
function test_server.launch(argv, start_timeout, what)
   local base = os.tmpname()
   local files = { base = base, out = base .. ".out", err = base .. ".err", pid = base .. ".pid" }

   local words = { "exec" }
   for _, a in ipairs(argv) do words[#words + 1] = quote(a) end
   local command = ("echo $$ > %s; %s > %s 2> %s"):format(quote(files.pid), table.concat(words, " "),
      quote(files.out), quote(files.err))
   -- "w": the server's standard input is this pipe (see --stdin-watch above).
   local pipe = assert(io.popen(command, "w"))

   local self = setmetatable({ pipe = pipe, files = files }, Server)
   running[self] = true
   local deadline = socket.gettime() + (start_timeout or 30)
   while true do
      local pid = tonumber(read_file(files.pid) or "")
      self.pid = self.pid or pid
      local url = (read_file(files.out) or ""):match("^listening (%S+)\n")
      if url then
         self.url = url
         self.port = tonumber(url:match("^%a+://[^/]*:(%d+)"))
         self.origin = url:match("^(%a+://[^/]+)")
         return self
      end
      if (self.pid and ended(self.pid)) or socket.gettime() > deadline then
         local err = read_file(files.err) or ""
         self:stop()
         error(what .. " did not start: " .. (err ~= "" and err or "no output"), 3)
      end
      socket.sleep(0.01)
   end
end

--- Stops the server and waits for it to exit. Safe to call more than once.
function Server:stop()
   if not self.pipe then return end
   if self.pid then os.execute("kill -TERM " .. self.pid .. " 2>/dev/null") end
   self.pipe:close() -- closes its standard input and waits for the process
   self.pipe = nil
   running[self] = nil
   for _, path in pairs(self.files) do os.remove(path) end
end

--- Whether the server process is still running.
function Server:alive()
   return self.pipe ~= nil and self.pid ~= nil and not ended(self.pid)
end

--- What the server wrote to standard error so far.
function Server:stderr()
   return read_file(self.files.err) or ""
end

local function connect(self, timeout)
   local sock = socket.tcp()
   sock:settimeout(timeout or 10)
   local host = self.origin:match("^%a+://%[?([^%]]-)%]?:%d+$")
   local ok, err = sock:connect(host, self.port)
   if not ok then return nil, err end
   if self.url:match("^https:") then
      local ssl = require("ssl")
      local tls, werr = ssl.wrap(sock, { mode = "client", protocol = "any", verify = "none" })
      if not tls then return nil, werr end
      tls:settimeout(timeout or 10)
      local hok, herr = tls:dohandshake()
      if not hok then return nil, herr end
      sock = tls
   end
   return sock
end

local function read_response(sock)
   local line, err = sock:receive("*l")
   if not line then return nil, err end
   local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
   if not status then return nil, "bad status line: " .. line end
   local headers = {}
   while true do
      local h, herr = sock:receive("*l")
      if not h then return nil, herr end
      if h == "" then break end
      local name, value = h:match("^([^:]+):%s*(.-)%s*$")
      if name then headers[name:lower()] = value end
   end
   local body
   if headers["transfer-encoding"] == "chunked" then
      local pieces = {}
      while true do
         local size_line, serr = sock:receive("*l")
         if not size_line then return nil, serr end
         local size = tonumber(size_line:match("^%x+"), 16)
         if size == 0 then
            sock:receive("*l")
            break
         end
         pieces[#pieces + 1] = sock:receive(size)
         sock:receive("*l")
      end
      body = table.concat(pieces)
   elseif headers["content-length"] then
      body = sock:receive(tonumber(headers["content-length"]))
   else
      body = sock:receive("*a")
   end
   return status, headers, body
end

--- One request on a new connection (closed afterwards): returns status, headers (lowercase names),
-- body; or nil, err. req: method (GET), path (under the origin, e.g. "/api/health"), headers
-- ({name -> value}), body.
function Server:request(req)
   local sock, err = connect(self, req.timeout)
   if not sock then return nil, err end
   local lines = { ("%s %s HTTP/1.1\r\n"):format(req.method or "GET", req.path) }
   local headers = { host = ("127.0.0.1:%d"):format(self.port), connection = "close" }
   for name, value in pairs(req.headers or {}) do headers[name:lower()] = value end
   if req.body then headers["content-length"] = tostring(#req.body) end
   for name, value in pairs(headers) do lines[#lines + 1] = name .. ": " .. value .. "\r\n" end
   lines[#lines + 1] = "\r\n"
   lines[#lines + 1] = req.body or ""
   local sent, serr = sock:send(table.concat(lines))
   if not sent then
      sock:close()
      return nil, serr
   end
   local status, rheaders, body = read_response(sock)
   sock:close()
   return status, rheaders, body
end

--- The server's counters: { connections = n, requests = n } (the helper's own calls are not counted).
function Server:stats()
   local status, _, body = self:request{ path = "/__test/stats" }
   assert(status == 200, "GET /__test/stats failed: " .. tostring(status or body))
   local stats = cjson.decode(body)
   return {
      connections = math.floor(stats.connections),
      requests = math.floor(stats.requests),
      active = math.floor(stats.active),
   }
end

--- Adds task runs to a server started with test_writes = true, or replaces those whose id it has
-- (POST <base>/admin/test/task_runs); raises unless the server took them all. `runs` is a list of
-- task-run tables as Prefect sends them.
function Server:add_task_runs(runs)
   local body = #runs == 0 and "[]" or cjson.encode(runs)
   local path = self.url:match("^%a+://[^/]+(.*)$") .. "/admin/test/task_runs"
   local status, _, answer = self:request{ method = "POST", path = path, body = body,
      headers = { ["content-type"] = "application/json" } }
   assert(status == 200, "POST " .. path .. " failed: " .. tostring(status) .. " " .. tostring(answer))
   return cjson.decode(answer)
end

--- Zeroes the counters and the fail_first state.
function Server:reset()
   local status = self:request{ method = "POST", path = "/__test/reset" }
   assert(status == 204, "POST /__test/reset failed: " .. tostring(status))
end

--- Stops every server this process started and has not stopped yet.
function test_server.stop_all()
   for srv in pairs(running) do srv:stop() end
end

test_server.read_response = read_response

return test_server
