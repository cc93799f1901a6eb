/* The builder behind d:next() and decode(): turns JSON bytes into Lua
 * values, object keys taken from the key cache. It runs in one of two ways.
 * Behind the scanner it trusts the bytes (they are validated) and makes
 * every table at its final size from the scanner's records. In one pass
 * ("direct", decode()'s first try) it reads bytes nothing has scanned: it
 * checks everything the scanner would, sizes tables from what the same
 * key held last time, and gives up (NULL) at the first thing it does not
 * accept, so that the scanner, run next, reports every error in one
 * place. */
#include <float.h>
#include <limits.h>
#include <locale.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "decode_internal.h"

/* What the builder's inner loop is made of, inlined however large */
#if defined(__GNUC__)
#define BUILD_INLINE inline __attribute__((always_inline))
#else
#define BUILD_INLINE inline
#endif

typedef struct dec_build {
    lua_State *L;
    dec_stream *d;
    const char *end; /* one past the element's last byte */
    size_t rec;      /* the next record, in document order */
    int uv, keys;    /* stack indexes of the user value and the keys table */
    int kbase;       /* key ref r is also at stack index kbase + r; 0: not */
    int escapes;
    int depth;                          /* the containers open */
    unsigned char no_order[ORDER_KEYS]; /* the guesses without a key cache: none */
} dec_build;

/* Whitespace between scanned bytes: nothing else there is below '!'. */
static inline const char *skip_ws(const char *p)
{
    while ((unsigned char)*p <= ' ')
        p++;
    return p;
}

/* Whitespace anywhere, for the one-pass builder, whose input ends with a
 * '\0' (a Lua string's): that byte stops every loop and every test of
 * what comes next, as no JSON token starts with it, so none of them need
 * to look for the end. */
static inline const char *skip_ws_any(const char *p)
{
    if ((unsigned char)*p > ' ') /* compact JSON */
        return p;
    while (dec_ws_class[(unsigned char)*p])
        p++;
    return p;
}

/* The direct builder's ':' after a key, and what follows it; NULL when
 * something else comes. */
static inline const char *direct_colon(const char *p)
{
    p = skip_ws_any(p);
    return *p == ':' ? skip_ws_any(p + 1) : NULL;
}

/* The direct builder's step after a value in a container closed by c:
 * the next member or element (*more set), or the closing bracket; NULL
 * when something else comes. */
static inline const char *direct_after(const char *p, char c, int *more)
{
    if (p[0] == ',' && p[1] == '"') { /* compact JSON: a key, or a string element */
        *more = 1;
        return p + 1;
    }
    p = skip_ws_any(p);
    *more = *p == ',';
    if (*more)
        return skip_ws_any(p + 1);
    return *p == c ? p : NULL;
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

/* The valid string with escapes from p (its opening quote) to q (its
 * closing one), unescaped into the scratch buffer: sets *s, *n. */
static void unescape(dec_build *b, const char *p, const char *q, const char **s, size_t *n)
{
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
}

/* p is at a scanned string's opening quote. Sets *s, *n to its bytes
 * (unescaped into the scratch buffer when needed) and returns what
 * follows it. */
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
    *s = p + 1;
    *n = (size_t)(q - p - 1);
    if (escaped)
        unescape(b, p, q, s, n);
    return q + 1;
}

/* The four hex digits at p (before end), or -1. */
static long hex4_checked(const unsigned char *p, const unsigned char *end)
{
    long v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        if (c - '0' < 10)
            c -= '0';
        else if ((c | 0x20) - 'a' < 6)
            c = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v << 4 | (long)c;
    }
    return v;
}

/* The length of the valid UTF-8 sequence of two to four bytes at p
 * (before end), or 0: the scanner's rules (no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
static int utf8_length(const unsigned char *p, const unsigned char *end)
{
    unsigned c = *p, lo = 0x80, hi = 0xbf;
    int need;
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (end - p <= need)
        return 0;
    for (int i = 1; i <= need; i++) {
        if (p[i] < lo || p[i] > hi)
            return 0;
        lo = 0x80;
        hi = 0xbf;
    }
    return need + 1;
}

/* The rest of a string for the direct builder, from q, its first byte
 * that is not plain ASCII (p: its opening quote): checked as the scanner
 * checks it, then unescaped when needed. NULL when it is not valid. */
static const char *direct_string_slow(dec_build *b, const char *p, const char *q, const char **s,
                                      size_t *n)
{
    const unsigned char *u = (const unsigned char *)q, *end = (const unsigned char *)b->end;
    int escaped = 0;
    for (;;) {
        unsigned c;
        if (u == end)
            return NULL;
        c = *u;
        if (c == '"')
            break;
        if (c < 0x20)
            return NULL;
        if (c < 0x80 && c != '\\') {
            u++;
            continue;
        }
        if (c >= 0x80) {
            int len = utf8_length(u, end);
            if (!len)
                return NULL;
            u += len;
            continue;
        }
        escaped = 1;
        if (end - u < 2)
            return NULL;
        c = u[1];
        if (c != 'u') {
            if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' && c != 'n' && c != 'r' &&
                c != 't')
                return NULL;
            u += 2;
            continue;
        }
        long cp = hex4_checked(u + 2, end);
        u += 6;
        if (cp < 0 || (cp >= 0xdc00 && cp <= 0xdfff))
            return NULL;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            long low;
            if (end - u < 2 || u[0] != '\\' || u[1] != 'u')
                return NULL;
            low = hex4_checked(u + 2, end);
            if (low < 0xdc00 || low > 0xdfff)
                return NULL;
            u += 6;
        }
    }
    *s = p + 1;
    *n = (size_t)((const char *)u - p - 1);
    if (escaped)
        unescape(b, p, (const char *)u, s, n);
    return (const char *)u + 1;
}

/* p is at the opening quote of a string nothing has scanned. Sets *s, *n
 * as read_string does and returns what follows it; NULL when the string
 * is not valid or not closed. */
static inline const char *direct_string(dec_build *b, const char *p, const char **s, size_t *n)
{
    const unsigned char *q = (const unsigned char *)p + 1, *end = (const unsigned char *)b->end;
    int quote = 0;
    while (end - q >= CHUNK) {
        size_t k = special_at(q, &quote);
        if (k < CHUNK) {
            q += k;
            goto special;
        }
        q += CHUNK;
    }
    while (q < end && dec_str_class[*q] == 0)
        q++;
    if (q == end)
        return NULL;
    quote = *q == '"';
special:
    if (!quote)
        return direct_string_slow(b, p, (const char *)q, s, n);
    *s = p + 1;
    *n = (size_t)((const char *)q - p - 1);
    return (const char *)q + 1;
}

/* Where the JSON number at p ends, before end, or NULL if none starts
 * there; a number is followed by nothing that could continue it. */
static const char *number_end(const char *p, const char *end)
{
#define DIGIT(q) ((q) < end && (unsigned)(*(q) - '0') < 10)
    if (p < end && *p == '-')
        p++;
    if (!DIGIT(p))
        return NULL;
    if (*p++ != '0')
        while (DIGIT(p))
            p++;
    if (p < end && *p == '.') {
        if (!DIGIT(p + 1))
            return NULL;
        for (p += 2; DIGIT(p);)
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (!DIGIT(p))
            return NULL;
        while (DIGIT(p))
            p++;
    }
    return p;
#undef DIGIT
}

/* Whether the literal lit (of len bytes) is at p, before the end. */
static inline int literal_at(const dec_build *b, const char *p, const char *lit, size_t len)
{
    return (size_t)(b->end - p) >= len && same4(p, lit) && (len == 4 || p[4] == lit[4]);
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

/* Whether the JSON at ks (just after a key's opening quote, with at least
 * KEY_CHUNKS * 16 bytes before the element's end) is key k, its closing
 * quote and ':', compared a chunk at a time: the guess is right for almost
 * every key, and this spares a loop whose length varies with the key's. */
static inline int key_here(const dec_key *k, const char *ks)
{
#if defined(__SSE2__) && defined(__GNUC__)
    unsigned n = k->len + 2u, i;
    __m128i a = _mm_loadu_si128((const __m128i *)(const void *)ks);
    __m128i c = _mm_loadu_si128((const __m128i *)(const void *)k->bytes);
    unsigned same = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(a, c));
    if ((same & k->mask) != k->mask)
        return 0;
    if (n <= 16)
        return 1;
    /* whole chunks, the last one ending with the ':' */
    for (i = 16;; i += 16) {
        unsigned at = i + 16 < n ? i : n - 16;
        a = _mm_loadu_si128((const __m128i *)(const void *)(ks + at));
        c = _mm_loadu_si128((const __m128i *)(const void *)(k->bytes + at));
        if (_mm_movemask_epi8(_mm_cmpeq_epi8(a, c)) != 0xffff)
            return 0;
        if (at == n - 16)
            return 1;
    }
#else
    return k->plain && ks[k->len] == '"' && ks[k->len + 1] == ':' &&
           same_bytes(k->bytes, ks, k->len);
#endif
}

/* Whether a key's bytes, as they are, spell it in valid JSON with nothing
 * after them but its closing quote: no '"', '\\' or control character
 * (an unescaped key can hold them; its bytes seen raw in a string would
 * then not be this key, or not JSON). Only such keys are guessed. */
static int plain_key(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (dec_str_class[(unsigned char)s[i]] > 0 && dec_str_class[(unsigned char)s[i]] < 4)
            return 0;
    return 1;
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
        dec_keys *kc = d->kc;
        uint32_t h = str_hash(s, n);
        unsigned i = h & (KEY_SLOTS - 1);
        for (;;) {
            if (kc->index[i] == 0) {
                int slot = kc->nkeys;
                dec_key *k;
                if (slot >= KEY_LIMIT)
                    return -1;
                k = &kc->slots[slot];
                lua_pushlstring(b->L, s, n);
                if (b->kbase) {
                    lua_pushvalue(b->L, -1);
                    lua_replace(b->L, b->kbase + slot + 1);
                }
                lua_rawseti(b->L, b->keys, slot + 1);
                k->hash = h;
                k->len = (unsigned char)n;
                k->plain = plain_key(s, n);
                /* a key that is not plain never matches */
                k->mask = (n + 2 >= 16 ? 0xffffu : (1u << (n + 2)) - 1) | (k->plain ? 0 : 0x10000u);
                k->fparent = k->tparent = k->eparent = -2;
                memcpy(k->bytes, s, n);
                k->bytes[n] = '"';
                k->bytes[n + 1] = ':';
                kc->index[i] = (unsigned char)(slot + 1);
                kc->nkeys++;
                return slot;
            }
            const dec_key *k = &kc->slots[kc->index[i] - 1];
            if (k->hash == h && k->len == n && same_bytes(k->bytes, s, n))
                return kc->index[i] - 1;
            i = (i + 1) & (KEY_SLOTS - 1);
        }
    }
    return -1;
}

int dec_tree_find(const dec_tree *t, int parent, const char *s, size_t n)
{
    for (int c = t->nodes[parent].child; c >= 0; c = t->nodes[c].sibling) {
        const dec_node *node = &t->nodes[c];
        if (node->len == n && memcmp(t->names + node->name, s, n) == 0)
            return c;
    }
    return -1;
}

/* The child of node named s[0..n) in t, or -1; with a cached key, asked of
 * the tree only when the key last met another parent node. */
static inline int tree_child(const dec_tree *t, int node, int *kparent, int *kchild, const char *s,
                             size_t n)
{
    if (!kparent)
        return dec_tree_find(t, node, s, n);
    if (*kparent != node) {
        *kchild = dec_tree_find(t, node, s, n);
        *kparent = node;
    }
    return *kchild;
}

static inline void push_key(dec_build *b, int ref)
{
    if (b->kbase)
        lua_pushvalue(b->L, b->kbase + ref);
    else
        lua_rawgeti(b->L, b->keys, ref);
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

/* The direct builder's skip of a value it does not build: checked as it
 * would be built, nothing made. NULL when it is not valid. */
static const char *skip_direct(dec_build *b, const char *p)
{
    const char *s;
    size_t n;
    switch (*p) {
    case '"':
        return direct_string(b, p, &s, &n);
    case '{':
    case '[': {
        char close = *p == '{' ? '}' : ']';
        int more = 1;
        if (b->depth >= b->d->max_depth)
            return NULL;
        b->depth++;
        p = skip_ws_any(p + 1);
        if (*p != close) {
            while (more) {
                if (close == '}') {
                    if (*p != '"' || !(p = direct_string(b, p, &s, &n)) || !(p = direct_colon(p)))
                        return NULL;
                }
                if (!(p = skip_direct(b, p)) || !(p = direct_after(p, close, &more)))
                    return NULL;
            }
        }
        b->depth--;
        return p + 1;
    }
    case 't':
        return literal_at(b, p, "true", 4) ? p + 4 : NULL;
    case 'f':
        return literal_at(b, p, "false", 5) ? p + 5 : NULL;
    case 'n':
        return literal_at(b, p, "null", 4) ? p + 4 : NULL;
    default:
        return number_end(p, b->end);
    }
}

/* A member fields or exclude leaves out. */
static inline const char *skip_member(dec_build *b, const char *p, const int direct)
{
    return direct ? skip_direct(b, p) : skip_value(b, p);
}

static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Number literals (validated already, unless strict). Integers that fit
 * lua_Integer stay integers on 5.3+. Other values: when the decimal mantissa is below 2^53
 * and the power of ten at most 22, both are exact doubles and one IEEE
 * multiplication or division rounds correctly; everything else goes to
 * strtod on a copy spelled for the current locale's decimal point. */
static const char *read_number(dec_build *b, const char *p, int strict)
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
    /* strict: bytes nothing has scanned, checked on the way (NULL if
     * they are not a number, or have a leading zero) */
    if (strict &&
        ((unsigned)(AT(p) - '0') >= 10 || (*p == '0' && (unsigned)(AT(p + 1) - '0') < 10)))
        return NULL;
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
        if (strict && (unsigned)(AT(p + 1) - '0') >= 10)
            return NULL;
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
        if (strict && (unsigned)(AT(p) - '0') >= 10)
            return NULL;
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

/* The value cache's slot for s[0..n), from its length and its first and
 * last bytes: cheap, and enough to tell apart the ids and names that recur. */
static inline unsigned val_index(const char *s, size_t n)
{
    uint64_t w;
    if (n >= 8) {
        uint64_t first, last;
        memcpy(&first, s, 8);
        memcpy(&last, s + n - 8, 8);
        w = first ^ last * UINT64_C(0x9e3779b97f4a7c15);
    } else {
        w = (uint64_t)(unsigned char)s[0] | (uint64_t)(unsigned char)s[n - 1] << 8 |
            (uint64_t)(unsigned char)s[n / 2] << 16;
    }
    w = (w ^ n) * UINT64_C(0xff51afd7ed558ccd);
    return (unsigned)(w >> (64 - VAL_BITS));
}

/* Pushes a string value; parent is the slot of its key, or -1. */
static BUILD_INLINE void push_string(dec_build *b, const char *s, size_t n, int parent)
{
    dec_keys *kc = b->d->kc;
    dec_key *k = NULL;
    if (!VAL_CACHE || n - 1 >= VAL_MAX || !kc)
        goto plain;
    if (parent >= 0) {
        k = &kc->slots[parent];
        if (k->vskip) {
            k->vskip--;
            goto plain;
        }
    }
    unsigned i = val_index(s, n);
    dec_val *v = &kc->vals[i];
    if (v->len == n && same_bytes(v->bytes, s, n)) {
        lua_rawgeti(b->L, b->keys, KEY_LIMIT + 1 + (lua_Integer)i);
        if (k)
            k->vhits++;
        /* the key that put it here is credited too: a run's id never
         * recurs as an id, but does as its state's task_run_id */
        if (v->owner && v->owner - 1 != parent && kc->slots[v->owner - 1].vhits < 255)
            kc->slots[v->owner - 1].vhits++;
    } else {
        /* emptied first: an error (out of memory) must not leave the slot
         * naming another string than the table holds */
        v->len = 0;
        lua_pushlstring(b->L, s, n);
        lua_pushvalue(b->L, -1);
        lua_rawseti(b->L, b->keys, KEY_LIMIT + 1 + (lua_Integer)i);
        memcpy(v->bytes, s, n);
        v->len = (unsigned char)n;
        v->owner = (unsigned char)(parent + 1);
    }
    /* a key whose values rarely recur (ids, timestamps) leaves the cache
     * alone for a while rather than flushing it */
    if (k && ++k->vtries == 32) {
        if (k->vhits < 8)
            k->vskip = 1000;
        k->vtries = k->vhits = 0;
    }
    return;
plain:
    lua_pushlstring(b->L, s, n);
}

/* The builder is written once and compiled twice, for scanned bytes
 * (build_scanned) and for the one pass (build_direct): direct is a
 * constant in each, so neither pays for the other's tests. */

static const char *build_scanned(dec_build *b, const char *p, int fn, int tn, int en, int parent);
static const char *build_direct(dec_build *b, const char *p, int fn, int tn, int en, int parent);

static inline const char *build_child(dec_build *b, const char *p, int fn, int tn, int en,
                                      int parent, const int direct)
{
    return direct ? build_direct(b, p, fn, tn, en, parent)
                  : build_scanned(b, p, fn, tn, en, parent);
}

/* The string at p; tn: its node in the timestamp_fields tree, or -1. */
static BUILD_INLINE const char *build_string(dec_build *b, const char *p, int tn, int parent,
                                             const int direct)
{
    const char *s;
    size_t n;
    double t;
    if (!direct)
        p = read_string(b, p, &s, &n);
    else if (!(p = direct_string(b, p, &s, &n)))
        return NULL;
    if (tn >= 0 && b->d->stamps.nodes[tn].leaf && dec_parse_timestamp(s, n, &t))
        lua_pushnumber(b->L, (lua_Number)t);
    else
        push_string(b, s, n, parent);
    return p;
}

/* A container is entered: room on the Lua stack is asked for once every
 * STACK_LEVELS levels, for as many (a table, a key and a value each). */
#define STACK_LEVELS 8
static inline int enter_level(dec_build *b)
{
    if (b->depth % STACK_LEVELS == 0 && !lua_checkstack(b->L, 3 * STACK_LEVELS + 4))
        return 0;
    b->depth++;
    return 1;
}

/* A table size remembered for the direct builder: what the last container
 * under the same key held. */
static inline void remember_size(unsigned short *hint, size_t n)
{
    if (hint)
        *hint = (unsigned short)(n < USHRT_MAX ? n : USHRT_MAX);
}

/* Where the direct builder keeps the size of an object (obj) or array
 * under the key slot parent (-1: at the top), or NULL. */
static inline unsigned short *size_hint(dec_keys *kc, int parent, int obj)
{
    if (!kc)
        return NULL;
    if (parent < 0)
        return obj ? &kc->root_osize : &kc->root_asize;
    return obj ? &kc->slots[parent].osize : &kc->slots[parent].asize;
}

/* fn, tn, en: this object's node in the fields, timestamp_fields and
 * exclude trees, or -1; parent: the slot of the key this object is the
 * value of, or -1. Returns what follows the object; NULL only from the
 * direct builder, which has given up. */
static BUILD_INLINE const char *build_object(dec_build *b, const char *p, int fn, int tn, int en,
                                             int parent, const int direct)
{
    lua_State *L = b->L;
    dec_stream *d = b->d;
    unsigned short *hint = NULL;
    size_t n = 0, size, built = 0;
    int run = 0, has_id = 0, more = 1;
    if (direct) {
        if (b->depth >= d->max_depth || !enter_level(b))
            return NULL;
        /* a task run, which must have a string "id" (the shape option) */
        run = b->depth == d->id_depth;
        hint = size_hint(d->kc, parent, 1);
        size = hint ? *hint : 0;
    } else {
        const dec_rec *r = &d->recs[b->rec++ - d->rec_base];
        n = r->count;
        /* members that are null are left out, unless null has a value */
        size = d->has_null ? n : n - r->nulls;
        if (!enter_level(b))
            luaL_error(L, "JSON nested too deeply for the Lua stack");
    }
    if (fn >= 0 && (size_t)d->fields.nodes[fn].nchild < size)
        size = (size_t)d->fields.nodes[fn].nchild;
    /* excluded members are not taken off: whether they are here (or null,
     * and so counted already) is not known yet, and a table too small
     * costs a rehash, where one a member or two too big costs nothing more
     * than the same object decoded whole */

    lua_createtable(L, 0, size > INT_MAX ? INT_MAX : (int)size);
    p++;
    if (direct) {
        p = skip_ws_any(p);
        more = *p != '}';
    }
    dec_keys *kc = d->kc;
    /* member i's guess; an object of more than ORDER_KEYS members wraps
     * around, where a guess is only more often wrong */
    unsigned char *order = kc ? kc->order[parent + 1] : b->no_order;
    uint32_t serial = kc ? ++kc->serial : 0;
    /* a member needs more than the common steps: the shape's "id" check,
     * or the fields, exclude or timestamp_fields tree */
    const int careful = run || (fn & en & tn) >= 0;
    for (size_t i = 0; direct ? more : i < n; i++) {
        const char *key;
        size_t klen;
        int cf = -1, ct = -1, ce = -1, slot, guess = order[i % ORDER_KEYS];
        dec_key *k;
        if (direct) {
            if (*p != '"')
                return NULL;
        } else {
            p = skip_ws(p);
        }
        /* the guessed key, when it fits, is the key: it has nothing that
         * would read otherwise in its raw bytes, and without escapes in
         * the element the first '"' ends the string */
        if (guess > 0 && (direct || !b->escapes)) {
            const char *ks = p + 1;
            k = &kc->slots[guess - 1];
            slot = guess - 1;
            key = ks;
            klen = k->len;
            if ((size_t)(b->end - ks) >= KEY_CHUNKS * 16 && key_here(k, ks)) {
                p = ks + klen + 2;
                if (direct)
                    p = skip_ws_any(p);
                goto have_key;
            }
            if (k->plain && (size_t)(b->end - ks) > k->len && ks[k->len] == '"' &&
                same_bytes(k->bytes, ks, k->len)) {
                if (direct) {
                    if (!(p = direct_colon(ks + klen + 1)))
                        return NULL;
                } else {
                    p = skip_ws(ks + klen + 1) + 1;
                }
                goto have_key;
            }
        }
        if (direct) {
            if (!(p = direct_string(b, p, &key, &klen)) || !(p = direct_colon(p)))
                return NULL;
        } else {
            p = read_string(b, p, &key, &klen);
            p = skip_ws(p) + 1;
        }
        slot = key_slot(b, key, klen, guess);
        if (kc)
            order[i % ORDER_KEYS] = (unsigned char)(slot + 1);
        k = slot >= 0 ? &kc->slots[slot] : NULL;
    have_key:
        if (!direct)
            p = skip_ws(p); /* past the ':' */
        if (!careful)
            goto options_done;
        if (direct && run && klen == 2 && key[0] == 'i' && key[1] == 'd') {
            if (*p != '"')
                return NULL;
            has_id = 1;
        }
        if (fn >= 0) {
            cf = tree_child(&d->fields, fn, k ? &k->fparent : NULL, k ? &k->fchild : NULL, key,
                            klen);
            if (cf < 0) {
                p = skip_member(b, p, direct);
                goto member_done;
            }
            if (d->fields.nodes[cf].leaf)
                cf = -1;
        }
        if (en >= 0) {
            /* excluded: skipped like a member fields leaves out; on the
             * way to an excluded path: built, minus what is below */
            ce = tree_child(&d->exclude, en, k ? &k->eparent : NULL, k ? &k->echild : NULL, key,
                            klen);
            if (ce >= 0 && d->exclude.nodes[ce].leaf) {
                p = skip_member(b, p, direct);
                goto member_done;
            }
        }
        if (tn >= 0)
            ct = tree_child(&d->stamps, tn, k ? &k->tparent : NULL, k ? &k->tchild : NULL, key,
                            klen);
    options_done:
        if (*p == 'n' && !d->has_null) {
            /* an absent null: only an earlier duplicate of the key needs
             * clearing (the last one wins) */
            if (direct && !literal_at(b, p, "null", 4))
                return NULL;
            p += 4;
            if (k ? k->seen >= serial : i > 0) {
                if (k)
                    push_key(b, slot + 1);
                else
                    lua_pushlstring(L, key, klen);
                lua_pushnil(L);
                lua_rawset(L, -3);
            }
            goto member_done;
        }
        if (k) {
            k->seen = serial;
            push_key(b, slot + 1);
        } else {
            lua_pushlstring(L, key, klen);
        }
        /* a string, the commonest value, without a call */
        p = *p == '"' ? build_string(b, p, ct, slot, direct)
                      : build_child(b, p, cf, ct, ce, slot, direct);
        if (!p)
            return NULL;
        lua_rawset(L, -3);
        built++;
    member_done:
        if (direct) {
            if (!p || !(p = direct_after(p, '}', &more)))
                return NULL;
        } else {
            p = skip_ws(p);
            if (*p == ',')
                p++;
        }
    }
    b->depth--;
    if (!direct)
        return skip_ws(p) + 1;
    if (run && !has_id)
        return NULL;
    remember_size(hint, built);
    return p + 1;
}

static BUILD_INLINE const char *build_array(dec_build *b, const char *p, int fn, int tn, int en,
                                            int parent, const int direct)
{
    lua_State *L = b->L;
    dec_stream *d = b->d;
    unsigned short *hint = NULL;
    size_t n, i;
    int more = 1;
    if (direct) {
        if (b->depth >= d->max_depth || !enter_level(b))
            return NULL;
        hint = size_hint(d->kc, parent, 0);
        n = hint ? *hint : 0;
    } else {
        n = d->recs[b->rec++ - d->rec_base].count;
        if (!enter_level(b))
            luaL_error(L, "JSON nested too deeply for the Lua stack");
    }
    lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
    p++;
    if (direct) {
        p = skip_ws_any(p);
        more = *p != ']';
    }
    for (i = 1; direct ? more : i <= n; i++) {
        if (direct) {
            /* the shape option's task runs are objects */
            if (b->depth + 1 == d->id_depth && *p != '{')
                return NULL;
        } else {
            p = skip_ws(p);
        }
        if (!(p = build_child(b, p, fn, tn, en, parent, direct)))
            return NULL;
        lua_rawseti(L, -2, (lua_Integer)i);
        if (direct) {
            if (!(p = direct_after(p, ']', &more)))
                return NULL;
        } else {
            p = skip_ws(p);
            if (*p == ',')
                p++;
        }
    }
    if (d->has_array_mt) {
        lua_rawgeti(L, b->uv, UV_ARRAY_MT);
        lua_setmetatable(L, -2);
    }
    b->depth--;
    if (!direct)
        return skip_ws(p) + 1;
    remember_size(hint, i - 1);
    return p + 1;
}

static BUILD_INLINE const char *build_value(dec_build *b, const char *p, int fn, int tn, int en,
                                            int parent, const int direct)
{
    switch (*p) {
    case '{':
        return build_object(b, p, fn, tn, en, parent, direct);
    case '[':
        return build_array(b, p, fn, tn, en, parent, direct);
    case '"':
        return build_string(b, p, tn, parent, direct);
    case 't':
        if (direct && !literal_at(b, p, "true", 4))
            return NULL;
        lua_pushboolean(b->L, 1);
        return p + 4;
    case 'f':
        if (direct && !literal_at(b, p, "false", 5))
            return NULL;
        lua_pushboolean(b->L, 0);
        return p + 5;
    case 'n':
        if (direct && !literal_at(b, p, "null", 4))
            return NULL;
        push_null(b);
        return p + 4;
    default:
        return read_number(b, p, direct);
    }
}

static const char *build_scanned(dec_build *b, const char *p, int fn, int tn, int en, int parent)
{
    return build_value(b, p, fn, tn, en, parent, 0);
}

static const char *build_direct(dec_build *b, const char *p, int fn, int tn, int en, int parent)
{
    return build_value(b, p, fn, tn, en, parent, 1);
}

/* Sets up b to build from start to end and pushes the keys table;
 * returns the stack's top before. */
static int build_begin(lua_State *L, dec_stream *d, int uv, dec_build *b, const char *start,
                       const char *end)
{
    int top = lua_gettop(L);
    b->L = L;
    b->d = d;
    b->end = end;
    b->uv = uv;
    b->escapes = 0;
    b->depth = 0;
    b->rec = 0;
    memset(b->no_order, 0, sizeof b->no_order);
    lua_rawgeti(L, uv, UV_KEYS);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_createtable(L, KEYS_TABLE_SIZE, 0);
        lua_pushvalue(L, -1);
        lua_rawseti(L, uv, UV_KEYS);
    }
    b->keys = lua_gettop(L);
    b->kbase = 0;
    if (!d->kc)
        d->kc = calloc(1, sizeof *d->kc);
    /* An element with many more members than there are cached keys (a
     * whole page, from decode()) takes its keys from stack slots: cheaper
     * than a table lookup per member. */
    if (d->kc && (size_t)(end - start) / 64 > (size_t)d->kc->nkeys &&
        lua_checkstack(L, KEY_LIMIT + 4)) {
        b->kbase = b->keys;
        for (int i = 1; i <= d->kc->nkeys; i++)
            lua_rawgeti(L, b->keys, i);
        lua_settop(L, b->kbase + KEY_LIMIT);
    }
    if (d->kc_shared)
        d->kc->busy = 1;
    d->building = 1;
    return top;
}

/* The value built is on top: leaves it alone above top. */
static void build_end(lua_State *L, dec_stream *d, int top)
{
    d->building = 0;
    if (d->kc_shared)
        d->kc->busy = 0;
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
}

void dec_build_elem(lua_State *L, dec_stream *d, int uv)
{
    const dec_elem *el = &d->elems[d->head];
    dec_build b;
    int top =
        build_begin(L, d, uv, &b, d->buf + (el->start - d->base), d->buf + (el->end - d->base));
    b.rec = el->rec;
    b.escapes = el->escapes;
    build_scanned(&b, d->buf + (el->start - d->base), d->use_fields ? 0 : -1,
                  d->use_stamps ? 0 : -1, d->use_exclude ? 0 : -1, -1);
    d->head++;
    build_end(L, d, top);
}

int dec_build_direct(lua_State *L, dec_stream *d, int uv, const char *s, size_t n)
{
    dec_build b;
    const char *p;
    int top = build_begin(L, d, uv, &b, s, s + n);
    p = skip_ws_any(s);
    /* what the shape option wants at the top */
    if ((d->shape == SHAPE_RUNS && *p != '[') || (d->shape == SHAPE_RUN && *p != '{'))
        p = NULL;
    if (p)
        p = build_direct(&b, p, d->use_fields ? 0 : -1, d->use_stamps ? 0 : -1,
                         d->use_exclude ? 0 : -1, -1);
    if (p)
        p = skip_ws_any(p);
    if (p != b.end) {
        d->building = 0;
        if (d->kc_shared)
            d->kc->busy = 0;
        lua_settop(L, top);
        return 0;
    }
    build_end(L, d, top);
    return 1;
}
