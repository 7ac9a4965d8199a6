/* engine_swap: preemption by swapping, the scheduler's side of the KV tiers (offload/kvswap
 * moves the bytes). A preempted sequence is swapped out when the tiers have room and moving
 * its blocks out and back costs less than recomputing its tokens (measured rates: the tiers
 * calibrate theirs, the engine times its prefill steps); it waits in the swapped queue in
 * queue order (engine_step.c), starts loading into fresh device blocks when its turn comes
 * (published full blocks still in the prefix cache are taken from there instead), and joins running
 * once the copy has landed, so the forward never waits for it. Any failure on the way sends it back
 * to waiting with nothing computed: it is recomputed from its tokens. Engine thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_impl.h"
#include "kvswap.h"

static int blocks_for(const struct engine *e, int tokens) {
    int bs = kvcache_block_size(e->kv);
    return (tokens + bs - 1) / bs;
}

static void recount(struct engine *e, struct engine_request *r) {
    r->has_swap = false;
    r->swap_h = -1;
    if (r->swap_loading) e->n_loading--;
    r->swap_loading = false;
}

void engine_swap_forget(struct engine *e, struct engine_request *r) {
    if (!r->has_swap) return;
    kvswap_release(e->o.kvswap, r->swap_h); /* waits for copies into r's device blocks */
    recount(e, r);
}

/* kvswap orders swapped sequences by one number (lower: needed sooner, kept in host memory):
 * the queue order's. */
static int64_t swap_key(const struct engine *e, const struct engine_request *r) {
    return e->fair ? (int64_t)(r->prio << 20 | (r->seq_no & 0xfffff)) : (int64_t)r->seq_no;
}

bool engine_swap_out(struct engine *e, struct engine_request *r) {
    struct kvswap *ks = e->o.kvswap;
    if (!ks || e->o.preemption_mode == ENGINE_PREEMPT_RECOMPUTE || r->n_computed == 0) return false;
    int nb = blocks_for(e, r->n_computed);
    if (nb > r->kv.n_blocks || !kvswap_can_out(ks, nb)) return false;
    /* auto: recomputing costs the forward's time for every computed token; swapping costs
     * the copies (which overlap the forward, so this favours recomputation a little) */
    if (e->o.preemption_mode == ENGINE_PREEMPT_AUTO && e->t_tok > 0 &&
        kvswap_estimate_s(ks, nb) >= e->t_tok * r->n_computed)
        return false;
    struct tl_err err;
    int32_t h;
    enum tl_status st = kvswap_out(ks, r->kv.blocks, nb, swap_key(e, r), &h, &err);
    if (st != TL_OK) {
        if (st == TL_ERR_IO) e->n_recovered++; /* the copy failed: recomputed instead */
        return false;
    }
    if (req_queue_insert_ordered(&e->swapped, r) != TL_OK) {
        kvswap_release(ks, h);
        return false;
    }
    kvcache_seq_release(e->kv, &r->kv); /* n_computed and the block hashes stay */
    r->has_swap = true;
    r->swap_h = h;
    r->swap_loading = false;
    r->state = REQ_SWAPPED;
    e->n_swap_out++;
    return true;
}

struct engine_request *engine_swap_head(struct engine *e) {
    for (int i = 0; i < e->swapped.n; i++)
        if (!e->swapped.v[i]->swap_loading) return e->swapped.v[i];
    return NULL;
}

bool engine_swap_in(struct engine *e, struct engine_request *r) {
    struct kvswap *ks = e->o.kvswap;
    if (kvswap_state(ks, r->swap_h) != KVSWAP_READY) return false;
    int bs = kvcache_block_size(e->kv), max_nb = blocks_for(e, e->o.max_model_len);
    if (!e->swap_dev) {
        e->swap_dev = malloc(2 * (size_t)max_nb * sizeof *e->swap_dev);
        if (!e->swap_dev) return false;
    }
    int nb = blocks_for(e, r->n_computed), hits = 0;
    int32_t *hit = e->swap_dev, *copy = e->swap_dev + max_nb;
    /* Full blocks still in the prefix cache hold the same tokens' KV: no copy for them. */
    for (int i = 0; i < nb; i++) {
        hit[i] = -1;
        if (e->o.enable_prefix_caching && i < r->n_hashed) {
            hit[i] = kvcache_lookup(e->kv, r->block_hash[i], r->tokens + (size_t)i * (size_t)bs);
            hits += hit[i] >= 0;
        }
    }
    /* Room for its next token too, and, while others run, a watermark (as vLLM's) so it is
     * not preempted again at once. */
    int need = blocks_for(e, r->n_prompt + r->n_out) - hits;
    int watermark = 0;
    if (e->running.n + e->n_loading > 0) {
        watermark = kvcache_num_blocks(e->kv) / 100;
        if (watermark < 1) watermark = 1;
    }
    struct tl_err err;
    bool ok = need + watermark <= kvcache_num_free(e->kv);
    int held = 0; /* hits below this index are in r->kv (or given back) */
    for (; ok && held < nb; held++) {
        int32_t b = hit[held];
        if (b < 0 && kvcache_alloc(e->kv, &b) != TL_OK) {
            ok = false;
            break;
        }
        if (kvcache_seq_push(&r->kv, b, &err) != TL_OK) {
            kvcache_unref(e->kv, b);
            held++;
            ok = false;
            break;
        }
        copy[held] = hit[held] >= 0 ? -1 : b;
    }
    if (ok) {
        r->kv.n_tokens = r->n_computed;
        ok = kvswap_in(ks, r->swap_h, copy, nb, &err) == TL_OK;
    }
    if (!ok) { /* give back what was taken; try again at a later step */
        for (int j = held; j < nb; j++)
            if (hit[j] >= 0) kvcache_unref(e->kv, hit[j]);
        kvcache_seq_release(e->kv, &r->kv);
        return false;
    }
    r->swap_loading = true;
    e->n_loading++;
    return true;
}

/* r's blocks landed: publish its full blocks again (the copies are as good as the
 * originals) and let it run. */
static void join(struct engine *e, struct engine_request *r) {
    int bs = kvcache_block_size(e->kv);
    if (e->o.enable_prefix_caching)
        for (int i = 0; i < r->n_hashed && i < r->kv.n_blocks; i++)
            kvcache_publish(e->kv, r->kv.blocks[i], r->block_hash[i],
                            r->tokens + (size_t)i * (size_t)bs);
    r->state = REQ_RUNNING;
    if (req_queue_insert_ordered(&e->running, r) != TL_OK) {
        snprintf(r->error, sizeof r->error, "out of host memory while scheduling");
        engine_finish_request(e, r, ENGINE_FINISH_ERROR);
    }
}

/* r's KV is lost: recompute it from its tokens. */
static void recover(struct engine *e, struct engine_request *r) {
    engine_kv_drop(e, r); /* releases the handle, the device blocks, n_computed = 0 */
    r->state = REQ_WAITING;
    e->n_recovered++;
    if (req_queue_insert_ordered(&e->waiting, r) != TL_OK) {
        snprintf(r->error, sizeof r->error, "out of host memory while recovering");
        engine_finish_request(e, r, ENGINE_FINISH_ERROR);
    }
}

void engine_swap_poll(struct engine *e, bool wait) {
    struct kvswap *ks = e->o.kvswap;
    if (!ks) return;
    kvswap_poll(ks, wait && e->swapped.n > 0);
    for (int i = 0; i < e->swapped.n; i++) {
        struct engine_request *r = e->swapped.v[i];
        enum kvswap_state st = kvswap_state(ks, r->swap_h);
        if (st != KVSWAP_LOADED && st != KVSWAP_FAILED) continue;
        req_queue_remove_at(&e->swapped, i--);
        if (st == KVSWAP_LOADED) {
            engine_swap_forget(e, r);
            join(e, r);
        } else {
            recover(e, r);
        }
    }
}

void engine_swap_observe_step(struct engine *e, double dt, int n_tokens, int64_t prompt_tokens) {
    /* steps that are mostly prefill time what recomputation costs per token */
    if (!e->o.kvswap || n_tokens < 32 || prompt_tokens * 2 < n_tokens || dt <= 0) return;
    double t = dt / n_tokens;
    e->t_tok = e->t_tok > 0 ? 0.8 * e->t_tok + 0.2 * t : t;
}

void engine_swap_gauges(struct engine *e, struct engine_metrics *m, double now) {
    struct kvswap_stats s;
    kvswap_stats(e->o.kvswap, &s);
    m->cpu_blocks_total = s.host_slots;
    m->cpu_blocks_used = s.host_used;
    m->cpu_cache_usage = s.host_slots ? (double)s.host_used / s.host_slots : 0.0;
    m->nvme_blocks_total = s.nvme_slots;
    m->nvme_blocks_used = s.nvme_used;
    m->nvme_cache_usage = s.nvme_slots ? (double)s.nvme_used / s.nvme_slots : 0.0;
    m->swap_out_bytes_total = s.out_bytes;
    m->swap_in_bytes_total = s.in_bytes;
    m->nvme_write_bytes_total = s.nvme_write_bytes;
    m->nvme_read_bytes_total = s.nvme_read_bytes;
    m->kv_fail_crc_total = s.fail[KVSWAP_FAIL_CRC];
    m->kv_fail_read_total = s.fail[KVSWAP_FAIL_READ];
    m->kv_fail_short_read_total = s.fail[KVSWAP_FAIL_SHORT_READ];
    m->kv_fail_write_total = s.fail[KVSWAP_FAIL_WRITE];
    m->kv_fail_nospace_total = s.fail[KVSWAP_FAIL_NOSPACE];
    m->kv_fail_copy_total = s.fail[KVSWAP_FAIL_COPY];
    m->kv_dropped_capacity_total = s.fail[KVSWAP_FAIL_CAPACITY];
    /* rates over windows of at least a second (the log line's interval is 5 s) */
    int64_t b[4] = {s.out_bytes, s.in_bytes, s.nvme_write_bytes, s.nvme_read_bytes};
    double *rate[4] = {&m->swap_out_bytes_per_s, &m->swap_in_bytes_per_s,
                       &m->nvme_write_bytes_per_s, &m->nvme_read_bytes_per_s};
    if (e->rate_t == 0) {
        e->rate_t = now;
        memcpy(e->rate_bytes, b, sizeof b);
    } else if (now - e->rate_t >= 1.0) {
        for (int i = 0; i < 4; i++)
            *rate[i] = (double)(b[i] - e->rate_bytes[i]) / (now - e->rate_t);
        e->rate_t = now;
        memcpy(e->rate_bytes, b, sizeof b);
    }
}
