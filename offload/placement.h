/* placement: where each part of the model lives and runs for one engine run. The planner
 * (planner.h) fills it; kernels/gpu_backend.c (per-layer placement, the staging ring) and
 * engine/forward.c (the CPU lane) execute it. It is the only thing that differs between
 * GPU-only, CPU-only and mixed runs. Plain data with no pointers: copy it freely.
 *
 * What each kind means, as the executors implement it:
 *  - GPU_RESIDENT: weights in device memory, converted to gpu_dtype, each tensor 256-byte
 *    aligned; the GPU computes the unit; its KV is in the GPU pool.
 *  - GPU_STREAMED: weights in pinned host memory in gpu_dtype, copied into a staging slot on a
 *    copy stream before the unit runs (events order copy -> compute -> slot reuse); its KV is in
 *    the GPU pool. Streamed unit u (layers ascending, then lm_head) owns slot u % stream_slots,
 *    so stream_slots divides the streamed units and is fewer than them (with as many slots as
 *    units nothing would stream: the weights would stay in their slots).
 *  - CPU: cpu/ computes the unit from the host model's weights (the checkpoint's dtype); its KV
 *    lives in host RAM (fp32, as cpu/ keeps it). The residual stream crosses PCIe in fp32 at
 *    each GPU<->CPU boundary; those copies must not wait behind a weight copy.
 *    With guest_min_tokens > 0 the CPU layers are also guests of the GPU: steps of at least
 *    that many tokens (prefill chunks, which the CPU computes far slower than PCIe brings the
 *    weights) run them on the GPU from one extra staging slot (pinned images in gpu_dtype, like
 *    streamed layers), and both pools keep their KV (each lane writes the other's copy of the
 *    new tokens' K/V), so either lane can run any step.
 *  - embed: GPU_RESIDENT, or CPU (the lookup runs on the host, the table stays in host RAM).
 *  - lm_head (with the final norm, of which the GPU keeps a copy in any case): any of the
 *    three; streamed, it is the last unit of the ring. With tied embeddings lm_head is the
 * embedding table, so embed is GPU_RESIDENT exactly when lm_head is.
 *  - KV: a block id covers every layer: the GPU pool holds num_blocks * kv_gpu_block_bytes for
 *    the resident and streamed layers (and the CPU layers when they are guests), the host pool
 *    num_blocks * kv_host_block_bytes for the CPU layers.
 * For the executors: `layer` can be passed as gpu_backend_opts.layer_place as it is (enum
 * gpu_place has the same values; tests/gpu/test_planner_gpu.c asserts it); embed_on_host is
 * embed == CPU, head_on_host is lm_head == CPU, head_streamed is lm_head == GPU_STREAMED, and
 * placement_cpu_mask fills fwd_placement.layer_on_cpu. */
#ifndef TL_PLACEMENT_H
#define TL_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "dtype.h"
#include "status.h"

#define PLACEMENT_MAX_LAYERS 256

enum placement_kind {
    PLACEMENT_GPU_RESIDENT = 0,
    PLACEMENT_GPU_STREAMED,
    PLACEMENT_CPU,
    PLACEMENT_KIND_COUNT
};

struct placement {
    int n_layers;
    uint8_t layer[PLACEMENT_MAX_LAYERS]; /* enum placement_kind of each layer */
    uint8_t embed;                       /* GPU_RESIDENT or CPU */
    uint8_t lm_head;                     /* any kind */
    enum tl_dtype gpu_dtype;             /* F16 / BF16: weights on the GPU and streamed */
    int stream_slots;                    /* GPU staging slots; 0 when nothing streams */
    size_t stream_slot_bytes;            /* one slot: the largest streamed unit */
    int guest_min_tokens; /* > 0: steps of at least this many tokens run the CPU layers on the
                             GPU (see CPU above); 0: the CPU always runs them */
    int block_size;       /* tokens per KV block */
    int num_blocks;       /* blocks the block manager hands out; both pools hold this many (with CPU
                             layers, give it to gpu_backend as num_blocks_override) */
    size_t kv_gpu_block_bytes;  /* GPU part of one block: GPU layers, K and V */
    size_t kv_host_block_bytes; /* host part of one block: CPU layers, K and V (fp32) */
};

/* "resident", "streamed", "cpu". */
const char *placement_kind_name(enum placement_kind k);

/* Every layer, embed and lm_head GPU_RESIDENT, nothing streamed, no KV decided yet
 * (num_blocks 0). n_layers must be 1..PLACEMENT_MAX_LAYERS. */
void placement_init_resident(struct placement *p, int n_layers, enum tl_dtype gpu_dtype,
                             int block_size);

/* Layers of kind k. */
int placement_count(const struct placement *p, enum placement_kind k);

/* Units (layers, plus lm_head) that are streamed. */
int placement_streamed_units(const struct placement *p);

/* Whether the CPU layers are guests of the GPU in large steps (guest_min_tokens > 0 and some
 * layer is on the CPU). */
bool placement_guests(const struct placement *p);

/* mask[l] = 1 when the CPU computes layer l, else 0 (n_layers entries). */
void placement_cpu_mask(const struct placement *p, uint8_t *mask);

/* One letter per layer (R resident, S streamed, C cpu), then " embed=<kind> lm_head=<kind>",
 * into buf (always NUL-terminated). */
void placement_describe(const struct placement *p, char *buf, size_t n);

/* Checks the table is one the executors run for config c: kinds in range, the slot rule above,
 * the embedding never streamed, the tied-embedding rule, slot and KV block sizes consistent with
 * the kinds. TL_ERR_INVALID naming the rule broken. Does not block. */
enum tl_status placement_validate(const struct placement *p, const struct config *c,
                                  struct tl_err *err);

#endif
