--- How the filter modules report misuse.
-- Inside the compiler a problem is raised as a private marker table carrying
-- the message; `prefect.filter.compile` catches it and raises it again at the
-- caller's level, so the inner modules never need to count stack levels.

local fail = {}

local Marker = {}

--- Raise a filter error with this message (caught by filter.compile).
function fail.raise(msg)
   error(setmetatable({ message = msg }, Marker), 0)
end

--- The message of a filter error, or nil when `e` is some other error.
function fail.message_of(e)
   if getmetatable(e) == Marker then return e.message end
   return nil
end

local function quote(s)
   return '"' .. s:gsub('[%c"\\]', function(c)
      if c == '"' then return '\\"' end
      if c == "\\" then return "\\\\" end
      return string.format("\\%03d", c:byte())
   end) .. '"'
end

--- A value as it should appear in a message: strings quoted, tables described.
function fail.show(v)
   local t = type(v)
   if t == "string" then
      if #v > 80 then return quote(v:sub(1, 77)) .. "..." end
      return quote(v)
   elseif t == "number" or t == "boolean" or t == "nil" then
      return tostring(v)
   elseif t == "table" then
      return "a table"
   elseif t == "userdata" then
      return "a userdata (null?)"
   end
   return "a " .. t
end

--- "a string", "a number", "a table", "null" ... for "got X" in messages.
function fail.kind(v, null)
   if null ~= nil and v == null then return "null" end
   local t = type(v)
   if t == "table" then
      if next(v) == nil then return "an empty table" end
      return "a table"
   end
   if t == "nil" then return "nil" end
   if t == "userdata" then return "a userdata" end
   return (t == "string" or t == "number" or t == "boolean" or t == "function" or t == "thread")
      and ("a " .. t) or t
end

--- "a, b, c" (for lists of accepted values).
function fail.list(items)
   return table.concat(items, ", ")
end

--- A dotted path plus a key: path("task_runs", "state") == "task_runs.state"; numbers give "[n]".
function fail.path(base, key)
   if type(key) == "number" then return base .. "[" .. key .. "]" end
   if base == nil or base == "" then return tostring(key) end
   return base .. "." .. tostring(key)
end

return fail
