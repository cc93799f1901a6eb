/* The C core is written against the Lua 5.4 API; this header supplies the
 * few pieces that LuaJIT (5.1 API) lacks, so every .c file compiles for both
 * from the same source. Keep it small: add a shim only when a file needs it. */
#ifndef PREFECT_COMPAT_H
#define PREFECT_COMPAT_H

#include <lauxlib.h>
#include <lua.h>

#if LUA_VERSION_NUM < 502
#define PREFECT_LUA51 1

#ifndef LUA_OK
#define LUA_OK 0
#endif

#define lua_rawlen(L, i) lua_objlen((L), (i))

static inline int compat_absindex(lua_State *L, int idx)
{
    return (idx > 0 || idx <= LUA_REGISTRYINDEX) ? idx : lua_gettop(L) + idx + 1;
}
#define lua_absindex(L, i) compat_absindex((L), (i))

/* A 5.1 userdata can only hold one table as its environment; that is all the
 * core ever stores, so it stands in for the 5.4 user value. */
static inline void compat_setuservalue(lua_State *L, int idx)
{
    lua_setfenv(L, idx);
}
static inline int compat_getuservalue(lua_State *L, int idx)
{
    lua_getfenv(L, idx);
    return lua_type(L, -1);
}
#define lua_setiuservalue(L, i, n) ((void)(n), compat_setuservalue((L), (i)))
#define lua_getiuservalue(L, i, n) ((void)(n), compat_getuservalue((L), (i)))
#define lua_newuserdatauv(L, sz, n) ((void)(n), lua_newuserdata((L), (sz)))

#define lua_isinteger(L, i) ((void)(L), (void)(i), 0)

static inline int compat_rawgetp(lua_State *L, int idx, const void *p)
{
    idx = lua_absindex(L, idx);
    lua_pushlightuserdata(L, (void *)p);
    lua_rawget(L, idx);
    return lua_type(L, -1);
}
#define lua_rawgetp(L, i, p) compat_rawgetp((L), (i), (p))

static inline void compat_rawsetp(lua_State *L, int idx, const void *p)
{
    idx = lua_absindex(L, idx);
    lua_pushlightuserdata(L, (void *)p);
    lua_insert(L, -2);
    lua_rawset(L, idx);
}
#define lua_rawsetp(L, i, p) compat_rawsetp((L), (i), (p))

/* LuaJIT 2.1's lauxlib.h already has it; plain 5.1 does not. */
#ifndef luaL_newlib
#define luaL_newlib(L, l)                                                                          \
    (lua_createtable((L), 0, sizeof(l) / sizeof((l)[0]) - 1), luaL_setfuncs((L), (l), 0))
#endif
#endif /* LUA_VERSION_NUM < 502 */

#endif
