/* engine_step: one iteration of the engine loop. Schedule (decodes first, then chunks of
 * prefills already running, then admissions in queue order while budget, sequences and KV
 * blocks last; when KV runs out the last in queue order is preempted, swapped out or recomputed
 * later), run the forward, sample, then detokenize, check stops, publish, and account. Queue
 * order is arrival order (fcfs) or least attained service (fair: engine.h). A sequence's state
 * is one number: n_computed of its n_prompt + n_out tokens have KV in the cache, so a fresh
 * prompt, a chunked prefill, a decode and a recomputation after preemption are the same step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "engine_impl.h"

static int n_tokens(const struct engine_request *r) {
    return r->n_prompt + r->n_out;
}

/* ---- prefix cache ---- */

/* Takes the longest run of cached full blocks that prefixes r's tokens, leaving at least one
 * token to compute (its logits are needed). */
static void prefix_match(struct engine *e, struct engine_request *r) {
    int bs = kvcache_block_size(e->kv);
    int max_blocks = (n_tokens(r) - 1) / bs;
    uint64_t parent = 0;
    struct tl_err err;
    while (r->n_hashed < max_blocks) {
        const int32_t *t = r->tokens + (size_t)r->n_hashed * (size_t)bs;
        uint64_t h = kvcache_hash_block(parent, t, bs);
        int32_t b = kvcache_lookup(e->kv, h, t);
        if (b < 0) break;
        if (kvcache_seq_push(&r->kv, b, &err) != TL_OK) {
            kvcache_unref(e->kv, b);
            break;
        }
        r->block_hash[r->n_hashed++] = h;
        parent = h;
    }
    r->n_computed = r->n_hashed * bs;
    r->kv.n_tokens = r->n_computed;
}

/* Publishes r's blocks that became full and computed this step. */
static void prefix_publish(struct engine *e, struct engine_request *r) {
    int bs = kvcache_block_size(e->kv);
    while ((r->n_hashed + 1) * bs <= r->n_computed) {
        int b = r->n_hashed;
        const int32_t *t = r->tokens + (size_t)b * (size_t)bs;
        uint64_t h = kvcache_hash_block(b ? r->block_hash[b - 1] : 0, t, bs);
        kvcache_publish(e->kv, r->kv.blocks[b], h, t);
        r->block_hash[r->n_hashed++] = h;
    }
}

static void kv_drop(struct engine *e, struct engine_request *r) {
    if (r->has_swap) engine_swap_forget(e, r);
    kvcache_seq_release(e->kv, &r->kv);
    r->n_computed = 0;
    r->n_hashed = 0;
}

void engine_kv_drop(struct engine *e, struct engine_request *r) {
    kv_drop(e, r);
}

/* ---- finishing ---- */

void engine_finish_request(struct engine *e, struct engine_request *r, enum engine_finish f) {
    kv_drop(e, r);
    r->state = REQ_DONE;
    if (f == ENGINE_FINISH_ERROR && !r->error[0])
        snprintf(r->error, sizeof r->error, "the engine failed while running this request");
    req_publish(r, f);
    engine_observe_finish(e, r);
    req_unref(r); /* the engine's reference; r may be gone now */
}

/* ---- scheduling ---- */

static void preempt_at(struct engine *e, int i) {
    struct engine_request *r = e->running.v[i];
    req_queue_remove_at(&e->running, i);
    r->step_take = 0;
    if (!engine_swap_out(e, r)) {
        kv_drop(e, r);
        r->state = REQ_WAITING;
        e->n_recompute++;
        if (req_queue_insert_ordered(&e->waiting, r) != TL_OK) {
            snprintf(r->error, sizeof r->error, "out of host memory while preempting");
            engine_finish_request(e, r, ENGINE_FINISH_ERROR);
        }
    }
    pthread_mutex_lock(&e->metrics_mu);
    e->m.num_preemptions_total++;
    pthread_mutex_unlock(&e->metrics_mu);
}

/* Makes room for running.v[*i] to hold `tokens` tokens, preempting the latest unscheduled
 * arrivals. Returns false when r itself had to go. */
static bool make_room(struct engine *e, int *i, int tokens, bool *preempted) {
    struct engine_request *r = e->running.v[*i];
    while (kvcache_blocks_needed(e->kv, &r->kv, tokens) > kvcache_num_free(e->kv)) {
        int v = e->running.n - 1;
        while (v >= 0 && e->running.v[v]->step_take > 0) v--;
        if (v < 0) return false; /* cannot happen: r itself is unscheduled */
        bool self = e->running.v[v] == r;
        preempt_at(e, v);
        *preempted = true;
        if (self) return false;
        if (v < *i) (*i)--;
    }
    return true;
}

/* Restores running's order after a step changed keys (fair: the sequences that ran gained one;
 * a few steps' budget may have left some out). Insertion sort: it is nearly sorted. */
static void sort_running(struct engine *e) {
    struct req_queue *q = &e->running;
    for (int i = 1; i < q->n; i++) {
        struct engine_request *r = q->v[i];
        int j = i;
        for (; j > 0 && req_before(r, q->v[j - 1]); j--) q->v[j] = q->v[j - 1];
        q->v[j] = r;
    }
}

/* Fills fs_req[0..ns) with this step's requests (step_take set). */
static int schedule(struct engine *e) {
    int budget = e->o.max_num_batched_tokens;
    int ns = 0;
    bool preempted = false;
    struct tl_err err;
    if (e->fair) sort_running(e);
    for (int i = 0; i < e->running.n; i++) e->running.v[i]->step_take = 0;
    /* running: decodes first, then prefill chunks */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < e->running.n && budget > 0; i++) {
            struct engine_request *r = e->running.v[i];
            int need = n_tokens(r) - r->n_computed;
            if (r->step_take > 0 || (pass == 0) != (need == 1)) continue;
            int take = need < budget ? need : budget;
            if (!make_room(e, &i, r->n_computed + take, &preempted)) {
                i--; /* r left the queue; the next one moved into slot i */
                continue;
            }
            if (kvcache_seq_reserve(e->kv, &r->kv, r->n_computed + take, &err) != TL_OK) continue;
            r->step_take = take;
            e->fs_req[ns++] = r;
            budget -= take;
        }
    }
    /* admissions, in queue order over the waiting and the swapped (a swapped one starts
     * loading and joins a later step); none while this step had to preempt */
    while (!preempted && budget > 0 && e->running.n + e->n_loading < e->o.max_num_seqs) {
        struct engine_request *s = engine_swap_head(e);
        if (s && (e->waiting.n == 0 || req_before(s, e->waiting.v[0]))) {
            if (!engine_swap_in(e, s)) break;
            continue;
        }
        if (e->waiting.n == 0) break;
        struct engine_request *r = e->waiting.v[0];
        if (r->kv.n_blocks == 0 && e->o.enable_prefix_caching) prefix_match(e, r);
        int need = n_tokens(r) - r->n_computed;
        int take = need < budget ? need : budget;
        if (kvcache_blocks_needed(e->kv, &r->kv, r->n_computed + take) > kvcache_num_free(e->kv) ||
            kvcache_seq_reserve(e->kv, &r->kv, r->n_computed + take, &err) != TL_OK) {
            kv_drop(e, r); /* give cached blocks back: they stay cached */
            break;
        }
        req_queue_remove_at(&e->waiting, 0);
        if (req_queue_insert_ordered(&e->running, r) != TL_OK) {
            snprintf(r->error, sizeof r->error, "out of host memory while scheduling");
            engine_finish_request(e, r, ENGINE_FINISH_ERROR);
            continue;
        }
        if (!r->admitted_once) {
            r->admitted_once = true;
            r->n_cached = r->n_computed < r->n_prompt ? r->n_computed : r->n_prompt;
            pthread_mutex_lock(&e->metrics_mu);
            e->m.prefix_cache_queries_total += r->n_prompt;
            e->m.prefix_cache_hits_total += r->n_cached;
            pthread_mutex_unlock(&e->metrics_mu);
        }
        r->state = REQ_RUNNING;
        r->step_take = take;
        e->fs_req[ns++] = r;
        budget -= take;
    }
    return ns;
}

/* ---- sampling ---- */

static bool is_eos(const struct engine *e, int32_t t) {
    for (int i = 0; i < e->o.n_eos; i++)
        if (e->eos[i] == t) return true;
    return false;
}

static bool is_stop_id(const struct engine_request *r, int32_t t) {
    for (int i = 0; i < r->p.n_stop_token_ids; i++)
        if (r->stop_ids[i] == t) return true;
    return false;
}

/* Whether r's logits must be edited before sampling: vLLM keeps EOS and stop ids from being
 * sampled until min_tokens are out. */
static bool needs_mask(const struct engine *e, const struct engine_request *r) {
    return r->n_out < r->p.min_tokens &&
           ((!r->p.ignore_eos && e->o.n_eos > 0) || r->p.n_stop_token_ids > 0);
}

static void mask_stops(const struct engine *e, const struct engine_request *r, float *lg) {
    if (!r->p.ignore_eos)
        for (int i = 0; i < e->o.n_eos; i++)
            if (e->eos[i] >= 0 && e->eos[i] < e->vocab) lg[e->eos[i]] = -INFINITY;
    for (int i = 0; i < r->p.n_stop_token_ids; i++) lg[r->stop_ids[i]] = -INFINITY;
}

/* vLLM's logprobs: log-softmax of the raw logits. Returns the log-sum-exp and fills the k
 * most likely tokens, most likely first (lowest id among equals). */
static double logprobs_top(const float *lg, int vocab, int k, struct engine_logprob *top) {
    float m = -INFINITY;
    for (int i = 0; i < vocab; i++)
        if (lg[i] > m) m = lg[i];
    double s = 0.0;
    for (int i = 0; i < vocab; i++) s += exp((double)lg[i] - m);
    double lse = (double)m + log(s);
    int n = 0;
    for (int i = 0; i < vocab && k > 0; i++) {
        float v = lg[i];
        if (n == k && !(v > lg[top[k - 1].id])) continue;
        int j = n < k ? n++ : k - 1;
        while (j > 0 && v > lg[top[j - 1].id]) {
            top[j] = top[j - 1];
            j--;
        }
        top[j].id = i;
    }
    for (int i = 0; i < n; i++) top[i].logprob = (float)((double)lg[top[i].id] - lse);
    return lse;
}

/* ---- after sampling ---- */

static void text_push(struct engine_request *r, int32_t t) {
    const char *piece;
    size_t len;
    struct tl_err err;
    if (detok_push(r->dt, t, &piece, &len, &err) == TL_OK) req_text_append(r, piece, len);
}

static void text_flush(struct engine_request *r) {
    const char *piece;
    size_t len;
    struct tl_err err;
    if (r->dt && detok_flush(r->dt, &piece, &len, &err) == TL_OK) req_text_append(r, piece, len);
}

/* Looks for a stop string in the text the last token may have completed. */
static void check_stop_strings(struct engine_request *r, size_t old_len) {
    pthread_mutex_lock(&r->mu);
    size_t back = (size_t)(r->max_stop_len > 0 ? r->max_stop_len - 1 : 0);
    size_t from = old_len > back ? old_len - back : 0;
    const char *best = NULL;
    int best_i = -1;
    for (int i = 0; i < r->p.n_stop; i++) {
        size_t n = strlen(r->stop[i]);
        const char *hit = memmem(r->text + from, r->text_len - from, r->stop[i], n);
        if (hit && (!best || hit < best)) {
            best = hit;
            best_i = i;
        }
    }
    if (best) {
        size_t pos = (size_t)(best - r->text);
        if (r->p.include_stop_str_in_output) pos += strlen(r->stop[best_i]);
        r->text_len = pos;
        r->text[pos] = 0;
        r->stop_str = r->stop[best_i];
        r->pending = ENGINE_FINISH_STOP;
    }
    pthread_mutex_unlock(&r->mu);
}

static void accept_token(struct engine *e, struct engine_request *r, int32_t t, double now) {
    r->tokens[n_tokens(r)] = t;
    r->n_out++;
    if (r->n_out == 1) {
        r->t_first = now;
        pthread_mutex_lock(&e->metrics_mu);
        engine_hist_observe(&e->m.ttft, now - r->t_arrival);
        pthread_mutex_unlock(&e->metrics_mu);
    }
    r->t_last = now;
    bool checks = r->n_out >= r->p.min_tokens;
    bool stop_tok = false;
    if (checks && !r->p.ignore_eos && is_eos(e, t)) {
        stop_tok = true;
    } else if (checks && is_stop_id(r, t)) {
        stop_tok = true;
        r->stop_token = t;
    }
    size_t old_len = r->text_len;
    /* As vLLM: the token that stops a request is not part of its text unless asked. */
    if (r->dt && (!stop_tok || r->p.include_stop_str_in_output)) text_push(r, t);
    if (stop_tok) {
        r->pending = ENGINE_FINISH_STOP;
        return;
    }
    if (checks && r->p.n_stop > 0) check_stop_strings(r, old_len);
    if (r->pending) return;
    if (r->n_out >= r->p.max_tokens || n_tokens(r) >= e->o.max_model_len) {
        text_flush(r);
        r->pending = ENGINE_FINISH_LENGTH;
    }
}

/* ---- metrics ---- */

static void update_gauges(struct engine *e, int64_t prompt, int64_t gen, int64_t blocks, double dt,
                          double dev) {
    double lane_cpu = 0, lane_cross = 0, fwd = 0, tail = 0;
    if (dt > 0) forward_lane_seconds(e->fwd, &lane_cpu, &lane_cross, &fwd, &tail);
    int total = kvcache_num_blocks(e->kv);
    int used = total - kvcache_num_free(e->kv) - (e->pad_block >= 0);
    pthread_mutex_lock(&e->metrics_mu);
    e->m.prompt_tokens_total += prompt;
    e->m.generation_tokens_total += gen;
    e->m.num_running = e->running.n;
    e->m.num_waiting = e->waiting.n;
    e->m.num_swapped = e->swapped.n;
    e->m.kv_blocks_total = total - (e->pad_block >= 0);
    e->m.kv_blocks_used = used;
    e->m.gpu_cache_usage = e->m.kv_blocks_total > 0 ? (double)used / e->m.kv_blocks_total : 0.0;
    e->m.cpu_cache_usage = 0.0;
    e->m.num_preemptions_swap_total = e->n_swap_out;
    e->m.num_preemptions_recompute_total = e->n_recompute;
    e->m.num_swap_recoveries_total = e->n_recovered;
    if (e->o.kvswap) engine_swap_gauges(e, &e->m, tl_now_s());
    if (dt > 0) {
        e->m.steps_total++;
        e->m.step_blocks_total += blocks;
        e->m.busy_s += dt;
        e->m.device_s += dev;
        if (prompt == 0) {
            e->m.decode_steps++;
            e->m.decode_tokens += gen;
            e->m.decode_s += dt;
            e->m.decode_device_s += dev;
            e->m.decode_cpu_lane_s += lane_cpu;
            e->m.decode_cross_s += lane_cross;
            e->m.decode_forward_s += fwd;
            e->m.decode_tail_s += tail;
            if (gen == e->o.max_num_seqs) {
                e->m.full_decode_steps++;
                e->m.full_decode_s += dt;
            }
        }
    }
    pthread_mutex_unlock(&e->metrics_mu);
}

static void log_line(struct engine *e, double now) {
    double dt = now - e->last_log;
    if (e->o.log_interval_s <= 0 || dt < e->o.log_interval_s) return;
    struct engine_metrics m;
    engine_metrics_get(e, &m);
    char line[1024];
    int n = snprintf(line, sizeof line,
                     "Avg prompt throughput: %.1f tokens/s, Avg generation throughput: %.1f "
                     "tokens/s, Running: %d reqs, Swapped: %d reqs, Pending: %d reqs, GPU KV "
                     "cache usage: %.1f%%, CPU KV cache usage: %.1f%%",
                     e->log_prompt / dt, e->log_gen / dt, m.num_running, m.num_swapped,
                     m.num_waiting, 100.0 * m.gpu_cache_usage, 100.0 * m.cpu_cache_usage);
    if (e->o.kvswap) /* the KV tiers' own figures after vLLM's */
        n += snprintf(line + n, sizeof line - (size_t)n,
                      ", NVMe KV cache usage: %.1f%%, Swap out/in: %.1f/%.1f MB/s, NVMe "
                      "write/read: %.1f/%.1f MB/s, Preemptions swap/recompute: %lld/%lld, "
                      "Recovered: %lld",
                      100.0 * m.nvme_cache_usage, m.swap_out_bytes_per_s / 1e6,
                      m.swap_in_bytes_per_s / 1e6, m.nvme_write_bytes_per_s / 1e6,
                      m.nvme_read_bytes_per_s / 1e6, (long long)m.num_preemptions_swap_total,
                      (long long)m.num_preemptions_recompute_total,
                      (long long)m.num_swap_recoveries_total);
    snprintf(line + n, sizeof line - (size_t)n, ".");
    if (e->o.log)
        e->o.log(e->o.log_user, line);
    else
        fprintf(stderr, "tierlm: %s\n", line);
    e->last_log = now;
    e->log_prompt = e->log_gen = 0;
}

/* ---- the step ---- */

static void take_inbox(struct engine *e) {
    pthread_mutex_lock(&e->mu);
    for (int i = 0; i < e->inbox.n; i++) {
        struct engine_request *r = e->inbox.v[i];
        r->state = REQ_WAITING;
        r->prio = e->fair ? e->n_steps : 0; /* no later than any key in the queues */
        if (req_queue_push(&e->waiting, r) != TL_OK) {
            snprintf(r->error, sizeof r->error, "out of host memory while queueing");
            engine_finish_request(e, r, ENGINE_FINISH_ERROR);
        }
    }
    e->inbox.n = 0;
    e->abort_pending = false;
    pthread_mutex_unlock(&e->mu);
}

static void reap_aborts(struct engine *e, struct req_queue *q) {
    for (int i = 0; i < q->n; i++) {
        struct engine_request *r = q->v[i];
        if (!atomic_load(&r->abort_requested)) continue;
        req_queue_remove_at(q, i--);
        engine_finish_request(e, r, ENGINE_FINISH_ABORT);
    }
}

enum tl_status engine_step(struct engine *e, bool *busy, struct tl_err *err) {
    *busy = false;
    double t0 = tl_now_s(); /* a step's wall time includes its scheduling and sampling */
    take_inbox(e);
    reap_aborts(e, &e->waiting);
    reap_aborts(e, &e->running);
    reap_aborts(e, &e->swapped);
    engine_swap_poll(e, false);
    if (e->running.n == 0 && e->waiting.n == 0 && e->swapped.n == 0) {
        update_gauges(e, 0, 0, 0, 0, 0);
        return TL_OK;
    }
    int ns = schedule(e);
    if (ns == 0) {
        engine_swap_poll(e, true); /* only a transfer can move things on: wait for one */
        update_gauges(e, 0, 0, 0, 0, 0);
        return TL_OK;
    }
    *busy = true;

    /* the batch, in schedule order */
    int nt = 0;
    bool host = false;
    int64_t prompt_tok = 0;
    for (int j = 0; j < ns; j++) {
        struct engine_request *r = e->fs_req[j];
        int take = r->step_take;
        for (int k = 0; k < take; k++) {
            e->tokens[nt + k] = r->tokens[r->n_computed + k];
            e->positions[nt + k] = r->n_computed + k;
        }
        int want = r->n_computed + take == n_tokens(r);
        e->fs[j] = (struct fwd_seq){.n_new = take,
                                    .n_past = r->n_computed,
                                    .block_table = r->kv.blocks,
                                    .n_blocks = r->kv.n_blocks,
                                    .want_logits = want};
        nt += take;
        int in_prompt = r->n_prompt - r->n_computed;
        prompt_tok += in_prompt <= 0 ? 0 : in_prompt < take ? in_prompt : take;
        if (want) {
            host |= r->p.logprobs >= 0 || needs_mask(e, r);
        }
    }
    struct fwd_batch b = {ns, e->fs, nt, e->tokens, e->positions};
    enum tl_status st;
    if (!host) {
        /* sampled where the logits are (on the GPU only the ids come back) */
        int nl = 0;
        for (int j = 0; j < ns; j++) {
            struct engine_request *r = e->fs_req[j];
            if (!e->fs[j].want_logits) continue;
            e->smp[nl++] = (struct fwd_sample){.sp = &r->p.sp,
                                               .rng = &r->rng,
                                               .prompt = r->tokens,
                                               .n_prompt = r->n_prompt,
                                               .output = r->tokens + r->n_prompt,
                                               .n_output = r->n_out};
        }
        st = forward_step_sample(e->fwd, &b, e->smp, e->sampler, e->ids, err);
    } else {
        /* logprobs or min_tokens masks need the logits on the host */
        if (!e->logits) {
            e->logits = malloc((size_t)e->o.max_num_seqs * (size_t)e->vocab * sizeof *e->logits);
            e->raw = malloc((size_t)e->vocab * sizeof *e->raw);
            if (!e->logits || !e->raw)
                return tl_fail(err, TL_ERR_NOMEM, "out of host memory for logits");
        }
        st = forward_step(e->fwd, &b, e->logits, err);
    }
    if (st != TL_OK) {
        for (int j = 0; j < ns; j++) {
            struct engine_request *r = e->fs_req[j];
            snprintf(r->error, sizeof r->error, "%s", err->msg);
            r->pending = ENGINE_FINISH_ERROR;
        }
    } else {
        int li = 0;
        double now = tl_now_s();
        for (int j = 0; j < ns; j++) {
            struct engine_request *r = e->fs_req[j];
            r->n_computed += r->step_take;
            r->kv.n_tokens = r->n_computed;
            if (e->o.enable_prefix_caching) prefix_publish(e, r);
            if (!e->fs[j].want_logits) continue;
            int32_t t;
            if (!host) {
                t = e->ids[li++];
                accept_token(e, r, t, now);
                continue;
            }
            float *lg = e->logits + (size_t)li++ * (size_t)e->vocab;
            int k = r->p.logprobs;
            double lse = 0.0;
            if (k >= 0) {
                /* sampling edits lg in place: keep the raw row for the sampled token's logprob */
                memcpy(e->raw, lg, (size_t)e->vocab * sizeof *lg);
                lse = logprobs_top(lg, e->vocab, k,
                                   r->top ? r->top + (size_t)r->n_out * (size_t)k : NULL);
            }
            if (needs_mask(e, r)) mask_stops(e, r, lg);
            t = sampler_sample(e->sampler, &r->p.sp, &r->rng, lg, r->tokens, r->n_prompt,
                               r->tokens + r->n_prompt, r->n_out);
            if (k >= 0) r->lp[r->n_out] = (float)((double)e->raw[t] - lse);
            accept_token(e, r, t, now);
        }
    }
    int64_t gen = 0, blocks = 0;
    for (int j = 0; j < ns; j++) {
        struct engine_request *r = e->fs_req[j];
        gen += e->fs[j].want_logits && st == TL_OK;
        blocks += r->kv.n_blocks;
        if (e->fair) r->prio++; /* one more step of service */
    }
    e->n_steps++;
    /* publish and finish */
    for (int j = 0; j < ns; j++) {
        struct engine_request *r = e->fs_req[j];
        if (r->pending == ENGINE_FINISH_NONE) req_publish(r, ENGINE_FINISH_NONE);
    }
    int k = 0;
    for (int i = 0; i < e->running.n; i++) {
        struct engine_request *r = e->running.v[i];
        if (r->pending == ENGINE_FINISH_NONE) e->running.v[k++] = r;
    }
    e->running.n = k;
    for (int j = 0; j < ns; j++) {
        struct engine_request *r = e->fs_req[j];
        if (r->pending != ENGINE_FINISH_NONE) engine_finish_request(e, r, r->pending);
    }
    double dt = tl_now_s() - t0;
    if (st == TL_OK) engine_swap_observe_step(e, dt, nt, prompt_tok);
    e->log_prompt += prompt_tok;
    e->log_gen += gen;
    update_gauges(e, prompt_tok, gen, blocks, dt,
                  st == TL_OK ? forward_device_seconds(e->fwd) : 0.0);
    log_line(e, tl_now_s());
    return st;
}
