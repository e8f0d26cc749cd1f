/* cmd_transport.c: `flowvar transport`: push points from t = 0 to t = 1 along a closed-form field or the
 * empirical minimizer of a finite data set. */
#include "cli/cli.h"

#include "core/error.h"
#include "core/size.h"
#include "gaussian/transport.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const fv_opt transport_opts[] = {
    {"field", "ot|rotation|markov|empirical", "which field; default ot (empirical: the exact minimizer for the data\n"
                                              "      of --targets or --data, docs/THEORY.md section 7)"},
    {"points", "P.npy|LIST", "starting points: an .npy of shape (n, d) or (d,), or a list of rows of d numbers; or --n"},
    {"n", "N", "instead of --points: N samples of the source drawn with --seed (empirical: N draws of the\n"
               "      interpolant at t = 0, the source plus the noise f(0) Z)"},
    {"seed", "N", "with --n: seed of the source samples; default 0"},
    {"solver", "euler|rk4|rk45", "ODE solver; default rk4"},
    {"steps", "N", "steps of euler/rk4, initial step 1/N of rk45; default 100"},
    {"rtol", "R", "rk45 relative tolerance (> 0); default 1e-8"},
    {"atol", "A", "rk45 absolute tolerance (>= 0); default 1e-8"},
    {"out", "FILE|-", "output FILE: .npy when it ends so, else TSV; - for TSV on stdout (default)"},
    {"cond-max", "C", "fail where cond(A(t)) exceeds C (>= 1); default 1e12 (closed forms only)"},
    {"with-map", NULL, "add columns T1..Td: the coupling map T(x0) in closed form (ot, rotation)"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "Integrate dx/dt = v(x, t) from t = 0 to 1 and print the end points. With --field empirical and sigma = 0\n"
    "(forward) v* is singular at t = 1: the solver stops at 1 - 1/steps and the last step is the Euler step\n"
    "x + (1-t) v*, exact on the straight paths there, so the flow lands on the data points.\n"
    "Example: flowvar transport --target-mean 1,-0.5 --target-cov 2,0.6,0.6,1 --points 0.3,0.2,-1,0.5 --solver rk45\n"
    "         flowvar transport --field empirical --targets Y.npy --n 10";

static int starting_points(const fv_args *a, const fv_problem *p, double **X, size_t *n)
{
    if (fv_args_get(a, "points") && fv_args_get(a, "n"))
        return fv_error(FV_EINPUT, "give --points or --n, not both");
    if (!fv_args_get(a, "n")) {
        int st = fv_cli_unused(a, (const char *const[]){"seed", NULL}, "with --points (it seeds --n's samples)");
        return st ? st : fv_cli_points(a, p->d, X, n);
    }
    uint64_t seed;
    int st;
    if ((st = fv_args_size(a, "n", 0, 1, n)) || (st = fv_args_u64(a, "seed", 0, &seed)))
        return st;
    if (!(*X = fv_alloc(&st, "--n points x dimension", *n, p->d, sizeof **X)))
        return st;
    fv_rng r = fv_rng_make(seed, 0);
    return fv_gaussian_sample(p->d, p->m0, p->S0, *n, &r, *X);
}

/* The integration's end points are finite, or FV_ENUMERIC naming the first point whose path overflowed. */
static int ends_finite(size_t n, size_t d, const double *X, const fv_ode_opts *o)
{
    static const char *const names[] = {"euler", "rk4", "rk45"};
    for (size_t i = 0; i < n * d; i++)
        if (!isfinite(X[i]))
            return fv_error(FV_ENUMERIC, "transport: point %zu's path overflowed between t = 0 and 1 (%s, %zu steps): its "
                            "end point is %g; nothing written",
                            i / d + 1, names[o->solver], o->steps, X[i]);
    return FV_OK;
}

/* Transport, then print [x(1) | T(x(0))] side by side so a user sees the integration error. */
static int transport_with_map(const fv_field *f, size_t n, double *X, const fv_ode_opts *o, const char *out)
{
    size_t d = f->d;
    fv_field_work w = {0};
    int st;
    double *T = fv_alloc(&st, "points x dimension", n, d, sizeof *T), *XT = NULL;
    if (!st && (XT = fv_alloc(&st, "points x the columns x and T", n, 2 * d, sizeof *XT)))
        st = fv_field_work_alloc(&w, d, n);
    if (!st && !(st = fv_field_map(f, n, X, T, &w)) && !(st = fv_field_transport(f, n, X, o, NULL)) &&
        !(st = ends_finite(n, d, X, o))) {
        for (size_t i = 0; i < n; i++) {
            memcpy(XT + 2 * i * d, X + i * d, d * sizeof *XT);
            memcpy(XT + (2 * i + 1) * d, T + i * d, d * sizeof *XT);
        }
        const char *prefixes[2] = {"x", "T"};
        st = fv_cli_write_blocks(out, n, d, 2, prefixes, XT);
    }
    fv_field_work_free(&w);
    free(T);
    free(XT);
    return st;
}

/* --field empirical: the starting points (--points, or --n draws of X_0), integrated along v*. */
static int transport_empirical(const fv_args *a, const fv_ode_opts *o)
{
    fv_cli_emp c;
    fv_empirical_work w = {0};
    double *X = NULL;
    size_t n;
    uint64_t seed;
    int st = fv_cli_unused(a, (const char *const[]){"angle", "rotation", "cond-max", "with-map", NULL},
                           "with --field empirical");
    if (st || (st = fv_cli_empirical_open(a, &c)))
        return st;
    if (fv_args_get(a, "points") && fv_args_get(a, "n"))
        st = fv_error(FV_EINPUT, "give --points or --n, not both");
    else if (!fv_args_get(a, "n")) {
        if (!(st = fv_cli_unused(a, (const char *const[]){"seed", NULL}, "with --points (it seeds --n's samples)")))
            st = fv_cli_points(a, c.p.d, &X, &n);
    } else if (!(st = fv_args_size(a, "n", 0, 1, &n)) && !(st = fv_args_u64(a, "seed", 0, &seed)) &&
               (X = fv_alloc(&st, "--n points x dimension", n, c.p.d, sizeof *X))) {
        fv_rng r = fv_rng_make(seed, 0);
        st = fv_empirical_draw(&c.e, 0.0, n, &r, X, NULL);
    }
    if (!st && !(st = fv_empirical_work_alloc(&w, &c.e, 0)) && !(st = fv_empirical_transport(&c.e, n, X, o, &w)) &&
        !(st = ends_finite(n, c.p.d, X, o)))
        st = fv_cli_write_matrix(fv_args_get(a, "out"), n, c.p.d, X, "x");
    free(X);
    fv_empirical_work_free(&w);
    fv_cli_empirical_close(&c);
    return st;
}

int fv_cmd_transport(int argc, char **argv)
{
    static const char *const solvers[] = {"euler", "rk4", "rk45", NULL};
    fv_args a;
    fv_problem p = {0};
    fv_field f = {0};
    fv_field_kind kind;
    fv_ode_opts o = fv_ode_defaults();
    double *X = NULL;
    size_t n;
    int solver, st = fv_args_parse(&a, "transport", usage, argc, argv, fv_dist_opts, fv_rotation_opts, fv_sigma_opts,
                                 fv_schedule_opts, fv_empirical_opts, transport_opts, NULL);
    if (st < 0)
        return 0;
    if (st || (st = fv_args_choice(&a, "solver", solvers, 1, &solver)) ||
        (st = fv_args_size(&a, "steps", 100, 1, &o.steps)) ||
        (st = fv_args_double_in(&a, "rtol", 1e-8, FV_DOM_POSITIVE, &o.rtol)) ||
        (st = fv_args_double_in(&a, "atol", 1e-8, FV_DOM_NONNEG, &o.atol)))
        goto done;
    o.solver = (fv_ode_solver)solver;
    if (solver != FV_ODE_RK45 && (st = fv_cli_unused(&a, (const char *const[]){"rtol", "atol", NULL},
                                                       "by the fixed-step solvers (only by --solver rk45)")))
        goto done;
    if (fv_cli_field_is_empirical(&a)) {
        st = transport_empirical(&a, &o);
        goto done;
    }
    if ((st = fv_cli_field_kind(&a, &kind)) || (st = fv_cli_field_flags(&a, kind)) || (st = fv_cli_problem(&a, &p)) ||
        (st = starting_points(&a, &p, &X, &n)) || (st = fv_field_build(&f, &p, kind)) ||
        (st = fv_args_double_in(&a, "cond-max", f.cond_max, FV_DOM_COND, &f.cond_max)))
        goto done;
    if (fv_args_flag(&a, "with-map")) {
        st = transport_with_map(&f, n, X, &o, fv_args_get(&a, "out"));
        goto done;
    }
    if ((st = fv_field_transport(&f, n, X, &o, NULL)) || (st = ends_finite(n, p.d, X, &o)))
        goto done;
    st = fv_cli_write_matrix(fv_args_get(&a, "out"), n, p.d, X, "x");
done:
    free(X);
    fv_field_free(&f);
    fv_problem_free(&p);
    return st ? fv_cli_fail(st) : 0;
}
