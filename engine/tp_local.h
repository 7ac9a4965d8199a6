/* tp_local: a tensor-parallel group of N ranks inside one process, one thread per rank: the
 * collectives of collective.h over host memory (a barrier, then each rank reads the others'
 * fp32 copies and sums them in rank order), and the threads of ranks 1..N-1, each running
 * forward_serve on its own forward while rank 0's caller steps. Used by the CPU engine
 * (--device cpu --tensor-parallel-size N) and the tests; works with any backend that has
 * read_f32 and write_f32. */
#ifndef TL_TP_LOCAL_H
#define TL_TP_LOCAL_H

#include "collective.h"
#include "forward.h"
#include "status.h"

struct tp_local;

/* A group of `world` ranks (1..TP_MAX_WORLD). Free with tp_local_destroy. */
enum tl_status tp_local_create(int world, struct tp_local **out, struct tl_err *err);

/* Rank `rank`'s collective: borrowed from the group, valid until tp_local_destroy. */
const struct tl_collective *tp_local_collective(struct tp_local *g, int rank);

/* Starts the thread of rank `rank` (1..world-1), which runs forward_serve(f) until the group
 * shuts down. f (borrowed) must have rank's collective and outlive tp_local_shutdown. */
enum tl_status tp_local_serve(struct tp_local *g, int rank, struct forward *f, struct tl_err *err);

/* Ends the group: call when rank 0 takes no more steps. The serving ranks see the shutdown at
 * their next broadcast and their threads are joined. Returns the first error a serving rank
 * ended with (TL_OK when all stopped cleanly). Blocks until the threads have ended. Idempotent. */
enum tl_status tp_local_shutdown(struct tp_local *g, struct tl_err *err);

/* Shuts down (if not yet) and frees the group. NULL is a no-op. */
void tp_local_destroy(struct tp_local *g);

#endif
