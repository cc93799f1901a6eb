--- Network benchmark (issue #14): reading task runs from a server that looks remote. The bundled
-- test server (generated Prefect 3 runs, gzip, HTTPS with a CA made here) sits behind
-- bench/netproxy.lua: 20 ms round trip (half of it each way), 100 Mbit/s each way, one round trip
-- more for each new connection's handshake. Readers, each asking for gzip and verifying the
-- server against the CA:
--
--   client c=1, 2, 4   for run in client:task_runs(q, {concurrency = n})   (Lua 5.4; c=4 LuaJIT too)
--   luasec+cjson       socket.http's loop over luasec's ssl.https, lua-zlib, cjson (Lua 5.4)
--   lua-http+cjson     Debian's lua-http (LuaJIT: Debian ships it for Lua 5.1-5.3) + lua-zlib + cjson
--   prefect (python)   Prefect's own client, read_task_runs by offset, if build/prefect-venv exists
--
-- Each read is a fresh child process that reads one page first (code paths; the client's
-- connection) and then N runs, timed: wall time, and the child's CPU time (os.clock, all
-- threads; time.process_time for Python). The readers take turns, round after round; the
-- figures are medians and the ratios are of medians from this run. Nothing here is a test.
--
--   lua5.4 bench/network.lua [--rounds R] [--runs N] [--rtt-ms MS] [--mbit M]
--   (after `make build-all`; defaults 3 rounds, 10,000 runs, 20 ms, 100 Mbit/s)

local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local root = script_dir .. "/.."
package.path = table.concat({
   root .. "/bench/?.lua", root .. "/lua/?.lua", root .. "/lua/?/init.lua",
   root .. "/spec/support/?.lua", package.path,
}, ";")
local flavour = (jit and "luajit") or "lua5.4"
package.cpath = root .. "/build/" .. flavour .. "/?.so;" .. package.cpath

local socket = require("socket")
local proc = require("lib.proc")

local PAGE = 200
local PYTHON = root .. "/build/prefect-venv/bin/python"

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function emit(cpu, wall, runs)
   io.write(("RESULT cpu=%.6f wall=%.6f runs=%d\n"):format(cpu, wall, runs))
end

---------------------------------------------------------------------------------------------------
-- Child: --child <reader> <url> <n> <cafile>

local function child(name, url, n, cafile)
   n = tonumber(n)
   local read
   local c = name:match("^client%-c(%d+)$")
   if c then
      local prefect = require("prefect")
      local client = prefect.client{ url = url, retries = 0, api_key = false, ca_file = cafile }
      read = function(count, on_run)
         local got = 0
         local q = { sort = "ID_DESC", limit = count }
         for run in client:task_runs(q, { concurrency = tonumber(c) }) do
            on_run(run)
            got = got + 1
         end
         return got
      end
   else
      local peer = require(name == "luasec" and "peers.luasocket_cjson" or "peers.luahttp_cjson")
      read = function(count, on_run)
         return peer.read(url, count, on_run, nil, { gzip = true, cafile = cafile })
      end
   end
   local last
   read(PAGE, function(run) last = run.id end)
   local count = 0
   local cpu0, wall0 = proc.cpu_seconds(), socket.gettime()
   local got = read(n, function(run) count = count + 1; last = run.id end)
   local cpu, wall = proc.cpu_seconds() - cpu0, socket.gettime() - wall0
   assert(got == n and count == n and last, ("%s read %d of %d runs"):format(name, got, n))
   emit(cpu, wall, got)
end

if arg[1] == "--child" then
   child(arg[2], arg[3], arg[4], arg[5])
   return
end

---------------------------------------------------------------------------------------------------
-- Parent

local opts = { rounds = 3, runs = 10000, rtt_ms = 20, mbit = 100 }
do
   local names = { ["--rounds"] = "rounds", ["--runs"] = "runs", ["--rtt-ms"] = "rtt_ms",
      ["--mbit"] = "mbit" }
   local i = 1
   while arg[i] do
      local key = names[arg[i]]
      if not key or not tonumber(arg[i + 1]) then
         error("usage: lua5.4 bench/network.lua [--rounds R] [--runs N] [--rtt-ms MS] [--mbit M]", 0)
      end
      opts[key] = tonumber(arg[i + 1])
      i = i + 2
   end
end

local function have(lua, module)
   local ok = os.execute(quote(lua) .. " -e " .. quote("require'" .. module .. "'") .. " >/dev/null 2>&1")
   return ok == true or ok == 0
end

local function exists(path)
   local f = io.open(path, "rb")
   if f then f:close() end
   return f ~= nil
end

local function run_child(cmd)
   local p = assert(io.popen(cmd .. " 2>&1", "r"))
   local out = p:read("*a")
   p:close()
   local line = out:match("RESULT ([^\n]*)")
   if not line then return nil, out end
   local r = {}
   for k, v in line:gmatch("(%S+)=(%S+)") do r[k] = tonumber(v) end
   return r
end

local READERS = {
   { name = "client-c1", label = "client, concurrency 1", lua = "lua5.4" },
   { name = "client-c2", label = "client, concurrency 2", lua = "lua5.4" },
   { name = "client-c4", label = "client, concurrency 4", lua = "lua5.4" },
   { name = "client-c4", label = "client, concurrency 4 (LuaJIT)", lua = "luajit", key = "client-c4-jit" },
   { name = "luasec", label = "luasec + cjson", lua = "lua5.4", peer = true },
   { name = "luahttp", label = "lua-http + cjson (LuaJIT)", lua = "luajit", peer = true,
      needs = { "luajit", "http.request" } },
   { name = "python", label = "Prefect's Python client", peer = true, python = true },
}

local function command(r, url, ca)
   if r.python then
      return table.concat({ "cd", quote(root), "&&", quote(PYTHON), "bench/peers/prefect_client.py",
         quote(url), tostring(opts.runs), quote(ca) }, " ")
   end
   return table.concat({ "cd", quote(root), "&&", quote(r.lua), "bench/network.lua", "--child", r.name,
      quote(url), tostring(opts.runs), quote(ca) }, " ")
end

local function main()
   local nginx = require("nginx") -- for its make_certs: a CA and a server certificate it signed
   local disk = require("disk")
   local test_server = require("test_server")
   local tmp = disk.tmpdir()
   local srv, proxy
   local function cleanup()
      if proxy then proxy:stop() end
      if srv then srv:stop() end
      disk.remove_tree(tmp)
   end
   local ok, err = pcall(function()
      local certs = assert(nginx.make_certs(tmp, "bench"))
      local server_lua = have("luajit", "socket") and "luajit" or "lua5.4"
      srv = test_server.start{ dataset = { generate = opts.runs + 2 * PAGE, seed = 1, shape = 3 },
         lua = server_lua, tls = { cert = certs.cert, key = certs.key }, start_timeout = 600 }
      proxy = test_server.launch({ "lua5.4", root .. "/bench/netproxy.lua", "--target",
         "127.0.0.1:" .. srv.port, "--rtt-ms", tostring(opts.rtt_ms), "--mbit", tostring(opts.mbit),
         "--stdin-watch" }, 10, "bench/netproxy.lua")
      local url = ("https://localhost:%d/api"):format(proxy.port)
      local direct = ("https://localhost:%d/api"):format(srv.port)

      local readers = {}
      for _, r in ipairs(READERS) do
         local why
         if r.python and not exists(PYTHON) then
            why = "build/prefect-venv does not exist (tools/real/venv.sh makes it)"
         elseif r.lua and not have(r.lua, "socket") then
            why = r.lua .. " with luasocket is not installed"
         elseif r.needs and not have(r.needs[1], r.needs[2]) then
            why = r.needs[2] .. " is not installed for " .. r.needs[1]
         end
         if why then
            io.write(("  skipped: %s: %s\n"):format(r.label, why))
         else
            readers[#readers + 1] = r
         end
      end

      -- Warm the server: every run encoded and cached (its CPU is not what is measured).
      assert(run_child(command(READERS[1], direct, certs.ca)), "warm-up read failed")

      io.write(("network profile: %d ms round trip, %d Mbit/s each way, HTTPS (CA made here), gzip;"
         .. " %d runs per read, %d rounds\n"):format(opts.rtt_ms, opts.mbit, opts.runs, opts.rounds))
      local results = {}
      for round = 1, opts.rounds do
         for k = 0, #readers - 1 do
            local r = readers[(k + round - 1) % #readers + 1]
            local key = r.key or r.name
            local res, out = run_child(command(r, url, certs.ca))
            if not res then error(r.label .. " failed:\n" .. out, 0) end
            local t = results[key] or { wall = {}, cpu = {} }
            results[key] = t
            t.wall[#t.wall + 1], t.cpu[#t.cpu + 1] = res.wall, res.cpu
         end
      end

      local med = {}
      for key, t in pairs(results) do
         med[key] = { wall = proc.median(t.wall), cpu = proc.median(t.cpu) }
      end
      local c4, c1 = med["client-c4"], med["client-c1"]
      local best_lua_cpu = math.huge
      for _, r in ipairs(readers) do
         if r.peer and not r.python then best_lua_cpu = math.min(best_lua_cpu, med[r.key or r.name].cpu) end
      end
      io.write(("\n%-34s %9s %9s %13s %13s\n"):format("reader", "wall", "CPU", "wall / c=4", "CPU / c=1"))
      for _, r in ipairs(readers) do
         local m = med[r.key or r.name]
         io.write(("%-34s %7.2f s %7.2f s %12.2fx %12.2fx\n"):format(r.label, m.wall, m.cpu,
            m.wall / c4.wall, m.cpu / c1.cpu))
      end
      if best_lua_cpu < math.huge then
         io.write(("\nbest Lua peer's CPU / client's (c=1): %.2fx; (c=4): %.2fx\n"):format(
            best_lua_cpu / c1.cpu, best_lua_cpu / c4.cpu))
      end
      io.write("(wall / c=4: how many times longer than the client with concurrency 4;"
         .. " CPU / c=1: the reader's CPU over the client's with concurrency 1)\n")
   end)
   cleanup()
   if not ok then error(err, 0) end
end

main()
