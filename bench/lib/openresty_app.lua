--- The handlers bench/openresty.lua loads into its two nginx instances.
--
-- Upstream (`upstream(mode)`): answers every POST with the same pre-encoded page of 200 runs,
-- read at start-up from BENCH_PAGE (and BENCH_PAGE.gz): "plain" with a Content-Length,
-- "chunked" without one (nginx sends it chunked), "gzip" compressed and chunked when the
-- request accepts gzip.
--
-- Front (`prefect(mode [, "fields" | "exclude"])`, `hand(mode)`): reads that page from the upstream at
-- BENCH_UPSTREAM (host:port) and answers a small summary: the runs read, how many COMPLETED,
-- the longest name. `prefect` uses one lua-prefect client per mode and worker, `hand` the
-- hand-written peer (bench/peers/ngx_socket_cjson.lua). `memory()` answers the worker's Lua heap
-- after a full collection, in KB.
-- luacheck: globals ngx
local app = {}

local FIELDS = { "id", "name", "state_type", "end_time" }
-- the read options of each lua-prefect handler but the one that decodes every field
local READ_OPTS = {
   fields = { fields = FIELDS },
   exclude = { exclude = { "state.state_details", "task_inputs", "empirical_policy" } },
}

local pages = {}
local served = 0

local function read_file(path)
   local f = assert(io.open(path, "rb"))
   local s = f:read("*a")
   f:close()
   return s
end

function app.upstream(mode)
   if not pages.plain then
      local path = assert(os.getenv("BENCH_PAGE"), "BENCH_PAGE is not set")
      pages.plain, pages.gzip = read_file(path), read_file(path .. ".gz")
   end
   ngx.req.read_body()
   served = served + 1
   ngx.header["Content-Type"] = "application/json"
   local accepts = (ngx.var.http_accept_encoding or ""):find("gzip", 1, true)
   if mode == "gzip" and accepts then
      ngx.header["Content-Encoding"] = "gzip"
      ngx.print(pages.gzip)
   elseif mode == "plain" then
      ngx.header["Content-Length"] = #pages.plain
      ngx.print(pages.plain)
   else
      ngx.print(pages.plain)
   end
end

--- The number of requests the upstream has answered.
function app.served() ngx.say(served) end

local host, port = (os.getenv("BENCH_UPSTREAM") or ""):match("^([^:]+):(%d+)$")

local function summary(count, completed, longest)
   ngx.say(count, " ", completed, " ", longest)
end

local clients = {}

function app.prefect(mode, variant)
   local key = mode .. ":" .. (variant or "every")
   local client = clients[key]
   if not client then
      client = require("prefect").client{
         url = ("http://%s:%s/%s/api"):format(host, port, mode), retries = 0, api_key = false,
         accept_encoding = mode == "gzip",
      }
      clients[key] = client
   end
   local count, completed, longest = 0, 0, 0
   for run in client:task_runs({ limit = 200 }, variant and READ_OPTS[variant] or nil) do
      count = count + 1
      if run.state_type == "COMPLETED" then completed = completed + 1 end
      if #run.name > longest then longest = #run.name end
   end
   summary(count, completed, longest)
end

function app.hand(mode)
   local status, runs = require("peers.ngx_socket_cjson").read(host, tonumber(port),
      "/" .. mode .. "/api/task_runs/filter", mode == "gzip")
   if status ~= 200 then
      ngx.status = 502
      ngx.say("upstream: ", tostring(status), " ", tostring(runs))
      return
   end
   local count, completed, longest = 0, 0, 0
   for i = 1, #runs do
      local run = runs[i]
      count = count + 1
      if run.state_type == "COMPLETED" then completed = completed + 1 end
      if #run.name > longest then longest = #run.name end
   end
   summary(count, completed, longest)
end

function app.memory()
   collectgarbage()
   ngx.say(collectgarbage("count"))
end

return app
