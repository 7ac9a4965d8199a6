/* planner_report: the plan as `tierlm plan` prints it (and the engine logs it): the inputs and
 * ceilings it rests on, the placement, bytes per tier, predicted decode tok/s per batch size
 * next to the best placement for that batch, the prefill estimate and the reason. */
#include <string.h>

#include "planner.h"
#include "sizes.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

static const char *policy_name(enum planner_policy p) {
    return p == PLANNER_POLICY_STREAM ? "stream" : p == PLANNER_POLICY_CPU ? "cpu" : "auto";
}

static void print_ceilings(FILE *f, const struct ceilings *ce) {
    fprintf(f, "GPU   %s (%s): HBM copy %.0f GB/s, bf16 GEMM %.0f TFLOP/s, PCIe H2D %.1f GB/s",
            ce->gpu_name, ce->gpu_measured ? "measured" : "assumed", ce->gpu_hbm_gbps,
            ce->gpu_gemm_tflops, ce->pcie_h2d_gbps);
    if (ce->gpu_measured) fprintf(f, " (%.1f while the CPU reads memory)", ce->pcie_h2d_busy_gbps);
    fprintf(f, "\nCPU   %s, %d threads: read %.1f GB/s", ce->cpu_model, ce->cpu_threads,
            ce->cpu_read_gbps);
    if (ce->gpu_measured) fprintf(f, " (%.1f while PCIe streams)", ce->cpu_read_busy_gbps);
    fprintf(f,
            ", bf16 GEMV %.1f GB/s (m=1) %.1f GB/s (m=8), GEMM path %.0f / %.0f GFLOP/s "
            "(m=16/64), sgemm %.0f GFLOP/s, attention %.1f GFLOP/s\n",
            ce->cpu_gemv1_gbps, ce->cpu_gemv8_gbps, ce->cpu_mm16_gflops, ce->cpu_mm64_gflops,
            ce->cpu_sgemm_gflops, ce->cpu_attn_gflops);
}

static void row(FILE *f, const char *name, size_t gpu, size_t host) {
    fprintf(f, "  %-22s", name);
    if (gpu)
        fprintf(f, "%9.2f GiB", (double)gpu / GIB);
    else
        fprintf(f, "%13s", "-");
    if (host)
        fprintf(f, "%11.2f GiB\n", (double)host / GIB);
    else
        fprintf(f, "%15s\n", "-");
}

/* Tensor parallel: how the model splits and what the communication is assumed to cost. */
static void print_tp(FILE *f, const struct planner_inputs *whole, const struct planner_inputs *v,
                     const struct ceilings *ce, enum tl_dtype dt) {
    const struct config *c = &whole->cfg, *g = &v->cfg;
    fprintf(f,
            "tensor parallel over %d GPUs, planned per GPU (rank 0): %d of %d attention heads, "
            "%d of %d KV heads%s, intermediate %d of %d, %d of %d vocabulary rows; %.2f GiB of "
            "weights and %.0f KiB of KV per token on each\n",
            v->tensor_parallel_size, g->n_heads, c->n_heads, g->n_kv_heads, c->n_kv_heads,
            c->n_kv_heads < v->tensor_parallel_size ? " (replicated)" : "", g->intermediate_size,
            c->intermediate_size, g->vocab_size, c->vocab_size,
            (double)sizes_model_bytes(g, dt) / GIB,
            (double)g->n_layers * (double)sizes_kv_token_layer_bytes(g, dt) / 1024);
    fprintf(f,
            "      all-reduce of tokens x %d x %zu bytes after the embedding and each layer's "
            "o_proj and down_proj (%d per step) over a %.1f GB/s link (%s), %.0f us each; "
            "NCCL buffers %.2f GiB (assumed)\n",
            c->hidden_size, dtype_size(dt), 2 * c->n_layers + 1,
            v->tp_link_gbps > 0 ? v->tp_link_gbps : ce->pcie_h2d_gbps,
            v->tp_link_gbps > 0 ? "--tp-link-gbps" : "the PCIe H2D rate: no NVLink assumed",
            v->tp_link_latency_us > 0 ? v->tp_link_latency_us : PLANNER_TP_LATENCY_US,
            (double)PLANNER_TP_COMM_RESERVE / GIB);
}

void planner_print(FILE *f, const struct planner_inputs *whole, const struct ceilings *ce,
                   const struct planner_result *r) {
    struct planner_inputs view;
    struct tl_err e;
    const struct planner_inputs *in = whole;
    if (planner_rank_inputs(whole, &view, &e) == TL_OK) in = &view;
    const struct config *c = &whole->cfg;
    const struct placement *pl = &r->pl;
    const struct planner_memory *m = &r->mem;
    enum tl_dtype dt = pl->gpu_dtype;
    size_t model = sizes_model_bytes(c, dt);
    fprintf(f, "model %s, %d layers, %s: %.2f GiB of weights (%.2f GB), %.0f KiB of KV per token\n",
            c->arch == CONFIG_ARCH_QWEN2 ? "Qwen2" : "Llama", c->n_layers, dtype_torch_name(dt),
            (double)model / GIB, (double)model / 1e9,
            (double)c->n_layers * (double)sizes_kv_token_layer_bytes(c, dt) / 1024);
    print_ceilings(f, ce);
    if (in->tensor_parallel_size > 1) print_tp(f, whole, in, ce, dt);
    fprintf(f,
            "run   GPU budget %.2f GiB%s, max-model-len %d, max-num-seqs %d, %d tokens per step, "
            "expected batch %d, policy %s",
            (double)m->gpu_budget_bytes / GIB, in->tensor_parallel_size > 1 ? " per GPU" : "",
            in->max_model_len > 0 ? in->max_model_len : c->max_position_embeddings,
            in->max_num_seqs, in->max_num_batched_tokens, in->expected_batch,
            policy_name(in->policy));
    if (in->cpu_offload_gb >= 0) fprintf(f, ", --cpu-offload-gb %g", in->cpu_offload_gb);
    fprintf(f, "\n\n");

    char desc[PLACEMENT_MAX_LAYERS + 64];
    placement_describe(pl, desc, sizeof desc);
    int R = placement_count(pl, PLACEMENT_GPU_RESIDENT);
    int S = placement_count(pl, PLACEMENT_GPU_STREAMED), C = placement_count(pl, PLACEMENT_CPU);
    fprintf(f, "placement: %d resident, %d streamed, %d on the CPU (R/S/C per layer, in order)\n",
            R, S, C);
    fprintf(f, "  %s\n", desc);
    if (pl->stream_slots)
        fprintf(f, "  %d staging slot%s of %.0f MiB", pl->stream_slots,
                pl->stream_slots > 1 ? "s" : "", (double)pl->stream_slot_bytes / (1 << 20));
    if (placement_guests(pl))
        fprintf(
            f, "%s1 slot of %.0f MiB for the CPU layers in steps of %d tokens or more (prefill)",
            pl->stream_slots ? ", and " : "  ",
            (double)sizes_layer_bytes(&in->cfg, pl->gpu_dtype) / (1 << 20), pl->guest_min_tokens);
    if (pl->stream_slots || placement_guests(pl)) fprintf(f, "\n");

    fprintf(f, "\nmemory                   %s           host\n",
            in->tensor_parallel_size > 1 ? "per GPU" : "    GPU");
    row(f, "weights", m->gpu_weight_bytes, m->host_weight_bytes);
    row(f, "staging slots", m->gpu_staging_bytes, 0);
    row(f, "activations, buffers", m->gpu_activation_bytes,
        m->host_buffer_bytes - in->host_swap_bytes);
    row(f, "workspace + cuBLAS", m->gpu_workspace_bytes, 0);
    if (m->gpu_comm_bytes) row(f, "NCCL (assumed)", m->gpu_comm_bytes, 0);
    row(f, "KV cache", m->gpu_kv_bytes, m->host_kv_bytes);
    if (in->host_swap_bytes) row(f, "KV swap tier", 0, in->host_swap_bytes);
    size_t gt = m->gpu_fixed_bytes + m->gpu_kv_bytes;
    size_t ht = m->host_weight_bytes + m->host_buffer_bytes + m->host_kv_bytes;
    row(f, "total", gt, ht);
    fprintf(f, "  %-22s%9.2f GiB", "budget", (double)m->gpu_budget_bytes / GIB);
    if (m->host_budget_bytes != (size_t)-1)
        fprintf(f, "%11.2f GiB\n", (double)m->host_budget_bytes / GIB);
    else
        fprintf(f, "%15s\n", "unlimited");
    fprintf(f, "  KV: %d blocks of %d tokens = %lld tokens (max-model-len fits up to %d)\n",
            m->num_blocks, pl->block_size, (long long)m->num_blocks * pl->block_size,
            m->fit_max_model_len);

    int len = in->expected_len > 0 ? in->expected_len : 1024;
    int mml = in->max_model_len > 0 ? in->max_model_len : c->max_position_embeddings;
    if (len > mml) len = mml;
    fprintf(f,
            "\npredicted decode, sequences of %d tokens (a prediction from the ceilings above, "
            "not a measurement)\n",
            len);
    int plen = in->expected_prompt_len > 0 ? in->expected_prompt_len : len / 2;
    if (plen >= len) plen = len - 1;
    fprintf(f, "  batch  seqs   step ms    tok/s   GPU ms   CPU ms  PCIe ms  e2e tok/s | best for "
               "this batch (e2e)\n");
    bool capped = false;
    for (int i = 0; i < PLANNER_NBATCH; i++) {
        const struct planner_prediction *p = &r->pred[i], *b = &r->best[i];
        bool cap = p->concurrency < p->batch && p->concurrency < in->max_num_seqs;
        capped |= cap;
        fprintf(f, "  %5d %5d%s %8.1f %8.1f %8.1f %8.1f %8.1f %10.1f | %8.1f tok/s", p->batch,
                p->concurrency, cap ? "*" : " ", p->step_s * 1e3, p->tok_s, p->detail.gpu_s * 1e3,
                p->detail.cpu_s * 1e3, p->detail.pcie_s * 1e3, p->e2e_tok_s, b->e2e_tok_s);
        if (b->e2e_tok_s > p->e2e_tok_s * 1.02) {
            const char *sp = strchr(r->best_desc[i], ' ');
            int nR = 0, nS = 0, nC = 0;
            for (const char *q = r->best_desc[i]; *q && q != sp; q++)
                nR += *q == 'R', nS += *q == 'S', nC += *q == 'C';
            fprintf(f, " with %dR/%dS/%dC%s (--expected-batch %d)", nR, nS, nC, sp ? sp : "",
                    p->batch);
        } else {
            fprintf(f, " (this placement)");
        }
        fprintf(f, "\n");
    }
    if (capped) fprintf(f, "  * the KV holds only this many sequences of %d tokens at once\n", len);
    fprintf(f,
            "  e2e: output tokens/s of a batch of prompts of %d tokens (--expected-prompt-len), "
            "their prefill included; it ranks the placements\n",
            plen);
    if (in->tensor_parallel_size > 1)
        fprintf(f,
                "  of each step, tensor-parallel communication: %.2f / %.2f / %.2f / %.2f ms "
                "(batch %d / %d / %d / %d)\n",
                r->pred[0].tp_comm_s * 1e3, r->pred[1].tp_comm_s * 1e3, r->pred[2].tp_comm_s * 1e3,
                r->pred[3].tp_comm_s * 1e3, r->pred[0].batch, r->pred[1].batch, r->pred[2].batch,
                r->pred[3].batch);
    if (r->prefill_s > 0)
        fprintf(f, "  prefill: one %d-token chunk in %.0f ms (%.0f tok/s)",
                in->max_num_batched_tokens, r->prefill_s * 1e3,
                in->max_num_batched_tokens / r->prefill_s);
    if (placement_guests(&r->pl))
        fprintf(f,
                "; steps of %d tokens or more run the CPU layers on the GPU, their weights "
                "streamed through one more slot",
                r->pl.guest_min_tokens);
    fprintf(f, "\n");
    fprintf(f, "\nreason: %s\n", r->reason);
}
