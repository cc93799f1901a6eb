--- The streaming decoders both transports feed, kept per query.
--
-- A decoder remembers the keys and recurring values it has made into Lua
-- strings. A new one per page would make them all again (about a tenth of a
-- page's CPU), so a request that is closed gives its decoder back, and the
-- next page of the same query takes it. A query is known by its decode
-- options table, which the pager passes unchanged for every page.

local options = require("prefect.options")

local decoders = {}

-- Idle decoders kept per query: enough for `concurrency` pages in flight
-- to find one most of the time.
local IDLE_PER_QUERY = 4

-- The request's decode options the decoder takes.
local OPTIONS = {
   "fields", "exclude", "timestamps", "timestamp_fields", "null", "array_mt", "max_depth", "max_size",
   "shape",
}

local Pool = {}
Pool.__index = Pool

--- An empty pool for one transport.
function decoders.pool()
   -- weak keys: a query's idle decoders go with its options table
   return setmetatable({ idle = setmetatable({}, { __mode = "k" }) }, Pool)
end

--- A decoder for the decode options `decode`: one its query gave back, or a new one.
function Pool:take(decode)
   local idle = self.idle[decode]
   local decoder = idle and table.remove(idle)
   if decoder then return decoder end
   local opts = {}
   for _, k in ipairs(OPTIONS) do
      -- timestamps = false means "as sent", which is the decoder's default
      if not (k == "timestamps" and decode[k] == false) then opts[k] = decode[k] end
   end
   -- the decoder converts only the fields it is given: Prefect's, unless the request names others
   if opts.timestamps == "epoch" and opts.timestamp_fields == nil then
      opts.timestamp_fields = options.TIMESTAMP_FIELDS
   end
   return require("prefect.core").decoder(opts)
end

--- Takes back a decoder that nothing feeds any more (its request is closed
--- or was never sent), for the next request with the same `decode`.
function Pool:give(decode, decoder)
   local idle = self.idle[decode]
   if not idle then
      idle = {}
      self.idle[decode] = idle
   end
   if #idle < IDLE_PER_QUERY then
      decoder:reset()
      idle[#idle + 1] = decoder
   end
end

return decoders
