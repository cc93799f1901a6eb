/* HTTP transport on libcurl's multi interface: sessions and requests. */
#ifndef PREFECT_HTTP_H
#define PREFECT_HTTP_H

#include "compat.h"

/* Only luaopen_prefect_core leaves core.so: what the files share stays inside. */
#pragma GCC visibility push(hidden)

/* Adds session() to the table on top of the stack. */
void http_register(lua_State *L);

#pragma GCC visibility pop

#endif
