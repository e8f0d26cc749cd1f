/* cmd_floor.c: `flowvar floor`: the loss floor L*(t) = E|u - v*(X_t, t)|^2 of a finite data set over a
 * grid of t, by Monte Carlo with the exact empirical minimizer (docs/THEORY.md section 7). */
#include "cli/cli.h"

#include "core/error.h"
#include "core/progress.h"
#include "core/size.h"
#include "gaussian/empirical.h"

#include <stdlib.h>

static const fv_opt floor_opts[] = {
    {"t-grid", "K", "K times (k + 0.5)/K (K >= 1), the grid of flowvar gap; default 20"},
    {"t", "LIST", "instead of --t-grid: these times in [0, 1] (t = 0 and 1 included where C_t is invertible)"},
    {"mc", "N", "Monte-Carlo rows (X0, J, Z) per time (>= 2); default 4096"},
    {"seed", "N", "seed of the draws (time k uses stream k); default 0"},
    {"out", "FILE|-", "output TSV FILE, or - for stdout (default)"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "Loss floor L*(t) = E|u - v*(X_t, t)|^2 = E tr Cov[u | X_t]: the smallest CFM loss any field can reach\n"
    "at t on a finite data set (--targets or --data) with a Gaussian at the other end (--direction), by\n"
    "Monte Carlo over (X0, J, Z) with the exact minimizer v* (docs/THEORY.md section 7). The loss is summed\n"
    "over coordinates (train's logged loss is this divided by d).\n"
    "TSV: t floor floor_se. Example: flowvar floor --targets Y.npy --sigma 0.05 --t-grid 10 --mc 2000";

/* The times: --t LIST (each in [0, 1]) or the grid (k + 0.5)/K of --t-grid, into *ts (malloc'ed). */
static int floor_times(const fv_args *a, double **ts, size_t *nt)
{
    int st;
    if (!fv_args_get(a, "t")) {
        if ((st = fv_args_size(a, "t-grid", 20, 1, nt)) || !(*ts = fv_alloc(&st, "--t-grid times", *nt, 1, sizeof **ts)))
            return st;
        for (size_t k = 0; k < *nt; k++)
            (*ts)[k] = ((double)k + 0.5) / (double)*nt;
        return FV_OK;
    }
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS];
    if ((st = fv_cli_unused(a, (const char *const[]){"t-grid", NULL}, "with --t")) ||
        (st = fv_args_array(a, "t", ts, nt, &ndim, shape)))
        return st;
    for (size_t k = 0; k < *nt; k++)
        if (!((*ts)[k] >= 0.0 && (*ts)[k] <= 1.0))
            return fv_error(FV_EINPUT, "--t: time %zu is %g, outside [0, 1]", k + 1, (*ts)[k]);
    return *nt ? FV_OK : fv_error(FV_EINPUT, "--t is empty");
}

int fv_cmd_floor(int argc, char **argv)
{
    fv_args a;
    fv_cli_emp c = {0};
    fv_empirical_work w = {0};
    double *rows = NULL, *ts = NULL;
    size_t nt, nmc;
    uint64_t seed;
    int st = fv_args_parse(&a, "floor", usage, argc, argv, fv_dist_opts, fv_sigma_opts, fv_schedule_opts,
                           fv_empirical_opts, floor_opts, NULL);
    if (st < 0)
        return 0;
    if (st || (st = floor_times(&a, &ts, &nt)) || (st = fv_args_size(&a, "mc", 4096, 2, &nmc)) ||
        (st = fv_args_u64(&a, "seed", 0, &seed)) || (st = fv_cli_empirical_open(&a, &c)) ||
        (st = fv_empirical_work_alloc(&w, &c.e, 0)) || !(rows = fv_alloc(&st, "--t-grid rows", nt, 3, sizeof *rows)))
        goto done;
    for (size_t k = 0; k < nt && !st; k++) /* a singular time is refused before any work */
        st = fv_empirical_check_time(&c.e, ts[k]);
    if (st)
        goto done;
    fv_progress bar;
    fv_progress_start(&bar, "floor", nt);
    for (size_t k = 0; k < nt && !st; k++) {
        double t = ts[k];
        fv_rng r = fv_rng_make(seed, k);
        rows[3 * k] = t;
        st = fv_empirical_floor(&c.e, t, nmc, &r, &w, &rows[3 * k + 1], &rows[3 * k + 2]);
        fv_progress_step(&bar, 1, NULL);
    }
    fv_progress_end(&bar);
    static const char *const names[] = {"t", "floor", "floor_se"};
    if (!st)
        st = fv_cli_write_tsv(fv_args_get(&a, "out") ? fv_args_get(&a, "out") : "-", 3, names, nt, rows);
done:
    free(rows);
    free(ts);
    fv_empirical_work_free(&w);
    fv_cli_empirical_close(&c);
    return st ? fv_cli_fail(st) : 0;
}
