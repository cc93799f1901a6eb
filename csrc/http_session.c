/* A session: one libcurl multi handle, its connection cache and a pool of
 * idle easy handles, shared by every request made through it. Pumping the
 * session moves all of its transfers forward at once. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "http_internal.h"

#ifndef PREFECT_VERSION
#define PREFECT_VERSION "scm-1"
#endif

#define HTTP_DEFAULT_MAX_RESPONSE ((curl_off_t)512 * 1024 * 1024)
/* A Prefect page of 200 runs is well under 1 MiB: only an oversized body
 * ever makes the transfer wait for its reader. */
#define HTTP_DEFAULT_READ_AHEAD (8 * 1024 * 1024)

/* libcurl's global state must be set up once per process, before any
 * thread uses it, and it is never torn down: another lua_State (or the host
 * program) may still be using libcurl when ours closes. */
static pthread_once_t http_global_once = PTHREAD_ONCE_INIT;
static CURLcode http_global_result = CURLE_FAILED_INIT;

static void http_global_init(void)
{
    http_global_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

long http_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

CURL *http_session_acquire(http_session *s)
{
    if (s->idle_count > 0)
        return s->idle[--s->idle_count];
    return curl_easy_init();
}

void http_session_release(http_session *s, CURL *easy)
{
    /* Options (and the pointers into a request they hold) are cleared here,
     * not when the handle is reused; the connection cache lives in the multi
     * handle and survives. */
    curl_easy_reset(easy);
    if (s->idle_count < HTTP_IDLE_MAX)
        s->idle[s->idle_count++] = easy;
    else
        curl_easy_cleanup(easy);
}

void http_session_lend_buffer(http_session *s, http_buffer *b)
{
    if (b->data || !s->spare.data)
        return;
    *b = s->spare;
    b->len = 0;
    s->spare.data = NULL;
    s->spare.len = s->spare.cap = 0;
}

void http_session_return_buffer(http_session *s, http_buffer *b)
{
    if (s && !s->closed && !s->spare.data && b->cap <= HTTP_SPARE_MAX) {
        s->spare = *b;
        b->data = NULL;
        b->len = b->cap = 0;
        return;
    }
    http_buffer_free(b);
}

void http_session_link(http_session *s, http_request *r)
{
    r->session = s;
    r->prev = NULL;
    r->next = s->requests;
    if (s->requests)
        s->requests->prev = r;
    s->requests = r;
}

void http_session_unlink(http_request *r)
{
    http_session *s = r->session;
    if (!s)
        return;
    if (r->prev)
        r->prev->next = r->next;
    else
        s->requests = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->session = NULL;
}

static void http_session_collect_done(http_session *s)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(s->multi, &left)) != NULL) {
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        http_request *r = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
        if (r)
            http_transfer_done(r, result);
    }
}

CURLMcode http_session_pump(http_session *s, long wait_ms)
{
    CURLMcode mc;
    int running = 0;
    if (s->closed)
        return CURLM_OK;
    if (wait_ms > 0) {
        /* libcurl wakes up for its own timers; a stall deadline is ours */
        wait_ms = http_stall_wait(s, http_now_ms(), wait_ms > 60000 ? 60000 : wait_ms);
        mc = curl_multi_poll(s->multi, NULL, 0, (int)wait_ms, NULL);
        if (mc != CURLM_OK)
            return mc;
    }
    mc = curl_multi_perform(s->multi, &running);
    s->running = running;
    s->last_pump_ms = http_now_ms();
    http_session_collect_done(s);
    http_stall_enforce(s, s->last_pump_ms);
    return mc;
}

static void http_options_free(http_options *o)
{
    free(o->ca_file);
    free(o->ca_path);
    free(o->proxy);
    free(o->noproxy);
    free(o->user_agent);
    o->ca_file = o->ca_path = o->proxy = o->noproxy = o->user_agent = NULL;
}

static void http_session_close(http_session *s)
{
    /* Also frees what a half-read options table left behind. */
    http_options_free(&s->opts);
    if (s->closed)
        return;
    s->closed = 1;
    /* Requests outlive their session as Lua values: finished ones keep
     * their body, running ones end as aborted. */
    while (s->requests) {
        http_request *r = s->requests;
        http_transfer_stop(r, HTTP_STOP_ABORTED);
        http_session_unlink(r);
    }
    while (s->idle_count > 0)
        curl_easy_cleanup(s->idle[--s->idle_count]);
    http_buffer_free(&s->spare);
    if (s->multi)
        curl_multi_cleanup(s->multi);
    s->multi = NULL;
}

static int http_session_gc(lua_State *L)
{
    http_session_close(luaL_checkudata(L, 1, HTTP_SESSION_MT));
    return 0;
}

static int http_session_close_method(lua_State *L)
{
    http_session_close(luaL_checkudata(L, 1, HTTP_SESSION_MT));
    return 0;
}

static int http_session_tostring(lua_State *L)
{
    http_session *s = luaL_checkudata(L, 1, HTTP_SESSION_MT);
    lua_pushfstring(L, "prefect.core.session (%s)", s->closed ? "closed" : "open");
    return 1;
}

/* Seconds (fractions allowed) from opts[name] as milliseconds; 0 = none. */
static long http_opt_ms(lua_State *L, int idx, const char *name, double dflt)
{
    double v = dflt;
    lua_getfield(L, idx, name);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "session: option '%s' must be a number of seconds", name);
        v = lua_tonumber(L, -1);
        if (!(v >= 0 && v <= 1e9))
            luaL_error(L, "session: option '%s' must be between 0 and 1e9 seconds", name);
    }
    lua_pop(L, 1);
    return (long)(v * 1000.0 + 0.5);
}

static int http_opt_bool(lua_State *L, int idx, const char *name, int dflt)
{
    int v = dflt;
    lua_getfield(L, idx, name);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TBOOLEAN)
            luaL_error(L, "session: option '%s' must be a boolean", name);
        v = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

/* A copy of opts[name] (or of dflt); NULL when absent. */
static char *http_opt_string(lua_State *L, int idx, const char *name, const char *dflt)
{
    const char *v = dflt;
    char *copy;
    lua_getfield(L, idx, name);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "session: option '%s' must be a string", name);
        v = lua_tostring(L, -1);
        if (strlen(v) != lua_rawlen(L, -1))
            luaL_error(L, "session: option '%s' contains a NUL byte", name);
    }
    if (!v) {
        lua_pop(L, 1);
        return NULL;
    }
    copy = malloc(strlen(v) + 1);
    if (!copy)
        luaL_error(L, "session: out of memory");
    strcpy(copy, v);
    lua_pop(L, 1);
    return copy;
}

static const char *const http_known_options[] = {
    "timeout",    "connect_timeout", "stall_timeout",   "ca_file",          "ca_path",
    "insecure",   "http2",           "proxy",           "noproxy",          "max_response",
    "read_ahead", "user_agent",      "accept_encoding", "follow_redirects", NULL};

static void http_check_option_names(lua_State *L, int idx)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int i, known = 0;
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "session: option names must be strings, got a %s", luaL_typename(L, -1));
        for (i = 0; http_known_options[i]; i++)
            if (strcmp(lua_tostring(L, -1), http_known_options[i]) == 0)
                known = 1;
        if (!known)
            luaL_error(L, "session: unknown option '%s'", lua_tostring(L, -1));
    }
}

/* Options from the table at idx (which may be nil: all defaults). */
static void http_read_options(lua_State *L, int idx, http_options *o)
{
    double max_response;
    if (lua_isnoneornil(L, idx)) {
        lua_newtable(L);
        lua_replace(L, idx);
    }
    luaL_checktype(L, idx, LUA_TTABLE);
    http_check_option_names(L, idx);
    o->timeout_ms = http_opt_ms(L, idx, "timeout", 60);
    o->connect_timeout_ms = http_opt_ms(L, idx, "connect_timeout", 10);
    o->stall_ms = http_opt_ms(L, idx, "stall_timeout", 30);
    o->insecure = http_opt_bool(L, idx, "insecure", 0);
    o->http2 = http_opt_bool(L, idx, "http2", 0);
    o->accept_encoding = http_opt_bool(L, idx, "accept_encoding", 1);
    o->follow_redirects = http_opt_bool(L, idx, "follow_redirects", 1);
    lua_getfield(L, idx, "max_response");
    max_response = (double)HTTP_DEFAULT_MAX_RESPONSE;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "session: option 'max_response' must be a number of bytes");
        max_response = lua_tonumber(L, -1);
        if (!(max_response >= 1 && max_response <= 9e18))
            luaL_error(L, "session: option 'max_response' must be at least 1 byte");
    }
    lua_pop(L, 1);
    o->max_response = (curl_off_t)max_response;
    lua_getfield(L, idx, "read_ahead");
    o->read_ahead = HTTP_DEFAULT_READ_AHEAD;
    if (!lua_isnil(L, -1)) {
        double v = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
        /* below one receive buffer it would pause after every callback */
        if (!(v >= 65536 && v <= 9e15))
            luaL_error(L, "session: option 'read_ahead' must be a number of bytes, at least 65536");
        o->read_ahead = (size_t)v;
    }
    lua_pop(L, 1);
    o->ca_file = http_opt_string(L, idx, "ca_file", NULL);
    o->ca_path = http_opt_string(L, idx, "ca_path", NULL);
    o->proxy = http_opt_string(L, idx, "proxy", NULL);
    o->noproxy = http_opt_string(L, idx, "noproxy", NULL);
    o->user_agent = http_opt_string(L, idx, "user_agent", "lua-prefect/" PREFECT_VERSION);
}

static int http_session_new(lua_State *L)
{
    http_session *s;
    lua_settop(L, 1);
    s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    /* Marked closed until complete, so a raise while reading the options
     * leaves __gc nothing but the copied strings to free. */
    s->closed = 1;
    luaL_setmetatable(L, HTTP_SESSION_MT);
    http_read_options(L, 1, &s->opts);
    s->multi = curl_multi_init();
    if (!s->multi) {
        http_options_free(&s->opts);
        return luaL_error(L, "session: curl_multi_init failed");
    }
    s->closed = 0;
    return 1;
}

static int http_session_request(lua_State *L)
{
    return http_request_new(L);
}

void http_session_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"request", http_session_request}, {"close", http_session_close_method}, {NULL, NULL}};
    luaL_newmetatable(L, HTTP_SESSION_MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, http_session_gc);
    lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
    lua_pushcfunction(L, http_session_gc);
    lua_setfield(L, -2, "__close");
#endif
    lua_pushcfunction(L, http_session_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

void http_register(lua_State *L)
{
    pthread_once(&http_global_once, http_global_init);
    if (http_global_result != CURLE_OK)
        luaL_error(L, "prefect.core: curl_global_init failed: %s",
                   curl_easy_strerror(http_global_result));
    http_session_register(L);
    http_request_register(L);
    lua_pushcfunction(L, http_session_new);
    lua_setfield(L, -2, "session");
}
