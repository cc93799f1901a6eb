-- The transport interface (docs/architecture.md), as behaviour a client relies on,
-- against the real test server. Run by tools/ngx-busted.lua inside nginx
-- (where it exercises prefect.transport.ngx over cosockets) and by
-- spec/ngx_spec.lua under plain LuaJIT (where it exercises
-- prefect.transport.curl): the same expectations hold for both.
--
-- Not named *_spec.lua so that busted does not collect it on its own.

-- luacheck: read globals ngx

local name = (type(ngx) == "table" and ngx.get_phase) and "ngx" or "curl"
local transport = require("prefect.transport." .. name)
local test_server = require("test_server")

local JSON_HEADERS = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }

local function with(extra)
    local h = {}
    for k, v in pairs(JSON_HEADERS) do
        h[k] = v
    end
    for k, v in pairs(extra or {}) do
        h[k] = v
    end
    return h
end

describe("prefect.transport." .. name, function()
    local srv, t

    setup(function()
        srv = test_server.start{ dataset = "fixture" }
        t = transport.new{ timeout = 10, connect_timeout = 5 }
    end)

    teardown(function()
        if t then
            t:close()
        end
        if srv then
            srv:stop()
        end
    end)

    local function filter(body, decode, headers)
        local req, err = t:request{
            method = "POST", url = srv.url .. "/task_runs/filter", headers = with(headers),
            body = body or '{"limit": 200}', decode = decode or {},
        }
        assert(req, tostring(err))
        return req
    end

    local function drain(req)
        local list = {}
        while true do
            local v, err = req:next()
            if v == nil then
                return list, err
            end
            list[#list + 1] = v
        end
    end

    -- The error a filter request with this fault ends in, on transport `tr`, at whichever step
    -- it shows: the request, the response, or the body.
    local function failure(tr, fault)
        local req, err = tr:request{ method = "POST", url = srv.url .. "/task_runs/filter",
            headers = with{ ["X-Test-Fault"] = fault }, body = "{}", decode = {} }
        if req then
            local status, _
            status, err = req:response()
            if status then
                _, err = drain(req)
            end
        end
        return err
    end

    it("answers next() on a closed request as aborted; the next request reads clean", function()
        -- both transports hand a closed request's decoder to the next request
        -- with the same decode options: none of the first body may show there
        local decode = {}
        local first = filter('{"limit": 5}', decode)
        assert.is_table(first:next())
        first:close()
        local v, err = first:next()
        assert.is_nil(v)
        assert.are.equal("aborted", err and err.kind)
        local second = filter('{"limit": 3, "offset": 10}', decode)
        local list, derr = drain(second)
        second:close()
        assert.is_nil(derr)
        assert.are.equal(3, #list)
        local again = filter('{"limit": 3, "offset": 10}', {})
        local expected = drain(again)
        again:close()
        for i = 1, 3 do
            assert.are.equal(expected[i].id, list[i].id)
        end
    end)

    it("streams a page of task runs as decoded tables", function()
        local req = filter('{"limit": 200, "sort": "ID_DESC"}')
        local status, headers = req:response()
        assert.are.equal(200, status)
        assert.truthy(headers["content-type"]:find("application/json", 1, true))
        local runs, err = drain(req)
        assert.is_nil(err)
        assert.are.equal(200, #runs)
        assert.is_string(runs[1].id)
        assert.is_string(runs[1].name)
        assert.is_table(runs[1].state)
        assert.is_true(runs[1].id > runs[2].id)
        -- the end stays the end
        assert.is_nil(req:next())
        req:close()
    end)

    it("decodes only the fields asked for, with epoch timestamps", function()
        local req = filter('{"limit": 5}', { fields = { "id", "start_time" }, timestamps = "epoch" })
        local runs = drain(req)
        assert.are.equal(5, #runs)
        for _, run in ipairs(runs) do
            assert.is_string(run.id)
            assert.is_nil(run.name)
            assert.is_true(run.start_time == nil or type(run.start_time) == "number")
        end
    end)

    it("hands back a non-2xx response's body as a string", function()
        local req = filter(nil, nil, { ["X-Test-Fault"] = "status=503" })
        local status = req:response()
        assert.are.equal(503, status)
        local body = assert(req:body())
        assert.is_string(body)
        req:close()
    end)

    it("sends the body and headers it was given", function()
        -- A 422 from the server names the field it rejected.
        local req = filter('{"limit": "many"}')
        assert.are.equal(422, (req:response()))
        assert.truthy(req:body():find("limit", 1, true))
        req:close()
    end)

    it("reads a GET of one task run", function()
        local first = drain(filter('{"limit": 1}'))[1]
        local req = assert(t:request{ method = "GET", url = srv.url .. "/task_runs/" .. first.id,
            headers = { Accept = "application/json" }, decode = {} })
        assert.are.equal(200, (req:response()))
        local run = req:next()
        assert.are.equal(first.id, run.id)
        assert.is_nil(req:next())
    end)

    it("reports a malformed body as a decode error with its byte offset", function()
        local req = filter(nil, nil, { ["X-Test-Fault"] = "invalid_json" })
        assert.are.equal(200, (req:response()))
        local _, err = drain(req)
        assert.are.equal("decode", err.kind)
        assert.truthy(tostring(err):find("byte", 1, true), tostring(err))
    end)

    it("stops a response over max_response with kind too_large", function()
        local small = transport.new{ timeout = 10, max_response = 64 * 1024 }
        local err = failure(small, "huge=104857600")
        assert.are.equal("too_large", err and err.kind)
        small:close()
    end)

    it("gives up after its timeout with kind timeout", function()
        local quick = transport.new{ timeout = 0.3 }
        local err = failure(quick, "delay_ms=2000")
        assert.are.equal("timeout", err and err.kind)
        quick:close()
    end)

    it("serves the next request normally after one was closed half-read", function()
        local req = filter('{"limit": 200}', nil, { ["X-Test-Fault"] = "drip_bytes=512; drip_ms=5" })
        assert.is_table(req:next())
        req:close()
        local again = drain(filter('{"limit": 3}'))
        assert.are.equal(3, #again)
    end)

    it("refuses a header value that would split the request", function()
        local req, err = t:request{ method = "POST", url = srv.url .. "/task_runs/filter",
            headers = with{ ["X-Evil"] = "a\r\nX-Injected: 1" }, body = "{}", decode = {} }
        if req then
            local status
            status, err = req:response()
            assert.is_nil(status)
        end
        assert.are.equal("invalid", err.kind)
    end)

    it("lets a client keep several pages in flight only where requests run side by side", function()
        local prefect = require("prefect")
        local function client_with(chosen)
            return pcall(prefect.client, { url = srv.url, concurrency = 2, transport = chosen,
                getenv = function() end })
        end
        local ok, err = client_with("curl")
        assert.is_true(ok, tostring(err))
        if name == "ngx" then
            -- a coroutine reads its cosocket requests one at a time: refused, naming the transport
            ok, err = client_with("ngx")
            assert.is_false(ok)
            assert.are.equal("invalid", err.kind)
            assert.matches("ngx transport", err.message)
        end
    end)
end)
