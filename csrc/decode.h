/* Streaming JSON decoder: bytes in, Lua values out. It does no I/O, so any
 * transport can drive it: the libcurl transport appends bytes from inside
 * its write callback (pure C, no Lua calls) and asks for values only after
 * curl_multi_perform has returned. */
#ifndef PREFECT_DECODE_H
#define PREFECT_DECODE_H

#include <stddef.h>

#include "compat.h"

/* Only luaopen_prefect_core leaves core.so: what the files share stays inside. */
#pragma GCC visibility push(hidden)

typedef struct dec_stream dec_stream;

/* Adds decode() and decoder() to the table on top of the stack. */
void dec_register(lua_State *L);

/* The decoder userdata at idx, or a Lua error naming the argument. */
dec_stream *dec_check(lua_State *L, int idx);

/* Appends input. Never calls Lua, never longjmps: safe inside a libcurl
 * callback. Returns 0, or -1 when the input limit is exceeded or memory runs
 * out; the error is recorded in the stream and reported by the next call to
 * dec_next. */
int dec_append(dec_stream *d, const char *bytes, size_t len);

/* Bytes of input held that belong to values not handed out yet: what a
 * transport compares with its read-ahead limit. Pure C. */
size_t dec_pending(const dec_stream *d);

/* True when a value is ready to be handed out, so that a caller can make
 * progress without more input. Pure C. */
int dec_ready(const dec_stream *d);

/* Marks the end of input (after which a truncated document is an error). */
void dec_finish(dec_stream *d);

/* Lua side of d:next() for the decoder at idx: pushes its results and
 * returns how many (see the module documentation in decode.c). */
int dec_next(lua_State *L, int idx);

/* Pushes nil and the failed decoder's error, {kind = "decode" (not JSON),
 * "too_large" (past max_size) or "protocol" (JSON of the wrong shape),
 * message = "... at byte N near '...'", offset = N (1-based)}; returns 2. */
int dec_push_error(lua_State *L, const dec_stream *d);

/* Parses an RFC 3339 date-time ("2026-08-21T16:27:33.512044Z"; 'T', 't' or
 * ' ' between date and time; 0 to 9 fraction digits; "Z", "+HH:MM", "-HH:MM"
 * or nothing, which means UTC) into Unix epoch seconds. Returns 1, or 0 when
 * s is not such a timestamp. Pure C. */
int dec_parse_timestamp(const char *s, size_t n, double *out);

#pragma GCC visibility pop

#endif
