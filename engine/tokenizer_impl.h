/* tokenizer_impl: the layout of a loaded tokenizer, shared by tokenizer.c (loading, decoding,
 * the incremental detokenizer), tokenizer_encode.c (the encoding pipeline) and
 * tokenizer_regex.c (pattern translation). Everything here is built once by tokenizer_load and
 * read-only afterwards (but for the atomic scratch slot `spare`), so any number of threads may
 * encode and decode with one tokenizer at the same time. Not a public header. */
#ifndef TL_TOKENIZER_IMPL_H
#define TL_TOKENIZER_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* String -> id, open addressing. A slot holds (hash high bits << 32 | id + 1), 0 = empty; the
 * key itself lives in an arena at off[id], len[id] (given to every call), so a slot is 8 bytes
 * and a miss rarely touches the arena. */
struct tk_strmap {
    uint64_t *slots; /* owned; mask + 1 entries */
    uint64_t mask;
};

/* uint64 key -> uint32 value, open addressing (the trie's edges). */
struct tk_u64slot {
    uint64_t key; /* 0 = empty */
    uint32_t val;
};
struct tk_u64map {
    struct tk_u64slot *slots; /* owned */
    uint64_t mask;
    int shift; /* 64 - log2(capacity): the slot is the top bits of a multiplicative hash */
};

/* (left id, right id) -> merge rank, the BPE merge table; the merged id is result[rank]. A slot
 * packs key and rank in 8 bytes so that the table, read at random per pair, stays half the size
 * (merge lookups are bound by cache misses): ids need 21 bits, ranks 22. */
#define TK_ID_BITS   21
#define TK_RANK_BITS 22
struct tk_mergemap {
    uint64_t *slots;  /* owned; ((left + 1) << 21 | right) << 22 | rank, 0 = empty */
    uint32_t *result; /* owned, (n merges): merged id per rank */
    uint64_t mask;
    int shift;
};
/* Byte trie over added-token contents, for leftmost-longest matching as HF's aho-corasick
 * (MatchKind::LeftmostLongest) does. Node 0 is the root; edges live in one hash keyed by
 * (node << 8 | byte). */
struct tk_trie {
    int32_t *term; /* owned; per node: index into tokenizer.added, or -1 */
    int n_nodes, n_tokens;
    struct tk_u64map edges; /* key = (node << 8 | byte) + 1, val = child */
    bool first[256];        /* bytes that start some token: a cheap filter for the scan */
};

enum tk_added_flag {
    TK_ADDED_SPECIAL = 1,
    TK_ADDED_LSTRIP = 2,
    TK_ADDED_RSTRIP = 4,
    TK_ADDED_SINGLE_WORD = 8,
    TK_ADDED_NORMALIZED = 16,
};

struct tk_added {
    int32_t id;
    uint32_t off, len; /* content, in tokenizer.arena */
    uint32_t flags;    /* enum tk_added_flag */
};

enum tk_norm { TK_NORM_NFC, TK_NORM_NFD, TK_NORM_NFKC, TK_NORM_NFKD };

/* SplitDelimiterBehavior of HF's Split pre-tokenizer. */
enum tk_split_behavior {
    TK_SPLIT_ISOLATED,
    TK_SPLIT_REMOVED,
    TK_SPLIT_MERGED_WITH_PREVIOUS,
    TK_SPLIT_MERGED_WITH_NEXT,
    TK_SPLIT_CONTIGUOUS,
};

/* One splitting step of the pre-tokenizer: a Split, or ByteLevel's own GPT-2 regex. */
struct tk_split {
    pcre2_code *re; /* owned; JIT-compiled */
    enum tk_split_behavior behavior;
    bool invert;
    bool prefix_space; /* ByteLevel add_prefix_space: prepend ' ' to each piece first */
};

#define TK_MAX_NORMS  16
#define TK_MAX_SPLITS 16
#define TK_MAX_AFFIX  8

enum tk_id_flag {
    TK_ID_VALID = 1,   /* some vocabulary or added token has this id */
    TK_ID_SPECIAL = 2, /* dropped by skip_special */
    TK_ID_ADDED = 4,   /* an added token has this id */
};

struct tokenizer {
    int n_ids;                   /* one past the largest id */
    char *arena;                 /* owned; token strings and added contents, NUL-separated */
    uint32_t *tok_off, *tok_len; /* owned, (n_ids): token string of each id in arena */
    uint8_t *dec;                /* owned; decoded bytes of all ids back to back */
    uint32_t *dec_off, *dec_len; /* owned, (n_ids): what each id decodes to (before UTF-8) */
    uint8_t *id_flags;           /* owned, (n_ids): enum tk_id_flag */

    /* Model vocabulary. tok_* above give an added token's content where an id is both. */
    uint32_t *vtok_off, *vtok_len; /* owned, (n_ids): model token strings only (len 0: none) */
    struct tk_strmap vocab;        /* model token string -> id */
    struct tk_strmap raw;          /* model token's decoded bytes -> id (ignore_merges) */
    uint8_t *raw_bytes;            /* owned; the keys of raw, back to back */
    uint32_t *raw_off, *raw_len;   /* owned, (n_ids); NULL unless ignore_merges */
    struct tk_mergemap merges;
    int32_t byte_id[256]; /* model id of each byte's GPT-2 char, -1 when absent */
    bool ignore_merges;
    int32_t unk_id; /* -1: unknown bytes are dropped, as HF does without unk_token */
    bool fuse_unk;

    struct tk_added *added; /* owned, (n_added) */
    int n_added;
    struct tk_strmap added_map; /* content -> id */
    struct tk_trie trie_raw;    /* non-normalized added tokens, matched on the raw text */
    struct tk_trie trie_norm;   /* normalized ones, matched on normalized text */

    enum tk_norm norms[TK_MAX_NORMS];
    int n_norms;
    uint8_t *nfc_inert; /* owned bitmap over code points: NFC never changes or joins them */

    struct tk_split splits[TK_MAX_SPLITS];
    int n_splits;

    int32_t prefix[TK_MAX_AFFIX], suffix[TK_MAX_AFFIX]; /* what add_special adds */
    int n_prefix, n_suffix;
    int32_t bos_id, eos_id;
    bool clean_up; /* tokenizer_config clean_up_tokenization_spaces */

    /* Owned: one idle encoder scratch (buffers, PCRE2 match data and JIT stack, the piece
     * cache), taken by a call and put back after, so back-to-back calls skip the set-up and
     * find the pieces they share already tokenized. The only field that changes after loading;
     * concurrent calls that find it taken make their own. */
    _Atomic(struct enc *) spare;
};

/* Hashing, maps and the trie (tokenizer_encode.c). Init functions return false on OOM; a
 * strmap is sized for n keys up front and never grows. */
uint64_t tk_hash(const void *p, size_t n);
bool tk_strmap_init(struct tk_strmap *m, size_t n);
int32_t tk_strmap_get(const struct tk_strmap *m, const char *arena, const uint32_t *off,
                      const uint32_t *len, const void *key, size_t n);
/* Inserts id, whose key is arena[off[id]..+len[id]); returns the id already holding an equal
 * key (and inserts nothing), else -1. */
int32_t tk_strmap_put(struct tk_strmap *m, const char *arena, const uint32_t *off,
                      const uint32_t *len, int32_t id);
bool tk_u64map_init(struct tk_u64map *m, size_t n);
void tk_u64map_put(struct tk_u64map *m, uint64_t key, uint32_t val);
static inline uint64_t tk_hash64(uint64_t key, int shift) {
    return (key * 0x9E3779B97F4A7C15ull) >> shift;
}
static inline const struct tk_u64slot *tk_u64map_get(const struct tk_u64map *m, uint64_t key) {
    for (uint64_t i = tk_hash64(key, m->shift);; i = (i + 1) & m->mask) {
        const struct tk_u64slot *s = &m->slots[i];
        if (s->key == key) return s;
        if (s->key == 0) return NULL;
    }
}
bool tk_mergemap_init(struct tk_mergemap *m, size_t n_merges);
/* Sets pair -> rank (result[rank] = id), replacing an earlier rank: a later duplicate merge
 * wins, as in HF. */
void tk_mergemap_put(struct tk_mergemap *m, uint64_t pair, uint32_t rank, uint32_t id);
static inline uint64_t tk_pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a + 1) << TK_ID_BITS | (uint32_t)b;
}
/* The rank of merging pair, or -1. */
static inline int64_t tk_merge_rank(const struct tk_mergemap *m, uint64_t pair) {
    for (uint64_t i = tk_hash64(pair, m->shift);; i = (i + 1) & m->mask) {
        uint64_t s = m->slots[i];
        if (s >> TK_RANK_BITS == pair) return (int64_t)(s & ((1u << TK_RANK_BITS) - 1));
        if (s == 0) return -1;
    }
}
/* A trie for tokens of total_bytes bytes in all. */
bool tk_trie_init(struct tk_trie *tr, size_t total_bytes);
void tk_trie_add(struct tk_trie *tr, const char *s, size_t n, int32_t added_index);
void tk_trie_free(struct tk_trie *tr);

/* Frees an encoder scratch (tokenizer_encode.c); NULL is fine. */
struct enc;
void tk_enc_free(struct enc *c);

/* Builds t->nfc_inert (tokenizer_encode.c); false on OOM. */
bool tk_nfc_table_build(struct tokenizer *t);
/* The normalizer chain applied to s[0..n): a malloc'd, NUL-terminated copy in *out (caller
 * frees); false on OOM. */
bool tk_normalize_copy(const struct tokenizer *t, const char *s, size_t n, char **out,
                       size_t *out_n);
/* Compiles a Split pattern (Oniguruma syntax, or a literal string) with PCRE2 UTF + UCP and JIT
 * (tokenizer_regex.c).
 * Unsupported syntax is TL_ERR_UNSUPPORTED quoting the pattern. */
enum tl_status tk_regex_compile(const char *pattern, size_t n, bool literal, pcre2_code **out,
                                struct tl_err *err);

#endif
