#!/usr/bin/env lua5.4
-- The failed and crashed task runs of the last N hours, grouped by flow run,
-- printed as an aligned table. Reads PREFECT_API_URL / PREFECT_API_KEY /
-- PREFECT_API_AUTH_STRING like Prefect's own tools.

local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
package.path = here .. "/lib/?.lua;" .. package.path
local cli = require("cli")
cli.setup(here)

local NAME = "failed.lua"
local USAGE = [[
usage: failed.lua [--hours N] [--limit N] [--retries N] [--help]

Lists the FAILED and CRASHED task runs that started in the last N hours
(default 24), grouped by flow run.

  --hours N     how far back to look (default 24)
  --limit N     at most N runs (default 1000)
  --retries N   retries of a failed request (default 2)

]] .. cli.ENVIRONMENT

local function format_duration(seconds)
    if not seconds then
        return "-"
    elseif seconds < 60 then
        return string.format("%.1fs", seconds)
    end
    return string.format("%dm%02ds", math.floor(seconds / 60), math.floor(seconds % 60))
end

local opts = cli.parse(arg, {
    name = NAME, usage = USAGE, defaults = { hours = 24, limit = 1000, retries = 2 },
    options = { hours = "number", limit = "count", retries = "count" },
})
if opts.hours <= 0 or opts.limit <= 0 then
    cli.fail(NAME, "--hours and --limit need a positive number (see --help)")
end

local client = cli.client(NAME, { retries = opts.retries })
local query = {
    state = { "FAILED", "CRASHED" },
    started = { after = os.time() - opts.hours * 3600 },
    sort = "NAME_ASC",
    limit = opts.limit,
}

local groups, order, total = {}, {}, 0
local ok, err = pcall(function()
    for run in client:task_runs(query) do
        local key = run.flow_run_id or "(no flow run)"
        if not groups[key] then
            groups[key] = {}
            order[#order + 1] = key
        end
        table.insert(groups[key], run)
        total = total + 1
    end
end)
if not ok then
    cli.fail(NAME, err)
end

table.sort(order)
local rows = {}
for _, key in ipairs(order) do
    for i, run in ipairs(groups[key]) do
        rows[#rows + 1] = {
            i == 1 and key or "",
            run.name,
            run.state_name or run.state_type or "?",
            run.start_time and run.start_time:sub(1, 19) or "-",
            format_duration(run.total_run_time),
        }
    end
end

print(string.format("%d failed or crashed task runs in %d flow runs (last %g hours)", total,
    #order, opts.hours))
if total > 0 then
    print()
    cli.print_table({ "FLOW RUN", "TASK RUN", "STATE", "STARTED (UTC)", "RUN TIME" }, rows)
end
