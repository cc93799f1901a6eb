-- The Prefect semantics of the bundled test server (prefect.testing.api / query / dataset), called
-- directly through app:handle: routes, auth, CSRF, the API-version header, body handling, validation
-- errors in both Prefect 2 and Prefect 3 shapes, every filter operator's edge cases, sorts, paging,
-- and the generated datasets.
local api = require("prefect.testing.api")
local dataset = require("prefect.testing.dataset")

local json = dataset.json
local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/.."
local FIXTURE = ROOT .. "/spec/fixtures/dataset-2.19.9.json"

local fixture = dataset.load(FIXTURE)

local JSON_CT = { ["content-type"] = "application/json" }

-- call(app, method, path, body_text, headers) --> status, headers, decoded body (or raw text), raw text
local function call(app, method, path, body, headers, query)
   local status, h, text = app:handle{ method = method, path = "/api" .. path, query = query,
      headers = headers or JSON_CT, body = body }
   local decoded = text ~= "" and json.decode(text) or nil
   return status, h, decoded, text
end

local function post(app, path, body, headers) return call(app, "POST", path, body, headers) end

-- The names of the task runs a filter body returns (a table of names in order).
local function names(app, body)
   local status, _, runs, text = post(app, "/task_runs/filter", body)
   assert.are.equal(200, status, text)
   local out = {}
   for i = 1, #runs do out[i] = runs[i].name end
   return out
end

local function sorted(t)
   local c = {}
   for i, v in ipairs(t) do c[i] = v end
   table.sort(c)
   return c
end

local function count(app, body)
   local status, _, n, text = post(app, "/task_runs/count", body)
   assert.are.equal(200, status, text)
   return n
end

-- A small hand-made dataset with every relation the filters look at.
local function uuid(tail) return "00000000-0000-4000-8000-" .. string.rep("0", 12 - #tail) .. tail end
local F1, F2, D1, R1, R2 = uuid("f1"), uuid("f2"), uuid("d1"), uuid("a1"), uuid("a2")
local T = { uuid("1"), uuid("2"), uuid("3"), uuid("4"), uuid("5") }

local function run(i, name, fr, tags, stype, sname, start, finish, expected, next_sched)
   local function ts(v) return v or json.null end
   return json.object({ "id", "created", "name", "flow_run_id", "tags", "state_type", "state_name",
      "expected_start_time", "next_scheduled_start_time", "start_time", "end_time", "total_run_time" }, {
      id = T[i], created = "2026-01-01T00:00:0" .. i .. ".000000+00:00", name = name,
      flow_run_id = fr or json.null, tags = json.array(tags), state_type = stype, state_name = sname,
      expected_start_time = ts(expected), next_scheduled_start_time = ts(next_sched), start_time = ts(start),
      end_time = ts(finish), total_run_time = json.float(0),
   })
end

local function mini()
   return {
      server_version = "2.19.9", api_version = "0.8.4",
      flows = json.array({
         json.object({ "id", "name", "tags" },
            { id = F1, name = "etl-pipeline", tags = json.array({ "etl" }) }),
         json.object({ "id", "name", "tags" }, { id = F2, name = "Reporting", tags = json.array({}) }),
      }),
      deployments = json.array({
         json.object({ "id", "name", "flow_id", "paused", "tags", "work_queue_name" }, { id = D1,
            name = "nightly-etl", flow_id = F1, paused = false, tags = json.array({ "prod" }),
            work_queue_name = "default" }),
      }),
      flow_runs = json.array({
         json.object({ "id", "created", "name", "flow_id", "deployment_id", "idempotency_key", "tags",
            "state_type", "state_name", "parent_task_run_id", "start_time", "expected_start_time" }, {
            id = R1, created = "2025-12-31T00:00:01.000000+00:00", name = "fr-one", flow_id = F1,
            deployment_id = D1, idempotency_key = "k1", tags = json.array({ "nightly" }),
            state_type = "COMPLETED", state_name = "Completed", parent_task_run_id = json.null,
            start_time = "2026-01-01T10:00:00.000000+00:00",
            expected_start_time = "2026-01-01T09:00:00.000000+00:00" }),
         json.object({ "id", "created", "name", "flow_id", "deployment_id", "idempotency_key", "tags",
            "state_type", "state_name", "parent_task_run_id", "start_time", "expected_start_time" }, {
            id = R2, created = "2025-12-31T00:00:02.000000+00:00", name = "fr-two", flow_id = F2,
            deployment_id = json.null, idempotency_key = json.null, tags = json.array({}),
            state_type = "SCHEDULED", state_name = "Scheduled", parent_task_run_id = T[1],
            start_time = json.null, expected_start_time = "2026-03-01T00:00:00.000000+00:00" }),
      }),
      task_runs = json.array({
         run(1, "Load_DB-1", R1, { "etl", "db" }, "COMPLETED", "Completed",
            "2026-01-01T10:00:01.500000+00:00",
            "2026-01-01T10:00:05.000000+00:00", "2026-01-01T10:00:00.000000+00:00"),
         run(2, "loadXdb-2", R1, { "etl" }, "FAILED", "Failed", "2026-01-01T10:00:02.000000+00:00",
            "2026-01-01T10:00:03.000000+00:00", "2026-01-01T10:00:00.000000+00:00"),
         run(3, "Ünïcode-3", R2, {}, "SCHEDULED", "Late", nil, nil, "2026-03-01T00:00:00.000000+00:00",
            "2026-03-01T00:00:00.000000+00:00"),
         run(4, "ünïcode-4", nil, { "db" }, "PENDING", "Pending", nil, nil,
            "2026-04-01T00:00:00.000000+00:00"),
         run(5, "100%_done-5", R2, { "etl", "db", "x" }, "RUNNING", "Running",
            "2026-02-01T00:00:00.000000+00:00",
            nil, "2026-01-31T00:00:00.000000+00:00"),
      }),
   }
end

---------------------------------------------------------------------------------------------------

describe("test server routes", function()
   local app2, app3
   setup(function()
      app2 = api.new{ data = fixture, prefect = 2 }
      app3 = api.new{ data = fixture, prefect = 3 }
   end)

   it("answers the probe endpoints", function()
      for _, app in ipairs({ app2, app3 }) do
         local s, h, v = call(app, "GET", "/health")
         assert.are.same({ 200, "application/json", true }, { s, h["content-type"], v })
         local vs, _, version = call(app, "GET", "/version")
         assert.are.same({ 200, "0.8.4" }, { vs, version })
         local _, _, ready = call(app, "GET", "/ready")
         assert.are.equal("OK", ready.message)
      end
      assert.are.equal("2.19.9", select(3, call(app2, "GET", "/admin/version")))
   end)

   it("says Not Found for unknown paths, inside and outside the base path", function()
      local s, _, body = call(app2, "GET", "/nope")
      assert.are.equal(404, s)
      assert.are.equal("Not Found", body.detail)
      local s2, _, t2 = app2:handle{ method = "GET", path = "/other/health", headers = {} }
      assert.are.same({ 404, '{"detail":"Not Found"}' }, { s2, t2 })
   end)

   it("redirects a trailing slash with 307 to the slashless path, keeping the query", function()
      local s, h, _, text = call(app2, "POST", "/task_runs/filter/", "{}",
         { ["content-type"] = "application/json", host = "127.0.0.1:4200" }, "x=1")
      assert.are.equal(307, s)
      assert.are.equal("http://127.0.0.1:4200/api/task_runs/filter?x=1", h.location)
      assert.are.equal("", text)
   end)

   it("gives 405 with the Allow of the first route whose path matches", function()
      -- On Prefect 2 that is PATCH /task_runs/{id} ("filter" is an id there); on 3 it is POST /filter.
      local s, h, body = call(app2, "PUT", "/task_runs/filter", "{}")
      assert.are.same({ 405, "Method Not Allowed", "PATCH" }, { s, body.detail, h.allow })
      s, h = call(app3, "PUT", "/task_runs/filter", "{}")
      assert.are.same({ 405, "POST" }, { s, h.allow })
   end)

   it("reads GET /task_runs/filter as an id on Prefect 2 (422), a wrong method on Prefect 3 (405)", function()
      local s, _, body = call(app2, "GET", "/task_runs/filter")
      assert.are.equal(422, s)
      assert.are.same({ "path", "id" }, body.exception_detail[1].loc)
      assert.are.equal("value is not a valid uuid", body.exception_detail[1].msg)
      assert.are.equal(json.null, body.request_body)
      assert.are.equal(405, (call(app3, "GET", "/task_runs/filter")))
      assert.are.equal(404, (call(app3, "GET", "/task_runs/not-a-uuid")))
   end)

   it("serves one task run by id, exactly as recorded", function()
      local first = fixture.task_runs[1]
      local s, _, _, text = call(app2, "GET", "/task_runs/" .. first.id)
      assert.are.equal(200, s)
      assert.are.equal(json.encode(first), text)
      -- Prefect 2 parses the id as a UUID: case and hyphens do not matter.
      local s2, _, other = call(app2, "GET", "/task_runs/" .. first.id:upper():gsub("-", ""))
      assert.are.same({ 200, first.id }, { s2, other.id })
      local s3, _, missing = call(app2, "GET", "/task_runs/" .. uuid("999"))
      assert.are.same({ 404, "Task not found" }, { s3, missing.detail })
   end)

   it("keeps each run's key order and writes floats as floats", function()
      local _, _, _, text = post(app2, "/task_runs/filter", '{"limit": 1}')
      assert.truthy(text:find('^%[{"id":"[^"]+","created":"[^"]+","updated":'))
      assert.truthy(text:find('"retry_delay_seconds":0.0,', 1, true))
   end)

   it("serves /flow_runs/filter with its own sorts", function()
      local s, _, runs = post(app2, "/flow_runs/filter", '{"sort": "NAME_DESC", "limit": 2}')
      assert.are.equal(200, s)
      assert.are.same({ "fr-gamma", "fr-epsilon" }, { runs[1].name, runs[2].name })
      local s2, _, err = post(app2, "/flow_runs/filter", '{"sort": "NOPE"}')
      assert.are.equal(422, s2)
      assert.truthy(err.exception_detail[1].msg:find("'START_TIME_ASC'", 1, true))
   end)

   it("serves /flow_runs/filter by id.any_, with limit and offset, as include asks it", function()
      local ids = { fixture.flow_runs[1].id, fixture.flow_runs[3].id, fixture.flow_runs[4].id }
      local body = '{"flow_runs":{"id":{"any_":["' .. table.concat(ids, '","') .. '"]}},"limit":3}'
      local s, _, runs = post(app3, "/flow_runs/filter", body)
      assert.are.equal(200, s)
      local got = {}
      for i, r in ipairs(runs) do got[i] = r.id end
      assert.are.same(sorted(ids), sorted(got))
      -- ID_DESC by default: the greatest id first
      assert.are.equal(sorted(ids)[3], got[1])
      local _, _, two = post(app3, "/flow_runs/filter", (body:gsub('"limit":3', '"limit":2,"offset":1')))
      assert.are.same({ got[2], got[3] }, { two[1].id, two[2].id })
      local _, _, none = post(app2, "/flow_runs/filter", '{"flow_runs":{"id":{"any_":[]}}}')
      assert.are.same({}, none)
   end)

   it("serves /flows/filter with Prefect's semantics", function()
      local function flow_names(app, body)
         local s, _, flows, text = post(app, "/flows/filter", body)
         assert.are.equal(200, s, text)
         local out = {}
         for i, f in ipairs(flows) do out[i] = f.name end
         return out
      end
      for _, app in ipairs{ app2, app3 } do
         -- NAME_ASC by default
         assert.are.same({ "etl-pipeline", "reporting" }, flow_names(app, "{}"))
         assert.are.same({ "reporting", "etl-pipeline" }, flow_names(app, '{"sort":"NAME_DESC"}'))
         assert.are.same({ "reporting", "etl-pipeline" }, flow_names(app, '{"sort":"CREATED_DESC"}'))
         assert.are.same({ "reporting" }, flow_names(app, '{"limit":1,"offset":1}'))
         local reporting = fixture.flows[2].id
         assert.are.same({ "reporting" },
            flow_names(app, '{"flows":{"id":{"any_":["' .. reporting .. '"]}}}'))
         assert.are.same({}, flow_names(app, '{"flows":{"id":{"any_":[]}}}'))
         assert.are.same({ "etl-pipeline" }, flow_names(app, '{"flows":{"name":{"like_":"PIPE"}}}'))
         -- the flows that have a flow run (with a task run) matching
         assert.are.same({ "reporting" }, flow_names(app, '{"flow_runs":{"name":{"any_":["fr-delta"]}}}'))
         assert.are.same({ "etl-pipeline" }, flow_names(app, '{"task_runs":{"name":{"any_":["extract-0"]}},'
            .. '"flow_runs":{"name":{"any_":["fr-alpha","fr-delta"]}}}'))
         -- the recorded data has no deployments: a deployments filter keeps no flow
         assert.are.same({}, flow_names(app, '{"deployments":{}}'))
      end
      local s, _, err = post(app3, "/flows/filter", '{"sort":"ID_DESC"}')
      assert.are.equal(422, s)
      assert.are.equal("Input should be 'CREATED_DESC', 'UPDATED_DESC', 'NAME_ASC' or 'NAME_DESC'",
         err.exception_detail[1].msg)
      local s2, _, err2 = post(app2, "/flows/filter", '{"flows":{"nme":{}}}')
      assert.are.equal(422, s2)
      assert.are.same({ "body", "flows", "nme" }, err2.exception_detail[1].loc)
      local s3, _, err3 = post(app2, "/flows/filter", '{"limit":201}')
      assert.are.equal(422, s3)
      assert.are.equal("Invalid limit: must be less than or equal to 200.", err3.detail)
      assert.are.equal(405, (call(app2, "GET", "/flows/filter")))
   end)

   it("pages with /task_runs/paginate on Prefect 3 only", function()
      assert.are.equal(405, (post(app2, "/task_runs/paginate", "{}")))
      local s, _, page = post(app3, "/task_runs/paginate", '{"limit": 7, "page": 2}')
      assert.are.equal(200, s)
      assert.are.same({ 300, 7, 43, 2, 7 }, { page.count, page.limit, page.pages, page.page, #page.results })
      local _, _, plain = post(app3, "/task_runs/filter", '{"limit": 7, "offset": 7}')
      for i = 1, 7 do assert.are.equal(plain[i].id, page.results[i].id) end
      assert.are.same({ "id", "created", "updated", "name", "flow_run_id", "task_key", "state_id", "state",
         "task_version", "task_inputs", "empirical_policy", "tags", "start_time", "end_time",
         "total_run_time",
         "estimated_run_time", "estimated_start_time_delta" }, json.keys(page.results[1]))
      local _, _, empty = post(app3, "/task_runs/paginate", '{"limit": 0}')
      assert.are.same({ 0, 300 }, { empty.pages, empty.count })
      local s4, _, bad = post(app3, "/task_runs/paginate", '{"page": 0}')
      assert.are.same({ 422, "greater_than_equal" }, { s4, bad.exception_detail[1].type })
   end)

   it("says CSRF protection is disabled when it is (after checking the client parameter)", function()
      local s, _, body = call(app2, "GET", "/csrf-token", nil, {}, "client=abc")
      assert.are.same({ 422, "CSRF protection is disabled." }, { s, body.detail })
      s, _, body = call(app3, "GET", "/csrf-token", nil, {})
      assert.are.same({ 422, "missing" }, { s, body.exception_detail[1].type })
   end)

   it("follows the server that produced the data unless told otherwise", function()
      assert.are.equal(2, api.new{ data = fixture }.prefect)
      assert.are.equal(3, api.new{ data = dataset.generate{ n = 10, shape = 3 } }.prefect)
      assert.are.equal(2, api.new{ data = dataset.generate{ n = 10, shape = 2 } }.prefect)
   end)

   it("honours another base path and default limit", function()
      local app = api.new{ data = fixture, base_path = "/prefect/api/", default_limit = 50 }
      local s, _, runs = app:handle{ method = "POST", path = "/prefect/api/task_runs/filter",
         headers = JSON_CT,
         body = "{}" }
      assert.are.same({ 200, 50 }, { s, #json.decode(runs) })
      local s2, _, t2 = app:handle{ method = "POST", path = "/prefect/api/task_runs/filter",
         headers = JSON_CT,
         body = '{"limit": 51}' }
      assert.are.same({ 422, '{"detail":"Invalid limit: must be less than or equal to 50."}' }, { s2, t2 })
      assert.are.equal(404, (app:handle{ method = "GET", path = "/api/health", headers = {} }))
   end)
end)

describe("test server auth", function()
   it("requires the API key as a Bearer token, except on /health and /ready", function()
      local app = api.new{ data = fixture, api_key = "pnu_k" }
      local s, _, body = post(app, "/task_runs/count", "{}")
      assert.are.same({ 401, "Invalid authentication credentials" }, { s, body.detail })
      assert.are.equal(401, (post(app, "/task_runs/count", "{}",
         { ["content-type"] = "application/json", authorization = "Bearer wrong" })))
      assert.are.equal(401, (post(app, "/task_runs/count", "{}",
         { ["content-type"] = "application/json", authorization = "bearer pnu_k" })))
      local ok, _, n = post(app, "/task_runs/count", "{}",
         { ["content-type"] = "application/json", authorization = "Bearer pnu_k" })
      assert.are.same({ 200, 300 }, { ok, n })
      assert.are.equal(200, (call(app, "GET", "/health", nil, {})))
      assert.are.equal(200, (call(app, "GET", "/ready", nil, {})))
      assert.are.equal(401, (call(app, "GET", "/version", nil, {})))
      -- Middleware runs before routing: an unknown path is also a 401.
      assert.are.equal(401, (call(app, "GET", "/nope", nil, {})))
   end)

   it("requires Basic auth with the auth string", function()
      local app = api.new{ data = fixture, prefect = 3, auth_string = "u:p" }
      local function with(auth)
         local s, _, body = post(app, "/task_runs/count", "{}",
            { ["content-type"] = "application/json", authorization = auth })
         return s, body
      end
      assert.are.same({ 200, 300 }, { with("Basic dTpw") })
      for _, bad in ipairs({ "Basic dTpx", "Basic !!!", "Basic", "basic dTpw", "Bearer u:p",
         "Basic dTpw extra" }) do
         local s, body = with(bad)
         assert.are.same({ 401, "Unauthorized" }, { s, body.exception_message }, bad)
      end
      local s = post(app, "/task_runs/count", "{}")
      assert.are.equal(401, s)
      assert.are.equal(200, (call(app, "GET", "/health", nil, {})))
   end)

   it("checks auth before the API-version header", function()
      local app = api.new{ data = fixture, api_key = "k" }
      local s = post(app, "/task_runs/filter", "{}",
         { ["content-type"] = "application/json", ["x-prefect-api-version"] = "0.1" })
      assert.are.equal(401, s)
   end)
end)

describe("test server CSRF protection", function()
   local now, app
   before_each(function()
      now = 1000000
      app = api.new{ data = fixture, csrf = true, api_key = "k", clock = function() return now end }
   end)

   local function headers(extra)
      local h = { ["content-type"] = "application/json", authorization = "Bearer k" }
      for k, v in pairs(extra or {}) do h[k] = v end
      return h
   end

   local function token_for(client)
      local s, _, body, text = call(app, "GET", "/csrf-token", nil, headers(), "client=" .. client)
      assert.are.equal(200, s, text)
      assert.are.same({ "id", "created", "updated", "token", "client", "expiration" }, json.keys(body))
      assert.are.equal(client, body.client)
      return body.token
   end

   it("demands a token and a client on every unsafe request", function()
      local s, _, body = post(app, "/task_runs/filter", "{}", headers())
      assert.are.same({ 403, "Missing CSRF token." }, { s, body.detail })
      s, _, body = post(app, "/task_runs/filter", "{}", headers{ ["prefect-csrf-token"] = "t" })
      assert.are.same({ 403, "Missing client identifier." }, { s, body.detail })
      s, _, body = post(app, "/task_runs/filter", "{}",
         headers{ ["prefect-csrf-token"] = "t", ["prefect-csrf-client"] = "c" })
      assert.are.same({ 403, "Invalid CSRF token or client identifier." }, { s, body.detail })
   end)

   it("accepts a fetched token for its client until it expires", function()
      local token = token_for("client-1")
      local good = headers{ ["prefect-csrf-token"] = token, ["prefect-csrf-client"] = "client-1" }
      local s, _, n = post(app, "/task_runs/count", "{}", good)
      assert.are.same({ 200, 300 }, { s, n })
      assert.are.equal(403, (post(app, "/task_runs/count", "{}",
         headers{ ["prefect-csrf-token"] = token, ["prefect-csrf-client"] = "client-2" })))
      now = now + 3601
      local s2, _, body = post(app, "/task_runs/count", "{}", good)
      assert.are.same({ 403, "Invalid CSRF token or client identifier." }, { s2, body.detail })
      local fresh = token_for("client-1")
      assert.are_not.equal(token, fresh)
      assert.are.equal(200, (post(app, "/task_runs/count", "{}",
         headers{ ["prefect-csrf-token"] = fresh, ["prefect-csrf-client"] = "client-1" })))
   end)

   it("leaves safe requests alone and checks CSRF before auth", function()
      assert.are.equal(200, (call(app, "GET", "/task_runs/" .. fixture.task_runs[1].id, nil, headers())))
      local s, _, body = post(app, "/task_runs/filter", "{}", JSON_CT)
      assert.are.same({ 403, "Missing CSRF token." }, { s, body.detail })
   end)

   it("needs the client parameter", function()
      local s, _, body = call(app, "GET", "/csrf-token", nil, headers())
      assert.are.equal(422, s)
      assert.are.same({ "query", "client" }, body.exception_detail[1].loc)
   end)
end)

describe("test server X-PREFECT-API-VERSION checks", function()
   local app = api.new{ data = fixture }
   local function with(v)
      local s, _, body = post(app, "/task_runs/count", "{}",
         { ["content-type"] = "application/json", ["x-prefect-api-version"] = v })
      return s, body
   end

   it("accepts x.y.z at or above 0.8.0, and an empty value", function()
      for _, v in ipairs({ "0.8.0", "0.8.4", "1.0.0", "9.9.9", "" }) do
         assert.are.equal(200, (with(v)), v)
      end
   end)

   it("rejects other forms and older versions with the server's messages", function()
      for _, v in ipairs({ "0.8", "0.8.4.1", "a.b.c", "3" }) do
         local s, body = with(v)
         assert.are.same({ 400, "Invalid X-PREFECT-API-VERSION header format."
            .. "Expected header in format 'x.y.z' "
            .. "but received " .. v }, { s, body.detail })
      end
      local s, body = with("0.7.9")
      assert.are.same({ 400, "The request specified API version 0.7.9 but this server requires version 0.8.0 "
         .. "or higher." }, { s, body.detail })
   end)

   it("applies to GET endpoints too", function()
      assert.are.equal(400, (call(app, "GET", "/health", nil, { ["x-prefect-api-version"] = "x" })))
   end)
end)

describe("test server request bodies", function()
   local app2, app3
   setup(function()
      app2 = api.new{ data = fixture, prefect = 2 }
      app3 = api.new{ data = fixture, prefect = 3 }
   end)

   it("treats no body, an empty body and null as all defaults", function()
      for _, body in ipairs({ false, "", "null", "  null " }) do
         local s, _, runs = post(app2, "/task_runs/filter", body or nil)
         assert.are.same({ 200, 200 }, { s, #runs })
      end
   end)

   it("Prefect 2: a non-JSON content type makes every body field 'field required'", function()
      local s, _, body = post(app2, "/task_runs/filter", '{"limit": 1}', { ["content-type"] = "text/plain" })
      assert.are.equal(422, s)
      local locs = {}
      for i, d in ipairs(body.exception_detail) do
         locs[i] = d.loc[2]
         assert.are.same({ "field required", "value_error.missing" }, { d.msg, d.type })
      end
      assert.are.same({ "limit", "sort", "offset", "flows", "flow_runs", "task_runs", "deployments" }, locs)
      assert.are.equal('{"limit": 1}', body.request_body)
      -- Without a content type at all, Prefect 2 parses JSON anyway.
      local s2, _, runs = post(app2, "/task_runs/filter", '{"limit": 1}', {})
      assert.are.same({ 200, 1 }, { s2, #runs })
      -- application/*+json and parameters count as JSON.
      local s3, _, runs3 = post(app2, "/task_runs/filter", '{"limit": 2}',
         { ["content-type"] = "application/vnd.api+json; charset=utf-8" })
      assert.are.same({ 200, 2 }, { s3, #runs3 })
   end)

   it("Prefect 3: a non-JSON content type (or chunked without one) is ignored: unfiltered result", function()
      local s, _, runs = post(app3, "/task_runs/filter", '{"limit": 1}', { ["content-type"] = "text/plain" })
      assert.are.same({ 200, 200 }, { s, #runs })
      local s2, _, runs2 = post(app3, "/task_runs/filter", '{"limit": 1}', {})
      assert.are.same({ 200, 200 }, { s2, #runs2 })
      local s3, _, runs3 = post(app3, "/task_runs/filter", '{"limit": 1}', { ["content-length"] = "12" })
      assert.are.same({ 200, 1 }, { s3, #runs3 })
   end)

   it("counts malformed-JSON positions in characters, as Python does", function()
      local s, _, body = post(app2, "/task_runs/filter", '{"name": "é", x}')
      assert.are.equal(422, s)
      local d = body.exception_detail[1]
      assert.are.same({ "body", 14 }, d.loc)
      assert.are.equal("Expecting property name enclosed in double quotes: line 1 column 15 (char 14)", d.msg)
      assert.are.equal("value_error.jsondecode", d.type)
      assert.are.equal('{"name": "é", x}', body.request_body)
      local s3, _, b3 = post(app3, "/task_runs/filter", '{"limit": ')
      assert.are.equal(422, s3)
      assert.are.same({ "json_invalid", "JSON decode error", "Expecting value" },
         { b3.exception_detail[1].type, b3.exception_detail[1].msg, b3.exception_detail[1].ctx.error })
   end)

   it("rejects a body that is not UTF-8 with 400", function()
      local s, _, body = post(app2, "/task_runs/filter", '{"limit": "\255"}')
      assert.are.same({ 400, "There was an error parsing the body" }, { s, body.detail })
   end)

   it("ignores unknown top-level keys", function()
      local s, _, runs = post(app2, "/task_runs/filter",
         '{"task_run": {"name": {"any_": ["x"]}}, "limit": 3}')
      assert.are.same({ 200, 3 }, { s, #runs })
   end)
end)

describe("test server limit, offset and check order", function()
   local app2, app3
   setup(function()
      app2 = api.new{ data = fixture, prefect = 2 }
      app3 = api.new{ data = fixture, prefect = 3 }
   end)

   it("reports a limit out of range alone, with a string detail, before other errors", function()
      local s, _, body = post(app2, "/task_runs/filter", '{"limit": 500, "sort": "bad", "offset": -3}')
      assert.are.same({ 422, "Invalid limit: must be less than or equal to 200." }, { s, body.detail })
      local s3, _, b3 = post(app3, "/task_runs/filter", '{"limit": -1, "task_runs": {"x": 1}}')
      assert.are.same({ 422, "Invalid limit: must be greater than or equal to 0." }, { s3, b3.detail })
   end)

   it("lists several validation errors in the server's order", function()
      local s, _, body = post(app2, "/task_runs/filter",
         '{"task_runs": {"zzz": 1, "name": {"like_": []}}, "sort": "x", "limit": "many"}')
      assert.are.equal(422, s)
      local got = {}
      for i, d in ipairs(body.exception_detail) do got[i] = table.concat(d.loc, ".") .. " " .. d.type end
      assert.are.same({ "body.limit type_error.integer", "body.sort type_error.enum",
         "body.task_runs.name.like_ type_error.str", "body.task_runs.zzz value_error.extra" }, got)
   end)

   it("Prefect 2 coerces loosely, Prefect 3 strictly", function()
      assert.are.equal(1, #names(app2, '{"limit": true}'))
      assert.are.equal(3, #names(app2, '{"limit": " 3 "}'))
      assert.are.equal(4, #names(app2, '{"limit": 4.9}'))
      assert.are.equal(5, #names(app3, '{"limit": "5"}'))
      assert.are.equal(6, #names(app3, '{"limit": 6.0}'))
      local s, _, body = post(app3, "/task_runs/filter", '{"limit": 2.5}')
      assert.are.equal(422, s)
      assert.are.same({ "int_from_float",
         "Input should be a valid integer, got a number with a fractional part",
         2.5 }, { body.exception_detail[1].type, body.exception_detail[1].msg,
         json.number(body.exception_detail[1].input) })
      local s2, _, b2 = post(app3, "/task_runs/filter", '{"task_runs": {"name": {"like_": 5}}}')
      assert.are.same({ 422, "string_type" }, { s2, b2.exception_detail[1].type })
   end)

   it("returns [] for limit 0 and past the end, and pages without gaps", function()
      assert.are.same({}, names(app2, '{"limit": 0}'))
      assert.are.same({}, names(app2, '{"offset": 300}'))
      assert.are.equal(10, #names(app2, '{"offset": 290}'))
      local seen, total = {}, 0
      for offset = 0, 299, 37 do
         local _, _, runs = post(app2, "/task_runs/filter", ('{"limit": 37, "offset": %d}'):format(offset))
         for _, r in ipairs(runs) do
            assert.is_nil(seen[r.id])
            seen[r.id] = true
            total = total + 1
         end
      end
      assert.are.equal(300, total)
   end)

   it("ID_DESC is the default and orders by id", function()
      local _, _, runs = post(app2, "/task_runs/filter", '{"sort": null}')
      for i = 2, #runs do assert.is_true(runs[i - 1].id > runs[i].id) end
   end)

   it("/count ignores limit, offset and sort but not the filters", function()
      assert.are.equal(300, count(app2, '{"limit": 1, "offset": 5, "sort": "NAME_ASC"}'))
      assert.are.equal(10, count(app2, '{"task_runs": {"flow_run_id": {"is_null_": true}}}'))
   end)

   it("Prefect 3 validation errors have the pydantic 2 shape", function()
      local function rejected(body)
         local s, _, decoded, text = post(app3, "/task_runs/filter", body)
         assert.are.equal(422, s, body)
         return decoded, text
      end
      local _, text = rejected('{"task_runs": {"nme": {"like_": "x"}}}')
      assert.are.equal('{"exception_message":"Invalid request received.","exception_detail":[{"type":'
         .. '"extra_forbidden","loc":["body","task_runs","nme"],"msg":"Extra inputs are not permitted",'
         .. '"input":{"like_":"x"}}],"request_body":{"task_runs":{"nme":{"like_":"x"}}}}', text)
      local body = rejected('{"sort": "NEWEST"}')
      assert.are.equal("Input should be 'ID_DESC', 'EXPECTED_START_TIME_ASC', 'EXPECTED_START_TIME_DESC', "
         .. "'NAME_ASC', 'NAME_DESC', 'NEXT_SCHEDULED_START_TIME_ASC', 'END_TIME_DESC', 'DURATION_DESC' or "
         .. "'DURATION_ASC'",
         body.exception_detail[1].msg)
      assert.are.equal(body.exception_detail[1].msg:sub(#"Input should be " + 1),
         body.exception_detail[1].ctx.expected)
      body = rejected('{"offset": -1}')
      assert.are.same({ "greater_than_equal", "Input should be greater than or equal to 0", 0 },
         { body.exception_detail[1].type, body.exception_detail[1].msg, body.exception_detail[1].ctx.ge })
      body = rejected('{"task_runs": {"operator": null}}')
      assert.are.same({ "enum", "Input should be 'and_' or 'or_'", json.null },
         { body.exception_detail[1].type, body.exception_detail[1].msg, body.exception_detail[1].input })
      body = rejected('{"task_runs": {"id": {"any_": ["not-a-uuid"]}}}')
      assert.are.same({ "body", "task_runs", "id", "any_", 0 }, body.exception_detail[1].loc)
      assert.are.equal("uuid_parsing", body.exception_detail[1].type)
      assert.truthy(body.exception_detail[1].msg:find("^Input should be a valid UUID, invalid character"))
      body = rejected("[1]")
      assert.are.equal(7, #body.exception_detail)
      assert.are.same({ "missing", "Field required" },
         { body.exception_detail[1].type, body.exception_detail[1].msg })
   end)

   it("validates like pydantic: null list items, non-objects, lists of pairs (Prefect 2 only)", function()
      local s, _, body = post(app2, "/task_runs/filter", '{"task_runs": {"name": {"any_": ["a", null]}}}')
      assert.are.same({ 422, "none is not an allowed value" }, { s, body.exception_detail[1].msg })
      assert.are.same({ "body", "task_runs", "name", "any_", 1 }, body.exception_detail[1].loc)
      s, _, body = post(app3, "/task_runs/filter", '{"task_runs": {"name": {"any_": ["a", null]}}}')
      assert.are.same({ 422, "string_type" }, { s, body.exception_detail[1].type })
      s, _, body = post(app2, "/task_runs/filter", '{"task_runs": 5}')
      assert.are.same({ 422, "value is not a valid dict", "type_error.dict" },
         { s, body.exception_detail[1].msg, body.exception_detail[1].type })
      s, _, body = post(app3, "/task_runs/filter", '{"task_runs": 5}')
      assert.are.same({ 422, "model_type", "TaskRunFilter" },
         { s, body.exception_detail[1].type, body.exception_detail[1].ctx.class_name })
      local pairs_body = '{"task_runs": [["name", {"like_": "extract"}]]}'
      assert.are.equal(90, #names(app2, pairs_body))
      assert.are.equal(422, (post(app3, "/task_runs/filter", pairs_body)))
   end)

   it("Prefect 2: operator null and flow_run_id.is_null_ null are 'none is not an allowed value'", function()
      for _, b in ipairs({ '{"task_runs": {"operator": null}}',
         '{"task_runs": {"flow_run_id": {"is_null_": null}}}' }) do
         local s, _, body = post(app2, "/task_runs/filter", b)
         assert.are.same({ 422, "none is not an allowed value", "type_error.none.not_allowed" },
            { s, body.exception_detail[1].msg, body.exception_detail[1].type })
      end
   end)

   it("rejects filter keys of the other Prefect version", function()
      for _, b in ipairs({ '{"task_runs": {"end_time": {"is_null_": true}}}',
         '{"task_runs": {"expected_start_time": {"after_": "2024-01-01"}}}',
         '{"flow_runs": {"tags": {"any_": ["x"]}}}',
         '{"flow_runs": {"state": {"type": {"not_any_": ["FAILED"]}}}}',
         '{"flows": {"id": {"not_any_": []}}}',
         '{"deployments": {"flow_or_deployment_name": {"like_": "x"}}}' }) do
         local s, _, body = post(app2, "/task_runs/filter", b)
         assert.are.same({ 422, "extra fields not permitted" }, { s, body.exception_detail[1].msg }, b)
         assert.are.equal(200, (post(app3, "/task_runs/filter", b)), b)
      end
      local s, _, body = post(app3, "/task_runs/filter",
         '{"deployments": {"is_schedule_active": {"eq_": true}}}')
      assert.are.same({ 422, "extra_forbidden" }, { s, body.exception_detail[1].type })
      assert.are.equal(200, (post(app2, "/task_runs/filter", '{"deployments": {"is_schedule_active": {}}}')))
   end)
end)

describe("test server filter semantics", function()
   local app2, app3
   setup(function()
      app2 = api.new{ data = mini(), prefect = 2 }
      app3 = api.new{ data = mini(), prefect = 3 }
   end)

   local function both(body, want)
      assert.are.same(want, sorted(names(app2, body)), "prefect 2: " .. body)
      assert.are.same(want, sorted(names(app3, body)), "prefect 3: " .. body)
   end

   local ALL = { "100%_done-5", "Load_DB-1", "loadXdb-2", "Ünïcode-3", "ünïcode-4" }
   local WITH_FLOW_RUN = { "100%_done-5", "Load_DB-1", "loadXdb-2", "Ünïcode-3" }

   it("like_: unescaped substring, % and _ wildcards, ASCII-only case folding", function()
      both('{"task_runs": {"name": {"like_": "load_db"}}}', { "Load_DB-1", "loadXdb-2" })
      both('{"task_runs": {"name": {"like_": "%"}}}', ALL)
      both('{"task_runs": {"name": {"like_": "0%_d"}}}', { "100%_done-5" })
      both('{"task_runs": {"name": {"like_": "CODE"}}}', { "Ünïcode-3", "ünïcode-4" })
      both('{"task_runs": {"name": {"like_": "ünïcode"}}}', { "ünïcode-4" })
      both('{"task_runs": {"name": {"like_": "ü__code"}}}', { "ünïcode-4" })
      both('{"task_runs": {"name": {"like_": ""}}}', ALL)
      both('{"task_runs": {"name": {"like_": "(.*)"}}}', {})
   end)

   it("any_: exact and case-sensitive; [] matches nothing", function()
      both('{"task_runs": {"name": {"any_": ["load_db-1", "Load_DB-1"]}}}', { "Load_DB-1" })
      both('{"task_runs": {"name": {"any_": []}}}', {})
      both('{"task_runs": {"id": {"any_": []}}}', {})
      both(('{"task_runs": {"id": {"any_": ["%s"]}}}'):format(T[2]:upper()), { "loadXdb-2" })
      both('{"task_runs": {"state": {"name": {"any_": ["Late"]}}}}', { "Ünïcode-3" })
   end)

   it("tags: all_ is a superset test ignoring duplicates, [] matches all; is_null_ means empty", function()
      both('{"task_runs": {"tags": {"all_": ["db", "etl", "db"]}}}', { "100%_done-5", "Load_DB-1" })
      both('{"task_runs": {"tags": {"all_": []}}}', ALL)
      both('{"task_runs": {"tags": {"is_null_": true}}}', { "Ünïcode-3" })
      both('{"task_runs": {"tags": {"is_null_": false}}}',
         { "100%_done-5", "Load_DB-1", "loadXdb-2", "ünïcode-4" })
      both('{"task_runs": {"tags": {"operator": "or_", "all_": ["x"], "is_null_": true}}}',
         { "100%_done-5", "Ünïcode-3" })
   end)

   it("an empty sub-object is TRUE, so under or_ it matches everything", function()
      both('{"task_runs": {"operator": "or_", "name": {}, "tags": {"all_": ["x"]}}}', ALL)
      both('{"task_runs": {"operator": "and_", "name": {}, "tags": {"all_": ["x"]}}}', { "100%_done-5" })
      both('{"task_runs": {"operator": "or_"}}', ALL)
      -- state.type/state.name with no criterion are skipped rather than TRUE
      both('{"task_runs": {"state": {"operator": "or_", "type": {}, "name": {"any_": ["Late"]}}}}',
         { "Ünïcode-3" })
   end)

   it("start_time: inclusive bounds on absolute instants, microseconds, NULL never matches", function()
      both('{"task_runs": {"start_time": {"before_": "2026-01-01T10:00:01.5Z"}}}', { "Load_DB-1" })
      both('{"task_runs": {"start_time": {"before_": "2026-01-01T12:00:01.500000+02:00"}}}', { "Load_DB-1" })
      both('{"task_runs": {"start_time": {"before_": "2026-01-01 10:00:01.500000"}}}', { "Load_DB-1" })
      both('{"task_runs": {"start_time": {"before_": "2026-01-01T10:00:01.499999999Z"}}}', {})
      both('{"task_runs": {"start_time": {"after_": "2026-02-01"}}}', { "100%_done-5" })
      both('{"task_runs": {"start_time": {"after_": "2026-02-01T00:00:00.000001Z"}}}', {})
      both('{"task_runs": {"start_time": {"is_null_": true}}}', { "Ünïcode-3", "ünïcode-4" })
      both('{"task_runs": {"start_time": {"after_": "2000-01-01", "is_null_": true}}}', {})
   end)

   it("datetimes: numbers are Unix time on Prefect 3 and an error on Prefect 2", function()
      assert.are.same({ "100%_done-5", "Load_DB-1", "loadXdb-2" },
         sorted(names(app3, '{"task_runs": {"start_time": {"after_": 1767261601.5}}}')))
      assert.are.same({ "100%_done-5", "Load_DB-1", "loadXdb-2" },
         sorted(names(app3, '{"task_runs": {"start_time": {"after_": 1767261601500}}}')))
      local s, _, body = post(app2, "/task_runs/filter",
         '{"task_runs": {"start_time": {"after_": 1767261601}}}')
      assert.are.same({ 422, "Unrecognized datetime.", "value_error" },
         { s, body.exception_detail[1].msg, body.exception_detail[1].type })
      local s2, _, b2 = post(app2, "/task_runs/filter",
         '{"task_runs": {"start_time": {"after_": "2026-02-30"}}}')
      assert.are.same({ 422, "day is out of range for month" }, { s2, b2.exception_detail[1].msg })
   end)

   it("Prefect 3 only: end_time and expected_start_time on task runs", function()
      assert.are.same({ "loadXdb-2" },
         names(app3, '{"task_runs": {"end_time": {"before_": "2026-01-01T10:00:04Z"}}}'))
      assert.are.same({ "100%_done-5", "Ünïcode-3", "ünïcode-4" },
         sorted(names(app3, '{"task_runs": {"end_time": {"is_null_": true}}}')))
      assert.are.same({ "Ünïcode-3", "ünïcode-4" },
         sorted(names(app3, '{"task_runs": {"expected_start_time": {"after_": "2026-02-15"}}}')))
   end)

   it("subflow_runs.exists_ finds the tasks that launched a flow run", function()
      both('{"task_runs": {"subflow_runs": {"exists_": true}}}', { "Load_DB-1" })
      both('{"task_runs": {"subflow_runs": {"exists_": false}}}', { "100%_done-5", "loadXdb-2", "Ünïcode-3",
         "ünïcode-4" })
      both('{"task_runs": {"subflow_runs": {}}}', ALL)
   end)

   it("flow_run_id: {} is a no-op on 2 and 'has a flow run' on 3; is_null_ wins over any_", function()
      assert.are.same(ALL, sorted(names(app2, '{"task_runs": {"flow_run_id": {}}}')))
      assert.are.same(WITH_FLOW_RUN, sorted(names(app3, '{"task_runs": {"flow_run_id": {}}}')))
      both(('{"task_runs": {"flow_run_id": {"is_null_": true, "any_": ["%s"]}}}'):format(R1),
         { "ünïcode-4" })
      both(('{"task_runs": {"flow_run_id": {"any_": ["%s"]}}}'):format(R1), { "Load_DB-1", "loadXdb-2" })
      assert.are.same({ "Load_DB-1", "loadXdb-2" },
         sorted(names(app3,
            ('{"task_runs": {"flow_run_id": {"is_null_": null, "any_": ["%s"]}}}'):format(R1))))
      assert.are.same(ALL, sorted(names(app3, '{"task_runs": {"flow_run_id": {"is_null_": null}}}')))
   end)

   it("any flows/flow_runs/deployments group, even {}, drops runs without a flow run", function()
      both('{"flow_runs": {}}', WITH_FLOW_RUN)
      both('{"flows": {}}', WITH_FLOW_RUN)
      both('{"flows": null, "flow_runs": null, "deployments": null}', ALL)
      -- deployments also drops runs whose flow run has no deployment
      both('{"deployments": {}}', { "Load_DB-1", "loadXdb-2" })
      both('{"deployments": {"name": {"like_": "NIGHTLY"}}}', { "Load_DB-1", "loadXdb-2" })
      both('{"deployments": {"paused": {"eq_": true}}}', {})
      both('{"deployments": {"tags": {"all_": ["prod"]}, "work_queue_name": {"any_": ["default"]}}}',
         { "Load_DB-1", "loadXdb-2" })
   end)

   it("flows: name, tags and whether the flow has a deployment", function()
      both('{"flows": {"name": {"like_": "report"}}}', { "100%_done-5", "Ünïcode-3" })
      both('{"flows": {"tags": {"all_": ["etl"]}}}', { "Load_DB-1", "loadXdb-2" })
      both('{"flows": {"deployment": {"is_null_": true}}}', { "100%_done-5", "Ünïcode-3" })
      both('{"flows": {"deployment": {"is_null_": false}}}', { "Load_DB-1", "loadXdb-2" })
      both(('{"flows": {"id": {"any_": ["%s"]}}}'):format(F2), { "100%_done-5", "Ünïcode-3" })
   end)

   it("flow_runs: not_any_ also drops NULLs; parent ids; names; tags", function()
      both('{"flow_runs": {"idempotency_key": {"not_any_": ["zzz"]}}}', { "Load_DB-1", "loadXdb-2" })
      both('{"flow_runs": {"idempotency_key": {"not_any_": []}}}', WITH_FLOW_RUN)
      both('{"flow_runs": {"idempotency_key": {"any_": []}}}', {})
      both(('{"flow_runs": {"id": {"not_any_": ["%s"]}}}'):format(R1), { "100%_done-5", "Ünïcode-3" })
      both(('{"flow_runs": {"parent_flow_run_id": {"any_": ["%s"]}}}'):format(R1),
         { "100%_done-5", "Ünïcode-3" })
      both('{"flow_runs": {"parent_task_run_id": {"is_null_": true}}}', { "Load_DB-1", "loadXdb-2" })
      both('{"flow_runs": {"name": {"like_": "TWO"}}}', { "100%_done-5", "Ünïcode-3" })
      both('{"flow_runs": {"tags": {"is_null_": true}}}', { "100%_done-5", "Ünïcode-3" })
      both('{"flow_runs": {"deployment_id": {"is_null_": false}}}', { "Load_DB-1", "loadXdb-2" })
      assert.are.same({ "Load_DB-1", "loadXdb-2" },
         sorted(names(app3, '{"flow_runs": {"tags": {"any_": ["nightly"]}}}')))
   end)

   it("flow_runs.start_time before_/after_ use COALESCE(start, expected) on Prefect 3 only", function()
      local body = '{"flow_runs": {"start_time": {"after_": "2025-12-01"}}}'
      assert.are.same({ "Load_DB-1", "loadXdb-2" }, sorted(names(app2, body)))
      assert.are.same(WITH_FLOW_RUN, sorted(names(app3, body)))
      both('{"flow_runs": {"start_time": {"is_null_": true}}}', { "100%_done-5", "Ünïcode-3" })
   end)

   it("Prefect 3 applies both any_ and not_any_ of a flow_runs.state sub-filter, as 3.9.1 does", function()
      assert.are.same({ "Load_DB-1", "loadXdb-2" }, sorted(names(app3,
         '{"flow_runs": {"state": {"type": {"any_": ["COMPLETED"], "not_any_": ["SCHEDULED"]}}}}')))
      assert.are.same({ "Load_DB-1", "loadXdb-2" },
         sorted(names(app3, '{"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}')))
      assert.are.same({ "Load_DB-1", "loadXdb-2" },
         sorted(names(app3, '{"flow_runs": {"state": {"name": {"not_any_": ["Scheduled"]}}}}')))
   end)

   it("sorts put NULLs first for ASC and last for DESC, ties in insertion order", function()
      both('{}', ALL) -- sanity
      assert.are.same({ "Load_DB-1", "loadXdb-2", "100%_done-5", "ünïcode-4", "Ünïcode-3" },
         names(app2, '{"sort": "END_TIME_DESC"}'))
      assert.are.same({ "Load_DB-1", "loadXdb-2", "ünïcode-4", "100%_done-5", "Ünïcode-3" },
         names(app2, '{"sort": "NEXT_SCHEDULED_START_TIME_ASC"}'))
      assert.are.same({ "100%_done-5", "Load_DB-1", "loadXdb-2", "Ünïcode-3", "ünïcode-4" },
         names(app2, '{"sort": "NAME_ASC"}'))
      assert.are.same({ "ünïcode-4", "Ünïcode-3", "loadXdb-2", "Load_DB-1", "100%_done-5" },
         names(app2, '{"sort": "NAME_DESC"}'))
      assert.are.same({ "Load_DB-1", "loadXdb-2", "100%_done-5", "Ünïcode-3", "ünïcode-4" },
         names(app2, '{"sort": "EXPECTED_START_TIME_ASC"}'))
      assert.are.same({ "ünïcode-4", "Ünïcode-3", "100%_done-5", "loadXdb-2", "Load_DB-1" },
         names(app2, '{"sort": "EXPECTED_START_TIME_DESC"}'))
      assert.are.same({ "loadXdb-2" }, names(app2, '{"sort": "END_TIME_DESC", "offset": 1, "limit": 1}'))
   end)

   it("with db = postgres, NULLs sort last for ASC and first for DESC, as PostgreSQL puts them", function()
      local pg = api.new{ data = mini(), prefect = 3, db = "postgres" }
      for sort, column in pairs({ END_TIME_DESC = "end_time",
         NEXT_SCHEDULED_START_TIME_ASC = "next_scheduled_start_time" }) do
         local _, _, lite = post(app3, "/task_runs/filter", '{"sort": "' .. sort .. '"}')
         local nulls, values = {}, {}
         for _, r in ipairs(lite) do
            local group = r[column] == json.null and nulls or values
            group[#group + 1] = r.name
         end
         assert.is_true(#nulls > 0 and #values > 0, sort)
         local nulls_first = lite[1][column] == json.null
         assert.are.equal(sort:find("ASC$") ~= nil, nulls_first, sort .. ": SQLite's placement")
         local want = {}
         for _, n in ipairs(nulls_first and values or nulls) do want[#want + 1] = n end
         for _, n in ipairs(nulls_first and nulls or values) do want[#want + 1] = n end
         assert.are.same(want, names(pg, '{"sort": "' .. sort .. '"}'), sort)
      end
   end)
end)

describe("generated datasets", function()
   local function checksum(s)
      local h = 0
      for i = 1, #s do h = (h * 31 + s:byte(i)) % 2147483647 end
      return h
   end

   it("are the same under every interpreter and on every run", function()
      -- The constants were computed once; Lua 5.4 and LuaJIT must both reproduce them.
      for shape, want in pairs({ [2] = 1563413183, [3] = 16936896 }) do
         local g = dataset.generate{ n = 300, seed = 7, shape = shape }
         local parts = { json.encode(g.flows), json.encode(g.flow_runs) }
         for i = 1, 300 do parts[#parts + 1] = json.encode(g.task_runs[i]) end
         assert.are.equal(want, checksum(table.concat(parts)), "shape " .. shape)
      end
   end)

   it("write Prefect 2 and Prefect 3 shapes", function()
      local g2 = dataset.generate{ n = 200, seed = 3, shape = 2 }
      local g3 = dataset.generate{ n = 200, seed = 3, shape = 3 }
      local r2, r3 = g2.task_runs[1], g3.task_runs[1]
      assert.is_nil(r2.labels)
      assert.is_nil(r2.state.state_details.deferred)
      assert.truthy(r2.created:find("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%d%+00:00$"))
      assert.are.same({ "id", "created", "updated", "name", "flow_run_id", "task_key", "dynamic_key",
         "cache_key",
         "cache_expiration", "task_version", "empirical_policy", "tags", "labels", "state_id", "task_inputs",
         "state_type", "state_name", "run_count", "flow_run_run_count", "expected_start_time",
         "next_scheduled_start_time", "start_time", "end_time", "total_run_time", "estimated_run_time",
         "estimated_start_time_delta", "state" }, json.keys(r3))
      local d3 = r3.state.state_details
      assert.are.same({ false, json.null }, { d3.deferred, d3.deployment_concurrency_lease_id })
      assert.is_not_nil(d3.traceparent)
      local whole, fraction = 0, 0
      for i = 1, 200 do
         local c = g3.task_runs[i].created
         if c:find("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$") then whole = whole + 1 end
         if c:find("%.%d%d%d%d%d%dZ$") then fraction = fraction + 1 end
      end
      assert.are.equal(200, whole + fraction)
      assert.is_true(whole > 0 and fraction > 0)
   end)

   it("have realistic runs of about 1.5 to 1.8 KB", function()
      for _, shape in ipairs({ 2, 3 }) do
         local g = dataset.generate{ n = 1000, seed = 11, shape = shape }
         local total, states, flowless = 0, {}, 0
         for i = 1, 1000 do
            local r = g.task_runs[i]
            total = total + #json.encode(r)
            states[r.state_type] = (states[r.state_type] or 0) + 1
            if r.flow_run_id == json.null then flowless = flowless + 1 end
         end
         local avg = total / 1000
         assert.is_true(avg >= 1500 and avg <= 1800, "average " .. avg)
         assert.is_true(states.COMPLETED > 600 and states.COMPLETED < 800)
         for _, t in ipairs({ "FAILED", "RUNNING", "SCHEDULED", "PENDING", "CANCELLED", "CRASHED" }) do
            assert.is_true((states[t] or 0) > 0, t)
         end
         assert.is_true(flowless > 0 and flowless < 60)
      end
   end)

   it("page without gaps or repeats in ID_DESC order and filter like the fixture", function()
      local g = dataset.generate{ n = 10000, seed = 5, shape = 3 }
      local app = api.new{ data = g }
      assert.are.equal(10000, count(app, "{}"))
      local seen, n, last = {}, 0, nil
      for offset = 0, 9999, 200 do
         local status, _, text = app:handle{ method = "POST", path = "/api/task_runs/filter",
            headers = JSON_CT, body = ('{"offset": %d}'):format(offset) }
         assert.are.equal(200, status)
         -- Each run object opens with its id ("[{" or ",{" at the top level of the array).
         for id in text:gmatch('[%[,]{"id":"([^"]+)"') do
            assert.is_nil(seen[id])
            if last then assert.is_true(last > id) end
            seen[id], last, n = true, id, n + 1
         end
      end
      assert.are.equal(10000, n)
      local failed = count(app, '{"task_runs": {"state": {"type": {"any_": ["FAILED"]}}}}')
      local _, _, page = post(app, "/task_runs/filter",
         '{"task_runs": {"state": {"type": {"any_": ["FAILED"]}}}}')
      assert.are.equal(math.min(200, failed), #page)
      for _, r in ipairs(page) do assert.are.equal("FAILED", r.state_type) end
      local with_flow = count(app, '{"flow_runs": {}}')
      local without = count(app, '{"task_runs": {"flow_run_id": {"is_null_": true}}}')
      assert.are.equal(10000, with_flow + without)
   end)

   it("serve a run exactly as the dataset builds it", function()
      local g = dataset.generate{ n = 50, seed = 9, shape = 2 }
      local app = api.new{ data = g }
      assert.are.equal(2, app.prefect)
      assert.are.equal(50, g.task_runs.n)
      local id = g.task_runs[17].id
      local s, _, _, text = call(app, "GET", "/task_runs/" .. id)
      assert.are.same({ 200, json.encode(g.task_runs[17]) }, { s, text })
   end)
end)
