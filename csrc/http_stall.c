/* stall_timeout, enforced here rather than by libcurl's low-speed limit:
 * that one averages over whole seconds and is looked at coarsely, so a 2 s
 * limit fired after 5 to 8 s. Here every transfer keeps the time the server
 * last sent something, and the session stops a transfer once that is more
 * than stall_ms ago, right after libcurl has run (so bytes already waiting
 * in the kernel count). "Something" is what libcurl hands over or counts:
 * a complete head line, or body bytes (compressed or not). A head line
 * dripped more slowly than stall_ms is a stall, and so is a chunk line that
 * never ends. The clock starts once the connection is ready (connect_timeout
 * covers connecting) and stands still while the transfer is paused for its
 * reader: a slow consumer is not a stalled server.
 * Pure C: this runs outside libcurl's callbacks, between its calls. */
#include "http_internal.h"

void http_stall_note(http_request *r, long now_ms)
{
    r->last_data_ms = now_ms;
}

/* Notes bytes that libcurl counted without a callback of ours seeing them:
 * compressed input that has not yet inflated to anything, and the request
 * body going out. */
static void http_stall_count_bytes(http_request *r, long now_ms)
{
    curl_off_t down = 0, up = 0;
    curl_easy_getinfo(r->easy, CURLINFO_SIZE_DOWNLOAD_T, &down);
    curl_easy_getinfo(r->easy, CURLINFO_SIZE_UPLOAD_T, &up);
    if (down != r->seen_down || up != r->seen_up) {
        r->seen_down = down;
        r->seen_up = up;
        http_stall_note(r, now_ms);
    }
}

/* 1 when r has heard nothing for longer than its limit. */
static int http_stalled(http_request *r, long now_ms)
{
    if (!r->easy || r->finished || r->stall_ms <= 0)
        return 0;
    if (!r->connected || r->paused) {
        http_stall_note(r, now_ms);
        return 0;
    }
    http_stall_count_bytes(r, now_ms);
    return now_ms - r->last_data_ms > r->stall_ms;
}

void http_stall_enforce(http_session *s, long now_ms)
{
    http_request *r = s->requests;
    while (r) {
        http_request *next = r->next;
        if (http_stalled(r, now_ms))
            http_transfer_stop(r, HTTP_STOP_STALL);
        r = next;
    }
}

long http_stall_wait(const http_session *s, long now_ms, long max_ms)
{
    const http_request *r;
    long wait = max_ms;
    for (r = s->requests; r; r = r->next) {
        long left;
        if (!r->easy || r->finished || r->stall_ms <= 0 || !r->connected || r->paused)
            continue;
        /* one millisecond past the deadline, so that it has passed */
        left = r->last_data_ms + r->stall_ms + 1 - now_ms;
        if (left < 1)
            left = 1;
        if (left < wait)
            wait = left;
    }
    return wait;
}
