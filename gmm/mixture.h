/* mixture.h: Gaussian mixtures sum_k w_k N(mu_k, S_k), the targets of the paper's GMM experiment
 * (docs/THEORY.md section 5, Table 1): construction (by hand or with the section 5 defaults), sampling
 * from a Philox stream, log density, and the moment-matched Gaussian.
 *
 * A mixture filled by hand must go through fv_gmm_prepare before it is sampled or evaluated: that
 * validates it and computes the Cholesky factors every other routine uses. */
#ifndef FV_GMM_MIXTURE_H
#define FV_GMM_MIXTURE_H

#include "core/rng.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t K, d;
    double *w;    /* K weights, >= 0, summing to 1 */
    double *mu;   /* K x d means */
    double *cov;  /* K x d x d covariances, each symmetric positive definite */
    double *chol; /* K x d x d lower Cholesky factors L_k (S_k = L_k L_k^T, upper triangle 0) */
} fv_gmm;

/* Allocate a mixture of K >= 1 components in dimension d >= 1, every array zeroed. On failure g
 * holds no memory (fv_gmm_free is still safe). */
int fv_gmm_alloc(fv_gmm *g, size_t K, size_t d);
/* Release the arrays and zero g; safe on a zeroed or already freed g. */
void fv_gmm_free(fv_gmm *g);

/* Validate (weights finite, >= 0, summing to 1 within 1e-12; means finite; covariances SPD via
 * fv_linalg_spd_check) and compute the Cholesky factors. Must be called after filling w, mu, cov by
 * hand. FV_EINPUT with a message naming the component on bad input. */
int fv_gmm_prepare(fv_gmm *g);

/* The docs/THEORY.md section 5 defaults: K equal weights, means ~ N(0, mean_scale^2 I), covariances
 * comp_var I. The K x d means are the first K*d normals of the Philox stream (seed, 0), row by row.
 * Allocates g (free with fv_gmm_free) and prepares it. mean_scale >= 0, comp_var > 0. */
int fv_gmm_random(fv_gmm *g, size_t K, size_t d, double mean_scale, double comp_var, uint64_t seed);

/* n samples into X (n x d) and, if labels != NULL, their component indices. Order of draws from r,
 * sample by sample: one uniform u (one Philox block), the component is the first k with
 * u < w_0 + ... + w_k (the last component with positive weight if rounding leaves u above the
 * total), then d normals z (fv_rng_normal, ceil(d/2) blocks), and x = mu_k + L_k z. So sample i
 * uses blocks i (1 + ceil(d/2)) onwards of the stream, and r ends advanced by n (1 + ceil(d/2)). */
int fv_gmm_sample(const fv_gmm *g, size_t n, fv_rng *r, double *X, int *labels);

/* logp[i] = log sum_k w_k N(X_i; mu_k, S_k) at n points (n x d), by log-sum-exp over the
 * components, so far-away points give finite large negative numbers instead of log 0. */
int fv_gmm_logpdf(const fv_gmm *g, size_t n, const double *X, double *logp);

/* The moment-matched Gaussian: mean = sum_k w_k mu_k (d) and
 * cov = sum_k w_k (S_k + (mu_k - mean)(mu_k - mean)^T) (d x d). */
void fv_gmm_moments(const fv_gmm *g, double *mean, double *cov);

#endif
