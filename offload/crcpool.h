/* crcpool: CRC32C of block images on worker threads, so checksumming a swap overlaps the
 * copies and the forward instead of stalling the engine loop. One submitter thread (the
 * engine loop) queues jobs and reaps them; the pool owns its threads. With 0 threads a job
 * runs inside crcpool_submit. */
#ifndef TL_CRCPOOL_H
#define TL_CRCPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

struct crcpool;

struct crc_job {
    int32_t id;    /* the caller's */
    int32_t kind;  /* the caller's */
    const void *p; /* len bytes, unchanged until reaped */
    size_t len;
    uint32_t crc; /* filled when reaped */
};

/* capacity: most jobs submitted and not yet reaped. */
enum tl_status crcpool_create(int n_threads, int capacity, struct crcpool **out,
                              struct tl_err *err);
/* Finishes queued jobs, stops the threads, frees. NULL is fine. */
void crcpool_destroy(struct crcpool *p);
int crcpool_threads(const struct crcpool *p);

/* Queues a job (never blocks; the capacity is the caller's bound). */
void crcpool_submit(struct crcpool *p, const struct crc_job *j);
/* Moves up to max finished jobs into out; blocks until at least min (clamped to the jobs
 * outstanding) have finished. Returns how many. */
int crcpool_reap(struct crcpool *p, struct crc_job *out, int max, int min);
/* Jobs submitted and not yet reaped. */
int crcpool_outstanding(const struct crcpool *p);

#endif
