/* kernel_field.h: the exact minimizer of the empirical CFM loss on a FINITE set of pairs
 * (a_i, b_i) with constant noise s (docs/THEORY.md section 2, "Finite pair set, kernel field"):
 *   v_s(x, t) = sum_i w_i (b_i - a_i),  w_i proportional to exp(-|x - (1-t) a_i - t b_i|^2 / (2 s^2)).
 * As s -> 0 it becomes the memorizing nearest-line field of Proposition 2; s = 0 is that limit
 * (all weight on the nearest interpolation line, ties split evenly). */
#ifndef FV_KERNEL_FIELD_H
#define FV_KERNEL_FIELD_H

#include "core/ode.h"

#include <stddef.h>

typedef struct {
    size_t npairs, d;
    const double *a, *b; /* npairs x d each: sources and their paired targets */
    double s;            /* kernel width = the interpolant's noise level, >= 0 */
} fv_kernel_field;

/* out (n x d) = v_s(X, t). `logw` is caller-owned scratch of npairs numbers. */
int fv_kernel_field_eval(const fv_kernel_field *k, double t, size_t n, const double *X, double *out, double *logw);

/* Integrate n points X (n x d, overwritten) from t0 to t1 along v_s. */
int fv_kernel_field_transport(const fv_kernel_field *k, size_t n, double *X, const fv_ode_opts *o);

#endif
