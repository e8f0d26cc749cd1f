/* par.c: the thread pool of the CPU training step (see par.h). Workers wait for a region by watching
 * a generation counter: they spin for SPIN_NS, long enough for the next region of the same training
 * step, then block on a futex so that an idle pool costs nothing. The caller's thread is thread 0 of
 * every region. One region at a time: a second caller (another thread, or a region's own body) runs
 * its function on its own thread. */
#include "nn/par.h"

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define PAR_MAX 64        /* threads of a region at most */
#define SPIN_NS 50000.0   /* how long a waiting thread spins before it blocks */

static struct {
    atomic_int busy;                /* a region is running */
    int nworkers;                   /* workers started: threads 1 .. nworkers */
    atomic_uint gen;                /* regions started; a change tells the workers to run one */
    atomic_uint pending;            /* workers still in the current region */
    atomic_uint done;               /* regions finished; a change tells thread 0 the workers are done */
    atomic_uint bar_count, bar_gen; /* fv_par_barrier: arrivals, and barriers passed */
    atomic_int sleepers;            /* threads blocked in wait_change */
    fv_par_fn fn;
    void *ctx;
    int nt;
    unsigned start_gen[PAR_MAX];    /* gen when worker i was started */
} pool;

/* The thread count of the region this thread runs in (1 outside one). */
static _Thread_local int region_nt = 1;

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e9 * (double)ts.tv_sec + (double)ts.tv_nsec;
}

static void block_while(atomic_uint *word, unsigned old)
{
#ifdef __linux__
    syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_PRIVATE, old, NULL, NULL, 0);
#else
    (void)word, (void)old;
    sched_yield();
#endif
}

/* Wait until *word differs from old; returns its new value. */
static unsigned wait_change(atomic_uint *word, unsigned old)
{
    double t0 = 0.0;
    for (unsigned i = 0;; i++) {
        unsigned v = atomic_load_explicit(word, memory_order_acquire);
        if (v != old)
            return v;
        if (i % 64 == 63) {
            double t = now_ns();
            if (t0 == 0.0)
                t0 = t;
            else if (t - t0 > SPIN_NS)
                break;
        }
        cpu_relax();
    }
    for (;;) {
        /* sleepers before the re-check, bump's update before its look at sleepers (both sequentially
         * consistent): either bump sees this sleeper and wakes it, or the re-check sees the change */
        atomic_fetch_add(&pool.sleepers, 1);
        if (atomic_load(word) == old)
            block_while(word, old);
        atomic_fetch_sub(&pool.sleepers, 1);
        unsigned v = atomic_load_explicit(word, memory_order_acquire);
        if (v != old)
            return v;
    }
}

/* Advance *word and wake whoever waits for it. */
static void bump(atomic_uint *word)
{
    atomic_fetch_add(word, 1);
#ifdef __linux__
    if (atomic_load(&pool.sleepers))
        syscall(SYS_futex, (unsigned *)word, FUTEX_WAKE_PRIVATE, PAR_MAX, NULL, NULL, 0);
#endif
}

static void *worker(void *arg)
{
    int tid = (int)(intptr_t)arg;
    unsigned seen = pool.start_gen[tid];
    for (;;) {
        seen = wait_change(&pool.gen, seen);
        int nt = pool.nt;
        if (tid < nt) {
            region_nt = nt;
            pool.fn(pool.ctx, tid, nt);
            region_nt = 1;
        }
        if (atomic_fetch_sub(&pool.pending, 1) == 1)
            bump(&pool.done);
    }
    return NULL;
}

/* A child of fork has none of its parent's workers: it starts its own when it needs them. */
static void forget_workers(void)
{
    pool.nworkers = 0;
    atomic_store(&pool.busy, 0);
    atomic_store(&pool.sleepers, 0);
}

/* Workers 1 .. n - 1 running (fewer if a thread cannot be created); returns the threads available. */
static int start_workers(int n)
{
    static int at_fork;
    if (!at_fork && pool.nworkers + 1 < n)
        at_fork = pthread_atfork(NULL, NULL, forget_workers) == 0;
    while (pool.nworkers + 1 < n) {
        int tid = pool.nworkers + 1;
        pthread_t th;
        pthread_attr_t at;
        pool.start_gen[tid] = atomic_load(&pool.gen);
        if (pthread_attr_init(&at))
            break;
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &at, worker, (void *)(intptr_t)tid);
        pthread_attr_destroy(&at);
        if (rc)
            break;
        pool.nworkers = tid;
    }
    return pool.nworkers + 1 < n ? pool.nworkers + 1 : n;
}

int fv_par_threads(void)
{
    if (region_nt > 1)
        return 1;
    int n = openblas_get_num_threads();
    return n < 1 ? 1 : n > PAR_MAX ? PAR_MAX : n;
}

void fv_par_run(fv_par_fn fn, void *ctx)
{
    int nt = fv_par_threads();
    if (nt == 1 || atomic_exchange(&pool.busy, 1)) {
        fn(ctx, 0, 1);
        return;
    }
    if ((nt = start_workers(nt)) == 1) {
        atomic_store(&pool.busy, 0);
        fn(ctx, 0, 1);
        return;
    }
    int blas = openblas_get_num_threads();
    openblas_set_num_threads(1); /* each of our threads' products stays on that thread */
    pool.fn = fn;
    pool.ctx = ctx;
    pool.nt = nt;
    atomic_store(&pool.bar_count, 0);
    atomic_store(&pool.pending, (unsigned)pool.nworkers);
    unsigned done = atomic_load(&pool.done);
    bump(&pool.gen);
    region_nt = nt;
    fn(ctx, 0, nt);
    region_nt = 1;
    wait_change(&pool.done, done);
    openblas_set_num_threads(blas);
    atomic_store(&pool.busy, 0);
}

void fv_par_barrier(void)
{
    int nt = region_nt;
    if (nt == 1)
        return;
    unsigned g = atomic_load(&pool.bar_gen);
    if (atomic_fetch_add(&pool.bar_count, 1) + 1 == (unsigned)nt) {
        atomic_store(&pool.bar_count, 0);
        bump(&pool.bar_gen);
    } else {
        wait_change(&pool.bar_gen, g);
    }
}

void fv_par_range(size_t n, size_t align, int tid, int nt, size_t *lo, size_t *hi)
{
    size_t units = (n + align - 1) / align, per = units / (size_t)nt, extra = units % (size_t)nt;
    size_t t = (size_t)tid, first = t * per + (t < extra ? t : extra);
    size_t count = per + (t < extra ? 1 : 0);
    *lo = first * align < n ? first * align : n;
    *hi = (first + count) * align < n ? (first + count) * align : n;
}
