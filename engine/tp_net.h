/* tp_net: a tensor-parallel group of processes joined over TCP (plain POSIX sockets), for ranks
 * in other processes or on other hosts. Rank 0 listens on the master address and port; every
 * other rank connects to it (a star). The group carries rank 0's small blobs to the others
 * (the workers' settings, NCCL's unique id) and offers the collectives of collective.h over
 * host memory: rank 0 gathers each rank's fp32 copy, sums in rank order, rounds once and sends
 * the result back, so the sums are bit-identical to tp_local's. Every call blocks; a peer's
 * closed socket or abort message ends the pending and later calls with an error (no hang).
 * The wire carries lengths, all checked against what the call expects before anything is
 * allocated. Not thread-safe: one thread per rank calls it. */
#ifndef TL_TP_NET_H
#define TL_TP_NET_H

#include <stdbool.h>
#include <stddef.h>

#include "collective.h"
#include "status.h"

struct tp_net;

/* The largest blob or step message a rank accepts (bytes): a garbled length cannot make it
 * allocate more. */
#define TP_NET_MAX_MSG_BYTES ((size_t)256 << 20)

/* Rank 0: binds addr:port (port 0 picks a free one; see tp_net_port) for a group of `world`
 * ranks (2..TP_MAX_WORLD). Does not block. Free with tp_net_destroy. */
enum tl_status tp_net_listen(const char *addr, int port, int world, struct tp_net **out,
                             struct tl_err *err);

/* The port rank 0 listens on (the one picked when tp_net_listen got 0). */
int tp_net_port(const struct tp_net *g);

/* Rank 0: waits up to timeout_s for ranks 1..world-1 to connect. A connection that does not
 * introduce itself as a rank of this group is closed and ignored. alive (NULL: none), called
 * about every 100 ms while waiting, may return false to give up early (a local worker died);
 * its reason goes into err. Blocks. */
enum tl_status tp_net_accept(struct tp_net *g, double timeout_s,
                             bool (*alive)(void *user, struct tl_err *why), void *user,
                             struct tl_err *err);

/* Ranks 1..world-1: connects to rank 0 at addr:port, retrying until timeout_s (rank 0 may not
 * be listening yet); the error names the address. Blocks. Free with tp_net_destroy. */
enum tl_status tp_net_connect(const char *addr, int port, int rank, int world, double timeout_s,
                              struct tp_net **out, struct tl_err *err);

/* Rank 0 sends n bytes to every other rank; the others receive up to cap bytes into buf, and
 * *n becomes what arrived. Blocks until sent / received. */
enum tl_status tp_net_send_blob(struct tp_net *g, const void *buf, size_t n, struct tl_err *err);
enum tl_status tp_net_recv_blob(struct tp_net *g, void *buf, size_t cap, size_t *n,
                                struct tl_err *err);

/* Every rank reports whether it is ready to serve (ok, else why): ranks > 0 send it to rank 0,
 * rank 0 collects them all and fails with the first rank's reason when one is not ready (and
 * aborts the group so the others do not wait for steps). Blocks. */
enum tl_status tp_net_ready(struct tp_net *g, bool ok, const char *why, struct tl_err *err);

/* How long a collective waits for a peer's data (all-reduce, all-gather) before it fails the
 * group naming that peer as stuck: every rank runs the same step, so silence that long is a
 * hang, not work. Waiting for the next step is not timed (a server idles); a peer that dies or
 * a host that vanishes is noticed by the closed socket or TCP keepalive (~90 s). */
#define TP_NET_CALL_TIMEOUT_S 300.0
void tp_net_set_call_timeout(struct tp_net *g, double seconds); /* <= 0: no limit */

/* This rank's collective (collective.h): borrowed, valid until tp_net_destroy. */
const struct tl_collective *tp_net_collective(struct tp_net *g);

/* Rank 0: tells every rank that no more steps come (their broadcast_step returns n 0). Other
 * ranks: no-op. Idempotent; does not block beyond the sends. */
void tp_net_shutdown(struct tp_net *g);

/* Closes the sockets and frees the group. NULL is a no-op. */
void tp_net_destroy(struct tp_net *g);

#endif
