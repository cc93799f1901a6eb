/* The floor for bench/transport.lua: the same page fetched with plain
 * libcurl, one reused easy handle, the body appended to a growing buffer.
 *
 * usage: plain_curl URL BODY PAGES ENCODING [BUFFERSIZE]
 *   ENCODING "identity" sends no Accept-Encoding; "auto" lets libcurl offer
 *   and decode every encoding it has (as the transport does by default).
 *   BUFFERSIZE sets CURLOPT_BUFFERSIZE (default: libcurl's own, 16 KiB).
 * Prints: pages=N bytes=B wall_us=W cpu_us=C   (per page) */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sink {
    char *data;
    size_t len;
    size_t cap;
};

static size_t on_body(char *bytes, size_t size, size_t nmemb, void *userdata)
{
    struct sink *s = userdata;
    size_t len = size * nmemb;
    if (len > s->cap - s->len) {
        size_t cap = s->cap ? s->cap : 1024;
        char *data;
        while (cap - s->len < len)
            cap *= 2;
        data = realloc(s->data, cap);
        if (!data)
            return 0;
        s->data = data;
        s->cap = cap;
    }
    memcpy(s->data + s->len, bytes, len);
    s->len += len;
    return len;
}

static double seconds(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    struct curl_slist *headers = NULL;
    struct sink sink = {NULL, 0, 0};
    CURL *easy;
    long pages, i, status = 0;
    double wall, cpu;
    size_t bytes = 0;

    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: %s URL BODY PAGES identity|auto [BUFFERSIZE]\n", argv[0]);
        return 2;
    }
    pages = atol(argv[3]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    easy = curl_easy_init();
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");
    curl_easy_setopt(easy, CURLOPT_URL, argv[1]);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, argv[2]);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(argv[2]));
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    if (argc == 6)
        curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, atol(argv[5]));
    if (strcmp(argv[4], "auto") == 0)
        curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");

    /* One page to open the connection, outside the measurement. */
    if (curl_easy_perform(easy) != CURLE_OK) {
        fprintf(stderr, "plain_curl: first request failed\n");
        return 1;
    }
    wall = seconds(CLOCK_MONOTONIC);
    cpu = seconds(CLOCK_PROCESS_CPUTIME_ID);
    for (i = 0; i < pages; i++) {
        CURLcode rc;
        sink.len = 0;
        rc = curl_easy_perform(easy);
        if (rc != CURLE_OK) {
            fprintf(stderr, "plain_curl: %s\n", curl_easy_strerror(rc));
            return 1;
        }
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        if (status != 200) {
            fprintf(stderr, "plain_curl: status %ld\n", status);
            return 1;
        }
        bytes = sink.len;
    }
    wall = seconds(CLOCK_MONOTONIC) - wall;
    cpu = seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu;
    printf("pages=%ld bytes=%lu wall_us=%.1f cpu_us=%.1f\n", pages, (unsigned long)bytes,
           wall * 1e6 / (double)pages, cpu * 1e6 / (double)pages);
    curl_easy_cleanup(easy);
    curl_slist_free_all(headers);
    free(sink.data);
    curl_global_cleanup();
    return 0;
}
