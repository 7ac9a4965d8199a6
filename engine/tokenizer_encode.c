/* tokenizer_encode: text -> ids in the order HF `tokenizers` runs its pipeline: added tokens are
 * cut out of the raw text (leftmost-longest), the rest is normalized, added tokens marked
 * `normalized` are cut out of that, Split / ByteLevel pre-tokenization runs with PCRE2 (JIT),
 * and each piece goes through byte-level BPE by merge rank. Also holds the hash maps, the trie
 * and the regex compiler the loader builds with. Each call owns its scratch (struct enc) and
 * only reads the tokenizer, so calls may run on many threads at once. */
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

bool tk_mergemap_init(struct tk_mergemap *m, size_t n) {
    uint64_t cap = pow2_at_least(n + n / 2 + 1);
    m->mask = cap - 1;
    m->shift = 64 - __builtin_ctzll(cap);
    m->slots = calloc(cap, sizeof *m->slots);
    return m->slots != NULL;
}

void tk_mergemap_put(struct tk_mergemap *m, uint64_t key, uint32_t rank, uint32_t id) {
    uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> m->shift;
    for (;; i = (i + 1) & m->mask) {
        struct tk_merge_slot *s = &m->slots[i];
        if (s->key == key || s->key == 0) {
            *s = (struct tk_merge_slot){key, rank, id};
            return;
        }
    }
}

/* ---- added-token trie ------------------------------------------------------------------ */

bool tk_trie_init(struct tk_trie *tr, size_t total_bytes) {
    memset(tr, 0, sizeof *tr);
    tr->term = malloc((total_bytes + 1) * sizeof *tr->term);
    if (!tr->term || !tk_mergemap_init(&tr->edges, total_bytes + 1)) return false;
    tr->term[0] = -1;
    tr->n_nodes = 1;
    return true;
}

static int32_t trie_child(const struct tk_trie *tr, int32_t node, uint8_t b) {
    const struct tk_merge_slot *s = tk_mergemap_get(&tr->edges, ((uint64_t)node << 8 | b) + 1);
    return s ? (int32_t)s->id : -1;
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
            tk_mergemap_put(&tr->edges, ((uint64_t)node << 8 | (uint8_t)s[i]) + 1, 0,
                            (uint32_t)next);
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

static bool all_nfc_inert(const struct tokenizer *t, const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
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
        if (!bit_get(t->nfc_inert, c)) return false;
        i += k;
    }
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
        if (t->norms[k] == TK_NORM_NFC && t->nfc_inert &&
            all_nfc_inert(t, (const uint8_t *)*out, *out_n))
            continue;
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

/* ---- regexes --------------------------------------------------------------------------- */

/* Oniguruma's `\s` (Unicode White_Space), spelt out: PCRE2's UCP `\s` also takes U+180E. */
#define ONIG_SPACE                                                                                 \
    "\\t-\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}"          \
    "\\x{205f}\\x{3000}"

/* Code points that PCRE2 10.42 (Unicode 14 tables) leaves unassigned but newer Unicode puts in
 * \p{L}, \p{M}, \p{N}, \p{P} or \p{S}, by class: added to those classes so that new letters,
 * digits and emoji split as HF's tokenizers (Oniguruma, Unicode 16) split them. Generated from
 * Node 20's ICU 78 classes over all code points, less the Unicode 17 additions that HF's
 * tokenizers 0.23 still treats as unassigned. */
static const char *const newer_unicode[128] = {
    ['L'] = "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}"
            "\\x{10D4A}-\\x{10D65}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}"
            "\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}"
            "\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}"
            "\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}"
            "\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}"
            "\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}"
            "\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}",
    ['M'] = "\\x{897}\\x{CF3}\\x{ECE}\\x{10D69}-\\x{10D6D}\\x{10EFC}-\\x{10EFF}\\x{11241}"
            "\\x{113B8}-\\x{113C0}\\x{113C2}\\x{113C5}\\x{113C7}-\\x{113CA}\\x{113CC}-\\x{113D0}"
            "\\x{113D2}\\x{113E1}-\\x{113E2}\\x{11F00}-\\x{11F01}\\x{11F03}\\x{11F34}-\\x{11F3A}"
            "\\x{11F3E}-\\x{11F42}\\x{11F5A}\\x{13440}\\x{13447}-\\x{13455}\\x{1611E}-\\x{1612F}"
            "\\x{1E08F}\\x{1E4EC}-\\x{1E4EF}\\x{1E5EE}-\\x{1E5EF}",
    ['N'] = "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}"
            "\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}"
            "\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}",
    ['P'] = "\\x{1B4E}-\\x{1B4F}\\x{1B7F}\\x{10D6E}\\x{113D4}-\\x{113D5}\\x{113D7}-\\x{113D8}"
            "\\x{11B00}-\\x{11B09}\\x{11BE1}\\x{11F43}-\\x{11F4F}\\x{16D6D}-\\x{16D6F}\\x{1E5FF}",
    ['S'] = "\\x{2427}-\\x{2429}\\x{2FFC}-\\x{2FFF}\\x{31E4}-\\x{31E5}\\x{31EF}"
            "\\x{10D8E}-\\x{10D8F}\\x{1CC00}-\\x{1CCEF}\\x{1CD00}-\\x{1CEB3}\\x{1F6DC}"
            "\\x{1F774}-\\x{1F776}\\x{1F77B}-\\x{1F77F}\\x{1F7D9}\\x{1F8B2}-\\x{1F8BB}"
            "\\x{1F8C0}-\\x{1F8C1}\\x{1FA75}-\\x{1FA77}\\x{1FA87}-\\x{1FA89}\\x{1FA8F}"
            "\\x{1FAAD}-\\x{1FAAF}\\x{1FABB}-\\x{1FABF}\\x{1FAC6}\\x{1FACE}-\\x{1FACF}"
            "\\x{1FADA}-\\x{1FADC}\\x{1FADF}\\x{1FAE8}-\\x{1FAE9}\\x{1FAF7}-\\x{1FAF8}"
            "\\x{1FBCB}-\\x{1FBEF}",
};

struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
};

static void sb_put(struct sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_str(struct sbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}

/* The \p{X} class plus the newer code points of X: "\p{X}..." inside a class, "[\p{X}...]"
 * (or "[^...]" for \P{X}) outside one. */
static void sb_class(struct sbuf *b, char x, bool in_class, bool negated) {
    char head[8] = {'\\', 'p', '{', x, '}', 0};
    if (!in_class) sb_str(b, negated ? "[^" : "[");
    sb_str(b, head);
    sb_str(b, newer_unicode[(unsigned char)x]);
    if (!in_class) sb_str(b, "]");
}

/* Rewrites the class escapes whose PCRE2 meaning differs from Oniguruma's, which HF's
 * tokenizers compiles these patterns with: \s, \S, \w, \W and the newer code points of \p{L},
 * \p{M}, \p{N}, \p{P}, \p{S}. Negated forms inside a [...] class stay as they are. Returns a
 * malloc'd pattern or NULL (OOM). */
static char *onig_to_pcre2(const char *p, size_t n) {
    struct sbuf b = {0};
    bool in_class = false;
    for (size_t i = 0; i < n;) {
        size_t adv = 1;
        char e = i + 1 < n && p[i] == '\\' ? p[i + 1] : 0;
        char cls = 0; /* the X of \p{X} / \P{X} / \pX, when it is one of ours */
        size_t clen = 0;
        if ((e == 'p' || e == 'P') && i + 2 < n) {
            if (i + 4 < n && p[i + 2] == '{' && p[i + 4] == '}')
                cls = p[i + 3], clen = 5;
            else if (p[i + 2] != '{')
                cls = p[i + 2], clen = 3;
            if (!cls || !strchr("LMNPS", cls)) cls = 0;
        }
        if (cls && !(e == 'P' && in_class)) {
            sb_class(&b, cls, in_class, e == 'P');
            adv = clen;
        } else if (e == 's' || (e == 'S' && !in_class)) {
            sb_str(&b, in_class ? ONIG_SPACE : e == 's' ? "[" ONIG_SPACE "]" : "[^" ONIG_SPACE "]");
            adv = 2;
        } else if (e == 'w' || (e == 'W' && !in_class)) { /* letters, marks, Nd, Pc */
            if (!in_class) sb_str(&b, e == 'w' ? "[" : "[^");
            sb_class(&b, 'L', true, false);
            sb_class(&b, 'M', true, false);
            sb_str(&b, "\\p{Nd}\\p{Pc}");
            if (!in_class) sb_str(&b, "]");
            adv = 2;
        } else {
            if (e) {
                adv = 2;
            } else if (!in_class && p[i] == '[') {
                in_class = true;
                /* a ']' right after '[' or '[^' is a literal, not the end */
                if (i + 1 < n && p[i + 1] == '^') adv = 2;
                if (i + adv < n && p[i + adv] == ']') adv++;
            } else if (in_class && p[i] == '[' && i + 1 < n && p[i + 1] == ':') {
                const char *end = strstr(p + i, ":]");
                if (end && (size_t)(end - p) < n) adv = (size_t)(end - p) + 2 - i;
            } else if (in_class && p[i] == ']') {
                in_class = false;
            }
            sb_put(&b, p + i, adv);
        }
        i += adv;
    }
    sb_put(&b, "", 0);
    if (b.oom) return free(b.p), NULL;
    return b.p;
}

enum tl_status tk_regex_compile(const char *pattern, size_t n, bool literal, pcre2_code **out,
                                struct tl_err *err) {
    char *pat = literal ? NULL : onig_to_pcre2(pattern, n);
    if (!literal && !pat) return tl_fail(err, TL_ERR_NOMEM, "out of memory compiling a regex");
    int ec;
    PCRE2_SIZE eo;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(literal ? pattern : pat),
                                   literal ? n : PCRE2_ZERO_TERMINATED, opts, &ec, &eo, NULL);
    free(pat);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "pattern /%.200s/ does not compile with PCRE2: %s (near offset %zu)",
                       pattern, (char *)msg, (size_t)eo);
    }
    if (pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) != 0) {
        pcre2_code_free(re);
        return tl_fail(err, TL_ERR_UNSUPPORTED, "PCRE2 JIT is unavailable for /%.200s/", pattern);
    }
    *out = re;
    return TL_OK;
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
    pcre2_match_context *mctx; /* only once a big JIT stack is needed */
    pcre2_jit_stack *jstack;
    struct pcache pc; /* slots == NULL: no cache (short inputs) */
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

static int jit_match(struct enc *c, const pcre2_code *re, const char *s, size_t n, size_t pos) {
    int rc = pcre2_jit_match(re, (PCRE2_SPTR)s, n, pos, 0, c->md, c->mctx);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !c->jstack) {
        /* the default 32 KiB JIT stack ran out (a very long run of one class): retry once
         * with a big one */
        c->mctx = pcre2_match_context_create(NULL);
        c->jstack = pcre2_jit_stack_create(64 * 1024, 256 * 1024 * 1024, NULL);
        if (!c->mctx || !c->jstack) return PCRE2_ERROR_NOMEMORY;
        pcre2_jit_stack_assign(c->mctx, NULL, c->jstack);
        rc = pcre2_jit_match(re, (PCRE2_SPTR)s, n, pos, 0, c->md, c->mctx);
    }
    return rc;
}

/* One split step over piece buf[p.s, p.e): appends the resulting pieces to c->pb[*nb..]. */
static bool split_piece(struct enc *c, const struct tk_split *sp, const char *buf, struct span p,
                        size_t *nb) {
    const char *s = buf + p.s;
    size_t n = p.e - p.s, nm = 0, prev = 0, pos = 0;
    while (pos <= n) {
        int rc = jit_match(c, sp->re, s, n, pos);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            c->st = rc == PCRE2_ERROR_NOMEMORY ? TL_ERR_NOMEM : TL_ERR_INTERNAL;
            return false;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if (!GROW(c, c->marks, c->cap_marks, nm + 2)) return false;
        if (prev < ms) c->marks[nm++] = (struct mark){(uint32_t)prev, (uint32_t)ms, false};
        c->marks[nm++] = (struct mark){(uint32_t)ms, (uint32_t)me, true};
        prev = me;
        if (me > ms) {
            pos = me;
        } else { /* an empty match: step over one character, as Oniguruma's find_iter does */
            if (me >= n) break;
            size_t k;
            u8_get((const uint8_t *)s + me, &k);
            pos = me + k;
        }
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
    const struct tk_merge_slot *m =
        tk_mergemap_get(&t->merges, tk_pair_key(c->sym[pos], c->sym[nx]));
    if (m) heap_push(c->heap, nh, (uint64_t)m->rank << 32 | (uint32_t)pos);
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
        const struct tk_merge_slot *m =
            tk_mergemap_get(&t->merges, tk_pair_key(c->sym[pos], c->sym[nx]));
        if (!m || m->rank != top >> 32) continue; /* stale: this pair has changed since */
        c->sym[pos] = (int32_t)m->id;
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

static void enc_free(struct enc *c) {
    free(c->seg1), free(c->seg2), free(c->pa), free(c->pb), free(c->marks), free(c->pbuf);
    free(c->sym), free(c->nxt), free(c->prv), free(c->heap);
    pcre2_match_data_free(c->md);
    pcre2_match_context_free(c->mctx);
    pcre2_jit_stack_free(c->jstack);
    free(c->pc.slots), free(c->pc.keys), free(c->pc.ids);
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

    struct enc c = {.t = t, .st = TL_OK};
    bool ok = GROW(&c, c.ids, c.cap_ids, len / 3 + 16 + TK_MAX_AFFIX * 2);
    if (ok && t->n_splits) {
        c.md = pcre2_match_data_create(1, NULL);
        if (!c.md) ok = false, c.st = TL_ERR_NOMEM;
    }
    if (ok && len >= 1024) { /* below that, filling the cache costs more than it saves */
        c.pc.slots = calloc(1024, sizeof *c.pc.slots); /* grows with the distinct pieces */
        c.pc.mask = 1023;
    }
    for (int i = 0; ok && add_special && i < t->n_prefix; i++) ok = emit(&c, t->prefix[i]);
    long ns =
        ok ? split_added(&c, &t->trie_raw, (const uint8_t *)text, len, &c.seg1, &c.cap_seg1) : -1;
    ok = ns >= 0;
    for (long i = 0; ok && i < ns; i++) {
        struct seg g = c.seg1[i];
        ok = g.added >= 0 ? emit(&c, t->added[g.added].id)
                          : encode_segment(&c, text + g.s, g.e - g.s);
    }
    for (int i = 0; ok && add_special && i < t->n_suffix; i++) ok = emit(&c, t->suffix[i]);
    enc_free(&c);
    if (!ok) {
        free(c.ids);
        if (c.st == TL_ERR_NOMEM)
            return tl_fail(err, TL_ERR_NOMEM, "tokenizer_encode: out of memory");
        return tl_fail(err, c.st == TL_OK ? TL_ERR_INTERNAL : c.st,
                       "tokenizer_encode: PCRE2 matching failed");
    }
    *ids = c.ids;
    *n_ids = (int)c.n_ids;
    return TL_OK;
}
