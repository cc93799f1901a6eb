--- What the example scripts share: argument parsing, a one-line failure with
-- exit status 1, the client, and aligned tables. Examples load it with
--
--    local here = (debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or ".")
--    package.path = here .. "/lib/?.lua;" .. package.path
--    local cli = require("cli")
--    cli.setup(here)   -- finds lua-prefect in the checkout around the script
--
-- so a script runs from any directory.

local cli = {}

--- Prefers the checkout the script lives in (lua/ and build/<flavour>/) over
--- an installed lua-prefect, so an example runs against the code beside it.
-- @param examples_dir the directory of the examples (`here` above)
function cli.setup(examples_dir)
   local root = examples_dir .. "/.."
   package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
   local flavour = rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+")
   package.cpath = root .. "/build/" .. flavour .. "/?.so;" .. package.cpath
end

--- Writes "name: message" (one line) to standard error and exits with 1. A query
--- lua-prefect refused (an "invalid" error) is the user's argument, not a bug in
--- the script: it is told as the reason alone, without the script's file and line.
function cli.fail(name, msg)
   if type(msg) == "table" and msg.kind == "invalid" and msg.message then
      msg = msg.message .. " (see --help)"
   end
   msg = tostring(msg):gsub("%s*\n%s*", " ")
   io.stderr:write(name, ": ", msg, "\n")
   os.exit(1)
end

local function kind_of(value)
   if value == "number" or value == "count" or value == "string" or value == "list" then
      return value
   end
   return "flag"
end

--- Parses `argv` against `spec` and returns the options as a table.
-- spec = { name = "export.lua", usage = "usage text", options = { hours = "number",
--          limit = "count", state = "list", ["flow-run"] = "string", quiet = "flag" },
--          defaults = { hours = 24 } }
-- An option is written `--name value` or `--name=value`; in the result a dash
-- in its name becomes an underscore. `--help` prints the usage and exits 0;
-- anything wrong exits 1 with a one-line message.
function cli.parse(argv, spec)
   local opts = {}
   for k, v in pairs(spec.defaults or {}) do opts[k] = v end
   local function bad(msg) cli.fail(spec.name, msg .. " (see --help)") end
   local i = 1
   while i <= #argv do
      local a = argv[i]
      if a == "--help" or a == "-h" then
         io.stdout:write(spec.usage, "\n")
         os.exit(0)
      end
      local name, inline = a:match("^%-%-([%w%-]+)=(.*)$")
      name = name or a:match("^%-%-([%w%-]+)$")
      if not name or not spec.options[name] then bad("unknown argument " .. a) end
      local kind = kind_of(spec.options[name])
      local key = name:gsub("%-", "_")
      if kind == "flag" then
         if inline then bad("--" .. name .. " takes no value") end
         opts[key] = true
      else
         local value = inline
         if value == nil then
            i = i + 1
            value = argv[i]
         end
         if value == nil or value == "" then bad("--" .. name .. " needs a value") end
         if kind == "number" or kind == "count" then
            local n = tonumber(value)
            if not n or n ~= n or n == math.huge or n < 0
               or (kind == "count" and n ~= math.floor(n)) then
               bad("--" .. name .. " needs a " .. (kind == "count" and "whole " or "")
                  .. "number >= 0, got " .. value)
            end
            opts[key] = n
         elseif kind == "list" then
            local list = {}
            for item in value:gmatch("[^,%s]+") do list[#list + 1] = item end
            opts[key] = list
         else
            opts[key] = value
         end
      end
      i = i + 1
   end
   return opts
end

--- The text every example's --help ends with.
cli.ENVIRONMENT = [[
The server is PREFECT_API_URL (default http://127.0.0.1:4200/api); PREFECT_API_KEY
(Prefect Cloud) or PREFECT_API_AUTH_STRING (user:pass) authenticate.]]

local UUID = "^%x%x%x%x%x%x%x%x%-?%x%x%x%x%-?%x%x%x%x%-?%x%x%x%x%-?%x%x%x%x%x%x%x%x%x%x%x%x$"

--- Adds "the task runs of this flow run" to `query`: `value` is a flow run's id,
--- or else its name (the server joins on flow_runs.name, one request either way).
-- @param query a query table, changed in place (and returned)
-- @param value what the user gave to --flow-run, or nil (nothing is added)
function cli.flow_run(query, value)
   if value == nil then return query end
   if value:match(UUID) then
      query.flow_run_id = value
   else
      query.flow_run = { name = { value } }
   end
   return query
end

--- A prefect client from the environment, or a one-line failure.
-- @param name the script's name, for messages
-- @param opts client options (e.g. retries)
function cli.client(name, opts)
   local ok, prefect = pcall(require, "prefect")
   if not ok then cli.fail(name, "cannot load lua-prefect: " .. tostring(prefect)) end
   local made, client = pcall(prefect.client, opts)
   if not made then cli.fail(name, client) end
   return client, prefect
end

--- Runs `main`; any error it raises (a prefect error from the server, or
--- misuse) ends the script with one line on standard error and exit 1.
function cli.run(name, main)
   local ok, err = pcall(main)
   if not ok then cli.fail(name, err) end
end

--- Prints rows as an aligned table under a header and a rule.
-- @param header list of column titles
-- @param rows list of lists of strings
-- @param align optional string, one letter per column: "l" (default) or "r"
-- @param out optional file (default io.stdout)
function cli.print_table(header, rows, align, out)
   out = out or io.stdout
   align = align or ""
   local widths = {}
   for c, title in ipairs(header) do
      widths[c] = #title
      for _, row in ipairs(rows) do
         if #row[c] > widths[c] then widths[c] = #row[c] end
      end
   end
   local function line(cells)
      local parts = {}
      for c, cell in ipairs(cells) do
         local pad = string.rep(" ", widths[c] - #cell)
         parts[c] = align:sub(c, c) == "r" and pad .. cell or cell .. pad
      end
      out:write((table.concat(parts, "  "):gsub("%s+$", "")), "\n")
   end
   line(header)
   local rule = {}
   for c = 1, #header do rule[c] = string.rep("-", widths[c]) end
   line(rule)
   for _, row in ipairs(rows) do line(row) end
end

--- Seconds as a short human duration: 0.052s, 12.3s, 4m05s, 2h03m.
function cli.duration(seconds)
   if seconds == nil then return "-" end
   if seconds == math.floor(seconds) and seconds < 60 then return string.format("%ds", seconds) end
   if seconds < 10 then return string.format("%.3fs", seconds) end
   if seconds < 60 then return string.format("%.1fs", seconds) end
   if seconds < 3600 then
      return string.format("%dm%02ds", math.floor(seconds / 60), math.floor(seconds % 60))
   end
   return string.format("%dh%02dm", math.floor(seconds / 3600), math.floor(seconds % 3600 / 60))
end

--- Whether standard error is a terminal (through the shell's `test -t 2`,
--- which the child inherits; works the same under Lua 5.4 and LuaJIT).
function cli.stderr_is_tty()
   local r = os.execute("test -t 2")
   return r == true or r == 0
end

return cli
