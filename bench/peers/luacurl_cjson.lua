--- Peer (b): the same loop with Debian's lua-curl (luacurl 0.3, packaged for Lua 5.1 and 5.2
-- only, so it runs under LuaJIT) and lua-cjson. One easy handle for the whole read, so libcurl
-- keeps the connection alive between pages; each body is collected into a string and decoded whole.
--   read(url, n, on_run [, headers]) --> number of runs handed to on_run
local curl = require("curl")
local cjson = require("cjson")

local PAGE = 200

local function read(url, n, on_run, headers)
   local easy = curl.easy_init()
   local header_lines = { "Content-Type: application/json" }
   for k, v in pairs(headers or {}) do header_lines[#header_lines + 1] = k .. ": " .. v end
   local parts
   easy:setopt(curl.OPT_URL, url .. "/task_runs/filter")
   easy:setopt(curl.OPT_HTTPHEADER, header_lines)
   easy:setopt(curl.OPT_FAILONERROR, 1)
   -- without WRITEDATA, luacurl calls the write function as (bytes, length)
   easy:setopt(curl.OPT_WRITEFUNCTION, function(bytes, length)
      parts[#parts + 1] = bytes
      return length
   end)
   local got, offset = 0, 0
   while got < n do
      local limit = math.min(PAGE, n - got)
      parts = {}
      easy:setopt(curl.OPT_POSTFIELDS, cjson.encode{ sort = "ID_DESC", limit = limit, offset = offset })
      local ok, err = easy:perform()
      if not ok then error("page at offset " .. offset .. ": " .. tostring(err)) end
      local page = cjson.decode(table.concat(parts))
      for i = 1, #page do on_run(page[i]) end
      got, offset = got + #page, offset + #page
      if #page < limit then break end
   end
   return got
end

return { name = "lua-curl+cjson", read = read }
