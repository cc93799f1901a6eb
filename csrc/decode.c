/* Streaming JSON decoder: bytes in, Lua tables out.
 *
 * Two passes over each value, split so that the first never touches Lua:
 *
 * 1. The scanner (dec_append, pure C) validates the bytes as they arrive, at
 *    any split point, and records for every object and array its member
 *    count, the offset of its closing bracket and where its subtree's
 *    records end. When a top-level array element (or a top-level non-array
 *    value) is complete it is queued as an element.
 * 2. The builder (dec_next, Lua side) walks a queued element's bytes, trusting
 *    them, and creates each table at its final size. Skipped members (the
 *    fields option) jump over containers with the recorded end offsets.
 *    Object keys are kept as ready Lua strings in a table held by the
 *    userdata, found by guessing the key that followed last time (objects
 *    of one kind list their keys in one order), else through a small C hash
 *    of their bytes; decode() shares one such cache between its calls.
 *    Short string values that recur (state names, tags, a flow run's id)
 *    come from a small cache beside the keys on Lua 5.3+, where interning
 *    a string hashes all of it; tables are sized without their null members.
 *
 * Every buffer belongs to the userdata and is freed by __gc, so a Lua error
 * (out of memory) in the middle of building a table leaks nothing; the
 * decoder then reports itself failed.
 *
 * Lua API (its place among the modules: docs/architecture.md):
 *   decode(str [, opts])  -> value | nil, err
 *   decoder([opts])       -> d with d:feed(s), d:finish(), d:next(), d:done(), d:reset()
 * err is the core's error table (core_error.h): {kind = "decode" (not
 * JSON), "too_large" (past max_size) or "protocol" (JSON of the wrong
 * shape), message = "... at byte N near '...'", offset = N}; offsets are
 * 1-based, like string.sub. Once a decoder has failed, d:next() still hands
 * out the elements completed before the error, then returns nil, err on
 * every call until d:reset().
 *
 * Options: null (value for JSON null; default: object members that are null
 * are absent, and null array elements are core.null so array lengths stay
 * right), array_mt (metatable for every array, so empty arrays and objects
 * differ), fields (paths to keep), exclude (paths to leave out: with fields,
 * from what fields keeps), timestamps = "epoch" with
 * timestamp_fields (paths to convert; required with "epoch", ignored
 * otherwise: the decoder knows no field names), max_depth, max_size, shape (what
 * the document must be, checked by the scanner as the bytes arrive, a
 * "protocol" error otherwise: "runs", an array of objects that each have a
 * string "id"; "run", one such object; "count", a JSON integer >= 0). The
 * "id" is looked for in the document, whatever fields or exclude keep.
 * Paths are matched from the root of each element (each task run), through
 * objects: "state.type" is member "type" of member "state". A path can also
 * be given as a list of keys, {"labels", "prefect.flow.id"}, for keys that
 * contain dots. Arrays pass a path through to their elements; a value on a
 * partial path that is not an object is kept whole.
 *
 * Files: decode_scan.c (the scanner), decode_shape.c (the shape option's
 * checks, which the scanner calls), decode_build.c (the builder),
 * decode_time.c (timestamps), this file (options, the userdata and its
 * methods), decode_internal.h (what they share). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_error.h"
#include "decode_internal.h"

int dec_push_error(lua_State *L, const dec_stream *d)
{
    core_push_error(L, d->err_kind ? d->err_kind : "decode", d->err_msg);
    lua_pushinteger(L, (lua_Integer)d->err_off);
    lua_setfield(L, -2, "offset");
    return 2;
}

int dec_next(lua_State *L, int idx)
{
    dec_stream *d = dec_check(L, idx);
    idx = lua_absindex(L, idx);
    if (d->building) {
        /* a Lua error (out of memory) interrupted the last build */
        d->building = 0;
        if (d->kc_shared)
            d->kc->busy = 0;
        d->head = d->tail = 0;
        dec_fail(d, d->base + d->scan, "out of memory while building a value");
    }
    if (d->head < d->tail) {
        lua_getiuservalue(L, idx, 1);
        dec_build_elem(L, d, lua_gettop(L));
        lua_remove(L, -2);
        return 1;
    }
    if (d->failed)
        return dec_push_error(L, d);
    lua_pushnil(L);
    return 1;
}

/* ------------------------------------------------------------ options */

static int tree_add(dec_tree *t, int parent, const char *s, size_t n)
{
    int c = dec_tree_find(t, parent, s, n);
    if (c >= 0)
        return c;
    if (t->n == t->cap) {
        int cap = t->cap * 2;
        dec_node *nodes = realloc(t->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes)
            return -1;
        t->nodes = nodes;
        t->cap = cap;
    }
    if (n > t->ncap - t->nlen) {
        size_t cap = t->ncap ? t->ncap : 64;
        while (cap - t->nlen < n)
            cap *= 2;
        char *names = realloc(t->names, cap);
        if (!names)
            return -1;
        t->names = names;
        t->ncap = cap;
    }
    memcpy(t->names + t->nlen, s, n);
    c = t->n++;
    t->nodes[c].name = t->nlen;
    t->nodes[c].len = n;
    t->nodes[c].child = -1;
    t->nodes[c].leaf = 0;
    t->nodes[c].nchild = 0;
    t->nodes[c].sibling = t->nodes[parent].child;
    t->nodes[parent].child = c;
    t->nodes[parent].nchild++;
    t->nlen += n;
    return c;
}

static void tree_init(lua_State *L, dec_tree *t)
{
    t->nodes = malloc(8 * sizeof *t->nodes);
    if (!t->nodes)
        luaL_error(L, "out of memory");
    t->cap = 8;
    t->n = 1;
    t->nodes[0].child = -1;
    t->nodes[0].sibling = -1;
    t->nodes[0].nchild = 0;
    t->nodes[0].leaf = 0;
    t->nodes[0].name = t->nodes[0].len = 0;
}

/* Adds one path, a dotted string or a list of keys, from the value on top
 * of the stack. */
static void tree_add_path(lua_State *L, dec_tree *t, const char *opt, lua_Integer i)
{
    int node = 0;
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n), *end = s + n;
        for (;;) {
            const char *dot = memchr(s, '.', (size_t)(end - s));
            const char *stop = dot ? dot : end;
            if (stop == s)
                luaL_error(L, "decoder option '%s'[%d]: empty key in path", opt, (int)i);
            node = tree_add(t, node, s, (size_t)(stop - s));
            if (node < 0)
                luaL_error(L, "out of memory");
            if (!dot)
                break;
            s = dot + 1;
        }
    } else if (lua_type(L, -1) == LUA_TTABLE && lua_rawlen(L, -1) > 0) {
        size_t len = lua_rawlen(L, -1);
        for (size_t k = 1; k <= len; k++) {
            size_t n;
            const char *s;
            lua_rawgeti(L, -1, (lua_Integer)k);
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "decoder option '%s'[%d]: path keys must be strings", opt, (int)i);
            s = lua_tolstring(L, -1, &n);
            node = tree_add(t, node, s, n);
            if (node < 0)
                luaL_error(L, "out of memory");
            lua_pop(L, 1);
        }
    } else {
        luaL_error(L, "decoder option '%s'[%d]: a path string or a list of keys expected", opt,
                   (int)i);
    }
    t->nodes[node].leaf = 1;
}

static void tree_from_option(lua_State *L, dec_tree *t, int opts, const char *opt)
{
    lua_getfield(L, opts, opt);
    if (lua_type(L, -1) != LUA_TTABLE)
        luaL_error(L, "decoder option '%s': a list of paths expected", opt);
    tree_init(L, t);
    size_t len = lua_rawlen(L, -1);
    for (size_t i = 1; i <= len; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i);
        tree_add_path(L, t, opt, (lua_Integer)i);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static size_t size_option(lua_State *L, int opts, const char *opt, size_t dflt, size_t max)
{
    size_t v = dflt;
    lua_getfield(L, opts, opt);
    if (!lua_isnil(L, -1)) {
        lua_Number n = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || n < 1 || n != n || n > (lua_Number)max ||
            n != (lua_Number)(size_t)n) {
            char most[32];
            snprintf(most, sizeof most, "%zu", max);
            luaL_error(L, "decoder option '%s': a positive integer expected (at most %s)", opt,
                       most);
        }
        v = (size_t)n;
    }
    lua_pop(L, 1);
    return v;
}

static void read_options(lua_State *L, dec_stream *d, int opts, int uv)
{
    static const char *const known[] = {
        "null",     "array_mt", "fields",  "timestamps", "max_depth", "timestamp_fields",
        "max_size", "shape",    "exclude", NULL};
    static const char *const shapes[] = {"runs", "run", "count", NULL};
    d->max_depth = DEC_DEFAULT_MAX_DEPTH;
    d->max_size = DEC_DEFAULT_MAX_SIZE;
    if (!opts)
        return;
    lua_pushnil(L);
    while (lua_next(L, opts)) {
        int i;
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "decoder options: keys must be strings");
        for (i = 0; known[i]; i++)
            if (strcmp(known[i], lua_tostring(L, -1)) == 0)
                break;
        if (!known[i])
            luaL_error(L, "decoder option '%s' is unknown", lua_tostring(L, -1));
    }
    lua_getfield(L, opts, "null");
    if (!lua_isnil(L, -1)) {
        d->has_null = 1;
        lua_rawseti(L, uv, UV_NULL);
    } else {
        lua_pop(L, 1);
    }
    lua_getfield(L, opts, "array_mt");
    if (lua_type(L, -1) == LUA_TTABLE) {
        d->has_array_mt = 1;
        lua_rawseti(L, uv, UV_ARRAY_MT);
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "decoder option 'array_mt': a table expected");
    } else {
        lua_pop(L, 1);
    }
    lua_getfield(L, opts, "fields");
    d->use_fields = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (d->use_fields)
        tree_from_option(L, &d->fields, opts, "fields");
    lua_getfield(L, opts, "exclude");
    d->use_exclude = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (d->use_exclude)
        tree_from_option(L, &d->exclude, opts, "exclude");
    lua_getfield(L, opts, "timestamps");
    if (!lua_isnil(L, -1)) {
        const char *ts = lua_tostring(L, -1);
        if (lua_type(L, -1) != LUA_TSTRING || (strcmp(ts, "epoch") && strcmp(ts, "string")))
            luaL_error(L, "decoder option 'timestamps': \"epoch\" or \"string\" expected");
        d->use_stamps = strcmp(ts, "epoch") == 0;
    }
    lua_pop(L, 1);
    /* Which fields are timestamps is the caller's knowledge (prefect.options
     * holds Prefect's): converting none of them silently would be a
     * surprise, so "epoch" without the list is misuse. */
    lua_getfield(L, opts, "timestamp_fields");
    if (d->use_stamps && lua_isnil(L, -1))
        luaL_error(L, "decoder option 'timestamps' = \"epoch\" needs 'timestamp_fields' (the paths "
                      "to convert)");
    lua_pop(L, 1);
    if (d->use_stamps)
        tree_from_option(L, &d->stamps, opts, "timestamp_fields");
    lua_getfield(L, opts, "shape");
    if (!lua_isnil(L, -1)) {
        const char *shape = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
        int i;
        for (i = 0; shapes[i] && strcmp(shapes[i], shape) != 0; i++)
            ;
        if (!shapes[i])
            luaL_error(L, "decoder option 'shape': \"runs\", \"run\" or \"count\" expected");
        d->shape = SHAPE_RUNS + i;
        d->id_depth = d->shape == SHAPE_RUNS ? 2 : d->shape == SHAPE_RUN ? 1 : 0;
    }
    lua_pop(L, 1);
    d->max_depth = (int)size_option(L, opts, "max_depth", DEC_DEFAULT_MAX_DEPTH, DEC_MAX_DEPTH);
    d->max_size = size_option(L, opts, "max_size", DEC_DEFAULT_MAX_SIZE,
                              (size_t)1 << (sizeof(size_t) > 4 ? 50 : 31));
}

/* ------------------------------------------------------------ Lua API */

dec_stream *dec_check(lua_State *L, int idx)
{
    return (dec_stream *)luaL_checkudata(L, idx, DEC_MT);
}

/* Pushes a new decoder with the options at index opts. */
static dec_stream *dec_new(lua_State *L, int opts, int split)
{
    int uv;
    if (lua_isnoneornil(L, opts))
        opts = 0;
    else
        luaL_checktype(L, opts, LUA_TTABLE);
    opts = opts ? lua_absindex(L, opts) : 0;
    dec_stream *d = lua_newuserdatauv(L, sizeof *d, 1);
    memset(d, 0, sizeof *d);
    d->split = split;
    dec_clear(d);
    luaL_getmetatable(L, DEC_MT);
    lua_setmetatable(L, -2);
    lua_createtable(L, 4, 0);
    uv = lua_gettop(L);
    read_options(L, d, opts, uv);
    lua_setiuservalue(L, -2, 1);
    return d;
}

static void dec_release(dec_stream *d)
{
    if (!d->borrowed)
        free(d->buf);
    d->buf = NULL;
    d->borrowed = 0;
    free(d->frames);
    free(d->recs);
    free(d->elems);
    free(d->scratch);
    if (!d->kc_shared)
        free(d->kc);
    else if (d->building)
        d->kc->busy = 0; /* its build was cut short by a Lua error */
    free(d->fields.nodes);
    free(d->fields.names);
    free(d->stamps.nodes);
    free(d->stamps.names);
    free(d->exclude.nodes);
    free(d->exclude.names);
    memset(d, 0, sizeof *d);
    d->failed = d->closed = 1;
    d->err_kind = "decode";
    snprintf(d->err_msg, sizeof d->err_msg, "decoder closed");
}

static int l_gc(lua_State *L)
{
    dec_stream *d = dec_check(L, 1);
    dec_release(d);
    return 0;
}

static int l_keys_gc(lua_State *L)
{
    dec_keys *kc = lua_touserdata(L, 1);
    free(kc->spare_recs);
    kc->spare_recs = NULL;
    kc->spare_cap = 0;
    return 0;
}

static int l_decoder(lua_State *L)
{
    dec_new(L, 1, 1);
    return 1;
}

/* Lends decode()'s key cache (upvalue 1) to the decoder at ud, unless a
 * build is using it; the decoder's user value keeps it alive. */
static void share_keys(lua_State *L, dec_stream *d, int ud)
{
    dec_keys *kc = lua_touserdata(L, lua_upvalueindex(1));
    if (!kc || kc->busy)
        return;
    if (kc->nkeys >= KEY_LIMIT) {
        /* full of keys from other documents: start over */
        dec_rec *spare = kc->spare_recs;
        size_t spare_cap = kc->spare_cap;
        memset(kc, 0, sizeof *kc);
        kc->spare_recs = spare;
        kc->spare_cap = spare_cap;
        lua_createtable(L, KEYS_TABLE_SIZE, 0);
        lua_setiuservalue(L, lua_upvalueindex(1), 1);
    }
    lua_getiuservalue(L, ud, 1);
    lua_getiuservalue(L, lua_upvalueindex(1), 1);
    lua_rawseti(L, -2, UV_KEYS);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_rawseti(L, -2, UV_SHARED_KEYS);
    lua_pop(L, 1);
    d->kc = kc;
    d->kc_shared = 1;
    /* the cached tree nodes belong to the last caller's options */
    if (d->use_fields || d->use_stamps || d->use_exclude)
        for (int i = 0; i < KEY_LIMIT; i++)
            kc->slots[i].fparent = kc->slots[i].tparent = kc->slots[i].eparent = -2;
}

/* dec_build_direct on s[0..n), for decode(). (The fuzzer's Lua allocates
 * a string's n bytes and its '\0' exactly, so that the address sanitizer
 * sees any read past them.) */
static int decode_direct(lua_State *L, dec_stream *d, int ud, const char *s, size_t n)
{
    int built;
    lua_getiuservalue(L, ud, 1);
    built = dec_build_direct(L, d, lua_gettop(L), s, n);
    if (built)
        lua_remove(L, -2);
    else
        lua_pop(L, 1);
    return built;
}

static int l_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    dec_stream *d = dec_new(L, 2, 0);
    int ud = lua_gettop(L);
    share_keys(L, d, ud);
    if (n > d->max_size) {
        dec_append(d, s, n); /* records the size error */
        return dec_push_error(L, d);
    }
    /* one pass first; the scanner and the builder behind it otherwise
     * (a count is too small to be worth it) */
    if (d->shape != SHAPE_COUNT && decode_direct(L, d, ud, s, n))
        return 1;
    /* a task-run page has a container every 160 bytes or so: one
     * allocation instead of a string of doublings */
    size_t want = n / 128 + 64 < DEC_SPARE_RECS ? n / 128 + 64 : DEC_SPARE_RECS;
    if (d->kc_shared && d->kc->spare_recs && d->kc->spare_cap >= want) {
        d->recs = d->kc->spare_recs;
        d->recs_cap = d->kc->spare_cap;
        d->kc->spare_recs = NULL;
        d->kc->spare_cap = 0;
    } else {
        d->recs_cap = want;
        d->recs = malloc(d->recs_cap * sizeof *d->recs);
        if (!d->recs)
            d->recs_cap = 0;
    }
    /* the string stays on the stack while it is scanned and built */
    d->buf = (char *)s;
    d->len = d->cap = n;
    d->borrowed = 1;
    if (dec_scan(d) == 0)
        dec_finish(d);
    if (!d->failed)
        dec_next(L, ud);
    d->buf = NULL;
    d->borrowed = 0;
    if (d->kc_shared && d->recs_cap <= DEC_SPARE_RECS && d->recs_cap > d->kc->spare_cap) {
        free(d->kc->spare_recs);
        d->kc->spare_recs = d->recs;
        d->kc->spare_cap = d->recs_cap;
        d->recs = NULL;
        d->recs_cap = 0;
    }
    if (d->failed)
        return dec_push_error(L, d);
    return 1;
}

static int l_feed(lua_State *L)
{
    dec_stream *d = dec_check(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    if (dec_append(d, s, n) < 0)
        return dec_push_error(L, d);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_finish(lua_State *L)
{
    dec_stream *d = dec_check(L, 1);
    dec_finish(d);
    if (d->failed)
        return dec_push_error(L, d);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_next(lua_State *L)
{
    return dec_next(L, 1);
}

static int l_done(lua_State *L)
{
    dec_stream *d = dec_check(L, 1);
    lua_pushboolean(L, !d->failed && d->st == ST_END && d->head == d->tail);
    return 1;
}

static int l_reset(lua_State *L)
{
    dec_stream *d = dec_check(L, 1);
    if (d->closed)
        return 0;
    if (d->buf && d->cap > 1024 * 1024) {
        free(d->buf);
        d->buf = NULL;
        d->cap = 0;
    }
    dec_clear(d);
    return 0;
}

/* Names the memory the decoder holds, so that a stream can be seen to
 * stay flat. */
static int l_tostring(lua_State *L)
{
    dec_stream *d = dec_check(L, 1);
    size_t held = (d->borrowed ? 0 : d->cap) + d->recs_cap * sizeof *d->recs +
                  d->elems_cap * sizeof *d->elems + (size_t)d->frames_cap * sizeof *d->frames +
                  d->scratch_cap + (d->kc && !d->kc_shared ? sizeof *d->kc : 0) +
                  (size_t)(d->fields.cap + d->stamps.cap + d->exclude.cap) * sizeof(dec_node) +
                  d->fields.ncap + d->stamps.ncap + d->exclude.ncap;
    lua_pushfstring(L, "prefect.decoder (%p, %d KB held)", (void *)d, (int)((held + 1023) / 1024));
    return 1;
}

void dec_register(lua_State *L)
{
    static const luaL_Reg methods[] = {{"feed", l_feed}, {"finish", l_finish}, {"next", l_next},
                                       {"done", l_done}, {"reset", l_reset},   {NULL, NULL}};
    if (luaL_newmetatable(L, DEC_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__close");
#endif
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    dec_keys *kc = lua_newuserdatauv(L, sizeof *kc, 1);
    memset(kc, 0, sizeof *kc);
    if (luaL_newmetatable(L, DEC_KEYS_MT)) {
        lua_pushcfunction(L, l_keys_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    lua_createtable(L, KEYS_TABLE_SIZE, 0);
    lua_setiuservalue(L, -2, 1);
    lua_pushcclosure(L, l_decode, 1);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, l_decoder);
    lua_setfield(L, -2, "decoder");
}
