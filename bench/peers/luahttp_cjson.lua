--- Peer: the paging loop written with Debian's lua-http (the modern pure-Lua client, on cqueues)
-- and lua-cjson. POST /task_runs/filter, pages of 200 by offset, each body read whole and decoded.
-- lua-http 0.4 keeps no connection between requests: each page opens its own (and its own TLS
-- session). It does not inflate a gzip Content-Encoding itself: with opts.gzip the loop asks for
-- gzip and inflates with lua-zlib. opts.cafile: trust this CA for https.
--   read(url, n, on_run [, headers [, opts]]) --> number of runs handed to on_run
local request = require("http.request")
local cjson = require("cjson")

local PAGE = 200

local function tls_context(cafile)
   local ctx = require("http.tls").new_client_context()
   local store = require("openssl.x509.store").new()
   store:add(cafile)
   ctx:setStore(store)
   return ctx
end

local function read(url, n, on_run, headers, opts)
   opts = opts or {}
   local inflate = opts.gzip and require("zlib").inflate
   local ctx = opts.cafile and tls_context(opts.cafile)
   local got, offset = 0, 0
   local endpoint = url .. "/task_runs/filter"
   while got < n do
      local limit = math.min(PAGE, n - got)
      local req = request.new_from_uri(endpoint)
      if ctx then req.ctx = ctx end
      req.headers:upsert(":method", "POST")
      req.headers:upsert("content-type", "application/json")
      if inflate then req.headers:upsert("accept-encoding", "gzip") end
      for k, v in pairs(headers or {}) do req.headers:upsert(k:lower(), v) end
      req:set_body(cjson.encode{ sort = "ID_DESC", limit = limit, offset = offset })
      local response, stream = req:go(30)
      if not response then error("page at offset " .. offset .. ": " .. tostring(stream)) end
      local status = response:get(":status")
      local text = assert(stream:get_body_as_string(30))
      stream:shutdown()
      if status ~= "200" then error("page at offset " .. offset .. ": " .. status) end
      if inflate and (response:get("content-encoding") or ""):lower() == "gzip" then
         text = inflate()(text)
      end
      local page = cjson.decode(text)
      for i = 1, #page do on_run(page[i]) end
      got, offset = got + #page, offset + #page
      if #page < limit then break end
   end
   return got
end

return { name = "lua-http+cjson", read = read }
