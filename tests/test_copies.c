/* test_copies.c: the copy criterion (nn/monitor.h): distances to the nearest two training points at
 * known places, against a brute-force search across the GEMM blocks, ties, duplicates, sets too small
 * for a second-nearest point, float and double sets, and the summary. */
#include <criterion/criterion.h>

#include "core/error.h"
#include "core/rng.h"
#include "nn/monitor.h"

#include <math.h>
#include <stdlib.h>

/* Three points at known distances in d = 3: y0 at the origin, y1 = 3 e1, y2 = 4 e2. */
static const double three[] = {0, 0, 0, 3, 0, 0, 0, 4, 0};

Test(copies, distances_to_points_placed_at_known_places)
{
    fv_copy_set s;
    cr_assert_eq(fv_copy_set_init(&s, 3, 3, NULL, three), FV_OK, "%s", fv_last_error());
    /* (1, 0, 0): 1 from y0, 2 from y1; the origin: on y0, 3 from y1; (0, 4, 1): 1 from y2, sqrt(17) from y0 */
    const double X[] = {1, 0, 0, 0, 0, 0, 0, 4, 1};
    double d1[3], d2[3];
    size_t near[3];
    cr_assert_eq(fv_copy_nearest(&s, 3, X, d1, d2, near), FV_OK, "%s", fv_last_error());
    cr_expect_float_eq(d1[0], 1.0, 1e-12, "d1 of (1, 0, 0): %g", d1[0]);
    cr_expect_float_eq(d2[0], 2.0, 1e-12, "d2 of (1, 0, 0): %g", d2[0]);
    cr_expect_eq(near[0], 0, "nearest of (1, 0, 0): row %zu", near[0]);
    cr_expect_eq(d1[1], 0.0, "an exact copy has d1 = 0 exactly (recomputed from the differences): %g", d1[1]);
    cr_expect_float_eq(d2[1], 3.0, 1e-12, "d2 of the origin: %g", d2[1]);
    cr_expect_float_eq(d1[2], 1.0, 1e-12, "d1 of (0, 4, 1): %g", d1[2]);
    cr_expect_float_eq(d2[2], sqrt(17.0), 1e-12, "d2 of (0, 4, 1): %g", d2[2]);
    cr_expect_eq(near[2], 2, "nearest of (0, 4, 1): row %zu", near[2]);
    cr_expect_float_eq(fv_copy_ratio(d1[0], d2[0]), 0.5, 1e-12, "ratio of (1, 0, 0)");
    double frac, mean;
    fv_copy_summary(3, d1, d2, &frac, &mean);
    /* ratios 0.5, 0, 1/sqrt(17) = 0.243: two copies of three */
    cr_expect_float_eq(frac, 2.0 / 3.0, 1e-15, "copy fraction: %g", frac);
    cr_expect_float_eq(mean, 2.0 / 3.0, 1e-12, "mean d1: %g", mean);
    fv_copy_set_free(&s);
}

Test(copies, a_tie_keeps_the_lower_row_and_is_no_copy)
{
    fv_copy_set s;
    cr_assert_eq(fv_copy_set_init(&s, 3, 3, NULL, three), FV_OK, "%s", fv_last_error());
    const double X[] = {1.5, 0, 0}; /* halfway between y0 and y1 */
    double d1, d2;
    size_t near;
    cr_assert_eq(fv_copy_nearest(&s, 1, X, &d1, &d2, &near), FV_OK, "%s", fv_last_error());
    cr_expect_float_eq(d1, 1.5, 1e-12, "d1 at the tie: %g", d1);
    cr_expect_float_eq(d2, 1.5, 1e-12, "d2 at the tie: %g", d2);
    cr_expect_eq(near, 0, "the lower row is the nearest at a tie: %zu", near);
    cr_expect_float_eq(fv_copy_ratio(d1, d2), 1.0, 1e-12, "ratio 1 at a tie");
    cr_expect_eq(fv_copy_ratio(0.0, 0.0), 1.0, "0/0 counts as a tie, ratio 1");
    fv_copy_set_free(&s);
}

Test(copies, duplicates_count_once)
{
    /* y0 twice, then y1 = 3 e1, y2 = 4 e2: a sample on y0 is a copy of it, not a tie of two points */
    const double Y[] = {0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 4, 0};
    fv_copy_set s;
    cr_assert_eq(fv_copy_set_init(&s, 4, 3, NULL, Y), FV_OK, "%s", fv_last_error());
    cr_expect_eq(s.ndistinct, 3, "distinct points: %zu", s.ndistinct);
    cr_expect_eq(s.first[1], 0, "row 1 is a duplicate of row 0: %zu", s.first[1]);
    const double X[] = {0, 0, 0.5};
    double d1, d2;
    size_t near;
    cr_assert_eq(fv_copy_nearest(&s, 1, X, &d1, &d2, &near), FV_OK, "%s", fv_last_error());
    cr_expect_float_eq(d1, 0.5, 1e-12, "d1 near the duplicated point: %g", d1);
    cr_expect_float_eq(d2, sqrt(9.25), 1e-12, "d2 is the next distinct point's distance: %g", d2);
    cr_expect_eq(near, 0, "the first of the duplicates is the nearest: %zu", near);
    fv_copy_set_free(&s);
}

Test(copies, fewer_than_two_distinct_points_are_refused)
{
    fv_copy_set s;
    const double one[] = {1, 2};
    cr_expect_eq(fv_copy_set_init(&s, 1, 2, NULL, one), FV_EINPUT, "a one-point set is refused");
    cr_expect(strstr(fv_last_error(), "second-nearest") != NULL, "the message says why: %s", fv_last_error());
    const double same[] = {1, 2, 1, 2, 1, 2};
    cr_expect_eq(fv_copy_set_init(&s, 3, 2, NULL, same), FV_EINPUT, "three copies of one point are refused");
    cr_expect(strstr(fv_last_error(), "1 distinct point") != NULL, "the message counts them: %s", fv_last_error());
    cr_expect_eq(fv_copy_set_init(&s, 0, 2, NULL, one), FV_EINPUT, "an empty set is refused");
}

/* The blocked search across several 256-row blocks of samples and of the set, against every distance
 * computed one by one; the float view of the same set agrees. */
Test(copies, blocked_search_matches_brute_force)
{
    enum { N = 600, M = 300, D = 5 };
    double *Y = malloc(N * D * sizeof *Y), *X = malloc(M * D * sizeof *X);
    float *Yf = malloc(N * D * sizeof *Yf);
    double d1[M], d2[M], f1[M], f2[M];
    size_t near[M], fnear[M];
    fv_rng g = fv_rng_make(7, 0);
    fv_rng_normal(&g, N * D, Y);
    for (size_t i = 0; i < N * D; i++) {
        Yf[i] = (float)Y[i];
        Y[i] = Yf[i]; /* the same numbers in both views */
    }
    fv_rng_normal(&g, M * D, X);
    for (size_t i = 0; i < 20; i++) /* some exact copies */
        for (size_t k = 0; k < D; k++)
            X[i * D + k] = Y[(29 * i) * D + k];
    fv_copy_set s, sf;
    cr_assert_eq(fv_copy_set_init(&s, N, D, NULL, Y), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_copy_set_init(&sf, N, D, Yf, NULL), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_copy_nearest(&s, M, X, d1, d2, near), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_copy_nearest(&sf, M, X, f1, f2, fnear), FV_OK, "%s", fv_last_error());
    for (size_t i = 0; i < M; i++) {
        double b1 = INFINITY, b2 = INFINITY;
        size_t j1 = 0;
        for (size_t j = 0; j < N; j++) {
            double q = 0;
            for (size_t k = 0; k < D; k++)
                q += (X[i * D + k] - Y[j * D + k]) * (X[i * D + k] - Y[j * D + k]);
            q = sqrt(q);
            if (q < b1) {
                b2 = b1;
                b1 = q;
                j1 = j;
            } else if (q < b2) {
                b2 = q;
            }
        }
        cr_expect_float_eq(d1[i], b1, 1e-12, "sample %zu: d1 %g, brute force %g", i, d1[i], b1);
        cr_expect_float_eq(d2[i], b2, 1e-12, "sample %zu: d2 %g, brute force %g", i, d2[i], b2);
        cr_expect_eq(near[i], j1, "sample %zu: nearest row %zu, brute force %zu", i, near[i], j1);
        cr_expect_eq(f1[i], d1[i], "sample %zu: float set's d1", i);
        cr_expect_eq(f2[i], d2[i], "sample %zu: float set's d2", i);
        cr_expect_eq(fnear[i], near[i], "sample %zu: float set's nearest row", i);
    }
    for (size_t i = 0; i < 20; i++)
        cr_expect_eq(d1[i], 0.0, "planted copy %zu has d1 = 0: %g", i, d1[i]);
    double frac, mean;
    fv_copy_summary(M, d1, d2, &frac, &mean);
    cr_expect_geq(frac, 20.0 / M, "at least the planted copies count: %g", frac);
    fv_copy_set_free(&s);
    fv_copy_set_free(&sf);
    free(Y);
    free(Yf);
    free(X);
}
