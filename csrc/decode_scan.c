/* The scanner behind dec_append: validates JSON bytes as they arrive, at
 * any split point, records every container's size and extent for the
 * builder, and queues finished elements. Pure C: it never calls Lua, so
 * the transport can drive it from inside a libcurl callback. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode_internal.h"

/* ---------------------------------------------------------------- errors */

void dec_fail_as(dec_stream *d, size_t off, const char *kind, const char *what)
{
    char near[64];
    size_t n = 0;
    if (d->failed)
        return;
    d->failed = 1;
    d->err_kind = kind;
    d->err_off = off + 1;
    if (d->buf && off >= d->base && off < d->base + d->len) {
        const unsigned char *s = (const unsigned char *)d->buf + (off - d->base);
        size_t avail = d->base + d->len - off;
        for (size_t i = 0; i < avail && i < 16 && n + 5 < sizeof near; i++) {
            if (s[i] >= 0x20 && s[i] < 0x7f)
                near[n++] = (char)s[i];
            else
                n += (size_t)snprintf(near + n, sizeof near - n, "\\x%02x", s[i]);
        }
    }
    near[n] = 0;
    if (n)
        snprintf(d->err_msg, sizeof d->err_msg, "%s at byte %zu near '%s'", what, d->err_off, near);
    else
        snprintf(d->err_msg, sizeof d->err_msg, "%s at byte %zu", what, d->err_off);
}

void dec_fail(dec_stream *d, size_t off, const char *what)
{
    dec_fail_as(d, off, "decode", what);
}

/* -------------------------------------------------------------- scanner */

const unsigned char dec_str_class[256] = {
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};

const unsigned char dec_ws_class[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1};

/* Records before the first one still needed are dropped when the array
 * has to grow; likewise elements and input bytes. */
static size_t keep_rec(const dec_stream *d)
{
    if (d->head < d->tail)
        return d->elems[d->head].rec;
    if (d->in_elem)
        return d->elem_rec;
    return d->rec_base + d->nrecs;
}

static int new_rec(dec_stream *d, size_t *out)
{
    if (d->nrecs == d->recs_cap) {
        size_t drop = keep_rec(d) - d->rec_base;
        if (drop > 0) {
            memmove(d->recs, d->recs + drop, (d->nrecs - drop) * sizeof *d->recs);
            d->nrecs -= drop;
            d->rec_base += drop;
        }
        if (d->nrecs == d->recs_cap) {
            size_t cap = d->recs_cap ? d->recs_cap * 2 : 64;
            dec_rec *r = realloc(d->recs, cap * sizeof *r);
            if (!r)
                return -1;
            d->recs = r;
            d->recs_cap = cap;
        }
    }
    *out = d->rec_base + d->nrecs++;
    return 0;
}

static int push_elem(dec_stream *d, size_t end)
{
    if (d->head == d->tail)
        d->head = d->tail = 0;
    if (d->tail == d->elems_cap) {
        if (d->head > 0) {
            memmove(d->elems, d->elems + d->head, (d->tail - d->head) * sizeof *d->elems);
            d->tail -= d->head;
            d->head = 0;
        }
        if (d->tail == d->elems_cap) {
            size_t cap = d->elems_cap ? d->elems_cap * 2 : 16;
            dec_elem *e = realloc(d->elems, cap * sizeof *e);
            if (!e)
                return -1;
            d->elems = e;
            d->elems_cap = cap;
        }
    }
    dec_elem *e = &d->elems[d->tail++];
    e->start = d->elem_start;
    e->end = end;
    e->rec = d->elem_rec;
    e->escapes = d->elem_escapes;
    return 0;
}

static int open_container(dec_stream *d, size_t pos, int obj)
{
    dec_frame *f;
    if (d->depth >= d->max_depth) {
        char what[80];
        snprintf(what, sizeof what, "nesting deeper than max_depth (%d)", d->max_depth);
        dec_fail(d, pos, what);
        return -1;
    }
    if (d->depth == d->frames_cap) {
        int cap = d->frames_cap ? d->frames_cap * 2 : 32;
        dec_frame *fr = realloc(d->frames, (size_t)cap * sizeof *fr);
        if (!fr) {
            dec_fail(d, pos, "out of memory");
            return -1;
        }
        d->frames = fr;
        d->frames_cap = cap;
    }
    f = &d->frames[d->depth];
    f->obj = (unsigned char)obj;
    f->count = f->nulls = 0;
    /* the top-level array whose elements are handed out is never built */
    f->recorded = !(d->depth == 0 && d->elem_depth == 1);
    if (f->recorded && new_rec(d, &f->rec) < 0) {
        dec_fail(d, pos, "out of memory");
        return -1;
    }
    d->depth++;
    return 0;
}

static const char *const literals[3] = {"true", "false", "null"};

/* Written as one function whose labels are the grammar's positions: the
 * common path jumps from label to label, and the position is saved in d->st
 * (and d->nst for numbers) only when the input runs out. */
int dec_scan(dec_stream *d)
{
    enum { v_flag = 0, k_flag = 1 };
    const unsigned char *b = (const unsigned char *)d->buf;
    const unsigned char *p = b + d->scan, *e = b + d->len;
    /* the innermost open container, NULL at the top level */
    dec_frame *top = d->depth > 0 ? &d->frames[d->depth - 1] : NULL;
    unsigned c;

#define POS(q) (d->base + (size_t)((q)-b))
#define FAIL(q, what)                                                                              \
    do {                                                                                           \
        d->scan = (size_t)((q)-b);                                                                 \
        dec_fail(d, POS(q), what);                                                                 \
        return -1;                                                                                 \
    } while (0)
#define CHECK(call)                                                                                \
    do {                                                                                           \
        if ((call) < 0) {                                                                          \
            d->scan = (size_t)(p - b);                                                             \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)
#define NEED(state)                                                                                \
    do {                                                                                           \
        if (p == e) {                                                                              \
            d->st = (state);                                                                       \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)
#define NEED_NUM(sub)                                                                              \
    do {                                                                                           \
        if (p == e) {                                                                              \
            d->st = ST_NUM;                                                                        \
            d->nst = (sub);                                                                        \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)
#define SKIP_WS                                                                                    \
    do {                                                                                           \
        if (p < e && *p <= ' ')                                                                    \
            while (p < e && dec_ws_class[*p])                                                      \
                p++;                                                                               \
    } while (0)

    switch (d->st) {
    case ST_TOP:
        goto top;
    case ST_ELEM:
        goto elem;
    case ST_VALUE:
        goto value;
    case ST_ARR_FIRST:
        goto arr_first;
    case ST_OBJ_FIRST:
        goto obj_first;
    case ST_KEY:
        goto key;
    case ST_COLON:
        goto colon;
    case ST_AFTER:
        goto after;
    case ST_STR:
        goto str;
    case ST_ESC:
        goto esc;
    case ST_UHEX:
        goto uhex;
    case ST_SURR_BS:
        goto surr_bs;
    case ST_SURR_U:
        goto surr_u;
    case ST_UTF8:
        goto utf8;
    case ST_NUM:
        switch (d->nst) {
        case N_MINUS:
            goto n_minus;
        case N_ZERO:
            goto n_zero;
        case N_INT:
            goto n_int;
        case N_DOT:
            goto n_dot;
        case N_FRAC:
            goto n_frac;
        case N_E:
            goto n_e;
        case N_ESIGN:
            goto n_esign;
        default:
            goto n_exp;
        }
    case ST_LIT:
        goto lit;
    default:
        goto end;
    }

arr_first:
    SKIP_WS;
    NEED(ST_ARR_FIRST);
    if (*p == ']')
        goto close;
    goto elem_here;
elem: /* a value in an array, after ',' */
    SKIP_WS;
    NEED(ST_ELEM);
elem_here:
    top->count++;
    if (d->depth + 1 == d->id_depth)
        CHECK(dec_shape_object(d, p, POS(p)));
    if (d->depth == d->elem_depth)
        goto elem_begin;
    goto value_here;
top: /* the document's value */
    SKIP_WS;
    NEED(ST_TOP);
    if (d->shape != SHAPE_ANY)
        CHECK(dec_shape_top(d, p, POS(p)));
    d->elem_depth = d->split && *p == '[' ? 1 : 0;
    if (d->elem_depth == 0) {
    elem_begin:
        d->in_elem = 1;
        d->elem_start = POS(p);
        d->elem_rec = d->rec_base + d->nrecs;
        d->elem_escapes = 0;
    }
    goto value_here;
value: /* an object member's value: never an element */
    SKIP_WS;
    NEED(ST_VALUE);
    if (d->id_member)
        CHECK(dec_shape_id(d, p, POS(p)));
value_here:
    /* tests in the order of how often Prefect's values start so */
    c = *p;
    if (c == '"') {
        p++;
        goto vstr;
    }
    if (c == 'n' || c == 't' || c == 'f') {
        d->lit = c == 't' ? 0 : c == 'f' ? 1 : 2;
        if (d->lit == 2 && top && top->obj)
            top->nulls++;
        if ((size_t)(e - p) >= 5 && same4(p, literals[d->lit]) && (d->lit != 1 || p[4] == 'e')) {
            p += 4 + (d->lit == 1);
            goto scalar_done;
        }
        d->litpos = 1;
        p++;
        goto lit;
    }
    if (c - '1' < 9) {
        p++;
        goto n_int;
    }
    if (c == '{') {
        CHECK(open_container(d, POS(p), 1));
        top = &d->frames[d->depth - 1];
        p++;
        goto obj_first;
    }
    if (c == '[') {
        CHECK(open_container(d, POS(p), 0));
        top = &d->frames[d->depth - 1];
        p++;
        goto arr_first;
    }
    if (c == '0') {
        p++;
        goto n_zero;
    }
    if (c == '-') {
        p++;
        goto n_minus;
    }
    FAIL(p, "unexpected character");

obj_first:
    SKIP_WS;
    NEED(ST_OBJ_FIRST);
    if (*p == '}')
        goto close;
    if (*p != '"')
        FAIL(p, "expected an object key");
    goto key_here;
key:
    SKIP_WS;
    NEED(ST_KEY);
    if (*p != '"')
        FAIL(p, "expected an object key");
key_here:
    top->count++;
    if (d->depth == d->id_depth) {
        /* A key is told from its first bytes, unless an escape is among
         * them or the input ends first: then from all of them, at its end. */
        if (e - p >= 4 && p[1] != '\\' && p[2] != '\\') {
            d->id_member = same4(p, "\"id\"");
        } else {
            d->id_key = 1;
            d->key_start = POS(p) + 1;
        }
    }
    p++;
    goto kstr;

key_end: /* p is just past a key's closing quote */
    if (d->id_key) {
        d->id_key = 0;
        if (d->key_start >= d->base)
            d->id_member = dec_key_is_id(b + (d->key_start - d->base), POS(p) - 1 - d->key_start);
    }
    goto colon;

colon:
    /* compact JSON (what Prefect sends): the value right after the ':' */
    if (e - p >= 2 && *p == ':' && p[1] > ' ') {
        p++;
        if (d->id_member)
            CHECK(dec_shape_id(d, p, POS(p)));
        goto value_here;
    }
    SKIP_WS;
    NEED(ST_COLON);
    if (*p != ':')
        FAIL(p, "expected ':'");
    p++;
    goto value;

after:
    /* compact JSON: the next key or element right after the ',' */
    if (e - p >= 2 && *p == ',' && p[1] > ' ') {
        if (!top->obj) {
            p++;
            goto elem_here;
        }
        if (p[1] == '"') {
            p++;
            goto key_here;
        }
    }
    SKIP_WS;
    NEED(ST_AFTER);
    c = *p;
    if (c == ',') {
        p++;
        if (top->obj)
            goto key;
        goto elem;
    }
    if (c == (top->obj ? '}' : ']'))
        goto close;
    FAIL(p, top->obj ? "expected ',' or '}'" : "expected ',' or ']'");

close : {
    dec_frame *f = top;
    if (d->depth == d->id_depth)
        CHECK(dec_shape_close(d));
    top = --d->depth > 0 ? f - 1 : NULL;
    if (f->recorded) {
        dec_rec *r = &d->recs[f->rec - d->rec_base];
        r->count = f->count;
        r->nulls = f->nulls;
        r->end = POS(p);
        r->next = d->rec_base + d->nrecs;
    }
    p++;
}
    /* fall through: a container is a value that is done */
done: /* a value ended just before p */
    if (d->depth == d->elem_depth) {
        d->in_elem = 0;
        if (push_elem(d, POS(p)) < 0)
            FAIL(p, "out of memory");
    }
    if (d->depth == 0)
        goto end;
    goto after;

    /* A string's bytes, in two copies of one loop so that the common path
     * need not remember whether it is in a key; the slow paths (escapes,
     * multi-byte UTF-8, the end of the input) record it in d->in_key. */
#define STRING_LOOP(is_key, on_end)                                                                \
    for (;;) {                                                                                     \
        while (e - p >= CHUNK) {                                                                   \
            int quote;                                                                             \
            size_t k = special_at(p, &quote);                                                      \
            if (k < CHUNK) {                                                                       \
                p += k;                                                                            \
                if (quote) {                                                                       \
                    p++;                                                                           \
                    goto on_end;                                                                   \
                }                                                                                  \
                goto is_key##_special;                                                             \
            }                                                                                      \
            p += CHUNK;                                                                            \
        }                                                                                          \
        while (p < e && dec_str_class[*p] == 0)                                                    \
            p++;                                                                                   \
        if (p == e) {                                                                              \
            d->in_key = is_key##_flag;                                                             \
            d->st = ST_STR;                                                                        \
            goto out;                                                                              \
        }                                                                                          \
        is_key##_special : if (*p == '"')                                                          \
        {                                                                                          \
            p++;                                                                                   \
            goto on_end;                                                                           \
        }                                                                                          \
        d->in_key = is_key##_flag;                                                                 \
        goto str_slow;                                                                             \
    }

str:
    if (d->in_key)
        goto kstr;
vstr:
    STRING_LOOP(v, done)
kstr:
    STRING_LOOP(k, key_end)
#undef STRING_LOOP

str_slow:
    c = *p;
    switch (dec_str_class[c]) {
    case 2:
        d->esc_start = POS(p);
        d->elem_escapes = 1;
        p++;
        goto esc;
    case 3:
        FAIL(p, "control character in string");
    default:
        if (c >= 0xc2 && c <= 0xdf) {
            d->u_need = 1;
            d->u_lo = 0x80;
            d->u_hi = 0xbf;
        } else if (c >= 0xe0 && c <= 0xef) {
            d->u_need = 2;
            d->u_lo = c == 0xe0 ? 0xa0 : 0x80;
            d->u_hi = c == 0xed ? 0x9f : 0xbf;
        } else if (c >= 0xf0 && c <= 0xf4) {
            d->u_need = 3;
            d->u_lo = c == 0xf0 ? 0x90 : 0x80;
            d->u_hi = c == 0xf4 ? 0x8f : 0xbf;
        } else {
            FAIL(p, "invalid UTF-8");
        }
        p++;
        goto utf8;
    }

utf8:
    while (d->u_need > 0) {
        NEED(ST_UTF8);
        c = *p;
        if (c < d->u_lo || c > d->u_hi)
            FAIL(p, "invalid UTF-8");
        p++;
        d->u_lo = 0x80;
        d->u_hi = 0xbf;
        d->u_need--;
    }
    goto str;

esc:
    NEED(ST_ESC);
    c = *p;
    if (c == 'u') {
        p++;
        d->u_n = 0;
        d->u_code = 0;
        d->u_high = 0;
        goto uhex;
    }
    if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
        c == 't') {
        p++;
        goto str;
    }
    FAIL(p, "invalid escape");

uhex:
    while (d->u_n < 4) {
        NEED(ST_UHEX);
        c = *p;
        if (c - '0' < 10)
            c -= '0';
        else if ((c | 0x20) - 'a' < 6)
            c = (c | 0x20) - 'a' + 10;
        else
            FAIL(p, "invalid \\u escape");
        d->u_code = d->u_code << 4 | c;
        d->u_n++;
        p++;
    }
    if (d->u_high) {
        if (d->u_code < 0xdc00 || d->u_code > 0xdfff)
            goto lone_surrogate;
        goto str;
    }
    if (d->u_code >= 0xd800 && d->u_code <= 0xdbff) {
        d->u_high = d->u_code;
        goto surr_bs;
    }
    if (d->u_code >= 0xdc00 && d->u_code <= 0xdfff)
        goto lone_surrogate;
    goto str;

surr_bs:
    NEED(ST_SURR_BS);
    if (*p != '\\')
        goto lone_surrogate;
    p++;
surr_u:
    NEED(ST_SURR_U);
    if (*p != 'u')
        goto lone_surrogate;
    p++;
    d->u_n = 0;
    d->u_code = 0;
    goto uhex;

lone_surrogate:
    d->scan = (size_t)(p - b);
    dec_fail(d, d->esc_start, "lone surrogate in \\u escape");
    return -1;

n_minus:
    NEED_NUM(N_MINUS);
    c = *p;
    if (c == '0') {
        p++;
        goto n_zero;
    }
    if (c - '1' < 9) {
        p++;
        goto n_int;
    }
    FAIL(p, "invalid number");
n_zero:
    NEED_NUM(N_ZERO);
    c = *p;
    if (c == '.' || c == 'e' || c == 'E') {
        if (d->shape == SHAPE_COUNT)
            CHECK(dec_shape_integer(d, POS(p)));
        p++;
        if (c == '.')
            goto n_dot;
        goto n_e;
    }
    if (c - '0' < 10)
        FAIL(p, "invalid number (leading zero)");
    goto scalar_done;
n_int:
    while (p < e && (unsigned)(*p - '0') < 10)
        p++;
    NEED_NUM(N_INT);
    c = *p;
    if (c == '.' || c == 'e' || c == 'E') {
        if (d->shape == SHAPE_COUNT)
            CHECK(dec_shape_integer(d, POS(p)));
        p++;
        if (c == '.')
            goto n_dot;
        goto n_e;
    }
    goto scalar_done;
n_dot:
    NEED_NUM(N_DOT);
    if ((unsigned)(*p - '0') >= 10)
        FAIL(p, "invalid number");
    p++;
n_frac:
    while (p < e && (unsigned)(*p - '0') < 10)
        p++;
    NEED_NUM(N_FRAC);
    c = *p;
    if (c == 'e' || c == 'E') {
        p++;
        goto n_e;
    }
    goto scalar_done;
n_e:
    NEED_NUM(N_E);
    c = *p;
    if (c == '+' || c == '-') {
        p++;
        goto n_esign;
    }
    if (c - '0' < 10) {
        p++;
        goto n_exp;
    }
    FAIL(p, "invalid number");
n_esign:
    NEED_NUM(N_ESIGN);
    if ((unsigned)(*p - '0') >= 10)
        FAIL(p, "invalid number");
    p++;
n_exp:
    while (p < e && (unsigned)(*p - '0') < 10)
        p++;
    NEED_NUM(N_EXP);
    goto scalar_done;

lit:
    while (literals[d->lit][d->litpos]) {
        NEED(ST_LIT);
        if (*p != (unsigned char)literals[d->lit][d->litpos])
            FAIL(p, "invalid literal");
        p++;
        d->litpos++;
    }
    goto scalar_done;

scalar_done: /* a number or a literal ended just before p */
    if (d->shape_pending)
        CHECK(dec_shape_settle(d));
    goto done;

end:
    d->st = ST_END;
    SKIP_WS;
    if (p < e)
        FAIL(p, "unexpected data after the end of the document");
out:
    d->scan = (size_t)(p - b);
    return 0;
#undef SKIP_WS
#undef NEED_NUM
#undef NEED
#undef CHECK
#undef FAIL
#undef POS
}

static size_t keep_byte(const dec_stream *d)
{
    if (d->head < d->tail)
        return d->elems[d->head].start;
    if (d->in_elem)
        return d->elem_start;
    return d->base + d->scan;
}

size_t dec_pending(const dec_stream *d)
{
    return d->base + d->len - keep_byte(d);
}

int dec_ready(const dec_stream *d)
{
    return d->head < d->tail;
}

int dec_append(dec_stream *d, const char *bytes, size_t len)
{
    if (d->failed)
        return -1;
    if (d->finished) {
        dec_fail(d, d->base + d->len, "input after finish");
        return -1;
    }
    if (len == 0)
        return 0;
    if (len > d->max_size - (d->base + d->len)) {
        char what[80];
        snprintf(what, sizeof what, "document larger than max_size (%zu bytes)", d->max_size);
        dec_fail_as(d, d->max_size, "too_large", what);
        return -1;
    }
    if (len > d->cap - d->len) {
        size_t drop = keep_byte(d) - d->base;
        if (drop > 0) {
            memmove(d->buf, d->buf + drop, d->len - drop);
            d->len -= drop;
            d->scan -= drop;
            d->base += drop;
        }
        if (len > d->cap - d->len) {
            size_t cap = d->cap ? d->cap : 4096;
            while (cap - d->len < len)
                cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
#ifdef DEC_EXACT_BUFFERS
            /* for the fuzzer: no slack, so that any read past the input
             * is an overflow the address sanitizer sees */
            cap = d->len + len;
#endif
            char *nb = realloc(d->buf, cap);
            if (!nb) {
                dec_fail(d, d->base + d->len, "out of memory");
                return -1;
            }
            d->buf = nb;
            d->cap = cap;
        }
    }
    memcpy(d->buf + d->len, bytes, len);
    d->len += len;
    return dec_scan(d);
}

void dec_finish(dec_stream *d)
{
    if (d->failed || d->finished)
        return;
    d->finished = 1;
    /* a bare top-level number ends with the input */
    if (d->st == ST_NUM && d->depth == 0 &&
        (d->nst == N_ZERO || d->nst == N_INT || d->nst == N_FRAC || d->nst == N_EXP)) {
        if (d->shape_pending) {
            dec_shape_settle(d);
            return;
        }
        if (d->elem_depth == 0 && push_elem(d, d->base + d->len) < 0) {
            dec_fail(d, d->base + d->len, "out of memory");
            return;
        }
        d->in_elem = 0;
        d->st = ST_END;
    }
    if (d->st != ST_END)
        dec_fail(d, d->base + d->len, "unexpected end of input");
}

void dec_clear(dec_stream *d)
{
    d->len = d->base = d->scan = 0;
    d->st = ST_TOP;
    d->depth = 0;
    d->elem_depth = -1;
    d->in_elem = 0;
    d->finished = d->failed = d->building = 0;
    d->has_id = d->id_member = d->id_key = d->shape_pending = 0;
    d->err_msg[0] = 0;
    d->err_off = 0;
    d->err_kind = "decode";
    d->rec_base = d->nrecs = 0;
    d->head = d->tail = 0;
}
