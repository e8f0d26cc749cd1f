/* test_field.c: the closed-form engine (gaussian/): identities of the fields, transport of the
 * source to the target (Monte Carlo and exact flow maps), W2, singular times. */
#include <criterion/criterion.h>

#include "core/error.h"
#include "core/linalg.h"
#include "gaussian/field.h"
#include "gaussian/ot.h"
#include "gaussian/transport.h"
#include "helpers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A random problem: mean ~ N(0, 1), covariance SPD with eigenvalues in about [0.5, 2.5]. */
static void random_problem(fv_problem *p, size_t d, uint64_t seed)
{
    fv_rng r = fv_rng_make(seed, 0);
    fv_problem_alloc(p, d);
    fv_rng_normal(&r, d, p->m1);
    double *A = malloc(d * d * sizeof *A);
    fv_random_spd(d, 0.5, &r, A);
    for (size_t i = 0; i < d * d; i++) /* shrink the spread so rotations stay non-singular */
        p->S1[i] = 0.5 * A[i] + (i % (d + 1) == 0 ? 0.25 : 0.0);
    free(A);
}

static void set_rotation(fv_problem *p, double deg)
{
    p->coupling = FV_COUPLING_ROTATION;
    p->R = malloc(p->d * p->d * sizeof *p->R);
    fv_rotation_blocks(p->d, deg, p->R);
}

Test(field, ot_at_time_zero_is_mu_plus_root_minus_identity)
{
    fv_problem p;
    random_problem(&p, 6, 1);
    fv_field f;
    fv_field_work w;
    size_t n = 5, d = p.d;
    double X[30], V[30], root[36], want[30];
    fv_rng r = fv_rng_make(1, 1);
    fv_rng_normal(&r, n * d, X);
    cr_assert_eq(fv_field_build(&f, &p, FV_FIELD_OT), FV_OK);
    cr_assert_eq(fv_field_work_alloc(&w, d, n), FV_OK);
    cr_assert_eq(fv_field_eval(&f, 0.0, n, X, V, &w), FV_OK);
    fv_linalg_sqrtm_spd(d, p.S1, root);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++) {
            double s = p.m1[j] - X[i * d + j];
            for (size_t k = 0; k < d; k++)
                s += root[j * d + k] * X[i * d + k];
            want[i * d + j] = s;
        }
    cr_assert_lt(fv_max_abs_diff(n * d, V, want), 1e-12);
    fv_field_work_free(&w);
    fv_field_free(&f);
    fv_problem_free(&p);
}

Test(field, ot_eigen_form_equals_rotation_form_at_zero_angle)
{
    /* the OT field (one eigendecomposition) and the general LU path with R = I are the same field */
    fv_problem p;
    random_problem(&p, 5, 2);
    set_rotation(&p, 0.0);
    fv_field fo, fr;
    fv_field_work w;
    double X[50], Vo[50], Vr[50];
    fv_rng r = fv_rng_make(2, 1);
    fv_rng_normal(&r, 50, X);
    cr_assert_eq(fv_field_build(&fo, &p, FV_FIELD_OT), FV_OK);
    cr_assert_eq(fv_field_build(&fr, &p, FV_FIELD_ROTATION), FV_OK);
    fv_field_work_alloc(&w, 5, 10);
    const double ts[] = {0.0, 0.13, 0.5, 0.77, 1.0};
    for (int k = 0; k < 5; k++) {
        cr_assert_eq(fv_field_eval(&fo, ts[k], 10, X, Vo, &w), FV_OK);
        cr_assert_eq(fv_field_eval(&fr, ts[k], 10, X, Vr, &w), FV_OK);
        cr_assert_lt(fv_max_abs_diff(50, Vo, Vr), 1e-12, "t = %g", ts[k]);
    }
    fv_field_work_free(&w);
    fv_field_free(&fo);
    fv_field_free(&fr);
    fv_problem_free(&p);
}

Test(field, eval_times_equals_one_time_at_a_time)
{
    fv_problem p;
    random_problem(&p, 4, 3);
    fv_field f;
    fv_field_work w;
    double X[40], all[4 * 40], one[40];
    const double ts[] = {0.05, 0.4, 0.6, 0.95};
    fv_rng r = fv_rng_make(3, 1);
    fv_rng_normal(&r, 40, X);
    fv_field_build(&f, &p, FV_FIELD_OT);
    fv_field_work_alloc(&w, 4, 10);
    cr_assert_eq(fv_field_eval_times(&f, 4, ts, 10, X, all, &w), FV_OK);
    for (int k = 0; k < 4; k++) {
        fv_field_eval(&f, ts[k], 10, X, one, &w);
        cr_assert_lt(fv_max_abs_diff(40, all + k * 40, one), 1e-13);
    }
    fv_field_work_free(&w);
    fv_field_free(&f);
    fv_problem_free(&p);
}

Test(field, markov_matches_formula_of_theory)
{
    /* v*(x,t) = mu + (t M - (1-t) I)((1-t)^2 I + t^2 M + f^2 I)^{-1} (x - t mu), computed here
     * with a plain solve */
    fv_problem p;
    fv_problem_reference(&p, -1, 0.3);
    fv_field f;
    fv_field_work w;
    double x[2] = {0.7, -1.3}, v[2], t = 0.35;
    fv_field_build(&f, &p, FV_FIELD_MARKOV);
    fv_field_work_alloc(&w, 2, 1);
    cr_assert_eq(fv_field_eval(&f, t, 1, x, v, &w), FV_OK);
    double S[4], N[4], y[2] = {x[0] - t * p.m1[0], x[1] - t * p.m1[1]};
    for (int i = 0; i < 4; i++) {
        double id = (i == 0 || i == 3) ? 1.0 : 0.0;
        S[i] = (1 - t) * (1 - t) * id + t * t * p.S1[i] + 0.09 * id;
        N[i] = t * p.S1[i] - (1 - t) * id;
    }
    fv_linalg_solve(2, S, 1, y);
    for (int j = 0; j < 2; j++)
        cr_assert_float_eq(v[j], p.m1[j] + N[j * 2] * y[0] + N[j * 2 + 1] * y[1], 1e-13);
    fv_field_work_free(&w);
    fv_field_free(&f);
    fv_problem_free(&p);
}

/* Push 10^5 source samples through a field with RK4 and compare the end points' mean and
 * covariance with the target's, within 5 Monte-Carlo standard errors. */
static void check_pushforward(fv_problem *p, fv_field_kind kind)
{
    size_t n = 100000, d = p->d;
    double *X = malloc(n * d * sizeof *X), mean[4], cov[16];
    fv_rng r = fv_rng_make(42, 0);
    cr_assert_eq(fv_gaussian_sample(d, p->m0, p->S0, n, &r, X), FV_OK);
    fv_field f;
    cr_assert_eq(fv_field_build(&f, p, kind), FV_OK);
    fv_ode_opts o = fv_ode_defaults();
    o.steps = 200;
    cr_assert_eq(fv_field_transport(&f, n, X, &o, NULL), FV_OK, "%s", fv_last_error());
    th_moments(n, d, X, mean, cov);
    for (size_t i = 0; i < d; i++) {
        double se = sqrt(p->S1[i * d + i] / (double)n);
        cr_assert_lt(fabs(mean[i] - p->m1[i]), 5 * se, "mean[%zu] = %g, want %g", i, mean[i], p->m1[i]);
        for (size_t j = 0; j < d; j++) {
            double sij = p->S1[i * d + j],
                   se_c = sqrt((p->S1[i * d + i] * p->S1[j * d + j] + sij * sij) / (double)n);
            cr_assert_lt(fabs(cov[i * d + j] - sij), 5 * se_c, "cov(%zu,%zu) = %g, want %g", i, j, cov[i * d + j],
                         sij);
        }
    }
    free(X);
    fv_field_free(&f);
}

Test(field, ot_field_transports_source_to_target)
{
    fv_problem p;
    fv_problem_reference(&p, -1, 0.0);
    check_pushforward(&p, FV_FIELD_OT);
    fv_problem_free(&p);
}

Test(field, rotation_field_transports_source_to_target)
{
    fv_problem p;
    fv_problem_reference(&p, 120.0, 0.0);
    check_pushforward(&p, FV_FIELD_ROTATION);
    fv_problem_free(&p);
}

Test(field, markov_field_transports_source_to_target)
{
    fv_problem p;
    fv_problem_reference(&p, -1, 0.0);
    check_pushforward(&p, FV_FIELD_MARKOV);
    fv_problem_free(&p);
}

Test(field, markov_bridge_field_transports_source_to_target)
{
    /* f(0) = f(1) = 0, so the noisy interpolant still starts at the source and ends at the target;
     * the field carries the marginals only with the f'(t) Z term in the target */
    fv_problem p;
    fv_problem_reference(&p, -1, 0.8);
    p.schedule = FV_SCHEDULE_BRIDGE;
    p.deriv_term = 1;
    check_pushforward(&p, FV_FIELD_MARKOV);
    fv_problem_free(&p);
}

Test(field, markov_bridge_without_derivative_term_does_not_transport)
{
    /* the converse, so the test above can fail: without f' Z the end covariance is visibly off */
    fv_problem p;
    fv_problem_reference(&p, -1, 0.8);
    p.schedule = FV_SCHEDULE_BRIDGE;
    size_t n = 20000;
    double *X = malloc(n * 2 * sizeof *X), mean[2], cov[4];
    fv_rng r = fv_rng_make(43, 0);
    fv_gaussian_sample(2, p.m0, p.S0, n, &r, X);
    fv_field f;
    fv_field_build(&f, &p, FV_FIELD_MARKOV);
    fv_ode_opts o = fv_ode_defaults();
    cr_assert_eq(fv_field_transport(&f, n, X, &o, NULL), FV_OK);
    th_moments(n, 2, X, mean, cov);
    cr_assert_gt(fabs(cov[0] - p.S1[0]), 0.1, "cov(0,0) = %g", cov[0]);
    free(X);
    fv_field_free(&f);
    fv_problem_free(&p);
}

Test(field, general_source_ot_field_transports)
{
    fv_problem p;
    random_problem(&p, 3, 4);
    fv_rng r = fv_rng_make(4, 2);
    fv_rng_normal(&r, 3, p.m0);
    fv_random_spd(3, 0.4, &r, p.S0);
    check_pushforward(&p, FV_FIELD_OT);
    fv_problem_free(&p);
}

/* RK45 on the field from fixed points must reproduce the coupling map exactly (to 1e-8). */
static void check_flow_map(size_t d, double deg, uint64_t seed)
{
    fv_problem p;
    random_problem(&p, d, seed);
    fv_field_kind kind = FV_FIELD_OT;
    if (deg >= 0) {
        set_rotation(&p, deg);
        kind = FV_FIELD_ROTATION;
    }
    cr_assert_eq(fv_problem_validate(&p), FV_OK);
    size_t n = 8;
    double *X = malloc(n * d * sizeof *X), *T = malloc(n * d * sizeof *T), st[64];
    size_t ns;
    fv_rng r = fv_rng_make(seed, 9);
    fv_rng_normal(&r, n * d, X);
    fv_field f;
    fv_field_work w;
    cr_assert_eq(fv_field_build(&f, &p, kind), FV_OK);
    cr_assert_eq(fv_field_singular_times(&f, st, &ns), FV_OK);
    cr_assert_eq(ns, 0, "test problem must have no singular time");
    fv_field_work_alloc(&w, d, n);
    fv_field_map(&f, n, X, T, &w);
    fv_ode_opts o = fv_ode_defaults();
    o.solver = FV_ODE_RK45;
    o.rtol = o.atol = 1e-11;
    cr_assert_eq(fv_field_transport(&f, n, X, &o, NULL), FV_OK, "%s", fv_last_error());
    cr_assert_lt(fv_max_abs_diff(n * d, X, T), 1e-8, "d = %zu, angle %g: max error %g", d, deg,
                 fv_max_abs_diff(n * d, X, T));
    free(X);
    free(T);
    fv_field_work_free(&w);
    fv_field_free(&f);
    fv_problem_free(&p);
}

Test(field, rk45_flow_map_ot_d2) { check_flow_map(2, -1, 21); }
Test(field, rk45_flow_map_ot_d10) { check_flow_map(10, -1, 22); }
Test(field, rk45_flow_map_ot_d50) { check_flow_map(50, -1, 23); }
Test(field, rk45_flow_map_rotation_d2) { check_flow_map(2, 120, 24); }
Test(field, rk45_flow_map_rotation_d10) { check_flow_map(10, 75, 25); }
Test(field, rk45_flow_map_rotation_d50) { check_flow_map(50, 60, 26); }

Test(field, general_source_map_pushes_covariance)
{
    size_t d = 6;
    fv_rng r = fv_rng_make(31, 0);
    double S0[36], S1[36], G[36], T[36], GSG[36];
    fv_random_spd(d, 0.3, &r, S0);
    fv_random_spd(d, 0.3, &r, S1);
    cr_assert_eq(fv_ot_map_matrix(d, S0, S1, G), FV_OK);
    fv_mat_mul(d, d, d, G, S0, T);
    fv_mat_mul(d, d, d, T, G, GSG);
    cr_assert_lt(fv_max_abs_diff(d * d, GSG, S1), 1e-10);
}

Test(field, w2_of_commuting_covariances)
{
    /* diagonal covariances commute: W2^2 = |m1 - m0|^2 + sum (sqrt a_i - sqrt b_i)^2 */
    double m0[3] = {0.3, -1.2, 2.0}, m1[3] = {1.1, 0.4, -0.7};
    double a[3] = {0.7, 2.3, 1.9}, b[3] = {3.1, 0.45, 1.2};
    double S0[9] = {0}, S1[9] = {0}, w2, want = 0;
    for (int i = 0; i < 3; i++) {
        S0[i * 4] = a[i];
        S1[i * 4] = b[i];
        want += (m1[i] - m0[i]) * (m1[i] - m0[i]) + pow(sqrt(a[i]) - sqrt(b[i]), 2);
    }
    cr_assert_eq(fv_w2_squared(3, m0, S0, m1, S1, &w2), FV_OK);
    cr_assert_float_eq(w2, want, 1e-13);
}

Test(field, counter_example_1_is_singular_at_one_half)
{
    fv_problem p;
    fv_problem_alloc(&p, 2);
    p.m1[0] = p.m1[1] = 5.0;
    set_rotation(&p, 180.0);
    fv_field f;
    fv_field_work w;
    double x[2] = {0.3, -0.4}, v[2] = {-7, -7}, st[2];
    size_t ns;
    cr_assert_eq(fv_field_build(&f, &p, FV_FIELD_ROTATION), FV_OK);
    fv_field_work_alloc(&w, 2, 1);
    cr_assert_eq(fv_field_eval(&f, 0.5, 1, x, v, &w), FV_ESINGULAR);
    cr_assert(strstr(fv_last_error(), "t = 0.5") != NULL, "%s", fv_last_error());
    cr_assert(strstr(fv_last_error(), "condition number") != NULL, "%s", fv_last_error());
    cr_assert_eq(v[0], -7, "output untouched on error");
    cr_assert_eq(fv_field_singular_times(&f, st, &ns), FV_OK);
    cr_assert_eq(ns, 2);
    cr_assert_float_eq(st[0], 0.5, 1e-15);
    cr_assert_eq(fv_field_eval(&f, 0.49, 1, x, v, &w), FV_OK, "regular off the crossing");
    fv_field_work_free(&w);
    fv_field_free(&f);
    fv_problem_free(&p);
}

Test(field, anisotropic_singular_times_below_180)
{
    /* docs/THEORY.md section 2: for the reference problem singular times appear from about 164 deg on;
     * at 180 deg they are t = 0.398 and 0.541, not 1/2 */
    double st[2];
    size_t ns;
    fv_field f;
    fv_problem p;
    fv_problem_reference(&p, 180.0, 0.0);
    fv_field_build(&f, &p, FV_FIELD_ROTATION);
    cr_assert_eq(fv_field_singular_times(&f, st, &ns), FV_OK);
    cr_assert_eq(ns, 2);
    cr_assert_float_eq(st[0], 0.398357770, 1e-8);
    cr_assert_float_eq(st[1], 0.541147809, 1e-8);
    fv_field_free(&f);
    fv_problem_free(&p);
    fv_problem_reference(&p, 163.0, 0.0);
    fv_field_build(&f, &p, FV_FIELD_ROTATION);
    fv_field_singular_times(&f, st, &ns);
    cr_assert_eq(ns, 0, "no singular time at 163 deg");
    fv_field_free(&f);
    fv_problem_free(&p);
    fv_problem_reference(&p, 165.0, 0.0);
    fv_field_build(&f, &p, FV_FIELD_ROTATION);
    fv_field_singular_times(&f, st, &ns);
    cr_assert_eq(ns, 2, "two singular times at 165 deg");
    fv_field_free(&f);
    fv_problem_free(&p);
}

Test(field, eval_rejects_time_outside_unit_interval)
{
    fv_problem p;
    fv_problem_reference(&p, -1, 0.0);
    fv_field f;
    fv_field_work w;
    double x[2] = {0, 0}, v[2];
    fv_field_build(&f, &p, FV_FIELD_OT);
    fv_field_work_alloc(&w, 2, 1);
    cr_assert_eq(fv_field_eval(&f, 1.5, 1, x, v, &w), FV_EINPUT);
    cr_assert_eq(fv_field_eval(&f, NAN, 1, x, v, &w), FV_EINPUT);
    fv_field_work_free(&w);
    fv_field_free(&f);
    fv_problem_free(&p);
}

Test(field, euler_grid_through_crossing_fails_cleanly)
{
    /* Counter Example 1 integrated with Euler: a grid of 4 steps lands on t = 1/2 exactly */
    fv_problem p;
    fv_problem_alloc(&p, 2);
    p.m1[0] = p.m1[1] = 5.0;
    set_rotation(&p, 180.0);
    fv_field f;
    double x[2] = {0.3, -0.4};
    fv_field_build(&f, &p, FV_FIELD_ROTATION);
    fv_ode_opts o = fv_ode_defaults();
    o.solver = FV_ODE_EULER;
    o.steps = 4;
    cr_assert_eq(fv_field_transport(&f, 1, x, &o, NULL), FV_ESINGULAR);
    cr_assert(strstr(fv_last_error(), "t = 0.5") != NULL, "%s", fv_last_error());
    fv_field_free(&f);
    fv_problem_free(&p);
}

Test(field, problem_validation_names_the_flag)
{
    fv_problem p;
    fv_problem_reference(&p, 120.0, 0.0);
    p.R[0] = 2.0;
    cr_assert_eq(fv_problem_validate(&p), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "--rotation") != NULL, "%s", fv_last_error());
    p.R[0] = cos(120 * M_PI / 180);
    p.sigma = -1;
    cr_assert_eq(fv_problem_validate(&p), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "--sigma") != NULL, "%s", fv_last_error());
    p.sigma = 0;
    p.m1[1] = NAN;
    cr_assert_eq(fv_problem_validate(&p), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "--target-mean") != NULL, "%s", fv_last_error());
    fv_problem_free(&p);
}

Test(field, one_dimensional_ot_field_and_map_match_the_closed_form)
{
    /* d = 1 once wrote past the d x d workspace (caught by the SAN build). Between N(0, 1) and
     * N(3, 2) the OT map is x -> 3 + sqrt(2) x, so v(y, t) = 3 + (r - 1)(y - 3t) / (1 + t (r - 1)), r = sqrt 2. */
    fv_problem p;
    cr_assert_eq(fv_problem_alloc(&p, 1), FV_OK, "alloc d = 1");
    p.m1[0] = 3.0;
    p.S1[0] = 2.0;
    fv_field f;
    fv_field_work w;
    const double X[3] = {-1.0, 0.0, 2.5}, ts[3] = {0.0, 0.5, 1.0}, r = sqrt(2.0);
    double V[9], T[3];
    cr_assert_eq(fv_field_build(&f, &p, FV_FIELD_OT), FV_OK, "build the d = 1 OT field");
    cr_assert_eq(fv_field_work_alloc(&w, 1, 3), FV_OK, "workspace for d = 1");
    cr_assert_eq(fv_field_eval_times(&f, 3, ts, 3, X, V, &w), FV_OK, "evaluate at three times");
    for (size_t k = 0; k < 3; k++)
        for (size_t i = 0; i < 3; i++) {
            double want = 3.0 + (r - 1.0) * (X[i] - 3.0 * ts[k]) / (1.0 + ts[k] * (r - 1.0));
            cr_expect_float_eq(V[k * 3 + i], want, 1e-14, "v(%g, %g) = %.17g, closed form %.17g", X[i], ts[k],
                               V[k * 3 + i], want);
        }
    cr_assert_eq(fv_field_map(&f, 3, X, T, &w), FV_OK, "map at d = 1");
    for (size_t i = 0; i < 3; i++)
        cr_expect_float_eq(T[i], 3.0 + r * X[i], 1e-14, "T(%g) = %.17g, closed form 3 + sqrt(2) x", X[i], T[i]);
    fv_field_work_free(&w);
    fv_field_free(&f);
    fv_problem_free(&p);
}

Test(field, rotation_must_be_orthogonal_within_the_stated_tolerance)
{
    fv_problem p;
    random_problem(&p, 2, 7);
    set_rotation(&p, 30.0);
    for (int i = 0; i < 4; i++) /* R^T R = (1 + 4e-7)^2 I: off by 8e-7, within the old 1e-6 */
        p.R[i] *= 1.0 + 4e-7;
    cr_assert_eq(fv_problem_validate(&p), FV_EINPUT, "a scaled rotation is not orthogonal");
    cr_expect(strstr(fv_last_error(), "max |R^T R - I| = 8e-07") != NULL, "residual named: %s", fv_last_error());
    cr_expect(strstr(fv_last_error(), "tolerance 5e-07") != NULL, "tolerance named: %s", fv_last_error());
    const double reflection[4] = {1.0, 0.0, 0.0, -1.0};
    memcpy(p.R, reflection, sizeof reflection);
    cr_expect_eq(fv_problem_validate(&p), FV_OK, "a reflection is orthogonal (docs/THEORY.md: any orthogonal R): %s",
                 fv_last_error());
    fv_problem_free(&p);
    /* an orthogonal matrix rounded to float32 passes at any d: eigenvectors of a random SPD matrix at d = 60 */
    size_t d = 60;
    random_problem(&p, d, 8);
    p.coupling = FV_COUPLING_ROTATION;
    p.R = malloc(d * d * sizeof *p.R);
    double *w = malloc(d * sizeof *w);
    cr_assert_eq(fv_linalg_eigh(d, p.S1, w, p.R), FV_OK, "eigenvectors");
    for (size_t i = 0; i < d * d; i++)
        p.R[i] = (double)(float)p.R[i];
    cr_expect_eq(fv_problem_validate(&p), FV_OK, "a float32 orthogonal matrix at d = 60: %s", fv_last_error());
    free(w);
    fv_problem_free(&p);
}
