-- The rooms of lua/prefect and what each may import (docs/architecture.md):
-- data flows one way, client -> pager -> exchange -> transport -> decoder,
-- and no module reaches into another's private (`_name`) fields.

local disk = require("disk")

local ROOT = "lua/prefect/"

-- Every Lua file under lua/prefect, as module name -> source text.
local function modules()
   local out = {}
   local list = assert(io.popen("find " .. ROOT .. " -name '*.lua' | sort"))
   for path in list:lines() do
      local name = path:sub(#ROOT + 1):gsub("%.lua$", ""):gsub("/?init$", ""):gsub("/", ".")
      out[name == "" and "prefect" or "prefect." .. name] = assert(disk.read(path))
   end
   list:close()
   return out
end

-- Every prefect module `src` requires, anywhere in the file (top level or inside functions).
local function requires(src)
   local out = {}
   for name in src:gmatch("require%(?%s*[\"'](prefect[%w_.]*)[\"']") do out[name] = true end
   return out
end

local function room(name)
   if name:find("^prefect%.testing") then return "testing" end
   if name:find("^prefect%.filter") then return "filter" end
   if name:find("^prefect%.transport") then return "transport" end
   return name
end

local SRC = modules()

describe("the rooms of lua/prefect", function()
   it("finds the modules it checks", function()
      for _, name in ipairs{ "prefect.client", "prefect.pager", "prefect.exchange", "prefect.transport",
         "prefect.transport.curl", "prefect.transport.ngx", "prefect.options", "prefect.include" } do
         assert.is_string(SRC[name], name)
      end
   end)

   it("lets only the client require the pager and include, and only prefect require the client", function()
      local wrong = {}
      for name, src in pairs(SRC) do
         local r = requires(src)
         if r["prefect.pager"] and name ~= "prefect.client" then wrong[#wrong + 1] = name .. " -> pager" end
         if r["prefect.include"] and name ~= "prefect.client" then
            wrong[#wrong + 1] = name .. " -> include"
         end
         if r["prefect.client"] and name ~= "prefect" then wrong[#wrong + 1] = name .. " -> client" end
      end
      table.sort(wrong)
      assert.same({}, wrong)
   end)

   it("keeps data flowing one way: no room requires one above it", function()
      -- what each room must never require
      local above = {
         ["prefect.pager"] = { "prefect.client", "prefect.exchange", "prefect.transport", "prefect.filter",
            "prefect.include" },
         -- it is handed the way to make exchanges, as the pager is
         ["prefect.include"] = { "prefect.client", "prefect.pager", "prefect.exchange", "prefect.transport",
            "prefect.filter", "prefect.options" },
         ["prefect.exchange"] = { "prefect.client", "prefect.pager", "prefect.filter" },
         transport = { "prefect.client", "prefect.pager", "prefect.exchange", "prefect.filter" },
         ["prefect.options"] = { "prefect.client", "prefect.pager", "prefect.exchange", "prefect.transport" },
         -- handed its reads by the client: it never makes a request of its own
         ["prefect.follow"] = { "prefect.client", "prefect.pager", "prefect.exchange", "prefect.transport" },
         ["prefect.errors"] = { "prefect" },
      }
      local wrong = {}
      for name, src in pairs(SRC) do
         local banned = above[name] or above[room(name)] or {}
         for dep in pairs(requires(src)) do
            for _, b in ipairs(banned) do
               if dep == b or dep:sub(1, #b + 1) == b .. "." then
                  wrong[#wrong + 1] = name .. " -> " .. dep
               end
            end
         end
         -- nothing outside the testing room depends on it: it is for tests and users' tests
         if room(name) ~= "testing" then
            for dep in pairs(requires(src)) do
               if room(dep) == "testing" then wrong[#wrong + 1] = name .. " -> " .. dep end
            end
         end
      end
      table.sort(wrong)
      assert.same({}, wrong)
   end)

   it("has no import cycle", function()
      local state, cycle = {}, nil
      local function visit(name, path)
         if state[name] == "done" or cycle then return end
         if state[name] == "open" then
            cycle = table.concat(path, " -> ") .. " -> " .. name
            return
         end
         state[name] = "open"
         path[#path + 1] = name
         for dep in pairs(requires(SRC[name] or "")) do
            if dep ~= name then visit(dep, path) end
         end
         path[#path] = nil
         state[name] = "done"
      end
      for name in pairs(SRC) do visit(name, {}) end
      assert.is_nil(cycle)
   end)

   it("uses private (_name) methods and fields only in the module that defines them", function()
      local wrong = {}
      for name, src in pairs(SRC) do
         local defined = {}
         for private in src:gmatch("function [%w_]+[:.](_[%l][%w_]*)") do defined[private] = true end
         for private in src:gmatch("[%w_]+%.(_[%l][%w_]*)%s*=[^=]") do defined[private] = true end
         local n = 0
         for line in (src .. "\n"):gmatch("(.-)\n") do
            n = n + 1
            local code = line:gsub("%-%-.*$", "")
            for receiver, private in code:gmatch("([%w_]+)[:.](_[%l][%w_]*)") do
               if not defined[private] then
                  wrong[#wrong + 1] = string.format("%s:%d %s.%s", name, n, receiver, private)
               end
            end
         end
      end
      table.sort(wrong)
      assert.same({}, wrong)
   end)

   it("prefect.core exports one function, luaopen_prefect_core", function()
      local so = assert(package.searchpath("prefect.core", package.cpath))
      local nm = assert(io.popen("nm -D --defined-only '" .. so .. "' 2>&1"))
      local out = nm:read("*a")
      nm:close()
      -- names starting with "_" belong to the toolchain (sanitizer runtimes, crt), not to us
      local exported = {}
      for name in out:gmatch("%x+ [TDBRVW] ([%a][%w_]*)") do exported[#exported + 1] = name end
      assert.same({ "luaopen_prefect_core" }, exported, out)
   end)
end)
