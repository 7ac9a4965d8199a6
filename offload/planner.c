/* planner: memory of a placement per tier, the search over placements, the start-up check and
 * the nearest settings that fit. The search enumerates tiers for lm_head and the embedding, the
 * number of CPU layers, then streamed layers from the fewest that fit upwards (more streaming
 * only buys KV room, so it stops once the expected batch fits), 1..KMAX staging slots and a few
 * layer orders, and keeps the placement with the highest predicted tok/s (stepmodel.h). */
#include "planner.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "attention.h"
#include "forward.h"
#include "matmul.h"
#include "pool.h"
#include "sizes.h"
#include "tp.h"

#define GIB    (1024.0 * 1024.0 * 1024.0)
#define KMAX   6
#define ORDERS 3

static const int report_batches[PLANNER_NBATCH] = {1, 16, 64, 256};

void planner_inputs_default(struct planner_inputs *in) {
    memset(in, 0, sizeof *in);
    in->dtype = TL_DTYPE_COUNT;
    in->gpu_memory_utilization = 0.9;
    in->block_size = 16;
    in->max_num_seqs = 256;
    in->max_num_batched_tokens = 2048;
    in->expected_batch = 16;
    in->cpu_offload_gb = PLANNER_OFFLOAD_AUTO;
    in->policy = PLANNER_POLICY_AUTO;
}

enum tl_dtype planner_gpu_dtype(const struct planner_inputs *in) {
    if (in->dtype == TL_DTYPE_BF16 || in->dtype == TL_DTYPE_F16) return in->dtype;
    return in->cfg.dtype == TL_DTYPE_BF16 ? TL_DTYPE_BF16 : TL_DTYPE_F16;
}

static int mml_of(const struct planner_inputs *in) {
    return in->max_model_len > 0 ? in->max_model_len : in->cfg.max_position_embeddings;
}

static int expected_len_of(const struct planner_inputs *in) {
    int mml = mml_of(in), e = in->expected_len > 0 ? in->expected_len : 1024;
    return e < mml ? e : mml;
}

/* Prompt tokens of an expected sequence: expected_prompt_len, or half of it, at most E - 1. */
static int prompt_len_of(const struct planner_inputs *in) {
    int e = expected_len_of(in);
    int p = in->expected_prompt_len > 0 ? in->expected_prompt_len : e / 2;
    return p < e ? p : e - 1;
}

static size_t sat_sub(size_t a, size_t b) {
    return a > b ? a - b : 0;
}

static enum tl_status gpu_budget(const struct planner_inputs *in, size_t *budget, size_t *cap,
                                 struct tl_err *err) {
    double util = in->gpu_memory_utilization;
    if (!(util > 0 && util <= 1))
        return tl_fail(err, TL_ERR_INVALID, "--gpu-memory-utilization must be in (0, 1], got %g",
                       util);
    if (in->gpu_total_bytes > 0) {
        *cap = (size_t)(util * (double)in->gpu_total_bytes);
        if (in->gpu_memory_gb > 0 && (size_t)(in->gpu_memory_gb * GIB) < *cap)
            *cap = (size_t)(in->gpu_memory_gb * GIB);
    } else {
        if (!(in->gpu_memory_gb > 0))
            return tl_fail(err, TL_ERR_INVALID,
                           "no GPU to size the budget from: give --gpu-memory-gb (the card's "
                           "memory in GiB, e.g. 24)");
        *cap = (size_t)(in->gpu_memory_gb * GIB);
    }
    *budget = sat_sub(*cap, in->gpu_used_bytes);
    return TL_OK;
}

/* ---------------- memory ---------------- */

/* hwloc loads the whole topology per call: ask once per process. */
static int physical_cores(void) {
    static int cores;
    int n = __atomic_load_n(&cores, __ATOMIC_RELAXED);
    if (!n) {
        n = pool_physical_cores();
        __atomic_store_n(&cores, n, __ATOMIC_RELAXED);
    }
    return n;
}

struct unit_bytes {
    size_t layer, embed, lm, norm; /* in the GPU dtype; lm: the (vocab, hidden) matrix */
    size_t host_layer, host_embed; /* in the checkpoint's dtype: what the CPU reads */
};

static struct unit_bytes unit_bytes_of(const struct config *c, enum tl_dtype dt) {
    enum tl_dtype file = dtype_is_float_compute(c->dtype) ? c->dtype : dt;
    struct unit_bytes u = {sizes_layer_bytes(c, dt),   sizes_embed_bytes(c, dt),
                           sizes_lm_head_bytes(c, dt), sizes_final_norm_bytes(c, dt),
                           sizes_layer_bytes(c, file), sizes_embed_bytes(c, file)};
    return u;
}

/* Weights kept off the GPU, in GPU-dtype bytes: what --cpu-offload-gb counts. */
static size_t offload_bytes_of(const struct config *c, const struct unit_bytes *ub, int S, int C,
                               uint8_t embed, uint8_t lm) {
    size_t off = (size_t)(S + C) * ub->layer;
    if (embed == PLACEMENT_CPU) off += ub->embed;
    if (lm != PLACEMENT_GPU_RESIDENT && !c->tie_word_embeddings) off += ub->lm;
    return off;
}

/* planner_memory_of on one GPU's inputs (planner_rank_inputs done). */
static enum tl_status memory_of(const struct planner_inputs *in, struct placement *pl,
                                struct planner_memory *out, struct tl_err *err) {
    memset(out, 0, sizeof *out);
    const struct config *c = &in->cfg;
    size_t budget, cap;
    enum tl_status st = gpu_budget(in, &budget, &cap, err);
    if (st != TL_OK) return st;
    if (in->block_size < 1 || in->max_num_seqs < 1 || in->max_num_batched_tokens < 1 ||
        mml_of(in) < 1)
        return tl_fail(err, TL_ERR_INVALID,
                       "block size, max-num-seqs, max-num-batched-tokens and max-model-len must "
                       "be positive");
    enum tl_dtype dt = pl->gpu_dtype;
    struct unit_bytes ub = unit_bytes_of(c, dt);
    int R = placement_count(pl, PLACEMENT_GPU_RESIDENT);
    int S = placement_count(pl, PLACEMENT_GPU_STREAMED), C = placement_count(pl, PLACEMENT_CPU);
    int mml = mml_of(in), bs = in->block_size;
    bool tied = c->tie_word_embeddings;
    bool lm_gpu = pl->lm_head == PLACEMENT_GPU_RESIDENT;
    bool lm_str = pl->lm_head == PLACEMENT_GPU_STREAMED, lm_cpu = pl->lm_head == PLACEMENT_CPU;
    /* gpu_backend.c: the table is on the device unless the host does the lookup, or when it is
     * also the (tied) lm_head the device runs */
    bool embed_gpu = pl->embed == PLACEMENT_GPU_RESIDENT || (tied && lm_gpu);
    bool split = S > 0 || C > 0 || lm_str || lm_cpu || pl->embed == PLACEMENT_CPU;

    size_t slot = S > 0 ? ub.layer : 0;
    if (lm_str && ub.lm > slot) slot = ub.lm;
    if (placement_streamed_units(pl) == 0) pl->stream_slots = 0;
    pl->stream_slot_bytes = pl->stream_slots > 0 ? slot : 0;
    /* guests: one more slot for the CPU layers' weights, their pinned images, their KV here */
    bool guests = placement_guests(pl);
    out->gpu_budget_bytes = budget;
    out->gpu_weight_bytes =
        ub.norm + (size_t)R * ub.layer + (embed_gpu ? ub.embed : 0) + (!tied && lm_gpu ? ub.lm : 0);
    out->gpu_staging_bytes =
        (size_t)pl->stream_slots * pl->stream_slot_bytes + (guests ? ub.layer : 0);
    out->gpu_activation_bytes =
        sizes_gpu_activation_bytes(c, dt, in->max_num_batched_tokens, in->max_num_seqs);
    out->gpu_workspace_bytes =
        sizes_gpu_workspace_bytes(c, bs, in->max_num_batched_tokens, in->max_num_seqs, mml,
                                  split || in->tensor_parallel_size > 1);
    int tp = in->tensor_parallel_size > 1 ? in->tensor_parallel_size : 1;
    out->gpu_comm_bytes = tp > 1 ? PLANNER_TP_COMM_RESERVE : 0;
    out->gpu_fixed_bytes = out->gpu_weight_bytes + out->gpu_staging_bytes +
                           out->gpu_activation_bytes + out->gpu_workspace_bytes +
                           out->gpu_comm_bytes;
    out->gpu_fits = out->gpu_fixed_bytes <= budget;
    out->gpu_kv_free_bytes = sat_sub(budget, out->gpu_fixed_bytes);

    /* host: pinned images of the streamed units in the GPU dtype; the CPU's layers, embedding
     * and lm_head as the checkpoint has them */
    out->host_budget_bytes = in->host_bytes > 0 ? in->host_bytes : SIZE_MAX;
    out->host_weight_bytes =
        (size_t)S * ub.layer + (lm_str ? ub.lm : 0) + (size_t)C * ub.host_layer +
        (pl->embed == PLACEMENT_CPU ? ub.host_embed : 0) + (lm_cpu && !tied ? ub.host_embed : 0) +
        (guests ? (size_t)C * ub.layer : 0);
    out->offload_bytes = offload_bytes_of(c, &ub, S, C, pl->embed, pl->lm_head);
    if (C > 0 || lm_cpu || pl->embed == PLACEMENT_CPU) {
        int threads = in->cpu_threads > 0 ? in->cpu_threads : physical_cores();
        /* the CPU lane's activations and matmul scratch, attention scratch, the crossing; with
         * the logits on the host, a sampler and a row per thread (cpu_ops.c: ~32 B a logit) */
        struct attn_shape as = {c->n_heads, c->n_kv_heads, c->head_dim, bs};
        out->host_buffer_bytes =
            forward_activation_bytes(c, TL_DTYPE_F32, in->max_num_batched_tokens,
                                     in->max_num_seqs) +
            MATMUL_SCRATCH_FLOATS * sizeof(float) +
            cpu_attention_scratch_floats(&as, threads) * sizeof(float) +
            (size_t)in->max_num_batched_tokens * (size_t)c->hidden_size * 4 +
            (lm_cpu ? (size_t)threads * (size_t)c->vocab_size * 32 : 0);
    }
    out->host_buffer_bytes += in->host_swap_bytes;
    /* tensor parallel (forward.c): every rank's gathered logit parts (tp, max_seqs, part) and
     * rank 0's whole rows (max_seqs, vocab <= tp * part), in fp32 */
    if (tp > 1)
        out->host_buffer_bytes +=
            2 * (size_t)tp * (size_t)in->max_num_seqs * (size_t)c->vocab_size * sizeof(float);
    size_t host_fixed = out->host_weight_bytes + out->host_buffer_bytes;
    out->host_fits = host_fixed <= out->host_budget_bytes;

    /* the GPU keeps one layer's KV even when the CPU runs every layer (gpu_backend.c) */
    int kv_gpu_layers = R + S + (guests ? C : 0);
    size_t kv_gpu_block = (size_t)(kv_gpu_layers ? kv_gpu_layers : 1) * (size_t)bs *
                          sizes_kv_token_layer_bytes(c, dt);
    size_t kv_host_block = (size_t)C * (size_t)bs * sizes_kv_token_layer_bytes(c, TL_DTYPE_F32);
    int64_t per_seq = (mml + bs - 1) / bs;
    int64_t gpu_lim = out->gpu_fits ? (int64_t)(out->gpu_kv_free_bytes / kv_gpu_block) : 0;
    int64_t host_lim = !out->host_fits ? 0
                       : kv_host_block
                           ? (int64_t)(sat_sub(out->host_budget_bytes, host_fixed) / kv_host_block)
                           : INT64_MAX;
    /* host KV: no more than max-num-seqs sequences of max-model-len can use, not all the RAM */
    if (C > 0 && host_lim > (int64_t)in->max_num_seqs * per_seq)
        host_lim = (int64_t)in->max_num_seqs * per_seq;
    int64_t nb = gpu_lim < host_lim ? gpu_lim : host_lim;
    if (nb > INT_MAX / bs) nb = INT_MAX / bs;
    bool override_ok = true;
    if (in->num_gpu_blocks_override > 0) {
        override_ok = in->num_gpu_blocks_override <= nb;
        nb = in->num_gpu_blocks_override;
    }
    pl->block_size = bs;
    pl->num_blocks = (int)nb;
    pl->kv_gpu_block_bytes = kv_gpu_block;
    pl->kv_host_block_bytes = kv_host_block;
    out->num_blocks = (int)nb;
    out->gpu_kv_bytes = (size_t)nb * kv_gpu_block;
    out->host_kv_bytes = (size_t)nb * kv_host_block;
    out->kv_seq_gpu_bytes = (size_t)per_seq * kv_gpu_block;
    out->kv_seq_host_bytes = (size_t)per_seq * kv_host_block;
    out->fit_max_model_len = override_ok ? (int)(nb * bs) : 0;
    out->fits = out->gpu_fits && out->host_fits && override_ok && nb >= per_seq;
    return TL_OK;
}

/* ---------------- layer orders ---------------- */

/* Lays out R resident, S streamed and C CPU layers. order 0: S groups, each its share of CPU
 * layers, then its share of resident ones, then one streamed layer, so the time between two
 * streamed layers is as even as possible (each copy gets the same window). order 1: the CPU
 * layers first as one block (two hops), streamed spread over the resident ones. order 2: the
 * same with the CPU block last (next to a CPU lm_head). */
static void arrange(struct placement *pl, int R, int S, int C, int order) {
    int i = 0;
    if (order == 0 && S > 0) {
        for (int g = 0; g < S; g++) {
            int cg = (int)((int64_t)C * (g + 1) / S - (int64_t)C * g / S);
            int rg = (int)((int64_t)R * (g + 1) / S - (int64_t)R * g / S);
            for (int k = 0; k < cg; k++) pl->layer[i++] = PLACEMENT_CPU;
            for (int k = 0; k < rg; k++) pl->layer[i++] = PLACEMENT_GPU_RESIDENT;
            pl->layer[i++] = PLACEMENT_GPU_STREAMED;
        }
        return;
    }
    int cpu_at = order == 2 ? R + S : 0, gpu_at = order == 2 ? 0 : C;
    for (int k = 0; k < C; k++) pl->layer[cpu_at + k] = PLACEMENT_CPU;
    int groups = S > 0 ? S : 1;
    i = gpu_at;
    for (int g = 0; g < groups; g++) {
        int rg = (int)((int64_t)R * (g + 1) / groups - (int64_t)R * g / groups);
        for (int k = 0; k < rg; k++) pl->layer[i++] = PLACEMENT_GPU_RESIDENT;
        if (S > 0) pl->layer[i++] = PLACEMENT_GPU_STREAMED;
    }
}

/* ---------------- evaluation and search ---------------- */

/* One prefill step of `tokens` prompt tokens of one sequence under pl, communication included. */
static double prefill_chunk_s(const struct planner_inputs *in, const struct ceilings *ce,
                              const struct placement *pl, int tokens) {
    struct stepmodel_step c = {1, tokens, tokens};
    struct stepmodel_result r;
    stepmodel_predict(&in->cfg, pl, ce, &c, &r);
    return r.step_s + planner_tp_comm_s(in, ce, tokens, 1);
}

static void predict(const struct planner_inputs *in, const struct ceilings *ce,
                    const struct placement *pl, int batch, struct planner_prediction *p) {
    int E = expected_len_of(in), per_seq = (E + in->block_size - 1) / in->block_size;
    int64_t conc = per_seq > 0 ? pl->num_blocks / per_seq : 0;
    if (conc > batch) conc = batch;
    if (conc > in->max_num_seqs) conc = in->max_num_seqs;
    if (conc < 1) conc = 1;
    struct stepmodel_step s = {(int)conc, (int)conc, E};
    p->batch = batch;
    p->concurrency = (int)conc;
    stepmodel_predict(&in->cfg, pl, ce, &s, &p->detail);
    /* the all-reduces run on the compute stream between the layers: they add to the step */
    p->tp_comm_s = planner_tp_comm_s(in, ce, (int)conc, (int)conc);
    p->step_s = p->detail.step_s + p->tp_comm_s;
    p->tok_s = p->step_s > 0 ? (double)conc / p->step_s : 0;
    /* prefill of conc prompts in max-num-batched-tokens chunks, then the outputs' decode */
    int P = prompt_len_of(in), O = E - P, chunk = in->max_num_batched_tokens;
    p->prefill_s = 0;
    if (P > 0 && chunk > 0) {
        int64_t tokens = conc * P, full = tokens / chunk;
        int rest = (int)(tokens % chunk);
        if (full > 0) p->prefill_s += prefill_chunk_s(in, ce, pl, chunk) * (double)full;
        if (rest > 0) p->prefill_s += prefill_chunk_s(in, ce, pl, rest);
    }
    double t = p->prefill_s + (O > 0 ? O : 1) * p->step_s;
    p->e2e_tok_s = t > 0 ? (double)conc * (O > 0 ? O : 1) / t : 0;
}

struct search {
    const struct planner_inputs *in;
    const struct ceilings *ce;
    int batch;
    bool memory_only; /* feasibility: stop at the first placement that fits */
    bool found;
    int candidates;
    struct placement best;
    struct planner_memory best_mem;
    struct planner_prediction best_pred;
};

/* The expected batch is what the user runs at once: a placement whose KV holds it beats one
 * that would serve it in waves, whatever their tok/s at the smaller concurrency; among those
 * that hold it (or, when none does, among all), the fastest end to end. */
static bool better(const struct planner_prediction *a, const struct planner_memory *am,
                   const struct planner_prediction *b, const struct planner_memory *bm, int want) {
    bool a_full = a->concurrency >= want, b_full = b->concurrency >= want;
    if (a_full != b_full) return a_full;
    if (a->e2e_tok_s > b->e2e_tok_s * 1.005) return true;
    if (a->e2e_tok_s < b->e2e_tok_s / 1.005) return false;
    return am->offload_bytes < bm->offload_bytes; /* as fast: keep more on the GPU */
}

/* The --cpu-offload-gb rule: at least N GiB of weights in host RAM, rounded up to whole
 * layers (N = 0: nothing). */
static bool offload_ok(const struct planner_inputs *in, size_t off, int offloaded_layers,
                       size_t layer_bytes) {
    if (in->cpu_offload_gb < 0) return true;
    double target = in->cpu_offload_gb * GIB;
    if (in->cpu_offload_gb == 0) return off == 0;
    if ((double)off < target) return false;
    return offloaded_layers == 0 || (double)(off - layer_bytes) < target;
}

/* Evaluates the layer orders of (R, S, C) with pl's tiers and slots. *full: some order holds
 * the whole batch; *no_stall: some order never waits for a copy (more slots cannot help). */
static void consider(struct search *s, struct placement *pl, int R, int S, int C, bool *full,
                     bool *no_stall) {
    struct planner_memory mem;
    struct tl_err err;
    /* order 0 needs streamed layers to spread over; 1 and 2 differ only in the CPU block */
    int first = S == 0 && C > 0 ? 1 : 0, last = C == 0 ? 0 : ORDERS - 1;
    if (s->memory_only) last = first; /* memory does not depend on the order */
    for (int order = first; order <= last; order++) {
        arrange(pl, R, S, C, order);
        if (memory_of(s->in, pl, &mem, &err) != TL_OK || !mem.fits) return;
        s->candidates++;
        if (s->memory_only) {
            s->found = true;
            s->best = *pl;
            s->best_mem = mem;
            return;
        }
        struct planner_prediction p;
        predict(s->in, s->ce, pl, s->batch, &p);
        int want = s->batch < s->in->max_num_seqs ? s->batch : s->in->max_num_seqs;
        if (p.concurrency >= want) *full = true;
        if (p.detail.stall_s < 1e-6) *no_stall = true;
        if (!s->found || better(&p, &mem, &s->best_pred, &s->best_mem, want)) {
            s->found = true;
            s->best = *pl;
            s->best_mem = mem;
            s->best_pred = p;
        }
    }
}

static void run_search(struct search *s) {
    const struct planner_inputs *in = s->in;
    const struct config *c = &in->cfg;
    int L = c->n_layers;
    enum tl_dtype dt = planner_gpu_dtype(in);
    struct unit_bytes ub = unit_bytes_of(c, dt);
    static const uint8_t lm_kinds[] = {PLACEMENT_GPU_RESIDENT, PLACEMENT_CPU,
                                       PLACEMENT_GPU_STREAMED};
    /* CPU layers run without guest steps, with them from the size where a layer's copy beats
     * the CPU computing it, and with them for prefill only (steps larger than any decode step:
     * in a step PCIe bounds, the CPU's time is free until it passes the copies'). Both
     * thresholds depend only on the GPU dtype and the ceilings. */
    struct placement pl;
    placement_init_resident(&pl, L, dt, in->block_size);
    int gmin[3] = {0, 0, 0}, guest_variants = 1;
    if (s->ce && in->policy != PLANNER_POLICY_CPU) {
        int g = stepmodel_guest_min_tokens(c, &pl, s->ce, in->max_num_batched_tokens);
        if (g > 0) gmin[guest_variants++] = g;
        int prefill_only = in->max_num_seqs + 1;
        if (prefill_only <= in->max_num_batched_tokens && prefill_only > g)
            gmin[guest_variants++] = prefill_only;
    }
    for (int li = 0; li < 3; li++) {
        uint8_t lm = lm_kinds[li];
        if (in->policy == PLANNER_POLICY_STREAM && lm == PLACEMENT_CPU) continue;
        if (in->policy == PLANNER_POLICY_CPU && lm == PLACEMENT_GPU_STREAMED) continue;
        for (int ei = 0; ei < 2; ei++) {
            uint8_t embed = ei == 0 ? PLACEMENT_GPU_RESIDENT : PLACEMENT_CPU;
            if (c->tie_word_embeddings &&
                (embed == PLACEMENT_GPU_RESIDENT) != (lm == PLACEMENT_GPU_RESIDENT))
                continue;
            int c_max = in->policy == PLANNER_POLICY_STREAM ? 0 : L;
            for (int C = 0; C <= c_max; C++) {
                int s_max = in->policy == PLANNER_POLICY_CPU ? 0 : L - C;
                /* the guests' KV on the GPU needs more streaming to hold the batch, so each
                 * variant stops on its own */
                int variants = C > 0 ? guest_variants : 1;
                bool done[3] = {false, variants < 2, variants < 3};
                for (int S = 0; S <= s_max && !(done[0] && done[1] && done[2]); S++) {
                    int R = L - C - S;
                    size_t off = offload_bytes_of(c, &ub, S, C, embed, lm);
                    if (!offload_ok(in, off, S + C, ub.layer)) continue;
                    int su = S + (lm == PLACEMENT_GPU_STREAMED);
                    /* as many slots as streamed units is the resident placement again (the
                     * weights stay in their slots), so at most su - 1 */
                    if (su == 1) continue;
                    int k_max = su == 0 ? 0 : su - 1 < KMAX ? su - 1 : KMAX;
                    placement_init_resident(&pl, L, dt, in->block_size);
                    pl.embed = embed;
                    pl.lm_head = lm;
                    for (int g = 0; g < variants; g++) {
                        if (done[g]) continue;
                        pl.guest_min_tokens = gmin[g];
                        bool full = false;
                        for (int k = su > 0 ? 1 : 0; k <= k_max; k++) {
                            bool no_stall = false;
                            if (k > 0 && su % k) continue; /* unit u owns slot u % k */
                            pl.stream_slots = k;
                            consider(s, &pl, R, S, C, &full, &no_stall);
                            if (s->memory_only && s->found) return;
                            if (no_stall || s->memory_only) break; /* more slots take memory */
                        }
                        /* more streaming only frees KV room: stop once the batch fits */
                        done[g] = full;
                    }
                }
            }
        }
    }
}

static bool any_fits(const struct planner_inputs *in) {
    struct search s = {.in = in, .memory_only = true};
    run_search(&s);
    return s.found;
}

static int offload_needed(const struct planner_inputs *in) {
    struct planner_inputs t = *in;
    double total = (double)sizes_model_bytes(&in->cfg, planner_gpu_dtype(in)) / GIB;
    for (int n = 0; n <= (int)ceil(total); n++) {
        t.cpu_offload_gb = n;
        if (any_fits(&t)) return n;
    }
    return -1;
}

/* The largest max-model-len (a whole number of blocks) with which some placement fits. */
static int largest_fitting_len(const struct planner_inputs *in) {
    struct planner_inputs t = *in;
    int lo = 0, hi = mml_of(in) / in->block_size; /* in blocks */
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        t.max_model_len = mid * in->block_size;
        if (t.expected_len > t.max_model_len) t.expected_len = t.max_model_len;
        if (any_fits(&t))
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo * in->block_size;
}

/* The smallest GPU budget (GiB, tenths) with which the request fits as asked. */
static double smallest_fitting_gpu_gb(const struct planner_inputs *in) {
    struct planner_inputs t = *in;
    t.gpu_total_bytes = 0;
    double lo = 0, hi = 4096;
    t.gpu_memory_gb = hi;
    if (!any_fits(&t)) return -1;
    while (hi - lo > 0.1) {
        double mid = 0.5 * (lo + hi);
        t.gpu_memory_gb = mid + (double)in->gpu_used_bytes / GIB;
        if (any_fits(&t))
            hi = mid;
        else
            lo = mid;
    }
    return ceil(hi * 10) / 10 + (double)in->gpu_used_bytes / GIB;
}

static const char *budget_words(const struct planner_inputs *in, char *buf, size_t n) {
    size_t budget = 0, cap = 0;
    struct tl_err e;
    gpu_budget(in, &budget, &cap, &e);
    if (in->gpu_total_bytes > 0)
        snprintf(buf, n, "%.2f of %.1f GiB%s, %.1f GiB already in use", in->gpu_memory_utilization,
                 (double)in->gpu_total_bytes / GIB,
                 in->gpu_memory_gb > 0 &&
                         cap < (size_t)(in->gpu_memory_utilization * (double)in->gpu_total_bytes)
                     ? ", capped by --gpu-memory-gb"
                     : "",
                 (double)in->gpu_used_bytes / GIB);
    else
        snprintf(buf, n, "--gpu-memory-gb %.1f less %.1f GiB for the CUDA context",
                 in->gpu_memory_gb, (double)in->gpu_used_bytes / GIB);
    return buf;
}

static void offload_words(const struct planner_inputs *in, char *buf, size_t n) {
    struct planner_inputs t = *in;
    if (t.policy == PLANNER_POLICY_AUTO) t.policy = PLANNER_POLICY_STREAM; /* vLLM's meaning */
    int gb = offload_needed(&t);
    if (gb > 0)
        snprintf(buf, n, "--cpu-offload-gb %d makes max-model-len %d fit", gb, mml_of(in));
    else
        snprintf(buf, n, "no --cpu-offload-gb makes max-model-len %d fit in this budget",
                 mml_of(in));
}

/* The largest max-model-len (whole blocks) placement p fits: shorter sequences also shrink the
 * workspaces, so search rather than divide. */
static int largest_len_for(const struct planner_inputs *in, const struct placement *p) {
    struct planner_inputs t = *in;
    struct planner_memory m;
    struct placement q = *p;
    struct tl_err e;
    int lo = 0, hi = mml_of(in) / in->block_size;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        t.max_model_len = mid * in->block_size;
        if (memory_of(&t, &q, &m, &e) == TL_OK && m.fits)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo * in->block_size;
}

static enum tl_status check_view(const struct planner_inputs *in, const struct placement *pl,
                                 struct planner_memory *out, struct tl_err *err) {
    struct placement p;
    if (pl)
        p = *pl;
    else
        placement_init_resident(&p, in->cfg.n_layers, planner_gpu_dtype(in), in->block_size);
    enum tl_status st = memory_of(in, &p, out, err);
    if (st != TL_OK) return st;
    if (out->fits) return TL_OK;
    char budget[160], off[160];
    budget_words(in, budget, sizeof budget);
    offload_words(in, off, sizeof off);
    enum tl_dtype dt = planner_gpu_dtype(in);
    double act = (double)(out->gpu_activation_bytes + out->gpu_workspace_bytes) / GIB;
    /* weights count their staging slots, as gpu_backend.c reports them */
    double w = (double)(out->gpu_weight_bytes + out->gpu_staging_bytes) / GIB;
    if (!out->gpu_fits)
        return tl_fail(err, TL_ERR_NOMEM,
                       "the weights on the GPU need %.1f GiB (%s%s) plus %.1f GiB of activations "
                       "and workspace, but the GPU budget is %.1f GiB (%s): %s, or raise "
                       "--gpu-memory-utilization / --gpu-memory-gb, or lower "
                       "--max-num-batched-tokens",
                       w, dtype_torch_name(dt),
                       out->gpu_staging_bytes ? ", streaming slots included" : "", act,
                       (double)out->gpu_budget_bytes / GIB, budget, off);
    if (!out->host_fits)
        return tl_fail(err, TL_ERR_NOMEM,
                       "the weights kept in host RAM need %.1f GiB plus %.1f GiB of CPU buffers, "
                       "but %.1f GiB of host memory is available: offload fewer weights "
                       "(--cpu-offload-gb) or free host memory",
                       (double)out->host_weight_bytes / GIB, (double)out->host_buffer_bytes / GIB,
                       (double)out->host_budget_bytes / GIB);
    if (in->num_gpu_blocks_override > 0 && out->fit_max_model_len == 0)
        return tl_fail(err, TL_ERR_NOMEM,
                       "--num-gpu-blocks-override %d needs %.2f GiB, %.2f GiB is free",
                       in->num_gpu_blocks_override,
                       (double)in->num_gpu_blocks_override * (double)p.kv_gpu_block_bytes / GIB,
                       (double)out->gpu_kv_free_bytes / GIB);
    size_t need = out->gpu_fixed_bytes + out->kv_seq_gpu_bytes;
    char lower[96];
    int fit = largest_len_for(in, &p);
    if (fit >= in->block_size)
        snprintf(lower, sizeof lower, "lower --max-model-len to %d", fit);
    else
        snprintf(lower, sizeof lower, "no max-model-len fits now");
    if (out->kv_seq_gpu_bytes > out->gpu_kv_free_bytes || out->kv_seq_host_bytes == 0)
        return tl_fail(err, TL_ERR_NOMEM,
                       "max-model-len %d needs %.2f GiB of KV per sequence, %.2f GiB is free "
                       "after weights (%.1f GiB) and activations: %s, or %s, or raise the GPU "
                       "budget by %.2f GiB (%s)",
                       mml_of(in), (double)out->kv_seq_gpu_bytes / GIB,
                       (double)out->gpu_kv_free_bytes / GIB, w, lower, off,
                       (double)sat_sub(need, out->gpu_budget_bytes) / GIB, budget);
    return tl_fail(
        err, TL_ERR_NOMEM,
        "max-model-len %d needs %.2f GiB of host KV per sequence for the CPU layers, "
        "%.2f GiB of host memory is free after their weights: %s, or free host memory",
        mml_of(in), (double)out->kv_seq_host_bytes / GIB,
        (double)sat_sub(out->host_budget_bytes, out->host_weight_bytes + out->host_buffer_bytes) /
            GIB,
        lower);
}

/* ---------------- the plan ---------------- */

static void make_reason(const struct planner_inputs *in, struct planner_result *r) {
    const struct placement *pl = &r->pl;
    const struct planner_prediction *e = &r->expected;
    int R = placement_count(pl, PLACEMENT_GPU_RESIDENT);
    int S = placement_count(pl, PLACEMENT_GPU_STREAMED), C = placement_count(pl, PLACEMENT_CPU);
    double model = (double)sizes_model_bytes(&in->cfg, pl->gpu_dtype) / GIB;
    char *b = r->reason;
    size_t n = sizeof r->reason;
    if (in->tensor_parallel_size > 1) {
        snprintf(b, n,
                 "split over %d GPUs (tensor parallel), everything fits on each: %.1f GiB of "
                 "weights per GPU, %.1f GiB of KV (%d sequences of %d tokens); all-reduces "
                 "take %.2f of %.2f ms per step at batch %d",
                 in->tensor_parallel_size, (double)r->mem.gpu_weight_bytes / GIB,
                 (double)r->mem.gpu_kv_bytes / GIB,
                 r->mem.num_blocks / ((expected_len_of(in) + in->block_size - 1) / in->block_size),
                 expected_len_of(in), e->tp_comm_s * 1e3, e->step_s * 1e3, e->concurrency);
        return;
    }
    if (S == 0 && C == 0 && pl->lm_head == PLACEMENT_GPU_RESIDENT &&
        pl->embed == PLACEMENT_GPU_RESIDENT) {
        snprintf(b, n,
                 "everything fits on the GPU: %d layers resident, %.1f GiB of KV (%d sequences "
                 "of %d tokens)",
                 R, (double)r->mem.gpu_kv_bytes / GIB,
                 r->mem.num_blocks / ((expected_len_of(in) + in->block_size - 1) / in->block_size),
                 expected_len_of(in));
        return;
    }
    double st = e->step_s * 1e3;
    int w = snprintf(b, n,
                     "%.1f GiB of weights and the KV of %d x %d tokens exceed the %.1f GiB "
                     "budget: %d layers stay resident",
                     model, e->concurrency, expected_len_of(in),
                     (double)r->mem.gpu_budget_bytes / GIB, R);
    if (S > 0 && w > 0 && (size_t)w < n)
        w += snprintf(b + w, n - (size_t)w, ", %d stream (PCIe busy %.0f of %.0f ms per step)", S,
                      e->detail.pcie_s * 1e3, st);
    if (C > 0 && w > 0 && (size_t)w < n)
        w += snprintf(b + w, n - (size_t)w, ", the CPU computes %d (%.0f ms)%s%s", C,
                      e->detail.cpu_s * 1e3, S > 0 ? " while PCIe streams, both busy at once" : "",
                      placement_guests(pl) ? " (prefill chunks run them on the GPU)" : "");
    if (pl->lm_head != PLACEMENT_GPU_RESIDENT && w > 0 && (size_t)w < n)
        w += snprintf(b + w, n - (size_t)w, ", lm_head %s",
                      pl->lm_head == PLACEMENT_CPU ? "on the CPU" : "streamed");
    if (pl->embed == PLACEMENT_CPU && w > 0 && (size_t)w < n)
        snprintf(b + w, n - (size_t)w, ", embedding gathered from host RAM");
}

/* The smallest host RAM (GiB, tenths) with which the request fits as asked; -1 if none. */
static double smallest_fitting_host_gb(const struct planner_inputs *in) {
    struct planner_inputs t = *in;
    t.host_bytes = 0; /* unlimited */
    if (!any_fits(&t)) return -1;
    double lo = 0, hi = 1 << 16;
    while (hi - lo > 0.1) {
        double mid = 0.5 * (lo + hi);
        t.host_bytes = (size_t)(mid * GIB);
        if (any_fits(&t))
            hi = mid;
        else
            lo = mid;
    }
    return ceil(hi * 10) / 10;
}

static enum tl_status nothing_fits(const struct planner_inputs *in, struct tl_err *err) {
    struct placement p;
    struct planner_memory m;
    placement_init_resident(&p, in->cfg.n_layers, planner_gpu_dtype(in), in->block_size);
    enum tl_status st = memory_of(in, &p, &m, err);
    if (st != TL_OK) return st;
    int len = largest_fitting_len(in);
    double gb = smallest_fitting_gpu_gb(in);
    double host = in->host_bytes > 0 ? smallest_fitting_host_gb(in) : -1;
    char a[96], b[96], h[128] = "";
    if (len >= in->block_size)
        snprintf(a, sizeof a, "--max-model-len %d", len);
    else
        snprintf(a, sizeof a, "no max-model-len fits this budget");
    if (gb > 0)
        snprintf(b, sizeof b, "--gpu-memory-gb %.1f", gb);
    else
        snprintf(b, sizeof b, "no GPU budget alone fits it");
    if (host > 0)
        snprintf(h, sizeof h, "; or %.1f GiB of free host RAM (%.1f GiB now, --host-memory-gb)",
                 host, (double)in->host_bytes / GIB);
    return tl_fail(err, TL_ERR_NOMEM,
                   "nothing fits: %.1f GiB of weights, and %.2f GiB of KV for one sequence of "
                   "max-model-len %d with every layer on the GPU, in a GPU budget of %.1f GiB "
                   "and %.1f GiB of host RAM; nearest settings that fit: %s; or %s%s",
                   (double)sizes_model_bytes(&in->cfg, planner_gpu_dtype(in)) / GIB,
                   (double)m.kv_seq_gpu_bytes / GIB, mml_of(in), (double)m.gpu_budget_bytes / GIB,
                   (double)m.host_budget_bytes / GIB, a, b, h);
}

static enum tl_status plan_view(const struct planner_inputs *in, const struct ceilings *ce,
                                struct planner_result *out, struct tl_err *err) {
    memset(out, 0, sizeof *out);
    if (in->cfg.n_layers < 1 || in->cfg.n_layers > PLACEMENT_MAX_LAYERS)
        return tl_fail(err, TL_ERR_UNSUPPORTED, "the planner handles 1..%d layers, not %d",
                       PLACEMENT_MAX_LAYERS, in->cfg.n_layers);
    if (in->expected_batch < 1)
        return tl_fail(err, TL_ERR_INVALID, "--expected-batch must be at least 1");
    struct placement probe;
    struct planner_memory pm;
    placement_init_resident(&probe, in->cfg.n_layers, planner_gpu_dtype(in), in->block_size);
    enum tl_status st = memory_of(in, &probe, &pm, err); /* validates the inputs */
    if (st != TL_OK) return st;
    struct search s = {.in = in, .ce = ce, .batch = in->expected_batch};
    run_search(&s);
    if (!s.found) return nothing_fits(in, err);
    out->pl = s.best;
    out->mem = s.best_mem;
    out->expected = s.best_pred;
    out->candidates = s.candidates;
    for (int i = 0; i < PLANNER_NBATCH; i++) {
        predict(in, ce, &out->pl, report_batches[i], &out->pred[i]);
        struct search b = {.in = in, .ce = ce, .batch = report_batches[i]};
        run_search(&b);
        out->candidates += b.candidates;
        out->best[i] = b.best_pred;
        placement_describe(&b.best, out->best_desc[i], sizeof out->best_desc[i]);
    }
    /* one prefill chunk of one sequence (with guests, the CPU layers run on the GPU for it) */
    out->prefill_s = prefill_chunk_s(in, ce, &out->pl, in->max_num_batched_tokens);
    make_reason(in, out);
    return TL_OK;
}

/* ---------------- tensor parallel and the public entry points ---------------- */

enum tl_status planner_rank_inputs(const struct planner_inputs *in, struct planner_inputs *out,
                                   struct tl_err *err) {
    *out = *in;
    int n = in->tensor_parallel_size;
    if (n <= 1 || in->cfg_per_gpu) return TL_OK;
    enum tl_status st = tp_check(&in->cfg, n, err);
    if (st != TL_OK) return st;
    if (in->cpu_offload_gb > 0)
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "--cpu-offload-gb with --tensor-parallel-size %d: offload is not combined "
                       "with tensor parallelism; every GPU keeps its share of the weights resident",
                       n);
    tp_rank_config(&in->cfg, n, 0, &out->cfg);
    out->cpu_offload_gb = 0;
    out->cfg_per_gpu = true;
    return TL_OK;
}

double planner_tp_comm_s(const struct planner_inputs *in, const struct ceilings *ce, int tokens,
                         int rows) {
    int n = in->tensor_parallel_size;
    if (n <= 1) return 0;
    double link = (in->tp_link_gbps > 0 ? in->tp_link_gbps : ce->pcie_h2d_gbps) * 1e9;
    double lat =
        (in->tp_link_latency_us > 0 ? in->tp_link_latency_us : PLANNER_TP_LATENCY_US) * 1e-6;
    if (!(link > 0)) return 0;
    const struct config *c = &in->cfg;
    double es = (double)dtype_size(planner_gpu_dtype(in));
    int part = in->cfg_per_gpu ? c->vocab_size : tp_vocab_part(c->vocab_size, n);
    double frac = (double)(n - 1) / n;
    double ar = 2.0 * frac * (double)tokens * c->hidden_size * es / link + lat;
    double gather = frac * (double)rows * n * part * es / link + lat;
    return (2.0 * c->n_layers + 1.0) * ar + gather;
}

enum tl_status planner_memory_of(const struct planner_inputs *in, struct placement *pl,
                                 struct planner_memory *out, struct tl_err *err) {
    struct planner_inputs v;
    memset(out, 0, sizeof *out);
    enum tl_status st = planner_rank_inputs(in, &v, err);
    return st == TL_OK ? memory_of(&v, pl, out, err) : st;
}

int planner_offload_needed_gb(const struct planner_inputs *in) {
    struct planner_inputs v;
    struct tl_err e;
    if (planner_rank_inputs(in, &v, &e) != TL_OK) return -1;
    return offload_needed(&v);
}

/* A failure of a tensor-parallel plan: the next size that would fit, resident, if any. */
static void suggest_larger_tp(const struct planner_inputs *in, struct tl_err *err) {
    if (in->tensor_parallel_size <= 1 || in->cfg_per_gpu) return;
    for (int w = in->tensor_parallel_size + 1; w <= 8; w++) {
        struct planner_inputs t = *in, v;
        struct tl_err e;
        struct placement p;
        struct planner_memory m;
        t.tensor_parallel_size = w;
        if (planner_rank_inputs(&t, &v, &e) != TL_OK) continue;
        placement_init_resident(&p, v.cfg.n_layers, planner_gpu_dtype(&v), v.block_size);
        if (memory_of(&v, &p, &m, &e) != TL_OK || !m.fits) continue;
        size_t len = strlen(err->msg);
        snprintf(err->msg + len, sizeof err->msg - len,
                 "; or --tensor-parallel-size %d fits (%.1f GiB of weights per GPU)", w,
                 (double)m.gpu_weight_bytes / GIB);
        return;
    }
}

enum tl_status planner_check(const struct planner_inputs *in, const struct placement *pl,
                             struct planner_memory *out, struct tl_err *err) {
    struct planner_inputs v;
    memset(out, 0, sizeof *out);
    enum tl_status st = planner_rank_inputs(in, &v, err);
    if (st == TL_OK) st = check_view(&v, pl, out, err);
    if (st == TL_ERR_NOMEM) suggest_larger_tp(in, err);
    return st;
}

enum tl_status planner_plan(const struct planner_inputs *in, const struct ceilings *ce,
                            struct planner_result *out, struct tl_err *err) {
    struct planner_inputs v;
    memset(out, 0, sizeof *out);
    enum tl_status st = planner_rank_inputs(in, &v, err);
    if (st == TL_OK) st = plan_view(&v, ce, out, err);
    if (st == TL_ERR_NOMEM) suggest_larger_tp(in, err);
    return st;
}
