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

/* Objects of one kind list their keys in the same order, so each key
 * remembers the key that followed it and the first key of the object under
 * it (slot + 1, 0 = unknown): a guess checked with one comparison, which
 * spares hashing and probing for almost every key of a task run. The key
 * that followed depends on the object: "id" is followed by "created" in a
 * task run and by "type" in its state, so it is kept for up to FOLLOW_WAYS
 * parent keys. What the guess reads comes first, in the struct's first 64
 * bytes. */
#define FOLLOW_WAYS 4
typedef struct dec_key {
    unsigned char len, plain; /* plain: no '"' in bytes */
    /* the key, then '"' and ':' (what follows it in compact JSON), then
     * room for reading KEY_CHUNKS whole chunks */
    char bytes[KEY_CHUNKS * 16];
    /* the key that followed this one (fnext) in an object under the key
     * fparent - 2 (1: at the top; 0: an unused way) */
    unsigned char fpar[FOLLOW_WAYS], fnext[FOLLOW_WAYS];
    int ref;             /* index in the keys table: the slot + 1 */
    unsigned char first; /* the first key of an object under this one */
    unsigned char fturn; /* the way to reuse next when all are taken */
    /* how this key's string values fare in the value cache: of vtries
     * lookups vhits hit; vskip values to come bypass it (ids, times) */
    unsigned char vtries, vhits;
    unsigned short vskip;
    uint64_t seen; /* serial of the object that last set this key */
    uint32_t hash;
    /* the fields, timestamp_fields and exclude tree nodes of this key
     * under the parent node last asked for (parent -2: not asked yet) */
    int fparent, fchild, tparent, tchild, eparent, echild;
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
    unsigned char root_first;
    dec_val vals[VAL_CACHE ? VAL_SLOTS : 1]; /* direct-mapped by val_index */
    int nkeys;
    uint64_t serial; /* of the objects built, for dec_key.seen */
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

/* The child of parent named s[0..n), or -1. */
int dec_tree_find(const dec_tree *t, int parent, const char *s, size_t n);

#pragma GCC visibility pop

#endif
