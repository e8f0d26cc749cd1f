/* cmd_gap.c: `flowvar gap`: the approximation gap of a trained field against a closed form or the empirical
 * minimizer v* of its finite training set (with the network's loss and the loss floor beside it), over t,
 * and `flowvar gradvar`: the per-sample gradient variance of the network's weights over t. */
#include "cli/cli.h"

#include "cli/run.h"
#include "core/error.h"
#include "core/io.h"
#include "core/progress.h"
#include "core/size.h"
#include "data/png.h"
#include "gaussian/empirical.h"
#include "gaussian/variance.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const fv_opt gap_opts[] = {
    {"run", "DIR", "the training run (required; a Gaussian problem, or an image set)"},
    {"field", "ot|rotation|markov|empirical",
     "closed form to compare with; default: the run's coupling's field (images: ot); empirical: the exact\n"
     "      minimizer v* of an image run's training set (docs/THEORY.md section 7), adding the columns loss,\n"
     "      loss_se (the network's E|u - v_net|^2) and floor, floor_se (L*(t) = E|u - v*|^2) on the same rows"},
    {"t-grid", "N", "N times (k + 0.5)/N (N >= 1); default 20"},
    {"n", "N", "rows of the interpolant per time (>= 2); default 4096"},
    {"no-ema", NULL, "use the live weights even when the run keeps an EMA"},
    {"seed", "N", "seed of the evaluation draws; default 1"},
    {"fit-floor", "F", "image runs: eigenvalue floor of the Gaussian fit, relative to the largest, in (0, 1); default\n"
                       "      1e-6"},
    {"samples-png", "FILE", "image runs: a PNG FILE of 16 sources integrated by the network and by the closed form,\n"
                            "      side by side"},
    {"ode-steps", "N", "with --samples-png: Euler steps of the network's integration (>= 1); default 100"},
    {"out", "DIR", "also write DIR/gap.tsv and the figure DIR/gap.png, DIR/gap.svg (the TSV always goes to stdout;\n"
                   "      --field empirical: DIR/gap_empirical.tsv, .png, .svg, the loss, floor and gap over t)"},
    {"plots", "DIR", "folder of the gnuplot scripts (see flowvar figures --help)"},
    {NULL, NULL, NULL},
};

static const char gap_usage[] =
    "Approximation gap E|v_net(X_t, t) - v_closed(X_t, t)|^2 over t, X_t from the run's own interpolant,\n"
    "against the Lemma 1 OT field, the rotational pair field or the Markov field of the run's problem;\n"
    "for a run on images, of the problem between N(0, I) and the images' Gaussian fit (in the run's\n"
    "direction): the U-Net against Gaussian Fashion-MNIST's exact field. With --field empirical, against\n"
    "the field that memorizes the run's images; then loss = floor + gap up to Monte-Carlo error (every\n"
    "column summed over coordinates; train's logged loss is the loss divided by d).\n"
    "TSV: t gap gap_se [loss loss_se floor floor_se]. Example: flowvar gap --run run --field ot --out gapdir";

/* The closed form to compare with: --field, else the pair field of the run's coupling (Markov for
 * the independent coupling); for an image run the Lemma 1 field of its fit unless --field markov. */
int fv_run_closed_field(const fv_args *a, const fv_run *r, fv_field *f, fv_problem *fitp)
{
    if (r->has_gmm)
        return fv_error(FV_EINPUT, "the run's target is a mixture: no closed-form field to compare with");
    fv_field_kind kind = fv_run_fitted(r)                        ? FV_FIELD_OT
                         : r->p.coupling == FV_COUPLING_OT       ? FV_FIELD_OT
                         : r->p.coupling == FV_COUPLING_ROTATION ? FV_FIELD_ROTATION
                                                                 : FV_FIELD_MARKOV;
    int st = fv_args_get(a, "field") ? fv_cli_field_kind(a, &kind) : FV_OK;
    if (st || !fv_run_fitted(r))
        return st ? st : fv_field_build(f, &r->p, kind);
    if (kind == FV_FIELD_ROTATION)
        return fv_error(FV_EINPUT, "--field rotation: an image run has no rotational coupling (use ot or markov)");
    double floor;
    if ((st = fv_args_double_in(a, "fit-floor", FV_FIT_DEFAULT_FLOOR, FV_DOM_UNIT_OPEN, &floor)) ||
        (st = fv_run_fit_problem(r, floor, kind == FV_FIELD_OT ? FV_COUPLING_OT : FV_COUPLING_INDEPENDENT, fitp, NULL)))
        return st;
    return fv_field_build(f, fitp, kind);
}

/* --samples-png: the same 16 sources through the network (Euler) and through the closed form's exact
 * transport map (the OT map of the fit), as two rows of 8 above two more. */
static int samples_png(const fv_args *a, fv_run *r, const fv_problem *fitp)
{
    enum { N = 16 };
    size_t d = r->p.d, steps;
    uint64_t seed;
    int st;
    if (!r->has_ds)
        return fv_error(FV_EINPUT, "--samples-png is for runs on an image set");
    if ((st = fv_args_size(a, "ode-steps", 100, 1, &steps)) || (st = fv_args_u64(a, "seed", 1, &seed)))
        return st;
    double *X = malloc(3 * N * d * sizeof *X), *net = X + N * d, *exact = net + N * d;
    float *cells = malloc(2 * N * d * sizeof *cells);
    fv_field ot = {0};
    fv_field_work w = {0};
    if (!X || !cells)
        st = fv_error(FV_ENOMEM, "out of memory");
    if (!st && !(st = fv_run_fresh_sources(r, N, seed, X))) {
        memcpy(net, X, N * d * sizeof *X);
        fv_ode_opts o = fv_ode_defaults();
        o.solver = FV_ODE_EULER;
        o.steps = steps;
        if (!(st = fv_cfm_integrate(&r->tr, !fv_args_flag(a, "no-ema"), N, net, &o)) &&
            !(st = fv_field_build(&ot, fitp, FV_FIELD_OT)) && !(st = fv_field_work_alloc(&w, d, N)) &&
            !(st = fv_field_map(&ot, N, X, exact, &w)))
            st = fv_cli_finite("gap --samples-png: the network's end points", N, d, net);
    }
    if (!st) {
        for (size_t i = 0; i < N; i++) { /* rows: net 0-7, exact 0-7, net 8-15, exact 8-15 */
            size_t row = i / 8, col = i % 8;
            for (size_t j = 0; j < d; j++) {
                cells[((2 * row) * 8 + col) * d + j] = (float)net[i * d + j];
                cells[((2 * row + 1) * 8 + col) * d + j] = (float)exact[i * d + j];
            }
        }
        st = fv_png_write_grid(fv_args_get(a, "samples-png"), 2 * N, r->ds.c, r->ds.h, r->ds.w, cells, 4, 8, 2);
    }
    fv_field_work_free(&w);
    fv_field_free(&ot);
    free(cells);
    free(X);
    return st;
}

/* Print the TSV; with --out also write DIR/NAME.tsv and draw it with plots/NAME.gp. */
static int emit(const fv_args *a, const char *name, size_t ncols, const char *const *names, size_t nrows,
                const double *rows)
{
    const char *dir = fv_args_get(a, "out");
    int st = fv_cli_write_tsv("-", ncols, names, nrows, rows);
    if (st || !dir)
        return st;
    char path[4096], plots[4096];
    if (fv_mkdirs(dir) != 0 && errno != EEXIST)
        return fv_error(FV_EIO, "%s: cannot create folder: %s", dir, strerror(errno));
    snprintf(path, sizeof path, "%s/%s.tsv", dir, name);
    st = fv_cli_write_tsv(path, ncols, names, nrows, rows);
    if (!st && !(st = fv_cli_find_plots(a, plots, sizeof plots)))
        st = fv_cli_draw(plots, dir, name);
    return st;
}

/* Mean and standard error of the n numbers a into out[0], out[1]. */
static void mean_se(size_t n, const double *a, double *out)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i];
    out[0] = s / (double)n;
    for (size_t i = 0; i < n; i++)
        s2 += (a[i] - out[0]) * (a[i] - out[0]);
    out[1] = sqrt(s2 / (double)(n - 1) / (double)n);
}

/* Scratch of gap_at for n rows of dimension d. */
typedef struct {
    double *x01, *xd, *vs, *q; /* x0 and x1 (2 n d), x_t as doubles, v* (n d each), per-row terms (3 n) */
    float *xt, *u, *v, *tt;
    double *buf;
    float *fbuf;
} gap_rows;

static int gap_rows_alloc(gap_rows *g, size_t n, size_t d)
{
    int st;
    memset(g, 0, sizeof *g);
    size_t nd;
    if ((st = fv_size_mul(&nd, "--n rows x dimension", n, d)) ||
        !(g->buf = fv_alloc(&st, "--n rows of the interpolant", 4 * nd + 3 * n, 1, sizeof *g->buf)) ||
        !(g->fbuf = fv_alloc(&st, "--n rows of the interpolant", 3 * nd + n, 1, sizeof *g->fbuf)))
        return st;
    g->x01 = g->buf;
    g->xd = g->x01 + 2 * nd;
    g->vs = g->xd + nd;
    g->q = g->vs + nd;
    g->xt = g->fbuf;
    g->u = g->xt + nd;
    g->v = g->u + nd;
    g->tt = g->v + nd;
    return FV_OK;
}

static void gap_rows_free(gap_rows *g)
{
    free(g->buf);
    free(g->fbuf);
}

/* One time of --field empirical: n rows of the run's own interpolant (the stream of the closed-form gap,
 * (seed, k)), the network and v* at them, and row k of the table: t, gap, loss, floor with their
 * standard errors. */
static int gap_at(fv_run *r, int use_ema, const fv_empirical *e, fv_empirical_work *w, gap_rows *g, double t,
                  size_t n, uint64_t seed, size_t k, double *row)
{
    size_t d = r->p.d;
    int st = fv_cfm_pairs(&r->data, seed, k, n, g->x01, g->x01 + n * d);
    if (st)
        return st;
    fv_cfm_interpolate(r->data.p, seed, k, t, n, d, g->x01, g->x01 + n * d, g->xt, g->tt, g->u);
    if ((st = r->tr.ops->predict(&r->tr, use_ema, n, g->xt, g->tt, g->v)))
        return st;
    for (size_t i = 0; i < n * d; i++)
        g->xd[i] = g->xt[i];
    if ((st = fv_empirical_eval(e, t, n, g->xd, g->vs, w)))
        return st;
    double *gap = g->q, *loss = gap + n, *floor = loss + n;
    for (size_t i = 0; i < n; i++) {
        gap[i] = loss[i] = floor[i] = 0;
        for (size_t j = 0; j < d; j++) {
            double v = g->v[i * d + j], u = g->u[i * d + j], vs = g->vs[i * d + j];
            gap[i] += (v - vs) * (v - vs);
            loss[i] += (u - v) * (u - v);
            floor[i] += (u - vs) * (u - vs);
        }
    }
    row[0] = t;
    for (int c = 0; c < 3; c++)
        mean_se(n, g->q + c * n, row + 1 + 2 * c);
    if (fv_cli_first_nonfinite(7, row) < 7)
        return fv_error(FV_ENUMERIC, "gap: at t = %g the network's output overflows on the interpolant's rows "
                        "(gap %g, loss %g); nothing written", t, row[1], row[3]);
    return FV_OK;
}

/* --field empirical: the run must train on a finite set of images with a Gaussian at the other end. */
static int gap_empirical(const fv_args *a, fv_run *r, size_t nt, size_t n, uint64_t seed)
{
    fv_empirical e = {0};
    fv_empirical_work w = {0};
    gap_rows g = {0};
    double *rows = NULL;
    int st = fv_cli_unused(a, (const char *const[]){"fit-floor", "samples-png", NULL}, "with --field empirical");
    if (st)
        return st;
    if (r->data.kind != FV_DATA_TARGETS)
        return fv_error(FV_EINPUT, "--field empirical: the run does not train on a finite data set with a Gaussian at "
                        "the other end (only a run on --data without --map does); it has no empirical minimizer");
    size_t ny;
    const float *Y = fv_run_targets(r, &ny);
    if ((st = fv_empirical_build_f32(&e, &r->p, r->reverse ? FV_EMP_BACKWARD : FV_EMP_FORWARD, ny, Y)) ||
        (st = fv_empirical_work_alloc(&w, &e, 0)) || (st = gap_rows_alloc(&g, n, r->p.d)) ||
        !(rows = fv_alloc(&st, "--t-grid rows", nt, 7, sizeof *rows)))
        goto done;
    fv_progress bar;
    fv_progress_start(&bar, "gap", nt);
    for (size_t k = 0; k < nt && !st; k++) {
        st = gap_at(r, !fv_args_flag(a, "no-ema"), &e, &w, &g, ((double)k + 0.5) / (double)nt, n, seed, k,
                    rows + 7 * k);
        fv_progress_step(&bar, 1, NULL);
    }
    fv_progress_end(&bar);
    static const char *const names[] = {"t", "gap", "gap_se", "loss", "loss_se", "floor", "floor_se"};
    if (!st)
        st = emit(a, "gap_empirical", 7, names, nt, rows);
done:
    free(rows);
    gap_rows_free(&g);
    fv_empirical_work_free(&w);
    fv_empirical_free(&e);
    return st;
}

int fv_cmd_gap(int argc, char **argv)
{
    fv_args a;
    fv_run r = {0};
    fv_field f = {0};
    fv_problem fitp = {0};
    double *rows = NULL;
    size_t nt, n;
    uint64_t seed;
    int st = fv_args_parse(&a, "gap", gap_usage, argc, argv, gap_opts, fv_device_opts, NULL);
    if (st < 0)
        return 0;
    if (!st && !fv_args_get(&a, "run"))
        st = fv_error(FV_EINPUT, "--run DIR is required");
    if (st || (st = fv_args_size(&a, "t-grid", 20, 1, &nt)) || (st = fv_args_size(&a, "n", 4096, 2, &n)) ||
        (st = fv_args_u64(&a, "seed", 1, &seed)) || (st = fv_run_open(&r, fv_args_get(&a, "run"), NULL, &a)) ||
        (!fv_run_fitted(&r) && (st = fv_cli_unused(&a, (const char *const[]){"fit-floor", NULL}, "for a run without --data"))) ||
        (!fv_args_get(&a, "samples-png") &&
         (st = fv_cli_unused(&a, (const char *const[]){"ode-steps", NULL}, "without --samples-png"))) ||
        (st = fv_run_check_rows(&r, "--n", n)))
        goto done;
    if (fv_cli_field_is_empirical(&a)) {
        st = gap_empirical(&a, &r, nt, n, seed);
        goto done;
    }
    if ((st = fv_run_closed_field(&a, &r, &f, &fitp)))
        goto done;
    if (fv_args_get(&a, "samples-png") && (st = samples_png(&a, &r, &fitp)))
        goto done;
    if (!(rows = fv_alloc(&st, "--t-grid rows", nt, 3, sizeof *rows)))
        goto done;
    for (size_t k = 0; k < nt && !st; k++) {
        fv_estimate e;
        double t = ((double)k + 0.5) / (double)nt;
        if (!(st = fv_cfm_gap(&r.tr, !fv_args_flag(&a, "no-ema"), &r.data, &f, t, n, seed, k, &e)) &&
            !(isfinite(e.mean) && isfinite(e.se)))
            st = fv_error(FV_ENUMERIC, "gap: at t = %g the gap is %g +- %g: the network's output (or the closed form) "
                          "overflows on the interpolant's rows there; nothing written", t, e.mean, e.se);
        if (!st) {
            rows[3 * k] = t;
            rows[3 * k + 1] = e.mean;
            rows[3 * k + 2] = e.se;
        }
    }
    static const char *const names[] = {"t", "gap", "gap_se"};
    if (!st)
        st = emit(&a, "gap", 3, names, nt, rows);
done:
    free(rows);
    fv_field_free(&f);
    fv_problem_free(&fitp);
    fv_run_free(&r);
    return st ? fv_cli_fail(st) : 0;
}

static const fv_opt gradvar_opts[] = {
    {"run", "DIR", "the training run (required)"},
    {"t-grid", "N", "N times (k + 0.5)/N (N >= 1); default 20"},
    {"n", "N", "rows per time, drawn as --groups independent batches (at least 2 per group); default 4096"},
    {"groups", "G", "independent batches per time (>= 2): var is their mean, var_se its standard error; default 8"},
    {"exact", NULL, "add exact_var: the exact variance of the Lemma 1 family's OT member on the run's problem (image\n"
                    "      runs: the problem to the images' Gaussian fit, independent coupling, the run's noise)"},
    {"exact-field", "ot|markov", "with --exact: the member, the OT field (default) or the Markov field (what I-CFM\n"
                                 "      training converges to; slower with a general source: O(d^3) per time)"},
    {"fit-floor", "F", "image runs: eigenvalue floor of the Gaussian fit, relative to the largest; default 1e-6"},
    {"seed", "N", "seed of the evaluation draws; default 1"},
    {"out", "FILE|-", "output TSV FILE, or - for stdout (default)"},
    {NULL, NULL, NULL},
};

static const char gradvar_usage[] =
    "Per-sample gradient variance of the network weights, trace Cov[grad_w |u - v_w(X_t, t)|^2], at a grid\n"
    "of t and over t ~ U(0,1) (the last row, t = 'integrated'): an MLP's from the exact per-row gradient\n"
    "norms of its linear layers, a U-Net's from one backward pass per row (slow: use a few hundred rows).\n"
    "Each time's rows come in G independent batches; var is the mean of their unbiased estimates.\n"
    "TSV: t var var_se [exact_var]. Example: flowvar gradvar --run run";

/* --exact: the closed-form variance (gaussian/variance.h) of the OT or Markov member at the nt grid
 * times into exact[0..nt-1], integrated over t into exact[nt]. */
static int exact_variance(const fv_args *a, const fv_run *r, size_t nt, double *exact)
{
    fv_problem fitp = {0};
    const fv_problem *p = &r->p;
    double floor;
    int st = FV_OK;
    if (r->has_gmm)
        return fv_error(FV_EINPUT, "--exact: the run's target is a mixture (no closed form)");
    if (fv_run_fitted(r) && !(st = fv_args_double_in(a, "fit-floor", FV_FIT_DEFAULT_FLOOR, FV_DOM_UNIT_OPEN, &floor)) &&
        !(st = fv_run_fit_problem(r, floor, FV_COUPLING_INDEPENDENT, &fitp, NULL)))
        p = &fitp;
    static const char *const members[] = {"ot", "markov", NULL};
    int member;
    if (!st && (st = fv_args_choice(a, "exact-field", members, 0, &member)))
        return st;
    fv_vfield f = {member ? FV_VFIELD_MARKOV : FV_VFIELD_OT, NULL, NULL};
    double *ts = malloc(nt * sizeof *ts);
    fv_var *v = malloc((nt + 1) * sizeof *v);
    if (!st && (!ts || !v))
        st = fv_error(FV_ENOMEM, "out of memory");
    for (size_t k = 0; !st && k < nt; k++)
        ts[k] = ((double)k + 0.5) / (double)nt;
    if (!st && !(st = fv_variance_check(p, &f)) && !(st = fv_variance_at_times(p, &f, nt, ts, v)))
        st = fv_variance_integrated(p, &f, 1e-6, &v[nt], NULL);
    for (size_t k = 0; !st && k <= nt; k++)
        exact[k] = v[k].var_total;
    free(ts);
    free(v);
    fv_problem_free(&fitp);
    return st ? fv_error_context(st, "--exact: ") : FV_OK;
}

/* The variance at time t (< 0: t ~ U(0,1)) from G batches of m rows, batch g drawn as step k G + g. */
static int variance_at(fv_run *r, double t, size_t k, size_t G, size_t m, uint64_t seed, double *mean, double *se)
{
    double s = 0, s2 = 0;
    for (size_t g = 0; g < G; g++) {
        double v;
        int st = fv_cfm_grad_variance(&r->tr, &r->data, t, m, seed, k * G + g, &v);
        if (st)
            return st;
        if (!isfinite(v)) {
            char when[48] = "over t ~ U(0,1)";
            if (t >= 0)
                snprintf(when, sizeof when, "at t = %g", t);
            return fv_error(FV_ENUMERIC, "gradvar: %s, batch %zu of %zu: the gradient variance is %g: the network's "
                            "per-row gradients overflow there; nothing written", when, g + 1, G, v);
        }
        s += v;
        s2 += v * v;
    }
    *mean = s / (double)G;
    *se = sqrt(fmax(s2 - (double)G * *mean * *mean, 0.0) / ((double)G * (double)(G - 1)));
    return FV_OK;
}

int fv_cmd_gradvar(int argc, char **argv)
{
    fv_args a;
    fv_run r = {0};
    size_t nt, n, G;
    uint64_t seed;
    double *rows = NULL;
    int st = fv_args_parse(&a, "gradvar", gradvar_usage, argc, argv, gradvar_opts, fv_device_opts, NULL);
    if (st < 0)
        return 0;
    if (!st && !fv_args_get(&a, "run"))
        st = fv_error(FV_EINPUT, "--run DIR is required");
    if (st || (st = fv_args_size(&a, "t-grid", 20, 1, &nt)) || (st = fv_args_size(&a, "groups", 8, 2, &G)) ||
        (st = fv_args_size(&a, "n", 4096, 2 * G, &n)) || (st = fv_args_u64(&a, "seed", 1, &seed)) ||
        (!fv_args_flag(&a, "exact") &&
         (st = fv_cli_unused(&a, (const char *const[]){"exact-field", "fit-floor", NULL}, "without --exact"))) ||
        (st = fv_run_open(&r, fv_args_get(&a, "run"), NULL, &a)) ||
        (!fv_run_fitted(&r) && (st = fv_cli_unused(&a, (const char *const[]){"fit-floor", NULL}, "for a run without --data"))) ||
        (st = fv_run_check_rows(&r, "--n", n)))
        goto done;
    size_t bytes; /* the grid is checked before its extra row, so that --t-grid SIZE_MAX cannot wrap */
    if ((st = fv_size_bytes(&bytes, "--t-grid rows", nt, 4, sizeof *rows)) ||
        !(rows = fv_alloc(&st, "--t-grid rows", nt + 1, 4, sizeof *rows)))
        goto done;
    double *exact = rows + 3 * (nt + 1);
    int with_exact = fv_args_flag(&a, "exact");
    if (with_exact && (st = exact_variance(&a, &r, nt, exact))) /* first: it may refuse the run */
        goto done;
    fv_progress bar;
    fv_progress_start(&bar, "gradvar", nt + 1);
    for (size_t k = 0; k <= nt && !st; k++) {
        double t = k < nt ? ((double)k + 0.5) / (double)nt : -1.0;
        rows[3 * k] = t;
        st = variance_at(&r, t, k, G, n / G, seed, &rows[3 * k + 1], &rows[3 * k + 2]);
        fv_progress_step(&bar, 1, NULL);
    }
    fv_progress_end(&bar);
    if (st || (st = fv_cli_finite("gradvar", nt + 1, 3, rows)) ||
        (with_exact && (st = fv_cli_finite("gradvar: exact_var", nt + 1, 1, exact))))
        goto done;
    fv_atomic_file f;
    if ((st = fv_atomic_open(&f, fv_args_get(&a, "out") ? fv_args_get(&a, "out") : "-")))
        goto done;
    fprintf(f.fp, "t\tvar\tvar_se%s\n", with_exact ? "\texact_var" : "");
    for (size_t k = 0; k <= nt; k++) {
        if (k < nt)
            fprintf(f.fp, "%.10g", rows[3 * k]);
        else
            fprintf(f.fp, "integrated");
        fprintf(f.fp, "\t%.10g\t%.10g", rows[3 * k + 1], rows[3 * k + 2]);
        if (with_exact)
            fprintf(f.fp, "\t%.10g", exact[k]);
        fprintf(f.fp, "\n");
    }
    st = fv_atomic_commit(&f);
done:
    free(rows);
    fv_run_free(&r);
    return st ? fv_cli_fail(st) : 0;
}
