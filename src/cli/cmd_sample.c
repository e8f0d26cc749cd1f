/* cmd_sample.c: `flowvar sample`: integrate a trained field from given or fresh sources. */
#include "cli/cli.h"

#include "cli/run.h"
#include "core/error.h"
#include "core/io.h"
#include "core/size.h"
#include "data/png.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const fv_opt sample_opts[] = {
    {"run", "DIR", "the training run (required)"},
    {"points", "P.npy|LIST", "start from these sources: an .npy of shape (n, d) or (d,), for an image run also\n"
                             "      (n, C, H, W), or a list of rows of d numbers"},
    {"n", "N", "start from N fresh source samples (default 1000 when neither --points nor --train-sources)"},
    {"train-sources", NULL, "start from the run's finite training set's sources (memorization test)"},
    {"solver", "euler|rk4", "fixed-step ODE solver; default euler (as the paper)"},
    {"steps", "N", "integration steps (>= 1); default 100"},
    {"no-ema", NULL, "use the live weights even when the run keeps an EMA"},
    {"seed", "N", "with --n: seed of the fresh sources; default 1 (training draws use other streams)"},
    {"out", "FILE|-", "end points FILE: .npy when it ends so, else TSV; - for TSV on stdout (default)"},
    {"pairs-out", "P.npy", "also write (source, end point) pairs, shape (N, 2, d): a ReFlow training set"},
    {"l2-report", NULL, "with --train-sources: print mean and std of |x(1) - paired target| and |x(1) - T_OT(x0)|"},
    {"model", "mlp|unet", "the run's network (optional: checked against the run)"},
    {"png", "GRID.png", "runs on an image set (--data): also draw the end points as a PNG grid of images"},
    {"paths-out", "FILE", "also write every trajectory to the TSV FILE: point t x.. source.. target.. (target with\n"
                          "      --train-sources)"},
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
    int st;
    if ((fv_args_get(a, "points") || fv_args_flag(a, "train-sources")) &&
        (st = fv_cli_unused(a, (const char *const[]){"seed", NULL}, "with --points or --train-sources")))
        return st;
    if (fv_args_get(a, "points")) {
        size_t image[3] = {r->ds.c, r->ds.h, r->ds.w};
        return fv_cli_points_images(a, r->p.d, r->has_ds ? image : NULL, X, n);
    }
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
    if ((st = fv_args_size(a, "n", 1000, 1, n)) || (st = fv_args_u64(a, "seed", 1, &seed)))
        return st;
    if (!(*X = fv_alloc(&st, "--n points x dimension", *n, r->p.d, sizeof **X)))
        return st;
    return fv_run_fresh_sources(r, *n, seed, *X);
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

/* FV_ENUMERIC: the state first became non-finite in solver step k (from 1) of o, at point i (from 1). */
static int overflow_error(const fv_ode_opts *o, size_t k, size_t i)
{
    return fv_error(FV_ENUMERIC, "sample: the state became non-finite at %s step %zu of %zu (t = %g to %g), point %zu: "
                    "the network's output overflows there; nothing written",
                    o->solver == FV_ODE_RK4 ? "RK4" : "Euler", k, o->steps, (double)(k - 1) / (double)o->steps,
                    (double)k / (double)o->steps, i);
}

/* Integrate, step by step when the paths are wanted: rows (point, t, x, x(0)[, paired target]) in one
 * block per point, so a plot can draw each path beside its straight training line. */
static int integrate(fv_run *r, int ema, size_t n, double *X, const fv_ode_opts *o, const char *paths,
                     const double *targets)
{
    if (!paths)
        return fv_cfm_integrate(&r->tr, ema, n, X, o);
    size_t d = r->p.d, steps = o->steps;
    size_t cells;
    int st = steps == SIZE_MAX ? fv_error(FV_EINPUT, "--paths-out: --steps %zu has no room for the start", steps)
                               : fv_size_mul(&cells, "--paths-out (--steps + 1) x points", steps + 1, n);
    double *P = st ? NULL : fv_alloc(&st, "--paths-out (--steps + 1) x points x dimension", cells, d, sizeof *P);
    if (!P)
        return st;
    memcpy(P, X, n * d * sizeof *P);
    for (size_t k = 0; k < steps && !st; k++) {
        fv_ode_opts one = *o;
        one.steps = 1;
        one.t0 = (double)k / (double)steps;
        one.t1 = (double)(k + 1) / (double)steps;
        if (!(st = fv_cfm_integrate(&r->tr, ema, n, X, &one)))
            memcpy(P + (k + 1) * n * d, X, n * d * sizeof *P);
    }
    size_t bad = st ? 0 : fv_cli_first_nonfinite((steps + 1) * n * d, P);
    if (!st && bad < (steps + 1) * n * d)
        st = overflow_error(o, bad / (n * d), bad % (n * d) / d + 1);
    int nblocks = targets ? 3 : 2;
    fv_atomic_file f;
    if (!st && !(st = fv_atomic_open(&f, paths))) {
        static const char *const blocks[3] = {"x", "source", "target"};
        fprintf(f.fp, "point\tt");
        for (int b = 0; b < nblocks; b++)
            for (size_t j = 0; j < d; j++)
                fprintf(f.fp, "\t%s%zu", blocks[b], j + 1);
        fprintf(f.fp, "\n");
        for (size_t i = 0; i < n; i++) {
            for (size_t k = 0; k <= steps; k++) {
                fprintf(f.fp, "%zu\t%.6g", i, (double)k / (double)steps);
                for (size_t j = 0; j < d; j++)
                    fprintf(f.fp, "\t%.10g", P[(k * n + i) * d + j]);
                for (size_t j = 0; j < d; j++)
                    fprintf(f.fp, "\t%.10g", P[i * d + j]);
                for (size_t j = 0; targets && j < d; j++)
                    fprintf(f.fp, "\t%.10g", targets[i * d + j]);
                fprintf(f.fp, "\n");
            }
            fprintf(f.fp, "\n\n");
        }
        st = fv_atomic_commit(&f);
    }
    free(P);
    return st;
}

/* The end points X are finite, or FV_ENUMERIC naming the solver step, its times and the point at which
 * the state first became non-finite: X0 is integrated again one step at a time to find them. */
static int ends_finite(fv_run *r, int ema, size_t n, const double *X0, const double *X, const fv_ode_opts *o)
{
    size_t d = r->p.d, bad = n * d;
    if (fv_cli_first_nonfinite(n * d, X) == n * d)
        return FV_OK;
    double *W = malloc(n * d * sizeof *W);
    if (!W)
        return fv_error(FV_ENOMEM, "out of memory");
    memcpy(W, X0, n * d * sizeof *W);
    int st = FV_OK;
    size_t k = 0;
    for (; k < o->steps && !st && bad == n * d; k++) {
        fv_ode_opts one = *o;
        one.steps = 1;
        one.t0 = (double)k / (double)o->steps;
        one.t1 = (double)(k + 1) / (double)o->steps;
        if (!(st = fv_cfm_integrate(&r->tr, ema, n, W, &one)))
            bad = fv_cli_first_nonfinite(n * d, W);
    }
    free(W);
    if (st)
        return st;
    return overflow_error(o, k, bad / d + 1);
}

/* Table 2's measure: how close the end points are to the paired (possibly shuffled) targets and to
 * the OT map's targets; the end points still go to --out when it is given. */
static int l2_report(const fv_args *a, fv_run *r, size_t n, const double *X0, const double *X)
{
    size_t d = r->p.d;
    if (!fv_args_flag(a, "train-sources"))
        return fv_error(FV_EINPUT, "--l2-report goes with --train-sources");
    double *T = malloc(n * d * sizeof *T), row[4];
    int st = T ? fv_run_ot_targets(r, n, X0, T) : fv_error(FV_ENOMEM, "out of memory");
    if (!st) {
        fv_cli_l2_stats(n, d, X, r->b, &row[0], &row[1]);
        fv_cli_l2_stats(n, d, X, T, &row[2], &row[3]);
        static const char *const names[] = {"l2_to_pair_mean", "l2_to_pair_std", "l2_to_ot_mean", "l2_to_ot_std"};
        if (!(st = fv_cli_finite("sample --l2-report", 1, 4, row)) && fv_args_get(a, "out"))
            st = fv_cli_write_matrix(fv_args_get(a, "out"), n, d, X, "x");
        if (!st && !(st = fv_tsv_header(stdout, 4, names)))
            st = fv_tsv_row(stdout, 4, row);
    }
    free(T);
    return st;
}

/* The end points of an image run as a square-ish grid of images, twice their size. */
static int write_grid(const char *path, const fv_run *r, size_t n, const double *X)
{
    if (!r->has_ds)
        return fv_error(FV_EINPUT, "--png: this run's samples are not images (it was not trained with --data)");
    size_t d = r->p.d, cols = (size_t)ceil(sqrt((double)n)), rows = (n + cols - 1) / cols;
    float *x = malloc(n * d * sizeof *x);
    if (!x)
        return fv_error(FV_ENOMEM, "out of memory");
    for (size_t i = 0; i < n * d; i++)
        x[i] = (float)X[i];
    int st = fv_png_write_grid(path, n, r->ds.c, r->ds.h, r->ds.w, x, rows, cols, 2);
    free(x);
    return st;
}

int fv_cmd_sample(int argc, char **argv)
{
    static const char *const solvers[] = {"euler", "rk4", NULL};
    fv_args a;
    fv_run r = {0};
    double *X = NULL, *X0 = NULL;
    size_t n = 0;
    int solver, st = fv_args_parse(&a, "sample", usage, argc, argv, sample_opts, fv_device_opts, NULL);
    if (st < 0)
        return 0;
    fv_ode_opts o = fv_ode_defaults();
    if (!st && !fv_args_get(&a, "run"))
        st = fv_error(FV_EINPUT, "--run DIR is required");
    if (st || (st = fv_args_choice(&a, "solver", solvers, 0, &solver)) ||
        (st = fv_args_size(&a, "steps", 100, 1, &o.steps)) || (st = fv_run_open(&r, fv_args_get(&a, "run"), NULL, &a)) ||
        (st = sources(&a, &r, &X, &n)))
        goto done;
    static const char *const models[] = {"mlp", "unet", NULL};
    int model;
    if ((st = fv_args_choice(&a, "model", models, r.is_unet, &model)))
        goto done;
    if (model != r.is_unet) {
        st = fv_error(FV_EINPUT, "--model %s: the run %s holds a%s", models[model], fv_args_get(&a, "run"),
                      r.is_unet ? " U-Net" : "n MLP");
        goto done;
    }
    o.solver = solver ? FV_ODE_RK4 : FV_ODE_EULER;
    if (!(X0 = malloc(n * r.p.d * sizeof *X0))) {
        st = fv_error(FV_ENOMEM, "out of memory");
        goto done;
    }
    memcpy(X0, X, n * r.p.d * sizeof *X0);
    int ema = !fv_args_flag(&a, "no-ema");
    if ((st = integrate(&r, ema, n, X, &o, fv_args_get(&a, "paths-out"), fv_args_flag(&a, "train-sources") ? r.b : NULL)) ||
        (st = ends_finite(&r, ema, n, X0, X, &o)))
        goto done;
    if (fv_args_get(&a, "pairs-out") && (st = write_pairs(fv_args_get(&a, "pairs-out"), n, r.p.d, X0, X)))
        goto done;
    if (fv_args_get(&a, "png") && (st = write_grid(fv_args_get(&a, "png"), &r, n, X)))
        goto done;
    if (fv_args_flag(&a, "l2-report"))
        st = l2_report(&a, &r, n, X0, X);
    else
        st = fv_cli_write_matrix(fv_args_get(&a, "out"), n, r.p.d, X, "x");
done:
    free(X);
    free(X0);
    fv_run_free(&r);
    return st ? fv_cli_fail(st) : 0;
}
