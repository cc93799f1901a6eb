--- lua-prefect: read Prefect task runs from Lua.
--
--    local prefect = require("prefect")
--    local client = prefect.client{ url = "http://127.0.0.1:4200/api" }
--    for run in client:task_runs{ state = {"FAILED"}, limit = 100 } do print(run.name) end
--
-- `prefect.filter` and `prefect.client` load on first use, so requiring
-- this module costs nothing until they are needed.
-- @module prefect

local errors = require("prefect.errors")
local client = require("prefect.client")

local prefect = {
   _VERSION = client.VERSION,
   API_VERSION = client.API_VERSION,
   errors = errors,
   -- lua-cjson's null and prefect.core's null are the same lightuserdata NULL.
   null = require("cjson").null,
}

--- A new client (see docs/client.md for the options).
prefect.client = client.new

return setmetatable(prefect, {
   __index = function(t, k)
      if k == "filter" then
         local filter = require("prefect.filter")
         rawset(t, "filter", filter)
         return filter
      end
      return nil
   end,
})
