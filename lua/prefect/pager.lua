--- Offset paging over POST /task_runs/filter, one run at a time.
--
-- What it does, and what it guarantees (docs/client.md says the same):
-- * Each page asks for min(page_size, runs still wanted) runs; `offset`
--   advances by what came back; a short page (or the caller's limit) ends
--   the read.
-- * Each page streams through the decoder: a run is handed out as soon as its
--   last byte is in, and the next page's request is started as soon as this
--   page's status is in (prefetch), so the server works while the caller does.
-- * Runs are de-duplicated by `id` against every id the current and the
--   previous page brought (handed out or skipped). Offsets shift when runs are
--   inserted ahead of the read position; while the shift between two page
--   requests stays under one page, a page can only repeat runs of the page
--   before it, so no run is handed out twice. A full page that brings no new
--   run ends the read with a protocol error: a server that ignores `offset`
--   would otherwise be asked for ever while nothing is handed out.
-- * A page that fails part-way is retried (same offset, same size) under the
--   retry policy; the runs it already handed out are not handed out again.
-- * With `concurrency = n` (n > 1) and a known total (the query's limit, or
--   one POST /task_runs/count first, sent together with the first page), the
--   pages at offset + k * page_size, k < n, are all requested at once; runs
--   are still handed out page by page in order, and each time the current
--   page completes the next one is adopted and one more is requested. Past
--   the total, the read goes on page by page (with the prefetch above) until
--   a short page. When the current page needs a retry or its size changes,
--   the pages ahead are dropped and asked for again from the current offset.
-- * With include (the source has `include(runs)`, prefect.include), the runs
--   of a page are held until the page is complete (or the limit reached);
--   then the job that fetches their flow runs and flows runs while the next
--   page's request is already in flight, and the page's runs are handed out.
--
-- The pager knows nothing of HTTP: it is handed a source whose `page(offset,
-- limit)` and `count()` make exchanges (prefect.exchange), whose
-- `page_size()` is the size to ask for, and its `clock` and `sleep`. The
-- blocking iterator and the non-blocking poller are two drivers of the same
-- paging state.
-- @module prefect.pager

local errors = require("prefect.errors")

local pager = {}

--- The count from a decoded /task_runs/count answer, or nil and a protocol error.
function pager.count_of(n, url)
   if type(n) == "number" and n >= 0 and n < math.huge and n == math.floor(n) then
      return math.tointeger and math.tointeger(n) or n
   end
   local shown = type(n) == "number" and tostring(n) or type(n)
   return nil, errors.new("protocol", {
      message = "the count is not a whole number >= 0: " .. shown, url = url,
   })
end

--- The error for a page that brought more runs than it asked for: the
--- server (or a proxy in front of it) ignores limit.
function pager.too_many(limit, url)
   return errors.new("protocol", {
      message = string.format("a page asked for %d runs and the server sent more", limit), url = url,
   })
end

local Pager = {}
Pager.__index = Pager

--- A pager for a compiled query.
-- @param query from the client: limit, offset
-- @param opts source (see the module comment), prefetch (boolean),
-- concurrency (pages in flight, default 1)
function pager.new(query, opts)
   local concurrency = opts.concurrency or 1
   return setmetatable({
      source = opts.source,
      prefetch = opts.prefetch ~= false,
      concurrency = concurrency,
      -- without a limit, the total comes from a count (only worth a request when n > 1)
      need_count = concurrency > 1 and query.limit == nil,
      total_end = math.huge, -- offset up to which pages are requested ahead
      ahead = {},            -- exchanges sent for the pages after the current one, in offset order
      remaining = query.limit or math.huge,
      cur_given = 0, -- runs of the current page handed out, over all its attempts
      offset = query.offset or 0,
      seen_prev = {},
      seen_cur = {},
      -- with include: the runs of the current page not yet released, the job fetching the flow
      -- runs of the released ones, and then those runs, handed out from ready[ready_i]
      held = opts.source.include and {} or nil,
      finished = false,
   }, Pager)
end

-- Counts a run that arrived on the current page; true when it is to be
-- handed out (not a repeat), which also counts it against the limit.
function Pager:_accept(run)
   self.cur_count = self.cur_count + 1
   local id = type(run) == "table" and run.id or self.cur_count
   local repeated = self.seen_cur[id] or self.seen_prev[id]
   -- every id this page brought, handed out or not: the next page can only repeat runs
   -- of this one (while the shift between two requests stays under a page)
   self.seen_cur[id] = true
   if repeated then return false end
   self.remaining = self.remaining - 1
   self.cur_given = self.cur_given + 1
   return true
end

-- The current page's body is complete: true when it was the last page, false
-- when the read goes on, or nil and a protocol error.
function Pager:_page_done()
   local ex = self.ex
   self.ex, self.req = nil, nil
   if self.cur_count < self.cur_limit then
      ex:close()
      return true
   end
   if self.cur_given == 0 and self.remaining > 0 then
      return ex:fail(errors.new("protocol", {
         message = string.format("a full page of %d runs at offset %d brought no run not already seen:"
            .. " the server ignores offset", self.cur_limit, self.offset),
         url = ex.url,
      }))
   end
   ex:close()
   self.offset = self.offset + self.cur_count
   self.seen_prev, self.seen_cur = self.seen_cur, {}
   self.cur_given = 0
   return false
end

-- The next run of the current page's list, or nil when a run came past the
-- number asked for (then the page fails: the server ignores limit).
function Pager:_take(run)
   if self.cur_count >= self.cur_limit then
      return self.ex:fail(pager.too_many(self.cur_limit, self.ex.url))
   end
   return self:_accept(run)
end

function Pager:_size(wanted)
   local n = self.source.page_size()
   if wanted < n then n = wanted end
   return n
end

function Pager:_close_ahead()
   local ahead = self.ahead
   for i = #ahead, 1, -1 do
      ahead[i].ex:close()
      ahead[i] = nil
   end
end

-- The exchange already sent for the current page, taken out of the window;
-- nil when there is none of that offset and size (then the window is
-- dropped: its pages are at offsets or sizes that are no longer wanted).
function Pager:_adopt(limit)
   local first = self.ahead[1]
   if first and first.offset == self.offset and first.limit == limit then
      table.remove(self.ahead, 1)
      return first.ex
   end
   self:_close_ahead()
end

function Pager:_launch(offset, limit)
   local ex = self.source.page(offset, limit)
   ex:launch()
   self.ahead[#self.ahead + 1] = { ex = ex, offset = offset, limit = limit }
end

-- Sends requests for the pages after the current one, without waiting for
-- their answers: up to concurrency - 1 of them inside the known total; and,
-- once the current page's status is in (`status_in`), at least one (the
-- prefetch), unless the current page is the last one inside the total. A
-- page that starts exactly at the total is inside it: it is asked for only
-- when the pages before it end there, and then it is the (empty) page that
-- tells the read is over, or the first of the runs created since the count.
-- A page ahead that fails is retried only when its turn comes.
function Pager:_fill_ahead(status_in)
   if not self.prefetch then return end
   local ahead = self.ahead
   local last = ahead[#ahead]
   local offset = last and (last.offset + last.limit) or (self.offset + self.cur_limit)
   -- runs still wanted after the current page (a retried page does not hand out again what it has)
   local after = self.remaining + self.cur_given - self.cur_limit
   for _, a in ipairs(ahead) do after = after - a.limit end
   local past_total = self.offset > self.total_end
   while after > 0 do
      local n = #ahead
      local within = offset <= self.total_end
      if not ((within and n < self.concurrency - 1) or (status_in and n == 0 and (within or past_total))) then
         return
      end
      local limit = self:_size(after)
      self:_launch(offset, limit)
      offset = offset + limit
      after = after - limit
   end
end

-- Closes the page in flight and the ones asked for ahead.
function Pager:_stop_paging()
   for _, name in ipairs({ "ex", "count_ex" }) do
      if self[name] then
         self[name]:close()
         self[name] = nil
      end
   end
   self.req = nil
   self:_close_ahead()
end

--- Stops the read: closes the page in flight, the ones asked for ahead and
--- the requests for flow runs and flows.
function Pager:close()
   self.finished = true
   self:_stop_paging()
   if self.job then
      self.job:close()
      self.job = nil
   end
   self.ready = nil
end
Pager.__close = Pager.close

-- With include: a run of the current page, held until the page is released.
-- Returns true when the read has all it wants (then the held runs are released).
function Pager:_hold(run)
   self.held[#self.held + 1] = run
   if self.remaining > 0 then return false end
   self:_release(true)
   return true
end

-- The held runs go to the include job; `last`: no page comes after them.
function Pager:_release(last)
   local runs = self.held
   self.held = {}
   self.job, self.job_runs, self.job_last = self.source.include(runs), runs, last
   if last then self:_stop_paging() end
end

-- One step of the include job: "done" (its runs are now ready to hand out),
-- or what the job's step returned.
function Pager:_step_job(wait_ms)
   local what, v, ex = self.job:step(wait_ms)
   if what ~= "done" then return what, v, ex end
   self.job = nil
   self.ready, self.ready_i = self.job_runs, 1
   return "done"
end

-- The next ready run; nil, true when the ready runs are all handed out and
-- they were the read's last.
function Pager:_ready_run()
   local ready = self.ready
   local i = self.ready_i
   local run = ready[i]
   if run ~= nil then
      ready[i] = nil
      self.ready_i = i + 1
      return run
   end
   self.ready = nil
   if self.job_last then
      self:close()
      return nil, true
   end
end

-- The known total, from POST /task_runs/count; the first page is wanted
-- whatever the count says, so it is sent at the same time.
function Pager:_count(wait_ms)
   if not self.count_ex then
      if #self.ahead == 0 then self:_launch(self.offset, self:_size(self.remaining)) end
      self.count_ex = self.source.count()
   end
   local what, v = self.count_ex:step(wait_ms)
   if what ~= "value" then return what, v, self.count_ex end
   local n, err = pager.count_of(v, self.count_ex.url)
   self.count_ex = nil
   if not n then return nil, err end
   self.need_count = false
   self.total_end = n
end

-- Brings the current page to its response: "ready" (self.req streams it),
-- "wait", due, exchange | "busy" (as exchange steps), or nil, err.
function Pager:_open(wait_ms)
   if self.need_count then
      local what, v, ex = self:_count(wait_ms)
      if what ~= nil or v ~= nil then return what, v, ex end
   end
   if not self.ex then
      local limit = self:_size(self.remaining)
      local ex = self:_adopt(limit)
      if not ex then
         ex = self.source.page(self.offset, limit)
         -- on the wire before the pages after it
         ex:launch()
      end
      self.ex, self.cur_limit = ex, limit
      self:_fill_ahead(false)
   end
   local what, v = self.ex:step(wait_ms)
   if what ~= "ready" then return what, v, self.ex end
   -- a page retried, or asked for with fewer runs: the pages ahead were sent
   -- while the server was failing, or with a size no longer used
   if self.ex.attempt > 1 or self.ex.limit ~= self.cur_limit then self:_close_ahead() end
   self.req, self.cur_limit, self.cur_count = v, self.ex.limit, 0
   self:_fill_ahead(true)
   return "ready"
end

-- The current page failed part-way: "wait", due for its next attempt, or nil, err.
function Pager:_body_failed(err)
   self.req = nil
   -- a window was sent while the server was failing: asked for again after the wait (the one
   -- page prefetched with concurrency = 1 is kept)
   if self.concurrency > 1 then self:_close_ahead() end
   return self.ex:retry(err)
end

function Pager:_fail(err)
   self.err = err
   self:close()
   return nil, err
end

-- The read is over once `limit` runs are handed out.
function Pager:_satisfied()
   if self.remaining > 0 then return false end
   self:close()
   return true
end

-- The blocking driver's answer to a step: sleeps out a retry wait (then the
-- exchange retries on the next step), raises a final error.
function Pager:_waited_out(what, v, ex)
   if what == "wait" then
      local src = self.source
      local left = v - src.clock()
      if left > 0 then src.sleep(left) end
      ex:waited()
   elseif what == nil then
      self:_fail(v)
      error(v, 0)
   end
end

--- The next run, or nil at the end. Raises the structured error on failure,
--- and the same error on every call after that.
function Pager:next_run()
   if self.err then error(self.err, 0) end
   if self.finished then return nil end
   while true do
      if self.ready then
         local run, over = self:_ready_run()
         if run ~= nil then return run end
         if over then return nil end
      elseif self.job then
         self:_waited_out(self:_step_job(nil))
      elseif not self.req then
         if self:_satisfied() then return nil end
         self:_waited_out(self:_open(nil))
      else
         local run, err = self.req:next()
         if run ~= nil then
            local give, terr = self:_take(run)
            if terr then
               self:_fail(terr)
               error(terr, 0)
            end
            if give then
               if self.held then
                  self:_hold(run)
               else
                  self:_satisfied()
                  return run
               end
            end
         else
            local ok, ferr
            if err ~= nil then
               ok, ferr = self:_body_failed(err)
            else
               ok, ferr = self:_page_done()
               if ok ~= nil and self.held then
                  self:_release(ok)
               elseif ok then
                  self:close()
                  return nil
               end
            end
            if ok == nil then
               self:_fail(ferr)
               error(ferr, 0)
            end
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
-- The non-blocking reader behind client:start(q): the same paging, driven by
-- poll(timeout_ms), which never waits longer than asked.

local Poller = setmetatable({}, { __index = Pager })
Poller.__index = Poller
Poller.__close = Pager.close

--- The handle `client:start(q)` returns: the read of `query`, driven by `h:poll(timeout_ms, max_runs)`.
function pager.start(query, opts)
   return setmetatable(pager.new(query, opts), Poller)
end

-- Takes the runs of `list` into `out`; nil, err when one is past the page's
-- limit. Returns true when the read is over.
function Poller:_take_list(list, out)
   for _, run in ipairs(list) do
      local give, err = self:_take(run)
      if err then return nil, err end
      if give then
         if self.held then
            if self:_hold(run) then return true end
         else
            out[#out + 1] = run
            if self:_satisfied() then return true end
         end
      end
   end
   return false
end

-- A step that met a retry's due time `due`: true when poll should return now.
function Poller:_retry_wait(due, wait_ms)
   local src = self.source
   -- the next attempt's time on the client's clock, for callers who plan their own waits
   self.state, self.retry_at = "retry_wait", due
   -- Waiting is what the caller asked for, up to its timeout; returning at
   -- once would make a poll(timeout) loop spin until the retry is due.
   if wait_ms <= 0 then return true end
   src.sleep(math.min(due - src.clock(), wait_ms / 1000))
   return src.clock() < due
end

-- The poller's answer to a step of an exchange (a page's or the include
-- job's): true when poll should return now, false to go on, or nil, err.
function Poller:_answer(wait_ms, what, v)
   self.state, self.retry_at = "reading", nil
   if what == nil then return nil, v end
   if what == "busy" then return true end
   if what == "wait" then return self:_retry_wait(v, wait_ms) end
   return false
end

-- With include: hands out ready runs, or steps the job; as _step.
function Poller:_step_include(out, wait_ms, budget)
   if self.ready then
      while not budget or budget > 0 do
         local run, over = self:_ready_run()
         if run == nil then return over == true end
         out[#out + 1] = run
         if budget then budget = budget - 1 end
      end
      return true
   end
   return self:_answer(wait_ms, self:_step_job(wait_ms))
end

-- One step of the read; returns true when poll should return now, or nil, err.
function Poller:_step(out, wait_ms)
   local budget = self.max_runs and self.max_runs - #out
   if self.ready or self.job then
      if budget and budget <= 0 then return true end
      return self:_step_include(out, wait_ms, budget)
   end
   if not self.req then
      if self:_satisfied() then return true end
      return self:_answer(wait_ms, self:_open(wait_ms))
   end
   if budget and budget <= 0 then return true end
   local list, done = self.req:poll(wait_ms, budget)
   if list == nil then
      local again, err = self:_body_failed(done)
      if not again then return nil, err end
      return false
   end
   local over, err = self:_take_list(list, out)
   if over == nil then return nil, err end
   if over or not done then return true end
   local last, perr = self:_page_done()
   if last == nil then return nil, perr end
   if self.held then
      self:_release(last)
      return false
   end
   if last then
      self:close()
      return true
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
--- `timeout_ms` (default 0: not at all) for something to arrive, and hands
--- out at most `max_runs` runs (default: all that are ready), so a frame
--- loop can bound the work of one call when a whole page arrives at once.
function Poller:poll(timeout_ms, max_runs)
   if max_runs ~= nil
      and (type(max_runs) ~= "number" or max_runs < 1 or max_runs ~= math.floor(max_runs)) then
      require("prefect.options").misuse("poll: max_runs must be a whole number >= 1, got "
         .. tostring(max_runs), 2)
   end
   self.max_runs = max_runs
   local out = {}
   if self.err then return nil, self.err end
   if self.finished then return out, true end
   local clock = self.source.clock
   local deadline = clock() + (timeout_ms or 0) / 1000
   while true do
      local wait_ms = math.floor((deadline - clock()) * 1000)
      if wait_ms < 0 then wait_ms = 0 end
      local stop, err = self:_step(out, wait_ms)
      if stop == nil then
         self:_fail(err)
         if #out > 0 then return out, false end
         return nil, err
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
