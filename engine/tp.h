/* tp: tensor parallelism's arithmetic and the sharding of a model, with vLLM's meaning of
 * --tensor-parallel-size N: attention heads and KV heads split across N ranks (column-parallel
 * q/k/v and gate/up, row-parallel o and down, whose partial outputs the forward all-reduces),
 * the embedding and lm_head split by vocabulary rows, norms replicated. Refuses exactly the sizes
 * vLLM refuses. Pure arithmetic and memcpy; nothing here blocks beyond copying slices. */
#ifndef TL_TP_H
#define TL_TP_H

#include "config.h"
#include "model.h"
#include "status.h"

/* Most ranks a group may have (the in-process group's threads, NCCL's peers). */
#define TP_MAX_WORLD 64

/* Checks that config c can be split over `world` ranks, where vLLM checks it:
 * num_attention_heads % world == 0; num_key_value_heads % world == 0 when kv >= world, else
 * world % kv == 0 (each KV head is then replicated on world / kv ranks); intermediate_size %
 * world == 0. On refusal err quotes vLLM's words for the heads and names the valid sizes. */
enum tl_status tp_check(const struct config *c, int world, struct tl_err *err);

/* Writes the sizes tp_check accepts for c (1..TP_MAX_WORLD, ascending) into out as "1, 2, 4, 8";
 * returns how many. */
int tp_valid_sizes(const struct config *c, char *out, size_t n);

/* Rows of the embedding / lm_head one rank holds: ceil(vocab / world) rounded up to a multiple
 * of 64 (vLLM pads the vocabulary to 64 too), so every rank's logits have the same width and
 * an all-gather needs no per-rank counts. Rank r holds ids [r * part, (r + 1) * part); rows
 * at or past vocab are zero padding whose logits are dropped. world 1: vocab itself. */
int tp_vocab_part(int vocab, int world);

/* KV heads each rank holds (num_key_value_heads / world, or 1 when replicated). */
int tp_kv_heads_per_rank(const struct config *c, int world);

/* The config rank `rank` of a valid world runs: n_heads / world, its KV heads,
 * intermediate_size / world, vocab_size = tp_vocab_part, head_dim and the rest unchanged;
 * o_bias only on rank 0 (the row-parallel o_proj adds its bias once, after the reduction).
 * What the planner sizes one GPU by. */
void tp_rank_config(const struct config *c, int world, int rank, struct config *out);

/* Rank `rank`'s shard of whole model m (tp_check must accept world): a struct model whose cfg is
 * tp_rank_config, so the backends run it unchanged, and whose tp field says which vocabulary
 * rows it holds. Memory: q/k/v rows, their biases, gate/up rows, norms and vocabulary rows are
 * borrowed from m (which must outlive the shard); o_proj and down_proj column slices, and
 * vocabulary rows that need padding, are copied into the shard's own tp_arena. Free it with
 * model_free (it frees only what the shard owns). */
enum tl_status tp_shard(const struct model *m, int world, int rank, struct model **out,
                        struct tl_err *err);

#endif
