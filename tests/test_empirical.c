/* test_empirical.c: the empirical minimizer v* of docs/THEORY.md section 7 (gaussian/empirical.h): against
 * a direct evaluation of the section's formulas, its limits (one data point, many Gaussian samples), the
 * orthogonality that makes it the minimizer, the loss floor's limits and the Pythagoras decomposition. */
#include "gaussian/empirical.h"

#include "core/error.h"
#include "core/linalg.h"
#include "gaussian/field.h"
#include "helpers.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A d-dimensional problem with a random SPD covariance at the Gaussian end of `dir` (identity when
 * general is 0), a random mean there, and the noise given. */
static void make_problem(fv_problem *p, size_t d, fv_emp_direction dir, int general, double sigma, fv_schedule s,
                         int deriv, uint64_t seed)
{
    cr_assert_eq(fv_problem_alloc(p, d), FV_OK, "problem allocates");
    fv_rng r = fv_rng_make(seed, 7);
    double *m = dir == FV_EMP_FORWARD ? p->m0 : p->m1, *S = dir == FV_EMP_FORWARD ? p->S0 : p->S1;
    fv_rng_normal(&r, d, m);
    if (general)
        fv_random_spd(d, 0.3, &r, S);
    p->sigma = sigma;
    p->schedule = s;
    p->deriv_term = deriv;
    p->coupling = FV_COUPLING_INDEPENDENT;
    cr_assert_eq(fv_problem_validate(p), FV_OK, "test problem validates: %s", fv_last_error());
}

/* n x d data: standard normals times scale. */
static double *make_data(size_t n, size_t d, double scale, uint64_t seed)
{
    double *Y = malloc(n * d * sizeof *Y);
    fv_rng r = fv_rng_make(seed, 11);
    fv_rng_normal(&r, n * d, Y);
    for (size_t i = 0; i < n * d; i++)
        Y[i] *= scale;
    return Y;
}

/* The section's formula evaluated directly at one point: C_t built and solved per data point. */
static void direct_vstar(const fv_problem *p, fv_emp_direction dir, size_t n, const double *Y, double t,
                         const double *x, double *v)
{
    size_t d = p->d;
    int fwd = dir == FV_EMP_FORWARD;
    const double *m = fwd ? p->m0 : p->m1, *S = fwd ? p->S0 : p->S1;
    double f, fp, g = fwd ? 1 - t : t, alpha = fwd ? t : 1 - t, o = fwd ? 1 - t : t;
    fv_noise(p->schedule, p->sigma, t, &f, &fp);
    double ffp = p->deriv_term ? f * fp : 0.0;
    double *C = malloc(d * d * sizeof *C), *r = malloc(n * d * sizeof *r), *Cr = malloc(n * d * sizeof *Cr),
           *lw = malloc(n * sizeof *lw), *rt = malloc(d * n * sizeof *rt);
    for (size_t i = 0; i < d * d; i++)
        C[i] = g * g * S[i] + (i % (d + 1) == 0 ? f * f : 0.0);
    for (size_t j = 0; j < n; j++)
        for (size_t k = 0; k < d; k++)
            r[j * d + k] = x[k] - o * m[k] - alpha * Y[j * d + k];
    fv_mat_transpose(n, d, r, rt);
    cr_assert_eq(fv_linalg_solve(d, C, n, rt), FV_OK, "direct: C_t solves");
    fv_mat_transpose(d, n, rt, Cr);
    double mx = -INFINITY, sum = 0;
    for (size_t j = 0; j < n; j++) {
        double q = 0;
        for (size_t k = 0; k < d; k++)
            q += r[j * d + k] * Cr[j * d + k];
        lw[j] = -q / 2;
        mx = fmax(mx, lw[j]);
    }
    for (size_t j = 0; j < n; j++)
        sum += exp(lw[j] - mx);
    memset(v, 0, d * sizeof *v);
    for (size_t j = 0; j < n; j++) {
        double w = exp(lw[j] - mx) / sum;
        for (size_t k = 0; k < d; k++) {
            double SCr = 0;
            for (size_t l = 0; l < d; l++)
                SCr += S[k * d + l] * Cr[j * d + l];
            double br = fwd ? Y[j * d + k] - m[k] - g * SCr : m[k] - Y[j * d + k] + g * SCr;
            v[k] += w * (br + ffp * Cr[j * d + k]);
        }
    }
    free(C);
    free(r);
    free(Cr);
    free(lw);
    free(rt);
}

/* The engine against direct_vstar at npts random points, the largest difference relative to the
 * field's scale below tol. */
static void check_direct(fv_emp_direction dir, int general, double sigma, fv_schedule s, int deriv, double t,
                         int use_f32, size_t chunk)
{
    enum { D = 4, N = 300, NP = 37 };
    fv_problem p;
    make_problem(&p, D, dir, general, sigma, s, deriv, 3);
    double *Y = make_data(N, D, 1.5, 5), *X = make_data(NP, D, 1.0, 6), V[NP * D], R[D];
    float *Yf = malloc(N * D * sizeof *Yf);
    for (size_t i = 0; i < N * D; i++) {
        Yf[i] = (float)Y[i];
        if (use_f32)
            Y[i] = Yf[i];
    }
    fv_empirical e;
    fv_empirical_work w;
    int st = use_f32 ? fv_empirical_build_f32(&e, &p, dir, N, Yf) : fv_empirical_build(&e, &p, dir, N, Y);
    cr_assert_eq(st, FV_OK, "engine builds: %s", fv_last_error());
    cr_assert_eq(fv_empirical_work_alloc(&w, &e, chunk), FV_OK, "workspace allocates");
    cr_assert_eq(fv_empirical_eval(&e, t, NP, X, V, &w), FV_OK, "v* evaluates at t = %g: %s", t, fv_last_error());
    double err = 0, scale = 0;
    for (size_t i = 0; i < NP; i++) {
        direct_vstar(&p, dir, N, Y, t, X + i * D, R);
        for (size_t k = 0; k < D; k++) {
            err = fmax(err, fabs(V[i * D + k] - R[k]));
            scale = fmax(scale, fabs(R[k]));
        }
    }
    cr_expect_leq(err, 1e-10 * (1 + scale),
                  "engine = direct formula (%s, general S %d, sigma %g, deriv %d, t %g, f32 %d, chunk %zu): max diff %g, "
                  "scale %g",
                  fv_emp_direction_name(dir), general, sigma, deriv, t, use_f32, chunk, err, scale);
    fv_empirical_work_free(&w);
    fv_empirical_free(&e);
    fv_problem_free(&p);
    free(Y);
    free(X);
    free(Yf);
}

Test(empirical, matches_the_direct_formula_forward_and_backward)
{
    check_direct(FV_EMP_FORWARD, 0, 0.0, FV_SCHEDULE_CONSTANT, 0, 0.4, 0, 0);
    check_direct(FV_EMP_FORWARD, 1, 0.0, FV_SCHEDULE_CONSTANT, 0, 0.7, 0, 0);
    check_direct(FV_EMP_FORWARD, 1, 0.3, FV_SCHEDULE_CONSTANT, 0, 1.0, 0, 5);
    check_direct(FV_EMP_FORWARD, 1, 0.5, FV_SCHEDULE_BRIDGE, 1, 0.3, 0, 16);
    check_direct(FV_EMP_FORWARD, 0, 0.2, FV_SCHEDULE_CONSTANT, 0, 0.95, 1, 0);
    check_direct(FV_EMP_BACKWARD, 0, 0.0, FV_SCHEDULE_CONSTANT, 0, 0.6, 0, 0);
    check_direct(FV_EMP_BACKWARD, 1, 0.0, FV_SCHEDULE_CONSTANT, 0, 0.2, 0, 3);
    check_direct(FV_EMP_BACKWARD, 1, 0.4, FV_SCHEDULE_BRIDGE, 1, 0.8, 1, 0);
    check_direct(FV_EMP_BACKWARD, 1, 0.1, FV_SCHEDULE_CONSTANT, 0, 0.0, 0, 0);
    /* chunks of 2^16 points leave room for blocks of only 16 data rows: 19 blocks, the online softmax */
    check_direct(FV_EMP_FORWARD, 0, 0.0, FV_SCHEDULE_CONSTANT, 0, 0.9, 1, (size_t)1 << 16);
    check_direct(FV_EMP_BACKWARD, 1, 0.05, FV_SCHEDULE_CONSTANT, 0, 0.5, 0, (size_t)1 << 16);
}

Test(empirical, one_data_point_gives_the_straight_line_to_it)
{
    enum { D = 3 };
    fv_problem p;
    make_problem(&p, D, FV_EMP_FORWARD, 0, 0.0, FV_SCHEDULE_CONSTANT, 0, 1);
    double y[D] = {2.0, -1.0, 0.5}, x0[D] = {0.3, 0.1, -0.7}, x[D], v[D];
    fv_empirical e;
    fv_empirical_work w;
    cr_assert_eq(fv_empirical_build(&e, &p, FV_EMP_FORWARD, 1, y), FV_OK, "engine builds");
    cr_assert_eq(fv_empirical_work_alloc(&w, &e, 0), FV_OK, "workspace allocates");
    for (double t = 0.0; t < 0.99; t += 0.245) {
        for (size_t k = 0; k < D; k++)
            x[k] = (1 - t) * x0[k] + t * y[k];
        cr_assert_eq(fv_empirical_eval(&e, t, 1, x, v, &w), FV_OK, "v* at t = %g", t);
        for (size_t k = 0; k < D; k++)
            cr_expect(fabs(v[k] - (y[k] - x0[k])) < 1e-12,
                      "N = 1: v*(x_t, t) = y - x0 on the line (t %g, coordinate %zu: %g vs %g)", t, k, v[k],
                      y[k] - x0[k]);
    }
    fv_ode_opts o = fv_ode_defaults();
    o.steps = 10;
    memcpy(x, x0, sizeof x);
    cr_assert_eq(fv_empirical_transport(&e, 1, x, &o, &w), FV_OK, "transport: %s", fv_last_error());
    for (size_t k = 0; k < D; k++)
        cr_expect(fabs(x[k] - y[k]) < 1e-12, "N = 1: the flow lands on y (coordinate %zu: %g vs %g)", k, x[k], y[k]);
    fv_empirical_work_free(&w);
    fv_empirical_free(&e);
    fv_problem_free(&p);
}

Test(empirical, weights_stay_finite_for_far_away_points)
{
    enum { D = 2, N = 50 };
    fv_problem p;
    make_problem(&p, D, FV_EMP_FORWARD, 0, 0.0, FV_SCHEDULE_CONSTANT, 0, 2);
    double *Y = make_data(N, D, 1.0, 9), X[3 * D] = {1e6, -1e6, 3e4, 2e4, -1e8, 1e3}, V[3 * D];
    fv_empirical e;
    fv_empirical_work w;
    cr_assert_eq(fv_empirical_build(&e, &p, FV_EMP_FORWARD, N, Y), FV_OK, "engine builds");
    cr_assert_eq(fv_empirical_work_alloc(&w, &e, 2), FV_OK, "workspace allocates");
    double ts[] = {0.5, 0.999, 1 - 1e-9};
    for (size_t k = 0; k < 3; k++) {
        cr_assert_eq(fv_empirical_eval(&e, ts[k], 3, X, V, &w), FV_OK, "v* at far points, t = %g", ts[k]);
        for (size_t i = 0; i < 3 * D; i++)
            cr_expect(isfinite(V[i]), "v* is finite at a far point (t %g, entry %zu: %g)", ts[k], i, V[i]);
    }
    fv_empirical_work_free(&w);
    fv_empirical_free(&e);
    fv_problem_free(&p);
    free(Y);
}

/* fv_empirical_eval refuses t, FV_ESINGULAR, with a message naming it. */
static void expect_singular(const fv_problem *p, fv_emp_direction dir, double t, const char *name)
{
    double y[2] = {1, 2}, x[2] = {0, 0}, v[2] = {7, 7};
    fv_empirical e;
    fv_empirical_work w;
    cr_assert_eq(fv_empirical_build(&e, p, dir, 1, y), FV_OK, "engine builds");
    cr_assert_eq(fv_empirical_work_alloc(&w, &e, 0), FV_OK, "workspace allocates");
    cr_expect_eq(fv_empirical_eval(&e, t, 1, x, v, &w), FV_ESINGULAR, "%s: t = %g is refused as singular", name, t);
    cr_expect(strstr(fv_last_error(), name) != NULL, "%s: the message names the time: %s", name, fv_last_error());
    cr_expect(v[0] == 7 && v[1] == 7, "%s: out is untouched", name);
    fv_empirical_work_free(&w);
    fv_empirical_free(&e);
}

Test(empirical, singular_times_are_refused_naming_t)
{
    fv_problem p;
    make_problem(&p, 2, FV_EMP_FORWARD, 0, 0.0, FV_SCHEDULE_CONSTANT, 0, 1);
    expect_singular(&p, FV_EMP_FORWARD, 1.0, "t = 1");
    expect_singular(&p, FV_EMP_BACKWARD, 0.0, "t = 0");
    p.sigma = 0.2;
    p.schedule = FV_SCHEDULE_BRIDGE;
    expect_singular(&p, FV_EMP_FORWARD, 1.0, "t = 1");
    fv_problem_free(&p);
}

Test(empirical, bad_data_is_refused)
{
    fv_problem p;
    fv_empirical e;
    make_problem(&p, 2, FV_EMP_FORWARD, 0, 0.0, FV_SCHEDULE_CONSTANT, 0, 1);
    double y[4] = {1, 2, NAN, 0};
    cr_expect_eq(fv_empirical_build(&e, &p, FV_EMP_FORWARD, 0, y), FV_EINPUT, "n = 0 is refused");
    cr_expect_eq(fv_empirical_build(&e, &p, FV_EMP_FORWARD, 2, y), FV_EINPUT, "a NaN datum is refused");
    cr_expect(strstr(fv_last_error(), "data point 2") != NULL, "the message names the point: %s", fv_last_error());
    fv_problem_free(&p);
}

/* Mean and standard error of n numbers. */
static void mean_se(size_t n, const double *a, double *mean, double *se)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i];
    *mean = s / (double)n;
    for (size_t i = 0; i < n; i++)
        s2 += (a[i] - *mean) * (a[i] - *mean);
    *se = sqrt(s2 / (double)(n - 1) / (double)n);
}

/* Mean over n points X_t of the interpolant of |v* - v_markov|^2 at t, for N Gaussian samples of
 * N(mu, M) as the data (standard source, noise sigma). */
static double markov_error(size_t N, double t, double sigma)
{
    enum { D = 2, NP = 400 };
    fv_problem p;
    cr_assert_eq(fv_problem_alloc(&p, D), FV_OK, "problem allocates");
    double mu[D] = {1.0, -0.5}, M[D * D] = {2.0, 0.6, 0.6, 1.0};
    memcpy(p.m1, mu, sizeof mu);
    memcpy(p.S1, M, sizeof M);
    p.sigma = sigma;
    p.coupling = FV_COUPLING_INDEPENDENT;
    cr_assert_eq(fv_problem_validate(&p), FV_OK, "problem validates");
    double *Y = malloc(N * D * sizeof *Y), X[NP * D], V[NP * D], VM[NP * D];
    fv_rng r = fv_rng_make(42, N);
    cr_assert_eq(fv_gaussian_sample(D, mu, M, N, &r, Y), FV_OK, "data sampled");
    fv_empirical e;
    fv_empirical_work w;
    fv_field f;
    fv_field_work fw;
    cr_assert_eq(fv_empirical_build(&e, &p, FV_EMP_FORWARD, N, Y), FV_OK, "engine builds");
    cr_assert_eq(fv_empirical_work_alloc(&w, &e, 0), FV_OK, "workspace allocates");
    cr_assert_eq(fv_field_build(&f, &p, FV_FIELD_MARKOV), FV_OK, "Markov field builds");
    cr_assert_eq(fv_field_work_alloc(&fw, D, NP), FV_OK, "field workspace allocates");
    fv_rng rx = fv_rng_make(43, 0); /* the same points for every N */
    cr_assert_eq(fv_gaussian_sample(D, mu, M, NP, &rx, X), FV_OK, "points sampled");
    double *Z = malloc(2 * NP * D * sizeof *Z);
    fv_rng_normal(&rx, 2 * NP * D, Z);
    for (size_t i = 0; i < NP * D; i++) /* X_t of the Gaussian problem: (1-t) X0 + t X1 + sigma Z */
        X[i] = (1 - t) * Z[i] + t * X[i] + sigma * Z[NP * D + i];
    cr_assert_eq(fv_empirical_eval(&e, t, NP, X, V, &w), FV_OK, "v* evaluates");
    cr_assert_eq(fv_field_eval(&f, t, NP, X, VM, &fw), FV_OK, "Markov field evaluates");
    double err = 0;
    for (size_t i = 0; i < NP * D; i++)
        err += (V[i] - VM[i]) * (V[i] - VM[i]) / NP;
    free(Y);
    free(Z);
    fv_field_work_free(&fw);
    fv_field_free(&f);
    fv_empirical_work_free(&w);
    fv_empirical_free(&e);
    fv_problem_free(&p);
    return err;
}

Test(empirical, tends_to_the_markov_field_as_n_grows)
{
    double ts[] = {0.3, 0.7};
    for (size_t k = 0; k < 2; k++) {
        double e1 = markov_error(30, ts[k], 0.1), e2 = markov_error(300, ts[k], 0.1),
               e3 = markov_error(3000, ts[k], 0.1);
        cr_expect_lt(e2, e1, "t = %g: error at N = 300 (%g) below N = 30 (%g)", ts[k], e2, e1);
        cr_expect_lt(e3, e2, "t = %g: error at N = 3000 (%g) below N = 300 (%g)", ts[k], e3, e2);
        cr_expect_lt(e3, 0.2 * e1, "t = %g: error at N = 3000 (%g) below a fifth of N = 30's (%g)", ts[k], e3, e1);
    }
}

/* Rows of the interpolant at t with v* at them: X, U, V (n x d each). */
static void rows_with_vstar(const fv_empirical *e, double t, size_t n, uint64_t seed, double *X, double *U,
                            double *V)
{
    fv_empirical_work w;
    fv_rng r = fv_rng_make(seed, 3);
    cr_assert_eq(fv_empirical_draw(e, t, n, &r, X, U), FV_OK, "rows drawn at t = %g: %s", t, fv_last_error());
    cr_assert_eq(fv_empirical_work_alloc(&w, e, 0), FV_OK, "workspace allocates");
    cr_assert_eq(fv_empirical_eval(e, t, n, X, V, &w), FV_OK, "v* at the rows, t = %g", t);
    fv_empirical_work_free(&w);
}

/* E[(u - v*)_k phi(X_t)] over n rows, for the test functions phi below, within 4 standard errors of 0;
 * and v* + 0.05 (not the minimizer) caught by phi = 1. */
static void check_orthogonal(fv_emp_direction dir, int general, double sigma, fv_schedule s, int deriv, double t)
{
    enum { D = 3, N = 40, NR = 20000, NPHI = 5 };
    fv_problem p;
    make_problem(&p, D, dir, general, sigma, s, deriv, 17);
    double *Y = make_data(N, D, 1.2, 19), *X = malloc(3 * NR * D * sizeof *X), *U = X + NR * D, *V = U + NR * D,
           *a = malloc(NR * sizeof *a), *b = malloc(NR * sizeof *b);
    fv_empirical e;
    cr_assert_eq(fv_empirical_build(&e, &p, dir, N, Y), FV_OK, "engine builds");
    rows_with_vstar(&e, t, NR, 23, X, U, V);
    for (int ph = 0; ph < NPHI; ph++)
        for (size_t k = 0; k < D; k++) {
            for (size_t i = 0; i < NR; i++) {
                const double *x = X + i * D;
                double phi = ph == 0 ? 1.0 : ph == 1 ? x[0] : ph == 2 ? x[1] * x[1] : ph == 3 ? sin(2 * x[2])
                                                                                         : tanh(x[0] * x[1]);
                a[i] = (U[i * D + k] - V[i * D + k]) * phi;
                b[i] = (U[i * D + k] - V[i * D + k] - 0.05) * phi;
            }
            double m, se;
            mean_se(NR, a, &m, &se);
            cr_expect_leq(fabs(m), 4 * se,
                          "orthogonality (%s, general %d, sigma %g, deriv %d, t %g): phi %d, coordinate %zu: %g +- %g",
                          fv_emp_direction_name(dir), general, sigma, deriv, t, ph, k, m, se);
            if (ph == 0) {
                mean_se(NR, b, &m, &se);
                cr_expect_gt(fabs(m), 4 * se, "a shifted field is caught (coordinate %zu): %g +- %g", k, m, se);
            }
        }
    fv_empirical_free(&e);
    fv_problem_free(&p);
    free(Y);
    free(X);
    free(a);
    free(b);
}

Test(empirical, residual_is_orthogonal_to_functions_of_x)
{
    check_orthogonal(FV_EMP_FORWARD, 1, 0.0, FV_SCHEDULE_CONSTANT, 0, 0.5);
    check_orthogonal(FV_EMP_FORWARD, 1, 0.3, FV_SCHEDULE_CONSTANT, 0, 0.85);
    check_orthogonal(FV_EMP_FORWARD, 0, 0.5, FV_SCHEDULE_BRIDGE, 1, 0.4);
    check_orthogonal(FV_EMP_BACKWARD, 1, 0.0, FV_SCHEDULE_CONSTANT, 0, 0.3);
    check_orthogonal(FV_EMP_BACKWARD, 1, 0.2, FV_SCHEDULE_BRIDGE, 1, 0.6);
}

/* The floor at t by fv_empirical_floor with nmc rows. */
static void floor_at(const fv_empirical *e, double t, size_t nmc, double *mean, double *se)
{
    fv_empirical_work w;
    fv_rng r = fv_rng_make(77, 1);
    cr_assert_eq(fv_empirical_work_alloc(&w, e, 0), FV_OK, "workspace allocates");
    cr_assert_eq(fv_empirical_floor(e, t, nmc, &r, &w, mean, se), FV_OK, "floor at t = %g: %s", t, fv_last_error());
    fv_empirical_work_free(&w);
}

Test(empirical, floor_limits_without_noise)
{
    enum { D = 2, N = 20 };
    fv_problem p;
    make_problem(&p, D, FV_EMP_FORWARD, 0, 0.0, FV_SCHEDULE_CONSTANT, 0, 4);
    memset(p.m0, 0, D * sizeof *p.m0); /* f = 0, S0 = I, any m0: the section's statement */
    double *Y = make_data(N, D, 1.5, 29), mean[D] = {0}, trcov = 0, m, se;
    for (size_t j = 0; j < N * D; j++)
        mean[j % D] += Y[j] / N;
    for (size_t j = 0; j < N * D; j++)
        trcov += (Y[j] - mean[j % D]) * (Y[j] - mean[j % D]) / N; /* population covariance: 1/N */
    fv_empirical e;
    cr_assert_eq(fv_empirical_build(&e, &p, FV_EMP_FORWARD, N, Y), FV_OK, "engine builds");
    floor_at(&e, 0.0, 20000, &m, &se);
    cr_expect_leq(fabs(m - trcov), 4 * se, "floor(0) = tr Cov(Y) = %g: %g +- %g", trcov, m, se);
    cr_expect_lt(se, 0.02 * trcov, "floor(0)'s standard error is small: %g", se);
    floor_at(&e, 0.999, 20000, &m, &se);
    cr_expect_lt(m, 1e-6 * trcov, "floor(t -> 1) -> 0: %g at t = 0.999", m);
    fv_empirical_free(&e);
    fv_problem_free(&p);
    free(Y);
}

/* With data far apart J is known from X_t, so L*(t) = tr Cov[Gaussian end | x, j] = d sigma^2 / (g^2 +
 * sigma^2) for S = I and constant noise, g = 1 - t forward and t backward: not 0 at t = 1 forward. */
static void check_floor_separated(fv_emp_direction dir, double t)
{
    enum { D = 2, N = 9 };
    double sigma = 0.1, Y[N * D], m, se;
    fv_problem p;
    make_problem(&p, D, dir, 0, sigma, FV_SCHEDULE_CONSTANT, 0, 4);
    for (size_t j = 0; j < N; j++) { /* a 3 x 3 grid of spacing 50 */
        Y[j * D] = 50.0 * (double)(j % 3);
        Y[j * D + 1] = 50.0 * (double)(j / 3);
    }
    fv_empirical e;
    cr_assert_eq(fv_empirical_build(&e, &p, dir, N, Y), FV_OK, "engine builds");
    floor_at(&e, t, 20000, &m, &se);
    double g = dir == FV_EMP_FORWARD ? 1 - t : t, want = D * sigma * sigma / (g * g + sigma * sigma);
    cr_expect_leq(fabs(m - want), 4 * se, "%s, sigma %g: floor(%g) = d sigma^2 / (g^2 + sigma^2) = %g: %g +- %g",
                  fv_emp_direction_name(dir), sigma, t, want, m, se);
    cr_expect_lt(se, 0.05 * want, "its standard error is small: %g", se);
    fv_empirical_free(&e);
    fv_problem_free(&p);
}

Test(empirical, floor_with_noise_matches_the_formula)
{
    check_floor_separated(FV_EMP_FORWARD, 1.0);
    check_floor_separated(FV_EMP_FORWARD, 0.9);
    check_floor_separated(FV_EMP_BACKWARD, 0.0);
    check_floor_separated(FV_EMP_BACKWARD, 0.15);
}

/* E|u - v|^2 - E|v - v*|^2 on the same rows against the floor on independent rows, within 4 standard
 * errors, for v = 0 and v = the Markov field of the data's Gaussian fit (here N(0, 1.44 I)). */
static void check_pythagoras(fv_emp_direction dir, int general, double sigma, double t)
{
    enum { D = 2, N = 25, NR = 20000 };
    fv_problem p;
    make_problem(&p, D, dir, general, sigma, FV_SCHEDULE_CONSTANT, 0, 31);
    double *Y = make_data(N, D, 1.2, 37), *X = malloc(4 * NR * D * sizeof *X), *U = X + NR * D, *V = U + NR * D,
           *F = V + NR * D, *a = malloc(NR * sizeof *a), lm, lse, fm, fse;
    fv_empirical e;
    cr_assert_eq(fv_empirical_build(&e, &p, dir, N, Y), FV_OK, "engine builds");
    rows_with_vstar(&e, t, NR, 41, X, U, V);
    floor_at(&e, t, NR, &fm, &fse);
    fv_problem q;
    fv_field f;
    fv_field_work fw;
    cr_assert_eq(fv_problem_alloc(&q, D), FV_OK, "fit problem allocates");
    double *gm = dir == FV_EMP_FORWARD ? p.m0 : p.m1, *gS = dir == FV_EMP_FORWARD ? p.S0 : p.S1;
    memcpy(dir == FV_EMP_FORWARD ? q.m0 : q.m1, gm, D * sizeof *gm);
    memcpy(dir == FV_EMP_FORWARD ? q.S0 : q.S1, gS, D * D * sizeof *gS);
    double *dS = dir == FV_EMP_FORWARD ? q.S1 : q.S0;
    dS[0] = dS[3] = 1.44;
    q.sigma = sigma;
    cr_assert_eq(fv_field_build(&f, &q, FV_FIELD_MARKOV), FV_OK, "Markov field builds");
    cr_assert_eq(fv_field_work_alloc(&fw, D, NR), FV_OK, "field workspace");
    cr_assert_eq(fv_field_eval(&f, t, NR, X, F, &fw), FV_OK, "Markov field evaluates");
    for (int which = 0; which < 2; which++) {
        for (size_t i = 0; i < NR; i++) {
            double l = 0, x = 0;
            for (size_t k = 0; k < D; k++) {
                double v = which ? F[i * D + k] : 0.0;
                l += (U[i * D + k] - v) * (U[i * D + k] - v);
                x += (v - V[i * D + k]) * (v - V[i * D + k]);
            }
            a[i] = l - x;
        }
        mean_se(NR, a, &lm, &lse);
        cr_expect_leq(fabs(lm - fm), 4 * sqrt(lse * lse + fse * fse),
                      "Pythagoras (%s, general %d, sigma %g, t %g, v = %s): E|u-v|^2 - E|v-v*|^2 = %g +- %g, floor %g "
                      "+- %g",
                      fv_emp_direction_name(dir), general, sigma, t, which ? "Markov" : "0", lm, lse, fm, fse);
    }
    fv_field_work_free(&fw);
    fv_field_free(&f);
    fv_problem_free(&q);
    fv_empirical_free(&e);
    fv_problem_free(&p);
    free(Y);
    free(X);
    free(a);
}

Test(empirical, loss_is_floor_plus_excess)
{
    check_pythagoras(FV_EMP_FORWARD, 0, 0.0, 0.5);
    check_pythagoras(FV_EMP_FORWARD, 1, 0.2, 0.8);
    check_pythagoras(FV_EMP_BACKWARD, 1, 0.1, 0.4);
}

Test(empirical, excess_is_the_mean_squared_distance_to_vstar)
{
    enum { D = 2, N = 10, NR = 500 };
    fv_problem p;
    make_problem(&p, D, FV_EMP_FORWARD, 1, 0.1, FV_SCHEDULE_CONSTANT, 0, 5);
    double *Y = make_data(N, D, 1.0, 3), *X = malloc(4 * NR * D * sizeof *X), *U = X + NR * D, *V = U + NR * D,
           *W = V + NR * D, *a = malloc(NR * sizeof *a), m, se, em, ese;
    fv_empirical e;
    fv_empirical_work w;
    cr_assert_eq(fv_empirical_build(&e, &p, FV_EMP_FORWARD, N, Y), FV_OK, "engine builds");
    rows_with_vstar(&e, 0.6, NR, 2, X, U, V);
    for (size_t i = 0; i < NR; i++) {
        a[i] = 0;
        for (size_t k = 0; k < D; k++) {
            W[i * D + k] = V[i * D + k] + sin((double)(i + k)); /* a field off v* by a known amount */
            a[i] += sin((double)(i + k)) * sin((double)(i + k));
        }
    }
    mean_se(NR, a, &m, &se);
    cr_assert_eq(fv_empirical_work_alloc(&w, &e, 64), FV_OK, "workspace allocates");
    cr_assert_eq(fv_empirical_excess(&e, 0.6, NR, X, W, &w, &em, &ese), FV_OK, "excess computes");
    cr_expect(fabs(em - m) < 1e-10 && fabs(ese - se) < 1e-10, "excess = mean |W - v*|^2 (%g +- %g vs %g +- %g)", em,
              ese, m, se);
    fv_empirical_work_free(&w);
    fv_empirical_free(&e);
    fv_problem_free(&p);
    free(Y);
    free(X);
    free(a);
}

/* Each of n end points is one of the N data points, to tol. */
static void expect_on_data(size_t n, size_t N, size_t d, const double *X, const double *Y, double tol,
                           const char *label)
{
    for (size_t i = 0; i < n; i++) {
        double best = INFINITY;
        for (size_t j = 0; j < N; j++) {
            double q = 0;
            for (size_t k = 0; k < d; k++)
                q = fmax(q, fabs(X[i * d + k] - Y[j * d + k]));
            best = fmin(best, q);
        }
        cr_expect_lt(best, tol, "%s: end point %zu lands on a data point (distance %g)", label, i, best);
    }
}

Test(empirical, flow_lands_on_the_data_without_noise)
{
    enum { D = 3, N = 12, NP = 40 };
    fv_problem p;
    make_problem(&p, D, FV_EMP_FORWARD, 1, 0.0, FV_SCHEDULE_CONSTANT, 0, 8);
    double *Y = make_data(N, D, 2.0, 4), *X = make_data(NP, D, 1.0, 10), *X2 = malloc(NP * D * sizeof *X2);
    memcpy(X2, X, NP * D * sizeof *X);
    fv_empirical e;
    fv_empirical_work w;
    cr_assert_eq(fv_empirical_build(&e, &p, FV_EMP_FORWARD, N, Y), FV_OK, "engine builds");
    cr_assert_eq(fv_empirical_work_alloc(&w, &e, 0), FV_OK, "workspace allocates");
    fv_ode_opts o = fv_ode_defaults();
    cr_assert_eq(fv_empirical_transport(&e, NP, X, &o, &w), FV_OK, "rk4 transport: %s", fv_last_error());
    expect_on_data(NP, N, D, X, Y, 1e-8, "rk4, 100 steps");
    o.solver = FV_ODE_RK45;
    cr_assert_eq(fv_empirical_transport(&e, NP, X2, &o, &w), FV_OK, "rk45 transport: %s", fv_last_error());
    expect_on_data(NP, N, D, X2, Y, 1e-8, "rk45");
    fv_empirical_work_free(&w);
    fv_empirical_free(&e);
    fv_problem_free(&p);
    free(Y);
    free(X);
    free(X2);
}

Test(empirical, backward_flow_without_noise_is_refused_at_t0)
{
    fv_problem p;
    make_problem(&p, 2, FV_EMP_BACKWARD, 0, 0.0, FV_SCHEDULE_CONSTANT, 0, 1);
    double y[4] = {1, 2, 3, 4}, x[2] = {1, 2};
    fv_empirical e;
    fv_empirical_work w;
    fv_ode_opts o = fv_ode_defaults();
    cr_assert_eq(fv_empirical_build(&e, &p, FV_EMP_BACKWARD, 2, y), FV_OK, "engine builds");
    cr_assert_eq(fv_empirical_work_alloc(&w, &e, 0), FV_OK, "workspace allocates");
    cr_expect_eq(fv_empirical_transport(&e, 1, x, &o, &w), FV_ESINGULAR, "backward sigma = 0 flow refused");
    cr_expect(strstr(fv_last_error(), "t = 0") != NULL, "the message names t = 0: %s", fv_last_error());
    fv_empirical_work_free(&w);
    fv_empirical_free(&e);
    fv_problem_free(&p);
}
