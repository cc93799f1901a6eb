-- The ngx.timer.every pattern of docs/openresty.md ("Following runs from a timer"), taken from the
-- doc itself and run in a private nginx against the bundled server, which the spec changes while
-- nginx follows it: every run that ends is logged once, oldest first. Runs under luajit (ngx_lua's
-- interpreter); elsewhere, or without nginx, it is pending.

local nginx = require("nginx")
local test_server = require("test_server")
local disk = require("disk")
local cjson = require("cjson")
local socket = require("socket")

local available, why_not = nginx.available()

-- The doc's init_worker_by_lua_block, with the timer's 5 s made 0.05 s.
local function doc_pattern()
   local doc = assert(disk.read(test_server.ROOT .. "/docs/openresty.md"))
   local section = assert(doc:match("\n## Following runs from a timer\n(.-)\n## "), "the doc's section")
   local block = assert(section:match("```nginx\n(.-)```"), "the section's nginx block")
   local fast, n = block:gsub("ngx%.timer%.every%(5, tick%)", "ngx.timer.every(0.05, tick)")
   assert(n == 1, "the block starts ngx.timer.every(5, tick)")
   return fast
end

local counter = 0
local function new_id()
   counter = counter + 1
   return string.format("f0220000-0000-4000-8000-%012d", counter)
end

local function iso(t)
   local s = math.floor(t)
   return os.date("!%Y-%m-%dT%H:%M:%S", s) .. string.format(".%06dZ", math.floor((t - s) * 1e6 + 0.5))
end

describe("the ngx.timer.every pattern of docs/openresty.md", function()
   if not available then
      pending("skipped: " .. why_not)
      return
   end

   local FIXTURE = test_server.ROOT .. "/spec/fixtures/dataset-3.9.1.json"
   local template
   for _, run in ipairs(cjson.decode((assert(disk.read(FIXTURE)))).task_runs) do
      if run.state_type == "FAILED" then template = run break end
   end

   local function failed_run(name, ended)
      local run = cjson.decode(cjson.encode(template))
      run.id, run.name, run.end_time = new_id(), name, iso(ended)
      run.state.id = new_id()
      run.state_id = run.state.id
      run.state.timestamp = run.end_time
      return run
   end

   -- The names the follower logged, in the order it logged them.
   local function logged(n)
      local out = {}
      for name in n:error_log():gmatch("task run (%S+) ended FAILED at ") do out[#out + 1] = name end
      return out
   end

   local srv, n
   setup(function()
      srv = test_server.start{ dataset = FIXTURE, test_writes = true }
      n = nginx.start{ http = doc_pattern(), environ = { PREFECT_API_URL = srv.url } }
   end)
   teardown(function()
      if n then n:stop() end
      if srv then srv:stop() end
   end)

   it("logs each run that ends while nginx runs, once, oldest first", function()
      -- the first tick only learns where the newest run is: end runs until the follower logs one
      local t = socket.gettime()
      local probes = 0
      while #logged(n) == 0 and probes < 200 do
         probes = probes + 1
         t = t + 0.001
         srv:add_task_runs({ failed_run("probe-" .. probes, t) })
         socket.sleep(0.05)
      end
      assert.is_true(#logged(n) > 0, n:error_log())
      local want = {}
      for i = 1, 8 do
         t = t + 0.001
         want[i] = "r" .. i
         srv:add_task_runs({ failed_run(want[i], t) })
      end
      local names
      for _ = 1, 200 do
         names = logged(n)
         if names[#names] == "r8" then break end
         socket.sleep(0.05)
      end
      local runs = {}
      for _, name in ipairs(names) do
         if name:match("^r%d$") then runs[#runs + 1] = name end
      end
      assert.same(want, runs)
      -- and nothing twice
      local seen = {}
      for _, name in ipairs(names) do
         assert.is_nil(seen[name], name .. " logged twice")
         seen[name] = true
      end
      assert.not_matches("prefect follow: ", n:error_log())
   end)
end)
