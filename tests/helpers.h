/* helpers.h: small shared pieces of the Criterion tests: random SPD matrices and vectors from
 * fixed Philox streams, and the reference problem of THEORY.md section 4. */
#ifndef FV_TEST_HELPERS_H
#define FV_TEST_HELPERS_H

#include "core/rng.h"
#include "gaussian/problem.h"

#include <stddef.h>

/* S = A A^T / d + floor I with A Gaussian: eigenvalues spread over roughly [floor, floor + 4]. */
void th_random_spd(size_t d, double floor, fv_rng *r, double *S);

/* The reference problem: d = 2, mu = (1, -0.5), M = [[2, 0.6], [0.6, 1]], rotation by `deg`
 * (no rotation when deg < 0), sigma. */
void th_reference_problem(fv_problem *p, double deg, double sigma);

/* Sample mean (d) and covariance (d x d, divisor n - 1) of n rows. */
void th_moments(size_t n, size_t d, const double *X, double *mean, double *cov);

#endif
