--- Starts a real Prefect server (the version pinned in tools/real/requirements.txt, from the
-- virtualenv tools/real/venv.sh makes) for the tests under tests/real, and seeds it.
--
--    local real = require("real_prefect")
--    local srv = real.start{ db = "sqlite" }          -- or "postgres", auth_string = "u:p", csrf = 5
--    local data = real.seed(srv, "build/real/dataset.json")
--    ... srv.url ... srv:request{...} ...
--    srv:stop()                                       -- in teardown: by its pid, also when a test fails
--
-- Like the bundled test server, it listens on 127.0.0.1 on a free port and exits when the test
-- process goes away (tools/real/serve.py watches its standard input).
local test_server = require("test_server")
local dataset = require("prefect.testing.dataset")
local disk = require("disk")

local ROOT = test_server.ROOT
local real = {}

local python = os.getenv("PREFECT_REAL_PYTHON")
real.PYTHON = (python and python ~= "") and python or (ROOT .. "/build/prefect-venv/bin/python")
real.PIN = (assert(disk.read(ROOT .. "/tools/real/requirements.txt")):match("==%s*([%w.]+)"))

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function run(command)
   local ok, how, code = os.execute(command)
   if ok == true or ok == 0 then return true end
   return nil, ("%s: %s %s"):format(command, tostring(how), tostring(code))
end

--- Starts a real server. opts: db = "sqlite" (a fresh file, the default) or a SQLAlchemy URL
-- ("postgresql+asyncpg://..."), auth_string = "user:pass", csrf = token lifetime in seconds
-- (turns CSRF protection on). Returns a test_server Server (request, stop, alive, stderr) with
-- `home`, its temporary PREFECT_HOME, removed on stop.
function real.start(opts)
   opts = opts or {}
   local home = disk.tmpdir()
   local argv = { real.PYTHON, ROOT .. "/tools/real/serve.py", "--home", home }
   if opts.db and opts.db ~= "sqlite" then
      argv[#argv + 1] = "--db"
      argv[#argv + 1] = opts.db
   end
   if opts.auth_string then
      argv[#argv + 1] = "--auth-string"
      argv[#argv + 1] = opts.auth_string
   end
   if opts.csrf then
      argv[#argv + 1] = "--csrf"
      argv[#argv + 1] = tostring(opts.csrf)
   end
   local srv = test_server.launch(argv, opts.start_timeout or 180, "Prefect " .. real.PIN)
   srv.home = home
   local stop = srv.stop
   function srv.stop(self)
      stop(self)
      if self.home then disk.remove_tree(self.home) end
      self.home = nil
   end
   return srv
end

--- Seeds srv through its REST API (tools/real/seed.py, in the shape of the recorded 2.19.9
-- dataset) and returns the data read back from it, also written to `out_path`. opts: auth_string
-- (for a server that needs it), runs (create only the first n recorded task runs).
function real.seed(srv, out_path, opts)
   opts = opts or {}
   local command = ("%s %s %s %s %s"):format(quote(real.PYTHON), quote(ROOT .. "/tools/real/seed.py"),
      quote(srv.url), quote(ROOT .. "/spec/fixtures/dataset-2.19.9.json"), quote(out_path))
   if opts.auth_string then command = command .. " --auth-string " .. quote(opts.auth_string) end
   if opts.runs then command = command .. " --runs " .. math.floor(opts.runs) end
   assert(run(command .. " >&2"))
   return dataset.load(out_path)
end

local function free_port()
   local socket = require("socket")
   local s = assert(socket.bind("127.0.0.1", 0))
   local _, port = s:getsockname()
   s:close()
   return tonumber(port)
end

local function pg_bindir()
   local pipe = assert(io.popen("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1"))
   local dir = pipe:read("*l")
   pipe:close()
   assert(dir and dir ~= "", "PostgreSQL's server is not installed (Debian package postgresql)")
   return dir
end

--- Starts a private PostgreSQL (Debian's) on a free loopback port with its data in a temporary
-- directory, run as the `postgres` user when this process is root (initdb refuses root). Returns
-- { url = SQLAlchemy URL of an empty database, stop = function }. Stop it in teardown.
function real.postgres()
   local bin = pg_bindir()
   local dir = disk.tmpdir()
   local port = free_port()
   local as = ""
   local pipe = io.popen("id -u")
   local uid = pipe:read("*l")
   pipe:close()
   if uid == "0" then
      assert(run("chown postgres " .. quote(dir)))
      as = "runuser -u postgres -- "
   end
   local data, log, server_log = dir .. "/data", dir .. "/initdb.log", dir .. "/data/server.log"
   assert(run(("%s%s/initdb -D %s -A trust -U prefect -E UTF8 --locale C.UTF-8 >%s 2>&1"):format(as, bin,
      quote(data), quote(log))), disk.read(log))
   local pg = { dir = dir }
   function pg.stop()
      if not pg.dir then return end
      run(("%s%s/pg_ctl -D %s -m immediate -w stop >/dev/null 2>&1"):format(as, bin, quote(data)))
      disk.remove_tree(pg.dir)
      pg.dir = nil
   end
   local options = ("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off"):format(port, dir)
   local ok = run(("%s%s/pg_ctl -D %s -l %s -w -t 60 -o %s start >/dev/null 2>&1"):format(as, bin,
      quote(data), quote(server_log), quote(options)))
   if not ok then
      local text = disk.read(server_log)
      pg.stop()
      error("PostgreSQL did not start: " .. tostring(text), 2)
   end
   assert(run(("%s%s/createdb -h 127.0.0.1 -p %d -U prefect prefect"):format(as, bin, port)))
   pg.url = ("postgresql+asyncpg://prefect@127.0.0.1:%d/prefect"):format(port)
   return pg
end

return real
