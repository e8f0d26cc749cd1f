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
