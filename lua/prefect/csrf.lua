--- Prefect's CSRF tokens, fetched only when a server asks for them.
--
-- Self-hosted Prefect can refuse even read-only POSTs without a token. Asking
-- for one up front would cost every client a request that nearly all servers
-- (and Prefect Cloud) do not need, so a token is fetched after the first
-- refusal, renewed shortly before it expires, and never asked for again once
-- the server says its protection is off (docs/client.md, "CSRF").
--
-- The state lives on the client: `cl.csrf` is nil (never asked), a table
-- with `token` and `expires` (epoch seconds or nil), or `{ disabled = true }`;
-- a new token is always a new table, so prefect.pager can see a change by
-- identity. `cl.csrf_client` is the client identifier sent with the token.
-- Fetching goes through the client's own exchange (`cl:_start`,
-- `cl:_settle`), so a token request has the same headers, transport and
-- error handling as any other; prefect.pager's poller runs the same steps
-- without blocking, through path, accept and switched_off.

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

--- Adds the token headers to `headers` when `cl` holds a token.
function csrf.add_headers(cl, headers)
   local state = cl.csrf
   if state and state.token then
      headers["Prefect-Csrf-Token"] = state.token
      headers["Prefect-Csrf-Client"] = cl.csrf_client
   end
end

--- The path of Prefect's CSRF token endpoint for this client.
function csrf.path(cl)
   return "/csrf-token?client=" .. cl.csrf_client
end

--- Takes the token from a decoded /csrf-token answer; true or nil, err.
function csrf.accept(cl, v, url)
   if type(v) ~= "table" or type(v.token) ~= "string" then
      return nil, errors.new("protocol", { message = "CSRF token response has no token", url = url })
   end
   cl.csrf = { token = v.token, expires = csrf.parse_iso(v.expiration) }
   return true
end

--- Whether a /csrf-token answer with this status means "CSRF protection is
--- off" (422 "disabled"; 404 from servers older than the feature); then the
--- client never asks again.
function csrf.switched_off(cl, status)
   if status == 422 or status == 404 then
      cl.csrf = { disabled = true }
      return true
   end
   return false
end

--- Fetches a token (Prefect's GET /csrf-token?client=<id>). Returns true
-- when a token is now held, false when the server has CSRF protection off
-- (it is not asked again), or nil, err.
function csrf.fetch(cl)
   local h, err = cl:_start("GET", csrf.path(cl), nil, {})
   if not h then return nil, err end
   local req
   req, err = cl:_settle(h)
   if not req then
      if err.kind == "http" and csrf.switched_off(cl, err.status) then return false end
      return nil, err
   end
   local v, verr = req:next()
   req:close()
   if v == nil and verr then return nil, verr end
   return csrf.accept(cl, v, h.url)
end

-- Safe methods are never checked by Prefect, so they never need a token.
local function needs_token(method)
   return method ~= "GET" and method ~= "HEAD"
end

local function is_refusal(err)
   return err.kind == "http" and err.status == 403 and type(err.detail) == "string"
      and (err.detail:find("CSRF", 1, true) or err.detail:find("client identifier", 1, true)) ~= nil
end

--- True when the token held expires soon, so a new one is fetched first.
function csrf.due(cl, method)
   local state = cl.csrf
   return needs_token(method) and state ~= nil and state.token ~= nil and state.expires ~= nil
      and cl.clock() >= state.expires - MARGIN
end

--- True when `err` is a request refused for want of a (valid) token, and
--- asking for a token may help.
function csrf.refused(cl, method, err)
   return needs_token(method) and is_refusal(err) and not (cl.csrf and cl.csrf.disabled)
end

return csrf
