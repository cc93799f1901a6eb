-- Hostile and broken servers against the ngx transport, read through
-- prefect.client over cosockets inside ngx_lua (spec/ngx_spec.lua runs this
-- file with tools/ngx-busted.lua). The same faults as
-- spec/hostile_server_spec.lua (the curl transport), held to the same
-- outcome, so that a user sees one error kind and message shape whichever
-- transport reads:
-- - each fault ends the read with its own error kind, never "invalid", with
--   the URL that answered and a message;
-- - `stall_timeout` fires on a server that stops sending, head or body, and
--   says so; `timeout` bounds the whole request, a dripped head included;
-- - a server that sends without end costs the nginx worker bounded memory
--   (its peak resident size, VmHWM);
-- - the same client reads normally right after.
--
-- Not named *_spec.lua so that busted does not collect it on its own.

-- luacheck: globals ngx

local test_server = require("test_server")
local prefect = require("prefect")
local errors = require("prefect.errors")

local KiB = 1024

-- What each fault must end with (the table of spec/hostile_server_spec.lua). `opts` are client
-- options on top of retries = 0; `stall`: the read must end by stall_timeout and say so.
local CASES = {
    { fault = "status_line=HTTP/1.1 2000 OK", kind = "protocol" },
    { fault = "status_line=HTTP/1.1 200OK", kind = "protocol" },
    { fault = "status_line=HTTP/1.1 600 Beyond", kind = "protocol" },
    { fault = "status_line=HTTP/1.1 199 Final", kind = "protocol" },
    { fault = "status_line=http/1.1 200 OK", kind = "protocol" },
    { fault = "status_line=HTTP/2.0 200 OK", kind = "protocol" },
    { fault = "status_line=garbage", kind = "protocol" },
    { fault = "http09", kind = "protocol" },
    { fault = "header_bytes=1048576", kind = "too_large" },
    { fault = "header_bytes=200000", kind = "too_large" },
    { fault = "content_length2=3", kind = "protocol" },
    { fault = "bad_chunk", kind = "protocol" },
    -- Not as with curl: libcurl skips a chunk extension without a bound (then stall_timeout ends
    -- the read), which lets a server stream junk at full speed; here the line has the line limit.
    { fault = "chunk_line_endless", kind = "too_large" },
    { fault = "head_line_endless", kind = "too_large" },
    { fault = "continue_flood", kind = "too_large" },
    -- dripped, then too slow to count as sending: the stall clock, not the 30 s timeout
    { fault = "head_drip_ms=3000", kind = "timeout", stall = 2, opts = { stall_timeout = 2, timeout = 30 } },
    { fault = "drip_bytes=64; drip_ms=3000", kind = "timeout", stall = 2,
        opts = { stall_timeout = 2, timeout = 30 } },
    -- bytes keep coming (a head line every 2 s or so), so no stall: the whole request's timeout ends it
    { fault = "head_drip_ms=100", kind = "timeout", whole = 2, opts = { timeout = 2 } },
    { fault = "drip_bytes=16; drip_ms=200", kind = "timeout", whole = 2,
        opts = { timeout = 2, accept_encoding = false } },
}

-- Seconds past `stall_timeout` or `timeout` a read may take to fail: an upper bound on a hang
-- (the limits themselves are what the messages check), generous for a loaded machine.
local LATE = 3

local serial = 0

local function now()
    ngx.update_time()
    return ngx.now()
end

-- A client whose first request (only) meets `fault`.
local function client_for(srv, fault, opts)
    serial = serial + 1
    local o = {
        url = srv.url, getenv = function() return nil end, retries = 0, transport = "ngx",
        sleep = function() end,
        headers = { ["X-Test-Fault"] = ("fail_first=1; key=ngx-hostile-%d; %s"):format(serial, fault) },
    }
    for k, v in pairs(opts or {}) do
        o[k] = v
    end
    return prefect.client(o)
end

local function read_iterator(c, q)
    local step, n = c:task_runs(q or { limit = 20 }), 0
    while true do
        local ok, run = pcall(step)
        if not ok then
            return n, run
        end
        if run == nil then
            return n
        end
        n = n + 1
    end
end

local function check_error(case, err)
    assert.is_true(errors.is(err), "not a prefect error: " .. tostring(err))
    assert.equal(case.kind, err.kind, tostring(err))
    assert.is_string(err.message)
    assert.truthy(err.url and err.url:find("/task_runs/filter", 1, true), tostring(err))
    if case.stall then
        assert.truthy(err.message:find(("no data for %g s (stall_timeout)"):format(case.stall), 1, true),
            tostring(err))
    else
        assert.falsy(err.message:find("stall_timeout", 1, true), tostring(err))
    end
    if case.whole then
        assert.truthy(err.message:find(("timed out after %g s (timeout)"):format(case.whole), 1, true),
            tostring(err))
    end
end

local function status_kib(field)
    local f = assert(io.open("/proc/self/status"))
    local text = f:read("*a")
    f:close()
    return tonumber(text:match(field .. ":%s*(%d+)"))
end

-- Resets the worker's peak resident size to its current size (false where the kernel refuses).
local function reset_peak()
    local f = io.open("/proc/self/clear_refs", "w")
    if not f then
        return false
    end
    local ok = f:write("5")
    f:close()
    return ok and true or false
end

describe("a hostile server, through prefect.client and the ngx transport", function()
    local srv
    lazy_setup(function()
        srv = test_server.start{ dataset = "fixture" }
    end)
    lazy_teardown(function()
        if srv then
            srv:stop()
        end
    end)

    for _, case in ipairs(CASES) do
        it(("%s -> %s"):format(case.fault, case.kind), function()
            local c = client_for(srv, case.fault, case.opts)
            finally(function()
                c:close()
            end)
            local t0 = now()
            local n, err = read_iterator(c)
            local took = now() - t0
            assert.is_not_nil(err, "the read succeeded with " .. n .. " runs")
            check_error(case, err)
            local bound = (case.stall or case.whole or 17) + LATE
            assert.is_true(took < bound, ("the read took %.1f s (bound %g s)"):format(took, bound))
            -- the next read on the same client is a normal one
            assert.equal(20, (read_iterator(c)))
        end)
    end

    it("endless trailers after a whole body: every run is handed out, and the read ends", function()
        local c = client_for(srv, "trailer_endless")
        finally(function()
            c:close()
        end)
        local n, err = read_iterator(c)
        assert.is_nil(err, tostring(err))
        assert.equal(20, n)
    end)

    it("a count() whose trailers never end is too_large, as the head limit says", function()
        local c = client_for(srv, "trailer_endless")
        finally(function()
            c:close()
        end)
        local n, err = c:count{}
        assert.is_nil(n)
        assert.equal("too_large", err.kind, tostring(err))
        assert.truthy(err.message:find("trailers larger than 256 KiB", 1, true), tostring(err))
    end)

    it("says which limit a head or a chunk-size line passed", function()
        local c = client_for(srv, "continue_flood")
        finally(function()
            c:close()
        end)
        local _, err = read_iterator(c)
        assert.truthy(err.message:find("response head larger than 256 KiB (1xx heads included)", 1, true),
            tostring(err))
        local c2 = client_for(srv, "header_bytes=200000")
        finally(function()
            c2:close()
        end)
        _, err = read_iterator(c2)
        assert.truthy(err.message:find("a response header line longer than 100 KiB", 1, true), tostring(err))
        local c3 = client_for(srv, "chunk_line_endless")
        finally(function()
            c3:close()
        end)
        _, err = read_iterator(c3)
        assert.truthy(err.message:find("a chunk size line longer than 100 KiB", 1, true), tostring(err))
    end)

    it("a reader slower than stall_timeout is not a stalled server", function()
        -- pages far larger than one read: the rest waits in the socket while the reader rests
        local big = test_server.start{ dataset = { generate = 600, seed = 3, shape = 3 } }
        finally(function()
            big:stop()
        end)
        local c = prefect.client{ url = big.url, getenv = function() return nil end, retries = 0,
            transport = "ngx", stall_timeout = 1, accept_encoding = false }
        finally(function()
            c:close()
        end)
        local n = 0
        for _ in c:task_runs{} do
            n = n + 1
            if n % 150 == 1 then
                ngx.sleep(1.5)
            end
        end
        assert.equal(600, n)
    end)

    describe("sending without end costs the nginx worker bounded memory (its peak RSS)", function()
        -- The head limit is 256 KiB and a body slice 64 KiB: well under a MiB of buffers. The bound
        -- leaves room for allocator slack; without a bound while reading, the worker grows by
        -- hundreds of MiB a second.
        local BOUND_KIB = 32 * KiB
        local ENDLESS = {
            { fault = "head_line_endless", kind = "too_large" },
            { fault = "continue_flood", kind = "too_large" },
            { fault = "chunk_line_endless", kind = "too_large" },
            { fault = "trailer_endless", kind = "too_large", count = true },
        }
        for _, case in ipairs(ENDLESS) do
            it(("%s -> %s"):format(case.fault, case.kind), function()
                -- warm up: modules loaded, buffers and pools filled
                local warm = client_for(srv, "none")
                assert.equal(50, (read_iterator(warm, { limit = 50 })))
                warm:close()
                collectgarbage("collect")
                if not reset_peak() then
                    pending("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
                end
                local base = status_kib("VmRSS")
                local o = { timeout = 10 }
                for k, v in pairs(case.opts or {}) do
                    o[k] = v
                end
                local c = client_for(srv, case.fault, o)
                finally(function()
                    c:close()
                end)
                local err
                if case.count then
                    local _
                    _, err = c:count{}
                else
                    local _
                    _, err = read_iterator(c)
                end
                local grew = status_kib("VmHWM") - base
                assert.is_true(grew < BOUND_KIB, ("the worker's peak RSS grew by %d KiB"):format(grew))
                assert.equal(case.kind, err and err.kind, tostring(err))
            end)
        end
    end)
end)
