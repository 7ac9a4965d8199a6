/* gpu_backend: the CUDA implementation of the op interface (ops.h). At creation it plans the
 * device memory once — weights (converted to the activation dtype), activations, workspaces and
 * as many KV blocks as the budget leaves — in one allocation, refuses a configuration that cannot
 * work with the numbers and the nearest working settings, and uploads the weights. Ops queue work
 * on one stream; only read_f32 (the logits) and sample (the ids) wait for the device. */
#ifndef TL_GPU_BACKEND_H
#define TL_GPU_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "ops.h"
#include "status.h"

/* Where a layer's weights live (the per-layer placement a planner chooses). */
enum gpu_place {
    GPU_PLACE_RESIDENT = 0, /* in device memory */
    GPU_PLACE_STREAM,       /* in pinned host memory, copied into a staging slot before use */
    GPU_PLACE_CPU,          /* computed by the CPU backend: no weights or KV on the device
                               (unless guests, below) */
};

struct gpu_backend_opts {
    int device;                    /* CUDA ordinal */
    double gpu_memory_utilization; /* fraction of the device's memory this process may use (0.9) */
    double gpu_memory_gb;          /* hard cap in GiB (0 = none), e.g. 24 to emulate a 24 GB card */
    enum tl_dtype dtype;           /* activation / weight dtype on the GPU; TL_DTYPE_COUNT = auto */
    int block_size;                /* tokens per KV block */
    int max_model_len;             /* longest sequence */
    int max_tokens;                /* most tokens in one step */
    int max_seqs;                  /* most sequences in one step */
    int num_blocks_override;       /* 0 = as many KV blocks as fit */
    bool enforce_eager;            /* no CUDA graphs (vLLM's --enforce-eager) */
    /* Placement; NULL = every layer resident. Streamed layers cycle through stream_slots
     * staging slots (>= 1), copied as many layers ahead as the slots allow. */
    const uint8_t *layer_place; /* (n_layers) enum gpu_place */
    int stream_slots;
    bool embed_on_host; /* the CPU lane does the embedding: no device table (unless tied) */
    bool head_on_host;  /* the CPU lane does final norm + lm_head */
    bool head_streamed; /* lm_head streams like a layer, after the last layer (unit n_layers) */
    /* > 0: the GPU_PLACE_CPU layers are guests (placement.h): steps of at least this many
     * tokens run them here, so their KV is kept here too, their weights have pinned images and
     * come in through one more staging slot, the first at begin_step, each next one when the
     * previous guest's layer_end frees the slot */
    int guest_min_tokens;
    /* Called during the weight upload with done/total bytes; may be NULL. */
    void (*progress)(void *user, size_t done_bytes, size_t total_bytes);
    void *progress_user;
};

/* What the plan decided (for logs and the CLI). */
struct gpu_plan {
    size_t budget_bytes, weight_bytes, activation_bytes, workspace_bytes, kv_bytes;
    size_t stream_host_bytes; /* pinned host memory holding streamed layers (and guests) */
    size_t stream_slot_bytes; /* device staging, all slots (the guest slot included) */
    size_t kv_block_bytes;    /* one block, all layers, K and V */
    int num_blocks;
    enum tl_dtype dtype;
    char device_name[256];
};

/* auto dtype as vLLM chooses it: bf16 stays bf16, fp16 and fp32 checkpoints run in fp16. */
enum tl_dtype gpu_backend_auto_dtype(const struct model *host);

/* Creates the backend for `host` (weights on the host: mmap or dummy). *dev_model is the same
 * model with device tensors (owned by the backend; pass it to forward_create). Blocks while the
 * weights upload. Free with gpu_backend_destroy. */
enum tl_status gpu_backend_create(const struct model *host, const struct gpu_backend_opts *o,
                                  struct ops *out, const struct model **dev_model,
                                  struct gpu_plan *plan, struct tl_err *err);
void gpu_backend_destroy(struct ops *ops);

/* Streamed weight bytes and the time the copy stream was busy with them since the last call
 * (blocks until the queued copies finish; for reports). */
enum tl_status gpu_backend_stream_stats(const struct ops *ops, size_t *bytes, double *busy_s);

/* The compute stream every op of this backend runs on (a cudaStream_t, borrowed): where a
 * collective enqueues its work so it orders with the layers. */
void *gpu_backend_stream(const struct ops *ops);

#endif
