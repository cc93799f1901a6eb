--- End-to-end benchmark of reading task runs (issue #8): the client against the loops users write
-- by hand, on loopback, against the bundled test server in its own process.
--
--   cpu       client CPU time per 1,000 runs read through `for run in client:task_runs(q)`, against
--             (a) luasocket http.request + lua-cjson and (b) Debian's lua-curl + lua-cjson, pages
--             of 200 by offset. Only the reading process's CPU time counts (os.clock: all its
--             threads), the server is another process, and every page is encoded and cached by
--             the server before the first timed read.
--   breakdown where a run's CPU goes: lua-cjson and prefect.core's decoder on the same page, the
--             decoder behind a session, and the client's iterator, in one process.
--   include   the extra CPU and wall time per 1,000 runs of include = {"flow_run", "flow"}.
--   memory    peak RSS (VmHWM) of a process that reads N runs, for two sizes.
--   first     time to the first run of a 200-run page whose body drips slowly, and to its last.
--   prefetch  a server that waits D ms before each page, a caller that spends C ms per page:
--             wall time per page with prefetch on and off.
--   pipeline  keeping n page requests in flight: the prototype (a loop over a prefect.core
--             session with n requests open, handing out runs in order) and the client's
--             `concurrency = n` option, against the same delaying server.
--
-- Each measurement runs in a fresh child process (`--child ...`), so peak RSS and CPU belong to
-- that read alone; numbers are medians over the repetitions, ratios are of medians from this run.
-- Not part of the tests; nothing here asserts a time.
--
--   usage: lua5.4 bench/e2e.lua [--quick | --full]
--            [--only cpu,breakdown,include,memory,first,prefetch,pipeline,python] [--baseline DIR]
--   (after `make build-all`; --quick is the default, --full reads 1,000,000 runs). --baseline adds
--   the client's rows read by the checkout at DIR (built with `make build-all`), interleaved with
--   this one's, to show what a change costs.

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

local unpack = table.unpack or unpack -- luacheck: ignore 143

local PAGE = 200

---------------------------------------------------------------------------------------------------
-- Readers: each reads n runs from url and hands every run to on_run.

local function consume_factory()
   local count, last_id = 0, nil
   local function on_run(run)
      count = count + 1
      last_id = run.id
   end
   return on_run, function() return count, last_id end
end

local function client_reader(opts)
   local prefect = require("prefect")
   return function(url, n, on_run, headers)
      local client = prefect.client{
         url = url, retries = 0, accept_encoding = opts.accept_encoding, headers = headers,
         api_key = false,
      }
      local got = 0
      for run in client:task_runs({ sort = "ID_DESC", limit = n }, opts.call) do
         on_run(run)
         got = got + 1
      end
      client:close()
      return got
   end
end

local function pages_reader(call)
   local prefect = require("prefect")
   return function(url, n, on_run)
      local client = prefect.client{ url = url, retries = 0, accept_encoding = false, api_key = false }
      local got = 0
      while got < n do
         local page = assert(client:page({ sort = "ID_DESC", limit = math.min(PAGE, n - got) }, got, call))
         for _, run in ipairs(page) do on_run(run) end
         got = got + #page
         if #page == 0 then break end
      end
      client:close()
      return got
   end
end

local READERS = {
   client = function() return client_reader{ accept_encoding = false } end,
   ["client-gzip"] = function() return client_reader{ accept_encoding = true } end,
   ["client-fields"] = function()
      return client_reader{ accept_encoding = false, call = { fields = { "id", "name", "state.type" } } }
   end,
   ["client-include"] = function()
      return client_reader{ accept_encoding = false, call = { include = { "flow_run", "flow" } } }
   end,
   ["client-include-names"] = function()
      return client_reader{ accept_encoding = false,
         call = { include = { flow_run = { "name" }, flow = { "name" } } } }
   end,
   -- client:page page after page: every call is a read of its own, so with include every page
   -- asks for its flow runs and flows (no cache across pages): the most include can cost
   pages = function() return pages_reader(nil) end,
   ["pages-include"] = function() return pages_reader{ include = { "flow_run", "flow" } } end,
   luasocket = function() return require("peers.luasocket_cjson").read end,
   luacurl = function() return require("peers.luacurl_cjson").read end,
}

---------------------------------------------------------------------------------------------------
-- Child processes

local function emit(fields)
   local parts = { "RESULT" }
   for _, k in ipairs(fields) do parts[#parts + 1] = k[1] .. "=" .. tostring(k[2]) end
   io.write(table.concat(parts, " "), "\n")
end

local child = {}

-- cpu <reader> <url> <n>: one warm-up page (connection, buffers, code paths), then n runs timed.
function child.cpu(name, url, n)
   n = tonumber(n)
   local read = READERS[name]()
   local warm = consume_factory()
   read(url, PAGE, warm)
   local on_run, result = consume_factory()
   local cpu0, wall0 = proc.cpu_seconds(), socket.gettime()
   local got = read(url, n, on_run)
   local cpu, wall = proc.cpu_seconds() - cpu0, socket.gettime() - wall0
   assert(got == n and result() == n, ("%s read %d of %d runs"):format(name, got, n))
   emit{ { "cpu", cpu }, { "wall", wall }, { "runs", got } }
end

-- memory <reader> <url> <n>: peak RSS of reading n runs (and after the first 1,000).
function child.memory(name, url, n)
   n = tonumber(n)
   local read = READERS[name]()
   local base = proc.rss_kb()
   local early
   local count = 0
   local function on_run(run)
      count = count + 1
      if count == 1000 then early = proc.peak_rss_kb() end
      if run.id == nil then error("run without id") end
   end
   local cpu0, wall0 = proc.cpu_seconds(), socket.gettime()
   local got = read(url, n, on_run)
   local cpu, wall = proc.cpu_seconds() - cpu0, socket.gettime() - wall0
   assert(got == n, ("%s read %d of %d runs"):format(name, got, n))
   emit{ { "base_kb", base }, { "early_kb", early or proc.peak_rss_kb() }, { "peak_kb", proc.peak_rss_kb() },
      { "cpu", cpu }, { "wall", wall }, { "runs", got } }
end

-- first <reader> <url> <fault>: seconds to the first and the last run of one 200-run page.
function child.first(name, url, fault)
   local read = READERS[name]()
   read(url, PAGE, (consume_factory())) -- connection and code paths warm, no fault
   local t0 = socket.gettime()
   local first, last
   local got = read(url, PAGE, function()
      local now = socket.gettime()
      first = first or now
      last = now
   end, { ["X-Test-Fault"] = fault })
   assert(got == PAGE)
   emit{ { "first", first - t0 }, { "last", last - t0 } }
end

-- prefetch <url> <delay_ms> <caller_ms> <pages> <on|off>: wall seconds per page.
function child.prefetch(url, delay_ms, caller_ms, pages, mode)
   local prefect = require("prefect")
   delay_ms, caller_ms, pages = tonumber(delay_ms), tonumber(caller_ms), tonumber(pages)
   local client = prefect.client{ url = url, retries = 0, accept_encoding = false, api_key = false,
      headers = { ["X-Test-Fault"] = "delay_ms=" .. delay_ms } }
   -- warm: connection and code paths (one page, no wait)
   for _ in client:task_runs{ limit = PAGE } do end -- luacheck: ignore 512
   local t0 = socket.gettime()
   local count = 0
   for _ in client:task_runs({ sort = "ID_DESC", limit = pages * PAGE }, { prefetch = mode ~= "off" }) do
      count = count + 1
      if count % PAGE == 0 and caller_ms > 0 then socket.sleep(caller_ms / 1000) end
   end
   assert(count == pages * PAGE)
   emit{ { "per_page", (socket.gettime() - t0) / pages } }
end

-- pipeline <url> <delay_ms> <pages> <n>: n page requests kept in flight on one prefect.core
-- session, runs handed out in page order: the shape of a `concurrency = n` pager.
function child.pipeline(url, delay_ms, pages, n)
   local core = require("prefect.core")
   pages, n = tonumber(pages), tonumber(n)
   local session = core.session{ accept_encoding = false }
   local headers = { "Content-Type: application/json", "X-Test-Fault: delay_ms=" .. delay_ms }
   local function open(page)
      return assert(session:request{
         method = "POST", url = url .. "/task_runs/filter", headers = headers,
         body = ('{"sort":"ID_DESC","limit":%d,"offset":%d}'):format(PAGE, (page - 1) * PAGE),
         decoder = core.decoder(),
      })
   end
   local function run_all(total)
      local inflight, next_page = {}, 1
      local count = 0
      for page = 1, total do
         while next_page <= total and next_page < page + n do
            inflight[next_page] = open(next_page)
            next_page = next_page + 1
         end
         local req = inflight[page]
         inflight[page] = nil
         local status = req:response()
         assert(status == 200, "status " .. tostring(status))
         while true do
            local run, err = req:next()
            if run == nil then
               assert(not err, err and err.message)
               break
            end
            count = count + 1
         end
         req:close()
      end
      return count
   end
   run_all(math.min(n, pages)) -- warm: connections
   local t0 = socket.gettime()
   assert(run_all(pages) == pages * PAGE)
   emit{ { "per_page", (socket.gettime() - t0) / pages } }
   session:close()
end

-- concurrency <url> <delay_ms> <pages> <n> <limit|count>: wall seconds per page of
-- client:task_runs(q, {concurrency = n}); "limit" gives the query a limit of pages * 200, "count"
-- gives none, so the client counts first and reads to the end of the dataset (pages + 1 pages).
function child.concurrency(url, delay_ms, pages, n, total)
   local prefect = require("prefect")
   pages, n = tonumber(pages), tonumber(n)
   local client = prefect.client{ url = url, retries = 0, accept_encoding = false, api_key = false,
      headers = { ["X-Test-Fault"] = "delay_ms=" .. delay_ms } }
   -- warm: as many connections as the timed read keeps busy
   for _ in client:task_runs({ limit = n * PAGE }, { concurrency = n }) do end -- luacheck: ignore 512
   local q = { sort = "ID_DESC", limit = total == "limit" and pages * PAGE or nil }
   local t0 = socket.gettime()
   local count = 0
   for _ in client:task_runs(q, { concurrency = n }) do count = count + 1 end
   local read_pages = math.ceil(count / PAGE)
   assert(count == (total == "limit" and pages or pages + 1) * PAGE, "read " .. count)
   emit{ { "per_page", (socket.gettime() - t0) / read_pages } }
   client:close()
end

-- breakdown <url>: where a run's CPU goes, in one process: one 200-run page decoded by lua-cjson
-- and by prefect.core (whole, and with fields), then read through prefect.core's session alone and
-- through the client (best of the repetitions, microseconds per run).
function child.breakdown(url, reps)
   local core = require("prefect.core")
   local cjson = require("cjson")
   local prefect = require("prefect")
   reps = tonumber(reps) or 5
   local pages = 10
   local session = core.session{ accept_encoding = false }
   local function post(offset, decoder)
      return assert(session:request{
         method = "POST", url = url .. "/task_runs/filter", headers = { "Content-Type: application/json" },
         body = ('{"sort":"ID_DESC","limit":%d,"offset":%d}'):format(PAGE, offset), decoder = decoder,
      })
   end
   local req = post(0)
   local body = assert(req:body())
   req:close()
   local function best_us(runs, fn)
      fn()
      local best = math.huge
      for _ = 1, reps do
         collectgarbage()
         local t0 = proc.cpu_seconds()
         fn()
         local t = proc.cpu_seconds() - t0
         if t < best then best = t end
      end
      return best / runs * 1e6
   end
   local function decode_page(opts)
      return function()
         for _ = 1, pages do
            local d = core.decoder(opts)
            assert(d:feed(body))
            assert(d:finish())
            local n = 0
            while d:next() ~= nil do n = n + 1 end
            assert(n == PAGE)
         end
      end
   end
   local out = {
      { "bytes_per_run", #body / PAGE },
      { "cjson_decode", best_us(pages * PAGE, function()
         for _ = 1, pages do assert(#cjson.decode(body) == PAGE) end
      end) },
      { "core_decoder", best_us(pages * PAGE, decode_page(nil)) },
      { "core_decoder_fields",
         best_us(pages * PAGE, decode_page{ fields = { "id", "name", "state.type" } }) },
      { "core_session_next", best_us(pages * PAGE, function()
         for p = 0, pages - 1 do
            local r = post(p * PAGE, core.decoder())
            local n = 0
            while r:next() ~= nil do n = n + 1 end
            assert(n == PAGE)
            r:close()
         end
      end) },
      { "client_iterator", best_us(pages * PAGE, function()
         local client = prefect.client{ url = url, accept_encoding = false, api_key = false }
         local n = 0
         for _ in client:task_runs{ sort = "ID_DESC", limit = pages * PAGE } do n = n + 1 end
         client:close()
         assert(n == pages * PAGE)
      end) },
   }
   session:close()
   emit(out)
end

---------------------------------------------------------------------------------------------------
-- The parent: servers, children, medians, ratios.

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs a shell command that prints one "RESULT k=v ..." line; returns its fields.
local function run_result(cmd)
   local p = assert(io.popen(cmd .. " 2>&1", "r"))
   local out = p:read("*a")
   p:close()
   local line = out:match("RESULT ([^\n]*)")
   if not line then error("child failed: " .. cmd .. "\n" .. out, 0) end
   local r = {}
   for k, v in line:gmatch("(%S+)=(%S+)") do r[k] = tonumber(v) or v end
   return r
end

-- A child of this checkout's bench, or of the checkout at `dir` (see --baseline).
local function run_child_in(dir, lua, ...)
   local words = { "cd", quote(dir), "&&", quote(lua), "bench/e2e.lua", "--child" }
   for _, a in ipairs({ ... }) do words[#words + 1] = quote(a) end
   return run_result(table.concat(words, " "))
end

local function run_child(lua, ...) return run_child_in(root, lua, ...) end

local function have(lua, module)
   local ok = os.execute(quote(lua) .. " -e " .. quote("require'" .. module .. "'") .. " >/dev/null 2>&1")
   return ok == true or ok == 0
end

local function start_server(n, server_lua)
   local test_server = require("test_server")
   local t0 = socket.gettime()
   local srv = test_server.start{ dataset = { generate = n, seed = 1, shape = 3 }, lua = server_lua,
      start_timeout = 600 }
   io.write(("  server: %d generated Prefect-3 runs, %s, up in %.1f s\n"):format(n, server_lua,
      socket.gettime() - t0))
   return srv
end

local function server_rss_mb(srv)
   local status = proc.read_all("/proc/" .. tostring(srv.pid) .. "/status") or ""
   local kb = tonumber(status:match("VmRSS:%s*(%d+) kB") or "")
   local hwm = tonumber(status:match("VmHWM:%s*(%d+) kB") or "")
   return kb and kb / 1024, hwm and hwm / 1024
end

local function first_line(cmd)
   local p = io.popen(cmd .. " 2>/dev/null")
   if not p then return "?" end
   local s = p:read("*l") or "?"
   p:close()
   return s
end

local function machine()
   local cpu = (proc.read_all("/proc/cpuinfo") or ""):match("model name%s*:%s*([^\n]+)") or "?"
   io.write(("machine: %s CPUs, %s; %s; %s; kernel %s\n"):format(first_line("nproc"), cpu,
      first_line("lua5.4 -v"), first_line("luajit -v"):gsub(" %-%- .*", ""), first_line("uname -r")))
end

local function fmt_ms(s) return ("%.1f ms"):format(s * 1000) end
local function fmt_delta(s) return ("%+.1f ms"):format(s * 1000) end

local function section_cpu(cfg, interps, server_lua)
   io.write(("\n== CPU per 1,000 runs read (client process only; %d runs per read, median of %d reads)\n")
      :format(cfg.cpu_runs, cfg.reps))
   local srv = start_server(cfg.cpu_dataset, server_lua)
   local ok, err = pcall(function()
      -- Pre-warm: the server encodes and caches every page once, so the reads below are served
      -- from its cache (the server is not what is being measured).
      local t0 = socket.gettime()
      run_child("lua5.4", "memory", "client", srv.url, tostring(cfg.cpu_dataset))
      io.write(("  pre-warm: every page read once in %.1f s\n"):format(socket.gettime() - t0))
      for _, lua in ipairs(interps) do
         local rows = {}
         for _, name in ipairs{ "client", "client-gzip", "client-fields", "luasocket", "luacurl" } do
            local runnable = have(lua, name == "luacurl" and "curl" or "cjson")
            if runnable then
               rows[#rows + 1] = { name = name, label = name, dir = root, cpu = {}, wall = {} }
            end
         end
         if cfg.baseline then
            for _, name in ipairs{ "client", "client-gzip", "client-fields" } do
               rows[#rows + 1] = {
                  name = name, label = name .. "@base", dir = cfg.baseline, cpu = {}, wall = {},
               }
            end
         end
         -- interleaved, so drift (frequency, other load) spreads over every reader alike
         for _ = 1, cfg.reps do
            for _, row in ipairs(rows) do
               local r = run_child_in(row.dir, lua, "cpu", row.name, srv.url, tostring(cfg.cpu_runs))
               row.cpu[#row.cpu + 1] = r.cpu / r.runs * 1000
               row.wall[#row.wall + 1] = r.wall / r.runs * 1000
            end
         end
         local base
         io.write(("  %s:\n"):format(lua))
         for _, row in ipairs(rows) do
            row.cpu_med, row.wall_med = proc.median(row.cpu), proc.median(row.wall)
            if row.label == "client" then base = row.cpu_med end
         end
         for _, row in ipairs(rows) do
            io.write(("    %-18s cpu %8s/1000 runs  (x%5.2f of client)   wall %8s/1000 runs\n"):format(
               row.label, fmt_ms(row.cpu_med), row.cpu_med / base, fmt_ms(row.wall_med)))
         end
      end
      io.write("    (client: no gzip, the peers' bytes; client-gzip: the default accept_encoding;\n"
         .. "     client-fields: fields = {id, name, state.type}; x: CPU / client's CPU"
         .. (cfg.baseline and (";\n     @base: the same reader from " .. cfg.baseline) or "") .. ")\n")
   end)
   srv:stop()
   if not ok then error(err, 0) end
end

-- What include = {"flow_run", "flow"} adds to a read: the same read with and without it, in
-- interleaved rounds (fresh child processes), medians; the difference is the cost of the
-- /flow_runs/filter and /flows/filter requests of each page and of decoding and joining their
-- answers. The generated dataset has about one flow run per 60 runs, so a long read meets most of
-- them in its first pages and the cache answers the rest; reading with client:page page after page
-- (each call a read of its own, no cache) shows the most include can cost.
local function section_include(cfg, interps, server_lua)
   local rounds = cfg.include_rounds
   io.write(("\n== include = {\"flow_run\", \"flow\"}: extra cost per 1,000 runs (%d runs per read, median"
      .. " of %d interleaved rounds)\n"):format(cfg.cpu_runs, rounds))
   local srv = start_server(cfg.cpu_dataset, server_lua)
   local ok, err = pcall(function()
      run_child("lua5.4", "memory", "client", srv.url, tostring(cfg.cpu_dataset))
      -- requests of one read each way (the server counts them)
      local requests = {}
      for _, name in ipairs{ "client", "client-include", "pages", "pages-include" } do
         local before = srv:stats().requests
         run_child("lua5.4", "cpu", name, srv.url, tostring(cfg.cpu_runs))
         requests[name] = srv:stats().requests - before
      end
      io.write(("  requests per read: task_runs %d, with include %d (flow runs and flows cached across"
         .. " pages); client:page %d, with include %d (every page asks)\n"):format(requests.client,
         requests["client-include"], requests.pages, requests["pages-include"]))
      local names = { "client", "client-include", "client-include-names", "pages", "pages-include" }
      for _, lua in ipairs(interps) do
         local rows = {}
         for _, name in ipairs(names) do rows[#rows + 1] = { name = name, cpu = {}, wall = {} } end
         for _ = 1, rounds do
            for _, row in ipairs(rows) do
               local r = run_child(lua, "cpu", row.name, srv.url, tostring(cfg.cpu_runs))
               row.cpu[#row.cpu + 1] = r.cpu / r.runs * 1000
               row.wall[#row.wall + 1] = r.wall / r.runs * 1000
            end
         end
         io.write(("  %s:\n"):format(lua))
         local client_base, pages_base
         for _, row in ipairs(rows) do
            row.cpu_med, row.wall_med = proc.median(row.cpu), proc.median(row.wall)
            if row.name == "client" then client_base = row end
            if row.name == "pages" then pages_base = row end
         end
         for _, row in ipairs(rows) do
            local base = row.name:find("^pages") and pages_base or client_base
            io.write(("    %-21s cpu %8s  wall %8s /1000 runs   extra: cpu %8s (x%.2f)  wall %8s (x%.2f)\n")
               :format(row.name, fmt_ms(row.cpu_med), fmt_ms(row.wall_med),
                  fmt_delta(row.cpu_med - base.cpu_med), row.cpu_med / base.cpu_med,
                  fmt_delta(row.wall_med - base.wall_med), row.wall_med / base.wall_med))
         end
      end
      io.write("    (client: task_runs, no include, no gzip; client-include-names: include = {flow_run ="
         .. " {\"name\"}, flow = {\"name\"}}; pages: client:page page after page, each a read of its own,\n"
         .. "     so with include every page fetches its flow runs and flows: the upper bound;"
         .. " extra is against client or pages)\n")
   end)
   srv:stop()
   if not ok then error(err, 0) end
end

local function section_breakdown(cfg, interps, server_lua)
   io.write(("\n== Where a run's CPU goes (microseconds per run, best of %d, one process; Prefect-3 runs)\n")
      :format(cfg.reps))
   local srv = start_server(2000, server_lua)
   local ok, err = pcall(function()
      run_child("lua5.4", "memory", "client", srv.url, "2000")
      for _, lua in ipairs(interps) do
         local r = run_child(lua, "breakdown", srv.url, tostring(cfg.reps))
         io.write(("  %-6s %.0f bytes/run | cjson.decode %.2f | prefect.core decoder %.2f (x%.2f faster),"
            .. " with 3 fields %.2f | core session+decoder %.2f | client iterator %.2f\n"):format(lua,
            r.bytes_per_run, r.cjson_decode, r.core_decoder, r.cjson_decode / r.core_decoder,
            r.core_decoder_fields, r.core_session_next, r.client_iterator))
      end
   end)
   srv:stop()
   if not ok then error(err, 0) end
end

local function section_memory(cfg, server_lua)
   local sizes = cfg.mem_sizes
   io.write(("\n== Peak RSS while reading %s runs (Lua 5.4 unless named)\n"):format(
      table.concat(sizes, " and ")))
   local srv = start_server(sizes[#sizes], server_lua)
   local ok, err = pcall(function()
      local plan = {
         { "lua5.4", "client", sizes }, { "luajit", "client", cfg.luajit_mem_sizes },
         { "lua5.4", "luasocket", cfg.peer_mem_sizes }, { "luajit", "luacurl", cfg.peer_mem_sizes },
      }
      for _, p in ipairs(plan) do
         local lua, name, list = p[1], p[2], p[3]
         if have(lua, name == "luacurl" and "curl" or "cjson") then
            local cells = {}
            for _, n in ipairs(list) do
               local r = run_child(lua, "memory", name, srv.url, tostring(n))
               cells[#cells + 1] = ("%7d runs: peak %5.1f MB (before the first request: %4.1f,"
                  .. " after 1,000 runs: %4.1f) in %5.1f s, client cpu %4.1f s"):format(n, r.peak_kb / 1024,
                  r.base_kb / 1024, r.early_kb / 1024, r.wall, r.cpu)
            end
            io.write(("  %-6s %-10s %s\n"):format(lua, name, table.concat(cells, "\n" .. (" "):rep(20))))
         end
      end
      local rss, hwm = server_rss_mb(srv)
      if rss then io.write(("  server process: RSS %.0f MB now, peak %.0f MB\n"):format(rss, hwm)) end
   end)
   srv:stop()
   if not ok then error(err, 0) end
end

local function section_first(cfg, server_lua)
   local fault = cfg.drip
   io.write(("\n== Time to first run, one 200-run page dripped by the server (%s), median of %d\n"):format(
      fault, cfg.reps))
   local srv = start_server(2000, server_lua)
   local ok, err = pcall(function()
      run_child("lua5.4", "memory", "client", srv.url, "2000")
      for _, p in ipairs{ { "lua5.4", "client" }, { "luajit", "client" }, { "lua5.4", "luasocket" } } do
         local firsts, lasts = {}, {}
         for _ = 1, cfg.reps do
            local r = run_child(p[1], "first", p[2], srv.url, fault)
            firsts[#firsts + 1], lasts[#lasts + 1] = r.first, r.last
         end
         local f, l = proc.median(firsts), proc.median(lasts)
         io.write(("  %-6s %-10s first run after %9s, last run after %9s (first/last %.3f)\n"):format(
            p[1], p[2], fmt_ms(f), fmt_ms(l), f / l))
      end
   end)
   srv:stop()
   if not ok then error(err, 0) end
end

local function section_prefetch(cfg, server_lua)
   io.write(("\n== Prefetch: server waits D ms before each page, the loop spends C ms per page"
      .. " (%d pages of 200, median of %d; Lua 5.4)\n"):format(cfg.prefetch_pages, cfg.reps))
   local srv = start_server(cfg.prefetch_pages * PAGE + PAGE, server_lua)
   local ok, err = pcall(function()
      run_child("lua5.4", "memory", "client", srv.url, tostring(cfg.prefetch_pages * PAGE))
      for _, dc in ipairs(cfg.prefetch_cases) do
         local d, c = dc[1], dc[2]
         local res = {}
         for _, mode in ipairs{ "on", "off" } do
            local list = {}
            for _ = 1, cfg.reps do
               local r = run_child("lua5.4", "prefetch", srv.url, tostring(d), tostring(c),
                  tostring(cfg.prefetch_pages), mode)
               list[#list + 1] = r.per_page
            end
            res[mode] = proc.median(list)
         end
         io.write(("  D=%3d C=%3d  max(D,C)=%3d D+C=%3d | prefetch on %8s/page, off %8s/page"
            .. " (off/on %.2f)\n")
            :format(d, c, math.max(d, c), d + c, fmt_ms(res.on), fmt_ms(res.off), res.off / res.on))
      end
   end)
   srv:stop()
   if not ok then error(err, 0) end
end

local function section_pipeline(cfg, server_lua)
   local d = cfg.pipeline_delay
   io.write(("\n== Requests in flight, server waits D=%d ms before each page (%d pages of 200,"
      .. " median of %d)\n"):format(d, cfg.pipeline_pages, cfg.reps))
   local srv = start_server(cfg.pipeline_pages * PAGE + PAGE, server_lua)
   local ok, err = pcall(function()
      run_child("lua5.4", "memory", "client", srv.url, tostring(cfg.pipeline_pages * PAGE))
      local base
      for _, mode in ipairs{ "off", "on" } do
         local list = {}
         for _ = 1, cfg.reps do
            list[#list + 1] = run_child("lua5.4", "prefetch", srv.url, tostring(d), "0",
               tostring(cfg.pipeline_pages), mode).per_page
         end
         local m = proc.median(list)
         base = base or m
         io.write(("  client:task_runs, prefetch %-4s       %8s/page  (x%.2f faster than no prefetch)\n")
            :format(mode, fmt_ms(m), base / m))
      end
      for _, n in ipairs(cfg.pipeline_n) do
         local list = {}
         for _ = 1, cfg.reps do
            list[#list + 1] = run_child("lua5.4", "pipeline", srv.url, tostring(d),
               tostring(cfg.pipeline_pages), tostring(n)).per_page
         end
         local m = proc.median(list)
         io.write(("  core, %d request(s) in flight, in order %8s/page  (x%.2f faster than no prefetch)\n")
            :format(n, fmt_ms(m), base / m))
      end
      for _, case in ipairs(cfg.pipeline_client) do
         local n, total = case[1], case[2]
         local list = {}
         for _ = 1, cfg.reps do
            list[#list + 1] = run_child("lua5.4", "concurrency", srv.url, tostring(d),
               tostring(cfg.pipeline_pages), tostring(n), total).per_page
         end
         local m = proc.median(list)
         io.write(("  client:task_runs, concurrency = %d, %-5s %8s/page  (x%.2f faster than no prefetch)\n")
            :format(n, total, fmt_ms(m), base / m))
      end
   end)
   srv:stop()
   if not ok then error(err, 0) end
end

-- Prefect's own Python client (from the venv `make test-real` installs) beside this client, in
-- the same run against the same server: CPU per 1,000 runs and the process's peak RSS.
local PYTHON = root .. "/build/prefect-venv/bin/python"

local function run_python(url, n)
   return run_result(("%s %s %s %d"):format(quote(PYTHON), quote(root .. "/bench/peers/prefect_client.py"),
      quote(url), n))
end

local function section_python(cfg, server_lua)
   io.write(("\n== Prefect's Python client (%s) against this client, Lua 5.4: %d runs per read,"
      .. " median of %d\n"):format(
      first_line(quote(PYTHON) .. " -c 'import prefect; print(prefect.__version__)'"), cfg.cpu_runs,
      cfg.reps))
   local present = os.execute("test -x " .. quote(PYTHON))
   if not (present == true or present == 0) then
      io.write("  skipped: no build/prefect-venv (make test-real makes it)\n")
      return
   end
   local srv = start_server(cfg.cpu_dataset, server_lua)
   local ok, err = pcall(function()
      run_child("lua5.4", "memory", "client", srv.url, tostring(cfg.cpu_dataset))
      local rows = { { name = "client", cpu = {}, peak = {} },
         { name = "prefect (python)", cpu = {}, peak = {} } }
      for _ = 1, cfg.reps do
         local r = run_child("lua5.4", "memory", "client", srv.url, tostring(cfg.cpu_runs))
         rows[1].cpu[#rows[1].cpu + 1] = r.cpu / r.runs * 1000
         rows[1].peak[#rows[1].peak + 1] = r.peak_kb / 1024
         local py = run_python(srv.url, cfg.cpu_runs)
         assert(py.runs == cfg.cpu_runs, "the python client read " .. tostring(py.runs))
         rows[2].cpu[#rows[2].cpu + 1] = py.cpu / py.runs * 1000
         rows[2].peak[#rows[2].peak + 1] = py.peak_kb / 1024
      end
      local base = proc.median(rows[1].cpu)
      for _, row in ipairs(rows) do
         local c = proc.median(row.cpu)
         io.write(("    %-17s cpu %8s/1000 runs  (x%6.2f of client)   peak RSS %6.1f MB\n"):format(row.name,
            fmt_ms(c), c / base, proc.median(row.peak)))
      end
      io.write("    (python: get_client().read_task_runs, 200 a page, offset by hand;\n"
         .. "     its CPU counts the read only, not the import; RSS is the whole process's peak)\n")
   end)
   srv:stop()
   if not ok then error(err, 0) end
end

local CONFIGS = {
   quick = {
      reps = 3, include_rounds = 15, cpu_dataset = 10000, cpu_runs = 4000, mem_sizes = { 10000, 100000 },
      luajit_mem_sizes = { 10000, 100000 }, peer_mem_sizes = { 10000 }, drip = "drip_bytes=4096; drip_ms=10",
      prefetch_pages = 8, prefetch_cases = { { 50, 50 }, { 50, 20 }, { 20, 50 } },
      pipeline_delay = 50, pipeline_pages = 16, pipeline_n = { 1, 2, 4, 8 },
      pipeline_client = { { 1, "limit" }, { 2, "limit" }, { 4, "limit" }, { 4, "count" } },
   },
   full = {
      reps = 5, include_rounds = 21, cpu_dataset = 20000, cpu_runs = 10000, mem_sizes = { 100000, 1000000 },
      luajit_mem_sizes = { 100000 }, peer_mem_sizes = { 100000 }, drip = "drip_bytes=4096; drip_ms=10",
      prefetch_pages = 10, prefetch_cases = { { 50, 50 }, { 50, 20 }, { 20, 50 }, { 100, 100 } },
      pipeline_delay = 50, pipeline_pages = 24, pipeline_n = { 1, 2, 4, 8 },
      pipeline_client = { { 1, "limit" }, { 2, "limit" }, { 4, "limit" }, { 8, "limit" }, { 4, "count" } },
   },
}

local function main(argv)
   if argv[1] == "--child" then
      local kind = argv[2]
      local fn = child[kind] or error("unknown child " .. tostring(kind))
      return fn(unpack(argv, 3))
   end
   local mode, only, baseline = "quick", nil, nil
   local i = 1
   while i <= #argv do
      local a = argv[i]
      if a == "--quick" then mode = "quick"
      elseif a == "--full" then mode = "full"
      elseif a == "--baseline" then
         i = i + 1
         baseline = argv[i]
      elseif a == "--only" then
         i = i + 1
         only = {}
         for w in (argv[i] or ""):gmatch("[^,]+") do only[w] = true end
      else
         io.stderr:write("usage: lua5.4 bench/e2e.lua [--quick | --full] [--only cpu,breakdown,include,"
            .. "memory,first,prefetch,pipeline,python] [--baseline DIR]\n")
         os.exit(2)
      end
      i = i + 1
   end
   local cfg = CONFIGS[mode]
   cfg.baseline = baseline
   -- The server runs under LuaJIT when there is one: it is several times faster at encoding runs,
   -- and its speed only matters for wall times.
   local server_lua = have("luajit", "socket") and "luajit" or "lua5.4"
   local interps = { "lua5.4" }
   if have("luajit", "socket") then interps[2] = "luajit" end
   local t0 = socket.gettime()
   io.write(("lua-prefect end-to-end benchmark (--%s), %s\n"):format(mode, os.date("!%Y-%m-%d %H:%M UTC")))
   machine()
   local sections = {
      { "cpu", function() section_cpu(cfg, interps, server_lua) end },
      { "breakdown", function() section_breakdown(cfg, interps, server_lua) end },
      { "include", function() section_include(cfg, interps, server_lua) end },
      { "memory", function() section_memory(cfg, server_lua) end },
      { "first", function() section_first(cfg, server_lua) end },
      { "prefetch", function() section_prefetch(cfg, server_lua) end },
      { "pipeline", function() section_pipeline(cfg, server_lua) end },
      { "python", function() section_python(cfg, server_lua) end },
   }
   for _, s in ipairs(sections) do
      if not only or only[s[1]] then
         s[2]()
         io.flush()
      end
   end
   io.write(("\ntotal %.0f s\n"):format(socket.gettime() - t0))
end

main(arg or {})
