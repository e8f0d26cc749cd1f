/* test_variance.c: the exact gradient variance (gaussian/variance.c) against the reference values of
 * docs/THEORY.md section 4, against its Monte-Carlo twin (gaussian/mc.c) on random problems with fields near
 * the OT field (theta != mu exercises the non-central terms), against finite differences, and on its
 * error paths. Values are logged at full precision (--verbose=1) so that they can be recorded. */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "src/core/error.h"
#include "src/core/linalg.h"
#include "src/core/rng.h"
#include "gaussian/problem.h"
#include "gaussian/variance.h"

#include "helpers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------------- */
/* Problems */

/* The reference problem: d = 2, mu = (1, -0.5), M = [[2, 0.6], [0.6, 1]]. */
static void ref_problem(fv_problem *p, fv_coupling c, double deg, double sigma)
{
    cr_assert_eq(fv_problem_alloc(p, 2), FV_OK);
    p->m1[0] = 1.0;
    p->m1[1] = -0.5;
    double M[4] = {2.0, 0.6, 0.6, 1.0};
    memcpy(p->S1, M, sizeof M);
    p->coupling = c;
    p->sigma = sigma;
    if (c == FV_COUPLING_ROTATION || deg != 0.0) {
        p->R = malloc(4 * sizeof *p->R);
        fv_rotation_blocks(2, deg, p->R);
    }
    cr_assert_eq(fv_problem_validate(p), FV_OK, "%s", fv_last_error());
}

/* A random problem of dimension d: mu ~ N(0, I), M = B B^T / d + 0.3 I with B Gaussian, rotation by deg. */
static void random_problem(fv_problem *p, size_t d, fv_rng *r, fv_coupling c, double deg, double sigma,
                           fv_schedule s, int deriv)
{
    cr_assert_eq(fv_problem_alloc(p, d), FV_OK);
    double *B = malloc(d * d * sizeof *B);
    fv_rng_normal(r, d, p->m1);
    fv_rng_normal(r, d * d, B);
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < d; j++) {
            double v = 0.0;
            for (size_t k = 0; k < d; k++)
                v += B[i * d + k] * B[j * d + k];
            p->S1[i * d + j] = v / (double)d + (i == j ? 0.3 : 0.0);
        }
    free(B);
    th_problem_finish(p, c, deg, sigma, s, deriv);
}

static double uniform(fv_rng *r)
{
    double u;
    fv_rng_uniform(r, 1, &u);
    return u;
}

/* |value - ref| within half a unit of the last printed digit (`decimals` after the point), or 1e-3
 * relative where that is stricter. */
static void expect_ref(const char *what, double value, double ref, int decimals)
{
    double tol = fmin(0.5 * pow(10.0, -decimals), 1e-3 * fabs(ref));
    cr_log_info("%-44s %.17g (reference %.*f)", what, value, decimals, ref);
    cr_expect(fabs(value - ref) <= tol, "%s: %.17g does not round to %.*f", what, value, decimals, ref);
}

/* ------------------------------------------------------------------------------------------------- */
/* Reference values of docs/THEORY.md section 4 */

static void per_t(fv_coupling c, fv_vfield_kind k, double sigma, fv_var *v)
{
    fv_problem p;
    fv_vfield f = {k, NULL, NULL};
    ref_problem(&p, c, 120.0, sigma);
    cr_assert_eq(fv_variance_at(&p, &f, 0.6, v, NULL, NULL), FV_OK, "%s", fv_last_error());
    fv_problem_free(&p);
}

Test(variance, reference_per_t)
{
    struct {
        const char *name;
        fv_coupling c;
        fv_vfield_kind k;
        double sigma, total, theta;
        int dt, dth;
    } refs[] = {
        {"rot data, OT field, f=0", FV_COUPLING_ROTATION, FV_VFIELD_OT, 0.0, 42.51, 22.05, 2, 2},
        {"rot data, OT field, f=0.3", FV_COUPLING_ROTATION, FV_VFIELD_OT, 0.3, 46.10, 22.10, 2, 2},
        {"rot data, rot field, f=0.3", FV_COUPLING_ROTATION, FV_VFIELD_ROTATION, 0.3, 167.0, 40.69, 1, 2},
        {"independent data, OT field, f=0", FV_COUPLING_INDEPENDENT, FV_VFIELD_OT, 0.0, 31.15, 14.70, 2, 2},
        {"independent data, OT field, f=0.3", FV_COUPLING_INDEPENDENT, FV_VFIELD_OT, 0.3, 33.59, 14.75, 2, 2},
    };
    char what[96];
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
        fv_var v;
        per_t(refs[i].c, refs[i].k, refs[i].sigma, &v);
        snprintf(what, sizeof what, "t=0.6 %s total", refs[i].name);
        expect_ref(what, v.var_total, refs[i].total, refs[i].dt);
        snprintf(what, sizeof what, "t=0.6 %s theta", refs[i].name);
        expect_ref(what, v.var_theta, refs[i].theta, refs[i].dth);
    }
    fv_var v;
    per_t(FV_COUPLING_ROTATION, FV_VFIELD_ROTATION, 0.0, &v);
    cr_log_info("t=0.6 rot data, rot field, f=0: total %.17g theta %.17g loss %.17g", v.var_total, v.var_theta,
                v.loss);
    cr_expect(fabs(v.var_total) <= 1e-12 && fabs(v.var_theta) <= 1e-12 && fabs(v.loss) <= 1e-12);
}

static double integrated(fv_coupling c, fv_vfield_kind k, double deg, double sigma)
{
    fv_problem p;
    fv_vfield f = {k, NULL, NULL};
    fv_var v;
    double err;
    ref_problem(&p, c, deg, sigma);
    cr_assert_eq(fv_variance_integrated(&p, &f, 1e-10, &v, &err), FV_OK, "%s", fv_last_error());
    cr_expect(err <= 1e-9 * fabs(v.var_total) + 1e-12, "error estimate %g of %g", err, v.var_total);
    fv_problem_free(&p);
    return v.var_total;
}

Test(variance, reference_integrated)
{
    const fv_coupling ROT = FV_COUPLING_ROTATION;
    expect_ref("integrated 120 deg sigma 0.3 OT field", integrated(ROT, FV_VFIELD_OT, 120, 0.3), 73.770, 3);
    expect_ref("integrated 120 deg sigma 0.3 rot field", integrated(ROT, FV_VFIELD_ROTATION, 120, 0.3), 99.620, 3);
    expect_ref("integrated 120 deg sigma 0.05 OT field", integrated(ROT, FV_VFIELD_OT, 120, 0.05), 69.472, 3);
    expect_ref("integrated 120 deg sigma 0.05 rot field", integrated(ROT, FV_VFIELD_ROTATION, 120, 0.05), 1.9884, 4);
    expect_ref("integrated 150 deg sigma 0.05 OT field", integrated(ROT, FV_VFIELD_OT, 150, 0.05), 77.121, 3);
    expect_ref("integrated 150 deg sigma 0.05 rot field", integrated(ROT, FV_VFIELD_ROTATION, 150, 0.05), 79.091, 3);
    expect_ref("integrated independent OT field sigma 0",
               integrated(FV_COUPLING_INDEPENDENT, FV_VFIELD_OT, 0, 0.0), 44.510, 3);
    expect_ref("integrated 120 deg OT field sigma 0", integrated(ROT, FV_VFIELD_OT, 120, 0.0), 69.349, 3);
}

/* ------------------------------------------------------------------------------------------------- */
/* Exact against Monte Carlo */

static const char *coupling_label[] = {"OT", "rotation", "independent"};

/* Problem i of the random suite: couplings and schedules cycle, everything else is drawn. Random-t
 * problems skip the derivative term (its integral diverges) and redraw a field that is singular. */
static void random_case(int i, int random_t, fv_problem *p, double *theta, double *Theta, double *t, char *label)
{
    fv_rng r = fv_rng_make(77, (uint64_t)(2 * i + random_t));
    size_t d = 2 + (size_t)(uniform(&r) * 19.0);
    fv_coupling c = (fv_coupling)(i % 3);
    fv_schedule s = (fv_schedule)((i / 3) % 2);
    double deg = 160.0 * uniform(&r), sigma = 0.5 * uniform(&r);
    int deriv = !random_t && s == FV_SCHEDULE_BRIDGE && uniform(&r) < 0.5;
    *t = random_t ? -1.0 : 0.02 + 0.96 * uniform(&r);
    random_problem(p, d, &r, c, deg, sigma, s, deriv);
    fv_vfield f = {FV_VFIELD_CUSTOM, theta, Theta};
    do
        th_perturbed_ot(p, &r, 0.3, 0.15, theta, Theta);
    while (random_t && fv_variance_integrable(p, &f) != FV_OK);
    sprintf(label, "d=%zu %s %.0fdeg %s%s s=%.3f t=%.3f", d, coupling_label[c], deg, fv_schedule_name(s),
            deriv ? "+f'" : "", sigma, *t);
}

static void mc_suite(int random_t, int count, size_t n)
{
    for (int i = 0; i < count; i++) {
        fv_problem p;
        double theta[20], Theta[400], t;
        char label[128];
        random_case(i, random_t, &p, theta, Theta, &t, label);
        fv_vfield f = {FV_VFIELD_CUSTOM, theta, Theta};
        th_variance_vs_mc(&p, &f, t, n, (uint64_t)i, 0.0, label);
        fv_problem_free(&p);
    }
}

Test(variance, mc_random_problems_fixed_t) { mc_suite(0, 12, 40000); }

Test(variance, mc_random_problems_random_t) { mc_suite(1, 12, 40000); }

/* The named fields, including the Markov one whose parameters change with t. */
Test(variance, mc_named_fields)
{
    fv_rng r = fv_rng_make(5, 5);
    struct {
        fv_coupling c;
        fv_vfield_kind k;
        fv_schedule s;
        int deriv;
        double t;
    } cases[] = {
        {FV_COUPLING_INDEPENDENT, FV_VFIELD_MARKOV, FV_SCHEDULE_CONSTANT, 0, -1.0},
        {FV_COUPLING_INDEPENDENT, FV_VFIELD_MARKOV, FV_SCHEDULE_BRIDGE, 1, 0.3},
        {FV_COUPLING_ROTATION, FV_VFIELD_MARKOV, FV_SCHEDULE_BRIDGE, 0, -1.0},
        {FV_COUPLING_ROTATION, FV_VFIELD_ROTATION, FV_SCHEDULE_CONSTANT, 0, 0.45},
        {FV_COUPLING_ROTATION, FV_VFIELD_ROTATION, FV_SCHEDULE_BRIDGE, 0, -1.0},
        {FV_COUPLING_INDEPENDENT, FV_VFIELD_OT, FV_SCHEDULE_CONSTANT, 0, -1.0},
        {FV_COUPLING_OT, FV_VFIELD_OT, FV_SCHEDULE_CONSTANT, 0, 0.8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fv_problem p;
        char label[128];
        size_t d = 3 + i;
        random_problem(&p, d, &r, cases[i].c, 70.0, 0.35, cases[i].s, cases[i].deriv);
        fv_vfield f = {cases[i].k, NULL, NULL};
        sprintf(label, "named field %zu, d=%zu t=%.2f", i, d, cases[i].t);
        th_variance_vs_mc(&p, &f, cases[i].t, 40000, 100 + i, 0.0, label);
        fv_problem_free(&p);
    }
}

/* Mean and full covariance of g against a direct sample mean and covariance of fv_cfm_grad at d = 2
 * (rotational data, perturbed field, noise, derivative term): every entry within 5 standard errors. */
Test(variance, mean_and_covariance_against_samples)
{
    enum { D = 2, N = D + D * D, S = 200000 };
    fv_problem p;
    fv_rng r = fv_rng_make(9, 1);
    double theta[D], Theta[D * D], Eg[N], cov[N * N], K[D * D], Sq[D * D], t = 0.35, f, fp;
    random_problem(&p, D, &r, FV_COUPLING_ROTATION, 100.0, 0.4, FV_SCHEDULE_BRIDGE, 1);
    th_perturbed_ot(&p, &r, 0.3, 0.15, theta, Theta);
    fv_vfield vf = {FV_VFIELD_CUSTOM, theta, Theta};
    fv_var v;
    cr_assert_eq(fv_variance_at(&p, &vf, t, &v, Eg, cov), FV_OK, "%s", fv_last_error());
    /* the covariance's block traces are the variances, and it is symmetric */
    double tr[2] = {0, 0};
    for (int i = 0; i < N; i++) {
        tr[i >= D] += cov[i * N + i];
        for (int j = 0; j < N; j++)
            cr_expect(fabs(cov[i * N + j] - cov[j * N + i]) <= 1e-12 * (1 + fabs(cov[i * N + j])));
    }
    cr_expect(fabs(tr[0] - v.var_theta) <= 1e-10 * v.var_theta && fabs(tr[1] - v.var_Theta) <= 1e-10 * v.var_Theta);
    /* direct samples */
    cr_assert_eq(fv_linalg_sqrtm_spd(D, p.S1, Sq), FV_OK);
    fv_mat_mul(D, D, D, Sq, p.R, K);
    fv_noise(p.schedule, p.sigma, t, &f, &fp);
    double mean[N] = {0}, m2[N * N] = {0};
    for (int s = 0; s < S; s++) {
        double xi[2 * D], x[D], u[D], g[N];
        fv_rng_normal(&r, 2 * D, xi);
        for (int i = 0; i < D; i++) {
            double x1 = p.m1[i] + K[i * D] * xi[0] + K[i * D + 1] * xi[1];
            x[i] = (1 - t) * xi[i] + t * x1 + f * xi[D + i];
            u[i] = x1 - xi[i] + fp * xi[D + i];
        }
        cr_assert_eq(fv_cfm_grad(D, theta, Theta, x, u, t, g, NULL), FV_OK);
        for (int i = 0; i < N; i++) {
            mean[i] += g[i] / S;
            for (int j = 0; j < N; j++)
                m2[i * N + j] += g[i] * g[j] / S;
        }
    }
    for (int i = 0; i < N; i++) {
        double se = sqrt(cov[i * N + i] / S);
        cr_expect(fabs(mean[i] - Eg[i]) <= 5 * se, "E g[%d]: exact %g, sampled %g +- %g", i, Eg[i], mean[i], se);
        for (int j = 0; j < N; j++) {
            double c = m2[i * N + j] - mean[i] * mean[j];
            /* Var(g_i g_j) <= E g_i^2 g_j^2 <= sqrt(E g_i^4 E g_j^4), and E g^4 <= 15 (E g^2)^2 * (1 + mean terms):
             * a generous bound from the second moments */
            double s2 = (cov[i * N + i] + Eg[i] * Eg[i]) * (cov[j * N + j] + Eg[j] * Eg[j]);
            double sec = sqrt(30.0 * s2 / S);
            cr_expect(fabs(c - cov[i * N + j]) <= 5 * sec, "cov[%d][%d]: exact %g, sampled %g", i, j,
                      cov[i * N + j], c);
        }
    }
    fv_problem_free(&p);
}

/* The Markov field minimizes the loss at every t over all fields, so E[g | t] = 0 for the family member
 * that matches it (independent data, any schedule). */
Test(variance, markov_field_has_zero_mean_gradient)
{
    fv_rng r = fv_rng_make(11, 0);
    fv_problem p;
    random_problem(&p, 5, &r, FV_COUPLING_INDEPENDENT, 0.0, 0.3, FV_SCHEDULE_BRIDGE, 1);
    fv_vfield f = {FV_VFIELD_MARKOV, NULL, NULL};
    double Eg[5 + 25];
    for (int k = 1; k < 10; k++) {
        fv_var v;
        cr_assert_eq(fv_variance_at(&p, &f, k / 10.0, &v, Eg, NULL), FV_OK, "%s", fv_last_error());
        for (int i = 0; i < 30; i++)
            cr_expect(fabs(Eg[i]) <= 1e-12 * (1 + v.loss), "t = %g: E g[%d] = %g", k / 10.0, i, Eg[i]);
    }
    fv_problem_free(&p);
}

/* The Markov member does not exist at t = 1 without noise; the integral is still finite, and no field of
 * the family has a smaller integrated loss than the Markov field. */
Test(variance, markov_field_endpoint_and_loss)
{
    fv_problem p;
    fv_var v, ot;
    ref_problem(&p, FV_COUPLING_INDEPENDENT, 0.0, 0.0);
    fv_vfield mk = {FV_VFIELD_MARKOV, NULL, NULL}, of = {FV_VFIELD_OT, NULL, NULL};
    cr_expect_eq(fv_variance_at(&p, &mk, 1.0, &v, NULL, NULL), FV_ESINGULAR);
    cr_expect(strstr(fv_last_error(), "t = 1") != NULL, "%s", fv_last_error());
    cr_assert_eq(fv_variance_integrated(&p, &mk, 1e-10, &v, NULL), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_variance_integrated(&p, &of, 1e-10, &ot, NULL), FV_OK, "%s", fv_last_error());
    cr_log_info("independent data, sigma 0: Markov field var %.17g loss %.17g; OT field var %.17g loss %.17g",
                v.var_total, v.loss, ot.var_total, ot.loss);
    cr_expect(v.loss < ot.loss && isfinite(v.var_total));
    fv_problem_free(&p);
}

/* The OT and Markov fields are evaluated in the eigenbasis of M; the same fields given as CUSTOM take the
 * dense path. Both must agree, at single times and integrated, for every coupling and schedule. */
static void expect_close(const char *what, double a, double b)
{
    cr_expect(fabs(a - b) <= 1e-10 * (1.0 + fabs(b)), "%s: eigenbasis %.17g, dense %.17g", what, a, b);
}

Test(variance, eigenbasis_path_equals_dense_path)
{
    fv_rng r = fv_rng_make(23, 0);
    for (int c = 0; c < 3; c++)
        for (int s = 0; s < 2; s++) {
            fv_problem p;
            size_t d = 3 + (size_t)(c * 2 + s);
            random_problem(&p, d, &r, (fv_coupling)c, 130.0, 0.3, (fv_schedule)s, s);
            double theta[10], Theta[100], Eg[110];
            fv_vfield ot = {FV_VFIELD_OT, NULL, NULL}, mk = {FV_VFIELD_MARKOV, NULL, NULL};
            fv_vfield custom = {FV_VFIELD_CUSTOM, theta, Theta};
            cr_assert_eq(fv_vfield_params(&p, &ot, 0.0, theta, Theta), FV_OK);
            for (int k = 1; k < 10; k++) {
                double t = k / 10.0;
                fv_var a, b, e;
                cr_assert_eq(fv_variance_at(&p, &ot, t, &a, NULL, NULL), FV_OK, "%s", fv_last_error());
                cr_assert_eq(fv_variance_at(&p, &custom, t, &b, NULL, NULL), FV_OK, "%s", fv_last_error());
                cr_assert_eq(fv_variance_at(&p, &ot, t, &e, Eg, NULL), FV_OK, "%s", fv_last_error());
                expect_close("OT var_theta", a.var_theta, b.var_theta);
                expect_close("OT var_Theta", a.var_Theta, b.var_Theta);
                expect_close("OT loss", a.loss, b.loss);
                expect_close("OT with E g", e.var_total, a.var_total);
                fv_vfield_params(&p, &mk, t, theta, Theta);
                cr_assert_eq(fv_variance_at(&p, &mk, t, &a, NULL, NULL), FV_OK, "%s", fv_last_error());
                cr_assert_eq(fv_variance_at(&p, &custom, t, &b, NULL, NULL), FV_OK, "%s", fv_last_error());
                expect_close("Markov var_theta", a.var_theta, b.var_theta);
                expect_close("Markov var_Theta", a.var_Theta, b.var_Theta);
                expect_close("Markov loss", a.loss, b.loss);
                cr_assert_eq(fv_vfield_params(&p, &ot, 0.0, theta, Theta), FV_OK);
            }
            if (!p.deriv_term) {
                fv_var a, b;
                cr_assert_eq(fv_variance_integrated(&p, &ot, 1e-11, &a, NULL), FV_OK, "%s", fv_last_error());
                cr_assert_eq(fv_variance_integrated(&p, &custom, 1e-11, &b, NULL), FV_OK, "%s", fv_last_error());
                expect_close("integrated OT var_total", a.var_total, b.var_total);
                expect_close("integrated OT var_theta", a.var_theta, b.var_theta);
                expect_close("integrated OT loss", a.loss, b.loss);
            }
            fv_problem_free(&p);
        }
}

/* ------------------------------------------------------------------------------------------------- */
/* Per-sample gradient */

Test(variance, gradient_matches_finite_differences)
{
    enum { D = 4, N = D + D * D };
    fv_rng r = fv_rng_make(3, 3);
    double theta[D], Theta[D * D], x[D], u[D], g[N], l, t = 0.7;
    fv_rng_normal(&r, D, theta);
    fv_rng_normal(&r, D * D, Theta);
    for (int i = 0; i < D * D; i++)
        Theta[i] *= 0.3;
    fv_rng_normal(&r, D, x);
    fv_rng_normal(&r, D, u);
    cr_assert_eq(fv_cfm_grad(D, theta, Theta, x, u, t, g, &l), FV_OK, "%s", fv_last_error());
    for (int k = 0; k < N; k++) {
        double *q = k < D ? theta + k : Theta + (k - D), q0 = *q, h = 1e-5, lp, lm, gd[N];
        *q = q0 + h;
        cr_assert_eq(fv_cfm_grad(D, theta, Theta, x, u, t, gd, &lp), FV_OK);
        *q = q0 - h;
        cr_assert_eq(fv_cfm_grad(D, theta, Theta, x, u, t, gd, &lm), FV_OK);
        *q = q0;
        double fd = (lp - lm) / (2 * h);
        cr_expect(fabs(fd - g[k]) <= 1e-6 * (1 + fabs(g[k])), "%s %d: analytic %.12g, finite difference %.12g",
                  k < D ? "theta" : "Theta", k < D ? k : k - D, g[k], fd);
    }
}

/* ------------------------------------------------------------------------------------------------- */
/* Proposition 1: the rotation field on rotational data without noise has zero loss and zero variance. */

static void zero_for_rotation(fv_problem *p, double deg)
{
    size_t d = p->d;
    fv_rotation_blocks(d, deg, p->R);
    fv_vfield f = {FV_VFIELD_ROTATION, NULL, NULL};
    double *theta = malloc((d + d * d) * sizeof *theta), *wr = malloc(2 * d * sizeof *wr);
    cr_assert_eq(fv_vfield_params(p, &f, 0.0, theta, theta + d), FV_OK);
    cr_assert_eq(fv_linalg_eig(d, theta + d, wr, wr + d), FV_OK);
    for (int k = 0; k <= 20; k++) {
        double t = k / 20.0, gap = 1.0;
        for (size_t i = 0; i < d; i++) /* distance of t to a singular time -1/lambda */
            if (wr[d + i] == 0.0 && wr[i] < 0)
                gap = fmin(gap, fabs(t + 1.0 / wr[i]));
        if (gap < 1e-3)
            continue;
        fv_var v;
        cr_assert_eq(fv_variance_at(p, &f, t, &v, NULL, NULL), FV_OK, "%g deg t = %g: %s", deg, t, fv_last_error());
        cr_expect(fabs(v.var_total) <= 1e-12 && fabs(v.loss) <= 1e-12, "%g deg, t = %g: variance %g, loss %g", deg,
                  t, v.var_total, v.loss);
    }
    free(theta);
    free(wr);
}

Test(variance, rotation_field_zero_variance_proposition1)
{
    fv_problem p;
    ref_problem(&p, FV_COUPLING_ROTATION, 0.0, 0.0);
    fv_rng r = fv_rng_make(13, 0);
    for (int deg = 0; deg <= 180; deg += 15)
        zero_for_rotation(&p, deg);
    zero_for_rotation(&p, 164.0);
    fv_problem_free(&p);
    random_problem(&p, 7, &r, FV_COUPLING_ROTATION, 0.0, 0.0, FV_SCHEDULE_CONSTANT, 0);
    for (int deg = 0; deg <= 180; deg += 30)
        zero_for_rotation(&p, deg);
    fv_problem_free(&p);
}

/* ------------------------------------------------------------------------------------------------- */
/* Divergence */

Test(variance, rotation_180_identity_diverges_at_one_half)
{
    fv_problem p;
    fv_var v;
    fv_mc mc;
    cr_assert_eq(fv_problem_alloc(&p, 2), FV_OK);
    p.coupling = FV_COUPLING_ROTATION;
    p.sigma = 0.05;
    p.R = malloc(4 * sizeof *p.R);
    fv_rotation_blocks(2, 180.0, p.R);
    fv_vfield f = {FV_VFIELD_ROTATION, NULL, NULL};
    cr_expect_eq(fv_variance_integrated(&p, &f, 1e-8, &v, NULL), FV_EDIVERGE);
    cr_log_info("180 deg, M = I: %s", fv_last_error());
    cr_expect(strstr(fv_last_error(), "t = 0.5 ") != NULL, "%s", fv_last_error());
    cr_expect_eq(fv_variance_mc(&p, &f, -1.0, 1000, 1, 1, &mc), FV_EDIVERGE);
    cr_expect_eq(fv_variance_at(&p, &f, 0.5, &v, NULL, NULL), FV_ESINGULAR);
    cr_expect(strstr(fv_last_error(), "t = 0.5") != NULL, "%s", fv_last_error());
    cr_expect_eq(fv_variance_at(&p, &f, 0.4, &v, NULL, NULL), FV_OK, "%s", fv_last_error());
    fv_problem_free(&p);
}

Test(variance, rotation_180_reference_diverges_at_two_times)
{
    fv_problem p;
    fv_var v;
    ref_problem(&p, FV_COUPLING_ROTATION, 180.0, 0.05);
    fv_vfield f = {FV_VFIELD_ROTATION, NULL, NULL};
    cr_expect_eq(fv_variance_integrated(&p, &f, 1e-8, &v, NULL), FV_EDIVERGE);
    cr_log_info("180 deg, reference M: %s", fv_last_error());
    cr_expect(strstr(fv_last_error(), "0.398") && strstr(fv_last_error(), "0.541"), "%s", fv_last_error());
    fv_rotation_blocks(2, 165.0, p.R);
    cr_expect_eq(fv_variance_integrated(&p, &f, 1e-8, &v, NULL), FV_EDIVERGE);
    fv_rotation_blocks(2, 160.0, p.R);
    cr_expect_eq(fv_variance_integrated(&p, &f, 1e-8, &v, NULL), FV_OK, "%s", fv_last_error());
    fv_problem_free(&p);
}

Test(variance, bridge_with_derivative_term_diverges)
{
    fv_problem p;
    fv_var v;
    fv_mc mc;
    ref_problem(&p, FV_COUPLING_OT, 0.0, 0.05);
    p.schedule = FV_SCHEDULE_BRIDGE;
    p.deriv_term = 1;
    fv_vfield f = {FV_VFIELD_OT, NULL, NULL};
    cr_expect_eq(fv_variance_integrated(&p, &f, 1e-8, &v, NULL), FV_EDIVERGE);
    cr_log_info("bridge + f': %s", fv_last_error());
    cr_expect(strstr(fv_last_error(), "bridge") != NULL, "%s", fv_last_error());
    cr_expect_eq(fv_variance_mc(&p, &f, -1.0, 100, 1, 1, &mc), FV_EDIVERGE);
    cr_expect_eq(fv_variance_at(&p, &f, 0.0, &v, NULL, NULL), FV_EDIVERGE);
    cr_expect_eq(fv_variance_at(&p, &f, 0.5, &v, NULL, NULL), FV_OK, "%s", fv_last_error());
    p.deriv_term = 0; /* without the term the bridge integral is finite */
    cr_expect_eq(fv_variance_integrated(&p, &f, 1e-8, &v, NULL), FV_OK, "%s", fv_last_error());
    fv_problem_free(&p);
}

/* ------------------------------------------------------------------------------------------------- */
/* Minibatch and error paths */

Test(variance, minibatch_divides_variances)
{
    fv_var v = {3.0, 9.0, 12.0, 5.0};
    fv_var_minibatch(&v, 64);
    cr_expect(v.var_theta == 3.0 / 64 && v.var_Theta == 9.0 / 64 && v.var_total == 12.0 / 64 && v.loss == 5.0);
    fv_var_minibatch(&v, 1);
    cr_expect(v.var_total == 12.0 / 64);
}

Test(variance, time_outside_unit_interval)
{
    fv_problem p;
    fv_var v;
    fv_mc mc;
    ref_problem(&p, FV_COUPLING_OT, 0.0, 0.1);
    fv_vfield f = {FV_VFIELD_OT, NULL, NULL};
    cr_expect_eq(fv_variance_at(&p, &f, -0.1, &v, NULL, NULL), FV_EINPUT);
    cr_expect(strstr(fv_last_error(), "outside [0, 1]") != NULL, "%s", fv_last_error());
    cr_expect_eq(fv_variance_at(&p, &f, 1.5, &v, NULL, NULL), FV_EINPUT);
    cr_expect_eq(fv_variance_at(&p, &f, NAN, &v, NULL, NULL), FV_EINPUT);
    cr_expect_eq(fv_variance_mc(&p, &f, 1.5, 100, 1, 1, &mc), FV_EINPUT);
    cr_expect_eq(fv_variance_mc(&p, &f, 0.5, 3, 1, 1, &mc), FV_EINPUT);
    cr_expect_eq(fv_variance_integrated(&p, &f, -1.0, &v, NULL), FV_EINPUT);
    fv_problem_free(&p);
}

Test(variance, missing_rotation_rejected)
{
    fv_problem p;
    fv_var v;
    fv_vfield rot = {FV_VFIELD_ROTATION, NULL, NULL}, ot = {FV_VFIELD_OT, NULL, NULL};
    fv_vfield custom = {FV_VFIELD_CUSTOM, NULL, NULL};
    ref_problem(&p, FV_COUPLING_OT, 0.0, 0.0);
    cr_expect_eq(fv_variance_at(&p, &rot, 0.5, &v, NULL, NULL), FV_EINPUT); /* rotation field, no R */
    cr_expect(strstr(fv_last_error(), "rotation") != NULL, "%s", fv_last_error());
    cr_expect_eq(fv_variance_at(&p, &custom, 0.5, &v, NULL, NULL), FV_EINPUT);
    p.coupling = FV_COUPLING_ROTATION; /* rotational coupling, no R */
    cr_expect_eq(fv_variance_at(&p, &ot, 0.5, &v, NULL, NULL), FV_EINPUT);
    fv_problem_free(&p);
}

