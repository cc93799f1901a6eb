/* Streaming JSON decoder: bytes in, Lua tables out.
 *
 * Two passes over each value, split so that the first never touches Lua:
 *
 * 1. The scanner (dec_append, pure C) validates the bytes as they arrive, at
 *    any split point, and records for every object and array its member
 *    count, the offset of its closing bracket and where its subtree's
 *    records end. When a top-level array element (or a top-level non-array
 *    value) is complete it is queued as an element.
 * 2. The builder (dec_next, Lua side) walks a queued element's bytes, trusting
 *    them, and creates each table at its final size. Skipped members (the
 *    fields option) jump over containers with the recorded end offsets.
 *    Object keys are kept as ready Lua strings in a table held by the
 *    userdata, found by guessing the key that followed last time (objects
 *    of one kind list their keys in one order), else through a small C hash
 *    of their bytes; decode() shares one such cache between its calls.
 *
 * Every buffer belongs to the userdata and is freed by __gc, so a Lua error
 * (out of memory) in the middle of building a table leaks nothing; the
 * decoder then reports itself failed.
 *
 * Lua API (see CONTRACTS.md):
 *   decode(str [, opts])  -> value | nil, errmsg, byte_offset
 *   decoder([opts])       -> d with d:feed(s), d:finish(), d:next(), d:done(), d:reset()
 * Byte offsets are 1-based, like string.sub. Once a decoder has failed,
 * d:next() still hands out the elements completed before the error, then
 * returns nil, errmsg, byte_offset on every call until d:reset().
 *
 * Options: null (value for JSON null; default: object members that are null
 * are absent, and null array elements are core.null so array lengths stay
 * right), array_mt (metatable for every array, so empty arrays and objects
 * differ), fields (paths to keep), timestamps = "epoch" with
 * timestamp_fields (paths to convert), max_depth, max_size.
 * Paths are matched from the root of each element (each task run), through
 * objects: "state.type" is member "type" of member "state". A path can also
 * be given as a list of keys, {"labels", "prefect.flow.id"}, for keys that
 * contain dots. Arrays pass a path through to their elements; a value on a
 * partial path that is not an object is kept whole. */
#include <float.h>
#include <limits.h>
#include <locale.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"

#define DEC_MT "prefect.decoder"
#define DEC_DEFAULT_MAX_DEPTH 1000
/* The builder recurses once per level, in C and on the Lua stack, where a
 * C function gets 8000 slots under LuaJIT (two or three per level). */
#define DEC_MAX_DEPTH 2000
#define DEC_DEFAULT_MAX_SIZE ((size_t)512 * 1024 * 1024)

/* Slots of the table held as the userdata's user value. */
enum { UV_NULL = 1, UV_ARRAY_MT = 2, UV_KEYS = 3, UV_SHARED_KEYS = 4 };

enum scan_state {
    ST_TOP,       /* the document's value must come */
    ST_ELEM,      /* an array element must come (after ',') */
    ST_VALUE,     /* an object member's value must come */
    ST_ARR_FIRST, /* after '[': a value or ']' */
    ST_OBJ_FIRST, /* after '{': a key or '}' */
    ST_KEY,       /* after ',' in an object: a key */
    ST_COLON,
    ST_AFTER, /* after a member: ',' or the closing bracket */
    ST_STR,
    ST_ESC,     /* after a backslash */
    ST_UHEX,    /* inside the four hex digits of \u */
    ST_SURR_BS, /* after a high surrogate escape: its '\' */
    ST_SURR_U,  /* ... and its 'u' */
    ST_UTF8,    /* inside a multi-byte UTF-8 sequence */
    ST_NUM,
    ST_LIT,
    ST_END /* the top-level value is complete */
};

enum num_state { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };

typedef struct dec_rec {
    size_t count; /* members of this object or array */
    size_t end;   /* absolute offset of its closing bracket */
    size_t next;  /* index of the first record after its subtree */
} dec_rec;

typedef struct dec_elem {
    size_t start, end; /* absolute offsets: first byte, one past the last */
    size_t rec;        /* its first record */
    int escapes;       /* whether any string in it has a backslash */
} dec_elem;

typedef struct dec_frame {
    size_t rec;
    size_t count;
    unsigned char obj, recorded;
} dec_frame;

/* A tree of key paths (fields, timestamp_fields); node 0 is the root. */
typedef struct dec_node {
    size_t name, len; /* into the tree's names */
    int child, sibling, nchild, leaf;
} dec_node;

typedef struct dec_tree {
    dec_node *nodes;
    int n, cap;
    char *names;
    size_t nlen, ncap;
} dec_tree;

#define KEY_SLOTS 256 /* power of two */
#define KEY_LIMIT 192 /* interned keys at most: the hash never fills up */
#define KEY_MAX 38    /* longer keys are not interned */

/* Objects of one kind list their keys in the same order, so each key also
 * remembers the key that followed it and the first key of the object under
 * it (slot + 1, 0 = unknown): a guess checked with one comparison, which
 * spares hashing and probing for almost every key of a task run. */
typedef struct dec_key {
    uint32_t hash;
    int ref; /* index in the keys table; 0 = empty slot */
    int next, first;
    /* the fields and timestamp_fields tree nodes of this key under the
     * parent node last asked for (parent -2: not asked yet) */
    int fparent, fchild, tparent, tchild;
    uint64_t seen;            /* serial of the object that last set this key */
    unsigned char len, plain; /* plain: no '"' in bytes */
    char bytes[KEY_MAX];
} dec_key;

/* A decoder's key cache. decode() shares one between its calls (an upvalue,
 * whose user value holds the Lua strings), so a page's keys are made once
 * per Lua state rather than once per call. */
typedef struct dec_keys {
    dec_key slots[KEY_SLOTS];
    int nkeys, root_first;
    uint64_t serial; /* of the objects built, for dec_key.seen */
    int busy;        /* a decode() is building with it (a __gc could call decode()) */
} dec_keys;

struct dec_stream {
    /* options */
    size_t max_size;
    int max_depth;
    int split; /* hand out top-level array elements one by one */
    int has_null, has_array_mt, use_fields, use_stamps;
    dec_tree fields, stamps;

    /* input: buf[0] is absolute offset base; buf[scan] the next byte to scan */
    char *buf;
    size_t len, cap, base, scan;
    int borrowed; /* buf is a Lua string (decode()), not ours */

    /* scanner */
    int st, nst, lit, litpos, in_key, u_need, u_n, depth, frames_cap;
    unsigned u_lo, u_hi, u_code, u_high;
    size_t esc_start;
    dec_frame *frames;
    int elem_depth; /* depth of the values handed out; -1 until known */
    int in_elem, elem_escapes;
    size_t elem_start, elem_rec;
    int finished, failed, building, closed;
    size_t err_off;
    char err_msg[200];

    dec_rec *recs; /* recs[i] is record rec_base + i */
    size_t rec_base, nrecs, recs_cap;
    dec_elem *elems; /* queue: elems[head..tail) */
    size_t head, tail, elems_cap;

    /* builder */
    char *scratch;
    size_t scratch_cap;
    dec_keys *kc;  /* NULL until the first build */
    int kc_shared; /* kc is decode()'s cache, not ours */
};

static const char *const default_stamp_fields[] = {"created",
                                                   "updated",
                                                   "expected_start_time",
                                                   "next_scheduled_start_time",
                                                   "start_time",
                                                   "end_time",
                                                   "cache_expiration",
                                                   "state.timestamp",
                                                   "state.state_details.scheduled_time",
                                                   "state.state_details.cache_expiration",
                                                   "state.state_details.pause_timeout",
                                                   NULL};

/* ---------------------------------------------------------------- errors */

static void dec_fail(dec_stream *d, size_t off, const char *what)
{
    char near[64];
    size_t n = 0;
    if (d->failed)
        return;
    d->failed = 1;
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

/* -------------------------------------------------------------- scanner */

/* 0: plain string byte; 1: '"'; 2: '\\'; 3: control; 4: not ASCII */
static const unsigned char str_class[256] = {
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};

/* Strings are scanned a chunk at a time: 16 bytes with SSE2, else 8 bytes
 * in a 64-bit word. special_at(p, &quote) is the offset of the first '"',
 * '\\', control or non-ASCII byte among the CHUNK bytes at p (and whether it
 * is '"'), or CHUNK if there is none; quote_at(p) the same for '"' alone. */
#if defined(__SSE2__) && defined(__GNUC__)
#include <emmintrin.h>
#define CHUNK 16

static inline size_t special_at(const unsigned char *p, int *quote)
{
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i q = _mm_cmpeq_epi8(v, _mm_set1_epi8('"'));
    /* a signed compare: below 0x20, or 0x80 and above */
    __m128i hit = _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                               _mm_or_si128(q, _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
    unsigned m = (unsigned)_mm_movemask_epi8(hit), k;
    if (!m)
        return CHUNK;
    k = (unsigned)__builtin_ctz(m);
    *quote = (int)((unsigned)_mm_movemask_epi8(q) >> k & 1);
    return k;
}

static inline size_t quote_at(const char *p)
{
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
    unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')));
    return m ? (size_t)__builtin_ctz(m) : CHUNK;
}
#else
#define CHUNK 8
#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Each test is exact when it finds nothing; otherwise it can over-report
 * only in bytes above (more significant than) a true hit. */
static inline size_t special_at(const unsigned char *p, int *quote)
{
    uint64_t w, q, bs, t;
    size_t i = 0;
    memcpy(&w, p, 8);
    q = w ^ (ONES * '"');
    bs = w ^ (ONES * '\\');
    t = (((q - ONES) & ~q) | ((bs - ONES) & ~bs) | (w - ONES * 0x20) | w) & HIGHS;
    if (!t)
        return CHUNK;
    while (str_class[p[i]] == 0)
        i++;
    *quote = p[i] == '"';
    return i;
}

static inline size_t quote_at(const char *p)
{
    uint64_t w, q;
    size_t i = 0;
    memcpy(&w, p, 8);
    q = w ^ (ONES * '"');
    if (((q - ONES) & ~q & HIGHS) == 0)
        return CHUNK;
    while (p[i] != '"')
        i++;
    return i;
}
#endif

/* The first '"' at or after p; one is known to exist before end. */
static inline const char *find_quote(const char *p, const char *end)
{
    while (end - p >= CHUNK) {
        size_t k = quote_at(p);
        if (k < CHUNK)
            return p + k;
        p += CHUNK;
    }
    while (*p != '"')
        p++;
    return p;
}

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
    f->count = 0;
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

static int same4(const unsigned char *p, const char *lit)
{
    uint32_t a, b;
    memcpy(&a, p, 4);
    memcpy(&b, lit, 4);
    return a == b;
}

static const unsigned char ws_class[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1};

/* Scans buf[scan..len). Returns 0, or -1 with the error recorded.
 * Written as one function whose labels are the grammar's positions: the
 * common path jumps from label to label, and the position is saved in d->st
 * (and d->nst for numbers) only when the input runs out. */
static int scan(dec_stream *d)
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
            while (p < e && ws_class[*p])                                                          \
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
    if (d->depth == d->elem_depth)
        goto elem_begin;
    goto value_here;
top: /* the document's value */
    SKIP_WS;
    NEED(ST_TOP);
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
value_here:
    /* tests in the order of how often Prefect's values start so */
    c = *p;
    if (c == '"') {
        p++;
        goto vstr;
    }
    if (c == 'n' || c == 't' || c == 'f') {
        d->lit = c == 't' ? 0 : c == 'f' ? 1 : 2;
        if ((size_t)(e - p) >= 5 && same4(p, literals[d->lit]) && (d->lit != 1 || p[4] == 'e')) {
            p += 4 + (d->lit == 1);
            goto done;
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
    p++;
    goto kstr;

colon:
    SKIP_WS;
    NEED(ST_COLON);
    if (*p != ':')
        FAIL(p, "expected ':'");
    p++;
    goto value;

after:
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
    top = --d->depth > 0 ? f - 1 : NULL;
    if (f->recorded) {
        dec_rec *r = &d->recs[f->rec - d->rec_base];
        r->count = f->count;
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
        while (p < e && str_class[*p] == 0)                                                        \
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
    STRING_LOOP(k, colon)
#undef STRING_LOOP

str_slow:
    c = *p;
    switch (str_class[c]) {
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
    if (c == '.') {
        p++;
        goto n_dot;
    }
    if (c == 'e' || c == 'E') {
        p++;
        goto n_e;
    }
    if (c - '0' < 10)
        FAIL(p, "invalid number (leading zero)");
    goto done;
n_int:
    while (p < e && (unsigned)(*p - '0') < 10)
        p++;
    NEED_NUM(N_INT);
    c = *p;
    if (c == '.') {
        p++;
        goto n_dot;
    }
    if (c == 'e' || c == 'E') {
        p++;
        goto n_e;
    }
    goto done;
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
    goto done;
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
    goto done;

lit:
    while (literals[d->lit][d->litpos]) {
        NEED(ST_LIT);
        if (*p != (unsigned char)literals[d->lit][d->litpos])
            FAIL(p, "invalid literal");
        p++;
        d->litpos++;
    }
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
        dec_fail(d, d->max_size, what);
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
    return scan(d);
}

void dec_finish(dec_stream *d)
{
    if (d->failed || d->finished)
        return;
    d->finished = 1;
    /* a bare top-level number ends with the input */
    if (d->st == ST_NUM && d->depth == 0 &&
        (d->nst == N_ZERO || d->nst == N_INT || d->nst == N_FRAC || d->nst == N_EXP)) {
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

int dec_failed(const dec_stream *d)
{
    return d->failed;
}

static void dec_clear(dec_stream *d)
{
    d->len = d->base = d->scan = 0;
    d->st = ST_TOP;
    d->depth = 0;
    d->elem_depth = -1;
    d->in_elem = 0;
    d->finished = d->failed = d->building = 0;
    d->err_msg[0] = 0;
    d->err_off = 0;
    d->rec_base = d->nrecs = 0;
    d->head = d->tail = 0;
}

/* -------------------------------------------------------------- builder */

typedef struct dec_build {
    lua_State *L;
    dec_stream *d;
    const char *end; /* one past the element's last byte */
    size_t rec;      /* the next record, in document order */
    int uv, keys;    /* stack indexes of the user value and the keys table */
    int escapes;
} dec_build;

static inline const char *skip_ws(const char *p)
{
    while ((unsigned char)*p <= ' ')
        p++;
    return p;
}

static void *scratch(dec_build *b, size_t n)
{
    dec_stream *d = b->d;
    if (n > d->scratch_cap) {
        size_t cap = d->scratch_cap ? d->scratch_cap : 256;
        while (cap < n)
            cap *= 2;
        char *s = realloc(d->scratch, cap);
        if (!s)
            luaL_error(b->L, "out of memory");
        d->scratch = s;
        d->scratch_cap = cap;
    }
    return d->scratch;
}

static unsigned hex4(const char *s)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = (unsigned char)s[i];
        v = v << 4 | (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

/* p is at a string's opening quote. Sets *s, *n to its bytes (unescaped
 * into the scratch buffer when needed) and returns what follows it. */
static inline const char *read_string(dec_build *b, const char *p, const char **s, size_t *n)
{
    const char *q = p + 1;
    int escaped = 0;
    if (!b->escapes) {
        const char *end = find_quote(q, b->end);
        *s = q;
        *n = (size_t)(end - q);
        return end + 1;
    }
    while (*q != '"') {
        if (*q == '\\') {
            escaped = 1;
            q += 2;
        } else {
            q++;
        }
    }
    if (!escaped) {
        *s = p + 1;
        *n = (size_t)(q - p - 1);
        return q + 1;
    }
    char *o = scratch(b, (size_t)(q - p)), *start = o;
    for (const char *r = p + 1; r < q;) {
        if (*r != '\\') {
            *o++ = *r++;
            continue;
        }
        r++;
        switch (*r++) {
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u': {
            unsigned cp = hex4(r);
            r += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (hex4(r + 2) - 0xdc00);
                r += 6;
            }
            if (cp < 0x80) {
                *o++ = (char)cp;
            } else if (cp < 0x800) {
                *o++ = (char)(0xc0 | cp >> 6);
                *o++ = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                *o++ = (char)(0xe0 | cp >> 12);
                *o++ = (char)(0x80 | (cp >> 6 & 0x3f));
                *o++ = (char)(0x80 | (cp & 0x3f));
            } else {
                *o++ = (char)(0xf0 | cp >> 18);
                *o++ = (char)(0x80 | (cp >> 12 & 0x3f));
                *o++ = (char)(0x80 | (cp >> 6 & 0x3f));
                *o++ = (char)(0x80 | (cp & 0x3f));
            }
            break;
        }
        default: /* '"', '\\', '/' */
            *o++ = r[-1];
            break;
        }
    }
    *s = start;
    *n = (size_t)(o - start);
    return q + 1;
}

static inline int same_bytes(const char *a, const char *b, size_t n)
{
    uint64_t x, y;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y)
                return 0;
        }
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

static uint32_t str_hash(const char *s, size_t n)
{
    uint64_t h = n * UINT64_C(0x9e3779b97f4a7c15), w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        h = (h ^ w) * UINT64_C(0xff51afd7ed558ccd);
        h ^= h >> 32;
    }
    if (i < n) {
        w = 0;
        if (n >= 8)
            memcpy(&w, s + n - 8, 8);
        else
            memcpy(&w, s, n);
        h = (h ^ w) * UINT64_C(0xc4ceb9fe1a85ec53);
    }
    h ^= h >> 29;
    return (uint32_t)(h ^ h >> 32);
}

/* The slot of the key's ready Lua string, made on first sight; -1 when the
 * key is not cached (too long, or the cache is full). guess: a likely slot
 * + 1, or 0. */
static int key_slot(dec_build *b, const char *s, size_t n, int guess)
{
    dec_stream *d = b->d;
    if (guess > 0) {
        const dec_key *k = &d->kc->slots[guess - 1];
        if (k->len == n && same_bytes(k->bytes, s, n))
            return guess - 1;
    }
    if (d->kc && n <= KEY_MAX) {
        uint32_t h = str_hash(s, n);
        unsigned i = h & (KEY_SLOTS - 1);
        for (;;) {
            dec_key *k = &d->kc->slots[i];
            if (k->ref == 0) {
                if (d->kc->nkeys >= KEY_LIMIT)
                    return -1;
                lua_pushlstring(b->L, s, n);
                lua_rawseti(b->L, b->keys, d->kc->nkeys + 1);
                k->hash = h;
                k->len = (unsigned char)n;
                k->plain = memchr(s, '"', n) == NULL;
                k->fparent = k->tparent = -2;
                memcpy(k->bytes, s, n);
                k->ref = ++d->kc->nkeys;
                return (int)i;
            }
            if (k->hash == h && k->len == n && same_bytes(k->bytes, s, n))
                return (int)i;
            i = (i + 1) & (KEY_SLOTS - 1);
        }
    }
    return -1;
}

static int tree_find(const dec_tree *t, int parent, const char *s, size_t n)
{
    for (int c = t->nodes[parent].child; c >= 0; c = t->nodes[c].sibling) {
        const dec_node *node = &t->nodes[c];
        if (node->len == n && memcmp(t->names + node->name, s, n) == 0)
            return c;
    }
    return -1;
}

static void push_null(dec_build *b)
{
    if (b->d->has_null)
        lua_rawgeti(b->L, b->uv, UV_NULL);
    else
        lua_pushlightuserdata(b->L, NULL);
}

static const char *skip_value(dec_build *b, const char *p)
{
    switch (*p) {
    case '"': {
        const char *q = p + 1;
        if (!b->escapes)
            return find_quote(q, b->end) + 1;
        while (*q != '"')
            q += *q == '\\' ? 2 : 1;
        return q + 1;
    }
    case '{':
    case '[': {
        const dec_rec *r = &b->d->recs[b->rec - b->d->rec_base];
        b->rec = r->next;
        return b->d->buf + (r->end - b->d->base) + 1;
    }
    case 't':
    case 'n':
        return p + 4;
    case 'f':
        return p + 5;
    default:
        while (p < b->end && ((*p >= '0' && *p <= '9') || *p == '-' || *p == '+' || *p == '.' ||
                              *p == 'e' || *p == 'E'))
            p++;
        return p;
    }
}

static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Number literals (already validated). Integers that fit lua_Integer stay
 * integers on 5.3+. Other values: when the decimal mantissa is below 2^53
 * and the power of ten at most 22, both are exact doubles and one IEEE
 * multiplication or division rounds correctly; everything else goes to
 * strtod on a copy spelled for the current locale's decimal point. */
static const char *read_number(dec_build *b, const char *p)
{
    /* a number can end the element, and the input: never look past it */
    const char *start = p, *end = b->end;
#define AT(q) ((q) < end ? *(q) : '\0')
    uint64_t m = 0;
    int neg = 0, nd = 0, truncated = 0, is_int = 1;
    long e10 = 0;

    if (AT(p) == '-') {
        neg = 1;
        p++;
    }
    for (; (unsigned)(AT(p) - '0') < 10; p++) {
        if (nd < 19) {
            m = m * 10 + (unsigned)(*p - '0');
            if (m)
                nd++;
        } else {
            truncated = 1;
            e10++;
        }
    }
    if (AT(p) == '.') {
        is_int = 0;
        for (p++; (unsigned)(AT(p) - '0') < 10; p++) {
            if (nd < 19) {
                m = m * 10 + (unsigned)(*p - '0');
                if (m)
                    nd++;
                e10--;
            } else if (*p != '0') {
                truncated = 1;
            }
        }
    }
    if (AT(p) == 'e' || AT(p) == 'E') {
        long x = 0;
        int eneg = 0;
        is_int = 0;
        p++;
        if (AT(p) == '+' || AT(p) == '-')
            eneg = *p++ == '-';
        for (; (unsigned)(AT(p) - '0') < 10; p++) {
            if (x < 100000)
                x = x * 10 + (*p - '0');
            else
                truncated = 1; /* an exponent this long: strtod decides */
        }
        e10 += eneg ? -x : x;
    }
#undef AT
#if LUA_VERSION_NUM >= 503
    if (is_int && !truncated && !(neg && m == 0)) {
        if (!neg && m <= (uint64_t)LUA_MAXINTEGER) {
            lua_pushinteger(b->L, (lua_Integer)m);
            return p;
        }
        if (neg && m - 1 <= (uint64_t)LUA_MAXINTEGER) {
            lua_pushinteger(b->L, -(lua_Integer)(m - 1) - 1);
            return p;
        }
    }
#else
    (void)is_int;
#endif
#if FLT_EVAL_METHOD == 0
    if (m == 0 && !truncated) {
        lua_pushnumber(b->L, neg ? -0.0 : 0.0);
        return p;
    }
    if (!truncated && m <= ((uint64_t)1 << 53) && e10 >= -22 && e10 <= 22) {
        double v = (double)m;
        v = e10 < 0 ? v / pow10_exact[-e10] : v * pow10_exact[e10];
        lua_pushnumber(b->L, neg ? -v : v);
        return p;
    }
#endif
    {
        size_t n = (size_t)(p - start);
        const char *point = localeconv()->decimal_point;
        size_t plen = strlen(point);
        char *copy = scratch(b, n * (plen ? plen : 1) + 1), *o = copy;
        for (const char *r = start; r < p; r++) {
            if (*r == '.') {
                memcpy(o, point, plen);
                o += plen;
            } else {
                *o++ = *r;
            }
        }
        *o = 0;
        lua_pushnumber(b->L, (lua_Number)strtod(copy, NULL));
    }
    return p;
}

static const char *build_value(dec_build *b, const char *p, int fn, int tn, int parent);

/* parent: the slot of the key this object is the value of, or -1 */
static const char *build_object(dec_build *b, const char *p, int fn, int tn, int parent)
{
    lua_State *L = b->L;
    dec_stream *d = b->d;
    const dec_rec *r = &d->recs[b->rec++ - d->rec_base];
    size_t n = r->count;
    size_t size =
        fn >= 0 && (size_t)d->fields.nodes[fn].nchild < n ? (size_t)d->fields.nodes[fn].nchild : n;

    if (!lua_checkstack(L, 4))
        luaL_error(L, "JSON nested too deeply for the Lua stack");
    lua_createtable(L, 0, size > INT_MAX ? INT_MAX : (int)size);
    p++;
    int *link = d->kc ? parent >= 0 ? &d->kc->slots[parent].first : &d->kc->root_first : NULL;
    uint64_t serial = d->kc ? ++d->kc->serial : 0;
    for (size_t i = 0; i < n; i++) {
        const char *key;
        size_t klen;
        int cf = -1, ct = -1, slot, guess = link ? *link : 0;
        p = skip_ws(p);
        /* the guessed key, when it fits, is the key: without escapes in
         * the element the first '"' ends the string */
        if (guess > 0 && !b->escapes) {
            const dec_key *k = &d->kc->slots[guess - 1];
            const char *ks = p + 1;
            if (k->plain && (size_t)(b->end - ks) > k->len && ks[k->len] == '"' &&
                same_bytes(k->bytes, ks, k->len)) {
                key = ks;
                klen = k->len;
                slot = guess - 1;
                p = ks + klen + 1;
                goto have_slot;
            }
        }
        p = read_string(b, p, &key, &klen);
        slot = key_slot(b, key, klen, guess);
        if (link && *link != slot + 1)
            *link = slot + 1;
    have_slot:
        link = slot >= 0 ? &d->kc->slots[slot].next : NULL;
        p = skip_ws(skip_ws(p) + 1);
        if (fn >= 0) {
            if (slot >= 0) {
                dec_key *k = &d->kc->slots[slot];
                if (k->fparent != fn) {
                    k->fchild = tree_find(&d->fields, fn, key, klen);
                    k->fparent = fn;
                }
                cf = k->fchild;
            } else {
                cf = tree_find(&d->fields, fn, key, klen);
            }
            if (cf < 0) {
                p = skip_value(b, p);
                goto member_done;
            }
            if (d->fields.nodes[cf].leaf)
                cf = -1;
        }
        if (tn >= 0) {
            if (slot >= 0) {
                dec_key *k = &d->kc->slots[slot];
                if (k->tparent != tn) {
                    k->tchild = tree_find(&d->stamps, tn, key, klen);
                    k->tparent = tn;
                }
                ct = k->tchild;
            } else {
                ct = tree_find(&d->stamps, tn, key, klen);
            }
        }
        if (*p == 'n' && !d->has_null) {
            /* an absent null: only an earlier duplicate of the key needs
             * clearing (the last one wins) */
            p += 4;
            if (slot >= 0 ? d->kc->slots[slot].seen >= serial : i > 0) {
                if (slot >= 0)
                    lua_rawgeti(L, b->keys, d->kc->slots[slot].ref);
                else
                    lua_pushlstring(L, key, klen);
                lua_pushnil(L);
                lua_rawset(L, -3);
            }
            goto member_done;
        }
        if (slot >= 0) {
            d->kc->slots[slot].seen = serial;
            lua_rawgeti(L, b->keys, d->kc->slots[slot].ref);
        } else {
            lua_pushlstring(L, key, klen);
        }
        p = build_value(b, p, cf, ct, slot);
        lua_rawset(L, -3);
    member_done:
        p = skip_ws(p);
        if (*p == ',')
            p++;
    }
    return skip_ws(p) + 1;
}

static const char *build_array(dec_build *b, const char *p, int fn, int tn, int parent)
{
    lua_State *L = b->L;
    dec_stream *d = b->d;
    const dec_rec *r = &d->recs[b->rec++ - d->rec_base];
    size_t n = r->count;

    if (!lua_checkstack(L, 4))
        luaL_error(L, "JSON nested too deeply for the Lua stack");
    lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
    p++;
    for (size_t i = 1; i <= n; i++) {
        p = build_value(b, skip_ws(p), fn, tn, parent);
        lua_rawseti(L, -2, (lua_Integer)i);
        p = skip_ws(p);
        if (*p == ',')
            p++;
    }
    if (d->has_array_mt) {
        lua_rawgeti(L, b->uv, UV_ARRAY_MT);
        lua_setmetatable(L, -2);
    }
    return skip_ws(p) + 1;
}

static const char *build_value(dec_build *b, const char *p, int fn, int tn, int parent)
{
    switch (*p) {
    case '{':
        return build_object(b, p, fn, tn, parent);
    case '[':
        return build_array(b, p, fn, tn, parent);
    case '"': {
        const char *s;
        size_t n;
        double t;
        p = read_string(b, p, &s, &n);
        if (tn >= 0 && b->d->stamps.nodes[tn].leaf && dec_parse_timestamp(s, n, &t))
            lua_pushnumber(b->L, (lua_Number)t);
        else
            lua_pushlstring(b->L, s, n);
        return p;
    }
    case 't':
        lua_pushboolean(b->L, 1);
        return p + 4;
    case 'f':
        lua_pushboolean(b->L, 0);
        return p + 5;
    case 'n':
        push_null(b);
        return p + 4;
    default:
        return read_number(b, p);
    }
}

/* Builds the element at the head of the queue and pushes it. */
static void build_elem(lua_State *L, dec_stream *d, int uv)
{
    const dec_elem *el = &d->elems[d->head];
    dec_build b;
    b.L = L;
    b.d = d;
    b.end = d->buf + (el->end - d->base);
    b.rec = el->rec;
    b.uv = uv;
    lua_rawgeti(L, uv, UV_KEYS);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_createtable(L, 96, 0); /* a task run has about 70 distinct keys */
        lua_pushvalue(L, -1);
        lua_rawseti(L, uv, UV_KEYS);
    }
    b.keys = lua_gettop(L);
    b.escapes = el->escapes;
    if (!d->kc)
        d->kc = calloc(1, sizeof *d->kc);
    if (d->kc_shared)
        d->kc->busy = 1;
    d->building = 1;
    build_value(&b, d->buf + (el->start - d->base), d->use_fields ? 0 : -1, d->use_stamps ? 0 : -1,
                -1);
    d->building = 0;
    if (d->kc_shared)
        d->kc->busy = 0;
    d->head++;
    lua_remove(L, b.keys);
}

static int push_error(lua_State *L, const dec_stream *d)
{
    lua_pushnil(L);
    lua_pushstring(L, d->err_msg);
    lua_pushinteger(L, (lua_Integer)d->err_off);
    return 3;
}

int dec_next(lua_State *L, int idx)
{
    dec_stream *d = dec_check(L, idx);
    idx = lua_absindex(L, idx);
    if (d->building) {
        /* a Lua error (out of memory) interrupted the last build */
        d->building = 0;
        if (d->kc_shared)
            d->kc->busy = 0;
        d->head = d->tail = 0;
        dec_fail(d, d->base + d->scan, "out of memory while building a value");
    }
    if (d->head < d->tail) {
        lua_getiuservalue(L, idx, 1);
        build_elem(L, d, lua_gettop(L));
        lua_remove(L, -2);
        return 1;
    }
    if (d->failed)
        return push_error(L, d);
    lua_pushnil(L);
    return 1;
}

/* ------------------------------------------------------------ options */

static int tree_add(dec_tree *t, int parent, const char *s, size_t n)
{
    int c = tree_find(t, parent, s, n);
    if (c >= 0)
        return c;
    if (t->n == t->cap) {
        int cap = t->cap * 2;
        dec_node *nodes = realloc(t->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes)
            return -1;
        t->nodes = nodes;
        t->cap = cap;
    }
    if (n > t->ncap - t->nlen) {
        size_t cap = t->ncap ? t->ncap : 64;
        while (cap - t->nlen < n)
            cap *= 2;
        char *names = realloc(t->names, cap);
        if (!names)
            return -1;
        t->names = names;
        t->ncap = cap;
    }
    memcpy(t->names + t->nlen, s, n);
    c = t->n++;
    t->nodes[c].name = t->nlen;
    t->nodes[c].len = n;
    t->nodes[c].child = -1;
    t->nodes[c].leaf = 0;
    t->nodes[c].nchild = 0;
    t->nodes[c].sibling = t->nodes[parent].child;
    t->nodes[parent].child = c;
    t->nodes[parent].nchild++;
    t->nlen += n;
    return c;
}

static void tree_init(lua_State *L, dec_tree *t)
{
    t->nodes = malloc(8 * sizeof *t->nodes);
    if (!t->nodes)
        luaL_error(L, "out of memory");
    t->cap = 8;
    t->n = 1;
    t->nodes[0].child = -1;
    t->nodes[0].sibling = -1;
    t->nodes[0].nchild = 0;
    t->nodes[0].leaf = 0;
    t->nodes[0].name = t->nodes[0].len = 0;
}

/* Adds one path, a dotted string or a list of keys, from the value on top
 * of the stack. */
static void tree_add_path(lua_State *L, dec_tree *t, const char *opt, lua_Integer i)
{
    int node = 0;
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n), *end = s + n;
        for (;;) {
            const char *dot = memchr(s, '.', (size_t)(end - s));
            const char *stop = dot ? dot : end;
            if (stop == s)
                luaL_error(L, "decoder option '%s'[%d]: empty key in path", opt, (int)i);
            node = tree_add(t, node, s, (size_t)(stop - s));
            if (node < 0)
                luaL_error(L, "out of memory");
            if (!dot)
                break;
            s = dot + 1;
        }
    } else if (lua_type(L, -1) == LUA_TTABLE && lua_rawlen(L, -1) > 0) {
        size_t len = lua_rawlen(L, -1);
        for (size_t k = 1; k <= len; k++) {
            size_t n;
            const char *s;
            lua_rawgeti(L, -1, (lua_Integer)k);
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "decoder option '%s'[%d]: path keys must be strings", opt, (int)i);
            s = lua_tolstring(L, -1, &n);
            node = tree_add(t, node, s, n);
            if (node < 0)
                luaL_error(L, "out of memory");
            lua_pop(L, 1);
        }
    } else {
        luaL_error(L, "decoder option '%s'[%d]: a path string or a list of keys expected", opt,
                   (int)i);
    }
    t->nodes[node].leaf = 1;
}

static void tree_from_option(lua_State *L, dec_tree *t, int opts, const char *opt)
{
    lua_getfield(L, opts, opt);
    if (lua_type(L, -1) != LUA_TTABLE)
        luaL_error(L, "decoder option '%s': a list of paths expected", opt);
    tree_init(L, t);
    size_t len = lua_rawlen(L, -1);
    for (size_t i = 1; i <= len; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i);
        tree_add_path(L, t, opt, (lua_Integer)i);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static size_t size_option(lua_State *L, int opts, const char *opt, size_t dflt, size_t max)
{
    size_t v = dflt;
    lua_getfield(L, opts, opt);
    if (!lua_isnil(L, -1)) {
        lua_Number n = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || n < 1 || n != n || n > (lua_Number)max ||
            n != (lua_Number)(size_t)n) {
            char most[32];
            snprintf(most, sizeof most, "%zu", max);
            luaL_error(L, "decoder option '%s': a positive integer expected (at most %s)", opt,
                       most);
        }
        v = (size_t)n;
    }
    lua_pop(L, 1);
    return v;
}

static void read_options(lua_State *L, dec_stream *d, int opts, int uv)
{
    static const char *const known[] = {"null",      "array_mt",         "fields",   "timestamps",
                                        "max_depth", "timestamp_fields", "max_size", NULL};
    d->max_depth = DEC_DEFAULT_MAX_DEPTH;
    d->max_size = DEC_DEFAULT_MAX_SIZE;
    if (!opts)
        return;
    lua_pushnil(L);
    while (lua_next(L, opts)) {
        int i;
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "decoder options: keys must be strings");
        for (i = 0; known[i]; i++)
            if (strcmp(known[i], lua_tostring(L, -1)) == 0)
                break;
        if (!known[i])
            luaL_error(L, "decoder option '%s' is unknown", lua_tostring(L, -1));
    }
    lua_getfield(L, opts, "null");
    if (!lua_isnil(L, -1)) {
        d->has_null = 1;
        lua_rawseti(L, uv, UV_NULL);
    } else {
        lua_pop(L, 1);
    }
    lua_getfield(L, opts, "array_mt");
    if (lua_type(L, -1) == LUA_TTABLE) {
        d->has_array_mt = 1;
        lua_rawseti(L, uv, UV_ARRAY_MT);
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "decoder option 'array_mt': a table expected");
    } else {
        lua_pop(L, 1);
    }
    lua_getfield(L, opts, "fields");
    d->use_fields = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (d->use_fields)
        tree_from_option(L, &d->fields, opts, "fields");
    lua_getfield(L, opts, "timestamps");
    if (!lua_isnil(L, -1)) {
        const char *ts = lua_tostring(L, -1);
        if (lua_type(L, -1) != LUA_TSTRING || (strcmp(ts, "epoch") && strcmp(ts, "string")))
            luaL_error(L, "decoder option 'timestamps': \"epoch\" or \"string\" expected");
        d->use_stamps = strcmp(ts, "epoch") == 0;
    }
    lua_pop(L, 1);
    lua_getfield(L, opts, "timestamp_fields");
    if (!lua_isnil(L, -1)) {
        lua_pop(L, 1);
        tree_from_option(L, &d->stamps, opts, "timestamp_fields");
    } else {
        lua_pop(L, 1);
        if (d->use_stamps) {
            tree_init(L, &d->stamps);
            for (int i = 0; default_stamp_fields[i]; i++) {
                lua_pushstring(L, default_stamp_fields[i]);
                tree_add_path(L, &d->stamps, "timestamp_fields", i + 1);
                lua_pop(L, 1);
            }
        }
    }
    if (!d->use_stamps && d->stamps.nodes) {
        free(d->stamps.nodes);
        free(d->stamps.names);
        memset(&d->stamps, 0, sizeof d->stamps);
    }
    d->max_depth = (int)size_option(L, opts, "max_depth", DEC_DEFAULT_MAX_DEPTH, DEC_MAX_DEPTH);
    d->max_size = size_option(L, opts, "max_size", DEC_DEFAULT_MAX_SIZE,
                              (size_t)1 << (sizeof(size_t) > 4 ? 50 : 31));
}

/* ------------------------------------------------------------ Lua API */

dec_stream *dec_check(lua_State *L, int idx)
{
    return (dec_stream *)luaL_checkudata(L, idx, DEC_MT);
}

/* Pushes a new decoder with the options at index opts. */
static dec_stream *dec_new(lua_State *L, int opts, int split)
{
    int uv;
    if (lua_isnoneornil(L, opts))
        opts = 0;
    else
        luaL_checktype(L, opts, LUA_TTABLE);
    opts = opts ? lua_absindex(L, opts) : 0;
    dec_stream *d = lua_newuserdatauv(L, sizeof *d, 1);
    memset(d, 0, sizeof *d);
    d->split = split;
    dec_clear(d);
    luaL_getmetatable(L, DEC_MT);
    lua_setmetatable(L, -2);
    lua_createtable(L, 4, 0);
    uv = lua_gettop(L);
    read_options(L, d, opts, uv);
    lua_setiuservalue(L, -2, 1);
    return d;
}

static void dec_release(dec_stream *d)
{
    if (!d->borrowed)
        free(d->buf);
    d->buf = NULL;
    d->borrowed = 0;
    free(d->frames);
    free(d->recs);
    free(d->elems);
    free(d->scratch);
    if (!d->kc_shared)
        free(d->kc);
    else if (d->building)
        d->kc->busy = 0; /* its build was cut short by a Lua error */
    free(d->fields.nodes);
    free(d->fields.names);
    free(d->stamps.nodes);
    free(d->stamps.names);
    memset(d, 0, sizeof *d);
    d->failed = d->closed = 1;
    snprintf(d->err_msg, sizeof d->err_msg, "decoder closed");
}

static int l_gc(lua_State *L)
{
    dec_stream *d = dec_check(L, 1);
    dec_release(d);
    return 0;
}

static int l_decoder(lua_State *L)
{
    dec_new(L, 1, 1);
    return 1;
}

/* Lends decode()'s key cache (upvalue 1) to the decoder at ud, unless a
 * build is using it; the decoder's user value keeps it alive. */
static void share_keys(lua_State *L, dec_stream *d, int ud)
{
    dec_keys *kc = lua_touserdata(L, lua_upvalueindex(1));
    if (!kc || kc->busy)
        return;
    if (kc->nkeys >= KEY_LIMIT) {
        /* full of keys from other documents: start over */
        memset(kc, 0, sizeof *kc);
        lua_createtable(L, 96, 0);
        lua_setiuservalue(L, lua_upvalueindex(1), 1);
    }
    lua_getiuservalue(L, ud, 1);
    lua_getiuservalue(L, lua_upvalueindex(1), 1);
    lua_rawseti(L, -2, UV_KEYS);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_rawseti(L, -2, UV_SHARED_KEYS);
    lua_pop(L, 1);
    d->kc = kc;
    d->kc_shared = 1;
    /* the cached tree nodes belong to the last caller's options */
    if (d->use_fields || d->use_stamps)
        for (int i = 0; i < KEY_SLOTS; i++)
            kc->slots[i].fparent = kc->slots[i].tparent = -2;
}

static int l_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    dec_stream *d = dec_new(L, 2, 0);
    int ud = lua_gettop(L);
    share_keys(L, d, ud);
    if (n > d->max_size) {
        dec_append(d, s, n); /* records the size error */
        return push_error(L, d);
    }
    /* a task-run page has a container every 160 bytes or so: one
     * allocation instead of a string of doublings */
    d->recs_cap = n / 128 + 64 < 65536 ? n / 128 + 64 : 65536;
    d->recs = malloc(d->recs_cap * sizeof *d->recs);
    if (!d->recs)
        d->recs_cap = 0;
    /* the string stays on the stack while it is scanned and built */
    d->buf = (char *)s;
    d->len = d->cap = n;
    d->borrowed = 1;
    if (scan(d) == 0)
        dec_finish(d);
    if (!d->failed)
        dec_next(L, ud);
    d->buf = NULL;
    d->borrowed = 0;
    if (d->failed)
        return push_error(L, d);
    return 1;
}

static int l_feed(lua_State *L)
{
    dec_stream *d = dec_check(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    if (dec_append(d, s, n) < 0)
        return push_error(L, d);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_finish(lua_State *L)
{
    dec_stream *d = dec_check(L, 1);
    dec_finish(d);
    if (d->failed)
        return push_error(L, d);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_next(lua_State *L)
{
    return dec_next(L, 1);
}

static int l_done(lua_State *L)
{
    dec_stream *d = dec_check(L, 1);
    lua_pushboolean(L, !d->failed && d->st == ST_END && d->head == d->tail);
    return 1;
}

static int l_reset(lua_State *L)
{
    dec_stream *d = dec_check(L, 1);
    if (d->closed)
        return 0;
    if (d->buf && d->cap > 1024 * 1024) {
        free(d->buf);
        d->buf = NULL;
        d->cap = 0;
    }
    dec_clear(d);
    return 0;
}

/* Names the memory the decoder holds, so that a stream can be seen to
 * stay flat. */
static int l_tostring(lua_State *L)
{
    dec_stream *d = dec_check(L, 1);
    size_t held = (d->borrowed ? 0 : d->cap) + d->recs_cap * sizeof *d->recs +
                  d->elems_cap * sizeof *d->elems + (size_t)d->frames_cap * sizeof *d->frames +
                  d->scratch_cap + (d->kc && !d->kc_shared ? sizeof *d->kc : 0) +
                  (size_t)(d->fields.cap + d->stamps.cap) * sizeof(dec_node) + d->fields.ncap +
                  d->stamps.ncap;
    lua_pushfstring(L, "prefect.decoder (%p, %d KB held)", (void *)d, (int)((held + 1023) / 1024));
    return 1;
}

void dec_register(lua_State *L)
{
    static const luaL_Reg methods[] = {{"feed", l_feed}, {"finish", l_finish}, {"next", l_next},
                                       {"done", l_done}, {"reset", l_reset},   {NULL, NULL}};
    if (luaL_newmetatable(L, DEC_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__close");
#endif
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    dec_keys *kc = lua_newuserdatauv(L, sizeof *kc, 1);
    memset(kc, 0, sizeof *kc);
    lua_createtable(L, 96, 0);
    lua_setiuservalue(L, -2, 1);
    lua_pushcclosure(L, l_decode, 1);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, l_decoder);
    lua_setfield(L, -2, "decoder");
}
