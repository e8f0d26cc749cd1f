/* monitor.h: how far a trained field is from memorizing its finite training set: the copy criterion
 * of docs/THEORY.md section 7 (a generated sample is a copy when d1/d2 < 1/3, d1 and d2 its distances
 * to the nearest and the second-nearest training point), computed by blocked GEMM so that no
 * samples x training-set matrix is ever held, and its summary (copy fraction, mean d1), which both
 * `flowvar copies` and the training monitor report; and the training monitor itself (`train
 * --monitor-every K`): every K steps, at t = 0.1, 0.5, 0.9, the network's loss, the loss floor L*(t),
 * the excess E|v_net - v*|^2 to the empirical minimizer (gaussian/empirical.h), the per-sample gradient
 * variance, and the copy fraction of M generated samples, as rows of DIR/monitor.tsv. */
#ifndef FV_MONITOR_H
#define FV_MONITOR_H

#include "gaussian/empirical.h"
#include "nn/cfm.h"

#include <stddef.h>
#include <stdint.h>

/* A sample is a copy when d1/d2 is below this. */
#define FV_COPY_RATIO (1.0 / 3.0)

/* The training set the samples are held against: n rows of d numbers, kept by pointer, either float
 * (image sets) or double. Exact duplicates count as one point: a sample on a duplicated image is a
 * copy of it, not a tie between two points. */
typedef struct {
    size_t n, d;
    const float *yf;  /* one of yf, yd is set */
    const double *yd;
    double *sq;       /* |y_j|^2 */
    size_t *first;    /* the first row equal to row j (j itself for a distinct row) */
    size_t ndistinct; /* rows with first[j] == j */
} fv_copy_set;

/* Index the set (norms, duplicates). FV_EINPUT when it has fewer than 2 distinct points: d2, the
 * distance to a second point, does not exist then, nor does the ratio. */
int fv_copy_set_init(fv_copy_set *s, size_t n, size_t d, const float *yf, const double *yd);
void fv_copy_set_free(fv_copy_set *s);

/* For m points X (m x d): d1[i], d2[i] the distances to the nearest and the second-nearest distinct
 * training points and near[i] the row of the nearest (near may be NULL). The search compares
 * |x|^2 + |y|^2 - 2 x.y (clamped at 0) over blocks of the set; d1 and d2 are then recomputed from the
 * differences, so an exact copy has d1 = 0. Exact ties keep the lower row as the nearest. */
int fv_copy_nearest(const fv_copy_set *s, size_t m, const double *X, double *d1, double *d2, size_t *near);

/* d1/d2, with 0/0 = 1: both points at distance 0 happen only when two distinct training points are
 * closer than rounding, and the sample is then no nearer to one of them than to the other. */
double fv_copy_ratio(double d1, double d2);

/* The fraction of the m samples with d1/d2 < FV_COPY_RATIO and their mean d1. */
void fv_copy_summary(size_t m, const double *d1, const double *d2, double *fraction, double *mean_d1);

/* The monitor's times, its columns, and the Euler steps of its samples (fewer than `copies`' 100: the
 * samples are the monitor's largest cost). */
#define FV_MONITOR_NT 3
#define FV_MONITOR_COLS 7
#define FV_MONITOR_ODE_STEPS 20
extern const double fv_monitor_times[FV_MONITOR_NT];     /* 0.1, 0.5, 0.9 */
extern const char *const fv_monitor_names[FV_MONITOR_COLS]; /* step t loss floor excess gradvar copy_fraction */

typedef struct {
    size_t every, m;          /* --monitor-every K, --monitor-n M */
    uint64_t seed;
    int use_ema;              /* loss, excess and samples from the EMA weights when the run keeps them */
    fv_trainer *tr;
    fv_cfm_data *D;
    const char *path;         /* DIR/monitor.tsv */
    fv_empirical emp;
    fv_empirical_work w;
    fv_copy_set set;
    double floor[FV_MONITOR_NT]; /* L*(t), once per process: it does not depend on the network */
    double *rows;             /* every row of the file, FV_MONITOR_COLS numbers each */
    size_t nrows, cap;
    int warned;               /* a row already had a copy fraction above 1/2 */
    double *x0, *X, *V, *d1;  /* 2 M d pairs; M d points, values; 2 M distances */
    float *xt, *tt, *u, *v;   /* M d, M, M d, M d */
} fv_monitor;

/* A monitor of the trainer tr on the data source D (forward: a Gaussian source and the finite target
 * set Y, n x d floats, kept by pointer), writing `path`. Validates everything (FV_EINPUT for fewer than 2
 * distinct points or M < 2), computes the floors by Monte Carlo over 16 M rows, and when resume_step > 0
 * reads the rows of an existing file, keeping those of steps up to resume_step (a run killed after a
 * monitor row but before its checkpoint repeats those steps: no row appears twice). Writes nothing. */
int fv_monitor_init(fv_monitor *mo, fv_trainer *tr, fv_cfm_data *D, size_t n, const float *Y, size_t every, size_t m,
                    uint64_t seed, int use_ema, const char *path, uint64_t resume_step);
void fv_monitor_free(fv_monitor *mo);

/* fv_train_opts' after_step: at each multiple of K, FV_MONITOR_NT rows computed, the file rewritten
 * atomically with every row, and the first time the copy fraction passes 1/2 one line on stderr,
 * "flowvar: memorizing: ...". ctx is the fv_monitor. */
int fv_monitor_after_step(void *ctx, uint64_t step);

#endif
