--- The grammar of Prefect's task-run filter body, as data.
-- Every filter object the body of `POST /task_runs/filter` can hold, each of
-- its fields and operators, the value each takes, and the Prefect version that
-- introduced (`since`) or removed (`until_`) it. Versions are from the spec
-- (shared/prefect/TASK_RUNS_FILTER.md §3, §14); a field the spec marks "2.x"
-- has no `since`: it is taken to exist on every 2.x and 3.x server.
--
-- A field is either `{ object = "Name" }` (a nested filter object) or
-- `{ value = kind }` where kind is one of:
--   "uuid_list", "string_list", "state_type_list", "string", "boolean",
--   "datetime", "integer".
-- An object with `operator = true` accepts `"operator": "and_" | "or_"`.
-- `ignored = true` marks an object the server accepts and then ignores.

local schema = {}

schema.STATE_TYPES = {
   "SCHEDULED", "PENDING", "RUNNING", "COMPLETED", "FAILED",
   "CANCELLED", "CRASHED", "PAUSED", "CANCELLING",
}

schema.SORTS = {
   "ID_DESC", "EXPECTED_START_TIME_ASC", "EXPECTED_START_TIME_DESC", "NAME_ASC", "NAME_DESC",
   "NEXT_SCHEDULED_START_TIME_ASC", "END_TIME_DESC", "DURATION_DESC", "DURATION_ASC",
}

-- Sorts newer than 2.x: the duration sorts (estimated run time, ties by expected start time and
-- id) answer on a live 3.9.1 server and are absent from 3.8.3's source; 3.9.0 is taken as their
-- first release.
schema.SORT_SINCE = { DURATION_DESC = { since = "3.9.0" }, DURATION_ASC = { since = "3.9.0" } }

-- The four filter groups of the body, in the order Prefect documents them.
schema.GROUPS = { "task_runs", "flow_runs", "flows", "deployments" }
schema.GROUP_OBJECT = {
   task_runs = "TaskRunFilter", flow_runs = "FlowRunFilter",
   flows = "FlowFilter", deployments = "DeploymentFilter",
}

local function v(kind, since, until_)
   return { value = kind, since = since, until_ = until_ }
end

local function o(name, since, until_)
   return { object = name, since = since, until_ = until_ }
end

local objects = {}
schema.objects = objects

-- task_runs (§3.2)
objects.TaskRunFilter = { operator = true, fields = {
   id = o("TaskRunFilterId"),
   name = o("TaskRunFilterName"),
   tags = o("TaskRunFilterTags"),
   state = o("TaskRunFilterState"),
   start_time = o("TaskRunFilterStartTime"),
   end_time = o("TaskRunFilterEndTime", "3.6.22"),
   expected_start_time = o("TaskRunFilterExpectedStartTime", "3.0.0"),
   subflow_runs = o("TaskRunFilterSubFlowRuns"),
   flow_run_id = o("TaskRunFilterFlowRunId"),
} }
objects.TaskRunFilterId = { fields = { any_ = v("uuid_list") } }
objects.TaskRunFilterName = { fields = { any_ = v("string_list"), like_ = v("string") } }
objects.TaskRunFilterTags = { operator = true, fields = { all_ = v("string_list"), is_null_ = v("boolean") } }
objects.TaskRunFilterState = { operator = true, fields = {
   type = o("TaskRunFilterStateType"), name = o("TaskRunFilterStateName"),
} }
objects.TaskRunFilterStateType = { fields = { any_ = v("state_type_list") } }
objects.TaskRunFilterStateName = { fields = { any_ = v("string_list") } }
objects.TaskRunFilterStartTime = { fields = {
   before_ = v("datetime"), after_ = v("datetime"), is_null_ = v("boolean"),
} }
objects.TaskRunFilterEndTime = { fields = {
   before_ = v("datetime"), after_ = v("datetime"), is_null_ = v("boolean"),
} }
objects.TaskRunFilterExpectedStartTime = { fields = { before_ = v("datetime"), after_ = v("datetime") } }
objects.TaskRunFilterSubFlowRuns = { fields = { exists_ = v("boolean") } }
-- `{}` is a criterion here on 3.x: is_null_ defaults to false ("has a flow run").
objects.TaskRunFilterFlowRunId = { operator = true, empty_is_criterion = true, fields = {
   any_ = v("uuid_list"), is_null_ = v("boolean"),
} }

-- flow_runs (§3.4)
objects.FlowRunFilter = { operator = true, fields = {
   id = o("FlowRunFilterId"),
   name = o("FlowRunFilterName"),
   tags = o("FlowRunFilterTags"),
   deployment_id = o("FlowRunFilterDeploymentId"),
   work_queue_name = o("FlowRunFilterWorkQueueName"),
   state = o("FlowRunFilterState"),
   flow_version = o("FlowRunFilterFlowVersion"),
   start_time = o("FlowRunFilterStartTime"),
   end_time = o("FlowRunFilterEndTime", "3.0.4"),
   expected_start_time = o("FlowRunFilterExpectedStartTime"),
   next_scheduled_start_time = o("FlowRunFilterNextScheduledStartTime"),
   parent_flow_run_id = o("FlowRunFilterParentFlowRunId"),
   parent_task_run_id = o("FlowRunFilterParentTaskRunId"),
   idempotency_key = o("FlowRunFilterIdempotencyKey"),
   created_by = o("FlowRunFilterCreatedBy", "3.6.13"),
} }
objects.FlowRunFilterId = { fields = { any_ = v("uuid_list"), not_any_ = v("uuid_list") } }
objects.FlowRunFilterName = { fields = { any_ = v("string_list"), like_ = v("string") } }
objects.FlowRunFilterTags = { operator = true, fields = {
   all_ = v("string_list"), any_ = v("string_list", "3.1.5"), is_null_ = v("boolean"),
} }
objects.FlowRunFilterDeploymentId = { operator = true, fields = {
   any_ = v("uuid_list"), is_null_ = v("boolean"),
} }
objects.FlowRunFilterWorkQueueName = { operator = true, fields = {
   any_ = v("string_list"), is_null_ = v("boolean"),
} }
-- Prefect (3.1.9+) silently drops a state.type/state.name holding both any_ and not_any_.
objects.FlowRunFilterState = { operator = true, fields = {
   type = o("FlowRunFilterStateType"), name = o("FlowRunFilterStateName"),
} }
objects.FlowRunFilterStateType = { exclusive = { "any_", "not_any_" }, fields = {
   any_ = v("state_type_list"), not_any_ = v("state_type_list", "3.0.0"),
} }
objects.FlowRunFilterStateName = { exclusive = { "any_", "not_any_" }, fields = {
   any_ = v("string_list"), not_any_ = v("string_list", "3.0.0"),
} }
objects.FlowRunFilterFlowVersion = { fields = { any_ = v("string_list") } }
objects.FlowRunFilterStartTime = { fields = {
   before_ = v("datetime"), after_ = v("datetime"), is_null_ = v("boolean"),
} }
objects.FlowRunFilterEndTime = { fields = {
   before_ = v("datetime"), after_ = v("datetime"), is_null_ = v("boolean"),
} }
objects.FlowRunFilterExpectedStartTime = { fields = { before_ = v("datetime"), after_ = v("datetime") } }
objects.FlowRunFilterNextScheduledStartTime = { fields = { before_ = v("datetime"), after_ = v("datetime") } }
objects.FlowRunFilterParentFlowRunId = { operator = true, fields = { any_ = v("uuid_list") } }
objects.FlowRunFilterParentTaskRunId = { operator = true, fields = {
   any_ = v("uuid_list"), is_null_ = v("boolean"),
} }
objects.FlowRunFilterIdempotencyKey = { fields = { any_ = v("string_list"), not_any_ = v("string_list") } }
objects.FlowRunFilterCreatedBy = { operator = true, fields = {
   id_ = v("uuid_list"), type_ = v("string_list"), is_null_ = v("boolean"),
} }

-- flows (§3.3)
objects.FlowFilter = { operator = true, fields = {
   id = o("FlowFilterId"),
   deployment = o("FlowFilterDeployment"),
   name = o("FlowFilterName"),
   tags = o("FlowFilterTags"),
} }
objects.FlowFilterId = { fields = { any_ = v("uuid_list"), not_any_ = v("uuid_list", "3.6.16") } }
objects.FlowFilterDeployment = { operator = true, fields = { is_null_ = v("boolean") } }
objects.FlowFilterName = { fields = { any_ = v("string_list"), like_ = v("string") } }
objects.FlowFilterTags = { operator = true, fields = { all_ = v("string_list"), is_null_ = v("boolean") } }

-- deployments (§3.5)
objects.DeploymentFilter = { operator = true, fields = {
   id = o("DeploymentFilterId"),
   name = o("DeploymentFilterName"),
   flow_or_deployment_name = o("DeploymentOrFlowNameFilter", "3.0.0"),
   paused = o("DeploymentFilterPaused"),
   tags = o("DeploymentFilterTags"),
   work_queue_name = o("DeploymentFilterWorkQueueName"),
   concurrency_limit = o("DeploymentFilterConcurrencyLimit", "3.0.0"),
   is_schedule_active = o("DeploymentFilterIsScheduleActive", nil, "3.0.0"),
} }
objects.DeploymentFilterId = { fields = { any_ = v("uuid_list"), not_any_ = v("uuid_list", "3.4.7") } }
objects.DeploymentFilterName = { fields = { any_ = v("string_list"), like_ = v("string") } }
objects.DeploymentOrFlowNameFilter = { fields = { like_ = v("string") } }
objects.DeploymentFilterPaused = { fields = { eq_ = v("boolean") } }
objects.DeploymentFilterTags = { operator = true, fields = {
   all_ = v("string_list"), any_ = v("string_list", "3.1.11"), is_null_ = v("boolean"),
} }
objects.DeploymentFilterWorkQueueName = { fields = { any_ = v("string_list") } }
-- Deprecated: accepted and ignored by the server, so never a criterion.
objects.DeploymentFilterConcurrencyLimit = { ignored = true, fields = {
   ge_ = v("integer"), le_ = v("integer"), is_null_ = v("boolean"),
} }
objects.DeploymentFilterIsScheduleActive = { fields = { eq_ = v("boolean") } }

--- Sorted names of an object's fields (with "operator" first when it has one).
function schema.field_names(object_name)
   local def = objects[object_name]
   local names = {}
   for name in pairs(def.fields) do names[#names + 1] = name end
   table.sort(names)
   if def.operator then table.insert(names, 1, "operator") end
   return names
end

--- A version string as a list of numbers: "3.6.22" -> {3, 6, 22}; "3.8.4.dev6" -> {3, 8, 4}.
-- Returns nil when it does not start with at least "major.minor".
function schema.parse_version(s)
   if type(s) ~= "string" then return nil end
   local parts = {}
   local rest = s:match("^%s*[vV]?(.-)%s*$")
   for piece in rest:gmatch("[^.]+") do
      local n = piece:match("^(%d+)")
      if not n then break end
      parts[#parts + 1] = tonumber(n)
      if n ~= piece then break end
   end
   if #parts < 2 then return nil end
   return parts
end

--- -1, 0 or 1 as version a is older than, the same as, or newer than b (both parsed).
function schema.compare_versions(a, b)
   for i = 1, math.max(#a, #b) do
      local x, y = a[i] or 0, b[i] or 0
      if x ~= y then return x < y and -1 or 1 end
   end
   return 0
end

--- Whether an entry (field or operator) exists on a server of the given version.
-- Returns true, or false and a reason ("needs Prefect 3.6.22 or later" / "was removed in Prefect 3.0.0").
function schema.available(entry, server)
   if not server then return true end
   if entry.since and schema.compare_versions(server, schema.parse_version(entry.since)) < 0 then
      return false, "needs Prefect " .. entry.since .. " or later"
   end
   if entry.until_ and schema.compare_versions(server, schema.parse_version(entry.until_)) >= 0 then
      return false, "was removed in Prefect " .. entry.until_
   end
   return true
end

return schema
