--- Peer (a): the paging loop a user writes by hand with luasocket's http.request and lua-cjson.
-- POST /task_runs/filter, pages of 200 by offset, each body collected into a string and decoded
-- whole. socket.http has no keep-alive: one connection per page, as a user of it gets.
-- An https URL goes through luasec's ssl.https (verifying the server against opts.cafile), and
-- opts.gzip asks for gzip and inflates the body with lua-zlib, as a user would add them.
--   read(url, n, on_run [, headers [, opts]]) --> number of runs handed to on_run
local http = require("socket.http")
local ltn12 = require("ltn12")
local cjson = require("cjson")

local PAGE = 200

local function read(url, n, on_run, headers, opts)
   opts = opts or {}
   local request = http.request
   if url:match("^https:") then request = require("ssl.https").request end
   local inflate = opts.gzip and require("zlib").inflate
   local got, offset = 0, 0
   local endpoint = url .. "/task_runs/filter"
   while got < n do
      local limit = math.min(PAGE, n - got)
      local body = cjson.encode{ sort = "ID_DESC", limit = limit, offset = offset }
      local request_headers = { ["content-type"] = "application/json", ["content-length"] = #body }
      if inflate then request_headers["accept-encoding"] = "gzip" end
      for k, v in pairs(headers or {}) do request_headers[k] = v end
      local sink = {}
      local ok, status, response_headers = request{
         url = endpoint, method = "POST", headers = request_headers,
         source = ltn12.source.string(body), sink = ltn12.sink.table(sink),
         verify = opts.cafile and "peer" or nil, cafile = opts.cafile,
      }
      if not ok or status ~= 200 then error("page at offset " .. offset .. ": " .. tostring(status)) end
      local text = table.concat(sink)
      if inflate and (response_headers["content-encoding"] or ""):lower() == "gzip" then
         text = inflate()(text)
      end
      local page = cjson.decode(text)
      for i = 1, #page do on_run(page[i]) end
      got, offset = got + #page, offset + #page
      if #page < limit then break end
   end
   return got
end

return { name = "luasocket+cjson", read = read }
