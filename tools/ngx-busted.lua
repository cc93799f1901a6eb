#!/usr/bin/env luajit
-- Runs busted-style spec files inside a private nginx + ngx_lua (Debian has
-- no `resty` CLI): starts nginx with spec/ngx/runner.lua as a content
-- handler, asks it to run each file, prints the results and one totals line
-- in busted's format, and exits non-zero on any failure or error.
--
--   luajit tools/ngx-busted.lua [--transport ngx|curl] spec/ngx/transport.lua [more files]
--
-- --transport makes every prefect.client the specs create without a
-- `transport` option use that one (so spec/client_spec.lua can run over
-- cosockets); --skip TEXT counts the tests whose name contains TEXT as
-- pending (known, documented differences).
--
-- The files run in the content phase of a single worker, so cosockets,
-- ngx.sleep and the ngx transport are available; prefect.core comes from
-- build/luajit (make build LUA=luajit).

local root = (arg and arg[0] or ""):match("^(.*)/tools/[^/]*$") or "."
package.path = root .. "/spec/support/?.lua;" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;"
    .. root .. "/spec/ngx/?.lua;" .. package.path

local nginx = require("nginx")
local runner = require("runner")

local USAGE = "usage: luajit tools/ngx-busted.lua [--transport ngx|curl] [--skip TEXT]... SPEC_FILE..."
local files, transport, skip = {}, nil, {}
local i = 1
while i <= #arg do
    local a = arg[i]
    if a == "-h" or a == "--help" then
        print(USAGE)
        os.exit(0)
    elseif a == "--skip" and arg[i + 1] then
        skip[#skip + 1] = "&skip=" .. arg[i + 1]:gsub("[^%w%-_.~]", function(c)
            return string.format("%%%02X", c:byte())
        end)
        i = i + 1
    elseif a == "--transport" then
        transport = arg[i + 1]
        if transport ~= "ngx" and transport ~= "curl" then
            io.stderr:write(USAGE, "\n")
            os.exit(2)
        end
        i = i + 1
    else
        files[#files + 1] = a
    end
    i = i + 1
end
if #files == 0 then
    io.stderr:write(USAGE, "\n")
    os.exit(2)
end

local ok, why = nginx.available()
if not ok then
    io.stderr:write("ngx-busted: ", why, "\n")
    os.exit(2)
end

local n = nginx.start{
    -- Processes the specs start (the test server, child interpreters) find the checkout.
    environ = {
        LUA_PATH = os.getenv("LUA_PATH") or (nginx.root .. "/lua/?.lua;" .. nginx.root .. "/lua/?/init.lua;"
            .. nginx.root .. "/spec/support/?.lua;;"),
        LUA_CPATH = os.getenv("LUA_CPATH") or (nginx.root .. "/build/luajit/?.so;;"),
        PREFECT_TEST_LUA = os.getenv("PREFECT_TEST_LUA") or "luajit",
    },
    http = "  lua_socket_log_errors off;",
    locations = "    set $prefect_root " .. nginx.root .. ";\n"
        .. "    location = /__spec { content_by_lua_block { require('runner').handle() } }",
}

local totals = { successes = 0, failures = 0, errors = 0, pending = 0 }
local seconds = 0
for _, file in ipairs(files) do
    local query = "/__spec?file=" .. file .. (transport and ("&transport=" .. transport) or "")
        .. table.concat(skip)
    local status, body = n:get(query, { timeout = 600 })
    io.write(body or "", "\n")
    local line = body and body:match("(%d+ success[^\n]*pending : [%d.]+ seconds)%s*$")
    if status ~= 200 or not line then
        io.stderr:write("ngx-busted: ", file, " did not finish (HTTP ", tostring(status), ")\n")
        totals.errors = totals.errors + 1
    else
        local s, f, e, p, t = line:match("^(%d+) %a+ / (%d+) %a+ / (%d+) %a+ / (%d+) pending : ([%d.]+)")
        totals.successes = totals.successes + tonumber(s)
        totals.failures = totals.failures + tonumber(f)
        totals.errors = totals.errors + tonumber(e)
        totals.pending = totals.pending + tonumber(p)
        seconds = seconds + tonumber(t)
    end
end
local log = n:error_log()
n:stop()
if totals.failures + totals.errors > 0 then
    -- What nginx said is often the quickest clue.
    io.write("---- nginx error.log (warnings and worse)\n")
    for l in log:gmatch("[^\n]+") do
        if l:match("%[warn%]") or l:match("%[error%]") or l:match("%[crit%]") or l:match("%[alert%]") then
            io.write(l, "\n")
        end
    end
end
print(runner.totals_line(totals, seconds))
os.exit((totals.failures + totals.errors == 0 and totals.successes > 0) and 0 or 1)
