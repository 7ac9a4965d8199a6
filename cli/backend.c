/* backend: CPU or CUDA behind the same op table. auto takes the GPU when this build has the
 * CUDA backend and a device answers. */
#include "backend.h"

#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "matmul.h"
#include "pool.h"
#ifdef TL_HAVE_CUDA
#include "gpu_backend.h"
#include "kern.h"
#endif

bool backend_cuda_available(void) {
#ifdef TL_HAVE_CUDA
    return kern_device_count() > 0;
#else
    return false;
#endif
}

#ifdef TL_HAVE_CUDA
static void upload_progress(void *user, size_t done, size_t total) {
    (void)user;
    if (total > ((size_t)1 << 30))
        fprintf(stderr, "\ruploading weights: %.1f / %.1f GiB", (double)done / (1 << 30),
                (double)total / (1 << 30));
    if (done == total && total > ((size_t)1 << 30)) fputc('\n', stderr);
}
#endif

#ifdef TL_HAVE_CUDA
/* The CPU lane of a split placement: the layers the placement gives the CPU (and the embedding
 * or lm_head), their KV under the GPU's block ids. */
static enum tl_status open_cpu_lane(const struct model *m, const struct backend_args *a,
                                    struct backend *b, struct tl_err *err) {
    int nl = m->cfg.n_layers, n_cpu = 0;
    if (!a->layer_place && !a->embed_on_host && !a->head_on_host) return TL_OK;
    b->cpu_layers = calloc((size_t)nl, 1);
    if (!b->cpu_layers) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    for (int l = 0; a->layer_place && l < nl; l++) {
        b->cpu_layers[l] = a->layer_place[l] == GPU_PLACE_CPU;
        n_cpu += b->cpu_layers[l];
    }
    if (n_cpu == 0 && !a->embed_on_host && !a->head_on_host) return TL_OK;
    struct cpu_backend_opts co = {.n_threads = a->threads,
                                  .pin = true,
                                  .num_blocks = b->num_blocks,
                                  .block_size = a->block_size,
                                  .max_ctx = a->max_model_len,
                                  .kv_layers = b->cpu_layers,
                                  .bf16_acts = true};
    enum tl_status st = cpu_backend_create(&m->cfg, &co, &b->cpu_ops, err);
    if (st != TL_OK) return st;
    b->split = (struct fwd_placement){.layer_on_cpu = b->cpu_layers,
                                      .embed_on_cpu = a->embed_on_host,
                                      .head_on_cpu = a->head_on_host};
    if (!a->quiet)
        fprintf(stderr, "tierlm: the CPU computes %d layer(s)%s%s with %d threads (%s GEMV)\n",
                n_cpu, a->embed_on_host ? ", the embedding" : "",
                a->head_on_host ? ", the lm_head" : "", pool_size(cpu_backend_pool(&b->cpu_ops)),
                cpu_matmul_kernel_name());
    return TL_OK;
}
#endif

enum tl_status backend_open(const struct model *m, const struct backend_args *a, struct backend *b,
                            struct tl_err *err) {
    memset(b, 0, sizeof *b);
    bool want_cuda =
        !strcmp(a->device, "cuda") || (!strcmp(a->device, "auto") && backend_cuda_available());
    if (want_cuda) {
#ifdef TL_HAVE_CUDA
        struct tl_err why;
        if (kern_device_probe(&why) == 0)
            return tl_fail(err, TL_ERR_UNSUPPORTED, "--device cuda: no usable GPU (%s)", why.msg);
        struct gpu_backend_opts go = {.device = 0,
                                      .gpu_memory_utilization = a->gpu_memory_utilization,
                                      .gpu_memory_gb = a->gpu_memory_gb,
                                      .dtype = a->dtype,
                                      .block_size = a->block_size,
                                      .max_model_len = a->max_model_len,
                                      .max_tokens = a->max_tokens,
                                      .max_seqs = a->max_seqs,
                                      .num_blocks_override = a->num_blocks,
                                      .enforce_eager = a->enforce_eager,
                                      .layer_place = a->layer_place,
                                      .stream_slots = a->stream_slots,
                                      .embed_on_host = a->embed_on_host,
                                      .head_on_host = a->head_on_host,
                                      .head_streamed = a->head_streamed,
                                      .progress = a->quiet ? NULL : upload_progress};
        struct gpu_plan plan;
        enum tl_status st = gpu_backend_create(m, &go, &b->ops, &b->model, &plan, err);
        if (st != TL_OK) return st;
        b->num_blocks = plan.num_blocks;
        b->cuda = true;
        if ((st = open_cpu_lane(m, a, b, err)) != TL_OK) {
            backend_close(b);
            return st;
        }
        if (!a->quiet && plan.stream_host_bytes)
            fprintf(stderr,
                    "tierlm: streaming %.2f GiB of weights from pinned host RAM through %.2f GiB "
                    "of GPU staging slots\n",
                    plan.stream_host_bytes / 1073741824.0, plan.stream_slot_bytes / 1073741824.0);
        if (!a->quiet)
            fprintf(stderr,
                    "tierlm: cuda on %s: %s weights %.2f GiB, activations %.2f GiB, KV %.2f GiB "
                    "= %d blocks of %d tokens (%.0f tokens) in a budget of %.2f GiB\n",
                    plan.device_name, dtype_torch_name(plan.dtype),
                    plan.weight_bytes / 1073741824.0, plan.activation_bytes / 1073741824.0,
                    plan.kv_bytes / 1073741824.0, plan.num_blocks, a->block_size,
                    (double)plan.num_blocks * a->block_size, plan.budget_bytes / 1073741824.0);
        return TL_OK;
#else
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "--device cuda: this build has no CUDA backend (nvcc was not found when it "
                       "was configured); rebuild on a machine with the CUDA toolkit");
#endif
    }
    if (strcmp(a->device, "cpu") && strcmp(a->device, "auto"))
        return tl_fail(err, TL_ERR_INVALID, "--device must be auto, cpu or cuda, got '%s'",
                       a->device);
    if (a->dtype != TL_DTYPE_COUNT && a->dtype != m->embed.dtype)
        return tl_fail(err, TL_ERR_UNSUPPORTED,
                       "--dtype %s: the CPU engine runs weights in their file dtype (%s); drop "
                       "--dtype or use --device cuda",
                       dtype_torch_name(a->dtype), dtype_torch_name(m->embed.dtype));
    int nb = a->num_blocks ? a->num_blocks : a->cpu_blocks;
    struct cpu_backend_opts co = {.n_threads = a->threads,
                                  .pin = true,
                                  .num_blocks = nb,
                                  .block_size = a->block_size,
                                  .max_ctx = a->max_model_len};
    enum tl_status st = cpu_backend_create(&m->cfg, &co, &b->ops, err);
    if (st != TL_OK) return st;
    b->model = m;
    b->num_blocks = nb;
    if (!a->quiet)
        fprintf(stderr, "tierlm: cpu, %d threads (%s GEMV), KV %d blocks of %d tokens\n",
                pool_size(cpu_backend_pool(&b->ops)), cpu_matmul_kernel_name(), nb, a->block_size);
    return TL_OK;
}

void backend_close(struct backend *b) {
    if (b->cpu_ops.ctx) cpu_backend_destroy(&b->cpu_ops);
    free(b->cpu_layers);
    b->cpu_layers = NULL;
#ifdef TL_HAVE_CUDA
    if (b->cuda) {
        gpu_backend_destroy(&b->ops);
        return;
    }
#endif
    cpu_backend_destroy(&b->ops);
}
