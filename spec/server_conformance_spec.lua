-- Replays every query recorded from a real Prefect server against the bundled test server loaded
-- with the same data, over HTTP, and compares the answers the way spec/fixtures/README.md says:
-- same status; the same task runs in the same order where the sort key is unique among the returned
-- rows, the same set otherwise; the same body for errors, counts and versions (for validation
-- errors: exception_message, each detail's loc/msg/type/ctx, request_body). Two recordings: Prefect
-- 2.19.9 (shared/prefect/fixtures) and Prefect 3.9.1 (tools/real/record.sh, from `make test-real`),
-- so a machine without PyPI still checks Prefect 3.
local test_server = require("test_server")
local dataset = require("prefect.testing.dataset")
local disk = require("disk")

local json = dataset.json

local differential = require("differential")
local same = differential.same

local FIXTURES = test_server.ROOT .. "/spec/fixtures/"
local exchanges = assert(json.decode((assert(disk.read(FIXTURES .. "exchanges-2.19.9.json")))))
local fixture = dataset.load(FIXTURES .. "dataset-2.19.9.json")
local runs_by_id = {}
for i = 1, #fixture.task_runs do runs_by_id[fixture.task_runs[i].id] = fixture.task_runs[i] end


local function show(v) return json.encode(v) end

-- Whether the recorded order is meaningful: the sort key is unique (and present) among the rows.
local SORT_KEYS = { NAME_ASC = "name", NAME_DESC = "name", EXPECTED_START_TIME_ASC = "expected_start_time",
   EXPECTED_START_TIME_DESC = "expected_start_time",
   NEXT_SCHEDULED_START_TIME_ASC = "next_scheduled_start_time",
   END_TIME_DESC = "end_time" }

local function order_is_defined(exchange, ids)
   local body = exchange.request.body
   local sort = json.is_object(body) and body ~= json.null and body.sort or nil
   if sort == nil or sort == json.null or sort == "ID_DESC" then return true end
   if exchange.request.path ~= "/task_runs/filter" then return sort == "NAME_ASC" or sort == "NAME_DESC" end
   local key = SORT_KEYS[sort]
   local seen = {}
   for _, id in ipairs(ids) do
      local v = runs_by_id[id][key]
      if v == nil or v == json.null or seen[v] then return false end
      seen[v] = true
   end
   return true
end

local function replay(srv, exchange)
   local r = exchange.request
   local body = r.raw_body
   if body == nil and r.body ~= nil and r.body ~= json.null then body = json.encode(r.body) end
   local headers = {}
   for _, k in ipairs(json.keys(r.headers or {})) do headers[k] = r.headers[k] end
   local status, _, text = srv:request{ method = r.method, path = "/api" .. r.path, headers = headers,
      body = body }
   assert(status, "request failed: " .. tostring(text))
   return status, text
end

local function check(srv, exchange)
   local want = exchange.response
   local status, text = replay(srv, exchange)
   assert.are.equal(want.status, status, exchange.name .. ": status; body " .. tostring(text))
   local got = assert(json.decode(text), exchange.name .. ": response is not JSON: " .. text)
   if want.ids then
      local ids = {}
      for i = 1, #got do ids[i] = got[i].id end
      assert.are.equal(#want.ids, #ids, exchange.name .. ": number of runs")
      if order_is_defined(exchange, want.ids) then
         for i = 1, #ids do
            assert.are.equal(want.ids[i], ids[i], exchange.name .. ": run at position " .. i)
         end
      else
         local set = {}
         for _, id in ipairs(ids) do set[id] = true end
         for _, id in ipairs(want.ids) do
            assert.is_true(set[id] == true, exchange.name .. ": missing " .. id)
         end
      end
      return
   end
   local wb = want.body
   if json.is_object(wb) and wb.exception_detail ~= nil then
      assert.are.equal(wb.exception_message, got.exception_message, exchange.name)
      assert.are.equal(#wb.exception_detail, #got.exception_detail, exchange.name .. ": " .. text)
      for i, item in ipairs(wb.exception_detail) do
         local mine = got.exception_detail[i]
         for _, k in ipairs({ "loc", "msg", "type", "ctx" }) do
            assert.is_true(same(item[k], mine[k]), ("%s: detail %d %s: want %s, got %s"):format(exchange.name,
               i, k, show(item[k] or json.null), show(mine[k] or json.null)))
         end
      end
      assert.is_true(same(wb.request_body, got.request_body), exchange.name .. ": request_body " .. text)
      return
   end
   assert.is_true(same(wb, got), ("%s: want %s, got %s"):format(exchange.name, show(wb), text))
end

describe("test server against the recorded Prefect 2.19.9 exchanges", function()
   local srv
   setup(function() srv = test_server.start{ dataset = "fixture", prefect = 2 } end)
   teardown(function() if srv then srv:stop() end end)

   local replayed = 0
   for _, exchange in ipairs(exchanges) do
      if not exchange.name:find("^seed%-") then
         replayed = replayed + 1
         it(exchange.name, function() check(srv, exchange) end)
      end
   end

   it("covers all 82 recorded queries", function()
      assert.are.equal(82, replayed)
   end)

   -- Beyond what the README asks: rows with equal sort keys (NULLs included) come back in the order the
   -- recorded server gave them (SQLite walks the sort column's index: insertion order, reversed for DESC).
   it("returns ties in the recorded order too", function()
      for _, exchange in ipairs(exchanges) do
         if exchange.response.ids and not exchange.name:find("^seed%-") then
            local _, text = replay(srv, exchange)
            local got = json.decode(text)
            assert.are.equal(#exchange.response.ids, #got, exchange.name)
            for i, id in ipairs(exchange.response.ids) do
               assert.are.equal(id, got[i].id, exchange.name .. ": position " .. i)
            end
         end
      end
   end)
end)

-- Prefect 3.9.1: the order check knows the sort columns of the recorded runs, and the fields Prefect
-- computes from the request's own time (estimated_*) are left out of whole-run comparisons.
describe("test server against the recorded Prefect 3.9.1 exchanges", function()
   local recorded = assert(json.decode((assert(disk.read(FIXTURES .. "exchanges-3.9.1.json")))))
   local data = dataset.load(FIXTURES .. "dataset-3.9.1.json")
   local by_id = {}
   for _, r in ipairs(data.task_runs) do by_id[r.id] = r end
   local srv
   setup(function() srv = test_server.start{ dataset = FIXTURES .. "dataset-3.9.1.json", prefect = 3 } end)
   teardown(function() if srv then srv:stop() end end)

   local function without_volatile(v)
      if not json.is_object(v) or v == json.null then return v end
      local keys = {}
      for _, k in ipairs(json.keys(v)) do if not differential.VOLATILE[k] then keys[#keys + 1] = k end end
      return json.object(keys, v)
   end

   local function check3(exchange)
      local want = exchange.response
      local status, text = replay(srv, exchange)
      assert.are.equal(want.status, status, exchange.name .. ": status; body " .. tostring(text))
      local got = json.null
      if text and text ~= "" then got = assert(json.decode(text), exchange.name .. ": not JSON: " .. text) end
      if want.ids then
         local runs = json.is_array(got) and got or got.results
         local body = exchange.request.body
         local sort = json.is_object(body) and body ~= json.null and body.sort or nil
         if sort == json.null then sort = nil end
         local limit = json.is_object(body) and body ~= json.null and json.number(body.limit) or 200
         local offset = json.is_object(body) and body ~= json.null and json.number(body.offset) or 0
         local wanted = {}
         for i, id in ipairs(want.ids) do wanted[i] = by_id[id] or { id = id } end
         local diff = differential.compare_pages(wanted, runs, exchange.request.path == "/task_runs/filter"
            and sort or nil, json.null, (offset or 0) > 0, #wanted == limit)
         assert.is_nil(diff, exchange.name .. ": " .. tostring(diff))
         if want.body then
            for _, k in ipairs(json.keys(want.body)) do
               assert.is_true(same(want.body[k], got[k]), exchange.name .. ": " .. k)
            end
         end
         return
      end
      assert.is_true(same(without_volatile(want.body), without_volatile(got)),
         ("%s: want %s, got %s"):format(exchange.name, show(want.body), text))
   end

   for _, exchange in ipairs(recorded) do
      it(exchange.name, function() check3(exchange) end)
   end

   it("covers at least 150 recorded queries", function()
      assert.is_true(#recorded >= 150, #recorded .. " recorded")
   end)
end)

-- The recorded datasets are what the real servers answered on /flows/filter (default sort,
-- NAME_ASC) and /flow_runs/filter (ID_DESC), {"limit": 200, "offset": 0}: the test server must give
-- the same bodies back, object for object and key for key, and the same for the id.any_ requests
-- `include` makes.
for _, version in ipairs{ "2.19.9", "3.9.1" } do
   describe("/flows/filter and /flow_runs/filter against the bodies recorded from Prefect " .. version,
      function()
      local path = FIXTURES .. "dataset-" .. version .. ".json"
      local data = dataset.load(path)
      local srv
      setup(function() srv = test_server.start{ dataset = path, prefect = tonumber(version:sub(1, 1)) } end)
      teardown(function() if srv then srv:stop() end end)

      local function without_volatile(list)
         local out = json.array()
         for i, v in ipairs(list) do
            local keys = {}
            for _, k in ipairs(json.keys(v)) do
               if not differential.VOLATILE[k] then keys[#keys + 1] = k end
            end
            out[i] = json.object(keys, v)
         end
         return out
      end

      local function answer(route, body)
         local status, _, text = srv:request{ method = "POST", path = "/api" .. route,
            headers = { ["content-type"] = "application/json" }, body = body }
         assert.are.equal(200, status, text)
         return json.decode(text), text
      end

      it("answers /flows/filter with the recorded flows, in the recorded order", function()
         local got = answer("/flows/filter", '{"limit":200,"offset":0}')
         assert.is_true(same(data.flows, got), json.encode(got))
      end)

      it("answers /flow_runs/filter with the recorded flow runs, in the recorded order", function()
         local got = answer("/flow_runs/filter", '{"limit":200,"offset":0}')
         assert.is_true(same(without_volatile(data.flow_runs), without_volatile(got)))
      end)

      it("answers the id.any_ requests of include with exactly those objects", function()
         local ids, want = {}, json.array()
         for i, fr in ipairs(data.flow_runs) do
            if i % 2 == 1 then
               ids[#ids + 1] = fr.id
               want[#want + 1] = fr
            end
         end
         local got = answer("/flow_runs/filter", json.encode(json.object({ "flow_runs", "limit" }, {
            flow_runs = { id = { any_ = json.array(ids) } }, limit = #ids })))
         assert.is_true(same(without_volatile(want), without_volatile(got)))
         local flows = answer("/flows/filter", json.encode(json.object({ "flows", "limit" }, {
            flows = { id = { any_ = json.array{ data.flows[2].id } } }, limit = 1 })))
         assert.is_true(same(json.array{ data.flows[2] }, flows))
         -- limit and offset page through the flows as through the runs
         local second = answer("/flows/filter", '{"limit":1,"offset":1}')
         assert.is_true(same(json.array{ data.flows[2] }, second))
      end)
   end)
end
