/* fit.c: mean, covariance and spectrum of an image set, and the Gaussian they define (see fit.h). */
#include "data/fit.h"

#include "core/error.h"
#include "core/linalg.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { BLOCK = 256 };

void fv_fit_free(fv_fit *f)
{
    free(f->mean);
    free(f->cov);
    free(f->eigval);
    free(f->V);
    free(f->lam);
    memset(f, 0, sizeof *f);
}

static int fit_mean(size_t n, size_t d, const float *X, double *mean)
{
    memset(mean, 0, d * sizeof *mean);
    for (size_t i = 0; i < n; i++) {
        const float *x = X + i * d;
        for (size_t j = 0; j < d; j++)
            mean[j] += x[j];
    }
    if (!fv_all_finite(d, mean)) {
        for (size_t k = 0; k < n * d; k++)
            if (!isfinite(X[k]))
                return fv_error(FV_EINPUT, "image %zu has a non-finite value at pixel %zu", k / d, k % d);
    }
    for (size_t j = 0; j < d; j++)
        mean[j] /= (double)n;
    return FV_OK;
}

/* cov = sum over blocks B of centred rows of B^T B, upper triangle by dsyrk, then mirrored. */
static void fit_cov(size_t n, size_t d, const float *X, const double *mean, double *B, double *cov, fv_progress *bar)
{
    memset(cov, 0, d * d * sizeof *cov);
    for (size_t i0 = 0; i0 < n; i0 += BLOCK) {
        size_t rows = n - i0 < BLOCK ? n - i0 : BLOCK;
        for (size_t r = 0; r < rows; r++)
            for (size_t j = 0; j < d; j++)
                B[r * d + j] = (double)X[(i0 + r) * d + j] - mean[j];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)rows, 1.0, B, (int)d, 1.0, cov, (int)d);
        if (bar)
            fv_progress_step(bar, rows, NULL);
    }
    for (size_t i = 0; i < d; i++) {
        for (size_t j = i; j < d; j++)
            cov[i * d + j] /= (double)(n - 1);
        for (size_t j = 0; j < i; j++)
            cov[i * d + j] = cov[j * d + i];
    }
}

/* Eigenvalues descending (dsyevd gives them ascending): reverse them and the columns of V. */
static int fit_spectrum(fv_fit *f, double rel_floor)
{
    size_t d = f->d;
    int st = fv_linalg_eigh(d, f->cov, f->lam, f->V);
    if (st)
        return st;
    for (size_t k = 0; k < d; k++)
        f->eigval[k] = f->lam[d - 1 - k];
    for (size_t i = 0; i < d; i++)
        for (size_t a = 0; a < d / 2; a++) {
            double t = f->V[i * d + a];
            f->V[i * d + a] = f->V[i * d + d - 1 - a];
            f->V[i * d + d - 1 - a] = t;
        }
    if (!(f->eigval[0] > 0))
        return fv_error(FV_EINPUT, "the %zu images are all the same: their covariance is zero", f->n);
    f->floor = rel_floor * f->eigval[0];
    f->nfloored = 0;
    for (size_t k = 0; k < d; k++) {
        f->nfloored += f->eigval[k] < f->floor;
        f->lam[k] = f->eigval[k] < f->floor ? f->floor : f->eigval[k];
    }
    return FV_OK;
}

int fv_fit_compute(fv_fit *f, size_t n, size_t d, const float *X, double rel_floor, fv_progress *bar)
{
    memset(f, 0, sizeof *f);
    if (n < 2 || d == 0)
        return fv_error(FV_EINPUT, "a Gaussian fit needs at least 2 images of at least 1 pixel, got %zu of %zu", n, d);
    if (!(rel_floor > 0 && rel_floor < 1))
        return fv_error(FV_EINPUT, "--floor must be in (0, 1), got %g", rel_floor);
    f->n = n;
    f->d = d;
    f->mean = malloc(d * sizeof *f->mean);
    f->cov = malloc(d * d * sizeof *f->cov);
    f->eigval = malloc(d * sizeof *f->eigval);
    f->V = malloc(d * d * sizeof *f->V);
    f->lam = malloc(d * sizeof *f->lam);
    double *B = malloc((n < BLOCK ? n : BLOCK) * d * sizeof *B);
    int st = (!f->mean || !f->cov || !f->eigval || !f->V || !f->lam || !B)
                 ? fv_error(FV_ENOMEM, "out of memory fitting a Gaussian in dimension %zu", d)
                 : fit_mean(n, d, X, f->mean);
    if (!st) {
        fit_cov(n, d, X, f->mean, B, f->cov, bar);
        st = fit_spectrum(f, rel_floor);
    }
    free(B);
    if (st)
        fv_fit_free(f);
    return st;
}

int fv_fit_problem(const fv_fit *f, fv_problem *p)
{
    size_t d = f->d;
    int st = fv_problem_alloc(p, d);
    if (st)
        return st;
    memcpy(p->m1, f->mean, d * sizeof *p->m1);
    /* S1 = W W^T with W = V diag(sqrt(lam)): dsyrk fills one triangle, mirrored so S1 is exactly
     * symmetric (the problem's check allows 1e-12). */
    double *W = malloc(d * d * sizeof *W);
    if (!W) {
        fv_problem_free(p);
        return fv_error(FV_ENOMEM, "out of memory building the fitted problem (d = %zu)", d);
    }
    for (size_t i = 0; i < d; i++)
        for (size_t k = 0; k < d; k++)
            W[i * d + k] = f->V[i * d + k] * sqrt(f->lam[k]);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)d, (int)d, 1.0, W, (int)d, 0.0, p->S1, (int)d);
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < i; j++)
            p->S1[i * d + j] = p->S1[j * d + i];
    free(W);
    if ((st = fv_problem_validate(p)))
        fv_problem_free(p);
    return st;
}

int fv_fit_sample(const fv_fit *f, size_t n, fv_rng *r, double *X)
{
    size_t d = f->d;
    double *Z = malloc(n * d * sizeof *Z);
    if (!Z)
        return fv_error(FV_ENOMEM, "out of memory sampling %zu points in dimension %zu", n, d);
    fv_rng_normal(r, n * d, Z);
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < d; k++)
            Z[i * d + k] *= sqrt(f->lam[k]);
        memcpy(X + i * d, f->mean, d * sizeof *X);
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)d, (int)d, 1.0, Z, (int)d, f->V, (int)d, 1.0, X,
                (int)d);
    free(Z);
    return FV_OK;
}
