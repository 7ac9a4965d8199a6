/* model: the tensor table of a Llama/Qwen2 checkpoint. Loads weights from safetensors
 * (borrowed from read-only mmaps, never copied) or makes random ones of the config's shape
 * (--load-format dummy, owned). Checks every tensor the architecture needs is present with
 * the right shape and a compute dtype before anything runs. */
#ifndef TL_MODEL_H
#define TL_MODEL_H

#include <stdint.h>

#include "config.h"
#include "dtype.h"
#include "status.h"

/* A 2-D row-major weight (rows = output features) or a 1-D vector (rows = 1). */
struct tl_tensor {
    enum tl_dtype dtype;
    int64_t rows, cols;
    const void *data; /* borrowed from the model's storage; NULL for an absent optional tensor */
};

struct model_layer {
    struct tl_tensor attn_norm; /* (hidden) */
    struct tl_tensor wq, wk, wv,
        wo; /* (n_heads*hd, hidden), (n_kv*hd, hidden) x2, (hidden, n_heads*hd) */
    struct tl_tensor bq, bk, bv, bo;       /* biases, data NULL when the config has none */
    struct tl_tensor mlp_norm;             /* (hidden) */
    struct tl_tensor w_gate, w_up, w_down; /* (inter, hidden) x2, (hidden, inter) */
};

enum model_load_format {
    MODEL_LOAD_AUTO = 0, /* safetensors */
    MODEL_LOAD_SAFETENSORS,
    MODEL_LOAD_DUMMY, /* random weights, no files needed besides config.json */
};

struct model_load_opts {
    enum model_load_format format;
    enum tl_dtype dtype; /* dummy: dtype of the random weights; TL_DTYPE_COUNT = the config's */
    uint64_t seed;       /* dummy: random seed */
    int n_threads;       /* dummy: threads filling random weights (0 = all cores) */
    /* Called during long loads with done/total bytes; may be NULL. */
    void (*progress)(void *user, uint64_t done_bytes, uint64_t total_bytes);
    void *progress_user;
};

/* Which part of the whole model a struct model holds (tp.h). A whole model: rank 0 of world 1,
 * vocab_start 0, vocab_total = cfg.vocab_size. A tensor-parallel shard: cfg holds this rank's
 * head counts, intermediate size and vocabulary rows (cfg.vocab_size = the rows it holds, some
 * of them padding), which are ids vocab_start.. of the vocab_total the model really has. */
struct model_tp {
    int rank, world;
    int vocab_start, vocab_total;
};

struct model {
    struct config cfg;
    struct model_tp tp;
    struct tl_tensor embed;      /* (vocab, hidden) */
    struct tl_tensor final_norm; /* (hidden) */
    struct tl_tensor lm_head;    /* (vocab, hidden); same data as embed when tied */
    struct model_layer *layers;  /* owned, cfg.n_layers entries */
    uint64_t weight_bytes;       /* total bytes of distinct weights */
    struct st_set *st;           /* owned when loaded from files */
    void *dummy_arena;           /* owned when dummy */
    void *tp_arena;              /* owned by a shard: the slices it had to copy (tp.h) */
};

/* Loads DIR (config.json plus weights unless dummy). On failure *out is NULL and err names
 * the file and tensor at fault. Blocks while reading; the caller frees with model_free. */
enum tl_status model_load(const char *dir, const struct model_load_opts *opts, struct model **out,
                          struct tl_err *err);

/* Builds a dummy model straight from a config (no directory needed). */
enum tl_status model_create_dummy(const struct config *cfg, const struct model_load_opts *opts,
                                  struct model **out, struct tl_err *err);

void model_free(struct model *m);

#endif
