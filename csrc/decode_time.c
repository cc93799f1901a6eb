/* RFC 3339 timestamps to Unix epoch seconds, for the decoder's
 * timestamps = "epoch" option. Prefect emits "2026-08-21T16:27:33.512044Z",
 * 2.x servers "+00:00"; anything that is not exactly a date-time in that
 * family is refused so the caller can keep the original string. */
#include <stdint.h>

#include "decode.h"

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9)
            return 0;
        v = v * 10 + (int)d;
    }
    *out = v;
    return 1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil), valid for every year a timestamp can spell. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int len[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))
        return 29;
    return len[m - 1];
}

int dec_parse_timestamp(const char *s, size_t n, double *out)
{
    static const double pow10[10] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
    int year, mon, day, hour, min, sec, oh = 0, om = 0, sign = 0;
    int64_t frac = 0;
    int nfrac = 0;
    size_t i;

    if (n < 19 || !digits(s, 4, &year) || s[4] != '-' || !digits(s + 5, 2, &mon) || s[7] != '-' ||
        !digits(s + 8, 2, &day) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        !digits(s + 11, 2, &hour) || s[13] != ':' || !digits(s + 14, 2, &min) || s[16] != ':' ||
        !digits(s + 17, 2, &sec))
        return 0;
    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) || hour > 23 || min > 59 ||
        sec > 59)
        return 0;
    i = 19;
    if (i < n && s[i] == '.') {
        for (i++; i < n && (unsigned)((unsigned char)s[i] - '0') <= 9; i++) {
            if (++nfrac > 9)
                return 0;
            frac = frac * 10 + (s[i] - '0');
        }
        if (nfrac == 0)
            return 0;
    }
    if (i < n) {
        if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == n) {
            i = n;
        } else if ((s[i] == '+' || s[i] == '-') && n - i == 6 && digits(s + i + 1, 2, &oh) &&
                   s[i + 3] == ':' && digits(s + i + 4, 2, &om) && oh <= 23 && om <= 59) {
            sign = s[i] == '-' ? -1 : 1;
            i = n;
        } else {
            return 0;
        }
    }
    int64_t secs = days_from_civil(year, mon, day) * 86400 + hour * 3600 + min * 60 + sec -
                   sign * (oh * 3600 + om * 60);
    /* One rounding only: with at most 6 fraction digits the scaled value is an
     * integer below 2^53, so the division is correctly rounded. */
    if (nfrac <= 6 && secs < 9000000000 && secs > -9000000000)
        *out = (double)(secs * (int64_t)pow10[nfrac] + frac) / pow10[nfrac];
    else
        *out = (double)secs + (double)frac / pow10[nfrac];
    return 1;
}
