/* engine: requests (submit, wait, abort, release), the engine thread, and the metrics. The
 * scheduling step itself is engine_step.c. A request is shared by its submitter and the engine
 * through a reference count; whichever lets go last frees it. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "engine_impl.h"

/* vLLM's histogram buckets (seconds), so dashboards built for vLLM read ours. */
static const double TTFT_LE[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                 0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0,
                                 20.0,  40.0,  80.0, 160., 640., 2560.};
static const double TPOT_LE[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                 0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
static const double E2E_LE[] = {0.3,  0.5,  0.8,   1.0,   1.5,   2.0,   2.5,
                                5.0,  10.0, 15.0,  20.0,  30.0,  40.0,  50.0,
                                60.0, 120., 240.0, 480.0, 960.0, 1920., 7680.};

const char *engine_finish_str(enum engine_finish f) {
    switch (f) {
    case ENGINE_FINISH_STOP:
        return "stop";
    case ENGINE_FINISH_LENGTH:
        return "length";
    case ENGINE_FINISH_ABORT:
        return "abort";
    case ENGINE_FINISH_ERROR:
        return "error";
    default:
        return "none";
    }
}

void engine_params_default(struct engine_params *p) {
    memset(p, 0, sizeof *p);
    sampling_params_default(&p->sp);
    p->max_tokens = 16;
    p->skip_special_tokens = true;
    p->logprobs = -1;
}

int engine_max_model_len(const struct engine *e) {
    return e->o.max_model_len;
}
int engine_vocab_size(const struct engine *e) {
    return e->vocab;
}

/* ---- queues ---- */

enum tl_status req_queue_push(struct req_queue *q, struct engine_request *r) {
    if (q->n == q->cap) {
        int cap = q->cap ? 2 * q->cap : 64;
        struct engine_request **v = realloc(q->v, (size_t)cap * sizeof *v);
        if (!v) return TL_ERR_NOMEM;
        q->v = v;
        q->cap = cap;
    }
    q->v[q->n++] = r;
    return TL_OK;
}

void req_queue_remove_at(struct req_queue *q, int i) {
    memmove(q->v + i, q->v + i + 1, (size_t)(q->n - i - 1) * sizeof *q->v);
    q->n--;
}

enum tl_status req_queue_insert_ordered(struct req_queue *q, struct engine_request *r) {
    if (req_queue_push(q, r) != TL_OK) return TL_ERR_NOMEM;
    int i = q->n - 1;
    while (i > 0 && req_before(r, q->v[i - 1])) {
        q->v[i] = q->v[i - 1];
        i--;
    }
    q->v[i] = r;
    return TL_OK;
}

/* ---- histograms ---- */

static void hist_init(struct engine_hist *h, const double *le, int n) {
    memset(h, 0, sizeof *h);
    h->n_le = n;
    memcpy(h->le, le, (size_t)n * sizeof *le);
}

void engine_hist_observe(struct engine_hist *h, double v) {
    for (int i = 0; i < h->n_le; i++)
        if (v <= h->le[i]) h->counts[i]++;
    h->counts[h->n_le]++;
    h->sum += v;
    h->count++;
}

/* ---- requests ---- */

static void req_free(struct engine_request *r) {
    for (int i = 0; i < ENGINE_MAX_STOP; i++) free(r->stop[i]);
    free(r->stop_ids);
    free(r->tokens);
    free(r->lp);
    free(r->top);
    free(r->block_hash);
    free(r->text);
    free(r->rd_buf);
    free(r->kv.blocks);
    detok_free(r->dt);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

void req_unref(struct engine_request *r) {
    if (atomic_fetch_sub(&r->refs, 1) == 1) req_free(r);
}

enum tl_status req_text_append(struct engine_request *r, const char *s, size_t n) {
    if (n == 0) return TL_OK;
    pthread_mutex_lock(&r->mu);
    if (r->text_len + n + 1 > r->text_cap) {
        size_t cap = r->text_cap ? r->text_cap : 256;
        while (cap < r->text_len + n + 1) cap *= 2;
        char *t = realloc(r->text, cap);
        if (!t) {
            pthread_mutex_unlock(&r->mu);
            return TL_ERR_NOMEM;
        }
        r->text = t;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, s, n);
    r->text_len += n;
    r->text[r->text_len] = 0;
    pthread_mutex_unlock(&r->mu);
    return TL_OK;
}

void req_publish(struct engine_request *r, enum engine_finish finish) {
    pthread_mutex_lock(&r->mu);
    r->pub_out = r->n_out;
    size_t vis = r->text_len;
    if (finish == ENGINE_FINISH_NONE && r->p.n_stop > 0 && !r->p.include_stop_str_in_output) {
        /* Hold back what could still become the start of a stop string, never splitting a
         * UTF-8 character. */
        size_t hold = (size_t)(r->max_stop_len - 1);
        vis = r->text_len > hold ? r->text_len - hold : 0;
        while (vis > 0 && ((unsigned char)r->text[vis] & 0xC0) == 0x80) vis--;
    }
    if (vis > r->text_visible) r->text_visible = vis;
    if (finish != ENGINE_FINISH_NONE) {
        r->text_visible = r->text_len;
        r->finish = finish;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static bool has_new(const struct engine_request *r) {
    return r->pub_out > r->rd_out || r->text_visible > r->rd_text ||
           (r->finish != ENGINE_FINISH_NONE && !r->finish_seen);
}

void engine_request_wait(struct engine_request *r, int timeout_ms, struct engine_output *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&r->mu);
    if (!has_new(r) && timeout_ms != 0 && r->finish == ENGINE_FINISH_NONE) {
        if (timeout_ms < 0) {
            while (!has_new(r)) pthread_cond_wait(&r->cv, &r->mu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += timeout_ms / 1000;
            ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            while (!has_new(r))
                if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT) break;
        }
    }
    int k = r->p.logprobs;
    out->n_new = r->pub_out - r->rd_out;
    out->ids = r->tokens + r->n_prompt + r->rd_out;
    if (k >= 0) {
        out->logprobs = r->lp + r->rd_out;
        out->top = k > 0 ? r->top + (size_t)r->rd_out * (size_t)k : NULL;
        out->top_n = k;
    }
    r->rd_out = r->pub_out;
    size_t nt = r->text_visible - r->rd_text;
    if (nt + 1 > r->rd_cap) {
        size_t cap = r->rd_cap ? r->rd_cap : 256;
        while (cap < nt + 1) cap *= 2;
        char *b = realloc(r->rd_buf, cap);
        if (b) {
            r->rd_buf = b;
            r->rd_cap = cap;
        } else {
            nt = r->rd_cap ? r->rd_cap - 1 : 0; /* hand out what fits; the rest comes next time */
        }
    }
    if (r->rd_buf) {
        if (nt) memcpy(r->rd_buf, r->text + r->rd_text, nt);
        r->rd_buf[nt] = 0;
        out->text = r->rd_buf;
    } else {
        out->text = "";
    }
    out->text_len = nt;
    r->rd_text += nt;
    out->n_prompt = r->n_prompt;
    out->n_cached = r->n_cached;
    out->n_generated = r->pub_out;
    if (r->finish != ENGINE_FINISH_NONE && r->rd_text == r->text_visible &&
        r->rd_out == r->pub_out) {
        out->finish = r->finish;
        out->stop_str = r->stop_str;
        out->stop_token = r->stop_token;
        out->error = r->finish == ENGINE_FINISH_ERROR ? r->error : NULL;
        r->finish_seen = true;
    } else {
        out->stop_token = -1;
    }
    pthread_mutex_unlock(&r->mu);
}

static void engine_wake(struct engine *e) {
    pthread_mutex_lock(&e->mu);
    e->abort_pending = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void engine_request_abort(struct engine_request *r) {
    atomic_store(&r->abort_requested, true);
    engine_wake(r->e);
}

void engine_request_release(struct engine_request *r) {
    if (!r) return;
    bool done;
    pthread_mutex_lock(&r->mu);
    done = r->finish != ENGINE_FINISH_NONE;
    pthread_mutex_unlock(&r->mu);
    if (!done) engine_request_abort(r);
    req_unref(r);
}

/* ---- submit ---- */

static bool id_ok(const struct engine *e, int32_t t) {
    return t >= 0 && t < e->vocab;
}

static enum tl_status validate(const struct engine *e, const int32_t *prompt, int n_prompt,
                               const struct engine_params *p, struct tl_err *err) {
    if (!prompt || n_prompt < 1) return tl_fail(err, TL_ERR_INVALID, "the prompt is empty");
    for (int i = 0; i < n_prompt; i++)
        if (!id_ok(e, prompt[i]))
            return tl_fail(err, TL_ERR_INVALID,
                           "prompt token %d is %d, outside the vocabulary [0, %d)", i, prompt[i],
                           e->vocab);
    if (p->max_tokens < 1)
        return tl_fail(err, TL_ERR_INVALID, "max_tokens must be at least 1, got %d", p->max_tokens);
    if ((int64_t)n_prompt + p->max_tokens > e->o.max_model_len)
        return tl_fail(err, TL_ERR_INVALID,
                       "this model's maximum context length is %d tokens, but %d were requested "
                       "(%d in the prompt, %d to generate): shorten the prompt or lower max_tokens",
                       e->o.max_model_len, n_prompt + p->max_tokens, n_prompt, p->max_tokens);
    if (p->min_tokens < 0 || p->min_tokens > p->max_tokens)
        return tl_fail(err, TL_ERR_INVALID, "min_tokens must be in [0, max_tokens=%d], got %d",
                       p->max_tokens, p->min_tokens);
    enum tl_status st = sampling_params_validate(&p->sp, err);
    if (st != TL_OK) return st;
    if (p->n_stop < 0 || p->n_stop > ENGINE_MAX_STOP)
        return tl_fail(err, TL_ERR_INVALID, "at most %d stop strings, got %d", ENGINE_MAX_STOP,
                       p->n_stop);
    if (p->n_stop > 0 && !e->o.tok)
        return tl_fail(err, TL_ERR_INVALID,
                       "stop strings need a tokenizer, and this engine runs without one");
    for (int i = 0; i < p->n_stop; i++) {
        size_t n = p->stop[i] ? strlen(p->stop[i]) : 0;
        if (n == 0 || n > ENGINE_MAX_STOP_LEN)
            return tl_fail(err, TL_ERR_INVALID, "stop string %d must be 1..%d bytes, got %zu", i,
                           ENGINE_MAX_STOP_LEN, n);
    }
    if (p->n_stop_token_ids < 0 || p->n_stop_token_ids > 1024)
        return tl_fail(err, TL_ERR_INVALID, "at most 1024 stop_token_ids, got %d",
                       p->n_stop_token_ids);
    for (int i = 0; i < p->n_stop_token_ids; i++)
        if (!id_ok(e, p->stop_token_ids[i]))
            return tl_fail(err, TL_ERR_INVALID, "stop_token_ids[%d] = %d is outside [0, %d)", i,
                           p->stop_token_ids[i], e->vocab);
    if (p->logprobs > ENGINE_MAX_LOGPROBS)
        return tl_fail(err, TL_ERR_INVALID, "logprobs must be at most %d, got %d",
                       ENGINE_MAX_LOGPROBS, p->logprobs);
    int bs = kvcache_block_size(e->kv);
    int64_t need = ((int64_t)n_prompt + p->max_tokens + bs - 1) / bs;
    int have = kvcache_num_blocks(e->kv) - (e->pad_block >= 0);
    if (need > have)
        return tl_fail(err, TL_ERR_INVALID,
                       "%d prompt + %d new tokens need %lld KV blocks of %d tokens, and the whole "
                       "cache has %d: shorten the request or give the KV cache more memory",
                       n_prompt, p->max_tokens, (long long)need, bs, have);
    return TL_OK;
}

static uint64_t fresh_seed(uint64_t salt) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (salt * 0x9e3779b97f4a7c15ull);
}

enum tl_status engine_submit(struct engine *e, const int32_t *prompt, int n_prompt,
                             const struct engine_params *p, struct engine_request **out,
                             struct tl_err *err) {
    *out = NULL;
    enum tl_status st = validate(e, prompt, n_prompt, p, err);
    if (st != TL_OK) return st;
    struct engine_request *r = calloc(1, sizeof *r);
    if (!r) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->e = e;
    atomic_init(&r->refs, 2);
    atomic_init(&r->abort_requested, false);
    r->t_arrival = tl_now_s();
    r->p = *p;
    r->p.stop = (const char *const *)r->stop;
    r->stop_token = -1;
    r->swap_h = -1;
    r->n_prompt = n_prompt;
    size_t len = (size_t)n_prompt + (size_t)p->max_tokens;
    int bs = kvcache_block_size(e->kv);
    r->tokens = malloc(len * sizeof *r->tokens);
    r->block_hash = malloc((len / (size_t)bs + 1) * sizeof *r->block_hash);
    bool ok = r->tokens && r->block_hash;
    for (int i = 0; ok && i < p->n_stop; i++) {
        r->stop[i] = strdup(p->stop[i]);
        ok = r->stop[i] != NULL;
        int n = (int)strlen(p->stop[i]);
        if (n > r->max_stop_len) r->max_stop_len = n;
    }
    if (ok && p->n_stop_token_ids > 0) {
        r->stop_ids = malloc((size_t)p->n_stop_token_ids * sizeof *r->stop_ids);
        ok = r->stop_ids != NULL;
        if (ok)
            memcpy(r->stop_ids, p->stop_token_ids,
                   (size_t)p->n_stop_token_ids * sizeof *r->stop_ids);
    }
    r->p.stop_token_ids = r->stop_ids;
    if (ok && p->logprobs >= 0) {
        r->lp = malloc((size_t)p->max_tokens * sizeof *r->lp);
        ok = r->lp != NULL;
        if (ok && p->logprobs > 0) {
            r->top = malloc((size_t)p->max_tokens * (size_t)p->logprobs * sizeof *r->top);
            ok = r->top != NULL;
        }
    }
    if (!ok) {
        req_free(r);
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    }
    if (e->o.tok && (st = detok_create(e->o.tok, p->skip_special_tokens, &r->dt, err)) != TL_OK) {
        req_free(r);
        return st;
    }
    memcpy(r->tokens, prompt, (size_t)n_prompt * sizeof *prompt);

    pthread_mutex_lock(&e->mu);
    r->seq_no = e->next_seq_no++;
    sampler_rng_seed(&r->rng, p->sp.has_seed ? p->sp.seed : fresh_seed(r->seq_no + 1));
    if (e->stopping || req_queue_push(&e->inbox, r) != TL_OK) {
        pthread_mutex_unlock(&e->mu);
        req_free(r);
        return tl_fail(err, e->stopping ? TL_ERR_INVALID : TL_ERR_NOMEM,
                       e->stopping ? "the engine is shutting down" : "out of host memory");
    }
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    *out = r;
    return TL_OK;
}

/* ---- metrics ---- */

void engine_observe_finish(struct engine *e, struct engine_request *r) {
    double now = tl_now_s();
    pthread_mutex_lock(&e->metrics_mu);
    e->m.request_success_total[r->finish]++;
    if (r->finish == ENGINE_FINISH_STOP || r->finish == ENGINE_FINISH_LENGTH) {
        engine_hist_observe(&e->m.e2e, now - r->t_arrival);
        if (r->n_out > 1)
            engine_hist_observe(&e->m.tpot, (r->t_last - r->t_first) / (r->n_out - 1));
    }
    pthread_mutex_unlock(&e->metrics_mu);
}

void engine_metrics_get(struct engine *e, struct engine_metrics *m) {
    pthread_mutex_lock(&e->metrics_mu);
    *m = e->m;
    pthread_mutex_unlock(&e->metrics_mu);
    pthread_mutex_lock(&e->mu);
    m->num_waiting += e->inbox.n;
    pthread_mutex_unlock(&e->mu);
}

/* ---- create / thread / destroy ---- */

enum tl_status engine_create(struct forward *f, struct kvcache *kv, int vocab_size,
                             const struct engine_opts *o, struct engine **out, struct tl_err *err) {
    *out = NULL;
    if (o->max_num_seqs < 1 || o->max_num_batched_tokens < 1 || o->max_model_len < 1)
        return tl_fail(err, TL_ERR_INVALID,
                       "max-num-seqs, max-num-batched-tokens and max-model-len must be >= 1");
    if (o->max_num_batched_tokens < o->max_num_seqs)
        return tl_fail(err, TL_ERR_INVALID,
                       "--max-num-batched-tokens (%d) must be at least --max-num-seqs (%d): every "
                       "running sequence needs one token per step",
                       o->max_num_batched_tokens, o->max_num_seqs);
    struct engine *e = calloc(1, sizeof *e);
    if (!e) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    e->fwd = f;
    e->kv = kv;
    e->vocab = vocab_size;
    e->o = *o;
    e->pad_block = -1;
    e->fair = o->sched == ENGINE_SCHED_FAIR || (o->sched == ENGINE_SCHED_AUTO && o->kvswap &&
                                                o->preemption_mode != ENGINE_PREEMPT_RECOMPUTE);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_mutex_init(&e->metrics_mu, NULL);
    size_t nt = (size_t)o->max_num_batched_tokens, ns = (size_t)o->max_num_seqs;
    e->eos = malloc((size_t)(o->n_eos > 0 ? o->n_eos : 1) * sizeof *e->eos);
    e->fs = calloc(ns, sizeof *e->fs);
    e->fs_req = calloc(ns, sizeof *e->fs_req);
    e->tokens = malloc(nt * sizeof *e->tokens);
    e->positions = malloc(nt * sizeof *e->positions);
    e->ids = malloc(ns * sizeof *e->ids);
    e->smp = calloc(ns, sizeof *e->smp);
    enum tl_status st = TL_OK;
    if (!e->eos || !e->fs || !e->fs_req || !e->tokens || !e->positions || !e->ids || !e->smp) {
        st = tl_fail(err, TL_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    if (o->n_eos > 0) memcpy(e->eos, o->eos_ids, (size_t)o->n_eos * sizeof *e->eos);
    e->o.eos_ids = e->eos;
    if ((st = sampler_create(vocab_size, &e->sampler, err)) != TL_OK) goto fail;
    /* A block of the engine's own lets the forward pad decode steps to graph sizes, when the
     * cache has one to spare beyond a full-length sequence; an offloaded plan sizes the cache to
     * exactly what it needs and runs without graphs, so it asks for none). */
    int seq_blocks = (o->max_model_len + kvcache_block_size(kv) - 1) / kvcache_block_size(kv);
    if (o->graph_pad_block && kvcache_num_blocks(kv) > seq_blocks &&
        kvcache_alloc(kv, &e->pad_block) == TL_OK)
        forward_set_pad_block(f, e->pad_block);
    hist_init(&e->m.ttft, TTFT_LE, (int)(sizeof TTFT_LE / sizeof *TTFT_LE));
    hist_init(&e->m.tpot, TPOT_LE, (int)(sizeof TPOT_LE / sizeof *TPOT_LE));
    hist_init(&e->m.e2e, E2E_LE, (int)(sizeof E2E_LE / sizeof *E2E_LE));
    e->m.kv_blocks_total = kvcache_num_blocks(kv);
    e->last_log = tl_now_s();
    *out = e;
    return TL_OK;
fail:
    engine_destroy(e);
    return st;
}

static void *engine_main(void *arg) {
    struct engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stopping && e->inbox.n == 0 && e->running.n == 0 && e->waiting.n == 0 &&
               e->swapped.n == 0 && !e->abort_pending)
            pthread_cond_wait(&e->cv, &e->mu);
        bool stop = e->stopping;
        pthread_mutex_unlock(&e->mu);
        if (stop) break;
        bool busy;
        struct tl_err err;
        if (engine_step(e, &busy, &err) != TL_OK) {
            char line[TL_ERR_MSG_MAX + 32];
            snprintf(line, sizeof line, "engine step failed: %s", err.msg);
            if (e->o.log)
                e->o.log(e->o.log_user, line);
            else
                fprintf(stderr, "tierlm: %s\n", line);
        }
    }
    return NULL;
}

enum tl_status engine_start(struct engine *e, struct tl_err *err) {
    if (e->started) return TL_OK;
    int rc = pthread_create(&e->thread, NULL, engine_main, e);
    if (rc)
        return tl_fail(err, TL_ERR_INTERNAL, "cannot start the engine thread: %s", strerror(rc));
    e->started = true;
    return TL_OK;
}

void engine_destroy(struct engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stopping = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->started) pthread_join(e->thread, NULL);
    /* What is left ends as aborted; its submitters still read the final delta. */
    for (int i = 0; i < e->inbox.n; i++)
        engine_finish_request(e, e->inbox.v[i], ENGINE_FINISH_ABORT);
    while (e->waiting.n > 0) {
        struct engine_request *r = e->waiting.v[0];
        req_queue_remove_at(&e->waiting, 0);
        engine_finish_request(e, r, ENGINE_FINISH_ABORT);
    }
    while (e->running.n > 0) {
        struct engine_request *r = e->running.v[0];
        req_queue_remove_at(&e->running, 0);
        engine_finish_request(e, r, ENGINE_FINISH_ABORT);
    }
    while (e->swapped.n > 0) {
        struct engine_request *r = e->swapped.v[0];
        req_queue_remove_at(&e->swapped, 0);
        engine_finish_request(e, r, ENGINE_FINISH_ABORT);
    }
    if (e->pad_block >= 0) {
        forward_set_pad_block(e->fwd, -1);
        kvcache_unref(e->kv, e->pad_block);
    }
    free(e->inbox.v);
    free(e->waiting.v);
    free(e->running.v);
    free(e->swapped.v);
    free(e->swap_dev);
    sampler_destroy(e->sampler);
    free(e->logits);
    free(e->raw);
    free(e->fs);
    free(e->fs_req);
    free(e->tokens);
    free(e->positions);
    free(e->ids);
    free(e->smp);
    free(e->eos);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->metrics_mu);
    free(e);
}
