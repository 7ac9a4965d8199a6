/* kvcache: free list of block ids (a stack, so recently freed blocks are reused first while
 * still warm in cache) and per-block reference counts. */
#include "kvcache.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

struct kvcache {
    int num_blocks, block_size;
    int32_t *free_stack; /* (num_blocks) */
    int n_free;
    int32_t *refs; /* (num_blocks) */
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
    kv->free_stack = malloc((size_t)num_blocks * sizeof *kv->free_stack);
    kv->refs = calloc((size_t)num_blocks, sizeof *kv->refs);
    if (!kv->free_stack || !kv->refs) {
        kvcache_destroy(kv);
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    }
    /* Lowest ids on top of the stack. */
    for (int i = 0; i < num_blocks; i++) kv->free_stack[i] = num_blocks - 1 - i;
    kv->n_free = num_blocks;
    *out = kv;
    return TL_OK;
}

void kvcache_destroy(struct kvcache *kv) {
    if (!kv) return;
    free(kv->free_stack);
    free(kv->refs);
    free(kv);
}

int kvcache_block_size(const struct kvcache *kv) {
    return kv->block_size;
}
int kvcache_num_blocks(const struct kvcache *kv) {
    return kv->num_blocks;
}
int kvcache_num_free(const struct kvcache *kv) {
    return kv->n_free;
}

enum tl_status kvcache_alloc(struct kvcache *kv, int32_t *block) {
    if (kv->n_free == 0) return TL_ERR_NOMEM;
    int32_t b = kv->free_stack[--kv->n_free];
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
    if (--kv->refs[block] == 0) kv->free_stack[kv->n_free++] = block;
}

int kvcache_refcount(const struct kvcache *kv, int32_t block) {
    return block >= 0 && block < kv->num_blocks ? kv->refs[block] : 0;
}

int kvcache_blocks_needed(const struct kvcache *kv, const struct kv_seq *seq, int n_tokens) {
    int need = (n_tokens + kv->block_size - 1) / kv->block_size - seq->n_blocks;
    return need > 0 ? need : 0;
}

enum tl_status kvcache_seq_reserve(struct kvcache *kv, struct kv_seq *seq, int n_tokens,
                                   struct tl_err *err) {
    int need = kvcache_blocks_needed(kv, seq, n_tokens);
    if (need > kv->n_free)
        return tl_fail(err, TL_ERR_NOMEM, "KV cache full: %d more blocks needed, %d free", need,
                       kv->n_free);
    if (seq->n_blocks + need > seq->cap_blocks) {
        int cap = seq->cap_blocks ? seq->cap_blocks : 4;
        while (cap < seq->n_blocks + need) cap *= 2;
        int32_t *nb = realloc(seq->blocks, (size_t)cap * sizeof *nb);
        if (!nb) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
        seq->blocks = nb;
        seq->cap_blocks = cap;
    }
    for (int i = 0; i < need; i++) kvcache_alloc(kv, &seq->blocks[seq->n_blocks++]);
    if (n_tokens > seq->n_tokens) seq->n_tokens = n_tokens;
    return TL_OK;
}

void kvcache_seq_release(struct kvcache *kv, struct kv_seq *seq) {
    for (int i = 0; i < seq->n_blocks; i++) kvcache_unref(kv, seq->blocks[i]);
    free(seq->blocks);
    memset(seq, 0, sizeof *seq);
}
