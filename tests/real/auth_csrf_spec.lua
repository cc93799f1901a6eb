-- Auth and CSRF against the real Prefect server: a server started with an auth string, and one
-- with CSRF protection and tokens that expire in the middle of a read. The bundled test server,
-- started the same way, must refuse with the same status and detail.
local prefect = require("prefect")
local test_server = require("test_server")
local real = require("real_prefect")

local OUT = test_server.ROOT .. "/build/real"
local SECRET = "s3cret-Pa55word-for-the-spec"
local AUTH = "admin:" .. SECRET

local function env(vars) return function(name) return vars[name] end end

local function client(url, opts)
   local o = { url = url, getenv = env({}), retries = 0, timeout = 60 }
   for k, v in pairs(opts or {}) do o[k] = v end
   return prefect.client(o)
end

local function read_all(cl, q)
   local ids, n = {}, 0
   for run in cl:task_runs(q or {}) do
      assert.is_nil(ids[run.id], "run " .. run.id .. " handed out twice")
      ids[run.id] = true
      n = n + 1
   end
   return ids, n
end

-- No part of the secret of 6 characters or more may appear in `text`.
local function assert_no_secret(text, what)
   for i = 1, #SECRET - 5 do
      local piece = SECRET:sub(i, i + 5)
      assert.is_nil(text:find(piece, 1, true), what .. " holds part of the secret: " .. text)
   end
end

describe("Prefect " .. real.PIN .. " with an auth string", function()
   local srv, bundled, data
   setup(function()
      os.execute("mkdir -p " .. OUT)
      srv = real.start{ auth_string = AUTH }
      data = real.seed(srv, OUT .. "/dataset-auth.json", { auth_string = AUTH, runs = 40 })
      bundled = test_server.start{ dataset = OUT .. "/dataset-auth.json", prefect = 3, auth_string = AUTH }
   end)
   teardown(function()
      if srv then srv:stop() end
      if bundled then bundled:stop() end
   end)

   it("reads every run with auth_string", function()
      local ids, n = read_all(client(srv.url, { auth_string = AUTH, page_size = 15 }))
      assert.are.equal(#data.task_runs, n)
      for _, r in ipairs(data.task_runs) do assert.is_true(ids[r.id], r.id) end
   end)

   it("reads every run with PREFECT_API_AUTH_STRING", function()
      local cl = prefect.client{ getenv = env({ PREFECT_API_URL = srv.url, PREFECT_API_AUTH_STRING = AUTH }),
         retries = 0 }
      local _, n = read_all(cl)
      assert.are.equal(#data.task_runs, n)
      assert.are.equal(#data.task_runs, cl:count({}))
   end)

   for _, case in ipairs({ { "a wrong auth string", { auth_string = "admin:wrong-" .. SECRET:sub(1, 4) } },
      { "no auth string", { auth_string = false } } }) do
      it("refuses " .. case[1] .. " with the server's own status and detail, and no secret", function()
         local runs, err = client(srv.url, case[2]):page({})
         assert.is_nil(runs)
         local status, _, body = srv:request{ method = "POST", path = "/api/task_runs/filter",
            headers = { ["content-type"] = "application/json" }, body = "{}" }
         assert.are.equal(status, err.status)
         assert.is_truthy(err.detail and body:find(err.detail, 1, true),
            "detail " .. tostring(err.detail) .. " not in " .. body)
         for _, text in ipairs({ tostring(err), tostring(err.detail), tostring(err.url) }) do
            assert_no_secret(text, "the error")
         end
         local _, berr = client(bundled.url, case[2]):page({})
         assert.are.equal(err.status, berr.status, "bundled server: status")
         assert.are.equal(err.detail, berr.detail, "bundled server: detail")
      end)
   end
end)

describe("Prefect " .. real.PIN .. " with CSRF protection and 2-second tokens", function()
   local srv, bundled, data
   setup(function()
      os.execute("mkdir -p " .. OUT)
      srv = real.start{ csrf = 2 }
      -- The server checks every POST, seeding's too: seed.py fetches a token when refused.
      data = real.seed(srv, OUT .. "/dataset-csrf.json", { runs = 40 })
      bundled = test_server.start{ dataset = OUT .. "/dataset-csrf.json", prefect = 3, csrf = true }
   end)
   teardown(function()
      if srv then srv:stop() end
      if bundled then bundled:stop() end
   end)

   local function slow_read(cl)
      local ids, n = {}, 0
      for run in cl:task_runs({ page_size = 10 }) do
         assert.is_nil(ids[run.id], "run " .. run.id .. " handed out twice")
         ids[run.id] = true
         n = n + 1
         if n % 10 == 0 then require("socket").sleep(1.2) end -- tokens expire during the read
      end
      return ids, n
   end

   it("fetches a token, and a new one before each expires, and reads every run once", function()
      local ids, n = slow_read(client(srv.url))
      assert.are.equal(#data.task_runs, n)
      for _, r in ipairs(data.task_runs) do assert.is_true(ids[r.id], r.id) end
   end)

   it("asks for a new token when the server says the one it holds has expired", function()
      -- A clock 100 s slow: the client believes its tokens are fresh, so only the server's 403
      -- on an expired token makes it fetch another.
      local socket = require("socket")
      local cl = client(srv.url, { clock = function() return socket.gettime() - 100 end })
      local ids, n = slow_read(cl)
      assert.are.equal(#data.task_runs, n)
      for _, r in ipairs(data.task_runs) do assert.is_true(ids[r.id], r.id) end
   end)

   it("refuses a POST without a token the way the bundled server does", function()
      local status, _, body = srv:request{ method = "POST", path = "/api/task_runs/filter",
         headers = { ["content-type"] = "application/json" }, body = "{}" }
      local bstatus, _, bbody = bundled:request{ method = "POST", path = "/api/task_runs/filter",
         headers = { ["content-type"] = "application/json" }, body = "{}" }
      assert.are.equal(403, status)
      assert.are.equal(status, bstatus)
      assert.are.equal(body, bbody)
   end)
end)
