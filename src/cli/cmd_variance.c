/* cmd_variance.c: `flowvar variance`: the exact variance of the CFM loss gradient (docs/THEORY.md
 * section 4) at one time, on a grid of times, or integrated over t ~ U(0,1), with an optional
 * Monte-Carlo cross-check. */
#include "cli/cli.h"

#include "core/error.h"
#include "core/io.h"
#include "core/size.h"
#include "gaussian/variance.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const fv_opt variance_opts[] = {
    {"field", "ot|rotation|markov|custom", "which field of the family; default ot"},
    {"theta", "LIST|F.npy", "custom field: theta (d numbers)"},
    {"Theta", "LIST|F.npy", "custom field: Theta (d*d numbers, row-major)"},
    {"t", "T", "one time in [0, 1]"},
    {"t-grid", "N", "N times (k + 0.5)/N, k = 0..N-1 (N >= 1)"},
    {"integrated", NULL, "over t ~ U(0,1): integral of E|g|^2 minus |integral of E g|^2"},
    {"batch", "B", "minibatch size (>= 1): variances divided by B; default 1"},
    {"mc", "N", "add a Monte-Carlo estimate from N >= 4 samples (columns mc_total, mc_se); default none"},
    {"seed", "N", "with --mc: seed of the Monte-Carlo samples; default 0"},
    {"epsrel", "E", "with --integrated: relative accuracy of the integral over t, in (0, 1); default 1e-10"},
    {"cov-out", "C.npy", "with --t: write the full (d+d*d)^2 covariance of the gradient"},
    {"out", "FILE|-", "output TSV FILE, or - for stdout (default)"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "Exact variance (trace of the covariance) of the per-sample CFM gradient g = (d/dtheta, d/dTheta) of\n"
    "|u - v(X_t, t)|^2 for v = theta + Theta (I + t Theta)^{-1} (x - m0 - t theta), data from --coupling;\n"
    "any Gaussian source (--source-mean m0, --source-cov S0; default N(0, I)).\n"
    "Output TSV: t var_theta var_Theta var_total [mc_total mc_se]; t is 'integrated' with --integrated.\n"
    "Example: flowvar variance --target-mean 1,-0.5 --target-cov 2,0.6,0.6,1 --coupling rotation --angle 120 \\\n"
    "           --field ot --t 0.6";

/* --field and, for custom, --theta/--Theta into f (the arrays are owned by the caller). */
static int read_vfield(const fv_args *a, size_t d, fv_vfield *f, double **theta, double **Theta)
{
    static const char *const kinds[] = {"ot", "rotation", "markov", "custom", NULL};
    int k, st = fv_args_choice(a, "field", kinds, FV_VFIELD_OT, &k);
    if (st)
        return st;
    f->kind = (fv_vfield_kind)k;
    if (f->kind != FV_VFIELD_CUSTOM) {
        if (fv_args_get(a, "theta") || fv_args_get(a, "Theta"))
            return fv_error(FV_EINPUT, "--theta and --Theta go with --field custom");
        return FV_OK;
    }
    size_t n1, n2;
    if (!fv_args_get(a, "theta") || !fv_args_get(a, "Theta"))
        return fv_error(FV_EINPUT, "--field custom needs --theta and --Theta");
    size_t shape[FV_NPY_MAX_DIMS];
    int ndim;
    if ((st = fv_args_array(a, "theta", theta, &n1, &ndim, shape)))
        return st;
    if (ndim > 1)
        return fv_error(FV_EINPUT, "--theta: %s has %d dimensions, expected shape (%zu,)", fv_args_get(a, "theta"), ndim,
                        d);
    if ((st = fv_args_array(a, "Theta", Theta, &n2, &ndim, shape)))
        return st;
    if (ndim == 2 && (shape[0] != d || shape[1] != d)) {
        char found[96];
        fv_args_shape_text(ndim, shape, found, sizeof found);
        return fv_error(FV_EINPUT, "--Theta: %s has shape %s, expected (%zu, %zu)", fv_args_get(a, "Theta"), found, d, d);
    }
    if (ndim > 2)
        return fv_error(FV_EINPUT, "--Theta: %s has %d dimensions, expected shape (%zu, %zu)", fv_args_get(a, "Theta"),
                        ndim, d, d);
    if (n1 != d || n2 != d * d)
        return fv_error(FV_EINPUT, "--theta has %zu numbers and --Theta %zu; expected %zu and %zu", n1, n2, d, d * d);
    f->theta = *theta;
    f->Theta = *Theta;
    return FV_OK;
}

/* Which times: exactly one of --t, --t-grid, --integrated. nt = 0 means integrated. */
static int read_times(const fv_args *a, double **ts, size_t *nt)
{
    int given = !!fv_args_get(a, "t") + !!fv_args_get(a, "t-grid") + fv_args_flag(a, "integrated");
    if (given != 1)
        return fv_error(FV_EINPUT, "give exactly one of --t T, --t-grid N, --integrated");
    *nt = 0;
    if (fv_args_flag(a, "integrated"))
        return FV_OK;
    int st;
    if (fv_args_get(a, "t")) {
        double t;
        if ((st = fv_args_double_in(a, "t", 0, FV_DOM_UNIT, &t)))
            return st;
        *nt = 1;
        *ts = malloc(sizeof **ts);
        if (*ts)
            (*ts)[0] = t;
    } else {
        if ((st = fv_args_size(a, "t-grid", 0, 1, nt)))
            return st;
        if (!(*ts = fv_alloc(&st, "--t-grid", *nt, 1, sizeof **ts)))
            return st;
        for (size_t k = 0; k < *nt; k++)
            (*ts)[k] = ((double)k + 0.5) / (double)*nt;
    }
    return *ts ? FV_OK : fv_error(FV_ENOMEM, "out of memory");
}

/* Flags that the rest of the command line leaves without effect. */
static int check_unused(const fv_args *a, const fv_problem *p, const fv_vfield *f, size_t nt)
{
    int st = FV_OK;
    if (p->coupling != FV_COUPLING_ROTATION && f->kind != FV_VFIELD_ROTATION)
        st = fv_cli_unused(a, fv_rotation_flags, "without --coupling rotation or --field rotation");
    if (!st && !fv_args_get(a, "mc"))
        st = fv_cli_unused(a, (const char *const[]){"seed", NULL}, "without --mc (it seeds the Monte-Carlo samples)");
    if (!st && nt)
        st = fv_cli_unused(a, (const char *const[]){"epsrel", NULL}, "without --integrated");
    return st;
}

/* One output row: exact values, and MC estimates when asked (t < 0: t ~ U(0,1)). */
static int compute_row(const fv_problem *p, const fv_vfield *f, double t, double epsrel, size_t B, size_t mc,
                       uint64_t seed, uint64_t stream, double *row)
{
    fv_var v;
    int st = t < 0 ? fv_variance_integrated(p, f, epsrel, &v, NULL) : fv_variance_at(p, f, t, &v, NULL, NULL);
    if (st)
        return st;
    fv_var_minibatch(&v, B);
    row[0] = t;
    row[1] = v.var_theta;
    row[2] = v.var_Theta;
    row[3] = v.var_total;
    if (mc) {
        fv_mc m;
        if ((st = fv_variance_mc(p, f, t, mc, seed, stream, &m)))
            return st;
        row[4] = m.var_total / (double)B;
        row[5] = m.se_total / (double)B;
    }
    static const char *const names[] = {"var_theta", "var_Theta", "var_total", "mc_total", "mc_se"};
    for (size_t c = 1; c < (mc ? 6u : 4u); c++)
        if (!isfinite(row[c])) {
            char when[48] = "over t ~ U(0,1)";
            if (t >= 0)
                snprintf(when, sizeof when, "at t = %g", t);
            return fv_error(FV_ENUMERIC, "variance: %s %s is not finite (%g): the problem's numbers overflow; nothing "
                            "written", names[c - 1], when, row[c]);
        }
    return FV_OK;
}

static int write_table(const char *path, size_t nrows, size_t ncols, const double *rows, int integrated)
{
    static const char *const names[] = {"t", "var_theta", "var_Theta", "var_total", "mc_total", "mc_se"};
    fv_atomic_file f;
    int st = fv_atomic_open(&f, path ? path : "-");
    if (st)
        return st;
    st = fv_tsv_header(f.fp, (int)ncols, names);
    for (size_t r = 0; r < nrows && !st; r++) {
        if (integrated) { /* the t column names what was integrated instead of holding a number */
            fprintf(f.fp, "integrated\t");
            st = fv_tsv_row(f.fp, (int)ncols - 1, rows + r * ncols + 1);
        } else {
            st = fv_tsv_row(f.fp, (int)ncols, rows + r * ncols);
        }
    }
    if (st) {
        fv_atomic_abort(&f);
        return st;
    }
    return fv_atomic_commit(&f);
}

static int write_cov(const fv_args *a, const fv_problem *p, const fv_vfield *f, const double *ts, size_t nt)
{
    const char *path = fv_args_get(a, "cov-out");
    if (!path)
        return FV_OK;
    if (nt != 1)
        return fv_error(FV_EINPUT, "--cov-out goes with --t (one time)");
    size_t k = p->d + p->d * p->d; /* d x d fits in memory (the problem holds it), so k cannot overflow */
    fv_var v;
    int st;
    double *cov = fv_alloc(&st, "--cov-out (d + d^2) x (d + d^2) covariance", k, k, sizeof *cov);
    if (cov)
        st = fv_variance_at(p, f, ts[0], &v, NULL, cov);
    if (!st && !(st = fv_cli_finite(path, k, k, cov))) {
        size_t shape[2] = {k, k};
        st = fv_npy_write_f64(path, cov, 2, shape);
    }
    free(cov);
    return st;
}

int fv_cmd_variance(int argc, char **argv)
{
    fv_args a;
    fv_problem p = {0};
    fv_vfield f = {FV_VFIELD_OT, NULL, NULL};
    double *theta = NULL, *Theta = NULL, *ts = NULL, *rows = NULL, epsrel;
    size_t nt = 0, B, mc;
    uint64_t seed;
    int st = fv_args_parse(&a, "variance", usage, argc, argv, fv_dist_opts, fv_coupling_opts, fv_rotation_opts,
                           fv_sigma_opts, fv_schedule_opts, variance_opts, NULL);
    if (st < 0)
        return 0;
    if (st || (st = read_times(&a, &ts, &nt)) || (st = fv_args_size(&a, "batch", 1, 1, &B)) ||
        (st = fv_args_size(&a, "mc", 0, fv_args_get(&a, "mc") ? 4 : 0, &mc)) ||
        (st = fv_args_double_in(&a, "epsrel", 1e-10, FV_DOM_UNIT_OPEN, &epsrel)) ||
        (st = fv_args_u64(&a, "seed", 0, &seed)) || (st = fv_cli_problem(&a, &p)) ||
        (st = read_vfield(&a, p.d, &f, &theta, &Theta)) || (st = fv_variance_check(&p, &f)) ||
        (st = check_unused(&a, &p, &f, nt)))
        goto done;
    size_t nrows = nt ? nt : 1, ncols = mc ? 6 : 4;
    if (!(rows = fv_alloc(&st, "--t-grid rows of the table", nrows, ncols, sizeof *rows)))
        goto done;
    for (size_t r = 0; r < nrows && !st; r++)
        st = compute_row(&p, &f, nt ? ts[r] : -1.0, epsrel, B, mc, seed, r, rows + r * ncols);
    if (!st && !(st = write_cov(&a, &p, &f, ts, nt)))
        st = write_table(fv_args_get(&a, "out"), nrows, ncols, rows, nt == 0);
done:
    free(theta);
    free(Theta);
    free(ts);
    free(rows);
    fv_problem_free(&p);
    return st ? fv_cli_fail(st) : 0;
}
