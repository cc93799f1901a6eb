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
-- * With `concurrency = n` (n > 1) and a known total (the query's limit, or
--   one POST /task_runs/count first, sent together with the first page), the
--   pages at offset + k * page_size, k < n, are all requested at once; runs
--   are still handed out page by page in order, and each time the current
--   page completes the next one is adopted and one more is requested. The
--   total only bounds how far ahead requests go: past it, the read goes on
--   page by page (with the prefetch above) until a short page. A page whose
--   request, status or body fails is retried only when its turn comes; then,
--   and whenever the page size or the CSRF token changes, the pages ahead are
--   dropped and asked for again from the current offset (they were sent at a
--   time the server failed, or with a size or token no longer used). Memory
--   holds at most n pages of response bytes.
-- @module prefect.pager

local pager = {}

local errors = require("prefect.errors")
-- (prefect.client requires this module only inside its methods, so no cycle.)
local client_mod = require("prefect.client")

local FILTER_PATH = "/task_runs/filter"
local COUNT_PATH = "/task_runs/count"

-- The count request's body: the query's filter without its sort (as client:count sends it).
local function count_body(query)
   local body = {}
   for k, v in pairs(query.body) do
      if k ~= "sort" then body[k] = v end
   end
   return require("prefect.filter").encode(body)
end

local function count_value(n, url)
   if type(n) == "number" then return n end
   return nil, errors.new("protocol", {
      message = "count answered " .. type(n) .. ", not a number", url = errors.safe_url(url),
   })
end

local Pager = {}
Pager.__index = Pager

--- A pager for a compiled query of `cl` (a prefect client).
-- @param query from client:_query: json, limit, offset
-- @param opts decode (decoder options), prefetch (boolean), concurrency (pages in flight, default 1)
function pager.new(cl, query, opts)
   local concurrency = opts.concurrency or 1
   return setmetatable({
      client = cl,
      query = query,
      decode = opts.decode,
      prefetch = opts.prefetch ~= false,
      concurrency = concurrency,
      -- without a limit, the total comes from a count (only worth a request when n > 1)
      need_count = concurrency > 1 and query.limit == nil,
      total_end = math.huge, -- offset up to which pages are requested ahead
      ahead = {},            -- requests sent for the pages after the current one, in offset order
      remaining = query.limit or math.huge,
      cur_given = 0, -- runs of the current page handed out, over all its attempts
      offset = query.offset or 0,
      seen_prev = {},
      seen_cur = {},
      finished = false,
   }, Pager)
end

-- Counts a run that arrived on the current page; true when it is to be
-- handed out (not a repeat), which also counts it against the limit. Runs
-- past the number the page asked for are never handed out (see _page_done).
function Pager:_accept(run)
   self.cur_count = self.cur_count + 1
   if self.cur_count > self.cur_limit then return false end
   local id = type(run) == "table" and run.id or nil
   if id ~= nil then
      local repeated = self.seen_cur[id] or self.seen_prev[id]
      -- every id this page brought, handed out or not: the next page can only repeat runs
      -- of this one (while the shift between two requests stays under a page)
      self.seen_cur[id] = true
      if repeated then return false end
   end
   self.remaining = self.remaining - 1
   self.cur_given = self.cur_given + 1
   return true
end

-- The current page is complete: true when it was the last one; or nil and a
-- protocol error when it brought more runs than it asked for. Such a server
-- (or a proxy in front of it) ignores limit and offset: every page would look
-- full, de-duplication would drop the repeats, and the read would never end.
function Pager:_page_done()
   if self.cur_count > self.cur_limit then
      return nil, errors.new("protocol", {
         message = string.format("a page asked for %d runs and the server sent %d",
            self.cur_limit, self.cur_count),
         url = self.client.url .. "/task_runs/filter",
      })
   end
   if self.cur_count < self.cur_limit then return true end
   self.offset = self.offset + self.cur_count
   self.seen_prev, self.seen_cur = self.seen_cur, {}
   self.cur_given = 0
   return false
end

function Pager:_size(wanted)
   local n = self.client:_page_size(self.query)
   if wanted < n then n = wanted end
   return n
end

function Pager:_close_ahead()
   local ahead = self.ahead
   for i = #ahead, 1, -1 do
      ahead[i].handle.req:close()
      ahead[i] = nil
   end
end

-- The request already sent for the current page, taken out of the window; nil
-- when there is none of that offset and size (then the window is dropped: its
-- pages are at offsets or sizes that are no longer wanted).
function Pager:_adopt(limit)
   local first = self.ahead[1]
   if first and first.offset == self.offset and first.limit == limit then
      table.remove(self.ahead, 1)
      return first.handle
   end
   self:_close_ahead()
end

-- Sends requests for the pages after the current one, without waiting for
-- their answers: up to concurrency - 1 of them inside the known total; and,
-- once the current page's status is in (`status_in`), at least one (the
-- prefetch), unless the current page is the last one inside the total. A
-- page that starts exactly at the total is inside it: it is asked for only
-- when the pages before it end there, and then it is the (empty) page that
-- tells the read is over, or the first of the runs created since the count.
-- A failure here is not reported: the page is simply asked for again (and
-- the failure then reported) when its turn comes.
function Pager:_fill_ahead(status_in)
   if not self.prefetch then return end
   local ahead = self.ahead
   local last = ahead[#ahead]
   local offset = last and (last.offset + last.limit) or (self.offset + self.cur_limit)
   -- runs still wanted after the current page (a retried page does not hand out again what it has)
   local after = self.remaining + self.cur_given - self.cur_limit
   for _, a in ipairs(ahead) do after = after - a.limit end
   local cl = self.client
   local past_total = self.offset > self.total_end
   while after > 0 do
      local n = #ahead
      local within = offset <= self.total_end
      if not ((within and n < self.concurrency - 1) or (status_in and n == 0 and (within or past_total))) then
         return
      end
      local limit = self:_size(after)
      local handle = cl:_start("POST", FILTER_PATH, cl.page_body(self.query.json, limit, offset), self.decode)
      if not handle then return end
      ahead[n + 1] = { handle = handle, offset = offset, limit = limit }
      offset = offset + limit
      after = after - limit
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

-- The first page is wanted whatever the count says: while the count is
-- asked for, it is on its way too (adopted from the window afterwards).
function Pager:_send_first()
   if #self.ahead > 0 then return end
   local cl = self.client
   local limit = self:_size(self.remaining)
   local body = cl.page_body(self.query.json, limit, self.offset)
   local handle = cl:_start("POST", FILTER_PATH, body, self.decode)
   if handle then self.ahead[1] = { handle = handle, offset = self.offset, limit = limit } end
end

-- The known total, from POST /task_runs/count (with retries).
function Pager:_count()
   local cl = self.client
   self:_send_first()
   local csrf = cl.csrf
   local n, err = cl:_value("POST", COUNT_PATH, count_body(self.query), {})
   if n ~= nil then n, err = count_value(n, cl.url .. COUNT_PATH) end
   if n == nil then return nil, err end
   -- the first page went out with the token the count was refused for
   if cl.csrf ~= csrf then self:_close_ahead() end
   self.need_count = false
   self.total_end = n
   return true
end

function Pager:_open_current()
   if self.need_count then
      local ok, err = self:_count()
      if not ok then return nil, err end
   end
   local cl = self.client
   local limit = self:_size(self.remaining)
   local started = self:_adopt(limit)
   if not started and self.concurrency > 1 then
      -- on the wire before the pages after it
      started = cl:_start("POST", FILTER_PATH, cl.page_body(self.query.json, limit, self.offset), self.decode)
   end
   self.cur_limit = limit
   if started then self:_fill_ahead(false) end
   local csrf = cl.csrf
   local req, err, attempt, used = cl:_open_page(self.query, self.offset, limit, self.decode, 1, started)
   if not req then return nil, err end
   if attempt > 1 or used ~= limit or cl.csrf ~= csrf then self:_close_ahead() end
   self.cur, self.cur_limit, self.cur_count, self.attempt = req, used, 0, attempt
   self:_fill_ahead(true)
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
   -- a window was sent while the server was failing: asked for again after the wait (the one
   -- page prefetched with concurrency = 1 is kept, as before the option existed)
   if self.concurrency > 1 then self:_close_ahead() end
   policy:wait(self.attempt, nil)
   local req, oerr, attempt, used = self.client:_open_page(self.query, self.offset, self.cur_limit,
      self.decode, self.attempt + 1)
   if not req then return nil, oerr end
   if used ~= self.cur_limit then self:_close_ahead() end
   self.cur, self.cur_limit, self.cur_count, self.attempt = req, used, 0, attempt
   self:_fill_ahead(true)
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
         local last, perr = self:_page_done()
         if perr then return self:_fail(self.client:_scrub(perr)) end
         if last then
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

--- The handle `client:start(q)` returns: the read of `query`, driven by `h:poll(timeout_ms, max_runs)`.
function pager.start(cl, query, opts)
   local p = pager.new(cl, query, opts)
   p.state = "idle"
   p.attempt = 1
   return setmetatable(p, Poller)
end

for _, name in ipairs{ "close", "_accept", "_page_done", "_size", "_close_ahead", "_adopt", "_fill_ahead",
   "_send_first" } do
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
   self.counting = nil
   -- sent while the server was failing: asked for again when the retry is sent
   self:_close_ahead()
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
   if self.need_count then return self:_send_count() end
   local limit = self:_size(self.remaining)
   local h = self:_adopt(limit)
   if not h then
      local err
      h, err = cl:_start("POST", FILTER_PATH, cl.page_body(self.query.json, limit, self.offset), self.decode)
      if not h then return self:_failed(err) end
   end
   self.h = h
   self.cur_limit, self.cur_count = limit, 0
   self:_fill_ahead(false)
   self.state = "head"
end

-- The count that bounds the window (concurrency > 1, no limit): a request like any other.
function Poller:_send_count()
   local h, err = self.client:_start("POST", COUNT_PATH, count_body(self.query), {})
   if not h then return self:_failed(err) end
   self.h = h
   self.counting = true
   self.state = "head"
   self:_send_first()
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
   if max and not self.counting and max >= 1 and max < self.cur_limit and not self.limit_retried then
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
         if self.counting then
            self.state = "count_body"
         else
            self.state = "body"
            self:_fill_ahead(true)
         end
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
   elseif state == "count_body" then
      local list, done = self.h.req:poll(wait_ms)
      if list == nil then return self:_failed(done) or true end
      if list[1] == nil and not done then return true end
      local url = self.h.url
      self.h.req:close()
      self.h, self.counting = nil, nil
      local n, err = count_value(list[1], url)
      if n == nil then return self:_fail(err) or true end
      self.need_count, self.total_end = false, n
      self.attempt, self.csrf_retried = 1, nil
      self.state = "idle"
   elseif state == "body" then
      local budget = self.max_runs and self.max_runs - #out
      if budget and budget <= 0 then return true end
      local list, done = self.h.req:poll(wait_ms, budget)
      if list == nil then return self:_failed(done) or true end
      if self:_take(list, out) then return true end
      if not done then return true end
      self.h.req:close()
      self.h = nil
      local last, perr = self:_page_done()
      if perr then
         self:_fail(cl:_scrub(perr))
         return true
      end
      if last then
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
--- `timeout_ms` (default 0: not at all) for something to arrive, and hands
--- out at most `max_runs` runs (default: all that are ready), so a frame
--- loop can bound the work of one call when a whole page arrives at once.
function Poller:poll(timeout_ms, max_runs)
   if max_runs ~= nil
      and (type(max_runs) ~= "number" or max_runs < 1 or max_runs ~= math.floor(max_runs)) then
      client_mod.misuse("poll: max_runs must be a whole number >= 1, got " .. tostring(max_runs), 2)
   end
   self.max_runs = max_runs
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
