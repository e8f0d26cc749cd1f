/* mixture.c: Gaussian mixtures: validation, the section 5 defaults, sampling, log density and
 * moments (see mixture.h). */
#include "gmm/mixture.h"

#include "core/error.h"
#include "core/linalg.h"
#include "core/size.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Same symmetry tolerance as the problem's covariances (gaussian/problem.c). */
#define GMM_SYMMETRY_TOL 1e-12
/* Weights must sum to 1 within this (relative to 1, so absolute). */
#define GMM_WEIGHT_TOL 1e-12
/* Points per block of fv_gmm_logpdf: one triangular solve (dtrsm) per component and block. */
#define GMM_LOGPDF_BLOCK 256

int fv_gmm_alloc(fv_gmm *g, size_t K, size_t d)
{
    memset(g, 0, sizeof *g);
    if (K == 0 || d == 0)
        return fv_error(FV_EINPUT, "a Gaussian mixture needs K >= 1 components and dimension d >= 1 (K = %zu, d = %zu)",
                        K, d);
    size_t dd, bytes; /* K and d come from flags: the K covariances and their Cholesky factors must fit */
    int st;
    if ((st = fv_size_mul(&dd, "a Gaussian mixture's d x d covariances", d, d)) ||
        (st = fv_size_bytes(&bytes, "a Gaussian mixture's K covariances and factors of d x d", K, dd,
                            2 * sizeof(double))))
        return st;
    g->K = K;
    g->d = d;
    g->w = calloc(K, sizeof *g->w);
    g->mu = calloc(K * d, sizeof *g->mu);
    g->cov = calloc(K * d * d, sizeof *g->cov);
    g->chol = calloc(K * d * d, sizeof *g->chol);
    if (!g->w || !g->mu || !g->cov || !g->chol) {
        fv_gmm_free(g);
        return fv_error(FV_ENOMEM, "out of memory allocating a Gaussian mixture (K = %zu, d = %zu)", K, d);
    }
    return FV_OK;
}

void fv_gmm_free(fv_gmm *g)
{
    free(g->w);
    free(g->mu);
    free(g->cov);
    free(g->chol);
    memset(g, 0, sizeof *g);
}

static int check_weights(const fv_gmm *g)
{
    double sum = 0.0;
    for (size_t k = 0; k < g->K; k++) {
        if (!isfinite(g->w[k]) || g->w[k] < 0)
            return fv_error(FV_EINPUT, "mixture weight %zu is %g; weights must be finite and >= 0", k + 1, g->w[k]);
        sum += g->w[k];
    }
    if (!(fabs(sum - 1.0) <= GMM_WEIGHT_TOL))
        return fv_error(FV_EINPUT, "mixture weights sum to %.17g, not 1 (tolerance %g)", sum, GMM_WEIGHT_TOL);
    return FV_OK;
}

/* The lower Cholesky factor of component k with its upper triangle zeroed, so that L z is a plain
 * matrix-vector product. fv_linalg_spd_check has already shown that dpotrf succeeds. */
static int cholesky(fv_gmm *g, size_t k)
{
    size_t d = g->d;
    double *L = g->chol + k * d * d;
    memcpy(L, g->cov + k * d * d, d * d * sizeof *L);
    lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)d, L, (lapack_int)d);
    if (info != 0)
        return fv_error(FV_ENUMERIC, "Cholesky (dpotrf) of mixture component %zu failed (info %d)", k + 1, (int)info);
    for (size_t i = 0; i < d; i++)
        for (size_t j = i + 1; j < d; j++)
            L[i * d + j] = 0.0;
    return FV_OK;
}

int fv_gmm_prepare(fv_gmm *g)
{
    if (!g->w || g->K == 0 || g->d == 0)
        return fv_error(FV_EINPUT, "Gaussian mixture is not allocated (K = %zu, d = %zu)", g->K, g->d);
    int st = check_weights(g);
    if (st)
        return st;
    if (!fv_all_finite(g->K * g->d, g->mu))
        return fv_error(FV_EINPUT, "mixture means contain a non-finite number");
    for (size_t k = 0; k < g->K; k++) {
        char what[64];
        snprintf(what, sizeof what, "covariance of mixture component %zu", k + 1);
        if ((st = fv_linalg_spd_check(g->d, g->cov + k * g->d * g->d, what, GMM_SYMMETRY_TOL)) ||
            (st = cholesky(g, k)))
            return st;
    }
    return FV_OK;
}

int fv_gmm_random(fv_gmm *g, size_t K, size_t d, double mean_scale, double comp_var, uint64_t seed)
{
    if (!(isfinite(mean_scale) && mean_scale >= 0) || !(isfinite(comp_var) && comp_var > 0)) {
        memset(g, 0, sizeof *g);
        return fv_error(FV_EINPUT, "random mixture needs mean_scale >= 0 and comp_var > 0 (got %g, %g)", mean_scale,
                        comp_var);
    }
    int st = fv_gmm_alloc(g, K, d);
    if (st)
        return st;
    fv_rng r = fv_rng_make(seed, 0);
    fv_rng_normal(&r, K * d, g->mu);
    for (size_t i = 0; i < K * d; i++)
        g->mu[i] *= mean_scale;
    for (size_t k = 0; k < K; k++) {
        g->w[k] = 1.0 / (double)K;
        for (size_t i = 0; i < d; i++)
            g->cov[k * d * d + i * d + i] = comp_var;
    }
    if ((st = fv_gmm_prepare(g)))
        fv_gmm_free(g);
    return st;
}

/* Sampling and evaluation read the Cholesky factors; an unprepared (zeroed) mixture has a zero
 * diagonal there, which this catches instead of producing NaNs. */
static int check_prepared(const fv_gmm *g)
{
    if (!g->chol || g->K == 0 || g->d == 0)
        return fv_error(FV_EINPUT, "Gaussian mixture is not allocated");
    for (size_t k = 0; k < g->K; k++)
        for (size_t i = 0; i < g->d; i++)
            if (!(g->chol[k * g->d * g->d + i * g->d + i] > 0))
                return fv_error(FV_EINPUT, "Gaussian mixture is not prepared (call fv_gmm_prepare after filling it)");
    return FV_OK;
}

/* The component whose cumulative-weight interval holds u; see mixture.h for the rounding rule. */
static size_t pick_component(const fv_gmm *g, double u)
{
    double c = 0.0;
    size_t last = 0;
    for (size_t k = 0; k < g->K; k++) {
        if (g->w[k] > 0)
            last = k;
        c += g->w[k];
        if (u < c && g->w[k] > 0)
            return k;
    }
    return last;
}

int fv_gmm_sample(const fv_gmm *g, size_t n, fv_rng *r, double *X, int *labels)
{
    int st = check_prepared(g);
    if (st)
        return st;
    size_t d = g->d;
    for (size_t i = 0; i < n; i++) {
        double u, *x = X + i * d;
        fv_rng_uniform(r, 1, &u);
        size_t k = pick_component(g, u);
        fv_rng_normal(r, d, x);
        /* x <- L_k z in place (L lower triangular), then shift by the mean */
        cblas_dtrmv(CblasRowMajor, CblasLower, CblasNoTrans, CblasNonUnit, (int)d, g->chol + k * d * d, (int)d, x, 1);
        for (size_t j = 0; j < d; j++)
            x[j] += g->mu[k * d + j];
        if (labels)
            labels[i] = (int)k;
    }
    return FV_OK;
}

/* log w_k N(x; mu_k, S_k) for the nb points of one block, into lc[i * K + k]. D is nb x d scratch:
 * D = (X - mu_k) L_k^{-T} row by row is y_i = L_k^{-1} (x_i - mu_k), and |y_i|^2 is the Mahalanobis
 * term. log det S_k = 2 sum log L_ii. */
static void component_logpdf(const fv_gmm *g, size_t k, size_t nb, const double *X, double *D, double *lc)
{
    size_t d = g->d, K = g->K;
    const double *L = g->chol + k * d * d, *mu = g->mu + k * d;
    if (g->w[k] == 0) {
        for (size_t i = 0; i < nb; i++)
            lc[i * K + k] = -INFINITY;
        return;
    }
    double c = log(g->w[k]) - 0.5 * (double)d * log(2.0 * M_PI);
    for (size_t j = 0; j < d; j++)
        c -= log(L[j * d + j]);
    for (size_t i = 0; i < nb; i++)
        for (size_t j = 0; j < d; j++)
            D[i * d + j] = X[i * d + j] - mu[j];
    cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, (int)nb, (int)d, 1.0, L, (int)d, D,
                (int)d);
    for (size_t i = 0; i < nb; i++)
        lc[i * K + k] = c - 0.5 * cblas_ddot((int)d, D + i * d, 1, D + i * d, 1);
}

/* log sum_k exp(v_k), shifted by the maximum so that no term overflows and the largest is exactly 1. */
static double log_sum_exp(size_t K, const double *v)
{
    double mx = -INFINITY, s = 0.0;
    for (size_t k = 0; k < K; k++)
        mx = fmax(mx, v[k]);
    if (!isfinite(mx))
        return mx;
    for (size_t k = 0; k < K; k++)
        s += exp(v[k] - mx);
    return mx + log(s);
}

int fv_gmm_logpdf(const fv_gmm *g, size_t n, const double *X, double *logp)
{
    int st = check_prepared(g);
    if (st)
        return st;
    if (!fv_all_finite(n * g->d, X))
        return fv_error(FV_EINPUT, "mixture log density: the points contain a non-finite number");
    size_t d = g->d, K = g->K, B = n < GMM_LOGPDF_BLOCK ? n : GMM_LOGPDF_BLOCK;
    if (n == 0)
        return FV_OK;
    double *D = malloc(B * d * sizeof *D), *lc = malloc(B * K * sizeof *lc);
    if (!D || !lc) {
        free(D);
        free(lc);
        return fv_error(FV_ENOMEM, "out of memory evaluating a mixture log density");
    }
    for (size_t i0 = 0; i0 < n; i0 += B) {
        size_t nb = n - i0 < B ? n - i0 : B;
        for (size_t k = 0; k < K; k++)
            component_logpdf(g, k, nb, X + i0 * d, D, lc);
        for (size_t i = 0; i < nb; i++)
            logp[i0 + i] = log_sum_exp(K, lc + i * K);
    }
    free(D);
    free(lc);
    return FV_OK;
}

void fv_gmm_moments(const fv_gmm *g, double *mean, double *cov)
{
    size_t d = g->d;
    memset(mean, 0, d * sizeof *mean);
    for (size_t k = 0; k < g->K; k++)
        cblas_daxpy((int)d, g->w[k], g->mu + k * d, 1, mean, 1);
    /* law of total covariance, with the means centred first so nothing cancels */
    memset(cov, 0, d * d * sizeof *cov);
    for (size_t k = 0; k < g->K; k++) {
        const double *mu = g->mu + k * d, *S = g->cov + k * d * d;
        for (size_t i = 0; i < d; i++)
            for (size_t j = 0; j < d; j++)
                cov[i * d + j] += g->w[k] * (S[i * d + j] + (mu[i] - mean[i]) * (mu[j] - mean[j]));
    }
}
