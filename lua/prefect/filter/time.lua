--- Time normalisation for filter values.
-- Every accepted form becomes one instant, kept as whole seconds since
-- 1970-01-01T00:00:00Z plus whole microseconds (0..999999), and is sent as
-- UTC ISO-8601 with microseconds: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
--
-- Accepted inputs:
-- * ISO-8601 strings: `2026-08-01`, `2026-08-01T12:00`, `2026-08-01T12:00:00`,
--   `2026-08-01 12:00:00.5`, with `Z`, `±HH:MM`, `±HHMM` or `±HH`; no zone = UTC;
--   a bare date = midnight UTC. Fractions of any length are rounded to the
--   nearest microsecond (half up), carrying into the seconds.
-- * Epoch numbers (seconds, may be negative, fractions rounded to the microsecond).
-- * Date tables as from `os.date("*t")`: `year`, `month`, `day` required, `hour`,
--   `min`, `sec` default 0 (`sec` may carry a fraction). With no zone the table
--   is local time, read as `os.time` reads it (`isdst` included): that is what
--   `os.date("*t")` returns. `utc = true` (for `os.date("!*t")`) or
--   `offset = "+02:00"` say the zone instead. `yday` and `wday` are ignored.
--   Out-of-range fields are an error, not normalised as os.time would.
--
-- The calendar is proleptic Gregorian, computed here (days-from-civil); only a
-- date table without a zone consults the local timezone, through os.time.
-- Years 1..9999 (Python's range).

local calendar = require("prefect.calendar")

local time = {}

local floor = math.floor

time.days_from_civil = calendar.days_from_civil
time.civil_from_days = calendar.civil_from_days

function time.is_leap(y)
   return (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
end

local MONTH_DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

function time.days_in_month(y, m)
   if m == 2 and time.is_leap(y) then return 29 end
   return MONTH_DAYS[m]
end

local MIN_SECONDS = time.days_from_civil(1, 1, 1) * 86400
local MAX_SECONDS = time.days_from_civil(9999, 12, 31) * 86400 + 86399

--- The instant as the string Prefect is sent: "YYYY-MM-DDTHH:MM:SS.ffffffZ".
-- @param seconds integer-valued seconds since the epoch
-- @param micros integer 0..999999
function time.format(seconds, micros)
   local days = floor(seconds / 86400)
   local sod = seconds - days * 86400
   local y, m, d = time.civil_from_days(days)
   local hh = floor(sod / 3600)
   local mm = floor((sod - hh * 3600) / 60)
   local ss = sod - hh * 3600 - mm * 60
   return string.format("%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", y, m, d, hh, mm, ss, micros)
end

-- Seconds and microseconds of a finite number, rounded to the nearest microsecond.
local function split_seconds(x)
   local s = floor(x)
   local us = floor((x - s) * 1e6 + 0.5)
   if us >= 1000000 then
      s, us = s + 1, us - 1000000
   end
   return s, us
end

local function in_range(seconds)
   return seconds >= MIN_SECONDS and seconds <= MAX_SECONDS
end

local OUT_OF_RANGE = "is outside the years 0001..9999"

-- Fraction digits to microseconds, rounded half up; returns micros, carry (0 or 1).
local function fraction_micros(digits)
   local head = (digits .. "000000"):sub(1, 6)
   local us = tonumber(head)
   local next_digit = digits:sub(7, 7)
   if next_digit ~= "" and tonumber(next_digit) >= 5 then us = us + 1 end
   if us >= 1000000 then return us - 1000000, 1 end
   return us, 0
end

local function check_clock(y, mo, d, h, mi, s)
   if y < 1 then return "year " .. y .. " is out of range (0001..9999)" end
   if mo < 1 or mo > 12 then return "month " .. mo .. " is out of range (1..12)" end
   local dim = time.days_in_month(y, mo)
   if d < 1 or d > dim then
      return string.format("day %d is out of range for %04d-%02d (1..%d)", d, y, mo, dim)
   end
   if h < 0 or h > 23 then return "hour " .. h .. " is out of range (0..23)" end
   if mi < 0 or mi > 59 then return "minute " .. mi .. " is out of range (0..59)" end
   if s < 0 or s >= 60 then return "second " .. s .. " is out of range (0..59)" end
   return nil
end

-- "Z", "+02:00", "-0530", "+05" -> offset in seconds east of UTC, or nil, reason.
local function parse_zone(z)
   if z == "" or z == "Z" or z == "z" then return 0 end
   local sign, hh, mm = z:match("^([+-])(%d%d):?(%d%d)$")
   if not sign then
      sign, hh = z:match("^([+-])(%d%d)$")
      mm = "00"
   end
   if not sign then return nil, "the zone " .. string.format("%q", z) .. " is not Z or ±HH:MM" end
   hh, mm = tonumber(hh), tonumber(mm)
   if hh > 23 or mm > 59 then return nil, "the zone offset " .. z .. " is out of range" end
   local off = hh * 3600 + mm * 60
   return sign == "-" and -off or off
end
time.parse_zone = parse_zone

--- Parse an ISO-8601 string. Returns seconds, micros; or nil, reason.
function time.parse_iso(s)
   local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
   if not y then return nil, "expected YYYY-MM-DD" end
   y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
   local h, mi, sec, us, zone, carry = 0, 0, 0, 0, "", 0
   if rest ~= "" then
      local hh, mm, tail = rest:match("^[Tt ](%d%d):(%d%d)(.*)$")
      if not hh then return nil, "expected THH:MM after the date" end
      h, mi = tonumber(hh), tonumber(mm)
      local ss, tail2 = tail:match("^:(%d%d)(.*)$")
      if ss then
         sec, tail = tonumber(ss), tail2
         local digits, tail3 = tail:match("^[.,](%d+)(.*)$")
         if digits then
            us, carry = fraction_micros(digits)
            tail = tail3
         end
      end
      zone = tail
   end
   local off, why = parse_zone(zone)
   if not off then return nil, why end
   local bad = check_clock(y, mo, d, h, mi, sec)
   if bad then return nil, bad end
   -- A fraction rounded up to a whole second carries only after the clock is checked.
   local seconds = time.days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec + carry - off
   if not in_range(seconds) then return nil, "the time in UTC " .. OUT_OF_RANGE end
   return seconds, us
end

local function is_finite(x)
   return x == x and x ~= math.huge and x ~= -math.huge
end

--- Parse an epoch number. Returns seconds, micros; or nil, reason.
function time.from_epoch(x)
   if not is_finite(x) then return nil, "not a finite number" end
   local s, us = split_seconds(x)
   if not in_range(s) then return nil, "the time " .. OUT_OF_RANGE end
   return s, us
end

local TABLE_KEYS = {
   year = true, month = true, day = true, hour = true, min = true, sec = true,
   isdst = true, yday = true, wday = true, utc = true, offset = true,
}
time.TABLE_KEYS = TABLE_KEYS

local function whole(x)
   return type(x) == "number" and is_finite(x) and floor(x) == x
end

--- Parse a date table. Returns seconds, micros; or nil, reason, bad_key.
function time.from_table(t)
   for k in pairs(t) do
      if not TABLE_KEYS[k] then return nil, "unknown key", k end
   end
   for _, k in ipairs({ "year", "month", "day" }) do
      if t[k] == nil then return nil, "a date table needs year, month and day" end
   end
   for _, k in ipairs({ "year", "month", "day", "hour", "min" }) do
      if t[k] ~= nil and not whole(t[k]) then return nil, k .. " must be a whole number" end
   end
   if t.sec ~= nil and not (type(t.sec) == "number" and is_finite(t.sec)) then
      return nil, "sec must be a number"
   end
   local off
   if t.utc ~= nil and t.offset ~= nil then
      return nil, "give utc = true or offset, not both"
   elseif t.utc == true then
      off = 0
   elseif t.utc ~= nil then
      return nil, "utc must be true (for os.date(\"!*t\")) or absent"
   elseif type(t.offset) == "string" then
      local why
      off, why = parse_zone(t.offset)
      if not off then return nil, why end
   elseif t.offset ~= nil then
      return nil, 'offset must be a string such as "+02:00" or "Z"'
   end
   local sec, us = split_seconds(t.sec or 0)
   local bad = check_clock(t.year, t.month, t.day, t.hour or 0, t.min or 0, floor(t.sec or 0))
   if bad then return nil, bad end
   local seconds
   if off then
      seconds = time.days_from_civil(t.year, t.month, t.day) * 86400
         + (t.hour or 0) * 3600 + (t.min or 0) * 60 + sec - off
   else
      local ok, local_seconds = pcall(os.time, { year = t.year, month = t.month, day = t.day,
         hour = t.hour or 0, min = t.min or 0, sec = sec, isdst = t.isdst })
      if not ok or not local_seconds then
         return nil, "this local time cannot be represented on this system"
      end
      seconds = local_seconds
   end
   if not in_range(seconds) then return nil, "the time in UTC " .. OUT_OF_RANGE end
   return seconds, us
end

--- Any accepted time value (ISO-8601 string, epoch number, date table).
-- Returns seconds, micros; or nil, reason, bad_key.
function time.parse(value)
   local t = type(value)
   if t == "string" then
      return time.parse_iso(value)
   elseif t == "number" then
      return time.from_epoch(value)
   elseif t == "table" then
      return time.from_table(value)
   end
   return nil, "expected an ISO-8601 string, an epoch number or a date table"
end

--- Any accepted time value to Prefect's string. Returns the string; or nil, reason, bad_key.
function time.normalize(value)
   local s, us, extra = time.parse(value)
   if not s then return nil, us, extra end
   return time.format(s, us)
end

return time
