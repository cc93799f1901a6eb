--- Option checking for the client and its calls: which names exist, what
-- each value must look like, and the one error every misuse raises.
--
-- All of it runs before any request is made, so a typo or an ill-typed value
-- is reported at the caller's line instead of surfacing later as a network or
-- server error. The defaults are not here: most depend on the environment or
-- on the transport, so prefect.client, prefect.retry and the C session fill
-- them where those are known.

local errors = require("prefect.errors")
local suggest = require("prefect.filter.suggest")

local options = {}

options.MAX_PAGE_SIZE = 200
options.MAX_CONCURRENCY = 16

--- Raises an "invalid" error naming the caller's line. `level` is as for
-- error(): 1 is the function that calls misuse.
function options.misuse(msg, level)
   local info = debug.getinfo(level + 1, "Sl")
   local where = info and info.currentline and info.currentline > 0
      and (info.short_src .. ":" .. info.currentline) or nil
   error(errors.new("invalid", { message = msg, where = where }), 0)
end
local misuse = options.misuse

--- True for a finite whole number (of either number subtype on 5.4).
function options.is_integer(v)
   return type(v) == "number" and v == math.floor(v) and v > -math.huge and v < math.huge
end
local is_integer = options.is_integer

-- Each check takes the option's name and value and returns what is wrong
-- with it, or nil.

local function check_positive(name, v)
   if type(v) ~= "number" or v ~= v or v <= 0 or v == math.huge then
      return name .. " must be a positive number of seconds, got " .. tostring(v)
   end
end

local function check_string(name, v)
   if type(v) ~= "string" or v == "" then
      return name .. " must be a non-empty string, got " .. type(v)
   end
end

local function check_boolean(name, v)
   if type(v) ~= "boolean" then return name .. " must be a boolean, got " .. type(v) end
end

local function check_function(name, v)
   if type(v) ~= "function" then return name .. " must be a function, got " .. type(v) end
end

local function check_secret(name, v)
   if v == false then return end
   if type(v) ~= "string" or v == "" then
      return name .. " must be a non-empty string (or false for none), got " .. type(v)
   end
   if v:find("[%c]") then return name .. " must not contain control characters" end
end

local function check_concurrency(name, v)
   if not is_integer(v) or v < 1 or v > options.MAX_CONCURRENCY then
      return string.format("%s must be an integer from 1 to %d, got %s", name, options.MAX_CONCURRENCY,
         type(v) == "string" and string.format("%q", v) or tostring(v))
   end
end

local function check_url(name, v)
   local e = check_string(name, v)
   if e then return e end
   if not v:match("^[hH][tT][tT][pP][sS]?://[^/]") then
      return name .. " must be an http:// or https:// URL, got " .. errors.safe_url(v)
   end
   if v:find("[%s%c]") then return name .. " must not contain white space" end
end
-- Also for PREFECT_API_URL, which must pass the same test as the option.
options.check_url = check_url

local function sorted_keys(t)
   local names = {}
   for k in pairs(t) do names[#names + 1] = k end
   table.sort(names)
   return names
end

--- Decoder options: they may be given to the client or to each call.
options.DECODE = {
   fields = function(name, v)
      if type(v) ~= "table" then return name .. " must be a list of field names" end
      for i, f in ipairs(v) do
         if type(f) ~= "string" or f == "" then
            return string.format("%s[%d] must be a non-empty string", name, i)
         end
      end
   end,
   timestamps = function(name, v)
      if v ~= "epoch" and v ~= false then
         return name .. ' must be "epoch" (or false: ISO-8601 strings as sent), got ' .. tostring(v)
      end
   end,
   null = function() end, -- any sentinel value
   array_mt = function(name, v)
      if type(v) ~= "table" then return name .. " must be a metatable (table), got " .. type(v) end
   end,
}
options.DECODE_NAMES = sorted_keys(options.DECODE)

local HEADER_NAME = "^[!#$%%&'*+%-.^_`|~%w]+$"
-- Headers the client writes itself; each has its own option.
local MANAGED_HEADERS = {
   ["content-type"] = "it is always application/json",
   ["content-length"] = "the transport sets it",
   ["authorization"] = "use api_key or auth_string",
   ["x-prefect-api-version"] = "use api_version",
   ["prefect-csrf-token"] = "the client fetches CSRF tokens itself",
   ["prefect-csrf-client"] = "the client fetches CSRF tokens itself",
   ["host"] = "it comes from url",
}

--- The options of prefect.client (docs/client.md describes each one).
options.CLIENT = {
   url = check_url,
   api_key = check_secret,
   auth_string = check_secret,
   timeout = check_positive,
   connect_timeout = check_positive,
   stall_timeout = check_positive,
   retries = function(name, v)
      if not is_integer(v) or v < 0 then return name .. " must be an integer >= 0, got " .. tostring(v) end
   end,
   retry_codes = function(name, v)
      if type(v) ~= "table" then return name .. " must be a list of HTTP status codes" end
      for i, c in ipairs(v) do
         if not is_integer(c) or c < 100 or c > 599 then
            return string.format("%s[%d] must be an HTTP status code, got %s", name, i, tostring(c))
         end
      end
   end,
   max_retry_after = function(name, v)
      if type(v) ~= "number" or v < 0 or v ~= v then
         return name .. " must be a number of seconds >= 0, got " .. tostring(v)
      end
   end,
   api_version = function(name, v)
      if v == false then return end
      if type(v) ~= "string" or not v:match("^%d+%.%d+%.%d+$") then
         return name .. ' must be a version "x.y.z" or false, got ' .. tostring(v)
      end
   end,
   headers = function(name, v)
      if type(v) ~= "table" then return name .. " must be a table of name = value" end
      for k, val in pairs(v) do
         if type(k) ~= "string" or not k:match(HEADER_NAME) then
            return name .. ": invalid header name " .. string.format("%q", tostring(k))
         end
         local why = MANAGED_HEADERS[k:lower()]
         if why then return name .. ": the client sets " .. k .. " itself (" .. why .. ")" end
         if type(val) ~= "string" and type(val) ~= "number" then
            return name .. "." .. k .. " must be a string"
         end
         if tostring(val):find("[%z\r\n]") then
            return name .. "." .. k .. " must not contain CR, LF or NUL"
         end
      end
   end,
   page_size = function(name, v)
      if not is_integer(v) or v < 1 or v > options.MAX_PAGE_SIZE then
         return name .. " must be an integer from 1 to 200, got " .. tostring(v)
      end
   end,
   transport = function(name, v)
      if v == "curl" or v == "ngx" then return end
      if type(v) == "table" and type(v.new) == "function" then return end
      return name .. ' must be "curl", "ngx" or a transport module, got ' .. tostring(v)
   end,
   ca_file = check_string,
   ca_path = check_string,
   insecure = check_boolean,
   http2 = check_boolean,
   proxy = check_string,
   noproxy = check_string,
   accept_encoding = check_boolean,
   max_response = function(name, v)
      if not is_integer(v) or v < 1 then return name .. " must be a positive integer (bytes)" end
   end,
   read_ahead = function(name, v)
      if not is_integer(v) or v < 65536 then
         return name .. " must be an integer number of bytes, at least 65536"
      end
   end,
   user_agent = check_string,
   concurrency = check_concurrency,
   clock = check_function,
   sleep = check_function,
   random = check_function,
   getenv = check_function,
}
for k, f in pairs(options.DECODE) do options.CLIENT[k] = f end
options.CLIENT_NAMES = sorted_keys(options.CLIENT)

--- The options of one call (task_runs, start, page): a call may override the
--- client's decoder options and paging.
options.CALL = {}
for k, f in pairs(options.DECODE) do options.CALL[k] = f end
options.CALL.prefetch = check_boolean
options.CALL.concurrency = check_concurrency
options.CALL_NAMES = sorted_keys(options.CALL)

--- The client options a transport reads (timeouts, TLS, proxy, limits).
options.TRANSPORT_NAMES = {
   "transport", "timeout", "connect_timeout", "stall_timeout", "ca_file", "ca_path", "insecure",
   "http2", "proxy", "noproxy", "max_response", "read_ahead", "accept_encoding",
}

--- Raises for an unknown or ill-typed option in `opts` (nil is no options).
-- `known` maps each name to its check, `names` lists them for the "did you
-- mean" hint, `what` starts the message, `level` points at the caller.
function options.check(opts, known, names, what, level)
   if opts == nil then return end
   if type(opts) ~= "table" then
      misuse(what .. ": options must be a table, got " .. type(opts), level + 1)
   end
   for k, v in pairs(opts) do
      if type(k) ~= "string" or not known[k] then
         local near = type(k) == "string" and suggest.nearest(k, names)
         misuse(string.format("%s: unknown option %q%s", what, tostring(k),
            near and (" (did you mean " .. near .. "?)") or ""), level + 1)
      end
      local problem = known[k](k, v)
      if problem then misuse(what .. ": " .. problem, level + 1) end
   end
end

return options
