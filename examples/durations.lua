#!/usr/bin/env lua5.4
-- Run-time percentiles (p50, p90, p99, max) per task key, as an aligned
-- table. Only the fields it needs are decoded (the rest is skipped in C).

local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
package.path = here .. "/lib/?.lua;" .. package.path
local cli = require("cli")
cli.setup(here)

local NAME = "durations.lua"
local USAGE = [[
usage: durations.lua [--state S,S] [--hours N] [--flow-run ID|NAME] [--limit N]
                     [--retries N] [--help]

Prints the run time (Prefect's total_run_time) percentiles p50, p90, p99 and
the maximum per task key, over the finished task runs (those with an end
time) that match. Percentiles are nearest-rank: p90 is a run time that 90 %
of the runs do not exceed.

  --state S,S     state types (e.g. COMPLETED,FAILED); default: all
  --hours N       only runs that started in the last N hours
  --flow-run ID   only the task runs of this flow run (its id or its name)
  --limit N       read at most N runs
  --retries N     retries of a failed request (default 2)

]] .. cli.ENVIRONMENT

local opts = cli.parse(arg, {
   name = NAME, usage = USAGE, defaults = { retries = 2 },
   options = { state = "list", hours = "number", ["flow-run"] = "string", limit = "count",
      retries = "count" },
})

-- Nearest-rank percentile of a sorted list.
local function percentile(sorted, p)
   local rank = math.ceil(p / 100 * #sorted)
   if rank < 1 then rank = 1 end
   return sorted[rank]
end

cli.run(NAME, function()
   local client = cli.client(NAME, { retries = opts.retries })
   local query = cli.flow_run({ state = opts.state, limit = opts.limit }, opts.flow_run)
   if opts.hours then query.started = { after = os.time() - opts.hours * 3600 } end

   local by_key, keys, read, finished = {}, {}, 0, 0
   for run in client:task_runs(query, { fields = { "task_key", "total_run_time", "end_time" } }) do
      read = read + 1
      if run.end_time and type(run.total_run_time) == "number" then
         local key = run.task_key or "(no task key)"
         local list = by_key[key]
         if not list then
            list = {}
            by_key[key] = list
            keys[#keys + 1] = key
         end
         list[#list + 1] = run.total_run_time
         finished = finished + 1
      end
   end

   table.sort(keys)
   local rows = {}
   for _, key in ipairs(keys) do
      local list = by_key[key]
      table.sort(list)
      rows[#rows + 1] = {
         key, tostring(#list),
         cli.duration(percentile(list, 50)), cli.duration(percentile(list, 90)),
         cli.duration(percentile(list, 99)), cli.duration(list[#list]),
      }
   end
   print(string.format("%d task runs read, %d finished, %d task keys", read, finished, #keys))
   if #rows > 0 then
      print()
      cli.print_table({ "TASK KEY", "RUNS", "P50", "P90", "P99", "MAX" }, rows, "lrrrrr")
   end
end)
