--- The differential suite's queries and comparisons: what tests/real sends to a real Prefect
-- server and to the bundled test server, and how their answers are held against each other.
--
-- Queries are generated from the DSL's grammar (prefect.filter.schema): every filter object, each
-- of its fields and operators, with values drawn from the seeded data (tools/real/seed.py).
-- Values that depend on what the server made (ids, times) are written as references and resolved
-- against the data read back from the server:
--   "@task_run:NAME", "@flow_run:NAME", "@flow:NAME", "@deployment:NAME"  the object's id
--   "@time:COLUMN:Q"   the Q-quantile (0..1) of that task-run column, an ISO-8601 string
--   "@fr_time:COLUMN:Q" the same over the flow runs
--   "@unknown"          a well-formed id no object has
local schema = require("prefect.filter.schema")
local dataset = require("prefect.testing.dataset")

local json = dataset.json
local NULL = json.null

local M = {}

local UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"

-- Values offered to each kind of leaf, per field where the field decides what makes sense.
local STRINGS = {
   ["TaskRunFilterName.any_"] = { { "extract-0", "load_db-3" }, { "EXTRACT-0" }, {} },
   ["TaskRunFilterName.like_"] = { "load", "LOAD_", "50%", "_", "%", "", "-1" },
   ["TaskRunFilterTags.all_"] = { { "db" }, { "db", "etl" }, {}, { "nope" } },
   ["TaskRunFilterStateName.any_"] = { { "Failed", "Crashed" }, { "completed" }, {} },
   ["FlowRunFilterName.any_"] = { { "fr-alpha", "fr-gamma" }, {} },
   ["FlowRunFilterName.like_"] = { "fr-", "ALPHA", "_e", "" },
   ["FlowRunFilterTags.all_"] = { { "nightly" }, { "prod" }, {} },
   ["FlowRunFilterTags.any_"] = { { "nightly", "prod" }, {} },
   ["FlowRunFilterWorkQueueName.any_"] = { { "default" }, {} },
   ["FlowRunFilterStateName.any_"] = { { "Completed" }, { "Failed", "Pending" } },
   ["FlowRunFilterStateName.not_any_"] = { { "Completed" }, {} },
   ["FlowRunFilterFlowVersion.any_"] = { { "1.0" }, {} },
   ["FlowRunFilterIdempotencyKey.any_"] = { { "k1" }, {} },
   ["FlowRunFilterIdempotencyKey.not_any_"] = { { "k1" }, {} },
   ["FlowRunFilterCreatedBy.type_"] = { { "DEPLOYMENT" }, {} },
   ["FlowFilterName.any_"] = { { "etl-pipeline" }, { "ETL-PIPELINE" }, {} },
   ["FlowFilterName.like_"] = { "report", "PIPE", "" },
   ["FlowFilterTags.all_"] = { { "etl" }, {} },
   ["DeploymentFilterName.any_"] = { { "nightly-etl" }, {} },
   ["DeploymentFilterName.like_"] = { "nightly", "ETL" },
   ["DeploymentOrFlowNameFilter.like_"] = { "reporting", "nightly", "pipe" },
   ["DeploymentFilterTags.all_"] = { { "prod" }, {} },
   ["DeploymentFilterTags.any_"] = { { "prod", "x" }, {} },
   ["DeploymentFilterWorkQueueName.any_"] = { { "default" }, {} },
}

local IDS = {
   ["TaskRunFilterId.any_"] = { { "@task_run:extract-0", "@task_run:load_db-3" }, {}, { "@unknown" } },
   ["TaskRunFilterFlowRunId.any_"] = { { "@flow_run:fr-alpha" }, { "@flow_run:fr-beta", "@unknown" }, {} },
   ["FlowRunFilterId.any_"] = { { "@flow_run:fr-alpha", "@flow_run:fr-delta" }, {} },
   ["FlowRunFilterId.not_any_"] = { { "@flow_run:fr-alpha" }, {} },
   ["FlowRunFilterDeploymentId.any_"] = { { "@deployment:nightly-etl" }, {} },
   ["FlowRunFilterParentFlowRunId.any_"] = { { "@flow_run:fr-alpha" }, {} },
   ["FlowRunFilterParentTaskRunId.any_"] = { { "@parent_task_run" }, {} },
   ["FlowRunFilterCreatedBy.id_"] = { { "@unknown" } },
   ["FlowFilterId.any_"] = { { "@flow:etl-pipeline" }, {} },
   ["FlowFilterId.not_any_"] = { { "@flow:etl-pipeline" }, {} },
   ["DeploymentFilterId.any_"] = { { "@deployment:nightly-etl" }, {} },
   ["DeploymentFilterId.not_any_"] = { { "@deployment:nightly-etl" }, {} },
}

local TIME_COLUMN = {
   TaskRunFilterStartTime = "@time:start_time", TaskRunFilterEndTime = "@time:end_time",
   TaskRunFilterExpectedStartTime = "@time:expected_start_time",
   FlowRunFilterStartTime = "@fr_time:start_time", FlowRunFilterEndTime = "@fr_time:end_time",
   FlowRunFilterExpectedStartTime = "@fr_time:expected_start_time",
   FlowRunFilterNextScheduledStartTime = "@fr_time:next_scheduled_start_time",
}

local STATE_TYPES = { { "FAILED", "CRASHED" }, { "COMPLETED" }, {} }

local function leaf_values(object, op, kind)
   local key = object .. "." .. op
   if kind == "string_list" or kind == "string" then
      return STRINGS[key] or { kind == "string" and "a" or { "a" } }
   end
   if kind == "uuid_list" then return IDS[key] or { { "@unknown" } } end
   if kind == "state_type_list" then return STATE_TYPES end
   if kind == "boolean" then return { true, false } end
   if kind == "integer" then return { 1 } end
   if kind == "datetime" then
      local col = TIME_COLUMN[object] or "@time:expected_start_time"
      return { col .. ":0.5", col .. ":0" }
   end
   error("differential: no values for " .. key .. " (" .. kind .. ")")
end

-- A plain table's keys, sorted.
local sorted_keys = json.keys

-- Every (path to a leaf, operator, value) of an object, depth first: path is a list of field names.
local function walk(object, path, out)
   local def = schema.objects[object]
   for _, field in ipairs(sorted_keys(def.fields)) do
      local entry = def.fields[field]
      local p = {}
      for i, v in ipairs(path) do p[i] = v end
      if entry.object then
         p[#p + 1] = field
         walk(entry.object, p, out)
      else
         for _, value in ipairs(leaf_values(object, field, entry.value)) do
            out[#out + 1] = { object = object, path = p, op = field, value = value }
         end
      end
   end
   return out
end

-- A body piece { a = { b = { op = value } } } from a path.
local function nest(path, op, value)
   local leaf = { [op] = value }
   for i = #path, 1, -1 do leaf = { [path[i]] = leaf } end
   return leaf
end

local function show(v)
   if type(v) == "table" then
      local parts = {}
      if #v > 0 or next(v) == nil then
         for _, x in ipairs(v) do parts[#parts + 1] = show(x) end
         return "[" .. table.concat(parts, ",") .. "]"
      end
      for _, k in ipairs(sorted_keys(v)) do parts[#parts + 1] = k .. "=" .. show(v[k]) end
      return "{" .. table.concat(parts, ",") .. "}"
   end
   return tostring(v)
end

--- The cases: a list of { name, kind, query | request }.
-- kind "filter": `query` is a DSL query (Prefect's own body shape), read with client:page from
-- `offset`; "count": client:count(query); "get": client:task_run(id ref); "include": a page of
-- `query` read with the `include` option (`include`, and `fields` for the flow runs' and flows'
-- fields asked for, nil for all), whose flow runs and flows are held against the real server's
-- own /flow_runs/filter and /flows/filter answers; "raw": `request` =
-- { method, path, body (string) | nil, headers } sent as it is to both servers (for what the DSL
-- refuses before sending, and endpoints the client does not read).
function M.cases()
   local cases = {}
   local function add(c) cases[#cases + 1] = c end

   -- 1. Every field and operator of every filter object, under its group.
   for _, group in ipairs(schema.GROUPS) do
      for _, leaf in ipairs(walk(schema.GROUP_OBJECT[group], {}, {})) do
         local body = nest(leaf.path, leaf.op, leaf.value)
         add({ kind = "filter", name = group .. "." .. table.concat(leaf.path, ".") ..
            (#leaf.path > 0 and "." or "") .. leaf.op .. " = " .. show(leaf.value),
            query = { [group] = body } })
      end
   end

   -- 2. Empty objects: a group, and each direct sub-object, as {} (TRUE, but not always a no-op).
   for _, group in ipairs(schema.GROUPS) do
      add({ kind = "filter", name = group .. " = {}", query = { [group] = {} } })
      local def = schema.objects[schema.GROUP_OBJECT[group]]
      for _, field in ipairs(sorted_keys(def.fields)) do
         if def.fields[field].object then
            add({ kind = "filter", name = group .. "." .. field .. " = {}",
               query = { [group] = { [field] = {} } } })
         end
      end
   end

   -- 3. operator = "or_" on every object that has one, over two of its fields (or one and {}).
   for name, def in pairs(schema.objects) do
      if def.operator and not def.ignored then
         local group
         for g, o in pairs(schema.GROUP_OBJECT) do if o == name then group = g end end
         if group then
            local leaves = walk(name, {}, {})
            local a, b = leaves[1], leaves[#leaves]
            local body = nest(a.path, a.op, a.value)
            local second = nest(b.path, b.op, b.value)
            local k = next(second)
            if body[k] == nil then body[k] = second[k] end
            body.operator = "or_"
            add({ kind = "filter", name = group .. " or_ " .. show(body), query = { [group] = body } })
            if a.path[1] ~= b.path[1] then
               local mixed = { operator = "or_", [a.path[1]] = {}, [b.path[1]] = second[k] }
               add({ kind = "filter", name = group .. " or_ with an empty criterion " .. show(mixed),
                  query = { [group] = mixed } })
            end
         end
      end
   end
   local tags_or = { task_runs = { tags = { operator = "or_", all_ = { "db" }, is_null_ = true } } }
   add({ kind = "filter", name = "task_runs.tags or_ all_/is_null_", query = tags_or })
   add({ kind = "filter", name = "task_runs.state or_ type/name", query = { task_runs = { state = {
      operator = "or_", type = { any_ = { "FAILED" } }, name = { any_ = { "Completed" } } } } } })
   add({ kind = "filter", name = "flow_runs.state.type any_ and not_any_ together", query = { flow_runs = {
      state = { type = { any_ = { "COMPLETED" }, not_any_ = { "FAILED" } } } } } })
   add({ kind = "filter", name = "task_runs.flow_run_id is_null_ true with any_", query = { task_runs = {
      flow_run_id = { is_null_ = true, any_ = { "@flow_run:fr-alpha" } } } } })
   add({ kind = "filter", name = "task_runs and flow_runs and flows together", query = {
      task_runs = { state = { type = { any_ = { "COMPLETED", "FAILED" } } } },
      flow_runs = { name = { like_ = "fr-" } }, flows = { name = { any_ = { "etl-pipeline" } } } } })

   -- 4. Every sort, alone and with a filter, on two pages.
   for _, sort in ipairs(schema.SORTS) do
      add({ kind = "filter", name = "sort " .. sort, query = { sort = sort } })
      add({ kind = "filter", name = "sort " .. sort .. ", offset 200", query = { sort = sort },
         offset = 200 })
      add({ kind = "filter", name = "sort " .. sort .. ", limit 25, offset 40",
         query = { sort = sort, limit = 25 }, offset = 40 })
      add({ kind = "filter", name = "sort " .. sort .. " of failed runs",
         query = { sort = sort, task_runs = { state = { type = { any_ = { "FAILED" } } } } } })
   end

   -- 5. Limit, offset and page size across the 200 boundary.
   for _, p in ipairs({ { 1, 0 }, { 199, 0 }, { 200, 0 }, { 200, 100 }, { 50, 199 }, { 50, 290 }, { 10, 305 },
      { 10, 10000 } }) do
      add({ kind = "filter", name = ("limit %d, offset %d"):format(p[1], p[2]), query = { limit = p[1] },
         offset = p[2] })
   end
   add({ kind = "filter", name = "page_size 7", query = { page_size = 7 }, offset = 3 })

   -- 6. Counts.
   add({ kind = "count", name = "count of everything", query = {} })
   add({ kind = "count", name = "count of failed and crashed",
      query = { task_runs = { state = { type = { any_ = { "FAILED", "CRASHED" } } } } } })
   add({ kind = "count", name = "count in fr-alpha",
      query = { flow_runs = { name = { any_ = { "fr-alpha" } } } } })
   add({ kind = "count", name = "count with deployments = {}", query = { deployments = {} } })
   add({ kind = "count", name = "count of runs without a flow run",
      query = { task_runs = { flow_run_id = { is_null_ = true } } } })

   -- 7. Get by id.
   add({ kind = "get", name = "get a task run by id", id = "@task_run:load_db-3" })
   add({ kind = "get", name = "get a task run with labels", id = "@task_run:deploy-extract-0" })
   add({ kind = "get", name = "get an unknown id", id = "@unknown" })

   -- 8. Raw requests: paginate, the quirks list's 400 and 422 cases, and bodies the DSL refuses.
   local function raw(name, method, path, body, headers)
      add({ kind = "raw", name = name, request = { method = method, path = path, body = body,
         headers = headers or { ["content-type"] = "application/json" } } })
   end
   raw("paginate page 1", "POST", "/task_runs/paginate", '{"page":1,"limit":50}')
   raw("paginate page 3 of failed", "POST", "/task_runs/paginate",
      '{"page":3,"limit":5,"task_runs":{"state":{"type":{"any_":["FAILED"]}}}}')
   raw("paginate past the end", "POST", "/task_runs/paginate", '{"page":100,"limit":200}')
   raw("paginate limit 201", "POST", "/task_runs/paginate", '{"limit":201}')
   raw("paginate page 0", "POST", "/task_runs/paginate", '{"page":0}')
   raw("limit 201", "POST", "/task_runs/filter", '{"limit":201}')
   raw("limit -1", "POST", "/task_runs/filter", '{"limit":-1}')
   raw("limit 0", "POST", "/task_runs/filter", '{"limit":0}')
   raw("limit as a string", "POST", "/task_runs/filter", '{"limit":"5"}')
   raw("limit 2.5", "POST", "/task_runs/filter", '{"limit":2.5}')
   raw("offset -1", "POST", "/task_runs/filter", '{"offset":-1}')
   raw("unknown top-level key", "POST", "/task_runs/filter", '{"task_run":{"name":{"any_":["x"]}},"limit":3}')
   raw("unknown filter key", "POST", "/task_runs/filter", '{"task_runs":{"nme":{"any_":["x"]}}}')
   raw("unknown operator key", "POST", "/task_runs/filter", '{"task_runs":{"name":{"in_":["x"]}}}')
   raw("bad state type", "POST", "/task_runs/filter", '{"task_runs":{"state":{"type":{"any_":["DONE"]}}}}')
   raw("bad sort", "POST", "/task_runs/filter", '{"sort":"START_TIME_ASC"}')
   raw("lower-case sort", "POST", "/task_runs/filter", '{"sort":"id_desc"}')
   raw("sort null", "POST", "/task_runs/filter", '{"sort":null,"limit":3}')
   raw("operator null", "POST", "/task_runs/filter", '{"task_runs":{"operator":null}}')
   raw("operator xor_", "POST", "/task_runs/filter", '{"task_runs":{"operator":"xor_"}}')
   raw("operator on an object without one", "POST", "/task_runs/filter",
      '{"task_runs":{"name":{"operator":"or_","any_":["x"]}}}')
   raw("bad uuid", "POST", "/task_runs/filter", '{"task_runs":{"id":{"any_":["not-a-uuid"]}}}')
   raw("bad datetime", "POST", "/task_runs/filter", '{"task_runs":{"start_time":{"after_":"yesterday"}}}')
   raw("is_schedule_active on 3.x", "POST", "/task_runs/filter",
      '{"deployments":{"is_schedule_active":{"eq_":true}}}')
   raw("a list as the body", "POST", "/task_runs/filter", "[]")
   raw("a number as the body", "POST", "/task_runs/filter", "42")
   raw("malformed JSON", "POST", "/task_runs/filter", '{"limit": 5,')
   raw("empty body", "POST", "/task_runs/filter", nil)
   raw("null body", "POST", "/task_runs/filter", "null")
   raw("text/plain body is ignored", "POST", "/task_runs/filter", '{"limit":3}',
      { ["content-type"] = "text/plain" })
   raw("API version 0.7.0", "POST", "/task_runs/filter", '{"limit":1}',
      { ["content-type"] = "application/json", ["x-prefect-api-version"] = "0.7.0" })
   raw("API version 3.0", "POST", "/task_runs/filter", '{"limit":1}',
      { ["content-type"] = "application/json", ["x-prefect-api-version"] = "3.0" })
   raw("API version 9.9.9", "POST", "/task_runs/filter", '{"limit":1}',
      { ["content-type"] = "application/json", ["x-prefect-api-version"] = "9.9.9" })
   raw("trailing slash", "POST", "/task_runs/filter/", '{"limit":1}')
   raw("GET on the filter route", "GET", "/task_runs/filter", nil)
   raw("count with a bad key", "POST", "/task_runs/count", '{"task_runs":{"x":1}}')
   raw("get a malformed id", "GET", "/task_runs/not-a-uuid", nil)
   raw("flow runs by name", "POST", "/flow_runs/filter",
      '{"flow_runs":{"name":{"any_":["fr-alpha","fr-child"]}}}')
   raw("flow runs by name, first 3", "POST", "/flow_runs/filter", '{"sort":"NAME_ASC","limit":3}')
   raw("flow runs of failed task runs", "POST", "/flow_runs/filter",
      '{"task_runs":{"state":{"type":{"any_":["FAILED"]}}},"sort":"NAME_DESC"}')
   raw("flow runs, bad sort", "POST", "/flow_runs/filter", '{"sort":"DURATION_DESC"}')
   -- /flows/filter, which include asks, on its own
   raw("flows, default sort", "POST", "/flows/filter", "{}")
   raw("flows, NAME_DESC", "POST", "/flows/filter", '{"sort":"NAME_DESC"}')
   raw("flows, CREATED_DESC, limit 1", "POST", "/flows/filter", '{"sort":"CREATED_DESC","limit":1}')
   raw("flows, offset 1", "POST", "/flows/filter", '{"limit":1,"offset":1}')
   raw("flows of a flow run", "POST", "/flows/filter", '{"flow_runs":{"name":{"any_":["fr-delta"]}}}')
   raw("flows of failed task runs", "POST", "/flows/filter",
      '{"task_runs":{"state":{"type":{"any_":["FAILED"]}}}}')
   raw("flows with a deployment", "POST", "/flows/filter",
      '{"deployments":{"name":{"any_":["nightly-etl"]}}}')
   raw("flows by name like_", "POST", "/flows/filter", '{"flows":{"name":{"like_":"PIPE"}}}')
   raw("flows, no id", "POST", "/flows/filter", '{"flows":{"id":{"any_":[]}}}')
   raw("flows, bad sort", "POST", "/flows/filter", '{"sort":"ID_DESC"}')
   raw("flows, limit 201", "POST", "/flows/filter", '{"limit":201}')
   raw("flows, unknown filter key", "POST", "/flows/filter", '{"flows":{"nme":{}}}')
   raw("flow runs, no id", "POST", "/flow_runs/filter", '{"flow_runs":{"id":{"any_":[]}},"limit":0}')
   raw("flow runs, offset 2 limit 3", "POST", "/flow_runs/filter", '{"limit":3,"offset":2}')

   -- 9. include: the flow runs and flows of a page, both servers against the real one's answers.
   local function include(name, query, inc, fields)
      add({ kind = "include", name = "include " .. name, query = query, include = inc, fields = fields })
   end
   include("flow_run and flow", {}, { "flow_run", "flow" })
   include("flow_run and flow of failed runs, NAME_ASC", { sort = "NAME_ASC",
      task_runs = { state = { type = { any_ = { "FAILED", "CRASHED" } } } } }, { "flow_run", "flow" })
   include("names only", { limit = 120 }, { flow_run = { "name", "state_type" }, flow = { "name" } },
      { flow_run = { "id", "flow_id", "name", "state_type" }, flow = { "id", "name" } })
   include("flow only", { offset = 100 }, { "flow" }, { flow = true })
   include("runs without a flow run", { task_runs = { flow_run_id = { is_null_ = true } } },
      { "flow_run", "flow" })

   raw("health", "GET", "/health", nil)
   raw("version", "GET", "/version", nil)
   raw("admin version", "GET", "/admin/version", nil)
   return cases
end

-- References ------------------------------------------------------------------------------------

--- A resolver of references against `data` (a dataset as prefect.testing.dataset loads it).
function M.resolver(data)
   local by = { task_run = {}, flow_run = {}, flow = {}, deployment = {} }
   for _, r in ipairs(data.task_runs) do by.task_run[r.name] = by.task_run[r.name] or r.id end
   for _, r in ipairs(data.flow_runs) do by.flow_run[r.name] = r.id end
   for _, r in ipairs(data.flows) do by.flow[r.name] = r.id end
   for _, r in ipairs(data.deployments or {}) do by.deployment[r.name] = r.id end
   local parent
   for _, r in ipairs(data.flow_runs) do
      if r.parent_task_run_id ~= nil and r.parent_task_run_id ~= NULL then parent = r.parent_task_run_id end
   end
   local function quantile(rows, column, q)
      local list = {}
      for _, r in ipairs(rows) do
         local v = r[column]
         if v ~= nil and v ~= NULL then list[#list + 1] = v end
      end
      assert(#list > 0, "differential: no " .. column .. " in the data")
      table.sort(list)
      return list[math.max(1, math.floor(q * (#list - 1)) + 1)]
   end
   local function resolve(v)
      if type(v) == "table" then
         local out = {}
         for k, x in pairs(v) do out[k] = resolve(x) end
         return out
      end
      if type(v) ~= "string" or v:sub(1, 1) ~= "@" then return v end
      if v == "@unknown" then return UNKNOWN_ID end
      if v == "@parent_task_run" then return assert(parent, "differential: no subflow in the data") end
      local what, name = v:match("^@(%w+_?%w*):(.*)$")
      if by[what] then return assert(by[what][name], "differential: no " .. what .. " named " .. name) end
      local rows = what == "time" and data.task_runs or data.flow_runs
      local column, q = name:match("^([%w_]+):([%d.]+)$")
      return quantile(rows, column, tonumber(q))
   end
   return resolve
end

--- A query in Prefect's body shape as dataset.json values (lists under the list operators, keys
-- sorted), for sending what the DSL refuses to compile as it is.
local LIST_OPS = { any_ = true, not_any_ = true, all_ = true, id_ = true, type_ = true }
function M.json_body(v, key)
   if type(v) ~= "table" then return v end
   if LIST_OPS[key] then
      local a = json.array()
      for i, x in ipairs(v) do a[i] = x end
      return a
   end
   local keys, o = sorted_keys(v), {}
   for _, k in ipairs(keys) do o[k] = M.json_body(v[k], k) end
   return json.object(keys, o)
end

-- Comparing ---------------------------------------------------------------------------------------

--- Structural equality of two values decoded by dataset.json (object key order aside).
function M.same(a, b)
   local na, nb = json.number(a), json.number(b)
   if na ~= nil or nb ~= nil then return na == nb end
   if type(a) ~= "table" or type(b) ~= "table" then return a == b end
   if a == NULL or b == NULL then return a == b end
   if json.is_array(a) ~= json.is_array(b) then return false end
   if json.is_array(a) then
      if #a ~= #b then return false end
      for i = 1, #a do if not M.same(a[i], b[i]) then return false end end
      return true
   end
   for _, k in ipairs(json.keys(a)) do if not M.same(a[k], b[k]) then return false end end
   for _, k in ipairs(json.keys(b)) do if a[k] == nil then return false end end
   return true
end

-- Fields Prefect computes from the time of the request: two identical requests differ there.
M.VOLATILE = { estimated_run_time = true, estimated_start_time_delta = true }

--- Whether `mine` (decoded by prefect.core with null = NULL_SENTINEL and array_mt = ARRAY) equals
-- `raw` (decoded by prefect.testing.dataset's JSON reader); returns true, or false and the path
-- of the first difference.
function M.same_value(raw, mine, null, array_mt, path, skip)
   path = path or "$"
   if raw == NULL then return mine == null, path end
   local n = json.number(raw)
   if n ~= nil then return type(mine) == "number" and n == mine, path end
   if json.is_array(raw) then
      if type(mine) ~= "table" or (array_mt and getmetatable(mine) ~= array_mt) or #mine ~= #raw then
         return false, path
      end
      for i = 1, #raw do
         local ok, where = M.same_value(raw[i], mine[i], null, array_mt, path .. "[" .. i .. "]")
         if not ok then return false, where end
      end
      return true
   end
   if type(raw) == "table" then
      if type(mine) ~= "table" or (array_mt and getmetatable(mine) == array_mt) then return false, path end
      for _, k in ipairs(json.keys(raw)) do
         if not (skip and skip[k]) then
            local ok, where = M.same_value(raw[k], mine[k], null, array_mt, path .. "." .. k)
            if not ok then return false, where end
         end
      end
      for k in pairs(mine) do
         if raw[k] == nil then return false, path .. "." .. tostring(k) .. " (extra)" end
      end
      return true
   end
   return raw == mine, path
end

--- The column a sort orders by (nil for ID_DESC, whose key is the id itself).
M.SORT_COLUMN = {
   EXPECTED_START_TIME_ASC = "expected_start_time", EXPECTED_START_TIME_DESC = "expected_start_time",
   NAME_ASC = "name", NAME_DESC = "name", NEXT_SCHEDULED_START_TIME_ASC = "next_scheduled_start_time",
   END_TIME_DESC = "end_time",
}

--- Compares two pages of runs (lists of tables with `id` and the sort column, nulls as `null`)
-- as far as `sort` determines their order: the same sequence of sort keys, and within each run of
-- equal keys the same ids, except in a run of ties the page boundary cuts (first or last, when
-- `cut_first`/`cut_last`), where only the count can agree. Returns nil or a difference in words.
function M.compare_pages(want, got, sort, null, cut_first, cut_last)
   if #want ~= #got then return ("%d runs, got %d"):format(#want, #got) end
   local column = M.SORT_COLUMN[sort or "ID_DESC"]
   if not column then
      for i = 1, #want do
         if want[i].id ~= got[i].id then
            return ("position %d: %s, got %s"):format(i, want[i].id, got[i].id)
         end
      end
      return nil
   end
   local function key(r)
      local v = r[column]
      if v == nil or v == null or v == NULL then return "\0null" end
      return v
   end
   local i = 1
   while i <= #want do
      local k = key(want[i])
      local j = i
      while j < #want and key(want[j + 1]) == k do j = j + 1 end
      local ids = {}
      for p = i, j do
         if key(got[p]) ~= k then
            return ("position %d: %s %s, got %s"):format(p, column, tostring(k), tostring(key(got[p])))
         end
         ids[want[p].id] = true
      end
      local cut = (i == 1 and cut_first) or (j == #want and cut_last)
      if not cut then
         for p = i, j do
            if not ids[got[p].id] then
               return ("positions %d-%d (%s %s): %s is not among the runs expected there"):format(i, j,
                  column, tostring(k), got[p].id)
            end
         end
      end
      i = j + 1
   end
   return nil
end

return M
