-- Decoder benchmark: prefect.core against lua-cjson in the same run.
--   lua5.4 bench/decode.lua [reps]      luajit bench/decode.lua [reps]
-- (LUA_PATH must reach lua/ and LUA_CPATH the build of prefect.core, as `make bench` sets them.)
-- Prints MB/s, runs/s and the ratio to cjson (medians of the repetitions, each decoder timed in
-- alternation with cjson) for a generated page of
-- 200 Prefect 3 task runs, the recorded 2.19.9 task runs as one page, fields of 4 keys, feeding in
-- 16 KB slices, and the memory held while streaming 10,000 runs.
local core = require("prefect.core")
local cjson = require("cjson")
local dataset = require("prefect.testing.dataset")

local reps = tonumber(arg and arg[1]) or 21
local interpreter = jit and jit.version or _VERSION

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

-- Enough calls of f to take about 5 ms of CPU, so that os.clock can time them.
local function calls_for(f)
  local t0 = os.clock()
  f()
  local once = os.clock() - t0
  return once < 0.005 and math.ceil(0.005 / math.max(once, 1e-6)) or 1
end

local function seconds_per_call(f, calls)
  collectgarbage()
  local t0 = os.clock()
  for _ = 1, calls do
    f()
  end
  return (os.clock() - t0) / calls
end

local function median(t)
  table.sort(t)
  return t[math.floor(#t / 2) + 1]
end

-- Times base and test in alternation (so that a busy machine slows both alike): the medians of
-- their CPU seconds per call, and the median of the ratios base/test of each pair.
local function paired(base, test)
  for _ = 1, 5 do -- warm up: caches, the heap's size, LuaJIT's traces
    base()
    test()
  end
  local nb, nt = calls_for(base), calls_for(test)
  local tb, tt, ratio = {}, {}, {}
  for r = 1, reps do
    tb[r] = seconds_per_call(base, nb)
    tt[r] = seconds_per_call(test, nt)
    ratio[r] = tb[r] / tt[r]
  end
  return median(tb), median(tt), median(ratio)
end

local function row(label, bytes, runs, seconds, ratio, versus)
  print(string.format("%-34s %8.1f MB/s %10.0f runs/s %s", label, bytes / seconds / 1e6, runs / seconds,
    ratio and string.format("  x%.2f vs %s", ratio, versus or "cjson") or ""))
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

print(string.format("decoder benchmark under %s, median of %d", interpreter, reps))

local page = generated_page(200, 1)
local recorded = recorded_page()
local recorded_runs = #cjson.decode(recorded)
local fields = { fields = { "id", "name", "state_type", "end_time" } }

-- sanity: both decoders read the pages the same way (spec/decode_spec.lua checks this in depth)
assert(#core.decode(page) == 200 and #core.decode(recorded) == recorded_runs)

print(string.format("generated page: 200 runs, %d bytes (%.0f B/run)", #page, #page / 200))
local function cjson_page() cjson.decode(page) end
local cj, full, x = paired(cjson_page, function() core.decode(page) end)
row("cjson.decode", #page, 200, cj)
row("core.decode", #page, 200, full, x)
local _, f4, x4 = paired(cjson_page, function() core.decode(page, fields) end)
row("core.decode, fields of 4", #page, 200, f4, x4)
local _, epoch, xe = paired(cjson_page, function() core.decode(page, { timestamps = "epoch" }) end)
row("core.decode, timestamps = epoch", #page, 200, epoch, xe)

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
local _, sliced, xs = paired(cjson_page, feed_slices)
row("decoder:feed 16 KB slices + next", #page, 200, sliced, xs)
local _, _, feed_ratio = paired(function() core.decode(page) end, feed_slices)
print(string.format("%-34s %+7.1f %% time vs core.decode (one shot)", "  feed cost",
  (1 / feed_ratio - 1) * 100))

print(string.format("recorded page (2.19.9 fixture): %d runs, %d bytes (%.0f B/run)", recorded_runs,
  #recorded, #recorded / recorded_runs))
local function cjson_recorded() cjson.decode(recorded) end
local rcj, rfull, rx = paired(cjson_recorded, function() core.decode(recorded) end)
row("cjson.decode", #recorded, recorded_runs, rcj)
row("core.decode", #recorded, recorded_runs, rfull, rx)
local _, rf4, rx4 = paired(cjson_recorded, function() core.decode(recorded, fields) end)
row("core.decode, fields of 4", #recorded, recorded_runs, rf4, rx4)

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
