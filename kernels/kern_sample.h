/* kern_sample: the sampler on the GPU — engine/sampler.c's function (penalties, then greedy or
 * temperature -> min-p -> top-k -> top-p -> inverse-CDF draw) over rows of logits in device
 * memory, one block per row, only the ids written out. Weights come from sampler_exp.h and every
 * float operation is one IEEE operation, as on the CPU, so both samplers see bit-identical
 * weights: greedy picks are identical always, and a draw differs only where u * total lies
 * within summation rounding (double sums in another order, ~1e-15 relative) of a cumulative
 * boundary. No filter sorts the vocabulary: a 2048-bucket histogram of the weights in shared
 * memory finds the bucket where top-k / top-p cut, finer histograms narrow a crowded bucket,
 * and only the few thousand tokens at the cut are sorted.
 *
 * Every pointer is device memory. kern_sample queues one kernel on the context's stream and
 * returns; the ids are there after kern_sync. Callers: kernels/gpu_sample.c (which builds the
 * per-row parameters and penalty lists) and tests/gpu/test_gpu_sample.c. */
#ifndef TL_KERN_SAMPLE_H
#define TL_KERN_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "dtype.h"
#include "kern.h"
#include "status.h"

/* One row's parameters, as sampler_sample takes them (sampling_params validated). */
struct kern_sample_row {
    double u;          /* the uniform of the draw, [0, 1); unused when greedy */
    float temperature; /* > 0 when not greedy; 1 = no division */
    float min_p;       /* [0, 1] */
    float top_p;       /* (0, 1]; 1 = off */
    int32_t top_k;     /* <= 0 = off */
    int32_t greedy;    /* 1: argmax of the penalised logits */
    int32_t pen_off;   /* this row's entries in the penalty array: [pen_off, pen_off + pen_n) */
    int32_t pen_n;
    int32_t do_rep;        /* repetition_penalty != 1: apply it to every entry */
    float rep, freq, pres; /* repetition, frequency, presence penalty */
};

/* One distinct token of a row's history: in the prompt (when do_rep) or the output. */
struct kern_sample_pen {
    int32_t id;     /* 0 <= id < vocab; each at most once per row */
    uint32_t count; /* times in the output (0: prompt only) */
};

/* ids (n) = the sampled token of each row of logits (n, vocab) of dtype dt (F32, F16 or BF16),
 * with rows (n) and pen (device). Rows are read in aligned 16-byte pieces, which may reach up to
 * 15 bytes before the first row and past the last: those bytes must be readable (they are in
 * any kern_alloc buffer, whose start is aligned and whose size is rounded up, and in a buffer's
 * rows after its first). Logits are not written. any_pen: some row has pen_n > 0; then
 * override (n, vocab) fp32 is scratch for the penalised values (only penalised ids are
 * written). all_greedy: every row is greedy (the argmax alone, a lighter kernel).
 * TL_ERR_UNSUPPORTED when the vocabulary needs more shared memory than the device gives a
 * block (over a million tokens on an H100). Queues one kernel and returns. */
enum tl_status kern_sample(const struct kern_ctx *ctx, enum tl_dtype dt, const void *logits, int n,
                           int vocab, const struct kern_sample_row *rows,
                           const struct kern_sample_pen *pen, int any_pen, int all_greedy,
                           float *override, int32_t *ids);

#ifdef __cplusplus
}
#endif

#endif
