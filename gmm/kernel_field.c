/* kernel_field.c: evaluation and integration of the empirical-minimizer field (see kernel_field.h). */
#include "gmm/kernel_field.h"

#include "core/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Squared distance from x to the point of line i at time t. */
static double line_dist2(const fv_kernel_field *k, size_t i, double t, const double *x)
{
    double s = 0.0;
    for (size_t j = 0; j < k->d; j++) {
        double e = x[j] - (1.0 - t) * k->a[i * k->d + j] - t * k->b[i * k->d + j];
        s += e * e;
    }
    return s;
}

/* Normalized weights from log-weights, shifted by their maximum so the exponentials cannot all
 * underflow however small s is. With s = 0 the log-weights are -distance and only the minimum
 * survives (ties share). */
static void softmax(size_t N, double *logw, int hard)
{
    double mx = -INFINITY, sum = 0.0;
    for (size_t i = 0; i < N; i++)
        mx = fmax(mx, logw[i]);
    for (size_t i = 0; i < N; i++) {
        logw[i] = hard ? (logw[i] == mx ? 1.0 : 0.0) : exp(logw[i] - mx);
        sum += logw[i];
    }
    for (size_t i = 0; i < N; i++)
        logw[i] /= sum;
}

int fv_kernel_field_eval(const fv_kernel_field *k, double t, size_t n, const double *X, double *out, double *logw)
{
    size_t d = k->d, N = k->npairs;
    if (!(k->s >= 0) || N == 0)
        return fv_error(FV_EINPUT, "kernel field needs at least one pair and a width s >= 0 (s = %g, %zu pairs)",
                        k->s, N);
    for (size_t p = 0; p < n; p++) {
        const double *x = X + p * d;
        for (size_t i = 0; i < N; i++) {
            double d2 = line_dist2(k, i, t, x);
            logw[i] = k->s > 0 ? -d2 / (2.0 * k->s * k->s) : -d2;
        }
        softmax(N, logw, k->s == 0);
        double *o = out + p * d;
        memset(o, 0, d * sizeof *o);
        for (size_t i = 0; i < N; i++)
            if (logw[i] != 0.0)
                for (size_t j = 0; j < d; j++)
                    o[j] += logw[i] * (k->b[i * d + j] - k->a[i * d + j]);
    }
    return FV_OK;
}

typedef struct {
    const fv_kernel_field *k;
    double *logw;
} kernel_ctx;

static int kernel_rhs(double t, size_t n, const double *y, double *dydt, void *ctx)
{
    kernel_ctx *c = ctx;
    return fv_kernel_field_eval(c->k, t, n / c->k->d, y, dydt, c->logw);
}

int fv_kernel_field_transport(const fv_kernel_field *k, size_t n, double *X, const fv_ode_opts *o)
{
    kernel_ctx c = {k, malloc(k->npairs * sizeof(double))};
    if (!c.logw)
        return fv_error(FV_ENOMEM, "out of memory for %zu pairs", k->npairs);
    int st = fv_ode_integrate(kernel_rhs, &c, n * k->d, X, o, NULL);
    free(c.logw);
    return st;
}
