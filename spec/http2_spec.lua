-- HTTP/2 with the curl transport (`http2 = true`): the test server speaks only
-- HTTP/1.1, so a private nginx terminates TLS and HTTP/2 in front of it and
-- says in a response header which protocol the client spoke. Pages then share
-- one connection as streams, and a paused stream (read_ahead) must not stall
-- the others.

local core = require("prefect.core")
local prefect = require("prefect")
local socket = require("socket")
local nginx = require("nginx")
local test_server = require("test_server")
local tls = require("tls")

local RUNS = 600

describe("HTTP/2 through an nginx front", function()
   local srv, front, certs, h2_url, h1_ids

   setup(function()
      if not nginx.binary() then return end
      srv = test_server.start{ dataset = { generate = RUNS } }
      certs = tls.make()
      local port = nginx.free_port()
      local upstream = srv.url:match("^(http://[^/]+)")
      front = nginx.start{ http = table.concat({
         "  server {",
         "    listen 127.0.0.1:" .. port .. " ssl http2;",
         "    ssl_certificate " .. certs.cert .. ";",
         "    ssl_certificate_key " .. certs.key .. ";",
         "    location / {",
         "      proxy_pass " .. upstream .. ";",
         "      proxy_http_version 1.1;",
         "      proxy_buffering off;",
         "      add_header X-Served-Over $server_protocol always;",
         "    }",
         "  }",
      }, "\n") }
      h2_url = "https://127.0.0.1:" .. port .. "/api"
      -- the same read straight from the test server, over HTTP/1.1
      local c = prefect.client{ url = srv.url, api_key = false }
      h1_ids = {}
      for run in c:task_runs{ sort = "ID_DESC" } do h1_ids[#h1_ids + 1] = run.id end
      c:close()
   end)
   teardown(function()
      if front then front:stop() end
      if certs then certs.remove() end
      if srv then srv:stop() end
   end)

   local function need_nginx()
      if not front then pending("nginx is not installed (apt-get install nginx)") end
      return front ~= nil
   end

   -- The protocol nginx saw for one page request over a session with these options.
   local function protocol(http2)
      local s = core.session{ http2 = http2, ca_file = certs.ca_file }
      finally(function() s:close() end)
      local req = assert(s:request{
         method = "POST", url = h2_url .. "/task_runs/filter", body = '{"limit": 5}',
         headers = { "Content-Type: application/json" }, decoder = core.decoder(),
      })
      local status, headers = req:response()
      assert.are.equal(200, status, tostring(headers and headers.message))
      local n = 0
      while req:next() do n = n + 1 end
      assert.are.equal(5, n)
      return headers["x-served-over"]
   end

   it("is spoken when http2 = true, and HTTP/1.1 otherwise", function()
      if not need_nginx() then return end
      assert.are.equal("HTTP/2.0", protocol(true))
      assert.are.equal("HTTP/1.1", protocol(false))
   end)

   local function ids_over_h2(opts, slow)
      local c = prefect.client{ url = h2_url, api_key = false, http2 = true, ca_file = certs.ca_file,
         read_ahead = opts.read_ahead }
      finally(function() c:close() end)
      local out = {}
      for run in c:task_runs({ sort = "ID_DESC" }, { concurrency = opts.concurrency }) do
         out[#out + 1] = run.id
         if slow and #out % 50 == 0 then socket.sleep(0.01) end
      end
      return out
   end

   it("reads every run in order with several pages in flight on one connection", function()
      if not need_nginx() then return end
      assert.are.equal(RUNS, #h1_ids)
      assert.are.same(h1_ids, ids_over_h2{ concurrency = 4 })
   end)

   it("pauses one stream for a slow reader without losing or reordering runs", function()
      if not need_nginx() then return end
      assert.are.same(h1_ids, ids_over_h2({ concurrency = 3, read_ahead = 65536 }, true))
   end)
end)
