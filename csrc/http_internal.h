/* Shared between the transport's files: the session (http_session.c), one
 * transfer's libcurl side (http_transfer.c), the request's Lua side
 * (http_request.c) and error values (http_error.c). Not part of the module's
 * interface; http.h is. */
#ifndef PREFECT_HTTP_INTERNAL_H
#define PREFECT_HTTP_INTERNAL_H

#include <curl/curl.h>
#include <stddef.h>

#include "compat.h"
#include "decode.h"

/* Only luaopen_prefect_core leaves core.so: what the files share stays inside. */
#pragma GCC visibility push(hidden)

#define HTTP_SESSION_MT "prefect.core.session"
#define HTTP_REQUEST_MT "prefect.core.request"

/* Idle easy handles a session keeps for its next requests. */
#define HTTP_IDLE_MAX 8

/* libcurl's receive buffer per transfer (CURLOPT_BUFFERSIZE). */
#define HTTP_RECV_BUFFER 131072L

/* While a caller works through ready elements, next() still lets libcurl
 * run this often, so the rest of the body (and other requests in flight,
 * such as the next page) keep arriving instead of waiting in the kernel. */
#define HTTP_BACKGROUND_PUMP_MS 5

/* Largest body buffer a session keeps for its next request, and the most
 * a Content-Length makes us set aside before the bytes arrive. */
#define HTTP_SPARE_MAX (8 * 1024 * 1024)
#define HTTP_RESERVE_MAX HTTP_SPARE_MAX

/* Upper bound on the response's head, interim 1xx heads included, and
 * (separately) on a chunked body's trailers: libcurl caps one header line,
 * this caps how many lines a hostile server can make us read and keep. */
#define HTTP_MAX_HEAD_BYTES (256 * 1024)

typedef struct http_buffer {
    char *data;
    size_t len;
    size_t cap;
} http_buffer;

/* 0, or -1 when memory runs out (the buffer is then unchanged). */
int http_buffer_append(http_buffer *b, const char *bytes, size_t len);
/* Grows the capacity to cap when it can; failure is not an error. */
void http_buffer_reserve(http_buffer *b, size_t cap);
void http_buffer_free(http_buffer *b);

/* Why a transfer was stopped from our side; libcurl then only reports a
 * write error, so this is what names the real cause. */
typedef enum http_stop {
    HTTP_STOP_NONE = 0,
    HTTP_STOP_TOO_LARGE, /* the decompressed body passed max_response */
    HTTP_STOP_DECODE,    /* the decoder refused more input */
    HTTP_STOP_MEMORY,    /* a body or header buffer could not grow */
    HTTP_STOP_HEADERS,   /* the head or the trailers passed HTTP_MAX_HEAD_BYTES */
    HTTP_STOP_PROTOCOL,  /* the head broke HTTP's rules (stop_text says how) */
    HTTP_STOP_STALL,     /* no byte from the server for stall_ms */
    HTTP_STOP_ABORTED    /* req:close(), s:close() or collection */
} http_stop;

typedef struct http_options {
    long timeout_ms;
    long connect_timeout_ms;
    long stall_ms; /* 0: no stall limit */
    curl_off_t max_response;
    size_t read_ahead;
    char *ca_file;
    char *ca_path;
    char *proxy;
    char *noproxy;
    char *user_agent;
    int insecure;
    int http2;
    int accept_encoding;
    int follow_redirects;
} http_options;

typedef struct http_request http_request;

typedef struct http_session {
    CURLM *multi;
    http_request *requests; /* every open request made by this session */
    CURL *idle[HTTP_IDLE_MAX];
    int idle_count;
    int closed;
    int running;       /* transfers in the multi handle */
    long last_pump_ms; /* when libcurl last ran, by http_now_ms */
    /* A finished request's body buffer, handed to the next one: its pages
     * are already mapped, which saves more than the copy costs. */
    http_buffer spare;
    http_options opts;
} http_session;

struct http_request {
    http_session *session; /* NULL once the session is closed */
    http_request *prev;
    http_request *next;
    CURL *easy; /* non-NULL while the transfer is in the multi handle */
    struct curl_slist *header_list;
    dec_stream *dec;  /* borrowed: the decoder userdata lives in our user value */
    char *url;        /* redacted, for error values */
    http_buffer head; /* header lines of the final response */
    http_buffer body; /* the body when it does not go to the decoder */
    curl_off_t received;
    curl_off_t content_length; /* announced by the final response, or -1 */
    size_t head_bytes;         /* every head line so far, interim 1xx heads included */
    size_t trailer_bytes;
    curl_off_t max_response;
    size_t read_ahead;
    long status;
    int follow_redirects;
    int has_location;
    int is_json;
    int headers_done;
    int to_decoder;
    int finished;     /* the transfer is over, successfully or not */
    int dec_finished; /* dec_finish has been called */
    int paused;       /* the write callback paused the transfer: read_ahead reached */
    int closed;
    int expect_status; /* the next header line starts a response */
    int connected;     /* libcurl has a connection for the request and sends it */
    /* The stall clock (http_stall.c): when the server last sent a byte, and
     * libcurl's byte counters when they were last looked at. */
    long stall_ms;
    long last_data_ms;
    curl_off_t seen_down;
    curl_off_t seen_up;
    long os_errno; /* CURLINFO_OS_ERRNO when the transfer ended */
    CURLcode result;
    http_stop stop;
    char stop_text[128]; /* why, for HTTP_STOP_PROTOCOL and HTTP_STOP_HEADERS */
    char errbuf[CURL_ERROR_SIZE];
};

/* What one request sends; strings are borrowed for the call. */
typedef struct http_spec {
    const char *method;
    const char *url;
    const char *body;
    size_t body_len;
    int has_body;
} http_spec;

/* http_session.c */
CURL *http_session_acquire(http_session *s);
void http_session_release(http_session *s, CURL *easy);
void http_session_link(http_session *s, http_request *r);
/* Moves the session's spare buffer into b (when b has none), and back. */
void http_session_lend_buffer(http_session *s, http_buffer *b);
void http_session_return_buffer(http_session *s, http_buffer *b);
void http_session_unlink(http_request *r);
/* Lets libcurl move every transfer of the session forward, then waits up to
 * wait_ms for socket activity when wait_ms > 0 (never waits when 0). */
CURLMcode http_session_pump(http_session *s, long wait_ms);
long http_now_ms(void);
void http_session_register(lua_State *L);

/* http_stall.c (pure C, no Lua calls) */
/* A byte came from the server (or the transfer waits on our reader). */
void http_stall_note(http_request *r, long now_ms);
/* Stops every transfer of the session that has heard nothing for longer
 * than its stall_ms; called after libcurl has run. */
void http_stall_enforce(http_session *s, long now_ms);
/* Milliseconds until the session's next stall deadline (capped at max_ms). */
long http_stall_wait(const http_session *s, long now_ms, long max_ms);

/* http_head.c (pure C) */
/* 1 when the line is "HTTP/<d>[.<d>] <ddd>[ <reason>]" with 100 <= ddd <=
 * 599 (CRLF included or not); *status gets ddd. */
int http_parse_status_line(const char *line, size_t len, long *status);
/* A Content-Length value: a decimal number, or a list of equal ones
 * (RFC 9110 8.6). -1 when it is anything else. */
curl_off_t http_parse_content_length(const char *value, size_t len);
int http_has_prefix_ci(const char *s, size_t len, const char *prefix);
int http_contains_ci(const char *s, size_t len, const char *needle);
int http_lower(int c);

/* http_transfer.c (pure C: no Lua calls, safe to reach from libcurl) */
CURLcode http_transfer_configure(http_request *r, const http_options *o, const http_spec *spec);
void http_transfer_done(http_request *r, CURLcode result);
void http_transfer_stop(http_request *r, http_stop why);
void http_transfer_free(http_request *r);
/* Resumes a transfer paused for read-ahead. libcurl may hand over the
 * bytes it kept from within this call. */
void http_transfer_resume(http_request *r);

/* http_request.c */
int http_request_new(lua_State *L);
void http_request_register(lua_State *L);

/* http_error.c */
char *http_redact_url(const char *url);
const char *http_error_kind(const http_request *r);
/* Pushes nil and an error table; returns 2. */
int http_push_error(lua_State *L, const char *kind, const char *message, const char *url, int code);
int http_push_transfer_error(lua_State *L, const http_request *r);

#pragma GCC visibility pop

#endif
