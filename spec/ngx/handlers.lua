--- Content handlers for spec/ngx_spec.lua: a private nginx serves them and
-- the spec checks their JSON answers. The Prefect URL comes from the nginx
-- variable $prefect_url set in the generated config; a request chooses its
-- fault, limits and transport with query arguments.

-- luacheck: globals ngx

local cjson = require("cjson.safe")
local ngx_transport = require("prefect.transport.ngx")
local runtime = require("prefect.transport")

local handlers = {}

-- What the phases that cannot use cosockets reported (filled by
-- init_by_lua, init_worker_by_lua, header_filter and log handlers).
handlers.phase_reports = {}

local function args()
    return ngx.req.get_uri_args()
end

local function reply(status, t)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.say(cjson.encode(t))
end

local function now()
    ngx.update_time()
    return ngx.now()
end

local function error_fields(err)
    if type(err) ~= "table" then
        return { kind = "lua", message = tostring(err) }
    end
    return {
        kind = err.kind, message = err.message, status = err.status, detail = err.detail,
        retry_after = err.retry_after, url = err.url, attempts = err.attempts, text = tostring(err),
    }
end

local function client_for(a)
    local prefect = require("prefect")
    local headers
    if a.fault then
        headers = { ["X-Test-Fault"] = a.fault }
    end
    local transport = a.transport or "ngx"
    if transport == "auto" then
        transport = nil -- the client picks
    end
    return prefect.client{
        url = a.url or ngx.var.prefect_url,
        transport = transport,
        headers = headers,
        retries = tonumber(a.retries) or 0,
        timeout = tonumber(a.timeout) or 30,
        max_response = tonumber(a.max_response),
        insecure = a.insecure == "1" or nil,
    }
end

local function query_of(a)
    local q = { limit = tonumber(a.limit) or 50, sort = "ID_DESC" }
    if a.state then
        q.state = { a.state }
    end
    return q
end

--- GET /hello: answers at once (the latency probe).
function handlers.hello()
    ngx.say("hello")
end

--- GET /list?limit=&state=&fault=: task runs through the client's iterator.
-- {count, ids, first_ms, total_ms} or {error = {...}}.
function handlers.list()
    local a = args()
    local c = client_for(a)
    local started = now()
    local ids, first_ms = {}, nil
    local ok, err = pcall(function()
        for run in c:task_runs(query_of(a), { fields = { "id", "name" } }) do
            if not first_ms then
                first_ms = (now() - started) * 1000
            end
            ids[#ids + 1] = run.id
        end
    end)
    if not ok then
        return reply(200, { error = error_fields(err), count = #ids })
    end
    reply(200, { count = #ids, ids = ids, first_ms = first_ms, total_ms = (now() - started) * 1000 })
end

--- GET /count?state=&fault=: client:count.
function handlers.count()
    local a = args()
    local c = client_for(a)
    local n, err = c:count(query_of(a))
    if not n then
        return reply(200, { error = error_fields(err) })
    end
    reply(200, { count = n })
end

--- GET /raw?fault=&path=&max_response=&timeout=&stall=&decode=1&url=:
-- the transport on its own, POSTing a filter body. Reports status, how
-- many elements were decoded (or the body's size), when the first element
-- arrived, the most Lua memory in use while reading, and any error.
function handlers.raw()
    local a = args()
    local t = ngx_transport.new{
        timeout = tonumber(a.timeout) or 30,
        stall_timeout = tonumber(a.stall),
        connect_timeout = tonumber(a.connect_timeout),
        max_response = tonumber(a.max_response),
        insecure = a.insecure == "1",
    }
    local headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }
    if a.fault then
        headers["X-Test-Fault"] = a.fault
    end
    if a.bad_header then
        headers["X-Bad"] = "a\r\nInjected: yes"
    end
    collectgarbage("collect")
    local base_kb = collectgarbage("count")
    local started = now()
    local req, err = t:request{
        method = a.method or "POST",
        -- A fault in the query string (rather than a header) is dropped by the redirect fault.
        url = (a.url or ngx.var.prefect_url) .. (a.path or "/task_runs/filter")
            .. (a.query_fault and ("?fault=" .. ngx.escape_uri(a.query_fault)) or ""),
        headers = headers,
        body = a.method == "GET" and nil or (a.body or '{"limit": ' .. (tonumber(a.limit) or 200) .. '}'),
        decode = a.decode == "1" and {} or nil,
    }
    if not req then
        return reply(200, { error = error_fields(err), ms = (now() - started) * 1000 })
    end
    local status, rh = req:response()
    if not status then
        return reply(200, { error = error_fields(rh), ms = (now() - started) * 1000 })
    end
    local out = { status = status, content_type = rh["content-type"] }
    local peak_kb = 0
    if a.decode == "1" and status >= 200 and status < 300 and (rh["content-type"] or ""):find("json") then
        local n = 0
        while true do
            local v, verr = req:next()
            if v == nil then
                if verr then
                    out.error = error_fields(verr)
                end
                break
            end
            n = n + 1
            if n == 1 then
                out.first_ms = (now() - started) * 1000
            end
            if n % 1000 == 0 then
                local kb = collectgarbage("count") - base_kb
                if kb > peak_kb then
                    peak_kb = kb
                end
            end
        end
        out.elements = n
    else
        local body, berr = req:body()
        if body then
            out.body_bytes = #body
            out.body_head = body:sub(1, 200)
        else
            out.error = error_fields(berr)
        end
    end
    req:close()
    out.peak_kb = peak_kb
    out.total_ms = (now() - started) * 1000
    reply(200, out)
end

--- GET /slow?fault=delay_ms=2000: one request that waits on Prefect.
function handlers.slow()
    local a = args()
    a.fault = a.fault or "delay_ms=2000"
    local c = client_for(a)
    local started = now()
    local n, err = c:count({})
    reply(200, { count = n, error = err and error_fields(err), ms = (now() - started) * 1000 })
end

--- Records what the transport chooser says in the current phase.
function handlers.record_phase(label)
    local name, err = runtime.choose(nil)
    -- The retry sleep must work in every phase (blocking where ngx.sleep is refused).
    local slept, sleep_err = pcall(runtime.default_sleep(), 0.001)
    handlers.phase_reports[label] = {
        phase = ngx.get_phase(), chosen = name, error = err and error_fields(err),
        slept = slept, sleep_error = not slept and tostring(sleep_err) or nil,
    }
end

--- init_worker_by_lua: the chooser refuses the phase itself, and a timer
-- started from it gets the cosocket transport and counts task runs.
function handlers.init_worker()
    handlers.record_phase("init_worker")
    local prefect = require("prefect")
    -- A client left to choose refuses this phase instead of blocking the worker...
    local auto = prefect.client{ url = handlers.timer_url, retries = 0 }
    local n, err = auto:count({})
    handlers.phase_reports.init_worker_auto = { count = n, error = err and error_fields(err) }
    -- ...and one told to use libcurl blocks on purpose, retrying with a blocking sleep.
    local curl = prefect.client{ url = handlers.timer_url, transport = "curl", retries = 1,
        headers = { ["X-Test-Fault"] = "fail_first=1; key=init-worker; status=429; retry_after=1" } }
    local started = now()
    n, err = curl:count({})
    handlers.phase_reports.init_worker_curl = {
        count = n, error = err and error_fields(err), ms = (now() - started) * 1000,
    }
    ngx.timer.at(0, function(premature, url)
        if premature then
            return
        end
        handlers.record_phase("timer")
        -- No transport option: in a timer the client picks cosockets by itself.
        local c = require("prefect").client{ url = url, retries = 0 }
        local count, count_err = c:count({})
        handlers.phase_reports.timer.count = count
        handlers.phase_reports.timer.count_error = count_err and error_fields(count_err)
        handlers.phase_reports.timer.transport = c.runtime.capabilities.name
    end, handlers.timer_url)
end

--- GET /phases: everything recorded so far.
function handlers.phases()
    reply(200, handlers.phase_reports)
end

--- GET /choose?transport=: the chooser in the content phase.
function handlers.choose()
    local a = args()
    local name, err = runtime.choose(a.transport)
    reply(200, { chosen = name, error = err and error_fields(err) })
end

return handlers
