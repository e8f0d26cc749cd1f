/* helpers.h: small shared pieces of the Criterion tests. */
#ifndef FV_TEST_HELPERS_H
#define FV_TEST_HELPERS_H

#include "core/rng.h"
#include "gaussian/problem.h"

#include <stddef.h>

/* Sample mean (d) and covariance (d x d, divisor n - 1) of n rows. */
void th_moments(size_t n, size_t d, const double *X, double *mean, double *cov);

#endif
