/* stepmodel: unit durations from roofline terms (bytes / bandwidth, flops / rate, whichever is
 * larger) plus measured fixed costs, then an event replay of NSTEPS steps: a chain of units on
 * the GPU or CPU, and a FIFO of weight copies on PCIe into a ring of staging slots. */
#include "stepmodel.h"

#include <stdbool.h>
#include <string.h>

#include "sizes.h"

/* Constants, each from a measurement on the H100 machine (docs/perf-notes.md, ceilings.md):
 * - GEMV (m <= 16) reads a layer's weights at 0.985 of the D2D copy figure (187.8 us per
 *   551 MB layer against 2,970 GB/s); cuBLAS for m = 17..64 at ~0.87 ("GEMM m=1..64 ...
 *   2.6 TB/s of weights"); compute-bound GEMMs at 0.95 of the 8192^3 rate (751-789 vs 794).
 * - Decode attention reads the KV at 0.83 of the copy figure (b=64 ctx 640: 67.9 us), never
 *   under 6 us; prefill attention (mma.sync) runs at 0.16 of the GEMM ceiling (125 TFLOP/s).
 * - The rest of a GPU layer (two rmsnorms, RoPE + KV write, SiLU, the attention reduce, launch
 *   gaps) is 22 us, and a step costs 50 us of host work besides: fitted to the all-resident
 *   14B batch-1 step, 10.89 ms measured, of which the matmuls are 9.5 ms.
 * - A CPU layer dispatches ~12 parallel loops (norms, grouped q/k/v, RoPE, attention, o,
 *   grouped gate/up, SiLU, down); their cost is the calibrated pool dispatch.
 * - A hidden-state hop between GPU and CPU: 20 us of copy + event latency plus its bytes.
 * - Host sampling: 0.25 ns per logit (a greedy scan of the vocabulary). */
#define GPU_GEMV_EFF       0.985
#define GPU_GEMM_BW_EFF    0.87
#define GPU_GEMM_FLOP_EFF  0.95
#define GPU_ATTN_BW_EFF    0.83
#define GPU_ATTN_MIN_S     6e-6
#define GPU_PREFILL_ATTN   0.16
#define GPU_LAYER_FIXED_S  22e-6
#define GPU_EAGER_EXTRA_S  2.5e-6 /* split runs replay no graphs: 11.01 vs 10.89 ms / 48 */
#define STEP_FIXED_S       50e-6
#define CPU_LAYER_DISPATCH 12
#define HOP_LATENCY_S      20e-6
/* Fitted, not yet explained: with more than one row a step, each CPU layer of a split step
 * costs this much beyond its parts (the CPU lane's own time and the GPU's matched the model;
 * the lane crossings took 23 ms at batch 16 with 6 CPU layers and 21 ms at batch 64 with 10
 * where the model had 1-2 ms; steps 1.24 / 1.18 of the plan, 2.45 / 3.0 ms a CPU layer; at
 * batch 1, 4 CPU layers, 1.01). Suspects: the pageable crossing copies (two buffers when the
 * MLP output is pending) and the AMX tile state the pool threads save and restore. */
#define CPU_LAYER_SPLIT_EXTRA_S 2.7e-3
/* Sampling: the engine samples on the GPU when the GPU computes lm_head (kern_sample: ~40 us
 * a step, only the ids come back); with lm_head on the CPU the logits are on the host and the
 * CPU backend's sample op samples them, one row per pool thread at a time (cpu/cpu_ops.c), so
 * a step costs ceil(rows / threads) rows of HOST_SAMPLE_S_PER_LOGIT per logit each.
 * 3 ns a logit: the op at temperature 1 on the H100 host's 16 threads (bench_sampler, vocabulary
 * 152,064: 1.46 ns a logit at batch 1, 4.4 at 16, 3.0 at 64 per thread, 1.83 ms for the
 * 64-row step; top-p 0.9 costs about twice that, greedy a fifth). It was 16 ns before the
 * sampler's vector passes (157 ms for 64 serial rows on that host). */
#define GPU_SAMPLE_S            40e-6
#define HOST_SAMPLE_S_PER_LOGIT 3e-9
/* DMA from pinned memory takes this much of the host's read bandwidth per byte it moves (the
 * H100 host: 96 GB/s of CPU reads alone, 64 while PCIe pulled 47 GB/s); used when the
 * calibration's loaded read is no measurement (faster than the unloaded one). */
#define DMA_READ_SHARE     0.7
#define GEMV_MAX_M         16                  /* the GPU's GEMV/cuBLAS switch (kern_matmul) */
#define CPU_GEMV_MAX_M     8                   /* MATMUL_GEMV_MAX_M (cpu/matmul.h) */
#define STREAM_PIECE_BYTES (8.0 * 1024 * 1024) /* gpu_backend.c: weight copies go in pieces */
#define PROBE_PARAMS       (13824.0 * 5120.0)

#define NSTEPS    6
#define MAX_UNITS (PLACEMENT_MAX_LAYERS + 2)

enum { LOC_GPU = 0, LOC_CPU = 1 };

struct unit {
    int loc;
    int streamed;
    double dur_s;  /* compute */
    double copy_s; /* weight copy, streamed units */
    int guest;     /* a CPU layer run by the GPU: copied through the one guest slot */
};

struct rates {
    double hbm, gpu_flops, pcie, d2h; /* bytes/s, flop/s */
    double cpu_read, cpu_attn;
    double cpu_slow; /* >= 1: memory-bound CPU time multiplier while PCIe DMA also reads */
    const struct ceilings *ce;
    double piece_wait; /* an upload's mean wait behind the weight piece the copy engine is on */
};

/* The ceilings in bytes and flop per second, nothing slowed by sharing. */
static struct rates rates_of(const struct ceilings *ce) {
    return (struct rates){ce->gpu_hbm_gbps * 1e9,
                          ce->gpu_gemm_tflops * 1e12,
                          ce->pcie_h2d_gbps * 1e9,
                          ce->pcie_d2h_gbps * 1e9,
                          ce->cpu_read_gbps * 1e9,
                          ce->cpu_attn_gflops * 1e9,
                          1.0,
                          ce,
                          0.0};
}

static double max2(double a, double b) {
    return a > b ? a : b;
}

static double gpu_matmul_s(const struct rates *r, double params, double bytes, int m) {
    double eff = m <= GEMV_MAX_M ? GPU_GEMV_EFF : GPU_GEMM_BW_EFF;
    return max2(bytes / (r->hbm * eff), 2.0 * m * params / (r->gpu_flops * GPU_GEMM_FLOP_EFF));
}

/* Seconds per parameter of cpu_matmul with m rows: linear between the calibrated points of
 * each path (GEMV m = 1 and 8, GEMM m = 16 and 64), never faster than reading the weights. */
static double cpu_matmul_s_per_param(const struct rates *r, int m, double es) {
    const struct ceilings *ce = r->ce;
    double a1 = 2.0 / (ce->cpu_gemv1_gbps * 1e9), a8 = 2.0 / (ce->cpu_gemv8_gbps * 1e9);
    double read = es / (ce->cpu_gemv1_gbps * 1e9) * r->cpu_slow;
    if (m <= CPU_GEMV_MAX_M) return (a1 + (a8 - a1) * (m - 1) / 7.0) * (es / 2.0) * r->cpu_slow;
    double g16 = 32.0 / (ce->cpu_mm16_gflops * 1e9), g64 = 128.0 / (ce->cpu_mm64_gflops * 1e9);
    return max2(g16 + (g64 - g16) * (m - 16) / 48.0, read);
}

/* Attention flops of a step: every new token attends over its sequence's context. */
static double attn_flops(const struct config *c, const struct stepmodel_step *s) {
    double per_seq_new = (double)s->n_tokens / s->n_seqs;
    double avg_ctx = s->ctx - (per_seq_new - 1) / 2.0; /* causal within the new tokens */
    return 4.0 * c->n_heads * c->head_dim * s->n_tokens * avg_ctx;
}

/* Bytes per weight the CPU reads: the checkpoint's dtype (the host model). */
static double host_es(const struct config *c) {
    return dtype_is_float_compute(c->dtype) ? (double)dtype_size(c->dtype) : 2.0;
}

static double gpu_layer_s(const struct config *c, const struct placement *p, const struct rates *r,
                          const struct stepmodel_step *s) {
    double es = (double)dtype_size(p->gpu_dtype);
    double params = sizes_layer_matmul_params(c), T = s->n_tokens;
    double t = gpu_matmul_s(r, params, (double)sizes_layer_bytes(c, p->gpu_dtype), s->n_tokens);
    double kv = (double)s->n_seqs * s->ctx * (double)sizes_kv_token_layer_bytes(c, p->gpu_dtype);
    double attn = max2(GPU_ATTN_MIN_S, kv / (r->hbm * GPU_ATTN_BW_EFF));
    if (s->n_tokens > s->n_seqs)
        attn = max2(attn, attn_flops(c, s) / (r->gpu_flops * GPU_PREFILL_ATTN));
    double elementwise = T * (8.0 * c->hidden_size + 3.0 * c->intermediate_size) * es / r->hbm;
    bool split = placement_count(p, PLACEMENT_GPU_RESIDENT) < p->n_layers ||
                 p->embed != PLACEMENT_GPU_RESIDENT || p->lm_head != PLACEMENT_GPU_RESIDENT;
    return t + attn + elementwise + GPU_LAYER_FIXED_S + (split ? GPU_EAGER_EXTRA_S : 0);
}

static double cpu_layer_s(const struct config *c, const struct rates *r,
                          const struct stepmodel_step *s) {
    double T = s->n_tokens;
    double t = sizes_layer_matmul_params(c) * cpu_matmul_s_per_param(r, s->n_tokens, host_es(c));
    double kv = (double)s->n_seqs * s->ctx * (double)sizes_kv_token_layer_bytes(c, TL_DTYPE_F32);
    double attn = max2(kv / r->cpu_read * r->cpu_slow, attn_flops(c, s) / r->cpu_attn);
    double elementwise =
        T * (8.0 * c->hidden_size + 3.0 * c->intermediate_size) * 4.0 / r->cpu_read * r->cpu_slow;
    return t + attn + elementwise + CPU_LAYER_DISPATCH * r->ce->cpu_dispatch_us * 1e-6;
}

static double hop_s(const struct config *c, const struct rates *r, const struct stepmodel_step *s) {
    return HOP_LATENCY_S + (double)s->n_tokens * c->hidden_size * 4.0 / r->pcie;
}

/* Whether step s runs the CPU layers on the GPU as guests (placement.h). */
static bool guest_step(const struct placement *p, const struct stepmodel_step *s) {
    return placement_guests(p) && s->n_tokens >= p->guest_min_tokens;
}

static int build_units(const struct config *c, const struct placement *p, const struct rates *r,
                       const struct stepmodel_step *s, struct unit *u) {
    int n = 0;
    double es = (double)dtype_size(p->gpu_dtype);
    double lm_params = (double)c->vocab_size * c->hidden_size;
    /* embedding: a gather of the step's rows */
    double gather = (double)s->n_tokens * c->hidden_size * es;
    if (p->embed == PLACEMENT_CPU)
        u[n++] =
            (struct unit){LOC_CPU, 0, gather / r->cpu_read + r->ce->cpu_dispatch_us * 1e-6, 0, 0};
    else
        u[n++] = (struct unit){LOC_GPU, 0, gather / r->hbm + 3e-6, 0, 0};
    double t_gpu = gpu_layer_s(c, p, r, s), t_cpu = cpu_layer_s(c, r, s);
    double copy = (double)sizes_layer_bytes(c, p->gpu_dtype) / r->pcie;
    /* with a slot per streamed unit the weights stay in their slots (gpu_backend.c) */
    bool moves = placement_streamed_units(p) > p->stream_slots;
    bool guest = guest_step(p, s);
    /* a guest layer's new K/V (fp32) go to the other lane's cache: from the GPU a synchronous
     * read, then the CPU's RoPE and cache write over them; from the CPU an upload that waits
     * behind the weight piece on the copy engine when weights stream */
    double kv_bytes = 2.0 * s->n_tokens * c->n_kv_heads * c->head_dim * 4.0;
    double mirror_down = HOP_LATENCY_S + kv_bytes / r->d2h + 2.0 * kv_bytes / r->cpu_read;
    double mirror_up = HOP_LATENCY_S + kv_bytes / r->pcie + r->piece_wait;
    if (!placement_guests(p)) mirror_down = mirror_up = 0;
    double split_extra = s->n_tokens >= 2 ? CPU_LAYER_SPLIT_EXTRA_S : 0.0;
    for (int l = 0; l < p->n_layers; l++) {
        if (p->layer[l] == PLACEMENT_CPU && guest)
            u[n++] = (struct unit){LOC_GPU, 1, t_gpu + mirror_down, copy, 1};
        else if (p->layer[l] == PLACEMENT_CPU)
            u[n++] = (struct unit){LOC_CPU, 0, t_cpu + mirror_up + split_extra, 0, 0};
        else
            u[n++] = (struct unit){LOC_GPU, moves && p->layer[l] == PLACEMENT_GPU_STREAMED, t_gpu,
                                   copy, 0};
    }
    /* final norm + lm_head over the rows that want logits; tied, lm_head is the embedding */
    double lm_copy = (double)sizes_lm_head_bytes(c, p->gpu_dtype);
    double lm_bytes = lm_params * es;
    if (p->lm_head == PLACEMENT_CPU)
        u[n++] = (struct unit){LOC_CPU, 0,
                               lm_params * cpu_matmul_s_per_param(r, s->n_seqs, host_es(c)) +
                                   2 * r->ce->cpu_dispatch_us * 1e-6,
                               0, 0};
    else
        u[n++] = (struct unit){LOC_GPU, moves && p->lm_head == PLACEMENT_GPU_STREAMED,
                               gpu_matmul_s(r, lm_params, lm_bytes, s->n_seqs) + 10e-6,
                               lm_copy / r->pcie, 0};
    return n;
}

void stepmodel_predict(const struct config *c, const struct placement *p, const struct ceilings *ce,
                       const struct stepmodel_step *s, struct stepmodel_result *out) {
    memset(out, 0, sizeof *out);
    struct rates r = rates_of(ce);
    int n_cpu = placement_count(p, PLACEMENT_CPU) + (p->lm_head == PLACEMENT_CPU);
    int n_str = placement_streamed_units(p) > p->stream_slots ? placement_streamed_units(p) : 0;
    if (guest_step(p, s)) {
        n_str += n_cpu - (p->lm_head == PLACEMENT_CPU);
        n_cpu = p->lm_head == PLACEMENT_CPU;
    }
    /* PCIe DMA and CPU reads share the host's memory: when both run, both use the rates
     * measured while the other one ran. */
    if (n_cpu > 0 && n_str > 0) {
        if (ce->pcie_h2d_busy_gbps > 0) r.pcie = ce->pcie_h2d_busy_gbps * 1e9;
        double busy = ce->cpu_read_busy_gbps;
        if (!(busy > 0 && busy < ce->cpu_read_gbps)) /* read from cache, not shared memory */
            busy = max2(ce->cpu_read_gbps - DMA_READ_SHARE * r.pcie / 1e9, 0.5 * ce->cpu_read_gbps);
        if (busy > 0 && ce->cpu_read_gbps > 0) r.cpu_slow = max2(1.0, ce->cpu_read_gbps / busy);
    }
    struct unit u[MAX_UNITS];
    /* with weights streaming, an upload (a hidden state back from the CPU, a mirrored K/V)
     * queues behind half a weight piece on average (gpu_backend.c's STREAM_PIECE_BYTES) */
    if (n_str > 0) r.piece_wait = 0.5 * STREAM_PIECE_BYTES / r.pcie;
    int nu = build_units(c, p, &r, s, u);
    double hop = hop_s(c, &r, s);
    /* what the host does between steps: logits down (GPU lm_head), sampling */
    const int host_threads = ce->cpu_threads > 0 ? ce->cpu_threads : 1;
    const double row_rounds = (double)((s->n_seqs + host_threads - 1) / host_threads);
    const double sample_s = p->lm_head == PLACEMENT_CPU
                                ? row_rounds * c->vocab_size * HOST_SAMPLE_S_PER_LOGIT
                                : GPU_SAMPLE_S;
    double tail = STEP_FIXED_S + sample_s;

    /* Replay. done_ring[n % slots]: when the unit of streamed copy n finished computing, which
     * frees its slot for copy n + slots; copies are issued in ring order as soon as PCIe and
     * their slot are free. A guest's copy waits for the previous guest (one slot). */
    int slots = p->stream_slots > 0 ? p->stream_slots : 1;
    double copy_free = 0, t = 0, step_end[NSTEPS], guest_free = 0;
    double done_ring[64];
    int ring = 0; /* copies issued so far */
    double last_stall = 0, last_hops_s = 0;
    int last_hops = 0;
    if (slots > 64) slots = 64;
    for (int k = 0; k < 64; k++) done_ring[k] = 0;
    int prev_loc = LOC_GPU;
    for (int step = 0; step < NSTEPS; step++) {
        double stall = 0, hops_s = 0;
        int hops = 0;
        for (int i = 0; i < nu; i++) {
            double ready = t;
            if (u[i].loc != prev_loc && i > 0) {
                double h = hop + (u[i].loc == LOC_GPU ? r.piece_wait : 0);
                ready += h;
                hops_s += h;
                hops++;
            }
            if (u[i].streamed) {
                /* copy number `ring` goes to slot ring % slots, free once the unit `slots`
                 * copies back has run */
                double slot_free = u[i].guest      ? guest_free
                                   : ring >= slots ? done_ring[ring % slots]
                                                   : 0;
                double start = max2(copy_free, slot_free);
                double copied = start + u[i].copy_s;
                copy_free = copied;
                if (copied > ready) stall += copied - ready;
                ready = max2(ready, copied);
            }
            t = ready + u[i].dur_s;
            if (u[i].guest)
                guest_free = t;
            else if (u[i].streamed)
                done_ring[ring++ % slots] = t;
            prev_loc = u[i].loc;
        }
        /* logits to the host and sampling; the next step's ids go up with its metadata */
        t += tail;
        step_end[step] = t;
        last_stall = stall, last_hops_s = hops_s, last_hops = hops;
    }
    out->step_s = (step_end[NSTEPS - 1] - step_end[NSTEPS - 3]) / 2.0;
    out->stall_s = last_stall;
    out->hop_s = last_hops_s;
    out->hops = last_hops;
    for (int i = 0; i < nu; i++) {
        if (u[i].loc == LOC_GPU) out->gpu_s += u[i].dur_s;
        if (u[i].loc == LOC_CPU) out->cpu_s += u[i].dur_s;
        if (u[i].streamed) out->pcie_s += u[i].copy_s;
    }
    if (p->lm_head == PLACEMENT_CPU) out->cpu_s += sample_s;
}

int stepmodel_guest_min_tokens(const struct config *c, const struct placement *p,
                               const struct ceilings *ce, int max_tokens) {
    struct rates r = rates_of(ce);
    double copy = (double)sizes_layer_bytes(c, p->gpu_dtype) / r.pcie;
    /* a prefill chunk of one sequence: the CPU's cost grows with the rows, the copy does not */
    for (int T = 1; T <= max_tokens; T = T < 8 ? T + 1 : T + T / 8) {
        struct stepmodel_step s = {1, T, T};
        if (cpu_layer_s(c, &r, &s) >= copy + gpu_layer_s(c, p, &r, &s)) return T;
    }
    return 0;
}
