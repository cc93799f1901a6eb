-- The rockspecs are written by hand: lua-prefect-scm-1.rockspec (the checkout, `luarocks make`) and
-- one per release under rockspecs/. This keeps them from drifting away from the tree, so that
-- `luarocks make` installs every module the code requires, and from each other, so that a release
-- installs what the checkout does.

local disk = require("disk")

local function list(command)
   local out = {}
   local p = assert(io.popen(command))
   for line in p:lines() do out[#out + 1] = line end
   p:close()
   table.sort(out)
   return out
end

local function load_rockspec(path)
   local spec = {}
   assert(load(assert(disk.read(path)), "@" .. path, "t", spec))()
   return spec
end

-- A copy without what differs between releases by design: the version and where the source is.
local function shape(spec)
   local copy = {}
   for k, v in pairs(spec) do copy[k] = v end
   copy.version, copy.source = nil, nil
   copy.build = {}
   for k, v in pairs(spec.build) do copy.build[k] = v end
   copy.build.build_variables = {}
   for k, v in pairs(spec.build.build_variables) do copy.build.build_variables[k] = v end
   copy.build.build_variables.VERSION = nil
   return copy
end

local SCM = "lua-prefect-scm-1.rockspec"
local RELEASES = list("ls rockspecs/lua-prefect-*.rockspec")

describe("lua-prefect-scm-1.rockspec", function()
   local spec = load_rockspec(SCM)

   it("installs every Lua module under lua/ under its require name", function()
      local want, have = {}, {}
      for _, path in ipairs(list("find lua -name '*.lua'")) do
         local name = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/", "."):gsub("%.init$", "")
         want[#want + 1] = name .. " = " .. path
      end
      table.sort(want)
      for name, path in pairs(spec.build.install.lua) do have[#have + 1] = name .. " = " .. path end
      table.sort(have)
      assert.same(want, have)
   end)

   it("builds prefect.core with the Makefile's rock-core target and installs what it builds", function()
      local makefile = assert(disk.read("Makefile"))
      assert.equal("make", spec.build.type)
      assert.equal("rock-core", spec.build.build_target)
      assert.is_truthy(makefile:find("\nrock%-core:"), "no rock-core target in the Makefile")
      local core = assert(makefile:match("\nROCK_CORE := (%S+)\n"), "no ROCK_CORE in the Makefile")
      assert.same({ ["prefect.core"] = core }, spec.build.install.lib)
      -- every variable the target reads is one luarocks passes
      for var in ("CFLAGS LIBFLAG LUA_INCDIR CURL_INCDIR CURL_LIBDIR VERSION"):gmatch("%S+") do
         assert.is_string(spec.build.build_variables[var], var)
      end
      assert.equal("scm-1", spec.build.build_variables.VERSION)
   end)

   it("installs bin/prefect-test-server", function()
      assert.same({ ["prefect-test-server"] = "bin/prefect-test-server" }, spec.build.install.bin)
   end)
end)

describe("the release rockspecs under rockspecs/", function()
   it("exist", function()
      assert.is_true(#RELEASES > 0)
   end)

   for _, path in ipairs(RELEASES) do
      describe(path, function()
         local spec = load_rockspec(path)
         local version, revision = path:match("^rockspecs/lua%-prefect%-(%d+%.%d+%.%d+)%-(%d+)%.rockspec$")

         it("is named after its version, and builds the C core with that version", function()
            assert.is_truthy(version, path)
            assert.equal(version .. "-" .. revision, spec.version)
            assert.equal(version, spec.build.build_variables.VERSION)
         end)

         it("fetches its tag's archive, which unpacks to lua-prefect-VERSION", function()
            local tags = "https://github.com/lua-prefect/lua-prefect/archive/refs/tags/"
            assert.equal(tags .. "v" .. version .. ".tar.gz", spec.source.url)
            assert.equal("lua-prefect-" .. version .. ".tar.gz", spec.source.file)
            assert.equal("lua-prefect-" .. version, spec.source.dir)
         end)

         it("is the scm rockspec in all else", function()
            assert.same(shape(load_rockspec(SCM)), shape(spec))
         end)

         it("has its entry in CHANGELOG.md", function()
            local changelog = assert(disk.read("CHANGELOG.md"))
            local heading = "\n## " .. version .. " "
            assert.is_truthy(changelog:find(heading, 1, true), "no ## " .. version)
         end)
      end)
   end
end)
