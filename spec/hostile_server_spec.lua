-- Hostile and broken servers against the curl transport, read through prefect.client (issue #15).
-- A user relies on:
-- - each fault ending the read with its own error kind, never "invalid" (that one means the
--   caller's own mistake, and is never retried), with the URL that answered and a message;
-- - every wait bounded: `stall_timeout` fires on a server that stops sending, head or body,
--   and says so; `timeout` bounds the whole request, a dripped head included;
-- - a server that sends without end costing bounded memory (a child process's peak RSS);
-- - the same client working again right after.
-- The same faults through the ngx transport are spec/ngx's.

local cjson = require("cjson")
local socket = require("socket")
local test_server = require("test_server")
local prefect = require("prefect")
local errors = require("prefect.errors")

local SLACK = os.getenv("PREFECT_UNDER_VALGRIND") and 20 or 1
local LUA = os.getenv("PREFECT_TEST_LUA") or "lua5.4"
local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local KiB = 1024

-- What each fault must end with. `opts` are client options on top of retries = 0; `stall`: the
-- read must end by stall_timeout and say so. (trailer_endless is below: the runs arrive whole.)
local CASES = {
   { fault = "status_line=HTTP/1.1 2000 OK", kind = "protocol" },
   { fault = "status_line=HTTP/1.1 200OK", kind = "protocol" },
   { fault = "status_line=HTTP/1.1 600 Beyond", kind = "protocol" },
   { fault = "status_line=HTTP/1.1 199 Final", kind = "protocol" },
   { fault = "status_line=http/1.1 200 OK", kind = "protocol" },
   { fault = "status_line=garbage", kind = "protocol" },
   { fault = "http09", kind = "protocol" },
   { fault = "header_bytes=1048576", kind = "too_large" },
   { fault = "header_bytes=200000", kind = "too_large" },
   { fault = "content_length2=3", kind = "protocol" },
   { fault = "bad_chunk", kind = "protocol" },
   -- libcurl skips a chunk extension without a bound ("1;xxx..."): nothing arrives that counts
   { fault = "chunk_line_endless", kind = "timeout", stall = true,
      opts = { stall_timeout = 2, timeout = 30 } },
   { fault = "head_line_endless", kind = "too_large" },
   { fault = "continue_flood", kind = "too_large" },
   -- dripped, then too slow to count as sending: the stall clock, not the 30 s timeout
   { fault = "head_drip_ms=3000", kind = "timeout", stall = true,
      opts = { stall_timeout = 2, timeout = 30 } },
   { fault = "drip_bytes=64; drip_ms=3000", kind = "timeout", stall = true,
      opts = { stall_timeout = 2, timeout = 30 } },
   -- bytes keep coming, so no stall: the whole request's timeout ends it
   { fault = "head_drip_ms=100", kind = "timeout", opts = { timeout = 2 } },
}

local serial = 0

-- A client whose first request (only) meets `fault`.
local function client_for(srv, fault, opts)
   serial = serial + 1
   local o = {
      url = srv.url, getenv = function() return nil end, retries = 0, transport = "curl",
      sleep = function() end,
      headers = { ["X-Test-Fault"] = ("fail_first=1; key=hostile-%d; %s"):format(serial, fault) },
   }
   for k, v in pairs(opts or {}) do o[k] = v end
   return prefect.client(o)
end

local function read_iterator(c)
   local step, n = c:task_runs{ limit = 20 }, 0
   while true do
      local ok, run = pcall(step)
      if not ok then return n, run end
      if run == nil then return n end
      n = n + 1
   end
end

local function read_polling(c)
   local h, n = c:start{ limit = 20 }, 0
   local deadline = socket.gettime() + 60 * SLACK
   while socket.gettime() < deadline do
      local runs, done = h:poll(50)
      if runs == nil then return n, done end
      n = n + #runs
      if done then return n end
   end
   error("the handle neither finished nor failed within 60 s")
end

local function check_error(case, err)
   assert.is_true(errors.is(err), "not a prefect error: " .. tostring(err))
   assert.equal(case.kind, err.kind, tostring(err))
   assert.is_string(err.message)
   assert.truthy(err.url and err.url:find("/task_runs/filter", 1, true), tostring(err))
   if case.stall then
      assert.truthy(err.message:find("no data for 2 s", 1, true), tostring(err))
   else
      assert.falsy(err.message:find("stall_timeout", 1, true), tostring(err))
   end
end

describe("a hostile server, through prefect.client and the curl transport", function()
   local srv
   lazy_setup(function()
      srv = test_server.start{ dataset = "fixture" }
   end)
   lazy_teardown(function()
      if srv then srv:stop() end
   end)

   for _, way in ipairs{ { "iterator", read_iterator }, { "poll", read_polling } } do
      for _, case in ipairs(CASES) do
         it(("%s -> %s (%s)"):format(case.fault, case.kind, way[1]), function()
            local c = client_for(srv, case.fault, case.opts)
            finally(function() c:close() end)
            local t0 = socket.gettime()
            local n, err = way[2](c)
            local took = socket.gettime() - t0
            assert.is_not_nil(err, "the read succeeded with " .. n .. " runs")
            check_error(case, err)
            assert.is_true(took < 20 * SLACK, ("the read took %.1f s"):format(took))
            -- the next read on the same client is a normal one
            assert.equal(20, (read_iterator(c)))
         end)
      end
   end

   it("endless trailers after a whole body: every run is handed out, and the read ends", function()
      for _, way in ipairs{ read_iterator, read_polling } do
         local c = client_for(srv, "trailer_endless")
         finally(function() c:close() end)
         local n, err = way(c)
         assert.is_nil(err)
         assert.equal(20, n)
      end
   end)

   it("a count() whose trailers never end is too_large", function()
      local c = client_for(srv, "trailer_endless")
      finally(function() c:close() end)
      local n, err = c:count{}
      assert.is_nil(n)
      assert.equal("too_large", err.kind, tostring(err))
   end)

   it("a reader slower than stall_timeout is not a stalled server (paused for read_ahead)", function()
      -- pages far larger than read_ahead: the transfer pauses while the reader rests
      local big = test_server.start{ dataset = { generate = 2000, seed = 3, shape = 3 } }
      finally(function() big:stop() end)
      local c = prefect.client{ url = big.url, getenv = function() return nil end, retries = 0,
         transport = "curl", stall_timeout = 1, read_ahead = 64 * KiB, accept_encoding = false }
      finally(function() c:close() end)
      local n = 0
      for _ in c:task_runs{} do
         n = n + 1
         if n % 500 == 1 then socket.sleep(1.5) end
      end
      assert.equal(2000, n)
   end)

   describe("sending without end costs bounded memory (peak RSS of a child process)", function()
      -- read_ahead 1 MiB and the 256 KiB head limit: a few MiB at most; the bound leaves room for
      -- allocator slack and sanitizer runtimes
      local BOUND_KIB = 48 * 1024
      local ENDLESS = {
         { fault = "head_line_endless", kind = "too_large" },
         { fault = "continue_flood", kind = "too_large" },
         { fault = "chunk_line_endless", kind = "timeout", opts = { stall_timeout = 2 } },
         -- a full page arrives whole, then its trailers never end: the next page needs the end
         { fault = "trailer_endless", kind = "too_large" },
         -- a page that holds more runs than asked for ends at the first one too many
         { fault = "endless_runs", kind = "protocol" },
         { fault = "endless_runs", kind = "protocol", way = "page" },
      }
      for _, case in ipairs(ENDLESS) do
         it(("%s -> %s (%s)"):format(case.fault, case.kind, case.way or "iterator"), function()
            local opts = { read_ahead = 1024 * KiB, timeout = 10 * SLACK }
            for k, v in pairs(case.opts or {}) do opts[k] = v end
            opts = cjson.encode(opts)
            local cmd = ("%s %s/support/peak_read.lua '%s' '%s' '%s' %s 2>&1"):format(LUA, HERE,
               srv.url, case.fault, opts, case.way or "iterator")
            local p = assert(io.popen(cmd))
            local out = p:read("*a")
            p:close()
            local ok, result = pcall(cjson.decode, out:match("(%b{})%s*$") or "")
            assert.is_true(ok and type(result) == "table", "child said: " .. out)
            assert.equal(case.kind, result.kind, out)
            local grew = result.peak_kib - result.base_kib
            assert.is_true(grew < BOUND_KIB, ("peak RSS grew by %d KiB"):format(grew))
         end)
      end
   end)
end)
