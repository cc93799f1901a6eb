-- OpenResty content handler: the failed and crashed task runs of the last
-- hour, as JSON (`/failed.json`, or `Accept: application/json`) or as a
-- small HTML table (`/failed`). `?hours=N` widens the window (more than 0, up
-- to 720), `?limit=N` caps the rows (a whole number from 1 to 1000, default
-- 200); any other value is answered 400 with the reason.
--
-- The Prefect server comes from PREFECT_API_URL (and PREFECT_API_KEY or
-- PREFECT_API_AUTH_STRING); nginx passes them to workers only when the
-- config declares them with `env NAME;` (see nginx.conf next to this file).
--
-- Inside a content handler lua-prefect talks to Prefect over cosockets, so
-- a slow Prefect never stalls the other requests of this worker. Each run
-- comes with its flow run's and flow's names (the read's `include` option:
-- one /flow_runs/filter and one /flows/filter request per page).

-- luacheck: globals ngx

local prefect = require("prefect")
local cjson = require("cjson.safe")

-- One client per worker, made on first use; it keeps its connections in
-- nginx's keepalive pool between requests.
local client = package.loaded["examples.openresty.failed.client"]
if not client then
    client = prefect.client{ transport = "ngx", retries = 2, timeout = 20 }
    package.loaded["examples.openresty.failed.client"] = client
end

local FIELDS = { "id", "name", "flow_run_id", "state", "start_time", "end_time", "total_run_time", "tags" }
local INCLUDE = { flow_run = { "name" }, flow = { "name" } }

-- The query argument `name` as a number in (0, max], whole if `whole`; the
-- default when it is absent; nil and the reason when it is anything else.
local function number_arg(name, default, max, whole)
    local text = ngx.var["arg_" .. name]
    if text == nil then
        return default
    end
    local v = tonumber(text)
    if not v or v ~= v or v <= 0 or v > max or (whole and v ~= math.floor(v)) then
        local range = whole and "a whole number from 1 to %d" or "a number above 0 and at most %d"
        return nil, string.format("%s must be " .. range .. ", got %q", name, max, text:sub(1, 40))
    end
    return v
end

local function html_escape(s)
    return (tostring(s):gsub("[&<>\"']", {
        ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;",
    }))
end

local function wants_json()
    if ngx.var.uri:match("%.json$") then
        return true
    end
    local accept = ngx.var.http_accept or ""
    return accept:find("application/json", 1, true) ~= nil and not accept:find("text/html", 1, true)
end

local function refuse(reason)
    ngx.status = ngx.HTTP_BAD_REQUEST
    if wants_json() then
        ngx.header["Content-Type"] = "application/json"
        ngx.say(cjson.encode({ error = { kind = "bad_request", message = reason } }))
    else
        ngx.header["Content-Type"] = "text/html; charset=utf-8"
        ngx.say("<!doctype html><title>Bad request</title><h1>Bad request</h1><p>", html_escape(reason),
            "</p>")
    end
end

local hours, bad_hours = number_arg("hours", 1, 720, false)
local limit, bad_limit = number_arg("limit", 200, 1000, true)
if not hours or not limit then
    return refuse(bad_hours or bad_limit)
end
ngx.update_time()
local query = {
    state = { "FAILED", "CRASHED" },
    started = { after = ngx.time() - math.floor(hours * 3600) },
    sort = "END_TIME_DESC",
    limit = math.floor(limit),
}

local rows = {}
local ok, err = pcall(function()
    for run in client:task_runs(query, { fields = FIELDS, include = INCLUDE }) do
        local state = type(run.state) == "table" and run.state or {}
        rows[#rows + 1] = {
            id = run.id,
            name = run.name,
            flow_run_id = run.flow_run_id,
            flow_run_name = run.flow_run and run.flow_run.name,
            flow_name = run.flow and run.flow.name,
            state = state.name or state.type,
            state_type = state.type,
            message = state.message,
            start_time = run.start_time,
            end_time = run.end_time,
            total_run_time = run.total_run_time,
        }
    end
end)

if not ok then
    -- err is a prefect error (kind, status, message); never shows credentials.
    ngx.log(ngx.ERR, "prefect: ", tostring(err))
    ngx.status = ngx.HTTP_BAD_GATEWAY
    if wants_json() then
        ngx.header["Content-Type"] = "application/json"
        ngx.say(cjson.encode({ error = {
            kind = type(err) == "table" and err.kind or "lua",
            status = type(err) == "table" and err.status or nil,
            message = type(err) == "table" and err.message or tostring(err),
        } }))
    else
        ngx.header["Content-Type"] = "text/html; charset=utf-8"
        ngx.say("<!doctype html><title>Prefect unavailable</title><h1>Prefect unavailable</h1><p>",
            html_escape(tostring(err)), "</p>")
    end
    return
end

if wants_json() then
    ngx.header["Content-Type"] = "application/json"
    if #rows == 0 then
        -- Debian's lua-cjson 2.1.0 would encode an empty table as {}.
        ngx.say(string.format('{"hours":%s,"count":0,"task_runs":[]}', cjson.encode(hours)))
    else
        ngx.say(cjson.encode({ hours = hours, count = #rows, task_runs = rows }))
    end
    return
end

ngx.header["Content-Type"] = "text/html; charset=utf-8"
local out = {
    "<!doctype html><html><head><meta charset=\"utf-8\"><title>Failed task runs</title>",
    "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}",
    "tr:nth-child(even){background:#f4f4f4}</style></head><body>",
    string.format("<h1>%d failed or crashed task runs in the last %g hours</h1>", #rows, hours),
}
if #rows > 0 then
    out[#out + 1] = "<table><tr><th>Task run</th><th>State</th><th>Started (UTC)</th>"
        .. "<th>Run time</th><th>Flow</th><th>Flow run</th><th>Message</th></tr>"
    for _, r in ipairs(rows) do
        out[#out + 1] = string.format(
            "<tr><td title=\"%s\">%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                .. "<td title=\"%s\">%s</td><td>%s</td></tr>",
            html_escape(r.id), html_escape(r.name or "?"), html_escape(r.state or "?"),
            html_escape(type(r.start_time) == "string" and r.start_time:sub(1, 19) or "-"),
            type(r.total_run_time) == "number" and string.format("%.1f s", r.total_run_time) or "-",
            html_escape(r.flow_name or "-"), html_escape(r.flow_run_id or ""),
            -- the id when the flow run is gone (or there is none)
            html_escape(r.flow_run_name or r.flow_run_id or "-"), html_escape(r.message or ""))
    end
    out[#out + 1] = "</table>"
end
out[#out + 1] = "</body></html>"
ngx.print(table.concat(out, "\n"))
