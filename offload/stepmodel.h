/* stepmodel: predicts the wall time of one engine step for a placement, from the machine's
 * ceilings (calibrate.h) and a few constants measured on the H100 machine (stepmodel.c names
 * their source). It replays the step's schedule on three resources that run at the same time —
 * the GPU, the CPU and the PCIe copy engine — with the dependencies the executors keep: the
 * layers run in order, a streamed unit waits for its copy, a copy waits for a free staging slot
 * (freed when the unit that used it last has run), the hidden state crosses PCIe at each GPU/CPU
 * boundary, and the next step starts after sampling. Copies run ahead across step boundaries,
 * so the figure is the steady-state period of many steps (docs/planner.md explains the model).
 * Pure arithmetic; does not block. */
#ifndef TL_STEPMODEL_H
#define TL_STEPMODEL_H

#include "calibrate.h"
#include "config.h"
#include "placement.h"

struct stepmodel_step {
    int n_seqs;   /* sequences in the step; each wants its logits */
    int n_tokens; /* new tokens: n_seqs for a decode step, more for prefill chunks */
    int ctx;      /* tokens each sequence attends over after the step (cached + new) */
};

struct stepmodel_result {
    double step_s;  /* steady-state wall time of one step */
    double gpu_s;   /* GPU busy per step */
    double cpu_s;   /* CPU busy per step (its layers, gathers, sampling) */
    double pcie_s;  /* weight bytes over PCIe per step, in seconds of the copy engine */
    double stall_s; /* time the layer chain waited for weight copies */
    double hop_s;   /* hidden-state crossings between GPU and CPU */
    int hops;
};

/* Predicts one step of s under placement p (its layer kinds, embed, lm_head, stream_slots and
 * gpu_dtype are used; KV sizes are not). The CPU reads its weights in the checkpoint's dtype
 * (c->dtype). With as many slots as streamed units nothing streams: the weights stay put, as
 * gpu_backend.c keeps them. */
void stepmodel_predict(const struct config *c, const struct placement *p, const struct ceilings *ce,
                       const struct stepmodel_step *s, struct stepmodel_result *out);

/* The fewest tokens of a step for which running a CPU layer on the GPU as a guest (its weights
 * copied in, placement.h) beats computing it on the CPU; 0 when no step up to max_tokens does.
 * Uses p's gpu_dtype and the ceilings only. */
int stepmodel_guest_min_tokens(const struct config *c, const struct placement *p,
                               const struct ceilings *ce, int max_tokens);

#endif
