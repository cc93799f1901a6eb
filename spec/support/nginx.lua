--- A private nginx + ngx_lua for specs: its own prefix in a temp directory,
-- a generated config on a free 127.0.0.1 port, started in the foreground
-- (`daemon off`) in the background and stopped with QUIT by the spec.
--
--   local nginx = require("nginx")
--   local ok, why = nginx.available()
--   local n = nginx.start{ locations = [[ location /x { content_by_lua_block { ... } } ]],
--                          http = "...", main = "...", trusted_certificate = "/path/ca.pem" }
--   n.url, n.port, n.prefix
--   local status, body, headers = n:get("/x")
--   n:stop()
--
-- Set PREFECT_KEEP_NGINX=1 to keep the prefix (config and logs) after stop.

local socket = require("socket")
local disk = require("disk")

local nginx = {}

local MODULES = "/usr/lib/nginx/modules"

local function sh(cmd)
    local p = assert(io.popen(cmd .. " 2>/dev/null"))
    local out = p:read("*a")
    p:close()
    return (out:gsub("%s+$", ""))
end

local function quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local exists, read_file, write_file = disk.exists, disk.read, disk.write

--- The checkout's root (two levels above this file).
nginx.root = (function()
    local src = debug.getinfo(1, "S").source:gsub("^@", "")
    local dir = src:match("^(.*)/spec/support/[^/]*$")
    if not dir or dir == "" then
        dir = "."
    end
    return sh("cd " .. quote(dir) .. " && pwd")
end)()

--- The nginx binary, or nil.
function nginx.binary()
    for _, p in ipairs({ os.getenv("PREFECT_NGINX") or "", "/usr/sbin/nginx", "/usr/local/sbin/nginx" }) do
        if p ~= "" and exists(p) then
            return p
        end
    end
    local found = sh("command -v nginx")
    return found ~= "" and found or nil
end

--- true, or false and why nginx + ngx_lua cannot be used here.
function nginx.available()
    if not nginx.binary() then
        return false, "nginx is not installed (apt-get install nginx libnginx-mod-http-lua)"
    end
    if not exists(MODULES .. "/ngx_http_lua_module.so") then
        return false, "ngx_lua is not installed (apt-get install libnginx-mod-http-lua)"
    end
    if not jit then
        return false, "ngx_lua runs LuaJIT: these specs run under luajit only"
    end
    return true
end

--- A free TCP port on 127.0.0.1 (bound, read and released).
function nginx.free_port()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return tonumber(port)
end

local function alive(pid)
    local status = read_file("/proc/" .. pid .. "/status")
    if not status then
        return false
    end
    -- Reparented and not yet reaped: gone for our purposes.
    return not status:match("\nState:%s+Z")
end

--- Makes a throwaway CA and a server certificate it signed (for localhost and
-- 127.0.0.1, or the subjectAltName `san`) with openssl, in `dir`. Returns { ca = path, cert = path,
-- key = path }, or nil and openssl's output.
function nginx.make_certs(dir, name, san)
    name = name or "test"
    local p = dir .. "/" .. name
    write_file(p .. "-ext.cnf", table.concat({
        "basicConstraints = CA:FALSE",
        "keyUsage = digitalSignature, keyEncipherment",
        "extendedKeyUsage = serverAuth",
        "subjectAltName = " .. (san or "DNS:localhost, IP:127.0.0.1"),
    }, "\n") .. "\n")
    local steps = {
        string.format("openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -keyout %s -out %s"
            .. " -subj '/CN=lua-prefect %s CA' -addext basicConstraints=critical,CA:TRUE"
            .. " -addext keyUsage=critical,keyCertSign,cRLSign",
            quote(p .. "-ca.key"), quote(p .. "-ca.pem"), name),
        string.format("openssl req -newkey rsa:2048 -nodes -sha256 -keyout %s -out %s -subj '/CN=localhost'",
            quote(p .. "-server.key"), quote(p .. "-server.csr")),
        string.format("openssl x509 -req -sha256 -days 2 -in %s -CA %s -CAkey %s -set_serial 1"
            .. " -out %s -extfile %s", quote(p .. "-server.csr"), quote(p .. "-ca.pem"),
            quote(p .. "-ca.key"), quote(p .. "-server.pem"), quote(p .. "-ext.cnf")),
    }
    for _, cmd in ipairs(steps) do
        local out = sh(cmd .. " 2>&1; echo rc=$?")
        if not out:match("rc=0$") then
            return nil, out
        end
    end
    return { ca = p .. "-ca.pem", cert = p .. "-server.pem", key = p .. "-server.key" }
end

local Nginx = {}
Nginx.__index = Nginx

local function config(o)
    local root = nginx.root
    local lines = {}
    local function add(s)
        lines[#lines + 1] = s
    end
    if sh("id -u") == "0" then
        -- Workers would otherwise run as nobody and could not read the checkout.
        add("user root;")
    end
    add("worker_processes 1;")
    add("pid logs/nginx.pid;")
    add("error_log logs/error.log " .. (o.log_level or "info") .. ";")
    add("load_module " .. MODULES .. "/ndk_http_module.so;")
    add("load_module " .. MODULES .. "/ngx_http_lua_module.so;")
    -- Workers drop the environment except what is declared; the test server and
    -- the in-nginx runner start processes that need these.
    local declared = {}
    local names = { "PATH", "HOME", "TMPDIR", "LUA_PATH", "LUA_CPATH", "PREFECT_TEST_LUA" }
    for _, name in ipairs(o.env or {}) do
        names[#names + 1] = name
    end
    local extra = {}
    for name in pairs(o.environ or {}) do
        extra[#extra + 1] = name
    end
    table.sort(extra)
    for _, name in ipairs(extra) do
        names[#names + 1] = name
    end
    for _, name in ipairs(names) do
        if not declared[name] then
            declared[name] = true
            add("env " .. name .. ";")
        end
    end
    add(o.main or "")
    add("events { worker_connections 1024; }")
    add("http {")
    add("  access_log logs/access.log;")
    for _, t in ipairs({ "client_body", "proxy", "fastcgi", "uwsgi", "scgi" }) do
        add("  " .. t .. "_temp_path temp/" .. t .. ";")
    end
    add("  lua_package_path '" .. table.concat({
        root .. "/lua/?.lua", root .. "/lua/?/init.lua", root .. "/spec/support/?.lua",
        root .. "/spec/ngx/?.lua", "",
    }, ";") .. ";';")
    add("  lua_package_cpath '" .. root .. "/build/luajit/?.so;;';")
    if o.trusted_certificate then
        add("  lua_ssl_trusted_certificate " .. o.trusted_certificate .. ";")
        add("  lua_ssl_verify_depth 3;")
    end
    -- A module that fails to load stops nginx at startup instead of at the first request.
    add("  init_by_lua_block { " .. (o.init or "require 'prefect.transport.ngx'") .. " }")
    add(o.http or "")
    add("  server {")
    add("    listen 127.0.0.1:" .. o.port .. ";")
    add("    server_name localhost;")
    add("    location = /__ready { return 204; }")
    add(o.locations or "")
    add("  }")
    add("}")
    return table.concat(lines, "\n") .. "\n"
end

-- "env K=V ... " for the variables nginx should start with, or "".
local function environ(vars)
    local parts = {}
    for k, v in pairs(vars or {}) do
        parts[#parts + 1] = k .. "=" .. quote(v)
    end
    if #parts == 0 then
        return ""
    end
    table.sort(parts)
    return "env " .. table.concat(parts, " ") .. " "
end

--- Starts a private nginx; raises with the error log if it does not come up.
-- @tparam table o locations, http, main (config text), env (names declared with `env`),
--   environ (name -> value: set for nginx, and declared), init (Lua),
--   trusted_certificate (PEM path), log_level, port
function nginx.start(o)
    o = o or {}
    local bin = assert(nginx.binary(), "nginx is not installed")
    local prefix = sh("mktemp -d /tmp/prefect-nginx.XXXXXX")
    assert(prefix ~= "", "mktemp failed")
    for _, d in ipairs({ "conf", "logs", "temp" }) do
        assert(os.execute("mkdir -p " .. quote(prefix .. "/" .. d)))
    end
    o.port = o.port or nginx.free_port()
    local conf = config(o)
    write_file(prefix .. "/conf/nginx.conf", conf)
    local pid = sh(string.format("%s%s -p %s -c conf/nginx.conf -e logs/error.log -g 'daemon off;'"
        .. " >%s 2>&1 & echo $!", environ(o.environ), quote(bin), quote(prefix .. "/"),
        quote(prefix .. "/logs/stderr.log")))
    local self = setmetatable({
        pid = assert(tonumber(pid), "no pid from the shell"),
        prefix = prefix, port = o.port, url = "http://127.0.0.1:" .. o.port, conf = conf,
    }, Nginx)
    local deadline = socket.gettime() + 10
    while socket.gettime() < deadline do
        if not alive(self.pid) then
            local log = self:error_log()
            self:_cleanup()
            error("nginx did not start:\n" .. log .. "\n" .. conf, 2)
        end
        local status = self:get("/__ready", { timeout = 1 })
        if status == 204 then
            return self
        end
        socket.sleep(0.02)
    end
    local log = self:error_log()
    self:stop()
    error("nginx did not answer within 10 s:\n" .. log, 2)
end

--- The error log and nginx's own stderr so far.
function Nginx:error_log()
    local log = read_file(self.prefix .. "/logs/error.log") or ""
    return log .. (read_file(self.prefix .. "/logs/stderr.log") or "")
end

--- Sends a request on a new connection without waiting for the answer.
-- Returns a pending object whose :finish() gives status, body, headers.
function Nginx:send(path, opts)
    opts = opts or {}
    local c = socket.tcp()
    c:settimeout(opts.timeout or 30)
    local ok, err = c:connect("127.0.0.1", self.port)
    if not ok then
        c:close()
        return nil, err
    end
    local body = opts.body or ""
    local head = { (opts.method or "GET") .. " " .. path .. " HTTP/1.0", "Host: 127.0.0.1:" .. self.port }
    for k, v in pairs(opts.headers or {}) do
        head[#head + 1] = k .. ": " .. v
    end
    if opts.body then
        head[#head + 1] = "Content-Length: " .. #body
    end
    c:send(table.concat(head, "\r\n") .. "\r\n\r\n" .. body)
    local pending = {}
    function pending.finish()
        -- HTTP/1.0 without keep-alive: nginx sends no chunking and closes at the end.
        local data, rerr, partial = c:receive("*a")
        c:close()
        data = data or partial
        if not data or data == "" then
            return nil, rerr or "empty reply"
        end
        local status = tonumber(data:match("^HTTP/%d%.%d (%d%d%d)"))
        local head_text, rest = data:match("^(.-)\r\n\r\n(.*)$")
        local headers = {}
        for name, value in (head_text or ""):gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
            headers[name:lower()] = value
        end
        return status, rest or "", headers
    end
    return pending
end

--- A request to this nginx: status, body, headers | nil, err.
-- @tparam[opt] table opts method, body, headers, timeout (seconds)
function Nginx:get(path, opts)
    local p, err = self:send(path, opts)
    if not p then
        return nil, err
    end
    return p.finish()
end

function Nginx:_cleanup()
    if not os.getenv("PREFECT_KEEP_NGINX") and self.prefix:match("^/tmp/prefect%-nginx%.") then
        os.execute("rm -rf " .. quote(self.prefix))
    end
end

--- Graceful stop (QUIT), waiting up to 10 s before KILL; removes the prefix.
function Nginx:stop()
    if self.stopped then
        return
    end
    self.stopped = true
    os.execute("kill -QUIT " .. self.pid .. " 2>/dev/null")
    local deadline = socket.gettime() + 10
    while alive(self.pid) and socket.gettime() < deadline do
        socket.sleep(0.02)
    end
    if alive(self.pid) then
        os.execute("kill -KILL " .. self.pid .. " 2>/dev/null")
    end
    self:_cleanup()
end

return nginx
