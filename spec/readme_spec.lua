-- The README's quick start runs as printed, against the test server: a reader
-- who copies it gets runs, not an error.

local test_server = require("test_server")
local disk = require("disk")

describe("README quick start", function()
   local srv
   setup(function()
      srv = test_server.start{ dataset = { generate = 300 } }
   end)
   teardown(function()
      srv:stop()
   end)

   it("runs as printed, with only the server's URL changed", function()
      local readme = assert(disk.read(test_server.ROOT .. "/README.md"))
      local section = assert(readme:match("\n## Quick start\n(.-)\n## "), "no Quick start section")
      local code = assert(section:match("```lua\n(.-)```"), "no lua block in Quick start")
      local url = "http://127.0.0.1:4200/api"
      local at = assert(code:find(url, 1, true), "the quick start no longer uses " .. url)
      code = code:sub(1, at - 1) .. srv.url .. code:sub(at + #url)

      local printed = {}
      local env = setmetatable({
         print = function(...) printed[#printed + 1] = table.concat({ ... }, "\t", 1, select("#", ...)) end,
         -- the snippet asks for runs that started in the last hour; generated runs are older
         os = setmetatable({ time = function() return 0 end }, { __index = os }),
      }, { __index = _G })
      local chunk = assert((loadstring or load)(code, "=README quick start", "t", env))
      if setfenv then setfenv(chunk, env) end -- luacheck: ignore 113
      chunk()
      assert.is_true(#printed > 0, "the quick start printed nothing")
      for _, line in ipairs(printed) do
         assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+\t[^\t]+\t%u+$", line)
      end
   end)
end)
