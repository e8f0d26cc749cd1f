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
