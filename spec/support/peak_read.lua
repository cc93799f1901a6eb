--- Run as a child process by spec/hostile_server_spec.lua: reads one query
-- through prefect.client with the curl transport, against a server fault, and
-- prints one JSON line with how the read ended and what it cost in memory.
--
--    lua peak_read.lua URL FAULT OPTIONS_JSON [WAY]
--
-- WAY is "iterator" (the default: `task_runs{}`, pages of page_size) or "page" (`page{ limit = 200 }`).
--
-- Output: {"kind": ..., "message": ..., "runs": N, "base_kib": ..., "peak_kib": ...}, where base_kib is
-- the resident size after a normal read (modules loaded, buffers warmed up) and peak_kib is the
-- process's peak resident size (VmHWM) at the end. Its own process, so no earlier spec's memory hides
-- in the peak.

local cjson = require("cjson")
local prefect = require("prefect")

local url, fault, options_json, way = arg[1], arg[2], arg[3], arg[4] or "iterator"

local function status_kib(field)
   local f = assert(io.open("/proc/self/status"))
   local text = f:read("*a")
   f:close()
   return tonumber(text:match(field .. ":%s*(%d+)"))
end

local function client(headers)
   local o = { url = url, getenv = function() return nil end, retries = 0, transport = "curl",
      headers = headers }
   for k, v in pairs(cjson.decode(options_json or "{}")) do o[k] = v end
   return prefect.client(o)
end

local warm = client()
for _ in warm:task_runs{ limit = 50 } do end
warm:close()
collectgarbage("collect")
local base = status_kib("VmRSS")

local c = client{ ["X-Test-Fault"] = fault }
local runs, err = 0, nil
if way == "page" then
   local page, perr = c:page{ limit = 200 }
   if page then runs = #page else err = perr end
else
   local step = c:task_runs{}
   while true do
      local ok, run = pcall(step)
      if not ok then
         err = run
         break
      end
      if run == nil then break end
      runs = runs + 1
   end
end
c:close()

io.write(cjson.encode{
   kind = type(err) == "table" and err.kind or (err and "raised: " .. tostring(err)) or "none",
   message = type(err) == "table" and err.message or nil,
   runs = runs, base_kib = base, peak_kib = status_kib("VmHWM"),
}, "\n")
