-- client:follow against the bundled server, which the specs change while it runs (test_writes):
-- runs that end while a follower reads are handed out exactly once, oldest first, on a Prefect 3
-- server (end_time filter) and a 2.x one (no such filter), across a boundary timestamp shared by
-- several runs, and across a server restart.

local prefect = require("prefect")
local test_server = require("test_server")
local socket = require("socket")
local cjson = require("cjson")
local disk = require("disk")

local FIXTURE3 = test_server.ROOT .. "/spec/fixtures/dataset-3.9.1.json"
local FIXTURE2 = test_server.ROOT .. "/spec/fixtures/dataset-2.19.9.json"

local function no_env() return nil end

-- A recorded run of `path`, to copy new runs from.
local function template_of(path)
   local ds = cjson.decode((assert(disk.read(path))))
   for _, run in ipairs(ds.task_runs) do
      if run.state_type == "COMPLETED" and run.flow_run_id ~= cjson.null then return run end
   end
end

local TEMPLATE = { [2] = template_of(FIXTURE2), [3] = template_of(FIXTURE3) }

local counter = 0
local function new_id()
   counter = counter + 1
   return string.format("f0110000-0000-4000-8000-%012d", counter)
end

local function iso(t)
   local s = math.floor(t)
   return os.date("!%Y-%m-%dT%H:%M:%S", s) .. string.format(".%06dZ", math.floor((t - s) * 1e6 + 0.5))
end

-- A task run as Prefect sends it: `state` (default COMPLETED), ended at `ended` (epoch seconds; nil
-- for a run that has not ended), named `name`.
local function run_of(shape, name, state, ended, id)
   local run = cjson.decode(cjson.encode(TEMPLATE[shape]))
   run.id, run.name = id or new_id(), name
   run.state_type = state or "COMPLETED"
   run.state_name = run.state_type:sub(1, 1) .. run.state_type:sub(2):lower()
   run.state.type, run.state.name = run.state_type, run.state_name
   run.state.state_details.task_run_id = run.id
   run.state.id = new_id()
   run.state_id = run.state.id
   run.tags = { "follow-spec" }
   run.end_time = ended and iso(ended) or cjson.null
   run.state.timestamp = iso(ended or socket.gettime())
   return run
end

local function names(runs)
   local out = {}
   for i, r in ipairs(runs) do out[i] = r.name end
   return out
end

local function new_client(srv, opts)
   local o = { url = srv.url, getenv = no_env, page_size = 200 }
   for k, v in pairs(opts or {}) do o[k] = v end
   return prefect.client(o)
end

-- Polls `f` until `n` runs were handed out (or 200 polls), calling `between()` before each poll.
local function poll_until(f, n, between)
   local got = {}
   for _ = 1, 200 do
      if #got >= n then break end
      if between then between() end
      local runs, done = f:poll(20)
      assert(runs, done)
      for _, r in ipairs(runs) do got[#got + 1] = r end
   end
   return got
end

describe("client:follow on a Prefect 3 server", function()
   local srv
   before_each(function() srv = test_server.start{ dataset = FIXTURE3, test_writes = true } end)
   after_each(function() if srv then srv:stop() end end)

   it("hands out every run that ends while it reads, once each, oldest first", function()
      local c = new_client(srv)
      -- two runs per page, so a poll reads several pages while runs keep ending
      local f = c:follow({ tags = { "follow-spec" }, page_size = 2 }, { interval = 0.01 })
      -- the first poll finds where the runs are: following starts there
      assert.same({}, assert(f:poll(1000)))
      local added, t = {}, socket.gettime()
      local got = poll_until(f, 30, function()
         if #added < 30 then
            t = t + 0.001
            local run = run_of(3, "r" .. (#added + 1), "COMPLETED", t)
            added[#added + 1] = run.name
            srv:add_task_runs({ run })
         end
      end)
      local more = poll_until(f, 1)  -- a few more polls: nothing again
      assert.same(added, names(got))
      assert.same({}, names(more))
      f:close()
   end)

   it("hands out, through the blocking iterator, the runs that end between its polls", function()
      local pending = {}
      for i = 1, 5 do pending[i] = "b" .. i end
      local t = socket.gettime()
      -- the client's sleep (what the follower waits with between polls) ends one more run each time
      local function sleep(s)
         local name = table.remove(pending, 1)
         if name then
            t = t + 0.001
            srv:add_task_runs({ run_of(3, name, "FAILED", t) })
         end
         socket.sleep(math.min(s, 0.01))
      end
      local c = new_client(srv, { sleep = sleep })
      local got = {}
      for run in c:follow({ tags = { "follow-spec" } }, { interval = 0.01, max_polls = 8 }) do
         got[#got + 1] = run.name
      end
      assert.same({ "b1", "b2", "b3", "b4", "b5" }, got)
   end)

   it("hands out each of the runs that share the boundary end_time once, late ones included", function()
      local c = new_client(srv)
      local f = c:follow({ tags = { "follow-spec" } }, { interval = 0.01, overlap = 0 })
      assert.same({}, names(assert(f:poll(1000))))
      local t = socket.gettime()
      srv:add_task_runs({ run_of(3, "same-1", "COMPLETED", t), run_of(3, "same-2", "CRASHED", t) })
      local first = poll_until(f, 2)
      -- the watermark is t now: a run at exactly t that is written later, and one just after
      srv:add_task_runs({ run_of(3, "same-3", "CANCELLED", t),
         run_of(3, "after", "COMPLETED", t + 0.000001) })
      local second = poll_until(f, 2)
      local third = poll_until(f, 1)
      assert.same({ "same-1", "same-2" }, names(first))
      table.sort(second, function(a, b) return a.name > b.name end)
      assert.same({ "same-3", "after" }, names(second))
      assert.same({}, names(third))
   end)

   it("hands out a run when it reaches a final state, not before, and not again", function()
      local c = new_client(srv)
      local f = c:follow({ tags = { "follow-spec" } }, { interval = 0.01 })
      assert(f:poll(1000))
      local running = run_of(3, "slow", "RUNNING", nil)
      srv:add_task_runs({ running })
      assert.same({}, names(poll_until(f, 1)))
      srv:add_task_runs({ run_of(3, "slow", "COMPLETED", socket.gettime(), running.id) })
      assert.same({ "slow" }, names(poll_until(f, 1)))
      assert.same({}, names(poll_until(f, 1)))
   end)

   it("hands out the runs that ended since `since`, and none that ended before", function()
      local now = socket.gettime()
      -- many in one poll: the iterator hands out each run of a poll's batch
      local runs, want = { run_of(3, "old", "FAILED", now - 120) }, {}
      for i = 1, 40 do
         want[i] = "recent-" .. i
         runs[#runs + 1] = run_of(3, want[i], "FAILED", now - 40 + i / 2)
      end
      srv:add_task_runs(runs)
      local c = new_client(srv)
      local got = {}
      local opts = { since = now - 60, interval = 0.01, max_polls = 2 }
      for run in c:follow({ tags = { "follow-spec" } }, opts) do
         got[#got + 1] = run.name
      end
      assert.same(want, got)
   end)

   it("keeps fields it needs when the caller asks for fewer, and hands out what was asked", function()
      local c = new_client(srv)
      local since = socket.gettime() - 1
      srv:add_task_runs({ run_of(3, "f1", "COMPLETED", since + 0.5) })
      local got
      local opts = { since = since, fields = { "name" }, max_polls = 1 }
      for run in c:follow({ tags = { "follow-spec" } }, opts) do
         got = run
      end
      assert.equal("f1", got.name)
      assert.is_nil(got.flow_run_id)
   end)
end)

describe('client:follow with on = "update"', function()
   for _, shape in ipairs({ 3, 2 }) do
      it("hands out a run each time its state changes, on Prefect " .. shape, function()
         local srv = test_server.start{ dataset = shape == 3 and FIXTURE3 or FIXTURE2, test_writes = true,
            prefect = shape }
         finally(function() srv:stop() end)
         local c = new_client(srv, { server_version = shape == 3 and "3.9.1" or "2.19.9" })
         local f = c:follow({ tags = { "follow-spec" } }, { on = "update", interval = 0.01 })
         local waiting = run_of(shape, "u", "SCHEDULED", nil)
         -- already there when following starts: its state then is not a change
         srv:add_task_runs({ waiting })
         assert.same({}, names(assert(f:poll(1000))))
         local function states(runs)
            local out = {}
            for i, r in ipairs(runs) do out[i] = r.name .. ":" .. r.state_type end
            return out
         end
         -- oldest state first: u's state is a moment older than new's
         srv:add_task_runs({ run_of(shape, "u", "PENDING", nil, waiting.id),
            run_of(shape, "new", "RUNNING", nil) })
         assert.same({ "u:PENDING", "new:RUNNING" }, states(poll_until(f, 2)))
         assert.same({}, states(poll_until(f, 1)))
         srv:add_task_runs({ run_of(shape, "u", "RUNNING", nil, waiting.id) })
         assert.same({ "u:RUNNING" }, states(poll_until(f, 1)))
         srv:add_task_runs({ run_of(shape, "u", "COMPLETED", socket.gettime(), waiting.id) })
         assert.same({ "u:COMPLETED" }, states(poll_until(f, 1)))
         assert.same({}, states(poll_until(f, 1)))
      end)
   end
end)

describe("client:follow across a server restart", function()
   local srv
   after_each(function() if srv then srv:stop() end end)

   it("goes on after polls that failed while the server was down, handing out each run once", function()
      srv = test_server.start{ dataset = FIXTURE3, test_writes = true }
      local port = srv.port
      local c = new_client(srv, { retries = 0 })
      local f = c:follow({ tags = { "follow-spec" } }, { interval = 0.01 })
      assert(f:poll(1000))
      local t = socket.gettime()
      local a = run_of(3, "before", "COMPLETED", t)
      srv:add_task_runs({ a })
      local first = poll_until(f, 1)
      srv:stop()
      local runs, err = f:poll(1000)
      for _ = 1, 100 do
         if runs == nil then break end
         runs, err = f:poll(20)
      end
      assert.is_nil(runs)
      assert.equal("connect", err.kind)
      -- the same data comes back (Prefect keeps it in its database), with a run that ended meanwhile
      srv = test_server.start{ dataset = FIXTURE3, test_writes = true, port = port }
      srv:add_task_runs({ a, run_of(3, "meanwhile", "FAILED", t + 0.5) })
      local after = poll_until(f, 1)
      assert.same({ "before" }, names(first))
      assert.same({ "meanwhile" }, names(after))
      assert.same({}, names(poll_until(f, 1)))
   end)

   it("hands out nothing that ended before it started when its first polls fail", function()
      srv = test_server.start{ dataset = FIXTURE3, test_writes = true }
      local port = srv.port
      srv:stop()
      local c = new_client(srv, { retries = 0 })
      local f = c:follow({}, { interval = 0.01 })
      local runs, err = f:poll(1000)
      assert.is_nil(runs)
      assert.equal("connect", err.kind)
      srv = test_server.start{ dataset = FIXTURE3, test_writes = true, port = port }
      -- the recorded runs ended before following began: none of them is handed out
      assert.same({}, names(poll_until(f, 1)))
      srv:add_task_runs({ run_of(3, "new", "FAILED", socket.gettime()) })
      assert.same({ "new" }, names(poll_until(f, 1)))
   end)

   it("rides out a restart inside the exchange's retries, without raising", function()
      srv = test_server.start{ dataset = FIXTURE3, test_writes = true }
      local port = srv.port
      local t = socket.gettime()
      local step = 0
      local one = run_of(3, "one", "COMPLETED", t + 0.1)
      -- each of the follower's waits (between polls, before a retry) moves the story on
      local function sleep(s)
         step = step + 1
         if step == 2 then
            srv:add_task_runs({ one })
         elseif step == 3 then
            srv:stop()
         elseif step == 4 then
            -- the poll after the stop has failed once and waits to retry: the server comes back
            srv = test_server.start{ dataset = FIXTURE3, test_writes = true, port = port }
            srv:add_task_runs({ one, run_of(3, "two", "FAILED", t + 0.2) })
         end
         socket.sleep(math.min(s, 0.01))
      end
      local c = new_client(srv, { sleep = sleep, retries = 3 })
      local got = {}
      for run in c:follow({ tags = { "follow-spec" } }, { interval = 0.01, max_polls = 6 }) do
         got[#got + 1] = run.name
      end
      assert.same({ "one", "two" }, got)
      assert.is_true(step >= 4)
   end)
end)

describe("client:follow on a Prefect 2.x server (no task-run end_time filter)", function()
   local srv
   before_each(function() srv = test_server.start{ dataset = FIXTURE2, test_writes = true, prefect = 2 } end)
   after_each(function() if srv then srv:stop() end end)

   it("hands out every run that ends while it reads, once each, with server_version auto", function()
      local c = new_client(srv, { server_version = "auto" })
      local f = c:follow({ tags = { "follow-spec" } }, { interval = 0.01 })
      assert.same({}, assert(f:poll(1000)))
      local added, t = {}, socket.gettime()
      local got = poll_until(f, 12, function()
         if #added < 12 then
            t = t + 0.001
            local run = run_of(2, "v2-" .. (#added + 1), #added % 2 == 0 and "FAILED" or "COMPLETED", t)
            added[#added + 1] = run.name
            srv:add_task_runs({ run, run_of(2, "still-running", "RUNNING", nil) })
         end
      end)
      assert.same(added, names(got))
      assert.same({}, names(poll_until(f, 1)))
   end)

   it("with a state filter of the caller's, hands out only those states", function()
      local c = new_client(srv, { server_version = "2.19.9" })
      local since = socket.gettime()
      srv:add_task_runs({ run_of(2, "ok", "COMPLETED", since + 0.1),
         run_of(2, "bad", "FAILED", since + 0.2) })
      local got = {}
      for run in c:follow({ tags = { "follow-spec" }, state = "FAILED" }, { since = since, max_polls = 1 }) do
         got[#got + 1] = run.name
      end
      assert.same({ "bad" }, got)
   end)

   it("stops reading at the window's edge: one short page per poll when nothing has ended", function()
      local c = new_client(srv, { server_version = "2.19.9" })
      -- the recorded runs all ended within a second: only overlap = 0 leaves them out of the window
      local f = c:follow({}, { interval = 0.01, overlap = 0 })
      assert.same({}, assert(f:poll(1000)))
      srv:reset()
      for _ = 1, 3 do
         local runs
         repeat runs = assert(f:poll(1000)) until srv:stats().requests > 0 or #runs > 0
         assert.same({}, runs)
      end
      assert.equal(3, srv:stats().requests)
      -- and the same through the blocking poll
      for _ = 1, 3 do assert.same({}, assert(f:check())) end
      assert.equal(6, srv:stats().requests)
   end)

   it("fails each poll with the server's 422 when told nothing of the version", function()
      local c = new_client(srv, { retries = 0 })
      local f = c:follow({}, { interval = 0.01 })
      local runs, err = f:poll(1000)
      assert.is_nil(runs)
      assert.equal(422, err.status)
      assert.is_false(f:done())
      -- the iterator raises the same error table, and is closed
      local ok, raised = pcall(function()
         for _ in c:follow({}, { interval = 0.01 }) do end
      end)
      assert.is_false(ok)
      assert.equal("http", raised.kind)
      assert.equal(422, raised.status)
   end)
end)

describe("the test server's test writes (POST /api/admin/test/task_runs)", function()
   local function post(srv, body)
      local status, _, answer = srv:request{ method = "POST", path = "/api/admin/test/task_runs", body = body,
         headers = { ["content-type"] = "application/json" } }
      return status, answer
   end

   it("is not served unless the server is started with test_writes", function()
      local srv = test_server.start{ dataset = FIXTURE3 }
      finally(function() srv:stop() end)
      assert.equal(404, (post(srv, "[]")))
   end)

   it("adds new runs, replaces those whose id it has, and refuses anything but a list of runs", function()
      local srv = test_server.start{ dataset = FIXTURE3, test_writes = true }
      finally(function() srv:stop() end)
      local c = new_client(srv)
      local run = run_of(3, "written", "RUNNING", nil)
      assert.same({ added = 1, replaced = 0 }, srv:add_task_runs({ run }))
      assert.equal("RUNNING", assert(c:task_run(run.id)).state_type)
      assert.same({ added = 0, replaced = 1 },
         srv:add_task_runs({ run_of(3, "written", "FAILED", socket.gettime(), run.id) }))
      assert.equal("FAILED", assert(c:task_run(run.id)).state_type)
      assert.equal(1, assert(c:count({ tags = { "follow-spec" } })))
      local status, answer = post(srv, '{"id": "x"}')
      assert.equal(422, status)
      assert.matches("a JSON list of task runs", answer)
      status, answer = post(srv, '[{"id": "not-a-uuid"}]')
      assert.equal(422, status)
      assert.matches("task run 1", answer)
   end)
end)

describe("client:follow misuse", function()
   local c = prefect.client{ url = "http://127.0.0.1:9/api", getenv = no_env }

   it("refuses the query keys it sets itself, naming them", function()
      for _, key in ipairs({ "sort", "limit", "offset", "ended" }) do
         local q = { [key] = key == "sort" and "ID_DESC" or key == "ended" and { after = 0 } or 5 }
         local ok, err = pcall(c.follow, c, q)
         assert.is_false(ok)
         assert.equal("invalid", err.kind)
         assert.matches("must not set " .. key, err.message)
      end
      local ok, err = pcall(c.follow, c, { task_runs = { end_time = { after_ = "2026-01-01" } } })
      assert.is_false(ok)
      assert.matches("task_runs.end_time", err.message)
   end)

   it("refuses wrong options, naming them", function()
      local cases = {
         { { interval = 0 }, "interval must be a positive number" },
         { { intervall = 1 }, 'unknown option "intervall" %(did you mean interval%?%)' },
         { { on = "change" }, 'on must be "final" or "update"' },
         { { since = "yesterday" }, "since: yesterday is not a time" },
         { { max_polls = 0 }, "max_polls must be an integer >= 1" },
         { { overlap = -1 }, "overlap must be a number of seconds >= 0" },
         { { retries = 2 }, 'unknown option "retries"' },
      }
      for _, case in ipairs(cases) do
         local ok, err = pcall(c.follow, c, {}, case[1])
         assert.is_false(ok)
         assert.matches(case[2], err.message)
      end
      local ok, err = pcall(c.follow, c, "FAILED")
      assert.is_false(ok)
      assert.matches("the query must be a table", err.message)
   end)

   it("reports a query mistake at once, before any request", function()
      local ok, err = pcall(c.follow, c, { state = "FIALED" })
      assert.is_false(ok)
      assert.equal("invalid", err.kind)
      assert.matches("FIALED", err.message)
   end)
end)
