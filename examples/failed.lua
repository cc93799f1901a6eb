#!/usr/bin/env lua5.4
-- The failed and crashed task runs of the last N hours, grouped by flow run
-- (named, with its flow's name: the read's include option fetches them, one
-- request of each per page), printed as an aligned table. Reads PREFECT_API_URL / PREFECT_API_KEY /
-- PREFECT_API_AUTH_STRING like Prefect's own tools.

local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
package.path = here .. "/lib/?.lua;" .. package.path
local cli = require("cli")
cli.setup(here)

local NAME = "failed.lua"
local USAGE = [[
usage: failed.lua [--hours N] [--limit N] [--retries N] [--help]

Lists the FAILED and CRASHED task runs that started in the last N hours
(default 24), grouped by flow run, with the names of the flow runs and flows.

  --hours N     how far back to look (default 24)
  --limit N     at most N runs (default 1000); says so when more match
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
-- ID_DESC: the one sort that pages without skipping or repeating a run
-- (docs/client.md, "Paging guarantees"); the table is ordered here instead.
local query = {
    state = { "FAILED", "CRASHED" },
    started = { after = os.time() - opts.hours * 3600 },
    sort = "ID_DESC",
    limit = opts.limit,
}

-- Each run comes with run.flow_run and run.flow, decoded with only their names.
local INCLUDE = { flow_run = { "name" }, flow = { "name" } }
local NO_FLOW_RUN = "(no flow run)"
local groups, order, total, matching = {}, {}, 0, nil
-- flow-run id -> { flow = name, flow_run = name } (the id when the server no longer has the flow run)
local names = {}
local ok, err = pcall(function()
    for run in client:task_runs(query, { include = INCLUDE }) do
        local key = run.flow_run_id or NO_FLOW_RUN
        if not groups[key] then
            groups[key] = {}
            order[#order + 1] = key
            names[key] = {
                flow_run = run.flow_run and run.flow_run.name or key,
                flow = run.flow and run.flow.name or "-",
            }
        end
        table.insert(groups[key], run)
        total = total + 1
    end
    if total == opts.limit then
        matching = assert(client:count(query))
    end
end)
if not ok then
    cli.fail(NAME, err)
end

-- Flow runs by flow name, then flow-run name (then id: names can repeat), the
-- runs without one last; in a group, by start time.
table.sort(order, function(a, b)
    if (a == NO_FLOW_RUN) ~= (b == NO_FLOW_RUN) then
        return b == NO_FLOW_RUN
    end
    local na, nb = names[a], names[b]
    if na.flow ~= nb.flow then
        return na.flow < nb.flow
    end
    if na.flow_run ~= nb.flow_run then
        return na.flow_run < nb.flow_run
    end
    return a < b
end)
local flow_runs = #order
if groups[NO_FLOW_RUN] then
    flow_runs = flow_runs - 1
end
local rows, last_flow = {}, nil
for _, key in ipairs(order) do
    table.sort(groups[key], function(a, b)
        if (a.start_time or "") ~= (b.start_time or "") then
            return (a.start_time or "") < (b.start_time or "")
        end
        return a.id < b.id
    end)
    -- a flow's name heads its first flow run only
    local flow = names[key].flow ~= last_flow and names[key].flow or ""
    last_flow = names[key].flow
    for i, run in ipairs(groups[key]) do
        rows[#rows + 1] = {
            i == 1 and flow or "",
            i == 1 and names[key].flow_run or "",
            run.name,
            run.state_name or run.state_type or "?",
            run.start_time and run.start_time:sub(1, 19) or "-",
            format_duration(run.total_run_time),
        }
    end
end

local without = groups[NO_FLOW_RUN] and string.format(", %d without one", #groups[NO_FLOW_RUN]) or ""
print(string.format("%d failed or crashed task runs in %d flow runs%s (last %g hours)", total,
    flow_runs, without, opts.hours))
if matching and matching > total then
    print(string.format("--limit %d cut the list short: %d runs match; raise --limit to see them all",
        opts.limit, matching))
end
if total > 0 then
    print()
    cli.print_table({ "FLOW", "FLOW RUN", "TASK RUN", "STATE", "STARTED (UTC)", "RUN TIME" }, rows)
end
