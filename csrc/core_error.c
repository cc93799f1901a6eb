/* The error tables of the C core (see core_error.h). */
#include "core_error.h"

#define CORE_ERROR_MT "prefect.core.error"

static int core_error_tostring(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "message");
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        lua_getfield(L, 1, "kind");
    }
    lua_pushstring(L, lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
    return 1;
}

int core_push_error(lua_State *L, const char *kind, const char *message)
{
    lua_pushnil(L);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    if (luaL_newmetatable(L, CORE_ERROR_MT)) {
        lua_pushcfunction(L, core_error_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_setmetatable(L, -2);
    return 2;
}
