--- Structured errors for lua-prefect.
-- Every run-time failure is one of these tables: `kind` says what went wrong
-- ("connect", "timeout", "tls", "http", "decode", "invalid", "too_large",
-- "protocol", "aborted"), `message` says it in words, and the other fields
-- carry what a caller may act on (`status`, `detail`, `retry_after`, `url`,
-- `attempts`). `tostring(err)` gives one readable line.
--
-- Secrets never reach an error: URLs lose their user-info and query string
-- here, and the client scrubs its own credentials from anything a server or
-- libcurl said before the error is made.
-- @module prefect.errors

local errors = {}

local Error = {}
Error.__index = Error

local KINDS = {
   connect = true, timeout = true, tls = true, http = true, decode = true,
   invalid = true, too_large = true, protocol = true, aborted = true,
}
errors.KINDS = KINDS

--- A URL with no `user:pass@` part and no query string (which may hold tokens).
function errors.safe_url(url)
   if type(url) ~= "string" then return nil end
   url = url:gsub("^(%a[%w+.-]*://)[^/@]*@", "%1")
   return (url:gsub("[?#].*$", ""))
end

local function one_line(s, max)
   s = tostring(s):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
   if max and #s > max then s = s:sub(1, max - 3) .. "..." end
   return s
end

function Error.__tostring(e)
   local parts = { "prefect: " .. tostring(e.kind) }
   if e.status then parts[#parts + 1] = " " .. tostring(e.status) end
   if e.url then parts[#parts + 1] = " from " .. e.url end
   local text = e.message
   if e.detail and e.detail ~= e.message then
      text = text and (text .. ": " .. e.detail) or e.detail
   end
   if text then parts[#parts + 1] = ": " .. one_line(text, 600) end
   if e.where then parts[#parts + 1] = " (at " .. e.where .. ")" end
   if e.retry_after then
      parts[#parts + 1] = string.format(" (retry after %gs)", e.retry_after)
   end
   if e.attempts and e.attempts > 1 then
      parts[#parts + 1] = string.format(" (after %d attempts)", e.attempts)
   end
   return table.concat(parts)
end

--- New error of `kind` with the given fields (copied).
-- @tparam string kind one of errors.KINDS
-- @tparam[opt] table fields message, status, detail, retry_after, url, attempts, ...
function errors.new(kind, fields)
   if not KINDS[kind] then
      error("prefect.errors.new: unknown error kind " .. tostring(kind), 2)
   end
   local e = { kind = kind }
   if fields then
      for k, v in pairs(fields) do e[k] = v end
   end
   e.kind = kind
   if e.url then e.url = errors.safe_url(e.url) end
   if e.message == nil then e.message = kind .. " error" end
   return setmetatable(e, Error)
end

--- True when `v` is an error made by errors.new.
function errors.is(v)
   return getmetatable(v) == Error
end

-- Detail items of FastAPI/pydantic: {loc = {...}, msg = "...", type = "..."}
local function format_item(item)
   if type(item) ~= "table" then return tostring(item) end
   local loc = item.loc
   local where
   if type(loc) == "table" then
      local names = {}
      for i = 1, #loc do names[#names + 1] = tostring(loc[i]) end
      where = table.concat(names, ".")
   end
   local msg = item.msg ~= nil and tostring(item.msg) or nil
   if where and msg then return where .. ": " .. msg end
   return msg or where or "?"
end

local function format_items(list)
   local out = {}
   for i = 1, #list do out[i] = format_item(list[i]) end
   return table.concat(out, "; ")
end

--- Prefect's error detail as one string, from any body shape the server uses:
-- `{"detail": "..."}`, `{"detail": [items]}`,
-- `{"exception_message": "...", "exception_detail": [items]}`.
-- Returns nil when the body has none of them.
function errors.detail_of(body)
   if type(body) ~= "table" then
      if type(body) == "string" then return body end
      return nil
   end
   local d = body.detail
   if type(d) == "string" then return d end
   if type(d) == "table" then return format_items(d) end
   local m, ed = body.exception_message, body.exception_detail
   if type(m) == "string" or type(ed) == "table" then
      local text = type(m) == "string" and m or nil
      if type(ed) == "table" and #ed > 0 then
         local items = format_items(ed)
         text = text and (text .. " " .. items) or items
      end
      return text
   end
   return nil
end

local function excerpt(s)
   s = s:gsub("<[^>]*>", " ")
   return one_line(s, 200)
end

--- The error for an HTTP response that was not a success.
-- @param status integer status
-- @param body raw body string (may be nil or not JSON)
-- @param fields extra fields (url, retry_after, content_type, ...)
-- @param decode_json function(string) -> value (may raise); keeps this module free of a JSON library
function errors.http(status, body, fields, decode_json)
   local f = {}
   if fields then for k, v in pairs(fields) do f[k] = v end end
   f.status = status
   local detail
   if type(body) == "string" and body ~= "" then
      local parsed
      if decode_json then
         local ok, v = pcall(decode_json, body)
         if ok then parsed = v end
      end
      if type(parsed) == "table" or type(parsed) == "string" then
         detail = errors.detail_of(parsed)
         if type(parsed) == "table" then f.body = parsed end
      end
      if detail == nil then detail = excerpt(body) end
   end
   f.detail = detail
   f.message = f.message or ("HTTP " .. tostring(status))
   return errors.new("http", f)
end

return errors
