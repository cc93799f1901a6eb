#!/usr/bin/env lua5.4
-- Streams every matching task run to standard output as JSON Lines (one run
-- per line, Prefect's own fields, nulls kept), with progress on standard
-- error: the count first, then done/total, rate and ETA.

local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
package.path = here .. "/lib/?.lua;" .. package.path
local cli = require("cli")
cli.setup(here)

local NAME = "export.lua"
local USAGE = [[
usage: export.lua [--state S,S] [--hours N] [--flow-run ID|NAME] [--limit N]
                  [--retries N] [--no-progress] [--help]

Writes every matching task run to standard output as JSON Lines, newest
first (ID_DESC, the sort that pages without gaps). Progress goes to standard
error: a bar on a terminal, plain lines otherwise.

  --state S,S     state types (FAILED, COMPLETED, ...); default: all
  --hours N       only runs that started in the last N hours
  --flow-run ID   only the task runs of this flow run (its id or its name)
  --limit N       at most N runs
  --retries N     retries of a failed request (default 2)
  --no-progress   no progress on standard error

]] .. cli.ENVIRONMENT

local opts = cli.parse(arg, {
   name = NAME, usage = USAGE, defaults = { retries = 2 },
   options = { state = "list", hours = "number", ["flow-run"] = "string", limit = "count",
      retries = "count", ["no-progress"] = "flag" },
})

-- Progress on standard error: a redrawn bar on a terminal; on a pipe or a
-- file, a plain line at most once a second (and at the end).
local function progress_reporter(total, clock, tty)
   local started, last = clock(), -math.huge
   local function rate_and_eta(done, now)
      local elapsed = now - started
      local rate = elapsed > 0 and done / elapsed or 0
      local eta -- unknown until something has arrived
      if done >= total then
         eta = "0s"
      elseif rate > 0 then
         eta = cli.duration(math.ceil((total - done) / rate))
      else
         eta = "-"
      end
      return rate, eta
   end
   return function(done, final)
      local now = clock()
      if not final and now - last < (tty and 0.1 or 1) then return end
      last = now
      local rate, eta = rate_and_eta(done, now)
      local shown = total > 0 and math.min(done / total, 1) or 1
      if tty then
         local width = 30
         local filled = math.floor(shown * width + 0.5)
         io.stderr:write(string.format("\r[%s%s] %d/%d %3d%%  %.0f runs/s  ETA %s ",
            string.rep("#", filled), string.rep(".", width - filled), done, total,
            math.floor(shown * 100), rate, eta))
         if final then io.stderr:write("\n") end
      else
         io.stderr:write(string.format("export: %d/%d runs (%d%%), %.0f runs/s, ETA %s\n", done, total,
            math.floor(shown * 100), rate, eta))
      end
   end
end

cli.run(NAME, function()
   local client, prefect = cli.client(NAME, { retries = opts.retries })
   local query = cli.flow_run({ state = opts.state, limit = opts.limit, sort = "ID_DESC" }, opts.flow_run)
   if opts.hours then query.started = { after = os.time() - opts.hours * 3600 } end

   local total, err = client:count(query)
   if not total then error(err, 0) end
   if opts.limit and opts.limit < total then total = opts.limit end
   local report
   if not opts.no_progress then
      report = progress_reporter(total, client.clock, cli.stderr_is_tty())
      report(0, false)
   end

   local encode = prefect.filter.encode
   local done = 0
   local out = io.stdout
   out:setvbuf("full")
   for run in client:task_runs(query, { null = prefect.null, array_mt = prefect.filter.ARRAY_MT }) do
      out:write(encode(run), "\n")
      done = done + 1
      if report then report(done, false) end
   end
   out:flush()
   if report then report(done, true) end
   if done ~= total then
      io.stderr:write(string.format("export: the count said %d runs, %d were read "
         .. "(runs changed during the export)\n", total, done))
   end
end)
