--- Which transport a client uses, and the clock and sleep that go with it.
--
-- Inside nginx with ngx_lua, libcurl would block the worker, so the runtime
-- decides: cosockets (prefect.transport.ngx) in the phases that allow them,
-- and a refusal in the phases that do not, unless the caller asked for
-- "curl" by name. Elsewhere it is libcurl. The clock and the sleep follow
-- the same choice (ngx.now and ngx.sleep where they yield to nginx), and the
-- capabilities tell the client what a transport can do without it knowing
-- which one it is. This is the only module that decides by where it runs.
-- @module prefect.transport

local errors = require("prefect.errors")

local transport = {}

--- True inside nginx with ngx_lua.
function transport.in_ngx_lua()
   return require("prefect.transport.ngx").present()
end

local function socket_module()
   local ok, socket = pcall(require, "socket")
   if ok and type(socket) == "table" then return socket end
   return nil
end

local function blocking_sleep()
   local socket = socket_module()
   if socket and socket.sleep then return socket.sleep end
   return function(s) os.execute("sleep " .. string.format("%.3f", s)) end
end

local function wall_clock()
   if transport.in_ngx_lua() then
      local ngx = rawget(_G, "ngx")
      return function()
         ngx.update_time()
         return ngx.now()
      end
   end
   local socket = socket_module()
   if socket and socket.gettime then return socket.gettime end
   return os.time
end

--- The default sleep: `ngx.sleep` where the nginx phase allows it, a blocking
-- sleep elsewhere (init_by_lua, init_worker_by_lua, filters and log handlers
-- refuse ngx.sleep; only the curl transport runs there).
function transport.default_sleep()
   local fallback
   if not transport.in_ngx_lua() then return blocking_sleep() end
   local ngx_transport = require("prefect.transport.ngx")
   return function(seconds)
      if ngx_transport.usable() then return rawget(_G, "ngx").sleep(seconds) end
      fallback = fallback or blocking_sleep()
      return fallback(seconds)
   end
end

--- The transport to use for the option `transport` ("ngx", "curl", a module,
-- or nil: pick): the module's name or the module, or nil and an "invalid"
-- error. With nil it picks "ngx" where cosockets work, "curl" outside nginx,
-- and refuses the other nginx phases, where libcurl would block the worker.
function transport.choose(requested)
   if requested == "curl" or type(requested) == "table" then return requested end
   if requested ~= nil and requested ~= "ngx" then
      return nil, errors.new("invalid", {
         message = 'transport must be "ngx" or "curl", got ' .. tostring(requested),
      })
   end
   if requested == nil and not transport.in_ngx_lua() then return "curl" end
   local ok, why = require("prefect.transport.ngx").usable()
   if ok then return "ngx" end
   local msg = "cannot use the ngx transport: " .. why
   if requested == nil then
      msg = msg .. "; run the request from a content/access/rewrite handler or an ngx.timer.at"
         .. " callback, or pass transport = \"curl\" to block this nginx worker on purpose"
   end
   return nil, errors.new("invalid", { message = msg })
end

--- What a requested transport can do, known without creating it:
-- `concurrent` (several requests in flight, and `poll`).
function transport.capabilities(requested)
   if requested == "ngx" or (requested == nil and transport.in_ngx_lua()) then
      return { name = "ngx", concurrent = false }
   end
   if type(requested) == "table" then
      return { name = requested.name or "custom", concurrent = requested.concurrent ~= false }
   end
   return { name = "curl", concurrent = true }
end

local Runtime = {}
Runtime.__index = Runtime

--- The runtime of a client: `clock`, `sleep`, `capabilities` and `open()`,
-- which creates the transport on first use (in the nginx phase of the first
-- request, not of the client's creation). `opts` is the resolved transport
-- layer; `clock` and `sleep` replace the defaults when given.
function transport.pick(opts, clock, sleep)
   return setmetatable({
      opts = opts,
      clock = clock or wall_clock(),
      sleep = sleep or transport.default_sleep(),
      capabilities = transport.capabilities(opts.transport),
   }, Runtime)
end

--- The transport instance, created on first use; or nil and an error.
function Runtime:open()
   if self.instance then return self.instance end
   local chosen, err = transport.choose(self.opts.transport)
   if not chosen then return nil, err end
   local mod = chosen
   if type(mod) == "string" then mod = require("prefect.transport." .. mod) end
   local ok, instance = pcall(mod.new, self.opts)
   if not ok then
      if errors.is(instance) then return nil, instance end
      return nil, errors.new("invalid", { message = "cannot create the transport: " .. tostring(instance) })
   end
   self.instance = instance
   return instance
end

--- Closes the transport (open requests are cancelled); the next request opens a new one.
function Runtime:close()
   if self.instance then
      self.instance:close()
      self.instance = nil
   end
end

return transport
