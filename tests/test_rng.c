/* test_rng.c: Philox4x32-10 against Random123's known-answer vectors, and the Gaussian streams. */
#include <criterion/criterion.h>

#include "core/philox.h"
#include "core/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void expect_kat(fv_philox_ctr c, fv_philox_key k, const uint32_t want[4])
{
    fv_philox_ctr got = fv_philox4x32_10(c, k);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(got.v[i], want[i], "word %d: got %08x want %08x", i, got.v[i], want[i]);
}

Test(rng, philox_kat_zero)
{
    expect_kat((fv_philox_ctr){{0, 0, 0, 0}}, (fv_philox_key){{0, 0}},
               (const uint32_t[]){0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
}

Test(rng, philox_kat_ones)
{
    expect_kat((fv_philox_ctr){{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
               (fv_philox_key){{0xffffffff, 0xffffffff}},
               (const uint32_t[]){0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
}

Test(rng, philox_kat_pi)
{
    expect_kat((fv_philox_ctr){{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
               (fv_philox_key){{0xa4093822, 0x299f31d0}},
               (const uint32_t[]){0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}

/* fv_philox_lanes gives fv_philox_block's words, lane by lane, also where the block number's low word
 * wraps inside the call. */
Test(rng, lanes_are_the_blocks)
{
    const uint64_t seeds[] = {0, 0x0123456789abcdefull}, poss[] = {0, 0xFFFFFFF8ull, 12345678901ull};
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 3; b++) {
            uint32_t w[4][FV_PHILOX_LANES];
            fv_philox_lanes(seeds[a], 77 + ((uint64_t)b << 33), poss[b], w);
            for (int l = 0; l < FV_PHILOX_LANES; l++) {
                fv_philox_ctr c = fv_philox_block(seeds[a], 77 + ((uint64_t)b << 33), poss[b] + (uint64_t)l);
                for (int k = 0; k < 4; k++)
                    cr_assert_eq(w[k][l], c.v[k], "seed %d, pos %llu, lane %d, word %d", a,
                                 (unsigned long long)poss[b], l, k);
            }
        }
}

Test(rng, normal_moments_within_standard_error)
{
    size_t n = 1000000;
    double *z = malloc(n * sizeof *z), m = 0, v = 0, k4 = 0;
    fv_rng r = fv_rng_make(2025, 3);
    fv_rng_normal(&r, n, z);
    for (size_t i = 0; i < n; i++)
        m += z[i] / (double)n;
    for (size_t i = 0; i < n; i++) {
        v += (z[i] - m) * (z[i] - m) / (double)(n - 1);
        k4 += pow(z[i] - m, 4) / (double)n;
    }
    /* standard errors: mean 1/sqrt(n), variance sqrt(2/n), fourth moment sqrt(96/n) */
    cr_assert_lt(fabs(m), 5 / sqrt((double)n), "mean %g", m);
    cr_assert_lt(fabs(v - 1), 5 * sqrt(2.0 / (double)n), "variance %g", v);
    cr_assert_lt(fabs(k4 - 3), 5 * sqrt(96.0 / (double)n), "fourth moment %g", k4);
    free(z);
}

/* The error of a double result against a long double reference, in units in the last place of the
 * reference's double (its spacing at |ref|). */
static double ulps(double got, long double ref)
{
    double r = (double)ref;
    double ulp = nextafter(fabs(r), INFINITY) - fabs(r);
    return (double)(fabsl((long double)got - ref) / ulp);
}

/* The u01 draws the tests feed the Box-Muller functions: a million from Philox and the edge values
 * (the smallest and largest u01, exact quarter and eighth turns, their neighbours). */
static size_t box_muller_inputs(double **out)
{
    size_t n = 1000000, k = 0;
    const double edges[] = {0x1p-54, 0x1p-53 * 1.5, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875,
                            1.0 - 0x1p-53, 1.0, 0.70710678118654752, 1.41421356237309504880 / 2};
    size_t ne = sizeof edges / sizeof edges[0];
    double *u = malloc((n + 3 * ne) * sizeof *u);
    for (size_t i = 0; i < n; i++) {
        fv_philox_ctr c = fv_philox_block(99, 1, i);
        u[k++] = fv_philox_u01(c.v[0], c.v[1]);
    }
    for (size_t i = 0; i < ne; i++) {
        u[k++] = edges[i];
        u[k++] = nextafter(edges[i], 0);
        u[k++] = edges[i] < 1 ? nextafter(edges[i], 1) : edges[i];
    }
    *out = u;
    return k;
}

/* fdlibm's logarithm under its 1-ulp bound on every u01 input; log(1) exactly 0. */
Test(rng, box_muller_log_within_one_ulp)
{
    double *u, worst = 0, at = 0;
    size_t n = box_muller_inputs(&u);
    for (size_t i = 0; i < n; i++) {
        double e = ulps(fv_philox_log_u01(u[i]), logl((long double)u[i]));
        if (e > worst)
            worst = e, at = u[i];
    }
    free(u);
    cr_log_info("log: worst %.3f ulp at u = %.17g", worst, at);
    cr_expect_lt(worst, 1.0, "log(u) %.3f ulp off at u = %.17g", worst, at);
    cr_expect_eq(fv_philox_log_u01(1.0), 0.0);
}

/* sin(2 pi u) and cos(2 pi u): the kernels' 1 ulp plus the rounding of the reduced angle x = 2 pi r
 * (relative 2^-53, r itself is exact), which moves f(x) by a relative max(x / tan x, x tan x) <= 1 times
 * that: at most one more ulp, so under 2 in all where |f| >= 1/16. Near a zero, 2^-54 absolute (half an
 * ulp of 1: what Box-Muller's normals feel). glibc's cos(2 pi u) rounded the angle near 2 pi to 4.4e-16. */
Test(rng, box_muller_sincos_within_its_bound)
{
    const long double two_pi = 6.283185307179586476925286766559L;
    double *u, worst = 0, at = 0, worst_abs = 0;
    size_t n = box_muller_inputs(&u);
    for (size_t i = 0; i < n; i++) {
        double s, c;
        fv_philox_sincos_2pi(u[i], &s, &c);
        long double rs = sinl(two_pi * u[i]), rc = cosl(two_pi * u[i]);
        double got[2] = {s, c};
        long double ref[2] = {rs, rc};
        for (int j = 0; j < 2; j++) {
            if (fabsl(ref[j]) >= 0.0625L) {
                double e = ulps(got[j], ref[j]);
                if (e > worst)
                    worst = e, at = u[i];
            }
            else {
                double a = (double)fabsl((long double)got[j] - ref[j]);
                worst_abs = a > worst_abs ? a : worst_abs;
            }
        }
    }
    free(u);
    cr_log_info("sincos: worst %.3f ulp at u = %.17g, worst absolute %.3g near zeros", worst, at, worst_abs);
    cr_expect_lt(worst, 2.0, "sin/cos(2 pi u) %.3f ulp off at u = %.17g", worst, at);
    cr_expect_leq(worst_abs, 0x1p-54, "absolute error %.3g near zeros", worst_abs);
}

Test(rng, uniform_in_open_unit_interval_with_mean_half)
{
    size_t n = 200000;
    double *u = malloc(n * sizeof *u), m = 0;
    fv_rng r = fv_rng_make(7, 1);
    fv_rng_uniform(&r, n, u);
    for (size_t i = 0; i < n; i++) {
        cr_assert(u[i] > 0 && u[i] < 1);
        m += u[i] / (double)n;
    }
    cr_assert_lt(fabs(m - 0.5), 5 * sqrt(1.0 / 12 / (double)n));
    free(u);
}

Test(rng, streams_are_reproducible_and_split_consistently)
{
    double a[20], b[20], c[20];
    fv_rng r1 = fv_rng_make(99, 5), r2 = fv_rng_make(99, 5), r3 = fv_rng_make(99, 6);
    fv_rng_normal(&r1, 20, a);
    fv_rng_normal(&r2, 10, b); /* two fills of an even size continue the same sequence */
    fv_rng_normal(&r2, 10, b + 10);
    fv_rng_normal(&r3, 20, c);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    cr_assert_neq(memcmp(a, c, sizeof a), 0, "another stream gives other numbers");
}
