--- The transport interface of lua-prefect over the C core's libcurl session.
-- It knows nothing of Prefect: method, URL, headers and body go in; status,
-- headers and a stream of decoded values come out. The C side (transport and
-- decoder alike) reports errors as tables {kind, message, ...}; here they
-- become prefect.errors objects.

local errors = require("prefect.errors")
local decoders = require("prefect.transport.decoders")

local core -- loaded on first use, so that requiring this module stays cheap

local function load_core()
   if not core then core = require("prefect.core") end
   return core
end

local curl = {}

-- CURLcodes of a server never reached: a proxy or host name that does not
-- resolve, a connection refused.
local UNREACHED = { [5] = true, [6] = true, [7] = true }

-- A C error table (or a message) as a prefect error.
local function wrap_error(err, url)
   if errors.is(err) then return err end
   if type(err) == "table" then
      local kind = errors.KINDS[err.kind] and err.kind or "protocol"
      return errors.new(kind, {
         message = err.message and tostring(err.message) or nil,
         url = err.url or url, code = err.code, offset = err.offset,
         unreachable = (kind == "connect" and UNREACHED[err.code]) or nil,
      })
   end
   return errors.new("protocol", { message = tostring(err), url = url })
end
curl.wrap_error = wrap_error

local Request = {}
Request.__index = Request

--- status, headers (lowercase name -> value) | nil, err
function Request:response(timeout_ms)
   local status, headers = self.raw:response(timeout_ms)
   if status == nil then return nil, wrap_error(headers, self.url) end
   return status, headers
end

--- The next decoded element | nil at the end of the body | nil, err
function Request:next()
   local v, err = self.raw:next()
   if v ~= nil then return v end
   if err ~= nil then return nil, wrap_error(err, self.url) end
   return nil
end

--- The elements ready now (maybe none; at most `max` when given), and
--- whether the body is complete.
function Request:poll(timeout_ms, max)
   local list, done = self.raw:poll(timeout_ms, max)
   if list == nil then return nil, wrap_error(done, self.url) end
   return list, done
end

--- The whole body, when it was not streamed into the decoder.
function Request:body()
   local s, err = self.raw:body()
   if s == nil then return nil, wrap_error(err, self.url) end
   return s
end

function Request:close()
   if self.raw then self.raw:close() end
   -- Once the request is closed libcurl writes nothing more into the
   -- decoder, so the next page of the same query may have it.
   if self.decoder then
      self.decoders:give(self.decode, self.decoder)
      self.decoder = nil
   end
end

local Transport = {}
Transport.__index = Transport

--- A transport from the client's transport options (timeouts, TLS, limits),
-- already checked and defaulted by prefect.options.
function curl.new(opts)
   local c = load_core()
   local s_opts = {}
   for k, v in pairs(opts) do s_opts[k] = v end
   s_opts.transport = nil
   -- prefect.exchange follows the redirects that keep the method and the body
   s_opts.follow_redirects = false
   local session = c.session(s_opts)
   return setmetatable({ session = session, decoders = decoders.pool() }, Transport)
end

local function header_lines(headers)
   local names = {}
   for name in pairs(headers or {}) do names[#names + 1] = name end
   table.sort(names) -- a stable order makes requests reproducible
   local lines = {}
   for i, name in ipairs(names) do lines[i] = name .. ": " .. tostring(headers[name]) end
   return lines
end
curl.header_lines = header_lines

--- Starts a request; returns a request object or nil, err.
-- @tparam table r method, url, headers (name -> value), body, decode (decoder options or nil)
function Transport:request(r)
   local decoder = r.decode and self.decoders:take(r.decode)
   local raw, err = self.session:request{
      method = r.method, url = r.url, headers = header_lines(r.headers),
      body = r.body, decoder = decoder,
   }
   if not raw then
      if decoder then self.decoders:give(r.decode, decoder) end
      return nil, wrap_error(err, r.url)
   end
   return setmetatable({
      raw = raw, url = errors.safe_url(r.url),
      decoder = decoder, decode = r.decode, decoders = self.decoders,
   }, Request)
end

function Transport:close()
   if self.session then self.session:close() end
end

return curl
