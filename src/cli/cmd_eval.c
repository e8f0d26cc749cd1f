/* cmd_eval.c: `flowvar eval`: a trained network's v(x, t) at given or fresh points and one or more
 * times, optionally beside the closed-form field of the run's problem at the same points. */
#include "cli/cli.h"

#include "cli/run.h"
#include "core/error.h"
#include "core/io.h"
#include "core/size.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const fv_opt eval_opts[] = {
    {"run", "DIR", "the training run (required; an MLP or a U-Net run)"},
    {"points", "P.npy|LIST", "the points: an .npy of shape (N, d) or (d,), for an image run also (N, C, H, W), or\n"
                             "      a list of rows of d numbers (an image: its C*H*W numbers)"},
    {"n", "N", "N fresh draws of the run's source instead (as flowvar sample --n)"},
    {"seed", "N", "with --n: seed of the fresh points; default 1 (as flowvar sample)"},
    {"t", "T", "one time in [0, 1]"},
    {"times", "LIST", "several times in [0, 1], e.g. 0,0.5,1: output (n_times, N, d)"},
    {"no-ema", NULL, "use the live weights even when the run keeps an EMA"},
    {"field", "ot|rotation|markov", "also the closed-form field of the run's problem at the same points (an image\n"
                                    "      run: of its Gaussian fit, ot or markov)"},
    {"fit-floor", "F", "with --field on an image run: eigenvalue floor of the Gaussian fit, relative to the\n"
                       "      largest, in (0, 1); default 1e-6"},
    {"out", "FILE|-", "output FILE: .npy when it ends so, else TSV; - for TSV on stdout (default)"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "The trained network's v(x, t) at points and times. NPY: (N, d) for --t, (n_times, N, d) for --times;\n"
    "with --field a leading axis of 2, [0] the network and [1] the closed form: (2, N, d) or (2, n_times, N, d).\n"
    "TSV: columns v1..vd (then c1..cd with --field), one row per point; with --times a leading column t and\n"
    "the rows of each time in turn.\n"
    "Example: flowvar eval --run run --points 0.3,0.2 --times 0,0.5,1 --field ot";

/* --t or --times into a malloc'ed list of times in [0, 1]. */
static int read_times(const fv_args *a, double **ts, size_t *nt)
{
    if (!!fv_args_get(a, "t") == !!fv_args_get(a, "times"))
        return fv_error(FV_EINPUT, "give one of --t T or --times LIST");
    if (fv_args_get(a, "t")) {
        if (!(*ts = malloc(sizeof **ts)))
            return fv_error(FV_ENOMEM, "out of memory");
        *nt = 1;
        return fv_args_double_in(a, "t", 0.0, FV_DOM_UNIT, *ts);
    }
    int st = fv_parse_list(fv_args_get(a, "times"), "--times", ts, nt);
    for (size_t k = 0; !st && k < *nt; k++)
        if (!((*ts)[k] >= 0.0 && (*ts)[k] <= 1.0))
            st = fv_error(FV_EINPUT, "--times: entry %zu is %g, outside [0, 1]", k + 1, (*ts)[k]);
    if (!st && *nt == 0)
        st = fv_error(FV_EINPUT, "--times is empty");
    return st;
}

/* The flags that need no run: one source of points, one kind of time, what goes with what. */
static int check_flags(const fv_args *a, double **ts, size_t *nt)
{
    int st;
    if (!fv_args_get(a, "run"))
        return fv_error(FV_EINPUT, "--run DIR is required");
    if (!!fv_args_get(a, "points") == !!fv_args_get(a, "n"))
        return fv_error(FV_EINPUT, "give one of --points or --n");
    fv_field_kind kind;
    size_t n;
    uint64_t seed;
    if ((fv_args_get(a, "points") && (st = fv_cli_unused(a, (const char *const[]){"seed", NULL}, "with --points"))) ||
        (!fv_args_get(a, "field") &&
         (st = fv_cli_unused(a, (const char *const[]){"fit-floor", NULL}, "without --field"))) ||
        (st = fv_args_size(a, "n", 1, 1, &n)) || (st = fv_args_u64(a, "seed", 1, &seed)) ||
        (st = fv_cli_field_kind(a, &kind)))
        return st;
    return read_times(a, ts, nt);
}

/* The points: --points (for an image run also an (N, C, H, W) stack) or --n fresh sources. */
static int read_points(const fv_args *a, fv_run *r, double **X, size_t *n)
{
    size_t d = r->p.d;
    if (fv_args_get(a, "points")) {
        size_t image[3] = {r->ds.c, r->ds.h, r->ds.w};
        return fv_cli_points_images(a, d, r->has_ds ? image : NULL, X, n);
    }
    uint64_t seed;
    int st;
    if ((st = fv_args_size(a, "n", 1, 1, n)) || (st = fv_args_u64(a, "seed", 1, &seed)) ||
        (st = fv_run_check_rows(r, "--n", *n)))
        return st;
    if (!(*X = fv_alloc(&st, "--n points x dimension", *n, d, sizeof **X)))
        return st;
    return fv_run_fresh_sources(r, *n, seed, *X);
}

/* FV_ENUMERIC naming the time, the point and the coordinate of the first non-finite value of V
 * (nt x n x d), or FV_OK. */
static int values_finite(const char *what, size_t nt, size_t n, size_t d, const double *ts, const double *V)
{
    size_t bad = fv_cli_first_nonfinite(nt * n * d, V);
    if (bad == nt * n * d)
        return FV_OK;
    return fv_error(FV_ENUMERIC, "eval: %s at t = %g, point %zu, coordinate %zu is %g; nothing written", what,
                    ts[bad / (n * d)], bad / d % n + 1, bad % d + 1, V[bad]);
}

/* The network's values at every time into V (nt x n x d). */
static int eval_network(fv_run *r, int ema, size_t nt, const double *ts, size_t n, const double *X, double *V)
{
    size_t d = r->p.d;
    float *x = malloc(n * d * sizeof *x), *t = malloc(n * sizeof *t), *v = malloc(n * d * sizeof *v);
    int st = x && t && v ? FV_OK : fv_error(FV_ENOMEM, "out of memory for %zu points", n);
    for (size_t i = 0; !st && i < n * d; i++)
        x[i] = (float)X[i];
    for (size_t k = 0; !st && k < nt; k++) {
        for (size_t i = 0; i < n; i++)
            t[i] = (float)ts[k];
        if (!(st = r->tr.ops->predict(&r->tr, ema, n, x, t, v)))
            for (size_t i = 0; i < n * d; i++)
                V[k * n * d + i] = v[i];
    }
    free(x);
    free(t);
    free(v);
    return st ? st : values_finite("the network's v", nt, n, d, ts, V);
}

/* The closed form's values at every time into C (nt x n x d). */
static int eval_closed(const fv_field *f, size_t d, size_t nt, const double *ts, size_t n, const double *X, double *C)
{
    fv_field_work w = {0};
    int st = fv_field_work_alloc(&w, d, n);
    for (size_t k = 0; !st && k < nt; k++)
        st = fv_field_eval(f, ts[k], n, X, C + k * n * d, &w);
    fv_field_work_free(&w);
    return st ? st : values_finite("the closed form's v", nt, n, d, ts, C);
}

/* --times as TSV: rows (t, v1..vd[, c1..cd]) of each time in turn; nb blocks of nt x n x d in M. */
static int write_times_tsv(const char *path, size_t nt, const double *ts, size_t n, size_t d, size_t nb,
                           const double *M)
{
    size_t cols = 1 + nb * d, rows_n;
    int st = fv_size_mul(&rows_n, "--times x points", nt, n);
    double *rows = st ? NULL : fv_alloc(&st, "--times x points x columns", rows_n, cols, sizeof *rows);
    char **names = rows ? calloc(cols, sizeof *names) : NULL;
    if (rows && !names)
        st = fv_error(FV_ENOMEM, "out of memory");
    for (size_t c = 0; names && c < cols && !st; c++)
        if (!(names[c] = malloc(24)))
            st = fv_error(FV_ENOMEM, "out of memory");
        else if (c == 0)
            strcpy(names[c], "t");
        else
            snprintf(names[c], 24, "%c%zu", (c - 1) / d ? 'c' : 'v', (c - 1) % d + 1);
    for (size_t r = 0; !st && r < rows_n; r++) {
        size_t k = r / n, i = r % n;
        rows[r * cols] = ts[k];
        for (size_t b = 0; b < nb; b++)
            memcpy(rows + r * cols + 1 + b * d, M + (b * nt + k) * n * d + i * d, d * sizeof *rows);
    }
    if (!st)
        st = fv_cli_write_tsv(path, cols, (const char *const *)names, rows_n, rows);
    for (size_t c = 0; names && c < cols; c++)
        free(names[c]);
    free(names);
    free(rows);
    return st;
}

/* The output: nb blocks (network[, closed form]) of nt x n x d values in M, as the usage says. */
static int write_values(const char *path, int times, size_t nt, const double *ts, size_t n, size_t d, size_t nb,
                        const double *M)
{
    size_t len = path ? strlen(path) : 0;
    if (len > 4 && strcmp(path + len - 4, ".npy") == 0) {
        size_t shape[4], ndim = 0;
        if (nb > 1)
            shape[ndim++] = nb;
        if (times)
            shape[ndim++] = nt;
        shape[ndim++] = n;
        shape[ndim++] = d;
        return fv_npy_write_f64(path, M, (int)ndim, shape);
    }
    if (times)
        return write_times_tsv(path ? path : "-", nt, ts, n, d, nb, M);
    static const char *const prefixes[] = {"v", "c"};
    if (nb == 1)
        return fv_cli_write_matrix(path, n, d, M, "v");
    double *rows = malloc(2 * n * d * sizeof *rows); /* rows (v, c) from the two blocks */
    if (!rows)
        return fv_error(FV_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        memcpy(rows + 2 * i * d, M + i * d, d * sizeof *rows);
        memcpy(rows + (2 * i + 1) * d, M + (n + i) * d, d * sizeof *rows);
    }
    int st = fv_cli_write_blocks(path, n, d, 2, prefixes, rows);
    free(rows);
    return st;
}

int fv_cmd_eval(int argc, char **argv)
{
    fv_args a;
    fv_run r = {0};
    fv_field f = {0};
    fv_problem fitp = {0};
    double *ts = NULL, *X = NULL, *M = NULL;
    size_t nt = 0, n = 0;
    int st = fv_args_parse(&a, "eval", usage, argc, argv, eval_opts, fv_device_opts, NULL);
    if (st < 0)
        return 0;
    int with_field = fv_args_get(&a, "field") != NULL;
    if (st || (st = check_flags(&a, &ts, &nt)) || (st = fv_run_open(&r, fv_args_get(&a, "run"), NULL, &a)) ||
        (with_field && !fv_run_fitted(&r) &&
         (st = fv_cli_unused(&a, (const char *const[]){"fit-floor", NULL}, "for a run without --data"))) ||
        (st = read_points(&a, &r, &X, &n)) || (with_field && (st = fv_run_closed_field(&a, &r, &f, &fitp))))
        goto done;
    size_t d = r.p.d, nb = with_field ? 2 : 1, cells;
    if ((st = fv_size_mul(&cells, "--times x points", nt, n)) ||
        !(M = fv_alloc(&st, "--times x points x dimension", nb * cells, d, sizeof *M)) ||
        (st = eval_network(&r, !fv_args_flag(&a, "no-ema"), nt, ts, n, X, M)) ||
        (with_field && (st = eval_closed(&f, d, nt, ts, n, X, M + cells * d))))
        goto done;
    st = write_values(fv_args_get(&a, "out"), fv_args_get(&a, "times") != NULL, nt, ts, n, d, nb, M);
done:
    free(ts);
    free(X);
    free(M);
    fv_field_free(&f);
    fv_problem_free(&fitp);
    fv_run_free(&r);
    return st ? fv_cli_fail(st) : 0;
}
