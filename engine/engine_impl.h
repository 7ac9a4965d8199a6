/* engine_impl: the engine's and a request's state, shared by engine.c (requests, threads,
 * delivery, metrics) and engine_step.c (the scheduler and what follows a forward step).
 * Locks: e->mu guards the inbox and the thread's sleep; r->mu guards what a request has
 * published to its reader; e->metrics_mu guards the metrics. Everything else of a request
 * below "engine thread only" is touched by the engine loop alone. */
#ifndef TL_ENGINE_IMPL_H
#define TL_ENGINE_IMPL_H

#include <pthread.h>
#include <stdatomic.h>

#include "engine.h"

enum req_state { REQ_INBOX = 0, REQ_WAITING, REQ_RUNNING, REQ_DONE, REQ_SWAPPED };

struct engine_request {
    struct engine *e;
    uint64_t seq_no; /* arrival order: FCFS and preemption priority */
    uint64_t prio;   /* scheduling key, lower first (then seq_no): 0 with fcfs; with fair the step
                      * it arrived at plus the steps it has run */
    atomic_int refs; /* the engine's + the submitter's */
    atomic_bool abort_requested;
    double t_arrival;

    /* what was asked (immutable after submit) */
    struct engine_params p;
    char *stop[ENGINE_MAX_STOP]; /* owned copies; p.stop points here */
    int32_t *stop_ids;           /* owned copy */
    int max_stop_len;
    int n_prompt;
    int32_t *tokens;            /* owned (n_prompt + max_tokens): prompt, then generated ids */
    float *lp;                  /* owned (max_tokens) sampled logprobs, when p.logprobs >= 0 */
    struct engine_logprob *top; /* owned (max_tokens, p.logprobs) */

    /* engine thread only */
    enum req_state state;
    int n_out;      /* generated tokens */
    int n_computed; /* tokens whose KV is in the cache */
    int n_cached;   /* prompt tokens that came from the prefix cache (first admission) */
    bool admitted_once;
    struct kv_seq kv;
    uint64_t *block_hash; /* owned (blocks of max length): hashes of the full blocks so far */
    int n_hashed;         /* leading blocks published / matched */
    struct sampler_rng rng;
    struct detok *dt;
    double t_first, t_last;
    int step_take;              /* tokens this step feeds */
    enum engine_finish pending; /* set during a step's post-processing, applied after */
    bool has_swap;              /* swap_h is a kvswap handle holding its KV (REQ_SWAPPED) */
    bool swap_loading;          /* ... being copied into the device blocks of kv */
    int32_t swap_h;

    /* published to the reader (r->mu) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pub_out;         /* tokens the reader may see */
    char *text;          /* owned: all text so far (stop strings are matched on it) */
    size_t text_len;     /* bytes of text */
    size_t text_cap;     /* allocation */
    size_t text_visible; /* bytes the reader may see (a possible stop string is held back) */
    enum engine_finish finish;
    const char *stop_str; /* borrowed from stop[] */
    int32_t stop_token;
    char error[TL_ERR_MSG_MAX];
    bool finish_seen; /* the reader has had the final delta */
    /* reader side */
    int rd_out;
    size_t rd_text;
    char *rd_buf; /* owned: the text delta handed out last */
    size_t rd_cap;
};

/* A queue of requests in arrival order (small arrays: hundreds of entries). */
struct req_queue {
    struct engine_request **v;
    int n, cap;
};

struct engine {
    struct forward *fwd; /* borrowed */
    struct kvcache *kv;  /* borrowed */
    int vocab;
    struct engine_opts o;
    int32_t *eos; /* owned copy of o.eos_ids */
    int32_t pad_block;
    int max_blocks_per_seq;
    bool fair;        /* ENGINE_SCHED_FAIR in effect */
    uint64_t n_steps; /* forward steps run */

    /* engine thread only */
    struct req_queue waiting, running;
    struct sampler *sampler;
    float *logits; /* owned (max_num_seqs, vocab), allocated when first needed */
    float *raw;    /* owned (vocab): a row's raw logits, for logprobs */
    struct fwd_seq *fs;
    struct engine_request **fs_req;
    int32_t *tokens, *positions; /* (max_num_batched_tokens) */
    int32_t *ids;                /* (max_num_seqs) sampled ids */
    struct fwd_sample *smp;      /* (max_num_seqs) what sampling on the backend needs */
    double last_log;
    int64_t log_prompt, log_gen; /* tokens since the last log line */

    /* KV tiers (engine thread only; engine_swap.c) */
    struct req_queue swapped; /* arrival order; the loading ones hold device blocks */
    int n_loading;
    int32_t *swap_dev; /* (blocks of max_model_len) scratch */
    double t_tok;      /* seconds per token of recent prefill steps: the recompute cost */
    int64_t n_swap_out, n_recompute, n_recovered;
    double rate_t;         /* when the byte rates were last taken */
    int64_t rate_bytes[4]; /* the byte counters then */

    /* inbox and thread (mu) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct req_queue inbox;
    bool abort_pending, stopping, started;
    pthread_t thread;
    uint64_t next_seq_no;

    /* metrics (metrics_mu) */
    pthread_mutex_t metrics_mu;
    struct engine_metrics m;
};

/* Whether a goes before b in the queues: the lower key, then the earlier arrival. */
static inline bool req_before(const struct engine_request *a, const struct engine_request *b) {
    return a->prio < b->prio || (a->prio == b->prio && a->seq_no < b->seq_no);
}

/* engine.c */
enum tl_status req_queue_push(struct req_queue *q, struct engine_request *r);
void req_queue_remove_at(struct req_queue *q, int i);
/* Inserts r keeping the queue's order (req_before: a preempted request goes back ahead of
 * later arrivals). */
enum tl_status req_queue_insert_ordered(struct req_queue *q, struct engine_request *r);
/* Appends text (the reader sees it once made visible by req_publish). */
enum tl_status req_text_append(struct engine_request *r, const char *s, size_t n);
/* Makes n_out, the visible text and (when finish != NONE) the end known to the reader. */
void req_publish(struct engine_request *r, enum engine_finish finish);
/* Drops a reference; the last one frees r. */
void req_unref(struct engine_request *r);
void engine_observe_finish(struct engine *e, struct engine_request *r);
void engine_hist_observe(struct engine_hist *h, double v);

/* engine_step.c: finishes r (releases its KV, publishes, drops the engine's reference). */
void engine_finish_request(struct engine *e, struct engine_request *r, enum engine_finish f);
/* Returns r's KV blocks and swap slots; r will recompute from token 0. */
void engine_kv_drop(struct engine *e, struct engine_request *r);

/* engine_swap.c: preemption by swapping (all no-ops without kvswap). */
/* Swaps preempted r (out of running, KV still held) out if the tiers have room and it is the
 * cheaper way (preemption_mode); true when done (r is in swapped), false: recompute it. */
bool engine_swap_out(struct engine *e, struct engine_request *r);
/* The earliest swapped sequence not loading yet, or NULL. */
struct engine_request *engine_swap_head(struct engine *e);
/* Starts copying head r back into fresh device blocks when its KV is in host memory and the
 * blocks are there; it joins running when the copy is done (engine_swap_poll). */
bool engine_swap_in(struct engine *e, struct engine_request *r);
/* Advances the transfers; loaded sequences join running, failed ones go back to waiting to be
 * recomputed. wait: block for a transfer when nothing else can happen. */
void engine_swap_poll(struct engine *e, bool wait);
/* Gives up r's swap handle (finish, abort, recompute). */
void engine_swap_forget(struct engine *e, struct engine_request *r);
/* Accounts a step of prefill tokens (the recompute cost) and the tiers' gauges (metrics_mu
 * held for the latter). */
void engine_swap_observe_step(struct engine *e, double dt, int n_tokens, int64_t prompt_tokens);
void engine_swap_gauges(struct engine *e, struct engine_metrics *m, double now);

#endif
