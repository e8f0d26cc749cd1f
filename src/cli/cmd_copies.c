/* cmd_copies.c: `flowvar copies`: how many of a run's generated samples are copies of its training
 * set (docs/THEORY.md section 7: d1/d2 < 1/3), with the worst copies beside their training images. */
#include "cli/cli.h"

#include "cli/run.h"
#include "core/error.h"
#include "core/io.h"
#include "core/size.h"
#include "data/png.h"
#include "nn/monitor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Worst copies drawn in the PNG: one row of samples over one row of their nearest training images. */
#define PNG_PAIRS 8

static const fv_opt copies_opts[] = {
    {"run", "DIR", "the training run (required; one with a finite training set: --data, --targets, --pairs, --finite)"},
    {"n", "N", "generated samples, from fresh sources (>= 1); default 1000"},
    {"solver", "euler|rk4", "fixed-step ODE solver; default euler (as sample)"},
    {"steps", "N", "integration steps (>= 1); default 100"},
    {"no-ema", NULL, "use the live weights even when the run keeps an EMA"},
    {"seed", "N", "seed of the fresh sources; default 1 (as sample)"},
    {"out", "FILE|-", "TSV FILE, or - for stdout (default)"},
    {"png", "FILE", "image runs: the 8 worst copies (smallest d1/d2) over their nearest training images"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "Generate N samples from a trained run and measure each against the run's finite training set:\n"
    "d1, d2 = distances to the nearest and the second-nearest distinct training point, ratio = d1/d2. A\n"
    "sample is a copy when ratio < 1/3. The TSV ends with a comment line: the copy fraction and the mean\n"
    "d1 (also printed on stdout when --out is a file). Exact duplicates in the training set count as one\n"
    "point; a set with fewer than 2 distinct points is refused (d2 does not exist).\n"
    "TSV: d1 d2 ratio. Example: flowvar copies --run run --n 500 --out copies.tsv";

int fv_run_copy_set(const fv_run *r, fv_copy_set *s)
{
    size_t d = r->p.d;
    if (r->has_ds && r->reverse)
        return fv_error(FV_EINPUT, "the run goes data -> noise (--direction backward): its samples are N(0, I) "
                                   "draws, not images, so there is no training set for them to copy");
    size_t n;
    const float *Y = fv_run_targets(r, &n);
    if (Y)
        return fv_copy_set_init(s, n, d, Y, NULL);
    if (r->b)
        return fv_copy_set_init(s, r->npairs, d, NULL, r->b);
    return fv_error(FV_EINPUT, "the run has no finite training set (its targets are drawn afresh from a %s at every "
                               "step): nothing to copy; train with --data, --targets, --pairs or --finite",
                    r->has_gmm ? "mixture" : "Gaussian");
}

typedef struct {
    double ratio;
    size_t i;
} ranked;

static int by_ratio(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    if (a->ratio != b->ratio)
        return a->ratio < b->ratio ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

/* The PNG: the worst copies (top row) over their nearest training images (bottom row). */
static int worst_png(const char *path, const fv_run *r, const fv_copy_set *s, size_t n, const double *X,
                     const double *d1, const double *d2, const size_t *near)
{
    size_t d = r->p.d, k = n < PNG_PAIRS ? n : PNG_PAIRS;
    ranked *order = malloc(n * sizeof *order);
    float *cells = malloc(2 * k * d * sizeof *cells);
    int st = order && cells ? FV_OK : fv_error(FV_ENOMEM, "out of memory");
    if (!st) {
        for (size_t i = 0; i < n; i++)
            order[i] = (ranked){fv_copy_ratio(d1[i], d2[i]), i};
        qsort(order, n, sizeof *order, by_ratio);
        for (size_t c = 0; c < k; c++)
            for (size_t j = 0; j < d; j++) {
                size_t i = order[c].i, y = near[i];
                cells[c * d + j] = (float)X[i * d + j];
                cells[(k + c) * d + j] = s->yf ? s->yf[y * d + j] : (float)s->yd[y * d + j];
            }
        st = fv_png_write_grid(path, 2 * k, r->ds.c, r->ds.h, r->ds.w, cells, 2, k, 2);
    }
    free(order);
    free(cells);
    return st;
}

static int write_tsv(const char *path, size_t n, const double *d1, const double *d2)
{
    double frac, mean;
    fv_copy_summary(n, d1, d2, &frac, &mean);
    int st = fv_cli_finite("copies: d1", n, 1, d1);
    fv_atomic_file f;
    if (st || (st = fv_cli_finite("copies: d2", n, 1, d2)) || (st = fv_atomic_open(&f, path)))
        return st;
    static const char *const names[] = {"d1", "d2", "ratio"};
    st = fv_tsv_header(f.fp, 3, names);
    for (size_t i = 0; i < n && !st; i++)
        st = fv_tsv_row(f.fp, 3, (const double[]){d1[i], d2[i], fv_copy_ratio(d1[i], d2[i])});
    char summary[160];
    snprintf(summary, sizeof summary, "# copies: %zu of %zu samples (fraction %.6g) have d1/d2 < 1/3; mean d1 %.6g\n",
             (size_t)(frac * (double)n + 0.5), n, frac, mean);
    if (st || fputs(summary, f.fp) < 0) {
        fv_atomic_abort(&f);
        return st ? st : fv_error(FV_EIO, "%s: write failed", path);
    }
    if ((st = fv_atomic_commit(&f)))
        return st;
    if (strcmp(path, "-"))
        fputs(summary, stdout);
    return FV_OK;
}

int fv_cmd_copies(int argc, char **argv)
{
    static const char *const solvers[] = {"euler", "rk4", NULL};
    fv_args a;
    fv_run r = {0};
    fv_copy_set s = {0};
    double *X = NULL, *d1 = NULL;
    size_t *near = NULL, n = 0;
    uint64_t seed;
    int solver, st = fv_args_parse(&a, "copies", usage, argc, argv, copies_opts, fv_device_opts, NULL);
    if (st < 0)
        return 0;
    fv_ode_opts o = fv_ode_defaults();
    if (!st && !fv_args_get(&a, "run"))
        st = fv_error(FV_EINPUT, "--run DIR is required");
    if (st || (st = fv_args_choice(&a, "solver", solvers, 0, &solver)) ||
        (st = fv_args_size(&a, "steps", 100, 1, &o.steps)) || (st = fv_args_size(&a, "n", 1000, 1, &n)) ||
        (st = fv_args_u64(&a, "seed", 1, &seed)) || (st = fv_run_open(&r, fv_args_get(&a, "run"), NULL, &a)) ||
        (st = fv_run_check_rows(&r, "--n", n)) || (st = fv_run_copy_set(&r, &s)))
        goto done;
    const char *png = fv_args_get(&a, "png");
    if (png && !r.has_ds) {
        st = fv_error(FV_EINPUT, "--png: this run's samples are not images (it was not trained with --data)");
        goto done;
    }
    o.solver = solver ? FV_ODE_RK4 : FV_ODE_EULER;
    size_t d = r.p.d;
    if (!(X = fv_alloc(&st, "--n samples x dimension", n, d, sizeof *X)) ||
        !(d1 = fv_alloc(&st, "--n samples", n, 2, sizeof *d1)) || !(near = fv_alloc(&st, "--n samples", n, 1, sizeof *near)) ||
        (st = fv_run_fresh_sources(&r, n, seed, X)) ||
        (st = fv_cfm_integrate(&r.tr, !fv_args_flag(&a, "no-ema"), n, X, &o)))
        goto done;
    if (fv_cli_first_nonfinite(n * d, X) < n * d) {
        size_t bad = fv_cli_first_nonfinite(n * d, X) / d + 1;
        st = fv_error(FV_ENUMERIC, "copies: sample %zu is not finite: the network's output overflows on its path; "
                                   "nothing written", bad);
        goto done;
    }
    double *d2 = d1 + n;
    if ((st = fv_copy_nearest(&s, n, X, d1, d2, near)) ||
        (png && (st = worst_png(png, &r, &s, n, X, d1, d2, near))))
        goto done;
    st = write_tsv(fv_args_get(&a, "out") ? fv_args_get(&a, "out") : "-", n, d1, d2);
done:
    free(X);
    free(d1);
    free(near);
    fv_copy_set_free(&s);
    fv_run_free(&r);
    return st ? fv_cli_fail(st) : 0;
}
