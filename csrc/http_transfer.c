/* One transfer, seen from libcurl: the easy handle's options and the header
 * and write callbacks. Nothing in this file calls Lua. The callbacks run with
 * libcurl on the C stack, so they only copy bytes and record why they
 * stopped; Lua values are built by http_request.c after libcurl returns. */
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

static int http_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static int http_has_prefix_ci(const char *s, size_t len, const char *prefix)
{
    size_t i;
    for (i = 0; prefix[i]; i++)
        if (i >= len || http_lower((unsigned char)s[i]) != prefix[i])
            return 0;
    return 1;
}

static int http_contains_ci(const char *s, size_t len, const char *needle)
{
    size_t n = strlen(needle), i;
    for (i = 0; i + n <= len; i++)
        if (http_has_prefix_ci(s + i, len - i, needle))
            return 1;
    return 0;
}

/* "HTTP/1.1 200 OK" and "HTTP/2 200" alike. */
static long http_parse_status(const char *line, size_t len)
{
    size_t i = 5;
    long status = 0;
    int digits = 0;
    while (i < len && line[i] != ' ')
        i++;
    while (i < len && line[i] == ' ')
        i++;
    while (i < len && line[i] >= '0' && line[i] <= '9' && digits < 3) {
        status = status * 10 + (line[i] - '0');
        i++;
        digits++;
    }
    return digits == 3 ? status : 0;
}

/* A Content-Length value, or -1 when it is not a plain decimal number. */
static curl_off_t http_parse_length(const char *p, size_t len)
{
    curl_off_t n = 0;
    size_t i = 0;
    int digits = 0;
    while (i < len && (p[i] == ' ' || p[i] == '\t'))
        i++;
    for (; i < len && p[i] >= '0' && p[i] <= '9'; i++, digits++) {
        if (digits >= 18) /* past any body we would accept, and no overflow */
            return -1;
        n = n * 10 + (p[i] - '0');
    }
    return digits ? n : -1;
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

static size_t http_on_header(char *line, size_t size, size_t nitems, void *userdata)
{
    http_request *r = userdata;
    size_t len = size * nitems, i;

    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        /* A new response begins: an interim 1xx, a redirect being
         * followed, or the final one. Only the last one's headers count. */
        r->head.len = 0;
        r->status = http_parse_status(line, len);
        r->has_location = r->is_json = r->headers_done = 0;
        r->content_length = -1;
        return len;
    }
    if (r->headers_done)
        return len; /* trailers of a chunked body */
    if (len <= 2 && (line[0] == '\r' || line[0] == '\n')) {
        if (r->status >= 200 && !http_is_followed(r)) {
            r->headers_done = 1;
            r->to_decoder = r->dec && r->status >= 200 && r->status < 300 && r->is_json;
            /* One allocation for the announced body instead of a doubling
             * series (a compressed body's length is still a fair start);
             * bounded, since the announcement is only the server's word. */
            if (!r->to_decoder && r->content_length > 0) {
                curl_off_t want = r->content_length;
                if (want > r->max_response)
                    want = r->max_response;
                if (want > HTTP_RESERVE_MAX)
                    want = HTTP_RESERVE_MAX;
                http_buffer_reserve(&r->body, (size_t)want);
            }
        }
        return len;
    }
    if (r->head.len + len > HTTP_MAX_HEAD_BYTES) {
        r->stop = HTTP_STOP_HEADERS;
        return 0;
    }
    if (http_has_prefix_ci(line, len, "content-type:"))
        r->is_json = http_contains_ci(line, len, "json");
    else if (http_has_prefix_ci(line, len, "location:"))
        r->has_location = 1;
    else if (http_has_prefix_ci(line, len, "content-length:"))
        r->content_length = http_parse_length(line + 15, len - 15);
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

static size_t http_on_body(char *bytes, size_t size, size_t nmemb, void *userdata)
{
    http_request *r = userdata;
    size_t len = size * nmemb;

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
    if (o->stall_seconds > 0) {
        HTTP_SET(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        HTTP_SET(e, CURLOPT_LOW_SPEED_TIME, o->stall_seconds);
    }
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
