-- The differential suite: every generated query (spec/support/differential.lua) goes
--   (a) through our client to a real Prefect server,
--   (b) as raw HTTP to the same server, and
--   (c) through our client to the bundled test server loaded with the data read back from it.
-- (a) must equal (b) exactly, field by field (bar the two fields Prefect computes from the
-- request's own time); (c) must equal (b): the same runs in the order the sort determines, the same
-- counts, the same error status and detail. The real server runs on SQLite, or on PostgreSQL with
-- PREFECT_REAL_DB=postgres. What it answered is written to build/real/ as a recording
-- (tools/real/record.sh copies it to spec/fixtures/).
local prefect = require("prefect")
local client_mod = require("prefect.client")
local filter = require("prefect.filter")
local dataset = require("prefect.testing.dataset")
local test_server = require("test_server")
local real = require("real_prefect")
local differential = require("differential")
local disk = require("disk")

local json = dataset.json
local DB = os.getenv("PREFECT_REAL_DB") or "sqlite"
local OUT = test_server.ROOT .. "/build/real"
local NULL_S = prefect.null
local ARRAY = { __name = "differential.array" }
local DECODE = { null = NULL_S, array_mt = ARRAY }

local function no_env() return nil end

local function client_for(srv)
   return prefect.client{ url = srv.url, getenv = no_env, retries = 0, timeout = 60 }
end

local JSON_HEADERS = { ["content-type"] = "application/json" }

local function call(srv, method, path, body)
   local status, rh, text = srv:request{ method = method, path = "/api" .. path,
      headers = body and JSON_HEADERS or {}, body = body, timeout = 60 }
   assert(status, method .. " " .. path .. " failed: " .. tostring(rh))
   return status, text
end

local function decode(text)
   if text == nil or text == "" then return nil end
   local ok, v = pcall(json.decode, text)
   if ok and v ~= nil then return v end
   return text
end

local same = differential.same

local function show(v)
   if type(v) == "table" then return json.encode(v) end
   return tostring(v)
end

describe("Prefect " .. real.PIN .. " on " .. DB .. " against our client and the bundled server", function()
   local pg, srv, bundled, data, resolve, ours_real, ours_bundled
   local recorded = json.array()

   setup(function()
      os.execute("mkdir -p " .. OUT)
      if DB == "postgres" then pg = real.postgres() end
      srv = real.start{ db = pg and pg.url or "sqlite" }
      local path = OUT .. "/dataset-" .. real.PIN .. "-" .. DB .. ".json"
      data = real.seed(srv, path)
      resolve = differential.resolver(data)
      bundled = test_server.start{ dataset = path, prefect = 3,
         args = DB == "postgres" and { "--db", "postgres" } or nil }
      ours_real, ours_bundled = client_for(srv), client_for(bundled)
   end)

   teardown(function()
      if srv then srv:stop() end
      if bundled then bundled:stop() end
      if pg then pg.stop() end
      if #recorded > 0 then
         disk.write(OUT .. "/exchanges-" .. real.PIN .. "-" .. DB .. ".json", json.encode(recorded) .. "\n")
      end
   end)

   local function record(name, req, status, body)
      local response = { status = status }
      local runs = json.is_array(body) and body or (json.is_object(body) and json.is_array(body.results)
         and body.results) or nil
      if status == 200 and runs and (#runs == 0 or json.is_object(runs[1])) then
         local ids, names = json.array(), json.array()
         for i, r in ipairs(runs) do ids[i], names[i] = r.id, r.name end
         response.ids, response.names = ids, names
         if runs ~= body then
            response.body = json.object({ "count", "limit", "pages", "page" },
               { count = body.count, limit = body.limit, pages = body.pages, page = body.page })
         end
      else
         response.body = body == nil and json.null or body
      end
      local request = json.object({ "method", "path", "headers", "body" }, { method = req.method,
         path = req.path, headers = req.headers, body = req.body == nil and json.null or decode(req.body) })
      if type(request.body) == "string" then
         request.body, request.raw_body = nil, req.body
         request = json.object({ "method", "path", "headers", "raw_body" }, request)
      end
      recorded[#recorded + 1] = json.object({ "name", "request", "response" },
         { name = name, request = request, response = response })
   end

   -- (a) against (b): the same runs, field by field.
   local function check_runs(name, raw, mine)
      assert.are.equal(#raw, #mine, name .. ": number of runs, client against raw")
      for i = 1, #raw do
         local ok, where = differential.same_value(raw[i], mine[i], NULL_S, ARRAY, "run " .. i,
            differential.VOLATILE)
         assert.is_true(ok, name .. ": client and raw HTTP differ at " .. tostring(where))
      end
   end

   local function check_error(name, status, err, who)
      assert.is_table(err, name .. ": " .. who .. " answered runs where the real server said " .. status)
      assert.are.equal(status, err.status, name .. ": " .. who .. " status; " .. tostring(err))
      return err
   end

   local raw_case

   local function filter_case(case)
      local q = resolve(case.query)
      local offset = case.offset or 0
      local ok, body, paging = pcall(filter.compile, q)
      if not ok then
         -- What the DSL refuses (a pitfall it names) is still asked of both servers as it is.
         assert.are.equal("invalid", type(body) == "table" and body.kind, case.name .. ": " .. tostring(body))
         return raw_case({ name = case.name .. " (refused by the DSL)", request = { method = "POST",
            path = "/task_runs/filter", body = json.encode(differential.json_body(q)),
            headers = JSON_HEADERS } })
      end
      local limit = math.min(paging.page_size or 200, paging.limit or 200)
      local text = client_mod.page_body(filter.encode(body), limit, offset)
      local status, raw_text = call(srv, "POST", "/task_runs/filter", text)
      local raw = decode(raw_text)
      record(case.name, { method = "POST", path = "/task_runs/filter",
         headers = { ["content-type"] = "application/json" }, body = text }, status, raw)
      local mine, err = ours_real:page(q, offset, DECODE)
      local theirs, berr = ours_bundled:page(q, offset, DECODE)
      if status == 200 then
         assert.is_truthy(mine, case.name .. ": the client failed where raw HTTP got 200: " .. tostring(err))
         check_runs(case.name, raw, mine)
         assert.is_truthy(theirs, case.name .. ": the bundled server failed: " .. tostring(berr))
         local diff = differential.compare_pages(raw, theirs, q.sort, NULL_S, offset > 0, #raw == limit)
         assert.is_nil(diff, case.name .. ": bundled server: " .. tostring(diff) .. "\n  body " .. text)
      else
         err = check_error(case.name, status, err, "the client")
         local same_body, where = differential.same_value(raw, err.body, nil, nil, "body")
         assert.is_true(same_body, case.name .. ": the client's err.body differs from the raw body at " ..
            tostring(where))
         berr = check_error(case.name, status, berr, "the bundled server")
         assert.are.equal(err.detail, berr.detail, case.name .. ": detail\n  body " .. text)
      end
   end

   local function count_case(case)
      local q = resolve(case.query)
      local body = filter.compile(q)
      body.sort = nil
      local text = filter.encode(body)
      local status, raw_text = call(srv, "POST", "/task_runs/count", text)
      record(case.name, { method = "POST", path = "/task_runs/count",
         headers = { ["content-type"] = "application/json" }, body = text }, status, decode(raw_text))
      assert.are.equal(200, status, case.name .. ": " .. tostring(raw_text))
      local want = tonumber(raw_text)
      assert.are.equal(want, ours_real:count(q), case.name .. ": client against raw")
      assert.are.equal(want, ours_bundled:count(q), case.name .. ": bundled server")
   end

   local function get_case(case)
      local id = resolve(case.id)
      local status, raw_text = call(srv, "GET", "/task_runs/" .. id)
      local raw = decode(raw_text)
      record(case.name, { method = "GET", path = "/task_runs/" .. id, headers = json.object({}, {}) },
         status, raw)
      local mine, err = ours_real:task_run(id, DECODE)
      local theirs, berr = ours_bundled:task_run(id, DECODE)
      if status == 200 then
         local ok, where = differential.same_value(raw, mine, NULL_S, ARRAY, "run", differential.VOLATILE)
         assert.is_true(ok, case.name .. ": client and raw HTTP differ at " .. tostring(where))
         assert.are.equal(raw.id, theirs and theirs.id, case.name .. ": bundled server " .. tostring(berr))
      else
         check_error(case.name, status, err, "the client")
         berr = check_error(case.name, status, berr, "the bundled server")
         assert.are.equal(err.detail, berr.detail, case.name .. ": detail")
      end
   end

   -- Where two values decoded by prefect.core differ (nil: nowhere); `skip` names keys of the
   -- top level left out.
   local function decoded_difference(x, y, path, skip)
      if type(x) ~= "table" or type(y) ~= "table" then
         if x == y then return nil end
         return path
      end
      if getmetatable(x) ~= getmetatable(y) then return path end
      for k, v in pairs(x) do
         if not (skip and skip[k]) then
            local at = decoded_difference(v, y[k], path .. "." .. tostring(k))
            if at then return at end
         end
      end
      for k in pairs(y) do
         if x[k] == nil and not (skip and skip[k]) then return path .. "." .. tostring(k) .. " (extra)" end
      end
      return nil
   end

   -- The real server's own answer to `path` for `ids` (id.any_), by id; recorded.
   local function by_id(name, path, group, ids)
      local out = {}
      if #ids == 0 then return out end
      local body = json.encode(json.object({ group, "limit" },
         { [group] = { id = { any_ = json.array(ids) } }, limit = #ids }))
      local status, text = call(srv, "POST", path, body)
      local list = decode(text)
      record(name, { method = "POST", path = path, headers = JSON_HEADERS, body = body }, status, list)
      assert.are.equal(200, status, name .. ": " .. tostring(text))
      for _, v in ipairs(list) do out[v.id] = v end
      return out
   end

   local function sorted_set(set)
      local list = {}
      for id in pairs(set) do list[#list + 1] = id end
      table.sort(list)
      return list
   end

   -- `raw` cut down to `fields` (nil: all of it), to compare with what the client decoded.
   local function projection(raw, fields)
      if not fields or fields == true then return raw end
      local keys = {}
      for _, f in ipairs(fields) do if raw[f] ~= nil then keys[#keys + 1] = f end end
      return json.object(keys, raw)
   end

   -- (a): our client's run.flow_run / run.flow against the real server's raw answers; (c): the
   -- bundled server's against our client's on the real one, run by run.
   local function include_case(case)
      local q = resolve(case.query)
      local opts = { include = case.include, null = NULL_S, array_mt = ARRAY }
      local mine = assert(ours_real:page(q, nil, opts))
      local theirs, berr = ours_bundled:page(q, nil, opts)
      assert.is_truthy(theirs, case.name .. ": the bundled server failed: " .. tostring(berr))
      local diff = differential.compare_pages(mine, theirs, q.sort, NULL_S, false, false)
      assert.is_nil(diff, case.name .. ": bundled server's runs: " .. tostring(diff))
      local fr_ids = {}
      for _, run in ipairs(mine) do
         if type(run.flow_run_id) == "string" then fr_ids[run.flow_run_id] = true end
      end
      local frs = by_id(case.name .. " (its flow runs)", "/flow_runs/filter", "flow_runs",
         sorted_set(fr_ids))
      local flow_ids = {}
      for _, fr in pairs(frs) do flow_ids[fr.flow_id] = true end
      local flows = by_id(case.name .. " (their flows)", "/flows/filter", "flows", sorted_set(flow_ids))
      local fields = case.fields or {}
      local want_run = case.fields == nil or fields.flow_run ~= nil
      local by_run = {}
      for _, run in ipairs(theirs) do by_run[run.id] = run end
      for i, run in ipairs(mine) do
         local fr = type(run.flow_run_id) == "string" and frs[run.flow_run_id]
         local where = case.name .. ": run " .. i
         if fr and want_run then
            local ok, at = differential.same_value(projection(fr, fields.flow_run), run.flow_run, NULL_S,
               ARRAY, "flow_run", differential.VOLATILE)
            assert.is_true(ok, where .. ": client and raw HTTP differ at " .. tostring(at))
         else
            assert.is_nil(run.flow_run, where)
         end
         local flow = fr and flows[fr.flow_id]
         if flow then
            local ok, at = differential.same_value(projection(flow, fields.flow), run.flow, NULL_S, ARRAY,
               "flow")
            assert.is_true(ok, where .. ": client and raw HTTP differ at " .. tostring(at))
         else
            assert.is_nil(run.flow, where)
         end
         local b = by_run[run.id]
         for _, key in ipairs({ "flow_run", "flow" }) do
            local at = decoded_difference(run[key], b and b[key], key, differential.VOLATILE)
            assert.is_nil(at, where .. ": the bundled server's " .. key .. " differs at " .. tostring(at))
         end
      end
   end

   function raw_case(case)
      local r = case.request
      local headers = {}
      for k, v in pairs(r.headers) do headers[k] = v end
      local function send(server)
         local status, _, text = server:request{ method = r.method, path = "/api" .. r.path,
            headers = headers, body = r.body, timeout = 60 }
         assert(status, case.name .. ": request failed: " .. tostring(text))
         return status, decode(text), text
      end
      local status, body, text = send(srv)
      record(case.name, { method = r.method, path = r.path, headers = headers, body = r.body }, status, body)
      local bstatus, bbody, btext = send(bundled)
      assert.are.equal(status, bstatus, case.name .. ": status; real " .. tostring(text) .. "\n  bundled " ..
         tostring(btext))
      local runs = json.is_array(body) and body or (json.is_object(body) and json.is_array(body.results)
         and body.results) or nil
      if runs and (#runs == 0 or json.is_object(runs[1])) then
         local bruns = json.is_array(bbody) and bbody or bbody.results
         local diff = differential.compare_pages(runs, bruns, nil, NULL_S)
         assert.is_nil(diff, case.name .. ": " .. tostring(diff))
         if runs ~= body then
            for _, k in ipairs({ "count", "limit", "pages", "page" }) do
               assert.is_true(same(body[k], bbody[k]), case.name .. ": " .. k .. " " .. show(body[k]) ..
                  ", bundled " .. show(bbody[k]))
            end
         end
         return
      end
      assert.is_true(same(body, bbody), case.name .. ":\n  real    " .. tostring(text) .. "\n  bundled " ..
         tostring(btext))
   end

   local RUN = { filter = filter_case, count = count_case, get = get_case, raw = raw_case,
      include = include_case }
   local cases = differential.cases()
   for _, case in ipairs(cases) do
      it(case.name, function() RUN[case.kind](case) end)
   end

   it("asks at least 150 queries", function()
      assert.is_true(#cases >= 150, #cases .. " cases")
   end)
end)
