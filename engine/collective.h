/* collective: the few collective operations a tensor-parallel forward needs, as a table of
 * functions so that an in-process group of threads (tp_local.h) and a group of processes over
 * NCCL can sit behind the same forward. Every rank of a group calls the same operations in the
 * same order with the same sizes; each call blocks until the result is in place on this rank.
 * Buffers are backend memory of o->act_dtype (ops.h), as the forward passes them. */
#ifndef TL_COLLECTIVE_H
#define TL_COLLECTIVE_H

#include <stddef.h>
#include <stdint.h>

#include "ops.h"
#include "status.h"

struct tl_collective {
    int rank, world;
    void *ctx; /* owned by the group that made this collective */
    /* The last failure's message. */
    const char *(*last_error)(void *ctx);
    /* buf (n activations) = the sum over ranks of every rank's buf, the same on every rank.
     * Reduced in fp32 in rank order and rounded once to act_dtype, so the result is
     * deterministic and identical across ranks. */
    enum tl_status (*all_reduce_sum)(void *ctx, const struct ops *o, void *buf, size_t n);
    /* dst (host fp32, world * n) = every rank's src (n activations), in rank order, on every
     * rank. */
    enum tl_status (*all_gather_f32)(void *ctx, const struct ops *o, const void *src, size_t n,
                                     float *dst);
    /* One step's description from rank 0 to the others. Rank 0 passes *msg (n int32) and gets
     * it back unchanged; every other rank gets what rank 0 sent, borrowed until its next call.
     * *n == 0 on a receiving rank: the group is shutting down (no more steps). */
    enum tl_status (*broadcast_step)(void *ctx, const int32_t **msg, int *n);
    /* Marks the group failed (this rank could not finish a step): the pending and later calls
     * of every rank return an error with `why` instead of waiting for this one. */
    void (*abort)(void *ctx, const char *why);
};

#endif
