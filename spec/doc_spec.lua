-- The API reference (`make doc`, LDoc over the modules config.ld lists): every public function of
-- those modules has a doc comment and a place in the generated pages, and every option a client
-- or a read takes is in docs/client.md, which the reference includes.

local disk = require("disk")

local function quote(s)
   return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local config = {}
assert(load(assert(disk.read("config.ld")), "@config.ld", "t", config))()

-- The functions a module's users can call: defined on a table (`function M.name(` or
-- `function Class:name(`), not named with a leading underscore (internal by convention). Each with
-- the comment block right above it.
local function public_functions(path)
   local found, comment = {}, {}
   local n = 0
   for line in (assert(disk.read(path)) .. "\n"):gmatch("([^\n]*)\n") do
      n = n + 1
      local name = line:match("^function ([%w_]+[.:][%w_]+)%s*%(")
      if name and not name:match("[.:]_") then
         found[#found + 1] = { name = name, line = n, comment = comment }
      end
      if line:match("^%s*%-%-") then
         comment[#comment + 1] = line
      else
         comment = {}
      end
   end
   return found
end

-- The name `require` knows the module by: lua/prefect/x/init.lua is prefect.x.
local function module_name(path)
   return (path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", "."))
end

describe("the API reference", function()
   it("covers the public modules", function()
      local files = {}
      for _, f in ipairs(config.file) do files[f] = true end
      for _, f in ipairs({ "lua/prefect/init.lua", "lua/prefect/client.lua", "lua/prefect/filter.lua",
         "lua/prefect/errors.lua", "lua/prefect/pager.lua" }) do
         assert.is_true(files[f], f .. " is not in config.ld")
      end
   end)

   for _, path in ipairs(config.file) do
      describe(path, function()
         local source = assert(disk.read(path))

         it("names itself with @module as require knows it", function()
            assert.is_truthy(source:match("^%-%-%-[^\n]*\n"), "no doc comment (---) opens " .. path)
            assert.equal(module_name(path), source:match("\n%-%- @module ([%w_.]+)\n"))
         end)

         it("has a doc comment (---) over every public function", function()
            local missing = {}
            for _, f in ipairs(public_functions(path)) do
               local first = f.comment[1]
               if not first or not first:match("^%-%-%-[^-]") or #f.comment[1] < 6 then
                  missing[#missing + 1] = ("%s:%d %s"):format(path, f.line, f.name)
               end
            end
            assert.same({}, missing)
         end)
      end)
   end

   it("is generated, with a place for every public function", function()
      local dir = disk.tmpdir()
      finally(function() disk.remove_tree(dir) end)
      local p = assert(io.popen("tools/doc.sh " .. quote(dir) .. " 2>&1; echo \"exit=$?\""))
      local out = p:read("*a")
      p:close()
      assert.matches("exit=0\n$", out)
      assert.is_truthy(disk.exists(dir .. "/index.html"), out)
      for _, path in ipairs(config.file) do
         local page = dir .. "/modules/" .. module_name(path) .. ".html"
         local html = assert(disk.read(page), "no page " .. page .. ":\n" .. out)
         for _, f in ipairs(public_functions(path)) do
            -- LDoc anchors a module's own functions by their short name, a class's by Class:name
            local short = f.name:match("^[%w_]+%.([%w_]+)$")
            local anchor = html:find('<a name = "' .. f.name .. '"', 1, true)
               or (short and html:find('<a name = "' .. short .. '"', 1, true))
            assert.is_truthy(anchor, f.name .. " is not in " .. page)
         end
      end
   end)

   it("lists every client option and every read option in docs/client.md, one of its topics", function()
      local topics = {}
      for _, t in ipairs(config.topics) do topics[t] = true end
      assert.is_true(topics["docs/client.md"])
      -- the names in the first cell of the guide's table rows (`| `ca_file`, `ca_path` | ... |`)
      local documented = {}
      for line in assert(disk.read("docs/client.md")):gmatch("[^\n]+") do
         local cell = line:match("^| (.-) |")
         for name in (cell or ""):gmatch("`([%w_]+)`") do documented[name] = true end
      end
      local options = require("prefect.options")
      local missing = {}
      for _, list in ipairs({ options.CLIENT_NAMES, options.DECODE_NAMES }) do
         for _, name in ipairs(list) do
            if not documented[name] then missing[#missing + 1] = name end
         end
      end
      assert.same({}, missing)
   end)

   it("holds the option table generated from prefect.options (lua tools/options_doc.lua --write)", function()
      local generated = dofile("tools/options_doc.lua").table_text()
      local doc = assert(disk.read("docs/client.md"))
      assert.truthy(doc:find(generated, 1, true),
         "docs/client.md's option table differs from prefect.options.LIST:"
            .. " run lua tools/options_doc.lua --write")
   end)
end)
