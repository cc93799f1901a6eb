--- Checks and normal forms for the values a filter holds: lists, UUIDs,
-- state types, the JSON null sentinel, and the marker that makes a list
-- encode as a JSON array even when empty.

local schema = require("prefect.filter.schema")

local values = {}

local has_cjson, cjson = pcall(require, "cjson")

--- JSON null as the C core and lua-cjson spell it (nil when lua-cjson is absent).
values.null = has_cjson and cjson.null or nil

--- Metatable on every list in a compiled body. lua-cjson builds that have
-- `array_mt` encode such a table as `[]` when empty; `prefect.filter.encode`
-- always does.
values.ARRAY_MT = (has_cjson and cjson.array_mt) or { __name = "prefect.filter.array" }

function values.is_null(v)
   return values.null ~= nil and v == values.null
end

--- True when t is a table whose keys are exactly 1..n (the empty table counts).
function values.is_list(t)
   if type(t) ~= "table" then return false end
   local n = #t
   local count = 0
   for k in pairs(t) do
      if type(k) ~= "number" or k < 1 or k > n or k ~= math.floor(k) then return false end
      count = count + 1
   end
   return count == n
end

--- The position of the first byte of s that does not belong to well-formed
--- UTF-8 (overlong forms, surrogates and code points past U+10FFFF
--- included), or nil when s is valid. JSON text is UTF-8 (RFC 8259), so any
--- other bytes would reach the server as a body it must reject or misread.
--- LuaJIT has no utf8 library, hence the loop.
function values.utf8_error(s)
   local i = s:find("[\128-\255]")
   if not i then return nil end
   local n = #s
   local byte = string.byte
   while i <= n do
      local c = byte(s, i)
      if c < 0x80 then
         i = i + 1
      else
         local len, lo, hi
         if c >= 0xC2 and c <= 0xDF then len, lo, hi = 2, 0x80, 0xBF
         elseif c == 0xE0 then len, lo, hi = 3, 0xA0, 0xBF
         elseif c == 0xED then len, lo, hi = 3, 0x80, 0x9F
         elseif c >= 0xE1 and c <= 0xEF then len, lo, hi = 3, 0x80, 0xBF
         elseif c == 0xF0 then len, lo, hi = 4, 0x90, 0xBF
         elseif c >= 0xF1 and c <= 0xF3 then len, lo, hi = 4, 0x80, 0xBF
         elseif c == 0xF4 then len, lo, hi = 4, 0x80, 0x8F
         else return i end
         local second = byte(s, i + 1)
         if not second or second < lo or second > hi then return i end
         for j = i + 2, i + len - 1 do
            local b = byte(s, j)
            if not b or b < 0x80 or b > 0xBF then return i end
         end
         i = i + len
      end
   end
   return nil
end

--- A fresh list marked as a JSON array.
function values.array(items)
   return setmetatable(items or {}, values.ARRAY_MT)
end

local HYPHENATED = "^(%x%x%x%x%x%x%x%x)%-(%x%x%x%x)%-(%x%x%x%x)%-(%x%x%x%x)%-(%x%x%x%x%x%x%x%x%x%x%x%x)$"

--- A UUID in lowercase 8-4-4-4-12 form, from any case, with or without hyphens; or nil.
function values.uuid(s)
   if type(s) ~= "string" then return nil end
   local a, b, c, d, e = s:match(HYPHENATED)
   if not a then
      if #s ~= 32 or not s:match("^%x+$") then return nil end
      a, b, c, d, e = s:sub(1, 8), s:sub(9, 12), s:sub(13, 16), s:sub(17, 20), s:sub(21, 32)
   end
   return (a .. "-" .. b .. "-" .. c .. "-" .. d .. "-" .. e):lower()
end

values.UUID_HELP = "a UUID (32 hex digits, any case, with or without hyphens 8-4-4-4-12)"

local STATE_SET = {}
for _, s in ipairs(schema.STATE_TYPES) do STATE_SET[s] = true end

--- The state type named by s: exact-case when `exact`, else case-insensitive. Nil if none.
function values.state_type(s, exact)
   if type(s) ~= "string" then return nil end
   if exact then return STATE_SET[s] and s or nil end
   local up = s:upper()
   return STATE_SET[up] and up or nil
end

local SORT_SET = {}
for _, s in ipairs(schema.SORTS) do SORT_SET[s] = true end

function values.sort(s)
   if type(s) ~= "string" then return nil end
   local up = s:upper()
   return SORT_SET[up] and up or nil
end

--- True for a finite number with no fraction.
function values.is_whole(x)
   return type(x) == "number" and x == x and x ~= math.huge and x ~= -math.huge and math.floor(x) == x
end

return values
