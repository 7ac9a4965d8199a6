/* kvcache: the paged KV block manager. It hands out integer block ids with reference counts
 * and keeps each sequence's block table; it never touches KV memory (the backends own that,
 * laid out as (n_layers) x (num_blocks, block_size, n_kv_heads, head_dim) for K and for V).
 * Full blocks can be published under the hash of their token prefix and found again by later
 * sequences (prefix caching); a published block nobody references stays cached until an
 * allocation needs it. Single-threaded: the engine loop owns it. */
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
/* Blocks an allocation can take: truly free ones plus cached blocks nobody references. */
int kvcache_num_free(const struct kvcache *kv);
/* Of those, the cached ones (evicted least recently used first when nothing else is free). */
int kvcache_num_cached_free(const struct kvcache *kv);

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

/* Appends a block the caller already holds a reference to (a prefix-cache hit). */
enum tl_status kvcache_seq_push(struct kv_seq *seq, int32_t block, struct tl_err *err);

/* Returns all of seq's blocks and frees its table; seq is zeroed and reusable. */
void kvcache_seq_release(struct kvcache *kv, struct kv_seq *seq);

/* ---- prefix caching: full blocks found again by the hash of their whole token prefix ---- */

/* Hash of a full block of n tokens following the prefix whose last block hashed to parent
 * (0 for the first block). */
uint64_t kvcache_hash_block(uint64_t parent, const int32_t *tokens, int n);

/* The published block with this hash and these block_size tokens, with a reference added for
 * the caller (taken off the evictable list), or -1. */
int32_t kvcache_lookup(struct kvcache *kv, uint64_t hash, const int32_t *tokens);

/* Makes a full block whose KV is computed findable by (hash, tokens). The caller holds a
 * reference. A block already published, or a hash already present, is left as it is. */
void kvcache_publish(struct kvcache *kv, int32_t block, uint64_t hash, const int32_t *tokens);

/* Drops every published block from the cache (their contents are no longer trusted). */
void kvcache_forget(struct kvcache *kv);

#endif
