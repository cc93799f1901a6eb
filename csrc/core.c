/* prefect.core: the C module's table, assembled from the decoder and the
 * transport, which know nothing of each other beyond decode.h. */
#include "compat.h"
#include "decode.h"
#include "http.h"

#ifndef PREFECT_VERSION
#define PREFECT_VERSION "scm-1"
#endif

int luaopen_prefect_core(lua_State *L);

int luaopen_prefect_core(lua_State *L)
{
    lua_newtable(L);
    lua_pushliteral(L, PREFECT_VERSION);
    lua_setfield(L, -2, "_VERSION");
    /* lua-cjson's null is lightuserdata NULL too, so the two compare equal. */
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    dec_register(L);
    http_register(L);
    return 1;
}
