/* kvcache: the paged KV block manager. It hands out integer block ids with reference counts
 * and keeps each sequence's block table; it never touches KV memory (the backends own that,
 * laid out as (n_layers) x (num_blocks, block_size, n_kv_heads, head_dim) for K and for V).
 * Single-threaded: the engine loop owns it. */
#ifndef TL_KVCACHE_H
#define TL_KVCACHE_H

#include <stdint.h>

#include "status.h"

struct kvcache;

/* A sequence's view of the cache: the blocks holding its tokens 0..n_tokens-1, in order. */
struct kv_seq {
    int32_t *blocks; /* owned by the sequence, grown by kvcache_seq_reserve */
    int n_blocks, cap_blocks;
    int n_tokens; /* tokens whose K/V are (or are about to be) in the cache */
};

enum tl_status kvcache_create(int num_blocks, int block_size, struct kvcache **out,
                              struct tl_err *err);
void kvcache_destroy(struct kvcache *kv);

int kvcache_block_size(const struct kvcache *kv);
int kvcache_num_blocks(const struct kvcache *kv);
int kvcache_num_free(const struct kvcache *kv);

/* Takes a free block (refcount 1); TL_ERR_NOMEM when none is left. */
enum tl_status kvcache_alloc(struct kvcache *kv, int32_t *block);
/* Adds a reference (a second sequence sharing the block). */
void kvcache_ref(struct kvcache *kv, int32_t block);
/* Drops a reference; the block is free again at zero. */
void kvcache_unref(struct kvcache *kv, int32_t block);
int kvcache_refcount(const struct kvcache *kv, int32_t block);

/* Blocks that seq needs beyond what it holds to reach n_tokens. */
int kvcache_blocks_needed(const struct kvcache *kv, const struct kv_seq *seq, int n_tokens);

/* Grows seq's block table to cover n_tokens and sets seq->n_tokens. All-or-nothing: on
 * TL_ERR_NOMEM nothing was taken. */
enum tl_status kvcache_seq_reserve(struct kvcache *kv, struct kv_seq *seq, int n_tokens,
                                   struct tl_err *err);

/* Returns all of seq's blocks and frees its table; seq is zeroed and reusable. */
void kvcache_seq_release(struct kvcache *kv, struct kv_seq *seq);

#endif
