/* monitor.h: how far a trained field is from memorizing its finite training set: the copy criterion
 * of docs/THEORY.md section 7 (a generated sample is a copy when d1/d2 < 1/3, d1 and d2 its distances
 * to the nearest and the second-nearest training point), computed by blocked GEMM so that no
 * samples x training-set matrix is ever held, and its summary (copy fraction, mean d1), which both
 * `flowvar copies` and the training monitor (`train --monitor-every`) report. */
#ifndef FV_MONITOR_H
#define FV_MONITOR_H

#include <stddef.h>

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

#endif
