-- The test server's --relative-time: the recorded (or generated) runs moved so that the dataset
-- ends now, every time by the same amount, so "the last 24 hours" finds them as it found them the
-- day they were recorded.

local test_server = require("test_server")
local dataset = require("prefect.testing.dataset")
local calendar = require("prefect.calendar")
local cjson = require("cjson")

local FIXTURE = test_server.ROOT .. "/spec/fixtures/dataset-2.19.9.json"

local function seconds(s)
   local y, mo, d, h, mi, sec = s:match("^(%d+)%-(%d+)%-(%d+)T(%d+):(%d+):(%d+)")
   return calendar.epoch(tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec))
end

-- Every timestamp string of a decoded document, by its path.
local function timestamps(v, path, out)
   out = out or {}
   if type(v) == "table" then
      for k, x in pairs(v) do timestamps(x, path .. "." .. tostring(k), out) end
   elseif type(v) == "string" and v:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d") then
      out[path] = v
   end
   return out
end

local function latest_update(ds)
   local latest = -math.huge
   for _, list in ipairs({ ds.task_runs, ds.flow_runs, ds.flows }) do
      for _, obj in ipairs(list) do latest = math.max(latest, seconds(obj.updated)) end
   end
   return latest
end

describe("dataset.shift_to", function()
   it("moves every timestamp by one whole number of seconds, keeping fraction and offset", function()
      local recorded, shifted = dataset.load(FIXTURE), dataset.load(FIXTURE)
      local now = 1900000000
      local by = dataset.shift_to(shifted, now)
      assert.equal(now, latest_update(shifted))
      local before, after = timestamps(recorded, ""), timestamps(shifted, "")
      local n = 0
      for path, was in pairs(before) do
         local is = assert(after[path], path)
         assert.equal(was:sub(20), is:sub(20), path)
         assert.equal(seconds(was) + by, seconds(is), path)
         n = n + 1
      end
      assert.is_true(n > 1000, "only " .. n .. " timestamps")
      -- nothing else changed
      assert.equal(#recorded.task_runs, #shifted.task_runs)
      for i, run in ipairs(recorded.task_runs) do
         assert.equal(run.id, shifted.task_runs[i].id)
         assert.equal(run.name, shifted.task_runs[i].name)
         assert.equal(run.state_type, shifted.task_runs[i].state_type)
      end
   end)

   it("crosses month and year ends", function()
      local ds = dataset.load(FIXTURE)
      dataset.shift_to(ds, calendar.epoch(2031, 1, 1, 0, 0, 30))
      local latest = 0
      for _, run in ipairs(ds.task_runs) do
         assert.matches("^20[23]%d%-%d%d%-%d%dT%d%d:%d%d:%d%d[.%d]*%+00:00$", run.updated)
         latest = math.max(latest, seconds(run.updated))
      end
      assert.equal(calendar.epoch(2031, 1, 1, 0, 0, 30), latest)
   end)
end)

describe("dataset.generate with ends_at", function()
   it("gives the same runs, ended by ends_at", function()
      local ends_at = 1900000000
      local plain = dataset.generate{ n = 400, seed = 3, shape = 2 }
      local recent = dataset.generate{ n = 400, seed = 3, shape = 2, ends_at = ends_at }
      local last_end = -math.huge
      for i = 1, 400 do
         local a, b = plain.task_runs[i], recent.task_runs[i]
         assert.equal(a.name, b.name)
         assert.equal(a.state_type, b.state_type)
         assert.same(a.total_run_time, b.total_run_time)
         if b.end_time ~= dataset.json.null then
            assert.is_true(seconds(b.end_time) <= ends_at, b.end_time)
            last_end = math.max(last_end, seconds(b.end_time))
         end
      end
      -- the last runs ended within the last quarter of an hour, not months ago
      assert.is_true(last_end > ends_at - 900, os.date("!%c", last_end))
   end)
end)

describe("prefect-test-server --relative-time", function()
   it("serves the fixture ending at the moment it started", function()
      local before = os.time()
      local srv = test_server.start{ dataset = "fixture", relative_time = true }
      finally(function() srv:stop() end)
      local after = os.time()
      local status, _, body = srv:request{ method = "POST", path = "/api/task_runs/filter",
         headers = { ["content-type"] = "application/json" }, body = '{"sort":"END_TIME_DESC","limit":200}' }
      assert.equal(200, status, body)
      local runs = cjson.decode(body)
      local latest = -math.huge
      for _, run in ipairs(runs) do latest = math.max(latest, seconds(run.updated)) end
      assert.is_true(latest >= before and latest <= after,
         ("%d not in [%d, %d]"):format(latest, before, after))
      -- every run moved by the same amount: the recorded spacing is kept
      local recorded, by = {}, nil
      for _, run in ipairs(dataset.load(FIXTURE).task_runs) do recorded[run.id] = run end
      for _, run in ipairs(runs) do
         local shift = seconds(run.created) - seconds(recorded[run.id].created)
         by = by or shift
         assert.equal(by, shift, run.id)
         assert.equal(by, seconds(run.updated) - seconds(recorded[run.id].updated), run.id)
      end
   end)
end)
