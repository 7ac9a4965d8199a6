/* pool: workers wait for a new "generation" of work, claim chunks from an atomic counter and
 * report completion. They spin briefly before sleeping, since decode issues hundreds of short
 * loops per token and a condvar wake-up costs more than the loop itself. */
#include "pool.h"

#include <hwloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

struct pool {
    int n_threads;
    pthread_t *threads; /* (n_threads - 1) workers */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t generation; /* bumped for each loop; workers run it once */
    _Atomic int stop;
    /* the current loop */
    pool_fn fn;
    void *arg;
    int64_t n, chunk, n_chunks;
    _Atomic int64_t next_chunk;
    _Atomic int active; /* workers still inside the current loop */
    hwloc_topology_t topo;
    int have_topo;
};

struct worker_arg {
    struct pool *p;
    int tid;
};

#define SPIN_NS 100000 /* 0.1 ms of spinning before a worker sleeps */

/* Spinning yields the CPU between checks. Not PAUSE: in a VM (the GPU machine is one) a PAUSE
 * loop triggers pause-loop exits, and a worker spinning with PAUSE ran decode 3x slower. */
static inline void cpu_relax(void) {
    sched_yield();
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void run_chunks(struct pool *p, int tid) {
    for (;;) {
        int64_t c = atomic_fetch_add(&p->next_chunk, 1);
        if (c >= p->n_chunks) break;
        int64_t b = c * p->chunk, e = b + p->chunk;
        if (e > p->n) e = p->n;
        p->fn(p->arg, b, e, tid);
    }
}

static void *worker_main(void *varg) {
    struct worker_arg wa = *(struct worker_arg *)varg;
    free(varg);
    struct pool *p = wa.p;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = atomic_load(&p->generation);
        if (g == seen) {
            uint64_t t0 = now_ns();
            while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop) &&
                   now_ns() - t0 < SPIN_NS)
                cpu_relax();
            if (g == seen && !atomic_load(&p->stop)) {
                pthread_mutex_lock(&p->mu);
                while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop))
                    pthread_cond_wait(&p->cv, &p->mu);
                pthread_mutex_unlock(&p->mu);
            }
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        run_chunks(p, wa.tid);
        atomic_fetch_sub(&p->active, 1);
    }
}

int pool_physical_cores(void) {
    hwloc_topology_t t;
    if (hwloc_topology_init(&t) != 0) return 1;
    int n = 1;
    if (hwloc_topology_load(t) == 0) {
        n = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE);
        if (n < 1) n = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PU);
        if (n < 1) n = 1;
    }
    hwloc_topology_destroy(t);
    return n;
}

enum tl_status pool_create(int n_threads, bool pin, struct pool **out, struct tl_err *err) {
    *out = NULL;
    struct pool *p = calloc(1, sizeof *p);
    if (!p) return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    p->have_topo = hwloc_topology_init(&p->topo) == 0 && hwloc_topology_load(p->topo) == 0;
    int cores = p->have_topo ? hwloc_get_nbobjs_by_type(p->topo, HWLOC_OBJ_CORE) : 0;
    if (n_threads <= 0) n_threads = cores > 0 ? cores : 1;
    if (n_threads > 1024)
        return tl_fail(err, TL_ERR_INVALID, "--threads %d is too many", n_threads);
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        pool_destroy(p);
        return tl_fail(err, TL_ERR_NOMEM, "out of host memory");
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *wa = malloc(sizeof *wa);
        if (wa) *wa = (struct worker_arg){.p = p, .tid = i};
        if (!wa || pthread_create(&p->threads[i - 1], NULL, worker_main, wa) != 0) {
            free(wa);
            p->n_threads = i; /* destroy joins the ones that started */
            pool_destroy(p);
            return tl_fail(err, TL_ERR_NOMEM, "could not start worker thread %d", i);
        }
        /* Pin worker i to core i (the caller, tid 0, keeps its own affinity). Cores beyond
         * the machine's wrap around; with fewer cores than threads pinning only hurts. */
        if (pin && p->have_topo && cores >= n_threads) {
            hwloc_obj_t core = hwloc_get_obj_by_type(p->topo, HWLOC_OBJ_CORE, (unsigned)i);
            if (core && core->cpuset) {
                hwloc_cpuset_t set = hwloc_bitmap_dup(core->cpuset);
                hwloc_bitmap_singlify(set);
                hwloc_set_thread_cpubind(p->topo, p->threads[i - 1], set, 0);
                hwloc_bitmap_free(set);
            }
        }
    }
    *out = p;
    return TL_OK;
}

void pool_destroy(struct pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; p->threads && i < p->n_threads; i++) pthread_join(p->threads[i - 1], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    if (p->have_topo) hwloc_topology_destroy(p->topo);
    free(p);
}

int pool_size(const struct pool *p) {
    return p ? p->n_threads : 1;
}

void pool_parallel_for(struct pool *p, int64_t n, int64_t grain, pool_fn fn, void *arg) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int nt = p ? p->n_threads : 1;
    /* About 4 chunks per thread balances uneven work without much claiming traffic. */
    int64_t chunk = (n + (int64_t)nt * 4 - 1) / ((int64_t)nt * 4);
    if (chunk < grain) chunk = grain;
    int64_t n_chunks = (n + chunk - 1) / chunk;
    if (nt == 1 || n_chunks == 1) {
        fn(arg, 0, n, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->chunk = chunk;
    p->n_chunks = n_chunks;
    atomic_store(&p->next_chunk, 0);
    atomic_store(&p->active, nt - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, 0);
    while (atomic_load(&p->active) > 0) cpu_relax();
}
