/* The decoder's shape option: what a document must be (an array of task
 * runs, one task run, a count), checked by the scanner as the bytes arrive
 * and reported as a "protocol" error that names the run and the byte. The
 * scanner calls these where a value starts or an object closes at the
 * depths the shape is about; pure C, like the scanner. */
#include <stdio.h>
#include <string.h>

#include "decode_internal.h"

/* What a value that starts with byte c is, for the shape errors; NULL when
 * no JSON value starts so (then the grammar's error is the one reported). */
static const char *value_kind(unsigned c)
{
    switch (c) {
    case '{':
        return "an object";
    case '[':
        return "an array";
    case '"':
        return "a string";
    case 't':
    case 'f':
        return "a boolean";
    case 'n':
        return "null";
    case '-':
        return "a negative number";
    default:
        return c - '0' < 10 ? "a number" : NULL;
    }
}

/* The shape errors are "protocol" errors: well-formed JSON, not what was
 * asked for. Returns -1. */
static int shape_fail(dec_stream *d, size_t off, const char *what)
{
    dec_fail_as(d, off, "protocol", what);
    return -1;
}

/* A value of the wrong shape starts with byte c at offset pos. An object,
 * an array or a string is known to be one from its first byte; a number or
 * a literal only once it is complete (see dec_shape_settle), so that bytes that
 * are not JSON ("nope") stay a decode error. 0, or -1 with the error. */
static int shape_wrong(dec_stream *d, unsigned c, size_t pos, const char *what)
{
    if (c == '{' || c == '[' || c == '"')
        return shape_fail(d, pos, what);
    if (!d->shape_pending) {
        d->shape_pending = 1;
        d->pending_off = pos;
        snprintf(d->pending_msg, sizeof d->pending_msg, "%s", what);
    }
    return 0;
}

/* The number or literal that shape_wrong held back is complete. */
int dec_shape_settle(dec_stream *d)
{
    d->shape_pending = 0;
    return shape_fail(d, d->pending_off, d->pending_msg);
}

/* The value starting at p (offset pos) must be a task run: an object. */
int dec_shape_object(dec_stream *d, const unsigned char *p, size_t pos)
{
    const char *kind = value_kind(*p);
    char what[96];
    if (*p == '{') {
        d->has_id = 0;
        d->obj_start = pos;
        return 0;
    }
    if (!kind)
        return 0;
    if (d->shape == SHAPE_RUNS)
        snprintf(what, sizeof what, "expected task run %zu to be an object, got %s",
                 d->frames[0].count, kind);
    else
        snprintf(what, sizeof what, "expected a task run object, got %s", kind);
    return shape_wrong(d, *p, pos, what);
}

/* The document's value, starting at p (offset pos). */
int dec_shape_top(dec_stream *d, const unsigned char *p, size_t pos)
{
    const char *kind = value_kind(*p), *want;
    char what[96];
    switch (d->shape) {
    case SHAPE_RUN:
        return dec_shape_object(d, p, pos);
    case SHAPE_RUNS:
        if (*p == '[')
            return 0;
        want = "an array of task runs";
        break;
    default:
        if ((unsigned)(*p - '0') < 10)
            return 0;
        want = "a count (an integer >= 0)";
        break;
    }
    if (!kind)
        return 0;
    snprintf(what, sizeof what, "expected %s, got %s", want, kind);
    return shape_wrong(d, *p, pos, what);
}

/* Whether the key s[0..n) (its bytes between the quotes, escapes and all)
 * is "id"; a key may spell it with \u escapes. */
int dec_key_is_id(const unsigned char *s, size_t n)
{
    static const char want[] = "id";
    size_t i = 0;
    if (n == 2)
        return s[0] == 'i' && s[1] == 'd';
    if (n > 12)
        return 0;
    for (int k = 0; k < 2; k++) {
        unsigned c = 0;
        if (i >= n)
            return 0;
        if (s[i] == '\\') {
            if (n - i < 6 || s[i + 1] != 'u')
                return 0;
            for (int j = 2; j < 6; j++) {
                unsigned h = s[i + j];
                c = c << 4 | (h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
            }
            i += 6;
        } else {
            c = s[i++];
        }
        if (c != (unsigned char)want[k])
            return 0;
    }
    return i == n;
}

/* An "id" member's value, starting at p (offset pos): a string. Every "id"
 * of an object is checked, so the one the builder keeps (the last) is too. */
int dec_shape_id(dec_stream *d, const unsigned char *p, size_t pos)
{
    const char *kind = value_kind(*p);
    char what[96];
    d->id_member = 0;
    if (*p == '"') {
        d->has_id = 1;
        return 0;
    }
    if (!kind)
        return 0;
    if (d->shape == SHAPE_RUNS)
        snprintf(what, sizeof what, "expected the \"id\" of task run %zu to be a string, got %s",
                 d->frames[0].count, kind);
    else
        snprintf(what, sizeof what, "expected the task run's \"id\" to be a string, got %s", kind);
    return shape_wrong(d, *p, pos, what);
}

/* A task run's object closes: it must have had a string "id". */
int dec_shape_close(dec_stream *d)
{
    char what[64];
    if (d->has_id)
        return 0;
    if (d->shape == SHAPE_RUNS)
        snprintf(what, sizeof what, "task run %zu has no \"id\"", d->frames[0].count);
    else
        snprintf(what, sizeof what, "the task run has no \"id\"");
    return shape_fail(d, d->obj_start, what);
}

/* A count's number goes on with a fraction or an exponent at offset pos. */
int dec_shape_integer(dec_stream *d, size_t pos)
{
    return shape_wrong(d, '0', pos,
                       "expected a count (an integer >= 0), got a number that is not an integer");
}
