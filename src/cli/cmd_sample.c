/* cmd_sample.c: `flowvar sample`: integrate a trained field from given or fresh sources. */
#include "cli/cli.h"

#include "cli/run.h"
#include "core/error.h"
#include "core/io.h"

#include <stdlib.h>
#include <string.h>

static const fv_opt sample_opts[] = {
    {"run", "DIR", "the training run (required)"},
    {"points", "P.npy|LIST", "start from these sources (rows of d numbers)"},
    {"n", "N", "start from N fresh source samples (default 1000 when neither --points nor --train-sources)"},
    {"train-sources", NULL, "start from the run's finite training set's sources (memorization test)"},
    {"solver", "euler|rk4", "fixed-step ODE solver; default euler (as the paper)"},
    {"steps", "N", "integration steps; default 100"},
    {"no-ema", NULL, "use the live weights even when the run keeps an EMA"},
    {"seed", "N", "seed of the fresh sources; default 1 (training draws use other streams)"},
    {"out", "X.npy|-", "end points: .npy, TSV file, or - for TSV on stdout (default)"},
    {"pairs-out", "P.npy", "also write (source, end point) pairs, shape (N, 2, d): a ReFlow training set"},
    {NULL, NULL, NULL},
};

static const char usage[] = "Integrate dx/dt = v_net(x, t) from t = 0 to 1 for a trained run.\n"
                            "Example: flowvar sample --run run --n 500 --out samples.npy";

/* Starting points: --points, the run's training sources, or fresh draws from the run's source. */
static int sources(const fv_args *a, fv_run *r, double **X, size_t *n)
{
    int given = !!fv_args_get(a, "points") + !!fv_args_get(a, "n") + fv_args_flag(a, "train-sources");
    if (given > 1)
        return fv_error(FV_EINPUT, "give one of --points, --n, --train-sources");
    if (fv_args_get(a, "points"))
        return fv_cli_points(a, r->p.d, X, n);
    if (fv_args_flag(a, "train-sources")) {
        if (!r->a)
            return fv_error(FV_EINPUT, "--train-sources: this run has no finite training set");
        *n = r->npairs;
        if (!(*X = malloc(*n * r->p.d * sizeof **X)))
            return fv_error(FV_ENOMEM, "out of memory");
        memcpy(*X, r->a, *n * r->p.d * sizeof **X);
        return FV_OK;
    }
    uint64_t seed;
    int st;
    if ((st = fv_args_size(a, "n", 1000, 1, n)) || (st = fv_args_u64(a, "seed", 1, &seed)))
        return st;
    if (!(*X = malloc(*n * r->p.d * sizeof **X)))
        return fv_error(FV_ENOMEM, "out of memory");
    fv_rng g = fv_rng_make(seed, 0);
    return fv_gaussian_sample(r->p.d, r->p.m0, r->p.S0, *n, &g, *X);
}

static int write_pairs(const char *path, size_t n, size_t d, const double *X0, const double *X1)
{
    double *P = malloc(2 * n * d * sizeof *P);
    if (!P)
        return fv_error(FV_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        memcpy(P + 2 * i * d, X0 + i * d, d * sizeof *P);
        memcpy(P + (2 * i + 1) * d, X1 + i * d, d * sizeof *P);
    }
    size_t shape[3] = {n, 2, d};
    int st = fv_npy_write_f64(path, P, 3, shape);
    free(P);
    return st;
}

int fv_cmd_sample(int argc, char **argv)
{
    static const char *const solvers[] = {"euler", "rk4", NULL};
    fv_args a;
    fv_run r = {0};
    double *X = NULL, *X0 = NULL;
    size_t n = 0;
    int solver, st = fv_args_parse(&a, "sample", usage, argc, argv, sample_opts, NULL);
    if (st < 0)
        return 0;
    fv_ode_opts o = fv_ode_defaults();
    if (!st && !fv_args_get(&a, "run"))
        st = fv_error(FV_EINPUT, "--run DIR is required");
    if (st || (st = fv_args_choice(&a, "solver", solvers, 0, &solver)) ||
        (st = fv_args_size(&a, "steps", 100, 1, &o.steps)) || (st = fv_run_open(&r, fv_args_get(&a, "run"), NULL)) ||
        (st = sources(&a, &r, &X, &n)))
        goto done;
    o.solver = solver ? FV_ODE_RK4 : FV_ODE_EULER;
    if (!(X0 = malloc(n * r.p.d * sizeof *X0))) {
        st = fv_error(FV_ENOMEM, "out of memory");
        goto done;
    }
    memcpy(X0, X, n * r.p.d * sizeof *X0);
    if ((st = fv_cfm_integrate(&r.tr, !fv_args_flag(&a, "no-ema"), n, X, &o)))
        goto done;
    if (fv_args_get(&a, "pairs-out") && (st = write_pairs(fv_args_get(&a, "pairs-out"), n, r.p.d, X0, X)))
        goto done;
    st = fv_cli_write_matrix(fv_args_get(&a, "out"), n, r.p.d, X, "x");
done:
    free(X);
    free(X0);
    fv_run_free(&r);
    return st ? fv_cli_fail(st) : 0;
}
