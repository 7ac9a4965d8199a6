/* model: binds the Llama/Qwen2 tensor table to safetensors data (borrowed from the mmaps) or
 * to random weights in one owned arena (dummy). Shapes and dtypes are checked here once, so
 * the forward pass never has to. */
#include "model.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetensors.h"

/* Visits every tensor slot of the model with its HF name and expected shape. */
struct slot {
    struct tl_tensor *t;
    char name[96];
    int64_t rows, cols; /* rows 0 = 1-D of cols elements */
    float init_scale;   /* dummy: uniform in +-scale (norms: 1 +- scale) */
    int is_norm;
    int required;
};

static int model_slots(struct model *m, struct slot **out) {
    const struct config *c = &m->cfg;
    int64_t h = c->hidden_size, q = (int64_t)c->n_heads * c->head_dim;
    int64_t kv = (int64_t)c->n_kv_heads * c->head_dim, in = c->intermediate_size;
    int n = 0, cap = 3 + 13 * c->n_layers;
    struct slot *s = calloc((size_t)cap, sizeof *s);
    if (!s) return -1;
#define SLOT(T, ROWS, COLS, SCALE, NORM, REQ, ...)                                                 \
    do {                                                                                           \
        s[n].t = (T);                                                                              \
        snprintf(s[n].name, sizeof s[n].name, __VA_ARGS__);                                        \
        s[n].rows = (ROWS), s[n].cols = (COLS), s[n].init_scale = (SCALE);                         \
        s[n].is_norm = (NORM), s[n].required = (REQ);                                              \
        n++;                                                                                       \
    } while (0)
    SLOT(&m->embed, c->vocab_size, h, 1.0f, 0, 1, "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) {
        struct model_layer *L = &m->layers[l];
        float sh = 1.7f / sqrtf((float)h), si = 1.7f / sqrtf((float)in);
        float sq = 1.7f / sqrtf((float)q);
        SLOT(&L->attn_norm, 0, h, 0.1f, 1, 1, "model.layers.%d.input_layernorm.weight", l);
        SLOT(&L->wq, q, h, sh, 0, 1, "model.layers.%d.self_attn.q_proj.weight", l);
        SLOT(&L->wk, kv, h, sh, 0, 1, "model.layers.%d.self_attn.k_proj.weight", l);
        SLOT(&L->wv, kv, h, sh, 0, 1, "model.layers.%d.self_attn.v_proj.weight", l);
        SLOT(&L->wo, h, q, sq, 0, 1, "model.layers.%d.self_attn.o_proj.weight", l);
        if (c->attention_bias) {
            SLOT(&L->bq, 0, q, 0.1f, 0, 1, "model.layers.%d.self_attn.q_proj.bias", l);
            SLOT(&L->bk, 0, kv, 0.1f, 0, 1, "model.layers.%d.self_attn.k_proj.bias", l);
            SLOT(&L->bv, 0, kv, 0.1f, 0, 1, "model.layers.%d.self_attn.v_proj.bias", l);
        }
        if (c->o_bias) SLOT(&L->bo, 0, h, 0.1f, 0, 1, "model.layers.%d.self_attn.o_proj.bias", l);
        SLOT(&L->mlp_norm, 0, h, 0.1f, 1, 1, "model.layers.%d.post_attention_layernorm.weight", l);
        SLOT(&L->w_gate, in, h, sh, 0, 1, "model.layers.%d.mlp.gate_proj.weight", l);
        SLOT(&L->w_up, in, h, sh, 0, 1, "model.layers.%d.mlp.up_proj.weight", l);
        SLOT(&L->w_down, h, in, si, 0, 1, "model.layers.%d.mlp.down_proj.weight", l);
    }
    SLOT(&m->final_norm, 0, h, 0.1f, 1, 1, "model.norm.weight");
    if (!c->tie_word_embeddings)
        SLOT(&m->lm_head, c->vocab_size, h, 1.7f / sqrtf((float)h), 0, 1, "lm_head.weight");
#undef SLOT
    *out = s;
    return n;
}

static uint64_t slot_elems(const struct slot *s) {
    return (uint64_t)(s->rows ? s->rows : 1) * (uint64_t)s->cols;
}

static enum tl_status bind_file(const struct st_set *st, struct slot *s, struct tl_err *err) {
    const struct st_tensor *t = safetensors_find(st, s->name);
    if (!t) {
        if (!s->required) return TL_OK;
        return tl_fail(err, TL_ERR_FORMAT, "tensor %s is missing from the checkpoint", s->name);
    }
    int ok = s->rows ? (t->ndim == 2 && t->shape[0] == s->rows && t->shape[1] == s->cols)
                     : (t->ndim == 1 && t->shape[0] == s->cols);
    if (!ok) {
        char got[128] = "", want[64];
        int off = 0;
        for (int d = 0; d < t->ndim && off < 100; d++)
            off += snprintf(got + off, sizeof got - (size_t)off, "%s%lld", d ? ", " : "",
                            (long long)t->shape[d]);
        if (s->rows)
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)s->rows, (long long)s->cols);
        else
            snprintf(want, sizeof want, "[%lld]", (long long)s->cols);
        return tl_fail(err, TL_ERR_FORMAT,
                       "%s: tensor %s has shape [%s] but config.json implies %s", t->file, s->name,
                       got, want);
    }
    if (!dtype_is_float_compute(t->dtype))
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "%s: tensor %s has dtype %s; tierlm runs F32, F16 and BF16 weights", t->file,
                       s->name, dtype_name(t->dtype));
    /* The ops read elements through typed pointers: an odd offset would be undefined. */
    if ((uintptr_t)t->data % dtype_size(t->dtype) != 0)
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "%s: tensor %s starts at an offset not aligned to its %zu-byte elements; "
                       "re-save the checkpoint with safetensors",
                       t->file, s->name, dtype_size(t->dtype));
    s->t->dtype = t->dtype;
    s->t->rows = s->rows ? s->rows : 1;
    s->t->cols = s->cols;
    s->t->data = t->data;
    return TL_OK;
}

/* ---- dummy weights: filled in parallel, chunk by chunk, deterministic for a seed ---- */

struct fill_job {
    struct slot *slots;
    int n_slots;
    uint64_t *first_chunk; /* per slot: index of its first chunk */
    uint64_t n_chunks;
    uint64_t seed;
    _Atomic uint64_t next;
    _Atomic uint64_t done_bytes;
};

#define FILL_CHUNK (1u << 20)

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void fill_chunk(struct fill_job *j, uint64_t chunk) {
    int si = 0;
    while (si + 1 < j->n_slots && j->first_chunk[si + 1] <= chunk) si++;
    const struct slot *s = &j->slots[si];
    uint64_t begin = (chunk - j->first_chunk[si]) * FILL_CHUNK, n = slot_elems(s) - begin;
    if (n > FILL_CHUNK) n = FILL_CHUNK;
    uint64_t st = j->seed ^ (chunk * 0x2545f4914f6cdd1dull), r = splitmix64(&st);
    float buf[1024];
    size_t esz = dtype_size(s->t->dtype);
    for (uint64_t i = 0; i < n; i += 1024) {
        uint64_t m = n - i < 1024 ? n - i : 1024;
        for (uint64_t k = 0; k < m; k++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;                  /* xorshift64 */
            float u = (float)(r >> 40) * (2.0f / 16777216.0f) - 1.0f; /* [-1, 1) */
            buf[k] = (s->is_norm ? 1.0f : 0.0f) + s->init_scale * u;
        }
        dtype_from_f32(s->t->dtype, buf, (char *)s->t->data + (begin + i) * esz, m);
    }
    atomic_fetch_add(&j->done_bytes, n * esz);
}

static void *fill_worker(void *arg) {
    struct fill_job *j = arg;
    for (;;) {
        uint64_t c = atomic_fetch_add(&j->next, 1);
        if (c >= j->n_chunks) return NULL;
        fill_chunk(j, c);
    }
}

static enum tl_status fill_dummy(struct model *m, struct slot *slots, int n, enum tl_dtype dt,
                                 const struct model_load_opts *o, struct tl_err *err) {
    uint64_t total = 0;
    for (int i = 0; i < n; i++) total += slot_elems(&slots[i]) * dtype_size(dt);
    m->dummy_arena = aligned_alloc(64, (total + 63) & ~(uint64_t)63);
    if (!m->dummy_arena)
        return tl_fail(err, TL_ERR_NOMEM,
                       "dummy weights need %.2f GiB of host memory, which could not be allocated",
                       (double)total / (1u << 30));
    struct fill_job j = {.slots = slots, .n_slots = n, .seed = o ? o->seed : 0};
    j.first_chunk = calloc((size_t)n, sizeof *j.first_chunk);
    if (!j.first_chunk) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    char *p = m->dummy_arena;
    for (int i = 0; i < n; i++) {
        struct tl_tensor *t = slots[i].t;
        t->dtype = dt;
        t->rows = slots[i].rows ? slots[i].rows : 1;
        t->cols = slots[i].cols;
        t->data = p;
        p += slot_elems(&slots[i]) * dtype_size(dt);
        j.first_chunk[i] = j.n_chunks;
        j.n_chunks += (slot_elems(&slots[i]) + FILL_CHUNK - 1) / FILL_CHUNK;
    }
    int nt = o && o->n_threads > 0 ? o->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nt < 1) nt = 1;
    if (nt > 64) nt = 64;
    pthread_t th[64];
    int started = 0;
    for (int i = 0; i < nt; i++)
        if (pthread_create(&th[i], NULL, fill_worker, &j) == 0) started++;
    if (o && o->progress) {
        while (atomic_load(&j.next) < j.n_chunks) {
            o->progress(o->progress_user, atomic_load(&j.done_bytes), total);
            usleep(200000);
        }
    }
    if (started == 0) fill_worker(&j);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    if (o && o->progress) o->progress(o->progress_user, total, total);
    free(j.first_chunk);
    return TL_OK;
}

static enum tl_status model_build(const struct config *cfg, const char *dir,
                                  const struct model_load_opts *opts, struct model **out,
                                  struct tl_err *err) {
    *out = NULL;
    struct model *m = calloc(1, sizeof *m);
    if (!m) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    m->cfg = *cfg;
    m->tp =
        (struct model_tp){.rank = 0, .world = 1, .vocab_start = 0, .vocab_total = cfg->vocab_size};
    m->layers = calloc((size_t)cfg->n_layers, sizeof *m->layers);
    struct slot *slots = NULL;
    int n = m->layers ? model_slots(m, &slots) : -1;
    if (n < 0) {
        model_free(m);
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    }
    enum tl_status st = TL_OK;
    if (opts && opts->format == MODEL_LOAD_DUMMY) {
        enum tl_dtype dt = opts->dtype == TL_DTYPE_COUNT ? cfg->dtype : opts->dtype;
        if (!dtype_is_float_compute(dt))
            st = tl_fail(err, TL_ERR_INVALID, "dummy weights must be float32, float16 or bfloat16");
        else
            st = fill_dummy(m, slots, n, dt, opts, err);
    } else {
        st = safetensors_open_dir(dir, &m->st, err);
        for (int i = 0; st == TL_OK && i < n; i++) st = bind_file(m->st, &slots[i], err);
    }
    if (st == TL_OK && cfg->tie_word_embeddings) m->lm_head = m->embed;
    for (int i = 0; st == TL_OK && i < n; i++)
        m->weight_bytes += slot_elems(&slots[i]) * dtype_size(slots[i].t->dtype);
    free(slots);
    if (st != TL_OK) {
        model_free(m);
        return st;
    }
    *out = m;
    return TL_OK;
}

enum tl_status model_load(const char *dir, const struct model_load_opts *opts, struct model **out,
                          struct tl_err *err) {
    struct config cfg;
    *out = NULL;
    enum tl_status st = config_load(dir, &cfg, err);
    if (st != TL_OK) return st;
    return model_build(&cfg, dir, opts, out, err);
}

enum tl_status model_create_dummy(const struct config *cfg, const struct model_load_opts *opts,
                                  struct model **out, struct tl_err *err) {
    struct model_load_opts o = opts ? *opts : (struct model_load_opts){.dtype = TL_DTYPE_COUNT};
    o.format = MODEL_LOAD_DUMMY;
    return model_build(cfg, NULL, &o, out, err);
}

void model_free(struct model *m) {
    if (!m) return;
    safetensors_close(m->st);
    free(m->dummy_arena);
    free(m->tp_arena);
    free(m->layers);
    free(m);
}
