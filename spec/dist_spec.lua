-- `make dist` as a LuaRocks user meets it: tools/dist.sh builds the release's source rock, and
-- `luarocks install` takes that file alone, with no network (a proxy that refuses everything, no
-- dependency look-ups), into a temporary tree for the interpreter this spec runs under
-- ($PREFECT_TEST_LUA: `make test` runs it under Lua 5.4 and under LuaJIT). The installed copy then
-- reads task runs from the test server.

local disk = require("disk")
local test_server = require("test_server")

local LUA = os.getenv("PREFECT_TEST_LUA") or "lua5.4"
local LUA_VERSION = LUA == "luajit" and "5.1" or "5.4"
local LUA_INCDIR = LUA == "luajit" and "/usr/include/luajit-2.1" or "/usr/include/lua5.4"

local function quote(s)
   return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell command; returns its exit status and what it wrote (both streams).
local function run(command)
   local p = assert(io.popen("(" .. command .. ") 2>&1; echo \"exit=$?\""))
   local out = p:read("*a")
   p:close()
   local status = tonumber(out:match("exit=(%d+)\n$"))
   return status, out:gsub("exit=%d+\n$", "")
end

local function lines_of(command)
   local _, out = run(command)
   local t = {}
   for line in out:gmatch("[^\n]+") do t[#t + 1] = line end
   table.sort(t)
   return t
end

describe("make dist", function()
   local dir, tree, rock, version
   setup(function()
      dir = disk.tmpdir()
      tree = dir .. "/tree"
      local release = lines_of("ls rockspecs/lua-prefect-*.rockspec | sort -V | tail -n 1")[1]
      version = assert(release:match("lua%-prefect%-(%d+%.%d+%.%d+)%-%d+%.rockspec$"), release)
      local status, out = run("DIST_DIR=" .. quote(dir) .. " tools/dist.sh")
      assert(status == 0, out)
      rock = dir .. "/" .. release:match("([^/]+)%.rockspec$") .. ".src.rock"
   end)
   teardown(function()
      if dir then disk.remove_tree(dir) end
   end)

   it("packs the rockspec and the tag's archive of the tracked files", function()
      local names = lines_of("unzip -Z1 " .. quote(rock))
      local base = "lua-prefect-" .. version
      assert.same({ base .. "-1.rockspec", base .. ".tar.gz" }, names)
      local archived = lines_of("tar -tzf " .. quote(dir .. "/lua-prefect-" .. version .. ".tar.gz")
         .. " | grep -v '/$' | sed 's|^lua-prefect-" .. version .. "/||'")
      assert.same(lines_of("git ls-files"), archived)
   end)

   it("installs offline under " .. LUA .. ", and the installed copy reads task runs", function()
      local multiarch = lines_of("gcc -print-multiarch")[1]
      local status, out = run(("cd %s && env http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9"
         .. " luarocks install --tree %s --deps-mode=none --lua-version=%s LUA_INCDIR=%s"
         .. " CURL_INCDIR=/usr/include/%s CURL_LIBDIR=/usr/lib/%s %s"):format(quote(dir), quote(tree),
         LUA_VERSION, LUA_INCDIR, multiarch, multiarch, quote(rock)))
      assert.equal(0, status, out)
      assert.matches("lua%-prefect " .. version:gsub("%.", "%%.") .. "%-1 is now installed", out)

      -- every module of lua/ (lua/prefect/init.lua is the module prefect), and the core
      local share = tree .. "/share/lua/" .. LUA_VERSION
      local function modules(files)
         local names = {}
         for i, file in ipairs(files) do
            names[i] = file:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
         end
         table.sort(names)
         return names
      end
      assert.same(modules(lines_of("cd lua && find prefect -name '*.lua'")),
         modules(lines_of("cd " .. quote(share) .. " && find prefect prefect.lua -name '*.lua'")))
      assert.is_true(disk.exists(tree .. "/lib/lua/" .. LUA_VERSION .. "/prefect/core.so"))
      assert.is_true(disk.exists(tree .. "/bin/prefect-test-server"))

      local srv = test_server.start{ dataset = { generate = 120 } }
      finally(function() srv:stop() end)
      local script = [[
         local prefect = require("prefect")
         local client = prefect.client{ retries = 0 } -- PREFECT_API_URL
         local n = 0
         for _ in client:task_runs{ state = "FAILED" } do n = n + 1 end
         io.write(prefect._VERSION, " ", require("prefect.core")._VERSION, " ", n, " ",
            tostring(assert(client:count{ state = "FAILED" })), " ",
            package.searchpath("prefect", package.path))
      ]]
      local command = "cd %s && env -u LUA_PATH -u LUA_CPATH LUA_PATH=%s LUA_CPATH=%s PREFECT_API_URL=%s"
         .. " %s -e %s"
      status, out = run(command:format(quote(dir), quote(share .. "/?.lua;" .. share .. "/?/init.lua;;"),
         quote(tree .. "/lib/lua/" .. LUA_VERSION .. "/?.so;;"), quote(srv.url), LUA, quote(script)))
      assert.equal(0, status, out)
      local lua_version, core_version, read, counted, from = out:match("^(%S+) (%S+) (%d+) (%d+) (%S+)$")
      assert.equal(version, lua_version, out)
      assert.equal(version, core_version, out)
      assert.equal(counted, read)
      assert.is_true(tonumber(read) > 0, out)
      assert.equal(share .. "/prefect.lua", from) -- the tree's copy, not the checkout's
   end)
end)
