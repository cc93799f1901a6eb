--- Per-page cost of the libcurl transport against its floor and a peer, on
-- loopback: a 200-run page from the project's test server, fetched
--   core       prefect.core session, one keep-alive connection, body() (transport only)
--   core+dec   the same, streamed through the decoder with next() (what the client does)
--   plain_curl bench/plain_curl.c: plain libcurl, one reused easy handle, libcurl's
--              default receive buffer; "same buffer": with the transport's 128 KiB
--   luasocket  socket.http.request with a table sink (its only mode: a connection per request)
-- The test server is Lua and costs far more per page than any client, so
-- the comparison is on the client's CPU time per page (wall time is shown
-- too). Not part of the tests.
--   usage: lua5.4 bench/transport.lua [pages]      (after make build)

local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local root = script_dir .. "/.."
package.path = table.concat({
   root .. "/lua/?.lua", root .. "/lua/?/init.lua", root .. "/spec/support/?.lua", package.path,
}, ";")
local flavour = (jit and "luajit") or "lua5.4"
package.cpath = root .. "/build/" .. flavour .. "/?.so;" .. package.cpath

local core = require("prefect.core")
local socket = require("socket")
local http = require("socket.http")
local ltn12 = require("ltn12")
local test_server = require("test_server")

local PAGES = tonumber(arg and arg[1]) or 300
local ROUNDS = 3
local BODY = '{"limit": 200}'

local function shell(cmd)
   local ok = os.execute(cmd)
   return ok == true or ok == 0
end

local function build_plain_curl()
   local out = root .. "/build/bench/plain_curl"
   assert(shell("mkdir -p " .. root .. "/build/bench"))
   assert(shell(table.concat({
      "cc -O2 -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -o", out,
      root .. "/bench/plain_curl.c", "$(pkg-config --cflags --libs libcurl)",
   }, " ")), "could not build bench/plain_curl.c")
   return out
end

-- Runs fn(n) for n = 1..PAGES; returns CPU and wall seconds per page.
local function measure(fn)
   fn(0) -- warm up: connection, buffers
   local cpu, wall = os.clock(), socket.gettime()
   for n = 1, PAGES do fn(n) end
   return (os.clock() - cpu) / PAGES, (socket.gettime() - wall) / PAGES
end

local function core_body(url, accept_encoding)
   local s = core.session{ accept_encoding = accept_encoding }
   local headers = { "Content-Type: application/json" }
   local cpu, wall = measure(function()
      local req = assert(s:request{ method = "POST", url = url, headers = headers, body = BODY })
      assert(req:body())
      req:close()
   end)
   s:close()
   return cpu, wall
end

local function core_decoded(url, accept_encoding)
   local s = core.session{ accept_encoding = accept_encoding }
   local headers = { "Content-Type: application/json" }
   local cpu, wall = measure(function()
      local req = assert(s:request{
         method = "POST", url = url, headers = headers, body = BODY, decoder = core.decoder(),
      })
      local n = 0
      while true do
         local run, err = req:next()
         if run == nil then
            assert(not err, err and err.message)
            break
         end
         n = n + 1
      end
      assert(n == 200, "page of " .. n)
      req:close()
   end)
   s:close()
   return cpu, wall
end

-- The decoder on its own over the same page, so that core+decoder minus
-- this is what the transport costs on the path the client really uses
-- (where the body is never copied into a Lua string).
local function decoder_alone(url)
   local s = core.session{ accept_encoding = false }
   local req = assert(s:request{
      method = "POST", url = url, headers = { "Content-Type: application/json" }, body = BODY,
   })
   local body = assert(req:body())
   s:close()
   return measure(function()
      local d = core.decoder()
      assert(d:feed(body))
      assert(d:finish())
      local n = 0
      while d:next() ~= nil do n = n + 1 end
      assert(n == 200)
   end)
end

local function luasocket(url)
   local cpu, wall = measure(function()
      local sink = {}
      local _, status = http.request{
         url = url, method = "POST", source = ltn12.source.string(BODY),
         headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#BODY) },
         sink = ltn12.sink.table(sink),
      }
      assert(status == 200, tostring(status))
      assert(#table.concat(sink) > 0)
   end)
   return cpu, wall
end

local function plain_curl(bin, url, encoding, buffer_size)
   local p = assert(io.popen(string.format("%s '%s' '%s' %d %s %s", bin, url, BODY, PAGES, encoding,
      buffer_size and tostring(buffer_size) or "")))
   local line = p:read("*l") or ""
   p:close()
   local cpu, wall = line:match("cpu_us=([%d.]+)"), line:match("wall_us=([%d.]+)")
   assert(cpu, "plain_curl printed: " .. line)
   return tonumber(cpu) / 1e6, tonumber(wall) / 1e6
end

local unpack_ = table.unpack or unpack -- luacheck: ignore

local plain_bin = build_plain_curl()
local srv = test_server.start{ dataset = { generate = 1000, seed = 1, shape = 3 } }
local url = srv.url .. "/task_runs/filter"

local ok, err = pcall(function()
   print(string.format("%s, %d pages x %d rounds (best round), 200 runs per page", flavour, PAGES, ROUNDS))
   local results = {}
   local function row(name, c, w)
      results[name] = c
      print(string.format("  %-30s cpu %8.1f us/page   wall %8.1f us/page", name, c * 1e6, w * 1e6))
   end
   -- Rounds alternate between the clients, so a noisy neighbour hits them alike.
   local cases = {
      { "core (identity)", core_body, url, false },
      { "plain_curl (identity)", plain_curl, plain_bin, url, "identity" },
      { "plain_curl same buffer (id.)", plain_curl, plain_bin, url, "identity", 131072 },
      { "luasocket (identity)", luasocket, url },
      { "core+decoder (identity)", core_decoded, url, false },
      { "decoder alone (identity)", decoder_alone, url },
      { "core (gzip)", core_body, url, true },
      { "plain_curl (gzip)", plain_curl, plain_bin, url, "auto" },
      { "core+decoder (gzip)", core_decoded, url, true },
   }
   local cpu, wall = {}, {}
   for _ = 1, ROUNDS do
      for _, case in ipairs(cases) do
         local c, w = case[2](unpack_(case, 3))
         if not cpu[case[1]] or c < cpu[case[1]] then cpu[case[1]], wall[case[1]] = c, w end
      end
   end
   for _, case in ipairs(cases) do row(case[1], cpu[case[1]], wall[case[1]]) end
   local function ratio(a, b) return results[a] / results[b] end
   print("ratios (client CPU per page; 'core' rows read the page with body(), which copies it")
   print("into a Lua string once more than plain_curl does):")
   print(string.format("  core / plain_curl, identity            %.2f  (target <= 1.10)",
      ratio("core (identity)", "plain_curl (identity)")))
   print(string.format("  core / plain_curl same buffer, id.     %.2f",
      ratio("core (identity)", "plain_curl same buffer (id.)")))
   print(string.format("  core / plain_curl, gzip                %.2f  (target <= 1.10)",
      ratio("core (gzip)", "plain_curl (gzip)")))
   print(string.format("  (core+decoder - decoder) / plain_curl  %.2f  (transport share, streaming)",
      (results["core+decoder (identity)"] - results["decoder alone (identity)"])
         / results["plain_curl (identity)"]))
   print(string.format("  luasocket / core, identity             %.2f  (> 1: core is ahead)",
      ratio("luasocket (identity)", "core (identity)")))
   print(string.format("  luasocket / core+decoder, identity     %.2f  (luasocket does no decoding)",
      ratio("luasocket (identity)", "core+decoder (identity)")))
end)
srv:stop()
if not ok then error(err, 0) end
