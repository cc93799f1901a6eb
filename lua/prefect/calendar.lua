--- Proleptic Gregorian calendar arithmetic in UTC (H. Hinnant's
-- days_from_civil / civil_from_days), in plain arithmetic so it is exact on
-- Lua 5.1/LuaJIT doubles as on 5.4, and never consults the local timezone.

local calendar = {}

local floor = math.floor

--- Days since 1970-01-01 of the civil date y-m-d (any year).
function calendar.days_from_civil(y, m, d)
   if m <= 2 then y = y - 1 end
   local era = floor(y / 400)
   local yoe = y - era * 400
   local mp = (m + 9) % 12
   local doy = floor((153 * mp + 2) / 5) + d - 1
   local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
   return era * 146097 + doe - 719468
end

--- The civil date y, m, d of a count of days since 1970-01-01.
function calendar.civil_from_days(z)
   z = z + 719468
   local era = floor(z / 146097)
   local doe = z - era * 146097
   local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
   local y = yoe + era * 400
   local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
   local mp = floor((5 * doy + 2) / 153)
   local d = doy - floor((153 * mp + 2) / 5) + 1
   local m = mp < 10 and mp + 3 or mp - 9
   if m <= 2 then y = y + 1 end
   return y, m, d
end

--- Seconds since the epoch of a UTC calendar time.
function calendar.epoch(y, mo, d, h, mi, s)
   return calendar.days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s
end

return calendar
