/* tp: which sizes split a model evenly, what one rank's config is, and the shard of a loaded
 * model. A shard borrows every slice that is contiguous in the whole model (rows of q/k/v,
 * gate/up, the vocabulary) and copies the strided ones (columns of o_proj and down_proj) into
 * one arena of its own. */
#include "tp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first reason `world` cannot split c, or NULL. */
static const char *refusal(const struct config *c, int world, char *buf, size_t n) {
    if (world < 1) {
        snprintf(buf, n, "tensor parallel size must be at least 1, got %d", world);
        return buf;
    }
    if (world > TP_MAX_WORLD) {
        snprintf(buf, n, "tensor parallel size %d is more than the %d ranks tierlm supports", world,
                 TP_MAX_WORLD);
        return buf;
    }
    if (c->n_heads % world) {
        /* vLLM's words (ModelConfig.verify_with_parallel_config) */
        snprintf(buf, n,
                 "Total number of attention heads (%d) must be divisible by tensor parallel size "
                 "(%d).",
                 c->n_heads, world);
        return buf;
    }
    if (c->n_kv_heads >= world && c->n_kv_heads % world) {
        snprintf(buf, n,
                 "the number of KV heads (num_key_value_heads %d) must be divisible by tensor "
                 "parallel size (%d): vLLM refuses this split too (QKVParallelLinear)",
                 c->n_kv_heads, world);
        return buf;
    }
    if (c->n_kv_heads < world && world % c->n_kv_heads) {
        snprintf(buf, n,
                 "tensor parallel size (%d) must be a multiple of the number of KV heads "
                 "(num_key_value_heads %d), so that each KV head is replicated on the same "
                 "number of GPUs: vLLM refuses this split too (QKVParallelLinear)",
                 world, c->n_kv_heads);
        return buf;
    }
    if (c->intermediate_size % world) {
        snprintf(buf, n,
                 "intermediate_size (%d) must be divisible by tensor parallel size (%d): vLLM "
                 "refuses this split too (MergedColumnParallelLinear)",
                 c->intermediate_size, world);
        return buf;
    }
    return NULL;
}

int tp_valid_sizes(const struct config *c, char *out, size_t n) {
    char why[256];
    int count = 0;
    size_t off = 0;
    if (n) out[0] = 0;
    for (int w = 1; w <= TP_MAX_WORLD; w++) {
        if (refusal(c, w, why, sizeof why)) continue;
        if (off < n) {
            int k = snprintf(out + off, n - off, "%s%d", count ? ", " : "", w);
            if (k > 0) off += (size_t)k;
        }
        count++;
    }
    return count;
}

enum tl_status tp_check(const struct config *c, int world, struct tl_err *err) {
    char why[512], valid[256];
    if (!refusal(c, world, why, sizeof why)) return TL_OK;
    tp_valid_sizes(c, valid, sizeof valid);
    return tl_fail(err, TL_ERR_INVALID,
                   "--tensor-parallel-size %d: %s Sizes that split this model "
                   "(num_attention_heads %d, num_key_value_heads %d, intermediate_size %d): %s",
                   world, why, c->n_heads, c->n_kv_heads, c->intermediate_size, valid);
}

int tp_vocab_part(int vocab, int world) {
    if (world <= 1) return vocab;
    int64_t part = ((int64_t)vocab + world - 1) / world;
    return (int)((part + 63) / 64 * 64);
}

int tp_kv_heads_per_rank(const struct config *c, int world) {
    return c->n_kv_heads >= world ? c->n_kv_heads / world : 1;
}

void tp_rank_config(const struct config *c, int world, int rank, struct config *out) {
    *out = *c;
    if (world <= 1) return;
    out->n_heads = c->n_heads / world;
    out->n_kv_heads = tp_kv_heads_per_rank(c, world);
    out->intermediate_size = c->intermediate_size / world;
    out->vocab_size = tp_vocab_part(c->vocab_size, world);
    out->o_bias = c->o_bias && rank == 0;
}

/* ---------------- the shard ---------------- */

/* The first KV head rank r holds: its share, or with replication the one its q heads use. */
static int kv_first(const struct config *c, int world, int rank) {
    if (c->n_kv_heads >= world) return rank * (c->n_kv_heads / world);
    return rank / (world / c->n_kv_heads);
}

static size_t up64(size_t x) {
    return (x + 63) & ~(size_t)63;
}

static size_t esz(const struct tl_tensor *t) {
    return dtype_size(t->dtype);
}

/* Elements [e0, e0 + n) of a 1-D tensor (a bias): borrowed; absent stays absent. */
static struct tl_tensor elems_of(const struct tl_tensor *t, int64_t e0, int64_t n) {
    struct tl_tensor s = *t;
    if (!t->data) return s;
    s.cols = n;
    s.data = (const char *)t->data + (size_t)e0 * esz(t);
    return s;
}

/* Rows [r0, r0 + n) of a 2-D weight: borrowed. */
static struct tl_tensor rows_of(const struct tl_tensor *t, int64_t r0, int64_t n) {
    struct tl_tensor s = *t;
    s.rows = n;
    s.data = (const char *)t->data + (size_t)r0 * (size_t)t->cols * esz(t);
    return s;
}

/* Columns [c0, c0 + n) of a 2-D weight, copied to *arena (advanced). */
static struct tl_tensor cols_of(const struct tl_tensor *t, int64_t c0, int64_t n, char **arena) {
    struct tl_tensor s = *t;
    size_t es = esz(t), row = (size_t)n * es;
    char *dst = *arena;
    for (int64_t r = 0; r < t->rows; r++)
        memcpy(dst + (size_t)r * row, (const char *)t->data + ((size_t)r * t->cols + c0) * es, row);
    s.cols = n;
    s.data = dst;
    *arena += up64((size_t)t->rows * row);
    return s;
}

/* The vocabulary rows [v0, v0 + part) of table t (vocab real rows): borrowed when all are real,
 * else copied to *arena with zero rows past the real ones. */
static struct tl_tensor vocab_rows(const struct tl_tensor *t, int64_t v0, int64_t part,
                                   int64_t vocab, char **arena) {
    if (v0 + part <= vocab) return rows_of(t, v0, part);
    struct tl_tensor s = *t;
    size_t row = (size_t)t->cols * esz(t);
    int64_t real = vocab > v0 ? vocab - v0 : 0;
    char *dst = *arena;
    if (real > 0) memcpy(dst, (const char *)t->data + (size_t)v0 * row, (size_t)real * row);
    memset(dst + (size_t)real * row, 0, (size_t)(part - real) * row);
    s.rows = part;
    s.data = dst;
    *arena += up64((size_t)part * row);
    return s;
}

static uint64_t tensor_bytes(const struct tl_tensor *t) {
    return t->data ? (uint64_t)t->rows * (uint64_t)t->cols * esz(t) : 0;
}

enum tl_status tp_shard(const struct model *m, int world, int rank, struct model **out,
                        struct tl_err *err) {
    *out = NULL;
    const struct config *c = &m->cfg;
    enum tl_status st = tp_check(c, world, err);
    if (st != TL_OK) return st;
    if (m->tp.world > 1)
        return tl_fail(err, TL_ERR_INVALID, "tp_shard: the model is a shard already");
    if (rank < 0 || rank >= world)
        return tl_fail(err, TL_ERR_INVALID, "tp_shard: rank %d of a world of %d", rank, world);
    struct model *s = calloc(1, sizeof *s);
    if (!s) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    tp_rank_config(c, world, rank, &s->cfg);
    const struct config *sc = &s->cfg;
    int64_t hd = c->head_dim, V = c->vocab_size, part = sc->vocab_size, v0 = (int64_t)rank * part;
    int64_t q0 = (int64_t)rank * sc->n_heads * hd, qn = (int64_t)sc->n_heads * hd;
    int64_t k0 = (int64_t)kv_first(c, world, rank) * hd, kn = (int64_t)sc->n_kv_heads * hd;
    int64_t i0 = (int64_t)rank * sc->intermediate_size, in = sc->intermediate_size;
    s->tp = (struct model_tp){
        .rank = rank, .world = world, .vocab_start = (int)v0, .vocab_total = (int)V};
    s->layers = calloc((size_t)c->n_layers, sizeof *s->layers);

    /* the copied slices: o and down columns of every layer, padded vocabulary rows */
    size_t arena = 0;
    bool pad = v0 + part > V;
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_layer *L = &m->layers[l];
        arena += up64((size_t)L->wo.rows * (size_t)qn * esz(&L->wo));
        arena += up64((size_t)L->w_down.rows * (size_t)in * esz(&L->w_down));
    }
    if (pad) arena += up64((size_t)part * (size_t)m->embed.cols * esz(&m->embed));
    if (pad && !c->tie_word_embeddings)
        arena += up64((size_t)part * (size_t)m->lm_head.cols * esz(&m->lm_head));
    s->tp_arena = aligned_alloc(64, arena ? arena : 64);
    if (!s->layers || !s->tp_arena) {
        model_free(s);
        return tl_fail(err, TL_ERR_NOMEM,
                       "tensor parallel rank %d: %.2f GiB of host memory for its copied slices "
                       "could not be allocated",
                       rank, (double)arena / (1u << 30));
    }
    char *p = s->tp_arena;
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_layer *L = &m->layers[l];
        struct model_layer *S = &s->layers[l];
        S->attn_norm = L->attn_norm;
        S->mlp_norm = L->mlp_norm;
        S->wq = rows_of(&L->wq, q0, qn);
        S->wk = rows_of(&L->wk, k0, kn);
        S->wv = rows_of(&L->wv, k0, kn);
        S->bq = elems_of(&L->bq, q0, qn);
        S->bk = elems_of(&L->bk, k0, kn);
        S->bv = elems_of(&L->bv, k0, kn);
        S->wo = cols_of(&L->wo, q0, qn, &p);
        if (rank == 0) S->bo = L->bo; /* added once, by rank 0, before the sum */
        S->w_gate = rows_of(&L->w_gate, i0, in);
        S->w_up = rows_of(&L->w_up, i0, in);
        S->w_down = cols_of(&L->w_down, i0, in, &p);
    }
    s->final_norm = m->final_norm;
    s->embed = vocab_rows(&m->embed, v0, part, V, &p);
    s->lm_head = c->tie_word_embeddings ? s->embed : vocab_rows(&m->lm_head, v0, part, V, &p);

    s->weight_bytes = tensor_bytes(&s->embed) + tensor_bytes(&s->final_norm) +
                      (c->tie_word_embeddings ? 0 : tensor_bytes(&s->lm_head));
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_layer *S = &s->layers[l];
        const struct tl_tensor *t[] = {&S->attn_norm, &S->wq,   &S->wk,    &S->wv, &S->wo,
                                       &S->bq,        &S->bk,   &S->bv,    &S->bo, &S->mlp_norm,
                                       &S->w_gate,    &S->w_up, &S->w_down};
        for (size_t i = 0; i < sizeof t / sizeof *t; i++) s->weight_bytes += tensor_bytes(t[i]);
    }
    *out = s;
    return TL_OK;
}
