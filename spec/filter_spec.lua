-- prefect.filter: friendly queries compile to Prefect's exact body, misuse is
-- refused before any request with a message that says where and what, and the
-- friendly keys select the same runs from a server as the raw bodies they stand for.

local filter = require("prefect.filter")
local time = require("prefect.filter.time")
local suggest = require("prefect.filter.suggest")
local schema = require("prefect.filter.schema")

local U1 = "0198c2a4-5b7e-7c3a-9d41-2f6a8e0b1c55"
local U2 = "e978192b-7a34-4f33-b4f8-946368f18de8"
local STATES = "SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, CRASHED, PAUSED, CANCELLING"
local SORTS = "ID_DESC, EXPECTED_START_TIME_ASC, EXPECTED_START_TIME_DESC, NAME_ASC, NAME_DESC,"
   .. " NEXT_SCHEDULED_START_TIME_ASC, END_TIME_DESC, DURATION_DESC, DURATION_ASC"

local function body_of(q, opts)
   local body = filter.compile(q, opts)
   return body
end

-- The text of the error `fn` raises (an errors object's message, or a string without "file:line: ").
local function message_of(fn)
   local ok, e = pcall(fn)
   assert(not ok, "expected an error, got none")
   if type(e) == "table" then return e.message, e end
   return (tostring(e):gsub("^[^:]+:%d+: ", "")), e
end

local function err(q, opts)
   return (message_of(function() return filter.compile(q, opts) end))
end

local function deep_copy(v)
   if type(v) ~= "table" then return v end
   local out = {}
   for k, x in pairs(v) do out[k] = deep_copy(x) end
   return setmetatable(out, getmetatable(v))
end

describe("prefect.filter.compile", function()
   describe("friendly task-run keys", function()
      local cases = {
         { "state: one type, any case", { state = "failed" },
            { task_runs = { state = { type = { any_ = { "FAILED" } } } } } },
         { "state: a list", { state = { "FAILED", "Crashed" } },
            { task_runs = { state = { type = { any_ = { "FAILED", "CRASHED" } } } } } },
         { "state: explicit any", { state = { any = { "RUNNING" } } },
            { task_runs = { state = { type = { any_ = { "RUNNING" } } } } } },
         { "state: explicit empty any matches nothing", { state = { any = {} } },
            { task_runs = { state = { type = { any_ = {} } } } } },
         { "state_name: exact case kept", { state_name = "Retrying" },
            { task_runs = { state = { name = { any_ = { "Retrying" } } } } } },
         { "state and state_name share task_runs.state",
            { state = "FAILED", state_name = { "Crashed", "Late" } },
            { task_runs = { state = { type = { any_ = { "FAILED" } },
               name = { any_ = { "Crashed", "Late" } } } } } },
         { "tags: a list is all_", { tags = { "etl", "daily" } },
            { task_runs = { tags = { all_ = { "etl", "daily" } } } } },
         { "tags: one string", { tags = "etl" }, { task_runs = { tags = { all_ = { "etl" } } } } },
         { "tags = false: runs without tags", { tags = false },
            { task_runs = { tags = { is_null_ = true } } } },
         { "tags = true: runs with tags", { tags = true }, { task_runs = { tags = { is_null_ = false } } } },
         { "tags: explicit all and is_null", { tags = { all = { "a" }, is_null = false } },
            { task_runs = { tags = { all_ = { "a" }, is_null_ = false } } } },
         { "name: a string is like_", { name = "extract" },
            { task_runs = { name = { like_ = "extract" } } } },
         { "name: a list is any_", { name = { "extract-1", "load-2" } },
            { task_runs = { name = { any_ = { "extract-1", "load-2" } } } } },
         { "name: explicit like and any", { name = { like = "x", any = { "a" } } },
            { task_runs = { name = { like_ = "x", any_ = { "a" } } } } },
         { "name: operators with Prefect's underscore", { name = { like_ = "x" } },
            { task_runs = { name = { like_ = "x" } } } },
         { "id: one UUID, upper case, no hyphens", { id = "0198C2A45B7E7C3A9D412F6A8E0B1C55" },
            { task_runs = { id = { any_ = { U1 } } } } },
         { "id: a list", { id = { U1, U2 } }, { task_runs = { id = { any_ = { U1, U2 } } } } },
         { "started: after and before", { started = { after = "2026-08-01", before = 1785585600 } },
            { task_runs = { start_time = { after_ = "2026-08-01T00:00:00.000000Z",
               before_ = "2026-08-01T12:00:00.000000Z" } } } },
         { "started = false: not started", { started = false },
            { task_runs = { start_time = { is_null_ = true } } } },
         { "started = true: started", { started = true },
            { task_runs = { start_time = { is_null_ = false } } } },
         { "started: explicit is_null", { started = { is_null = true } },
            { task_runs = { start_time = { is_null_ = true } } } },
         { "expected", { expected = { before = "2030-01-01T00:00:00+01:00" } },
            { task_runs = { expected_start_time = { before_ = "2029-12-31T23:00:00.000000Z" } } } },
         { "ended", { ended = { after = 0 } },
            { task_runs = { end_time = { after_ = "1970-01-01T00:00:00.000000Z" } } } },
         { "ended = false: not ended", { ended = false },
            { task_runs = { end_time = { is_null_ = true } } } },
         { "flow_run_id: one", { flow_run_id = U1 }, { task_runs = { flow_run_id = { any_ = { U1 } } } } },
         { "flow_run_id = false: no flow run", { flow_run_id = false },
            { task_runs = { flow_run_id = { is_null_ = true } } } },
         { "background = true", { background = true },
            { task_runs = { flow_run_id = { is_null_ = true } } } },
         { "background = false", { background = false },
            { task_runs = { flow_run_id = { is_null_ = false } } } },
         { "background = false with flow_run_id", { background = false, flow_run_id = { U1 } },
            { task_runs = { flow_run_id = { any_ = { U1 }, is_null_ = false } } } },
         { "subflow = true", { subflow = true }, { task_runs = { subflow_runs = { exists_ = true } } } },
         { "subflow = false", { subflow = false }, { task_runs = { subflow_runs = { exists_ = false } } } },
         { "subflow: explicit exists", { subflow = { exists = true } },
            { task_runs = { subflow_runs = { exists_ = true } } } },
         { "sort: any case, sent upper case", { sort = "end_time_desc" }, { sort = "END_TIME_DESC" } },
         { "the empty query is the empty body", {}, {} },
      }
      for _, case in ipairs(cases) do
         it(case[1], function()
            assert.same(case[3], body_of(case[2]))
         end)
      end

      it("compiles DESIGN.md's example exactly", function()
         local q = {
            state = { "FAILED", "CRASHED" }, tags = { "etl" }, name = "extract",
            started = { after = 1785499200 }, flow_run = { name = { "nightly-42" } },
            sort = "END_TIME_DESC", limit = 1000,
         }
         local body, paging = filter.compile(q)
         assert.same({
            task_runs = {
               state = { type = { any_ = { "FAILED", "CRASHED" } } },
               tags = { all_ = { "etl" } },
               name = { like_ = "extract" },
               start_time = { after_ = "2026-07-31T12:00:00.000000Z" },
            },
            flow_runs = { name = { any_ = { "nightly-42" } } },
            sort = "END_TIME_DESC",
         }, body)
         assert.same({ limit = 1000, page_size = 200, offset = 0 }, paging)
      end)
   end)

   describe("nested queries", function()
      local cases = {
         { "flow_run: every key", {
            flow_run = {
               id = { not_any = { U1 } }, name = "nightly", tags = { any = { "a", "b" } },
               state = { not_any = { "failed" } }, state_name = { any = { "Late" } },
               deployment_id = false, work_queue_name = { "q1" }, flow_version = "1.0",
               started = { after = "2026-01-01" }, ended = true, expected = { before = "2026-01-02" },
               next_scheduled = { after = "2026-01-03" }, parent_flow_run_id = U2,
               parent_task_run_id = true, idempotency_key = { not_any = { "k" } },
               created_by = { id = U1, type = { "DEPLOYMENT" } },
            },
         }, {
            flow_runs = {
               id = { not_any_ = { U1 } }, name = { like_ = "nightly" }, tags = { any_ = { "a", "b" } },
               state = { type = { not_any_ = { "FAILED" } }, name = { any_ = { "Late" } } },
               deployment_id = { is_null_ = true }, work_queue_name = { any_ = { "q1" } },
               flow_version = { any_ = { "1.0" } },
               start_time = { after_ = "2026-01-01T00:00:00.000000Z" }, end_time = { is_null_ = false },
               expected_start_time = { before_ = "2026-01-02T00:00:00.000000Z" },
               next_scheduled_start_time = { after_ = "2026-01-03T00:00:00.000000Z" },
               parent_flow_run_id = { any_ = { U2 } }, parent_task_run_id = { is_null_ = false },
               idempotency_key = { not_any_ = { "k" } },
               created_by = { id_ = { U1 }, type_ = { "DEPLOYMENT" } },
            },
         } },
         { "flow_run: state list and tags list", { flow_run = { state = { "FAILED" }, tags = { "prod" } } },
            { flow_runs = { state = { type = { any_ = { "FAILED" } } }, tags = { all_ = { "prod" } } } } },
         { "flow_run = {}: only task runs that have a flow run", { flow_run = {} }, { flow_runs = {} } },
         { "flow_run: created_by = false", { flow_run = { created_by = false } },
            { flow_runs = { created_by = { is_null_ = true } } } },
         { "flow: every key", {
            flow = { id = { any = { U1 }, not_any = { U2 } }, name = { "etl-pipeline" }, tags = false,
               deployment = true },
         }, {
            flows = { id = { any_ = { U1 }, not_any_ = { U2 } }, name = { any_ = { "etl-pipeline" } },
               tags = { is_null_ = true }, deployment = { is_null_ = false } },
         } },
         { "deployment: every key", {
            deployment = { id = U1, name = "prod", flow_or_deployment_name = "etl", paused = false,
               tags = { any = { "x" } }, work_queue_name = "default", is_schedule_active = true },
         }, {
            deployments = { id = { any_ = { U1 } }, name = { like_ = "prod" },
               flow_or_deployment_name = { like_ = "etl" }, paused = { eq_ = false },
               tags = { any_ = { "x" } }, work_queue_name = { any_ = { "default" } },
               is_schedule_active = { eq_ = true } },
         } },
         { "all four groups together", {
            state = "FAILED", flow_run = { name = "a" }, flow = { name = "b" }, deployment = { name = "c" },
         }, {
            task_runs = { state = { type = { any_ = { "FAILED" } } } },
            flow_runs = { name = { like_ = "a" } }, flows = { name = { like_ = "b" } },
            deployments = { name = { like_ = "c" } },
         } },
      }
      for _, case in ipairs(cases) do
         it(case[1], function()
            assert.same(case[3], body_of(case[2]))
         end)
      end
   end)

   describe("paging", function()
      it("defaults: no limit, pages of 200 from offset 0, and no paging keys in the body", function()
         local body, paging = filter.compile({ state = "FAILED" })
         assert.same({ page_size = 200, offset = 0 }, paging)
         assert.is_nil(body.limit)
         assert.is_nil(body.offset)
         assert.is_nil(body.page_size)
      end)

      it("limit is the total, page_size the per-request size, offset the start", function()
         local body, paging = filter.compile({ limit = 1000, page_size = 50, offset = 7 })
         assert.same({}, body)
         assert.same({ limit = 1000, page_size = 50, offset = 7 }, paging)
      end)

      it("accepts limit = 0 and a limit above the page size", function()
         assert.same(0, select(2, filter.compile({ limit = 0 })).limit)
         assert.same(100000, select(2, filter.compile({ limit = 100000 })).limit)
      end)

      it("gives integers for whole floats", function()
         local _, paging = filter.compile({ limit = 10.0, offset = 3.0, page_size = 20.0 })
         assert.same("10 3 20", string.format("%s %s %s", paging.limit, paging.offset, paging.page_size))
      end)
   end)

   describe("Prefect's own shape", function()
      it("passes through unchanged", function()
         local q = {
            task_runs = {
               operator = "or_",
               state = { operator = "or_", type = { any_ = { "RUNNING" } }, name = { any_ = { "Paused" } } },
               name = { like_ = "notify" },
               flow_run_id = { any_ = { "0198C2A4-5B7E-7C3A-9D41-2F6A8E0B1C55" } },
               start_time = { after_ = "2026-11-29T11:53:42.967274+00:00" },
            },
            flow_runs = { id = { any_ = { U2 } }, tags = { all_ = {} } },
            flows = { name = { any_ = { "reporting" } } },
            deployments = { concurrency_limit = { ge_ = 1 } },
            sort = "NAME_ASC",
         }
         assert.same(q, body_of(q))
      end)

      it("keeps JSON null where Prefect accepts it", function()
         local null = require("cjson").null
         local body = body_of({ task_runs = { flow_run_id = { is_null_ = null } } })
         assert.equal(null, body.task_runs.flow_run_id.is_null_)
      end)

      it("mixes with friendly keys when they do not overlap", function()
         assert.same({
            task_runs = { state = { type = { any_ = { "FAILED" } }, name = { any_ = { "Retrying" } } },
               tags = { all_ = { "etl" } } },
         }, body_of({ state = "FAILED", tags = "etl",
            task_runs = { state = { name = { any_ = { "Retrying" } } } } }))
         assert.same({
            task_runs = { name = { like_ = "x" } },
            flow_runs = { name = { any_ = { "fr" } }, tags = { all_ = { "t" } } },
         }, body_of({ name = "x", flow_run = { tags = "t" }, flow_runs = { name = { any_ = { "fr" } } } }))
      end)

      it("refuses a criterion set by both", function()
         assert.equal('task_runs.state.type.any_ is set by both "state" and "task_runs"; give it once',
            err({ state = "FAILED", task_runs = { state = { type = { any_ = { "CRASHED" } } } } }))
         assert.equal('flow_runs.name.like_ is set by both "flow_run" and "flow_runs"; give it once',
            err({ flow_run = { name = "a" }, flow_runs = { name = { like_ = "b" } } }))
      end)

      it("refuses to add a friendly criterion to an object whose criteria are ORed", function()
         assert.equal('task_runs: "tags" and "task_runs" both filter it and one of them ORs its criteria;'
            .. ' Prefect has one operator per object, so they cannot be combined (put both in one any_of,'
            .. ' or AND them outside it)',
            err({ tags = "x", task_runs = { operator = "or_", name = { like_ = "a" }, state = {
               type = { any_ = { "FAILED" } } } } }))
      end)

      it("stays exact-case for state types", function()
         assert.equal('task_runs.state.type.any_[1]: "completed" is not a state type (' .. STATES
            .. '); Prefect\'s own shape is case-sensitive: write "COMPLETED" (or use the friendly key state,'
            .. ' which is not)', err({ task_runs = { state = { type = { any_ = { "completed" } } } } }))
      end)
   end)

   describe("any_of", function()
      it("ORs criteria of task runs", function()
         assert.same({
            task_runs = { operator = "or_", state = { type = { any_ = { "FAILED" } } },
               tags = { all_ = { "critical" } } },
         }, body_of(filter.any_of({ { state = "FAILED" }, { tags = { "critical" } } })))
      end)

      it("is a plain query that takes more keys", function()
         local q = filter.any_of({ { name = "a" }, { state = "FAILED" } })
         assert.same({ any_of = { { name = "a" }, { state = "FAILED" } } }, q)
         q.sort = "NAME_ASC"
         q.limit = 5
         local body, paging = filter.compile(q)
         assert.same({ task_runs = { operator = "or_", name = { like_ = "a" },
            state = { type = { any_ = { "FAILED" } } } }, sort = "NAME_ASC" }, body)
         assert.equal(5, paging.limit)
      end)

      it("joins lists of one any_ (an OR of IN lists is one IN list)", function()
         assert.same({ task_runs = { state = { type = { any_ = { "FAILED", "CRASHED" } } } } },
            body_of(filter.any_of({ { state = "FAILED" }, { state = { "CRASHED", "FAILED" } } })))
      end)

      it("ORs inside task_runs.state when branches split type and name", function()
         assert.same({
            task_runs = { operator = "or_", tags = { all_ = { "x" } },
               state = { operator = "or_", type = { any_ = { "FAILED" } },
                  name = { any_ = { "Retrying" } } } },
         }, body_of(filter.any_of({ { state = "FAILED" }, { state_name = "Retrying" }, { tags = "x" } })))
      end)

      it("ORs flow-run criteria and ANDs them with task-run keys", function()
         assert.same({
            task_runs = { state = { type = { any_ = { "FAILED" } } } },
            flow_runs = { operator = "or_", tags = { any_ = { "prod" } }, name = { like_ = "nightly" } },
         }, body_of({ state = "FAILED",
            any_of = { { flow_run = { tags = { any = { "prod" } } } },
               { flow_run = { name = "nightly" } } } }))
      end)

      it("flattens nested any_of and raw or_ branches", function()
         assert.same({
            task_runs = { operator = "or_", name = { like_ = "a" }, tags = { all_ = { "t" } },
               subflow_runs = { exists_ = true } },
         }, body_of(filter.any_of({
            filter.any_of({ { name = "a" }, { tags = "t" } }),
            { subflow = true },
         })))
         assert.same({
            task_runs = { operator = "or_", name = { like_ = "a" }, tags = { all_ = { "t" } },
               subflow_runs = { exists_ = true } },
         }, body_of(filter.any_of({
            { task_runs = { operator = "or_", name = { like_ = "a" }, tags = { all_ = { "t" } } } },
            { subflow = true },
         })))
      end)

      it("with one branch is that branch", function()
         assert.same({ task_runs = { name = { like_ = "a" }, tags = { all_ = { "t" } } } },
            body_of(filter.any_of({ { name = "a", tags = "t" } })))
      end)

      it("refuses a branch of two ANDed criteria", function()
         assert.equal("any_of[2] sets task_runs.name and task_runs.tags, which Prefect ANDs; inside any_of"
            .. " each branch must come down to one criterion, because Prefect has a single operator per"
            .. " object",
            err(filter.any_of({ { state = "FAILED" }, { name = "a", tags = "t" } })))
      end)

      it("refuses an OR across groups", function()
         assert.equal("any_of[1] filters task_runs but any_of[2] filters flow_runs; Prefect ANDs task_runs,"
            .. " flow_runs, flows and deployments, so an OR across them cannot be expressed",
            err(filter.any_of({ { state = "FAILED" }, { flow_run = { state = "FAILED" } } })))
      end)

      it("refuses the same criterion twice", function()
         assert.equal("any_of[1] and any_of[2] each set task_runs.tags.all_; Prefect can OR different"
            .. " criteria, but not two values of one (all_ can appear once)",
            err(filter.any_of({ { tags = "a" }, { tags = "b" } })))
         assert.equal("any_of[1] and any_of[2] would OR task_runs.name.any_ with task_runs.name.like_, but"
            .. " Prefect always ANDs the criteria of task_runs.name",
            err(filter.any_of({ { name = { "a" } }, { name = "b" } })))
      end)

      it("refuses an empty branch, which would match everything", function()
         assert.equal("any_of[2] is empty; under an OR an empty filter matches every task run",
            err(filter.any_of({ { state = "FAILED" }, {} })))
         assert.equal("any_of[2] sets no criterion in flow_runs; under an OR an empty filter matches every"
            .. " task run (Prefect treats it as true)",
            err(filter.any_of({ { flow_run = { name = "a" } }, { flow_run = {} } })))
      end)

      it("refuses a branch with no effective criterion (§3.1 rule 6)", function()
         assert.equal('task_runs.name holds no effective criterion (an empty filter, like_ "", all_ [],'
            .. " not_any_ [] or null); under task_runs's operator or_ Prefect counts it as true, so task_runs"
            .. " would match everything", err(filter.any_of({ { state = "FAILED" }, { name = "" } })))
         assert.equal("task_runs.tags holds no effective criterion (an empty filter, like_ \"\", all_ [],"
            .. " not_any_ [] or null); under task_runs's operator or_ Prefect counts it as true, so task_runs"
            .. " would match everything",
            err(filter.any_of({ { state = "FAILED" }, { tags = { all = {} } } })))
      end)

      it("refuses the same in Prefect's own shape", function()
         assert.equal('task_runs.name holds no effective criterion (an empty filter, like_ "", all_ [],'
            .. " not_any_ [] or null); under task_runs's operator or_ Prefect counts it as true, so task_runs"
            .. " would match everything",
            err({ task_runs = { operator = "or_", name = {}, tags = { all_ = { "x" } } } }))
      end)

      it("refuses sort and paging inside a branch", function()
         assert.equal("any_of[1].sort: sort applies to the whole query; set it outside any_of",
            err(filter.any_of({ { sort = "NAME_ASC" }, { state = "FAILED" } })))
         assert.equal("any_of[2].limit: limit applies to the whole query; set it outside any_of",
            err(filter.any_of({ { state = "FAILED" }, { limit = 1 } })))
      end)

      it("refuses anything but a non-empty list", function()
         assert.equal('any_of: expected a non-empty list of queries, as in any_of = {{state = "FAILED"},'
            .. ' {tags = {"critical"}}}', err({ any_of = {} }))
         assert.has_error(function() filter.any_of("x") end,
            "prefect.filter.any_of: expected a list of queries, got a string")
      end)

      it("refuses to OR the no-flow-run test with a flow run id (Prefect ignores any_ then)", function()
         assert.equal("task_runs.flow_run_id has is_null_ = true (no flow run) and any_; Prefect then ignores"
            .. " any_, so give only one of them",
            err(filter.any_of({ { background = true }, { flow_run_id = U1 } })))
      end)

      it("refuses to AND a friendly key into an OR of the same object", function()
         assert.equal('task_runs: "any_of" and "state" both filter it and one of them ORs its criteria;'
            .. " Prefect has one operator per object, so they cannot be combined (put both in one any_of,"
            .. " or AND them outside it)",
            err({ state = "FAILED", any_of = { { name = "a" }, { tags = "b" } } }))
      end)
   end)

   describe("validation", function()
      it("refuses a table whose keys come through an __index metatable (it would compile to less)", function()
         local inherited = setmetatable({}, { __index = { state = "FAILED" } })
         assert.equal("query: a table with an __index metatable; its inherited keys would not be read,"
            .. " so pass a plain table", err(inherited))
         assert.equal("query.flow_run: a table with an __index metatable; its inherited keys would not be"
            .. " read, so pass a plain table",
            err({ flow_run = setmetatable({}, { __index = { name = "x" } }) }))
         assert.equal("query.tags: a table with an __index metatable; its inherited keys would not be read,"
            .. " so pass a plain table",
            err({ tags = setmetatable({}, { __index = function() return "x" end }) }))
         -- a metatable without __index, and the array marker, are fine
         assert.same({ task_runs = { tags = { all_ = { "a" } } } },
            body_of({ tags = setmetatable({ "a" }, { __name = "mine" }) }))
         assert.same({ task_runs = { tags = { all_ = {} } } },
            body_of({ task_runs = { tags = { all_ = setmetatable({}, filter.ARRAY_MT) } } }))
      end)

      it("refuses strings that are not UTF-8, naming the body path and the byte", function()
         assert.equal("task_runs.name.like_: the string is not valid UTF-8 (byte 2 of 3 is 0xFF)",
            err({ name = "a\255b" }))
         assert.equal("task_runs.tags.all_[2]: the string is not valid UTF-8 (byte 1 of 1 is 0xC3)",
            err({ tags = { "ok", "\195" } }))
         assert.equal("flow_runs.name.any_[1]: the string is not valid UTF-8 (byte 1 of 3 is 0xED)",
            err({ flow_runs = { name = { any_ = { "\237\160\128" } } } })) -- a surrogate
         assert.equal("task_runs.name.like_: the string is not valid UTF-8 (byte 1 of 2 is 0xC0)",
            err({ name = "\192\175" })) -- an overlong "/"
         local valid = "h\195\169llo \226\130\172 \240\157\132\158" -- 2, 3 and 4-byte sequences
         assert.same({ task_runs = { name = { like_ = valid } } }, body_of({ name = valid }))
      end)

      it("refuses a raw after_ later than its before_, as the friendly keys do", function()
         assert.equal("task_runs.start_time.after_ (2026-02-01T00:00:00Z) is later than"
            .. " task_runs.start_time.before_ (2026-01-01T00:00:00Z), so nothing can match",
            err({ task_runs = { start_time = {
               after_ = "2026-02-01T00:00:00Z", before_ = "2026-01-01T00:00:00Z" } } }))
         -- compared as instants, not as text
         assert.equal("flow_runs.end_time.after_ (2026-01-01T01:00:00+02:00) is later than"
            .. " flow_runs.end_time.before_ (2025-12-31T22:30:00Z), so nothing can match",
            err({ flow_runs = { end_time = { after_ = "2026-01-01T01:00:00+02:00",
               before_ = "2025-12-31T22:30:00Z" } } }))
         assert.same({ task_runs = { start_time = { after_ = "2026-01-01T01:00:00+02:00",
            before_ = "2025-12-31T23:30:00Z" } } },
            body_of({ task_runs = { start_time = { after_ = "2026-01-01T01:00:00+02:00",
               before_ = "2025-12-31T23:30:00Z" } } }))
      end)

      it("names an unknown key and the nearest valid one", function()
         assert.equal('unknown key "stat" in query; did you mean "state"?', err({ stat = "FAILED" }))
         assert.equal('unknown key "tag" in query; did you mean "tags"?', err({ tag = "x" }))
         assert.equal('unknown key "start_time" in query; did you mean "started"?', err({ start_time = {} }))
         assert.equal('unknown key "task_run" in query; did you mean "task_runs"?', err({ task_run = {} }))
         assert.equal('unknown key "nmae" in flow_run; did you mean "name"?',
            err({ flow_run = { nmae = "x" } }))
         assert.equal('unknown key "nme" in task_runs; did you mean "name"?',
            err({ task_runs = { nme = { like_ = "x" } } }))
         assert.equal('unknown key "lik" in name; did you mean "like"?', err({ name = { lik = "x" } }))
      end)

      it("lists the accepted keys when none is near", function()
         assert.equal('unknown key "zzzzzz" in flow (accepted: deployment, id, name, tags)',
            err({ flow = { zzzzzz = 1 } }))
         assert.equal('unknown key "operator" in task_runs.name (accepted: any_, like_)',
            err({ task_runs = { name = { operator = "or_" } } }))
      end)

      it("catches unknown top-level keys, which Prefect would ignore", function()
         assert.equal('unknown key "task_run_ids" in query (accepted: any_of, background, deployment,'
            .. ' deployments, ended, expected, flow, flow_run, flow_run_id, flow_runs, flows, id, limit,'
            .. ' name,'
            .. ' offset, page_size, sort, started, state, state_name, subflow, tags, task_runs)',
            err({ task_run_ids = {} }))
      end)

      it("names a misspelt state type and the accepted ones", function()
         assert.equal('state[2]: "DONE" is not a state type (' .. STATES .. ")",
            err({ state = { "FAILED", "DONE" } }))
         assert.equal('flow_run.state.not_any[1]: "FIALED" is not a state type (' .. STATES
            .. '); did you mean "FAILED"?', err({ flow_run = { state = { not_any = { "FIALED" } } } }))
         assert.equal('task_runs.state.type.any_[2]: "DONE" is not a state type (' .. STATES .. ")",
            err({ task_runs = { state = { type = { any_ = { "FAILED", "DONE" } } } } }))
      end)

      it("names a bad sort", function()
         assert.equal('sort: "END_TIME" is not a sort (' .. SORTS .. ")", err({ sort = "END_TIME" }))
         assert.equal('sort: "NAME_ACS" is not a sort (' .. SORTS .. '); did you mean "NAME_ASC"?',
            err({ sort = "NAME_ACS" }))
         assert.equal("sort: 1 is not a sort (" .. SORTS .. ")", err({ sort = 1 }))
      end)

      it("refuses bad paging values", function()
         assert.equal("limit: expected a whole number >= 0 (the total number of runs wanted), got -1",
            err({ limit = -1 }))
         assert.equal("limit: expected a whole number >= 0 (the total number of runs wanted), got 2.5",
            err({ limit = 2.5 }))
         assert.equal('limit: expected a whole number >= 0 (the total number of runs wanted), got "10"',
            err({ limit = "10" }))
         assert.equal("page_size: 201 is more than Prefect's maximum page size 200 (use limit for the total)",
            err({ page_size = 201 }))
         assert.equal("page_size: expected a whole number from 1 to 200, got 0", err({ page_size = 0 }))
         assert.equal("offset: expected a whole number >= 0, got -1", err({ offset = -1 }))
      end)

      it("refuses bad times with the reason", function()
         assert.equal('started.after: "yesterday" is not a time: expected YYYY-MM-DD',
            err({ started = { after = "yesterday" } }))
         assert.equal('started.before: "2023-02-29" is not a time: day 29 is out of range for 2023-02'
            .. " (1..28)",
            err({ started = { before = "2023-02-29" } }))
         assert.equal('ended.after: "2026-01-01T24:00:00Z" is not a time: hour 24 is out of range (0..23)',
            err({ ended = { after = "2026-01-01T24:00:00Z" } }))
         assert.equal('expected.after: "2026-01-01T10:00:00+25:00" is not a time: the zone offset +25:00'
            .. " is out of range", err({ expected = { after = "2026-01-01T10:00:00+25:00" } }))
         assert.equal("started.after: nan is not a time: not a finite number"
            , (err({ started = { after = 0 / 0 } }):gsub("%-nan", "nan")))
         assert.equal("started: after (2026-02-01T00:00:00.000000Z) is later than before"
            .. " (2026-01-01T00:00:00.000000Z), so nothing can match",
            err({ started = { after = "2026-02-01", before = "2026-01-01" } }))
         assert.equal("started: expected {after = ..., before = ..., is_null = ...} or true/false, got a"
            .. " string (a time alone does not say after or before)", err({ started = "2026-01-01" }))
         assert.equal("expected: Prefect's task_runs.expected_start_time has no is_null_, so true/false"
            .. " cannot be asked; use {after = ..., before = ...}", err({ expected = false }))
         assert.equal('task_runs.start_time.after_: "2026-13-01" is not an ISO-8601 time: month 13 is out of'
            .. " range (1..12)", err({ task_runs = { start_time = { after_ = "2026-13-01" } } }))
         assert.equal("task_runs.start_time.after_: expected an ISO-8601 string, got a number (Prefect's own"
            .. " shape takes strings; the friendly time keys also take epoch numbers and date tables)",
            err({ task_runs = { start_time = { after_ = 0 } } }))
      end)

      it("reads a date table without a zone as local time, as os.time does", function()
         local fields = { year = 2026, month = 7, day = 1, hour = 12, min = 30, sec = 15 }
         local body = filter.compile({ started = { after = fields } })
         local copy = {}
         for k, v in pairs(fields) do copy[k] = v end
         assert.equal(os.date("!%Y-%m-%dT%H:%M:%S.000000Z", os.time(copy)), body.task_runs.start_time.after_)
         local now = os.time()
         body = filter.compile({ started = { after = os.date("*t", now) } })
         assert.equal(os.date("!%Y-%m-%dT%H:%M:%S.000000Z", now), body.task_runs.start_time.after_)
      end)

      it("refuses a misspelt key in a date table", function()
         assert.equal('unknown key "mon" in started.after (a date table); did you mean "month"?',
            err({ started = { after = { year = 2026, mon = 1, day = 1, utc = true } } }))
      end)

      it("refuses bad UUIDs", function()
         assert.equal('id[2]: "xyz" is not a UUID (32 hex digits, any case, with or without hyphens'
            .. ' 8-4-4-4-12)',
            err({ id = { U1, "xyz" } }))
         assert.equal('flow_runs.id.any_[1]: "0198c2a4-5b7e-7c3a-9d41-2f6a8e0b1c5" is not a UUID (32 hex'
            .. " digits, any case, with or without hyphens 8-4-4-4-12)",
            err({ flow_runs = { id = { any_ = { "0198c2a4-5b7e-7c3a-9d41-2f6a8e0b1c5" } } } }))
      end)

      it("refuses wrong types, naming what is accepted", function()
         assert.equal("name: expected a string (like_: substring), a list of strings (any_: exact) or"
            .. " {like = ..., any = ...}, got a number", err({ name = 5 }))
         assert.equal("tags[2]: expected a string, got a number", err({ tags = { "a", 2 } }))
         assert.equal("subflow: expected true or false, got a string", err({ subflow = "yes" }))
         assert.equal("flow_run: expected a table of flow_run keys, got a string", err({ flow_run = "x" }))
         assert.equal("task_runs.tags.is_null_: expected a boolean, got a string",
            err({ task_runs = { tags = { is_null_ = "yes" } } }))
         assert.equal("query: expected a query table, got a string", err("FAILED"))
         assert.equal('query: unexpected key 1; a query is a table of named keys (to OR queries, use'
            .. " prefect.filter.any_of{q1, q2, ...})", err({ { state = "FAILED" } }))
         assert.equal("state: null is not a filter; leave the key out for no filter",
            err({ state = require("cjson").null }))
      end)

      it("refuses empty lists that would not mean what they look like", function()
         assert.equal("state: an empty list matches no run; leave the key out for no filter (or write"
            .. " {any = {}} to match nothing on purpose)", err({ state = {} }))
         assert.equal("tags: an empty list filters nothing (all_ [] is ignored by Prefect); leave the key"
            .. " out, or write false for runs without tags", err({ tags = {} }))
         assert.equal("name: an empty list matches no run; leave the key out for no filter (or write"
            .. " {any = {}} to match nothing on purpose)", err({ name = {} }))
      end)

      it("refuses what Prefect cannot ask", function()
         assert.equal("tags: Prefect's task_runs.tags has no any_ (accepted: all, is_null)",
            err({ tags = { any = { "a", "b" } } }))
         assert.equal("state: Prefect's task_runs.state.type has no not_any_ (accepted: any)",
            err({ state = { not_any = { "FAILED" } } }))
         assert.equal("started: Prefect's task_runs.start_time has no like_ (accepted: after, before,"
            .. " is_null)",
            err({ started = { like = "x" } }))
      end)

      it("refuses what Prefect would silently drop or ignore", function()
         local both_ops = "flow_runs.state.type has both any_ and not_any_; Prefect 3.1.9 to 3.8 silently"
            .. " ignore such a filter (3.9 applies both), so give only one of them, or the server option 3.9"
            .. " or later"
         local q = { flow_run = { state = { any = { "FAILED" }, not_any = { "CRASHED" } } } }
         assert.equal(both_ops, err(q))
         assert.equal(both_ops, err(q, { server = "3.8.3" }))
         local both = filter.compile(q, { server = "3.9.1" })
         assert.same({ "FAILED" }, both.flow_runs.state.type.any_)
         assert.same({ "CRASHED" }, both.flow_runs.state.type.not_any_)
         assert.equal("task_runs.flow_run_id has is_null_ = true (no flow run) and any_; Prefect then ignores"
            .. " any_, so give only one of them", err({ background = true, flow_run_id = U1 }))
         assert.equal("task_runs.operator: null is rejected by Prefect (422); leave the key out for the"
            .. " default and_", err({ task_runs = { operator = require("cjson").null } }))
         assert.equal('task_runs.operator: "xor_" is not an operator (and_, or_)',
            err({ task_runs = { operator = "xor_" } }))
      end)

      it("refuses a query that can match nothing", function()
         assert.equal("task_runs.flow_run_id.is_null_ = true (background) asks for task runs without a flow"
            .. " run, but any flow_runs filter keeps only task runs that have one; nothing can match",
            err({ background = true, flow_run = { name = "x" } }))
      end)

      it("refuses unknown options", function()
         assert.equal('unknown key "sever" in options; did you mean "server"?', err({}, { sever = "3.0.0" }))
         assert.equal("options.level: expected a whole number >= 1, got 0", err({}, { level = 0 }))
         assert.equal('options.server: "three" is not a Prefect version (e.g. "2.19.9")',
            err({}, { server = "three" }))
      end)
   end)

   describe("the raised error", function()
      it("is an invalid prefect.errors object pointing at the caller's line", function()
         local line = debug.getinfo(1, "l").currentline + 1
         local ok, e = pcall(function() filter.compile({ stat = 1 }) end)
         assert.is_false(ok)
         if type(e) == "table" then
            assert.equal("invalid", e.kind)
            assert.equal('unknown key "stat" in query; did you mean "state"?', e.message)
            assert.matches("filter_spec.lua:" .. line .. "$", e.where)
            assert.matches('invalid: unknown key "stat"', tostring(e), 1, true)
         else
            assert.matches("filter_spec.lua:" .. line .. ': unknown key "stat" in query', e, 1, true)
         end
      end)

      it("points further up with opts.level", function()
         local function helper(q)
            local body = filter.compile(q, { level = 2 })
            return body
         end
         local line = debug.getinfo(1, "l").currentline + 1
         local ok, e = pcall(function() helper({ stat = 1 }) end)
         assert.is_false(ok)
         local where = type(e) == "table" and e.where or e
         assert.matches("filter_spec.lua:" .. line, where, 1, true)
      end)
   end)

   describe("version awareness", function()
      it("refuses keys the target server does not know", function()
         assert.equal("ended (task_runs.end_time) needs Prefect 3.6.22 or later; the target server is 2.19.9",
            err({ ended = { after = 0 } }, { server = "2.19.9" }))
         assert.equal("expected (task_runs.expected_start_time) needs Prefect 3.0.0 or later; the target"
            .. " server is 2.19.9", err({ expected = { after = 0 } }, { server = "2.19.9" }))
         assert.equal("flow_run.tags (flow_runs.tags.any_) needs Prefect 3.1.5 or later; the target server is"
            .. " 3.1.4", err({ flow_run = { tags = { any = { "a" } } } }, { server = "3.1.4" }))
         assert.equal("flow_run.state (flow_runs.state.type.not_any_) needs Prefect 3.0.0 or later; the"
            .. " target server is 2.20.25",
            err({ flow_run = { state = { not_any = { "FAILED" } } } }, { server = "2.20.25" }))
         assert.equal("flows.id.not_any_ needs Prefect 3.6.16 or later; the target server is 3.6.15",
            err({ flows = { id = { not_any_ = { U1 } } } }, { server = "3.6.15" }))
         assert.equal("deployment.is_schedule_active (deployments.is_schedule_active) was removed in Prefect"
            .. " 3.0.0; the target server is 3.8.3", err({ deployment = { is_schedule_active = true } },
               { server = "3.8.3" }))
         assert.equal("any_of[1].ended (task_runs.end_time) needs Prefect 3.6.22 or later; the target server"
            .. " is 3.6.21",
            err(filter.any_of({ { ended = false }, { state = "FAILED" } }), { server = "3.6.21" }))
      end)

      it("refuses background = false on 2.x, where Prefect reads it as no filter", function()
         assert.equal("task_runs.flow_run_id without any_ or is_null_ = true (as from background = false)"
            .. " means 'has a flow run' only from Prefect 3.0.0; the target server is 2.19.9, where it"
            .. " filters nothing (use flow_run = {} to keep only task runs with a flow run)",
            err({ background = false }, { server = "2.19.9" }))
         assert.same({ task_runs = { flow_run_id = { is_null_ = false } } },
            body_of({ background = false }, { server = "3.0.0" }))
         assert.same({ task_runs = { flow_run_id = { is_null_ = true } } },
            body_of({ background = true }, { server = "2.19.9" }))
      end)

      it("accepts them from the version that introduced them, and by default", function()
         assert.same({ task_runs = { end_time = { is_null_ = true } } }, body_of({ ended = false },
            { server = "3.6.22" }))
         assert.same({ task_runs = { end_time = { is_null_ = true } } }, body_of({ ended = false },
            { server = "3.8.4.dev6" }))
         assert.same({ task_runs = { end_time = { is_null_ = true } } }, body_of({ ended = false }))
         assert.same({ deployments = { is_schedule_active = { eq_ = true } } },
            body_of({ deployment = { is_schedule_active = true } }, { server = "2.19.9" }))
      end)

      it("has a since or until for every entry that needs one", function()
         local checked = 0
         for _, def in pairs(schema.objects) do
            for _, entry in pairs(def.fields) do
               for _, version in ipairs({ entry.since or false, entry.until_ or false }) do
                  if version then
                     assert.truthy(schema.parse_version(version))
                     checked = checked + 1
                  end
               end
            end
         end
         assert.equal(13, checked)
      end)
   end)

   describe("purity", function()
      it("does not change the query", function()
         local q = {
            state = { "failed" }, id = { "0198C2A45B7E7C3A9D412F6A8E0B1C55" },
            started = { after = { year = 2026, month = 1, day = 1, utc = true } },
            flow_run = { tags = { any = { "a" } } }, sort = "name_asc", limit = 5,
            task_runs = { name = { like_ = "x" } },
            any_of = { { flow = { name = "a" } }, { flow = { tags = "b" } } },
         }
         local before = deep_copy(q)
         filter.compile(q)
         assert.same(before, q)
      end)

      it("gives equal bodies for equal queries, sharing no tables with the query or other bodies", function()
         local q = { task_runs = { name = { any_ = { "a" } } }, flow_runs = { tags = { all_ = { "t" } } } }
         local a, pa = filter.compile(q)
         local b, pb = filter.compile(q)
         assert.same(a, b)
         assert.same(pa, pb)
         assert.are_not.equal(a.task_runs, b.task_runs)
         assert.are_not.equal(q.task_runs.name.any_, a.task_runs.name.any_)
         a.task_runs.name.any_[1] = "changed"
         assert.equal("a", q.task_runs.name.any_[1])
         assert.equal("a", b.task_runs.name.any_[1])
      end)

      it("encodes to the same bytes every time", function()
         local q = { state = { "FAILED", "CRASHED" }, tags = "etl", name = "x", flow_run = { name = "y" },
            sort = "NAME_ASC", any_of = { { flow = { name = "a" } }, { flow = { tags = "b" } } } }
         local first = filter.encode((filter.compile(q)))
         for _ = 1, 20 do assert.equal(first, filter.encode((filter.compile(q)))) end
         assert.equal('{"flow_runs":{"name":{"like_":"y"}},"flows":{"name":{"like_":"a"},"operator":"or_",'
            .. '"tags":{"all_":["b"]}},"sort":"NAME_ASC","task_runs":{"name":{"like_":"x"},"state":{"type":'
            .. '{"any_":["FAILED","CRASHED"]}},"tags":{"all_":["etl"]}}}', first)
      end)
   end)

   describe("encode", function()
      it("writes empty lists as [] and empty objects as {}", function()
         assert.equal('{"flow_runs":{},"task_runs":{"state":{"type":{"any_":[]}}}}',
            filter.encode((filter.compile({ state = { any = {} }, flow_run = {} }))))
      end)

      it("escapes strings and writes null", function()
         local null = require("cjson").null
         local q = { name = 'a"b\\c\n\1', task_runs = { flow_run_id = { is_null_ = null } } }
         assert.equal('{"task_runs":{"flow_run_id":{"is_null_":null},'
            .. '"name":{"like_":"a\\"b\\\\c\\n\\u0001"}}}',
            filter.encode((filter.compile(q))))
      end)

      it("round-trips through a JSON decoder", function()
         local cjson = require("cjson")
         local body = filter.compile({ state = "FAILED", tags = { "a", "b" }, started = { after = 1.5 } })
         assert.same(body, cjson.decode(filter.encode(body)))
      end)
   end)
end)

describe("prefect.filter.time", function()
   local function n(v) return (time.normalize(v)) end

   it("round-trips days and civil dates over four centuries", function()
      for z = time.days_from_civil(1600, 1, 1), time.days_from_civil(2400, 12, 31), 37 do
         local y, m, d = time.civil_from_days(z)
         assert.equal(z, time.days_from_civil(y, m, d))
      end
      assert.equal(0, time.days_from_civil(1970, 1, 1))
      assert.equal(-719162, time.days_from_civil(1, 1, 1))
      assert.equal(2932896, time.days_from_civil(9999, 12, 31))
   end)

   it("knows leap years", function()
      assert.equal("2000-02-29T00:00:00.000000Z", n("2000-02-29"))
      assert.equal("2024-02-29T00:00:00.000000Z", n(1709164800))
      assert.equal("2024-03-01T00:00:00.000000Z", n(1709164800 + 86400))
      assert.is_nil(n("1900-02-29"))
      assert.is_nil(n("2100-02-29"))
      assert.equal("1904-02-29T00:00:00.000000Z", n({ year = 1904, month = 2, day = 29, utc = true }))
      assert.equal("2024-12-31T00:00:00.000000Z", n(1735603200))
   end)

   it("reads ISO-8601 forms", function()
      assert.equal("2026-08-01T00:00:00.000000Z", n("2026-08-01"))
      assert.equal("2026-08-01T12:34:00.000000Z", n("2026-08-01T12:34"))
      assert.equal("2026-08-01T12:34:56.000000Z", n("2026-08-01T12:34:56"))
      assert.equal("2026-08-01T12:34:56.000000Z", n("2026-08-01 12:34:56Z"))
      assert.equal("2026-08-01T12:34:56.000000Z", n("2026-08-01t12:34:56z"))
      assert.equal("2026-08-01T10:34:56.500000Z", n("2026-08-01T12:34:56.5+02:00"))
      assert.equal("2026-08-01T18:04:56.000000Z", n("2026-08-01T12:34:56-05:30"))
      assert.equal("2026-08-01T18:04:56.000000Z", n("2026-08-01T12:34:56-0530"))
      assert.equal("2026-08-01T07:34:56.000000Z", n("2026-08-01T12:34:56+05"))
      assert.equal("2026-08-01T12:34:56.123456Z", n("2026-08-01T12:34:56,123456Z"))
      assert.equal("2026-11-29T11:53:42.967274Z", n("2026-11-29T11:53:42.967274+00:00"))
   end)

   it("crosses day, month and year boundaries with offsets", function()
      assert.equal("2025-12-31T23:00:00.000000Z", n("2026-01-01T00:00:00+01:00"))
      assert.equal("2026-03-01T01:00:00.000000Z", n("2026-02-28T23:00:00-02:00"))
      assert.equal("2024-02-29T22:00:00.000000Z", n("2024-03-01T00:00:00+02:00"))
   end)

   it("rounds fractions to the microsecond, half up, with carry", function()
      assert.equal("2026-08-01T12:00:00.123457Z", n("2026-08-01T12:00:00.1234565"))
      assert.equal("2026-08-01T12:00:00.123456Z", n("2026-08-01T12:00:00.1234564999"))
      assert.equal("2026-08-01T12:00:01.000000Z", n("2026-08-01T12:00:00.9999995"))
      assert.equal("2027-01-01T00:00:00.000000Z", n("2026-12-31T23:59:59.99999951Z"))
      assert.equal("2026-08-01T12:00:00.100000Z", n("2026-08-01T12:00:00.1"))
      assert.equal("2026-08-01T12:00:00.000001Z", n("2026-08-01T12:00:00.000001"))
   end)

   it("reads epoch numbers, negative ones and fractions, without drift", function()
      assert.equal("1970-01-01T00:00:00.000000Z", n(0))
      assert.equal("1970-01-01T00:00:01.000001Z", n(1.000001))
      assert.equal("1970-01-01T00:00:00.100000Z", n(0.1))
      assert.equal("1969-12-31T23:59:59.500000Z", n(-0.5))
      assert.equal("1969-12-31T23:59:59.999999Z", n(-0.000001))
      assert.equal("1969-12-31T00:00:00.000000Z", n(-86400))
      assert.equal("1900-01-01T00:00:00.000000Z", n(-2208988800))
      assert.equal("2023-11-14T22:13:20.123456Z", n(1700000000.123456))
      assert.equal("2023-11-14T22:13:20.999999Z", n(1700000000.999999))
      assert.equal("2023-11-14T22:13:21.000000Z", n(1700000000.9999996))
      assert.equal("2038-01-19T03:14:08.000000Z", n(2147483648))
      assert.equal("9999-12-31T23:59:59.000000Z", n(253402300799))
      assert.equal("0001-01-01T00:00:00.000000Z", n(-62135596800))
   end)

   it("keeps microseconds exact for every step of a second", function()
      for us = 0, 999999, 7919 do
         local want = string.format("2023-11-14T22:13:20.%06dZ", us)
         assert.equal(want, n(1700000000 + us / 1e6))
         assert.equal(want, n(string.format("2023-11-14T22:13:20.%06d", us)))
      end
   end)

   it("reads date tables with utc = true or an offset", function()
      assert.equal("2026-08-01T12:34:56.000000Z",
         n({ year = 2026, month = 8, day = 1, hour = 12, min = 34, sec = 56, utc = true, isdst = false,
            yday = 213, wday = 7 }))
      assert.equal("2026-08-01T00:00:00.000000Z", n({ year = 2026, month = 8, day = 1, utc = true }))
      assert.equal("2026-08-01T10:34:56.250000Z",
         n({ year = 2026, month = 8, day = 1, hour = 12, min = 34, sec = 56.25, offset = "+02:00" }))
      assert.equal("2027-01-01T00:00:00.000000Z",
         n({ year = 2026, month = 12, day = 31, hour = 23, min = 59, sec = 59.9999999, offset = "Z" }))
      local t = os.date("!*t", 1785585600)
      t.utc = true
      assert.equal("2026-08-01T12:00:00.000000Z", n(t))
   end)

   it("refuses what it cannot read without guessing", function()
      local function why(v) return select(2, time.normalize(v)) end
      assert.equal("second 60 is out of range (0..59)", why("2026-06-30T23:59:60Z"))
      assert.equal("the time in UTC is outside the years 0001..9999", why("0001-01-01T00:00:00+00:01"))
      assert.equal("the time in UTC is outside the years 0001..9999", why("9999-12-31T23:59:59-00:01"))
      assert.equal("the time is outside the years 0001..9999", why(253402300800))
      assert.equal("not a finite number", why(math.huge))
      assert.equal("expected THH:MM after the date", why("2026-08-01T1:00"))
      assert.equal("the zone \"UTC\" is not Z or ±HH:MM", why("2026-08-01T10:00:00UTC"))
      assert.equal("year 0 is out of range (0001..9999)", why("0000-01-01"))
      assert.equal("day 31 is out of range for 2026-04 (1..30)",
         why({ year = 2026, month = 4, day = 31, utc = true }))
      assert.equal("month must be a whole number", why({ year = 2026, month = 1.5, day = 1, utc = true }))
      assert.equal("utc must be true (for os.date(\"!*t\")) or absent",
         why({ year = 2026, month = 1, day = 1, utc = false }))
      assert.equal("give utc = true or offset, not both",
         why({ year = 2026, month = 1, day = 1, utc = true, offset = "Z" }))
      assert.equal("a date table needs year, month and day", why({ year = 2026, month = 1, utc = true }))
   end)
end)

describe("prefect.filter.suggest", function()
   it("measures edit distance with transpositions", function()
      assert.equal(0, suggest.distance("state", "state"))
      assert.equal(1, suggest.distance("stat", "state"))
      assert.equal(1, suggest.distance("stae", "sate"))
      assert.equal(3, suggest.distance("", "abc"))
   end)

   it("suggests only what is close, ties broken alphabetically", function()
      assert.equal("state", suggest.nearest("Stat", { "state", "started", "tags" }))
      assert.equal("flow_run", suggest.nearest("flowrun", { "flow_run", "flow" }))
      assert.is_nil(suggest.nearest("xyz", { "state", "tags" }))
      assert.is_nil(suggest.nearest("a", { "b", "c" }))
      assert.equal("abc", suggest.nearest("abd", { "abe", "abc" }))
   end)
end)

-- Against the test server (Prefect 3 semantics, the 2.19.9 fixture dataset), over real HTTP: each
-- friendly query selects exactly the runs its raw Prefect body does. The raw bodies are written
-- here as JSON text, independently of the compiler.
describe("prefect.filter against the test server", function()
   local test_server = require("test_server")
   local http = require("socket.http")
   local ltn12 = require("ltn12")
   local cjson = require("cjson")
   local srv

   setup(function()
      srv = test_server.start({ dataset = "fixture", prefect = 3 })
   end)
   teardown(function()
      if srv then srv:stop() end
   end)

   local function post(json)
      local out = {}
      local _, status = http.request({
         url = srv.url .. "/task_runs/filter", method = "POST",
         headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#json) },
         source = ltn12.source.string(json), sink = ltn12.sink.table(out),
      })
      local text = table.concat(out)
      assert.equal(200, status, text)
      return cjson.decode(text)
   end

   -- Every run the body selects, in server order, reading pages of 200.
   local function ids_for(json)
      local ids, offset = {}, 0
      local prefix = json == "{}" and "{" or (json:sub(1, -2) .. ",")
      while true do
         local page = post(prefix .. '"limit":200,"offset":' .. offset .. "}")
         for _, run in ipairs(page) do ids[#ids + 1] = run.id end
         if #page < 200 then return ids end
         offset = offset + 200
      end
   end

   local function set_of(list)
      local s = {}
      for _, x in ipairs(list) do s[x] = true end
      return s
   end

   local ALPHA = "e978192b-7a34-4f33-b4f8-946368f18de8"
   local BOUNDARY_RUN = "e1cd2269-fde8-4293-9d8e-493f7322ba41" -- started at 2026-11-29T11:53:42.967274Z
   local cases = {
      { "state", { state = { "failed", "CRASHED" } },
         '{"task_runs":{"state":{"type":{"any_":["FAILED","CRASHED"]}}}}' },
      { "state_name", { state_name = "Crashed" }, '{"task_runs":{"state":{"name":{"any_":["Crashed"]}}}}' },
      { "tags", { tags = { "etl", "daily" } }, '{"task_runs":{"tags":{"all_":["etl","daily"]}}}' },
      { "tags = false", { tags = false }, '{"task_runs":{"tags":{"is_null_":true}}}' },
      { "name (like)", { name = "extract" }, '{"task_runs":{"name":{"like_":"extract"}}}' },
      { "name (list)", { name = { "notify-5", "validate-7" } },
         '{"task_runs":{"name":{"any_":["notify-5","validate-7"]}}}' },
      { "id", { id = { "E1CD2269FDE842939D8E493F7322BA41" } },
         '{"task_runs":{"id":{"any_":["' .. BOUNDARY_RUN .. '"]}}}' },
      { "started.after (string)", { started = { after = "2026-11-29T12:53:42.967274+01:00" } },
         '{"task_runs":{"start_time":{"after_":"2026-11-29T11:53:42.967274+00:00"}}}' },
      { "started.after (epoch with microseconds)", { started = { after = 1795953222.967274 } },
         '{"task_runs":{"start_time":{"after_":"2026-11-29T11:53:42.967274+00:00"}}}' },
      { "started.before (date table)", { started = { before = { year = 2026, month = 11, day = 29, hour = 11,
         min = 53, sec = 42.967274, utc = true } } },
         '{"task_runs":{"start_time":{"before_":"2026-11-29T11:53:42.967274Z"}}}' },
      { "started = false", { started = false }, '{"task_runs":{"start_time":{"is_null_":true}}}' },
      { "expected", { expected = { before = "2026-11-29T11:53:40.755326Z" } },
         '{"task_runs":{"expected_start_time":{"before_":"2026-11-29T11:53:40.755326Z"}}}' },
      { "ended", { ended = { after = "2026-11-29T11:53:43.883118Z" } },
         '{"task_runs":{"end_time":{"after_":"2026-11-29T11:53:43.883118Z"}}}' },
      { "ended = false", { ended = false }, '{"task_runs":{"end_time":{"is_null_":true}}}' },
      { "flow_run_id", { flow_run_id = ALPHA:upper() },
         '{"task_runs":{"flow_run_id":{"any_":["' .. ALPHA .. '"]}}}' },
      { "background = true", { background = true }, '{"task_runs":{"flow_run_id":{"is_null_":true}}}' },
      { "background = false", { background = false }, '{"task_runs":{"flow_run_id":{"is_null_":false}}}' },
      { "flow_run.name", { flow_run = { name = { "fr-beta" } } },
         '{"flow_runs":{"name":{"any_":["fr-beta"]}}}' },
      { "flow_run.state", { flow_run = { state = "failed" } },
         '{"flow_runs":{"state":{"type":{"any_":["FAILED"]}}}}' },
      { "flow_run.state not_any", { flow_run = { state = { not_any = { "COMPLETED" } } } },
         '{"flow_runs":{"state":{"type":{"not_any_":["COMPLETED"]}}}}' },
      { "flow_run.tags any", { flow_run = { tags = { any = { "adhoc", "prod" } } } },
         '{"flow_runs":{"tags":{"any_":["adhoc","prod"]}}}' },
      { "flow_run.id", { flow_run = { id = ALPHA } }, '{"flow_runs":{"id":{"any_":["' .. ALPHA .. '"]}}}' },
      { "flow.name", { flow = { name = "report" } }, '{"flows":{"name":{"like_":"report"}}}' },
      { "flow.tags = false", { flow = { tags = false } }, '{"flows":{"tags":{"is_null_":true}}}' },
      { "any_of (state or tags)", filter.any_of({ { state = "FAILED" }, { tags = { "critical" } } }),
         '{"task_runs":{"operator":"or_","state":{"type":{"any_":["FAILED"]}},'
            .. '"tags":{"all_":["critical"]}}}' },
      { "any_of (state type or state name)",
         filter.any_of({ { state = "RUNNING" }, { state_name = "Paused" } }),
         '{"task_runs":{"state":{"operator":"or_","type":{"any_":["RUNNING"]},'
            .. '"name":{"any_":["Paused"]}}}}' },
      { "any_of of flow runs, ANDed with a task-run key", { state = "COMPLETED",
         any_of = { { flow_run = { name = "alpha" } }, { flow_run = { tags = { "prod" } } } } },
         '{"task_runs":{"state":{"type":{"any_":["COMPLETED"]}}},'
            .. '"flow_runs":{"operator":"or_","name":{"like_":"alpha"},"tags":{"all_":["prod"]}}}' },
      { "friendly mixed with raw", { state = "FAILED", task_runs = { name = { like_ = "load" } } },
         '{"task_runs":{"state":{"type":{"any_":["FAILED"]}},"name":{"like_":"load"}}}' },
   }

   for _, case in ipairs(cases) do
      it(case[1] .. " selects the same runs as the raw body", function()
         local want = ids_for(case[3])
         local got = ids_for(filter.encode((filter.compile(case[2]))))
         assert.is_true(#want > 0 and #want < 300, "the case must select some runs, not all: " .. #want)
         assert.same(set_of(want), set_of(got))
         assert.equal(#want, #got)
      end)
   end

   it("includes the run that started exactly at a microsecond boundary, from an epoch number", function()
      local function selected(q) return set_of(ids_for(filter.encode((filter.compile(q))))) end
      local after = selected({ started = { after = 1795953222.967274 } })
      local before = selected({ started = { before = 1795953222.967274 } })
      local later = selected({ started = { after = 1795953222.967275 } })
      assert.is_true(after[BOUNDARY_RUN])
      assert.is_true(before[BOUNDARY_RUN])
      assert.is_nil(later[BOUNDARY_RUN])
   end)

   it("sorts in the same order as the raw sort", function()
      local want = ids_for('{"sort":"NAME_DESC","task_runs":{"tags":{"all_":["db"]}}}')
      assert.is_true(#want > 1)
      assert.same(want, ids_for(filter.encode((filter.compile({ sort = "name_desc", tags = "db" })))))
   end)

   it("sends a body the server accepts for an empty list, matching nothing", function()
      assert.same({}, post(filter.encode((filter.compile({ state = { any = {} } })))))
   end)
end)
