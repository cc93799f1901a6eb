-- What a user trusts the client with, checked against the test server over
-- real sockets:
-- - the API key and the auth string never show: not in errors of any kind
--   (deeply: every string the error table holds), not in `tostring` of the
--   client, its errors, iterators or handles, not in a traceback, not in what
--   the client and its handles hold;
-- - header values with CR, LF or NUL, and task run ids that are not UUIDs, are
--   refused before anything is sent (the server's request count stays put);
-- - TLS is verified by default;
-- - hostile responses (a gzip bomb, a 10,000-deep JSON nesting, a 1 GiB body)
--   end in a clean error, with the process's peak memory bounded.

local test_server = require("test_server")
local prefect = require("prefect")
local errors = require("prefect.errors")
local core = require("prefect.core")

local function no_env() return nil end
local unpack = table.unpack or unpack -- luacheck: ignore 143

local API_KEY = "pnu_s3cretKEY0123456789abcdef"
local AUTH_STRING = "admin:hunter2-s3cret"
local AUTH_B64 = require("prefect.client").base64(AUTH_STRING)
local URL_PASSWORD = "urlpa55w0rd"
local SECRETS = { API_KEY, AUTH_STRING, AUTH_B64, URL_PASSWORD }

local function write_file(path, text)
   local f = assert(io.open(path, "wb"))
   f:write(text)
   f:close()
end

-- Every string reachable from v through table keys, values and metatables
-- (functions and userdata are opaque), with the path it was found at.
local function find_secret(v, path, seen)
   path, seen = path or "value", seen or {}
   if type(v) == "string" then
      for _, s in ipairs(SECRETS) do
         if v:find(s, 1, true) then return path .. " holds " .. s end
      end
      return nil
   end
   if type(v) ~= "table" or seen[v] then return nil end
   seen[v] = true
   for k, val in pairs(v) do
      local found = find_secret(k, path .. "[key]", seen)
         or find_secret(val, path .. "." .. tostring(k), seen)
      if found then return found end
   end
   local mt = getmetatable(v)
   if type(mt) == "table" then return find_secret(mt, path .. "<mt>", seen) end
   return nil
end

local function assert_clean(v, what)
   local found = find_secret(v)
   assert.is_nil(found, what .. ": " .. tostring(found))
   local ok, text = pcall(tostring, v)
   assert.is_true(ok)
   for _, s in ipairs(SECRETS) do
      assert.is_nil(text:find(s, 1, true), what .. ": tostring shows a secret: " .. text)
   end
end

-- Reads with the iterator; returns the error raised, and that error seen
-- through xpcall(debug.traceback) and through a traceback string.
local function iterator_error(c, q)
   local caught
   local ok = xpcall(function()
      for _ in c:task_runs(q or {}) do end
   end, function(e)
      caught = e
      return debug.traceback(tostring(e), 2)
   end)
   assert.is_false(ok, "the read did not fail")
   local _, traced = xpcall(function()
      for _ in c:task_runs(q or {}) do end
   end, debug.traceback)
   return caught, traced
end

local function check_every_way(c, what)
   assert_clean(c, what .. ": client")
   local n, err = c:count{}
   assert.is_nil(n)
   assert_clean(err, what .. ": count error")
   local page, perr = c:page{ limit = 5 }
   assert.is_nil(page)
   assert_clean(perr, what .. ": page error")
   local raised, traced = iterator_error(c)
   assert_clean(raised, what .. ": raised error")
   assert_clean(traced, what .. ": xpcall(debug.traceback)")
   local step = c:task_runs{}
   assert_clean(step, what .. ": iterator")
   local h = c:start{}
   assert_clean(h, what .. ": handle")
   local deadline = os.time() + 20
   local runs, herr
   repeat
      runs, herr = h:poll(50)
   until runs == nil or herr == true or os.time() > deadline
   assert.is_nil(runs, "the handle did not fail")
   assert_clean(herr, what .. ": poll error")
   -- (a failed handle keeps the failed response's headers, which an echoing server fills with
   -- whatever it likes: only what the handle shows is checked here)
   assert_clean(tostring(h), what .. ": failed handle")
   h:close()
   local v, verr = c:server_version()
   if v == nil then assert_clean(verr, what .. ": server_version error") end
   return err
end

local function auth_clients(url, extra)
   local list = {}
   for _, auth in ipairs{ { api_key = API_KEY }, { auth_string = AUTH_STRING } } do
      local o = { url = url, getenv = no_env, retries = 0 }
      for k, v in pairs(auth) do o[k] = v end
      for k, v in pairs(extra or {}) do o[k] = v end
      list[#list + 1] = { name = next(auth), client = prefect.client(o) }
   end
   return list
end

-- Answers every request with its Authorization header in the places a
-- careless server (or proxy) puts it: the error detail, a nested body, a
-- non-JSON body, a header.
local ECHO_APP = [[
local function json_string(s) return '"' .. s:gsub('[%c"\\]', function(c)
   return string.format("\\u%04x", c:byte()) end) .. '"' end
return { handle = function(_, req)
   local auth = req.headers["authorization"] or ""
   local token = auth:match("^%S+%s+(.*)$") or auth
   local mode = (req.query or ""):match("mode=(%w+)") or req.path:match("/echo/(%w+)/") or "json401"
   local echo = json_string(auth)
   if mode == "html" then
      return 502, { ["Content-Type"] = "text/html" },
         "<html>proxy saw " .. auth .. " / " .. token .. "</html>"
   elseif mode == "text" then
      return 200, { ["Content-Type"] = "text/plain" }, "hello " .. auth .. " " .. token
   elseif mode == "list" then
      return 422, { ["Content-Type"] = "application/json" },
         '{"detail": [{"loc": ["header", ' .. echo .. '], "msg": ' .. json_string(token) .. ', "type": "x"}]}'
   elseif mode == "badjson" then
      return 200, { ["Content-Type"] = "application/json" }, '[{"id": ' .. token .. '}]'
   end
   return 401, { ["Content-Type"] = "application/json", ["WWW-Authenticate"] = auth },
      '{"detail": "Invalid credentials ' .. token .. '", "echo": {"auth": ' .. echo
      .. ', "nested": [' .. json_string(token) .. ']}, "exception_message": ' .. echo .. '}'
end }
]]

-- Answers with 10,000-deep JSON nestings where Prefect answers with a list of runs, a count, a
-- version and an error.
local DEEP_APP = [[
local DEPTH = 10000
local arrays = string.rep("[", DEPTH) .. string.rep("]", DEPTH)
local objects = string.rep('{"a":', DEPTH) .. "1" .. string.rep("}", DEPTH)
local JSON = { ["Content-Type"] = "application/json" }
return { handle = function(_, req)
   local shape = req.path:match("^/(%w+)/") or "arrays"
   local deep = shape == "objects" and objects or arrays
   if req.path:find("/task_runs/filter$") then
      return 200, JSON, '[{"id": "00000000-0000-4000-8000-000000000001", "deep": ' .. deep .. "}]"
   elseif req.path:find("/task_runs/count$") then
      return 200, JSON, deep
   elseif req.path:find("/admin/version$") then
      return 422, JSON, '{"detail": ' .. deep .. "}"
   end
   return 404, JSON, '{"detail": "Not Found"}'
end }
]]

describe("secrets", function()
   local dir, srv, echo
   lazy_setup(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p '" .. dir .. "'"))
      write_file(dir .. "/echo.lua", ECHO_APP)
      srv = test_server.start{ dataset = "fixture", api_key = API_KEY }
      echo = test_server.start{ app_file = dir .. "/echo.lua" }
   end)
   lazy_teardown(function()
      if srv then srv:stop() end
      if echo then echo:stop() end
      if dir then os.execute("rm -rf '" .. dir .. "'") end
   end)

   it("are not in the client table, nor in tostring(client)", function()
      for _, case in ipairs(auth_clients(srv.url)) do
         assert_clean(case.client, case.name)
         local text = tostring(case.client)
         assert.truthy(text:find(case.name == "api_key" and "bearer" or "basic", 1, true), text)
      end
      -- credentials in the URL are refused outright, without echoing them
      local ok, err = pcall(prefect.client, {
         url = srv.origin:gsub("//", "//user:" .. URL_PASSWORD .. "@") .. "/api", getenv = no_env })
      assert.is_false(ok)
      assert.equal("invalid", err.kind)
      assert.is_nil(tostring(err):find(URL_PASSWORD, 1, true), tostring(err))
   end)

   it("are not in a 401 error (a wrong key), raised, traced, polled or returned", function()
      local wrong = "pnu_wrong_" .. API_KEY
      SECRETS[#SECRETS + 1] = wrong
      finally(function() SECRETS[#SECRETS] = nil end)
      local c = prefect.client{ url = srv.url, api_key = wrong, getenv = no_env, retries = 0 }
      local err = check_every_way(c, "401")
      assert.equal("http", err.kind)
      assert.equal(401, err.status)
   end)

   for _, mode in ipairs{ "json401", "list", "html", "text", "badjson" } do
      it("are not in errors about a response that echoes them (" .. mode .. ")", function()
         for _, case in ipairs(auth_clients(echo.origin .. "/echo/" .. mode .. "/api")) do
            local err = check_every_way(case.client, mode .. " " .. case.name)
            assert.truthy(errors.KINDS[err.kind])
            -- the server did answer with the secret: the error still says what it could
            assert.truthy(tostring(err):find("***", 1, true) or err.kind == "decode", tostring(err))
         end
      end)
   end

   it("are not in transport errors (refused, timeout)", function()
      local s = require("socket").bind("127.0.0.1", 0)
      local _, port = s:getsockname()
      s:close()
      for _, case in ipairs(auth_clients("http://127.0.0.1:" .. port .. "/api")) do
         local err = check_every_way(case.client, "refused " .. case.name)
         assert.equal("connect", err.kind)
      end
      local slow = auth_clients(srv.url, { timeout = 0.3, headers = { ["X-Test-Fault"] = "delay_ms=1000" } })
      for _, case in ipairs(slow) do
         local n, err = case.client:count{}
         assert.is_nil(n)
         assert.equal("timeout", err.kind)
         assert_clean(err, "timeout " .. case.name)
      end
      -- TLS errors: see the TLS tests below
   end)

   it("are in the request (the server accepts the key), and nowhere else after a good read", function()
      local c = prefect.client{ url = srv.url, api_key = API_KEY, getenv = no_env, retries = 0 }
      assert.equal(300, c:count{})
      local step = c:task_runs{ limit = 250 }
      local n = 0
      for _ in step do n = n + 1 end
      assert.equal(250, n)
      assert_clean(c, "client after a read")
      local h = c:start{ limit = 10 }
      local got = 0
      repeat
         local runs, done = h:poll(50)
         assert.is_table(runs, tostring(done))
         got = got + #runs
      until done
      assert.equal(10, got)
      assert_clean(h, "finished handle")
   end)

   it("are not in what the library writes: it writes nothing to stdout or stderr", function()
      -- A child interpreter reads with a wrong key and an echoing server, and fails: all it prints
      -- is what the script prints, none of it secret.
      local script = dir .. "/child.lua"
      write_file(script, ([[
         local prefect = require("prefect")
         for _, url in ipairs{ %q, %q } do
            local c = prefect.client{ url = url, api_key = %q, retries = 0, getenv = function() end }
            c:count{}
            c:page{}
            pcall(function() for _ in c:task_runs{} do end end)
            local h = c:start{}
            for _ = 1, 100 do if h:poll(20) == nil then break end end
         end
         io.write("done")
      ]]):format(srv.url, echo.origin .. "/echo/html/api", "pnu_wrong_" .. API_KEY))
      local lua = os.getenv("PREFECT_TEST_LUA") or "lua5.4"
      local p = assert(io.popen(lua .. " '" .. script .. "' 2>&1"))
      local out = p:read("*a")
      p:close()
      assert.equal("done", out)
   end)
end)

describe("refused before anything is sent", function()
   local srv
   lazy_setup(function()
      srv = test_server.start{ dataset = "fixture" }
   end)
   lazy_teardown(function()
      if srv then srv:stop() end
   end)

   local function requests()
      return srv:stats().requests
   end

   it("header values with CR, LF or NUL (the headers option)", function()
      local before = requests()
      for _, value in ipairs{ "a\r\nX-Injected: 1", "a\nb", "a\rb", "a\0b", "\r\n",
         "x\r\n\r\nGET / HTTP/1.1" } do
         local ok, err = pcall(prefect.client, { url = srv.url, getenv = no_env,
            headers = { ["X-Custom"] = value } })
         assert.is_false(ok, ("%q accepted"):format(value))
         assert.is_true(errors.is(err), tostring(err))
         assert.equal("invalid", err.kind)
      end
      for _, name in ipairs{ "X-A\r\nX-B", "X A", "X:A", "", "X-\0" } do
         local ok, err = pcall(prefect.client, { url = srv.url, getenv = no_env, headers = { [name] = "v" } })
         assert.is_false(ok, ("header name %q accepted"):format(name))
         assert.equal("invalid", err.kind)
      end
      assert.equal(before, requests())
   end)

   it("credentials with control characters", function()
      local before = requests()
      for _, o in ipairs{ { api_key = "k\r\nX-Injected: 1" }, { api_key = "k\0" },
         { auth_string = "u:p\nX: 1" } } do
         o.url, o.getenv = srv.url, no_env
         local ok, err = pcall(prefect.client, o)
         assert.is_false(ok)
         assert.equal("invalid", err.kind)
         assert_clean(err, "refused credentials")
      end
      assert.equal(before, requests())
   end)

   it("header lines with CR, LF or NUL given to the transports", function()
      local before = requests()
      local s = core.session{}
      finally(function() s:close() end)
      for _, line in ipairs{ "X-A: a\r\nX-Injected: 1", "X-A: a\nb", "X-A: a\0b", "X-A\r\n: b" } do
         local req, err = s:request{ method = "POST", url = srv.url .. "/task_runs/filter",
            headers = { line }, body = "{}" }
         assert.is_nil(req, ("%q accepted"):format(line))
         assert.equal("invalid", err.kind)
      end
      local t = require("prefect.transport.curl").new{}
      finally(function() t:close() end)
      local req, err = t:request{ method = "POST", url = srv.url .. "/task_runs/filter",
         headers = { ["X-A"] = "a\r\nX-Injected: 1" }, body = "{}" }
      assert.is_nil(req)
      assert.equal("invalid", err.kind)
      assert.equal(before, requests())
   end)

   it("task run ids that are not UUIDs", function()
      local c = prefect.client{ url = srv.url, getenv = no_env, retries = 0 }
      local before = requests()
      local good = "00000000-0000-4000-8000-000000000001"
      for _, id in ipairs{ "../admin/version", good .. "/../../admin/version", good .. "\r\nX-Injected: 1",
         good .. "\n", good .. "\0", "%2e%2e%2fadmin", good .. "?fault=reset", good .. "#x", " " .. good,
         good:sub(1, 35), "", 42, false } do
         local ok, err = pcall(c.task_run, c, id)
         assert.is_false(ok, ("id %q accepted"):format(tostring(id)))
         assert.is_true(errors.is(err), tostring(err))
         assert.equal("invalid", err.kind)
      end
      assert.equal(before, requests())
      -- a well-formed id is sent (and is not found)
      local run, err = c:task_run(good)
      assert.is_nil(run)
      assert.equal(404, err.status)
      assert.equal(before + 1, requests())
   end)

   it("a URL with CR, LF or a space in it", function()
      local before = requests()
      for _, url in ipairs{ srv.url .. "\r\nX-Injected: 1", srv.url .. "\n", srv.url .. " x",
         srv.url .. "\0" } do
         local ok, c = pcall(prefect.client, { url = url, getenv = no_env, retries = 0 })
         if ok then
            local n, err = c:count{}
            assert.is_nil(n, ("%q was used"):format(url))
            assert.truthy(err.kind == "invalid" or err.kind == "connect", tostring(err))
         else
            assert.equal("invalid", c.kind)
         end
      end
      assert.equal(before, requests())
   end)
end)

describe("TLS", function()
   local tls = require("tls")
   local material, srv
   lazy_setup(function()
      material = tls.make()
      srv = test_server.start{ dataset = "fixture", tls = { cert = material.cert, key = material.key } }
   end)
   lazy_teardown(function()
      if srv then srv:stop() end
      if material then material.remove() end
   end)

   it("is verified by default: a certificate from an unknown CA is refused with kind tls", function()
      assert.truthy(srv.url:find("^https://"))
      local before = srv:stats().requests
      local c = prefect.client{ url = srv.url, api_key = API_KEY, getenv = no_env, retries = 0 }
      local n, err = c:count{}
      assert.is_nil(n)
      assert.equal("tls", err.kind, tostring(err))
      assert_clean(err, "tls error")
      local ok, raised = pcall(function() for _ in c:task_runs{} do end end)
      assert.is_false(ok)
      assert.equal("tls", raised.kind)
      -- and a CA that did not sign it does not help
      local other = prefect.client{ url = srv.url, ca_file = material.other_ca_file, getenv = no_env,
         retries = 0 }
      local n2, err2 = other:count{}
      assert.is_nil(n2)
      assert.equal("tls", err2.kind, tostring(err2))
      assert.equal(before, srv:stats().requests)
   end)

   it("trusts the CA it is given, or nothing when told insecure = true", function()
      local c = prefect.client{ url = srv.url, ca_file = material.ca_file, getenv = no_env, retries = 0 }
      assert.equal(300, c:count{})
      local i = prefect.client{ url = srv.url, insecure = true, getenv = no_env, retries = 0 }
      assert.equal(300, i:count{})
   end)
end)

describe("hostile responses end in a clean error with bounded memory", function()
   local MIB = 1024 * 1024
   local BOUND_KIB = 100 * 1024

   local function status_kib(field)
      local f = assert(io.open("/proc/self/status"))
      local text = f:read("*a")
      f:close()
      return tonumber(text:match(field .. ":%s*(%d+)"))
   end

   -- Runs fn; returns what it returns and by how much the peak resident size
   -- grew over the resident size before (KiB). The peak is reset first
   -- (clear_refs 5) when the kernel allows, so earlier specs do not hide growth.
   local function peak_growth(fn)
      collectgarbage("collect")
      local f = io.open("/proc/self/clear_refs", "w")
      local reset = f and f:write("5") and f:close()
      local rss0 = status_kib("VmRSS")
      local hwm0 = status_kib("VmHWM")
      local results = { fn() }
      local hwm1 = status_kib("VmHWM")
      local base = reset and rss0 or hwm0
      return hwm1 - base, unpack(results)
   end

   local dir, srv, deep
   lazy_setup(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p '" .. dir .. "'"))
      write_file(dir .. "/deep.lua", DEEP_APP)
      srv = test_server.start{ dataset = "fixture" }
      deep = test_server.start{ app_file = dir .. "/deep.lua" }
   end)
   lazy_teardown(function()
      if srv then srv:stop() end
      if deep then deep:stop() end
      if dir then os.execute("rm -rf '" .. dir .. "'") end
   end)

   local function client_with(fault, extra)
      local o = { url = srv.url, getenv = no_env, retries = 0, headers = { ["X-Test-Fault"] = fault } }
      for k, v in pairs(extra or {}) do o[k] = v end
      return prefect.client(o)
   end

   it("a gzip bomb (1 GiB inflated) -> too_large, with the default max_response", function()
      local c = client_with("gzip_bomb=1073741824")
      local grew, ok, err = peak_growth(function()
         return pcall(function() for _ in c:task_runs{} do end end)
      end)
      assert.is_false(ok)
      assert.equal("too_large", err.kind, tostring(err))
      assert.is_true(grew < BOUND_KIB, ("peak memory grew by %d KiB"):format(grew))
      -- a count must be a number: the inflated body's first byte, '[', already says it is not one
      local n, cerr = c:count{}
      assert.is_nil(n)
      assert.equal("protocol", cerr.kind, tostring(cerr))
      assert.equal(1, cerr.offset, tostring(cerr))
   end)

   -- With libcurl, a response's bytes are taken in as fast as they arrive, whether or not the runs are
   -- read yet, and the iterator has two requests in flight (the page and the prefetched one, both
   -- answered with the huge body here): the peak grows by about 3 x max_response (measured: 16 MiB ->
   -- 50 MiB, 64 MiB -> 200 MiB), so this test uses 16 MiB. The default 512 MiB would let such a
   -- server make the client hold well over 1 GiB (reported; see docs/reliability.md).
   it("a 1 GiB body -> too_large (or protocol), with max_response = 16 MiB", function()
      local c = client_with("huge=1073741824", { max_response = 16 * MIB })
      local grew, ok, err = peak_growth(function()
         return pcall(function() for _ in c:task_runs{} do end end)
      end)
      assert.is_false(ok)
      -- protocol: the body's runs are more than the page asked for, which the iterator may refuse
      -- before the size limit is reached
      assert.truthy(err.kind == "too_large" or err.kind == "protocol", tostring(err))
      assert.is_true(grew < BOUND_KIB, ("peak memory grew by %d KiB"):format(grew))
      -- a count answered with an array is refused at its first element, or for its size
      local n, cerr = c:count{}
      assert.is_nil(n)
      assert.truthy(cerr.kind == "too_large" or cerr.kind == "protocol", tostring(cerr))
   end)

   for _, shape in ipairs{ "arrays", "objects" } do
      it("10,000-deep " .. shape .. " -> decode (runs), protocol (count) and http (an error body)", function()
         local c = prefect.client{ url = deep.origin .. "/" .. shape .. "/api", getenv = no_env, retries = 0 }
         local grew, ok, err = peak_growth(function()
            return pcall(function() for _ in c:task_runs{} do end end)
         end)
         assert.is_false(ok)
         assert.equal("decode", err.kind, tostring(err))
         assert.truthy(tostring(err):find("deep", 1, true), tostring(err))
         assert.is_true(grew < BOUND_KIB, ("peak memory grew by %d KiB"):format(grew))
         -- a count must be a number: refused at its first byte, before any depth
         local n, cerr = c:count{}
         assert.is_nil(n)
         assert.equal("protocol", cerr.kind, tostring(cerr))
         assert.equal(1, cerr.offset, tostring(cerr))
         local v, verr = c:server_version()
         assert.is_nil(v)
         assert.equal("http", verr.kind, tostring(verr))
         assert.equal(422, verr.status)
         -- the decoder on its own, fed the same bytes
         local deep_text = shape == "arrays" and (string.rep("[", 10000) .. string.rep("]", 10000))
            or (string.rep('{"a":', 10000) .. "1" .. string.rep("}", 10000))
         local value, derr = core.decode(deep_text)
         assert.is_nil(value)
         assert.equal("decode", derr.kind)
         assert.truthy(derr.message:find("deep", 1, true), derr.message)
      end)
   end
end)

describe("secrets inside nginx (the ngx transport)", function()
   local nginx = require("nginx")
   local available, why = nginx.available()
   if not available then
      it("is skipped", function() pending("skipped: " .. why) end)
      return
   end

   -- A handler that reads with each auth mode from a server that refuses the key, one that echoes
   -- it back, and one that resets the connection, and answers with every error's text. What it
   -- answers and everything nginx logs meanwhile (ngx_lua logs socket errors) must be clean.
   local HANDLER = [[
      local prefect = require("prefect")
      local out = {}
      for _, url in ipairs{ %q, %q, %q } do
         for _, auth in ipairs{ { api_key = %q }, { auth_string = %q } } do
            local o = { url = url, retries = 0, getenv = function() end, transport = "ngx" }
            for k, v in pairs(auth) do o[k] = v end
            local c = prefect.client(o)
            local _, err = c:count{}
            local ok, raised = xpcall(function() for _ in c:task_runs{} do end end, debug.traceback)
            out[#out + 1] = tostring(c) .. " | " .. tostring(err) .. " | " .. tostring(ok)
               .. " | " .. tostring(raised) .. " | " .. tostring(c:task_runs{})
         end
      end
      ngx.say(table.concat(out, "\n"))
   ]]

   local dir, srv, echo, n
   lazy_setup(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p '" .. dir .. "'"))
      write_file(dir .. "/echo.lua", ECHO_APP)
      srv = test_server.start{ dataset = "fixture", api_key = API_KEY }
      echo = test_server.start{ app_file = dir .. "/echo.lua" }
      local wrong = "pnu_wrong_" .. API_KEY
      write_file(dir .. "/handler.lua", HANDLER:format(srv.url, echo.origin .. "/echo/json401/api",
         echo.origin .. "/echo/list/api", wrong, AUTH_STRING))
      n = nginx.start{
         -- info: everything but nginx's debug log, which (in a --with-debug build) copies the raw
         -- response lines a server sends, echoed secrets included
         log_level = "info",
         http = "  lua_socket_log_errors on;",
         locations = "    location = /secrets { content_by_lua_block { loadfile('" .. dir
            .. "/handler.lua')() } }\n"
            .. "    location = /reset { content_by_lua_block {\n"
            .. "      local c = require('prefect').client{ url = '" .. srv.url .. "', api_key = '" .. wrong
            .. "', retries = 0, getenv = function() end, transport = 'ngx',"
            .. " headers = { ['X-Test-Fault'] = 'reset' } }\n"
            .. "      ngx.say(tostring(select(2, c:count{}))) } }",
      }
   end)
   lazy_teardown(function()
      if n then n:stop() end
      if srv then srv:stop() end
      if echo then echo:stop() end
      if dir then os.execute("rm -rf '" .. dir .. "'") end
   end)

   it("are not in errors, tostring, tracebacks or nginx's log", function()
      local wrong = "pnu_wrong_" .. API_KEY
      SECRETS[#SECRETS + 1] = wrong
      finally(function() SECRETS[#SECRETS] = nil end)
      local status, body = n:get("/secrets")
      assert.equal(200, status, body)
      assert.truthy(body:find("http 401", 1, true), body)
      assert.truthy(body:find("http 422", 1, true), body)
      local status2, body2 = n:get("/reset")
      assert.equal(200, status2, body2)
      assert.truthy(body2:find("connect", 1, true), body2)
      assert_clean(body .. body2, "what the handler answered")
      local log = n:error_log()
      assert.truthy(#log > 0)
      assert_clean(log, "nginx's error log")
   end)
end)
