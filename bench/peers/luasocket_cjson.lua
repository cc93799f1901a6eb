--- Peer (a): the paging loop a user writes by hand with luasocket's http.request and lua-cjson.
-- POST /task_runs/filter, pages of 200 by offset, each body collected into a string and decoded
-- whole. socket.http has no keep-alive: one connection per page, as a user of it gets.
--   read(url, n, on_run [, headers]) --> number of runs handed to on_run
local http = require("socket.http")
local ltn12 = require("ltn12")
local cjson = require("cjson")

local PAGE = 200

local function read(url, n, on_run, headers)
   local got, offset = 0, 0
   local endpoint = url .. "/task_runs/filter"
   while got < n do
      local limit = math.min(PAGE, n - got)
      local body = cjson.encode{ sort = "ID_DESC", limit = limit, offset = offset }
      local request_headers = { ["content-type"] = "application/json", ["content-length"] = #body }
      for k, v in pairs(headers or {}) do request_headers[k] = v end
      local sink = {}
      local ok, status = http.request{
         url = endpoint, method = "POST", headers = request_headers,
         source = ltn12.source.string(body), sink = ltn12.sink.table(sink),
      }
      if not ok or status ~= 200 then error("page at offset " .. offset .. ": " .. tostring(status)) end
      local page = cjson.decode(table.concat(sink))
      for i = 1, #page do on_run(page[i]) end
      got, offset = got + #page, offset + #page
      if #page < limit then break end
   end
   return got
end

return { name = "luasocket+cjson", read = read }
