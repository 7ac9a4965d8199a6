/* placement: where each part of the model lives and runs for one engine run. The planner
 * (planner.h) fills it; the forward driver, the weight streamer and the KV pools execute it. It
 * is the only thing that differs between GPU-only, CPU-only and mixed runs. Plain data with no
 * pointers: copy it freely.
 *
 * The contract, for whoever executes it:
 *  - GPU_RESIDENT: weights (converted to gpu_dtype, each tensor 256-byte aligned as
 *    kernels/gpu_backend.c lays them out) stay in GPU memory; the GPU computes the unit.
 *  - GPU_STREAMED: weights in pinned host RAM, NUMA-local to the GPU, already in gpu_dtype and
 *    in the same layout, so one cudaMemcpyAsync per unit fills a staging slot. The streamed
 *    units form a ring in execution order (layers ascending, then lm_head), cyclic across steps:
 *    the n-th copy of the run goes to slot n % stream_slots on a copy stream of its own and may
 *    start as soon as the unit that used that slot before has finished computing (an event).
 *    The unit's compute waits for its copy (an event). Nothing pageable, no host sync.
 *  - CPU: weights in host RAM (gpu_dtype, pinned like streamed ones); cpu/ computes the unit
 *    and its KV lives in host RAM. The hidden state crosses PCIe at each GPU<->CPU boundary
 *    (kilobytes): those hops must not queue behind a weight copy (use another stream), or a hop
 *    waits for a whole layer's copy. A step with prefill tokens (not only decodes), more of them
 *    than stream_cpu_above_tokens, runs the CPU layers as streamed ones instead, because there
 *    PCIe beats the CPU by far (a layer's flops grow with the tokens, its copy does not): the
 * layer's weights go through the same staging ring, the KV the step's sequences already have for
 * that layer is uploaded into the GPU scratch (cpu_kv_scratch_bytes) and the step's new K/V go back
 * to the host pool.
 *  - embed: GPU_RESIDENT (gathered on the GPU) or CPU (the table stays in host RAM, the CPU
 *    gathers the step's rows and they cross PCIe with the first hop). Never streamed.
 *  - lm_head (with the final norm): any of the three. With tied embeddings lm_head is the
 *    embedding table: embed is GPU_RESIDENT exactly when lm_head is.
 *  - KV: a block id covers every layer. The GPU pool holds num_blocks * kv_gpu_block_bytes
 *    (the GPU layers, resident and streamed, in gpu_dtype); the host pool holds num_blocks *
 *    kv_host_block_bytes (the CPU layers, fp32 as cpu/ keeps its cache). */
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
    uint8_t lm_head;                     /* final norm + lm_head */
    enum tl_dtype gpu_dtype;             /* F16 / BF16: weights on the GPU and streamed */
    int stream_slots;                    /* GPU staging slots; 0 when nothing streams */
    size_t stream_slot_bytes;            /* one slot: the largest streamed unit */
    /* Prefill steps of more tokens than this run the CPU layers as streamed ones (see above);
     * -1: never (no slot, or the CPU always wins). Decode-only steps never do. */
    int stream_cpu_above_tokens;
    size_t cpu_kv_scratch_bytes; /* GPU: one layer's KV of num_blocks blocks, for that mode */
    int block_size;              /* tokens per KV block */
    int num_blocks;              /* blocks the block manager hands out */
    size_t kv_gpu_block_bytes;   /* GPU part of one block: GPU layers, K and V */
    size_t kv_host_block_bytes;  /* host part of one block: CPU layers, K and V (fp32) */
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

/* One letter per layer (R resident, S streamed, C cpu), then " embed=<kind> lm_head=<kind>",
 * into buf (always NUL-terminated). */
void placement_describe(const struct placement *p, char *buf, size_t n);

/* Checks the table is one the executors can run for config c: kinds in range, slots present
 * when something streams, embed never streamed, the tied-embedding rule, KV block sizes
 * consistent with the kinds. TL_ERR_INVALID with the rule broken. Does not block. */
enum tl_status placement_validate(const struct placement *p, const struct config *c,
                                  struct tl_err *err);

#endif
