--- The filter DSL: a plain Lua query table -> the body of `POST /task_runs/filter`.
--
-- A query holds friendly keys (see docs/filter.md), Prefect's own groups
-- (`task_runs`, `flow_runs`, `flows`, `deployments`), `sort`, `any_of`, and the
-- paging keys `limit`, `page_size`, `offset`. Only what the caller set is sent.
-- Friendly and raw keys may be mixed: their criteria are ANDed, and a criterion
-- set twice is an error, never a silent override.
--
-- Contract for callers (the client):
--
--    local body, paging = filter.compile(q [, opts])
--
-- * `body`: a fresh table with only `task_runs`, `flow_runs`, `flows`,
--   `deployments` and `sort` (each only when set); never `limit` or `offset`.
--   Lists in it carry `filter.ARRAY_MT`; `filter.encode(body)` gives its JSON
--   (sorted keys; an empty list as `[]`, which lua-cjson 2.1.0 cannot do).
--   For `/task_runs/count` send the same body (Prefect ignores `sort` there).
-- * `paging`: `{ limit = n | nil, page_size = n, offset = n }`:
--   `limit` is the total number of runs wanted across all pages (nil: all;
--   0: none, so send nothing); `page_size` (1..200, default 200) is the
--   `limit` to send per request; `offset` (default 0) is where the first page
--   starts. The client sends `limit = min(page_size, remaining)` and
--   `offset = paging.offset + runs read so far` on each request.
-- * `opts.server`: a Prefect version ("2.19.9"); keys that server does not
--   know raise instead of becoming a 422. Default: no version restriction.
-- * `opts.level`: which stack level the error names, as for `error`: 1 (the
--   default) is the caller of compile, 2 its caller, and so on.
-- * Misuse raises before any request, with a message naming the path as the
--   caller wrote it, what is accepted, and the nearest key for a typo. The
--   error is a prefect.errors object of kind "invalid" (its `message` is the
--   text, `where` the caller's "file:line").
-- * Pure: the same input gives an equal body, the input is not changed, and
--   nothing is shared between calls.
-- @module prefect.filter

local schema = require("prefect.filter.schema")
local values = require("prefect.filter.values")
local fail = require("prefect.filter.fail")
local raw = require("prefect.filter.raw")
local friendly = require("prefect.filter.friendly")
local merge = require("prefect.filter.merge")
local suggest = require("prefect.filter.suggest")

local errors = require("prefect.errors")

local filter = {}

filter.STATE_TYPES = schema.STATE_TYPES
filter.SORTS = schema.SORTS
filter.ARRAY_MT = values.ARRAY_MT
filter.MAX_PAGE_SIZE = 200
filter.schema = schema

local PAGING = { limit = true, page_size = true, offset = true }
local NESTED = { flow_run = "flow_run", flow = "flow", deployment = "deployment" }

local TOP_KEYS = friendly.field_names("task_run")
for _, k in ipairs({ "flow_run", "flow", "deployment", "any_of", "sort", "limit", "page_size", "offset" }) do
   TOP_KEYS[#TOP_KEYS + 1] = k
end
for _, g in ipairs(schema.GROUPS) do TOP_KEYS[#TOP_KEYS + 1] = g end
table.sort(TOP_KEYS)

local function check_table(v, path, what)
   if type(v) ~= "table" or values.is_null(v) then
      fail.raise(path .. ": expected " .. what .. ", got " .. fail.kind(v, values.null))
   end
end

local function whole_at_least(v, path, min, what)
   if not values.is_whole(v) or v < min then
      fail.raise(path .. ": expected " .. what .. ", got " .. fail.show(v))
   end
   return math.floor(v)
end

-- A nested friendly scope (flow_run = {...}, flow = {...}, deployment = {...}) as a piece of the body.
local function compile_scope(scope, v, path, ctx)
   check_table(v, path, "a table of " .. scope .. " keys")
   if next(v) ~= nil and values.is_list(v) then
      fail.raise(path .. ": expected a table of " .. scope .. " keys ("
         .. fail.list(friendly.field_names(scope)) .. "), got a list")
   end
   local group = friendly.SCOPES[scope].group
   local piece, origins = { [group] = {} }, {}
   for _, k in ipairs(raw.sorted_keys(v, path)) do
      local p = path .. "." .. k
      local sub = friendly.field(scope, k, v[k], p)
      if not sub then raw.unknown_key(k, path, friendly.field_names(scope), friendly.ALIASES) end
      raw.check_versions(sub[group], schema.GROUP_OBJECT[group], group, ctx, p)
      merge.and_into(piece, sub, nil, origins, p)
   end
   return piece
end

local compile_query

local function compile_any_of(v, path, ctx)
   check_table(v, path, "a list of queries")
   if #v == 0 or not values.is_list(v) then
      fail.raise(path .. ": expected a non-empty list of queries, as in any_of = {{state = \"FAILED\"},"
         .. " {tags = {\"critical\"}}}")
   end
   local bodies, labels = {}, {}
   for i = 1, #v do
      labels[i] = path .. "[" .. i .. "]"
      bodies[i] = compile_query(v[i], ctx, labels[i])
   end
   return merge.any_of(bodies, labels)
end

-- A query (the whole one when `where` is nil, else a branch of any_of) -> body[, paging].
function compile_query(q, ctx, where)
   local top = where == nil
   local name = where or "query"
   check_table(q, name, "a query table")
   local body, origins = {}, {}
   local paging = top and { page_size = filter.MAX_PAGE_SIZE, offset = 0 } or nil
   for k in pairs(q) do
      if type(k) ~= "string" then
         fail.raise(name .. ": unexpected key " .. fail.show(k) .. "; a query is a table of named keys"
            .. " (to OR queries, use prefect.filter.any_of{q1, q2, ...})")
      end
   end
   for _, k in ipairs(raw.sorted_keys(q, name)) do
      local v = q[k]
      local p = top and k or (where .. "." .. k)
      local piece
      if PAGING[k] or k == "sort" then
         if not top then
            fail.raise(p .. ": " .. k .. " applies to the whole query; set it outside any_of")
         end
         if k == "sort" then
            local s = values.sort(v)
            if not s then
               local msg = "sort: " .. fail.show(v) .. " is not a sort (" .. fail.list(schema.SORTS) .. ")"
               local near = type(v) == "string" and suggest.nearest(v:upper(), schema.SORTS)
               if near then msg = msg .. "; did you mean " .. fail.show(near) .. "?" end
               fail.raise(msg)
            end
            local since = schema.SORT_SINCE[s]
            if since and ctx.server then
               local ok, why = schema.available(since, ctx.server)
               if not ok then
                  fail.raise("sort: " .. s .. " " .. why .. "; the target server is " .. ctx.server_text)
               end
            end
            body.sort = s
         elseif k == "limit" then
            paging.limit = whole_at_least(v, p, 0, "a whole number >= 0 (the total number of runs wanted)")
         elseif k == "page_size" then
            local n = whole_at_least(v, p, 1, "a whole number from 1 to " .. filter.MAX_PAGE_SIZE)
            if n > filter.MAX_PAGE_SIZE then
               fail.raise(p .. ": " .. n .. " is more than Prefect's maximum page size "
                  .. filter.MAX_PAGE_SIZE .. " (use limit for the total)")
            end
            paging.page_size = n
         else
            paging.offset = whole_at_least(v, p, 0, "a whole number >= 0")
         end
      elseif schema.GROUP_OBJECT[k] then
         piece = { [k] = raw.copy_object(v, schema.GROUP_OBJECT[k], p, ctx) }
      elseif k == "any_of" then
         piece = compile_any_of(v, p, ctx)
      elseif NESTED[k] then
         piece = compile_scope(NESTED[k], v, p, ctx)
      else
         piece = friendly.field("task_run", k, v, p)
         if not piece then raw.unknown_key(k, name, TOP_KEYS, friendly.ALIASES) end
         raw.check_versions(piece.task_runs, "TaskRunFilter", "task_runs", ctx, p)
      end
      if piece then merge.and_into(body, piece, nil, origins, p) end
   end
   return body, paging
end

local V3 = schema.parse_version("3.0.0")

-- Reasons a whole query can match nothing, or not what it says, although each part is valid.
local function check_contradictions(body, ctx)
   local tr = body.task_runs
   local fr = type(tr) == "table" and tr.flow_run_id
   if ctx.server and schema.compare_versions(ctx.server, V3) < 0 and type(fr) == "table"
      and fr.is_null_ ~= true and not values.is_null(fr.is_null_) and fr.any_ == nil then
      fail.raise("task_runs.flow_run_id without any_ or is_null_ = true (as from background = false) means"
         .. " 'has a flow run' only from Prefect 3.0.0; the target server is " .. ctx.server_text
         .. ", where it filters nothing (use flow_run = {} to keep only task runs with a flow run)")
   end
   if type(fr) == "table" and fr.is_null_ == true and tr.operator ~= "or_" and fr.operator ~= "or_" then
      for _, g in ipairs({ "flow_runs", "flows", "deployments" }) do
         if body[g] ~= nil and not values.is_null(body[g]) then
            fail.raise("task_runs.flow_run_id.is_null_ = true (background) asks for task runs without a flow"
               .. " run, but any " .. g .. " filter keeps only task runs that have one; nothing can match")
         end
      end
   end
end

local OPTION_KEYS = { "level", "server" }

local function read_options(opts)
   local ctx = {}
   if opts == nil then return ctx end
   check_table(opts, "options", "a table")
   for _, k in ipairs(raw.sorted_keys(opts, "options")) do
      if k ~= "level" and k ~= "server" then raw.unknown_key(k, "options", OPTION_KEYS) end
   end
   if opts.level ~= nil and not (values.is_whole(opts.level) and opts.level >= 1) then
      fail.raise("options.level: expected a whole number >= 1, got " .. fail.show(opts.level))
   end
   if opts.server ~= nil then
      local parsed = schema.parse_version(opts.server)
      if not parsed then
         fail.raise("options.server: " .. fail.show(opts.server)
            .. " is not a Prefect version (e.g. \"2.19.9\")")
      end
      ctx.server, ctx.server_text = parsed, opts.server
   end
   return ctx
end

-- Keys reached through __index are invisible to pairs(), so a query built on
-- one would compile to less than it says (at worst to no filter at all).
local function check_plain(v, path, seen)
   if type(v) ~= "table" or seen[v] then return end
   seen[v] = true
   local mt = getmetatable(v)
   if mt ~= nil and mt ~= values.ARRAY_MT and (type(mt) ~= "table" or rawget(mt, "__index") ~= nil) then
      fail.raise(path .. ": a table with an __index metatable; its inherited keys would not be read,"
         .. " so pass a plain table")
   end
   for k, x in next, v do
      check_plain(x, type(k) == "string" and (path .. "." .. k) or (path .. "[" .. tostring(k) .. "]"), seen)
   end
end

-- Every string the body sends must be UTF-8 (Prefect decodes the body as JSON text).
local function check_utf8(v, path)
   if type(v) == "string" then
      local at = values.utf8_error(v)
      if at then
         fail.raise(("%s: the string is not valid UTF-8 (byte %d of %d is 0x%02X)"):format(
            path, at, #v, v:byte(at)))
      end
   elseif type(v) == "table" then
      for k, x in pairs(v) do
         check_utf8(x, type(k) == "number" and (path .. "[" .. k .. "]") or (path .. "." .. k))
      end
   end
end

local function compile_top(q, opts)
   local ctx = read_options(opts)
   check_plain(q, "query", {})
   local body, paging = compile_query(q, ctx, nil)
   merge.check(body, ctx.server)
   check_contradictions(body, ctx)
   for k, v in pairs(body) do check_utf8(v, k) end
   return body, paging
end

--- Compile a query into the request body and the paging plan. See the module comment.
-- @tparam table q the query
-- @tparam[opt] table opts `server` (Prefect version string), `level` (error level, default 1)
-- @treturn table body
-- @treturn table paging `{limit = n|nil, page_size = n, offset = n}`
function filter.compile(q, opts)
   local ok, body, paging = pcall(compile_top, q, opts)
   if ok then return body, paging end
   local msg = fail.message_of(body)
   if msg == nil then error(body, 0) end
   local level = 1
   if type(opts) == "table" and values.is_whole(opts.level) and opts.level >= 1 then level = opts.level end
   local info = debug.getinfo(level + 1, "Sl")
   local where = info and info.currentline and info.currentline > 0
      and (info.short_src .. ":" .. info.currentline) or nil
   error(errors.new("invalid", { message = msg, where = where }), 0)
end

--- An OR of queries: `filter.any_of{ {state = "FAILED"}, {tags = {"critical"}} }`.
-- Returns the query `{any_of = list}`, which may take more keys (sort, limit...)
-- or sit inside another query. Each branch must come down to one criterion of
-- one Prefect object (Prefect has one operator per object; see docs/filter.md).
function filter.any_of(list)
   if type(list) ~= "table" then
      error("prefect.filter.any_of: expected a list of queries, got " .. fail.kind(list, values.null), 2)
   end
   return { any_of = list }
end

--- JSON text of a compiled body (sorted keys, empty lists as []).
filter.encode = require("prefect.filter.encode")

return filter
