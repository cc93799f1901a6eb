--- `include = {"flow_run", "flow"}`: each task run of a read gets its flow
-- run (`run.flow_run`) and that flow run's flow (`run.flow`).
--
-- For each page the pager hands this module the runs it holds back; a job
-- then asks `POST /flow_runs/filter` for the distinct flow-run ids not yet
-- known (`flow_runs.id.any_`, at most one server page of ids per request: a
-- page with more distinct ids than the server's page maximum takes several
-- requests, sent together), then `POST /flows/filter` for the flows of those
-- flow runs (`flows.id.any_`), and sets the fields. What came back is kept
-- for the rest of the read, so a flow run or a flow is asked for once per
-- read; an id the server did not return (deleted meanwhile) is remembered as
-- missing and its runs get no `flow_run` (nor `flow`). So that a read of
-- millions of runs keeps its memory bounded, each cache holds two
-- generations of at most CACHE_LIMIT entries: one not met for that long is
-- forgotten, and asked for again if it comes back.
--
-- The job is stepped like an exchange (prefect.exchange), whose requests it
-- makes through `post` (the client's protocol: auth, CSRF, retries and
-- scrubbing apply): `job:step(wait_ms)` returns "done", or "wait", due,
-- exchange (a retry is due), or "busy" (only when wait_ms is a number), or
-- nil, err. It knows the two paths and their bodies, nothing of paging.
-- @module prefect.include

local errors = require("prefect.errors")

local include = {}

include.FLOW_RUNS_PATH = "/flow_runs/filter"
include.FLOWS_PATH = "/flows/filter"
--- The most ids one request asks for: Prefect's default page maximum (a
-- server that names a lower one in a 422 gets fewer, and the rest in
-- another request).
include.MAX_IDS = 200
--- Flow runs (and flows) a read keeps per cache generation; up to twice this
-- many are held.
include.CACHE_LIMIT = 10000

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

--- The include option (already checked by prefect.options) as
-- `{ flow_run = fields | true | nil, flow = fields | true | nil }`, or nil
-- when it asks for nothing.
function include.normalize(v)
   if v == nil then return nil end
   local out = {}
   for k, x in pairs(v) do
      if type(k) == "number" then
         if out[x] == nil then out[x] = true end
      else
         out[k] = x
      end
   end
   if next(out) == nil then return nil end
   return out
end

-- `fields` (a list, or true for every field) with the names in `need` added.
local function fields_with(fields, need)
   if fields == true then return nil end
   local out, has = {}, {}
   for _, f in ipairs(need) do
      out[#out + 1] = f
      has[f] = true
   end
   for _, f in ipairs(fields) do
      if not has[f] then out[#out + 1] = f end
   end
   return out
end

-- The decoder options of a read with other fields.
local function decoder(base, fields)
   local d = {}
   for k, v in pairs(base) do d[k] = v end
   d.fields = fields
   return d
end

---------------------------------------------------------------------------
-- A cache of two generations: entries go into `young`; when it holds
-- `limit`, it becomes `old` and the previous `old` is dropped. A hit in `old`
-- moves the entry back into `young`, so what keeps coming back stays.

local function new_cache(limit)
   return { young = {}, old = {}, n = 0, limit = limit }
end

local function cache_put(c, id, v)
   if c.young[id] == nil then
      if c.n >= c.limit then c.old, c.young, c.n = c.young, {}, 0 end
      c.n = c.n + 1
   end
   c.young[id] = v
end

-- The entry for `id`: an object, false (asked for, not returned) or nil (unknown).
local function cache_get(c, id)
   local v = c.young[id]
   if v ~= nil then return v end
   v = c.old[id]
   if v ~= nil then
      c.old[id] = nil
      cache_put(c, id, v)
   end
   return v
end

---------------------------------------------------------------------------

local Includer = {}
Includer.__index = Includer

--- The includer of one read (its caches live as long as the read).
-- @tparam table cfg `spec` (from normalize), `decode` (the read's decoder
-- options), `post(path, body, decode, limit, body_for)` (a new exchange),
-- `max_ids()` (the most ids one request may carry)
function include.new(cfg)
   local spec = cfg.spec
   return setmetatable({
      post = cfg.post,
      max_ids = cfg.max_ids,
      want_run = spec.flow_run ~= nil,
      want_flow = spec.flow ~= nil,
      -- id and flow_id are what the joins need, whatever was asked for
      run_decode = decoder(cfg.decode, fields_with(spec.flow_run or {}, { "id", "flow_id" })),
      flow_decode = decoder(cfg.decode, fields_with(spec.flow or {}, { "id" })),
      flow_runs = new_cache(include.CACHE_LIMIT), -- id -> flow run, or false: asked for, not returned
      flows = new_cache(include.CACHE_LIMIT),     -- id -> flow, or false
   }, Includer)
end

local Job = {}
Job.__index = Job

--- A job that fills in `run.flow_run` / `run.flow` for `runs` (an array).
function Includer:attach(runs)
   -- what this job found or fetched, by id, which no cache eviction takes away before it is used
   return setmetatable({ inc = self, runs = runs, stage = "flow_runs", got_runs = {}, got_flows = {} }, Job)
end

-- The JSON body asking for `ids` (UUID strings, which need no escaping).
local function ids_body(group, ids, limit)
   return string.format('{"%s":{"id":{"any_":["%s"]}},"limit":%d}', group, table.concat(ids, '","'), limit)
end

-- Sends one request for `ids`; a 422 naming a lower page maximum makes it
-- ask for its first ids only, and the rest go in a request of their own.
function Job:_send(ids)
   local r = { ids = ids }
   local group = self.stage
   local path = group == "flow_runs" and include.FLOW_RUNS_PATH or include.FLOWS_PATH
   local decode = group == "flow_runs" and self.inc.run_decode or self.inc.flow_decode
   r.ex = self.inc.post(path, ids_body(group, ids, #ids), decode, #ids, function(n)
      local rest = {}
      for i = n + 1, #ids do
         rest[#rest + 1] = ids[i]
         ids[i] = nil
      end
      if #rest > 0 then self:_send(rest) end
      return ids_body(group, ids, n)
   end)
   r.ex:launch()
   self.pending[#self.pending + 1] = r
end

-- Requests for the ids in `wanted` (a set of ids not in `cache`), in chunks of max_ids; what
-- comes back goes into `cache` and `got`.
function Job:_ask(wanted, cache, got)
   local ids = {}
   for id in pairs(wanted) do ids[#ids + 1] = id end
   table.sort(ids)
   self.pending, self.cache, self.got = {}, cache, got
   local max = self.inc.max_ids()
   for first = 1, #ids, max do
      local chunk = {}
      for i = first, math.min(#ids, first + max - 1) do chunk[#chunk + 1] = ids[i] end
      self:_send(chunk)
   end
end

-- Takes one decoded object into the cache; nil, err for a wrong answer.
function Job:_store(r, v)
   r.count = r.count + 1
   if r.count > r.ex.limit then
      return nil, errors.new("protocol", {
         message = string.format("a request for %d ids brought more objects", r.ex.limit), url = r.ex.url,
      })
   end
   if type(v) ~= "table" or type(v.id) ~= "string" then
      return nil, errors.new("protocol", {
         message = "expected an object with a string \"id\", got " .. type(v), url = r.ex.url,
      })
   end
   cache_put(self.cache, v.id, v)
   self.got[v.id] = v
   return true
end

-- Reads the body of request `r` as far as it has arrived: true when it is
-- complete, false when more is to come, or nil, err.
function Job:_read(r, wait_ms)
   if wait_ms == nil then
      while true do
         local v, err = r.req:next()
         if v == nil then
            if err ~= nil then return nil, err, true end
            return true
         end
         local ok, serr = self:_store(r, v)
         if not ok then return nil, serr end
      end
   end
   local list, done = r.req:poll(wait_ms)
   if list == nil then return nil, done, true end
   for _, v in ipairs(list) do
      local ok, serr = self:_store(r, v)
      if not ok then return nil, serr end
   end
   return done
end

-- Drives the pending requests in order: "done" once all are in, else as step.
function Job:_drive(wait_ms)
   local pending = self.pending
   while pending[1] do
      local r = pending[1]
      if not r.req then
         local what, v = r.ex:step(wait_ms)
         if what ~= "ready" then return what, v, r.ex end
         r.req, r.count = v, 0
      end
      local complete, err, retryable = self:_read(r, wait_ms)
      if complete == nil then
         r.req = nil
         if not retryable then return r.ex:fail(err) end
         -- a body that failed part-way: asked for again (what it brought is kept)
         local what, due = r.ex:retry(err)
         if what == nil then return nil, due end
         return what, due, r.ex
      end
      if not complete then return "busy" end
      r.ex:close()
      -- asked for, not returned: deleted since the task run was read
      for _, id in ipairs(r.ids) do
         if self.got[id] == nil then
            self.got[id] = false
            cache_put(self.cache, id, false)
         end
      end
      table.remove(pending, 1)
   end
   return "done"
end

-- Looks `id` up in what this job has (`got`), then in `cache`; what is found
-- goes into `got`, so that the job's later stages find it whatever the cache
-- forgets meanwhile. nil: unknown; false: not returned.
local function lookup(id, got, cache)
   local v = got[id]
   if v == nil then
      v = cache_get(cache, id)
      if v ~= nil then got[id] = v end
   end
   return v
end

-- The flow run of `run` (nil or false when there is none).
function Job:_flow_run(run)
   local id = type(run) == "table" and run.flow_run_id
   return type(id) == "string" and self.got_runs[id]
end

-- The ids `id_of(run)` gives for the runs that neither `got` nor `cache` knows, as a set. Only a
-- new id is checked to be a UUID (ids are sent in the body unescaped), so a page of known ids
-- costs a lookup a run.
function Job:_new_ids(id_of, got, cache)
   local set = {}
   for _, run in ipairs(self.runs) do
      local id = id_of(run)
      if type(id) == "string" and not set[id] and lookup(id, got, cache) == nil and id:match(UUID) then
         set[id] = true
      end
   end
   return set
end

-- The ids of the runs' flow runs not known yet.
function Job:_new_flow_run_ids()
   return self:_new_ids(function(run) return type(run) == "table" and run.flow_run_id end,
      self.got_runs, self.inc.flow_runs)
end

-- The ids of the flows of the runs' flow runs not known yet.
function Job:_new_flow_ids()
   return self:_new_ids(function(run)
      local fr = self:_flow_run(run)
      return fr and fr.flow_id
   end, self.got_flows, self.inc.flows)
end

function Job:_attach()
   local inc = self.inc
   for _, run in ipairs(self.runs) do
      local fr = self:_flow_run(run)
      if fr then
         if inc.want_run then run.flow_run = fr end
         if inc.want_flow then
            local flow = type(fr.flow_id) == "string" and self.got_flows[fr.flow_id]
            if flow then run.flow = flow end
         end
      end
   end
end

--- Goes as far as it can, waiting at most `wait_ms` for the network (nil:
--- as long as it takes): "done" | "wait", due, exchange | "busy" | nil, err.
function Job:step(wait_ms)
   while true do
      if self.stage == "done" then return "done" end
      if self.stage == "failed" then return nil, self.err end
      if not self.pending then
         if self.stage == "flow_runs" then
            self:_ask(self:_new_flow_run_ids(), self.inc.flow_runs, self.got_runs)
         else
            self:_ask(self:_new_flow_ids(), self.inc.flows, self.got_flows)
         end
      end
      local what, v, ex = self:_drive(wait_ms)
      if what == nil then
         self:close()
         self.stage, self.err = "failed", v
         return nil, v
      end
      if what ~= "done" then return what, v, ex end
      self.pending = nil
      if self.stage == "flow_runs" and self.inc.want_flow then
         self.stage = "flows"
      else
         self:_attach()
         self.stage = "done"
      end
   end
end

--- Cancels the requests in flight.
function Job:close()
   for _, r in ipairs(self.pending or {}) do r.ex:close() end
   self.pending = nil
end

--- Steps `job` to the end, sleeping through retry waits: true, or nil, err.
function include.wait(job, clock, sleep)
   while true do
      local what, v, ex = job:step(nil)
      if what == "done" then return true end
      if what == nil then return nil, v end
      local left = v - clock()
      if left > 0 then sleep(left) end
      ex:waited()
   end
end

include.Includer = Includer
include.Job = Job
return include
