/* pool: a fixed set of worker threads, each pinned to its own physical core with hwloc, that
 * run parallel loops. The calling thread takes part, so a pool of n threads starts n-1
 * workers. One loop at a time per pool (the engine loop owns it). */
#ifndef TL_POOL_H
#define TL_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

struct pool;

/* Runs items [begin, end) of a loop; tid is 0..pool_size-1 (scratch indexing). */
typedef void (*pool_fn)(void *arg, int64_t begin, int64_t end, int tid);

/* n_threads 0 = one per physical core. pin binds workers to cores (when hwloc can). */
enum tl_status pool_create(int n_threads, bool pin, struct pool **out, struct tl_err *err);
void pool_destroy(struct pool *p);
int pool_size(const struct pool *p);
/* Number of physical cores hwloc sees (at least 1). */
int pool_physical_cores(void);

/* Splits [0, n) into chunks of at least `grain` items and runs fn over them on all threads;
 * blocks until every chunk is done. */
void pool_parallel_for(struct pool *p, int64_t n, int64_t grain, pool_fn fn, void *arg);

#endif
