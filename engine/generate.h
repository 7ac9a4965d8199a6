/* generate: runs a fixed set of requests to completion together: chunked prefill, then batched
 * decode of every unfinished sequence in one step, sampling each with its own parameters and
 * generator. The continuous-batching scheduler (requests arriving over time, preemption)
 * builds on the same forward + kvcache + sampler pieces. Blocks until all requests finish. */
#ifndef TL_GENERATE_H
#define TL_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "forward.h"
#include "kvcache.h"
#include "sampler.h"

enum gen_finish {
    GEN_FINISH_NONE = 0,
    GEN_FINISH_LENGTH, /* max_tokens reached */
    GEN_FINISH_STOP,   /* an EOS / stop token */
};

struct gen_request {
    const int32_t *prompt; /* borrowed, n_prompt >= 1 ids */
    int n_prompt;
    int max_tokens; /* >= 1 */
    int min_tokens; /* EOS is ignored before this many tokens */
    bool ignore_eos;
    struct sampling_params sp;
    /* results */
    int32_t *out; /* caller-owned, room for max_tokens ids */
    int n_out;
    enum gen_finish finish;
};

struct gen_opts {
    int max_step_tokens;    /* tokens per step (chunked prefill budget) */
    const int32_t *eos_ids; /* borrowed */
    int n_eos;
    /* Called after each step with the tokens produced so far; may be NULL. */
    void (*on_step)(void *user, const struct gen_request *reqs, int n);
    void *user;
};

struct gen_stats {
    int64_t prompt_tokens, gen_tokens;
    double prefill_s;      /* wall time of steps that carried prompt tokens */
    double decode_s;       /* wall time of pure decode steps */
    int64_t decode_tokens; /* tokens produced by pure decode steps */
    int steps;
};

/* Runs reqs[0..n) to completion. Needs n <= the forward's max_seqs and enough free KV blocks
 * for every sequence's prompt + max_tokens (checked up front; the message says how many).
 * Sampling errors are reported before any compute. */
enum tl_status generate_run(struct forward *f, struct kvcache *kv, int vocab_size,
                            struct gen_request *reqs, int n, const struct gen_opts *o,
                            struct gen_stats *stats, struct tl_err *err);

#endif
