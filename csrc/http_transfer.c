/* One transfer, seen from libcurl: the easy handle's options and the header
 * and write callbacks. Nothing in this file calls Lua. The callbacks run with
 * libcurl on the C stack, so they only copy bytes and record why they
 * stopped; Lua values are built by http_request.c after libcurl returns. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_internal.h"

int http_buffer_append(http_buffer *b, const char *bytes, size_t len)
{
    if (len > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 1024;
        char *data;
        while (cap - b->len < len) {
            if (cap > ((size_t)-1) / 2)
                return -1;
            cap *= 2;
        }
        data = realloc(b->data, cap);
        if (!data)
            return -1;
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, len);
    b->len += len;
    return 0;
}

void http_buffer_reserve(http_buffer *b, size_t cap)
{
    char *data;
    if (cap <= b->cap)
        return;
    data = realloc(b->data, cap);
    if (!data)
        return; /* only a hint: appending grows it later or reports failure */
    b->data = data;
    b->cap = cap;
}

void http_buffer_free(http_buffer *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int http_is_followed(const http_request *r)
{
    switch (r->status) {
    case 301:
    case 302:
    case 303:
    case 307:
    case 308:
        return r->follow_redirects && r->has_location;
    default:
        return 0;
    }
}

/* Stops the transfer for a head that breaks HTTP's rules; returns 0 for
 * libcurl (which then reports a write error). */
static size_t http_refuse_head(http_request *r, http_stop why, const char *text)
{
    r->stop = why;
    snprintf(r->stop_text, sizeof r->stop_text, "%s", text);
    return 0;
}

/* One line of the head after the status line: what we need of it, kept
 * with its name in lower case. */
static size_t http_on_field(http_request *r, char *line, size_t len)
{
    size_t i;
    if (http_has_prefix_ci(line, len, "content-type:")) {
        r->is_json = http_contains_ci(line, len, "json");
    } else if (http_has_prefix_ci(line, len, "location:")) {
        r->has_location = 1;
    } else if (http_has_prefix_ci(line, len, "content-length:")) {
        /* libcurl takes the first of two different lengths; the body's
         * end would then be a guess (RFC 9112 6.3). */
        curl_off_t n = http_parse_content_length(line + 15, len - 15);
        if (n < 0)
            return http_refuse_head(r, HTTP_STOP_PROTOCOL, "invalid Content-Length header");
        if (r->content_length >= 0 && n != r->content_length)
            return http_refuse_head(r, HTTP_STOP_PROTOCOL, "conflicting Content-Length headers");
        r->content_length = n;
    }
    i = r->head.len;
    if (http_buffer_append(&r->head, line, len) != 0) {
        r->stop = HTTP_STOP_MEMORY;
        return 0;
    }
    /* Names are case-insensitive; store them the way Lua will index them. */
    for (; i < r->head.len && r->head.data[i] != ':'; i++)
        r->head.data[i] = (char)http_lower((unsigned char)r->head.data[i]);
    return len;
}

/* The blank line that ends a head: the final response's, or an interim
 * 1xx's (or a redirect's being followed), after which another comes. */
static void http_on_head_end(http_request *r)
{
    if (r->status < 200 || http_is_followed(r)) {
        r->expect_status = 1;
        return;
    }
    r->headers_done = 1;
    r->to_decoder = r->dec && r->status >= 200 && r->status < 300 && r->is_json;
    /* One allocation for the announced body instead of a doubling series
     * (a compressed body's length is still a fair start); bounded, since
     * the announcement is only the server's word. */
    if (!r->to_decoder && r->content_length > 0) {
        curl_off_t want = r->content_length;
        if (want > r->max_response)
            want = r->max_response;
        if (want > HTTP_RESERVE_MAX)
            want = HTTP_RESERVE_MAX;
        http_buffer_reserve(&r->body, (size_t)want);
    }
}

static size_t http_on_header(char *line, size_t size, size_t nitems, void *userdata)
{
    http_request *r = userdata;
    size_t len = size * nitems;

    http_stall_note(r, http_now_ms());
    if (r->headers_done) {
        /* trailers of a chunked body: libcurl keeps them all, so they are
         * bounded like a head */
        r->trailer_bytes += len;
        if (r->trailer_bytes > HTTP_MAX_HEAD_BYTES)
            return http_refuse_head(r, HTTP_STOP_HEADERS, "response trailers larger than 256 KiB");
        return len;
    }
    /* A flood of 100 Continue heads counts here too, not only the last. */
    r->head_bytes += len;
    if (r->head_bytes > HTTP_MAX_HEAD_BYTES)
        return http_refuse_head(r, HTTP_STOP_HEADERS,
                                "response head larger than 256 KiB (1xx heads included)");
    if (r->expect_status) {
        /* A new response begins: an interim 1xx, a redirect being
         * followed, or the final one. Only the last one's headers count. */
        long status = 0;
        if (!http_parse_status_line(line, len, &status))
            return http_refuse_head(r, HTTP_STOP_PROTOCOL, "malformed status line");
        r->expect_status = 0;
        r->head.len = 0;
        r->status = status;
        r->has_location = r->is_json = 0;
        r->content_length = -1;
        return len;
    }
    if (len <= 2 && (line[0] == '\r' || line[0] == '\n')) {
        http_on_head_end(r);
        return len;
    }
    return http_on_field(r, line, len);
}

#if LIBCURL_VERSION_NUM >= 0x075000
/* libcurl has a connection (connected, TLS done, or reused) and is about to
 * send the request: the stall clock starts, and what fails from here on is
 * the server's doing, not the request's. */
static int http_on_sending(void *userdata, char *conn_primary_ip, char *conn_local_ip,
                           int conn_primary_port, int conn_local_port)
{
    http_request *r = userdata;
    (void)conn_primary_ip;
    (void)conn_local_ip;
    (void)conn_primary_port;
    (void)conn_local_port;
    r->connected = 1;
    http_stall_note(r, http_now_ms());
    return CURL_PREREQFUNC_OK;
}
#endif

static size_t http_on_body(char *bytes, size_t size, size_t nmemb, void *userdata)
{
    http_request *r = userdata;
    size_t len = size * nmemb;

    http_stall_note(r, http_now_ms());
    /* Back-pressure: while the reader has a value to take and the decoder
     * already holds read_ahead bytes, libcurl keeps these bytes (and stops
     * reading the socket) until http_transfer_resume. This bounds memory by
     * read_ahead, not by the body's size. */
    if (r->to_decoder && dec_ready(r->dec) && dec_pending(r->dec) >= r->read_ahead) {
        r->paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    /* libcurl hands us decompressed bytes, so this bounds what the server
     * can make us hold, however well it compresses. */
    if ((curl_off_t)len > r->max_response - r->received) {
        r->stop = HTTP_STOP_TOO_LARGE;
        return 0;
    }
    r->received += (curl_off_t)len;
    if (r->to_decoder) {
        if (dec_append(r->dec, bytes, len) != 0) {
            r->stop = HTTP_STOP_DECODE;
            return 0;
        }
    } else if (http_buffer_append(&r->body, bytes, len) != 0) {
        r->stop = HTTP_STOP_MEMORY;
        return 0;
    }
    return len;
}

#define HTTP_SET(easy, option, value)                                                              \
    do {                                                                                           \
        CURLcode set_rc_ = curl_easy_setopt((easy), (option), (value));                            \
        if (set_rc_ != CURLE_OK)                                                                   \
            return set_rc_;                                                                        \
    } while (0)

static CURLcode http_configure_session(CURL *e, const http_options *o)
{
    HTTP_SET(e, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    HTTP_SET(e, CURLOPT_PROTOCOLS_STR, "http,https");
    HTTP_SET(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    HTTP_SET(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    HTTP_SET(e, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    HTTP_SET(e, CURLOPT_TIMEOUT_MS, o->timeout_ms);
    HTTP_SET(e, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    HTTP_SET(e, CURLOPT_SSL_VERIFYPEER, o->insecure ? 0L : 1L);
    HTTP_SET(e, CURLOPT_SSL_VERIFYHOST, o->insecure ? 0L : 2L);
    if (o->ca_file)
        HTTP_SET(e, CURLOPT_CAINFO, o->ca_file);
    if (o->ca_path)
        HTTP_SET(e, CURLOPT_CAPATH, o->ca_path);
    HTTP_SET(e, CURLOPT_HTTP_VERSION,
             o->http2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
    if (o->accept_encoding)
        HTTP_SET(e, CURLOPT_ACCEPT_ENCODING, ""); /* every decoder libcurl has */
    if (o->proxy)
        HTTP_SET(e, CURLOPT_PROXY, o->proxy);
    if (o->noproxy)
        HTTP_SET(e, CURLOPT_NOPROXY, o->noproxy);
    HTTP_SET(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    /* Pages are hundreds of KiB: a larger receive buffer means fewer
     * wake-ups and callbacks per page than libcurl's default 16 KiB. Only a
     * hint: libcurl refuses it for a pooled handle that still holds its
     * buffer (after an HTTP/2 transfer, or a failed one), and reads into
     * that one instead. */
    (void)curl_easy_setopt(e, CURLOPT_BUFFERSIZE, HTTP_RECV_BUFFER);
    HTTP_SET(e, CURLOPT_USERAGENT, o->user_agent);
    HTTP_SET(e, CURLOPT_FOLLOWLOCATION, o->follow_redirects ? 1L : 0L);
    HTTP_SET(e, CURLOPT_MAXREDIRS, 5L);
    return CURLE_OK;
}

CURLcode http_transfer_configure(http_request *r, const http_options *o, const http_spec *spec)
{
    CURL *e = r->easy;
    CURLcode rc = http_configure_session(e, o);
    if (rc != CURLE_OK)
        return rc;
    HTTP_SET(e, CURLOPT_PRIVATE, (void *)r);
    HTTP_SET(e, CURLOPT_ERRORBUFFER, r->errbuf);
    HTTP_SET(e, CURLOPT_URL, spec->url);
    HTTP_SET(e, CURLOPT_HEADERFUNCTION, http_on_header);
    HTTP_SET(e, CURLOPT_HEADERDATA, (void *)r);
    HTTP_SET(e, CURLOPT_WRITEFUNCTION, http_on_body);
    HTTP_SET(e, CURLOPT_WRITEDATA, (void *)r);
    HTTP_SET(e, CURLOPT_HTTPHEADER, r->header_list);
#if LIBCURL_VERSION_NUM >= 0x075000
    HTTP_SET(e, CURLOPT_PREREQFUNCTION, http_on_sending);
    HTTP_SET(e, CURLOPT_PREREQDATA, (void *)r);
#else
    r->connected = 1; /* no way to tell: the stall clock runs from here */
#endif
    r->expect_status = 1;
    r->stall_ms = o->stall_ms;
    http_stall_note(r, http_now_ms());

    if (strcmp(spec->method, "HEAD") == 0) {
        HTTP_SET(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(spec->method, "GET") == 0 && !spec->has_body) {
        HTTP_SET(e, CURLOPT_HTTPGET, 1L);
    } else {
        if (strcmp(spec->method, "POST") == 0)
            HTTP_SET(e, CURLOPT_POST, 1L);
        else
            HTTP_SET(e, CURLOPT_CUSTOMREQUEST, spec->method);
        if (spec->has_body || strcmp(spec->method, "POST") == 0) {
            /* The body string stays alive in the request's user value:
             * libcurl reads it in place, without a copy. */
            HTTP_SET(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)spec->body_len);
            HTTP_SET(e, CURLOPT_POSTFIELDS, spec->has_body ? spec->body : "");
        }
    }
    return CURLE_OK;
}

/* Gives the easy handle back and frees what its options pointed to, in that
 * order: libcurl may look at the header list until the handle is reset. */
static void http_release_easy(http_request *r)
{
    if (r->easy) {
        if (r->session && r->session->multi)
            curl_multi_remove_handle(r->session->multi, r->easy);
        if (r->session)
            http_session_release(r->session, r->easy);
        else
            curl_easy_cleanup(r->easy);
        r->easy = NULL;
    }
    curl_slist_free_all(r->header_list);
    r->header_list = NULL;
}

void http_transfer_done(http_request *r, CURLcode result)
{
    r->result = result;
    if (r->easy && result != CURLE_OK)
        curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &r->os_errno);
    r->finished = 1;
    http_release_easy(r);
}

void http_transfer_stop(http_request *r, http_stop why)
{
    if (r->finished) {
        http_release_easy(r);
        return;
    }
    if (r->stop == HTTP_STOP_NONE)
        r->stop = why;
    r->finished = 1;
    /* Removing a running transfer closes its connection rather than
     * returning it half-read to the cache. */
    http_release_easy(r);
}

void http_transfer_resume(http_request *r)
{
    CURLcode rc;
    if (!r->paused)
        return;
    r->paused = 0;
    if (!r->easy || r->finished)
        return;
    http_stall_note(r, http_now_ms());
    rc = curl_easy_pause(r->easy, CURLPAUSE_CONT);
    if (rc != CURLE_OK)
        http_transfer_done(r, rc);
}

void http_transfer_free(http_request *r)
{
    http_release_easy(r);
    http_buffer_free(&r->head);
    http_buffer_free(&r->body);
    free(r->url);
    r->url = NULL;
}
