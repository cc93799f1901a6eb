-- The script examples/host/host.c runs in its 60 fps frame loop. At start-up
-- it counts the matching runs (a blocking call, as a loading screen would);
-- then every frame polls the read with poll(0, N), which never waits and
-- hands out at most N runs (--runs-per-frame, default 50), and "draws" what
-- arrived. Each frame also tells the host how long poll took. The host
-- measures the frames; report() says what was received, so the host can
-- compare it with the count.
--
-- usage (through the host): host [...] frames.lua [--fault SPEC] [--page-size N] [--state S,S]
--                                                 [--runs-per-frame N]
--   --fault SPEC          sent as X-Test-Fault (the bundled test server's fault injection),
--                         e.g. "delay_ms=300; drip_bytes=2048; drip_ms=5" for a slow server
--   --runs-per-frame N    the most runs one poll hands out (default 50)
-- The server is PREFECT_API_URL, as for every example.

local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
package.path = here .. "/../lib/?.lua;" .. package.path
local cli = require("cli")
cli.setup(here .. "/..")

local host = require("host") -- registered by the C host: now(), budget
local core = require("prefect.core") -- registered statically by the C host

local NAME = "frames.lua"
local opts = cli.parse({ ... }, {
   name = NAME,
   usage = "usage: host [options] frames.lua [--fault SPEC] [--page-size N] [--state S,S]"
      .. " [--runs-per-frame N]",
   options = { fault = "string", ["page-size"] = "count", state = "list", ["runs-per-frame"] = "count" },
   defaults = { runs_per_frame = 50 },
})
if opts.runs_per_frame < 1 then cli.fail(NAME, "--runs-per-frame needs a whole number >= 1 (see --help)") end

local headers = opts.fault and { ["X-Test-Fault"] = opts.fault } or nil
local client = cli.client(NAME, {
   clock = host.now, -- the host's monotonic clock: poll's timeouts and retry times use it
   headers = headers,
   page_size = opts.page_size,
})
local query = { state = opts.state }

-- Counted without the fault: the count is the reference, not the thing measured.
local counter = cli.client(NAME)
local expected, err = counter:count(query)
if not expected then cli.fail(NAME, err) end
counter:close()

io.stdout:write(string.format("frames.lua: prefect.core %s (linked into the host), %d runs to read\n",
   core._VERSION, expected))

local RUNS_PER_FRAME = opts.runs_per_frame

local app = {}
local handle
local received, distinct, seen = 0, 0, {}
local failure

function app.frame(frame_number)
   if frame_number == 1 then handle = client:start(query) end
   -- never waits, and takes at most RUNS_PER_FRAME runs: a whole page that arrived at once is
   -- spread over a few frames instead of costing one frame the time to build 200 tables
   local poll_start = host.now()
   local runs, done = handle:poll(0, RUNS_PER_FRAME)
   local poll_time = host.now() - poll_start
   if runs == nil then
      failure = tostring(done)
      return true, poll_time
   end
   for _, run in ipairs(runs) do
      received = received + 1
      if not seen[run.id] then
         seen[run.id] = true
         distinct = distinct + 1
      end
   end
   -- the second value tells the host how much of the frame the library took
   return done, poll_time
end

function app.report()
   return { received = received, distinct = distinct, expected = expected, error = failure }
end

return app
