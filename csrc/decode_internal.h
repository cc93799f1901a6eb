/* What the decoder's files share: the stream's layout, the scanner's and
 * the builder's entry points, and the quote search both of them use. Not
 * part of the contract with the transport (that is decode.h). */
#ifndef PREFECT_DECODE_INTERNAL_H
#define PREFECT_DECODE_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "decode.h"

#define DEC_MT "prefect.decoder"
#define DEC_KEYS_MT "prefect.decoder.keys"
/* decode() keeps a records array of at most this many between calls */
#define DEC_SPARE_RECS 65536
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

/* What the document must be (the shape option), checked by the scanner as
 * the bytes arrive: anything; an array of objects that each have a string
 * "id" (a page of task runs); one such object (a task run); a JSON integer
 * >= 0 (a count). */
enum dec_shape { SHAPE_ANY, SHAPE_RUNS, SHAPE_RUN, SHAPE_COUNT };

typedef struct dec_rec {
    size_t count; /* members of this object or array */
    size_t nulls; /* members of this object whose value is null */
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
    size_t count, nulls;
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

#define KEY_SLOTS 256 /* the hash's size, a power of two */
#define KEY_LIMIT 192 /* interned keys at most: the hash never fills up (and fits a byte) */
#define KEY_MAX 38    /* longer keys are not interned */
#define KEY_CHUNKS 3  /* 16-byte chunks that hold a key and its '":' */

/* Objects of one kind list their keys in the same order, so the keys of
 * the last object under each key are kept in order (dec_keys.order): the
 * one at the same place is a guess checked with one comparison, which
 * spares hashing and probing for almost every key of a task run. What the
 * guess reads comes first, in the struct's first 64 bytes. */
#define ORDER_KEYS 32 /* members of an object that get a guess */
typedef struct dec_key {
    /* the bits of the first chunk's compare the guess needs set: len + 2,
     * at most 16, and bit 16 if the key is not plain */
    unsigned mask;
    unsigned char len, plain; /* plain: see plain_key in decode_build.c */
    /* (its Lua string is at index slot + 1 of the keys table) the key,
     * then '"' and ':' (what follows it in compact JSON), then
     * room for reading KEY_CHUNKS whole chunks */
    char bytes[KEY_CHUNKS * 16];
    /* how this key's string values fare in the value cache: of vtries
     * lookups vhits hit; vskip values to come bypass it (ids, times) */
    unsigned char vtries, vhits;
    unsigned short vskip;
    /* serial of the object that last set this key; when the serial wraps
     * around, a stale one can only cost clearing a key that is not set */
    uint32_t seen;
    uint32_t hash;
    /* the fields, timestamp_fields and exclude tree nodes of this key
     * under the parent node last asked for (parent -2: not asked yet) */
    int fparent, fchild, tparent, tchild, eparent, echild;
    /* the size of the last object and array under this key, for the
     * one-pass builder, which has no records to size tables by */
    unsigned short osize, asize;
} dec_key;

/* Lua 5.3 and 5.4 hash every byte of a short string to intern it, so
 * finding a recurring value in a small cache is cheaper; LuaJIT hashes a
 * few bytes, and there the cache costs more than it saves. */
#define VAL_CACHE (LUA_VERSION_NUM >= 503)
#define VAL_BITS 9
#define VAL_SLOTS (VAL_CACHE ? 1 << VAL_BITS : 0)
#define VAL_MAX 40 /* Lua 5.4 interns strings up to 40 bytes */
/* The keys table: keys at 1..KEY_LIMIT, then one entry per value slot. */
#define KEYS_TABLE_SIZE (KEY_LIMIT + VAL_SLOTS)

/* A recent short string value (a state name, a tag, a flow run's id):
 * pushing it again from the keys table skips hashing and interning it. */
typedef struct dec_val {
    unsigned char len;   /* 0 = empty slot */
    unsigned char owner; /* the slot + 1 of the key that made it, or 0 */
    char bytes[VAL_MAX];
} dec_val;

/* A decoder's key cache. decode() shares one between its calls (an upvalue,
 * whose user value holds the Lua strings), so a page's keys are made once
 * per Lua state rather than once per call. */
typedef struct dec_keys {
    /* the keys in the order first met, so the keys of one object lie side
     * by side in memory; index[] is the hash of them (slot + 1, 0 = empty) */
    dec_key slots[KEY_LIMIT];
    unsigned char index[KEY_SLOTS];
    /* the keys (slot + 1, 0: not known) of the last object under each key,
     * in their order: order[slot + 1], and order[0] at the top */
    unsigned char order[KEY_LIMIT + 1][ORDER_KEYS];
    unsigned short root_osize, root_asize;   /* as dec_key's, at the top */
    dec_val vals[VAL_CACHE ? VAL_SLOTS : 1]; /* direct-mapped by val_index */
    int nkeys;
    uint32_t serial; /* of the objects built, for dec_key.seen */
    int busy;        /* a decode() is building with it (a __gc could call decode()) */
    /* decode()'s records array, kept between calls: freeing a block this
     * big makes malloc consolidate its free lists every time */
    dec_rec *spare_recs;
    size_t spare_cap;
} dec_keys;

struct dec_stream {
    /* options */
    size_t max_size;
    int max_depth;
    int split; /* hand out top-level array elements one by one */
    int shape; /* enum dec_shape */
    /* d->depth inside the objects that must have a string "id" (2 for
     * SHAPE_RUNS, 1 for SHAPE_RUN); 0, which no key is at, otherwise */
    int id_depth;
    int has_null, has_array_mt, use_fields, use_stamps, use_exclude;
    dec_tree fields, stamps, exclude;

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
    /* the shape check: the object being scanned at id_depth (where its '{'
     * is, whether a string "id" was seen), where the key being scanned at
     * id_depth starts, and whether the member value to come is an "id" */
    size_t obj_start, key_start;
    int has_id, id_member, id_key; /* id_key: key_start is to be compared */
    /* a number or literal of the wrong shape, reported once it is complete
     * (bytes that are not JSON before that are a decode error) */
    int shape_pending;
    size_t pending_off;
    char pending_msg[96];
    int in_elem, elem_escapes;
    size_t elem_start, elem_rec;
    int finished, failed, building, closed;
    size_t err_off;
    const char *err_kind; /* "decode", "too_large" or "protocol" */
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

/* Strings are scanned a chunk at a time: 16 bytes with SSE2, else 8 bytes
 * in a 64-bit word. quote_at(p) is the offset of the first '"' among the
 * CHUNK bytes at p, or CHUNK if there is none. */
#if defined(__SSE2__) && defined(__GNUC__)
#include <emmintrin.h>
#define CHUNK 16

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

/* Exact when it finds nothing; otherwise it can over-report only in bytes
 * above (more significant than) a true hit, which the byte loop skips. */
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

/* Whether the four bytes at p are those of lit. */
static inline int same4(const void *p, const char *lit)
{
    uint32_t x, y;
    memcpy(&x, p, 4);
    memcpy(&y, lit, 4);
    return x == y;
}

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

/* Only luaopen_prefect_core leaves core.so: what the files share stays inside. */
#pragma GCC visibility push(hidden)

/* Bytes in strings: 0 plain, 1 '"', 2 '\\', 3 a control character, 4 not
 * ASCII (the scanner's, and the one-pass builder's, classes). */
extern const unsigned char dec_str_class[256];
/* JSON's whitespace: space, tab, line feed, carriage return. */
extern const unsigned char dec_ws_class[256];

/* special_at(p, &quote) is the offset of the first '"', '\\', control or
 * non-ASCII byte among the CHUNK bytes at p (and whether it is '"'), or
 * CHUNK if there is none. */
#if defined(__SSE2__) && defined(__GNUC__)
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
#else
/* Exact when it finds nothing; otherwise it can over-report only in bytes
 * above (more significant than) a true hit. */
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
    while (dec_str_class[p[i]] == 0)
        i++;
    *quote = p[i] == '"';
    return i;
}
#endif

/* decode_scan.c */

/* Records the first error: its message, with an excerpt, and its offset.
 * dec_fail's kind is "decode" (the bytes are not JSON); dec_fail_as names
 * another (a static string). */
void dec_fail(dec_stream *d, size_t off, const char *what);
void dec_fail_as(dec_stream *d, size_t off, const char *kind, const char *what);

/* Scans buf[scan..len). Returns 0, or -1 with the error recorded. */
int dec_scan(dec_stream *d);

/* Forgets the document, keeping the options and the buffers. */
void dec_clear(dec_stream *d);

/* decode_shape.c: the shape option's checks (0, or -1 with the error
 * recorded). p is at the first byte of a value, pos its offset. */

/* The document's value starts. */
int dec_shape_top(dec_stream *d, const unsigned char *p, size_t pos);
/* A value that must be a task run (an object) starts. */
int dec_shape_object(dec_stream *d, const unsigned char *p, size_t pos);
/* The value of a task run's "id" member starts. */
int dec_shape_id(dec_stream *d, const unsigned char *p, size_t pos);
/* A task run's object closes. */
int dec_shape_close(dec_stream *d);
/* A count's number has a fraction or an exponent, at pos. */
int dec_shape_integer(dec_stream *d, size_t pos);
/* The number or literal of the wrong shape held back (d->shape_pending)
 * is complete: the error. */
int dec_shape_settle(dec_stream *d);
/* Whether a key's bytes s[0..n), escapes and all, spell "id". */
int dec_key_is_id(const unsigned char *s, size_t n);

/* decode_build.c */

/* Builds the element at the head of the queue and pushes it; uv is the
 * stack index of the decoder's user value. */
void dec_build_elem(lua_State *L, dec_stream *d, int uv);

/* Builds the whole document s[0..n) (with s[n] == '\0', as a Lua string
 * has) in one pass, nothing scanned, and
 * pushes it: 1. Or 0, the stack as it was, at anything the scanner might
 * not accept (invalid JSON, the wrong shape, too deep): the scanner then
 * gives the answer. A Lua error (out of memory) can escape, as from
 * dec_build_elem. */
int dec_build_direct(lua_State *L, dec_stream *d, int uv, const char *s, size_t n);

/* The child of parent named s[0..n), or -1. */
int dec_tree_find(const dec_tree *t, int parent, const char *s, size_t n);

#pragma GCC visibility pop

#endif
