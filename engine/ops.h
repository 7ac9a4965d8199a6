/* ops: the small op interface the transformer block is written against (DESIGN.md). cpu/
 * and kernels/ each implement it; the forward driver never touches activation memory itself,
 * it only passes the backend's buffers between ops. Buffers are backend memory (host for the
 * CPU backend, device for CUDA) of dtype ops->act_dtype; byte offsets into them are valid. */
#ifndef TL_OPS_H
#define TL_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "model.h"
#include "sampler.h"
#include "status.h"

/* One sequence's part of a step: its n_new tokens follow n_past tokens already cached. */
struct fwd_seq {
    int n_new;
    int n_past;
    const int32_t *block_table; /* borrowed; covers n_past + n_new tokens */
    int n_blocks;
    int want_logits; /* 1: logits for its last new token */
};

/* A step: the new tokens of every sequence, concatenated sequence by sequence (host memory). */
struct fwd_batch {
    int n_seqs;
    const struct fwd_seq *seqs;
    int n_tokens;
    const int32_t *tokens;    /* (n_tokens) */
    const int32_t *positions; /* (n_tokens): n_past + i within its sequence */
};

/* One row's sampling inputs for the sample op (host memory, borrowed for the call). */
struct op_sample_seq {
    const struct sampling_params *sp; /* validated (sampling_params_validate) */
    double u;              /* sampler_rng_uniform's next value for this token; unused when greedy */
    const int32_t *prompt; /* (n_prompt) for the repetition penalty; ids outside the vocabulary
                            * are ignored, as by sampler_sample */
    int n_prompt;
    const int32_t *output; /* (n_output) tokens generated so far, for all three penalties */
    int n_output;
};

/* A linear layer with its neighbours folded in (ops.matmul_fused). */
enum op_epi {
    OP_EPI_STORE,  /* y[i] = x . w[i]^T (+ bias[i]), as matmul */
    OP_EPI_SILU,   /* w = {gate, up}, no bias: y[0] = silu(x . gate^T) * (x . up^T) */
    OP_EPI_RESADD, /* one weight: y[0] (the residual stream) += x . w^T (+ bias) */
};
struct op_fused_mm {
    const void *x; /* (m, k); with norm_w, the residual stream, used as rmsnorm(x) * norm_w */
    int m;
    const struct tl_tensor *norm_w; /* NULL: x as it is */
    float eps;
    int n_w;
    const struct tl_tensor *const *w;
    const struct tl_tensor *const *bias; /* may be NULL or hold NULLs */
    void *const *y;
    enum op_epi epi;
};

struct ops {
    const char *name;
    void *ctx; /* owned by the backend; freed by its destroy function */
    enum tl_dtype act_dtype;
    /* The last failure's message (ops return a status; details stay in the backend). */
    const char *(*last_error)(void *ctx);

    enum tl_status (*buf_alloc)(void *ctx, size_t bytes, void **out);
    void (*buf_free)(void *ctx, void *buf);
    /* Copies n activations to host fp32 (logits, debug hooks). Blocks until done. */
    enum tl_status (*read_f32)(void *ctx, const void *src, size_t n, float *dst);

    /* Makes the batch (token ids, positions, block tables) current for the ops below. */
    enum tl_status (*begin_step)(void *ctx, const struct fwd_batch *b);
    /* out (n_tokens, hidden) = table[tokens] */
    enum tl_status (*embedding)(void *ctx, const struct tl_tensor *table, void *out);
    /* Optional (tensor parallel): out (n_tokens, hidden) = table[token - row0] for the tokens in
     * [row0, row0 + table->rows), zero for the others: one rank's part of a vocabulary-parallel
     * embedding, which the ranks' sum completes. */
    enum tl_status (*embedding_part)(void *ctx, const struct tl_tensor *table, int32_t row0,
                                     void *out);
    /* For each of n rows: res += add (when add is non-NULL), out = rmsnorm(res) * w. */
    enum tl_status (*rmsnorm)(void *ctx, void *res, const void *add, const struct tl_tensor *w,
                              float eps, int n, void *out);
    /* y[i] (m, w[i]->rows) = x (m, k) . w[i]^T (+ bias[i]) for i < n_w: 1..4 weights with the
     * same k that share one input (q/k/v, gate/up), which a backend may run as one. bias may
     * be NULL or hold NULL entries. */
    enum tl_status (*matmul)(void *ctx, const void *x, int m, int n_w,
                             const struct tl_tensor *const *w, const struct tl_tensor *const *bias,
                             void *const *y);
    /* Rotates q (n_tokens, n_heads, hd) and k (n_tokens, n_kv, hd) in place by position, then
     * writes k and v (n_tokens, n_kv, hd) into layer's paged cache at each token's slot. */
    enum tl_status (*rope_kv_write)(void *ctx, int layer, void *q, void *k, const void *v);
    /* Causal attention of each new token over its sequence's cached tokens 0..position:
     * out (n_tokens, n_heads, hd). */
    enum tl_status (*attention)(void *ctx, int layer, const void *q, void *out);
    /* out (n, dim) = silu(gate) * up */
    enum tl_status (*silu_mul)(void *ctx, const void *gate, const void *up, int n, int dim,
                               void *out);
    /* Optional (NULL on backends without graphs): replay of captured decode steps. Called after
     * begin_step: 0 = run the ops eagerly, 1 = a graph for this step's shape exists (call
     * graph_replay instead of the ops), 2 = capture now (run the ops between
     * graph_capture_begin and graph_capture_end, which also runs them). */
    int (*graph_mode)(void *ctx);
    enum tl_status (*graph_replay)(void *ctx);
    enum tl_status (*graph_capture_begin)(void *ctx);
    enum tl_status (*graph_capture_end)(void *ctx);
    /* out (n, dim) = x[rows[i]] for i < n; rows in host memory. */
    enum tl_status (*gather_rows)(void *ctx, const void *x, int dim, const int32_t *rows, int n,
                                  void *out);
    /* dst (n activations) = src (host fp32), the hidden state coming back from layers another
     * backend ran. src may be reused as soon as it returns. */
    enum tl_status (*write_f32)(void *ctx, const float *src, size_t n, void *dst);
    /* Optional: called around each layer's ops, so a backend that streams a layer's weights can
     * wait for their copy before the layer and reuse the slot after it. */
    enum tl_status (*layer_begin)(void *ctx, int layer);
    enum tl_status (*layer_end)(void *ctx, int layer);
    /* Optional: seconds the device worked on the last step, from its first op to its last (for
     * the "GPU busy" share of a step's wall time). 0 when unknown. */
    double (*step_device_seconds)(void *ctx);

    /* Optional (NULL when absent): matmul with the rmsnorm before it and the silu * up or the
     * residual add after it in one kernel, for steps of at most fused_max_m rows. The same
     * results as the separate ops up to where the norm is rounded. */
    enum tl_status (*matmul_fused)(void *ctx, const struct op_fused_mm *f);
    int fused_max_m;

    /* ---- whole KV blocks to and from host memory (the KV tiers of offload/) ---- */
    /* Bytes of one block's host image: K and V of every layer whose KV this backend keeps, in
     * its own layout (opaque to everyone else). 0 when the backend cannot copy blocks (the ops
     * below are NULL then). */
    size_t kv_block_bytes;
    /* Queues copies of n blocks: dir 0 copies KV block blocks[i] out to host[i], dir 1 copies
     * host[i] into block blocks[i]. A copy out sees the KV as the forward work queued before the
     * call leaves it, and forward work queued after the call waits for it, so the blocks may be
     * given to other sequences at once. A copy in waits for forward work queued before the call
     * (which may still read the blocks' old contents) but is not ordered before later forward
     * work: use the blocks once kv_copy_done reports the ticket. *ticket numbers the batch
     * (increasing from 1). Host buffers stay untouched (in) / unread (out) until then. Does not
     * wait for the copies (CUDA: a stream of their own); the CPU backend copies before
     * returning. */
    enum tl_status (*kv_copy)(void *ctx, int dir, const int32_t *blocks, void *const *host, int n,
                              uint64_t *ticket);
    /* *done = the highest ticket whose copies, and all earlier ones, have finished. wait > 0:
     * blocks until ticket `wait` has. A failed copy is reported here (or by kv_copy). */
    enum tl_status (*kv_copy_done)(void *ctx, uint64_t wait, uint64_t *done);
    /* Optional (NULL: whoever needs checksums computes them on the host images): kv_copy that
     * also checksums each block where it lies, *crc[i] = crc32c(0, image, kv_block_bytes)
     * (offload/crc32c.h) of block i's image as the backend holds it: dir 0 the bytes copied out,
     * dir 1 the bytes that landed. crc[i] is any host memory, written by the time kv_copy_done
     * reports the ticket and kept valid by the caller until then. Ordering as kv_copy. */
    enum tl_status (*kv_copy_crc)(void *ctx, int dir, const int32_t *blocks, void *const *host,
                                  uint32_t *const *crc, int n, uint64_t *ticket);
    /* Makes host memory [p, p + bytes) fast for kv_copy (CUDA: page-locks it). NULL when any
     * memory will do. */
    enum tl_status (*host_register)(void *ctx, void *p, size_t bytes);
    void (*host_unregister)(void *ctx, void *p);
    /* The device's PCI bus id ("0000:3b:00.0") to place host memory on its NUMA node; NULL
     * (op or result) when there is no device. */
    const char *(*pci_bus_id)(void *ctx);
    /* Optional (NULL: the caller samples on the host): ids[i] (host, n) = the token
     * sampler_sample_u would pick from row i of logits (n, vocab) (backend memory, act_dtype,
     * widened to fp32 as read_f32 does) with seqs[i]'s parameters, history and uniform:
     * penalties, then greedy (bit for bit) or temperature -> min-p -> top-k -> top-p -> draw, on
     * bit-identical weights. The CPU backend runs sampler_sample_u itself (exactly its ids); the
     * GPU's draw differs only where u * total falls within summation rounding (~1e-15 relative)
     * of a cumulative boundary. Leaves logits unchanged. Blocks until the ids are on the host. */
    enum tl_status (*sample)(void *ctx, const void *logits, int n, int vocab,
                             const struct op_sample_seq *seqs, int32_t *ids);
};

#endif
