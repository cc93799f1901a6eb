-- The streaming JSON decoder of prefect.core: values, options, limits, errors with their byte
-- offsets, feeding at any split point, and agreement with lua-cjson on every valid input we have.
local core = require("prefect.core")
local cjson = require("cjson")
local dataset = require("prefect.testing.dataset")
local disk = require("disk")
-- Prefect's timestamp fields: the decoder knows none of its own
local STAMPS = require("prefect.options").TIMESTAMP_FIELDS

local has_integers = math.type ~= nil
-- Under valgrind (tools/valgrind.sh) the exhaustive loops take a stride instead of every step.
local stride = os.getenv("PREFECT_UNDER_VALGRIND") and 7 or 1


-- Deep equality that also tells integers from floats (Lua 5.3+), -0.0 from 0.0 and metatables.
local function same(a, b, strict_numbers)
  if type(a) ~= type(b) then
    return false
  end
  if type(a) == "number" then
    if strict_numbers and has_integers and math.type(a) ~= math.type(b) then
      return false
    end
    if a ~= a then
      return b ~= b
    end
    return a == b and (a ~= 0 or 1 / a == 1 / b)
  end
  if type(a) ~= "table" then
    return a == b
  end
  if getmetatable(a) ~= getmetatable(b) then
    return false
  end
  for k, v in pairs(a) do
    if not same(v, b[k], strict_numbers) then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

-- A decoder error is a table {kind, message, offset} whose tostring() is its message.
local function check_error(err)
  assert.is_table(err)
  assert.is_string(err.kind)
  assert.is_string(err.message)
  assert.is_number(err.offset)
  assert.equals(err.message, tostring(err))
  return err
end

-- Feeds the pieces, then finishes; returns the elements handed out and the error's message,
-- offset and kind, if any.
local function stream(pieces, opts, drain_each)
  local d = core.decoder(opts)
  local got = {}
  local function drain()
    while true do
      local v, err = d:next()
      if v == nil then
        return err
      end
      got[#got + 1] = v
    end
  end
  local function failed(err)
    check_error(err)
    return got, err.message, err.offset, d, err.kind
  end
  for _, piece in ipairs(pieces) do
    local ok, err = d:feed(piece)
    if not ok then
      drain()
      return failed(err)
    end
    if drain_each then
      local err2 = drain()
      if err2 then
        return failed(err2)
      end
    end
  end
  local ok, err = d:finish()
  local err2 = drain()
  if not ok then
    return failed(err)
  end
  if err2 then
    return failed(err2)
  end
  return got, nil, nil, d
end

local generated_page = dataset.page_text

local fixture = assert(disk.read("spec/fixtures/dataset-2.19.9.json"))
local exchanges = assert(disk.read("spec/fixtures/exchanges-2.19.9.json"))
-- The fixture's task runs as one compact page, as a server sends them.
local fixture_page = cjson.encode(cjson.decode(fixture).task_runs)

-- Decodes s, expecting an error of `kind` (default "decode") whose message holds `message`
-- and names byte `offset`; returns the message.
local function expect_error(s, message, offset, opts, kind)
  local v, err = core.decode(s, opts)
  assert.is_nil(v)
  check_error(err)
  assert.equals(kind or "decode", err.kind, err.message)
  assert.matches(message, err.message, 1, true)
  assert.matches("at byte " .. offset, err.message, 1, true)
  assert.equals(offset, err.offset)
  return err.message
end

describe("prefect.core.decode", function()
  describe("values", function()
    it("decodes every JSON type", function()
      local v = core.decode('{"s":"x","t":true,"f":false,"n":1,"a":[1,"2",[3]],"o":{"k":{}}}')
      assert.same({ s = "x", t = true, f = false, n = 1, a = { 1, "2", { 3 } }, o = { k = {} } }, v)
    end)

    it("decodes top-level scalars", function()
      assert.equals(42, core.decode("42"))
      assert.equals("text", core.decode(' "text" '))
      assert.equals(true, core.decode("true"))
      assert.equals(false, core.decode("false"))
      assert.equals(core.null, core.decode("null"))
    end)

    it("keeps empty arrays and objects, and marks arrays with array_mt", function()
      local mt = {}
      local v = core.decode('{"a":[],"o":{},"n":[[],{}]}', { array_mt = mt })
      assert.equals(mt, getmetatable(v.a))
      assert.is_nil(getmetatable(v.o))
      assert.is_nil(getmetatable(v))
      assert.equals(mt, getmetatable(v.n))
      assert.equals(mt, getmetatable(v.n[1]))
      assert.is_nil(getmetatable(v.n[2]))
      assert.equals(0, #v.a)
      assert.is_nil(next(v.o))
      assert.is_nil(getmetatable(core.decode("[]")))
    end)

    it("lets the last of duplicate keys win, null included", function()
      assert.same({ a = 3, b = 2 }, core.decode('{"a":1,"b":2,"a":3}'))
      assert.same({ b = 2 }, core.decode('{"a":1,"b":2,"a":null}'))
      assert.same({ a = 1 }, core.decode('{"a":null,"a":1}'))
      assert.same({ state = { id = 2 } }, core.decode('{"id":1,"state":{"id":2},"id":null}'))
      local long = string.rep("k", 60)
      assert.same({}, core.decode('{"' .. long .. '":1,"' .. long .. '":null}'))
      assert.same({ a = false }, core.decode('{"a":1,"a":null}', { null = false }))
      local got = stream({ '[{"a":1,"a":null},{"a":2}]' })
      assert.same({ {}, { a = 2 } }, got)
    end)

    it("accepts whitespace everywhere JSON allows it", function()
      assert.same({ a = { 1, 2 } }, core.decode(' \t\r\n{ "a" :\n[ 1 ,\t2 ] } \n'))
    end)
  end)

  describe("numbers", function()
    it("keeps 64-bit integer literals as integers and the rest as floats", function()
      local v = core.decode("[0,-1,9223372036854775807,-9223372036854775808,9223372036854775808," ..
        "12345678901234567890,1.0,1e2,-0]")
      if has_integers then
        assert.equals("integer", math.type(v[1]))
        assert.equals("integer", math.type(v[2]))
        assert.equals(math.maxinteger, v[3])
        assert.equals("integer", math.type(v[3]))
        assert.equals(math.mininteger, v[4])
        assert.equals("integer", math.type(v[4]))
        assert.equals("float", math.type(v[5]))
        assert.equals(9223372036854775808.0, v[5])
        assert.equals("float", math.type(v[6]))
        assert.equals("float", math.type(v[7]))
        assert.equals("float", math.type(v[8]))
      else
        assert.equals(9223372036854775807, v[3])
        assert.equals(-9223372036854775808, v[4])
      end
      assert.equals(1.2345678901234567e19, v[6])
      assert.equals(100, v[8])
      assert.equals(0, v[9])
      assert.equals(-math.huge, 1 / v[9]) -- -0 is the float -0.0
      if has_integers then
        assert.equals("float", math.type(v[9]))
      end
    end)

    it("rounds decimal literals exactly like the C library", function()
      local cases = { "0.1", "0.3", "1.7976931348623157e308", "2.2250738585072014e-308", "5e-324",
        "4.9406564584124654e-324", "1e400", "-1e400", "1e-400", "123456789012345678901234567890",
        "0.000001", "3.141592653589793238462643383279", "9007199254740993", "9007199254740993.0",
        "1e22", "1e23", "8.98846567431158e307", "2.5E-3", "1E+2", "-0.0", "0e10", "12.583104" }
      for _, s in ipairs(cases) do
        local v = core.decode(s)
        local want = tonumber(s)
        if has_integers and math.type(v) == "integer" then
          assert.equals(want, v, s)
        else
          assert.equals(string.format("%.17g", want), string.format("%.17g", v), s)
        end
      end
    end)

    it("reads very long mantissas and exponents", function()
      assert.equals(1, core.decode("0." .. string.rep("0", 100000) .. "1e100001"))
      assert.equals(1, core.decode("0." .. string.rep("0", 999999) .. "1e1000000"))
      assert.equals(1e300, core.decode("1" .. string.rep("0", 300)))
      assert.equals(math.huge, core.decode("1e99999999999999999999"))
      assert.equals(0, core.decode("1e-99999999999999999999"))
      assert.equals(-math.huge, 1 / core.decode("-1e-99999999999999999999"))
    end)

    it("rounds random decimals exactly (fast path and fallback agree with tonumber)", function()
      local x = 12345
      local function rnd(n)
        x = (x * 16807) % 2147483647
        return x % n
      end
      for _ = 1, 3000 do
        local digits = {}
        for k = 1, rnd(20) + 1 do
          digits[k] = tostring(rnd(10))
        end
        local int = table.concat(digits):gsub("^0+(%d)", "%1")
        local s = int .. "." .. tostring(rnd(1000000)) .. "e" .. tostring(rnd(60) - 30)
        if rnd(2) == 0 then
          s = "-" .. s
        end
        local v = core.decode(s)
        assert.equals(string.format("%.17g", tonumber(s)), string.format("%.17g", v), s)
      end
    end)

    it("does not depend on the C locale's decimal point", function()
      -- A comma-decimal locale, built for this test, in a child interpreter that switches to it.
      local dir = os.tmpname()
      os.remove(dir)
      assert.is_true(os.execute("mkdir -p " .. dir .. " && localedef -i de_DE -f UTF-8 " .. dir ..
        "/de_DE.UTF-8 >/dev/null 2>&1") ~= false)
      local child = [[
        assert(os.setlocale("de_DE.UTF-8", "numeric"), "no locale")
        local core = require("prefect.core")
        assert(core.decode("1.25") == 5 / 4)
        assert(core.decode("3.14159265358979323846264338327950288") == math.pi)
        assert(core.decode("[0.1]")[1] * 10 == 1)
        assert(core.decode("2.5e-1") == 1 / 4)
        print("decoded")
      ]]
      local lua = os.getenv("PREFECT_TEST_LUA") or "lua5.4"
      local p = io.popen("LOCPATH=" .. dir .. " " .. lua .. " -e '" .. child .. "' 2>&1")
      local out = p:read("*a")
      p:close()
      os.execute("rm -rf " .. dir)
      assert.equals("decoded\n", out)
    end)
  end)

  describe("strings", function()
    it("decodes every escape", function()
      assert.equals('"\\/\b\f\n\r\t', core.decode('"\\"\\\\\\/\\b\\f\\n\\r\\t"'))
      assert.equals("A\195\169\226\130\172", core.decode('"\\u0041\\u00e9\\u20AC"'))
      assert.equals("\0", core.decode('"\\u0000"'))
    end)

    it("joins surrogate pairs into UTF-8", function()
      assert.equals("\240\159\152\128", core.decode('"\\ud83d\\ude00"'))
      assert.equals("\244\143\191\191", core.decode('"\\udbff\\udfff"'))
    end)

    it("passes valid UTF-8 through", function()
      local s = "h\195\169llo \226\130\172 \240\159\152\128 \239\191\191"
      assert.equals(s, core.decode('"' .. s .. '"'))
    end)

    it("decodes escaped keys", function()
      assert.same({ ["a\nb"] = 1, ["\195\169"] = 2 }, core.decode('{"a\\nb":1,"\\u00e9":2}'))
    end)
  end)

  describe("errors", function()
    it("name the problem, the 1-based byte and an excerpt", function()
      local err = expect_error('{"a":1,}', "expected an object key", 8)
      assert.matches("near '}'", err, 1, true)
      expect_error('{"a" 1}', "expected ':'", 6)
      expect_error('{"a":1 "b"}', "expected ',' or '}'", 8)
      expect_error("[1 2]", "expected ',' or ']'", 4)
      expect_error("[1,]", "unexpected character", 4)
      expect_error("[@]", "unexpected character", 2)
      expect_error("{1:2}", "expected an object key", 2)
    end)

    it("reject raw control characters in strings", function()
      expect_error('["a\nb"]', "control character in string", 4)
      expect_error('["\0"]', "control character in string", 3)
    end)

    it("reject invalid UTF-8", function()
      expect_error('["\192\128"]', "invalid UTF-8", 3) -- overlong lead byte
      expect_error('["\224\128\128"]', "invalid UTF-8", 4) -- overlong 3-byte form
      expect_error('["\237\160\128"]', "invalid UTF-8", 4) -- encoded surrogate
      expect_error('["\244\144\128\128"]', "invalid UTF-8", 4) -- above U+10FFFF
      expect_error('["\245"]', "invalid UTF-8", 3)
      expect_error('["\195"]', "invalid UTF-8", 4) -- truncated sequence
      expect_error('["\128"]', "invalid UTF-8", 3) -- lone continuation byte
    end)

    it("reject bad escapes and lone surrogates", function()
      expect_error('["\\x"]', "invalid escape", 4)
      expect_error('["\\u12g4"]', "invalid \\u escape", 7)
      expect_error('["ab\\ud800"]', "lone surrogate", 5)
      expect_error('["\\ud800\\u0041"]', "lone surrogate", 3)
      expect_error('["\\udc00"]', "lone surrogate", 3)
      expect_error('["\\ud800x"]', "lone surrogate", 3)
    end)

    it("reject malformed numbers and literals", function()
      expect_error("[01]", "leading zero", 3)
      expect_error("[-]", "invalid number", 3)
      expect_error("[1.]", "invalid number", 4)
      expect_error("[1e]", "invalid number", 4)
      expect_error("[1e+]", "invalid number", 5)
      expect_error("[.5]", "unexpected character", 2)
      expect_error("[+1]", "unexpected character", 2)
      expect_error("[tru]", "invalid literal", 5)
      expect_error("[nul", "unexpected end of input", 5)
      expect_error("[NaN]", "unexpected character", 2)
    end)

    it("reject trailing data and truncated or empty input", function()
      expect_error("[1] x", "unexpected data after the end of the document", 5)
      expect_error("1 2", "unexpected data after the end of the document", 3)
      expect_error("", "unexpected end of input", 1)
      expect_error("   ", "unexpected end of input", 4)
      expect_error('{"a":', "unexpected end of input", 6)
      expect_error('"abc', "unexpected end of input", 5)
    end)

    it("fail at every truncation of a real page, at the end of what was given", function()
      local runs = cjson.decode(fixture).task_runs
      local s = cjson.encode({ runs[1], runs[2], runs[3] })
      for i = 0, #s - 1, stride do
        local v, err = core.decode(s:sub(1, i))
        assert.is_nil(v)
        assert.equals(i + 1, err.offset)
        assert.equals("decode", err.kind)
        assert.matches("unexpected end of input", err.message, 1, true)
      end
    end)
  end)

  describe("limits", function()
    it("max_depth: 1000 levels by default, each a clean error beyond", function()
      local deep = string.rep("[", 1000) .. string.rep("]", 1000)
      assert.is_table(core.decode(deep))
      local deeper = string.rep("[", 1001) .. string.rep("]", 1001)
      expect_error(deeper, "nesting deeper than max_depth (1000)", 1001)
      local objects = string.rep('{"a":', 1000) .. "1" .. string.rep("}", 1000)
      local v = core.decode(objects)
      for _ = 1, 999 do
        v = v.a
      end
      assert.same({ a = 1 }, v)
      local most = string.rep('{"a":[', 1000) .. string.rep("]}", 1000)
      assert.is_table(core.decode(most, { max_depth = 2000 }))
      assert.is_table((stream({ most }, { max_depth = 2000 }))[1])
      expect_error("[[[1]]]", "nesting deeper than max_depth (2)", 3, { max_depth = 2 })
      assert.same({ { 1 } }, core.decode("[[1]]", { max_depth = 2 }))
    end)

    it("max_depth also holds while streaming", function()
      local got, err, off = stream({ "[[", "[1]]]" }, { max_depth = 2 })
      assert.same({}, got)
      assert.matches("max_depth", err)
      assert.equals(3, off)
    end)

    it("max_size: limits the bytes of input", function()
      expect_error("[1,2,3]", "document larger than max_size (5 bytes)", 6, { max_size = 5 }, "too_large")
      assert.same({ 1, 2, 3 }, core.decode("[1,2,3]", { max_size = 7 }))
      local d = core.decoder({ max_size = 10 })
      assert.is_true(d:feed("[1,2,"))
      assert.is_true(d:feed("3,4,"))
      local ok, err = d:feed("5]")
      assert.is_nil(ok)
      assert.equals("too_large", err.kind)
      assert.matches("max_size", err.message)
      assert.equals(11, err.offset)
      assert.equals(1, d:next())
      assert.equals(2, d:next())
      assert.equals(3, d:next())
      assert.equals(4, d:next())
      local v, err2 = d:next()
      assert.is_nil(v)
      assert.same(err, err2)
    end)

    it("rejects bad options as misuse, naming them", function()
      assert.has_error(function() core.decode("1", { nul = 1 }) end, "decoder option 'nul' is unknown")
      assert.has_error(function() core.decoder({ max_depth = 0 }) end,
        "decoder option 'max_depth': a positive integer expected (at most 2000)")
      assert.has_error(function() core.decoder({ max_depth = 2001 }) end,
        "decoder option 'max_depth': a positive integer expected (at most 2000)")
      assert.has_error(function() core.decoder({ max_size = 1.5 }) end)
      assert.has_error(function() core.decoder({ timestamps = "iso" }) end,
        "decoder option 'timestamps': \"epoch\" or \"string\" expected")
      assert.has_error(function() core.decoder({ fields = "id" }) end,
        "decoder option 'fields': a list of paths expected")
      assert.has_error(function() core.decoder({ fields = { "a..b" } }) end,
        "decoder option 'fields'[1]: empty key in path")
      assert.has_error(function() core.decoder({ array_mt = 1 }) end,
        "decoder option 'array_mt': a table expected")
      assert.has_error(function() core.decode({}) end)
    end)
  end)

  describe("option null", function()
    it("by default leaves null members out and keeps null array elements as core.null", function()
      local v = core.decode('{"a":null,"b":[1,null,3],"c":1}')
      assert.is_nil(v.a)
      assert.equals(3, #v.b)
      assert.equals(core.null, v.b[2])
      assert.equals(cjson.null, v.b[2])
    end)

    it("puts the given value wherever JSON has null", function()
      local v = core.decode('{"a":null,"b":[null]}', { null = false })
      assert.equals(false, v.a)
      assert.equals(false, v.b[1])
      local sentinel = {}
      assert.equals(sentinel, core.decode("null", { null = sentinel }))
    end)
  end)

  describe("option fields", function()
    local run = '{"id":"r1","name":"n","state":{"type":"COMPLETED","name":"Done","state_details":' ..
      '{"x":1}},"tags":["a"],"labels":{"prefect.flow.id":"f1","other":2},' ..
      '"task_inputs":{"since":[{"input_type":"parameter","name":"since"}]},"end_time":null}'

    it("keeps only the listed paths", function()
      local v = core.decode(run, { fields = { "id", "state.type", "tags" } })
      assert.same({ id = "r1", state = { type = "COMPLETED" }, tags = { "a" } }, v)
    end)

    it("keeps a whole branch when a path and its prefix are both listed", function()
      local v = core.decode(run, { fields = { "state.type", "state" } })
      assert.same({ state = { type = "COMPLETED", name = "Done", state_details = { x = 1 } } }, v)
    end)

    it("takes a list of keys for keys that contain dots", function()
      local v = core.decode(run, { fields = { { "labels", "prefect.flow.id" } } })
      assert.same({ labels = { ["prefect.flow.id"] = "f1" } }, v)
    end)

    it("applies to each element of a top-level array and passes through nested arrays", function()
      local v = core.decode("[" .. run .. "," .. run .. "]",
        { fields = { "id", "task_inputs.since.input_type" } })
      local want = { id = "r1", task_inputs = { since = { { input_type = "parameter" } } } }
      assert.same({ want, want }, v)
      local got = stream({ "[" .. run .. "," .. run .. "]" }, { fields = { "id" } })
      assert.same({ { id = "r1" }, { id = "r1" } }, got)
    end)

    it("keeps a value on a partial path that is not an object, and skips nulls by default", function()
      local v = core.decode('{"a":"s","b":[1,{"c":1,"d":2}],"e":null}',
        { fields = { "a.x", "b.c", "e.f" } })
      assert.same({ a = "s", b = { 1, { c = 1 } } }, v)
      local kept = core.decode('{"e":null}', { fields = { "e" }, null = false })
      assert.same({ e = false }, kept)
    end)

    it("decodes nothing else, so errors outside the fields are still found", function()
      expect_error('{"id":1,"x":"\\q"}', "invalid escape", 15, { fields = { "id" } })
    end)
  end)

  describe("option exclude", function()
    local run = '{"id":"r1","name":"n","state":{"type":"COMPLETED","name":"Done","state_details":' ..
      '{"x":1}},"tags":["a"],"labels":{"prefect.flow.id":"f1","other":2},' ..
      '"task_inputs":{"since":[{"input_type":"parameter","name":"since"}]},"end_time":null}'

    -- cjson's value of s, with each path (a list of keys) removed from it and from the objects
    -- of any array on the way, as exclude means it
    local function without(s, paths)
      local function drop(v, path, i)
        if type(v) ~= "table" then
          return
        end
        if v[1] ~= nil then
          for _, x in ipairs(v) do
            drop(x, path, i)
          end
        elseif i == #path then
          v[path[i]] = nil
        else
          drop(v[path[i]], path, i + 1)
        end
      end
      local v = cjson.decode(s)
      for _, path in ipairs(paths) do
        drop(v, path, 1)
      end
      return v
    end

    it("leaves out the listed paths and keeps everything else", function()
      local v = core.decode(run, { exclude = { "state.state_details", "task_inputs", "labels.other" } })
      assert.same({ id = "r1", name = "n", state = { type = "COMPLETED", name = "Done" }, tags = { "a" },
        labels = { ["prefect.flow.id"] = "f1" } }, v)
    end)

    it("leaves out a whole branch when a path and its prefix are both listed", function()
      local v = core.decode(run, { exclude = { "state.type", "state", "missing.path" } })
      assert.same({ id = "r1", name = "n", tags = { "a" }, labels = { ["prefect.flow.id"] = "f1", other = 2 },
        task_inputs = { since = { { input_type = "parameter", name = "since" } } } }, v)
    end)

    it("takes a list of keys, passes through arrays and keeps values on a partial path", function()
      local v = core.decode("[" .. run .. "," .. run .. "]",
        { exclude = { { "labels", "prefect.flow.id" }, "task_inputs.since.name", "name.x", "tags.y" } })
      local want = without(run, { { "labels", "prefect.flow.id" }, { "task_inputs", "since", "name" } })
      want.end_time = nil
      assert.same({ want, want }, v)
      local got = stream({ "[" .. run .. ",", run .. "]" }, { exclude = { "state", "id" } })
      want = without(run, { { "state" }, { "id" } })
      want.end_time = nil
      assert.same({ want, want }, got)
    end)

    it("combines with fields: what fields keeps, minus what exclude leaves out", function()
      local v = core.decode(run, { fields = { "id", "state" }, exclude = { "state.state_details", "id" } })
      assert.same({ state = { type = "COMPLETED", name = "Done" } }, v)
      v = core.decode(run,
        { fields = { "state.type", "labels" }, exclude = { "state.type", "labels.other" } })
      assert.same({ state = {}, labels = { ["prefect.flow.id"] = "f1" } }, v)
    end)

    it("combines with null and timestamps", function()
      local v = core.decode(run,
        { exclude = { "end_time", "state" }, null = false, fields = { "end_time", "id" } })
      assert.same({ id = "r1" }, v)
      v = core.decode('{"created":"1970-01-01T00:00:10Z","state":{"timestamp":"1970-01-01T00:00:20Z","x":1}}',
        { timestamps = "epoch", timestamp_fields = { "created", "state.timestamp" },
          exclude = { "state.x" } })
      assert.same({ created = 10, state = { timestamp = 20 } }, v)
    end)

    it("decodes nothing of what it leaves out, so errors there are still found", function()
      expect_error('{"id":1,"x":"\\q"}', "invalid escape", 15, { exclude = { "x" } })
      expect_error('{"id":1,"x":[1,}', "unexpected character", 16, { exclude = { "x" } })
    end)

    it("refuses what is not a list of paths", function()
      assert.has_error(function() core.decoder({ exclude = "id" }) end,
        "decoder option 'exclude': a list of paths expected")
      assert.has_error(function() core.decoder({ exclude = { "a..b" } }) end,
        "decoder option 'exclude'[1]: empty key in path")
      assert.has_error(function() core.decoder({ exclude = { 5 } }) end,
        "decoder option 'exclude'[1]: a path string or a list of keys expected")
    end)

    it("agrees with cjson minus the paths on pages, one shot and streamed", function()
      local paths = { { "state", "state_details" }, { "task_inputs" }, { "empirical_policy" }, { "labels" } }
      local opts = { exclude = { "state.state_details", "task_inputs", "empirical_policy", "labels" } }
      for _, page in ipairs({ generated_page(50, 7), cjson.encode(cjson.decode(fixture).task_runs) }) do
        local want = without(page, paths)
        for _ = 1, 2 do
          assert.is_true(same(core.decode(page, { exclude = opts.exclude, null = cjson.null }),
            (without(page, paths))))
          local plain = core.decode(page, opts)
          assert.equals(#want, #plain)
          assert.is_nil(plain[1].state.state_details)
          assert.is_not_nil(core.decode(page)[1].state.state_details)
          local pieces = {}
          for i = 1, #page, 777 do
            pieces[#pieces + 1] = page:sub(i, i + 776)
          end
          assert.is_true(same(stream(pieces, { exclude = opts.exclude, null = cjson.null }), want))
        end
      end
    end)
  end)

  describe("option timestamps", function()
    it("turns Prefect's timestamp fields into epoch seconds", function()
      local runs = cjson.decode(fixture).task_runs
      local s = cjson.encode(runs[1])
      local v = core.decode(s, { timestamps = "epoch", timestamp_fields = STAMPS })
      local plain = core.decode(s)
      for _, k in ipairs({ "created", "updated", "expected_start_time", "start_time", "end_time" }) do
        if plain[k] ~= nil then
          assert.is_number(v[k], k)
        end
      end
      assert.is_number(v.state.timestamp)
      assert.is_string(v.id)
      assert.equals(plain.state.type, v.state.type)
      -- "2026-11-29T11:53:19.xxxxxx+00:00" in the fixture
      assert.is_true(v.created > 1795953199 and v.created < 1795953200 + 3600)
    end)

    it("matches by path from the root of each element, not by key anywhere", function()
      local doc = '[{"created":"2026-08-21T16:27:33Z","labels":{"created":"2026-08-21T16:27:33Z"}}]'
      local v = core.decode(doc, { timestamps = "epoch", timestamp_fields = STAMPS })
      assert.equals(1787329653, v[1].created)
      assert.equals("2026-08-21T16:27:33Z", v[1].labels.created)
    end)

    it("parses Z, offsets, 0 to 9 fraction digits and naive times as UTC", function()
      local cases = {
        ["2026-08-21T16:27:33Z"] = 1787329653,
        ["2026-08-21T16:27:33.5Z"] = 1787329653.5,
        ["2026-08-21T16:27:33.512044Z"] = 1787329653.512044,
        ["2026-08-21T16:27:33.512044+00:00"] = 1787329653.512044,
        ["2026-08-21T18:27:33.25+02:00"] = 1787329653.25,
        ["2026-08-21T10:57:33-05:30"] = 1787329653,
        ["2026-08-21T16:27:33.123456789Z"] = 1787329653.123456789,
        ["2026-08-21T16:27:33"] = 1787329653,
        ["2026-08-21 16:27:33z"] = 1787329653,
        ["1969-12-31T23:59:59Z"] = -1,
        ["2000-02-29T00:00:00Z"] = 951782400,
        ["9999-12-31T23:59:59Z"] = 253402300799,
      }
      for s, want in pairs(cases) do
        local v = core.decode('{"t":"' .. s .. '"}', { timestamps = "epoch", timestamp_fields = { "t" } })
        assert.is_number(v.t, s)
        assert.is_true(math.abs(v.t - want) < 1e-6, s .. " -> " .. tostring(v.t))
      end
    end)

    it("leaves strings that are not timestamps as they are", function()
      local bad = { "2026-02-30T00:00:00Z", "2026-08-21T24:00:00Z", "2026-08-21", "2026-08-21T16:27:33.Z",
        "2026-08-21T16:27:33.1234567890Z", "2026-08-21T16:27:33+0200", "2026-08-21T16:27:33Zjunk",
        "2026-13-01T00:00:00Z", "not a time", "" }
      for _, s in ipairs(bad) do
        local v = core.decode('{"t":"' .. s .. '"}', { timestamps = "epoch", timestamp_fields = { "t" } })
        assert.equals(s, v.t)
      end
      local v = core.decode('{"t":5,"u":null}', { timestamps = "epoch", timestamp_fields = { "t", "u" } })
      assert.equals(5, v.t)
      assert.is_nil(v.u)
    end)

    it("are strings unless asked for", function()
      local v = core.decode('{"created":"2026-08-21T16:27:33Z"}')
      assert.equals("2026-08-21T16:27:33Z", v.created)
      v = core.decode('{"created":"2026-08-21T16:27:33Z"}', { timestamps = "string" })
      assert.equals("2026-08-21T16:27:33Z", v.created)
      -- the list alone converts nothing: it says which fields, "epoch" says to convert them
      v = core.decode('{"created":"2026-08-21T16:27:33Z"}', { timestamp_fields = { "created" } })
      assert.equals("2026-08-21T16:27:33Z", v.created)
    end)

    it('need the list of fields with "epoch": the decoder knows no field names of its own', function()
      local msg = "decoder option 'timestamps' = \"epoch\" needs 'timestamp_fields' (the paths to convert)"
      local doc = '{"created":"2026-08-21T16:27:33Z"}'
      assert.has_error(function() core.decode(doc, { timestamps = "epoch" }) end, msg)
      assert.has_error(function() core.decoder({ timestamps = "epoch" }) end, msg)
      -- an empty list is a list: nothing is converted
      local v = core.decode(doc, { timestamps = "epoch", timestamp_fields = {} })
      assert.equals("2026-08-21T16:27:33Z", v.created)
    end)

    it("combine with fields", function()
      local v = core.decode('{"id":"x","state":{"timestamp":"1970-01-01T00:01:00Z","type":"A"}}',
        { timestamps = "epoch", timestamp_fields = STAMPS, fields = { "state.timestamp" } })
      assert.same({ state = { timestamp = 60 } }, v)
    end)
  end)

  describe("option shape", function()
    local function shape_error(s, shape, message, offset)
      return expect_error(s, message, offset, { shape = shape }, "protocol")
    end

    it('"runs": an array of objects, each with a string "id"', function()
      assert.same({}, core.decode("[]", { shape = "runs" }))
      local runs = core.decode(fixture_page, { shape = "runs" })
      assert.is_true(same(runs, core.decode(fixture_page), true))
      shape_error('{"a":1}', "runs", "expected an array of task runs, got an object", 1)
      shape_error('  "hello"', "runs", "expected an array of task runs, got a string", 3)
      shape_error("42", "runs", "expected an array of task runs, got a number", 1)
      shape_error("-1", "runs", "expected an array of task runs, got a negative number", 1)
      shape_error("true", "runs", "expected an array of task runs, got a boolean", 1)
      shape_error("null", "runs", "expected an array of task runs, got null", 1)
      shape_error('[1,"two",null,[3]]', "runs", "expected task run 1 to be an object, got a number", 2)
      shape_error('[{"id":"a"}, "two"]', "runs", "expected task run 2 to be an object, got a string", 14)
      shape_error('[{"id":"a"},{"id":"b"},[]]', "runs", "expected task run 3 to be an object, got an array",
        24)
      shape_error('[{"name":"x"}]', "runs", 'task run 1 has no "id"', 2)
      shape_error('[{"idx":"a","Id":"b"}]', "runs", 'task run 1 has no "id"', 2)
      -- an "id" further down (a state's, a flow run's) is not the run's
      shape_error('[{"id":"a"},{"state":{"id":"b"}}]', "runs", 'task run 2 has no "id"', 13)
      shape_error('[{"id":5}]', "runs", 'expected the "id" of task run 1 to be a string, got a number', 8)
      shape_error('[{"id":{"a":1}}]', "runs", 'expected the "id" of task run 1 to be a string, got an object',
        8)
      -- every "id" of a run is checked, the one kept (the last) included
      shape_error('[{"id":"a","id":null}]', "runs", 'the "id" of task run 1 to be a string, got null', 17)
      shape_error('[{"id":true,"id":"a"}]', "runs", 'the "id" of task run 1 to be a string, got a boolean', 8)
      -- a key is compared after its escapes
      assert.same({ { id = "a" } }, core.decode('[{"\\u0069d":"a"}]', { shape = "runs" }))
      assert.same({ { id = "a" } }, core.decode('[{"i\\u0064":"a"}]', { shape = "runs" }))
    end)

    it("looks for the id in the document, whatever fields keeps", function()
      local opts = { shape = "runs", fields = { "name" } }
      assert.same({ { name = "x" } }, core.decode('[{"id":"a","name":"x"}]', opts))
      expect_error('[{"name":"x"}]', 'task run 1 has no "id"', 2, opts, "protocol")
      local got, err, off, _, kind = stream({ '[{"id":"a","name":"x"},', '{"name":"y"}]' }, opts, true)
      assert.same({ { name = "x" } }, got)
      assert.equals("protocol", kind)
      assert.equals(24, off)
      assert.matches('task run 2 has no "id"', err, 1, true)
    end)

    it("bytes that are not JSON stay a decode error, found before the shape", function()
      expect_error('[{"id": nope}]', "invalid literal", 10, { shape = "runs" })
      expect_error("nope", "invalid literal", 2, { shape = "runs" })
      expect_error("<html>", "unexpected character", 1, { shape = "runs" })
      expect_error("[01]", "leading zero", 3, { shape = "runs" })
      expect_error("-x", "invalid number", 2, { shape = "count" })
      expect_error("", "unexpected end of input", 1, { shape = "run" })
    end)

    it('"run": one object with a string "id"', function()
      assert.same({ id = "a", n = 1 }, core.decode('{"id":"a","n":1}', { shape = "run" }))
      shape_error('[{"id":"a"}]', "run", "expected a task run object, got an array", 1)
      shape_error('"a"', "run", "expected a task run object, got a string", 1)
      shape_error("null", "run", "expected a task run object, got null", 1)
      shape_error('{"a":1}', "run", 'the task run has no "id"', 1)
      shape_error('{"flow_run":{"id":"x"}}', "run", 'the task run has no "id"', 1)
      shape_error('{"id":1}', "run", "expected the task run's \"id\" to be a string, got a number", 7)
      assert.same({ n = 1 }, core.decode('{"id":"a","n":1}', { shape = "run", fields = { "n" } }))
    end)

    it('"count": a JSON integer >= 0', function()
      assert.equals(0, core.decode("0", { shape = "count" }))
      assert.equals(12, core.decode(" 12 ", { shape = "count" }))
      shape_error("[5]", "count", "expected a count (an integer >= 0), got an array", 1)
      shape_error("-3", "count", "got a negative number", 1)
      shape_error("12.5", "count", "got a number that is not an integer", 3)
      shape_error("12.0", "count", "got a number that is not an integer", 3)
      shape_error("1e400", "count", "got a number that is not an integer", 2)
      shape_error('"12"', "count", "got a string", 1)
      shape_error("null", "count", "got null", 1)
      shape_error("{}", "count", "got an object", 1)
      expect_error("12abc", "unexpected data after the end of the document", 3, { shape = "count" })
      -- a bare number ends with the input: the streaming decoder settles it at finish
      local got, err, off, _, kind = stream({ "1", "2.", "5" }, { shape = "count" })
      assert.same({}, got)
      assert.equals("protocol", kind)
      assert.equals(3, off)
      assert.matches("not an integer", err, 1, true)
      assert.same({ 7 }, (stream({ "7" }, { shape = "count" })))
    end)

    it("reports the same shape error at the same byte, however the input is split", function()
      local bad = {
        { '[{"id":"a","name":"x"},{"name":"y","tags":["a"]}]', "runs" },
        { '[{"id":"a"},{"id":12345}]', "runs" },
        { '[{"id":"a"},nullx]', "runs" },
        { '[{"id":"a"},null]', "runs" },
        { '{"x":1,"y":[1,2]}', "run" },
        { "12345.5", "count" },
        { "-12", "count" },
      }
      for _, case in ipairs(bad) do
        local s, shape = case[1], case[2]
        local _, e = core.decode(s, { shape = shape })
        for i = 0, #s do
          local _, err2, off2, _, kind2 = stream({ s:sub(1, i), s:sub(i + 1) }, { shape = shape }, i % 2 == 0)
          assert.equals(e.offset, off2, s .. " split " .. i)
          assert.equals(e.kind, kind2, s .. " split " .. i)
          assert.equals(e.message:gsub(" near .*", ""), err2:gsub(" near .*", ""))
        end
      end
    end)

    it("hands out the runs before the wrong one, then the error", function()
      local got, err, off, _, kind = stream({ '[{"id":"a"},{"id":"b"},5,{"id":"c"}]' }, { shape = "runs" })
      assert.same({ { id = "a" }, { id = "b" } }, got)
      assert.equals("protocol", kind)
      assert.equals(24, off)
      assert.matches("expected task run 3 to be an object, got a number", err, 1, true)
    end)

    it("rejects an unknown shape as misuse", function()
      assert.has_error(function() core.decoder({ shape = "page" }) end,
        'decoder option \'shape\': "runs", "run" or "count" expected')
      assert.has_error(function() core.decode("[]", { shape = 1 }) end)
    end)
  end)

  describe("its cache of keys", function()
    it("gives each call the result of its own options", function()
      local run = '{"id":"r","created":"1970-01-01T00:00:10Z","state":{"id":"s","type":"T","timestamp":' ..
        '"1970-01-01T00:00:20Z"},"name":"n"}'
      for _ = 1, 3 do
        assert.same({ id = "r" }, core.decode(run, { fields = { "id" } }))
        assert.same({ state = { type = "T" } }, core.decode(run, { fields = { "state.type" } }))
        assert.same({ created = 10, state = { timestamp = 20 } },
          core.decode(run, { fields = { "created", "state.timestamp" }, timestamps = "epoch",
            timestamp_fields = STAMPS }))
        local all = core.decode(run)
        assert.equals("1970-01-01T00:00:10Z", all.created)
        assert.same({ id = "s", type = "T", timestamp = "1970-01-01T00:00:20Z" }, all.state)
      end
    end)

    it("is not fooled by a key seen before that contained a quote", function()
      -- The cached key a":"b (from an escaped key) must not match the text of {"a":"b"}.
      local tricky = '[{"a\\":\\"b":1},{"a":"b"},{"a\\":\\"b":2},{"a":"b"}]'
      local want = { { ['a":"b'] = 1 }, { a = "b" }, { ['a":"b'] = 2 }, { a = "b" } }
      assert.same(want, core.decode(tricky))
      assert.same(want, (stream({ tricky })))
      assert.same({ a = "b" }, core.decode('{"a\\":\\"b":1}') and core.decode('{"a":"b"}'))
    end)

    it("is not fooled by a key seen before that held an escaped backslash or control character", function()
      -- The cached key a<LF>b (from "a\\nb") must not accept a raw line feed, which JSON forbids.
      local v, err = core.decode('[{"a\\nb":1},{"a\nb":2}]')
      assert.is_nil(v)
      assert.matches("control character in string at byte 16", err.message, 1, true)
      assert.same({ { ["a\\b"] = 1 }, { ["a\\b"] = 2 } }, core.decode('[{"a\\\\b":1},{"a\\\\b":2}]'))
      assert.same({ { ["a\nb"] = 1 }, { ["a\nb"] = 2 } }, core.decode('[{"a\\nb":1},{"a\\nb":2}]'))
    end)

    it("copes with many distinct keys, long keys and keys in varying order", function()
      for round = 1, 3 do
        local parts, want = {}, {}
        for i = 1, 250 do
          local k = "key" .. round .. "_" .. i .. string.rep("x", i % 50)
          parts[#parts + 1] = string.format('"%s":%d', k, i)
          want[k] = i
        end
        assert.same(want, core.decode("{" .. table.concat(parts, ",") .. "}"))
      end
      assert.same({ { b = 1, a = 2 }, { a = 3, b = 4 }, { b = 5 } },
        core.decode('[{"b":1,"a":2},{"a":3,"b":4},{"b":5}]'))
    end)

    it("stays right when a finalizer decodes in the middle of a decode", function()
      -- Finalizers run during the allocations of a build (LuaJIT does so here; Lua 5.4 may defer them).
      local page = generated_page(200, 3)
      local want = core.decode(page, { fields = { "id", "state.type" } })
      local live, inner_ok = true, 0
      local function finalizer()
        if not live then
          return
        end
        local v = core.decode('{"id":"inner","state":{"type":"X","name":"Y"}}', { fields = { "state.name" } })
        if v and v.state and v.state.name == "Y" and v.id == nil then
          inner_ok = inner_ok + 1
        end
      end
      for _ = 1, 20 do
        for _ = 1, 20 do
          if newproxy then
            getmetatable(newproxy(true)).__gc = finalizer
          else
            setmetatable({}, { __gc = finalizer })
          end
        end
        local got = core.decode(page, { fields = { "id", "state.type" } })
        assert.is_true(same(got, want, true))
      end
      collectgarbage()
      collectgarbage()
      live = false
      assert.equals(400, inner_ok)
    end)
  end)

  describe("in one pass", function()
    -- decode() first reads the bytes in one pass and, at anything it does not accept, gives the
    -- document to the scanner that the streaming decoder uses: either way the answer must be the
    -- streaming decoder's, value or error.
    local function agree(s, opts, label)
      local v, e = core.decode(s, opts)
      local got, msg, off, _, kind = stream({ s }, opts)
      if e then
        assert.equals(msg, e.message, label)
        assert.equals(off, e.offset, label)
        assert.equals(kind, e.kind, label)
        return false
      end
      assert.is_nil(msg, label)
      if s:match("^%s*%[") then
        assert.is_true(same(v, got, true), label)
      else
        assert.is_true(same({ v }, got, true), label)
      end
      return true
    end

    local alphabet = { "{", "}", "[", "]", '"', ":", ",", "\\", " ", "\n", "0", "1", "-", ".", "e",
      "n", "t", "f", "u", "\0", "\31", "\127", "\195", "\128", "\237\160\128", "\\u", "\\ud800" }
    -- A page of three runs with one to three random edits: a byte replaced, inserted or deleted,
    -- whitespace inserted (valid JSON, which the one pass reads itself), or the end cut off.
    local function mutants(count, seed)
      local base = generated_page(3, seed)
      local state = seed
      local function rand(n) -- MINSTD, exact in doubles too: the same cases under both interpreters
        state = state * 16807 % 2147483647
        return state % n + 1
      end
      local out = {}
      for i = 1, count do
        local s = base
        for _ = 1, rand(3) do
          local at, how = rand(#s), rand(5)
          if how == 1 then
            s = s:sub(1, at - 1) .. alphabet[rand(#alphabet)] .. s:sub(at + 1)
          elseif how == 2 then
            s = s:sub(1, at - 1) .. alphabet[rand(#alphabet)] .. s:sub(at)
          elseif how == 3 then
            s = s:sub(1, at - 1) .. s:sub(at + 1)
          elseif how == 4 then
            s = s:sub(1, at - 1) .. ({ " ", "\n", "\t", "\r\n  " })[rand(4)] .. s:sub(at)
          elseif i % 4 == 0 then
            s = s:sub(1, at)
          end
        end
        out[#out + 1] = s
      end
      return out
    end

    local option_sets = {
      { label = "no options" },
      { label = "shape runs", opts = { shape = "runs" } },
      { label = "fields", opts = { fields = { "id", "state.type", "tags" } } },
      { label = "exclude", opts = { exclude = { "state.state_details", "task_inputs" } } },
      { label = "null and epoch", opts = { null = false, timestamps = "epoch", timestamp_fields = STAMPS } },
    }

    it("agrees with the streaming decoder on every document, broken or not", function()
      local valid, broken = 0, 0
      for _, set in ipairs(option_sets) do
        for i, s in ipairs(mutants(math.floor(400 / stride), #set.label)) do
          if agree(s, set.opts, set.label .. " #" .. i) then
            valid = valid + 1
          else
            broken = broken + 1
          end
        end
      end
      -- both ways are exercised
      assert.is_true(valid > 200 / stride and broken > 200 / stride,
        valid .. " valid, " .. broken .. " broken")
    end)

    it("reads pretty-printed and deeply nested documents as the scanner does", function()
      local page = generated_page(5, 7)
      -- a line break and an indent after every , : [ { and before every ] } outside strings
      local out, in_string, escaped = {}, false, false
      for c in page:gmatch(".") do
        if in_string then
          in_string = escaped or c ~= '"'
          escaped = not escaped and c == "\\"
          out[#out + 1] = c
        elseif c == '"' then
          in_string = true
          out[#out + 1] = c
        elseif c:match("[,:%[{]") then
          out[#out + 1] = c .. "\n  "
        elseif c:match("[%]}]") then
          out[#out + 1] = "\n" .. c
        else
          out[#out + 1] = c
        end
      end
      local pretty = table.concat(out)
      assert.is_true(agree(pretty, nil, "pretty"))
      assert.is_true(same(core.decode(page), core.decode(pretty), true))
      for _, depth in ipairs({ 7, 8, 9, 16, 17, 999, 1000 }) do
        local half = math.floor(depth / 2)
        local deep = string.rep('{"a":[', half) .. "1" .. string.rep("]}", half)
        agree(deep, nil, "depth " .. depth)
        agree(deep, { max_depth = depth - 1 }, "max_depth below " .. depth)
      end
    end)

    it("sizes tables from the last object of the same key, and stays right when they change", function()
      local runs, want = {}, {}
      for i = 1, 60 do
        local members, m, t = {}, {}, {}
        for j = 1, (i * 7) % 40 do
          members[#members + 1] = string.format('"k%d":%s', j, j % 3 == 0 and "null" or tostring(j))
          m["k" .. j] = j % 3 ~= 0 and j or nil
        end
        for j = 1, i % 5 + 1 do
          t[j] = j
        end
        runs[i] = string.format('{"id":"r%d","m":{%s},"t":[%s]}', i, table.concat(members, ","),
          table.concat(t, ","))
        want[i] = { id = "r" .. i, m = m, t = t }
      end
      local page = "[" .. table.concat(runs, ",") .. "]"
      for _ = 1, 3 do
        assert.is_true(agree(page, nil, "varying sizes"))
        assert.is_true(same(want, core.decode(page), true))
      end
    end)
  end)

  describe("agrees with lua-cjson", function()
    local function check(s, label)
      local want = cjson.decode(s)
      local got, err = core.decode(s, { null = cjson.null })
      assert.is_nil(err, label)
      assert.is_true(same(got, want), label)
    end

    it("on both recorded fixture files", function()
      check(fixture, "dataset")
      check(exchanges, "exchanges")
      check(fixture_page, "fixture page")
    end)

    it("on generated Prefect 3 pages", function()
      for seed = 1, 3 do
        check(generated_page(200, seed), "seed " .. seed)
      end
    end)
  end)
end)

describe("prefect.core.decoder", function()
  it("hands out each element as soon as its last byte is fed", function()
    local d = core.decoder()
    assert.is_true(d:feed('[{"a":1},{"b"'))
    assert.same({ a = 1 }, d:next())
    assert.is_nil(d:next())
    assert.is_true(d:feed(':2}'))
    assert.same({ b = 2 }, d:next())
    assert.is_nil(d:next())
    assert.is_false(d:done())
    assert.is_true(d:feed(",null,3]"))
    assert.equals(core.null, d:next())
    assert.equals(3, d:next())
    assert.is_true(d:done())
    assert.is_true(d:finish())
    assert.is_nil(d:next())
  end)

  it("hands a null element out as the null option's value", function()
    local got = stream({ "[null,1]" }, { null = false })
    assert.same({ false, 1 }, got)
  end)

  it("hands out a top-level non-array value whole; a bare number only at finish", function()
    local d = core.decoder()
    assert.is_true(d:feed('{"detail":"Not'))
    assert.is_nil(d:next())
    assert.is_true(d:feed(' found"}'))
    assert.same({ detail = "Not found" }, d:next())
    assert.is_true(d:done())
    d = core.decoder()
    assert.is_true(d:feed("12"))
    assert.is_nil(d:next())
    assert.is_true(d:feed("3"))
    assert.is_nil(d:next())
    assert.is_true(d:finish())
    assert.equals(123, d:next())
    assert.is_true(d:done())
    assert.is_nil(d:next())
  end)

  it("reports a truncated document at finish, after the complete elements", function()
    local got, err, off, d = stream({ '[{"a":1},{"b":' }, nil, false)
    assert.same({ { a = 1 } }, got)
    assert.matches("unexpected end of input at byte 15", err, 1, true)
    assert.equals(15, off)
    assert.is_false(d:done())
  end)

  it("stays failed until reset, then decodes a new document", function()
    local d = core.decoder()
    assert.is_true(d:feed("[1,"))
    local ok, err = d:feed("x]")
    assert.is_nil(ok)
    check_error(err)
    assert.same({ kind = "decode", message = "unexpected character at byte 4 near 'x]'", offset = 4 }, err)
    assert.equals(1, d:next())
    for _ = 1, 2 do
      local v, err2 = d:next()
      assert.is_nil(v)
      assert.same(err, err2)
    end
    local ok2, err3 = d:feed("[2]")
    assert.is_nil(ok2)
    assert.same(err, err3)
    local ok3, err4 = d:finish()
    assert.is_nil(ok3)
    assert.same(err, err4)
    assert.is_false(d:done())
    d:reset()
    assert.is_true(d:feed("[2]"))
    assert.is_true(d:finish())
    assert.equals(2, d:next())
    assert.is_true(d:done())
  end)

  it("refuses input after finish", function()
    local d = core.decoder()
    assert.is_true(d:feed("[]"))
    assert.is_true(d:finish())
    local ok, err = d:feed(" ")
    assert.is_nil(ok)
    assert.matches("input after finish", err.message)
  end)

  it("gives the same elements for every split point of a real page slice", function()
    local runs = cjson.decode(fixture).task_runs
    local s = cjson.encode({ runs[1], runs[2], runs[3] })
    local opts = { null = cjson.null, timestamps = "epoch", timestamp_fields = STAMPS }
    local want = core.decode(s, opts)
    for i = 0, #s, stride do
      local got, err = stream({ s:sub(1, i), s:sub(i + 1) }, opts, i % 2 == 0)
      assert.is_nil(err)
      assert.is_true(same(got, want, true), "split at " .. i)
    end
  end)

  it("gives the same elements at random split points of whole pages", function()
    local x = 7
    local pages = { fixture_page, generated_page(200, 5), fixture }
    for p, s in ipairs(pages) do
      local top_array = s:sub(1, 1) == "["
      local want = core.decode(s)
      for rep = 1, 6, stride > 1 and 3 or 1 do
        local pieces, i = {}, 1
        while i <= #s do
          x = (x * 16807) % 2147483647
          local n = rep == 1 and 1 + x % 3 or 1 + x % (rep * 4000)
          pieces[#pieces + 1] = s:sub(i, i + n - 1)
          i = i + n
        end
        local got, err = stream(pieces, nil, rep % 2 == 0)
        assert.is_nil(err)
        if top_array then
          assert.is_true(same(got, want, true), "page " .. p .. " rep " .. rep)
        else
          assert.is_true(same(got[1], want, true), "page " .. p .. " rep " .. rep)
        end
      end
    end
  end)

  it("splits inside escapes, surrogate pairs, UTF-8 sequences, numbers and literals", function()
    local s = '["a\\"b\\u00e9\\ud83d\\ude00 \226\130\172 \240\159\152\128",-12.5e-3,true,false,null,' ..
      '{"k\\n":[1e2,0]}]'
    local want = core.decode(s)
    for i = 1, #s, stride do
      for j = i, #s, stride do
        local got, err = stream({ s:sub(1, i), s:sub(i + 1, j), s:sub(j + 1) }, nil, true)
        assert.is_nil(err)
        assert.is_true(same(got, want, true), i .. "," .. j)
      end
    end
  end)

  it("reports the same error at the same byte, however the input is split", function()
    local bad = { '[{"a":"\\ud800x"}]', '[1,2,{"b":tru}]', '[{"a":"\195\40"}]', "[1,2,,3]" }
    for _, s in ipairs(bad) do
      local _, e = core.decode(s)
      for i = 0, #s do
        local _, err2, off2, _, kind2 = stream({ s:sub(1, i), s:sub(i + 1) })
        assert.equals(e.offset, off2, s .. " split " .. i)
        assert.equals(e.kind, kind2)
        assert.equals(e.message:gsub(" near .*", ""), err2:gsub(" near .*", ""))
      end
    end
  end)

  it("streams 10,000 runs in 16 KB slices with flat memory", function()
    local page = generated_page(500, 11)
    local body = page:sub(2, -2)
    local d = core.decoder()
    local chunk = 16384
    local function held_kb()
      return tonumber(tostring(d):match("(%d+) KB held"))
    end
    assert.is_true(d:feed("["))
    local count, base_heap, max_held = 0, nil, 0
    for rep = 1, 20 do
      local s = (rep > 1 and "," or "") .. body
      for i = 1, #s, chunk do
        assert.is_true(d:feed(s:sub(i, i + chunk - 1)))
        while true do
          local run = d:next()
          if run == nil then
            break
          end
          count = count + 1
        end
        max_held = math.max(max_held, held_kb())
      end
      if rep == 2 then
        collectgarbage()
        collectgarbage()
        base_heap = collectgarbage("count")
      end
    end
    assert.is_true(d:feed("]"))
    assert.is_true(d:finish())
    assert.is_true(d:done())
    assert.equals(10000, count)
    collectgarbage()
    collectgarbage()
    assert.is_true(collectgarbage("count") - base_heap < 2048, "Lua heap grew")
    -- 18 MB went through; the decoder held a slice and a run or so at a time
    assert.is_true(max_held < 256, "decoder held " .. max_held .. " KB")
  end)

  it("closes cleanly, and a closed decoder only reports that it is closed", function()
    local d = core.decoder()
    assert.is_true(d:feed("[1"))
    local gc = getmetatable(d).__gc
    gc(d)
    local v, err = d:next()
    assert.is_nil(v)
    assert.equals("decoder closed", err.message)
    assert.equals("decode", err.kind)
    assert.is_nil((d:feed("]")))
  end)

end)
