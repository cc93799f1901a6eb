-- client:start and poll as a frame loop uses them, beyond what pager_spec
-- covers: several reads in flight on one client at once, a server that drips
-- its answers, and stopping a read part-way.

local prefect = require("prefect")
local test_server = require("test_server")
local socket = require("socket")

local function no_env() return nil end
local function no_sleep() error("poll must never sleep") end

local function new_client(srv, opts)
   local o = { url = srv.url, getenv = no_env, sleep = no_sleep }
   for k, v in pairs(opts or {}) do o[k] = v end
   return prefect.client(o)
end

describe("client:start in a frame loop", function()
   local srv
   setup(function()
      srv = test_server.start{ dataset = { generate = 1000, seed = 3, shape = 3 } }
   end)
   teardown(function() if srv then srv:stop() end end)

   it("keeps several reads in flight on one client, each complete and on its own", function()
      local counter = new_client(srv)
      local queries = {
         { state = "COMPLETED" },
         { state = { "FAILED", "CRASHED" } },
         { sort = "NAME_ASC", limit = 450 },
      }
      local expected = {}
      for i, q in ipairs(queries) do
         expected[i] = q.limit or assert(counter:count(q))
         assert.is_true(expected[i] > 0)
      end
      local c = new_client(srv, { page_size = 100, headers = { ["X-Test-Fault"] = "delay_ms=300" } })
      local handles, got, seen, done = {}, {}, {}, {}
      for i, q in ipairs(queries) do
         handles[i] = c:start(q)
         got[i], seen[i] = 0, {}
      end
      local longest, frames, in_flight_together = 0, 0, 0
      local give_up = socket.gettime() + 30
      while not (done[1] and done[2] and done[3]) do
         frames = frames + 1
         local open = 0
         for i, h in ipairs(handles) do
            if not done[i] then
               open = open + 1
               local t0 = socket.gettime()
               local runs, finished = h:poll(0)
               longest = math.max(longest, socket.gettime() - t0)
               assert.is_table(runs, tostring(finished))
               for _, run in ipairs(runs) do
                  assert.is_nil(seen[i][run.id], "a run came twice")
                  seen[i][run.id] = true
                  got[i] = got[i] + 1
                  if i == 1 then assert.equal("COMPLETED", run.state_type) end
                  if i == 2 then
                     assert.is_truthy(run.state_type == "FAILED" or run.state_type == "CRASHED")
                  end
               end
               done[i] = finished
            end
         end
         if open == 3 then in_flight_together = in_flight_together + 1 end
         assert.is_true(socket.gettime() < give_up, "the reads never finished")
         socket.sleep(0.002)
      end
      for i = 1, 3 do assert.equal(expected[i], got[i]) end
      assert.is_true(in_flight_together > 5, "the three reads were in flight together for "
         .. in_flight_together .. " frames")
      assert.is_true(longest < 0.1, ("a poll(0) took %.1f ms"):format(longest * 1000))
   end)

   it("never waits longer than asked while the server drips its answer", function()
      local c = new_client(srv, { page_size = 200,
         headers = { ["X-Test-Fault"] = "drip_bytes=1024; drip_ms=5" } })
      local h = c:start{ limit = 400 }
      local runs, polls_with_runs, longest = 0, 0, 0
      local give_up = socket.gettime() + 30
      while true do
         local t0 = socket.gettime()
         local list, finished = h:poll(10)
         longest = math.max(longest, socket.gettime() - t0)
         assert.is_table(list, tostring(finished))
         if #list > 0 then polls_with_runs = polls_with_runs + 1 end
         runs = runs + #list
         if finished then break end
         assert.is_true(socket.gettime() < give_up, "the read never finished")
      end
      assert.equal(400, runs)
      -- streamed: the runs of a page came out over many polls, not all at the end
      assert.is_true(polls_with_runs > 10, "runs arrived in " .. polls_with_runs .. " polls")
      assert.is_true(longest < 0.1, ("a poll(10) took %.1f ms"):format(longest * 1000))
   end)

   it("stops a read part-way with close, and the client reads on", function()
      local c = new_client(srv, { page_size = 50,
         headers = { ["X-Test-Fault"] = "drip_bytes=512; drip_ms=5" } })
      local h = c:start{}
      local runs = 0
      local give_up = socket.gettime() + 30
      while runs == 0 do
         local list = assert(h:poll(10))
         runs = runs + #list
         assert.is_true(socket.gettime() < give_up)
      end
      h:close()
      local list, finished = h:poll(0)
      assert.same({}, list)
      assert.is_true(finished)
      local again = c:page{ limit = 5 }
      assert.equal(5, #again)
   end)
end)
