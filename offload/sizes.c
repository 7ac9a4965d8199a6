/* sizes: byte counts of weights, KV, activations and workspaces. Each formula mirrors the code
 * that allocates the bytes (named beside it); tests/test_planner.c checks them by hand and,
 * where CUDA is built, against the kernels' own function. */
#include "sizes.h"

#include <stdint.h>

#include "forward.h"

static size_t up256(size_t x) {
    return (x + 255) & ~(size_t)255;
}

/* The tensors of one layer as model.c declares them: (rows, cols), 0 rows when absent. */
static void layer_tensors(const struct config *c, size_t rows[13], size_t cols[13]) {
    size_t h = (size_t)c->hidden_size, in = (size_t)c->intermediate_size;
    size_t q = (size_t)c->n_heads * (size_t)c->head_dim;
    size_t kv = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    size_t ab = c->attention_bias ? 1 : 0, ob = c->o_bias ? 1 : 0;
    const size_t r[13] = {1, q, kv, kv, h, ab, ab, ab, ob, 1, in, in, h};
    const size_t k[13] = {h, h, h, h, q, q, kv, kv, h, h, h, h, in};
    for (int i = 0; i < 13; i++) rows[i] = r[i], cols[i] = k[i];
}

size_t sizes_layer_bytes(const struct config *c, enum tl_dtype dtype) {
    size_t rows[13], cols[13], total = 0, es = dtype_size(dtype);
    layer_tensors(c, rows, cols);
    for (int i = 0; i < 13; i++) total += up256(rows[i] * cols[i] * es);
    return total;
}

double sizes_layer_matmul_params(const struct config *c) {
    double h = c->hidden_size, in = c->intermediate_size;
    double q = (double)c->n_heads * c->head_dim, kv = (double)c->n_kv_heads * c->head_dim;
    return h * (q + 2 * kv) + q * h + 3 * h * in;
}

size_t sizes_embed_bytes(const struct config *c, enum tl_dtype dtype) {
    return up256((size_t)c->vocab_size * (size_t)c->hidden_size * dtype_size(dtype));
}

size_t sizes_lm_head_bytes(const struct config *c, enum tl_dtype dtype) {
    return sizes_embed_bytes(c, dtype); /* (vocab, hidden) as well */
}

size_t sizes_final_norm_bytes(const struct config *c, enum tl_dtype dtype) {
    return up256((size_t)c->hidden_size * dtype_size(dtype));
}

size_t sizes_model_bytes(const struct config *c, enum tl_dtype dtype) {
    return sizes_embed_bytes(c, dtype) + sizes_final_norm_bytes(c, dtype) +
           (c->tie_word_embeddings ? 0 : sizes_lm_head_bytes(c, dtype)) +
           (size_t)c->n_layers * sizes_layer_bytes(c, dtype);
}

size_t sizes_kv_token_layer_bytes(const struct config *c, enum tl_dtype dtype) {
    return 2 * (size_t)c->n_kv_heads * (size_t)c->head_dim * dtype_size(dtype);
}

size_t sizes_gpu_activation_bytes(const struct config *c, enum tl_dtype dtype, int max_tokens,
                                  int max_seqs) {
    return forward_activation_bytes(c, dtype, max_tokens, max_seqs);
}

/* kern_attention.cu's split plan: SPLIT_TARGET_CTAS 256, SPLIT_MIN_CHUNK 64, DEC_ROWS 16,
 * DEC_BC 64. Decode splits a sequence's keys into chunks while too few CTAs would run. */
enum { SPLIT_TARGET_CTAS = 256, SPLIT_MIN_CHUNK = 64, DEC_ROWS = 16, DEC_BC = 64 };

static int64_t ceil_div(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}

static int n_splits_for(const struct config *c, int n_seqs, int max_seq_len) {
    int64_t row_tiles = ceil_div(c->n_heads / c->n_kv_heads, DEC_ROWS);
    int64_t units = (int64_t)n_seqs * c->n_kv_heads * row_tiles;
    int64_t want = ceil_div(SPLIT_TARGET_CTAS, units);
    int64_t most = ceil_div(max_seq_len, SPLIT_MIN_CHUNK);
    int64_t n = want < most ? want : most;
    if (n < 1) n = 1;
    int64_t chunk = ceil_div(ceil_div(max_seq_len, n), DEC_BC) * DEC_BC;
    return (int)ceil_div(max_seq_len, chunk);
}

size_t sizes_attention_workspace_bytes(const struct config *c, int block_size, int max_tokens,
                                       int max_seq_len) {
    (void)block_size; /* the split plan does not depend on it */
    if (c->n_kv_heads < 1 || c->n_heads < c->n_kv_heads || c->head_dim < 1 || max_tokens < 1 ||
        max_seq_len < 1)
        return 0;
    size_t most = 0;
    int n_max = max_tokens < SPLIT_TARGET_CTAS ? max_tokens : SPLIT_TARGET_CTAS;
    for (int n = 1; n <= n_max; n++) {
        int s = n_splits_for(c, n, max_seq_len);
        if (s <= 1) continue;
        size_t cnt = (size_t)n * (size_t)c->n_heads * (size_t)s;
        size_t need = cnt * (size_t)c->head_dim * sizeof(float) + cnt * 2 * sizeof(float);
        if (need > most) most = need;
    }
    return most;
}

/* gpu_sample.c's layout: rows | penalty entries | ids, each 256-byte aligned; a row's
 * parameters (struct kern_sample_row) take 56 bytes, a penalty entry 8, and one launch holds at
 * least 65,536 entries (test_planner_kernels holds this equal to gpu_sample_workspace_bytes). */
size_t sizes_sample_workspace_bytes(int max_rows, int vocab, int max_model_len) {
    if (max_rows < 1 || vocab < 1 || max_model_len < 1) return 0;
    int per_row = vocab < max_model_len ? vocab : max_model_len;
    int pen_cap = per_row > 65536 ? per_row : 65536;
    return up256((size_t)max_rows * 56) + up256((size_t)pen_cap * 8) +
           up256((size_t)max_rows * sizeof(int32_t));
}

size_t sizes_gpu_workspace_bytes(const struct config *c, int block_size, int max_tokens,
                                 int max_seqs, int max_model_len, bool split) {
    size_t max_blocks = (size_t)ceil_div(max_model_len, block_size);
    size_t attn = sizes_attention_workspace_bytes(c, block_size, max_tokens, max_model_len);
    size_t f32_elems = (size_t)max_seqs * (size_t)c->vocab_size;
    size_t crossing = (size_t)max_tokens * (size_t)c->hidden_size;
    if (split && f32_elems < crossing) f32_elems = crossing;
    size_t meta_elems =
        3 * (size_t)max_tokens + 2 * (size_t)max_seqs + 1 + (size_t)max_seqs * max_blocks;
    return up256(attn) + up256(f32_elems * 4) + up256(meta_elems * 4) +
           2 * up256((size_t)max_seqs * 4) +
           sizes_sample_workspace_bytes(max_seqs, c->vocab_size, max_model_len) +
           up256((size_t)c->head_dim / 2 * 4) + SIZES_CUBLAS_RESERVE;
}
