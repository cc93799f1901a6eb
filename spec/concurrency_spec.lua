-- `concurrency = n` (issue #8): n page requests in flight, runs still handed out once and in order,
-- against the test server over real HTTP. Nothing here measures time: the server's request counts
-- (GET /__test/stats) and the order of the runs tell what the pager did.

local prefect = require("prefect")
local test_server = require("test_server")
local socket = require("socket")
local apps = require("apps")

local no_env, FIXTURE, app_file, new_client = apps.no_env, apps.FIXTURE, apps.file, apps.client

-- Answers a count, then adds GROW runs that sort last under ID_DESC: the count the pager bounds its
-- window with is lower than what there is to read by then.
local GROW_AFTER_COUNT_APP = [[
local api = require("prefect.testing.api")
local dataset = require("prefect.testing.dataset")
local GROW = %d
return function(opts)
   local ds = dataset.load(%q)
   local app = api.new{ data = ds, prefect = 2, base_path = opts.base_path }
   local added = 0
   return { handle = function(_, req)
      local status, headers, body = app:handle(req)
      if req.method == "POST" and req.path:find("/task_runs/count$") then
         local template = ds.task_runs[1]
         for _ = 1, GROW do
            added = added + 1
            local run = {}
            for k, v in pairs(template) do run[k] = v end
            run.id = string.format("00000000-0000-4000-8000-%%012d", added)
            run.name = "late-" .. added
            ds.task_runs[#ds.task_runs + 1] = run
         end
         app = api.new{ data = ds, prefect = 2, base_path = opts.base_path }
      end
      return status, headers, body
   end }
end
]]

-- The first filter request that carries `X-Fail-Offset: N` and asks for offset N is answered 503;
-- every other request is served as usual. (Fault headers apply to every page; this targets one.)
local FAIL_OFFSET_APP = [[
local api = require("prefect.testing.api")
local dataset = require("prefect.testing.dataset")
return function(opts)
   local app = api.new{ data = dataset.load(%q), prefect = 2, base_path = opts.base_path }
   local failed = {}
   return { handle = function(_, req)
      local at = req.headers["x-fail-offset"]
      if at and req.method == "POST" and req.path:find("/task_runs/filter$") and not failed[at]
         and (req.body or ""):find('"offset":' .. at .. '[,}]') then
         failed[at] = true
         return 503, { ["Content-Type"] = "application/json" }, '{"detail":"busy"}'
      end
      return app:handle(req)
   end }
end
]]



-- The ids handed out, in order; raises if one comes twice.
local function read_ids(c, q, opts)
   local ids, seen = {}, {}
   for run in c:task_runs(q, opts) do
      assert(not seen[run.id], "run handed out twice: " .. tostring(run.id))
      seen[run.id] = true
      ids[#ids + 1] = run.id
   end
   return ids
end

-- Waits (up to 5 s) until the server has seen at least `n` requests; returns what it has seen.
local function requests_reach(srv, n)
   local deadline = socket.gettime() + 5
   while srv:stats().requests < n and socket.gettime() < deadline do socket.sleep(0.01) end
   return srv:stats().requests
end

-- Polls until the read is complete; returns the ids in order (or nil, err).
local function drain(h, timeout_ms)
   local ids = {}
   local give_up = socket.gettime() + 30
   while true do
      local list, done = h:poll(timeout_ms)
      if list == nil then return nil, done end
      for _, r in ipairs(list) do ids[#ids + 1] = r.id end
      if done then return ids end
      assert(socket.gettime() < give_up, "poll never finished")
   end
end

describe("concurrency over 2,050 runs in pages of 100", function()
   local srv, reference
   setup(function()
      srv = test_server.start{ dataset = { generate = 2050, seed = 11, shape = 3 }, prefect = 3 }
      reference = read_ids(new_client(srv, { page_size = 100, fields = { "id" } }), {})
   end)
   teardown(function() if srv then srv:stop() end end)

   it("reads the reference once, in ID_DESC order", function()
      assert.equal(2050, #reference)
      for i = 2, #reference do assert.is_true(reference[i] < reference[i - 1], "order at " .. i) end
   end)

   for _, n in ipairs{ 2, 4 } do
      it("hands out every run once, in the same order as concurrency = 1 (n = " .. n .. ")", function()
         srv:reset()
         local c = new_client(srv, { page_size = 100, fields = { "id" } })
         assert.same(reference, read_ids(c, {}, { concurrency = n }))
         -- one count, then the 21 pages inside it (the last one short): no request past the end
         assert.equal(22, srv:stats().requests)
      end)
   end

   it("takes the client's option, and a call's option over it", function()
      srv:reset()
      local c = new_client(srv, { page_size = 100, concurrency = 3 })
      assert.same(reference, read_ids(c, {}))
      assert.equal(22, srv:stats().requests)
      srv:reset()
      -- prefetch = false in a call: one request at a time, whatever the client's concurrency
      assert.same(reference, read_ids(c, {}, { prefetch = false }))
      assert.equal(21, srv:stats().requests)
      srv:reset()
      -- concurrency = 1: today's read, no count (the page after the short one may have been
      -- prefetched, and cancelled)
      assert.same(reference, read_ids(c, {}, { concurrency = 1 }))
      assert.is_true(srv:stats().requests <= 22)
      assert.is_true(srv:stats().requests >= 21)
   end)

   it("reads from the query's offset", function()
      local c = new_client(srv, { page_size = 100 })
      local ids = read_ids(c, { offset = 1234 }, { concurrency = 4 })
      assert.equal(2050 - 1234, #ids)
      for i, id in ipairs(ids) do assert.equal(reference[1234 + i], id) end
   end)

   it("asks for no more than the limit when it is smaller than n pages, and no count", function()
      srv:reset()
      local c = new_client(srv, { page_size = 100 })
      local ids = read_ids(c, { limit = 250 }, { concurrency = 8 })
      assert.equal(250, #ids)
      for i = 1, 250 do assert.equal(reference[i], ids[i]) end
      -- pages of 100, 100 and 50
      assert.equal(3, srv:stats().requests)
   end)

   it("has n requests on the wire before the first page is consumed, and adds one per page", function()
      srv:reset()
      local c = new_client(srv, { page_size = 100, fields = { "id" },
         headers = { ["X-Test-Fault"] = "delay_ms=200" } })
      local it = c:task_runs({ limit = 1000 }, { concurrency = 4 })
      local first = it()
      assert.equal(reference[1], first.id)
      assert.equal(4, requests_reach(srv, 4))
      for i = 2, 100 do assert.equal(reference[i], it().id) end
      -- page 1 consumed, but not finished with: nothing more yet
      assert.equal(4, srv:stats().requests)
      assert.equal(reference[101], it().id)
      -- page 2 adopted: page 5 asked for
      assert.equal(5, requests_reach(srv, 5))
      local n = 101
      for run in it do
         n = n + 1
         assert.equal(reference[n], run.id)
      end
      assert.equal(1000, n)
      assert.equal(10, srv:stats().requests)
   end)

   it("cancels the pages in flight when the loop is left early", function()
      srv:reset()
      local c = new_client(srv, { page_size = 100, headers = { ["X-Test-Fault"] = "delay_ms=100" } })
      local it, st, ctl, closer = c:task_runs({ limit = 2000 }, { concurrency = 4 })
      assert.truthy(it(st, ctl))
      closer:close()
      assert.is_nil(it(st, ctl))
      assert.equal(4, requests_reach(srv, 4))
      socket.sleep(0.3)
      assert.equal(4, srv:stats().requests)
      -- the client reads on
      assert.equal(5, #read_ids(c, { limit = 5 }))
   end)

   describe("client:start and poll", function()
      it("hands out every run once and in order with concurrency = 3", function()
         srv:reset()
         local c = new_client(srv, { page_size = 100, fields = { "id" },
            sleep = function() error("poll must not sleep") end })
         assert.same(reference, drain(c:start({}, { concurrency = 3 }), 10))
         assert.equal(22, srv:stats().requests) -- the count and 21 pages
      end)

      it("has 3 requests on the wire before the first page is consumed", function()
         srv:reset()
         local c = new_client(srv, { page_size = 100, headers = { ["X-Test-Fault"] = "delay_ms=200" } })
         local h = c:start({ limit = 600 }, { concurrency = 3 })
         -- poll(0) returns at once, long before the server's 200 ms are up: nothing handed out yet
         assert.same({}, assert(h:poll(0)))
         assert.equal(3, requests_reach(srv, 3))
         local got = assert(drain(h, 20))
         assert.equal(600, #got)
         for i = 1, 600 do assert.equal(reference[i], got[i]) end
         assert.equal(6, srv:stats().requests)
      end)
   end)
end)

describe("concurrency when the count is lower than what there is to read", function()
   it("reads on past the counted runs, page by page, to a short page", function()
      local srv = test_server.start{ app_file = app_file(GROW_AFTER_COUNT_APP:format(120, FIXTURE)) }
      finally(function() srv:stop() end)
      local c = new_client(srv, { page_size = 50 })
      local ids = read_ids(c, {}, { concurrency = 4 })
      -- the fixture's 300 runs (the count), then the 120 added after it, last under ID_DESC
      assert.equal(420, #ids)
      for i = 2, #ids do assert.is_true(ids[i] < ids[i - 1], "order at " .. i) end
      for i = 301, 420 do assert.equal(string.format("00000000-0000-4000-8000-%012d", 421 - i), ids[i]) end
   end)

   it("does the same through poll", function()
      local srv = test_server.start{ app_file = app_file(GROW_AFTER_COUNT_APP:format(120, FIXTURE)) }
      finally(function() srv:stop() end)
      local c = new_client(srv, { page_size = 50 })
      local ids = assert(drain(c:start({}, { concurrency = 3 }), 20))
      assert.equal(420, #ids)
      for i = 2, #ids do assert.is_true(ids[i] < ids[i - 1], "order at " .. i) end
   end)
end)

describe("concurrency and a page ahead that fails", function()
   local srv, reference
   setup(function()
      srv = test_server.start{ app_file = app_file(FAIL_OFFSET_APP:format(FIXTURE)) }
      reference = read_ids(new_client(srv, { page_size = 50 }), {})
   end)
   teardown(function() if srv then srv:stop() end end)

   it("retries it when its turn comes, and keeps the order", function()
      assert.equal(300, #reference)
      local waits, handed_out = {}, 0
      local c = new_client(srv, { page_size = 50, random = function() return 0.5 end,
         headers = { ["X-Fail-Offset"] = "100" },
         sleep = function(s) waits[#waits + 1] = { s, handed_out } end })
      local ids = {}
      for run in c:task_runs({}, { concurrency = 4 }) do
         handed_out = handed_out + 1
         ids[handed_out] = run.id
      end
      assert.same(reference, ids)
      -- one retry, made after the two pages before it were handed out; the wait is what is left
      -- of the 2 s backoff (jitter drawn in the middle) on the client's clock
      assert.equal(1, #waits)
      assert.is_true(waits[1][1] > 1.9 and waits[1][1] <= 2, waits[1][1])
      assert.equal(100, waits[1][2])
   end)

   it("retries it through poll on the client's clock, and keeps the order", function()
      local now, slept = 1000, {}
      local c = new_client(srv, { page_size = 50, random = function() return 0.5 end,
         headers = { ["X-Fail-Offset"] = "150" }, clock = function() return now end,
         sleep = function(s) slept[#slept + 1] = s; now = now + s end })
      assert.same(reference, drain(c:start({}, { concurrency = 3 }), 5000))
      assert.same({ 2 }, slept)
   end)

   it("retries the current page that breaks part-way without repeating its runs, and keeps the order",
      function()
         local waits, handed_out = {}, 0
         local c = new_client(srv, { page_size = 50, accept_encoding = false,
            headers = { ["X-Test-Fault"] = "fail_first=1; key=concurrency-cut; offset=0; cut_after=30000" },
            sleep = function() waits[#waits + 1] = handed_out end })
         local ids = {}
         for run in c:task_runs({ limit = 280 }, { concurrency = 3 }) do
            handed_out = handed_out + 1
            ids[handed_out] = run.id
         end
         assert.equal(280, #ids)
         for i = 1, 280 do assert.equal(reference[i], ids[i]) end
         assert.equal(1, #waits)
         assert.is_true(waits[1] > 0 and waits[1] < 50, waits[1])
      end)

   it("fetches a CSRF token once, and keeps the order", function()
      local csrf = test_server.start{ dataset = "fixture", prefect = 3, csrf = true }
      finally(function() csrf:stop() end)
      local c = new_client(csrf, { page_size = 50 })
      local plain = read_ids(c, {})
      assert.equal(300, #plain)
      csrf:reset()
      local c2 = new_client(csrf, { page_size = 50 })
      assert.same(plain, read_ids(c2, {}, { concurrency = 4 }))
      -- the count and the first page refused (403), the token, the count, then seven pages that carry
      -- the token (the first page is closed once the token has come, and may not have been read yet)
      local requests = csrf:stats().requests
      assert.is_true(requests == 10 or requests == 11, requests)
      assert.same(plain, drain(new_client(csrf, { page_size = 50 }):start({}, { concurrency = 4 }), 10))
   end)

   it("asks for the empty page at the counted end with the window, and for nothing past it", function()
      srv:reset()
      local c = new_client(srv, { page_size = 50 })
      assert.same(reference, read_ids(c, {}, { concurrency = 4 }))
      -- the count, six full pages and the empty one at 300 that ends the read
      assert.equal(8, srv:stats().requests)
   end)

   it("gives up on it under the retry budget with the structured error", function()
      local c = new_client(srv, { page_size = 50, retries = 0, headers = { ["X-Fail-Offset"] = "200" } })
      local n = 0
      local ok, err = pcall(function()
         for _ in c:task_runs({}, { concurrency = 4 }) do n = n + 1 end
      end)
      assert.is_false(ok)
      assert.equal("http", err.kind)
      assert.equal(503, err.status)
      assert.equal(200, n)
   end)
end)

describe("concurrency and the server's page maximum", function()
   local srv, reference
   setup(function()
      srv = test_server.start{ app_file = apps.limited(50) }
      reference = read_ids(new_client(srv, { page_size = 50 }), {})
   end)
   teardown(function() if srv then srv:stop() end end)

   it("drops the pages ahead asked for with the refused size, and keeps the order", function()
      assert.equal(300, #reference)
      assert.same(reference, read_ids(new_client(srv), {}, { concurrency = 4 }))
   end)

   it("does the same through poll", function()
      assert.same(reference, drain(new_client(srv):start({}, { concurrency = 4 }), 10))
   end)
end)

describe("the concurrency option", function()
   local function raises(fn, pattern)
      local ok, err = pcall(fn)
      assert.is_false(ok)
      assert.equal("invalid", err.kind)
      assert.matches(pattern, err.message)
   end

   for _, bad in ipairs{ 0, 17, "2", 1.5, -1, true } do
      it("refuses " .. string.format("%q", tostring(bad)) .. " as a client and as a call option", function()
         raises(function() prefect.client{ getenv = no_env, concurrency = bad } end,
            "concurrency must be an integer from 1 to 16")
         local c = prefect.client{ getenv = no_env }
         local message = "concurrency must be an integer from 1 to 16"
         raises(function() c:task_runs({}, { concurrency = bad }) end, message)
         raises(function() c:start({}, { concurrency = bad }) end, message)
      end)
   end

   it("names a string value as a string", function()
      raises(function() prefect.client{ getenv = no_env, concurrency = "2" } end, 'got "2"')
   end)

   it("accepts 1 to 16", function()
      for _, n in ipairs{ 1, 2, 16 } do
         local c = prefect.client{ getenv = no_env, concurrency = n }
         assert.equal("function", type(c:task_runs({}, { concurrency = n })))
      end
   end)

   it("refuses concurrency > 1 with prefetch = false in the same call", function()
      local c = prefect.client{ getenv = no_env }
      raises(function() c:task_runs({}, { concurrency = 2, prefetch = false }) end, "prefetch = false")
   end)

   it("refuses concurrency > 1 with the ngx transport, naming it", function()
      raises(function() prefect.client{ getenv = no_env, transport = "ngx", concurrency = 2 } end,
         "concurrency > 1 needs the curl transport %(the ngx transport")
      local c = prefect.client{ getenv = no_env, transport = "ngx" }
      raises(function() c:task_runs({}, { concurrency = 4 }) end, "ngx transport")
      assert.equal("function", type(c:task_runs({}, { concurrency = 1 })))
   end)
end)
