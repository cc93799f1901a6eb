#!/usr/bin/env lua5.4
-- Prints task runs as they fail: one line for each run that reaches one of
-- the given states, oldest first, polling the server every few seconds
-- (client:follow, docs/follow.md). Reads PREFECT_API_URL / PREFECT_API_KEY /
-- PREFECT_API_AUTH_STRING like Prefect's own tools.

local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
package.path = here .. "/lib/?.lua;" .. package.path
local cli = require("cli")
cli.setup(here)

local NAME = "follow.lua"
local USAGE = [[
usage: follow.lua [--state LIST] [--interval N] [--since N] [--polls N] [--retries N] [--help]

Prints each task run that ends FAILED or CRASHED (or in the states given), once,
as it happens: its end time (UTC), state, name and flow run.

  --state LIST   final states to print, comma-separated (default FAILED,CRASHED)
  --interval N   seconds between polls (default 5)
  --since N      also print the runs that ended in the last N minutes
                 (default: only the runs that end from now on)
  --polls N      stop after N polls, the first included (default: until interrupted)
  --retries N    retries of a failed request (default 5)

]] .. cli.ENVIRONMENT

local opts = cli.parse(arg, {
    name = NAME, usage = USAGE, defaults = { state = { "FAILED", "CRASHED" }, interval = 5, retries = 5 },
    options = { state = "list", interval = "number", since = "number", polls = "count", retries = "count" },
})
if opts.interval <= 0 then cli.fail(NAME, "--interval needs a number above 0 (see --help)") end
if opts.polls == 0 then cli.fail(NAME, "--polls needs a whole number above 0 (see --help)") end

-- "auto": the server's version decides how a poll finds the new runs (Prefect 2.x has no
-- end_time filter for task runs).
local client = cli.client(NAME, { retries = opts.retries, server_version = "auto" })
local states = {}
for i, s in ipairs(opts.state) do states[i] = s:upper() end
local follow_opts = { interval = opts.interval, max_polls = opts.polls }
if opts.since then follow_opts.since = os.time() - opts.since * 60 end

cli.run(NAME, function()
    for run in client:follow({ state = states }, follow_opts) do
        local ended = (run.end_time or "-"):gsub("T", " "):sub(1, 19)
        print(string.format("%s  %-9s  %s  (flow run %s)", ended, run.state_name or run.state_type,
            run.name, run.flow_run_id or "none"))
        io.stdout:flush()
    end
end)
