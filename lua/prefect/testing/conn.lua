--- Buffered, non-blocking socket I/O for one connection task (plain TCP or a luasec TLS socket).
-- Every read and write yields to the loop instead of blocking; every wait has a deadline.
-- Reads return the bytes or nil, err where err is "closed", "timeout", "too_large" or a socket error.
-- @module prefect.testing.conn

local socket = require("socket")

local READ_SIZE = 65536

local Conn = {}
Conn.__index = Conn

--- Wraps an accepted socket (already set to timeout 0).
local function new(loop, sock)
   return setmetatable({ loop = loop, sock = sock, buf = "", pos = 1, eof = false, closed = false },
      Conn)
end

function Conn:buffered()
   return #self.buf - self.pos + 1
end

-- Waits as the socket layer asks: "timeout" means the operation's own direction (`writing` or not);
-- TLS may need to write to read and read to write.
local function wait_for(self, err, deadline, writing)
   local ok
   if err == "timeout" then err = writing and "wantwrite" or "wantread" end
   if err == "wantread" then
      ok = self.loop:wait_readable(self.sock, deadline)
   elseif err == "wantwrite" then
      ok = self.loop:wait_writable(self.sock, deadline)
   else
      return nil, err
   end
   if not ok then return nil, "timeout" end
   return true
end

--- Reads more bytes into the buffer. Returns true, or nil, err.
function Conn:fill(deadline)
   if self.eof then return nil, "closed" end
   while true do
      local data, err, partial = self.sock:receive(READ_SIZE)
      local got = data or partial
      if err == "closed" then self.eof = true end
      if got and #got > 0 then
         if self.pos > 1 then
            self.buf = self.buf:sub(self.pos) .. got
            self.pos = 1
         else
            self.buf = self.buf .. got
         end
         return true
      end
      if self.eof then return nil, "closed" end
      local ok, werr = wait_for(self, err, deadline)
      if not ok then return nil, werr end
   end
end

local function take(self, n)
   local s = self.buf:sub(self.pos, self.pos + n - 1)
   self.pos = self.pos + n
   if self.pos > #self.buf then
      self.buf, self.pos = "", 1
   end
   return s
end

--- Reads up to and including the first occurrence of Lua pattern `terminator`; returns the bytes before
-- it. Fails with "too_large" when more than `max` bytes come without it.
function Conn:read_until(terminator, max, deadline)
   local from = self.pos
   while true do
      local s, e = self.buf:find(terminator, from)
      if s then
         if s - self.pos > max then return nil, "too_large" end
         local before = self.buf:sub(self.pos, s - 1)
         take(self, e - self.pos + 1)
         return before
      end
      if self:buffered() > max then return nil, "too_large" end
      -- A terminator may straddle the old end of the buffer: look back a little.
      local seen = self:buffered()
      local ok, err = self:fill(deadline)
      if not ok then return nil, err end
      from = math.max(self.pos, self.pos + seen - 4)
   end
end

--- Drops CR and LF bytes at the start of the buffer (RFC 9112 2.2: blank lines before a request).
function Conn:skip_blank_lines()
   local _, e = self.buf:find("^[\r\n]+", self.pos)
   if e then take(self, e - self.pos + 1) end
end

--- Reads exactly `n` bytes; returns them as a string.
function Conn:read_exact(n, deadline)
   if self:buffered() >= n then return take(self, n) end
   local pieces = { take(self, self:buffered()) }
   local have = #pieces[1]
   while have < n do
      local ok, err = self:fill(deadline)
      if not ok then return nil, err end
      local piece = take(self, math.min(self:buffered(), n - have))
      pieces[#pieces + 1] = piece
      have = have + #piece
   end
   return table.concat(pieces)
end

--- Sends bytes `i`..`j` of `data` (default: all of it), waiting while the peer is slow to read.
function Conn:send(data, i, j, deadline)
   i, j = i or 1, j or #data
   while i <= j do
      local last, err, partial_last = self.sock:send(data, i, j)
      if last then return true end
      if partial_last and partial_last >= i then i = partial_last + 1 end
      if i <= j then
         local ok, werr = wait_for(self, err, deadline, true)
         if not ok then return nil, werr end
      end
   end
   return true
end

function Conn:close()
   if not self.closed then
      self.closed = true
      self.sock:close()
   end
end

--- Closes with SO_LINGER 0, so the peer sees a connection reset (RST) instead of an orderly end.
function Conn:reset()
   if self.closed then return end
   if self.raw then
      -- luasec has no setoption: borrow the descriptor back into the plain socket object for a moment.
      self.raw:setfd(self.fd)
      self.raw:setoption("linger", { on = true, timeout = 0 })
      self.raw:setfd(-1)
   else
      self.sock:setoption("linger", { on = true, timeout = 0 })
   end
   self:close()
end

--- Ends the connection after an error answer without losing that answer: a close with unread bytes
-- pending makes the kernel send a reset, which can destroy the response before the client reads it.
-- So: stop sending, read and drop what the client still sends (briefly, bounded), then close.
function Conn:drain_close(seconds, max_bytes)
   if self.closed then return end
   if not self.raw then
      self.sock:shutdown("send")
      local deadline = socket.gettime() + (seconds or 2)
      local dropped = 0
      while dropped < (max_bytes or 1048576) do
         self.buf, self.pos = "", 1
         if not self:fill(deadline) then break end
         dropped = dropped + #self.buf
      end
   end
   self:close()
end

return { new = new }
