#!/usr/bin/env lua5.4
-- An SVG timeline (Gantt chart) of one flow run's task runs: one bar per
-- task run from its start to its end, coloured by state, with a legend and a
-- time axis, titled with the flow run's and its flow's names (include). Times
-- are decoded straight to epoch seconds (timestamps = "epoch").

local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
package.path = here .. "/lib/?.lua;" .. package.path
local cli = require("cli")
cli.setup(here)

local NAME = "timeline.lua"
local USAGE = [[
usage: timeline.lua --flow-run ID|NAME [--output FILE] [--width PX] [--retries N] [--help]

Draws the task runs of one flow run as an SVG timeline: a bar per task run
from its start to its end (a run not started yet is a thin mark at its
expected start; one still running reaches the right edge), coloured by state,
with a legend and a time axis. Writes to standard output unless --output.

  --flow-run ID   the flow run: its id or its name (required)
  --output FILE   write the SVG here
  --width PX      width of the drawing (default 1000, at least 400)
  --retries N     retries of a failed request (default 2)

]] .. cli.ENVIRONMENT

local opts = cli.parse(arg, {
   name = NAME, usage = USAGE, defaults = { retries = 2, width = 1000 },
   options = { ["flow-run"] = "string", output = "string", width = "count", retries = "count" },
})
if not opts.flow_run then cli.fail(NAME, "--flow-run ID or NAME is required (see --help)") end
if opts.width < 400 then cli.fail(NAME, "--width must be at least 400 (see --help)") end

local STATE_COLOURS = {
   { "COMPLETED", "#2e9e5b" }, { "FAILED", "#d64545" }, { "CRASHED", "#e07b39" },
   { "RUNNING", "#3b82f6" }, { "PENDING", "#9ca3af" }, { "SCHEDULED", "#a78bfa" },
   { "PAUSED", "#eab308" }, { "CANCELLING", "#a8a29e" }, { "CANCELLED", "#6b7280" },
}
local COLOUR = {}
for _, sc in ipairs(STATE_COLOURS) do COLOUR[sc[1]] = sc[2] end
local OTHER_COLOUR = "#000000"

local function xml(s)
   return (tostring(s):gsub("[&<>\"']", {
      ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;",
   }))
end

local function log10(x)
   return math.log(x) / math.log(10) -- math.log10 is gone from 5.4, math.log(x, 10) is not in 5.1
end

-- Tick steps past a minute are whole minutes or hours (a 16m40s step reads badly).
local TIME_STEPS = { 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400 }

-- A step giving at most about `n` ticks over `span` seconds: 1, 2 or 5 times a power of ten below a
-- minute, a round number of minutes or hours above.
local function tick_step(span, n)
   local raw = span / n
   if raw > 30 then
      for _, step in ipairs(TIME_STEPS) do
         if step >= raw then return step end
      end
      return 86400 * math.ceil(raw / 86400)
   end
   local power = 10 ^ math.floor(log10(raw) + 1e-9)
   for _, m in ipairs({ 1, 2, 5, 10 }) do
      if m * power >= raw then return m * power end
   end
   return 10 * power
end

local function tick_label(seconds, step)
   if step >= 60 and seconds >= 60 then return "+" .. cli.duration(seconds) end
   local decimals = step >= 1 and 0 or math.min(6, math.ceil(-log10(step) - 1e-9))
   return string.format("+%." .. decimals .. "fs", seconds)
end

local function read_runs(client)
   local runs = {}
   local fields = { "name", "flow_run_id", "state_type", "state_name", "start_time", "end_time",
      "expected_start_time" }
   local flow_runs, ids = {}, {}
   -- the names for the title, fetched once for the read (one /flow_runs/filter, one /flows/filter)
   local include = { flow_run = { "name" }, flow = { "name" } }
   local title = { flow_run = opts.flow_run }
   for run in client:task_runs(cli.flow_run({}, opts.flow_run),
      { fields = fields, timestamps = "epoch", include = include }) do
      runs[#runs + 1] = run
      if not flow_runs[run.flow_run_id] then
         flow_runs[run.flow_run_id] = true
         ids[#ids + 1] = run.flow_run_id
         if run.flow_run then title.flow_run = run.flow_run.name end
         if run.flow then title.flow = run.flow.name end
      end
   end
   -- Prefect does not keep flow-run names unique: one chart is one flow run.
   if #ids > 1 then
      table.sort(ids)
      error(("%d flow runs are named %s (%s): give one of their ids"):format(#ids, opts.flow_run,
         table.concat(ids, ", ")), 0)
   end
   return runs, title
end

local function draw(runs, title, width)
   local label_w, row_h, bar_h, top = 220, 20, 14, 70
   local chart_w = width - label_w - 20
   -- The span: the earliest start to the latest end of the runs that started. Runs not
   -- started yet sit at their expected start, clamped into the span (a scheduled run can be
   -- expected long before or after the others ran), unless no run started at all.
   local t0, t1 = math.huge, -math.huge
   local function widen(t)
      if t then t0, t1 = math.min(t0, t), math.max(t1, t) end
   end
   for _, r in ipairs(runs) do
      widen(r.start_time)
      widen(r.end_time)
   end
   if t0 == math.huge then
      for _, r in ipairs(runs) do widen(r.expected_start_time) end
   end
   if t0 == math.huge then t0, t1 = 0, 1 end
   for _, r in ipairs(runs) do
      r.from = r.start_time or r.expected_start_time
      if r.from then r.from = math.max(t0, math.min(t1, r.from)) end
   end
   if t1 - t0 <= 0 then t1 = t0 + 1 end
   local function x(t) return label_w + (t - t0) / (t1 - t0) * chart_w end

   table.sort(runs, function(a, b)
      local fa, fb = a.from or math.huge, b.from or math.huge
      if fa ~= fb then return fa < fb end
      return (a.name or "") < (b.name or "")
   end)

   local height = top + #runs * row_h + 40
   local out = {}
   local function add(...) out[#out + 1] = table.concat({ ... }) end
   add('<?xml version="1.0" encoding="UTF-8"?>')
   add(string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
      .. 'viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">', width, height, width, height))
   add('<rect width="100%" height="100%" fill="#ffffff"/>')
   add(string.format('<text x="10" y="18" font-size="14" font-weight="bold">Task runs of flow run %s%s'
      .. "</text>", xml(title.flow_run), title.flow and (" (flow " .. xml(title.flow) .. ")") or ""))
   add(string.format('<text x="10" y="34" fill="#555555">%d task runs from %s UTC, over %s</text>',
      #runs, os.date("!%Y-%m-%d %H:%M:%S", math.floor(t0)), xml(cli.duration(t1 - t0))))

   -- legend: the states present, in a fixed order
   local present = {}
   for _, r in ipairs(runs) do present[r.state_type or "?"] = true end
   local lx = 10
   add('<g class="legend">')
   for _, sc in ipairs(STATE_COLOURS) do
      if present[sc[1]] then
         add(string.format('<rect x="%d" y="42" width="10" height="10" fill="%s"/>', lx, sc[2]))
         add(string.format('<text x="%d" y="51">%s</text>', lx + 14, sc[1]))
         lx = lx + 24 + #sc[1] * 7
      end
   end
   add("</g>")

   -- time axis: grid lines and labels relative to the first start
   local step = tick_step(t1 - t0, 8)
   local axis_y = top + #runs * row_h + 4
   add('<g class="axis" stroke="#dddddd">')
   local i = 0
   while i * step <= (t1 - t0) * (1 + 1e-9) do
      local tx = x(t0 + i * step)
      add(string.format('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>', tx, top - 4, tx, axis_y))
      add(string.format('<text x="%.1f" y="%d" stroke="none" fill="#555555" text-anchor="middle">%s</text>',
         tx, axis_y + 14, tick_label(i * step, step)))
      i = i + 1
   end
   add("</g>")

   -- one bar per run
   for row, r in ipairs(runs) do
      local y = top + (row - 1) * row_h
      local state = r.state_type or "?"
      local bx = r.from and x(r.from) or label_w
      local bw
      if r.start_time and r.end_time then
         bw = x(r.end_time) - bx
      elseif r.start_time then
         bw = x(t1) - bx -- still running: up to the latest time known
      else
         bw = 0 -- not started: a mark at the expected start
      end
      if bw < 2 then bw = 2 end
      local detail
      if r.start_time and r.end_time then
         detail = cli.duration(r.end_time - r.start_time)
      elseif r.start_time then
         detail = "started " .. os.date("!%Y-%m-%d %H:%M:%S UTC", math.floor(r.start_time))
      elseif r.expected_start_time then
         detail = "expected " .. os.date("!%Y-%m-%d %H:%M:%S UTC", math.floor(r.expected_start_time))
      else
         detail = "not started"
      end
      add(string.format('<text x="10" y="%d">%s</text>', y + bar_h - 3, xml((r.name or "?"):sub(1, 32))))
      add(string.format('<rect class="run" data-state="%s" x="%.1f" y="%d" width="%.1f" height="%d" '
         .. 'fill="%s"><title>%s: %s, %s</title></rect>', xml(state), bx, y, bw, bar_h,
         COLOUR[state] or OTHER_COLOUR, xml(r.name or "?"), xml(r.state_name or state), xml(detail)))
   end
   add("</svg>")
   return table.concat(out, "\n") .. "\n"
end

cli.run(NAME, function()
   local client = cli.client(NAME, { retries = opts.retries })
   local runs, title = read_runs(client)
   if #runs == 0 then error("no task runs in flow run " .. opts.flow_run, 0) end
   local svg = draw(runs, title, opts.width)
   if opts.output then
      local f, err = io.open(opts.output, "w")
      if not f then error("cannot write " .. tostring(err), 0) end
      f:write(svg)
      f:close()
      io.stderr:write(string.format("timeline.lua: %d task runs drawn to %s\n", #runs, opts.output))
   else
      io.stdout:write(svg)
   end
end)
