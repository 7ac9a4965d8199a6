/* test_gpu_attention: kern_rope_kv_write + kern_attention (kernels/kern_attention.h) against
 * cpu_rope_kv_write + cpu_attention (cpu/attention.h) on fresh random inputs, then timings.
 *
 * Each case is a batch of sequences (n_past cached tokens, n_new new ones): pure decode, prefill
 * chunks with and without a cached prefix, and mixes, over GQA ratios 1..20, head_dim 32..256,
 * block sizes 8..32, with shuffled (non-contiguous) block ids, in BF16 and F16. Inputs are drawn
 * in fp32 and rounded to the dtype; the CPU reference runs on those rounded values widened to
 * fp32, with its own token-major fp32 cache built from the same cached K/V. Checks:
 *   - out, and q and k after RoPE: relative L2 error ||gpu - cpu|| / ||cpu|| within the dtype's
 *     bound below; NaN/Inf fails at once (outputs are poisoned with NaN before each run);
 *   - the GPU cache, bit for bit: every new token's slot holds exactly its rotated k (as the GPU
 *     returned it) and its v; every other slot is unchanged. Slots no sequence owns (past each
 *     sequence's end, spare blocks) hold NaN, so attention that reads them fails;
 *   - 256 bytes of sentinel before and after every GPU buffer (inputs too) are intact;
 *   - block-table entries past a sequence's blocks are -1, so reading one faults or corrupts.
 *
 * Tolerances (relative L2). The reference differs from the GPU only by roundings to the dtype
 * (unit roundoff u = 2^-9 for BF16, 2^-12 for F16), each a random relative error of about
 * u / sqrt(3) per element: q and k after RoPE are stored in the dtype (the CPU keeps fp32), so a
 * score moves by about u * sqrt(2 E[q^2] E[k^2]) ~ 1.4 u with the scales used here (q in +-3, k in
 * +-1), which perturbs each softmax weight by that relative amount; P is rounded to the dtype
 * before the P V product (~0.6 u); the output is rounded once (~0.6 u). Out is a weighted mean of
 * random V rows, and each of these relative errors carries through to it at about its own size,
 * so the total is near 1.6 u: ~3e-3 for BF16 and ~4e-4 for F16, under the bounds 1e-2 and 2e-3
 * with margin; q and k after RoPE carry only the output rounding (~0.6 u). Indexing, masking or
 * merging bugs give errors near 1. A breach is investigated, never widened away.
 *
 * Then times kern_attention for the Qwen2-14B shape (40 heads, 8 kv heads, head_dim 128, block
 * 16, BF16): decode at batch 1 (1k, 8k, 32k context) and 64 (640), prefill of 1024 tokens, with
 * CUDA events on the context's stream, 3 warm-ups, median of 20, rotating over several disjoint
 * block sets so small caches don't sit in L2; decode is reported as KV bytes read per second
 * against a 1 GiB device-to-device copy (bytes read + written) of the same run, prefill as
 * causal TFLOP/s, both from the GPU time per call in a replayed CUDA graph (the time of a lone
 * call, host launch gaps included, is printed beside it). Exit 0 pass, 1 fail, 77 skip (no
 * GPU). TL_TEST_SEED=N repeats a run; TL_TEST_NO_BENCH=1 skips the timings;
 * TL_TEST_BENCH_ONLY=N runs timing N alone (for a profiler); TL_TEST_CASE=N runs case N alone. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "dtype.h"
#include "gpu_harness.h"
#include "kern.h"
#include "kern_attention.h"

#define TOL_BF16 1e-2
#define TOL_F16  2e-3

/* ---------------- random inputs ---------------- */

static void shuffle(int32_t *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)urand((uint32_t)i + 1);
        int32_t t = a[i];
        a[i] = a[j], a[j] = t;
    }
}

/* ---------------- batches ---------------- */

/* One step's batch in host memory, in both forms: the kern_batch arrays and the fwd_batch the
 * CPU reference takes. Block ids come from `ids` in order (shuffled by the caller). */
struct hbatch {
    int n_seqs, n_tokens, max_blocks, max_seq_len, max_new, blocks_used;
    int32_t *positions, *tok_seq, *seq_start, *seq_len, *block_tables;
    struct fwd_seq *seqs;
    struct fwd_batch fb;
};

static void hbatch_free(struct hbatch *h) {
    free(h->positions), free(h->tok_seq), free(h->seq_start), free(h->seq_len);
    free(h->block_tables), free(h->seqs);
    memset(h, 0, sizeof *h);
}

static bool hbatch_build(struct hbatch *h, int n_seqs, const int *n_past, const int *n_new, int bs,
                         const int32_t *ids) {
    memset(h, 0, sizeof *h);
    h->n_seqs = n_seqs;
    for (int i = 0; i < n_seqs; i++) {
        int len = n_past[i] + n_new[i], nb = (len + bs - 1) / bs;
        h->n_tokens += n_new[i];
        if (len > h->max_seq_len) h->max_seq_len = len;
        if (n_new[i] > h->max_new) h->max_new = n_new[i];
        if (nb + 1 > h->max_blocks) h->max_blocks = nb + 1; /* one -1 entry past every table */
    }
    h->positions = malloc((size_t)h->n_tokens * sizeof(int32_t));
    h->tok_seq = malloc((size_t)h->n_tokens * sizeof(int32_t));
    h->seq_start = malloc((size_t)(n_seqs + 1) * sizeof(int32_t));
    h->seq_len = malloc((size_t)n_seqs * sizeof(int32_t));
    h->block_tables = malloc((size_t)n_seqs * h->max_blocks * sizeof(int32_t));
    h->seqs = calloc((size_t)n_seqs, sizeof *h->seqs);
    if (!h->positions || !h->tok_seq || !h->seq_start || !h->seq_len || !h->block_tables ||
        !h->seqs) {
        hbatch_free(h);
        return false;
    }
    int tok = 0;
    for (int i = 0; i < n_seqs; i++) {
        int len = n_past[i] + n_new[i], nb = (len + bs - 1) / bs;
        int32_t *bt = h->block_tables + (size_t)i * h->max_blocks;
        h->seq_start[i] = tok;
        h->seq_len[i] = len;
        for (int j = 0; j < h->max_blocks; j++) bt[j] = j < nb ? ids[h->blocks_used + j] : -1;
        h->blocks_used += nb;
        for (int j = 0; j < n_new[i]; j++, tok++) {
            h->positions[tok] = n_past[i] + j;
            h->tok_seq[tok] = i;
        }
        h->seqs[i] = (struct fwd_seq){n_new[i], n_past[i], bt, nb, 0};
    }
    h->seq_start[n_seqs] = tok;
    h->fb = (struct fwd_batch){n_seqs, h->seqs, h->n_tokens, NULL, h->positions};
    return true;
}

/* HF's default inv_freq = 1 / theta^(2i / hd), formed in fp32 as engine/rope.c does. */
static void make_inv_freq(float *inv_freq, int hd, double theta) {
    for (int i = 0; i < hd / 2; i++)
        inv_freq[i] = (float)(1.0 / pow(theta, (double)((float)(2 * i) / (float)hd)));
}

/* After a failure: the relative error of each sequence's output (first few over tol). */
static void report_seqs(const struct hbatch *hb, const int *n_past, enum tl_dtype dt,
                        const uint16_t *got16, const float *ref, size_t row, double tol) {
    int shown = 0;
    for (int s = 0; s < hb->n_seqs && shown < 6; s++) {
        double num = 0, den = 0;
        size_t i0 = (size_t)hb->seq_start[s] * row, i1 = (size_t)hb->seq_start[s + 1] * row;
        for (size_t i = i0; i < i1; i++) {
            float g;
            dtype_to_f32(dt, &got16[i], &g, 1);
            num += ((double)g - ref[i]) * ((double)g - ref[i]);
            den += (double)ref[i] * ref[i];
        }
        double err = den > 0 ? sqrt(num / den) : sqrt(num);
        if (!(err <= tol)) {
            fprintf(stderr, "    seq %d (n_past %d, n_new %d): out error %.3e\n", s, n_past[s],
                    hb->seq_start[s + 1] - hb->seq_start[s], err);
            shown++;
        }
    }
}

/* ---------------- correctness cases ---------------- */

#define MAX_SEQS 8

struct seq_spec {
    int n_past, n_new;
};

struct acase {
    const char *name;
    int n_heads, n_kv, hd, bs;
    int n_seqs;
    struct seq_spec seqs[MAX_SEQS];
    int n_rand, rand_max; /* plus n_rand decode sequences of 1..rand_max tokens */
};

static const struct acase cases[] = {
    {"decode 6 lens",
     40,
     8,
     128,
     16,
     6,
     {{0, 1}, {14, 1}, {15, 1}, {16, 1}, {999, 1}, {4096, 1}},
     0,
     0},
    {"decode 64 seqs", 32, 4, 128, 16, 0, {{0, 0}}, 64, 1500},
    {"decode 1 seq", 40, 8, 128, 16, 1, {{4096, 1}}, 0, 0},
    {"decode MHA", 8, 8, 64, 16, 4, {{0, 1}, {32, 1}, {1023, 1}, {4096, 1}}, 0, 0},
    {"decode GQA5", 10, 2, 64, 16, 5, {{16, 1}, {2, 1}, {700, 1}, {63, 1}, {64, 1}}, 0, 0},
    {"prefill", 10, 2, 128, 16, 4, {{0, 1}, {0, 7}, {0, 64}, {0, 300}}, 0, 0},
    {"prefill+prefix", 10, 2, 128, 16, 4, {{100, 1}, {33, 7}, {512, 64}, {500, 300}}, 0, 0},
    {"prefill MHA", 4, 4, 64, 16, 3, {{0, 300}, {17, 64}, {1000, 7}}, 0, 0},
    {"prefill GQA8", 16, 2, 64, 16, 3, {{0, 129}, {15, 2}, {40, 65}}, 0, 0},
    {"prefill 1 seq", 8, 1, 128, 16, 1, {{0, 300}}, 0, 0},
    {"mixed GQA8",
     16,
     2,
     128,
     16,
     6,
     {{999, 1}, {0, 64}, {16, 1}, {200, 300}, {4096, 1}, {17, 7}},
     0,
     0},
    {"mixed GQA5", 40, 8, 128, 16, 4, {{4096, 1}, {20, 7}, {300, 1}, {0, 33}}, 0, 0},
    {"mixed GQA5 bs32", 10, 2, 64, 32, 5, {{0, 7}, {1000, 1}, {31, 1}, {64, 64}, {5, 1}}, 0, 0},
    {"mixed MHA", 4, 4, 128, 16, 4, {{0, 300}, {50, 7}, {2000, 1}, {15, 1}}, 0, 0},
    {"mixed GQA20", 20, 1, 64, 16, 3, {{500, 1}, {0, 40}, {30, 1}}, 0, 0},
    {"hd 32 bs 8", 8, 2, 32, 8, 3, {{0, 70}, {300, 1}, {40, 5}}, 0, 0},
    {"hd 96", 6, 2, 96, 16, 3, {{0, 70}, {300, 1}, {40, 5}}, 0, 0},
    {"hd 256", 4, 2, 256, 16, 3, {{0, 70}, {300, 1}, {40, 5}}, 0, 0},
};

static enum result run_case(const struct kern_ctx *ctx, const struct acase *c, enum tl_dtype dt,
                            char *line, size_t line_size) {
    enum result r = RES_ERROR, rc;
    struct bufs bs = {.n = 0};
    struct hbatch hb;
    const double tol = dt == TL_DTYPE_BF16 ? TOL_BF16 : TOL_F16;
    const int ns = c->n_seqs + c->n_rand, hd = c->hd, bsz = c->bs;
    int n_past[MAX_SEQS + 64], n_new[MAX_SEQS + 64];
    int32_t *ids = NULL, *owner = NULL;
    uint16_t *q16 = NULL, *k16 = NULL, *v16 = NULL, *kc0 = NULL, *vc0 = NULL;
    float *q32 = NULL, *k32 = NULL, *v32 = NULL, *kc32 = NULL, *vc32 = NULL, *out32 = NULL;
    float *scratch = NULL;
    struct gbuf *gq, *gk, *gv, *gkc, *gvc, *gout, *gws = NULL, *gpos, *gts, *gss, *gsl, *gbt, *gif;
    enum tl_status st;

    memset(&hb, 0, sizeof hb);
    for (int i = 0; i < c->n_seqs; i++) n_past[i] = c->seqs[i].n_past, n_new[i] = c->seqs[i].n_new;
    for (int i = c->n_seqs; i < ns; i++)
        n_past[i] = (int)urand((uint32_t)c->rand_max), n_new[i] = 1;
    int n_blocks = 3; /* spare blocks nobody owns */
    for (int i = 0; i < ns; i++) n_blocks += (n_past[i] + n_new[i] + bsz - 1) / bsz;
    if (!(ids = malloc((size_t)n_blocks * sizeof *ids))) goto out;
    for (int i = 0; i < n_blocks; i++) ids[i] = i;
    shuffle(ids, n_blocks);
    if (!hbatch_build(&hb, ns, n_past, n_new, bsz, ids)) goto out;

    const struct kern_attn_shape shape = {c->n_heads, c->n_kv, hd, bsz};
    const struct attn_shape cshape = {c->n_heads, c->n_kv, hd, bsz};
    const size_t T = (size_t)hb.n_tokens, nq = T * c->n_heads * hd, nkv = T * c->n_kv * hd;
    const size_t slots = (size_t)n_blocks * bsz, ncache = slots * c->n_kv * hd;
    const size_t ws_bytes = kern_attention_workspace_bytes(&shape, hb.n_tokens, hb.max_seq_len);
    q16 = malloc(nq * 2), k16 = malloc(nkv * 2), v16 = malloc(nkv * 2);
    kc0 = malloc(ncache * 2), vc0 = malloc(ncache * 2);
    q32 = malloc(nq * 4), k32 = malloc(nkv * 4), v32 = malloc(nkv * 4), out32 = malloc(nq * 4);
    kc32 = calloc(ncache, 4), vc32 = calloc(ncache, 4);
    scratch = malloc(cpu_attention_scratch_floats(&cshape, 1) * 4);
    owner = malloc(slots * sizeof *owner);
    if (!q16 || !k16 || !v16 || !kc0 || !vc0 || !q32 || !k32 || !v32 || !out32 || !kc32 || !vc32 ||
        !scratch || !owner)
        goto out;

    /* New tokens' q, k, v; then the cache: NaN everywhere, random K/V at every cached (prefix)
     * position, the same values in the CPU's token-major fp32 cache. */
    gh_fill(dt, q32, q16, nq, 0.0f, 3.0f);
    gh_fill(dt, k32, k16, nkv, 0.0f, 1.0f);
    gh_fill(dt, v32, v16, nkv, 0.0f, 1.0f);
    for (size_t i = 0; i < ncache; i++) kc0[i] = vc0[i] = POISON16;
    for (size_t i = 0; i < slots; i++) owner[i] = -1;
    for (int s = 0; s < ns; s++) {
        const int32_t *bt = hb.block_tables + (size_t)s * hb.max_blocks;
        for (int p = 0; p < n_past[s] + n_new[s]; p++) {
            const int64_t blk = bt[p / bsz], sl = p % bsz;
            if (p >= n_past[s]) { /* written by this step */
                owner[blk * bsz + sl] = hb.seq_start[s] + (p - n_past[s]);
                continue;
            }
            for (int h = 0; h < c->n_kv; h++) {
                const size_t g = ((size_t)(blk * c->n_kv + h) * bsz + sl) * hd;
                const size_t cpu = ((size_t)(blk * bsz + sl) * c->n_kv + h) * hd;
                gh_fill(dt, kc32 + cpu, kc0 + g, (size_t)hd, 0.0f, 1.0f);
                gh_fill(dt, vc32 + cpu, vc0 + g, (size_t)hd, 0.0f, 1.0f);
            }
        }
    }

    if (!(gq = gbuf_new(ctx, &bs, "q", nq * 2)) || !(gk = gbuf_new(ctx, &bs, "k", nkv * 2)) ||
        !(gv = gbuf_new(ctx, &bs, "v", nkv * 2)) ||
        !(gkc = gbuf_new(ctx, &bs, "k_cache", ncache * 2)) ||
        !(gvc = gbuf_new(ctx, &bs, "v_cache", ncache * 2)) ||
        !(gout = gbuf_new(ctx, &bs, "out", nq * 2)) ||
        (ws_bytes && !(gws = gbuf_new(ctx, &bs, "workspace", ws_bytes))) ||
        !(gpos = gbuf_new(ctx, &bs, "positions", T * 4)) ||
        !(gts = gbuf_new(ctx, &bs, "tok_seq", T * 4)) ||
        !(gss = gbuf_new(ctx, &bs, "seq_start", (size_t)(ns + 1) * 4)) ||
        !(gsl = gbuf_new(ctx, &bs, "seq_len", (size_t)ns * 4)) ||
        !(gbt = gbuf_new(ctx, &bs, "block_tables", (size_t)ns * hb.max_blocks * 4)) ||
        !(gif = gbuf_new(ctx, &bs, "inv_freq", (size_t)hd / 2 * 4)))
        goto out;
    memcpy(hdata(gq), q16, nq * 2);
    memcpy(hdata(gk), k16, nkv * 2);
    memcpy(hdata(gv), v16, nkv * 2);
    memcpy(hdata(gkc), kc0, ncache * 2);
    memcpy(hdata(gvc), vc0, ncache * 2);
    memset(hdata(gout), 0xFF, nq * 2); /* POISON16 */
    if (gws) memset(hdata(gws), 0xFF, ws_bytes);
    memcpy(hdata(gpos), hb.positions, T * 4);
    memcpy(hdata(gts), hb.tok_seq, T * 4);
    memcpy(hdata(gss), hb.seq_start, (size_t)(ns + 1) * 4);
    memcpy(hdata(gsl), hb.seq_len, (size_t)ns * 4);
    memcpy(hdata(gbt), hb.block_tables, (size_t)ns * hb.max_blocks * 4);
    make_inv_freq(hdata(gif), hd, 1e6);
    if ((r = bufs_upload(ctx, &bs)) != RES_PASS) goto out;

    const struct kern_batch kb = {hb.n_tokens,    hb.n_seqs,  ddata(gpos), ddata(gts),
                                  ddata(gss),     ddata(gsl), ddata(gbt),  hb.max_blocks,
                                  hb.max_seq_len, hb.max_new};
    st = kern_rope_kv_write(ctx, &shape, &kb, dt, ddata(gif), ddata(gq), ddata(gk), ddata(gv),
                            ddata(gkc), ddata(gvc));
    if (st == TL_OK)
        st = kern_attention(ctx, &shape, &kb, dt, ddata(gq), ddata(gkc), ddata(gvc), ddata(gout),
                            gws ? ddata(gws) : NULL, ws_bytes);
    if (st != TL_OK) {
        report_cuda(ctx, "kern_rope_kv_write / kern_attention", st);
        r = RES_ERROR;
        goto out;
    }
    if ((r = bufs_download_check(ctx, &bs)) == RES_ERROR) goto out;

    cpu_rope_kv_write(NULL, &cshape, &hb.fb, hb.tok_seq, hdata(gif), q32, k32, v32, kc32, vc32);
    cpu_attention(NULL, &cshape, &hb.fb, hb.tok_seq, q32, kc32, vc32, out32, scratch);

    if ((rc = gh_compare("q", dt, hdata(gq), q32, nq, tol, line, line_size)) != RES_PASS) r = rc;
    if ((rc = gh_compare("k", dt, hdata(gk), k32, nkv, tol, line, line_size)) != RES_PASS) r = rc;
    if ((rc = gh_compare("out", dt, hdata(gout), out32, nq, tol, line, line_size)) != RES_PASS) {
        r = rc;
        report_seqs(&hb, n_past, dt, hdata(gout), out32, (size_t)c->n_heads * hd, tol);
    }

    /* Again on the same inputs: a deterministic kernel gives the same bits; anything else is a
     * race (or a read of memory nothing wrote). */
    {
        uint16_t *first = malloc(nq * 2);
        if (!first) goto out;
        memcpy(first, hdata(gout), nq * 2);
        memset(hdata(gout), 0xFF, nq * 2);
        st = kern_upload(ctx, gout->dev, gout->host, gout->bytes + 2 * GUARD_BYTES);
        if (st == TL_OK)
            st = kern_attention(ctx, &shape, &kb, dt, ddata(gq), ddata(gkc), ddata(gvc),
                                ddata(gout), gws ? ddata(gws) : NULL, ws_bytes);
        if (st != TL_OK) {
            report_cuda(ctx, "kern_attention (rerun)", st);
            free(first);
            r = RES_ERROR;
            goto out;
        }
        if ((rc = bufs_download_check(ctx, &bs)) != RES_PASS) r = rc;
        const bool same = memcmp(first, hdata(gout), nq * 2) == 0;
        free(first);
        gh_line_add(line, line_size, " rerun %s", same ? "same" : "DIFFERS");
        if (!same) r = RES_FAIL;
        if (r == RES_ERROR) goto out;
    }

    /* The cache, bit for bit: owned slots hold the GPU's own rotated k and the input v. */
    const uint16_t *kcg = hdata(gkc), *vcg = hdata(gvc), *kg = hdata(gk);
    size_t bad = 0;
    for (size_t blk = 0; blk < (size_t)n_blocks; blk++)
        for (int h = 0; h < c->n_kv; h++)
            for (int sl = 0; sl < bsz; sl++) {
                const size_t g = ((blk * c->n_kv + h) * bsz + sl) * hd;
                const int32_t tok = owner[blk * bsz + sl];
                const uint16_t *wk = tok < 0 ? kc0 + g : kg + ((size_t)tok * c->n_kv + h) * hd;
                const uint16_t *wv = tok < 0 ? vc0 + g : v16 + ((size_t)tok * c->n_kv + h) * hd;
                if (memcmp(kcg + g, wk, (size_t)hd * 2) || memcmp(vcg + g, wv, (size_t)hd * 2)) {
                    if (bad++ < 3)
                        fprintf(stderr, "    cache block %zu kv head %d slot %d (token %d) wrong\n",
                                blk, h, sl, (int)tok);
                }
            }
    gh_line_add(line, line_size, " cache %s", bad ? "WRONG" : "exact");
    if (bad) r = RES_FAIL;
out:
    bufs_free(ctx, &bs);
    hbatch_free(&hb);
    free(ids), free(owner), free(q16), free(k16), free(v16), free(kc0), free(vc0);
    free(q32), free(k32), free(v32), free(kc32), free(vc32), free(out32), free(scratch);
    return r;
}

/* Bad arguments are answered with a status and a message, and launch nothing. */
static enum result run_bad_args(const struct kern_ctx *ctx) {
    void *fake = (void *)(uintptr_t)4096;
    const int32_t *fi = (const int32_t *)(uintptr_t)4096;
    const struct kern_attn_shape ok = {8, 2, 64, 16}, hd48 = {8, 2, 48, 16}, ratio = {8, 3, 64, 16};
    const struct kern_batch b = {1, 1, fi, fi, fi, fi, fi, 1, 16, 1};
    const struct kern_batch b_tables = {1, 1, fi, fi, fi, fi, fi, 1, 17, 1};
    const struct gh_status_check checks[] = {
        {"head_dim 48",
         kern_attention(ctx, &hd48, &b, TL_DTYPE_BF16, fake, fake, fake, fake, NULL, 0),
         TL_ERR_UNSUPPORTED},
        {"F32 activations",
         kern_attention(ctx, &ok, &b, TL_DTYPE_F32, fake, fake, fake, fake, NULL, 0),
         TL_ERR_UNSUPPORTED},
        {"heads not a multiple of kv heads",
         kern_attention(ctx, &ratio, &b, TL_DTYPE_F16, fake, fake, fake, fake, NULL, 0),
         TL_ERR_INVALID},
        {"block table too short",
         kern_attention(ctx, &ok, &b_tables, TL_DTYPE_F16, fake, fake, fake, fake, NULL, 0),
         TL_ERR_INVALID},
        {"out NULL", kern_attention(ctx, &ok, &b, TL_DTYPE_F16, fake, fake, fake, NULL, NULL, 0),
         TL_ERR_INVALID},
        {"misaligned cache",
         kern_attention(ctx, &ok, &b, TL_DTYPE_F16, fake, (char *)fake + 2, fake, fake, NULL, 0),
         TL_ERR_INVALID},
        {"rope head_dim 48",
         kern_rope_kv_write(ctx, &hd48, &b, TL_DTYPE_BF16, fake, fake, fake, fake, fake, fake),
         TL_ERR_UNSUPPORTED},
        {"rope inv_freq NULL",
         kern_rope_kv_write(ctx, &ok, &b, TL_DTYPE_BF16, NULL, fake, fake, fake, fake, fake),
         TL_ERR_INVALID},
    };
    return gh_check_statuses(ctx, checks, sizeof checks / sizeof checks[0]);
}

/* ---------------- timings ---------------- */

#define BENCH_WARMUP 3
#define BENCH_REPS   20

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* A CUDA runtime failure in the timing code: message, and false. */
static bool cuda_ok(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return true;
    fprintf(stderr, "    %s: %s (%s)\n", what, cudaGetErrorName(e), cudaGetErrorString(e));
    return false;
}

/* Median ms of a 1 GiB device-to-device copy on the context's stream; < 0 on failure. */
static double bench_copy(const struct kern_ctx *ctx, size_t bytes) {
    cudaStream_t stream = (cudaStream_t)kern_ctx_stream(ctx);
    void *src = NULL, *dst = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    float ms[BENCH_REPS];
    double med = -1;
    if (kern_alloc(ctx, bytes, &src) != TL_OK || kern_alloc(ctx, bytes, &dst) != TL_OK ||
        !cuda_ok(cudaEventCreate(&e0), "cudaEventCreate") ||
        !cuda_ok(cudaEventCreate(&e1), "cudaEventCreate") ||
        !cuda_ok(cudaMemsetAsync(src, 0x3c, bytes, stream), "cudaMemsetAsync"))
        goto out;
    for (int i = 0; i < BENCH_WARMUP + BENCH_REPS; i++) {
        if (!cuda_ok(cudaEventRecord(e0, stream), "cudaEventRecord") ||
            !cuda_ok(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream),
                     "cudaMemcpyAsync") ||
            !cuda_ok(cudaEventRecord(e1, stream), "cudaEventRecord") ||
            !cuda_ok(cudaEventSynchronize(e1), "cudaEventSynchronize"))
            goto out;
        if (i >= BENCH_WARMUP &&
            !cuda_ok(cudaEventElapsedTime(&ms[i - BENCH_WARMUP], e0, e1), "cudaEventElapsedTime"))
            goto out;
    }
    qsort(ms, BENCH_REPS, sizeof ms[0], cmp_float);
    med = ms[BENCH_REPS / 2];
out:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    kern_free(ctx, src);
    kern_free(ctx, dst);
    return med;
}

struct bench_cfg {
    const char *name;
    int n_seqs, n_past, n_new;
    int n_sets; /* disjoint block sets rotated over, so the KV read is not served by L2 */
};

struct bench_row {
    char name[48];
    double ms;             /* median of BENCH_REPS calls, each bracketed by events */
    double graph_ms;       /* per call, from replays of a graph of BENCH_REPS calls */
    double kv_gbs, tflops; /* from graph_ms: kv_gbs for decode, tflops for prefill */
};

#define GRAPH_REPLAYS 10

/* Per-call ms of `reps` calls of `call` captured into one CUDA graph: the GPU time without the
 * host's launch gaps (the engine replays graphs for decode). Median of GRAPH_REPLAYS replays;
 * < 0 on failure. */
typedef enum tl_status (*bench_call_fn)(void *arg, int i);

static double time_graph(const struct kern_ctx *ctx, bench_call_fn call, void *arg, int reps) {
    cudaStream_t stream = (cudaStream_t)kern_ctx_stream(ctx);
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    float ms[GRAPH_REPLAYS];
    double med = -1;
    enum tl_status st = TL_OK;
    if (!cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), "capture"))
        return -1;
    for (int i = 0; i < reps && st == TL_OK; i++) st = call(arg, i);
    if (!cuda_ok(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture") || st != TL_OK) {
        if (st != TL_OK) fprintf(stderr, "    capture: %s\n", kern_last_error(ctx));
        goto out;
    }
    if (!cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate") ||
        !cuda_ok(cudaEventCreate(&e0), "cudaEventCreate") ||
        !cuda_ok(cudaEventCreate(&e1), "cudaEventCreate"))
        goto out;
    for (int i = 0; i < 1 + GRAPH_REPLAYS; i++) {
        if (!cuda_ok(cudaEventRecord(e0, stream), "cudaEventRecord") ||
            !cuda_ok(cudaGraphLaunch(exec, stream), "cudaGraphLaunch") ||
            !cuda_ok(cudaEventRecord(e1, stream), "cudaEventRecord") ||
            !cuda_ok(cudaEventSynchronize(e1), "cudaEventSynchronize"))
            goto out;
        if (i >= 1 && !cuda_ok(cudaEventElapsedTime(&ms[i - 1], e0, e1), "cudaEventElapsedTime"))
            goto out;
    }
    qsort(ms, GRAPH_REPLAYS, sizeof ms[0], cmp_float);
    med = ms[GRAPH_REPLAYS / 2] / reps;
out:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    return med;
}

/* What one timed call needs. */
struct bench_args {
    const struct kern_ctx *ctx;
    const struct kern_attn_shape *s;
    const struct kern_batch *kb;
    int n_sets;
    void *dq, *dk, *dv, *dout, *dws, *dif, *k_cache, *v_cache;
    size_t ws_bytes;
};

static enum tl_status call_attention(void *arg, int i) {
    const struct bench_args *a = arg;
    return kern_attention(a->ctx, a->s, &a->kb[i % a->n_sets], TL_DTYPE_BF16, a->dq, a->k_cache,
                          a->v_cache, a->dout, a->dws, a->ws_bytes);
}

static enum tl_status call_rope(void *arg, int i) {
    const struct bench_args *a = arg;
    return kern_rope_kv_write(a->ctx, a->s, &a->kb[i % a->n_sets], TL_DTYPE_BF16, a->dif, a->dq,
                              a->dk, a->dv, a->k_cache, a->v_cache);
}

/* Times kern_attention (and, for prefill, kern_rope_kv_write) for one configuration over a
 * shared random cache of n_blocks blocks. Returns false on a CUDA failure. */
static bool bench_one(const struct kern_ctx *ctx, const struct kern_attn_shape *s,
                      const struct bench_cfg *cfg, void *k_cache, void *v_cache, int n_blocks,
                      struct bench_row *row, struct bench_row *rope_row) {
    cudaStream_t stream = (cudaStream_t)kern_ctx_stream(ctx);
    const enum tl_dtype dt = TL_DTYPE_BF16;
    const int ns = cfg->n_seqs, len = cfg->n_past + cfg->n_new;
    const int nb = (len + s->block_size - 1) / s->block_size;
    int *n_past = malloc((size_t)ns * sizeof(int)), *n_new = malloc((size_t)ns * sizeof(int));
    int32_t *ids = malloc((size_t)n_blocks * sizeof(int32_t));
    struct hbatch hb[16];
    void *dq = NULL, *dk = NULL, *dv = NULL, *dout = NULL, *dws = NULL, *dif = NULL;
    void *darr[16] = {NULL};
    struct kern_batch kb[16];
    uint16_t *h16 = NULL;
    float *h32 = NULL, ms[BENCH_REPS], ms_rope[BENCH_REPS];
    cudaEvent_t e0 = NULL, e1 = NULL;
    bool ok = false;
    enum tl_status st;
    size_t ws_bytes = 0, nq = 0, nkv = 0;
    memset(hb, 0, sizeof hb);
    if (!n_past || !n_new || !ids || cfg->n_sets > 16 || (int64_t)nb * ns * cfg->n_sets > n_blocks)
        goto out;
    for (int i = 0; i < ns; i++) n_past[i] = cfg->n_past, n_new[i] = cfg->n_new;
    for (int i = 0; i < n_blocks; i++) ids[i] = i;
    shuffle(ids, n_blocks);
    for (int set = 0; set < cfg->n_sets; set++)
        if (!hbatch_build(&hb[set], ns, n_past, n_new, s->block_size, ids + set * nb * ns))
            goto out;
    nq = (size_t)hb[0].n_tokens * s->n_heads * s->head_dim;
    nkv = (size_t)hb[0].n_tokens * s->n_kv_heads * s->head_dim;
    ws_bytes = kern_attention_workspace_bytes(s, hb[0].n_tokens, hb[0].max_seq_len);
    if (!(h16 = malloc(nq * 2)) || !(h32 = malloc(nq * 4))) goto out;
    if (kern_alloc(ctx, nq * 2, &dq) != TL_OK || kern_alloc(ctx, nkv * 2, &dk) != TL_OK ||
        kern_alloc(ctx, nkv * 2, &dv) != TL_OK || kern_alloc(ctx, nq * 2, &dout) != TL_OK ||
        (ws_bytes && kern_alloc(ctx, ws_bytes, &dws) != TL_OK) ||
        kern_alloc(ctx, (size_t)s->head_dim / 2 * 4, &dif) != TL_OK)
        goto fail;
    gh_fill(dt, h32, h16, nq, 0.0f, 3.0f);
    if (kern_upload(ctx, dq, h16, nq * 2) != TL_OK) goto fail;
    gh_fill(dt, h32, h16, nkv, 0.0f, 1.0f);
    if (kern_upload(ctx, dk, h16, nkv * 2) != TL_OK || kern_upload(ctx, dv, h16, nkv * 2) != TL_OK)
        goto fail;
    make_inv_freq(h32, s->head_dim, 1e6);
    if (kern_upload(ctx, dif, h32, (size_t)s->head_dim / 2 * 4) != TL_OK) goto fail;
    for (int set = 0; set < cfg->n_sets; set++) {
        const struct hbatch *h = &hb[set];
        size_t t4 = (size_t)h->n_tokens * 4, s4 = (size_t)ns * 4;
        size_t bt4 = (size_t)ns * h->max_blocks * 4, total = 2 * t4 + 2 * s4 + 4 + bt4;
        char *d;
        if (kern_alloc(ctx, total, &darr[set]) != TL_OK) goto fail;
        d = darr[set];
        if (kern_upload(ctx, d, h->positions, t4) != TL_OK ||
            kern_upload(ctx, d + t4, h->tok_seq, t4) != TL_OK ||
            kern_upload(ctx, d + 2 * t4, h->seq_start, s4 + 4) != TL_OK ||
            kern_upload(ctx, d + 2 * t4 + s4 + 4, h->seq_len, s4) != TL_OK ||
            kern_upload(ctx, d + 2 * t4 + 2 * s4 + 4, h->block_tables, bt4) != TL_OK)
            goto fail;
        kb[set] = (struct kern_batch){h->n_tokens,
                                      ns,
                                      (const int32_t *)d,
                                      (const int32_t *)(d + t4),
                                      (const int32_t *)(d + 2 * t4),
                                      (const int32_t *)(d + 2 * t4 + s4 + 4),
                                      (const int32_t *)(d + 2 * t4 + 2 * s4 + 4),
                                      h->max_blocks,
                                      h->max_seq_len,
                                      h->max_new};
    }
    if (kern_sync(ctx) != TL_OK) goto fail;
    if (!cuda_ok(cudaEventCreate(&e0), "cudaEventCreate") ||
        !cuda_ok(cudaEventCreate(&e1), "cudaEventCreate"))
        goto out;
    for (int i = 0; i < BENCH_WARMUP + BENCH_REPS; i++) {
        const struct kern_batch *b = &kb[i % cfg->n_sets];
        if (!cuda_ok(cudaEventRecord(e0, stream), "cudaEventRecord")) goto out;
        st = kern_attention(ctx, s, b, dt, dq, k_cache, v_cache, dout, dws, ws_bytes);
        if (st != TL_OK) goto fail;
        if (!cuda_ok(cudaEventRecord(e1, stream), "cudaEventRecord") ||
            !cuda_ok(cudaEventSynchronize(e1), "cudaEventSynchronize"))
            goto out;
        if (i >= BENCH_WARMUP &&
            !cuda_ok(cudaEventElapsedTime(&ms[i - BENCH_WARMUP], e0, e1), "cudaEventElapsedTime"))
            goto out;
    }
    if (kern_sync(ctx) != TL_OK) goto fail;
    qsort(ms, BENCH_REPS, sizeof ms[0], cmp_float);
    snprintf(row->name, sizeof row->name, "%s", cfg->name);
    row->ms = ms[BENCH_REPS / 2];
    struct bench_args ba = {ctx,  s,   kb,  cfg->n_sets, dq,      dk,      dv,
                            dout, dws, dif, k_cache,     v_cache, ws_bytes};
    if ((row->graph_ms = time_graph(ctx, call_attention, &ba, BENCH_REPS)) < 0) goto out;
    {
        double kv_bytes = 0, flops = 0;
        for (int i = 0; i < ns; i++) {
            kv_bytes += (double)len * s->n_kv_heads * s->head_dim * 2 /* K, V */ * 2 /* bytes */;
            for (int j = 0; j < cfg->n_new; j++) /* causal: token j sees n_past + j + 1 keys */
                flops += 4.0 * s->head_dim * s->n_heads * (cfg->n_past + j + 1);
        }
        row->kv_gbs = cfg->n_new == 1 ? kv_bytes / (row->graph_ms * 1e-3) / 1e9 : 0;
        row->tflops = cfg->n_new > 1 ? flops / (row->graph_ms * 1e-3) / 1e12 : 0;
    }
    if (rope_row) {
        for (int i = 0; i < BENCH_WARMUP + BENCH_REPS; i++) {
            const struct kern_batch *b = &kb[i % cfg->n_sets];
            if (!cuda_ok(cudaEventRecord(e0, stream), "cudaEventRecord")) goto out;
            st = kern_rope_kv_write(ctx, s, b, dt, dif, dq, dk, dv, k_cache, v_cache);
            if (st != TL_OK) goto fail;
            if (!cuda_ok(cudaEventRecord(e1, stream), "cudaEventRecord") ||
                !cuda_ok(cudaEventSynchronize(e1), "cudaEventSynchronize"))
                goto out;
            if (i >= BENCH_WARMUP &&
                !cuda_ok(cudaEventElapsedTime(&ms_rope[i - BENCH_WARMUP], e0, e1),
                         "cudaEventElapsedTime"))
                goto out;
        }
        qsort(ms_rope, BENCH_REPS, sizeof ms_rope[0], cmp_float);
        snprintf(rope_row->name, sizeof rope_row->name, "rope_kv_write %d tok", hb[0].n_tokens);
        rope_row->ms = ms_rope[BENCH_REPS / 2];
        if ((rope_row->graph_ms = time_graph(ctx, call_rope, &ba, BENCH_REPS)) < 0) goto out;
        /* bytes: q and k read and written, v read, k and v written to the cache */
        rope_row->kv_gbs = (double)(nq * 4 + nkv * 4 + nkv * 4) / (rope_row->graph_ms * 1e-3) / 1e9;
        rope_row->tflops = 0;
    }
    ok = true;
    goto out;
fail:
    fprintf(stderr, "    bench %s: %s\n", cfg->name, kern_last_error(ctx));
out:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    for (int set = 0; set < 16; set++) {
        kern_free(ctx, darr[set]);
        hbatch_free(&hb[set]);
    }
    kern_free(ctx, dq), kern_free(ctx, dk), kern_free(ctx, dv), kern_free(ctx, dout);
    kern_free(ctx, dws), kern_free(ctx, dif);
    free(n_past), free(n_new), free(ids), free(h16), free(h32);
    return ok;
}

/* only: run just configuration `only` (for a profiler), or all when < 0. */
static bool run_bench(const struct kern_ctx *ctx, int only) {
    const struct kern_attn_shape s = {40, 8, 128, 16}; /* Qwen2 14B */
    const struct bench_cfg cfgs[] = {
        {"decode b=1 ctx=1k", 1, 1023, 1, 16},  {"decode b=1 ctx=8k", 1, 8191, 1, 4},
        {"decode b=1 ctx=32k", 1, 32767, 1, 1}, {"decode b=64 ctx=640", 64, 639, 1, 1},
        {"prefill 1024 tok", 1, 0, 1024, 1},
    };
    enum { N_CFG = sizeof cfgs / sizeof cfgs[0] };
    const int n_blocks = 2600; /* 41.6k tokens: the largest set (64 x 640) fits */
    const size_t cache_elems = (size_t)n_blocks * s.n_kv_heads * s.block_size * s.head_dim;
    struct bench_row rows[N_CFG + 1];
    void *kc = NULL, *vc = NULL;
    uint16_t *h16 = malloc(cache_elems * 2);
    float *h32 = malloc(cache_elems * 4);
    bool ok = false;
    const size_t copy_bytes = (size_t)1 << 30;
    double copy_ms, copy_gbs;
    memset(rows, 0, sizeof rows);
    if (!h16 || !h32 || kern_alloc(ctx, cache_elems * 2, &kc) != TL_OK ||
        kern_alloc(ctx, cache_elems * 2, &vc) != TL_OK)
        goto out;
    gh_fill(TL_DTYPE_BF16, h32, h16, cache_elems, 0.0f, 1.0f);
    if (kern_upload(ctx, kc, h16, cache_elems * 2) != TL_OK) goto out;
    if (kern_sync(ctx) != TL_OK) goto out; /* h16 is refilled below */
    gh_fill(TL_DTYPE_BF16, h32, h16, cache_elems, 0.0f, 1.0f);
    if (kern_upload(ctx, vc, h16, cache_elems * 2) != TL_OK || kern_sync(ctx) != TL_OK) goto out;
    if ((copy_ms = bench_copy(ctx, copy_bytes)) < 0) goto out;
    copy_gbs = 2.0 * (double)copy_bytes / (copy_ms * 1e-3) / 1e9;
    for (int i = 0; i < N_CFG; i++)
        if ((only < 0 || only == i) && !bench_one(ctx, &s, &cfgs[i], kc, vc, n_blocks, &rows[i],
                                                  cfgs[i].n_new > 1 ? &rows[N_CFG] : NULL))
            goto out;
    printf("\ntimings: BF16, 40 heads / 8 kv heads, head_dim 128, block 16; median of %d after %d "
           "warm-ups\n",
           BENCH_REPS, BENCH_WARMUP);
    printf("HBM copy ceiling: 1 GiB D2D copy %.3f ms = %.0f GB/s (read + written)\n", copy_ms,
           copy_gbs);
    printf("call: one call between events (host launch gaps included); graph: per call in a "
           "replayed graph of %d calls (rates use it)\n",
           BENCH_REPS);
    printf("%-22s %9s %9s %9s %8s %8s\n", "case", "call us", "graph us", "GB/s", "of copy",
           "TFLOP/s");
    for (int i = 0; i <= N_CFG; i++) {
        const struct bench_row *r = &rows[i];
        if (r->name[0] == '\0') continue;
        if (r->kv_gbs > 0)
            printf("%-22s %9.1f %9.1f %9.0f %7.0f%% %8s\n", r->name, r->ms * 1e3, r->graph_ms * 1e3,
                   r->kv_gbs, 100.0 * r->kv_gbs / copy_gbs, "-");
        else
            printf("%-22s %9.1f %9.1f %9s %8s %8.1f\n", r->name, r->ms * 1e3, r->graph_ms * 1e3,
                   "-", "-", r->tflops);
    }
    ok = true;
out:
    if (!ok) fprintf(stderr, "    timings failed: %s\n", kern_last_error(ctx));
    kern_free(ctx, kc);
    kern_free(ctx, vc);
    free(h16);
    free(h32);
    return ok;
}

/* ---------------- main ---------------- */

int main(void) {
    struct kern_ctx *ctx;
    int start = gh_start(&ctx);
    if (start != 0) return start;
    struct kern_device_info info;
    enum tl_status st;
    if ((st = kern_device_info(ctx, &info)) != TL_OK) {
        fprintf(stderr, "kern_device_info: %s: %s\n", tl_status_str(st), kern_last_error(ctx));
        kern_ctx_destroy(ctx);
        return 1;
    }
    printf("device %d: %s, cc %d.%d, %d SMs\n", info.device, info.name, info.cc_major,
           info.cc_minor, info.sm_count);

    const enum tl_dtype dts[] = {TL_DTYPE_BF16, TL_DTYPE_F16};
    const char *bench_only = getenv("TL_TEST_BENCH_ONLY"); /* N: only timing N (profiling) */
    int n_run = 0, n_fail = 0;
    enum result r = RES_PASS;
    const char *one_case = getenv("TL_TEST_CASE"); /* N: only case N (debugging, sanitizers) */
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0] && r != RES_ERROR && !bench_only;
         ci++) {
        const struct acase *c = &cases[ci];
        if (one_case && (size_t)atoi(one_case) != ci) continue;
        for (int d = 0; d < 2 && r != RES_ERROR; d++) {
            char line[200] = "";
            r = run_case(ctx, c, dts[d], line, sizeof line);
            n_run++;
            n_fail += r != RES_PASS;
            printf("%-16s %-4s h=%d/%d hd=%d bs=%d seqs=%d:%s  %s\n", c->name, dtype_name(dts[d]),
                   c->n_heads, c->n_kv, c->hd, c->bs, c->n_seqs + c->n_rand, line, result_str(r));
            fflush(stdout);
        }
    }
    if (r != RES_ERROR && !bench_only) {
        r = run_bad_args(ctx);
        n_run++;
        n_fail += r != RES_PASS;
        printf("argument checks  %s\n", result_str(r));
    }
    if (r == RES_ERROR) printf("stopped at the first CUDA error\n");
    printf("%d of %d checks passed\n", n_run - n_fail, n_run);
    const char *no_bench = getenv("TL_TEST_NO_BENCH");
    if (r != RES_ERROR && !(no_bench && no_bench[0] == '1') &&
        !run_bench(ctx, bench_only ? atoi(bench_only) : -1))
        n_fail++;
    kern_ctx_destroy(ctx);
    return n_fail ? 1 : 0;
}
