--- A network profile for the benchmarks: a TCP proxy on 127.0.0.1 that makes a loopback server
-- look remote. Every byte crossing it, in either direction, waits half of the round trip, and each
-- direction is one link of capped bandwidth shared by all connections (bytes queue behind each
-- other as on a real link). A new connection's first bytes wait one more round trip, the TCP
-- handshake the client would have made with a remote server. The proxy forwards bytes and nothing
-- else: TLS goes through it untouched. It buffers at most BUFFER bytes per direction of a
-- connection and stops reading that side until they are out, so TCP's flow control still works.
--
--   lua5.4 bench/netproxy.lua --target 127.0.0.1:PORT [--rtt-ms 20] [--mbit 100]
--                             [--port-file F] [--stdin-watch]
--
-- Prints "listening tcp://127.0.0.1:PORT" once it accepts connections; runs until killed, or,
-- with --stdin-watch, until its standard input ends (its parent is gone).
local socket = require("socket")

local BUFFER = 256 * 1024 -- about one bandwidth-delay product at 100 Mbit/s and 20 ms
local SEGMENT = 16384

local opts = { rtt_ms = 20, mbit = 100 }
do
   local i = 1
   while arg[i] do
      local a, v = arg[i], arg[i + 1]
      if a == "--target" then opts.host, opts.port = v:match("^(.+):(%d+)$")
      elseif a == "--rtt-ms" then opts.rtt_ms = tonumber(v)
      elseif a == "--mbit" then opts.mbit = tonumber(v)
      elseif a == "--port-file" then opts.port_file = v
      elseif a == "--stdin-watch" then opts.stdin_watch, i = true, i - 1
      else
         io.stderr:write("usage: netproxy.lua --target HOST:PORT [--rtt-ms MS] [--mbit N]"
            .. " [--port-file F] [--stdin-watch]\n")
         os.exit(2)
      end
      i = i + 2
   end
   assert(opts.host and opts.rtt_ms and opts.mbit, "--target HOST:PORT is required")
end

local one_way = opts.rtt_ms / 2000
local seconds_per_byte = 8 / (opts.mbit * 1e6)

local listener = assert(socket.bind("127.0.0.1", 0))
listener:settimeout(0)
local _, port = listener:getsockname()
if opts.port_file then
   local f = assert(io.open(opts.port_file, "w"))
   f:write(port, "\n")
   f:close()
end
io.stdout:write("listening tcp://127.0.0.1:", port, "\n")
io.stdout:flush()

-- One link per direction, shared: when it is next free to carry a byte.
local links = { up = { free_at = 0 }, down = { free_at = 0 } }

-- A direction of one connection: bytes read from `from`, queued, written to `to` when due.
local directions = {}
local by_socket = {} -- socket -> the direction reading from it

local function new_direction(from, to, link, not_before)
   local d = { from = from, to = to, link = link, queue = {}, head = 1, tail = 0, queued = 0,
      not_before = not_before }
   directions[d] = true
   by_socket[from] = d
   return d
end

local function enqueue(d, data, now)
   local link = d.link
   link.free_at = math.max(link.free_at, now) + #data * seconds_per_byte
   local due = link.free_at + one_way
   if d.not_before then due = math.max(due, d.not_before + one_way) end
   d.tail = d.tail + 1
   d.queue[d.tail] = { due = due, data = data }
   d.queued = d.queued + #data
end

local function close_pair(d)
   for _, s in ipairs({ d.from, d.to }) do
      local other = by_socket[s]
      if other then directions[other] = nil; by_socket[s] = nil end
      s:close()
   end
end

local function accept()
   local client = listener:accept()
   if not client then return end
   local upstream = socket.tcp()
   upstream:settimeout(5)
   if not upstream:connect(opts.host, tonumber(opts.port)) then
      client:close()
      return
   end
   client:settimeout(0)
   upstream:settimeout(0)
   client:setoption("tcp-nodelay", true)
   upstream:setoption("tcp-nodelay", true)
   local now = socket.gettime()
   local up = new_direction(client, upstream, links.up, now + opts.rtt_ms / 1000)
   local down = new_direction(upstream, client, links.down, nil)
   up.peer, down.peer = down, up
end

local function read_from(d, now)
   local data, err, partial = d.from:receive(SEGMENT)
   data = data or partial
   if data and #data > 0 then enqueue(d, data, now) end
   if err == "closed" then
      d.eof = true
      local last = d.queue[d.tail]
      d.tail = d.tail + 1
      d.queue[d.tail] = { due = last and last.due or now + one_way, eof = true }
   end
end

-- Writes what is due; true when the direction waits on its destination being writable.
local function write_due(d, now)
   while d.queue[d.head] and d.queue[d.head].due <= now do
      local item = d.queue[d.head]
      if item.eof then
         d.to:shutdown("send")
         d.done = true
         d.queue[d.head] = nil
         d.head = d.head + 1
         if d.peer.done then close_pair(d) end
         return false
      end
      local sent, err, last = d.to:send(item.data)
      sent = sent or last or 0
      if err == "closed" then
         close_pair(d)
         return false
      end
      if sent < #item.data then
         item.data = item.data:sub(sent + 1)
         d.queued = d.queued - sent
         return true
      end
      d.queued = d.queued - #item.data
      d.queue[d.head] = nil
      d.head = d.head + 1
   end
   return false
end

-- Standard input, for select: it becomes readable only at its end, as nobody writes to it.
local stdin = opts.stdin_watch and { getfd = function() return 0 end, dirty = function() return false end }

while true do
   local now = socket.gettime()
   local readable, writable, wake = { listener }, {}, now + 0.05
   if stdin then readable[#readable + 1] = stdin end
   for d in pairs(directions) do
      if write_due(d, now) then writable[#writable + 1] = d.to end
   end
   for d in pairs(directions) do
      if not d.eof and d.queued < BUFFER then readable[#readable + 1] = d.from end
      local head = d.queue[d.head]
      if head then wake = math.min(wake, head.due) end
   end
   local r = socket.select(readable, writable, math.max(0, wake - socket.gettime()))
   now = socket.gettime()
   for _, s in ipairs(r) do
      if s == listener then
         accept()
      elseif s == stdin then
         os.exit(0)
      else
         local d = by_socket[s]
         if d then read_from(d, now) end
      end
   end
end
