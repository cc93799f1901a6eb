--- OpenResty benchmark (issue #14): a handler inside nginx reading a 200-run page from an upstream,
-- lua-prefect's client against the same handler written by hand (ngx.socket.tcp, a hand-written
-- HTTP/1.1 request, the keepalive pool, cjson.decode of the whole body:
-- bench/peers/ngx_socket_cjson.lua).
--
-- Two private nginx instances on 127.0.0.1 (spec/support/nginx.lua), one worker each: the
-- upstream answers every request with the same pre-encoded page (Content-Length, chunked, or gzip
-- and chunked), the front runs the handlers (bench/lib/openresty_app.lua). `wrk -t1 -c4` loads one
-- front URL at a time for a fixed duration; the handlers and upstream modes take turns, round
-- after round. For each: requests per second, and the front worker's CPU per request from
-- /proc/<pid>/stat (user + system) over the same interval. The worker's open fds and its Lua heap
-- (after a full collection) are sampled after every load and must stay flat.
--
--   luajit bench/openresty.lua [--rounds N] [--seconds S]   (after `make build LUA=luajit`)
-- Nothing here is a test: it prints medians and ratios of medians from this run.

local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local root = script_dir .. "/.."
package.path = table.concat({
   root .. "/bench/?.lua", root .. "/lua/?.lua", root .. "/lua/?/init.lua",
   root .. "/spec/support/?.lua", package.path,
}, ";")
package.cpath = root .. "/build/luajit/?.so;" .. package.cpath

local nginx = require("nginx")
local proc = require("lib.proc")
local disk = require("disk")

local rounds, seconds = 5, 2
do
   local i = 1
   while arg[i] do
      if arg[i] == "--rounds" then rounds = assert(tonumber(arg[i + 1]), "--rounds N"); i = i + 1
      elseif arg[i] == "--seconds" then seconds = assert(tonumber(arg[i + 1]), "--seconds S"); i = i + 1
      else error("usage: luajit bench/openresty.lua [--rounds N] [--seconds S]") end
      i = i + 1
   end
end

local ok, why = nginx.available()
if not ok then
   print("openresty bench skipped: " .. why)
   return
end
local function have_wrk()
   local p = io.popen("command -v wrk")
   local found = p:read("*a")
   p:close()
   return found ~= ""
end
if not have_wrk() then
   print("openresty bench skipped: wrk is not installed (apt-get install wrk)")
   return
end

local MODES = { "plain", "chunked", "gzip" }
local HANDLERS = {
   { name = "prefect", label = "lua-prefect, every field", code = "app.prefect('%s')" },
   { name = "fields", label = "lua-prefect, fields of 4", code = "app.prefect('%s', 'fields')" },
   { name = "exclude", label = "lua-prefect, exclude 3 branches", code = "app.prefect('%s', 'exclude')" },
   { name = "hand", label = "by hand: ngx.socket.tcp + cjson", code = "app.hand('%s')" },
}

local INIT = ("package.path = %q .. package.path; require 'prefect.transport.ngx';"
   .. " app = require 'lib.openresty_app'"):format(root .. "/bench/?.lua;")

-- The pre-encoded page and its gzip, written where the upstream reads them.
local tmp = disk.tmpdir()
local page_path = tmp .. "/page.json"
disk.write(page_path, require("prefect.testing.dataset").page_text(200, 1))
assert(os.execute("gzip -6 -k -c " .. page_path .. " > " .. page_path .. ".gz"))

local function locations(make)
   local out = {}
   for _, mode in ipairs(MODES) do out[#out + 1] = make(mode) end
   return table.concat(out, "\n")
end

local upstream, front
local function stop_all()
   if front then front:stop() end
   if upstream then upstream:stop() end
   disk.remove_tree(tmp)
end

local function worker_pid(master)
   local children = proc.read_all(("/proc/%d/task/%d/children"):format(master, master)) or ""
   return tonumber(children:match("%d+"))
end

local TICK = 0.01 -- USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s
local function cpu_of(pid)
   local stat = assert(proc.read_all("/proc/" .. pid .. "/stat"), "worker gone")
   local after_comm = stat:match("%) (.*)$")
   local fields = {}
   for f in after_comm:gmatch("%S+") do fields[#fields + 1] = f end
   -- fields[1] is field 3 (state): utime is field 14, stime 15
   return (tonumber(fields[12]) + tonumber(fields[13])) * TICK
end

local function fd_count(pid)
   local p = io.popen("ls /proc/" .. pid .. "/fd | wc -l")
   local n = tonumber(p:read("*a"))
   p:close()
   return n
end

local function wrk(url)
   local p = io.popen(("wrk -t1 -c4 -d%ds %s 2>&1"):format(seconds, url))
   local out = p:read("*a")
   p:close()
   local requests = tonumber(out:match("(%d+) requests in"))
   local bad = tonumber(out:match("Non%-2xx or 3xx responses: (%d+)")) or 0
   local socket_errors = out:match("Socket errors: ([^\n]+)")
   return requests, bad, socket_errors, out
end

local function run()
   upstream = nginx.start{
      environ = { BENCH_PAGE = page_path }, init = INIT, log_level = "warn",
      locations = locations(function(mode)
         return ("location ^~ /%s/ { access_log off; content_by_lua_block { app.upstream('%s') } }")
            :format(mode, mode)
      end) .. "\nlocation = /served { content_by_lua_block { app.served() } }",
   }
   local front_locations = {
      "location = /memory { access_log off; content_by_lua_block { app.memory() } }",
   }
   for _, h in ipairs(HANDLERS) do
      front_locations[#front_locations + 1] = locations(function(mode)
         return ("location = /%s/%s { access_log off; content_by_lua_block { %s } }")
            :format(h.name, mode, h.code:format(mode))
      end)
   end
   front = nginx.start{
      environ = { BENCH_UPSTREAM = "127.0.0.1:" .. upstream.port }, init = INIT, log_level = "warn",
      locations = table.concat(front_locations, "\n"),
   }
   local worker = assert(worker_pid(front.pid), "no front worker")
   local upstream_worker = assert(worker_pid(upstream.pid), "no upstream worker")

   -- Every handler gives the same summary of the same page, one upstream request per request.
   local expected
   for _, h in ipairs(HANDLERS) do
      for _, mode in ipairs(MODES) do
         local _, before = upstream:get("/served")
         local status, body = front:get("/" .. h.name .. "/" .. mode)
         local _, after = upstream:get("/served")
         assert(status == 200, ("%s/%s: %s %s\n%s"):format(h.name, mode, tostring(status), tostring(body),
            front:error_log()))
         expected = expected or body
         assert(body == expected, ("%s/%s answered %q, expected %q"):format(h.name, mode, body, expected))
         assert(tonumber(after) - tonumber(before) == 1,
            h.name .. "/" .. mode .. ": not one upstream request")
      end
   end
   print(("summary of the page (runs, COMPLETED, longest name): %s"):format(expected:gsub("%s+$", "")))

   local function memory_kb()
      local _, body = front:get("/memory")
      return tonumber(body)
   end
   local samples = { fds = {}, heap = {} }
   local function sample()
      samples.fds[#samples.fds + 1] = fd_count(worker)
      samples.heap[#samples.heap + 1] = memory_kb()
   end

   -- warm-up: traces, pools, heap size
   for _, h in ipairs(HANDLERS) do
      for _, mode in ipairs(MODES) do wrk(front.url .. "/" .. h.name .. "/" .. mode) end
   end
   sample()

   local results = {}
   local errors = 0
   for round = 1, rounds do
      for k = 0, #HANDLERS * #MODES - 1 do
         -- rotate the order from round to round
         local idx = (k + round - 1) % (#HANDLERS * #MODES)
         local h, mode = HANDLERS[math.floor(idx / #MODES) + 1], MODES[idx % #MODES + 1]
         local key = h.name .. "/" .. mode
         local cpu0, up0 = cpu_of(worker), cpu_of(upstream_worker)
         local requests, bad, socket_errors = wrk(front.url .. "/" .. key)
         local cpu, up = cpu_of(worker) - cpu0, cpu_of(upstream_worker) - up0
         if not requests or bad > 0 or socket_errors then
            errors = errors + 1
            io.stderr:write(("%s: %s requests, %d non-2xx, socket errors %s\n"):format(key,
               tostring(requests), bad or 0, tostring(socket_errors)))
         end
         local r = results[key] or { rps = {}, cpu = {}, busy = {}, up = {} }
         results[key] = r
         r.rps[round] = (requests or 0) / seconds
         r.cpu[round] = cpu / math.max(requests or 1, 1)
         r.busy[round] = cpu / seconds
         r.up[round] = up / seconds
         sample()
      end
   end

   print(("\n%d rounds of %d s per handler and upstream, wrk -t1 -c4; medians"):format(rounds, seconds))
   print(("%-32s %-8s %9s %9s %7s %7s %10s %10s"):format("handler", "upstream", "req/s", "ms CPU/req",
      "worker", "upstr.", "req/s x", "CPU/req x"))
   for _, mode in ipairs(MODES) do
      local hand = results["hand/" .. mode]
      local hand_rps, hand_cpu = proc.median(hand.rps), proc.median(hand.cpu)
      for _, h in ipairs(HANDLERS) do
         local r = results[h.name .. "/" .. mode]
         local rps, cpu = proc.median(r.rps), proc.median(r.cpu)
         print(("%-32s %-8s %9.0f %9.3f %6.0f%% %6.0f%% %10.2f %10.2f"):format(h.label, mode, rps, cpu * 1000,
            proc.median(r.busy) * 100, proc.median(r.up) * 100, rps / hand_rps, cpu / hand_cpu))
      end
   end
   local function range(list)
      local lo, hi = math.huge, -math.huge
      for _, v in ipairs(list) do lo, hi = math.min(lo, v), math.max(hi, v) end
      return lo, hi
   end
   local flo, fhi = range(samples.fds)
   local hlo, hhi = range(samples.heap)
   print(("\nfront worker over %d samples (after warm-up and after every load): fds %d..%d,"
      .. " Lua heap %.0f..%.0f KB (first %.0f, last %.0f)"):format(#samples.fds, flo, fhi, hlo, hhi,
      samples.heap[1], samples.heap[#samples.heap]))
   print(("loads with errors (non-2xx or socket errors): %d"):format(errors))
   print("(worker, upstr.: CPU of the front worker and of the upstream worker, share of one core;"
      .. " x: lua-prefect / by hand, req/s higher is better, CPU/req lower is better)")
end

local okrun, err = pcall(run)
stop_all()
if not okrun then error(err, 0) end
