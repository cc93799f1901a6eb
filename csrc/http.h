/* HTTP transport on libcurl's multi interface: sessions and requests. */
#ifndef PREFECT_HTTP_H
#define PREFECT_HTTP_H

#include "compat.h"

/* Adds session() to the table on top of the stack. */
void http_register(lua_State *L);

#endif
