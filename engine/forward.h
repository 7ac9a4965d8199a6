/* forward: the transformer block, written once against the op interface (ops.h). It walks
 * the layers for one step of a batch and returns the logits of the sequences that want them.
 * Owns the activation buffers, sized at create for the largest step. Not thread-safe. */
#ifndef TL_FORWARD_H
#define TL_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "ops.h"
#include "sampler.h"
#include "status.h"

struct forward;

/* Called with the residual stream entering layer `layer` (0..n_layers-1) and, with layer ==
 * n_layers, the final normed hidden state, for one chosen token of the step. Debug/tests. */
typedef void (*forward_hidden_hook)(void *user, int layer, const float *hidden, int dim);

/* max_tokens: most tokens one step may carry; max_seqs: most sequences. Borrowed model and
 * ops must outlive the forward. */
enum tl_status forward_create(const struct model *m, const struct ops *ops, int max_tokens,
                              int max_seqs, struct forward **out, struct tl_err *err);
void forward_destroy(struct forward *f);

/* Which backend runs what in a split run: the main backend (usually the GPU, which may stream
 * some of its layers' weights) or the CPU. */
struct fwd_placement {
    const uint8_t *layer_on_cpu; /* (n_layers) 1 = the CPU computes this layer */
    bool embed_on_cpu;           /* the embedding lookup runs on the CPU (table in host RAM) */
    bool head_on_cpu;            /* final norm + lm_head on the CPU */
    /* > 0: steps of at least this many tokens run the CPU's layers on the main backend as
     * guests (it must hold their KV, and fetch their weights in layer_begin), and every run of
     * such a layer writes its new K/V into both backends' caches, so either can run the next
     * step (placement.h: guest_min_tokens). 0: the CPU always runs them. */
    int guest_min_tokens;
};

/* A forward over two backends: layers the placement gives the CPU run on cpu_ops with cpu_m
 * (the host model), the rest on ops with m; the residual stream crosses between them in host
 * fp32. Without cpu_ops / pl it is forward_create. Both backends see every step's batch (each
 * keeps the KV of its own layers under the same block ids). */
enum tl_status forward_create_split(const struct model *m, const struct ops *ops,
                                    const struct model *cpu_m, const struct ops *cpu_ops,
                                    const struct fwd_placement *pl, int max_tokens, int max_seqs,
                                    struct forward **out, struct tl_err *err);

/* Bytes of activation buffers forward_create will ask the backend for (each rounded up to 256
 * bytes), so a backend can plan its memory before the forward exists. */
size_t forward_activation_bytes(const struct config *c, enum tl_dtype act, int max_tokens,
                                int max_seqs);

/* Runs one step. Writes (number of seqs with want_logits, vocab) fp32 logits to `logits`
 * (host), in batch order. Validates token ids and batch shape first. Blocks until done. */
enum tl_status forward_step(struct forward *f, const struct fwd_batch *b, float *logits,
                            struct tl_err *err);

/* Per sequence with want_logits, in batch order: what sampling needs. */
struct fwd_sample {
    const struct sampling_params *sp;
    struct sampler_rng *rng; /* advanced by one uniform per non-greedy token */
    const int32_t *prompt;   /* (n_prompt) for the repetition penalty */
    int n_prompt;
    const int32_t *output; /* (n_output) for all penalties */
    int n_output;
};

/* Runs one step and samples each want_logits sequence's next token into ids (batch order).
 * On a backend with a sample op the logits never leave the device; otherwise the logits come
 * to the host and `host` (a sampler of the model's vocab) samples them, exactly as
 * forward_step + sampler_sample would. Blocks until the ids are known. */
enum tl_status forward_step_sample(struct forward *f, const struct fwd_batch *b,
                                   const struct fwd_sample *smp, struct sampler *host, int32_t *ids,
                                   struct tl_err *err);

/* Gives the forward a KV block of its own for padding decode steps to the sizes a backend
 * replays as graphs (CUDA). The block must stay allocated while the forward lives; without one
 * every step runs op by op. */
void forward_set_pad_block(struct forward *f, int32_t block);

/* Seconds the main backend's device worked on the last step (0 when it cannot tell). */
double forward_device_seconds(const struct forward *f);

/* Host seconds the last step spent in the CPU lane's layers (*cpu_s) and in crossings between
 * lanes (*cross_s: the hidden state's copies, and the wait for the GPU's queued work they
 * include; both 0 without a split placement), in the whole forward_step(_sample) (*step_s), and
 * of that in the final sample or logits read (*tail_s: the wait for the device's last layers
 * and the head). */
void forward_lane_seconds(const struct forward *f, double *cpu_s, double *cross_s, double *step_s,
                          double *tail_s);

/* Fused linear layers on a backend that has them (ops.matmul_fused; the default) or the plain
 * ops only (for measuring what the fusion buys). Set before the first step: a backend keeps
 * the decode graphs it captured. */
void forward_set_fusion(struct forward *f, bool on);

struct tl_collective;

/* Makes f one rank of a tensor-parallel group (tp.h): f's model is rank r's shard, coll rank r's
 * collective (borrowed; it must outlive f). The layers then all-reduce the row-parallel o_proj
 * and down_proj outputs and the vocabulary-parallel embedding, and gather the lm_head's
 * vocabulary parts, so forward_step and forward_step_sample on rank 0 return whole-vocabulary
 * results (sampled on rank 0's host: forward_step_sample needs its host sampler). Rank 0's
 * steps are sent to the other ranks, which run forward_serve. Call before the first step; not
 * with a split placement. */
enum tl_status forward_set_collective(struct forward *f, const struct tl_collective *coll,
                                      struct tl_err *err);

/* Ranks 1..world-1: runs every step rank 0 sends, until the group shuts down (TL_OK) or a step
 * fails (the group is then broken, so rank 0 sees the error too). Blocks for the group's life. */
enum tl_status forward_serve(struct forward *f, struct tl_err *err);

/* Installs a hook that sees the hidden state of token `token` (index in the batch). */
void forward_set_hidden_hook(struct forward *f, forward_hidden_hook hook, void *user, int token);

#endif
