-- prefect.core's HTTP transport (libcurl multi) against the project's test
-- server over real sockets: blocking and non-blocking reads, every fault the
-- server can inject, keep-alive, TLS, limits and clean shutdown.

local core = require("prefect.core")
local socket = require("socket")
local test_server = require("test_server")
local tls = require("tls")

-- Timing bounds are loose, and looser still under valgrind.
local SLACK = os.getenv("PREFECT_UNDER_VALGRIND") and 20 or 1
local PAGE = '{"limit": 20}'
local MiB = 1024 * 1024

local function now()
   return socket.gettime()
end

local function page_request(s, base_url, fault, opts)
   opts = opts or {}
   local headers = { "Content-Type: application/json" }
   local url = base_url .. "/task_runs/filter"
   if fault and opts.query then
      -- the server's redirect drops only a fault given in the query
      url = url .. "?fault=" .. fault:gsub("[^%w_.-]", function(c)
         return string.format("%%%02X", c:byte())
      end)
   elseif fault then
      headers[#headers + 1] = "X-Test-Fault: " .. fault
   end
   local decoder
   if not opts.no_decoder then decoder = core.decoder(opts.decode) end
   return s:request{
      method = "POST", url = url, headers = headers,
      body = opts.body or PAGE, decoder = decoder,
   }
end

-- Reads a response with the blocking calls: response(), then next() until
-- the end or an error. Fails the test if next() never stops.
local function read_blocking(req)
   local out = { elements = {} }
   local status, headers = req:response()
   if not status then
      out.err = headers
      return out
   end
   out.status, out.headers = status, headers
   for _ = 1, 100000 do
      local element, err = req:next()
      if element == nil then
         out.err, out.ended = err, err == nil
         return out
      end
      out.elements[#out.elements + 1] = element
   end
   error("next() kept returning elements")
end

-- Reads a response with poll(wait_ms) only, timing every call.
local function read_polling(req, wait_ms, limit_s)
   local out = { elements = {}, polls = 0, longest = 0, early = 0 }
   local deadline = now() + (limit_s or 60) * SLACK
   while now() < deadline do
      local t0 = now()
      local list, done = req:poll(wait_ms or 20)
      local took = now() - t0
      if took > out.longest then out.longest = took end
      out.polls = out.polls + 1
      if not list then
         out.err = done
         return out
      end
      for _, element in ipairs(list) do out.elements[#out.elements + 1] = element end
      if #list > 0 and not done then out.early = out.early + 1 end
      if done then
         out.ended = true
         return out
      end
   end
   error("poll() never finished")
end

local function ids(elements)
   local list = {}
   for i, run in ipairs(elements) do list[i] = run.id end
   return list
end

local function free_port()
   local sock = assert(socket.bind("127.0.0.1", 0))
   local _, port = sock:getsockname()
   sock:close()
   return port
end

describe("prefect.core transport", function()
   local srv, base

   setup(function()
      srv = test_server.start{ dataset = { generate = 1000, seed = 1, shape = 3 } }
      base = srv.url
   end)

   teardown(function()
      if srv then srv:stop() end
   end)

   describe("reads a page", function()
      it("blocking: status, lowercase headers, then one element per run and nil at the end", function()
         local s = core.session{}
         local out = read_blocking(assert(page_request(s, base)))
         assert.are.equal(200, out.status)
         assert.truthy(out.headers["content-type"]:find("json"))
         assert.is_true(out.ended)
         assert.are.equal(20, #out.elements)
         assert.are.equal("string", type(out.elements[1].id))
         s:close()
      end)

      it("non-blocking: poll hands out the same runs and then done", function()
         local s = core.session{}
         local blocking = read_blocking(assert(page_request(s, base)))
         local polled = read_polling(assert(page_request(s, base)))
         assert.is_true(polled.ended)
         assert.are.same(ids(blocking.elements), ids(polled.elements))
         s:close()
      end)

      it("with Content-Length when nothing is compressed", function()
         local s = core.session{ accept_encoding = false }
         local req = assert(page_request(s, base, nil, { no_decoder = true }))
         local status, headers = req:response()
         assert.are.equal(200, status)
         assert.is_nil(headers["content-encoding"])
         local body = assert(req:body())
         assert.are.equal(tostring(#body), headers["content-length"])
         assert.are.equal(20, #assert(core.decode(body)))
         s:close()
      end)

      it("chunked, blocking and non-blocking", function()
         local s = core.session{}
         local req = assert(page_request(s, base, "chunked"))
         local out = read_blocking(req)
         assert.are.equal("chunked", out.headers["transfer-encoding"])
         assert.is_true(out.ended)
         assert.are.equal(20, #out.elements)
         local polled = read_polling(assert(page_request(s, base, "chunked")))
         assert.is_true(polled.ended)
         assert.are.equal(20, #polled.elements)
         s:close()
      end)

      it("gzip-compressed, decompressed by libcurl to the same runs", function()
         local plain = core.session{ accept_encoding = false }
         local gz = core.session{}
         local a = read_blocking(assert(page_request(plain, base)))
         local b = read_blocking(assert(page_request(gz, base)))
         assert.is_nil(a.headers["content-encoding"])
         assert.are.equal("gzip", b.headers["content-encoding"])
         assert.are.same(ids(a.elements), ids(b.elements))
         local body = assert(assert(page_request(gz, base, nil, { no_decoder = true })):body())
         assert.are.equal("[", body:sub(1, 1))
         plain:close()
         gz:close()
      end)

      it("streams: poll hands out runs before the body has fully arrived", function()
         local s = core.session{}
         local out = read_polling(assert(page_request(s, base, "drip_bytes=2048; drip_ms=30")), 10)
         assert.is_true(out.ended)
         assert.are.equal(20, #out.elements)
         assert.is_true(out.early > 0)
         s:close()
      end)

      it("passes the decoder's options through (fields)", function()
         local s = core.session{}
         local out = read_blocking(assert(page_request(s, base, nil, { decode = { fields = { "id" } } })))
         assert.are.equal(20, #out.elements)
         for _, run in ipairs(out.elements) do
            assert.are.same({ "id" }, (function()
               local keys = {}
               for k in pairs(run) do keys[#keys + 1] = k end
               return keys
            end)())
         end
         s:close()
      end)
   end)

   -- Every fault the test server injects, read both ways. `kind` is the error
   -- the reader must end with; without it the read must succeed.
   local faults = {
      { fault = "status=503", status = 503, kind = "protocol" },
      { fault = "status=429; retry_after=2", status = 429, kind = "protocol",
        header = { "retry-after", "^2$" } },
      { fault = "status=429; retry_after_date=2", status = 429, kind = "protocol",
        header = { "retry-after", "GMT$" } },
      { fault = "delay_ms=100", status = 200, elements = 20 },
      { fault = "delay_ms=3000", session = { timeout = 0.3 }, kind = "timeout" },
      { fault = "drip_bytes=512; drip_ms=2", status = 200, elements = 20 },
      { fault = "drip_bytes=1; drip_ms=1500", session = { stall_timeout = 1 }, kind = "timeout" },
      { fault = "cut_after=1000", session = { accept_encoding = false }, status = 200, kind = "protocol" },
      { fault = "cut_after=1000; chunked", session = { accept_encoding = false }, status = 200,
        kind = "protocol" },
      { fault = "cut_after=300", status = 200, kind = "protocol" }, -- gzip cut short
      { fault = "reset", kind = "connect" },
      { fault = "invalid_json", status = 200, kind = "decode" },
      { fault = "html; status=200", status = 200, kind = "protocol", body = "<" },
      { fault = "html; status=502", status = 502, kind = "protocol", body = "<" },
      { fault = "content_type=text/plain", status = 200, kind = "protocol", body = "^%[" },
      { fault = "huge=1073741824", session = { max_response = MiB }, status = 200, kind = "too_large" },
      { fault = "gzip_bomb=1073741824", session = { max_response = 8 * MiB }, status = 200,
        kind = "too_large" },
      { fault = "redirect", query = true, status = 200, elements = 20 },
      { fault = "chunked", status = 200, elements = 20, header = { "transfer-encoding", "^chunked$" } },
   }

   local function check_outcome(case, out)
      if case.kind then
         assert.is_not_true(out.ended, "a failed response must not end like a success")
         assert.is_table(out.err)
         assert.are.equal(case.kind, out.err.kind, out.err.message)
         assert.is_string(out.err.message)
         assert.truthy(out.err.url:find("/task_runs/filter", 1, true))
      else
         assert.is_nil(out.err and out.err.message)
         assert.is_true(out.ended)
         assert.are.equal(case.elements, #out.elements)
      end
   end

   describe("fault", function()
      for _, case in ipairs(faults) do
         it(case.fault .. " (blocking)", function()
            local s = core.session(case.session)
            local req = assert(page_request(s, base, case.fault, { query = case.query }))
            local t0 = now()
            local out = read_blocking(req)
            if case.status then assert.are.equal(case.status, out.status) end
            if case.header then
               assert.truthy((out.headers[case.header[1]] or ""):find(case.header[2]))
            end
            check_outcome(case, out)
            if case.body then
               if case.status then assert.are.equal(case.status, out.err.status) end
               local body = assert(req:body())
               assert.truthy(body:find(case.body))
            end
            assert.is_true(now() - t0 < 20 * SLACK, "the request got stuck")
            s:close()
         end)

         it(case.fault .. " (non-blocking)", function()
            local s = core.session(case.session)
            local req = assert(page_request(s, base, case.fault, { query = case.query }))
            local out = read_polling(req, 20)
            check_outcome(case, out)
            -- poll(20) never blocks much longer than 20 ms, whatever the server does
            assert.is_true(out.longest < 0.25 * SLACK, "a poll took " .. out.longest .. " s")
            if case.status then assert.are.equal(case.status, (req:response(0))) end
            s:close()
         end)
      end

      it("fail_first=2: the first two requests with a key fail, then it works", function()
         local s = core.session{}
         local key = "k" .. tostring(os.time()) .. tostring(math.random(1e9))
         local fault = "fail_first=2; key=" .. key .. "; status=503"
         assert.are.equal(503, (assert(page_request(s, base, fault)):response()))
         assert.are.equal(503, (assert(page_request(s, base, fault)):response()))
         local out = read_blocking(assert(page_request(s, base, fault)))
         assert.are.equal(200, out.status)
         assert.are.equal(20, #out.elements)
         s:close()
      end)

      it("a connection refused is kind connect, blocking and non-blocking", function()
         local s = core.session{}
         local url = "http://127.0.0.1:" .. free_port() .. "/api"
         local out = read_blocking(assert(page_request(s, url)))
         assert.are.equal("connect", out.err.kind)
         out = read_polling(assert(page_request(s, url)))
         assert.are.equal("connect", out.err.kind)
         s:close()
      end)
   end)

   describe("waits", function()
      it("response(timeout_ms) returns false until the headers are in", function()
         local s = core.session{}
         local req = assert(page_request(s, base, "delay_ms=600"))
         local t0 = now()
         assert.is_false(req:response(0))
         assert.is_true(now() - t0 < 0.1 * SLACK)
         t0 = now()
         assert.is_false(req:response(50))
         local waited = now() - t0
         assert.is_true(waited >= 0.045 and waited < 0.3 * SLACK, "waited " .. waited)
         assert.are.equal(200, (req:response()))
         s:close()
      end)

      it("poll(0) never waits and poll(ms) waits at most about ms", function()
         local s = core.session{}
         local req = assert(page_request(s, base, "delay_ms=800"))
         local t0 = now()
         local list, done = req:poll(0)
         assert.is_true(now() - t0 < 0.05 * SLACK)
         assert.are.same({}, list)
         assert.is_false(done)
         t0 = now()
         list = req:poll(100)
         local waited = now() - t0
         assert.are.same({}, list)
         assert.is_true(waited >= 0.09 and waited < 0.4 * SLACK, "waited " .. waited)
         local out = read_polling(req, 0)
         assert.are.equal(20, #out.elements)
         s:close()
      end)
   end)

   describe("connections", function()
      it("reads several pages over ONE keep-alive connection", function()
         local s = core.session{}
         local before = srv:stats()
         for page = 0, 3 do
            local body = string.format('{"limit": 20, "offset": %d}', page * 20)
            local out = read_blocking(assert(page_request(s, base, nil, { body = body })))
            assert.are.equal(20, #out.elements)
         end
         -- non-decoded and polled requests go over it too
         assert(assert(page_request(s, base, nil, { no_decoder = true })):body())
         read_polling(assert(page_request(s, base)))
         local after = srv:stats()
         assert.are.equal(1, after.connections - before.connections)
         assert.are.equal(6, after.requests - before.requests)
         s:close()
      end)

      it("runs two requests at once: pumping one moves the other", function()
         local s = core.session{}
         local a = assert(page_request(s, base, "delay_ms=500"))
         local b = assert(page_request(s, base, "delay_ms=500"))
         local t0 = now()
         assert.are.equal(200, (a:response()))
         assert.are.equal(200, (b:response()))
         -- one after the other they would take 1 s: b moved on while we waited on a
         assert.is_true(now() - t0 < 0.9 * SLACK, "the two waits did not overlap")
         local na, nb = 0, 0
         for _ = 1, 25 do
            if a:next() then na = na + 1 end
            if b:next() then nb = nb + 1 end
         end
         assert.are.equal(20, na)
         assert.are.equal(20, nb)
         s:close()
      end)

      it("polls eight requests in flight round-robin to the end, each with its own runs", function()
         local s = core.session{}
         local reqs, got, done = {}, {}, {}
         for i = 1, 8 do
            local body = string.format('{"limit": 20, "offset": %d}', (i - 1) * 20)
            reqs[i] = assert(page_request(s, base, i % 2 == 0 and "drip_bytes=4096; drip_ms=5" or nil,
               { body = body }))
            got[i] = {}
         end
         local deadline, left = now() + 30 * SLACK, 8
         while left > 0 and now() < deadline do
            for i, req in ipairs(reqs) do
               if not done[i] then
                  local list, finished = req:poll(0)
                  assert.is_table(list, type(finished) == "table" and finished.message or nil)
                  for _, run in ipairs(list) do got[i][#got[i] + 1] = run.id end
                  if finished then
                     done[i], left = true, left - 1
                  end
               end
            end
            socket.sleep(0.001)
         end
         assert.are.equal(0, left)
         local seen = {}
         for i = 1, 8 do
            assert.are.equal(20, #got[i])
            for _, id in ipairs(got[i]) do
               assert.is_nil(seen[id], "a run came twice")
               seen[id] = true
            end
         end
         s:close()
      end)

      it("keeps other requests moving while the caller works through ready runs", function()
         local s = core.session{}
         local current = assert(page_request(s, base))
         assert.are.equal(200, (current:response()))
         -- asked for after this page arrived, as a client prefetching the next one does
         local following = assert(page_request(s, base, "delay_ms=300"))
         local n = 0
         while current:next() do
            n = n + 1
            socket.sleep(0.025) -- the caller's own work on each run
         end
         assert.are.equal(20, n)
         -- the next page was requested, waited for and received meanwhile
         local list, done = following:poll(0)
         assert.are.equal(20, #list)
         assert.is_true(done)
         s:close()
      end)

      it("closing a request mid-transfer ends it as aborted; the session goes on", function()
         local s = core.session{}
         local req = assert(page_request(s, base, "drip_bytes=256; drip_ms=20"))
         assert.is_table(req:next())
         req:close()
         req:close() -- twice is fine
         local element, err = req:next()
         assert.is_nil(element)
         assert.are.equal("aborted", err.kind)
         assert.are.equal("aborted", select(2, req:poll(0)).kind)
         local out = read_blocking(assert(page_request(s, base)))
         assert.are.equal(20, #out.elements)
         s:close()
      end)

      it("closing the session with requests in flight aborts them and frees everything", function()
         local s = core.session{}
         local a = assert(page_request(s, base, "drip_bytes=256; drip_ms=20"))
         local b = assert(page_request(s, base, "delay_ms=300"))
         local done = assert(page_request(s, base, nil, { no_decoder = true }))
         assert(done:body())
         assert.is_table(a:next())
         s:close()
         s:close()
         assert.are.equal("aborted", select(2, a:next()).kind)
         assert.are.equal("aborted", select(2, b:response()).kind)
         assert.are.equal("aborted", select(2, b:poll(10)).kind)
         -- a request that had finished keeps its body
         assert.are.equal("[", assert(done:body()):sub(1, 1))
         local req, err = page_request(s, base)
         assert.is_nil(req)
         assert.are.equal("invalid", err.kind)
         a, b, done = nil, nil, nil -- luacheck: ignore
         collectgarbage()
         collectgarbage()
      end)

      it("requests and sessions dropped mid-transfer are collected safely", function()
         local s = core.session{}
         for _ = 1, 4 do
            local req = assert(page_request(s, base, "drip_bytes=512; drip_ms=10"))
            assert.is_table(req:next())
         end
         collectgarbage()
         collectgarbage()
         local out = read_blocking(assert(page_request(s, base)))
         assert.are.equal(20, #out.elements)
         do
            local s2 = core.session{}
            local req = assert(page_request(s2, base, "drip_bytes=512; drip_ms=10")) -- luacheck: ignore
         end
         collectgarbage()
         collectgarbage()
         s:close()
      end)

      if _VERSION == "Lua 5.4" then
         it("to-be-closed variables close requests and sessions (Lua 5.4)", function()
            local chunk = assert(load([[
               local core, page_request, base = ...
               local kept
               do
                  local s <close> = core.session{}
                  local req <close> = assert(page_request(s, base, "drip_bytes=256; drip_ms=20"))
                  assert(req:next())
                  kept = req
               end
               return kept
            ]]))
            local req = chunk(core, page_request, base)
            local element, err = req:next()
            assert.is_nil(element)
            assert.are.equal("aborted", err.kind)
         end)
      end
   end)

   describe("refuses before sending", function()
      it("header names or values with CR, LF or NUL, and bad methods and URLs", function()
         local s = core.session{}
         local before = srv:stats()
         local bad = {
            { headers = { "X-Test: a\r\nX-Injected: 1" } },
            { headers = { "X-Fine: 1", "X-Also-Fine: 2", "X-Test: a\nb" } },
            { headers = { "X-Test: a\nb" } },
            { headers = { ["X-Test"] = "a\rb" } },
            { headers = { ["X-Test"] = "a\0b" } },
            { headers = { ["X-Te\nst"] = "a" } },
            { headers = { "X Test: a" } },
            { headers = { "no colon here" } },
            { method = "GET\r\nX-Injected: 1" },
            { method = "" },
            { url = base .. "/task_runs/filter\r\nX-Injected: 1" },
            { url = base .. "/task runs" },
         }
         for i, spec in ipairs(bad) do
            local req, err = s:request{
               method = spec.method or "POST", url = spec.url or (base .. "/task_runs/filter"),
               headers = spec.headers, body = PAGE,
            }
            assert.is_nil(req, "case " .. i)
            assert.are.equal("invalid", err.kind, "case " .. i)
            assert.is_string(err.message)
         end
         local after = srv:stats()
         assert.are.equal(before.requests, after.requests)
         assert.are.equal(before.connections, after.connections)
         s:close()
      end)

      it("never quotes a refused header's value in the error", function()
         local s = core.session{}
         local _, err = s:request{ url = base, headers = { ["Authorization"] = "Bearer sekrit\r\n" } }
         assert.are.equal("invalid", err.kind)
         assert.is_nil(err.message:find("sekrit", 1, true))
         s:close()
      end)

      it("misuse raises at once", function()
         assert.has_error(function() core.session{ timeout = "soon" } end)
         assert.has_error(function() core.session{ no_such_option = 1 } end)
         assert.has_error(function() core.session{ max_response = 0 } end)
         assert.has_error(function() core.session{ ca_file = "/x", proxy = "http://p:1", user_agent = 5 } end)
         local s = core.session{}
         assert.has_error(function() s:request{} end)
         assert.has_error(function() s:request{ url = base, decoder = "no" } end)
         assert.has_error(function() s:request{ url = base, headers = "X: y" } end)
         local req = assert(s:request{ url = base .. "/task_runs/filter", method = "POST", body = PAGE })
         assert.has_error(function() req:next() end)
         assert.has_error(function() req:poll() end)
         s:close()
      end)
   end)

   describe("error values", function()
      it("carry no credentials and no query values in their URL", function()
         local s = core.session{ timeout = 0.3 }
         local port = free_port()
         local _, err = s:request{ url = "http://alice:hunter2@127.0.0.1:" .. port
            .. "/api/x?api_key=topsecret&page=2#frag" }:response()
         assert.are.equal("connect", err.kind)
         assert.are.equal("http://127.0.0.1:" .. port .. "/api/x?api_key=&page=", err.url)
         local url = base:gsub("^http://", "http://bob:pa55word@") .. "/task_runs/filter?token=abc123"
         local out = read_blocking(assert(s:request{
            method = "POST", url = url, body = PAGE, decoder = core.decoder(),
            headers = { "X-Test-Fault: delay_ms=2000" },
         }))
         assert.are.equal("timeout", out.err.kind)
         for _, secret in ipairs({ "bob", "pa55word", "abc123" }) do
            assert.is_nil(out.err.url:find(secret, 1, true))
            assert.is_nil(out.err.message:find(secret, 1, true))
         end
         assert.truthy(out.err.url:find("token=", 1, true))
         s:close()
      end)

      it("say why: body() of a decoded response, next() of a non-JSON one", function()
         local s = core.session{}
         local req = assert(page_request(s, base))
         assert.is_table(req:next())
         local body, err = req:body()
         assert.is_nil(body)
         assert.are.equal("invalid", err.kind)
         s:close()
      end)
   end)

   describe("sends", function()
      local echo, app_file

      setup(function()
         app_file = os.tmpname()
         local f = assert(io.open(app_file, "w"))
         f:write([[
            local cjson = require("cjson")
            return { handle = function(_, req)
               return 200, { ["Content-Type"] = "application/json" }, cjson.encode({
                  method = req.method, path = req.path, query = req.query or "",
                  headers = req.headers, body = req.body or "",
               })
            end }
         ]])
         f:close()
         echo = test_server.start{ app_file = app_file }
      end)

      teardown(function()
         if echo then echo:stop() end
         if app_file then os.remove(app_file) end
      end)

      local function echoed(s, spec)
         local req = assert(s:request(spec))
         local status = assert(req:response())
         assert.are.equal(200, status)
         return assert(core.decode(assert(req:body())))
      end

      it("the method, headers (list and map forms), body bytes and User-Agent", function()
         local s = core.session{}
         local got = echoed(s, {
            method = "PUT", url = echo.origin .. "/x/y?a=1",
            headers = { "X-One: 1", ["X-Two"] = "two words", "X-Empty:" },
            body = "bin\0ary\r\n",
         })
         assert.are.equal("PUT", got.method)
         assert.are.equal("/x/y", got.path)
         assert.are.equal("a=1", got.query)
         assert.are.equal("1", got.headers["x-one"])
         assert.are.equal("two words", got.headers["x-two"])
         assert.are.equal("", got.headers["x-empty"])
         assert.are.equal("bin\0ary\r\n", got.body)
         assert.are.equal("lua-prefect/" .. core._VERSION, got.headers["user-agent"])
         -- the caller names a body's type; libcurl's form default is not sent
         assert.is_nil(got.headers["content-type"])
         assert.is_nil(got.headers["expect"])
         assert.truthy(got.headers["accept-encoding"]:find("gzip", 1, true))
         s:close()
      end)

      it("GET and POST without a body; options user_agent and accept_encoding", function()
         local s = core.session{ user_agent = "probe/1", accept_encoding = false }
         local got = echoed(s, { url = echo.origin .. "/get" })
         assert.are.equal("GET", got.method)
         assert.are.equal("", got.body)
         assert.are.equal("probe/1", got.headers["user-agent"])
         assert.is_nil(got.headers["accept-encoding"])
         got = echoed(s, { method = "POST", url = echo.origin .. "/post" })
         assert.are.equal("POST", got.method)
         assert.are.equal("0", got.headers["content-length"])
         got = echoed(s, {
            method = "POST", url = echo.origin .. "/post", body = "x=1",
            headers = { ["content-type"] = "application/x-www-form-urlencoded" },
         })
         assert.are.equal("application/x-www-form-urlencoded", got.headers["content-type"])
         s:close()
      end)

      it("through the proxy option, and around it with noproxy", function()
         local dead_proxy = "http://127.0.0.1:" .. free_port()
         local s = core.session{ proxy = dead_proxy }
         local _, err = assert(s:request{ url = echo.origin .. "/p" }):response()
         assert.are.equal("connect", err.kind)
         s:close()
         s = core.session{ proxy = dead_proxy, noproxy = "127.0.0.1" }
         assert.are.equal("GET", echoed(s, { url = echo.origin .. "/p" }).method)
         s:close()
      end)
   end)

   describe("TLS", function()
      local certs, tls_srv

      setup(function()
         certs = tls.make()
         tls_srv = test_server.start{
            dataset = { generate = 100, seed = 1, shape = 3 },
            tls = { cert = certs.cert, key = certs.key },
         }
      end)

      teardown(function()
         if tls_srv then tls_srv:stop() end
         if certs then certs.remove() end
      end)

      it("refuses a server whose CA is not trusted (kind tls), blocking and non-blocking", function()
         assert.truthy(tls_srv.url:find("^https://"))
         local s = core.session{}
         local out = read_blocking(assert(page_request(s, tls_srv.url)))
         assert.are.equal("tls", out.err.kind)
         out = read_polling(assert(page_request(s, tls_srv.url)))
         assert.are.equal("tls", out.err.kind)
         s:close()
         local other = core.session{ ca_file = certs.other_ca_file }
         out = read_blocking(assert(page_request(other, tls_srv.url)))
         assert.are.equal("tls", out.err.kind)
         other:close()
      end)

      it("works with ca_file naming the CA, over one connection", function()
         local s = core.session{ ca_file = certs.ca_file }
         local before = tls_srv:stats()
         for _ = 1, 3 do
            local out = read_blocking(assert(page_request(s, tls_srv.url)))
            assert.is_true(out.ended)
            assert.are.equal(20, #out.elements)
         end
         assert.are.equal(1, tls_srv:stats().connections - before.connections)
         s:close()
      end)

      it("works with ca_path and with http2 asked for (falls back to HTTP/1.1)", function()
         -- a CA directory needs the hashed names OpenSSL looks certificates up by
         assert(os.execute("openssl rehash " .. certs.dir .. " >/dev/null 2>&1") ~= false)
         local s = core.session{ ca_path = certs.dir, http2 = true }
         local out = read_blocking(assert(page_request(s, tls_srv.url)))
         assert.are.equal(20, #out.elements)
         s:close()
      end)

      it("skips verification only when asked (insecure)", function()
         local s = core.session{ insecure = true }
         local out = read_polling(assert(page_request(s, tls_srv.url)))
         assert.is_true(out.ended)
         assert.are.equal(20, #out.elements)
         s:close()
      end)
   end)
end)
