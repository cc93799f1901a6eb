--- Prefect's CSRF tokens, fetched only when a server asks for them.
--
-- Self-hosted Prefect can refuse even read-only POSTs without a token. Asking
-- for one up front would cost every client a request that nearly all servers
-- (and Prefect Cloud) do not need, so a token is fetched after the first
-- refusal, renewed shortly before it expires, and never asked for again once
-- the server says its protection is off (docs/client.md, "CSRF").
--
-- This module holds the state and the rules; prefect.exchange makes the
-- token request, like any other request, at the step where it is needed.
-- @module prefect.csrf

local errors = require("prefect.errors")

local csrf = {}

-- Seconds before a token's expiry at which a new one is fetched, so that a
-- token never runs out between being sent and being checked.
local MARGIN = 60

--- A random client identifier (a version 4 UUID) from `random` (as math.random()).
function csrf.new_client_id(random)
   local hex = "0123456789abcdef"
   local out = {}
   for i = 1, 36 do
      if i == 9 or i == 14 or i == 19 or i == 24 then
         out[i] = "-"
      elseif i == 15 then
         out[i] = "4"
      else
         local n = math.floor(random() * 16) % 16
         if i == 20 then n = 8 + n % 4 end
         out[i] = hex:sub(n + 1, n + 1)
      end
   end
   return table.concat(out)
end

--- ISO-8601 (as Prefect writes it) to epoch seconds, or nil.
function csrf.parse_iso(s)
   if type(s) ~= "string" then return nil end
   local seconds, micros = require("prefect.filter.time").parse_iso(s)
   return seconds and seconds + micros / 1e6
end

local State = {}
State.__index = State

--- The CSRF state of one client: `client` (its identifier), and once a
-- server asked for one, `token` and `expires` (epoch seconds or nil), or
-- `disabled` once the server said its protection is off.
function csrf.new(random)
   return setmetatable({ client = csrf.new_client_id(random) }, State)
end

--- Adds the token headers to `headers` when a token is held.
function State:add_headers(headers)
   if self.token then
      headers["Prefect-Csrf-Token"] = self.token
      headers["Prefect-Csrf-Client"] = self.client
   end
end

--- The path of Prefect's token endpoint for this client.
function State:path()
   return "/csrf-token?client=" .. self.client
end

--- Takes the token from a decoded /csrf-token answer; true or nil, err.
function State:accept(v, url)
   if type(v) ~= "table" or type(v.token) ~= "string" then
      return nil, errors.new("protocol", { message = "CSRF token response has no token", url = url })
   end
   self.token, self.expires = v.token, csrf.parse_iso(v.expiration)
   return true
end

--- Whether a /csrf-token answer with this status means "CSRF protection is
--- off" (422 "disabled"; 404 from servers older than the feature); then the
--- client never asks again.
function State:switched_off(status)
   if status == 422 or status == 404 then
      self.token, self.expires, self.disabled = nil, nil, true
      return true
   end
   return false
end

-- Safe methods are never checked by Prefect, so they never need a token.
local function needs_token(method)
   return method ~= "GET" and method ~= "HEAD"
end

--- True when the token held expires soon, so a new one is fetched first.
function State:due(method, now)
   return needs_token(method) and self.token ~= nil and self.expires ~= nil and now >= self.expires - MARGIN
end

--- True when `err` is a request refused for want of a (valid) token, and
--- asking for a token may help.
function State:refused(method, err)
   return needs_token(method) and not self.disabled and err.kind == "http" and err.status == 403
      and type(err.detail) == "string"
      and (err.detail:find("CSRF", 1, true) or err.detail:find("client identifier", 1, true)) ~= nil
end

return csrf
