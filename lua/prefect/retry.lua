--- Retry policy: which failures are worth another attempt, and how long to
-- wait before it. Every call the client makes is read-only (filter, count,
-- GET), so repeating one is always safe.
--
-- Waits follow Prefect's own client: `Retry-After` when the server sends it
-- (decimal seconds or an HTTP date), capped by `max_retry_after` and drawn
-- between that value and 20 % more; otherwise 2, 4, 8, 16, 32 ... seconds
-- with +-20 % jitter. There is never a wait after the last attempt.
-- The clock, the sleep and the random source are injectable, so specs never
-- wait in real time.

local calendar = require("prefect.calendar")

local retry = {}

retry.DEFAULT_CODES = { 408, 429, 502, 503 }
retry.DEFAULT_RETRIES = 5
retry.DEFAULT_MAX_RETRY_AFTER = 300
retry.JITTER = 0.2

-- Transport failures that a new attempt can cure. "protocol" covers a
-- connection reset or a body cut short (curl's read errors); Prefect's client
-- retries those too.
retry.RETRY_KINDS = { connect = true, timeout = true, protocol = true }

local MONTHS = {
   jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6,
   jul = 7, aug = 8, sep = 9, oct = 10, nov = 11, dec = 12,
}

--- Epoch seconds of an HTTP date (IMF-fixdate, RFC 850 or asctime), or nil.
function retry.parse_http_date(s)
   if type(s) ~= "string" then return nil end
   local d, mon, y, h, mi, sec =
      s:match("^%a+,%s+(%d%d?)%s+(%a%a%a)%s+(%d%d%d%d)%s+(%d%d):(%d%d):(%d%d)%s+GMT%s*$")
   if not d then
      d, mon, y, h, mi, sec = s:match("^%a+,%s+(%d%d?)%-(%a%a%a)%-(%d%d)%s+(%d%d):(%d%d):(%d%d)%s+GMT%s*$")
      if y then
         y = tonumber(y)
         -- RFC 7231: a two-digit year more than 50 years ahead is in the past century.
         y = y + (y < 70 and 2000 or 1900)
      end
   end
   if not d then
      mon, d, h, mi, sec, y = s:match("^%a+%s+(%a%a%a)%s+(%d%d?)%s+(%d%d):(%d%d):(%d%d)%s+(%d%d%d%d)%s*$")
   end
   if not d then return nil end
   local m = MONTHS[mon:lower()]
   if not m then return nil end
   return calendar.epoch(tonumber(y), m, tonumber(d), tonumber(h), tonumber(mi), tonumber(sec))
end

--- Seconds to wait according to a Retry-After header value, or nil when it
-- is absent or unreadable. `now` is the current epoch time (for dates).
function retry.parse_retry_after(value, now)
   if type(value) ~= "string" then return nil end
   local n = tonumber(value:match("^%s*([%d.]+)%s*$"))
   if n then
      if n ~= n or n == math.huge then return nil end
      return n
   end
   local at = retry.parse_http_date(value)
   if not at then return nil end
   local wait = at - (now or os.time())
   if wait < 0 then wait = 0 end
   return wait
end

local Policy = {}
Policy.__index = Policy

--- A policy from the client's options.
-- @tparam table opts retries, retry_codes (list), max_retry_after, sleep, random
function retry.new(opts)
   opts = opts or {}
   local codes = {}
   for _, c in ipairs(opts.retry_codes or retry.DEFAULT_CODES) do codes[c] = true end
   return setmetatable({
      retries = opts.retries == nil and retry.DEFAULT_RETRIES or opts.retries,
      codes = codes,
      max_retry_after = opts.max_retry_after or retry.DEFAULT_MAX_RETRY_AFTER,
      sleep = opts.sleep,
      random = opts.random or math.random,
   }, Policy)
end

--- True when `err` (a prefect error) may succeed on another attempt.
function Policy:retryable(err)
   if type(err) ~= "table" then return false end
   if err.kind == "http" then return self.codes[err.status] == true end
   return retry.RETRY_KINDS[err.kind] == true
end

--- True when a failure on attempt number `attempt` (1-based) may be retried.
function Policy:may_retry(err, attempt)
   return attempt <= self.retries and self:retryable(err)
end

--- Seconds to wait before retry number `n` (1 = first retry), given the
-- server's Retry-After in seconds (or nil).
function Policy:delay(n, retry_after)
   local r = self.random()
   if retry_after then
      local base = retry_after
      if base > self.max_retry_after then base = self.max_retry_after end
      if base < 0 then base = 0 end
      return base * (1 + retry.JITTER * r)
   end
   local base = 2 ^ n
   return base * (1 + retry.JITTER * (2 * r - 1))
end

--- Waits before retry number `n`; returns the seconds waited.
function Policy:wait(n, retry_after)
   local s = self:delay(n, retry_after)
   if s > 0 then self.sleep(s) end
   return s
end

return retry
