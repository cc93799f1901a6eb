/* A request as a Lua value: s:request{...} and its methods response, next,
 * poll, body and close. Every method that waits pumps the whole session, so
 * other requests in flight progress too. Lua values are only built here,
 * between calls into libcurl, never while it is on the C stack. */
#include <stdlib.h>
#include <string.h>

#include "http_internal.h"

/* How long one wait inside a blocking call may last before we look again;
 * libcurl's timers (total, connect) and our stall deadline (http_stall.c)
 * end the wait sooner. */
#define HTTP_WAIT_SLICE_MS 1000

/* Slots of the user value table: what libcurl and the decoder point into. */
#define HTTP_UV_SESSION 1
#define HTTP_UV_DECODER 2
#define HTTP_UV_BODY 3

static http_request *http_request_check(lua_State *L)
{
    return luaL_checkudata(L, 1, HTTP_REQUEST_MT);
}

/* RFC 9110 token characters: method and header names. */
static int http_is_token(const char *s, size_t len)
{
    size_t i;
    if (len == 0)
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (c == '\0' || !(alnum || strchr("!#$%&'*+-.^_`|~", c) != NULL))
            return 0;
    }
    return 1;
}

static int http_name_is(const char *name, size_t len, const char *lower)
{
    size_t i;
    for (i = 0; i < len && lower[i]; i++) {
        char c = name[i];
        if ((c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c) != lower[i])
            return 0;
    }
    return i == len && lower[i] == '\0';
}

static int http_has_line_break(const char *s, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return 1;
    return 0;
}

static int http_url_is_clean(const char *s, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] == 0x7f)
            return 0;
    return len > 0;
}

/* Optional string field of the spec table at index 2. */
static const char *http_spec_string(lua_State *L, const char *name, size_t *len)
{
    const char *v;
    lua_getfield(L, 2, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "request: '%s' must be a string, got a %s", name, luaL_typename(L, -1));
    v = lua_tolstring(L, -1, len);
    lua_pop(L, 1); /* still referenced by the spec table, or by the user value later */
    return v;
}

/* Appends one header line; "Name:" with nothing after it removes a header
 * libcurl would add. */
static void http_append_line(lua_State *L, http_request *r, const char *line)
{
    struct curl_slist *list = curl_slist_append(r->header_list, line);
    if (!list)
        luaL_error(L, "request: out of memory");
    r->header_list = list;
}

/* Appends "Name: value" to the list, refusing anything that would let a
 * value end the header early. Returns 0 with the reason pushed. */
static int http_add_header(lua_State *L, http_request *r, const char *name, size_t name_len,
                           const char *value, size_t value_len, int *has_content_type,
                           int *has_expect)
{
    luaL_Buffer b;
    /* The messages never quote a value: it may be a credential. */
    if (!http_is_token(name, name_len)) {
        lua_pushliteral(L, "a header name is empty or has bytes outside RFC 9110 token");
        return 0;
    }
    if (http_has_line_break(value, value_len)) {
        lua_pushliteral(L, "value of header '");
        lua_pushlstring(L, name, name_len);
        lua_pushliteral(L, "' contains CR, LF or NUL");
        lua_concat(L, 3);
        return 0;
    }
    if (http_name_is(name, name_len, "content-type"))
        *has_content_type = 1;
    else if (http_name_is(name, name_len, "expect"))
        *has_expect = 1;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, name, name_len);
    /* libcurl sends "Name;" as an empty header; "Name:" would remove it. */
    if (value_len == 0) {
        luaL_addchar(&b, ';');
    } else {
        luaL_addstring(&b, ": ");
        luaL_addlstring(&b, value, value_len);
    }
    luaL_pushresult(&b);
    http_append_line(L, r, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 1;
}

/* Headers from spec.headers: an array of "Name: value" strings and/or a map
 * of name = value. Returns 0 with the reason pushed when one is refused. */
static int http_build_headers(lua_State *L, http_request *r, int has_body)
{
    int has_content_type = 0, has_expect = 0;
    lua_getfield(L, 2, "headers");
    if (!lua_isnil(L, -1)) {
        int t = lua_gettop(L);
        if (!lua_istable(L, t))
            luaL_error(L, "request: 'headers' must be a table");
        lua_pushnil(L);
        while (lua_next(L, t)) {
            size_t len, name_len, value_len;
            const char *name, *value;
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "request: header values must be strings");
            if (lua_type(L, -2) == LUA_TSTRING) {
                name = lua_tolstring(L, -2, &name_len);
                value = lua_tolstring(L, -1, &value_len);
            } else {
                const char *colon;
                name = lua_tolstring(L, -1, &len);
                colon = memchr(name, ':', len);
                if (!colon) {
                    lua_pushliteral(L, "header line has no ':'");
                    return 0;
                }
                name_len = (size_t)(colon - name);
                value = colon + 1;
                while (*value == ' ' || *value == '\t')
                    value++;
                value_len = len - (size_t)(value - name);
            }
            if (!http_add_header(L, r, name, name_len, value, value_len, &has_content_type,
                                 &has_expect))
                return 0;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    /* A page request must not wait a round trip for "100 Continue";
     * "Expect:" with nothing after it removes libcurl's own header. */
    if (!has_expect)
        http_append_line(L, r, "Expect:");
    /* The caller names the body's type (the exchange does, for both
     * transports); "Content-Type:" keeps libcurl from calling a body
     * without one a form. */
    if (has_body && !has_content_type)
        http_append_line(L, r, "Content-Type:");
    return 1;
}

int http_request_new(lua_State *L)
{
    http_session *s = luaL_checkudata(L, 1, HTTP_SESSION_MT);
    http_request *r;
    http_spec spec;
    dec_stream *dec = NULL;
    size_t url_len = 0, method_len = 0;
    CURLcode rc;
    CURLMcode mc;

    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    memset(&spec, 0, sizeof spec);
    spec.url = http_spec_string(L, "url", &url_len);
    if (!spec.url)
        return luaL_error(L, "request: 'url' is required");
    spec.method = http_spec_string(L, "method", &method_len);
    if (!spec.method) {
        spec.method = "GET";
        method_len = 3;
    }
    spec.body = http_spec_string(L, "body", &spec.body_len);
    spec.has_body = spec.body != NULL;
    lua_getfield(L, 2, "decoder"); /* index 3 */
    if (!lua_isnil(L, 3))
        dec = dec_check(L, 3);

    /* The request exists (with __gc) before anything that can fail, so a
     * raise from here on frees whatever was set up. */
    r = lua_newuserdatauv(L, sizeof *r, 1); /* index 4 */
    memset(r, 0, sizeof *r);
    luaL_setmetatable(L, HTTP_REQUEST_MT);
    r->closed = 1;
    lua_createtable(L, 3, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, HTTP_UV_SESSION);
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, HTTP_UV_DECODER);
    lua_getfield(L, 2, "body");
    lua_rawseti(L, -2, HTTP_UV_BODY);
    lua_setiuservalue(L, 4, 1);

    r->url = http_redact_url(spec.url);
    if (!r->url)
        return luaL_error(L, "request: out of memory");
    if (s->closed)
        return http_push_error(L, "invalid", "session is closed", r->url, -1);
    if (!http_is_token(spec.method, method_len))
        return http_push_error(L, "invalid", "method is not a valid token", r->url, -1);
    if (!http_url_is_clean(spec.url, url_len))
        return http_push_error(L, "invalid", "url is empty or contains spaces or control bytes",
                               r->url, -1);
    if (!http_build_headers(L, r, spec.has_body)) {
        http_push_error(L, "invalid", lua_tostring(L, -1), r->url, -1);
        return 2;
    }

    r->dec = dec;
    r->max_response = s->opts.max_response;
    r->read_ahead = s->opts.read_ahead;
    r->follow_redirects = s->opts.follow_redirects;
    if (!dec)
        http_session_lend_buffer(s, &r->body);
    r->easy = http_session_acquire(s);
    if (!r->easy)
        return luaL_error(L, "request: curl_easy_init failed");
    http_session_link(s, r);
    r->closed = 0;
    rc = http_transfer_configure(r, &s->opts, &spec);
    if (rc != CURLE_OK) {
        http_transfer_stop(r, HTTP_STOP_NONE);
        r->result = rc;
        return http_push_transfer_error(L, r);
    }
    mc = curl_multi_add_handle(s->multi, r->easy);
    if (mc != CURLM_OK) {
        http_transfer_stop(r, HTTP_STOP_NONE);
        return http_push_error(L, "invalid", curl_multi_strerror(mc), r->url, -1);
    }
    s->running++; /* until the next pump counts for itself */
    /* Connect and send now, not when someone first waits on the answer: a
     * page fetched ahead is then under way while the caller works. Errors
     * surface on the request itself. */
    (void)http_session_pump(s, 0);
    lua_settop(L, 4);
    return 1;
}

static int http_transfer_failed(const http_request *r)
{
    return r->finished && (r->result != CURLE_OK || r->stop != HTTP_STOP_NONE);
}

static int http_push_closed(lua_State *L, const http_request *r)
{
    return http_push_error(L, "aborted", "request is closed", r->url, -1);
}

/* One step of progress for r's session: waits up to wait_ms for socket
 * activity, then lets libcurl work. Returns 0, or 2 after pushing nil, err. */
static int http_step(lua_State *L, http_request *r, long wait_ms)
{
    CURLMcode mc;
    if (r->finished || !r->session)
        return 0;
    mc = http_session_pump(r->session, wait_ms);
    if (mc != CURLM_OK) {
        http_transfer_stop(r, HTTP_STOP_ABORTED);
        return http_push_error(L, "aborted", curl_multi_strerror(mc), r->url, -1);
    }
    return 0;
}

/* Milliseconds left before deadline (< 0: none), capped to one slice. */
static long http_wait_left(long deadline)
{
    long left;
    if (deadline < 0)
        return HTTP_WAIT_SLICE_MS;
    left = deadline - http_now_ms();
    if (left <= 0)
        return 0;
    return left < HTTP_WAIT_SLICE_MS ? left : HTTP_WAIT_SLICE_MS;
}

static long http_deadline(lua_State *L, int idx)
{
    lua_Number ms;
    if (lua_isnoneornil(L, idx))
        return -1;
    ms = luaL_checknumber(L, idx);
    if (ms < 0)
        ms = 0;
    if (ms > 1e9)
        ms = 1e9;
    return http_now_ms() + (long)ms;
}

static int http_headers_ready(const http_request *r)
{
    return r->headers_done || r->finished;
}

static int http_finished(const http_request *r)
{
    return r->finished;
}

/* Pumps until ready(r) or the deadline (< 0: none). Returns 1 when ready,
 * 0 on timeout, 2 after pushing nil, err. */
static int http_wait(lua_State *L, http_request *r, int (*ready)(const http_request *),
                     long deadline)
{
    long wait = 0;
    for (;;) {
        if (ready(r))
            return 1;
        if (http_step(L, r, wait))
            return 2;
        if (ready(r))
            return 1;
        wait = http_wait_left(deadline);
        if (wait == 0)
            return 0;
    }
}

static void http_push_headers(lua_State *L, const http_request *r)
{
    const char *p = r->head.data, *end = r->head.data + r->head.len;
    lua_newtable(L);
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end, *colon, *v, *ve;
        const char *next = eol ? eol + 1 : end;
        colon = memchr(p, ':', (size_t)(line_end - p));
        if (!colon) {
            p = next;
            continue;
        }
        v = colon + 1;
        ve = line_end;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        lua_pushlstring(L, p, (size_t)(colon - p));
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, v, (size_t)(ve - v));
        } else {
            /* A repeated header is one list (RFC 9110 5.3). */
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, v, (size_t)(ve - v));
            lua_concat(L, 3);
        }
        lua_rawset(L, -3);
        p = next;
    }
}

/* req:response([timeout_ms]) --> status, headers | false | nil, err */
static int http_request_response(lua_State *L)
{
    http_request *r = http_request_check(L);
    long deadline = http_deadline(L, 2);
    int got;
    if (r->closed)
        return http_push_closed(L, r);
    got = http_wait(L, r, http_headers_ready, deadline);
    if (got == 2)
        return 2;
    if (got == 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (!r->headers_done) {
        if (http_transfer_failed(r))
            return http_push_transfer_error(L, r);
        return http_push_error(L, "protocol", "the server sent no response headers", r->url, -1);
    }
    lua_pushinteger(L, (lua_Integer)r->status);
    http_push_headers(L, r);
    return 2;
}

/* req:body() --> string | nil, err */
static int http_request_body(lua_State *L)
{
    http_request *r = http_request_check(L);
    int got;
    if (r->closed)
        return http_push_closed(L, r);
    got = http_wait(L, r, http_headers_ready, -1);
    if (got == 2)
        return 2;
    if (r->headers_done && r->to_decoder)
        return http_push_error(L, "invalid", "the body was streamed into the decoder; use next()",
                               r->url, -1);
    got = http_wait(L, r, http_finished, -1);
    if (got == 2)
        return 2;
    if (http_transfer_failed(r))
        return http_push_transfer_error(L, r);
    if (!r->headers_done)
        return http_push_error(L, "protocol", "the server sent no response headers", r->url, -1);
    lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
    return 1;
}

/* The decoder userdata, pushed; raises when the request has none. */
static int http_push_decoder(lua_State *L, http_request *r)
{
    if (!r->dec)
        luaL_error(L, "request was made without a decoder");
    lua_getiuservalue(L, 1, 1);
    lua_rawgeti(L, -1, HTTP_UV_DECODER);
    lua_remove(L, -2);
    return lua_gettop(L);
}

/* One element from the decoder at dec_idx: 1 with it pushed, 0 when none is
 * ready (nothing pushed), 2 after pushing nil, err. */
static int http_take(lua_State *L, http_request *r, int dec_idx)
{
    int top = lua_gettop(L), n;
    if (!r->headers_done || !r->to_decoder)
        return 0;
    n = dec_next(L, dec_idx);
    /* resumed at half the limit, so that a steady reader does not pause
     * and resume the transfer once per value */
    if (r->paused && (!dec_ready(r->dec) || dec_pending(r->dec) <= r->read_ahead / 2))
        http_transfer_resume(r);
    if (n > 0 && !lua_isnil(L, top + 1)) {
        lua_settop(L, top + 1);
        return 1;
    }
    if (n >= 2 && lua_istable(L, top + 2)) {
        /* The decoder's error table goes out as it is, with the URL. A
         * broken body cannot be resumed; stop reading it. */
        http_transfer_stop(r, HTTP_STOP_DECODE);
        if (r->url) {
            lua_pushstring(L, r->url);
            lua_setfield(L, top + 2, "url");
        }
        lua_settop(L, top + 2);
        return 2;
    }
    lua_settop(L, top);
    return 0;
}

/* After the transfer ended and no element is ready: 0 when the caller
 * should try the decoder again (it was just told the input ended), 1 when
 * the stream is complete, 2 after pushing nil, err. */
static int http_settle(lua_State *L, http_request *r)
{
    if (http_transfer_failed(r))
        return http_push_transfer_error(L, r);
    if (!r->headers_done)
        return http_push_error(L, "protocol", "the server sent no response headers", r->url, -1);
    if (!r->to_decoder) {
        lua_pushfstring(L, "response is not decoded (status %d, %s): read it with body()",
                        (int)r->status, r->is_json ? "JSON" : "not JSON");
        http_push_error(L, "protocol", lua_tostring(L, -1), r->url, -1);
        lua_pushinteger(L, (lua_Integer)r->status);
        lua_setfield(L, -2, "status");
        lua_remove(L, -3);
        return 2;
    }
    if (!r->dec_finished) {
        r->dec_finished = 1;
        dec_finish(r->dec);
        return 0;
    }
    return 1;
}

/* req:next() --> element | nil | nil, err; blocks only until one element
 * is ready, the body ends or the transfer fails. */
static int http_request_next(lua_State *L)
{
    http_request *r = http_request_check(L);
    int dec_idx, got;
    long wait = 0;
    lua_settop(L, 1);
    if (r->closed)
        return http_push_closed(L, r);
    dec_idx = http_push_decoder(L, r);
    /* Errors of other transfers show on their own requests; this one's
     * show below, when it next needs libcurl. */
    if (r->session && r->session->running > 0 &&
        http_now_ms() - r->session->last_pump_ms >= HTTP_BACKGROUND_PUMP_MS)
        (void)http_session_pump(r->session, 0);
    for (;;) {
        got = http_take(L, r, dec_idx);
        if (got)
            return got;
        if (r->finished) {
            got = http_settle(L, r);
            if (got == 1) {
                lua_pushnil(L);
                return 1;
            }
            if (got == 2)
                return 2;
            continue;
        }
        if (http_step(L, r, wait))
            return 2;
        wait = HTTP_WAIT_SLICE_MS;
    }
}

/* req:poll([timeout_ms [, max]]) --> list, done | nil, err; waits at most
 * timeout_ms (default 0: not at all) for the first element, and hands out at
 * most max elements (default 0: all that are ready). */
static int http_request_poll(lua_State *L)
{
    http_request *r = http_request_check(L);
    long deadline, wait = 0;
    int dec_idx, list_idx, got;
    lua_Integer count = 0, max;
    lua_settop(L, 3);
    /* A cap on the elements handed out per call lets a frame loop bound the
     * work one call does when a whole page has arrived at once. */
    max = luaL_optinteger(L, 3, 0);
    luaL_argcheck(L, max >= 0, 3, "expected a count >= 0 (0: no cap)");
    if (r->closed)
        return http_push_closed(L, r);
    deadline = http_deadline(L, 2);
    if (deadline < 0)
        deadline = http_now_ms();
    dec_idx = http_push_decoder(L, r);
    lua_newtable(L);
    list_idx = lua_gettop(L);
    for (;;) {
        if (http_step(L, r, wait))
            return 2;
        got = 0;
        while ((max == 0 || count < max) && (got = http_take(L, r, dec_idx)) == 1)
            lua_rawseti(L, list_idx, ++count);
        if (got == 2) {
            if (count == 0)
                return 2;
            /* Hand out what came before the error; the decoder stays
             * failed, so the next call reports it. */
            lua_settop(L, list_idx);
            lua_pushboolean(L, 0);
            return 2;
        }
        if (max > 0 && count >= max) {
            lua_settop(L, list_idx);
            lua_pushboolean(L, 0);
            return 2;
        }
        if (r->finished) {
            if (count > 0 && http_transfer_failed(r)) {
                lua_pushboolean(L, 0);
                return 2;
            }
            got = http_settle(L, r);
            if (got == 2)
                return 2;
            if (got == 1) {
                lua_pushboolean(L, 1);
                return 2;
            }
            wait = 0;
            continue;
        }
        if (count > 0) {
            lua_pushboolean(L, 0);
            return 2;
        }
        wait = deadline - http_now_ms();
        if (wait <= 0) {
            lua_pushboolean(L, 0);
            return 2;
        }
    }
}

static void http_request_release(http_request *r)
{
    if (r->closed)
        return;
    r->closed = 1;
    http_transfer_stop(r, HTTP_STOP_ABORTED);
    http_session_return_buffer(r->session, &r->body);
    http_session_unlink(r);
    http_buffer_free(&r->head);
}

static int http_request_close(lua_State *L)
{
    http_request_release(http_request_check(L));
    return 0;
}

static int http_request_gc(lua_State *L)
{
    http_request *r = http_request_check(L);
    http_request_release(r);
    http_transfer_free(r);
    return 0;
}

static int http_request_tostring(lua_State *L)
{
    http_request *r = http_request_check(L);
    lua_pushfstring(L, "prefect.core.request (%s)",
                    r->closed ? "closed" : (r->finished ? "finished" : "running"));
    return 1;
}

void http_request_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"response", http_request_response}, {"next", http_request_next},
        {"poll", http_request_poll},         {"body", http_request_body},
        {"close", http_request_close},       {NULL, NULL}};
    luaL_newmetatable(L, HTTP_REQUEST_MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, http_request_gc);
    lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
    lua_pushcfunction(L, http_request_close);
    lua_setfield(L, -2, "__close");
#endif
    lua_pushcfunction(L, http_request_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}
