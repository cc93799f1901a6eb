--- A compiled filter body as JSON text.
-- Keys come out sorted, so the same body always gives the same bytes, and a
-- list made by the compiler (or any non-empty sequence) is an array: an empty
-- list is `[]`, where lua-cjson 2.1.0 would write `{}` and Prefect would reject it.

local values = require("prefect.filter.values")

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
   ["\r"] = "\\r", ["\t"] = "\\t" }

local function encode_string(s)
   return '"' .. s:gsub('[%c"\\]', function(c)
      return ESCAPES[c] or string.format("\\u%04x", c:byte())
   end) .. '"'
end

local encode_value

local function encode_table(t, out, depth)
   if depth > 64 then error("prefect.filter.encode: nested too deeply", 0) end
   if getmetatable(t) == values.ARRAY_MT or (next(t) ~= nil and values.is_list(t)) then
      out[#out + 1] = "["
      for i = 1, #t do
         if i > 1 then out[#out + 1] = "," end
         encode_value(t[i], out, depth + 1)
      end
      out[#out + 1] = "]"
      return
   end
   local keys = {}
   for k in pairs(t) do
      if type(k) ~= "string" then error("prefect.filter.encode: a key is not a string", 0) end
      keys[#keys + 1] = k
   end
   table.sort(keys)
   out[#out + 1] = "{"
   for i, k in ipairs(keys) do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = encode_string(k)
      out[#out + 1] = ":"
      encode_value(t[k], out, depth + 1)
   end
   out[#out + 1] = "}"
end

function encode_value(v, out, depth)
   local t = type(v)
   if t == "string" then
      out[#out + 1] = encode_string(v)
   elseif t == "boolean" then
      out[#out + 1] = tostring(v)
   elseif t == "number" then
      if v ~= v or v == math.huge or v == -math.huge then
         error("prefect.filter.encode: a number is not finite", 0)
      end
      if math.floor(v) == v and v >= -2 ^ 53 and v <= 2 ^ 53 then
         out[#out + 1] = string.format("%d", v)
      else
         out[#out + 1] = string.format("%.17g", v)
      end
   elseif t == "table" then
      encode_table(v, out, depth)
   elseif values.is_null(v) then
      out[#out + 1] = "null"
   else
      error("prefect.filter.encode: cannot encode a " .. t, 0)
   end
end

--- JSON text of a body from prefect.filter.compile (or any table of the same kinds of values).
return function(body)
   local out = {}
   encode_value(body, out, 0)
   return table.concat(out)
end
