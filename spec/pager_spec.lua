-- Paging through client:task_runs against the test server over real HTTP:
-- every run exactly once, streaming, prefetch, de-duplication, limits,
-- the server's page maximum, mid-page retries, failure behaviour.

local test_server = require("test_server")
local socket = require("socket")
local apps = require("apps")

local FIXTURE, app_file, new_client = apps.FIXTURE, apps.file, apps.client

-- The test server can serve an app from a Lua file (--app-file): the specs below write one that wraps
-- the bundled Prefect API with a lower page maximum (apps.limited), or with a dataset that grows
-- during a read.

-- Before answering each filter request past the first page, inserts GROW new runs whose ids sort first
-- under ID_DESC, so every later page shifts by GROW rows, as when runs are created during a read.
local GROWING_APP = [[
local api = require("prefect.testing.api")
local dataset = require("prefect.testing.dataset")
local GROW = %d
return function(opts)
   local ds = dataset.load(%q)
   local template = ds.task_runs[1]
   local added = 0
   local app = api.new{ data = ds, prefect = 2, base_path = opts.base_path }
   local function grow()
      for _ = 1, GROW do
         added = added + 1
         local run = {}
         for k, v in pairs(template) do run[k] = v end
         run.id = string.format("ffffffff-ffff-4fff-bfff-%%012d", added)
         run.name = "late-" .. added
         ds.task_runs[#ds.task_runs + 1] = run
      end
      app = api.new{ data = ds, prefect = 2, base_path = opts.base_path }
   end
   return { handle = function(_, req)
      if req.method == "POST" and req.path:find("/task_runs/filter$") and req.body
         and not req.body:find('"offset":0[,}]') then
         grow()
      end
      return app:handle(req)
   end }
end
]]



describe("paging over 10,000 runs", function()
   local srv
   setup(function()
      srv = test_server.start{ dataset = { generate = 10000, seed = 7, shape = 3 }, prefect = 3 }
   end)
   teardown(function() if srv then srv:stop() end end)

   it("hands out every run exactly once, in ID_DESC order", function()
      local c = new_client(srv, { fields = { "id", "name" } })
      local seen, n, last = {}, 0, nil
      for run in c:task_runs{ sort = "ID_DESC" } do
         assert.is_nil(seen[run.id], "run handed out twice: " .. run.id)
         seen[run.id] = true
         n = n + 1
         if last then assert.is_true(run.id < last, "not in ID_DESC order at " .. n) end
         last = run.id
      end
      assert.equal(10000, n)
      assert.equal(10000, c:count{})
   end)

   it("stops at the caller's limit and asks for no more than it needs", function()
      srv:reset()
      local c = new_client(srv, { page_size = 100 })
      local n = 0
      for _ in c:task_runs({ limit = 250 }, { prefetch = false }) do n = n + 1 end
      assert.equal(250, n)
      -- pages of 100, 100 and 50: nothing more
      assert.equal(3, srv:stats().requests)
   end)

   it("keeps memory flat however many runs it reads", function()
      local c = new_client(srv)
      local n, at_1000, peak = 0, nil, 0
      for _ in c:task_runs{} do
         n = n + 1
         if n % 500 == 0 then
            collectgarbage()
            local kb = collectgarbage("count")
            if n == 1000 then at_1000 = kb end
            if kb > peak then peak = kb end
         end
      end
      assert.equal(10000, n)
      -- two pages of runs and ids plus the prefetched page; not 10,000 runs (about 15 MB)
      assert.is_true(peak - at_1000 < 2048, ("memory grew by %.0f KiB"):format(peak - at_1000))
   end)

   it("hands out the decoder's view of each run (fields, epoch timestamps)", function()
      local c = new_client(srv, { timestamps = "epoch" })
      local n, stamped = 0, 0
      for run in c:task_runs({ limit = 50 }, { fields = { "name", "start_time" } }) do
         n = n + 1
         assert.is_string(run.id) -- always decoded: the pager needs it
         assert.is_string(run.name)
         assert.is_nil(run.tags)
         assert.is_true(run.start_time == nil or type(run.start_time) == "number")
         if run.start_time then stamped = stamped + 1 end
      end
      assert.equal(50, n)
      assert.is_true(stamped > 0)
   end)

   it("hands out runs minus the branches exclude names, always with their id", function()
      local c = new_client(srv, { exclude = { "state.state_details", "task_inputs" } })
      local n = 0
      for run in c:task_runs({ limit = 30 }, { exclude = { "id", "tags", "state.state_details" } }) do
         n = n + 1
         assert.is_string(run.id) -- kept: the pager needs it
         assert.is_nil(run.tags)
         assert.is_table(run.task_inputs) -- the call's exclude replaces the client's
         assert.is_string(run.state.type)
         assert.is_nil(run.state.state_details)
      end
      assert.equal(30, n)
      local page = assert(c:page({ limit = 5 }))
      assert.is_nil(page[1].task_inputs)
      assert.is_table(page[1].tags)
   end)

   it("reads from the query's offset", function()
      local c = new_client(srv)
      local all = c:page({ limit = 20 }, 0)
      local n, first = 0, nil
      for run in c:task_runs{ offset = 10, limit = 5 } do
         n = n + 1
         first = first or run
      end
      assert.equal(5, n)
      assert.equal(all[11].id, first.id)
   end)
end)

describe("streaming and prefetch", function()
   local srv
   setup(function()
      srv = test_server.start{ dataset = "fixture", prefect = 2 }
   end)
   teardown(function() if srv then srv:stop() end end)

   it("hands out the first run before its page has fully arrived", function()
      local c = new_client(srv, { page_size = 10, accept_encoding = false,
         headers = { ["X-Test-Fault"] = "drip_bytes=512; drip_ms=20" } })
      local t0 = socket.gettime()
      local it, st, ctl, closer = c:task_runs({ limit = 10 })
      local first = it(st, ctl)
      local t_first = socket.gettime() - t0
      local n = 1
      for _ in it, st, ctl, closer do n = n + 1 end
      local t_all = socket.gettime() - t0
      assert.truthy(first and first.id)
      assert.equal(10, n)
      -- 10 runs are about 15 KB, 30 drips of 20 ms: the first run needs 3 or 4 of them
      assert.is_true(t_all > 0.4, "page arrived too fast to tell: " .. t_all)
      assert.is_true(t_first < t_all / 2, ("first run after %.3fs of %.3fs"):format(t_first, t_all))
   end)

   it("sends the next page's request before the caller has consumed this page", function()
      srv:reset()
      local c = new_client(srv, { page_size = 20, accept_encoding = false,
         headers = { ["X-Test-Fault"] = "drip_bytes=1024; drip_ms=10" } })
      local it = c:task_runs({ limit = 60 })
      for _ = 1, 10 do assert.truthy(it()) end
      -- half of page 1 consumed: page 2 has been asked for already
      assert.equal(2, srv:stats().requests)
      local n = 10
      while it() do n = n + 1 end
      assert.equal(60, n)
      assert.equal(3, srv:stats().requests)
   end)

   it("has the next page's request on the wire while the caller works, without another call", function()
      srv:reset()
      local c = new_client(srv, { page_size = 20 })
      local it = c:task_runs({ limit = 60 })
      assert.truthy(it())
      -- The caller now works on its run and calls nothing: the prefetched request must
      -- already have been sent, not merely queued until the caller asks for more.
      local waited = 0
      while srv:stats().requests < 2 and waited < 5 do
         socket.sleep(0.05)
         waited = waited + 0.05
      end
      assert.equal(2, srv:stats().requests)
      c:close()
   end)

   it("does not prefetch when told not to", function()
      srv:reset()
      local c = new_client(srv, { page_size = 20 })
      local it = c:task_runs({ limit = 60 }, { prefetch = false })
      for _ = 1, 10 do assert.truthy(it()) end
      assert.equal(1, srv:stats().requests)
   end)

   it("cancels the prefetched page when a short page ends the read", function()
      local c = new_client(srv, { page_size = 200 })
      local n = 0
      for _ in c:task_runs{} do n = n + 1 end
      assert.equal(300, n) -- 200 + a short page of 100
   end)

end)

describe("retries in the middle of a read", function()
   local srv
   setup(function()
      srv = test_server.start{ dataset = "fixture", prefect = 2 }
   end)
   teardown(function() if srv then srv:stop() end end)

   for _, fault in ipairs{ "cut_after=5000", "reset" } do
      it("repeats only the failed page, and no run twice (" .. fault .. ")", function()
         srv:reset()
         local waits, handed_out_before = {}, nil
         local n = 0
         local c = new_client(srv, {
            sleep = function(s)
               waits[#waits + 1] = s
               handed_out_before = n
            end,
            headers = { ["X-Test-Fault"] = "fail_first=1; key=mid-" .. fault .. "; " .. fault },
         })
         local seen = {}
         for run in c:task_runs{} do
            assert.is_nil(seen[run.id], "run handed out twice: " .. run.id)
            seen[run.id] = true
            n = n + 1
         end
         assert.equal(300, n)
         assert.equal(1, #waits)
         if fault:find("cut_after") then
            -- the page broke after some of its runs were handed out; the retry did not repeat them
            assert.is_true(handed_out_before > 0 and handed_out_before < 200, handed_out_before)
         end
         assert.is_true(waits[1] >= 1.6 and waits[1] <= 2.4, waits[1])
      end)
   end
end)

describe("the server's page maximum", function()
   local srv
   setup(function()
      srv = test_server.start{ app_file = apps.limited(50) }
   end)
   teardown(function() if srv then srv:stop() end end)

   it("retries once with the page size named in the 422 and keeps using it", function()
      srv:reset()
      local c = new_client(srv)
      local seen, n = {}, 0
      for run in c:task_runs({}, { prefetch = false }) do
         assert.is_nil(seen[run.id])
         seen[run.id] = true
         n = n + 1
      end
      assert.equal(300, n)
      -- one refused request of 200, then 50-run pages: 6 full ones and an empty one
      assert.equal(1 + 7, srv:stats().requests)
      assert.equal(50, #c:page{})
   end)
end)

describe("a dataset that grows during the read", function()
   it("hands out each run that was there at the start exactly once", function()
      local srv = test_server.start{ app_file = app_file(GROWING_APP:format(30, FIXTURE)) }
      finally(function() srv:stop() end)
      local c = new_client(srv, { page_size = 50 })
      local seen, n, late = {}, 0, 0
      for run in c:task_runs{ sort = "ID_DESC" } do
         assert.is_nil(seen[run.id], "run handed out twice: " .. run.id)
         seen[run.id] = true
         n = n + 1
         if run.name:find("^late%-") then late = late + 1 end
      end
      -- the 300 runs of the fixture, each once; the runs created during the read landed on pages
      -- already read, so they are missed (as documented)
      assert.equal(300, n)
      assert.equal(0, late)
      -- each page after the first repeated 30 runs of the page before it: 14 pages, not 7
      assert.is_true(srv:stats().requests >= 14, "the dataset did not grow")
   end)
end)

describe("a failed read", function()
   local srv
   setup(function()
      srv = test_server.start{ dataset = "fixture", prefect = 2 }
   end)
   teardown(function() if srv then srv:stop() end end)

   it("raises the structured error, again on every call, and leaves the client usable", function()
      local bad = new_client(srv, { headers = { ["X-Test-Fault"] = "status=500" } })
      local it = bad:task_runs{}
      local ok, err = pcall(it)
      assert.is_false(ok)
      assert.equal("http", err.kind)
      assert.equal(500, err.status)
      assert.equal("Internal Server Error", err.detail)
      local ok2, err2 = pcall(it)
      assert.is_false(ok2)
      assert.equal(err, err2)
      local c = new_client(srv)
      local n = 0
      for _ in c:task_runs{ limit = 5 } do n = n + 1 end
      assert.equal(5, n)
   end)

   it("raises a decode error for a body that is not JSON, after the runs before it", function()
      local c = new_client(srv, { headers = { ["X-Test-Fault"] = "invalid_json" } })
      local it = c:task_runs{}
      local first = it()
      assert.equal("00000000-0000-4000-8000-000000000001", first.id)
      local ok, err = pcall(it)
      assert.is_false(ok)
      assert.equal("decode", err.kind)
   end)
end)

describe("client:start and poll", function()
   local srv
   setup(function()
      srv = test_server.start{ dataset = "fixture", prefect = 2 }
   end)
   teardown(function() if srv then srv:stop() end end)

   local function no_sleep() error("poll must never sleep") end

   -- Polls until the read is complete; returns the runs, the number of polls and the longest one.
   local function drain(h, timeout_ms)
      local runs, polls, longest = {}, 0, 0
      local give_up = socket.gettime() + 20
      while true do
         local t0 = socket.gettime()
         local list, done = h:poll(timeout_ms)
         local took = socket.gettime() - t0
         if took > longest then longest = took end
         polls = polls + 1
         if list == nil then return nil, done end
         for _, r in ipairs(list) do runs[#runs + 1] = r end
         if done then return runs, polls, longest end
         assert.is_true(socket.gettime() < give_up, "poll never finished")
      end
   end

   it("hands out every run once without ever blocking", function()
      local c = new_client(srv, { page_size = 50, sleep = no_sleep,
         headers = { ["X-Test-Fault"] = "delay_ms=100" } })
      local runs, polls, longest = drain(c:start{}, 0)
      assert.equal(300, #runs)
      local seen = {}
      for _, r in ipairs(runs) do
         assert.is_nil(seen[r.id])
         seen[r.id] = true
      end
      assert.is_true(polls > 10, "every poll waited for data: " .. polls)
      assert.is_true(longest < 0.05, ("a poll(0) took %.3fs"):format(longest))
   end)

   it("waits at most the timeout it is given", function()
      local c = new_client(srv, { headers = { ["X-Test-Fault"] = "delay_ms=400" } })
      local h = c:start{ limit = 5 }
      local t0 = socket.gettime()
      local list, done = h:poll(100)
      local took = socket.gettime() - t0
      assert.same({}, list)
      assert.is_false(done)
      assert.is_true(took >= 0.08 and took < 0.3, took)
      local runs = drain(h, 50)
      assert.equal(5, #runs)
   end)

   it("retries on the client's clock instead of sleeping", function()
      local now = 1000
      local c = new_client(srv, { sleep = no_sleep, clock = function() return now end,
         random = function() return 0.5 end,
         headers = { ["X-Test-Fault"] = "fail_first=1; key=poll-retry; status=503" } })
      local h = c:start{ limit = 10 }
      local polls = 0
      repeat -- the 503 arrives; then poll(0) says "nothing yet" while the retry is due
         h:poll(0)
         socket.sleep(0.005)
         polls = polls + 1
         assert.is_true(polls < 1000)
      until srv:stats().requests >= 1 and h.state == "retry_wait"
      assert.equal(1002, h.retry_at) -- 2 s after the failure, jitter drawn in the middle
      local list, done = h:poll(0)
      assert.same({}, list)
      assert.is_false(done)
      now = now + 2
      local runs = drain(h, 20)
      assert.equal(10, #runs)
   end)

   it("waits out a retry within poll's timeout instead of spinning", function()
      local now, slept = 1000, {}
      local c = new_client(srv, { clock = function() return now end, random = function() return 0.5 end,
         sleep = function(s) slept[#slept + 1] = s; now = now + s end,
         headers = { ["X-Test-Fault"] = "fail_first=1; key=poll-retry-wait; status=503" } })
      local h = c:start{ limit = 10 }
      local polls = 0
      repeat
         h:poll(0)
         socket.sleep(0.005)
         polls = polls + 1
         assert.is_true(polls < 1000)
      until h.state == "retry_wait"
      assert.same({}, slept)
      local list, done = h:poll(500) -- the retry is due in 2 s: wait the 0.5 s asked, no more
      assert.same({}, list)
      assert.is_false(done)
      assert.same({ 0.5 }, slept)
      local runs = drain(h, 5000) -- sleeps the remaining 1.5 s, then retries and reads
      assert.equal(1.5, slept[2])
      assert.equal(10, #runs)
      assert.is_true(h:done())
   end)

   it("tells when it is done, and cancels", function()
      local c = new_client(srv, {})
      local h = c:start{ limit = 3 }
      assert.is_false(h:done())
      local runs = drain(h, 50)
      assert.equal(3, #runs)
      assert.is_true(h:done())

      h = c:start{ limit = 500, page_size = 20 }
      h:poll(0)
      h:cancel()
      assert.is_true(h:done())
      assert.same({ {}, true }, { h:poll(0) })
      -- what was sent before the cancel reaches the server; nothing is sent after it
      socket.sleep(0.3)
      local after_cancel = srv:stats().requests
      for _ = 1, 5 do h:poll(20) end
      socket.sleep(0.3)
      assert.equal(after_cancel, srv:stats().requests)
   end)

   it("hands out at most max_runs runs a call, and the rest on later calls", function()
      local c = new_client(srv, { page_size = 100 })
      local h = c:start{ limit = 250 }
      local runs, seen, calls = {}, {}, 0
      local give_up = socket.gettime() + 20
      repeat
         local list, done = h:poll(50, 7)
         assert.is_table(list)
         assert.is_true(#list <= 7, "a call handed out " .. #list)
         for _, r in ipairs(list) do
            assert.is_nil(seen[r.id])
            seen[r.id] = true
            runs[#runs + 1] = r
         end
         calls = calls + 1
         assert.is_true(socket.gettime() < give_up, "poll never finished")
      until done
      assert.equal(250, #runs)
      assert.is_true(calls >= 36)
      assert.has_error(function() h:poll(0, 0) end)
   end)

   it("fails with the structured error, and again on every poll", function()
      local c = new_client(srv, { retries = 0, headers = { ["X-Test-Fault"] = "status=500" } })
      local h = c:start{}
      local list, err = drain(h, 20)
      assert.is_nil(list)
      assert.equal("http", err.kind)
      assert.equal(500, err.status)
      local again, err2 = h:poll(0)
      assert.is_nil(again)
      assert.equal(err, err2)
   end)

   it("fetches a CSRF token without blocking", function()
      local csrf = test_server.start{ dataset = "fixture", prefect = 3, csrf = true }
      finally(function() csrf:stop() end)
      local c = new_client(csrf, { sleep = no_sleep })
      local runs = drain(c:start{ limit = 250 }, 10)
      assert.equal(250, #runs)
      assert.is_string(c.csrf.token)
   end)

   it("follows the server's page maximum", function()
      local limited = test_server.start{ app_file = apps.limited(50) }
      finally(function() limited:stop() end)
      local c = new_client(limited)
      local runs = drain(c:start{}, 10)
      assert.equal(300, #runs)
   end)
end)
