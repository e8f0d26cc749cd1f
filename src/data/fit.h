/* fit.h: the Gaussian N(m, S) fitted to an image set (mean and covariance of the pixels), its
 * spectrum, and the closed-form problem from N(0, I) to it, so that every exact result between
 * Gaussians (Lemma 1's OT field, W2, the gradient variance) applies to "Gaussian Fashion-MNIST" or
 * "Gaussian CIFAR-10" in its real dimension D = C*H*W.
 *
 * Image covariances are singular or nearly so (border pixels that never change, 8-bit steps), and
 * the OT field needs S positive definite. Eigenvalues below rel_floor times the largest are raised
 * to that floor, so the condition number of S is at most 1 / rel_floor while the directions the
 * data does vary in keep their variance. On Fashion-MNIST (largest eigenvalue 79 in [-1, 1] units)
 * the default 1e-6 floors at 7.9e-5 and raises 8 of the 784 eigenvalues, those of near-constant
 * corner pixels (pixel variances down to 5e-7, below the 5e-6 of 8-bit rounding, (2/255)^2 / 12). */
#ifndef FV_FIT_H
#define FV_FIT_H

#include "core/progress.h"
#include "core/rng.h"
#include "gaussian/problem.h"

#include <stddef.h>

#define FV_FIT_DEFAULT_FLOOR 1e-6

typedef struct {
    size_t n, d;      /* images used, dimension */
    double *mean;     /* d */
    double *cov;      /* d x d, divisor n - 1, exactly symmetric */
    double *eigval;   /* d eigenvalues of cov, descending, as computed (the smallest may be ~ -1e-16) */
    double *V;        /* d x d row-major; column k is the unit eigenvector of eigval[k] */
    double *lam;      /* eigval raised to the floor: the spectrum of the fitted Gaussian */
    double floor;     /* the absolute floor, rel_floor * eigval[0] */
    size_t nfloored;  /* how many eigenvalues were below it */
} fv_fit;

/* Fit n >= 2 images of dimension d (X: n x d floats, row-major). The covariance is accumulated in
 * double over blocks of 256 centred rows with dsyrk, so the mean is subtracted before any product
 * (no cancellation from E[xx^T] - mm^T). `bar`, when not NULL, is advanced by the images done.
 * FV_EINPUT for n < 2, rel_floor outside (0, 1), a non-finite pixel, or images without variance. */
int fv_fit_compute(fv_fit *f, size_t n, size_t d, const float *X, double rel_floor, fv_progress *bar);
void fv_fit_free(fv_fit *f);

/* The problem from N(0, I) to N(mean, V diag(lam) V^T), validated, with the OT coupling and no noise:
 * fv_field_build(&field, p, FV_FIELD_OT) then gives Lemma 1's field to the fitted Gaussian. */
int fv_fit_problem(const fv_fit *f, fv_problem *p);

/* n samples of the fitted Gaussian into X (n x d): mean + V diag(sqrt(lam)) z, z from the stream r. */
int fv_fit_sample(const fv_fit *f, size_t n, fv_rng *r, double *X);

#endif
