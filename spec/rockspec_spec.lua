-- The rockspec is written by hand; this keeps it from drifting away from the
-- tree, so that `luarocks make` installs every module the code requires.

local function read(path)
   local f = assert(io.open(path, "rb"))
   local text = f:read("*a")
   f:close()
   return text
end

local function list(command)
   local out = {}
   local p = assert(io.popen(command))
   for line in p:lines() do out[#out + 1] = line end
   p:close()
   table.sort(out)
   return out
end

describe("lua-prefect-scm-1.rockspec", function()
   local spec = {}
   assert(load(read("lua-prefect-scm-1.rockspec"), "rockspec", "t", spec))()

   it("installs every Lua module under lua/ under its require name", function()
      local want, have = {}, {}
      for _, path in ipairs(list("find lua -name '*.lua'")) do
         local name = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/", "."):gsub("%.init$", "")
         want[#want + 1] = name .. " = " .. path
      end
      table.sort(want)
      for name, path in pairs(spec.build.modules) do
         if type(path) == "string" then have[#have + 1] = name .. " = " .. path end
      end
      table.sort(have)
      assert.same(want, have)
   end)

   it("compiles every C file of csrc/ into prefect.core", function()
      local sources = {}
      for _, s in ipairs(spec.build.modules["prefect.core"].sources) do sources[#sources + 1] = s end
      table.sort(sources)
      assert.same(list("ls csrc/*.c"), sources)
   end)
end)
