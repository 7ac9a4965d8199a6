/* placement: names, counts, a one-line description and the consistency rules of the table. */
#include "placement.h"

#include <stdio.h>
#include <string.h>

#include "sizes.h"

const char *placement_kind_name(enum placement_kind k) {
    switch (k) {
    case PLACEMENT_GPU_RESIDENT:
        return "resident";
    case PLACEMENT_GPU_STREAMED:
        return "streamed";
    case PLACEMENT_CPU:
        return "cpu";
    default:
        return "?";
    }
}

void placement_init_resident(struct placement *p, int n_layers, enum tl_dtype gpu_dtype,
                             int block_size) {
    memset(p, 0, sizeof *p);
    p->n_layers = n_layers;
    p->embed = PLACEMENT_GPU_RESIDENT;
    p->lm_head = PLACEMENT_GPU_RESIDENT;
    p->gpu_dtype = gpu_dtype;
    p->block_size = block_size;
}

int placement_count(const struct placement *p, enum placement_kind k) {
    int n = 0;
    for (int l = 0; l < p->n_layers; l++) n += p->layer[l] == k;
    return n;
}

int placement_streamed_units(const struct placement *p) {
    return placement_count(p, PLACEMENT_GPU_STREAMED) + (p->lm_head == PLACEMENT_GPU_STREAMED);
}

bool placement_guests(const struct placement *p) {
    return p->guest_min_tokens > 0 && placement_count(p, PLACEMENT_CPU) > 0;
}

void placement_cpu_mask(const struct placement *p, uint8_t *mask) {
    for (int l = 0; l < p->n_layers; l++) mask[l] = p->layer[l] == PLACEMENT_CPU;
}

void placement_describe(const struct placement *p, char *buf, size_t n) {
    static const char letter[PLACEMENT_KIND_COUNT] = {'R', 'S', 'C'};
    size_t i = 0;
    if (!n) return;
    for (int l = 0; l < p->n_layers && i + 1 < n; l++)
        buf[i++] = p->layer[l] < PLACEMENT_KIND_COUNT ? letter[p->layer[l]] : '?';
    buf[i] = 0;
    i += (size_t)snprintf(buf + i, n - i, " embed=%s lm_head=%s", placement_kind_name(p->embed),
                          placement_kind_name(p->lm_head));
    if (p->guest_min_tokens > 0 && placement_count(p, PLACEMENT_CPU) > 0 && i < n)
        snprintf(buf + i, n - i, " gpu_prefill>=%d", p->guest_min_tokens);
}

enum tl_status placement_validate(const struct placement *p, const struct config *c,
                                  struct tl_err *err) {
    if (p->n_layers != c->n_layers || p->n_layers < 1 || p->n_layers > PLACEMENT_MAX_LAYERS)
        return tl_fail(err, TL_ERR_INVALID, "placement: %d layers for a model of %d", p->n_layers,
                       c->n_layers);
    for (int l = 0; l < p->n_layers; l++)
        if (p->layer[l] >= PLACEMENT_KIND_COUNT)
            return tl_fail(err, TL_ERR_INVALID, "placement: layer %d has kind %d", l, p->layer[l]);
    if (p->lm_head >= PLACEMENT_KIND_COUNT)
        return tl_fail(err, TL_ERR_INVALID, "placement: lm_head has kind %d", p->lm_head);
    if (p->embed != PLACEMENT_GPU_RESIDENT && p->embed != PLACEMENT_CPU)
        return tl_fail(err, TL_ERR_INVALID, "placement: the embedding is never streamed");
    if (c->tie_word_embeddings &&
        (p->embed == PLACEMENT_GPU_RESIDENT) != (p->lm_head == PLACEMENT_GPU_RESIDENT))
        return tl_fail(err, TL_ERR_INVALID,
                       "placement: tied embeddings are one table: embed and lm_head both "
                       "resident or both off the GPU");
    if (p->gpu_dtype != TL_DTYPE_BF16 && p->gpu_dtype != TL_DTYPE_F16)
        return tl_fail(err, TL_ERR_INVALID, "placement: GPU dtype must be float16 or bfloat16");
    int su = placement_streamed_units(p);
    if (su > 0 && (p->stream_slots < 1 || p->stream_slots >= su || su % p->stream_slots))
        return tl_fail(err, TL_ERR_INVALID,
                       "placement: %d streamed units need a number of slots that divides them "
                       "and is smaller, not %d",
                       su, p->stream_slots);
    if (su == 0 && p->stream_slots != 0)
        return tl_fail(err, TL_ERR_INVALID, "placement: %d staging slots but nothing streams",
                       p->stream_slots);
    size_t need =
        placement_count(p, PLACEMENT_GPU_STREAMED) ? sizes_layer_bytes(c, p->gpu_dtype) : 0;
    if (p->lm_head == PLACEMENT_GPU_STREAMED && sizes_lm_head_bytes(c, p->gpu_dtype) > need)
        need = sizes_lm_head_bytes(c, p->gpu_dtype);
    if (su > 0 && p->stream_slot_bytes < need)
        return tl_fail(err, TL_ERR_INVALID,
                       "placement: staging slots of %zu bytes, the largest streamed unit has %zu",
                       p->stream_slot_bytes, need);
    if (p->guest_min_tokens < 0)
        return tl_fail(err, TL_ERR_INVALID, "placement: guest_min_tokens %d is negative",
                       p->guest_min_tokens);
    /* the GPU keeps one layer's KV even when the CPU runs every layer (gpu_backend.c), and the
     * CPU layers' too when they are guests */
    int gpu_layers = p->n_layers - (placement_guests(p) ? 0 : placement_count(p, PLACEMENT_CPU));
    size_t g = (size_t)(gpu_layers ? gpu_layers : 1) * (size_t)p->block_size *
               sizes_kv_token_layer_bytes(c, p->gpu_dtype);
    size_t h = (size_t)placement_count(p, PLACEMENT_CPU) * (size_t)p->block_size *
               sizes_kv_token_layer_bytes(c, TL_DTYPE_F32);
    if (p->block_size < 1 || p->num_blocks < 0 || p->kv_gpu_block_bytes != g ||
        p->kv_host_block_bytes != h)
        return tl_fail(err, TL_ERR_INVALID,
                       "placement: KV blocks of %zu GPU / %zu host bytes, the layer kinds make "
                       "%zu / %zu",
                       p->kv_gpu_block_bytes, p->kv_host_block_bytes, g, h);
    return TL_OK;
}
