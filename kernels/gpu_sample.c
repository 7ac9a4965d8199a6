/* gpu_sample: packs a step's sampling parameters and penalty lists for kern_sample, one upload,
 * one launch, ids back. The workspace (device) and the pinned staging buffer share one layout,
 * rows | penalty entries | ids, so the rows and their entries go up in a single copy. */
#include "gpu_sample.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kern_sample.h"
#include "sampler.h"

#define ALIGN 256
/* Penalty entries one launch holds at least; a longer history only splits the step. */
#define PEN_MIN 65536

struct gpu_sample {
    const struct kern_ctx *kc; /* borrowed */
    int max_rows, vocab, pen_cap;
    size_t off_pen, off_ids, bytes; /* the layout of workspace and staging */
    unsigned char *dev;             /* borrowed workspace */
    float *override;                /* borrowed (max_rows, vocab) */
    unsigned char *host;            /* owned, pinned: same layout */
    uint32_t *counts;               /* owned (vocab): output count per id; all zero between rows */
    uint8_t *seen;    /* owned (vocab): id listed for this row; all zero between rows */
    int32_t *touched; /* owned (vocab): the ids listed for this row */
};

static size_t up(size_t x) {
    return (x + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

static int pen_capacity(int vocab, int max_seq_len) {
    /* a row lists at most min(vocab, its length) distinct ids */
    int per_row = vocab < max_seq_len ? vocab : max_seq_len;
    return per_row > PEN_MIN ? per_row : PEN_MIN;
}

static void layout(int max_rows, int pen_cap, size_t *off_pen, size_t *off_ids, size_t *bytes) {
    *off_pen = up((size_t)max_rows * sizeof(struct kern_sample_row));
    *off_ids = *off_pen + up((size_t)pen_cap * sizeof(struct kern_sample_pen));
    *bytes = *off_ids + up((size_t)max_rows * sizeof(int32_t));
}

size_t gpu_sample_workspace_bytes(int max_rows, int vocab, int max_seq_len) {
    size_t off_pen, off_ids, bytes;
    if (max_rows < 1 || vocab < 1 || max_seq_len < 1) return 0;
    layout(max_rows, pen_capacity(vocab, max_seq_len), &off_pen, &off_ids, &bytes);
    return bytes;
}

enum tl_status gpu_sample_create(const struct kern_ctx *kc, int max_rows, int vocab,
                                 int max_seq_len, void *workspace, float *override,
                                 struct gpu_sample **out, struct tl_err *err) {
    *out = NULL;
    if (max_rows < 1 || vocab < 1 || max_seq_len < 1 || !workspace || !override)
        return tl_fail(err, TL_ERR_INVALID,
                       "gpu_sample: %d rows of %d tokens, sequences of %d, workspace %p, "
                       "override %p",
                       max_rows, vocab, max_seq_len, workspace, (void *) override);
    struct gpu_sample *gs = calloc(1, sizeof *gs);
    if (!gs) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    gs->kc = kc;
    gs->max_rows = max_rows;
    gs->vocab = vocab;
    gs->pen_cap = pen_capacity(vocab, max_seq_len);
    layout(max_rows, gs->pen_cap, &gs->off_pen, &gs->off_ids, &gs->bytes);
    gs->dev = workspace;
    gs->override = override;
    gs->counts = calloc((size_t)vocab, sizeof *gs->counts);
    gs->seen = calloc((size_t)vocab, sizeof *gs->seen);
    gs->touched = malloc((size_t)vocab * sizeof *gs->touched);
    if (!gs->counts || !gs->seen || !gs->touched) {
        gpu_sample_destroy(gs);
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory for the sampler's %d-token scratch",
                       vocab);
    }
    enum tl_status st = kern_host_alloc(kc, gs->bytes, (void **)&gs->host);
    if (st != TL_OK) {
        tl_fail(err, st, "pinned memory for sampling: %s", kern_last_error(kc));
        gpu_sample_destroy(gs);
        return st;
    }
    *out = gs;
    return TL_OK;
}

void gpu_sample_destroy(struct gpu_sample *gs) {
    if (!gs) return;
    kern_host_free(gs->kc, gs->host);
    free(gs->counts);
    free(gs->seen);
    free(gs->touched);
    free(gs);
}

static bool penalised(const struct sampling_params *p) {
    return p->repetition_penalty != 1.0f || p->frequency_penalty != 0.0f ||
           p->presence_penalty != 0.0f;
}

static int mark(struct gpu_sample *gs, int32_t t, int n) {
    if (!gs->seen[t]) {
        gs->seen[t] = 1;
        gs->touched[n++] = t;
    }
    return n;
}

/* The distinct ids engine/sampler.c penalises for q (prompt ids only with the repetition
 * penalty, ids outside the vocabulary ignored), with their output counts, into out; -1 (and
 * nothing written) when more than room. The scratch is left zeroed. */
static int pen_list(struct gpu_sample *gs, const struct op_sample_seq *q, bool do_rep,
                    struct kern_sample_pen *out, int room) {
    const int32_t V = gs->vocab;
    int n = 0;
    if (do_rep)
        for (int i = 0; i < q->n_prompt; i++)
            if (q->prompt[i] >= 0 && q->prompt[i] < V) n = mark(gs, q->prompt[i], n);
    for (int i = 0; i < q->n_output; i++) {
        int32_t t = q->output[i];
        if (t < 0 || t >= V) continue;
        gs->counts[t]++;
        n = mark(gs, t, n);
    }
    const bool fits = n <= room;
    for (int i = 0; i < n; i++) {
        int32_t t = gs->touched[i];
        if (fits) out[i] = (struct kern_sample_pen){t, gs->counts[t]};
        gs->counts[t] = 0;
        gs->seen[t] = 0;
    }
    return fits ? n : -1;
}

enum tl_status gpu_sample_run(struct gpu_sample *gs, enum tl_dtype dt, const void *logits, int n,
                              const struct op_sample_seq *seqs, int32_t *ids, struct tl_err *err) {
    const struct kern_ctx *kc = gs->kc;
    if (n < 0 || n > gs->max_rows)
        return tl_fail(err, TL_ERR_INVALID, "sampling %d rows; this sampler takes 0..%d", n,
                       gs->max_rows);
    for (int i = 0; i < n; i++) {
        const struct op_sample_seq *q = &seqs[i];
        enum tl_status st = sampling_params_validate(q->sp, err);
        if (st != TL_OK) {
            tl_err_prefix(err, "sequence %d", i);
            return st;
        }
        if (!sampler_is_greedy(q->sp) && !(q->u >= 0.0 && q->u < 1.0))
            return tl_fail(err, TL_ERR_INVALID, "sequence %d: uniform %g is outside [0, 1)", i,
                           q->u);
        if ((q->n_prompt > 0 && !q->prompt) || (q->n_output > 0 && !q->output))
            return tl_fail(err, TL_ERR_INVALID, "sequence %d: its history is NULL", i);
    }
    struct kern_sample_row *rows = (struct kern_sample_row *)gs->host;
    struct kern_sample_pen *pen = (struct kern_sample_pen *)(gs->host + gs->off_pen);
    int32_t *h_ids = (int32_t *)(gs->host + gs->off_ids);
    const size_t row_bytes = (size_t)gs->vocab * dtype_size(dt);
    for (int r0 = 0; r0 < n;) {
        /* As many rows as one launch's penalty lists hold (all of them, nearly always). */
        int r1 = r0, n_pen = 0, all_greedy = 1;
        for (; r1 < n; r1++) {
            const struct op_sample_seq *q = &seqs[r1];
            const struct sampling_params *sp = q->sp;
            int cnt = 0;
            if (penalised(sp)) {
                cnt = pen_list(gs, q, sp->repetition_penalty != 1.0f, pen + n_pen,
                               gs->pen_cap - n_pen);
                if (cnt < 0 && r1 == r0)
                    return tl_fail(err, TL_ERR_INVALID,
                                   "sequence %d: its history has more distinct tokens than the "
                                   "sampler was planned for (%d)",
                                   r1, gs->pen_cap);
                if (cnt < 0) break;
            }
            rows[r1 - r0] = (struct kern_sample_row){.u = q->u,
                                                     .temperature = sp->temperature,
                                                     .min_p = sp->min_p,
                                                     .top_p = sp->top_p,
                                                     .top_k = sp->top_k,
                                                     .greedy = sampler_is_greedy(sp),
                                                     .pen_off = n_pen,
                                                     .pen_n = cnt,
                                                     .do_rep = sp->repetition_penalty != 1.0f,
                                                     .rep = sp->repetition_penalty,
                                                     .freq = sp->frequency_penalty,
                                                     .pres = sp->presence_penalty};
            all_greedy &= rows[r1 - r0].greedy;
            n_pen += cnt;
        }
        const int m = r1 - r0;
        size_t up_bytes =
            n_pen ? gs->off_pen + (size_t)n_pen * sizeof *pen : (size_t)m * sizeof *rows;
        enum tl_status st = kern_upload(kc, gs->dev, gs->host, up_bytes);
        if (st == TL_OK)
            st = kern_sample(kc, dt, (const char *)logits + (size_t)r0 * row_bytes, m, gs->vocab,
                             (const struct kern_sample_row *)gs->dev,
                             (const struct kern_sample_pen *)(gs->dev + gs->off_pen), n_pen > 0,
                             all_greedy, gs->override, (int32_t *)(gs->dev + gs->off_ids));
        if (st == TL_OK)
            st = kern_download(kc, h_ids, gs->dev + gs->off_ids, (size_t)m * sizeof *h_ids);
        if (st == TL_OK) st = kern_sync(kc); /* also frees the staging buffer for the next rows */
        if (st != TL_OK) return tl_fail(err, st, "sampling on the GPU: %s", kern_last_error(kc));
        memcpy(ids + r0, h_ids, (size_t)m * sizeof *ids);
        r0 = r1;
    }
    return TL_OK;
}
