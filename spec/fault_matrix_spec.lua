-- Every fault the test server can inject, read through each way of reading:
-- the blocking iterator (`for run in client:task_runs(q)`), the non-blocking
-- handle (`client:start(q)` / `h:poll`), and, inside nginx, the iterator over
-- cosockets (spec/ngx/fault_matrix.lua runs this file in ngx_lua).
--
-- For each fault and each way, a user relies on:
-- - the read ends with the right error kind (or succeeds, for faults a
--   client must read through), and nothing crashes;
-- - the failed iterator stays failed: calling it again raises the same error;
--   a failed handle keeps returning nil and the same error;
-- - the same client stays usable: a normal read right after succeeds;
-- - nothing leaks: once the client is closed and garbage collected, the Lua
--   heap is back near where it was and no file descriptor is left open.
--
-- Retries are off (or their sleep is a no-op), so nothing waits in real time;
-- each fault hits only the first request that carries its key
-- (`fail_first=1; key=...`), so the client's next read is a normal one.

-- luacheck: globals ngx

local test_server = require("test_server")
local prefect = require("prefect")
local errors = require("prefect.errors")

local in_ngx = rawget(_G, "ngx") ~= nil and ngx.get_phase ~= nil
local FIXTURE_RUNS = 300

-- Loose bounds: a leak per read would show as far more once repeated, and
-- these are far above what a clean run moves (a few KiB of interned strings
-- and caches).
local HEAP_SLACK_KB = 256
-- Inside nginx a finished read leaves its connections in the worker's
-- keepalive pool (up to two per host after a read: the page and the
-- prefetched one), so the count may move by that much either way; the
-- repeated-faults test below shows that it does not grow.
local FD_SLACK = in_ngx and 2 or 0
-- The test server closes idle connections after this long. Inside nginx a
-- request whose pooled connection dies before any byte of the answer is sent
-- again on another connection (as libcurl does with its own reused
-- connections), so a read that must meet `reset` first waits until the pool's
-- connections are dead.
local KEEPALIVE_S = 0.2

local function full_gc()
   for _ = 1, 3 do collectgarbage("collect") end
end

local function heap_kb()
   full_gc()
   return collectgarbage("count")
end

local function assert_fds(before, after)
   assert.is_true(after <= before + FD_SLACK, ("file descriptors: %d before, %d after"):format(before, after))
end

local function fd_count()
   -- (not inside nginx, where lfs would set a global and the worker would warn about it)
   local ok, lfs = false, nil
   if not in_ngx then ok, lfs = pcall(require, "lfs") end
   local n = 0
   if ok then
      for name in lfs.dir("/proc/self/fd") do
         if name ~= "." and name ~= ".." then n = n + 1 end
      end
      return n - 1 -- the directory handle lfs holds while listing
   end
   local stat = assert(io.open("/proc/self/stat"))
   local pid = assert(stat:read("*n"))
   stat:close()
   local p = assert(io.popen("ls /proc/" .. pid .. "/fd"))
   for _ in p:lines() do n = n + 1 end
   p:close()
   return n
end

-- Every fault mode of the test server, and what a read that meets it ends with.
-- kind = nil: the read must succeed (the client reads through this).
-- runs: how many runs are handed out before the error ("some": those that were complete before the
-- break, which depends on how the compressed body happens to be cut).
local CASES = {
   { fault = "status=503", kind = "http", status = 503 },
   { fault = "status=429; retry_after=2", kind = "http", status = 429, retry_after = 2 },
   { fault = "status=429; retry_after_date=2", kind = "http", status = 429, retry_after = "date" },
   { fault = "status=500", kind = "http", status = 500 },
   { fault = "status=404", kind = "http", status = 404 },
   { fault = "html; status=502", kind = "http", status = 502 },
   { fault = "html; status=200", kind = "decode" },
   { fault = "content_type=text/plain", kind = "decode" },
   { fault = "invalid_json", kind = "decode", runs = 1 },
   { fault = "cut_after=1000", kind = "protocol", opts = { accept_encoding = false } },
   { fault = "cut_after=1000", kind = "protocol", runs = "some", opts = { accept_encoding = true } },
   { fault = "reset", kind = "connect", fresh = true },
   { fault = "delay_ms=2000", kind = "timeout", opts = { timeout = 0.5 } },
   -- Every run of the huge body has the same id: de-duplication hands out one (libcurl hands it out
   -- before it stops; the ngx transport refuses the Content-Length at once). max_response is reached
   -- within the first page's 200 runs, so the normal read after it is a small one.
   { fault = "huge=100000000", kind = "too_large", max_runs = 1, opts = { max_response = 20000 },
      after = 5 },
   -- A page with more runs than were asked for (a server, or a proxy, that ignores limit and offset):
   -- reading on would ask for pages forever when every page is answered alike.
   { fault = "huge=100000", kind = "protocol", runs = 1 },
   { fault = "gzip_bomb=100000000", kind = "too_large", opts = { max_response = 4000000 } },
   -- hostile heads and framing (docs/reliability.md): the same kind whichever transport reads them
   { fault = "status_line=HTTP/1.1 2000 OK", kind = "protocol" },
   { fault = "status_line=HTTP/1.1 199 Final", kind = "protocol" },
   { fault = "http09", kind = "protocol" }, -- its first line is a whole page of JSON
   { fault = "header_bytes=200000", kind = "too_large" },
   { fault = "head_line_endless", kind = "too_large" },
   { fault = "continue_flood", kind = "too_large" },
   { fault = "content_length2=3", kind = "protocol" },
   { fault = "bad_chunk", kind = "protocol" },
   -- the runs arrive whole before the trailers do
   { fault = "trailer_endless", kind = "too_large", runs = 200 },
   -- read through these
   { fault = "redirect" },
   { fault = "chunked" },
   { fault = "drip_bytes=4096; drip_ms=1" },
   { fault = "status=503", retried = true, opts = { retries = 1 } },
   { fault = "reset", retried = true, fresh = true, opts = { retries = 1 } },
}

local serial = 0

local function client_for(srv, case, transport)
   serial = serial + 1
   local o = {
      url = srv.url, getenv = function() return nil end, retries = 0,
      sleep = function() end, -- a retry (when allowed) does not wait in real time
      transport = transport,
      headers = {
         ["X-Test-Fault"] = ("fail_first=1; key=fm-%d-%s; %s"):format(serial, transport, case.fault),
      },
   }
   for k, v in pairs(case.opts or {}) do o[k] = v end
   return prefect.client(o)
end

local function check_error(case, err)
   assert.is_true(errors.is(err), "not a prefect error: " .. tostring(err))
   assert.equal(case.kind, err.kind, tostring(err))
   assert.is_string(err.message)
   if case.status then assert.equal(case.status, err.status, tostring(err)) end
   if case.retry_after == "date" then
      assert.is_number(err.retry_after, tostring(err))
      assert.is_true(err.retry_after > 0 and err.retry_after <= 3, tostring(err.retry_after))
   elseif case.retry_after then
      assert.equal(case.retry_after, err.retry_after, tostring(err))
   end
   assert.truthy(tostring(err):find(case.kind, 1, true), tostring(err))
end

-- Reads with the iterator; returns the runs handed out and the error (or nil).
local function read_blocking(c, q)
   local step = c:task_runs(q)
   local n = 0
   while true do
      local ok, run = pcall(step)
      if not ok then return n, run, step end
      if run == nil then return n, nil, step end
      n = n + 1
   end
end

-- Reads with a handle and poll; returns the runs, the error (or nil), the handle.
local function read_polling(c, q)
   local h = c:start(q)
   local n = 0
   local deadline = os.time() + 20
   while os.time() <= deadline do
      local runs, done = h:poll(50)
      if runs == nil then return n, done, h end
      n = n + #runs
      if done then return n, nil, h end
   end
   error("the handle neither finished nor failed within 20 s")
end

local function modes()
   if in_ngx then
      return { { name = "iterator over cosockets", transport = "ngx", read = read_blocking } }
   end
   return {
      { name = "iterator", transport = "curl", read = read_blocking },
      { name = "poll", transport = "curl", read = read_polling },
   }
end

describe("fault matrix", function()
   local srv
   lazy_setup(function()
      srv = test_server.start{ dataset = "fixture", keepalive_timeout = KEEPALIVE_S }
   end)
   lazy_teardown(function()
      if srv then srv:stop() end
   end)

   for _, mode in ipairs(modes()) do
      describe(mode.name, function()
         it("warms up (modules loaded, caches filled) before anything is measured", function()
            local c = prefect.client{ url = srv.url, getenv = function() return nil end,
               transport = mode.transport }
            local n = mode.read(c, { limit = 250 })
            assert.equal(250, n)
            c:close()
         end)

         for _, case in ipairs(CASES) do
            local title = ("%s -> %s%s"):format(case.fault, case.kind or "read through",
               case.opts and (" " .. require("cjson").encode(case.opts)) or "")
            it(title, function()
               if case.fresh and in_ngx then ngx.sleep(KEEPALIVE_S * 2) end
               local fds0, kb0 = fd_count(), heap_kb()
               local c = client_for(srv, case, mode.transport)
               local n, err, reader = mode.read(c, { limit = 250 })
               if case.kind then
                  assert.is_not_nil(err, "no error, " .. n .. " runs")
                  check_error(case, err)
                  if case.runs == "some" then
                     assert.is_true(n < 200, n .. " runs")
                  elseif case.max_runs then
                     assert.is_true(n <= case.max_runs, n .. " runs")
                  else
                     assert.equal(case.runs or 0, n)
                  end
                  -- stays failed, with the same error
                  if mode.read == read_blocking then
                     local ok, again = pcall(reader)
                     assert.is_false(ok)
                     assert.equal(err.kind, again.kind)
                     assert.equal(tostring(err), tostring(again))
                     ok, again = pcall(reader)
                     assert.is_false(ok)
                     assert.equal(tostring(err), tostring(again))
                  else
                     for _ = 1, 2 do
                        local runs, again = reader:poll(0)
                        assert.is_nil(runs)
                        assert.equal(tostring(err), tostring(again))
                     end
                  end
               else
                  assert.is_nil(err, tostring(err))
                  assert.equal(250, n)
               end
               if mode.read == read_polling then reader:close() end
               reader = nil -- luacheck: ignore 311
               -- the same client, a normal read
               local after = case.after or 250
               local n2, err2 = mode.read(c, { limit = after })
               assert.is_nil(err2, tostring(err2))
               assert.equal(after, n2)
               if not case.after then assert.equal(FIXTURE_RUNS, (c:count{})) end
               c:close()
               c = nil -- luacheck: ignore 311
               err, err2 = nil, nil -- luacheck: ignore 311
               local kb1, fds1 = heap_kb(), fd_count()
               assert.is_true(kb1 - kb0 < HEAP_SLACK_KB,
                  ("Lua heap grew by %.0f KiB (from %.0f to %.0f)"):format(kb1 - kb0, kb0, kb1))
               assert_fds(fds0, fds1)
            end)
         end

         it("connection refused -> connect, and nothing leaks", function()
            local fds0, kb0 = fd_count(), heap_kb()
            local s = require("socket").bind("127.0.0.1", 0)
            local _, port = s:getsockname()
            s:close()
            local c = prefect.client{ url = "http://127.0.0.1:" .. port .. "/api", retries = 0,
               getenv = function() return nil end, transport = mode.transport }
            local n, err, reader = mode.read(c, {})
            assert.equal(0, n)
            check_error({ kind = "connect" }, err)
            if mode.read == read_blocking then
               local ok, again = pcall(reader)
               assert.is_false(ok)
               assert.equal(tostring(err), tostring(again))
            else
               reader:close()
            end
            c:close()
            c, reader, err = nil, nil, nil -- luacheck: ignore 311
            local kb1, fds1 = heap_kb(), fd_count()
            assert.is_true(kb1 - kb0 < HEAP_SLACK_KB, ("Lua heap grew by %.0f KiB"):format(kb1 - kb0))
            assert_fds(fds0, fds1)
         end)

         it("repeated faults leave the Lua heap and the descriptors where they were", function()
            -- The same faults over and over: a leak of even a few hundred bytes per read shows.
            -- The first rounds fill what the VM keeps (string table, table capacities; inside
            -- nginx these settle after some 100 reads) and are not measured.
            local fds0, kb0
            for round = 1, 25 do
               for _, fault in ipairs{ in_ngx and "status=500" or "reset", "cut_after=1000", "invalid_json",
                  "status=503", "huge=100000000", "gzip_bomb=100000000" } do
                  local c = client_for(srv, { fault = fault, opts = { max_response = 1000000 } },
                     mode.transport)
                  local _, err = mode.read(c, { limit = 250 })
                  assert.is_not_nil(err, fault)
                  c:close()
               end
               if round == 15 then fds0, kb0 = fd_count(), heap_kb() end
            end
            local kb1, fds1 = heap_kb(), fd_count()
            assert.is_true(kb1 - kb0 < 32,
               ("Lua heap grew by %.0f KiB over 60 failed reads"):format(kb1 - kb0))
            assert.is_true(fds1 <= fds0, ("file descriptors: %d before, %d after"):format(fds0, fds1))
         end)
      end)
   end

   if not in_ngx then
      describe("inside nginx (the ngx transport)", function()
         local ok_nginx, nginx = pcall(require, "nginx")
         local available, why = false, "spec/support/nginx.lua did not load"
         if ok_nginx then available, why = nginx.available() end
         if not available then
            it("is skipped", function() pending("skipped: " .. why) end)
            return
         end
         it("passes the same matrix (spec/ngx/fault_matrix.lua through tools/ngx-busted.lua)", function()
            local cmd = "cd " .. nginx.root .. " && PREFECT_TEST_LUA=luajit luajit tools/ngx-busted.lua "
               .. "spec/ngx/fault_matrix.lua 2>&1"
            local p = assert(io.popen(cmd))
            local out = p:read("*a")
            p:close()
            local s, f, e = out:match("(%d+) success%a* / (%d+) failures? / (%d+) errors?[^\n]*\n?$")
            assert.truthy(s, out)
            assert.is_true(tonumber(s) > #CASES, out)
            assert.equal(0, tonumber(f) + tonumber(e), out)
         end)
      end)
   end
end)
