/* tokenizer_encode: text -> ids in the order HF `tokenizers` runs its pipeline: added tokens are
 * cut out of the raw text (leftmost-longest), the rest is normalized, added tokens marked
 * `normalized` are cut out of that, Split / ByteLevel pre-tokenization runs with PCRE2 (JIT),
 * and each piece goes through byte-level BPE by merge rank. Also holds the hash maps and the
 * trie the loader builds. A call takes the tokenizer's idle scratch (struct enc: buffers, PCRE2
 * state, a piece -> ids cache) or makes its own, reads the tokenizer only, and puts the scratch
 * back, so calls may run on many threads at once. */
#include "tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- hashing and maps ---------------------------------------------------------------- */

uint64_t tk_hash(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
    }
    uint64_t v = 0;
    if (n) memcpy(&v, s, n);
    h = (h ^ v) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

static uint64_t pow2_at_least(uint64_t n) {
    uint64_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

bool tk_strmap_init(struct tk_strmap *m, size_t n) {
    m->mask = pow2_at_least(2 * (uint64_t)n + 1) - 1;
    m->slots = calloc(m->mask + 1, sizeof *m->slots);
    return m->slots != NULL;
}

int32_t tk_strmap_get(const struct tk_strmap *m, const char *arena, const uint32_t *off,
                      const uint32_t *len, const void *key, size_t n) {
    if (!m->slots) return -1;
    uint64_t h = tk_hash(key, n), tag = h >> 32;
    for (uint64_t i = h & m->mask;; i = (i + 1) & m->mask) {
        uint64_t s = m->slots[i];
        if (!s) return -1;
        if (s >> 32 != tag) continue;
        int32_t id = (int32_t)((uint32_t)s - 1);
        if (len[id] == n && memcmp(arena + off[id], key, n) == 0) return id;
    }
}

int32_t tk_strmap_put(struct tk_strmap *m, const char *arena, const uint32_t *off,
                      const uint32_t *len, int32_t id) {
    const char *key = arena + off[id];
    size_t n = len[id];
    uint64_t h = tk_hash(key, n), tag = h >> 32;
    for (uint64_t i = h & m->mask;; i = (i + 1) & m->mask) {
        uint64_t s = m->slots[i];
        if (!s) {
            m->slots[i] = tag << 32 | ((uint32_t)id + 1);
            return -1;
        }
        if (s >> 32 != tag) continue;
        int32_t old = (int32_t)((uint32_t)s - 1);
        if (len[old] == n && memcmp(arena + off[old], key, n) == 0) return old;
    }
}

bool tk_u64map_init(struct tk_u64map *m, size_t n) {
    uint64_t cap = pow2_at_least(n + n / 2 + 1);
    m->mask = cap - 1;
    m->shift = 64 - __builtin_ctzll(cap);
    m->slots = calloc(cap, sizeof *m->slots);
    return m->slots != NULL;
}

void tk_u64map_put(struct tk_u64map *m, uint64_t key, uint32_t val) {
    for (uint64_t i = tk_hash64(key, m->shift);; i = (i + 1) & m->mask) {
        struct tk_u64slot *s = &m->slots[i];
        if (s->key == key || s->key == 0) {
            *s = (struct tk_u64slot){key, val};
            return;
        }
    }
}

bool tk_mergemap_init(struct tk_mergemap *m, size_t n_merges) {
    uint64_t cap = pow2_at_least(n_merges + n_merges / 2 + 1);
    m->mask = cap - 1;
    m->shift = 64 - __builtin_ctzll(cap);
    m->slots = calloc(cap, sizeof *m->slots);
    m->result = malloc((n_merges ? n_merges : 1) * sizeof *m->result);
    return m->slots && m->result;
}

void tk_mergemap_put(struct tk_mergemap *m, uint64_t pair, uint32_t rank, uint32_t id) {
    m->result[rank] = id;
    for (uint64_t i = tk_hash64(pair, m->shift);; i = (i + 1) & m->mask) {
        uint64_t s = m->slots[i];
        if (s == 0 || s >> TK_RANK_BITS == pair) {
            m->slots[i] = pair << TK_RANK_BITS | rank;
            return;
        }
    }
}

/* ---- added-token trie ------------------------------------------------------------------ */

bool tk_trie_init(struct tk_trie *tr, size_t total_bytes) {
    memset(tr, 0, sizeof *tr);
    tr->term = malloc((total_bytes + 1) * sizeof *tr->term);
    if (!tr->term || !tk_u64map_init(&tr->edges, total_bytes + 1)) return false;
    tr->term[0] = -1;
    tr->n_nodes = 1;
    return true;
}

static int32_t trie_child(const struct tk_trie *tr, int32_t node, uint8_t b) {
    const struct tk_u64slot *s = tk_u64map_get(&tr->edges, ((uint64_t)node << 8 | b) + 1);
    return s ? (int32_t)s->val : -1;
}

/* Adds s[0..n) for added-token index idx; the first of two equal contents keeps the node. */
void tk_trie_add(struct tk_trie *tr, const char *s, size_t n, int32_t idx) {
    int32_t node = 0;
    if (n == 0) return;
    tr->first[(uint8_t)s[0]] = true;
    for (size_t i = 0; i < n; i++) {
        int32_t next = trie_child(tr, node, (uint8_t)s[i]);
        if (next < 0) {
            next = tr->n_nodes++;
            tr->term[next] = -1;
            tk_u64map_put(&tr->edges, ((uint64_t)node << 8 | (uint8_t)s[i]) + 1, (uint32_t)next);
        }
        node = next;
    }
    if (tr->term[node] < 0) tr->term[node] = idx;
    tr->n_tokens++;
}

void tk_trie_free(struct tk_trie *tr) {
    free(tr->term);
    free(tr->edges.slots);
    memset(tr, 0, sizeof *tr);
}

/* Longest token starting at s[i]: its added index (end in *end), or -1. */
static int32_t trie_longest(const struct tk_trie *tr, const uint8_t *s, size_t n, size_t i,
                            size_t *end) {
    int32_t node = 0, best = -1;
    for (size_t j = i; j < n; j++) {
        node = trie_child(tr, node, s[j]);
        if (node < 0) break;
        if (tr->term[node] >= 0) {
            best = tr->term[node];
            *end = j + 1;
        }
    }
    return best;
}

/* ---- UTF-8 and character classes ------------------------------------------------------- */

/* Decodes the (valid) UTF-8 character at s; *n receives its length. */
static uint32_t u8_get(const uint8_t *s, size_t *n) {
    uint8_t b = s[0];
    if (b < 0x80) return *n = 1, b;
    if (b < 0xE0) return *n = 2, (uint32_t)(b & 0x1F) << 6 | (s[1] & 0x3F);
    if (b < 0xF0)
        return *n = 3, (uint32_t)(b & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    *n = 4;
    return (uint32_t)(b & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
           (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
}

/* The character that ends just before s[i] (i > 0); *n receives its length. */
static uint32_t u8_prev(const uint8_t *s, size_t i, size_t *n) {
    size_t j = i - 1;
    while (j > 0 && (s[j] & 0xC0) == 0x80) j--;
    uint32_t c = u8_get(s + j, n);
    return c;
}

/* Length of the valid UTF-8 prefix of s[0..n): n when all of it is valid. */
static size_t u8_valid_prefix(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF)
            need = 1;
        else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            if (b == 0xE0) lo = 0xA0;
            if (b == 0xED) hi = 0x9F; /* no surrogates */
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            if (b == 0xF0) lo = 0x90;
            if (b == 0xF4) hi = 0x8F;
        } else
            return i;
        if (n - i <= need) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += need + 1;
    }
    return n;
}

/* Unicode White_Space: what Rust's regex `\s` (lstrip / rstrip) and Oniguruma's `\s` match. */
static bool is_white_space(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Rust regex `\w`: Alphabetic, marks, decimal digits, connector punctuation, joiners. */
static bool is_word_char(uint32_t c) {
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
        return true;
    default: /* the So letters that are Other_Alphabetic: circled and squared Latin */
        return c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9) ||
               (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
               (c >= 0x1F170 && c <= 0x1F189);
    }
}

/* ---- normalizers ----------------------------------------------------------------------- */

#define NFC_TABLE_BITS 0x110000u

static void bit_clear(uint8_t *bits, uint32_t c) {
    bits[c >> 3] &= (uint8_t) ~(1u << (c & 7));
}
static bool bit_get(const uint8_t *bits, uint32_t c) {
    return bits[c >> 3] >> (c & 7) & 1;
}

/* Marks the code points NFC can neither change nor join to a neighbour: combining class 0,
 * NFC(c) == c, and never a non-initial part of a canonical decomposition (which covers every
 * NFC_Quick_Check=Maybe character). A segment made only of these is already NFC, which lets
 * plain text skip utf8proc. */
bool tk_nfc_table_build(struct tokenizer *t) {
    uint8_t *bits = malloc(NFC_TABLE_BITS / 8);
    if (!bits) return false;
    memset(bits, 0xFF, NFC_TABLE_BITS / 8);
    for (uint32_t c = 0x80; c < NFC_TABLE_BITS; c++) {
        if (c >= 0xD800 && c <= 0xDFFF) continue;
        const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
        if (p->combining_class) bit_clear(bits, c);
        bool hangul = c >= 0xAC00 && c <= 0xD7A3;
        if (p->decomp_seqindex == UINT16_MAX && !hangul) continue;
        utf8proc_int32_t d[32];
        int lbc = 0;
        utf8proc_ssize_t nd =
            utf8proc_decompose_char((utf8proc_int32_t)c, d, 32, UTF8PROC_DECOMPOSE, &lbc);
        if (nd < 1 || nd > 32 || (nd == 1 && d[0] == (utf8proc_int32_t)c)) continue;
        for (utf8proc_ssize_t k = 1; k < nd; k++) bit_clear(bits, (uint32_t)d[k]);
        uint8_t enc[4], *out = NULL;
        utf8proc_ssize_t ne = utf8proc_encode_char((utf8proc_int32_t)c, enc);
        utf8proc_ssize_t no = utf8proc_map(enc, ne, &out, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (no != ne || memcmp(out, enc, (size_t)ne) != 0) bit_clear(bits, c);
        free(out);
    }
    t->nfc_inert = bits;
    return true;
}

/* Start of the first character of s[i..n) that is not NFC-inert, or n. */
static size_t next_active(const struct tokenizer *t, const uint8_t *s, size_t n, size_t i) {
    while (i < n) {
        if (s[i] < 0x80) { /* ASCII is inert; skip it eight bytes at a time */
            uint64_t v;
            if (n - i >= 8 && (memcpy(&v, s + i, 8), (v & 0x8080808080808080ull) == 0))
                i += 8;
            else
                i++;
            continue;
        }
        size_t k;
        uint32_t c = u8_get(s + i, &k);
        if (!bit_get(t->nfc_inert, c)) return i;
        i += k;
    }
    return n;
}

struct obuf {
    char *p;
    size_t n, cap;
};

static bool obuf_put(struct obuf *o, const void *s, size_t n) {
    if (o->n + n + 1 > o->cap) {
        size_t cap = (o->n + n + 1) * 2;
        char *q = realloc(o->p, cap);
        if (!q) return false;
        o->p = q, o->cap = cap;
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
    o->p[o->n] = 0;
    return true;
}

/* NFC of s[0..n) that hands utf8proc only the windows around non-inert characters: the
 * position before an inert character (combining class 0, NFC_Quick_Check=Yes) is a
 * normalization boundary, so each window runs from the inert character before a non-inert run
 * to the next inert one, and the text between windows is copied. *out is s itself when no
 * window exists, else malloc'd into *owned. */
static bool nfc(const struct tokenizer *t, const uint8_t *s, size_t n, const char **out,
                size_t *out_n, char **owned) {
    size_t i = next_active(t, s, n, 0);
    if (i == n) return true; /* already NFC: keep pointing at s */
    struct obuf o = {0};
    size_t copied = 0;
    while (i < n) {
        size_t w0 = i, k;
        while (w0 > copied) { /* back to the inert character the run may compose with */
            w0--;
            while (w0 > copied && (s[w0] & 0xC0) == 0x80) w0--;
            if (bit_get(t->nfc_inert, u8_get(s + w0, &k))) break;
        }
        size_t w1 = i;
        while (w1 < n && !bit_get(t->nfc_inert, u8_get(s + w1, &k))) w1 += k;
        uint8_t *res = NULL;
        utf8proc_ssize_t r = utf8proc_map(s + w0, (utf8proc_ssize_t)(w1 - w0), &res,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        bool ok = r >= 0 && obuf_put(&o, s + copied, w0 - copied) && obuf_put(&o, res, (size_t)r);
        free(res);
        if (!ok) return free(o.p), false;
        copied = w1;
        i = next_active(t, s, n, w1);
    }
    if (!obuf_put(&o, s + copied, n - copied)) return free(o.p), false;
    free(*owned);
    *owned = o.p, *out = o.p, *out_n = o.n;
    return true;
}

static utf8proc_option_t norm_options(enum tk_norm k) {
    switch (k) {
    case TK_NORM_NFC:
        return UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    case TK_NORM_NFD:
        return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    case TK_NORM_NFKC:
        return UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    case TK_NORM_NFKD:
        return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    }
    return UTF8PROC_STABLE;
}

/* Runs the normalizer chain over s[0..n). *out is s itself when nothing changes, else a malloc'd
 * buffer stored in *owned (caller frees). False on out of memory. */
static bool normalize(const struct tokenizer *t, const char *s, size_t n, const char **out,
                      size_t *out_n, char **owned) {
    *out = s;
    *out_n = n;
    *owned = NULL;
    for (int k = 0; k < t->n_norms; k++) {
        if (t->norms[k] == TK_NORM_NFC && t->nfc_inert) {
            if (!nfc(t, (const uint8_t *)*out, *out_n, out, out_n, owned)) return false;
            continue;
        }
        uint8_t *res = NULL;
        utf8proc_ssize_t r = utf8proc_map((const uint8_t *)*out, (utf8proc_ssize_t)*out_n, &res,
                                          norm_options(t->norms[k]));
        if (r < 0) return false; /* input is valid UTF-8, so only NOMEM can get here */
        free(*owned);
        *owned = (char *)res;
        *out = (char *)res;
        *out_n = (size_t)r;
    }
    return true;
}

bool tk_normalize_copy(const struct tokenizer *t, const char *s, size_t n, char **out,
                       size_t *out_n) {
    const char *r;
    char *owned;
    if (!normalize(t, s, n, &r, out_n, &owned)) return false;
    if (owned) return *out = owned, true;
    *out = malloc(n + 1);
    if (!*out) return false;
    memcpy(*out, s, n);
    (*out)[n] = 0;
    return true;
}

/* ---- the encoder ----------------------------------------------------------------------- */

struct span {
    uint32_t s, e;
};
struct seg {
    uint32_t s, e;
    int32_t added; /* index into tokenizer.added, or -1 for text */
};
struct mark {
    uint32_t s, e;
    bool match;
};

/* Piece -> ids, for one call: text repeats its words, and a hit skips BPE (HF's BPE keeps a
 * cache for the same reason). Keys and ids live in two growing arenas. */
struct pc_slot {
    uint32_t h; /* 0: empty */
    uint32_t koff, ioff;
    uint16_t klen, n;
};
struct pcache {
    struct pc_slot *slots;
    size_t mask, used;
    uint8_t *keys;
    size_t n_keys, cap_keys;
    int32_t *ids;
    size_t n_ids, cap_ids;
};
#define PC_MAX_PIECE 64 /* longer pieces rarely repeat */

/* One encode call's scratch; everything is grown on demand and freed at the end. */
struct enc {
    const struct tokenizer *t;
    int32_t *ids;
    size_t n_ids, cap_ids;
    struct seg *seg1, *seg2; /* added-token splits: of the raw text, of a normalized segment */
    size_t cap_seg1, cap_seg2;
    struct span *pa, *pb; /* pre-tokenizer pieces, before and after one split step */
    size_t cap_pa, cap_pb;
    struct mark *marks; /* one piece's regex matches and gaps */
    size_t cap_marks;
    char *pbuf; /* text rebuilt by ByteLevel add_prefix_space */
    size_t cap_pbuf;
    int32_t *sym, *nxt, *prv; /* BPE symbols of one piece: id, next, previous */
    uint64_t *heap;           /* BPE candidate merges: rank << 32 | position */
    size_t cap_sym;
    pcre2_match_data *md;
    pcre2_match_context *mctx; /* NULL: PCRE2's default JIT stack */
    pcre2_jit_stack *jstack;
    bool big_stack;
    struct pcache pc; /* kept across calls with the rest of the scratch */
    enum tl_status st;
};

static bool grow(struct enc *c, void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t n = *cap ? *cap : 64;
    while (n < need) n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) {
        c->st = TL_ERR_NOMEM;
        return false;
    }
    *p = q;
    *cap = n;
    return true;
}
#define GROW(c, arr, cap, need) grow(c, (void **)&(arr), &(cap), need, sizeof *(arr))

static bool emit(struct enc *c, int32_t id) {
    if (c->n_ids == c->cap_ids && !GROW(c, c->ids, c->cap_ids, c->n_ids + 1)) return false;
    c->ids[c->n_ids++] = id;
    return true;
}

/* HF's AddedVocabulary::find_matches: cuts s[0..n) at the added tokens of trie, leftmost-longest,
 * honouring single_word, lstrip and rstrip. Fills *segs (capacity *cap) and returns the count,
 * or -1 on OOM. */
static long split_added(struct enc *c, const struct tk_trie *tr, const uint8_t *s, size_t n,
                        struct seg **segs, size_t *cap) {
    long ns = 0;
    size_t done = 0; /* end of the last token */
    for (size_t i = 0; i < n;) {
        if (!tr->first[s[i]]) {
            i++;
            continue;
        }
        size_t stop = 0;
        int32_t a = trie_longest(tr, s, n, i, &stop);
        if (a < 0) {
            i++;
            continue;
        }
        size_t start = i, k;
        uint32_t fl = c->t->added[a].flags;
        i = stop; /* the scan resumes after this match, even when it is discarded */
        if (fl & TK_ADDED_SINGLE_WORD) {
            bool ok_l = start == 0 || !is_word_char(u8_prev(s, start, &k));
            bool ok_r = stop == n || !is_word_char(u8_get(s + stop, &k));
            if (!ok_l || !ok_r) continue;
        }
        if (fl & TK_ADDED_LSTRIP) {
            size_t ns0 = start;
            while (ns0 > 0 && is_white_space(u8_prev(s, ns0, &k))) ns0 -= k;
            start = ns0 > done ? ns0 : done;
        }
        if (fl & TK_ADDED_RSTRIP) {
            while (stop < n && is_white_space(u8_get(s + stop, &k))) stop += k;
            i = stop;
        }
        if (!GROW(c, *segs, *cap, (size_t)ns + 2)) return -1;
        if (done < start) (*segs)[ns++] = (struct seg){(uint32_t)done, (uint32_t)start, -1};
        (*segs)[ns++] = (struct seg){(uint32_t)start, (uint32_t)stop, a};
        done = stop;
    }
    if (!GROW(c, *segs, *cap, (size_t)ns + 1)) return -1;
    if (done < n) (*segs)[ns++] = (struct seg){(uint32_t)done, (uint32_t)n, -1};
    return ns;
}

/* A JIT stack of our own makes each match ~20 ns cheaper than PCRE2's default on-machine-stack
 * path, which matters at one match per piece; max_bytes bounds backtracking depth. */
static bool jit_stack(struct enc *c, size_t max_bytes) {
    pcre2_jit_stack *js = pcre2_jit_stack_create(32 * 1024, max_bytes, NULL);
    if (!c->mctx) c->mctx = pcre2_match_context_create(NULL);
    if (!js || !c->mctx) return pcre2_jit_stack_free(js), false;
    pcre2_jit_stack_free(c->jstack);
    c->jstack = js;
    pcre2_jit_stack_assign(c->mctx, NULL, js);
    return true;
}

static int jit_match(struct enc *c, const pcre2_code *re, const char *s, size_t n, size_t pos) {
    int rc = pcre2_jit_match(re, (PCRE2_SPTR)s, n, pos, 0, c->md, c->mctx);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !c->big_stack) {
        /* a pathological piece: retry once with room for deep backtracking */
        c->big_stack = true;
        if (!jit_stack(c, (size_t)256 << 20)) return PCRE2_ERROR_NOMEMORY;
        rc = pcre2_jit_match(re, (PCRE2_SPTR)s, n, pos, 0, c->md, c->mctx);
    }
    return rc;
}

/* One split step over piece buf[p.s, p.e): appends the resulting pieces to c->pb[*nb..]. */
static bool split_piece(struct enc *c, const struct tk_split *sp, const char *buf, struct span p,
                        size_t *nb) {
    const char *s = buf + p.s;
    size_t n = p.e - p.s, nm = 0, prev = 0, pos = 0;
    bool any = false; /* a match ended at prev */
    while (pos <= n) {
        int rc = jit_match(c, sp->re, s, n, pos);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            c->st = rc == PCRE2_ERROR_NOMEMORY ? TL_ERR_NOMEM : TL_ERR_INTERNAL;
            return false;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty: Oniguruma's find_iter drops one right after a match, and
                           steps over a character before searching again */
            size_t k = 1;
            if (ms < n) u8_get((const uint8_t *)s + ms, &k);
            pos = ms + k;
            if (any && ms == prev) continue;
        } else {
            pos = me;
        }
        if (!GROW(c, c->marks, c->cap_marks, nm + 2)) return false;
        if (prev < ms) c->marks[nm++] = (struct mark){(uint32_t)prev, (uint32_t)ms, false};
        c->marks[nm++] = (struct mark){(uint32_t)ms, (uint32_t)me, true};
        prev = me;
        any = true;
    }
    if (!GROW(c, c->marks, c->cap_marks, nm + 1)) return false;
    if (prev < n) c->marks[nm++] = (struct mark){(uint32_t)prev, (uint32_t)n, false};
    if (sp->invert)
        for (size_t i = 0; i < nm; i++) c->marks[i].match = !c->marks[i].match;

    /* HF's SplitDelimiterBehavior, on this piece's marks */
    size_t out = 0;
    struct mark *m = c->marks;
    bool prev_match = false;
    switch (sp->behavior) {
    case TK_SPLIT_ISOLATED:
        out = nm;
        break;
    case TK_SPLIT_REMOVED:
        for (size_t i = 0; i < nm; i++)
            if (!m[i].match) m[out++] = m[i];
        break;
    case TK_SPLIT_MERGED_WITH_PREVIOUS:
        for (size_t i = 0; i < nm; i++) {
            if (m[i].match && !prev_match && out > 0)
                m[out - 1].e = m[i].e;
            else
                m[out++] = m[i];
            prev_match = m[i].match;
        }
        break;
    case TK_SPLIT_MERGED_WITH_NEXT: /* the same fold, run from the end */
        out = nm;
        for (size_t i = nm; i-- > 0;) {
            struct mark x = m[i];
            if (x.match && !prev_match && out < nm)
                m[out].s = x.s;
            else
                m[--out] = x;
            prev_match = x.match;
        }
        memmove(m, m + out, (nm - out) * sizeof *m);
        out = nm - out;
        break;
    case TK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < nm; i++) {
            if (m[i].match == prev_match && out > 0)
                m[out - 1].e = m[i].e;
            else
                m[out++] = m[i];
            prev_match = m[i].match;
        }
        break;
    }
    if (!GROW(c, c->pb, c->cap_pb, *nb + out)) return false;
    for (size_t i = 0; i < out; i++)
        if (m[i].e > m[i].s) c->pb[(*nb)++] = (struct span){p.s + m[i].s, p.s + m[i].e};
    return true;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 2] > v) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], v = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < *n && h[l] < v) m = l;
        if (l + 1 < *n && h[l + 1] < (m == i ? v : h[l])) m = l + 1;
        if (m == i) break;
        h[i] = h[m];
        i = m;
    }
    if (*n) h[i] = v;
    return top;
}

static void push_pair(const struct tokenizer *t, struct enc *c, size_t *nh, int32_t pos) {
    int32_t nx = c->nxt[pos];
    if (nx < 0) return;
    int64_t rank = tk_merge_rank(&t->merges, tk_pair_key(c->sym[pos], c->sym[nx]));
    if (rank >= 0) heap_push(c->heap, nh, (uint64_t)rank << 32 | (uint32_t)pos);
}

static const struct pc_slot *pc_find(const struct pcache *pc, uint32_t h, const uint8_t *p,
                                     size_t n) {
    for (size_t i = h & pc->mask;; i = (i + 1) & pc->mask) {
        const struct pc_slot *s = &pc->slots[i];
        if (!s->h) return s;
        if (s->h == h && s->klen == n && memcmp(pc->keys + s->koff, p, n) == 0) return s;
    }
}

/* Remembers that piece p[0..n) gave ids[0..k). Failing to grow just skips the entry. */
static void pc_put(struct enc *c, uint32_t h, const uint8_t *p, size_t n, const int32_t *ids,
                   size_t k) {
    struct pcache *pc = &c->pc;
    if (2 * (pc->used + 1) > pc->mask + 1) { /* rehash into twice the slots */
        size_t cap = 2 * (pc->mask + 1);
        struct pc_slot *ns = calloc(cap, sizeof *ns);
        if (!ns) return;
        for (size_t i = 0; i <= pc->mask; i++) {
            if (!pc->slots[i].h) continue;
            size_t j = pc->slots[i].h & (cap - 1);
            while (ns[j].h) j = (j + 1) & (cap - 1);
            ns[j] = pc->slots[i];
        }
        free(pc->slots);
        pc->slots = ns, pc->mask = cap - 1;
    }
    if (k > UINT16_MAX || pc->n_keys + n > UINT32_MAX || pc->n_ids + k > UINT32_MAX ||
        !GROW(c, pc->keys, pc->cap_keys, pc->n_keys + n) ||
        !GROW(c, pc->ids, pc->cap_ids, pc->n_ids + k)) {
        c->st = TL_OK; /* the cache is optional */
        return;
    }
    struct pc_slot *s = (struct pc_slot *)pc_find(pc, h, p, n);
    *s = (struct pc_slot){h, (uint32_t)pc->n_keys, (uint32_t)pc->n_ids, (uint16_t)n, (uint16_t)k};
    memcpy(pc->keys + pc->n_keys, p, n);
    memcpy(pc->ids + pc->n_ids, ids, k * sizeof *ids);
    pc->n_keys += n, pc->n_ids += k, pc->used++;
}

/* Byte-level BPE of one piece (raw bytes): the symbols start as one per byte and the adjacent
 * pair of lowest merge rank (leftmost on ties) merges until none is left, as HF's
 * Word::merge_all does. */
static bool bpe(struct enc *c, const uint8_t *p, size_t n) {
    const struct tokenizer *t = c->t;
    if (n == 1 && t->byte_id[p[0]] >= 0) return emit(c, t->byte_id[p[0]]);
    uint32_t h = 0;
    size_t first = c->n_ids;
    bool cache = c->pc.slots && n <= PC_MAX_PIECE;
    if (cache) {
        h = (uint32_t)tk_hash(p, n) | 1;
        const struct pc_slot *s = pc_find(&c->pc, h, p, n);
        if (s->h) {
            if (!GROW(c, c->ids, c->cap_ids, c->n_ids + s->n)) return false;
            memcpy(c->ids + c->n_ids, c->pc.ids + s->ioff, s->n * sizeof *c->ids);
            c->n_ids += s->n;
            return true;
        }
    }
    if (t->ignore_merges) { /* a piece that is itself a token is emitted whole */
        int32_t id =
            tk_strmap_get(&t->raw, (const char *)t->raw_bytes, t->raw_off, t->raw_len, p, n);
        if (id >= 0) {
            if (!emit(c, id)) return false;
            if (cache) pc_put(c, h, p, n, &id, 1);
            return true;
        }
    }
    if (n > INT32_MAX / 4) {
        c->st = TL_ERR_INVALID;
        return false;
    }
    if (n > c->cap_sym) { /* nxt, prv and heap follow sym's capacity */
        size_t cap = n < 64 ? 64 : n * 2;
        int32_t *a = realloc(c->sym, cap * sizeof *a);
        if (a) c->sym = a;
        int32_t *b = a ? realloc(c->nxt, cap * sizeof *b) : NULL;
        if (b) c->nxt = b;
        int32_t *d = b ? realloc(c->prv, cap * sizeof *d) : NULL;
        if (d) c->prv = d;
        uint64_t *h = d ? realloc(c->heap, 3 * cap * sizeof *h) : NULL;
        if (!h) return c->st = TL_ERR_NOMEM, false;
        c->heap = h;
        c->cap_sym = cap;
    }
    int32_t ns = 0;
    bool last_unk = false;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[p[i]];
        if (id < 0) { /* HF drops what the vocabulary lacks unless there is an unk token */
            if (t->unk_id < 0 || (last_unk && t->fuse_unk)) continue;
            id = t->unk_id;
            last_unk = true;
        } else {
            last_unk = false;
        }
        c->sym[ns] = id;
        c->prv[ns] = ns - 1;
        c->nxt[ns] = ns + 1;
        ns++;
    }
    if (ns == 0) return true; /* (nothing to cache either) */
    c->nxt[ns - 1] = -1;
    size_t nh = 0;
    for (int32_t i = 0; i + 1 < ns; i++) push_pair(t, c, &nh, i);
    while (nh) {
        uint64_t top = heap_pop(c->heap, &nh);
        int32_t pos = (int32_t)(uint32_t)top, nx;
        if (c->sym[pos] < 0 || (nx = c->nxt[pos]) < 0) continue;
        int64_t rank = tk_merge_rank(&t->merges, tk_pair_key(c->sym[pos], c->sym[nx]));
        if (rank != (int64_t)(top >> 32)) continue; /* stale: this pair has changed since */
        c->sym[pos] = (int32_t)t->merges.result[rank];
        c->sym[nx] = -1;
        c->nxt[pos] = c->nxt[nx];
        if (c->nxt[pos] >= 0) c->prv[c->nxt[pos]] = pos;
        if (c->prv[pos] >= 0) push_pair(t, c, &nh, c->prv[pos]);
        push_pair(t, c, &nh, pos);
    }
    for (int32_t i = 0; i >= 0; i = c->nxt[i])
        if (!emit(c, c->sym[i])) return false;
    if (cache) pc_put(c, h, p, n, c->ids + first, c->n_ids - first);
    return true;
}

/* Pre-tokenizes one normalized segment buf[0..n) and runs BPE on every piece. */
static bool pretokenize(struct enc *c, const char *buf, size_t n) {
    const struct tokenizer *t = c->t;
    if (!GROW(c, c->pa, c->cap_pa, 1)) return false;
    c->pa[0] = (struct span){0, (uint32_t)n};
    size_t na = 1;
    for (int k = 0; k < t->n_splits; k++) {
        const struct tk_split *sp = &t->splits[k];
        if (sp->prefix_space) { /* ByteLevel add_prefix_space: ' ' before each piece */
            if (!GROW(c, c->pbuf, c->cap_pbuf, 2 * n + 1)) return false;
            size_t o = 0;
            for (size_t i = 0; i < na; i++) {
                uint32_t s0 = (uint32_t)o;
                if (buf[c->pa[i].s] != ' ') c->pbuf[o++] = ' ';
                memcpy(c->pbuf + o, buf + c->pa[i].s, c->pa[i].e - c->pa[i].s);
                o += c->pa[i].e - c->pa[i].s;
                c->pa[i] = (struct span){s0, (uint32_t)o};
            }
            buf = c->pbuf; /* ByteLevel is the last step, so nothing else uses pbuf */
            n = o;
        }
        if (!sp->re) continue;
        size_t nb = 0;
        for (size_t i = 0; i < na; i++)
            if (!split_piece(c, sp, buf, c->pa[i], &nb)) return false;
        struct span *sw = c->pa;
        size_t cw = c->cap_pa;
        c->pa = c->pb, c->cap_pa = c->cap_pb;
        c->pb = sw, c->cap_pb = cw;
        na = nb;
    }
    for (size_t i = 0; i < na; i++)
        if (!bpe(c, (const uint8_t *)buf + c->pa[i].s, c->pa[i].e - c->pa[i].s)) return false;
    return true;
}

/* A text segment between added tokens of the raw text: normalize, cut the normalized added
 * tokens out, pre-tokenize the rest. */
static bool encode_segment(struct enc *c, const char *s, size_t n) {
    const struct tokenizer *t = c->t;
    const char *buf;
    size_t nn;
    char *owned;
    if (!normalize(t, s, n, &buf, &nn, &owned)) return c->st = TL_ERR_NOMEM, false;
    bool ok = true;
    if (t->trie_norm.n_tokens == 0) {
        ok = nn == 0 || pretokenize(c, buf, nn);
    } else {
        long ns = split_added(c, &t->trie_norm, (const uint8_t *)buf, nn, &c->seg2, &c->cap_seg2);
        ok = ns >= 0;
        for (long i = 0; ok && i < ns; i++) {
            struct seg g = c->seg2[i];
            ok =
                g.added >= 0 ? emit(c, t->added[g.added].id) : pretokenize(c, buf + g.s, g.e - g.s);
        }
    }
    free(owned);
    return ok;
}

void tk_enc_free(struct enc *c) {
    if (!c) return;
    free(c->seg1), free(c->seg2), free(c->pa), free(c->pb), free(c->marks), free(c->pbuf);
    free(c->sym), free(c->nxt), free(c->prv), free(c->heap);
    pcre2_match_data_free(c->md);
    pcre2_match_context_free(c->mctx);
    pcre2_jit_stack_free(c->jstack);
    free(c->pc.slots), free(c->pc.keys), free(c->pc.ids);
    free(c);
}

static bool pc_reset(struct pcache *pc) {
    free(pc->slots), free(pc->keys), free(pc->ids);
    memset(pc, 0, sizeof *pc);
    pc->slots = calloc(1024, sizeof *pc->slots); /* grows with the distinct pieces */
    pc->mask = 1023;
    return pc->slots != NULL;
}

/* The tokenizer's idle scratch, or a new one. */
static struct enc *enc_acquire(const struct tokenizer *t) {
    struct tokenizer *mt = (struct tokenizer *)t; /* only the atomic spare slot changes */
    struct enc *c = atomic_exchange(&mt->spare, NULL);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) return NULL;
        c->t = t;
        c->md = pcre2_match_data_create(1, NULL);
        if (!c->md || !pc_reset(&c->pc) || (t->n_splits && !jit_stack(c, (size_t)1 << 20)))
            return tk_enc_free(c), NULL;
    }
    c->st = TL_OK;
    c->ids = NULL, c->n_ids = c->cap_ids = 0;
    return c;
}

/* Frees a buffer that one huge input grew, so an idle scratch stays small. */
#define TRIM(arr, cap)                                                                             \
    do {                                                                                           \
        if ((cap) * sizeof *(arr) > ((size_t)4 << 20)) free(arr), (arr) = NULL, (cap) = 0;         \
    } while (0)

/* Puts c back as the tokenizer's spare (or frees it when another call got there first), trimmed
 * of what one large or pathological input left behind. */
static void enc_release(const struct tokenizer *t, struct enc *c) {
    TRIM(c->seg1, c->cap_seg1);
    TRIM(c->seg2, c->cap_seg2);
    TRIM(c->pa, c->cap_pa);
    TRIM(c->pb, c->cap_pb);
    TRIM(c->marks, c->cap_marks);
    TRIM(c->pbuf, c->cap_pbuf);
    if (c->cap_sym * sizeof *c->heap * 3 > ((size_t)4 << 20)) {
        free(c->sym), free(c->nxt), free(c->prv), free(c->heap);
        c->sym = c->nxt = c->prv = NULL, c->heap = NULL, c->cap_sym = 0;
    }
    bool ok = true;
    if (c->big_stack) ok = jit_stack(c, (size_t)1 << 20), c->big_stack = false;
    /* the cache keeps up to 64k pieces (a few MB) across calls, then starts over */
    if (ok && (c->pc.used > 65536 || c->pc.cap_keys > ((size_t)4 << 20))) ok = pc_reset(&c->pc);
    struct enc *none = NULL;
    if (!ok || !atomic_compare_exchange_strong(&((struct tokenizer *)t)->spare, &none, c))
        tk_enc_free(c);
}

enum tl_status tokenizer_encode(const struct tokenizer *t, const char *text, size_t len,
                                bool add_special, int32_t **ids, int *n_ids, struct tl_err *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return tl_fail(err, TL_ERR_INVALID, "tokenizer_encode: NULL text");
    if (len > (size_t)INT32_MAX / 2)
        return tl_fail(err, TL_ERR_INVALID, "tokenizer_encode: %zu bytes is too long", len);
    size_t bad = u8_valid_prefix((const uint8_t *)text, len);
    if (bad != len)
        return tl_fail(err, TL_ERR_INVALID, "tokenizer_encode: invalid UTF-8 at byte %zu", bad);

    struct enc *c = enc_acquire(t);
    if (!c) return tl_fail(err, TL_ERR_NOMEM, "tokenizer_encode: out of memory");
    bool ok = GROW(c, c->ids, c->cap_ids, len / 3 + 16 + TK_MAX_AFFIX * 2);
    for (int i = 0; ok && add_special && i < t->n_prefix; i++) ok = emit(c, t->prefix[i]);
    long ns =
        ok ? split_added(c, &t->trie_raw, (const uint8_t *)text, len, &c->seg1, &c->cap_seg1) : -1;
    ok = ns >= 0;
    for (long i = 0; ok && i < ns; i++) {
        struct seg g = c->seg1[i];
        ok =
            g.added >= 0 ? emit(c, t->added[g.added].id) : encode_segment(c, text + g.s, g.e - g.s);
    }
    for (int i = 0; ok && add_special && i < t->n_suffix; i++) ok = emit(c, t->suffix[i]);
    int32_t *out = c->ids;
    size_t n = c->n_ids;
    enum tl_status st = c->st;
    enc_release(t, c);
    if (!ok) {
        free(out);
        if (st == TL_ERR_NOMEM)
            return tl_fail(err, TL_ERR_NOMEM, "tokenizer_encode: out of memory");
        return tl_fail(err, st == TL_OK ? TL_ERR_INTERNAL : st,
                       "tokenizer_encode: PCRE2 matching failed");
    }
    *ids = out;
    *n_ids = (int)n;
    return TL_OK;
}
