/* The one error shape of the C core: every failure it reports to Lua at
 * run time (the decoder's and the transport's) is nil and a table
 * {kind = ..., message = ...}, to which each layer adds what it knows
 * (offset, url, code). The Lua layer (prefect.errors) gives it the
 * client's metatable; for a direct user of prefect.core, tostring() of
 * the table is its message. */
#ifndef PREFECT_CORE_ERROR_H
#define PREFECT_CORE_ERROR_H

#include "compat.h"

#pragma GCC visibility push(hidden)

/* Pushes nil and a new error table with kind and message; returns 2, the
 * number of values pushed. The table is on top of the stack. */
int core_push_error(lua_State *L, const char *kind, const char *message);

#pragma GCC visibility pop

#endif
