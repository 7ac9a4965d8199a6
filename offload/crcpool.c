/* crcpool: two rings under one mutex, the jobs to do and the jobs done; workers sleep on one
 * condition variable, the reaper on the other. */
#include "crcpool.h"

#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"

struct ring {
    struct crc_job *v;
    int head, n;
};

struct crcpool {
    int n_threads, cap;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t cv_todo, cv_done;
    struct ring todo, done;
    bool stop;
    int outstanding; /* submitter's count: submitted - reaped */
};

static void ring_push(struct ring *r, int cap, const struct crc_job *j) {
    assert(r->n < cap);
    r->v[(r->head + r->n++) % cap] = *j;
}

static struct crc_job ring_pop(struct ring *r, int cap) {
    struct crc_job j = r->v[r->head];
    r->head = (r->head + 1) % cap;
    r->n--;
    return j;
}

static void *worker(void *arg) {
    struct crcpool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->todo.n == 0) pthread_cond_wait(&p->cv_todo, &p->mu);
        if (p->todo.n == 0) break; /* stopping, and nothing left */
        struct crc_job j = ring_pop(&p->todo, p->cap);
        pthread_mutex_unlock(&p->mu);
        j.crc = crc32c(0, j.p, j.len);
        pthread_mutex_lock(&p->mu);
        ring_push(&p->done, p->cap, &j);
        pthread_cond_signal(&p->cv_done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

enum tl_status crcpool_create(int n_threads, int capacity, struct crcpool **out,
                              struct tl_err *err) {
    *out = NULL;
    struct crcpool *p = calloc(1, sizeof *p);
    if (!p) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    p->cap = capacity > 0 ? capacity : 1;
    p->todo.v = malloc((size_t)p->cap * sizeof *p->todo.v);
    p->done.v = malloc((size_t)p->cap * sizeof *p->done.v);
    p->th = calloc((size_t)(n_threads > 0 ? n_threads : 1), sizeof *p->th);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_todo, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    if (!p->todo.v || !p->done.v || !p->th) {
        crcpool_destroy(p);
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    }
    for (int i = 0; i < n_threads; i++) {
        if (pthread_create(&p->th[i], NULL, worker, p) != 0) {
            crcpool_destroy(p);
            return tl_fail(err, TL_ERR_INTERNAL, "cannot start a CRC32C thread");
        }
        p->n_threads++;
    }
    *out = p;
    return TL_OK;
}

void crcpool_destroy(struct crcpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv_todo);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_threads; i++) pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_todo);
    pthread_cond_destroy(&p->cv_done);
    free(p->todo.v);
    free(p->done.v);
    free(p->th);
    free(p);
}

int crcpool_threads(const struct crcpool *p) {
    return p->n_threads;
}

void crcpool_submit(struct crcpool *p, const struct crc_job *j) {
    p->outstanding++;
    if (p->n_threads == 0) {
        struct crc_job d = *j;
        d.crc = crc32c(0, d.p, d.len);
        ring_push(&p->done, p->cap, &d); /* only this thread touches the rings then */
        return;
    }
    pthread_mutex_lock(&p->mu);
    ring_push(&p->todo, p->cap, j);
    pthread_cond_signal(&p->cv_todo);
    pthread_mutex_unlock(&p->mu);
}

int crcpool_reap(struct crcpool *p, struct crc_job *out, int max, int min) {
    if (min > p->outstanding) min = p->outstanding;
    if (min > max) min = max;
    int k = 0;
    if (p->n_threads) pthread_mutex_lock(&p->mu);
    while (k < max) {
        while (p->done.n == 0 && k < min) pthread_cond_wait(&p->cv_done, &p->mu);
        if (p->done.n == 0) break;
        out[k++] = ring_pop(&p->done, p->cap);
    }
    if (p->n_threads) pthread_mutex_unlock(&p->mu);
    p->outstanding -= k;
    return k;
}

int crcpool_outstanding(const struct crcpool *p) {
    return p->outstanding;
}
