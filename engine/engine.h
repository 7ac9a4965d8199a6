/* engine: the continuous-batching engine. Requests are submitted from any thread; each one
 * has its own stream of outputs (token ids, text, logprobs) that its submitter reads with
 * engine_request_wait. One loop (engine_start's thread, or the caller through engine_step)
 * schedules as vLLM does: waiting / running / swapped queues, decodes first, chunked prefill
 * under max_num_batched_tokens, admission by free KV blocks, preemption by swapping to the
 * KV tiers or by recomputation, FCFS. The engine borrows the forward, the KV block manager and the
 * tokenizer; it owns the requests' state until both it and the submitter have released them. */
#ifndef TL_ENGINE_H
#define TL_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "forward.h"
#include "kvcache.h"
#include "sampler.h"
#include "status.h"
#include "tokenizer.h"

struct engine;
struct engine_request;
struct kvswap; /* offload/kvswap.h: the KV tiers */

/* Most top logprobs a request may ask for (OpenAI's top_logprobs allows 20). */
#define ENGINE_MAX_LOGPROBS 20
/* Most stop strings per request, and the longest one in bytes. */
#define ENGINE_MAX_STOP     16
#define ENGINE_MAX_STOP_LEN 256

/* Which sequences go first when they compete for KV blocks (--scheduling-policy). */
enum engine_sched {
    ENGINE_SCHED_AUTO = 0, /* fair where preempted sequences are swapped (KV tiers and a
                            * preemption mode other than recompute), else fcfs */
    ENGINE_SCHED_FCFS,     /* vLLM's: arrival order; the latest arrival is preempted */
    /* Least attained service first: a sequence's key is the step it arrived at plus the steps
     * it has run. Sequences that ran since they arrived tie with new arrivals (then arrival
     * order decides), a preempted one gains on the running ones while it waits, and the one
     * that has run most is preempted. Under KV pressure all advance at about the same rate,
     * the shortest contexts run (more fit), and none is left to finish alone at the end with
     * the cache mostly empty (docs/perf-notes.md). Recomputation makes the most-run victim the
     * costliest, hence fcfs without swapping. */
    ENGINE_SCHED_FAIR,
};

/* How a sequence is preempted when KV blocks run out (vLLM's --preemption-mode, plus auto). */
enum engine_preemption {
    ENGINE_PREEMPT_AUTO = 0,  /* per sequence, the cheaper: bytes to move or tokens to recompute */
    ENGINE_PREEMPT_SWAP,      /* swap out whenever the tiers have room */
    ENGINE_PREEMPT_RECOMPUTE, /* drop the KV, recompute it later */
};

struct engine_opts {
    int max_num_seqs;           /* most running sequences (vLLM's --max-num-seqs) */
    int max_num_batched_tokens; /* most tokens in one step (chunked prefill budget) */
    int max_model_len;          /* prompt + generated tokens of one sequence */
    bool enable_prefix_caching; /* reuse the KV of full blocks with the same token prefix */
    /* Keep one KV block of the engine's own for padding decode steps to the sizes the backend
     * replays as CUDA graphs (when the cache has one to spare beyond a full sequence). */
    bool graph_pad_block;
    const int32_t *eos_ids; /* copied: generation_config's and the tokenizer's EOS */
    int n_eos;
    const struct tokenizer *tok; /* borrowed, may be NULL: no text, no stop strings */
    /* The 5-second "Avg prompt throughput: ..." line while busy; 0 = never. */
    double log_interval_s;
    /* Where log lines go; NULL = stderr. Called from the engine thread. */
    void (*log)(void *user, const char *line);
    void *log_user;
    /* The KV tiers (borrowed, used by the engine loop only); NULL: preemption by recomputation
     * only, as without --swap-space / --nvme-swap-dir. */
    struct kvswap *kvswap;
    enum engine_preemption preemption_mode; /* with kvswap */
    enum engine_sched sched;
};

/* What a request asks for; copied at submit. */
struct engine_params {
    struct sampling_params sp;
    int max_tokens; /* >= 1; prompt + max_tokens <= max_model_len */
    int min_tokens; /* EOS and stop ids / strings are ignored before this many tokens */
    bool ignore_eos;
    const char *const *stop; /* n_stop stop strings (matched on the text) */
    int n_stop;
    const int32_t *stop_token_ids; /* ids that end the request like EOS */
    int n_stop_token_ids;
    bool include_stop_str_in_output;
    bool skip_special_tokens; /* for the text (default true in vLLM) */
    int logprobs;             /* -1 = none; k >= 0: the sampled token's logprob + top k */
};

enum engine_finish {
    ENGINE_FINISH_NONE = 0, /* still running */
    ENGINE_FINISH_STOP,     /* EOS, a stop id or a stop string */
    ENGINE_FINISH_LENGTH,   /* max_tokens or max_model_len */
    ENGINE_FINISH_ABORT,    /* aborted (client gone, engine stopped) */
    ENGINE_FINISH_ERROR,    /* the engine failed on this request; see error */
    ENGINE_FINISH_COUNT
};

/* "stop", "length", "abort", "error" (vLLM's finished_reason label values). */
const char *engine_finish_str(enum engine_finish f);

struct engine_logprob {
    int32_t id;
    float logprob;
};

/* New output of one request since the previous wait. Pointers are borrowed and valid until
 * the next engine_request_wait or engine_request_release on the same request. */
struct engine_output {
    int n_new;                        /* new token ids */
    const int32_t *ids;               /* (n_new) */
    const float *logprobs;            /* (n_new) sampled tokens' logprobs, or NULL */
    const struct engine_logprob *top; /* (n_new, top_n) most likely first, or NULL */
    int top_n;                        /* the request's logprobs k */
    const char *text;                 /* new UTF-8 text (NUL-terminated; "" when none) */
    size_t text_len;
    enum engine_finish finish; /* NONE until the last delta */
    const char *stop_str;      /* the stop string that ended it, or NULL */
    int32_t stop_token;        /* the stop id (not EOS) that ended it, or -1 */
    const char *error;         /* FINISH_ERROR's message, or NULL */
    int n_prompt;              /* prompt tokens */
    int n_cached;              /* prompt tokens served from the prefix cache */
    int n_generated;           /* tokens generated so far, all deltas together */
};

/* Prometheus-style histogram: counts[i] observations <= le[i]; counts[n_le] is +Inf. */
#define ENGINE_HIST_MAX 24
struct engine_hist {
    int n_le;
    double le[ENGINE_HIST_MAX];
    uint64_t counts[ENGINE_HIST_MAX + 1]; /* cumulative as Prometheus wants */
    double sum;
    uint64_t count;
};

struct engine_metrics {
    int64_t prompt_tokens_total, generation_tokens_total;
    int64_t num_preemptions_total;
    int64_t request_success_total[ENGINE_FINISH_COUNT];
    int64_t prefix_cache_queries_total, prefix_cache_hits_total; /* tokens */
    int num_running, num_waiting, num_swapped;
    double gpu_cache_usage; /* fraction of the device KV blocks in use, 0..1 */
    double cpu_cache_usage; /* host KV tier (swap), 0..1 */
    int kv_blocks_total, kv_blocks_used;
    struct engine_hist ttft, tpot, e2e; /* seconds */
    int64_t steps_total;
    int64_t step_blocks_total; /* KV blocks held by the sequences of each step, summed over steps:
                                * over the cache's blocks, the steps a perfect scheduler needs */
    double busy_s;             /* wall time spent in steps */
    int64_t decode_steps;      /* steps that carried no prompt token */
    int64_t decode_tokens;     /* tokens those steps generated */
    double decode_s;           /* their wall time */
    int64_t full_decode_steps; /* decode-only steps running max-num-seqs sequences */
    double full_decode_s;      /* their wall time */
    double device_s;           /* device (GPU) time of all steps, first op to last */
    double decode_device_s;    /* of the decode-only steps */
    double decode_cpu_lane_s;  /* host time of those steps in the CPU lane's layers */
    double decode_cross_s;     /* ... and crossing lanes (GPU waits included) */
    double decode_forward_s;   /* ... in the forward as a whole (the rest is the engine's) */
    double decode_tail_s;      /* ... of it waiting for the device's tail and the sample */
    /* ---- KV tiers (zero without --swap-space / --nvme-swap-dir) ---- */
    /* num_swapped above is vLLM's num_requests_swapped: sequences whose KV is in the tiers */
    int64_t num_preemptions_swap_total;      /* preemptions that swapped the KV out */
    int64_t num_preemptions_recompute_total; /* preemptions that dropped it (recomputed later) */
    int64_t num_swap_recoveries_total;       /* swapped sequences recomputed after a tier failure */
    int cpu_blocks_total, cpu_blocks_used;   /* host tier (pinned RAM), blocks */
    int nvme_blocks_total, nvme_blocks_used; /* NVMe tier, blocks */
    double nvme_cache_usage;                 /* 0..1 */
    int64_t swap_out_bytes_total, swap_in_bytes_total;     /* device -> host, host -> device */
    int64_t nvme_write_bytes_total, nvme_read_bytes_total; /* host -> NVMe, NVMe -> host */
    /* bytes/s of the four over the last ~5 s */
    double swap_out_bytes_per_s, swap_in_bytes_per_s;
    double nvme_write_bytes_per_s, nvme_read_bytes_per_s;
    /* tier failures by cause (each fails one sequence, recomputed) */
    int64_t kv_fail_crc_total, kv_fail_read_total, kv_fail_short_read_total;
    int64_t kv_fail_write_total, kv_fail_nospace_total, kv_fail_copy_total;
    int64_t kv_dropped_capacity_total; /* swapped sequences dropped to make room */
};

/* Creates an engine over a forward and a KV block manager (both borrowed, used only by the
 * engine loop from now on). vocab_size: the model's. Does not start a thread. */
enum tl_status engine_create(struct forward *f, struct kvcache *kv, int vocab_size,
                             const struct engine_opts *o, struct engine **out, struct tl_err *err);
/* Stops the thread (if started), aborts what is left, frees the engine. Requests not yet
 * released by their submitters stay valid until released. */
void engine_destroy(struct engine *e);

int engine_max_model_len(const struct engine *e);
int engine_vocab_size(const struct engine *e);

/* Runs the loop in a thread of its own until engine_destroy. */
enum tl_status engine_start(struct engine *e, struct tl_err *err);

/* Without a thread: runs one step (admits, schedules, forwards, samples, delivers). *busy is
 * false when there was nothing to do. An error here is the engine's (the backend failed); the
 * requests of that step finish with FINISH_ERROR. */
enum tl_status engine_step(struct engine *e, bool *busy, struct tl_err *err);

/* Queues a request. prompt is copied. Bad parameters (ranges, a prompt over max_model_len,
 * ids out of the vocabulary, stop strings without a tokenizer) are TL_ERR_INVALID with a
 * message for the user; nothing is queued then. *out is released by engine_request_release.
 * Thread-safe. */
enum tl_status engine_submit(struct engine *e, const int32_t *prompt, int n_prompt,
                             const struct engine_params *p, struct engine_request **out,
                             struct tl_err *err);

/* Waits up to timeout_ms (< 0: forever, 0: poll) for new output; *out receives everything
 * new since the previous call (n_new may be 0 on timeout). After a delta with finish set,
 * further calls return the same empty final delta. Thread-safe against the engine; one reader
 * per request. */
void engine_request_wait(struct engine_request *r, int timeout_ms, struct engine_output *out);

/* Asks the engine to stop the request; its KV blocks are freed before the next step. The
 * submitter still reads the final delta (FINISH_ABORT) and releases. Thread-safe. */
void engine_request_abort(struct engine_request *r);

/* The submitter is done with r (aborting it if still running). r is invalid afterwards. */
void engine_request_release(struct engine_request *r);

/* Consistent snapshot of the counters. Thread-safe. */
void engine_metrics_get(struct engine *e, struct engine_metrics *m);

/* Fills p with vLLM's defaults: sampling defaults, max_tokens 16, skip_special_tokens true,
 * logprobs -1, no stops. */
void engine_params_default(struct engine_params *p);

#endif
