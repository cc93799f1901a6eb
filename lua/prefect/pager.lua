--- Offset paging over POST /task_runs/filter, one run at a time.
--
-- What it does, and what it guarantees (docs/client.md says the same):
-- * The query is compiled once; each page asks for min(page_size, runs still
--   wanted) runs; `offset` advances by what came back; a short page (or the
--   caller's limit) ends the read.
-- * Each page streams through the decoder: a run is handed out as soon as its
--   last byte is in, and the next page's request is started as soon as this
--   page's status is in (prefetch), so the server works while the caller does.
-- * Runs are de-duplicated by `id` against every id the current and the
--   previous page brought (handed out or skipped). Offsets shift when runs are
--   inserted ahead of the read position; while the shift between two page
--   requests stays under one page, a page can only repeat runs of the page
--   before it, so no run is handed out twice. Runs inserted (or deleted)
--   during the read can be missed; sorts other than ID_DESC have no tie-breaker, so rows
--   with equal keys may be skipped. Memory holds at most two pages of ids,
--   plus the page being prefetched.
-- * A page that fails part-way is retried (same offset, same size) under the
--   retry policy; the runs it already handed out are not handed out again.

local pager = {}

-- (prefect.client requires this module only inside its methods, so no cycle.)
local client_mod = require("prefect.client")

local Pager = {}
Pager.__index = Pager

--- A pager for a compiled query of `cl` (a prefect client).
-- @param query from client:_query: json, limit, offset
-- @param opts decode (decoder options), prefetch (boolean)
function pager.new(cl, query, opts)
   return setmetatable({
      client = cl,
      query = query,
      decode = opts.decode,
      prefetch = opts.prefetch ~= false,
      remaining = query.limit or math.huge,
      offset = query.offset or 0,
      seen_prev = {},
      seen_cur = {},
      finished = false,
   }, Pager)
end

-- Counts a run that arrived on the current page; true when it is to be
-- handed out (not a repeat), which also counts it against the limit.
function Pager:_accept(run)
   self.cur_count = self.cur_count + 1
   local id = type(run) == "table" and run.id or nil
   if id ~= nil then
      local repeated = self.seen_cur[id] or self.seen_prev[id]
      -- every id this page brought, handed out or not: the next page can only repeat runs
      -- of this one (while the shift between two requests stays under a page)
      self.seen_cur[id] = true
      if repeated then return false end
   end
   self.remaining = self.remaining - 1
   return true
end

-- The current page is complete: true when it was the last one.
function Pager:_page_done()
   if self.cur_count < self.cur_limit then return true end
   self.offset = self.offset + self.cur_count
   self.seen_prev, self.seen_cur = self.seen_cur, {}
   return false
end

function Pager:_size(wanted)
   local n = self.client:_page_size(self.query)
   if wanted < n then n = wanted end
   return n
end

function Pager:_close_ahead()
   if self.ahead then
      self.ahead.handle.req:close()
      self.ahead = nil
   end
end

--- Stops the read: closes the page in flight and the prefetched one.
function Pager:close()
   self.finished = true
   if self.cur then
      self.cur:close()
      self.cur = nil
   end
   self:_close_ahead()
end
Pager.__close = Pager.close

function Pager:_fail(err)
   self.err = err
   self:close()
   error(err, 0)
end

-- Sends the request for the page after the current one, without waiting
-- for its answer. A failure here is not reported: the page is simply asked
-- for again (and the failure then reported) when its turn comes.
function Pager:_start_ahead()
   local after = self.remaining - self.cur_limit
   if not self.prefetch or after <= 0 then return end
   local offset = self.offset + self.cur_limit
   local limit = self:_size(after)
   local cl = self.client
   local handle = cl:_start("POST", "/task_runs/filter",
      cl.page_body(self.query.json, limit, offset), self.decode)
   if handle then self.ahead = { handle = handle, offset = offset, limit = limit } end
end

function Pager:_open_current()
   local limit = self:_size(self.remaining)
   local started
   local ahead = self.ahead
   self.ahead = nil
   if ahead then
      if ahead.offset == self.offset and ahead.limit == limit then
         started = ahead.handle
      else
         ahead.handle.req:close()
      end
   end
   local req, err, attempt, used = self.client:_open_page(self.query, self.offset, limit,
      self.decode, 1, started)
   if not req then return nil, err end
   self.cur, self.cur_limit, self.cur_count, self.attempt = req, used, 0, attempt
   self:_start_ahead()
   return true
end

-- The current page failed part-way: ask for it again.
function Pager:_retry_current(err)
   self.cur:close()
   self.cur = nil
   local policy = self.client.policy
   if not policy:may_retry(err, self.attempt) then
      err.attempts = self.attempt
      return nil, self.client:_scrub(err)
   end
   policy:wait(self.attempt, nil)
   local req, oerr, attempt, used = self.client:_open_page(self.query, self.offset, self.cur_limit,
      self.decode, self.attempt + 1)
   if not req then return nil, oerr end
   if used ~= self.cur_limit then self:_close_ahead() end
   self.cur, self.cur_limit, self.cur_count, self.attempt = req, used, 0, attempt
   return true
end

--- The next run, or nil at the end. Raises the structured error on failure,
--- and the same error on every call after that.
function Pager:next_run()
   if self.err then error(self.err, 0) end
   if self.finished then return nil end
   while true do
      if not self.cur then
         if self.remaining <= 0 then
            self:close()
            return nil
         end
         local ok, err = self:_open_current()
         if not ok then return self:_fail(err) end
      end
      local run, err = self.cur:next()
      if run ~= nil then
         if self:_accept(run) then
            if self.remaining <= 0 then self:close() end
            return run
         end
      elseif err ~= nil then
         local ok, rerr = self:_retry_current(err)
         if not ok then return self:_fail(rerr) end
      else
         self.cur:close()
         self.cur = nil
         if self:_page_done() then
            self:close()
            return nil
         end
      end
   end
end

--- The values for a generic `for`: the step function, and (on Lua 5.4)
--- the pager as the closing value, so leaving the loop early with `break`
--- cancels the requests in flight at once.
function Pager:iterator()
   local p = self
   return function() return p:next_run() end, nil, nil, p
end

---------------------------------------------------------------------------
-- The non-blocking reader behind client:start(q): the same paging, prefetch,
-- de-duplication, limits and retries, driven by poll(timeout_ms), which never
-- waits longer than asked. A retry is a time (on the client's clock) before
-- which poll starts nothing; the CSRF token fetch is a request like any other.

local Poller = {}
Poller.__index = Poller

local FILTER_PATH = "/task_runs/filter"

function pager.start(cl, query, opts)
   local p = pager.new(cl, query, opts)
   p.state = "idle"
   p.attempt = 1
   return setmetatable(p, Poller)
end

for _, name in ipairs{ "close", "_accept", "_page_done", "_size", "_close_ahead", "_start_ahead" } do
   Poller[name] = Pager[name]
end
Poller.__close = Pager.close

function Poller:_fail(err)
   self.err = err
   self:close()
end

-- A failure of the page in hand: schedule a retry, or fail for good.
function Poller:_failed(err)
   if self.h then
      self.h.req:close()
      self.h = nil
   end
   local cl = self.client
   if not cl.policy:may_retry(err, self.attempt) then
      err.attempts = self.attempt
      return self:_fail(cl:_scrub(err))
   end
   self.retry_at = cl.clock() + cl.policy:delay(self.attempt, err.retry_after)
   self.attempt = self.attempt + 1
   self.state = "retry_wait"
end

-- Sends the current page's request (or adopts the prefetched one).
function Poller:_send()
   local cl = self.client
   if cl:_csrf_due("POST") then return self:_send_csrf() end
   local limit = self:_size(self.remaining)
   local ahead = self.ahead
   self.ahead = nil
   if ahead and ahead.offset == self.offset and ahead.limit == limit then
      self.h = ahead.handle
   else
      if ahead then ahead.handle.req:close() end
      local h, err = cl:_start("POST", FILTER_PATH, cl.page_body(self.query.json, limit, self.offset),
         self.decode)
      if not h then return self:_failed(err) end
      self.h = h
   end
   self.cur_limit, self.cur_count = limit, 0
   self.state = "head"
end

function Poller:_send_csrf()
   -- a prefetched page carries the old token: it would only be refused
   self:_close_ahead()
   local cl = self.client
   local h, err = cl:_start("GET", cl:_csrf_path(), nil, {})
   if not h then return self:_failed(err) end
   self.h = h
   self.state = "csrf_head"
end

-- A page whose status was not a JSON success: its body is complete; decide.
function Poller:_refused(status, headers, body)
   local cl = self.client
   local err = cl:_response_error(self.h, status, headers, body)
   self.h.req:close()
   self.h = nil
   local max = err.kind == "http" and err.status == 422 and type(err.detail) == "string"
      and tonumber(err.detail:match("must be less than or equal to (%d+)"))
   if max and max >= 1 and max < self.cur_limit and not self.limit_retried then
      self.limit_retried = true
      cl.server_max = max
      self.state = "idle"
      return
   end
   if cl:_csrf_refused("POST", err) and not self.csrf_retried then
      self.csrf_retried = true
      self.csrf_refusal = err
      return self:_send_csrf()
   end
   return self:_failed(err)
end

-- Takes the runs that arrived; returns true when the read is over.
function Poller:_take(list, out)
   for _, run in ipairs(list) do
      if self:_accept(run) then
         out[#out + 1] = run
         if self.remaining <= 0 then
            self:close()
            return true
         end
      end
   end
   return false
end

-- One step of the state machine; returns true when poll should return now.
function Poller:_step(out, wait_ms)
   local state = self.state
   local cl = self.client
   if state == "retry_wait" then
      local due = self.retry_at - cl.clock()
      if due > 0 then
         -- Waiting is what the caller asked for, up to its timeout; returning at
         -- once would make a poll(timeout) loop spin until the retry is due.
         if wait_ms <= 0 then return true end
         cl.policy.sleep(math.min(due, wait_ms / 1000))
         if cl.clock() < self.retry_at then return true end
      end
      self.state = "idle"
   elseif state == "idle" then
      if self.remaining <= 0 then
         self:close()
         return true
      end
      self:_send()
   elseif state == "head" or state == "csrf_head" then
      local status, headers = self.h.req:response(wait_ms)
      if status == false then return true end
      if status == nil then return self:_failed(headers) or true end
      self.status, self.headers = status, client_mod.lower_headers(headers)
      if state == "csrf_head" then
         self.state = "csrf_body"
      elseif client_mod.streams_json(status, self.headers) then
         self.state = "body"
         self:_start_ahead()
      else
         self.state = "error_body"
      end
   elseif state == "error_body" or state == "csrf_body" then
      local list, done = self.h.req:poll(wait_ms)
      if list == nil then
         -- A body that is not streamed into the decoder (an error, or a 2xx that is not JSON):
         -- the curl transport's poll reports it as "not decoded" once it is complete, and
         -- body() then returns it at once (or the transfer's own error).
         local body, err = self.h.req:body()
         if body == nil then return self:_failed(err) or true end
         list, done = {}, true
         self.error_text = body
      end
      if state == "csrf_body" and list[1] ~= nil then
         local ok, err = cl:_csrf_accept(list[1], self.h.url)
         self.h.req:close()
         self.h = nil
         if not ok then return self:_failed(err) or true end
         self.state = "idle"
      elseif not done then
         return true
      elseif state == "csrf_body" then
         local h = self.h
         local body = self.error_text or h.req:body()
         self.error_text = nil
         if cl:_csrf_switched_off(self.status) then return self:_failed(self.csrf_refusal) or true end
         return self:_failed(cl:_response_error(h, self.status, self.headers, body)) or true
      else
         local body = self.error_text or self.h.req:body()
         self.error_text = nil
         self:_refused(self.status, self.headers, body)
      end
   elseif state == "body" then
      local list, done = self.h.req:poll(wait_ms)
      if list == nil then return self:_failed(done) or true end
      if self:_take(list, out) then return true end
      if not done then return true end
      self.h.req:close()
      self.h = nil
      if self:_page_done() then
         self:close()
         return true
      end
      self.attempt, self.limit_retried, self.csrf_retried = 1, nil, nil
      self.state = "idle"
   end
   return false
end

--- True once every run has been handed out (or the read was closed).
function Poller:done()
   return self.finished
end

--- Stops the read: the requests in flight are cancelled. Same as close().
Poller.cancel = Pager.close

--- The runs ready now (maybe none) and whether the read is complete; or
--- nil, err once it has failed (and on every call after that). Waits at most
--- `timeout_ms` (default 0: not at all) for something to arrive.
function Poller:poll(timeout_ms)
   local out = {}
   if self.err then return nil, self.err end
   if self.finished then return out, true end
   local clock = self.client.clock
   local deadline = clock() + (timeout_ms or 0) / 1000
   while true do
      local wait_ms = math.floor((deadline - clock()) * 1000)
      if wait_ms < 0 then wait_ms = 0 end
      local stop = self:_step(out, wait_ms)
      if self.err then
         if #out > 0 then return out, false end
         return nil, self.err
      end
      if self.finished then return out, true end
      if stop and (#out > 0 or clock() >= deadline or self.state == "retry_wait") then
         return out, false
      end
   end
end

pager.Pager = Pager
pager.Poller = Poller
return pager
