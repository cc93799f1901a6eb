-- Wrong answers from a server that does answer (issue #15): what a user relies on is that each ends
-- the read with an exact error, instead of a silent wrong result or requests without end.
-- The part both transports share (prefect.exchange and the pager) decides these; this file reads
-- through the curl transport.

local test_server = require("test_server")
local prefect = require("prefect")

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
         ["12.5"] = "protocol", ["-3"] = "protocol", ["1e400"] = "protocol",
         ['"12"'] = "protocol", ["null"] = "protocol", ["{}"] = "protocol" }
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
