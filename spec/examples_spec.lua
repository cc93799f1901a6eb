-- The example scripts and the C host, run as a user runs them: as separate
-- processes, from another directory, without LUA_PATH/LUA_CPATH (each finds
-- the checkout from its own location), against the test server. Their output
-- is checked against the recorded dataset itself.

local test_server = require("test_server")
local disk = require("disk")
local cjson = require("cjson")
local socket = require("socket")

local function absolute(path)
   if path:sub(1, 1) == "/" then return path end
   local pwd = io.popen("pwd")
   local dir = pwd:read("*l")
   pwd:close()
   return dir .. "/" .. path
end

local ROOT = absolute(test_server.ROOT)
local LUA = os.getenv("PREFECT_TEST_LUA") or "lua5.4"
local FIXTURE = ROOT .. "/spec/fixtures/dataset-2.19.9.json"

local function quote(s)
   return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
   return (assert(disk.read(path)))
end

-- Runs a command line in /tmp with a clean Lua environment; returns
-- { out = stdout, err = stderr, status = exit status }.
local function sh(command, env)
   local base = os.tmpname()
   local words = { "cd /tmp && env -u LUA_PATH -u LUA_CPATH",
      "-u PREFECT_API_KEY -u PREFECT_API_AUTH_STRING" }
   for k, v in pairs(env or {}) do words[#words + 1] = k .. "=" .. quote(v) end
   words[#words + 1] = command
   os.execute(("%s > %s 2> %s; echo $? > %s"):format(table.concat(words, " "), quote(base .. ".out"),
      quote(base .. ".err"), quote(base .. ".rc")))
   local result = {
      out = read_file(base .. ".out"), err = read_file(base .. ".err"),
      status = tonumber(read_file(base .. ".rc")),
   }
   for _, suffix in ipairs({ "", ".out", ".err", ".rc" }) do os.remove(base .. suffix) end
   return result
end

local function example(name, args, env)
   local words = { quote(LUA), quote(ROOT .. "/examples/" .. name) }
   for _, a in ipairs(args or {}) do words[#words + 1] = quote(a) end
   return sh(table.concat(words, " "), env)
end

local function lines(s)
   local out = {}
   for line in s:gmatch("([^\n]*)\n") do out[#out + 1] = line end
   return out
end

-- A port nothing listens on: bound, then closed.
local function closed_port()
   local s = assert(socket.bind("127.0.0.1", 0))
   local _, port = s:getsockname()
   s:close()
   return port
end

local dataset = cjson.decode(read_file(FIXTURE))

---------------------------------------------------------------------------
-- A small XML well-formedness check: nested, matched tags; quoted, unique
-- attributes; no stray "<" or bad "&" in text. Returns the elements found.

local NAME = "[%a_:][%w_:%.%-]*"

local function check_text(text, where)
   assert(not text:find("<", 1, true), "a raw < in " .. where)
   for entity in text:gmatch("&([^;]*);?") do
      assert(entity:match("^%a+$") or entity:match("^#%d+$") or entity:match("^#x%x+$"),
         "a bad entity &" .. entity .. " in " .. where)
   end
   assert(not text:find("&[^;]*$"), "an unterminated entity in " .. where)
end

local function parse_xml(s)
   local stack, elements, pos, roots = {}, {}, 1, 0
   s = s:gsub("^<%?xml[^>]*%?>", "", 1)
   while pos <= #s do
      local lt = s:find("<", pos, true)
      local text = s:sub(pos, (lt or #s + 1) - 1)
      if #stack == 0 then
         assert(text:match("^%s*$"), "text outside the root element")
      else
         check_text(text, "text")
      end
      if not lt then break end
      if s:sub(lt, lt + 3) == "<!--" then
         local close = assert(s:find("-->", lt + 4, true), "an unterminated comment")
         pos = close + 3
      elseif s:sub(lt + 1, lt + 1) == "/" then
         local name, after = s:match("^</(" .. NAME .. ")%s*>()", lt)
         assert(name, "a bad end tag at byte " .. lt)
         assert(stack[#stack] == name, "</" .. name .. "> closes <" .. tostring(stack[#stack]) .. ">")
         stack[#stack] = nil
         pos = after
      else
         local name, rest = s:match("^<(" .. NAME .. ")()", lt)
         assert(name, "a bad start tag at byte " .. lt)
         if #stack == 0 then roots = roots + 1 end
         local attrs, p = {}, rest
         while true do
            local ws, key, q, after = s:match("^(%s*)(" .. NAME .. ")%s*=%s*([\"'])()", p)
            if not key then break end
            assert(#ws > 0, "attributes without space between them in <" .. name .. ">")
            local close = assert(s:find(q, after, true), "an unterminated attribute value")
            local value = s:sub(after, close - 1)
            check_text(value, "attribute " .. key)
            assert(attrs[key] == nil, "attribute " .. key .. " twice in <" .. name .. ">")
            attrs[key] = value
            p = close + 1
         end
         local self_closing, after = s:match("^%s*(/?)>()", p)
         assert(after, "a bad tag <" .. name .. "> at byte " .. lt)
         elements[#elements + 1] = { name = name, attrs = attrs, depth = #stack + 1 }
         if self_closing == "" then stack[#stack + 1] = name end
         pos = after
      end
   end
   assert(#stack == 0, "unclosed <" .. tostring(stack[#stack]) .. ">")
   assert(roots == 1, "expected one root element, got " .. roots)
   return elements
end

describe("the XML check itself", function()
   it("accepts well-formed documents and refuses broken ones", function()
      assert.equal(3, #parse_xml('<?xml version="1.0"?>\n<a x="1"><b/><c y=\'&amp;\'>t &lt; u</c></a>\n'))
      for _, bad in ipairs({ "<a><b></a></b>", "<a>", "<a x=1/>", "<a x='1' x='2'/>", "<a>&</a>",
         "<a>1 < 2</a>", "<a/><b/>", "<a y='1'z='2'/>" }) do
         assert.has_error(function() parse_xml(bad) end, nil, bad)
      end
   end)
end)

---------------------------------------------------------------------------

describe("examples", function()
   local srv, env
   setup(function()
      srv = test_server.start{ dataset = "fixture", prefect = 2 }
      env = { PREFECT_API_URL = srv.url }
   end)
   teardown(function() if srv then srv:stop() end end)

   for _, name in ipairs({ "failed.lua", "export.lua", "durations.lua", "timeline.lua", "follow.lua" }) do
      describe(name, function()
         it("prints its usage with --help", function()
            local r = example(name, { "--help" })
            assert.equal(0, r.status)
            assert.matches("^usage: " .. name:gsub("%.", "%%."), r.out)
            assert.matches("PREFECT_API_URL", r.out)
         end)

         it("fails with one line and exit 1 on a wrong argument", function()
            local r = example(name, { "--bogus" }, env)
            assert.equal(1, r.status)
            assert.equal(name .. ": unknown argument --bogus (see --help)\n", r.err)
            r = example(name, { "--retries", "many" }, env)
            assert.equal(1, r.status)
            assert.equal(1, #lines(r.err), r.err)
            assert.matches("%-%-retries needs a whole number", r.err)
         end)

         it("fails with one line and exit 1 when the server is unreachable", function()
            local args = { "--retries", "0" }
            if name == "timeline.lua" then
               args[3], args[4] = "--flow-run", "cfbb3a8b-6fce-415b-ac8e-7404cc6de155"
            end
            local url = "http://127.0.0.1:" .. closed_port() .. "/api"
            local r = example(name, args, { PREFECT_API_URL = url })
            assert.equal(1, r.status)
            assert.equal(1, #lines(r.err), r.err)
            assert.matches("^" .. name:gsub("%.", "%%.") .. ": prefect: connect ", r.err)
            assert.not_matches("traceback", r.err)
            assert.equal("", r.out)
         end)
      end)
   end

   describe("failed.lua", function()
      -- What the fixture holds: failed or crashed runs that started, their flow runs, and how
      -- many have none.
      local want, n_flow_runs, without = 0, 0, 0
      local flow_runs = {}
      for _, run in ipairs(dataset.task_runs) do
         local failed = run.state_type == "FAILED" or run.state_type == "CRASHED"
         if failed and run.start_time ~= cjson.null then
            want = want + 1
            if run.flow_run_id == cjson.null then
               without = without + 1
            elseif not flow_runs[run.flow_run_id] then
               flow_runs[run.flow_run_id] = true
               n_flow_runs = n_flow_runs + 1
            end
         end
      end
      local recent, recent_env
      lazy_setup(function()
         recent = test_server.start{ dataset = "fixture", prefect = 2, relative_time = true }
         recent_env = { PREFECT_API_URL = recent.url }
      end)
      lazy_teardown(function() if recent then recent:stop() end end)

      it("lists the last day's failed and crashed runs grouped by flow run, by name", function()
         assert.is_true(without > 0 and n_flow_runs > 1) -- the fixture has both kinds
         local r = example("failed.lua", {}, recent_env)
         assert.equal(0, r.status, r.err)
         local out = lines(r.out)
         assert.equal(("%d failed or crashed task runs in %d flow runs, %d without one (last 24 hours)")
            :format(want, n_flow_runs, without), out[1])
         assert.equal(want + 4, #out) -- summary, blank, header, rule, one row a run
         local header = out[3]
         assert.matches("^FLOW +FLOW RUN +TASK RUN +STATE", header)
         local fr_col, task_col = header:find("FLOW RUN", 1, true), header:find("TASK RUN", 1, true)
         local function cell(line, from, to) return (line:sub(from, to):gsub("%s+$", "")) end
         -- each flow run heads its group once, named, under its flow's name: by flow, then flow
         -- run, the runs without one last
         local heads, want_heads, flow = {}, {}, nil
         for i = 5, #out do
            local this_flow, fr = cell(out[i], 1, fr_col - 1), cell(out[i], fr_col, task_col - 1)
            -- a flow's name heads its first flow run only
            if this_flow ~= "" then
               assert.are_not.equal(flow, this_flow)
               flow = this_flow
            end
            if fr ~= "" then heads[#heads + 1] = flow .. " / " .. fr end
         end
         local flow_name, fr_name = {}, {}
         for _, f in ipairs(dataset.flows) do flow_name[f.id] = f.name end
         for _, fr in ipairs(dataset.flow_runs) do
            fr_name[fr.id] = flow_name[fr.flow_id] .. " / " .. fr.name
         end
         for id in pairs(flow_runs) do want_heads[#want_heads + 1] = fr_name[id] end
         table.sort(want_heads)
         want_heads[#want_heads + 1] = "- / (no flow run)"
         assert.same(want_heads, heads)
      end)

      it("finds nothing in the last day of a server whose runs are older", function()
         local r = example("failed.lua", {}, env)
         assert.equal(0, r.status, r.err)
         assert.equal("0 failed or crashed task runs in 0 flow runs (last 24 hours)\n", r.out)
      end)

      it("says when --limit cut the list short", function()
         local r = example("failed.lua", { "--limit", "5" }, recent_env)
         assert.equal(0, r.status, r.err)
         local out = lines(r.out)
         assert.matches("^5 failed or crashed task runs in %d+ flow runs", out[1])
         assert.equal(("--limit 5 cut the list short: %d runs match; raise --limit to see them all")
            :format(want), out[2])
         assert.equal(5 + 5, #out)
         r = example("failed.lua", { "--limit", tostring(want) }, recent_env)
         assert.equal(want + 4, #lines(r.out))
         assert.not_matches("cut the list", r.out)
      end)
   end)

   describe("follow.lua", function()
      local recent
      lazy_setup(function()
         recent = test_server.start{ dataset = "fixture", prefect = 2, relative_time = true }
      end)
      lazy_teardown(function() if recent then recent:stop() end end)

      -- The fixture's runs that ended FAILED or CRASHED, oldest first (ties by id), as the example
      -- prints them.
      local function ended_failed()
         local runs = {}
         for _, run in ipairs(dataset.task_runs) do
            local failed = run.state_type == "FAILED" or run.state_type == "CRASHED"
            if failed and run.end_time ~= cjson.null then runs[#runs + 1] = run end
         end
         table.sort(runs, function(a, b)
            if a.end_time ~= b.end_time then return a.end_time < b.end_time end
            return a.id < b.id
         end)
         return runs
      end

      it("prints each failed or crashed run of the last day once, oldest first, then stops", function()
         local r = example("follow.lua", { "--since", "1440", "--polls", "2", "--interval", "0.05" },
            { PREFECT_API_URL = recent.url })
         assert.equal(0, r.status, r.err)
         assert.equal("", r.err)
         local want = ended_failed()
         assert.is_true(#want > 10)
         local out = lines(r.out)
         assert.equal(#want, #out)
         for i, run in ipairs(want) do
            local pattern = "^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d  " .. run.state_name .. " +"
               .. run.name:gsub("%p", "%%%0") .. "  %(flow run " .. tostring(run.flow_run_id == cjson.null
               and "none" or run.flow_run_id):gsub("%p", "%%%0") .. "%)$"
            assert.matches(pattern, out[i])
         end
      end)

      it("prints nothing that had ended before it started", function()
         local r = example("follow.lua", { "--polls", "2", "--interval", "0.05" },
            { PREFECT_API_URL = recent.url })
         assert.equal(0, r.status, r.err)
         assert.equal("", r.out)
      end)

      it("refuses a state that is not one, and --interval 0, in one line", function()
         local r = example("follow.lua", { "--state", "FIALED", "--polls", "1" }, env)
         assert.equal(1, r.status)
         assert.equal(1, #lines(r.err), r.err)
         assert.matches('^follow%.lua: state%[1%]: "FIALED" is not a state type .*did you mean "FAILED"%?',
            r.err)
         r = example("follow.lua", { "--interval", "0" }, env)
         assert.equal("follow.lua: --interval needs a number above 0 (see --help)\n", r.err)
      end)
   end)

   describe("export.lua", function()
      it("writes every run as one JSON line, nulls kept, with plain progress lines", function()
         local r = example("export.lua", {}, env)
         assert.equal(0, r.status, r.err)
         local by_id = {}
         for _, run in ipairs(dataset.task_runs) do by_id[run.id] = run end
         local out, seen = lines(r.out), {}
         assert.equal(#dataset.task_runs, #out)
         for _, line in ipairs(out) do
            local run = cjson.decode(line)
            assert.is_nil(seen[run.id])
            seen[run.id] = true
            local want = assert(by_id[run.id], "an id not in the dataset")
            assert.equal(want.name, run.name)
            assert.equal(want.state_type, run.state_type)
            assert.equal(want.start_time, run.start_time) -- a string, or cjson.null when there is none
            assert.same(want.tags, run.tags)
            assert.equal(want.state.message, run.state.message)
         end
         -- not a terminal: plain progress lines, the count first and the total at the end
         local progress = lines(r.err)
         local total = #dataset.task_runs
         assert.equal(("export: 0/%d runs (0%%), 0 runs/s, ETA -"):format(total), progress[1])
         assert.matches(("^export: %d/%d runs %%(100%%%%%%), %%d+ runs/s, ETA 0s$"):format(total, total),
            progress[#progress])
      end)

      it("exports only the matching runs, up to the limit", function()
         local failed = 0
         for _, run in ipairs(dataset.task_runs) do
            if run.state_type == "FAILED" then failed = failed + 1 end
         end
         local r = example("export.lua", { "--state", "failed", "--no-progress" }, env)
         assert.equal(0, r.status, r.err)
         assert.equal("", r.err)
         assert.equal(failed, #lines(r.out))
         for _, line in ipairs(lines(r.out)) do assert.equal("FAILED", cjson.decode(line).state_type) end
         r = example("export.lua", { "--limit", "7" }, env)
         assert.equal(7, #lines(r.out))
         assert.matches("export: 7/7 runs", r.err)
      end)

      it("refuses a state that is not one, in one line that names no file of the script", function()
         local r = example("export.lua", { "--state", "DONE" }, env)
         assert.equal(1, r.status)
         assert.equal(1, #lines(r.err))
         assert.matches('^export%.lua: state%[1%]: "DONE" is not a state type %(SCHEDULED, .*'
            .. '%(see %-%-help%)\n$', r.err)
         assert.not_matches("%.lua:%d", r.err)
         assert.equal("", r.out)
      end)
   end)

   describe("durations.lua", function()
      -- nearest-rank, as the script documents
      local function percentile(sorted, p)
         return sorted[math.max(1, math.ceil(p / 100 * #sorted))]
      end
      local function seconds(cell)
         return tonumber(cell:match("^([%d.]+)s$"))
      end

      it("prints p50, p90, p99 and max per task key, aligned", function()
         local by_key = {}
         for _, run in ipairs(dataset.task_runs) do
            if run.end_time ~= cjson.null and type(run.total_run_time) == "number" then
               by_key[run.task_key] = by_key[run.task_key] or {}
               table.insert(by_key[run.task_key], run.total_run_time)
            end
         end
         local r = example("durations.lua", {}, env)
         assert.equal(0, r.status, r.err)
         local out = lines(r.out)
         assert.matches("^300 task runs read, %d+ finished, %d+ task keys$", out[1])
         local header, rule = out[3], out[4]
         assert.matches("^TASK KEY%s+RUNS%s+P50%s+P90%s+P99%s+MAX$", header)
         assert.matches("^%-+  %-+  %-+  %-+  %-+  %-+$", rule)
         local rows = 0
         for i = 5, #out do
            local line = out[i]
            assert.equal(#rule, #line, "every row ends where the rule does (numbers right-aligned)")
            local key, n, p50, p90, p99, max = line:match("^(%S+)%s+(%d+)%s+(%S+)%s+(%S+)%s+(%S+)%s+(%S+)$")
            assert.is_truthy(key, line)
            local list = assert(by_key[key], "an unknown task key " .. key)
            table.sort(list)
            assert.equal(#list, tonumber(n))
            for _, pair in ipairs({ { p50, 50 }, { p90, 90 }, { p99, 99 } }) do
               assert.is_true(math.abs(seconds(pair[1]) - percentile(list, pair[2])) < 0.0006, line)
            end
            assert.is_true(math.abs(seconds(max) - list[#list]) < 0.0006, line)
            rows = rows + 1
         end
         local keys = 0
         for _ in pairs(by_key) do keys = keys + 1 end
         assert.equal(keys, rows)
      end)
   end)

   describe("timeline.lua", function()
      local FLOW_RUN = "cfbb3a8b-6fce-415b-ac8e-7404cc6de155"

      it("draws well-formed SVG with one bar per task run, coloured by state, legend and axis", function()
         local states, want = {}, 0
         for _, run in ipairs(dataset.task_runs) do
            if run.flow_run_id == FLOW_RUN then
               want = want + 1
               states[run.state_type] = (states[run.state_type] or 0) + 1
            end
         end
         assert.is_true(want > 10)
         local r = example("timeline.lua", { "--flow-run", FLOW_RUN }, env)
         assert.equal(0, r.status, r.err)
         -- titled by name: the flow run's and its flow's, not the id given
         local fr_name, flow_name
         for _, fr in ipairs(dataset.flow_runs) do if fr.id == FLOW_RUN then fr_name = fr.name end end
         for _, fr in ipairs(dataset.flow_runs) do
            if fr.id == FLOW_RUN then
               for _, f in ipairs(dataset.flows) do if f.id == fr.flow_id then flow_name = f.name end end
            end
         end
         local title = ">Task runs of flow run " .. fr_name .. " (flow " .. flow_name .. ")</text>"
         assert.truthy(r.out:find(title, 1, true), r.out:sub(1, 400))
         local elements = parse_xml(r.out)
         assert.equal("svg", elements[1].name)
         local bars, colour_of, legend_texts, axis_labels = {}, {}, 0, 0
         for _, e in ipairs(elements) do
            if e.name == "rect" and e.attrs.class == "run" then
               local state = e.attrs["data-state"]
               bars[state] = (bars[state] or 0) + 1
               -- one colour per state, a different one for each
               colour_of[state] = colour_of[state] or e.attrs.fill
               assert.equal(colour_of[state], e.attrs.fill)
               assert.is_true(tonumber(e.attrs.width) > 0)
            end
         end
         assert.same(states, bars)
         local colours = {}
         for state, colour in pairs(colour_of) do
            assert.is_nil(colours[colour], state .. " shares its colour")
            colours[colour] = true
         end
         for tag in r.out:gmatch('<g class="legend">(.-)</g>') do
            for _ in tag:gmatch("<text") do legend_texts = legend_texts + 1 end
         end
         for tag in r.out:gmatch('<g class="axis"[^>]*>(.-)</g>') do
            for _ in tag:gmatch("<text") do axis_labels = axis_labels + 1 end
         end
         local n_states = 0
         for _ in pairs(states) do n_states = n_states + 1 end
         assert.equal(n_states, legend_texts)
         assert.is_true(axis_labels >= 3, "axis labels: " .. axis_labels)
      end)

      it("writes to --output, and escapes what it prints", function()
         local path = os.tmpname()
         finally(function() os.remove(path) end)
         local r = example("timeline.lua", { "--flow-run", FLOW_RUN, "--output", path }, env)
         assert.equal(0, r.status, r.err)
         assert.equal("", r.out)
         local svg = read_file(path)
         parse_xml(svg)
         -- the dataset's "50%-sample" task names come through as text
         assert.matches("50%%%-sample", svg)
      end)

      it("needs --flow-run, and says when the flow run has no task runs", function()
         local r = example("timeline.lua", {}, env)
         assert.equal(1, r.status)
         assert.equal("timeline.lua: --flow-run ID or NAME is required (see --help)\n", r.err)
         r = example("timeline.lua", { "--flow-run", "00000000-0000-0000-0000-000000000000" }, env)
         assert.equal(1, r.status)
         assert.equal("timeline.lua: no task runs in flow run 00000000-0000-0000-0000-000000000000\n", r.err)
      end)
   end)
end)

---------------------------------------------------------------------------

describe("examples given a flow run's name for --flow-run", function()
   local FLOW_RUN = "cfbb3a8b-6fce-415b-ac8e-7404cc6de155"
   local name_of = {}
   for _, fr in ipairs(dataset.flow_runs) do name_of[fr.id] = fr.name end
   local srv, env, twins, twins_env, dir
   setup(function()
      srv = test_server.start{ dataset = "fixture", prefect = 2 }
      env = { PREFECT_API_URL = srv.url }
      -- The fixture with two flow runs under one name, as Prefect allows.
      local ds = require("prefect.testing.dataset")
      local data = ds.load(FIXTURE)
      data.flow_runs[1].name, data.flow_runs[2].name = "fr-twin", "fr-twin"
      dir = disk.tmpdir()
      local doc = ds.json.object({ "server_version", "api_version", "flows", "flow_runs", "task_runs" }, data)
      disk.write(dir .. "/twins.json", ds.json.encode(doc))
      twins = test_server.start{ dataset = dir .. "/twins.json" }
      twins_env = { PREFECT_API_URL = twins.url }
   end)
   teardown(function()
      if srv then srv:stop() end
      if twins then twins:stop() end
      if dir then disk.remove_tree(dir) end
   end)

   it("reads the same runs as with its id", function()
      local name = assert(name_of[FLOW_RUN])
      for _, case in ipairs({ { "export.lua", "--no-progress" }, { "durations.lua" }, { "timeline.lua" } }) do
         local by_id = example(case[1], { "--flow-run", FLOW_RUN, case[2] }, env)
         local by_name = example(case[1], { "--flow-run", name, case[2] }, env)
         assert.equal(0, by_id.status, by_id.err)
         assert.equal(0, by_name.status, by_name.err)
         assert.equal("", by_name.err)
         -- only the timeline's title could say which was given; it names the flow run it read
         local title = "Task runs of flow run "
         local at = by_id.out:find(title .. FLOW_RUN, 1, true)
         local want = by_id.out
         if at then want = want:sub(1, at - 1) .. title .. name .. want:sub(at + #title + #FLOW_RUN) end
         assert.equal(want, by_name.out, case[1])
         assert.is_true(#by_name.out > 200, case[1])
      end
   end)

   it("says which ids share a name when one chart needs one flow run", function()
      local ids = { dataset.flow_runs[1].id, dataset.flow_runs[2].id }
      table.sort(ids)
      local r = example("timeline.lua", { "--flow-run", "fr-twin" }, twins_env)
      assert.equal(1, r.status)
      assert.equal(("timeline.lua: 2 flow runs are named fr-twin (%s, %s): give one of their ids\n")
         :format(ids[1], ids[2]), r.err)
      r = example("timeline.lua", { "--flow-run", ids[2] }, twins_env)
      assert.equal(0, r.status, r.err)
   end)

   it("finds nothing under a name no flow run has, and says so in one line", function()
      local r = example("timeline.lua", { "--flow-run", "fr-omega" }, env)
      assert.equal(1, r.status)
      assert.equal("timeline.lua: no task runs in flow run fr-omega\n", r.err)
      r = example("export.lua", { "--flow-run", "fr-omega", "--no-progress" }, env)
      assert.equal(0, r.status, r.err)
      assert.equal("", r.out)
   end)
end)

---------------------------------------------------------------------------

describe("the C host (examples/host)", function()
   local srv, dir
   setup(function()
      srv = test_server.start{ dataset = { generate = 2000, seed = 1, shape = 3 } }
      dir = disk.tmpdir()
   end)
   teardown(function()
      if srv then srv:stop() end
      if dir then disk.remove_tree(dir) end
   end)

   it("reads every run in a 60 fps loop against a slow server, and reports every frame", function()
      local build = sh(("cc -std=c99 -Wall -Wextra -Werror -pedantic -D_POSIX_C_SOURCE=200809L -O2"
         .. " -o %s %s %s $(pkg-config --cflags --libs lua5.4 libcurl) -lpthread"):format(
         quote(dir .. "/host"), quote(ROOT .. "/examples/host/host.c"), ROOT .. "/csrc/*.c"))
      assert.equal(0, build.status, build.err)
      -- No LUA_CPATH (see sh): prefect.core can only come from the host itself. --max-frame-ms 0:
      -- the host reports its frame times without checking them, because how late a frame starts
      -- depends on what else the machine runs (docs/embedding.md has the figures). Checked here:
      -- every run arrives once, the loop kept going while the query was in flight, and the report.
      local csv = dir .. "/frames.csv"
      local r = sh(("%s --max-frame-ms 0 --frames-csv %s %s --fault %s"):format(quote(dir .. "/host"),
         quote(csv), quote(ROOT .. "/examples/host/frames.lua"),
         quote("delay_ms=300; drip_bytes=2048; drip_ms=5")), { PREFECT_API_URL = srv.url })
      io.stderr:write("\n[examples_spec] C host:\n", r.out, r.err)
      assert.equal(0, r.status, r.out .. r.err)
      assert.equal("", r.err)
      assert.matches("^frames%.lua: prefect%.core scm%-1 %(linked into the host%), 2000 runs to read\n",
         r.out)
      assert.matches("\nruns: 2000 received, 2000 distinct, 2000 expected %(client:count%)\n", r.out)
      assert.matches("\nok     every run received once %(2000 of 2000%)\n1 passed, 0 failed\n$", r.out)
      -- Ten pages, each 300 ms late and then dripped: a loop that waited for the server would have
      -- run a frame or so a page.
      local frames = tonumber(r.out:match("\nframes: (%d+) in [%d.]+ s with the query in flight "
         .. "%(budget 16%.7 ms a frame%)\n") or "")
      assert.is_true(frames ~= nil and frames > 30, "the read took " .. tostring(frames) .. " frames")

      -- N stands for a figure in the patterns below
      local function figures(pattern) return (pattern:gsub("N", function() return "[%d.]+" end)) end
      local summary = ": %d+ frames; frame time worst N ms, p99 N ms, median N ms, mean N ms; %d+ over the"
         .. " budget %+ 2 ms\n  woken late: worst N ms, p99 N ms, median N ms[^\n]*\n"
      for _, phase in ipairs({ "idle loop, no query", "query in flight" }) do
         assert.matches(figures("\n" .. phase .. summary), r.out)
      end
      assert.matches(figures("\n  in app%.frame: worst N ms, p99 N ms, median N ms; worst in poll N ms;"
         .. " Lua heap peak %d+ KiB\n"), r.out)
      local _, worst_lines = r.out:gsub(figures("\n  worst frame #%d+: N ms = busy N ms[^\n]* %+ asleep N ms"
         .. " %+ woken N ms late"), "")
      assert.equal(2, worst_lines)

      -- The CSV: a header, then a line per frame, the idle ones first, numbered from 1 in each phase.
      local rows = lines(read_file(csv))
      assert.equal("phase,frame,start,frame_time,busy,app_frame,poll,gc,asleep,woken_late,cpu_wait,"
         .. "heap_kib", rows[1])
      local count = { idle = 0, query = 0 }
      for k = 2, #rows do
         local fields = {}
         for field in (rows[k] .. ","):gmatch("([^,]*),") do fields[#fields + 1] = field end
         assert.equal(12, #fields, rows[k])
         local phase = fields[1]
         assert.is_truthy(count[phase], rows[k])
         assert.is_true(phase == "query" or count.query == 0, "an idle frame after the query's: " .. rows[k])
         count[phase] = count[phase] + 1
         assert.equal(tostring(count[phase]), fields[2])
         -- the script reports its poll time for every frame; the empty idle frames have none
         assert.equal(phase == "query", fields[7] ~= "", rows[k])
      end
      assert.is_true(count.idle > 30, "idle frames: " .. count.idle)
      assert.equal(frames, count.query)
   end)
end)
