/* tp_nccl: the collectives of collective.h for one process per GPU, over NCCL. Rank 0 makes
 * NCCL's unique id and sends it to the others over the TCP group (tp_net.h), which also carries
 * each step's description (host data). The all-reduce and all-gather run on the GPU backend's
 * compute stream in the activations' dtype (bf16 / fp16 ncclSum): unlike tp_local and tp_net,
 * NCCL's reduction order and rounding are its own, so results match them within the dtype's
 * tolerance, not bit for bit. Built only when NCCL is found (TL_HAVE_NCCL). Compiled, never
 * run on more than one GPU so far. */
#ifndef TL_TP_NCCL_H
#define TL_TP_NCCL_H

#include "collective.h"
#include "ops.h"
#include "status.h"
#include "tp_net.h"

struct tp_nccl;

/* Joins the NCCL communicator of net's group on CUDA device `device` (the rank's local rank)
 * for a GPU backend gpu_ops (borrowed; its stream carries the collectives). net (borrowed)
 * must be connected and outlive the result. Sets NCCL_NVLS_ENABLE=0 unless the environment
 * says otherwise (NVLink SHARP multicast is off on the machines we run on). Blocks until every
 * rank has joined. Free with tp_nccl_destroy. */
enum tl_status tp_nccl_create(struct tp_net *net, const struct ops *gpu_ops, int device,
                              struct tp_nccl **out, struct tl_err *err);

/* This rank's collective: borrowed, valid until tp_nccl_destroy. */
const struct tl_collective *tp_nccl_collective(struct tp_nccl *g);

/* Destroys the communicator and frees the gather buffer. NULL is a no-op. */
void tp_nccl_destroy(struct tp_nccl *g);

#endif
