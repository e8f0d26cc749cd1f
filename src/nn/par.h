/* par.h: the threads of the CPU training step. The MLP's forward and backward, the Adam update and the
 * batch draws split their work (rows of the batch, columns of a weight gradient, chunks of the
 * parameter vector) over a few threads that each call single-threaded OpenBLAS, instead of leaving the
 * matrix products to OpenBLAS's own threads and everything between them on one core: OpenBLAS's idle
 * workers would then compete with ours for the same cores. The thread count is OpenBLAS's
 * (OPENBLAS_NUM_THREADS, else OMP_NUM_THREADS, else the core count), so one setting governs both.
 *
 * The threads are a small pool of our own (par.c), not OpenMP's: its idle workers spin for a few tens of
 * microseconds, long enough to bridge the gaps inside a training step, then sleep, where libgomp's spin
 * for milliseconds by default and would then take the cores from OpenBLAS's threads in the products
 * that run outside a step. Every split is written so that the results do not depend on the thread count:
 * each output element is computed by the same arithmetic in the same order whichever thread owns it. */
#ifndef FV_PAR_H
#define FV_PAR_H

#include <stddef.h>

/* On an elementwise loop's function: gcc compiles it for AVX-512, AVX2 and the baseline (SSE2) and
 * picks one when the program loads. The source's arithmetic is the same in each (C11 mode does not
 * contract a * b + c into an fma), so the results do not depend on the CPU. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__CUDACC__)
#define FV_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FV_SIMD_CLONES
#endif

/* The body of a parallel region: called once on each of nt threads (tid = 0 .. nt - 1). */
typedef void (*fv_par_fn)(void *ctx, int tid, int nt);

/* The number of threads fv_par_run uses: OpenBLAS's thread count (1 inside a running region). */
int fv_par_threads(void);

/* Run fn on fv_par_threads() threads (fn(ctx, 0, 1) on the caller when that is 1 or when called from
 * inside a region), with OpenBLAS held to one thread meanwhile; returns when every thread is done. */
void fv_par_run(fv_par_fn fn, void *ctx);

/* Inside fn: wait until every thread of the region has reached this point. */
void fv_par_barrier(void);

/* Thread tid's share [*lo, *hi) of n items split into nt contiguous ranges, every boundary but n
 * itself a multiple of `align` (>= 1). */
void fv_par_range(size_t n, size_t align, int tid, int nt, size_t *lo, size_t *hi);

#endif
