/* helpers.c: see helpers.h. */
#include "helpers.h"

#include "core/linalg.h"

#include <stdlib.h>
#include <string.h>

void th_random_spd(size_t d, double floor, fv_rng *r, double *S)
{
    double *A = malloc(d * d * sizeof *A);
    fv_rng_normal(r, d * d, A);
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j <= i; j++) {
            double s = 0;
            for (size_t k = 0; k < d; k++)
                s += A[i * d + k] * A[j * d + k];
            S[i * d + j] = S[j * d + i] = s / (double)d + (i == j ? floor : 0.0);
        }
    free(A);
}

void th_reference_problem(fv_problem *p, double deg, double sigma)
{
    fv_problem_alloc(p, 2);
    p->m1[0] = 1.0;
    p->m1[1] = -0.5;
    const double M[4] = {2.0, 0.6, 0.6, 1.0};
    memcpy(p->S1, M, sizeof M);
    p->sigma = sigma;
    if (deg >= 0) {
        p->coupling = FV_COUPLING_ROTATION;
        p->R = malloc(4 * sizeof *p->R);
        fv_rotation_blocks(2, deg, p->R);
    }
}

void th_moments(size_t n, size_t d, const double *X, double *mean, double *cov)
{
    memset(mean, 0, d * sizeof *mean);
    memset(cov, 0, d * d * sizeof *cov);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++)
            mean[j] += X[i * d + j] / (double)n;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++)
            for (size_t k = 0; k < d; k++)
                cov[j * d + k] += (X[i * d + j] - mean[j]) * (X[i * d + k] - mean[k]) / (double)(n - 1);
}
