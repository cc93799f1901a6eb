/* The builder behind d:next(): turns a scanned element's bytes into Lua
 * values, trusting them (the scanner has validated them), with every
 * table made at its final size and object keys taken from the key cache. */
#include <float.h>
#include <limits.h>
#include <locale.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "decode_internal.h"

typedef struct dec_build {
    lua_State *L;
    dec_stream *d;
    const char *end; /* one past the element's last byte */
    size_t rec;      /* the next record, in document order */
    int uv, keys;    /* stack indexes of the user value and the keys table */
    int kbase;       /* key ref r is also at stack index kbase + r; 0: not */
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

/* Whether the JSON at ks (just after a key's opening quote, with at least
 * KEY_CHUNKS * 16 bytes before the element's end) is key k, its closing
 * quote and ':', compared a chunk at a time: the guess is right for almost
 * every key, and this spares a loop whose length varies with the key's. */
static inline int key_here(const dec_key *k, const char *ks)
{
#if defined(__SSE2__) && defined(__GNUC__)
    unsigned n = k->len + 2u;
    for (unsigned i = 0; i < n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(ks + i));
        __m128i c = _mm_loadu_si128((const __m128i *)(const void *)(k->bytes + i));
        unsigned differ = ~(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(a, c)) & 0xffffu;
        if (n - i < 16)
            differ &= (1u << (n - i)) - 1;
        if (differ)
            return 0;
    }
    return 1;
#else
    return ks[k->len] == '"' && ks[k->len + 1] == ':' && same_bytes(k->bytes, ks, k->len);
#endif
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
                k->plain = memchr(s, '"', n) == NULL;
                k->fparent = k->tparent = k->eparent = -2;
                memcpy(k->bytes, s, n);
                k->bytes[n] = '"';
                k->bytes[n + 1] = ':';
                k->ref = slot + 1;
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

/* Where the key that follows k in an object under the key parent (-1: at
 * the top) is remembered: its way for that parent, else a new one. */
static inline unsigned char *follow_link(dec_key *k, int parent)
{
    unsigned char tag = (unsigned char)(parent + 2);
    int w;
    for (w = 0; w < FOLLOW_WAYS; w++)
        if (k->fpar[w] == tag)
            return &k->fnext[w];
    for (w = 0; w < FOLLOW_WAYS && k->fpar[w]; w++)
        ;
    if (w == FOLLOW_WAYS)
        w = k->fturn++ % FOLLOW_WAYS;
    k->fpar[w] = tag;
    k->fnext[w] = 0;
    return &k->fnext[w];
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
static inline void push_string(dec_build *b, const char *s, size_t n, int parent)
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

static const char *build_value(dec_build *b, const char *p, int fn, int tn, int en, int parent);

/* fn, tn, en: this object's node in the fields, timestamp_fields and
 * exclude trees, or -1; parent: the slot of the key this object is the
 * value of, or -1 */
static const char *build_object(dec_build *b, const char *p, int fn, int tn, int en, int parent)
{
    lua_State *L = b->L;
    dec_stream *d = b->d;
    const dec_rec *r = &d->recs[b->rec++ - d->rec_base];
    size_t n = r->count;
    /* members that are null are left out, unless null has a value */
    size_t size = d->has_null ? n : n - r->nulls;
    if (fn >= 0 && (size_t)d->fields.nodes[fn].nchild < size)
        size = (size_t)d->fields.nodes[fn].nchild;
    /* excluded members are not taken off: whether they are here (or null,
     * and so counted already) is not known yet, and a table too small
     * costs a rehash, where one a member or two too big costs nothing more
     * than the same object decoded whole */

    if (!lua_checkstack(L, 4))
        luaL_error(L, "JSON nested too deeply for the Lua stack");
    lua_createtable(L, 0, size > INT_MAX ? INT_MAX : (int)size);
    p++;
    unsigned char *link =
        d->kc ? parent >= 0 ? &d->kc->slots[parent].first : &d->kc->root_first : NULL;
    uint64_t serial = d->kc ? ++d->kc->serial : 0;
    for (size_t i = 0; i < n; i++) {
        const char *key;
        size_t klen;
        int cf = -1, ct = -1, ce = -1, slot, guess = link ? *link : 0;
        dec_key *k;
        p = skip_ws(p);
        /* the guessed key, when it fits, is the key: without escapes in
         * the element the first '"' ends the string */
        if (guess > 0 && !b->escapes) {
            const dec_key *k = &d->kc->slots[guess - 1];
            const char *ks = p + 1;
            if (k->plain && (size_t)(b->end - ks) >= KEY_CHUNKS * 16 && key_here(k, ks)) {
                key = ks;
                klen = k->len;
                slot = guess - 1;
                p = ks + klen + 2;
                goto have_slot;
            }
            if (k->plain && (size_t)(b->end - ks) > k->len && ks[k->len] == '"' &&
                same_bytes(k->bytes, ks, k->len)) {
                key = ks;
                klen = k->len;
                slot = guess - 1;
                p = skip_ws(ks + klen + 1) + 1;
                goto have_slot;
            }
        }
        p = read_string(b, p, &key, &klen);
        p = skip_ws(p) + 1;
        slot = key_slot(b, key, klen, guess);
        if (link && *link != slot + 1)
            *link = (unsigned char)(slot + 1);
    have_slot:
        k = slot >= 0 ? &d->kc->slots[slot] : NULL;
        link = k ? follow_link(k, parent) : NULL;
        p = skip_ws(p); /* past the ':' */
        if (fn >= 0) {
            cf = tree_child(&d->fields, fn, k ? &k->fparent : NULL, k ? &k->fchild : NULL, key,
                            klen);
            if (cf < 0) {
                p = skip_value(b, p);
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
                p = skip_value(b, p);
                goto member_done;
            }
        }
        if (tn >= 0)
            ct = tree_child(&d->stamps, tn, k ? &k->tparent : NULL, k ? &k->tchild : NULL, key,
                            klen);
        if (*p == 'n' && !d->has_null) {
            /* an absent null: only an earlier duplicate of the key needs
             * clearing (the last one wins) */
            p += 4;
            if (slot >= 0 ? d->kc->slots[slot].seen >= serial : i > 0) {
                if (slot >= 0)
                    push_key(b, d->kc->slots[slot].ref);
                else
                    lua_pushlstring(L, key, klen);
                lua_pushnil(L);
                lua_rawset(L, -3);
            }
            goto member_done;
        }
        if (slot >= 0) {
            d->kc->slots[slot].seen = serial;
            push_key(b, d->kc->slots[slot].ref);
        } else {
            lua_pushlstring(L, key, klen);
        }
        p = build_value(b, p, cf, ct, ce, slot);
        lua_rawset(L, -3);
    member_done:
        p = skip_ws(p);
        if (*p == ',')
            p++;
    }
    return skip_ws(p) + 1;
}

static const char *build_array(dec_build *b, const char *p, int fn, int tn, int en, int parent)
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
        p = build_value(b, skip_ws(p), fn, tn, en, parent);
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

static const char *build_value(dec_build *b, const char *p, int fn, int tn, int en, int parent)
{
    switch (*p) {
    case '{':
        return build_object(b, p, fn, tn, en, parent);
    case '[':
        return build_array(b, p, fn, tn, en, parent);
    case '"': {
        const char *s;
        size_t n;
        double t;
        p = read_string(b, p, &s, &n);
        if (tn >= 0 && b->d->stamps.nodes[tn].leaf && dec_parse_timestamp(s, n, &t))
            lua_pushnumber(b->L, (lua_Number)t);
        else
            push_string(b, s, n, parent);
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

void dec_build_elem(lua_State *L, dec_stream *d, int uv)
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
        lua_createtable(L, KEYS_TABLE_SIZE, 0);
        lua_pushvalue(L, -1);
        lua_rawseti(L, uv, UV_KEYS);
    }
    b.keys = lua_gettop(L);
    b.escapes = el->escapes;
    b.kbase = 0;
    if (!d->kc)
        d->kc = calloc(1, sizeof *d->kc);
    /* An element with many more members than there are cached keys (a
     * whole page, from decode()) takes its keys from stack slots: cheaper
     * than a table lookup per member. */
    if (d->kc && (size_t)(el->end - el->start) / 64 > (size_t)d->kc->nkeys &&
        lua_checkstack(L, KEY_LIMIT + 4)) {
        b.kbase = b.keys;
        for (int i = 1; i <= d->kc->nkeys; i++)
            lua_rawgeti(L, b.keys, i);
        lua_settop(L, b.kbase + KEY_LIMIT);
    }
    if (d->kc_shared)
        d->kc->busy = 1;
    d->building = 1;
    build_value(&b, d->buf + (el->start - d->base), d->use_fields ? 0 : -1, d->use_stamps ? 0 : -1,
                d->use_exclude ? 0 : -1, -1);
    d->building = 0;
    if (d->kc_shared)
        d->kc->busy = 0;
    d->head++;
    if (b.kbase) {
        lua_replace(L, b.kbase + 1);
        lua_settop(L, b.kbase + 1);
    }
    lua_remove(L, b.keys);
}
