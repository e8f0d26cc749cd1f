/* test_gmm.c: Gaussian mixtures (gmm/mixture.h) and the unbiased MMD^2 (gmm/mmd.h).
 *
 * The MMD and the K = 3 log density are checked against numpy/scipy values in tests/fixtures/gmm,
 * written by tests/oracle/make_gmm_fixtures.py; the blocked MMD against a naive double loop; the
 * sampler against the mixture's exact moments within Monte-Carlo error. */
#include <criterion/criterion.h>

#include "core/error.h"
#include "core/io.h"
#include "core/linalg.h"
#include "core/rng.h"
#include "gaussian/problem.h"
#include "gmm/mixture.h"
#include "gmm/mmd.h"
#include "helpers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURES "tests/fixtures/gmm/"

/* An oracle array with its expected element count. */
static double *load(const char *name, size_t count)
{
    double *a = NULL;
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS], total = 1;
    int st = fv_npy_read_f64(name, &a, &ndim, shape);
    cr_assert_eq(st, FV_OK, "%s: %s (run tests/oracle/make_gmm_fixtures.py)", name, fv_last_error());
    for (int i = 0; i < ndim; i++)
        total *= shape[i];
    cr_assert_eq(total, count, "%s has %zu elements, expected %zu", name, total, count);
    return a;
}

static double rel_err(double got, double want)
{
    return fabs(got - want) / fmax(fabs(want), 1e-300);
}

/* ---------------- MMD ---------------- */

#define FX_N 300
#define FX_M 277
#define FX_D 3

Test(gmm, mmd_fixed_bandwidth_matches_numpy)
{
    double *X = load(FIXTURES "X.npy", FX_N * FX_D), *Y = load(FIXTURES "Y.npy", FX_M * FX_D);
    double *want = load(FIXTURES "mmd2_fixed.npy", 2), got, h;
    cr_assert_eq(fv_mmd2_unbiased(FX_N, FX_M, FX_D, X, Y, want[0], &got, &h), FV_OK, "%s", fv_last_error());
    cr_assert_eq(h, want[0]);
    cr_log_info("fixed h = %g: MMD^2 %.17g numpy %.17g rel err %.3g", h, got, want[1], rel_err(got, want[1]));
    cr_assert_leq(rel_err(got, want[1]), 1e-10, "MMD^2 %.17g vs numpy %.17g", got, want[1]);
    free(X);
    free(Y);
    free(want);
}

Test(gmm, mmd_median_bandwidth_matches_numpy)
{
    double *X = load(FIXTURES "X.npy", FX_N * FX_D), *Y = load(FIXTURES "Y.npy", FX_M * FX_D);
    double *want = load(FIXTURES "mmd2_median.npy", 2), got, h, h2;
    cr_assert_eq(fv_mmd2_unbiased(FX_N, FX_M, FX_D, X, Y, 0.0, &got, &h), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_mmd_median_bandwidth(FX_N, FX_M, FX_D, X, Y, &h2), FV_OK);
    cr_assert_eq(h, h2);
    cr_log_info("median h %.17g numpy %.17g (rel %.3g); MMD^2 %.17g numpy %.17g rel err %.3g", h, want[0],
                rel_err(h, want[0]), got, want[1], rel_err(got, want[1]));
    cr_assert_leq(rel_err(h, want[0]), 1e-12, "median bandwidth %.17g vs numpy %.17g", h, want[0]);
    cr_assert_leq(rel_err(got, want[1]), 1e-10, "MMD^2 %.17g vs numpy %.17g", got, want[1]);
    free(X);
    free(Y);
    free(want);
}

static double kern(size_t d, const double *a, const double *b, double h)
{
    double s = 0.0;
    for (size_t j = 0; j < d; j++)
        s += (a[j] - b[j]) * (a[j] - b[j]);
    return exp(-s / (2 * h * h));
}

/* The definition, term by term, with directly computed distances: unbiased (diagonals left out) or
 * biased (every pair, means over n^2 and m^2). */
static double mmd2_naive(size_t n, size_t m, size_t d, const double *X, const double *Y, double h, int biased)
{
    double kxx = 0, kyy = 0, kxy = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            kxx += i == j && !biased ? 0.0 : kern(d, X + i * d, X + j * d, h);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < m; j++)
            kyy += i == j && !biased ? 0.0 : kern(d, Y + i * d, Y + j * d, h);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < m; j++)
            kxy += kern(d, X + i * d, Y + j * d, h);
    if (biased)
        return kxx / ((double)n * n) + kyy / ((double)m * m) - 2 * kxy / ((double)n * m);
    return kxx / (n * (n - 1.0)) + kyy / (m * (m - 1.0)) - 2 * kxy / ((double)n * m);
}

Test(gmm, blocked_mmd_matches_naive_on_ragged_sizes)
{
    /* partial tiles, n != m, a sample smaller than one block, exact multiples, the minimum 2 x 2 */
    static const size_t sizes[][3] = {{513, 40, 3}, {7, 600, 2}, {256, 257, 5}, {2, 2, 1}, {300, 3, 50}, {512, 256, 4}};
    for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
        size_t n = sizes[c][0], m = sizes[c][1], d = sizes[c][2];
        double *X = malloc(n * d * sizeof *X), *Y = malloc(m * d * sizeof *Y), got, h;
        fv_rng r = fv_rng_make(77, c);
        fv_rng_normal(&r, n * d, X);
        fv_rng_normal(&r, m * d, Y);
        for (size_t i = 0; i < m * d; i++)
            Y[i] = 3.0 + 0.8 * Y[i]; /* an offset, so centring matters */
        cr_assert_eq(fv_mmd2_unbiased(n, m, d, X, Y, -1.0, &got, &h), FV_OK, "%s", fv_last_error());
        double want = mmd2_naive(n, m, d, X, Y, h, 0);
        cr_log_info("n %zu m %zu d %zu: blocked %.17g naive %.17g rel %.3g", n, m, d, got, want, rel_err(got, want));
        cr_assert_leq(rel_err(got, want), 1e-12, "n %zu m %zu d %zu: %.17g vs %.17g", n, m, d, got, want);
        double hb;
        cr_assert_eq(fv_mmd2_biased(n, m, d, X, Y, -1.0, &got, &hb), FV_OK, "%s", fv_last_error());
        want = mmd2_naive(n, m, d, X, Y, h, 1);
        cr_expect_eq(hb, h, "same median bandwidth for both estimators");
        cr_assert_leq(rel_err(got, want), 1e-12, "biased, n %zu m %zu d %zu: %.17g vs %.17g", n, m, d, got, want);
        free(X);
        free(Y);
    }
}

/* Two copies of the same points: the biased estimator is 0 (to rounding), the unbiased one sits at
 * -(2/n)(1 - mean off-diagonal kernel), below 0 by about 2/n: why memorization is measured biased. */
Test(gmm, biased_mmd_of_identical_samples_is_zero_unbiased_is_not)
{
    size_t n = 300, d = 3;
    double *X = malloc(n * d * sizeof *X), b, u, h;
    fv_rng r = fv_rng_make(5, 1);
    fv_rng_normal(&r, n * d, X);
    cr_assert_eq(fv_mmd2_biased(n, n, d, X, X, -1.0, &b, &h), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_mmd2_unbiased(n, n, d, X, X, h, &u, NULL), FV_OK, "%s", fv_last_error());
    double koff = 0.0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            koff += i == j ? 0.0 : kern(d, X + i * d, X + j * d, h);
    koff /= (double)n * (n - 1.0);
    double want_u = -(2.0 / n) * (1.0 - koff);
    cr_log_info("identical samples of %zu: biased %.3g, unbiased %.6g (predicted %.6g)", n, b, u, want_u);
    cr_expect(fabs(b) < 1e-13, "biased MMD^2 of identical samples %.3g, want 0", b);
    cr_expect(fabs(u - want_u) < 1e-12, "unbiased %.17g, want -(2/n)(1 - k) = %.17g", u, want_u);
    free(X);
}

Test(gmm, median_bandwidth_by_hand)
{
    /* d = 1 points 0, 1, 3: squared distances 1, 9, 4 -> median 4, h = sqrt(2) */
    double X[] = {0, 1}, Y[] = {3, 7}, h;
    cr_assert_eq(fv_mmd_median_bandwidth(2, 1, 1, X, Y, &h), FV_OK);
    cr_assert_float_eq(h, sqrt(2.0), 1e-15);
    /* with 7 added: 1, 9, 49, 4, 36, 16 -> the mean of 9 and 16, h^2 = 12.5 / 2 */
    cr_assert_eq(fv_mmd_median_bandwidth(2, 2, 1, X, Y, &h), FV_OK);
    cr_assert_float_eq(h, 2.5, 1e-15);
}

Test(gmm, median_bandwidth_above_the_cap_uses_the_documented_subsample)
{
    size_t n = 3000, m = 1700, d = 2, N = n + m, S = FV_MMD_MEDIAN_MAX;
    double *X = malloc(n * d * sizeof *X), *Y = malloc(m * d * sizeof *Y), *Z = malloc(S * d * sizeof *Z), h, hs;
    fv_rng r = fv_rng_make(9, 1);
    fv_rng_normal(&r, n * d, X);
    fv_rng_normal(&r, m * d, Y);
    for (size_t i = 0; i < m * d; i++)
        Y[i] *= 2.0;
    for (size_t i = 0; i < S; i++) {
        size_t p = i * N / S;
        memcpy(Z + i * d, p < n ? X + p * d : Y + (p - n) * d, d * sizeof *Z);
    }
    cr_assert_eq(fv_mmd_median_bandwidth(n, m, d, X, Y, &h), FV_OK);
    cr_assert_eq(fv_mmd_median_bandwidth(S, 0, d, Z, NULL, &hs), FV_OK);
    cr_assert_eq(h, hs, "%.17g vs subsample %.17g", h, hs);
    free(X);
    free(Y);
    free(Z);
}

/* Replicated MMD^2 of two independent samples of one mixture (same = 1) or of it and a copy with
 * every mean shifted by `shift` in each coordinate. */
static double mixture_mmd(const fv_gmm *g, double shift, uint64_t rep, size_t n)
{
    fv_gmm s;
    cr_assert_eq(fv_gmm_alloc(&s, g->K, g->d), FV_OK);
    memcpy(s.w, g->w, g->K * sizeof *s.w);
    memcpy(s.cov, g->cov, g->K * g->d * g->d * sizeof *s.cov);
    for (size_t i = 0; i < g->K * g->d; i++)
        s.mu[i] = g->mu[i] + shift;
    cr_assert_eq(fv_gmm_prepare(&s), FV_OK);
    double *X = malloc(n * g->d * sizeof *X), *Y = malloc(n * g->d * sizeof *Y), v;
    fv_rng rx = fv_rng_make(1000 + rep, 0), ry = fv_rng_make(1000 + rep, 1);
    cr_assert_eq(fv_gmm_sample(g, n, &rx, X, NULL), FV_OK);
    cr_assert_eq(fv_gmm_sample(&s, n, &ry, Y, NULL), FV_OK);
    cr_assert_eq(fv_mmd2_unbiased(n, n, g->d, X, Y, 0.0, &v, NULL), FV_OK);
    free(X);
    free(Y);
    fv_gmm_free(&s);
    return v;
}

Test(gmm, mmd_near_zero_for_one_distribution_positive_for_shifted)
{
    enum { R = 24, NS = 300 };
    fv_gmm g;
    cr_assert_eq(fv_gmm_random(&g, 4, 3, 2.0, 0.25, 3), FV_OK);
    double v[R], mean = 0, var = 0;
    int negative = 0;
    for (int r = 0; r < R; r++) {
        v[r] = mixture_mmd(&g, 0.0, (uint64_t)r, NS);
        mean += v[r] / R;
        negative += v[r] < 0;
    }
    for (int r = 0; r < R; r++)
        var += (v[r] - mean) * (v[r] - mean) / (R - 1);
    double sd = sqrt(var), shifted = mixture_mmd(&g, 0.5, 99, NS);
    cr_log_info("null MMD^2: mean %.3g sd %.3g (%d of %d negative); shifted by 0.5: %.3g", mean, sd, negative, R,
                shifted);
    /* unbiased: the replicate mean is 0 within its standard error, and some replicates are negative */
    cr_assert_leq(fabs(mean), 4 * sd / sqrt(R));
    cr_assert_gt(negative, 0);
    cr_assert_gt(shifted, mean + 10 * sd);
    fv_gmm_free(&g);
}

/* ---------------- mixtures ---------------- */

/* A hand-made d = 2, K = 3 mixture with unequal weights and correlated covariances. */
static void hand_mixture(fv_gmm *g)
{
    static const double w[3] = {0.5, 0.3, 0.2}, mu[6] = {0, 0, 3, -1, -2, 4};
    static const double cov[12] = {1.0, 0.3, 0.3, 0.5, 0.4, -0.2, -0.2, 2.0, 0.25, 0, 0, 0.25};
    cr_assert_eq(fv_gmm_alloc(g, 3, 2), FV_OK);
    memcpy(g->w, w, sizeof w);
    memcpy(g->mu, mu, sizeof mu);
    memcpy(g->cov, cov, sizeof cov);
    cr_assert_eq(fv_gmm_prepare(g), FV_OK, "%s", fv_last_error());
}

Test(gmm, sample_moments_and_frequencies_match_within_monte_carlo_error)
{
    enum { N = 200000, D = 2 };
    fv_gmm g;
    hand_mixture(&g);
    double *X = malloc(N * D * sizeof *X), mean[D], cov[D * D], smean[D], scov[D * D];
    int *lab = malloc(N * sizeof *lab);
    fv_rng r = fv_rng_make(42, 3);
    cr_assert_eq(fv_gmm_sample(&g, N, &r, X, lab), FV_OK);
    fv_gmm_moments(&g, mean, cov);
    th_moments(N, D, X, smean, scov);
    for (size_t j = 0; j < D; j++) {
        double se = sqrt(cov[j * D + j] / N);
        cr_log_info("mean %zu: sample %.5f exact %.5f (%.2f se)", j, smean[j], mean[j], (smean[j] - mean[j]) / se);
        cr_assert_leq(fabs(smean[j] - mean[j]), 5 * se);
    }
    /* standard error of a covariance entry: the standard deviation of the centred products / sqrt(N) */
    for (size_t a = 0; a < D; a++)
        for (size_t b = 0; b < D; b++) {
            double s1 = 0, s2 = 0;
            for (size_t i = 0; i < N; i++) {
                double p = (X[i * D + a] - smean[a]) * (X[i * D + b] - smean[b]);
                s1 += p;
                s2 += p * p;
            }
            double se = sqrt((s2 / N - (s1 / N) * (s1 / N)) / N);
            cr_log_info("cov %zu%zu: sample %.5f exact %.5f (%.2f se)", a, b, scov[a * D + b], cov[a * D + b],
                        (scov[a * D + b] - cov[a * D + b]) / se);
            cr_assert_leq(fabs(scov[a * D + b] - cov[a * D + b]), 5 * se);
        }
    size_t count[3] = {0, 0, 0};
    for (size_t i = 0; i < N; i++) {
        cr_assert(lab[i] >= 0 && lab[i] < 3);
        count[lab[i]]++;
    }
    for (size_t k = 0; k < 3; k++) {
        double f = (double)count[k] / N, se = sqrt(g.w[k] * (1 - g.w[k]) / N);
        cr_assert_leq(fabs(f - g.w[k]), 5 * se, "component %zu: frequency %g, weight %g", k, f, g.w[k]);
    }
    free(X);
    free(lab);
    fv_gmm_free(&g);
}

Test(gmm, sample_follows_the_documented_draw_order)
{
    fv_gmm g;
    hand_mixture(&g);
    double X[3 * 2], want[2];
    int lab[3];
    fv_rng r = fv_rng_make(5, 2), q = fv_rng_make(5, 2);
    cr_assert_eq(fv_gmm_sample(&g, 3, &r, X, lab), FV_OK);
    for (size_t i = 0; i < 3; i++) { /* one uniform, then d normals, x = mu_k + L_k z */
        double u, z[2];
        fv_rng_uniform(&q, 1, &u);
        int k = u < 0.5 ? 0 : (u < 0.8 ? 1 : 2);
        fv_rng_normal(&q, 2, z);
        const double *L = g.chol + k * 4;
        want[0] = g.mu[2 * k] + L[0] * z[0];
        want[1] = g.mu[2 * k + 1] + L[2] * z[0] + L[3] * z[1];
        cr_assert_eq(lab[i], k);
        cr_assert_float_eq(X[2 * i], want[0], 1e-14);
        cr_assert_float_eq(X[2 * i + 1], want[1], 1e-14);
    }
    cr_assert_eq(r.pos, q.pos);
    cr_assert_eq(r.pos, 3 * (1 + 1)); /* n (1 + ceil(d/2)) blocks */
    fv_gmm_free(&g);
}

Test(gmm, random_mixture_uses_the_section_5_defaults)
{
    fv_gmm g;
    double z[8 * 3];
    cr_assert_eq(fv_gmm_random(&g, 8, 3, 5.0, 0.25, 11), FV_OK);
    fv_rng r = fv_rng_make(11, 0);
    fv_rng_normal(&r, 8 * 3, z);
    for (size_t k = 0; k < 8; k++) {
        cr_assert_float_eq(g.w[k], 1.0 / 8, 1e-16);
        for (size_t i = 0; i < 3; i++) {
            cr_assert_float_eq(g.mu[k * 3 + i], 5.0 * z[k * 3 + i], 1e-14);
            for (size_t j = 0; j < 3; j++) {
                cr_assert_float_eq(g.cov[k * 9 + i * 3 + j], i == j ? 0.25 : 0.0, 1e-16);
                cr_assert_float_eq(g.chol[k * 9 + i * 3 + j], i == j ? 0.5 : 0.0, 1e-16);
            }
        }
    }
    fv_gmm_free(&g);
}

Test(gmm, logpdf_of_one_component_is_the_gaussian_density)
{
    enum { D = 3, NP = 5 };
    fv_gmm g;
    cr_assert_eq(fv_gmm_alloc(&g, 1, D), FV_OK);
    fv_rng r = fv_rng_make(8, 0);
    fv_random_spd(D, 0.2, &r, g.cov);
    fv_rng_normal(&r, D, g.mu);
    g.w[0] = 1.0;
    cr_assert_eq(fv_gmm_prepare(&g), FV_OK);
    double P[NP * D], lp[NP], ev[D], V[D * D], logdet = 0;
    fv_rng_normal(&r, NP * D, P);
    cr_assert_eq(fv_gmm_logpdf(&g, NP, P, lp), FV_OK);
    cr_assert_eq(fv_linalg_eigh(D, g.cov, ev, V), FV_OK);
    for (size_t j = 0; j < D; j++)
        logdet += log(ev[j]);
    for (size_t i = 0; i < NP; i++) { /* -d/2 log 2 pi - 1/2 log det S - 1/2 e^T S^{-1} e */
        double e[D], s[D], q = 0;
        for (size_t j = 0; j < D; j++)
            e[j] = s[j] = 3.0 * P[i * D + j] - g.mu[j];
        for (size_t j = 0; j < D; j++)
            P[i * D + j] = 3.0 * P[i * D + j];
        cr_assert_eq(fv_linalg_solve(D, g.cov, 1, s), FV_OK);
        for (size_t j = 0; j < D; j++)
            q += e[j] * s[j];
        double want = -0.5 * D * log(2 * M_PI) - 0.5 * logdet - 0.5 * q;
        cr_assert_eq(fv_gmm_logpdf(&g, 1, P + i * D, lp + i), FV_OK);
        cr_assert_leq(rel_err(lp[i], want), 1e-13, "point %zu: %.17g vs %.17g", i, lp[i], want);
    }
    fv_gmm_free(&g);
}

Test(gmm, logpdf_of_three_components_matches_scipy)
{
    enum { K = 3, D = 3, NP = 42 };
    fv_gmm g;
    cr_assert_eq(fv_gmm_alloc(&g, K, D), FV_OK);
    double *w = load(FIXTURES "gmm_w.npy", K), *mu = load(FIXTURES "gmm_mu.npy", K * D);
    double *cov = load(FIXTURES "gmm_cov.npy", K * D * D), *P = load(FIXTURES "gmm_points.npy", NP * D);
    double *want = load(FIXTURES "gmm_logpdf.npy", NP), lp[NP], worst = 0;
    memcpy(g.w, w, K * sizeof *w);
    memcpy(g.mu, mu, K * D * sizeof *mu);
    memcpy(g.cov, cov, K * D * D * sizeof *cov);
    cr_assert_eq(fv_gmm_prepare(&g), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_gmm_logpdf(&g, NP, P, lp), FV_OK);
    for (size_t i = 0; i < NP; i++) {
        worst = fmax(worst, rel_err(lp[i], want[i]));
        cr_assert_leq(rel_err(lp[i], want[i]), 1e-12, "point %zu: %.17g vs scipy %.17g", i, lp[i], want[i]);
    }
    cr_log_info("K = 3 logpdf vs scipy: worst relative error %.3g (the last points are far in the tails: %.6g)",
                worst, lp[NP - 1]);
    free(w);
    free(mu);
    free(cov);
    free(P);
    free(want);
    fv_gmm_free(&g);
}

Test(gmm, density_integrates_to_one_in_2d)
{
    fv_gmm g;
    hand_mixture(&g);
    /* midpoint rule on [-10, 10]^2 (the components sit within 8 standard deviations of the edge) */
    enum { M = 400 };
    double step = 20.0 / M, *P = malloc(M * M * 2 * sizeof *P), *lp = malloc(M * M * sizeof *lp), sum = 0;
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < M; j++) {
            P[(i * M + j) * 2] = -10 + (i + 0.5) * step;
            P[(i * M + j) * 2 + 1] = -10 + (j + 0.5) * step;
        }
    cr_assert_eq(fv_gmm_logpdf(&g, M * M, P, lp), FV_OK);
    for (size_t i = 0; i < M * M; i++)
        sum += exp(lp[i]) * step * step;
    cr_log_info("integral of the 2-d density over the grid: %.12f", sum);
    cr_assert_float_eq(sum, 1.0, 1e-6);
    free(P);
    free(lp);
    fv_gmm_free(&g);
}

Test(gmm, moments_of_a_single_component_are_its_own)
{
    fv_gmm g;
    double mean[2], cov[4];
    cr_assert_eq(fv_gmm_alloc(&g, 1, 2), FV_OK);
    g.w[0] = 1;
    g.mu[0] = 1;
    g.mu[1] = -2;
    g.cov[0] = 2;
    g.cov[1] = g.cov[2] = 0.5;
    g.cov[3] = 1;
    cr_assert_eq(fv_gmm_prepare(&g), FV_OK);
    fv_gmm_moments(&g, mean, cov);
    cr_assert(mean[0] == 1 && mean[1] == -2);
    cr_assert(cov[0] == 2 && cov[1] == 0.5 && cov[2] == 0.5 && cov[3] == 1);
    fv_gmm_free(&g);
}

/* ---------------- error paths ---------------- */

static void expect_input_error(int st, const char *needle)
{
    cr_assert_eq(st, FV_EINPUT, "status %d (%s)", st, fv_last_error());
    cr_assert(strstr(fv_last_error(), needle), "message '%s' lacks '%s'", fv_last_error(), needle);
}

Test(gmm, rejects_weights_not_summing_to_one)
{
    fv_gmm g;
    hand_mixture(&g);
    g.w[2] = 0.2 + 1e-9;
    expect_input_error(fv_gmm_prepare(&g), "sum to");
    fv_gmm_free(&g);
}

Test(gmm, rejects_a_negative_weight)
{
    fv_gmm g;
    hand_mixture(&g);
    g.w[0] = 0.8;
    g.w[2] = -0.1; /* still sums to 1 */
    expect_input_error(fv_gmm_prepare(&g), "weight 3");
    fv_gmm_free(&g);
}

Test(gmm, rejects_a_non_spd_covariance)
{
    fv_gmm g;
    hand_mixture(&g);
    g.cov[4 + 1] = g.cov[4 + 2] = 1.0; /* component 2: [[0.4, 1], [1, 2]] is indefinite */
    expect_input_error(fv_gmm_prepare(&g), "component 2");
    cr_assert(strstr(fv_last_error(), "positive definite"));
    fv_gmm_free(&g);
}

Test(gmm, rejects_an_unprepared_mixture)
{
    fv_gmm g;
    double x[2] = {0, 0}, lp;
    fv_rng r = fv_rng_make(1, 0);
    cr_assert_eq(fv_gmm_alloc(&g, 2, 2), FV_OK);
    expect_input_error(fv_gmm_logpdf(&g, 1, x, &lp), "fv_gmm_prepare");
    expect_input_error(fv_gmm_sample(&g, 1, &r, x, NULL), "fv_gmm_prepare");
    fv_gmm_free(&g);
}

Test(gmm, rejects_dimension_zero)
{
    fv_gmm g;
    double X[4] = {0, 1, 2, 3}, v, h;
    expect_input_error(fv_gmm_alloc(&g, 3, 0), "d >= 1");
    fv_gmm_free(&g);
    expect_input_error(fv_gmm_random(&g, 3, 0, 5.0, 0.25, 1), "d >= 1");
    expect_input_error(fv_mmd2_unbiased(2, 2, 0, X, X, 1.0, &v, NULL), "d >= 1");
    expect_input_error(fv_mmd_median_bandwidth(2, 2, 0, X, X, &h), "d >= 1");
}

Test(gmm, unbiased_mmd_needs_two_points_per_sample)
{
    double X[6] = {0, 1, 2, 3, 4, 5}, v;
    expect_input_error(fv_mmd2_unbiased(1, 3, 2, X, X, 1.0, &v, NULL), "n = 1");
    expect_input_error(fv_mmd2_unbiased(3, 1, 2, X, X, 1.0, &v, NULL), "m = 1");
    expect_input_error(fv_mmd2_unbiased(3, 0, 2, X, X, 1.0, &v, NULL), "m = 0");
}

Test(gmm, rejects_bad_bandwidths_and_data)
{
    double X[4] = {0, 1, 2, 3}, Z[4] = {1, 1, 1, 1}, v, h;
    expect_input_error(fv_mmd2_unbiased(2, 2, 2, X, X, NAN, &v, NULL), "finite");
    X[3] = INFINITY;
    expect_input_error(fv_mmd2_unbiased(2, 2, 2, X, X, 1.0, &v, NULL), "non-finite");
    /* every point equal: no scale for the median heuristic */
    expect_input_error(fv_mmd_median_bandwidth(2, 2, 1, Z, Z, &h), "median");
    expect_input_error(fv_mmd2_unbiased(2, 2, 1, Z, Z, 0.0, &v, NULL), "median");
}
