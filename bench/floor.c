/* The floor for bench/decode.lua: what building a decoded page's Lua values costs when no JSON is
 * read at all. floor.compile(value) walks a value that a decoder made (the array of runs) once and
 * records it as a flat list of steps; floor.build(program) replays the steps and returns a new
 * value equal to the first. Tables are made with their exact sizes, keys and strings that occur
 * more than once in the page are made once at compile time and only pushed, and every other string
 * is made anew from its bytes, as any reader has to. What is left is the cost no reader avoids.
 *
 *   local floor = require("floor")
 *   local program = floor.compile(core.decode(page))
 *   local runs = floor.build(program)     -- the same values as core.decode(page)
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

enum op {
    OP_TABLE,  /* push a table: a = array size, b = hash size */
    OP_KEY,    /* push made[a] (a key) */
    OP_MADE,   /* push made[a] (a recurring string value) */
    OP_STRING, /* push a new string: a = offset in the byte pool, b = length */
    OP_NUMBER, /* push number */
    OP_INTEGER,
    OP_TRUE,
    OP_FALSE,
    OP_SET,  /* t[key] = value: key and value on top, t below them */
    OP_SETI, /* t[a] = value */
};

struct step {
    int op;
    size_t a, b;
    lua_Number number;
    lua_Integer integer;
};

struct program {
    struct step *steps;
    size_t nsteps, cap;
    char *pool;
    size_t pool_len, pool_cap;
    int depth, max_depth; /* nesting of tables, while compiling and at most */
};

#define PROGRAM "bench.floor.program"

#if LUA_VERSION_NUM < 502
#define lua_rawlen lua_objlen
#define lua_absindex(L, i) ((i) > 0 ? (i) : lua_gettop(L) + (i) + 1)
#endif

static struct step *add(lua_State *L, struct program *p, int op)
{
    if (p->nsteps == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 1024;
        struct step *s = realloc(p->steps, cap * sizeof *s);
        if (!s)
            luaL_error(L, "floor: out of memory");
        p->steps = s;
        p->cap = cap;
    }
    struct step *s = &p->steps[p->nsteps++];
    memset(s, 0, sizeof *s);
    s->op = op;
    return s;
}

static size_t pool_add(lua_State *L, struct program *p, const char *bytes, size_t len)
{
    if (p->pool_len + len > p->pool_cap) {
        size_t cap = p->pool_cap ? p->pool_cap : 4096;
        while (cap < p->pool_len + len)
            cap *= 2;
        char *pool = realloc(p->pool, cap);
        if (!pool)
            luaL_error(L, "floor: out of memory");
        p->pool = pool;
        p->pool_cap = cap;
    }
    memcpy(p->pool + p->pool_len, bytes, len);
    p->pool_len += len;
    return p->pool_len - len;
}

/* Stack during compile: 1 value, 2 program, 3 made (array of strings), 4 index (string -> slot
 * in made), 5 counts (string value -> occurrences). */
enum { MADE = 3, INDEX = 4, COUNTS = 5 };

static size_t made_slot(lua_State *L, int at)
{
    lua_pushvalue(L, at);
    lua_rawget(L, INDEX);
    if (lua_isnumber(L, -1)) {
        size_t slot = (size_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
        return slot;
    }
    lua_pop(L, 1);
    size_t slot = lua_rawlen(L, MADE) + 1;
    lua_pushvalue(L, at);
    lua_rawseti(L, MADE, (lua_Integer)slot);
    lua_pushvalue(L, at);
    lua_pushinteger(L, (lua_Integer)slot);
    lua_rawset(L, INDEX);
    return slot;
}

static void count_strings(lua_State *L, int at)
{
    at = lua_absindex(L, at);
    luaL_checkstack(L, 8, "floor: too deep");
    if (lua_type(L, at) == LUA_TSTRING) {
        lua_pushvalue(L, at);
        lua_pushvalue(L, at);
        lua_rawget(L, COUNTS);
        lua_Integer n = lua_tointeger(L, -1);
        lua_pop(L, 1);
        lua_pushinteger(L, n + 1);
        lua_rawset(L, COUNTS);
    } else if (lua_type(L, at) == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, at)) {
            count_strings(L, -1);
            lua_pop(L, 1);
        }
    }
}

/* The length n of a table whose keys are exactly 1..n, or -1. */
static long array_length(lua_State *L, int at)
{
    long count = 0;
    int array = 1;
    lua_pushnil(L);
    while (lua_next(L, at)) {
        lua_pop(L, 1);
        count++;
        if (lua_type(L, -1) != LUA_TNUMBER)
            array = 0;
    }
    if (!array || (size_t)count != lua_rawlen(L, at))
        return -1;
    return count;
}

static void compile_value(lua_State *L, struct program *p, int at)
{
    at = lua_absindex(L, at);
    luaL_checkstack(L, 8, "floor: too deep");
    switch (lua_type(L, at)) {
    case LUA_TSTRING: {
        lua_pushvalue(L, at);
        lua_rawget(L, COUNTS);
        lua_Integer n = lua_tointeger(L, -1);
        lua_pop(L, 1);
        if (n > 1) {
            add(L, p, OP_MADE)->a = made_slot(L, at);
        } else {
            size_t len;
            const char *s = lua_tolstring(L, at, &len);
            size_t offset = pool_add(L, p, s, len);
            struct step *st = add(L, p, OP_STRING);
            st->a = offset;
            st->b = len;
        }
        break;
    }
    case LUA_TNUMBER:
#if LUA_VERSION_NUM >= 503
        if (lua_isinteger(L, at)) {
            add(L, p, OP_INTEGER)->integer = lua_tointeger(L, at);
            break;
        }
#endif
        add(L, p, OP_NUMBER)->number = lua_tonumber(L, at);
        break;
    case LUA_TBOOLEAN:
        add(L, p, lua_toboolean(L, at) ? OP_TRUE : OP_FALSE);
        break;
    case LUA_TTABLE: {
        long n = array_length(L, at);
        struct step *t = add(L, p, OP_TABLE);
        if (++p->depth > p->max_depth)
            p->max_depth = p->depth;
        if (n >= 0) {
            t->a = (size_t)n;
            for (long i = 1; i <= n; i++) {
                lua_rawgeti(L, at, i);
                compile_value(L, p, -1);
                lua_pop(L, 1);
                add(L, p, OP_SETI)->a = (size_t)i;
            }
        } else {
            size_t table_step = p->nsteps - 1, fields = 0;
            lua_pushnil(L);
            while (lua_next(L, at)) {
                if (lua_type(L, -2) != LUA_TSTRING)
                    luaL_error(L, "floor: an object with a key that is not a string");
                add(L, p, OP_KEY)->a = made_slot(L, -2);
                compile_value(L, p, -1);
                lua_pop(L, 1);
                add(L, p, OP_SET);
                fields++;
            }
            p->steps[table_step].b = fields; /* t may have moved with the realloc */
        }
        p->depth--;
        break;
    }
    default:
        luaL_error(L, "floor: a %s in a decoded value", luaL_typename(L, at));
    }
}

static int program_gc(lua_State *L)
{
    struct program *p = luaL_checkudata(L, 1, PROGRAM);
    free(p->steps);
    free(p->pool);
    p->steps = NULL;
    p->pool = NULL;
    return 0;
}

/* floor.compile(value) -> program */
static int floor_compile(lua_State *L)
{
    lua_settop(L, 1);
    struct program *p = lua_newuserdata(L, sizeof *p);
    memset(p, 0, sizeof *p);
    luaL_getmetatable(L, PROGRAM);
    lua_setmetatable(L, -2);
    lua_newtable(L); /* MADE */
    lua_newtable(L); /* INDEX */
    lua_newtable(L); /* COUNTS */
    count_strings(L, 1);
    compile_value(L, p, 1);
    /* the program keeps its made strings alive: program -> registry[program] = made */
    lua_pushvalue(L, 2);
    lua_pushvalue(L, MADE);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_settop(L, 2);
    return 1;
}

/* floor.build(program) -> a new value equal to the one compiled */
static int floor_build(lua_State *L)
{
    struct program *p = luaL_checkudata(L, 1, PROGRAM);
    lua_settop(L, 1);
    lua_pushvalue(L, 1);
    lua_rawget(L, LUA_REGISTRYINDEX); /* 2: made */
    /* a table, its key and a value on the stack for each level */
    luaL_checkstack(L, 3 * p->max_depth + 4, "floor: too deep");
    for (size_t i = 0; i < p->nsteps; i++) {
        const struct step *s = &p->steps[i];
        switch (s->op) {
        case OP_TABLE:
            lua_createtable(L, (int)s->a, (int)s->b);
            break;
        case OP_KEY:
        case OP_MADE:
            lua_rawgeti(L, 2, (lua_Integer)s->a);
            break;
        case OP_STRING:
            lua_pushlstring(L, p->pool + s->a, s->b);
            break;
        case OP_NUMBER:
            lua_pushnumber(L, s->number);
            break;
        case OP_INTEGER:
            lua_pushinteger(L, s->integer);
            break;
        case OP_TRUE:
            lua_pushboolean(L, 1);
            break;
        case OP_FALSE:
            lua_pushboolean(L, 0);
            break;
        case OP_SET:
            lua_rawset(L, -3);
            break;
        case OP_SETI:
            lua_rawseti(L, -2, (lua_Integer)s->a);
            break;
        }
    }
    return 1;
}

int luaopen_floor(lua_State *L)
{
    if (luaL_newmetatable(L, PROGRAM)) {
        lua_pushcfunction(L, program_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, floor_compile);
    lua_setfield(L, -2, "compile");
    lua_pushcfunction(L, floor_build);
    lua_setfield(L, -2, "build");
    return 1;
}
