-- Retry policy: which failures are retried and how long the client waits.
-- The first part checks the policy itself; the second drives real retries
-- against the test server with an injected sleep that records every wait.

local retry = require("prefect.retry")
local calendar = require("prefect.calendar")
local errors = require("prefect.errors")

local function http(status, retry_after)
   return errors.new("http", { status = status, retry_after = retry_after })
end

describe("retry policy", function()
   it("retries 408, 429, 502, 503 and connect/timeout/protocol errors, nothing else", function()
      local p = retry.new{}
      for _, s in ipairs{ 408, 429, 502, 503 } do assert.is_true(p:retryable(http(s)), s) end
      for _, s in ipairs{ 400, 401, 403, 404, 422, 500, 504 } do assert.is_false(p:retryable(http(s)), s) end
      for _, k in ipairs{ "connect", "timeout", "protocol" } do
         assert.is_true(p:retryable(errors.new(k)), k)
      end
      for _, k in ipairs{ "tls", "decode", "invalid", "too_large", "aborted" } do
         assert.is_false(p:retryable(errors.new(k)), k)
      end
   end)

   it("takes its own list of codes", function()
      local p = retry.new{ retry_codes = { 504 } }
      assert.is_true(p:retryable(http(504)))
      assert.is_false(p:retryable(http(503)))
   end)

   it("allows `retries` retries: attempt n may be retried while n <= retries", function()
      local p = retry.new{ retries = 2 }
      assert.is_true(p:may_retry(http(503), 1))
      assert.is_true(p:may_retry(http(503), 2))
      assert.is_false(p:may_retry(http(503), 3))
      assert.is_false(retry.new{ retries = 0 }:may_retry(http(503), 1))
      assert.equal(5, retry.new{}.retries)
   end)

   it("waits 2, 4, 8, 16, 32 s with +-20% jitter", function()
      local lo = retry.new{ random = function() return 0 end }
      local hi = retry.new{ random = function() return 1 end }
      local mid = retry.new{ random = function() return 0.5 end }
      for n, base in ipairs{ 2, 4, 8, 16, 32 } do
         assert.near(base * 0.8, lo:delay(n), 1e-9)
         assert.near(base * 1.2, hi:delay(n), 1e-9)
         assert.near(base, mid:delay(n), 1e-9)
      end
      local p = retry.new{}
      for _ = 1, 200 do
         local d = p:delay(3)
         assert.is_true(d >= 6.4 and d <= 9.6, d)
      end
   end)

   it("uses Retry-After as the lower bound, plus up to 20%, capped by max_retry_after", function()
      local lo = retry.new{ random = function() return 0 end }
      local hi = retry.new{ random = function() return 1 end }
      assert.near(7, lo:delay(1, 7), 1e-9)
      assert.near(8.4, hi:delay(1, 7), 1e-9)
      assert.near(300, lo:delay(1, 10000), 1e-9)
      assert.near(360, hi:delay(1, 10000), 1e-9)
      local capped = retry.new{ max_retry_after = 5, random = function() return 0 end }
      assert.near(5, capped:delay(4, 60), 1e-9)
      assert.near(0, lo:delay(1, 0), 1e-9)
   end)

   it("reads Retry-After as decimal seconds", function()
      assert.equal(2, retry.parse_retry_after("2"))
      assert.near(1.7342, retry.parse_retry_after(" 1.7342 "), 1e-9)
      assert.is_nil(retry.parse_retry_after("soon"))
      assert.is_nil(retry.parse_retry_after(nil))
      assert.is_nil(retry.parse_retry_after("-3"))
   end)

   it("reads Retry-After as an HTTP date in all three forms", function()
      local now = calendar.epoch(1994, 11, 6, 8, 49, 30)
      assert.equal(7, retry.parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now))
      assert.equal(7, retry.parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now))
      assert.equal(7, retry.parse_retry_after("Sun Nov  6 08:49:37 1994", now))
      -- a date in the past means "now"
      assert.equal(0, retry.parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now))
      assert.is_nil(retry.parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", now))
   end)

   it("computes epoch seconds like the C library does for UTC", function()
      assert.equal(0, calendar.epoch(1970, 1, 1, 0, 0, 0))
      assert.equal(951782400, calendar.epoch(2000, 2, 29, 0, 0, 0))
      assert.equal(1795955402 - 1795955402 % 86400, calendar.epoch(2026, 11, 29, 0, 0, 0))
      assert.equal(4102444800, calendar.epoch(2100, 1, 1, 0, 0, 0))
   end)

   it("sleeps through the injected sleep", function()
      local waits = {}
      local p = retry.new{ sleep = function(s) waits[#waits + 1] = s end, random = function() return 0.5 end }
      assert.equal(4, p:wait(2))
      assert.same({ 4 }, waits)
   end)
end)

---------------------------------------------------------------------------
-- Real retries against the test server; the injected sleep records waits.

local prefect = require("prefect")
local test_server = require("test_server")
local socket = require("socket")

local function no_env() return nil end

describe("retries against the test server", function()
   local srv
   setup(function()
      srv = test_server.start{ dataset = "fixture", prefect = 2 }
   end)
   teardown(function() if srv then srv:stop() end end)

   local function client_with(fault, opts)
      local waits = {}
      local o = { url = srv.url, getenv = no_env,
         sleep = function(s) waits[#waits + 1] = s end,
         headers = fault and { ["X-Test-Fault"] = fault } or nil }
      for k, v in pairs(opts or {}) do o[k] = v end
      return prefect.client(o), waits
   end

   local function requests(f)
      local before = srv:stats().requests
      f()
      return srv:stats().requests - before
   end

   local function assert_backoff(waits, n)
      assert.equal(n, #waits)
      for i = 1, n do
         local base = 2 ^ i
         assert.is_true(waits[i] >= base * 0.8 - 1e-9 and waits[i] <= base * 1.2 + 1e-9,
            ("wait %d was %.3f, not %g +-20%%"):format(i, waits[i], base))
      end
   end

   for _, status in ipairs{ 408, 429, 502, 503 } do
      it("retries " .. status .. " five times, 2..32 s apart, and not after the last attempt", function()
         local c, waits = client_with("status=" .. status)
         local n, err
         assert.equal(6, requests(function() n, err = c:count{} end))
         assert.is_nil(n)
         assert.equal(status, err.status)
         assert.equal(6, err.attempts)
         assert_backoff(waits, 5)
      end)
   end

   it("does not retry 500, 400 or 404", function()
      for _, status in ipairs{ 500, 400, 404 } do
         local c, waits = client_with("status=" .. status)
         local err
         assert.equal(1, requests(function() err = select(2, c:count{}) end))
         assert.equal(status, err.status)
         assert.equal(0, #waits)
      end
   end)

   it("makes one attempt with retries = 0", function()
      local c, waits = client_with("status=503", { retries = 0 })
      local err
      assert.equal(1, requests(function() err = select(2, c:count{}) end))
      assert.equal(503, err.status)
      assert.equal(0, #waits)
   end)

   it("retries the given number of times", function()
      local c, waits = client_with("status=503", { retries = 2 })
      local err
      assert.equal(3, requests(function() err = select(2, c:page{}) end))
      assert.equal(3, err.attempts)
      assert_backoff(waits, 2)
   end)

   it("honours Retry-After in seconds, with up to 20% more", function()
      local c, waits = client_with("status=429; retry_after=7", { retries = 2 })
      local _, err = c:count{}
      assert.equal(7, err.retry_after)
      assert.equal(2, #waits)
      for _, w in ipairs(waits) do assert.is_true(w >= 7 and w <= 8.4, w) end
   end)

   it("honours Retry-After as an HTTP date", function()
      -- the client's clock runs 100 s behind the server's, so the date lies ~102 s ahead
      local c, waits = client_with("status=503; retry_after_date=2", { retries = 1, max_retry_after = 1000,
         clock = function() return socket.gettime() - 100 end })
      local _, err = c:count{}
      assert.equal(503, err.status)
      assert.equal(1, #waits)
      assert.is_true(waits[1] >= 100 and waits[1] <= 103 * 1.2, waits[1])
   end)

   it("caps Retry-After at max_retry_after", function()
      local c, waits = client_with("status=429; retry_after=4000", { retries = 1 })
      c:count{}
      assert.is_true(waits[1] >= 300 and waits[1] <= 360, waits[1])
      local c2, waits2 = client_with("status=429; retry_after=4000", { retries = 1, max_retry_after = 1 })
      c2:count{}
      assert.is_true(waits2[1] >= 1 and waits2[1] <= 1.2, waits2[1])
   end)

   it("succeeds when the server recovers, for every call", function()
      local c, waits = client_with("fail_first=2; key=recover-count; status=503")
      assert.equal(300, c:count{})
      assert_backoff(waits, 2)
      local c2 = client_with("fail_first=2; key=recover-page; status=502")
      assert.equal(200, #assert(c2:page{}))
      local c3 = client_with("fail_first=1; key=recover-version; status=429; retry_after=1")
      assert.equal("2.19.9", c3:server_version())
      local c4 = client_with("fail_first=3; key=recover-iter; status=503")
      local n = 0
      for _ in c4:task_runs{} do n = n + 1 end
      assert.equal(300, n)
   end)

   it("retries connection resets and truncated bodies", function()
      local c, waits = client_with("fail_first=1; key=reset-1; reset")
      assert.equal(300, c:count{})
      assert.equal(1, #waits)
      local c2, waits2 = client_with("fail_first=1; key=cut-1; cut_after=100", { accept_encoding = false })
      assert.equal(200, #assert(c2:page{}))
      assert.equal(1, #waits2)
   end)

   it("retries timeouts", function()
      local c, waits = client_with("fail_first=1; key=slow-1; delay_ms=2000", { timeout = 0.3 })
      assert.equal(300, c:count{})
      assert.equal(1, #waits)
      local c2, waits2 = client_with("delay_ms=2000", { timeout = 0.2, retries = 1 })
      local _, err = c2:count{}
      assert.equal("timeout", err.kind)
      assert.equal(2, err.attempts)
      assert.equal(1, #waits2)
   end)

   it("fails fast on a refused connection before any server has answered: one short retry", function()
      local s = assert(socket.bind("127.0.0.1", 0))
      local _, port = s:getsockname()
      s:close()
      local waits = {}
      local c = prefect.client{ url = "http://127.0.0.1:" .. port .. "/api", getenv = no_env, retries = 3,
         sleep = function(w) waits[#waits + 1] = w end }
      local _, err = c:count{}
      assert.equal("connect", err.kind)
      assert.is_true(err.unreachable)
      assert.equal(2, err.attempts)
      -- the wait is what is left of 0.25 s after the first attempt, on the real clock
      assert.equal(1, #waits)
      assert.is_true(waits[1] > 0.2 and waits[1] <= 0.25, tostring(waits[1]))
   end)

   it("retries a refused connection on the full schedule once the server has answered", function()
      local gone = test_server.start{ dataset = "fixture" }
      finally(function() gone:stop() end)
      local waits = {}
      local c = prefect.client{ url = gone.url, getenv = no_env, retries = 3,
         sleep = function(w) waits[#waits + 1] = w end }
      assert.is_number(c:count{})
      gone:stop()
      local _, err = c:count{}
      assert.equal("connect", err.kind)
      assert.equal(4, err.attempts)
      assert_backoff(waits, 3)
   end)
end)
