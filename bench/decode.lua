-- Decoder benchmark: prefect.core against lua-cjson and against the floor, in the same run.
--   lua5.4 bench/decode.lua [reps]      luajit bench/decode.lua [reps]
-- (LUA_PATH must reach lua/ and LUA_CPATH the build of prefect.core, as `make bench` sets them;
-- the floor, bench/floor.c, is built here into build/<interpreter>/bench/.)
-- Prints MB/s, runs/s, CPU per run, the ratio to cjson and the multiple of the floor (medians of
-- the repetitions; the readers take turns, one batch each, and each batch's time includes a
-- full garbage collection) for a generated page of 200 Prefect 3 task runs, the recorded 2.19.9
-- task runs as one page, fields of 4 keys, exclude of 3 branches, feeding in 16 KB slices, and the
-- memory held while streaming 10,000 runs. The floor builds the same Lua values as core.decode
-- from a pre-parsed copy, tables pre-sized and recurring strings made beforehand: the cost no JSON
-- reader avoids.
local core = require("prefect.core")
local cjson = require("cjson")
local dataset = require("prefect.testing.dataset")

local interpreter = jit and jit.version or _VERSION

-- Builds bench/floor.c for this interpreter and loads it.
local function load_floor()
  local flavour = jit and "luajit" or "lua5.4"
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/bench/[^/]*$") or "."
  local out = dir .. "/build/" .. flavour .. "/bench"
  local cmd = table.concat({ "mkdir -p", out, "&& cc -O2 -std=c99 -Wall -Wextra -fPIC -shared",
    "$(pkg-config --cflags " .. flavour .. ")", "-o", out .. "/floor.so", dir .. "/bench/floor.c" }, " ")
  local ok = os.execute(cmd)
  assert(ok == true or ok == 0, "could not build bench/floor.c: " .. cmd)
  return assert(package.loadlib(out .. "/floor.so", "luaopen_floor"))()
end
local floor = load_floor()

local reps = tonumber(arg and arg[1]) or 9

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local generated_page = dataset.page_text

-- The recorded task_runs array, byte for byte as in the fixture file.
local function recorded_page()
  local s = read("spec/fixtures/dataset-2.19.9.json")
  local start = s:find("[", select(2, s:find('"task_runs":', 1, true)), true)
  local depth, i, in_string = 0, start, false
  while true do
    local c = s:sub(i, i)
    if in_string then
      if c == "\\" then
        i = i + 1
      elseif c == '"' then
        in_string = false
      end
    elseif c == '"' then
      in_string = true
    elseif c == "[" or c == "{" then
      depth = depth + 1
    elseif c == "]" or c == "}" then
      depth = depth - 1
      if depth == 0 then
        return s:sub(start, i)
      end
    end
    i = i + 1
  end
end

-- Enough calls of f for a batch of about BATCH seconds of CPU.
local BATCH = 0.2
local function calls_for(f)
  local t0 = os.clock()
  f()
  local once = os.clock() - t0
  return math.max(1, math.ceil(BATCH / math.max(once, 1e-6)))
end

-- The collector's work is part of what a reader costs: each timed batch ends with a full
-- collection, inside the timer, of everything the batch made. (The collection before the timer
-- finds nothing left but what the previous batch's last call still held.)
local function seconds_per_call(f, calls)
  collectgarbage()
  local t0 = os.clock()
  for _ = 1, calls do
    f()
  end
  collectgarbage()
  return (os.clock() - t0) / calls
end

local function median(list)
  local t = { table.unpack and table.unpack(list) or unpack(list) } -- luacheck: ignore 143
  table.sort(t)
  return t[math.floor(#t / 2) + 1]
end

-- Times every reader of a list in turn, one batch each per repetition and the order rotated
-- from one repetition to the next, so that a busy machine slows them all alike. Returns, per
-- reader (by label), the median CPU seconds per call and the medians of the per-repetition
-- ratios against the readers labelled "cjson" and "floor".
local function interleaved(readers)
  for _ = 1, 5 do -- warm up: caches, the heap's size, LuaJIT's traces
    for _, r in ipairs(readers) do
      r[2]()
    end
  end
  local calls, times = {}, {}
  for i, r in ipairs(readers) do
    calls[i], times[i] = calls_for(r[2]), {}
  end
  for rep = 1, reps do
    for k = 0, #readers - 1 do
      local i = (rep + k - 1) % #readers + 1
      times[i][rep] = seconds_per_call(readers[i][2], calls[i])
    end
  end
  local index = {}
  for i, r in ipairs(readers) do
    index[r[1]] = i
  end
  local result = {}
  for i, r in ipairs(readers) do
    local vs = {}
    for _, base in ipairs({ "cjson", "floor" }) do
      local b = index[base]
      if b then
        local ratios = {}
        for rep = 1, reps do
          ratios[rep] = times[b][rep] / times[i][rep]
        end
        vs[base] = median(ratios)
      end
    end
    result[r[1]] = { seconds = median(times[i]),
      vs_cjson = vs.cjson, vs_floor = vs.floor }
  end
  return result
end

-- One line per reader: throughput, CPU per run, how many times faster than cjson, and how many
-- times the floor's time it takes.
local function report(readers, result, bytes, runs)
  for _, r in ipairs(readers) do
    local m = result[r[1]]
    print(string.format("%-34s %7.1f MB/s %8.0f runs/s %6.2f us/run  x%-5.2f vs cjson  %5.2fx floor",
      r[3] or r[1], bytes / m.seconds / 1e6, runs / m.seconds, m.seconds / runs * 1e6, m.vs_cjson,
      1 / m.vs_floor))
  end
end

local function rss_kb()
  local f = io.open("/proc/self/statm")
  if not f then
    return nil
  end
  local pages = f:read("*n")
  f:close()
  return pages and pages * 4
end

print(string.format("decoder benchmark under %s, median of %d batches of about %.1f s CPU each,"
  .. " a full collection inside each batch's time", interpreter, reps, BATCH))

local page = generated_page(200, 1)
local recorded = recorded_page()
local recorded_runs = #cjson.decode(recorded)
local fields = { fields = { "id", "name", "state_type", "end_time" } }
-- the client passes Prefect's timestamp fields; the decoder knows none of its own
local epoch = { timestamps = "epoch", timestamp_fields = require("prefect.options").TIMESTAMP_FIELDS }
-- everything but the heavy, rarely read branches (issue #14)
local exclude = { exclude = { "state.state_details", "task_inputs", "empirical_policy" } }

-- sanity: both decoders read the pages the same way (spec/decode_spec.lua checks this in depth)
assert(#core.decode(page) == 200 and #core.decode(recorded) == recorded_runs)

-- The floor builds what core.decode builds, from a pre-parsed copy (bench/floor.c).
local page_program, recorded_program = floor.compile(core.decode(page)), floor.compile(core.decode(recorded))

print(string.format("generated page: 200 runs, %d bytes (%.0f B/run)", #page, #page / 200))
-- The slices are cut beforehand: a transport hands its chunks over as they arrive.
local slices = {}
for i = 1, #page, 16384 do
  slices[#slices + 1] = page:sub(i, i + 16383)
end
local function feed_slices()
  local d = core.decoder()
  for k = 1, #slices do
    d:feed(slices[k])
    while d:next() ~= nil do
    end
  end
  d:finish()
end
local generated_readers = {
  { "floor", function() floor.build(page_program) end, "floor (same values, no JSON)" },
  { "cjson", function() cjson.decode(page) end, "cjson.decode" },
  { "core", function() core.decode(page) end, "core.decode" },
  { "fields", function() core.decode(page, fields) end, "core.decode, fields of 4" },
  { "exclude", function() core.decode(page, exclude) end, "core.decode, exclude 3 branches" },
  { "epoch", function() core.decode(page, epoch) end, "core.decode, timestamps = epoch" },
  { "slices", feed_slices, "decoder:feed 16 KB slices + next" },
}
local generated = interleaved(generated_readers)
report(generated_readers, generated, #page, 200)
print(string.format("%-34s %+7.1f %% time vs core.decode (one shot)", "  feed cost",
  (generated.slices.seconds / generated.core.seconds - 1) * 100))

print(string.format("recorded page (2.19.9 fixture): %d runs, %d bytes (%.0f B/run)", recorded_runs,
  #recorded, #recorded / recorded_runs))
local recorded_readers = {
  { "floor", function() floor.build(recorded_program) end, "floor (same values, no JSON)" },
  { "cjson", function() cjson.decode(recorded) end, "cjson.decode" },
  { "core", function() core.decode(recorded) end, "core.decode" },
  { "fields", function() core.decode(recorded, fields) end, "core.decode, fields of 4" },
  { "exclude", function() core.decode(recorded, exclude) end, "core.decode, exclude 3 branches" },
}
report(recorded_readers, interleaved(recorded_readers), #recorded, recorded_runs)

-- Streaming 10,000 runs in 16 KB slices, dropping each: what stays held must not grow.
local body = generated_page(500, 2):sub(2, -2)
local d = core.decoder()
d:feed("[")
local count, heap0, rss0 = 0, nil, nil
local t0 = os.clock()
for rep = 1, 20 do
  local s = (rep > 1 and "," or "") .. body
  for i = 1, #s, 16384 do
    d:feed(s:sub(i, i + 16383))
    while d:next() ~= nil do
      count = count + 1
    end
  end
  if rep == 2 then
    collectgarbage()
    collectgarbage()
    heap0, rss0 = collectgarbage("count"), rss_kb()
  end
end
d:feed("]")
assert(d:finish() and d:done() and count == 10000)
local elapsed = os.clock() - t0
collectgarbage()
collectgarbage()
local heap1, rss1 = collectgarbage("count"), rss_kb()
print(string.format("streamed %d runs in 16 KB slices: %.0f runs/s; growth after the first 1,000: "
  .. "Lua heap %+.0f KB, process %s; decoder holds %s KB", count, count / elapsed, heap1 - heap0,
  rss0 and string.format("%+d KB", rss1 - rss0) or "n/a", tostring(d):match("(%d+) KB held")))
