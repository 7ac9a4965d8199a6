/* kern_copy: host->device copies on a stream of their own, ordered against the context's
 * compute stream by numbered events, so weight streaming overlaps compute. The copier owns its
 * stream and events; the memory it copies belongs to the caller (the source must be pinned for
 * the copy to be asynchronous). One host thread drives a copier and its context. */
#ifndef TL_KERN_COPY_H
#define TL_KERN_COPY_H

#include <stddef.h>

#include "kern.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

struct kern_copier;

/* n_events numbered events (0..n_events-1), usable as "copy done" or "slot free" marks. */
enum tl_status kern_copier_create(const struct kern_ctx *ctx, int n_events,
                                  struct kern_copier **out);
void kern_copier_destroy(struct kern_copier *cp);

/* Queues on the copy stream: wait for event wait_ev (-1: none; recorded earlier by
 * kern_copier_mark on the compute stream), copy bytes from host to device, record done_ev
 * (-1: none). Returns at once. */
enum tl_status kern_copier_h2d(struct kern_copier *cp, void *dev_dst, const void *host_src,
                               size_t bytes, int wait_ev, int done_ev);
/* Records event ev on the compute stream (e.g. "the work reading this slot is queued"). */
enum tl_status kern_copier_mark(struct kern_copier *cp, int ev);
/* Makes the compute stream wait for event ev (recorded by a copy). */
enum tl_status kern_copier_wait(struct kern_copier *cp, int ev);

/* Bytes copied and the time the copy stream spent copying them, since the last call (blocks
 * until the copies queued so far are done; for reports, not the step path). */
enum tl_status kern_copier_stats(struct kern_copier *cp, size_t *bytes, double *busy_s);

/* A span of the compute stream, timed by the GPU: how long the device worked on one step from
 * its first queued op to its last (gaps included where the host was slow to queue). */
struct kern_span;
enum tl_status kern_span_create(const struct kern_ctx *ctx, struct kern_span **out);
void kern_span_destroy(struct kern_span *sp);
enum tl_status kern_span_begin(struct kern_span *sp);
enum tl_status kern_span_end(struct kern_span *sp);
/* Seconds from the begin mark to the end mark; blocks until the end mark has passed. 0 when
 * no complete span was marked. */
enum tl_status kern_span_seconds(struct kern_span *sp, double *sec);

#ifdef __cplusplus
}
#endif

#endif
