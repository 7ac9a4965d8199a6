/* kvcache: free list of block ids (a stack, so recently freed blocks are reused first while
 * still warm in cache), per-block reference counts, and the prefix cache: full blocks that
 * were published with the hash of their token prefix stay findable after their last reference
 * goes, in an LRU list, until a fresh allocation needs them (uncached free blocks go first). */
#include "kvcache.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

struct kvcache {
    int num_blocks, block_size;
    int32_t *free_stack; /* (num_blocks) free blocks holding nothing worth keeping */
    int n_free;
    int32_t *refs; /* (num_blocks) */
    /* prefix cache */
    uint64_t *hash;    /* (num_blocks) valid where cached[] */
    uint8_t *cached;   /* (num_blocks) 1: published, in the table */
    int32_t *tokens;   /* (num_blocks, block_size) a published block's tokens */
    int32_t *lru_prev; /* (num_blocks) evictable list: refs == 0 && cached, oldest at head */
    int32_t *lru_next;
    int32_t lru_head, lru_tail;
    int n_evictable;
    int32_t *table; /* (table_cap) open addressing by hash: block id or -1 */
    int table_cap;  /* power of two >= 2 * num_blocks */
};

enum tl_status kvcache_create(int num_blocks, int block_size, struct kvcache **out,
                              struct tl_err *err) {
    *out = NULL;
    if (num_blocks <= 0 || block_size <= 0)
        return tl_fail(err, TL_ERR_INVALID,
                       "KV cache needs at least one block of one token (got %d blocks of %d)",
                       num_blocks, block_size);
    struct kvcache *kv = calloc(1, sizeof *kv);
    if (!kv) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    kv->num_blocks = num_blocks;
    kv->block_size = block_size;
    kv->table_cap = 16;
    while (kv->table_cap < 2 * num_blocks) kv->table_cap *= 2;
    size_t nb = (size_t)num_blocks;
    kv->free_stack = malloc(nb * sizeof *kv->free_stack);
    kv->refs = calloc(nb, sizeof *kv->refs);
    kv->hash = calloc(nb, sizeof *kv->hash);
    kv->cached = calloc(nb, 1);
    kv->tokens = malloc(nb * (size_t)block_size * sizeof *kv->tokens);
    kv->lru_prev = malloc(nb * sizeof *kv->lru_prev);
    kv->lru_next = malloc(nb * sizeof *kv->lru_next);
    kv->table = malloc((size_t)kv->table_cap * sizeof *kv->table);
    if (!kv->free_stack || !kv->refs || !kv->hash || !kv->cached || !kv->tokens || !kv->lru_prev ||
        !kv->lru_next || !kv->table) {
        kvcache_destroy(kv);
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory for %d KV blocks", num_blocks);
    }
    /* Lowest ids on top of the stack. */
    for (int i = 0; i < num_blocks; i++) kv->free_stack[i] = num_blocks - 1 - i;
    kv->n_free = num_blocks;
    kv->lru_head = kv->lru_tail = -1;
    for (int i = 0; i < kv->table_cap; i++) kv->table[i] = -1;
    *out = kv;
    return TL_OK;
}

void kvcache_destroy(struct kvcache *kv) {
    if (!kv) return;
    free(kv->free_stack);
    free(kv->refs);
    free(kv->hash);
    free(kv->cached);
    free(kv->tokens);
    free(kv->lru_prev);
    free(kv->lru_next);
    free(kv->table);
    free(kv);
}

int kvcache_block_size(const struct kvcache *kv) {
    return kv->block_size;
}
int kvcache_num_blocks(const struct kvcache *kv) {
    return kv->num_blocks;
}
int kvcache_num_free(const struct kvcache *kv) {
    return kv->n_free + kv->n_evictable;
}
int kvcache_num_cached_free(const struct kvcache *kv) {
    return kv->n_evictable;
}

/* ---- the hash table (linear probing, backward-shift deletion) ---- */

static int table_slot(const struct kvcache *kv, uint64_t h) {
    return (int)(h & (uint64_t)(kv->table_cap - 1));
}

static void table_insert(struct kvcache *kv, int32_t b) {
    int i = table_slot(kv, kv->hash[b]);
    while (kv->table[i] >= 0) i = (i + 1) & (kv->table_cap - 1);
    kv->table[i] = b;
}

static void table_remove(struct kvcache *kv, int32_t b) {
    int mask = kv->table_cap - 1;
    int i = table_slot(kv, kv->hash[b]);
    while (kv->table[i] != b) {
        assert(kv->table[i] >= 0);
        i = (i + 1) & mask;
    }
    kv->table[i] = -1;
    /* Shift later entries of the run back so every entry stays reachable from its home slot. */
    for (int j = (i + 1) & mask; kv->table[j] >= 0; j = (j + 1) & mask) {
        int home = table_slot(kv, kv->hash[kv->table[j]]);
        /* entry j may move to the hole i when i lies cyclically in [home, j) */
        int dist_hole = (i - home) & mask, dist_j = (j - home) & mask;
        if (dist_hole < dist_j) {
            kv->table[i] = kv->table[j];
            kv->table[j] = -1;
            i = j;
        }
    }
}

static int32_t table_find(const struct kvcache *kv, uint64_t h, const int32_t *tokens) {
    int mask = kv->table_cap - 1;
    for (int i = table_slot(kv, h); kv->table[i] >= 0; i = (i + 1) & mask) {
        int32_t b = kv->table[i];
        if (kv->hash[b] == h && !memcmp(kv->tokens + (size_t)b * (size_t)kv->block_size, tokens,
                                        (size_t)kv->block_size * sizeof *tokens))
            return b;
    }
    return -1;
}

/* ---- the evictable list ---- */

static void lru_unlink(struct kvcache *kv, int32_t b) {
    int32_t p = kv->lru_prev[b], n = kv->lru_next[b];
    if (p >= 0)
        kv->lru_next[p] = n;
    else
        kv->lru_head = n;
    if (n >= 0)
        kv->lru_prev[n] = p;
    else
        kv->lru_tail = p;
    kv->n_evictable--;
}

static void lru_push_tail(struct kvcache *kv, int32_t b) {
    kv->lru_prev[b] = kv->lru_tail;
    kv->lru_next[b] = -1;
    if (kv->lru_tail >= 0)
        kv->lru_next[kv->lru_tail] = b;
    else
        kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_evictable++;
}

/* ---- blocks ---- */

enum tl_status kvcache_alloc(struct kvcache *kv, int32_t *block) {
    int32_t b;
    if (kv->n_free > 0) {
        b = kv->free_stack[--kv->n_free];
    } else if (kv->n_evictable > 0) {
        b = kv->lru_head; /* the least recently used cached block gives up its contents */
        lru_unlink(kv, b);
        table_remove(kv, b);
        kv->cached[b] = 0;
    } else {
        return TL_ERR_NOMEM;
    }
    assert(kv->refs[b] == 0);
    kv->refs[b] = 1;
    *block = b;
    return TL_OK;
}

void kvcache_ref(struct kvcache *kv, int32_t block) {
    assert(block >= 0 && block < kv->num_blocks && kv->refs[block] > 0);
    kv->refs[block]++;
}

void kvcache_unref(struct kvcache *kv, int32_t block) {
    assert(block >= 0 && block < kv->num_blocks && kv->refs[block] > 0);
    if (--kv->refs[block] > 0) return;
    if (kv->cached[block])
        lru_push_tail(kv, block);
    else
        kv->free_stack[kv->n_free++] = block;
}

int kvcache_refcount(const struct kvcache *kv, int32_t block) {
    return block >= 0 && block < kv->num_blocks ? kv->refs[block] : 0;
}

/* ---- prefix cache ---- */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

uint64_t kvcache_hash_block(uint64_t parent, const int32_t *tokens, int n) {
    uint64_t h = mix64(parent + 0x9e3779b97f4a7c15ull);
    for (int i = 0; i < n; i++)
        h = mix64(h ^ ((uint64_t)(uint32_t)tokens[i] + 0x632be59bd9b4e019ull));
    return h;
}

int32_t kvcache_lookup(struct kvcache *kv, uint64_t hash, const int32_t *tokens) {
    int32_t b = table_find(kv, hash, tokens);
    if (b < 0) return -1;
    if (kv->refs[b] == 0) lru_unlink(kv, b);
    kv->refs[b]++;
    return b;
}

void kvcache_publish(struct kvcache *kv, int32_t block, uint64_t hash, const int32_t *tokens) {
    assert(block >= 0 && block < kv->num_blocks && kv->refs[block] > 0);
    if (kv->cached[block] || table_find(kv, hash, tokens) >= 0) return;
    kv->hash[block] = hash;
    memcpy(kv->tokens + (size_t)block * (size_t)kv->block_size, tokens,
           (size_t)kv->block_size * sizeof *tokens);
    kv->cached[block] = 1;
    table_insert(kv, block);
}

void kvcache_forget(struct kvcache *kv) {
    for (int b = 0; b < kv->num_blocks; b++) {
        if (!kv->cached[b]) continue;
        if (kv->refs[b] == 0) {
            lru_unlink(kv, b);
            kv->free_stack[kv->n_free++] = b;
        }
        kv->cached[b] = 0;
    }
    for (int i = 0; i < kv->table_cap; i++) kv->table[i] = -1;
}

/* ---- sequences ---- */

int kvcache_blocks_needed(const struct kvcache *kv, const struct kv_seq *seq, int n_tokens) {
    int need = (n_tokens + kv->block_size - 1) / kv->block_size - seq->n_blocks;
    return need > 0 ? need : 0;
}

static enum tl_status seq_grow(struct kv_seq *seq, int n_blocks, struct tl_err *err) {
    if (n_blocks <= seq->cap_blocks) return TL_OK;
    int cap = seq->cap_blocks ? seq->cap_blocks : 4;
    while (cap < n_blocks) cap *= 2;
    int32_t *nb = realloc(seq->blocks, (size_t)cap * sizeof *nb);
    if (!nb) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    seq->blocks = nb;
    seq->cap_blocks = cap;
    return TL_OK;
}

enum tl_status kvcache_seq_reserve(struct kvcache *kv, struct kv_seq *seq, int n_tokens,
                                   struct tl_err *err) {
    int need = kvcache_blocks_needed(kv, seq, n_tokens);
    if (need > kvcache_num_free(kv))
        return tl_fail(err, TL_ERR_NOMEM, "KV cache full: %d more blocks needed, %d free", need,
                       kvcache_num_free(kv));
    enum tl_status st = seq_grow(seq, seq->n_blocks + need, err);
    if (st != TL_OK) return st;
    for (int i = 0; i < need; i++) kvcache_alloc(kv, &seq->blocks[seq->n_blocks++]);
    if (n_tokens > seq->n_tokens) seq->n_tokens = n_tokens;
    return TL_OK;
}

enum tl_status kvcache_seq_push(struct kv_seq *seq, int32_t block, struct tl_err *err) {
    enum tl_status st = seq_grow(seq, seq->n_blocks + 1, err);
    if (st != TL_OK) return st;
    seq->blocks[seq->n_blocks++] = block;
    return TL_OK;
}

void kvcache_seq_release(struct kvcache *kv, struct kv_seq *seq) {
    /* Last blocks first, so the evictable list drops a prefix's tail before its head. */
    for (int i = seq->n_blocks - 1; i >= 0; i--) kvcache_unref(kv, seq->blocks[i]);
    free(seq->blocks);
    memset(seq, 0, sizeof *seq);
}
