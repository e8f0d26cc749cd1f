/* helpers.c: see helpers.h. */
#include "helpers.h"

#include <stdlib.h>
#include <string.h>

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
