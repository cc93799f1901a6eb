--- Runs busted-style spec files INSIDE ngx_lua (Debian has no `resty` CLI),
-- so behaviour specs written for plain LuaJIT also run where cosockets work.
--
-- In the nginx config:
--   location = /__spec { content_by_lua_block { require("runner").handle() } }
-- then GET /__spec?file=spec/ngx/transport.lua (a path under the checkout
-- root) streams one line per test and ends with busted's totals line:
--   "N successes / N failures / N errors / N pending : S seconds".
-- tools/ngx-busted.lua starts such an nginx and prints the result.
--
-- The shim covers what the specs use: describe/context/insulate/expose,
-- it/spec/test, pending, setup/teardown (and lazy_/strict_ forms),
-- before_each/after_each, finally, and luassert's assert, spy, stub, mock and
-- match. Failures inside `it` count as failures, failures in setup or in a
-- describe body as errors (their tests are not run).

-- luacheck: globals ngx

local luassert = require("luassert")
local spy = require("luassert.spy")
local stub = require("luassert.stub")
local mock = require("luassert.mock")
local match = require("luassert.match")

local runner = {}

local function new_block(name, parent)
    return {
        name = name, parent = parent, children = {},
        setup = {}, teardown = {}, before_each = {}, after_each = {},
    }
end

local function full_name(node)
    local parts = {}
    while node and node.parent do
        table.insert(parts, 1, node.name)
        node = node.parent
    end
    return table.concat(parts, " ")
end

local function message_of(err)
    if type(err) == "table" then
        return tostring(err.message or err)
    end
    return tostring(err)
end

--- Collects the tests of `path` and runs them; `out(line)` gets each result
-- line. `skip` lists texts: a test whose full name contains one is counted
-- pending, not run. Returns the counts { successes, failures, errors, pending }.
function runner.run_file(path, out, skip)
    local counts = { successes = 0, failures = 0, errors = 0, pending = 0 }
    local root = new_block(path, nil)
    local current = root
    local running -- the test being run, for pending() and finally()

    local env = setmetatable({}, { __index = _G })
    local function describe(name, fn)
        local block = new_block(name, current)
        table.insert(current.children, block)
        local saved = current
        current = block
        local ok, err = xpcall(fn, debug.traceback)
        current = saved
        if not ok then
            block.broken = message_of(err)
        end
    end
    local function it(name, fn)
        table.insert(current.children, { name = name, parent = current, fn = fn })
    end
    local function pending(name)
        if running then
            running.pending = name or true
            error(running, 0) -- unwinds the test; recognised below
        end
        table.insert(current.children, { name = name, parent = current, pending = true })
    end
    local function adder(field)
        return function(fn)
            table.insert(current[field], fn)
        end
    end
    env.describe, env.context, env.insulate, env.expose = describe, describe, describe, describe
    env.it, env.spec, env.test = it, it, it
    env.pending = pending
    env.setup, env.lazy_setup, env.strict_setup = adder("setup"), adder("setup"), adder("setup")
    env.teardown, env.lazy_teardown, env.strict_teardown = adder("teardown"), adder("teardown"),
        adder("teardown")
    env.before_each, env.after_each = adder("before_each"), adder("after_each")
    env.finally = function(fn)
        assert(running, "finally() outside of a test")
        table.insert(running.finally, fn)
    end
    env.assert, env.spy, env.stub, env.mock, env.match = luassert, spy, stub, mock, match

    local chunk, lerr = loadfile(path)
    if not chunk then
        out("ERROR " .. path .. ": " .. tostring(lerr))
        counts.errors = 1
        return counts
    end
    setfenv(chunk, env)
    -- Not dofile(): a C boundary there would stop cosockets from yielding.
    local ok, err = xpcall(chunk, debug.traceback)
    if not ok then
        out("ERROR " .. path .. ": " .. message_of(err))
        counts.errors = counts.errors + 1
        return counts
    end

    local function each_hooks(block, field, reverse)
        local chain = {}
        local b = block
        while b do
            table.insert(chain, 1, b)
            b = b.parent
        end
        local list = {}
        for _, blk in ipairs(chain) do
            for _, fn in ipairs(blk[field]) do
                list[#list + 1] = fn
            end
        end
        if reverse then
            local r = {}
            for i = #list, 1, -1 do
                r[#r + 1] = list[i]
            end
            list = r
        end
        return list
    end

    local function run_test(test)
        local name = full_name(test)
        for _, text in ipairs(skip or {}) do
            if name:find(text, 1, true) then
                counts.pending = counts.pending + 1
                out("pending " .. name .. ": skipped (--skip " .. text .. ")")
                return
            end
        end
        if test.pending then
            counts.pending = counts.pending + 1
            out("pending " .. name)
            return
        end
        running = { finally = {} }
        local failure
        for _, fn in ipairs(each_hooks(test.parent, "before_each")) do
            local hok, herr = xpcall(fn, debug.traceback)
            if not hok then
                failure = "before_each: " .. message_of(herr)
                break
            end
        end
        if not failure then
            local tok, terr = xpcall(test.fn, function(e)
                if e == running then
                    return e
                end
                return debug.traceback(message_of(e), 2)
            end)
            if not tok and terr ~= running then
                failure = message_of(terr)
            end
        end
        for _, fn in ipairs(running.finally) do
            local fok, ferr = xpcall(fn, debug.traceback)
            if not fok and not failure then
                failure = "finally: " .. message_of(ferr)
            end
        end
        for _, fn in ipairs(each_hooks(test.parent, "after_each", true)) do
            local aok, aerr = xpcall(fn, debug.traceback)
            if not aok and not failure then
                failure = "after_each: " .. message_of(aerr)
            end
        end
        local was_pending = running.pending
        running = nil
        if failure then
            counts.failures = counts.failures + 1
            out("FAIL " .. name .. "\n" .. failure)
        elseif was_pending then
            counts.pending = counts.pending + 1
            out("pending " .. name .. (type(was_pending) == "string" and (": " .. was_pending) or ""))
        else
            counts.successes = counts.successes + 1
            out("ok " .. name)
        end
    end

    local function count_tests(block)
        local n = 0
        for _, c in ipairs(block.children) do
            n = n + (c.children and count_tests(c) or 1)
        end
        return n
    end

    local function run_block(block)
        if block.broken then
            counts.errors = counts.errors + 1
            out("ERROR " .. full_name(block) .. "\n" .. block.broken)
            return
        end
        for _, fn in ipairs(block.setup) do
            local sok, serr = xpcall(fn, debug.traceback)
            if not sok then
                counts.errors = counts.errors + 1
                out("ERROR setup of " .. (full_name(block) ~= "" and full_name(block) or path) .. " ("
                    .. count_tests(block) .. " tests not run)\n" .. message_of(serr))
                return
            end
        end
        for _, child in ipairs(block.children) do
            if child.children then
                run_block(child)
            else
                run_test(child)
            end
        end
        for _, fn in ipairs(block.teardown) do
            local tok, terr = xpcall(fn, debug.traceback)
            if not tok then
                counts.errors = counts.errors + 1
                out("ERROR teardown of " .. full_name(block) .. "\n" .. message_of(terr))
            end
        end
    end

    run_block(root)
    return counts
end

local function totals_line(c, seconds)
    return string.format("%d success%s / %d failure%s / %d error%s / %d pending : %.3f seconds",
        c.successes, c.successes == 1 and "" or "es", c.failures, c.failures == 1 and "" or "s",
        c.errors, c.errors == 1 and "" or "s", c.pending, seconds)
end
runner.totals_line = totals_line

--- The content handler: runs ?file=... (relative to the checkout root in
-- $prefect_root, or absolute) and streams the results as text/plain.
function runner.handle()
    local file = ngx.var.arg_file
    if not file or file == "" or file:find("..", 1, true) then
        ngx.status = 400
        ngx.say("give ?file=spec/ngx/<name>.lua")
        return
    end
    file = ngx.unescape_uri(file)
    local transport = ngx.var.arg_transport
    local restore
    if transport == "ngx" or transport == "curl" then
        -- Clients the spec makes without choosing a transport get this one, so the
        -- client's own behaviour specs run over cosockets.
        local client = require("prefect.client")
        local new = client.new
        client.new = function(opts, ...)
            if type(opts) == "table" and opts.transport == nil then
                local copy = {}
                for k, v in pairs(opts) do
                    copy[k] = v
                end
                copy.transport = transport
                opts = copy
            elseif opts == nil then
                opts = { transport = transport }
            end
            return new(opts, ...)
        end
        restore = function()
            client.new = new
        end
    end
    if file:sub(1, 1) ~= "/" then
        file = (ngx.var.prefect_root or ".") .. "/" .. file
    end
    ngx.header["Content-Type"] = "text/plain"
    local function out(line)
        ngx.say(line)
        ngx.flush(true)
    end
    ngx.update_time()
    local started = ngx.now()
    out("== " .. file .. " inside nginx " .. ngx.config.nginx_version .. ", ngx_lua "
        .. ngx.config.ngx_lua_version .. ", phase " .. ngx.get_phase()
        .. (restore and (", clients default to transport " .. transport) or ""))
    local skip = ngx.req.get_uri_args().skip
    if type(skip) == "string" then
        skip = { skip }
    end
    local counts = runner.run_file(file, out, skip)
    if restore then
        restore()
    end
    ngx.update_time()
    out(totals_line(counts, ngx.now() - started))
end

return runner
