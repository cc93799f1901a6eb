--- Following a query: each task run that matches it, handed out once, as it
-- reaches a final state, oldest first (docs/follow.md says the same for users).
--
-- How a poll works:
-- * A poll is one read sorted END_TIME_DESC (Prefect has no END_TIME_ASC) of
--   the runs that ended at or after the window's lower edge: the newest
--   end_time seen so far (the watermark) minus `overlap` seconds, or the
--   client's clock minus `overlap` when that is earlier (a worker whose clock
--   runs ahead must not push the window past the runs still to come). On a
--   server with the task-run end_time filter (Prefect 3.6.22+) the edge is an
--   `ended = {after = edge}` criterion; on older ones (Prefect 2.x) the read
--   asks for final states and stops at the first run that ended before the
--   edge, which the sort makes the last one wanted.
-- * Every run read joins the poll's batch unless `seen` already holds its id
--   with the same end_time: the runs at the watermark itself (the boundary)
--   and the window's re-read runs come back on every poll and are skipped.
--   The batch is handed out when the read is complete, sorted by end_time
--   (then id), so a run is never handed out before an older one of its poll.
-- * A run that ends while a poll reads ends after what that poll saw (or
--   within `overlap` of it), so the next poll's window holds it. A failed
--   poll changes nothing: the next one reads the same window again.
-- * `seen` forgets what falls below the window's edge, so its size is the
--   number of runs that end within `overlap` seconds.
-- * Without `since`, the first poll that reads its window only learns the
--   watermark (and the runs within `overlap` of it); nothing that ended before
--   following began is handed out, even when the first polls fail.
-- * With `on = "update"` a poll also reads the runs of the query that have
--   not ended (ID_DESC) and hands out each one whose state (its id, else type,
--   name and time) differs from the last poll's; the batch is then sorted by
--   state time, which for an ended run is its end_time.
--
-- The module knows nothing of HTTP or of the client's insides: it is handed
-- `read(q)` (a blocking read: the values of a generic `for`), `start(q)` (a
-- non-blocking read handle with poll and close), `server()` (the Prefect
-- version queries are compiled for, or false), `clock` and `sleep`.
-- @module prefect.follow

local schema = require("prefect.filter.schema")
local time = require("prefect.filter.time")

local follow = {}

--- The state types a run ends in: Prefect sets end_time on entering them.
follow.FINAL = { "COMPLETED", "FAILED", "CRASHED", "CANCELLED" }
local FINAL = {}
for _, t in ipairs(follow.FINAL) do FINAL[t] = true end

--- The other state types (on = "update" asks for these too).
follow.NOT_FINAL = {}
for _, t in ipairs(schema.STATE_TYPES) do
   if not FINAL[t] then follow.NOT_FINAL[#follow.NOT_FINAL + 1] = t end
end

--- The first Prefect that filters task runs on end_time.
follow.END_TIME_SINCE = "3.6.22"
local END_TIME_SINCE = schema.parse_version(follow.END_TIME_SINCE)

--- Runs per request where the window's edge is found by reading (no end_time
-- filter): a poll that finds nothing new reads this many runs, not 200.
follow.SCAN_PAGE_SIZE = 25

--- Runs a scan takes from the poller at a time (fewer than a scan's page).
follow.SCAN_STEP = 10

-- Fields a poll needs whatever `fields` the caller asked for.
local NEEDED_FIELDS = { "id", "end_time", "state_type", "state_name", "state_id", "state.type", "state.id",
   "state.name", "state.timestamp" }

--- Microseconds since the epoch of a time value (ISO-8601 string or epoch
-- seconds), or nil when it is absent or not a time.
function follow.micros(v)
   if type(v) ~= "string" and type(v) ~= "number" then return nil end
   local s, us = time.parse(v)
   if not s then return nil end
   return s * 1000000 + us
end

local function iso(us)
   local s = math.floor(us / 1000000)
   return time.format(s, us - s * 1000000)
end

local function state_type(run)
   if run.state_type then return run.state_type end
   local st = run.state
   return type(st) == "table" and st.type or nil
end

-- The keys of `q` that follow sets itself, and why.
local OWNED = {
   sort = "follow sorts by END_TIME_DESC itself",
   limit = "follow reads every run that ends; stop it with max_polls or close()",
   offset = "follow reads from the newest run back to the last one it saw",
   ended = "follow asks for the runs that ended after the last one it saw (use since to start earlier)",
}

--- What is wrong with a query for following, or nil.
function follow.query_problem(q)
   for k, why in pairs(OWNED) do
      if q[k] ~= nil then return "the query must not set " .. k .. " (" .. why .. ")" end
   end
   local raw = q.task_runs
   if type(raw) == "table" and raw.end_time ~= nil then
      return "the query must not set task_runs.end_time (" .. OWNED.ended .. ")"
   end
end

-- Whether the query filters on state itself (then follow adds no state filter).
local function has_state_filter(q)
   if q.state ~= nil or q.state_name ~= nil then return true end
   local raw = q.task_runs
   return type(raw) == "table" and raw.state ~= nil
end

-- The read options of a poll: the caller's, with the fields a poll needs.
local function read_options(opts)
   local out = {}
   for k, v in pairs(opts) do out[k] = v end
   if opts.fields then
      local fields, have = {}, {}
      for _, f in ipairs(opts.fields) do
         fields[#fields + 1] = f
         have[f] = true
      end
      for _, f in ipairs(NEEDED_FIELDS) do
         if not have[f] then fields[#fields + 1] = f end
      end
      out.fields = fields
   end
   return out
end

local Follower = {}
Follower.__index = Follower

--- A follower. `spec`: q (the query, checked by query_problem), read, start,
-- server, clock, sleep (see the module comment), interval, overlap (seconds),
-- since (microseconds or nil), max_polls (or nil), read_opts (options of each
-- read), pollable (false when the transport cannot be polled: poll raises).
function follow.new(spec)
   local f = setmetatable({
      q = spec.q, read = spec.read, start = spec.start, server = spec.server,
      clock = spec.clock, sleep = spec.sleep,
      on = spec.on or "final", states = {}, -- id -> state_key of the runs not ended (on = "update")
      interval = spec.interval, overlap_us = math.floor(spec.overlap * 1000000 + 0.5),
      floor_us = spec.since, max_polls = spec.max_polls,
      read_opts = read_options(spec.read_opts or {}),
      scan_opts = read_options(spec.read_opts or {}),
      pollable = spec.pollable ~= false,
      watermark = nil,  -- the newest end_time read so far (microseconds)
      seen = {},        -- id -> end_time of the runs in the window already handed out (or baseline)
      polls = 0,
      next_at = spec.clock(),
      queue = {}, queued = 0, queue_n = 0, -- runs of the last poll the iterator hands out
      finished = false,
   }, Follower)
   f.scan_opts.prefetch = false
   return f
end

-- The window's lower edge for the next poll, in microseconds; nil when every
-- ended run is wanted (a first poll with since unset finds it from the newest run).
-- The edge never moves back (a clock set back must not bring back runs `seen` has forgotten).
function Follower:_edge()
   local edge
   if self.watermark then edge = self:_below(self.watermark) end
   if self.floor_us and (edge == nil or edge < self.floor_us) then edge = self.floor_us end
   if self.last_edge and (edge == nil or edge < self.last_edge) then edge = self.last_edge end
   return edge
end

-- `overlap` before `us`, or before the client's clock when that is earlier.
function Follower:_below(us)
   local now = math.floor(self.clock() * 1000000)
   return math.min(us, now) - self.overlap_us
end

-- A copy of the query with `extra` over it.
local function with(q, extra)
   local out = {}
   for k, v in pairs(q) do out[k] = v end
   for k, v in pairs(extra) do out[k] = v end
   return out
end

-- Starts a poll: true, or nil, err when the server's version could not be read. A poll is one or
-- two reads (self.round.reads), each a query, its read options, the method that takes its runs,
-- and how many runs a poller step may take.
function Follower:_begin()
   if self.filters_end_time == nil then
      local v, err = self.server()
      if v == nil and err then return nil, err end
      local parsed = v and schema.parse_version(v)
      self.filters_end_time = not parsed or schema.compare_versions(parsed, END_TIME_SINCE) >= 0
   end
   -- until a poll has read its window (without since): learn where the runs are, hand out nothing
   local baseline = not self.learned and self.floor_us == nil
   local edge = self:_edge()
   local own_state = has_state_filter(self.q)
   local window = with(self.q, { sort = "END_TIME_DESC" })
   if not own_state then window.state = follow.FINAL end
   local read = { q = window, opts = self.read_opts, take = self._take_window }
   if self.filters_end_time then
      -- NULL end times sort first on PostgreSQL: ask for ended runs only
      window.ended = edge and { after = iso(edge) } or true
   else
      if window.page_size == nil then window.page_size = follow.SCAN_PAGE_SIZE end
      -- the read usually stops inside its first page: ask for the next one only when it is wanted,
      -- and take few runs per poller step (it would otherwise read on past the edge in one call)
      if self.read_opts.prefetch == nil and self.read_opts.concurrency == nil then
         read.opts = self.scan_opts
      end
      read.step = follow.SCAN_STEP
   end
   local reads = { read }
   if self.on == "update" then
      -- the runs that have not ended: each poll compares their states with the last poll's
      local active = with(self.q, { sort = "ID_DESC" })
      if not own_state then active.state = follow.NOT_FINAL end
      reads[2] = { q = active, opts = self.read_opts, take = self._take_active }
   end
   self.round = { reads = reads, i = 1, edge = edge, baseline = baseline, batch = {}, top = nil,
      active = {} }
   return true
end

-- Takes one run of the window's read: false once the read has gone past the window.
function Follower:_take_window(run)
   local us = type(run) == "table" and follow.micros(run.end_time)
   if not us then return true end -- not ended (listed first on PostgreSQL): not for following
   local r = self.round
   if r.baseline and r.edge == nil then r.edge = self:_below(us) end
   if r.edge and us < r.edge then return false end
   if r.top == nil or us > r.top then r.top = us end
   if self.seen[run.id] ~= us and (r.baseline or FINAL[state_type(run)]) then
      r.batch[#r.batch + 1] = { run = run, us = us, ended = true }
   end
   return true
end

-- What tells one state of a run from the next: the state's id, else its type, name and time.
local function state_key(run)
   local st = type(run.state) == "table" and run.state or {}
   local id = st.id or run.state_id
   if type(id) == "string" then return id end
   return tostring(state_type(run)) .. "|" .. tostring(run.state_name or st.name) .. "|"
      .. tostring(st.timestamp)
end

-- Takes one run of the read of the runs not ended (on = "update").
function Follower:_take_active(run)
   if type(run) ~= "table" or FINAL[state_type(run)] then return true end -- the window hands it out
   local r = self.round
   if r.active[run.id] then return true end -- twice in one read (offsets shifted): once
   local key = state_key(run)
   r.active[run.id] = key
   local us = follow.micros(type(run.state) == "table" and run.state.timestamp or nil)
      or math.floor(self.clock() * 1000000)
   local wanted = not r.baseline and (self.learned or not self.floor_us or us >= self.floor_us)
   if wanted and self.states[run.id] ~= key then r.batch[#r.batch + 1] = { run = run, us = us } end
   return true
end

-- Ends a poll whose reads are complete: the new runs, oldest first.
function Follower:_finish()
   local r = self.round
   self.round = nil
   table.sort(r.batch, function(a, b)
      if a.us ~= b.us then return a.us < b.us end
      return a.run.id < b.run.id
   end)
   local out = {}
   for _, e in ipairs(r.batch) do
      if not e.ended then
         out[#out + 1] = e.run
      elseif self.seen[e.run.id] ~= e.us then
         -- the same id twice in one read (offsets shifted by runs ending meanwhile): once
         self.seen[e.run.id] = e.us
         if not r.baseline then out[#out + 1] = e.run end
      end
   end
   -- the runs not ended now are the ones to compare the next poll with
   if self.on == "update" then self.states = r.active end
   self.learned = true
   if r.top and (self.watermark == nil or r.top > self.watermark) then self.watermark = r.top end
   local edge = self:_edge()
   if edge then
      self.last_edge = edge
      for id, us in pairs(self.seen) do
         if us < edge then self.seen[id] = nil end
      end
   end
   self:_counted()
   return out
end

-- A poll is over (read or failed): when the next one is due, and whether following is done.
function Follower:_counted()
   self.round = nil
   self.polls = self.polls + 1
   self.next_at = self.clock() + self.interval
   if self.max_polls and self.polls >= self.max_polls then self.finished = true end
end

local function is_misuse(err)
   return type(err) == "table" and err.kind == "invalid" and err.where ~= nil
end

--- One poll now, whatever the interval: reads the window (blocking on the
--- transport; inside nginx that yields) and returns the runs that ended since
--- the last poll, oldest first (maybe none), or nil, err. A failed poll is
--- counted and changes nothing else: the next one reads the same window.
--- For ngx.timer.every, cron jobs, and the iterator.
function Follower:check()
   if self.finished then return {} end
   local began, err = self:_begin()
   if not began then
      self:_counted()
      return nil, err
   end
   local ok, rerr = pcall(function()
      for _, read in ipairs(self.round.reads) do
         local step, state, ctl, closing = self.read(read.q, read.opts)
         while true do
            local run = step(state, ctl)
            if run == nil or not read.take(self, run) then break end
         end
         if closing then closing:close() end
      end
   end)
   if not ok then
      -- the query was refused before any request: the caller's mistake, raised as it came
      if is_misuse(rerr) then error(rerr, 0) end
      self:_counted()
      return nil, rerr
   end
   return self:_finish()
end

--- For frame loops: the runs handed out now (maybe none) and whether
--- following is over; or nil, err for a poll that failed (the handle goes on:
--- the next poll is due an interval later). Waits at most `timeout_ms`
--- (default 0): for the next poll to be due, then for the server's answer.
--- Needs a transport that can be polled (curl).
function Follower:poll(timeout_ms)
   if not self.pollable then
      require("prefect.options").misuse("follow:poll: the ngx transport cannot be polled; inside nginx call"
         .. " check() from a timer, or use the iterator", 2)
   end
   if timeout_ms ~= nil and (type(timeout_ms) ~= "number" or timeout_ms < 0) then
      require("prefect.options").misuse("follow:poll: timeout_ms must be a number >= 0, got "
         .. tostring(timeout_ms), 2)
   end
   if self.finished then return {}, true end
   local clock = self.clock
   local deadline = clock() + (timeout_ms or 0) / 1000
   if not self.round then
      local due = self.next_at - clock()
      if due > 0 then
         local can = deadline - clock()
         if can > 0 then self.sleep(math.min(due, can)) end
         if clock() < self.next_at then return {}, false end
      end
      local began, err = self:_begin()
      if not began then
         self:_counted()
         return nil, err
      end
   end
   local r = self.round
   while true do
      local read = r.reads[r.i]
      if not self.handle then self.handle = self.start(read.q, read.opts) end
      local wait_ms = math.max(0, math.floor((deadline - clock()) * 1000))
      local runs, done = self.handle:poll(wait_ms, read.step)
      if runs == nil then
         self.handle = nil
         self:_counted()
         return nil, done
      end
      for _, run in ipairs(runs) do
         if not read.take(self, run) then
            done = true
            break
         end
      end
      if done then
         self.handle:close()
         self.handle = nil
         r.i = r.i + 1
         if r.i > #r.reads then return self:_finish(), self.finished end
      elseif clock() >= deadline then
         return {}, false
      end
   end
end

--- The next run, waiting (with the client's sleep) for the polls that find
--- it; nil once max_polls polls are done or the follower is closed. Raises
--- the structured error of a failed poll.
function Follower:next_run()
   while true do
      -- `#` of a list emptied from the front is any border of it: count instead
      if self.queued < self.queue_n then
         self.queued = self.queued + 1
         local run = self.queue[self.queued]
         self.queue[self.queued] = nil
         return run
      end
      if self.finished then return nil end
      local due = self.next_at - self.clock()
      if due > 0 then self.sleep(due) end
      if self.finished then return nil end
      local runs, err = self:check()
      if not runs then
         self:close()
         error(err, 0)
      end
      self.queue, self.queued, self.queue_n = runs, 0, #runs
   end
end

--- Stops following: a poll in flight is cancelled; runs not yet taken from
--- the iterator are dropped. Safe to call more than once.
function Follower:close()
   self.finished = true
   self.queue, self.queued, self.queue_n = {}, 0, 0
   if self.handle then
      self.handle:close()
      self.handle = nil
   end
end

--- True once following is over (max_polls reached, or closed).
function Follower:done()
   return self.finished
end

-- `for run in client:follow(q) do`: the follower is its own step function
-- (and, on Lua 5.4, the loop's closing value, so `break` stops it).
Follower.__call = Follower.next_run
Follower.__close = Follower.close

follow.Follower = Follower
return follow
