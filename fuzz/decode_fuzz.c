/* libFuzzer target for the streaming decoder (csrc/decode*.c).
 *
 * Input: one flag byte, then the document. The flags pick decoder options and
 * how the document is cut into feed() slices (the flags being full, a hash of
 * the input picks max_size, the shape option and exclude). For every input the document is
 * decoded in one shot (decode()'s one pass, which hands what it does not accept
 * to the scanner) and streamed through feed/next at pseudo-random split points
 * (the scanner, then the builder); the two must agree: both succeed with equal values (element by
 * element for a top-level array, with integer/float subtypes and the sign of
 * zero compared), or both fail at the same byte offset with the same kind and
 * message (but for max_size, which decode() checks before reading). Any disagreement
 * aborts. Then both are run again under an allocator that fails once, after
 * a few hundred allocations, so that Lua raises out of memory in the middle
 * of building tables: that may fail, but must not crash or leak
 * (LeakSanitizer), and a decoder whose build was cut short must not claim to
 * be done. Memory errors are the sanitizers' job. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "decode.h"

static const char check_lua[] =
    "local core, s, flags, seed = ...\n"
    "local opts = {}\n"
    "if flags % 2 >= 1 then opts.fields = {'id', 'state.type', 'a.b', {'x.y'}} end\n"
    "if flags % 4 >= 2 then opts.timestamps = 'epoch'; opts.timestamp_fields = {'t', 'a.t'} end\n"
    "if flags % 8 >= 4 then opts.null = false end\n"
    "if flags % 16 >= 8 then opts.array_mt = {} end\n"
    "if flags % 32 >= 16 then opts.max_depth = 6 end\n"
    "if seed % 3 == 1 then opts.exclude = {'state.state_details', 'b', 'a.c', {'x.y'}, 'id.z'} "
    "end\n"
    "if seed % 5 == 0 then opts.max_size = math.max(1, #s - seed % 8) end\n"
    "local shape = ({'runs', 'run', 'count'})[seed % 7]\n"
    "if shape then opts.shape = shape end\n"
    "local mode = math.floor(flags / 32) % 8\n"
    "local function same(a, b)\n"
    "  if type(a) ~= type(b) then return false end\n"
    "  if type(a) == 'number' then\n"
    "    if math.type and math.type(a) ~= math.type(b) then return false end\n"
    "    if a ~= a then return b ~= b end\n"
    "    return a == b and 1 / a == 1 / b\n"
    "  end\n"
    "  if type(a) ~= 'table' then return a == b end\n"
    "  if getmetatable(a) ~= getmetatable(b) then return false end\n"
    "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "local function head(msg) return (msg:gsub(' near .*$', '')) end\n"
    "local whole, e0 = core.decode(s, opts)\n"
    "local err, off, kind\n"
    "if whole == nil then err, off, kind = e0.message, e0.offset, e0.kind end\n"
    "if whole == nil and tostring(e0) ~= err then error('MISMATCH: tostring is not the message') "
    "end\n"
    "local d = core.decoder(opts)\n"
    "local got, i, x = {}, 1, seed\n"
    "local serr, soff, skind\n"
    "local function failed(e) serr, soff, skind = e.message, e.offset, e.kind end\n"
    "while i <= #s + 1 do\n"
    "  x = (x * 1103515245 + 12345) % 2147483648\n"
    "  local n = mode == 0 and 1 or mode == 1 and (x % 7 + 1) or mode == 2 and (x % 64 + 1)\n"
    "            or mode == 3 and math.max(#s, 1) or (x % 4096 + 1)\n"
    "  local ok, e = d:feed(s:sub(i, i + n - 1))\n"
    "  if not ok then failed(e) break end\n"
    "  i = i + n\n"
    "  if x % 3 == 0 then\n"
    "    while true do\n"
    "      local v, e2 = d:next()\n"
    "      if v == nil then if e2 then failed(e2) end break end\n"
    "      got[#got + 1] = v\n"
    "    end\n"
    "    if serr then break end\n"
    "  end\n"
    "end\n"
    "if not serr then\n"
    "  local ok, e = d:finish()\n"
    "  if not ok then failed(e) end\n"
    "end\n"
    "while true do\n"
    "  local v, e2 = d:next()\n"
    "  if v == nil then if e2 then failed(e2) end break end\n"
    "  got[#got + 1] = v\n"
    "end\n"
    "if whole == nil then\n"
    "  assert(err and off, 'decode failed without message')\n"
    "  if not serr then error('MISMATCH: stream ok, decode failed: ' .. err) end\n"
    "  if soff ~= off or head(serr) ~= head(err) or skind ~= kind then\n"
    "    -- decode() refuses an oversized document before reading it; a stream\n"
    "    -- can meet a syntax error first\n"
    "    local sized = opts.max_size and err:find('max_size', 1, true)\n"
    "    if not (sized and soff <= opts.max_size) then\n"
    "      error('MISMATCH: errors differ: ' .. err .. ' / ' .. serr)\n"
    "    end\n"
    "  end\n"
    "  if d:done() then error('MISMATCH: done after an error') end\n"
    "  return\n"
    "end\n"
    "if serr then error('MISMATCH: decode ok, stream failed: ' .. serr) end\n"
    "if not d:done() then error('MISMATCH: not done') end\n"
    "if type(whole) == 'table' and s:match('^[ \\t\\r\\n]*%[') then\n"
    "  if #got ~= #whole then error('MISMATCH: element count') end\n"
    "  local null = opts.null\n"
    "  if null == nil then null = core.null end\n"
    "  for k = 1, #got do\n"
    "    local w = whole[k]\n"
    "    if w == core.null and null ~= core.null then w = null end\n"
    "    if not same(got[k], w) then error('MISMATCH: element ' .. k) end\n"
    "  end\n"
    "else\n"
    "  if #got ~= 1 or not same(got[1], whole) then error('MISMATCH: value') end\n"
    "end\n"
    "local function memory_error(e) return tostring(e):find('memory') end\n"
    "for _, budget in ipairs({seed % 64, seed % 600}) do\n"
    "  local d2 = core.decoder(opts)\n"
    "  set_budget(budget)\n"
    "  local ok1, r1 = pcall(core.decode, s, opts)\n"
    "  local ok2, r2 = pcall(function()\n"
    "    d2:feed(s:sub(1, #s // 2)); d2:next(); d2:feed(s:sub(#s // 2 + 1)); d2:finish()\n"
    "    while d2:next() ~= nil do end\n"
    "  end)\n"
    "  set_budget(-1)\n"
    "  if not ok1 and not memory_error(r1) then error('MISMATCH: decode raised ' .. tostring(r1)) "
    "end\n"
    "  if not ok2 and not memory_error(r2) then error('MISMATCH: stream raised ' .. tostring(r2)) "
    "end\n"
    "  if not ok2 then\n"
    "    local v, e = d2:next()\n"
    "    if v ~= nil then while d2:next() ~= nil do end; v, e = d2:next() end\n"
    "    if d2:done() and e then error('MISMATCH: done after out of memory') end\n"
    "  end\n"
    "end\n";

static long alloc_budget = -1; /* allocations before the one that fails; -1: none fails */
static int budget_armed;       /* between set_budget(n) and set_budget(-1) */

static void *fuzz_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    /* One allocation fails, then memory is back: Lua requires shrinking to
     * succeed, and a finalizer that runs while memory is still exhausted can
     * fail before it starts (a Lua limitation, not a leak of ours). */
    if (alloc_budget >= 0 && (ptr == NULL || nsize > osize)) {
        if (alloc_budget-- == 0)
            return NULL;
    }
    return realloc(ptr, nsize);
}

static int set_budget(lua_State *L1)
{
    alloc_budget = (long)luaL_checkinteger(L1, 1);
    budget_armed = alloc_budget >= 0;
    return 0;
}

/* A fresh Lua state for every input, closed at the end, so every finalizer
 * runs and LeakSanitizer sees exactly what one input leaked. */
static lua_State *setup(void)
{
    lua_State *L = lua_newstate(fuzz_alloc, NULL);
    luaL_openlibs(L);
    lua_newtable(L);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    dec_register(L);
    lua_setglobal(L, "core");
    lua_pushcfunction(L, set_budget);
    lua_setglobal(L, "set_budget");
    if (luaL_loadbuffer(L, check_lua, sizeof check_lua - 1, "=check") != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        abort();
    }
    return L;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t seed = 2166136261u;
    lua_State *L;
    if (size < 1)
        return 0;
    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 16777619u;
    L = setup();
    lua_getglobal(L, "core");
    lua_pushlstring(L, (const char *)data + 1, size - 1);
    lua_pushinteger(L, data[0]);
    lua_pushinteger(L, (lua_Integer)(seed % 2147483647u));
    if (lua_pcall(L, 4, 0, 0) != LUA_OK) {
        /* out of memory outside the checked calls, while the budget was on,
         * is the harness's own failure, not the decoder's */
        int harness_oom = budget_armed;
        alloc_budget = -1;
        budget_armed = 0;
        if (!harness_oom) {
            fprintf(stderr, "decode_fuzz: %s\n", lua_tostring(L, -1));
            abort();
        }
    }
    lua_close(L);
    return 0;
}
