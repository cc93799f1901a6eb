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
