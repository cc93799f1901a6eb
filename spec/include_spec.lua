-- include = {"flow_run", "flow"} on reads, against the test server over real HTTP: every run gets
-- its flow run and flow, each page costs at most one /flow_runs/filter and one /flows/filter, a
-- flow run or flow is asked for once per read, fields are honoured, deleted flow runs are left out,
-- failures fail the read like a page failure, and misuse is refused before any request.

local test_server = require("test_server")
local apps = require("apps")
local dataset = require("prefect.testing.dataset")
local cjson = require("cjson")
local socket = require("socket")

local new_client = apps.client
local FIXTURES = test_server.ROOT .. "/spec/fixtures/"
local INCLUDE_BOTH = { "flow_run", "flow" }

-- Serves a recorded dataset through the bundled API and logs every request ("METHOD /path body"),
-- answered at GET /api/__log. cfg: data, prefect, csrf, api_key, drop (a flow-run name removed from
-- the flow runs, as if deleted after its task runs were read), fail = { path, status, times (nil:
-- every time) }, flow_runs_limit (the page maximum of /flow_runs/filter alone).
local LOGGING_APP = [[
local api = require("prefect.testing.api")
local dataset = require("prefect.testing.dataset")
local json = dataset.json
return function(opts)
   local cfg = %s
   local ds = dataset.load(cfg.data)
   if cfg.drop then
      local kept = json.array()
      for _, fr in ipairs(ds.flow_runs) do if fr.name ~= cfg.drop then kept[#kept + 1] = fr end end
      ds.flow_runs = kept
   end
   local function new_app(limit)
      return api.new{ data = ds, prefect = cfg.prefect, base_path = opts.base_path, csrf = cfg.csrf,
         api_key = cfg.api_key, default_limit = limit }
   end
   local app = new_app(200)
   local limited = cfg.flow_runs_limit and new_app(cfg.flow_runs_limit)
   local log, failed = json.array(), 0
   local base = opts.base_path
   return { handle = function(_, req)
      local path = req.path:sub(#base + 1)
      if path == "/__log" then return 200, { ["content-type"] = "application/json" }, json.encode(log) end
      log[#log + 1] = req.method .. " " .. path .. " " .. (req.body or "")
      local f = cfg.fail
      if f and path == f.path and (not f.times or failed < f.times) then
         failed = failed + 1
         return f.status, { ["content-type"] = "application/json" }, '{"detail":"injected"}'
      end
      if limited and path == "/flow_runs/filter" then return limited:handle(req) end
      return app:handle(req)
   end }
end
]]

local function lua_literal(v)
   if type(v) == "table" then
      local parts = {}
      for k, x in pairs(v) do parts[#parts + 1] = "[" .. lua_literal(k) .. "] = " .. lua_literal(x) end
      return "{ " .. table.concat(parts, ", ") .. " }"
   end
   if type(v) == "string" then return string.format("%q", v) end
   return tostring(v)
end

local function logging_server(cfg)
   cfg.data = cfg.data or apps.FIXTURE
   cfg.prefect = cfg.prefect or 2
   return test_server.start{ app_file = apps.file(LOGGING_APP:format(lua_literal(cfg))) }
end

-- The requests the server saw, as { method, path, body (decoded or nil) }.
local function log_of(srv)
   local status, _, body = srv:request{ path = "/api/__log" }
   assert.equal(200, status)
   local out = {}
   for _, line in ipairs(cjson.decode(body)) do
      local method, path, rest = line:match("^(%S+) (%S+) ?(.*)$")
      if path ~= "/__log" then
         out[#out + 1] = { method = method, path = path, body = rest ~= "" and cjson.decode(rest) or nil }
      end
   end
   return out
end

-- The requests after the first `before` ones.
local function since(srv, before)
   local out = {}
   for i, r in ipairs(log_of(srv)) do if i > before then out[#out + 1] = r end end
   return out
end

local function requests_to(log, path)
   local out = {}
   for _, r in ipairs(log) do if r.path == path then out[#out + 1] = r end end
   return out
end

-- How many times each id was asked for in `requests` (bodies { group = { id = { any_ = ids } } }).
local function asked(requests, group)
   local n = {}
   for _, r in ipairs(requests) do
      for _, id in ipairs(r.body[group].id.any_) do n[id] = (n[id] or 0) + 1 end
   end
   return n
end

-- The recorded data: flow runs and flows by id.
local function truth(path)
   local ds = dataset.load(path)
   local fr, fl = {}, {}
   for _, r in ipairs(ds.flow_runs) do fr[r.id] = r end
   for _, f in ipairs(ds.flows) do fl[f.id] = f end
   return fr, fl, ds
end

local function keys(t)
   local out = {}
   for k in pairs(t) do out[#out + 1] = k end
   table.sort(out)
   return out
end

for _, case in ipairs{ { "2.19.9", 2 }, { "3.9.1", 3 } } do
   local version, major = case[1], case[2]
   describe("include against the recorded Prefect " .. version .. " data", function()
      local path = FIXTURES .. "dataset-" .. version .. ".json"
      local flow_runs, flows, ds = truth(path)
      local srv
      setup(function() srv = logging_server{ data = path, prefect = major } end)
      teardown(function() if srv then srv:stop() end end)

      it("gives every run with a flow run its flow run and flow, and the others neither", function()
         local c = new_client(srv, { page_size = 50 })
         local n, with, without = 0, 0, 0
         for run in c:task_runs({}, { include = INCLUDE_BOTH }) do
            n = n + 1
            if type(run.flow_run_id) == "string" then
               with = with + 1
               local fr = flow_runs[run.flow_run_id]
               assert.equal(run.flow_run_id, run.flow_run.id)
               assert.equal(fr.name, run.flow_run.name)
               assert.equal(fr.state_type, run.flow_run.state_type)
               assert.equal(fr.flow_id, run.flow.id)
               assert.equal(flows[fr.flow_id].name, run.flow.name)
            else
               without = without + 1
               assert.is_nil(run.flow_run)
               assert.is_nil(run.flow)
            end
         end
         assert.equal(#ds.task_runs, n)
         assert.is_true(with > 0 and without > 0)
      end)

      it("asks for each flow run and flow once per read, at most one request of each per page", function()
         local before = #log_of(srv)
         local c = new_client(srv, { page_size = 20 })
         local pages_with_new, known, k = 0, {}, 0
         local new_on_page = false
         for run in c:task_runs({ sort = "NAME_ASC" }, { include = INCLUDE_BOTH }) do
            k = k + 1
            if run.flow_run_id and not known[run.flow_run_id] then
               known[run.flow_run_id] = true
               new_on_page = true
            end
            if k % 20 == 0 then
               if new_on_page then pages_with_new = pages_with_new + 1 end
               new_on_page = false
            end
         end
         if new_on_page then pages_with_new = pages_with_new + 1 end
         local log = since(srv, before)
         local fr_requests = requests_to(log, "/flow_runs/filter")
         local flow_requests = requests_to(log, "/flows/filter")
         -- NAME_ASC spreads the flow runs over several pages: more than one request, one per such page
         assert.is_true(pages_with_new > 1)
         assert.equal(pages_with_new, #fr_requests)
         assert.is_true(#flow_requests >= 1 and #flow_requests <= #fr_requests)
         for id, times in pairs(asked(fr_requests, "flow_runs")) do assert.equal(1, times, id) end
         for id, times in pairs(asked(flow_requests, "flows")) do assert.equal(1, times, id) end
         assert.same(keys(known), keys(asked(fr_requests, "flow_runs")))
         for _, r in ipairs(fr_requests) do assert.equal(#r.body.flow_runs.id.any_, r.body.limit) end
      end)

      it("has the next task-run page in flight while it fetches the flow runs of this one", function()
         local before = #log_of(srv)
         local c = new_client(srv, { page_size = 100 })
         local it = c:task_runs({}, { include = INCLUDE_BOTH })
         assert.truthy(it())
         -- The first run comes once page 1's flow runs and flows are in; the prefetched page 2 was
         -- sent when page 1's status came in, so the server has it too (give it a moment to read it).
         local offsets, paths
         for _ = 1, 100 do
            offsets, paths = {}, {}
            for _, r in ipairs(since(srv, before)) do
               paths[r.path] = (paths[r.path] or 0) + 1
               if r.path == "/task_runs/filter" then offsets[#offsets + 1] = r.body.offset end
            end
            if #offsets >= 2 then break end
            socket.sleep(0.05)
         end
         assert.same({ 0, 100 }, offsets)
         assert.equal(1, paths["/flow_runs/filter"])
         assert.equal(1, paths["/flows/filter"])
         c:close()
      end)

      it("decodes only the fields asked for, of the runs and of their flow runs and flows", function()
         local c = new_client(srv)
         local n = 0
         for run in c:task_runs({ limit = 60 },
            { fields = { "name" }, include = { flow_run = { "name", "state_type" }, flow = { "name" } } }) do
            if run.flow_run then
               n = n + 1
               assert.same({ "flow", "flow_run", "flow_run_id", "id", "name" }, keys(run))
               assert.same({ "flow_id", "id", "name", "state_type" }, keys(run.flow_run))
               assert.same({ "id", "name" }, keys(run.flow))
            end
         end
         assert.is_true(n > 0)
      end)

      it("turns the flow runs' timestamps into epoch numbers with timestamps = \"epoch\"", function()
         local c = new_client(srv)
         local seen = 0
         for run in c:task_runs({ limit = 50 }, { timestamps = "epoch", include = { "flow_run" } }) do
            if run.flow_run then
               seen = seen + 1
               assert.is_number(run.flow_run.created)
               assert.is_nil(run.flow)
            end
         end
         assert.is_true(seen > 0)
      end)

      it("gives only run.flow for include = {\"flow\"}", function()
         local c = new_client(srv)
         local page = assert(c:page({ limit = 100 }, 0, { include = { "flow" } }))
         local n = 0
         for _, run in ipairs(page) do
            assert.is_nil(run.flow_run)
            if run.flow_run_id then
               n = n + 1
               assert.equal(flows[flow_runs[run.flow_run_id].flow_id].name, run.flow.name)
            end
         end
         assert.is_true(n > 0)
      end)

      it("includes in client:page with one request of each kind", function()
         local before = #log_of(srv)
         local c = new_client(srv)
         local page = assert(c:page({ limit = 200 }, 0, { include = INCLUDE_BOTH }))
         local log = since(srv, before)
         assert.equal(3, #log)
         assert.same({ "/task_runs/filter", "/flow_runs/filter", "/flows/filter" },
            { log[1].path, log[2].path, log[3].path })
         for _, run in ipairs(page) do
            if run.flow_run_id then assert.equal(run.flow_run_id, run.flow_run.id) end
         end
      end)

      it("includes in client:start / poll, also a run at a time", function()
         local c = new_client(srv, { page_size = 40 })
         local h = c:start({}, { include = INCLUDE_BOTH })
         local n, done = 0, false
         while not done do
            local list, d = h:poll(100, 1)
            assert.is_table(list, tostring(d))
            assert.is_true(#list <= 1)
            for _, run in ipairs(list) do
               n = n + 1
               if run.flow_run_id then assert.equal(flow_runs[run.flow_run_id].name, run.flow_run.name) end
            end
            done = d
         end
         assert.equal(#ds.task_runs, n)
      end)

      it("stops at the query's limit, with the held runs included", function()
         local c = new_client(srv, { page_size = 30 })
         local n = 0
         local q = { limit = 45, flow_run = { name = { "fr-alpha" } } }
         for run in c:task_runs(q, { include = INCLUDE_BOTH }) do
            n = n + 1
            assert.equal("fr-alpha", run.flow_run.name)
         end
         assert.equal(45, n)
      end)

      it("works without prefetch and with pages in flight", function()
         for _, opts in ipairs{ { prefetch = false }, { concurrency = 3 } } do
            opts.include = INCLUDE_BOTH
            local c = new_client(srv, { page_size = 25 })
            local n = 0
            for run in c:task_runs({ limit = 120 }, opts) do
               n = n + 1
               if run.flow_run_id then assert.is_string(run.flow.name) end
            end
            assert.equal(120, n)
         end
      end)
   end)
end

describe("include, when the server lacks a flow run or answers badly", function()
   local servers = {}
   teardown(function() for _, s in ipairs(servers) do s:stop() end end)
   local function start(cfg)
      local s = logging_server(cfg)
      servers[#servers + 1] = s
      return s
   end
   local flow_runs = truth(apps.FIXTURE)
   local alpha
   for id, fr in pairs(flow_runs) do if fr.name == "fr-alpha" then alpha = id end end

   it("leaves flow_run (and flow) off the runs of a deleted flow run, asking for it once", function()
      local srv = start{ drop = "fr-alpha" }
      local c = new_client(srv, { page_size = 30 })
      local of_alpha = 0
      for run in c:task_runs({ sort = "NAME_ASC" }, { include = INCLUDE_BOTH }) do
         if run.flow_run_id == alpha then
            of_alpha = of_alpha + 1
            assert.is_nil(run.flow_run)
            assert.is_nil(run.flow)
         elseif run.flow_run_id then
            assert.is_string(run.flow_run.name)
         end
      end
      assert.is_true(of_alpha > 30) -- on more than one page
      assert.equal(1, asked(requests_to(log_of(srv), "/flow_runs/filter"), "flow_runs")[alpha])
   end)

   it("keeps its cache bounded: a flow run forgotten is asked for again, and still set", function()
      local srv = start{}
      local include = require("prefect.include")
      local limit = include.CACHE_LIMIT
      finally(function() include.CACHE_LIMIT = limit end)
      -- two generations of two: the fixture's five flow runs, each on every page under ID_DESC,
      -- do not all fit
      include.CACHE_LIMIT = 2
      local c = new_client(srv, { page_size = 20 })
      local n = 0
      for run in c:task_runs({ sort = "ID_DESC" }, { include = INCLUDE_BOTH }) do
         if run.flow_run_id then
            n = n + 1
            assert.equal(flow_runs[run.flow_run_id].name, run.flow_run.name)
            assert.is_string(run.flow.name)
         end
      end
      assert.equal(290, n)
      local most = 0
      for _, times in pairs(asked(requests_to(log_of(srv), "/flow_runs/filter"), "flow_runs")) do
         if times > most then most = times end
      end
      assert.is_true(most > 1, "no flow run was forgotten and asked for again")
   end)

   it("fails the read with the include request's error, naming its URL", function()
      local srv = start{ fail = { path = "/flows/filter", status = 500 } }
      local c = new_client(srv)
      local ok, err = pcall(function()
         for _ in c:task_runs({}, { include = INCLUDE_BOTH }) do end
      end)
      assert.is_false(ok)
      assert.equal("http", err.kind)
      assert.equal(500, err.status)
      assert.equal(srv.url .. "/flows/filter", err.url)
      local page, perr = c:page({}, 0, { include = INCLUDE_BOTH })
      assert.is_nil(page)
      assert.equal(srv.url .. "/flows/filter", perr.url)
      local h = c:start({}, { include = INCLUDE_BOTH })
      local list, herr
      repeat list, herr = h:poll(100) until list == nil or herr == true
      assert.is_nil(list)
      assert.equal(500, herr.status)
      -- runs before the failure are not handed out for want of their flow runs: nothing was
      local requests = requests_to(log_of(srv), "/flows/filter")
      assert.is_true(#requests >= 3)
   end)

   it("retries a failing include request under the client's retry policy", function()
      local srv = start{ fail = { path = "/flow_runs/filter", status = 503, times = 2 } }
      local c = new_client(srv)
      local n = 0
      for run in c:task_runs({ limit = 100 }, { include = INCLUDE_BOTH }) do
         if run.flow_run_id then n = n + 1; assert.is_string(run.flow_run.name) end
      end
      assert.is_true(n > 0)
      assert.equal(3, #requests_to(log_of(srv), "/flow_runs/filter"))
      srv = start{ fail = { path = "/flow_runs/filter", status = 503, times = 1 } }
      local c0 = new_client(srv, { retries = 0 })
      local page, err = c0:page({}, 0, { include = INCLUDE_BOTH })
      assert.is_nil(page)
      assert.equal(503, err.status)
      assert.equal(srv.url .. "/flow_runs/filter", err.url)
   end)

   it("waits out an include request's retry inside poll, without blocking past its timeout", function()
      local srv = start{ fail = { path = "/flows/filter", status = 503, times = 1 } }
      local c = new_client(srv, { page_size = 100 })
      local h = c:start({ limit = 150 }, { include = INCLUDE_BOTH })
      local n, waited, done = 0, false, false
      while not done do
         local list, d = h:poll(20)
         assert.is_table(list, tostring(d))
         if h.state == "retry_wait" then waited = true end
         for _, run in ipairs(list) do
            n = n + 1
            if run.flow_run_id then assert.is_string(run.flow.name) end
         end
         done = d
      end
      assert.equal(150, n)
      assert.is_true(waited)
      -- page 1 asks twice; page 2 brings no flow not already known
      assert.equal(2, #requests_to(log_of(srv), "/flows/filter"))
   end)

   it("splits the ids over several requests when the server's page maximum is lower", function()
      local srv = start{ flow_runs_limit = 2 }
      local c = new_client(srv)
      local page = assert(c:page({ limit = 200 }, 0, { include = INCLUDE_BOTH }))
      local names = {}
      for _, run in ipairs(page) do
         if run.flow_run_id then names[run.flow_run.name] = true end
      end
      assert.same({ "fr-alpha", "fr-beta", "fr-delta", "fr-epsilon", "fr-gamma" }, keys(names))
      local ok_requests = 0
      for _, r in ipairs(requests_to(log_of(srv), "/flow_runs/filter")) do
         if r.body.limit <= 2 then ok_requests = ok_requests + 1 end
      end
      -- 5 ids at most 2 a request: 3 requests answered (and the ones the 422s refused)
      assert.equal(3, ok_requests)
   end)

   it("goes through auth and CSRF like every request", function()
      local srv = start{ csrf = true, api_key = "include-secret-key" }
      local c = new_client(srv, { api_key = "include-secret-key" })
      local page = assert(c:page({ limit = 50 }, 0, { include = INCLUDE_BOTH }))
      local n = 0
      for _, run in ipairs(page) do if run.flow then n = n + 1 end end
      assert.is_true(n > 0)
   end)
end)

describe("include, misused", function()
   local srv
   setup(function() srv = test_server.start{ dataset = "fixture" } end)
   teardown(function() if srv then srv:stop() end end)

   local function refused(value, pattern)
      local c = new_client(srv)
      local before = srv:stats().requests
      for _, call in ipairs{
         function() return c:task_runs({}, { include = value }) end,
         function() return c:start({}, { include = value }) end,
         function() return c:page({}, 0, { include = value }) end,
      } do
         local ok, err = pcall(call)
         assert.is_false(ok)
         assert.equal("invalid", err.kind)
         assert.matches(pattern, err.message)
      end
      assert.equal(before, srv:stats().requests)
   end

   it("refuses a value that is not a table", function()
      refused("flow_run", 'include must be a table such as {"flow_run", "flow"}, got string')
   end)
   it("refuses an unknown name, suggesting the near one", function()
      refused({ "flows" }, 'unknown name "flows".*did you mean flow%?')
      refused({ flowrun = true }, 'unknown name "flowrun".*did you mean flow_run%?')
   end)
   it("refuses a non-string entry and ill-typed fields", function()
      refused({ 5 }, "include%[1%] must be a string")
      refused({ flow_run = 5 }, "include.flow_run must be true or a list of field names, got number")
      refused({ flow = { 1 } }, "include.flow%[1%] must be a non%-empty string")
   end)
   it("is a read option, not a client option", function()
      local ok, err = pcall(new_client, srv, { include = INCLUDE_BOTH })
      assert.is_false(ok)
      assert.matches('unknown option "include"', err.message)
   end)
end)
