-- Back-pressure in prefect.core's transport: a body larger than `read_ahead`
-- pauses while the reader falls behind, so memory follows `read_ahead`, not
-- the size of the body, and nothing is lost or reordered on the way. The
-- bodies are the test server's `huge` fault: a JSON array of small runs,
-- generated as it is sent.

local core = require("prefect.core")
local socket = require("socket")
local test_server = require("test_server")
local faults = require("prefect.testing.faults")

local KiB, MiB = 1024, 1024 * 1024
local UNDER_VALGRIND = os.getenv("PREFECT_UNDER_VALGRIND")
local SLACK = UNDER_VALGRIND and 20 or 1
-- Many times read_ahead (256 KiB below); smaller under valgrind, which
-- decodes some fifty times slower, so that each request ends well within
-- its timeout.
local BODY = UNDER_VALGRIND and 3 * MiB or 12 * MiB

-- How many elements the `huge` fault sends for a body of n bytes.
local function elements_in(n)
   local count = 0
   for piece in faults.huge_body(n) do
      local _, k = piece:gsub('"name": "huge"', "")
      count = count + k
   end
   return count
end

-- The decoder's memory, from its tostring ("... N KB held").
local function held_kb(decoder)
   local kb = tonumber(tostring(decoder):match("(%d+) KB held"))
   assert.is_number(kb)
   return kb
end

describe("transport read_ahead", function()
   local srv, expected

   setup(function()
      srv = test_server.start{ dataset = "fixture" }
      expected = elements_in(BODY)
   end)
   teardown(function()
      srv:stop()
   end)

   -- A POST answered with a `huge` body of `size` bytes (default BODY), and
   -- the further fault `more` when given.
   local function request(session, decoder, size, more)
      local fault = "huge=" .. (size or BODY) .. (more and "; " .. more or "")
      local req, err = session:request{
         method = "POST", url = srv.url .. "/task_runs/filter", body = "{}", decoder = decoder,
         headers = { "Content-Type: application/json", "X-Test-Fault: " .. fault },
      }
      assert.is_nil(err)
      return req
   end

   -- A session (closed when the test ends) with these options on top of
   -- read_ahead = 256 KiB, and a `huge` request on it with its decoder.
   local function open(opts, size)
      local s_opts = { accept_encoding = false, read_ahead = 256 * KiB }
      for k, v in pairs(opts or {}) do s_opts[k] = v end
      local session = core.session(s_opts)
      finally(function() session:close() end)
      local d = core.decoder()
      return request(session, d, size), d, session
   end

   -- Reads every element with next(), resting now and then as a slow
   -- consumer does (and 1.5 s after element rest_at, when given); returns
   -- the count and the most the decoder held.
   local function read_slowly(req, decoder, rest_at)
      local count, most = 0, 0
      while true do
         local run, err = req:next()
         if run == nil then
            assert.is_nil(err)
            return count, most
         end
         count = count + 1
         assert.are.equal("huge", run.name)
         if count % 5000 == 0 then
            socket.sleep(0.005)
            most = math.max(most, held_kb(decoder))
         end
         if count == rest_at then socket.sleep(1.5) end
      end
   end

   it("keeps the decoder near read_ahead while the reader lags, and loses nothing", function()
      local req, d = open()
      local count, most = read_slowly(req, d)
      assert.are.equal(expected, count)
      -- the buffer doubles past the limit, and its values' records come on top
      assert.is_true(most < 4 * 256, "decoder held " .. most .. " KB")
   end)

   it("is what bounds the memory: without it the decoder holds the body", function()
      local req, d = open{ read_ahead = 1024 * MiB }
      -- resting first lets the whole body arrive before anything is taken
      assert.is_table(req:next())
      socket.sleep(1 * SLACK)
      local count, most = read_slowly(req, d)
      assert.are.equal(expected, count + 1)
      assert.is_true(most > BODY / KiB / 2, "decoder held only " .. most .. " KB")
   end)

   it("does not count a pause as a stall", function()
      local req, d = open{ stall_timeout = 1 }
      -- 1.5 s paused with a 1 s stall_timeout
      local count = read_slowly(req, d, 10000)
      assert.are.equal(expected, count)
   end)

   it("pauses and resumes under poll(timeout, max) too", function()
      local req, d = open()
      local count, most, done = 0, 0, false
      local deadline = socket.gettime() + 60 * SLACK
      while not done do
         assert.is_true(socket.gettime() < deadline, "poll never finished")
         local list
         list, done = req:poll(5, 1000)
         assert.is_table(list, done)
         count = count + #list
         most = math.max(most, held_kb(d))
      end
      assert.are.equal(expected, count)
      assert.is_true(most < 4 * 256, "decoder held " .. most .. " KB")
   end)

   it("hands out every run before a cut, paused or not, then the same error", function()
      -- the server closes the connection a third of the way into the body
      local function read_cut(read_ahead)
         local session = core.session{ accept_encoding = false, read_ahead = read_ahead }
         local req = request(session, core.decoder(), BODY, "cut_after=" .. BODY / 3)
         local count, err = 0
         while true do
            local run
            run, err = req:next()
            if run == nil then break end
            count = count + 1
            if count % 5000 == 0 then socket.sleep(0.005) end
         end
         session:close()
         return count, err
      end
      local paused, paused_err = read_cut(256 * KiB)
      local unpaused, unpaused_err = read_cut(1024 * MiB)
      assert.is_true(paused > 0)
      assert.are.equal(unpaused, paused)
      assert.are.equal("protocol", paused_err and paused_err.kind)
      assert.are.equal(unpaused_err.kind, paused_err.kind)
   end)

   it("leaves the session usable after a paused request is closed", function()
      local req, _, session = open()
      assert.is_table(req:next())
      socket.sleep(0.3) -- long enough to fill read_ahead and pause
      req:close()
      local again = core.decoder()
      local count = read_slowly(request(session, again, 2 * MiB), again)
      assert.are.equal(elements_in(2 * MiB), count)
   end)

   it("refuses a read_ahead that is not a number of bytes of at least 64 KiB", function()
      for _, bad in ipairs({ 1000, -1, "8M", true }) do
         local ok, err = pcall(core.session, { read_ahead = bad })
         assert.is_false(ok)
         assert.matches("option 'read_ahead' must be a number of bytes, at least 65536", err)
      end
   end)
end)

describe("client read_ahead", function()
   local prefect = require("prefect")
   local srv

   setup(function()
      srv = test_server.start{ dataset = { generate = 600 } }
   end)
   teardown(function()
      srv:stop()
   end)

   local function ids(opts, rest)
      local c = prefect.client{ url = srv.url, api_key = false, read_ahead = opts.read_ahead,
         accept_encoding = opts.gzip or false }
      finally(function() c:close() end)
      local out = {}
      for run in c:task_runs({ sort = "ID_DESC" }, { concurrency = opts.concurrency }) do
         out[#out + 1] = run.id
         if rest and #out % 50 == 0 then socket.sleep(0.01) end
      end
      return out
   end

   it("pauses within each page for a slow reader and still hands out every run in order", function()
      -- a page of 200 generated runs is several times 64 KiB
      local expected = ids{}
      assert.are.equal(600, #expected)
      assert.are.same(expected, ids({ read_ahead = 65536 }, true))
      assert.are.same(expected, ids({ read_ahead = 65536, concurrency = 3 }, true))
      -- libcurl pauses after inflating: the bytes it keeps are the decoded ones
      assert.are.same(expected, ids({ read_ahead = 65536, gzip = true }, true))
   end)

   it("is checked like every client option", function()
      for _, bad in ipairs({ 65535, 1e5 + 0.5, "8M" }) do
         local ok, err = pcall(prefect.client, { url = srv.url, read_ahead = bad })
         assert.is_false(ok)
         assert.are.equal("invalid", err.kind)
         assert.matches("read_ahead must be an integer number of bytes, at least 65536", err.message)
      end
   end)
end)
