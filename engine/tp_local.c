/* tp_local: the in-process group. One mutex-and-condvar barrier serves every collective; it
 * can be broken (a rank failed: abort) or shut down (no more steps), which wakes every waiter.
 * Each rank owns its fp32 staging buffer: it fills it before a barrier and the others read it
 * only between that barrier and the next, so no buffer is written while another rank reads it.
 * Sums run in rank order on every rank, so every rank computes the same bits. */
#include "tp_local.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tp.h"

struct tp_rank {
    struct tl_collective coll;
    struct tp_local *g;
    float *stage, *sum; /* host fp32, cap floats each */
    size_t cap;
    /* the serving thread (ranks > 0) */
    struct forward *f;
    pthread_t thread;
    bool started;
    enum tl_status served;
    struct tl_err serve_err;
    char err[TL_ERR_MSG_MAX];
};

enum { PASSED = 0, BROKEN, SHUTDOWN };

struct tp_local {
    int world;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;
    unsigned long gen;
    bool broken, shutdown, joined;
    char why[512];
    int32_t *msg; /* rank 0's step, copied */
    int msg_n, msg_cap;
    struct tp_rank r[TP_MAX_WORLD];
};

/* Waits until all ranks arrive. BROKEN / SHUTDOWN when the group ends first. */
static int barrier(struct tp_local *g) {
    pthread_mutex_lock(&g->mu);
    int res = g->broken ? BROKEN : g->shutdown ? SHUTDOWN : PASSED;
    if (res == PASSED) {
        unsigned long gen = g->gen;
        if (++g->arrived == g->world) {
            g->arrived = 0;
            g->gen++;
            pthread_cond_broadcast(&g->cv);
        } else {
            while (gen == g->gen && !g->broken && !g->shutdown) pthread_cond_wait(&g->cv, &g->mu);
            if (gen == g->gen) res = g->broken ? BROKEN : SHUTDOWN;
        }
    }
    pthread_mutex_unlock(&g->mu);
    return res;
}

static enum tl_status rank_fail(struct tp_rank *r, enum tl_status st, const char *fmt,
                                const char *what) {
    snprintf(r->err, sizeof r->err, fmt, r->coll.rank, what);
    return st;
}

/* A barrier's outcome as a status (a shutdown in the middle of a step is a failure too). */
static enum tl_status sync_all(struct tp_rank *r) {
    int b = barrier(r->g);
    if (b == PASSED) return TL_OK;
    if (b == BROKEN)
        return rank_fail(r, TL_ERR_INTERNAL, "tensor parallel rank %d: the group failed: %s",
                         r->g->why);
    return rank_fail(r, TL_ERR_INTERNAL, "tensor parallel rank %d: %s",
                     "the group shut down in the middle of a step");
}

static void group_abort(struct tp_local *g, const char *why) {
    pthread_mutex_lock(&g->mu);
    if (!g->broken) {
        g->broken = true;
        snprintf(g->why, sizeof g->why, "%.500s", why);
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
}

static void op_abort(void *ctx, const char *why) {
    group_abort(((struct tp_rank *)ctx)->g, why);
}

static const char *op_last_error(void *ctx) {
    return ((struct tp_rank *)ctx)->err;
}

static bool reserve(struct tp_rank *r, size_t n) {
    if (n <= r->cap) return true;
    float *a = realloc(r->stage, n * sizeof *a);
    if (a) r->stage = a;
    float *b = realloc(r->sum, n * sizeof *b);
    if (b) r->sum = b;
    if (!a || !b) return false;
    r->cap = n;
    return true;
}

/* This rank's activations into its staging buffer; on failure the group is broken, so no
 * other rank waits for this one. */
static enum tl_status stage_in(struct tp_rank *r, const struct ops *o, const void *src, size_t n) {
    enum tl_status st = TL_OK;
    if (!reserve(r, n))
        st = rank_fail(r, TL_ERR_NOMEM, "tensor parallel rank %d: %s",
                       "out of host memory for the all-reduce staging buffer");
    else if ((st = o->read_f32(o->ctx, src, n, r->stage)) != TL_OK)
        rank_fail(r, st, "tensor parallel rank %d: reading activations failed: %s",
                  o->last_error(o->ctx));
    if (st != TL_OK) group_abort(r->g, r->err);
    return st;
}

static enum tl_status op_all_reduce_sum(void *ctx, const struct ops *o, void *buf, size_t n) {
    struct tp_rank *r = ctx;
    struct tp_local *g = r->g;
    enum tl_status st = stage_in(r, o, buf, n);
    if (st == TL_OK) st = sync_all(r);
    if (st != TL_OK) return st;
    float *sum = r->sum;
    memcpy(sum, g->r[0].stage, n * sizeof *sum);
    for (int q = 1; q < g->world; q++) {
        const float *s = g->r[q].stage;
        for (size_t i = 0; i < n; i++) sum[i] += s[i];
    }
    /* nobody may refill a staging buffer before every rank has summed it */
    if ((st = sync_all(r)) != TL_OK) return st;
    if ((st = o->write_f32(o->ctx, sum, n, buf)) != TL_OK) {
        rank_fail(r, st, "tensor parallel rank %d: writing activations failed: %s",
                  o->last_error(o->ctx));
        group_abort(g, r->err);
    }
    return st;
}

static enum tl_status op_all_gather_f32(void *ctx, const struct ops *o, const void *src, size_t n,
                                        float *dst) {
    struct tp_rank *r = ctx;
    struct tp_local *g = r->g;
    enum tl_status st = stage_in(r, o, src, n);
    if (st == TL_OK) st = sync_all(r);
    if (st != TL_OK) return st;
    for (int q = 0; q < g->world; q++) memcpy(dst + (size_t)q * n, g->r[q].stage, n * sizeof *dst);
    return sync_all(r);
}

/* Two barriers: the first finds every receiver idle (done with the previous message), the
 * second publishes the new one. */
static enum tl_status op_broadcast_step(void *ctx, const int32_t **msg, int *n) {
    struct tp_rank *r = ctx;
    struct tp_local *g = r->g;
    int b = barrier(g);
    if (b == SHUTDOWN && r->coll.rank > 0) {
        *msg = NULL;
        *n = 0;
        return TL_OK;
    }
    if (b != PASSED) return sync_all(r); /* reports why */
    if (r->coll.rank == 0) {
        if (*n > g->msg_cap) {
            int32_t *p = realloc(g->msg, (size_t)*n * sizeof *p);
            if (!p) {
                rank_fail(r, TL_ERR_NOMEM, "tensor parallel rank %d: %s",
                          "out of host memory for the step message");
                group_abort(g, r->err);
                return TL_ERR_NOMEM;
            }
            g->msg = p;
            g->msg_cap = *n;
        }
        memcpy(g->msg, *msg, (size_t)*n * sizeof *g->msg);
        g->msg_n = *n;
    }
    enum tl_status st = sync_all(r);
    if (st != TL_OK) return st;
    if (r->coll.rank > 0) {
        *msg = g->msg;
        *n = g->msg_n;
    }
    return TL_OK;
}

enum tl_status tp_local_create(int world, struct tp_local **out, struct tl_err *err) {
    *out = NULL;
    if (world < 1 || world > TP_MAX_WORLD)
        return tl_fail(err, TL_ERR_INVALID, "a tensor parallel group has 1..%d ranks, not %d",
                       TP_MAX_WORLD, world);
    struct tp_local *g = calloc(1, sizeof *g);
    if (!g) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    g->world = world;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    for (int i = 0; i < world; i++) {
        struct tp_rank *r = &g->r[i];
        r->g = g;
        r->coll = (struct tl_collective){.rank = i,
                                         .world = world,
                                         .ctx = r,
                                         .last_error = op_last_error,
                                         .all_reduce_sum = op_all_reduce_sum,
                                         .all_gather_f32 = op_all_gather_f32,
                                         .broadcast_step = op_broadcast_step,
                                         .abort = op_abort};
    }
    *out = g;
    return TL_OK;
}

const struct tl_collective *tp_local_collective(struct tp_local *g, int rank) {
    return rank >= 0 && rank < g->world ? &g->r[rank].coll : NULL;
}

static void *serve_main(void *arg) {
    struct tp_rank *r = arg;
    r->served = forward_serve(r->f, &r->serve_err);
    return NULL;
}

enum tl_status tp_local_serve(struct tp_local *g, int rank, struct forward *f, struct tl_err *err) {
    if (rank < 1 || rank >= g->world || g->r[rank].started)
        return tl_fail(err, TL_ERR_INVALID, "tp_local_serve: rank %d of %d (started already?)",
                       rank, g->world);
    struct tp_rank *r = &g->r[rank];
    r->f = f;
    if (pthread_create(&r->thread, NULL, serve_main, r) != 0)
        return tl_fail(err, TL_ERR_NOMEM, "cannot start the thread of tensor parallel rank %d",
                       rank);
    r->started = true;
    return TL_OK;
}

enum tl_status tp_local_shutdown(struct tp_local *g, struct tl_err *err) {
    pthread_mutex_lock(&g->mu);
    g->shutdown = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    enum tl_status st = TL_OK;
    for (int i = 1; i < g->world; i++) {
        struct tp_rank *r = &g->r[i];
        if (!r->started) continue;
        if (!g->joined) pthread_join(r->thread, NULL);
        if (st == TL_OK && r->served != TL_OK) {
            st = r->served;
            if (err) *err = r->serve_err;
        }
    }
    g->joined = true;
    return st;
}

void tp_local_destroy(struct tp_local *g) {
    if (!g) return;
    tp_local_shutdown(g, NULL);
    for (int i = 0; i < g->world; i++) {
        free(g->r[i].stage);
        free(g->r[i].sum);
    }
    free(g->msg);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}
