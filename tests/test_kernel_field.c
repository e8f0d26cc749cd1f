/* test_kernel_field.c: the empirical-minimizer field of a finite pair set (gmm/kernel_field.h). */
#include <criterion/criterion.h>

#include "core/error.h"
#include "core/rng.h"
#include "gmm/kernel_field.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NP 30

static double a[NP * 2], b[NP * 2];

static void make_pairs(void)
{
    fv_rng r = fv_rng_make(5, 0);
    fv_rng_normal(&r, NP * 2, a);
    fv_rng_normal(&r, NP * 2, b);
}

TestSuite(kernel, .init = make_pairs);

Test(kernel, on_a_line_with_small_width_gives_its_displacement)
{
    fv_kernel_field k = {NP, 2, a, b, 1e-4};
    double logw[NP], x[2], v[2], t = 0.37;
    int i = 11;
    x[0] = (1 - t) * a[2 * i] + t * b[2 * i];
    x[1] = (1 - t) * a[2 * i + 1] + t * b[2 * i + 1];
    cr_assert_eq(fv_kernel_field_eval(&k, t, 1, x, v, logw), FV_OK);
    cr_assert_float_eq(v[0], b[2 * i] - a[2 * i], 1e-12);
    cr_assert_float_eq(v[1], b[2 * i + 1] - a[2 * i + 1], 1e-12);
}

Test(kernel, large_width_gives_mean_displacement)
{
    fv_kernel_field k = {NP, 2, a, b, 1e6};
    double logw[NP], x[2] = {0.3, -0.2}, v[2], mean[2] = {0, 0};
    for (int i = 0; i < NP; i++)
        for (int j = 0; j < 2; j++)
            mean[j] += (b[2 * i + j] - a[2 * i + j]) / NP;
    fv_kernel_field_eval(&k, 0.5, 1, x, v, logw);
    cr_assert_float_eq(v[0], mean[0], 1e-9);
    cr_assert_float_eq(v[1], mean[1], 1e-9);
}

Test(kernel, weights_match_direct_softmax)
{
    double s = 0.7, t = 0.62, x[2] = {0.1, 0.4}, v[2], logw[NP], w[NP], sum = 0, want[2] = {0, 0};
    fv_kernel_field k = {NP, 2, a, b, s};
    for (int i = 0; i < NP; i++) {
        double e0 = x[0] - (1 - t) * a[2 * i] - t * b[2 * i], e1 = x[1] - (1 - t) * a[2 * i + 1] - t * b[2 * i + 1];
        w[i] = exp(-(e0 * e0 + e1 * e1) / (2 * s * s));
        sum += w[i];
    }
    for (int i = 0; i < NP; i++)
        for (int j = 0; j < 2; j++)
            want[j] += w[i] / sum * (b[2 * i + j] - a[2 * i + j]);
    fv_kernel_field_eval(&k, t, 1, x, v, logw);
    cr_assert_float_eq(v[0], want[0], 1e-13);
    cr_assert_float_eq(v[1], want[1], 1e-13);
}

Test(kernel, zero_width_integration_returns_every_pair)
{
    /* Proposition 2: the memorizing field integrated from each source returns its own target */
    fv_kernel_field k = {NP, 2, a, b, 0.0};
    double X[NP * 2];
    memcpy(X, a, sizeof X);
    fv_ode_opts o = fv_ode_defaults();
    o.solver = FV_ODE_EULER;
    o.steps = 101;
    cr_assert_eq(fv_kernel_field_transport(&k, NP, X, &o), FV_OK);
    for (int i = 0; i < NP * 2; i++)
        cr_assert_float_eq(X[i], b[i], 1e-10);
}

Test(kernel, rejects_negative_width)
{
    fv_kernel_field k = {NP, 2, a, b, -1.0};
    double logw[NP], x[2] = {0, 0}, v[2];
    cr_assert_eq(fv_kernel_field_eval(&k, 0.5, 1, x, v, logw), FV_EINPUT);
}
