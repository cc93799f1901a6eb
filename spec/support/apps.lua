--- What the client-side specs share: a client that reads no environment and
-- never sleeps, and test-server apps written to temporary Lua files (served
-- with test_server.start{ app_file = ... }).
local prefect = require("prefect")
local test_server = require("test_server")

local apps = {}

apps.FIXTURE = test_server.ROOT .. "/spec/fixtures/dataset-2.19.9.json"

function apps.no_env() return nil end

--- A client of srv that reads no environment and does not sleep between retries.
function apps.client(srv, opts)
   local o = { url = srv.url, getenv = apps.no_env, sleep = function() end }
   for k, v in pairs(opts or {}) do o[k] = v end
   return prefect.client(o)
end

--- The path of a new temporary Lua file holding `code`.
function apps.file(code)
   local path = os.tmpname()
   local f = assert(io.open(path, "w"))
   f:write(code)
   f:close()
   return path
end

local LIMITED_APP = [[
local api = require("prefect.testing.api")
local dataset = require("prefect.testing.dataset")
return function(opts)
   return api.new{ data = dataset.load(%q), prefect = 2, base_path = opts.base_path, default_limit = %d }
end
]]

--- An app file: the recorded dataset served as Prefect 2 does, with its page maximum set to `max`.
function apps.limited(max)
   return apps.file(LIMITED_APP:format(apps.FIXTURE, max))
end

return apps
