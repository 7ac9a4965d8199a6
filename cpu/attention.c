/* attention: work is split over (token, head) pairs. Scores for one pair go to the thread's
 * scratch row, then a max-subtracted softmax and a weighted sum of V, all in fp32. */
#include "attention.h"

#include <math.h>
#include <string.h>

#include "rope.h"

struct rope_args {
    const struct attn_shape *s;
    const struct fwd_batch *b;
    const int32_t *tok_seq;
    const float *inv_freq;
    float *q, *k;
    const float *v;
    float *k_cache, *v_cache;
};

static void rotate(float *x, const float *cs, const float *sn, int half) {
    for (int i = 0; i < half; i++) {
        float a = x[i], b = x[i + half];
        x[i] = a * cs[i] - b * sn[i];
        x[i + half] = b * cs[i] + a * sn[i];
    }
}

static void rope_task(void *arg, int64_t t0, int64_t t1, int tid) {
    (void)tid;
    const struct rope_args *a = arg;
    const struct attn_shape *s = a->s;
    int hd = s->head_dim, half = hd / 2;
    float cs[512], sn[512]; /* head_dim <= 1024 is checked at backend creation */
    size_t kvd = (size_t)s->n_kv_heads * hd;
    for (int64_t t = t0; t < t1; t++) {
        int pos = a->b->positions[t];
        rope_cos_sin(a->inv_freq, half, pos, cs, sn);
        float *qt = a->q + (size_t)t * s->n_heads * hd, *kt = a->k + (size_t)t * kvd;
        for (int h = 0; h < s->n_heads; h++) rotate(qt + (size_t)h * hd, cs, sn, half);
        for (int h = 0; h < s->n_kv_heads; h++) rotate(kt + (size_t)h * hd, cs, sn, half);
        const struct fwd_seq *q = &a->b->seqs[a->tok_seq[t]];
        size_t slot = (size_t)q->block_table[pos / s->block_size] * s->block_size +
                      (size_t)(pos % s->block_size);
        memcpy(a->k_cache + slot * kvd, kt, kvd * sizeof(float));
        memcpy(a->v_cache + slot * kvd, a->v + (size_t)t * kvd, kvd * sizeof(float));
    }
}

void cpu_rope_kv_write(struct pool *pool, const struct attn_shape *s, const struct fwd_batch *b,
                       const int32_t *tok_seq, const float *inv_freq, float *q, float *k,
                       const float *v, float *k_cache, float *v_cache) {
    struct rope_args a = {s, b, tok_seq, inv_freq, q, k, v, k_cache, v_cache};
    pool_parallel_for(pool, b->n_tokens, 1, rope_task, &a);
}

struct attn_args {
    const struct attn_shape *s;
    const struct fwd_batch *b;
    const int32_t *tok_seq;
    const float *q, *k_cache, *v_cache;
    float *out, *scratch;
    int max_ctx;
};

static float dot(const float *a, const float *b, int n) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static void attn_task(void *arg, int64_t i0, int64_t i1, int tid) {
    const struct attn_args *a = arg;
    const struct attn_shape *s = a->s;
    int hd = s->head_dim, group = s->n_heads / s->n_kv_heads, bs = s->block_size;
    size_t kvd = (size_t)s->n_kv_heads * hd;
    float scale = 1.0f / sqrtf((float)hd);
    float *sc = a->scratch + (size_t)tid * (size_t)a->max_ctx;
    for (int64_t i = i0; i < i1; i++) {
        int64_t t = i / s->n_heads;
        int h = (int)(i % s->n_heads), kh = h / group;
        const struct fwd_seq *q = &a->b->seqs[a->tok_seq[t]];
        int n_ctx = a->b->positions[t] + 1; /* causal: itself and everything before */
        const float *qv = a->q + ((size_t)t * s->n_heads + h) * hd;
        float mx = -INFINITY;
        for (int j = 0; j < n_ctx; j++) {
            size_t slot = (size_t)q->block_table[j / bs] * bs + (size_t)(j % bs);
            sc[j] = dot(qv, a->k_cache + slot * kvd + (size_t)kh * hd, hd) * scale;
            if (sc[j] > mx) mx = sc[j];
        }
        float sum = 0.0f;
        for (int j = 0; j < n_ctx; j++) {
            sc[j] = expf(sc[j] - mx);
            sum += sc[j];
        }
        float inv = 1.0f / sum;
        float *o = a->out + ((size_t)t * s->n_heads + h) * hd;
        memset(o, 0, (size_t)hd * sizeof *o);
        for (int j = 0; j < n_ctx; j++) {
            size_t slot = (size_t)q->block_table[j / bs] * bs + (size_t)(j % bs);
            const float *vv = a->v_cache + slot * kvd + (size_t)kh * hd;
            float p = sc[j] * inv;
            for (int d = 0; d < hd; d++) o[d] += p * vv[d];
        }
    }
}

void cpu_attention(struct pool *pool, const struct attn_shape *s, const struct fwd_batch *b,
                   const int32_t *tok_seq, const float *q, const float *k_cache,
                   const float *v_cache, float *out, float *scratch, int max_ctx) {
    struct attn_args a = {s, b, tok_seq, q, k_cache, v_cache, out, scratch, max_ctx};
    pool_parallel_for(pool, (int64_t)b->n_tokens * s->n_heads, 1, attn_task, &a);
}
