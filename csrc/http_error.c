/* Transport errors as the core's error tables (core_error.h), with the
 * transport's fields: { kind, message, url, code }. The
 * URL in them never carries credentials or query values, because error
 * values end up in logs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_error.h"
#include "http_internal.h"

/* The URL without user:password@ and with every query value dropped
 * ("?key=secret&a=1" becomes "?key=&a="); the fragment goes too. */
char *http_redact_url(const char *url)
{
    size_t n = strlen(url);
    char *out = malloc(n + 1), *o = out;
    const char *p = url, *authority, *end, *at = NULL, *q;
    if (!out)
        return NULL;
    q = strstr(url, "://");
    authority = q ? q + 3 : url;
    memcpy(o, url, (size_t)(authority - url));
    o += authority - url;
    end = authority + strcspn(authority, "/?#");
    for (q = authority; q < end; q++)
        if (*q == '@')
            at = q;
    p = at ? at + 1 : authority;
    while (*p && *p != '?' && *p != '#')
        *o++ = *p++;
    if (*p == '?') {
        int in_value = 0;
        *o++ = *p++;
        for (; *p && *p != '#'; p++) {
            if (*p == '&') {
                in_value = 0;
                *o++ = '&';
            } else if (in_value) {
                continue;
            } else {
                *o++ = *p;
                in_value = *p == '=';
            }
        }
    }
    *o = '\0';
    return out;
}

/* libcurl's CURLE_OUT_OF_MEMORY while a head is read: a header line past
 * CURL_MAX_HTTP_HEADER (libcurl gives no other sign of it). */
static int http_is_long_header_line(const http_request *r)
{
    return r->result == CURLE_OUT_OF_MEMORY && r->connected && !r->headers_done;
}

/* A first line that long is no status line (HTTP/0.9, or not HTTP at all):
 * libcurl gave up on it before handing any head line over. */
static int http_is_long_first_line(const http_request *r)
{
    return http_is_long_header_line(r) && r->head_bytes == 0;
}

/* CURLE_RECV_ERROR is both a broken connection (the OS said why) and bytes
 * libcurl refused: a bad chunk size, a chunk or trailer line too long. */
static int http_is_refused_body(const http_request *r)
{
    return r->result == CURLE_RECV_ERROR && r->os_errno == 0;
}

/* libcurl's words for a chunk or trailer line past its limit. */
static int http_is_long_chunk_line(const http_request *r)
{
    return http_is_refused_body(r) && strncmp(r->errbuf, "Out of memory", 13) == 0;
}

/* The error kinds of docs/client.md. "connect" is for a server never
 * reached (CURLE_COULDNT_RESOLVE_PROXY, _RESOLVE_HOST, _CONNECT) and for a
 * connection that broke (_SEND_ERROR, _GOT_NOTHING, _RECV_ERROR with an OS
 * error); "invalid" only for what the caller asked for, never for what a
 * server sent. */
const char *http_error_kind(const http_request *r)
{
    switch (r->stop) {
    case HTTP_STOP_TOO_LARGE:
    case HTTP_STOP_HEADERS:
        return "too_large";
    case HTTP_STOP_DECODE:
        return "decode";
    case HTTP_STOP_ABORTED:
    case HTTP_STOP_MEMORY:
        return "aborted";
    case HTTP_STOP_PROTOCOL:
        return "protocol";
    case HTTP_STOP_STALL:
        return "timeout";
    case HTTP_STOP_NONE:
        break;
    }
    switch (r->result) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    /* The connection broke (reset, closed before any reply): the request
     * may be sent again on a new connection, like a failed connect. */
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
        return "connect";
    case CURLE_RECV_ERROR:
        if (!http_is_refused_body(r))
            return "connect";
        return http_is_long_chunk_line(r) ? "too_large" : "protocol";
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED:
        return "tls";
    case CURLE_FILESIZE_EXCEEDED:
        return "too_large";
    case CURLE_OUT_OF_MEMORY:
        if (http_is_long_first_line(r))
            return "protocol";
        return http_is_long_header_line(r) ? "too_large" : "aborted";
    /* Once connected, this is libcurl refusing the response: HTTP/0.9, a
     * status code it does not know, a version it does not speak. */
    case CURLE_UNSUPPORTED_PROTOCOL:
        return r->connected ? "protocol" : "invalid";
    case CURLE_URL_MALFORMAT:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
    case CURLE_NOT_BUILT_IN:
        return "invalid";
    case CURLE_ABORTED_BY_CALLBACK:
        return "aborted";
    default:
        return "protocol";
    }
}

int http_push_error(lua_State *L, const char *kind, const char *message, const char *url, int code)
{
    core_push_error(L, kind, message);
    if (url) {
        lua_pushstring(L, url);
        lua_setfield(L, -2, "url");
    }
    if (code >= 0) {
        lua_pushinteger(L, code);
        lua_setfield(L, -2, "code");
    }
    return 2;
}

/* The message of a transfer that libcurl ended, pushed. */
static void http_push_curl_message(lua_State *L, const http_request *r)
{
    const char *text = r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->result);
    if (http_is_long_first_line(r))
        lua_pushfstring(L, "malformed status line: a first line longer than %d KiB",
                        (int)(CURL_MAX_HTTP_HEADER / 1024));
    else if (http_is_long_header_line(r))
        lua_pushfstring(L, "a response header line longer than %d KiB",
                        (int)(CURL_MAX_HTTP_HEADER / 1024));
    else if (http_is_long_chunk_line(r))
        lua_pushfstring(L, "a chunk or trailer line longer than libcurl allows (%s)", text);
    else if (r->result == CURLE_UNSUPPORTED_PROTOCOL && r->connected)
        lua_pushfstring(L, "malformed response: %s", text);
    else
        lua_pushstring(L, text);
}

int http_push_transfer_error(lua_State *L, const http_request *r)
{
    const char *kind = http_error_kind(r);
    if (r->stop == HTTP_STOP_DECODE && r->dec) {
        /* the decoder's own error, with its kind and offset */
        dec_push_error(L, r->dec);
        if (r->url) {
            lua_pushstring(L, r->url);
            lua_setfield(L, -2, "url");
        }
        return 2;
    }
    switch (r->stop) {
    case HTTP_STOP_TOO_LARGE: {
        char text[96];
        snprintf(text, sizeof text, "response body larger than max_response (%lld bytes)",
                 (long long)r->max_response);
        lua_pushstring(L, text);
        break;
    }
    case HTTP_STOP_DECODE:
        lua_pushliteral(L, "the decoder refused the response body");
        break;
    case HTTP_STOP_MEMORY:
        lua_pushliteral(L, "out of memory while receiving the response");
        break;
    case HTTP_STOP_HEADERS:
    case HTTP_STOP_PROTOCOL:
        lua_pushstring(L, r->stop_text);
        break;
    case HTTP_STOP_STALL: {
        char text[64];
        snprintf(text, sizeof text, "no data for %g s (stall_timeout)", r->stall_ms / 1000.0);
        lua_pushstring(L, text);
        break;
    }
    case HTTP_STOP_ABORTED:
        lua_pushliteral(L, "request closed before it completed");
        break;
    case HTTP_STOP_NONE:
        http_push_curl_message(L, r);
        break;
    }
    http_push_error(L, kind, lua_tostring(L, -1), r->url,
                    r->stop == HTTP_STOP_NONE ? (int)r->result : -1);
    lua_remove(L, -3);
    return 2;
}
