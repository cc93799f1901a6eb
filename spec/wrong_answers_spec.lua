-- Wrong answers from a server that does answer (issue #15): what a user relies on is that each ends
-- the read with an exact error, instead of a silent wrong result or requests without end.
-- The part both transports share (prefect.exchange, the pager and the C decoder) decides these. Run
-- by busted, this file reads through the curl transport, then runs itself inside nginx
-- (tools/ngx-busted.lua --transport ngx), where every client it makes reads over cosockets.

-- luacheck: globals ngx

local test_server = require("test_server")
local prefect = require("prefect")

local in_ngx = rawget(_G, "ngx") ~= nil and ngx.get_phase ~= nil

local function no_env() return nil end

describe("wrong answers", function()
   local srv
   lazy_setup(function()
      srv = test_server.start{ dataset = "fixture" }
   end)
   lazy_teardown(function()
      if srv then srv:stop() end
   end)

   local function client(fault, opts)
      local o = { url = srv.url, getenv = no_env, retries = 0, sleep = function() end,
         headers = fault and { ["X-Test-Fault"] = fault } or nil }
      for k, v in pairs(opts or {}) do o[k] = v end
      return prefect.client(o)
   end

   it("a server that ignores offset ends the read with a protocol error after the first page", function()
      local total = assert(client():count{})
      assert.is_true(total > 10, "the fixture needs more than one page of 10")
      for _, q in ipairs{ {}, { limit = 25 } } do
         local c = client("ignore_offset", { page_size = 10 })
         local n, err = 0, nil
         local step = c:task_runs(q)
         while true do
            local ok, run = pcall(step)
            if not ok then err = run break end
            if run == nil then break end
            n = n + 1
         end
         c:close()
         assert.is_not_nil(err, "the read ended without an error after " .. n .. " runs")
         assert.equal("protocol", err.kind, tostring(err))
         assert.truthy(tostring(err):find("offset", 1, true), tostring(err))
         assert.equal(10, n)
      end
   end)

   it("count() takes only a non-negative integer: not JSON is decode, other JSON protocol", function()
      local KIND = { ["12abc"] = "decode", ["12 abc"] = "decode", ["12]"] = "decode", [""] = "decode",
         ["12.5"] = "protocol", ["-3"] = "protocol", ["1e400"] = "protocol", ["12.0"] = "protocol",
         ['"12"'] = "protocol", ["null"] = "protocol", ["{}"] = "protocol", ["[5]"] = "protocol",
         ["[]"] = "protocol" }
      for body, kind in pairs(KIND) do
         local c = client("body=" .. body)
         local n, err = c:count{}
         c:close()
         assert.is_nil(n, ("%q was taken as %s"):format(body, tostring(n)))
         assert.equal(kind, err.kind, ("%q: %s"):format(body, tostring(err)))
      end
      local c = client("body=12")
      assert.equal(12, c:count{})
      c:close()
   end)

   -- Bodies of the wrong shape, all of them well-formed JSON, and what the error must name: the
   -- decoder checks the shape as the bytes arrive, so not one of them is handed out as runs.
   local NOT_RUNS = {
      { body = '{"a":1}', says = "expected an array of task runs, got an object at byte 1" },
      { body = '"hello"', says = "expected an array of task runs, got a string at byte 1" },
      { body = "42", says = "expected an array of task runs, got a number at byte 1" },
      { body = "null", says = "expected an array of task runs, got null at byte 1" },
      { body = '[1,"two",null,[3]]', says = "expected task run 1 to be an object, got a number at byte 2" },
      { body = '[{"name":"x"}]', says = 'task run 1 has no "id" at byte 2' },
      { body = '[{"id":"a","name":"x"},{"id":7}]',
         says = 'expected the "id" of task run 2 to be a string, got a number at byte 30' },
      { body = '[{"id":"a"},{"state":{"id":"b"}}]', says = 'task run 2 has no "id" at byte 13' },
   }

   local function check_shape_error(err, case)
      assert.is_table(err, tostring(err))
      assert.equal("protocol", err.kind, ("%s: %s"):format(case.body, tostring(err)))
      assert.truthy(err.message:find(case.says, 1, true), ("%s: %s"):format(case.body, tostring(err)))
      assert.is_number(err.offset)
      assert.truthy(err.url and err.url:find("/task_runs", 1, true), tostring(err))
      local says = case.says:gsub("%p", "%%%0")
      assert.truthy(tostring(err):find("^prefect: protocol .*from http://.*/task_runs.*: " .. says),
         tostring(err))
      -- the same answer would come again: not retried, whatever the retry budget
      assert.is_nil(err.attempts, tostring(err))
   end

   it("a filter body of the wrong shape is a protocol error naming what and where, not runs", function()
      for _, case in ipairs(NOT_RUNS) do
         for _, fields in ipairs{ false, { "name" } } do
            local opts = { fields = fields or nil }
            -- retries allowed: a wrong shape must still fail at once
            local c = client("body=" .. case.body, { retries = 2 })
            local handed, err = {}, nil
            local ok, e = pcall(function()
               for run in c:task_runs({ limit = 5 }, opts) do handed[#handed + 1] = run end
            end)
            if not ok then err = e end
            assert.is_not_nil(err, case.body .. " was read as " .. #handed .. " runs")
            check_shape_error(err, case)
            -- runs complete before the wrong one are handed out; nothing that is not a run is
            for _, run in ipairs(handed) do assert.is_string(run.id) end
            local page, perr = c:page({ limit = 5 }, nil, opts)
            assert.is_nil(page, case.body .. " was read as a page")
            check_shape_error(perr, case)
            c:close()
         end
      end
   end)

   it("keeps the id check with fields that leave id out: the id is looked for in the server's run", function()
      local c = client(nil, { page_size = 10 })
      local page = assert(c:page({ limit = 3 }, nil, { fields = { "name" } }))
      assert.equal(3, #page)
      for _, run in ipairs(page) do
         assert.is_string(run.name)
         assert.is_nil(run.id)
      end
      local one = assert(c:task_run(assert(c:page{ limit = 1 })[1].id, { fields = { "name" } }))
      assert.is_string(one.name)
      c:close()
   end)

   it("task_run(): a body that is not one object with a string id is a protocol error", function()
      local id = "0b3c8d52-3e1d-4c5b-9a43-6a2b64f0c001"
      local CASES = {
         { body = '{"a":1}', says = 'the task run has no "id" at byte 1' },
         { body = '[{"id":"' .. id .. '"}]', says = "expected a task run object, got an array at byte 1" },
         { body = '"hello"', says = "expected a task run object, got a string at byte 1" },
         { body = "null", says = "expected a task run object, got null at byte 1" },
         { body = '{"id":5}',
            says = "expected the task run's \"id\" to be a string, got a number at byte 7" },
         { body = '{"flow_run":{"id":"x"}}', says = 'the task run has no "id" at byte 1' },
      }
      for _, case in ipairs(CASES) do
         local c = client("body=" .. case.body, { retries = 2 })
         local run, err = c:task_run(id)
         c:close()
         assert.is_nil(run, case.body .. " was read as a run")
         check_shape_error(err, case)
      end
      local c = client('body={"id":"' .. id .. '","name":"x"}')
      assert.equal("x", assert(c:task_run(id)).name)
      c:close()
   end)

   it("reports 301, 302 and 303 as an http error naming the Location, sending nothing there", function()
      for _, status in ipairs{ 301, 302, 303 } do
         local c = client(("redirect_status=%d; location=/api/elsewhere"):format(status))
         local page, err = c:page{ limit = 5 }
         c:close()
         assert.is_nil(page)
         assert.equal("http", err.kind, tostring(err))
         assert.equal(status, err.status)
         assert.truthy(err.location and err.location:find("/api/elsewhere", 1, true), tostring(err))
      end
   end)

   it("does not follow a 307 to another origin", function()
      local other = "http://127.0.0.2:" .. srv.port .. "/api/task_runs/filter"
      local c = client("redirect_status=307; location=" .. other)
      local page, err = c:page{ limit = 5 }
      c:close()
      assert.is_nil(page)
      assert.equal("http", err.kind, tostring(err))
      assert.equal(307, err.status)
      assert.equal(other, err.location)
   end)

   it("follows a same-origin 308 with the body, and a loop of them ends at max_redirects", function()
      local c = client("fail_first=1; key=wrong-308; redirect_status=308")
      local page = assert(c:page{ limit = 5 })
      assert.equal(5, #page)
      c:close()
      c = client("redirect_status=308", { max_redirects = 3 })
      local none, err = c:page{ limit = 5 }
      c:close()
      assert.is_nil(none)
      assert.equal("protocol", err.kind, tostring(err))
      assert.truthy(err.message:find("max_redirects", 1, true), tostring(err))
   end)
end)

if not in_ngx then
   describe("wrong answers, inside nginx (the ngx transport)", function()
      local ok_nginx, nginx = pcall(require, "nginx")
      local available, why = false, "spec/support/nginx.lua did not load"
      if ok_nginx then available, why = nginx.available() end
      if not available then
         it("is skipped", function() pending("skipped: " .. why) end)
         return
      end
      it("are the same errors over cosockets (this file, through tools/ngx-busted.lua)", function()
         local cmd = "cd " .. nginx.root .. " && PREFECT_TEST_LUA=luajit luajit tools/ngx-busted.lua "
            .. "--transport ngx spec/wrong_answers_spec.lua 2>&1"
         local p = assert(io.popen(cmd))
         local out = p:read("*a")
         p:close()
         local n, f, e = out:match("(%d+) success%a* / (%d+) failures? / (%d+) errors?[^\n]*\n?$")
         assert.truthy(n, out)
         assert.is_true(tonumber(n) >= 10, out)
         assert.equal(0, tonumber(f) + tonumber(e), out)
      end)
   end)
end

describe("the server_version option", function()
   local srv
   lazy_setup(function()
      srv = test_server.start{ dataset = "fixture", prefect = 3 }
   end)
   lazy_teardown(function()
      if srv then srv:stop() end
   end)

   -- A Prefect 3.9 filter: refused by the compiler unless the server is known to be 3.9 or later.
   local Q = { flow_run = { state = { any = { "COMPLETED", "FAILED" }, not_any = { "FAILED" } } } }

   local function client(version)
      return prefect.client{ url = srv.url, getenv = no_env, retries = 0, server_version = version }
   end

   it("compiles queries for the version it names", function()
      local old = client(false)
      assert.has_error(function() old:count(Q) end)
      old:close()
      local new = client("3.9.1")
      assert.is_number(new:count(Q))
      new:close()
   end)

   it('"auto" asks the server once, then compiles for what it says', function()
      -- this server holds a fixture recorded from 2.19.9, and says so at /admin/version
      local c = client("auto")
      local before = srv:stats().requests
      local ok, err = pcall(c.count, c, Q)
      assert.is_false(ok)
      assert.equal("invalid", err.kind)
      assert.truthy(err.message:find("2.19.9", 1, true), err.message)
      assert.is_number(c:count{})
      c:close()
      -- one /admin/version and one count: the refused query sent nothing
      assert.equal(2, srv:stats().requests - before)
   end)

   it("refuses a value that is not a version", function()
      assert.has_error(function() client("three") end)
      assert.has_error(function() client(3) end)
   end)
end)
