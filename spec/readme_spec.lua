-- The README's quick start runs as printed, against the test server: a reader
-- who copies it gets runs, not an error.

local test_server = require("test_server")
local disk = require("disk")

-- Runs a README snippet with its server URL replaced and print captured; returns the printed lines.
local function run_snippet(code, url, env_extra)
   local old = "http://127.0.0.1:4200/api"
   local at = assert(code:find(old, 1, true), "the snippet no longer uses " .. old)
   code = code:sub(1, at - 1) .. url .. code:sub(at + #old)
   local printed = {}
   local env = setmetatable({
      print = function(...)
         local parts = {}
         for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
         printed[#printed + 1] = table.concat(parts, "\t")
      end,
   }, { __index = _G })
   for k, v in pairs(env_extra or {}) do env[k] = v end
   local chunk = assert((loadstring or load)(code, "=README", "t", env))
   if setfenv then setfenv(chunk, env) end -- luacheck: ignore 113
   chunk()
   return printed
end

describe("README's first example", function()
   local srv
   setup(function()
      srv = test_server.start{ dataset = "fixture", relative_time = true }
   end)
   teardown(function()
      srv:stop()
   end)

   it("prints what the README says it prints, against the server it names", function()
      local readme = assert(disk.read(test_server.ROOT .. "/README.md"))
      local section = assert(readme:match("\n## An example\n(.-)\n## "), "no An example section")
      local code = assert(section:match("```lua\n(.-)```"), "no lua block in An example")
      local output = assert(section:match("```text\n(.-)```"), "no output block in An example")
      assert.is_truthy(section:find("bin/prefect-test-server --port 4200\n--relative-time", 1, true)
         or section:find("bin/prefect-test-server --port 4200 --relative-time", 1, true))
      local _, code_lines = code:gsub("\n", "")
      assert.is_true(code_lines <= 10, code_lines .. " lines")
      local printed = run_snippet(code, srv.url)
      assert.equal(output, table.concat(printed, "\n") .. "\n")
   end)
end)

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
      -- the snippet asks for runs that started in the last hour; generated runs are older
      local printed = run_snippet(code, srv.url, {
         os = setmetatable({ time = function() return 0 end }, { __index = os }),
      })
      assert.is_true(#printed > 0, "the quick start printed nothing")
      for _, line in ipairs(printed) do
         assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+\t[^\t]+\t%u+$", line)
      end
   end)
end)
