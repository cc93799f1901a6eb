--- A tiny cooperative scheduler on `socket.select`: one coroutine per task, every wait a yield.
-- A task waits for a socket to become readable or writable, or for a moment in time; nothing in a
-- task ever blocks the process, so a slow or silent client cannot hold up the others.
-- @module prefect.testing.loop

local socket = require("socket")

local gettime = socket.gettime
local select = socket.select

-- select() uses fd_set: descriptors at or above FD_SETSIZE (1024 on Linux) must never reach it.
local MAX_FD = 1000

local Loop = {}
Loop.__index = Loop

--- A new, empty loop.
local function new()
   return setmetatable({
      reading = {},  -- socket -> waiter
      writing = {},  -- socket -> waiter
      sleeping = {}, -- waiter -> true (waiters with a deadline and no socket)
      running = false,
      on_error = function(err) io.stderr:write("prefect-test-server: task failed: ", tostring(err), "\n") end,
   }, Loop)
end

local function resume(self, co, ...)
   local ok, err = coroutine.resume(co, ...)
   if not ok then self.on_error(debug.traceback(co, tostring(err))) end
end

--- Starts `fn(...)` as a new task; it runs until its first wait before `spawn` returns.
function Loop:spawn(fn, ...)
   resume(self, coroutine.create(fn), ...)
end

local function current()
   local co, is_main = coroutine.running()
   assert(co and not is_main, "prefect.testing.loop: waits only work inside a task")
   return co
end

-- Parks the running task until `sock` is ready in `set` or `deadline` (absolute, seconds) passes.
local function park(self, set, sock, deadline)
   local waiter = { co = current(), sock = sock, set = set, deadline = deadline }
   if sock then set[sock] = waiter end
   if deadline then self.sleeping[waiter] = true end
   return coroutine.yield()
end

--- Waits until `sock` can be read. Returns true, or nil, "timeout" once `deadline` has passed.
function Loop:wait_readable(sock, deadline)
   return park(self, self.reading, sock, deadline)
end

--- Waits until `sock` can be written. Returns true, or nil, "timeout" once `deadline` has passed.
function Loop:wait_writable(sock, deadline)
   return park(self, self.writing, sock, deadline)
end

--- Sleeps for `seconds` without holding up other tasks.
function Loop:sleep(seconds)
   park(self, nil, nil, gettime() + seconds)
   return true
end

local function forget(self, waiter)
   if waiter.sock then waiter.set[waiter.sock] = nil end
   self.sleeping[waiter] = nil
end

local function collect(set, sockets, ready, reading)
   for sock, waiter in pairs(set) do
      -- A socket may hold buffered (for TLS: decrypted) bytes that select() cannot see.
      if reading and sock.dirty and sock:dirty() then
         ready[#ready + 1] = waiter
      else
         sockets[#sockets + 1] = sock
      end
   end
end

--- Runs one round: waits at most `max_wait` seconds (nil: until something happens) and resumes every
-- task whose socket is ready or whose deadline has passed.
function Loop:step(max_wait)
   local recvt, sendt, ready = {}, {}, {}
   collect(self.reading, recvt, ready, true)
   collect(self.writing, sendt, ready, false)

   local now = gettime()
   local timeout = max_wait
   for waiter in pairs(self.sleeping) do
      local left = waiter.deadline - now
      if not timeout or left < timeout then timeout = left end
   end
   if #ready > 0 or (timeout and timeout < 0) then timeout = 0 end

   local readable, writable = select(recvt, sendt, timeout or -1)
   for _, sock in ipairs(readable or {}) do ready[#ready + 1] = self.reading[sock] end
   for _, sock in ipairs(writable or {}) do ready[#ready + 1] = self.writing[sock] end

   local woken = {}
   for _, waiter in ipairs(ready) do
      if not woken[waiter] then
         woken[waiter] = true
         forget(self, waiter)
         resume(self, waiter.co, true)
      end
   end

   now = gettime()
   local expired = {}
   for waiter in pairs(self.sleeping) do
      if waiter.deadline <= now and not woken[waiter] then expired[#expired + 1] = waiter end
   end
   for _, waiter in ipairs(expired) do
      forget(self, waiter)
      resume(self, waiter.co, nil, "timeout")
   end
end

--- Runs rounds until `stop` is called.
function Loop:run()
   self.running = true
   while self.running do self:step() end
end

function Loop:stop()
   self.running = false
end

--- Whether a descriptor can be handed to select().
local function selectable(sock)
   local fd = sock:getfd()
   return fd ~= nil and fd >= 0 and fd < MAX_FD
end

return {
   new = new,
   gettime = gettime,
   selectable = selectable,
}
