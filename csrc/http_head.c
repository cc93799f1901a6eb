/* What a response head may look like: the status line and Content-Length,
 * read as strictly as RFC 9112 and RFC 9110 ask, since libcurl lets through
 * status lines such as "HTTP/1.1 200OK" and "HTTP/1.1 999 x" and takes the
 * first of two conflicting Content-Length values. Pure C. */
#include "http_internal.h"

int http_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

int http_has_prefix_ci(const char *s, size_t len, const char *prefix)
{
    size_t i;
    for (i = 0; prefix[i]; i++)
        if (i >= len || http_lower((unsigned char)s[i]) != prefix[i])
            return 0;
    return 1;
}

int http_contains_ci(const char *s, size_t len, const char *needle)
{
    size_t n = 0, i;
    while (needle[n])
        n++;
    for (i = 0; i + n <= len; i++)
        if (http_has_prefix_ci(s + i, len - i, needle))
            return 1;
    return 0;
}

static int http_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Without the line's CRLF (or bare LF). */
static size_t http_line_length(const char *line, size_t len)
{
    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    return len;
}

int http_parse_status_line(const char *line, size_t len, long *status)
{
    size_t i = 5;
    len = http_line_length(line, len);
    /* "HTTP/1.1", or "HTTP/2" as libcurl writes an HTTP/2 status line */
    if (len < 5 || line[0] != 'H' || line[1] != 'T' || line[2] != 'T' || line[3] != 'P' ||
        line[4] != '/')
        return 0;
    if (i >= len || !http_is_digit(line[i++]))
        return 0;
    if (i < len && line[i] == '.') {
        if (i + 1 >= len || !http_is_digit(line[i + 1]))
            return 0;
        i += 2;
    }
    if (i + 4 > len || line[i] != ' ' || !http_is_digit(line[i + 1]) ||
        !http_is_digit(line[i + 2]) || !http_is_digit(line[i + 3]))
        return 0;
    if (i + 4 < len && line[i + 4] != ' ')
        return 0; /* a fourth digit, or a reason glued to the code */
    *status = (line[i + 1] - '0') * 100 + (line[i + 2] - '0') * 10 + (line[i + 3] - '0');
    return *status >= 100 && *status <= 599;
}

curl_off_t http_parse_content_length(const char *p, size_t len)
{
    curl_off_t value = -1;
    size_t i = 0;
    len = http_line_length(p, len);
    for (;;) {
        curl_off_t n = 0;
        int digits = 0;
        while (i < len && (p[i] == ' ' || p[i] == '\t'))
            i++;
        for (; i < len && http_is_digit(p[i]); i++, digits++) {
            if (digits >= 18) /* past any body we would accept, and no overflow */
                return -1;
            n = n * 10 + (p[i] - '0');
        }
        while (i < len && (p[i] == ' ' || p[i] == '\t'))
            i++;
        if (!digits || (value >= 0 && n != value))
            return -1;
        value = n;
        if (i == len)
            return value;
        if (p[i++] != ',')
            return -1;
    }
}
