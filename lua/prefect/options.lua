--- Every option of lua-prefect in one table: its name, the layer that reads
-- it, its check, its default and its line in docs/client.md.
--
-- All checks run before any request, so a typo or an ill-typed value is
-- reported at the caller's line instead of surfacing later as a network or
-- server error. `options.resolve` fills the defaults once and hands each
-- layer (client, retry, transport, decoder) a plain table that is already
-- valid; the layers do not check or default their options again. The docs'
-- option table is generated from `options.LIST` (tools/options_doc.lua) and a
-- spec keeps the two equal.
-- @module prefect.options

local errors = require("prefect.errors")
local suggest = require("prefect.filter.suggest")
local time = require("prefect.filter.time")

local options = {}

options.VERSION = "scm-1"
options.API_VERSION = "0.8.4"
options.DEFAULT_URL = "http://127.0.0.1:4200/api"
options.MAX_PAGE_SIZE = 200
options.MAX_CONCURRENCY = 16

--- Prefect's timestamp fields, the ones `timestamps = "epoch"` turns into
-- epoch seconds: the only list of them (the C decoder knows no field names;
-- prefect.transport.decoders passes this one).
options.TIMESTAMP_FIELDS = {
   "created", "updated", "expected_start_time", "next_scheduled_start_time", "start_time",
   "end_time", "cache_expiration", "state.timestamp", "state.state_details.scheduled_time",
   "state.state_details.cache_expiration", "state.state_details.pause_timeout",
}

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

local function check_text(name, v)
   if type(v) ~= "string" or v == "" then
      return name .. " must be a non-empty string, got " .. type(v)
   end
   if v:find("%c") then return name .. " must not contain control characters (CR, LF, NUL, ...)" end
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
   if v:find("%c") then return name .. " must not contain control characters" end
end

local function check_auth_string(name, v)
   local problem = check_secret(name, v)
   if problem or v == false then return problem end
   if not v:find(":", 1, true) then return name .. ' must be "user:password" (no ":" found)' end
end

local function check_integer_from(min, unit)
   return function(name, v)
      if not is_integer(v) or v < min then
         return string.format("%s must be an integer >= %d%s, got %s", name, min, unit, tostring(v))
      end
   end
end

local function check_range(min, max)
   return function(name, v)
      if not is_integer(v) or v < min or v > max then
         return string.format("%s must be an integer from %d to %d, got %s", name, min, max,
            type(v) == "string" and string.format("%q", v) or tostring(v))
      end
   end
end

local function check_url(name, v)
   local e = check_text(name, v)
   if e then return e end
   if not v:match("^[hH][tT][tT][pP][sS]?://[^/]") then
      return name .. " must be an http:// or https:// URL, got " .. errors.safe_url(v)
   end
   if v:find("%s") then return name .. " must not contain white space" end
   if v:find("[?#]") then
      return name .. " must not have a query string or fragment (requests append paths to it), got "
         .. errors.safe_url(v)
   end
   -- Parsers disagree on where an authority with "@" or "/" in a password ends:
   -- no "@" at all, so no credentials can hide in a URL.
   if v:find("@", 1, true) then
      return name .. " must not hold credentials (user:password@) or any \"@\"; pass auth_string or api_key"
   end
end
-- Also for PREFECT_API_URL, which must pass the same test as the option.
options.check_url = check_url

local function check_version(allow_auto)
   return function(name, v)
      if v == false or (allow_auto and v == "auto") then return end
      if type(v) ~= "string" or not v:match("^%d+%.%d+%.%d+$") then
         return string.format('%s must be a version "x.y.z"%s or false, got %s', name,
            allow_auto and ', "auto"' or "", tostring(v))
      end
   end
end

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

local function check_headers(name, v)
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
end

local function check_codes(name, v)
   if type(v) ~= "table" then return name .. " must be a list of HTTP status codes" end
   for i, c in ipairs(v) do
      if not is_integer(c) or c < 100 or c > 599 then
         return string.format("%s[%d] must be an HTTP status code, got %s", name, i, tostring(c))
      end
   end
end

local function check_seconds(name, v)
   if type(v) ~= "number" or v < 0 or v ~= v or v == math.huge then
      return name .. " must be a number of seconds >= 0, got " .. tostring(v)
   end
end

local function check_transport(name, v)
   if v == "curl" or v == "ngx" then return end
   if type(v) == "table" and type(v.new) == "function" then return end
   return name .. ' must be "curl", "ngx" or a transport module, got ' .. tostring(v)
end

local function check_fields(name, v)
   if type(v) ~= "table" then return name .. " must be a list of field names" end
   for i, f in ipairs(v) do
      if type(f) ~= "string" or f == "" then
         return string.format("%s[%d] must be a non-empty string", name, i)
      end
   end
end

local function check_timestamps(name, v)
   if v ~= "epoch" and v ~= false then
      return name .. ' must be "epoch" (or false: ISO-8601 strings as sent), got ' .. tostring(v)
   end
end

local function check_metatable(name, v)
   if type(v) ~= "table" then return name .. " must be a metatable (table), got " .. type(v) end
end

local function check_logger(name, v)
   if v == false or type(v) == "function" then return end
   return name .. " must be a function(message) or false, got " .. type(v)
end

local function check_since(name, v)
   if type(v) ~= "string" and type(v) ~= "number" then
      return name .. " must be an ISO-8601 string or epoch seconds, got " .. type(v)
   end
   local ok, why = time.parse(v)
   if not ok then return name .. ": " .. tostring(v) .. " is not a time (" .. why .. ")" end
end

local function check_on(name, v)
   if v ~= "final" and v ~= "update" then
      return name .. ' must be "final" or "update", got ' .. tostring(v)
   end
end

-- include = {"flow_run", "flow"}, or by name with the fields to decode:
-- {flow_run = {"name", "state_type"}, flow = true}.
local INCLUDES = { flow_run = true, flow = true }
local INCLUDE_NAMES = { "flow", "flow_run" }

local function unknown_include(name, what)
   local near = type(what) == "string" and suggest.nearest(what, INCLUDE_NAMES)
   return string.format('%s: unknown name %s (it takes "flow_run" and "flow")%s', name,
      type(what) == "string" and string.format("%q", what) or tostring(what),
      near and (" (did you mean " .. near .. "?)") or "")
end

local function check_include(name, v)
   if type(v) ~= "table" then
      return name .. ' must be a table such as {"flow_run", "flow"}, got ' .. type(v)
   end
   local n = #v
   for k, x in pairs(v) do
      if is_integer(k) and k >= 1 and k <= n then
         if type(x) ~= "string" then
            return string.format('%s[%d] must be a string ("flow_run" or "flow"), got %s', name, k,
               type(x))
         end
         if not INCLUDES[x] then return unknown_include(name, x) end
      elseif type(k) ~= "string" or not INCLUDES[k] then
         return unknown_include(name, k)
      elseif x ~= true then
         local problem = type(x) == "table" and check_fields(name .. "." .. k, x)
         if type(x) ~= "table" then
            problem = string.format("%s.%s must be true or a list of field names, got %s", name, k, type(x))
         end
         if problem then return problem end
      end
   end
end

local MiB = 1024 * 1024

--- Every option: `name`, `layer` (who reads it: client, retry, transport,
-- decoder, or call for one read), `check`, `default` (a value; nil when the
-- environment or the runtime decides, then `shown` says what), `doc`.
-- Decoder options are given to the client or to each read.
options.LIST = {
   { name = "url", layer = "client", check = check_url, default = options.DEFAULT_URL,
      shown = "`$PREFECT_API_URL`, else `http://127.0.0.1:4200/api`",
      doc = "The API base URL, as Prefect prints it. Prefect Cloud URLs (`https://api.prefect.cloud/api/"
         .. "accounts/<uuid>/workspaces/<uuid>`) work as they are; trailing slashes are removed. No "
         .. "query string, fragment or `user:password@` (use `auth_string`)." },
   { name = "api_key", layer = "client", check = check_secret, shown = "`$PREFECT_API_KEY`",
      doc = "Sends `Authorization: Bearer <key>` (Prefect Cloud)." },
   { name = "auth_string", layer = "client", check = check_auth_string,
      shown = "`$PREFECT_API_AUTH_STRING`",
      doc = '`"user:pass"`; sends `Authorization: Basic <base64>` (self-hosted Prefect 3.1.8+).' },
   { name = "timeout", layer = "transport", check = check_positive, default = 60,
      doc = "Seconds for a whole request, from connecting to the last byte." },
   { name = "connect_timeout", layer = "transport", check = check_positive, default = 10,
      doc = "Seconds to connect." },
   { name = "stall_timeout", layer = "transport", check = check_positive, default = 30,
      doc = "Seconds without a byte before the request is abandoned." },
   { name = "retries", layer = "retry", check = check_integer_from(0, ""), default = 5,
      doc = "Retries after a failed attempt (so up to 6 attempts); `0` turns retries off." },
   { name = "retry_codes", layer = "retry", check = check_codes, default = { 408, 429, 502, 503 },
      shown = "`{408, 429, 502, 503}`",
      doc = "HTTP statuses that are retried (the list replaces the default)." },
   { name = "max_retry_after", layer = "retry", check = check_seconds, default = 300,
      doc = "Cap, in seconds, on a server's `Retry-After`." },
   { name = "api_version", layer = "client", check = check_version(false),
      default = options.API_VERSION, shown = '`"' .. options.API_VERSION .. '"`',
      doc = "The `X-PREFECT-API-VERSION` header; `false` leaves the header out." },
   { name = "server_version", layer = "client", check = check_version(true), default = false,
      doc = 'The Prefect version of the server (`"2.19.9"`): queries are compiled for it, so keys that '
         .. 'server rejects are refused before any request. `"auto"` asks `GET /admin/version` once, '
         .. "on the first read." },
   { name = "headers", layer = "client", check = check_headers, shown = "none",
      doc = 'Extra request headers, `{["X-Name"] = "value"}`. Names must be HTTP tokens, values must not '
         .. "contain CR, LF or NUL. Headers the client manages (`Authorization`, `Content-Type`, "
         .. "`X-PREFECT-API-VERSION`, `Prefect-Csrf-*`, `Host`, `Content-Length`) are refused: each has "
         .. "its own option." },
   { name = "page_size", layer = "client", check = check_range(1, options.MAX_PAGE_SIZE),
      default = options.MAX_PAGE_SIZE,
      doc = "Runs per request, 1 to 200 (Prefect's default maximum)." },
   { name = "concurrency", layer = "client", check = check_range(1, options.MAX_CONCURRENCY), default = 1,
      doc = "Page requests kept in flight by a read, 1 to 16 (see [Pages in flight]"
         .. "(#pages-in-flight-concurrency--n)); a call's option overrides it." },
   { name = "max_redirects", layer = "client", check = check_range(0, 20), default = 5,
      doc = "307 and 308 redirects followed per request, to the same scheme, host and port only "
         .. "(with the method and body); other redirects are errors that name the `Location`." },
   { name = "transport", layer = "transport", check = check_transport,
      shown = '`"curl"`; inside nginx `"ngx"`',
      doc = '`"curl"` (the C core on libcurl) or `"ngx"` (OpenResty cosockets). Left unset, '
         .. "`prefect.transport.pick` chooses: cosockets inside ngx_lua where the phase allows them, "
         .. "an error in the phases that refuse them (where libcurl would block the worker) unless you "
         .. 'pass `"curl"` on purpose, libcurl elsewhere. A transport module (a table with `new`) is '
         .. "accepted too." },
   { name = "ca_file", layer = "transport", check = check_text, shown = "system CAs",
      doc = "A PEM file of the CAs to trust (TLS)." },
   { name = "ca_path", layer = "transport", check = check_text, shown = "system CAs",
      doc = "A directory of CAs to trust (TLS)." },
   { name = "insecure", layer = "transport", check = check_boolean, default = false,
      doc = "`true` turns TLS verification off (a warning is logged once)." },
   { name = "http2", layer = "transport", check = check_boolean, default = false,
      doc = "Lets libcurl use HTTP/2 over TLS; pages in flight (`concurrency`, prefetch) then share one "
         .. "connection as streams. `spec/http2_spec.lua` reads through an nginx HTTP/2 front." },
   { name = "proxy", layer = "transport", check = check_text, shown = "libcurl's environment handling",
      doc = "Proxy URL." },
   { name = "noproxy", layer = "transport", check = check_text, shown = "libcurl's environment handling",
      doc = "The hosts that bypass the proxy." },
   { name = "max_response", layer = "transport", check = check_integer_from(1, " (bytes)"),
      default = 512 * MiB, shown = "512 MiB",
      doc = "Largest response body accepted (`too_large` error beyond)." },
   { name = "read_ahead", layer = "transport", check = function(name, v)
         if not is_integer(v) or v < 65536 then
            return name .. " must be an integer number of bytes, at least 65536, got " .. tostring(v)
         end
      end,
      default = 8 * MiB, shown = "8 MiB",
      doc = "Most body bytes the curl transport holds beyond the runs you have taken; past it the "
         .. "transfer pauses until you catch up, so an oversized response costs about 2.5 x this, not its "
         .. "size (see [reliability](reliability.md#what-the-memory-bound-depends-on)). At least 65536. "
         .. "The ngx transport reads only as runs are taken and ignores it." },
   { name = "accept_encoding", layer = "transport", check = check_boolean, default = true,
      doc = "Ask for gzip (a 200-run page shrinks about 11 times)." },
   { name = "user_agent", layer = "client", check = check_text,
      shown = "`lua-prefect/<version> (API 0.8.4)`", doc = "The `User-Agent` header." },
   { name = "fields", layer = "decoder", check = check_fields, shown = "every field",
      doc = 'Decode only these fields (`{"id", "name", "state.type"}`); the rest is skipped in C. '
         .. "Reads always add `id`." },
   { name = "exclude", layer = "decoder", check = check_fields, shown = "nothing",
      doc = 'Decode everything but these fields (`{"state.state_details", "task_inputs"}`): the '
         .. "inverse of `fields`, skipped in C as well. Given with `fields`, it leaves out paths of what "
         .. "`fields` keeps. Reads always keep `id`." },
   { name = "timestamps", layer = "decoder", check = check_timestamps, default = false,
      doc = '`"epoch"` turns Prefect\'s timestamps into epoch seconds; `false` keeps ISO-8601 strings.' },
   { name = "null", layer = "decoder", check = function() end, shown = "absent",
      doc = "Keep JSON nulls as this sentinel (`prefect.null`); by default a null field is absent." },
   { name = "array_mt", layer = "decoder", check = check_metatable, shown = "none",
      doc = "A metatable set on decoded arrays (and on the array `client:page` returns)." },
   { name = "max_depth", layer = "decoder", check = check_range(1, 10000), default = 1000,
      doc = "Deepest JSON nesting accepted (`decode` error beyond)." },
   { name = "max_size", layer = "decoder", check = check_integer_from(1, " (bytes)"),
      default = 512 * MiB, shown = "512 MiB",
      doc = "Largest single JSON value accepted by the decoder (`too_large` beyond)." },
   { name = "logger", layer = "client", check = check_logger, shown = "`io.stderr`",
      doc = "Where the client's warnings go (`function(message)`; `false` silences them): an API key "
         .. "sent over plain `http://` to a host that is not loopback, and `insecure = true`." },
   { name = "clock", layer = "client", check = check_function,
      shown = "`socket.gettime` (in nginx `ngx.now`)",
      doc = "Seconds since the epoch; the client never reads the time any other way (tests inject it)." },
   { name = "sleep", layer = "client", check = check_function,
      shown = "`socket.sleep` (in nginx `ngx.sleep` where the phase allows it)",
      doc = "How the client waits before a retry (tests inject it)." },
   { name = "random", layer = "client", check = check_function, shown = "`math.random`",
      doc = "The source of retry jitter and of the CSRF client id (tests inject it)." },
   { name = "getenv", layer = "client", check = check_function, shown = "`os.getenv`",
      doc = "Where environment variables are read from (tests)." },
   { name = "include", layer = "call", check = check_include, shown = "none",
      doc = 'A read\'s option: `{"flow_run", "flow"}` sets `run.flow_run` and `run.flow` on each run, '
         .. "fetched a page at a time (one `POST /flow_runs/filter` and one `POST /flows/filter` per page, "
         .. "each flow run and flow once per read); `{flow_run = {\"name\"}, flow = {\"name\"}}` "
         .. "decodes only those fields of them (see [Flow runs and flows](#flow-runs-and-flows-include))." },
   { name = "prefetch", layer = "call", check = check_boolean, default = true,
      doc = "A read's option: `false` reads one page at a time (no request ahead)." },
   -- client:follow's own options (docs/follow.md); it takes the read options above too.
   { name = "interval", layer = "follow", check = check_positive, default = 5,
      doc = "Seconds from the end of one poll to the start of the next." },
   { name = "on", layer = "follow", check = check_on, default = "final",
      doc = '`"final"`: a run is handed out once it has reached a final state (COMPLETED, FAILED, '
         .. 'CRASHED, CANCELLED), oldest end_time first. `"update"`: also each time a run that has not '
         .. "ended changes state (each poll then also reads every run of the query that has not ended)." },
   { name = "since", layer = "follow", check = check_since, shown = "the newest run when following starts",
      doc = "Hand out the runs that ended at or after this time (ISO-8601 or epoch seconds) too; left "
         .. "unset, only runs that end after following began." },
   { name = "overlap", layer = "follow", check = check_seconds, default = 60,
      doc = "Seconds before the newest end_time seen that each poll reads again, so a run whose end "
         .. "is written late (Prefect takes end_time from the state's timestamp, set where the task "
         .. "ran) is still handed out; those already handed out are skipped." },
   { name = "max_polls", layer = "follow", check = check_integer_from(1, ""), shown = "none (for ever)",
      doc = "Stop after this many polls (the first one included)." },
}

options.BY_NAME = {}
for _, o in ipairs(options.LIST) do options.BY_NAME[o.name] = o end

-- For the options of one set: name -> check, and the names in order (for "did you mean").
local function checks(pred)
   local t, names = {}, {}
   for _, o in ipairs(options.LIST) do
      if pred(o) then
         t[o.name] = o.check
         names[#names + 1] = o.name
      end
   end
   table.sort(names)
   return t, names
end

--- Decoder options: given to the client or to each call.
options.DECODE, options.DECODE_NAMES = checks(function(o) return o.layer == "decoder" end)

--- The options of prefect.client.
options.CLIENT, options.CLIENT_NAMES = checks(function(o)
   return o.layer ~= "call" and o.layer ~= "follow"
end)

--- The options of one read (task_runs, start, page): decoder options, prefetch, concurrency.
options.CALL, options.CALL_NAMES = checks(function(o)
   return o.layer == "decoder" or o.layer == "call" or o.name == "concurrency"
end)

--- The options of client:follow: its own (layer follow) and those of a read.
options.FOLLOW, options.FOLLOW_NAMES = checks(function(o)
   return o.layer == "follow" or o.layer == "decoder" or o.layer == "call" or o.name == "concurrency"
end)

--- The defaults of client:follow's own options.
function options.follow_defaults(opts)
   local out = {}
   for _, o in ipairs(options.LIST) do
      if o.layer == "follow" then
         local v = opts and opts[o.name]
         if v == nil then v = o.default end
         out[o.name] = v
      end
   end
   return out
end

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

--- The options of each layer, with the defaults filled in: a table per
-- layer (client, retry, transport, decoder), each holding every option of
-- that layer that was given or has a default. `opts` must have passed check.
function options.resolve(opts)
   local out = { client = {}, retry = {}, transport = {}, decoder = {}, call = {}, follow = {} }
   for _, o in ipairs(options.LIST) do
      local v = opts[o.name]
      if v == nil then v = o.default end
      out[o.layer][o.name] = v
   end
   return out
end

--- The decoder options of one read: the client's (already resolved), with
-- the call's given ones over them, and the `shape` the body must have
-- ("runs" for a page, "run" for one task run; the decoder checks it as the
-- bytes arrive); `need_id` adds `id` to `fields` and takes it out of
-- `exclude`.
function options.decoder(defaults, call_opts, shape, need_id)
   local d = { shape = shape }
   for k, v in pairs(defaults) do d[k] = v end
   if call_opts then
      for _, k in ipairs(options.DECODE_NAMES) do
         if call_opts[k] ~= nil then d[k] = call_opts[k] end
      end
   end
   if need_id and d.exclude then
      local e = {}
      for _, x in ipairs(d.exclude) do if x ~= "id" then e[#e + 1] = x end end
      d.exclude = e
   end
   if need_id and d.fields then
      local has = false
      for _, f in ipairs(d.fields) do if f == "id" then has = true end end
      if not has then
         local f = { "id" }
         for _, x in ipairs(d.fields) do f[#f + 1] = x end
         d.fields = f
      end
   end
   return d
end

return options
