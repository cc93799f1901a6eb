#!/usr/bin/env lua
--- The option table of docs/client.md, generated from prefect.options.LIST.
--   lua tools/options_doc.lua           prints the table
--   lua tools/options_doc.lua --write   replaces it in docs/client.md
-- spec/doc_spec.lua fails when docs/client.md holds anything else.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local options = require("prefect.options")

local BEGIN = "<!-- options: generated from lua/prefect/options.lua by tools/options_doc.lua -->"
local END = "<!-- /options -->"

local function shown(o)
   if o.shown then return o.shown end
   local v = o.default
   if type(v) == "string" then return '`"' .. v .. '"`' end
   return "`" .. tostring(v) .. "`"
end

local function table_text()
   local lines = { BEGIN, "", "| option | default | meaning |", "| --- | --- | --- |" }
   for _, o in ipairs(options.LIST) do
      if o.layer ~= "call" and o.layer ~= "follow" then
         lines[#lines + 1] = string.format("| `%s` | %s | %s |", o.name, shown(o), o.doc)
      end
   end
   lines[#lines + 1] = ""
   lines[#lines + 1] = END
   return table.concat(lines, "\n")
end

local M = { BEGIN = BEGIN, END = END, table_text = table_text }

if arg and arg[0] and arg[0]:find("options_doc%.lua$") then
   local text = table_text()
   if arg[1] == "--write" then
      local f = assert(io.open("docs/client.md", "rb"))
      local doc = f:read("a")
      f:close()
      local a = doc:find(BEGIN, 1, true)
      local _, b = doc:find(END, 1, true)
      assert(a and b, "docs/client.md has no generated option table markers")
      f = assert(io.open("docs/client.md", "wb"))
      f:write(doc:sub(1, a - 1), text, doc:sub(b + 1))
      f:close()
   else
      print(text)
   end
end

return M
