/* cmd_figures.c: `flowvar figures`: compute the data of every variance figure as TSV, then draw each
 * with its gnuplot script from plots/ as PNG and SVG. Data and pictures land side by side in --out. */
#include "cli/cli.h"

#include "core/error.h"
#include "core/io.h"
#include "core/progress.h"
#include "gaussian/claims.h"
#include "gaussian/crossover.h"
#include "gaussian/field.h"
#include "gaussian/variance.h"
#include "gmm/kernel_field.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const fv_opt figures_opts[] = {
    {"out", "DIR", "output folder (created if missing); default figures"},
    {"plots", "DIR", "folder of the gnuplot scripts; default: $FLOWVAR_PLOTS, else plots/ beside the binary"},
    {"mc", "N", "Monte-Carlo samples behind each error bar; default 20000"},
    {"seed", "N", "random seed of the Monte-Carlo error bars; default 0"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "Regenerate the variance figures on the reference problem of docs/THEORY.md section 4 (mu = (1,-0.5),\n"
    "M = [[2,0.6],[0.6,1]]): fig4 (OT vs rotational field over sigma, 120 deg), fig5 (independent vs\n"
    "120 deg coupling over t), phase (sigma* over the angle for three covariances), angle (variance over\n"
    "the angle for several sigma), vs_t (variance over t for each coupling/field pair), dim (variance\n"
    "over the dimension), fig6 (trajectories of the 180 deg coupling: pairs, memorizing field, OT), quiver\n"
    "(v_OT against v_rotation at four times). Writes NAME.tsv, NAME.png and NAME.svg into --out.";

typedef struct {
    const char *dir;
    size_t mc;
    uint64_t seed;
    fv_progress bar;
} figctx;

/* DIR/NAME.tsv, written atomically: NULL (with the error set) when it cannot be created. */
static FILE *open_tsv(const figctx *c, const char *name, const char *header, fv_atomic_file *af)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.tsv", c->dir, name);
    if (fv_atomic_open(af, path))
        return NULL;
    fprintf(af->fp, "%s\n", header);
    return af->fp;
}

/* Commit the table when its computation succeeded, else drop it; returns the first failure. */
static int finish_tsv(fv_atomic_file *af, int st)
{
    if (st) {
        fv_atomic_abort(af);
        return st;
    }
    return fv_atomic_commit(af);
}

/* Tab-separated values after a row's first column; a value that does not exist (NaN: a divergent integral,
 * a singular time, no crossing) is written "-", the plots' missing-data mark, so every number is finite. */
static void put_values(FILE *f, size_t n, const double *v)
{
    for (size_t i = 0; i < n; i++) {
        if (isfinite(v[i]))
            fprintf(f, "\t%.10g", v[i]);
        else
            fputs("\t-", f);
    }
}

/* Integrated variance of a field on the reference problem; NaN where it diverges. */
static int ref_integrated(double deg, fv_coupling coupling, fv_vfield_kind kind, double sigma, double *v)
{
    int st = fv_reference_variance(deg, coupling, kind, sigma, 1e-9, v);
    return st == FV_EDIVERGE ? FV_OK : st;
}

/* Monte-Carlo estimate and standard error on the reference problem (t < 0: t ~ U(0,1)). */
static int ref_mc(const figctx *c, double deg, fv_coupling coupling, fv_vfield_kind kind, double sigma, double t,
                  uint64_t stream, double *est, double *se)
{
    fv_problem p;
    fv_vfield f = {kind, NULL, NULL};
    fv_mc m;
    int st = fv_problem_reference(&p, deg, sigma);
    if (st)
        return st;
    p.coupling = coupling;
    st = fv_variance_mc(&p, &f, t, c->mc, c->seed, stream, &m);
    *est = m.var_total;
    *se = m.se_total;
    fv_problem_free(&p);
    return st;
}

/* Fig. 4: integrated variance of the OT and the rotational field against sigma, 120 deg data. */
static int fig4(figctx *c)
{
    fv_atomic_file af;
    FILE *f = open_tsv(c, "fig4", "sigma\tvar_ot\tvar_rot\tmc_ot\tse_ot\tmc_rot\tse_rot", &af);
    if (!f)
        return FV_EIO;
    int st = FV_OK;
    for (int k = 0; k <= 20 && !st; k++) {
        double s = 0.025 * k, vo, vr, mo, so, mr, sr;
        if (!(st = ref_integrated(120, FV_COUPLING_ROTATION, FV_VFIELD_OT, s, &vo)) &&
            !(st = ref_integrated(120, FV_COUPLING_ROTATION, FV_VFIELD_ROTATION, s, &vr)) &&
            !(st = ref_mc(c, 120, FV_COUPLING_ROTATION, FV_VFIELD_OT, s, -1, 2 * (uint64_t)k, &mo, &so)) &&
            !(st = ref_mc(c, 120, FV_COUPLING_ROTATION, FV_VFIELD_ROTATION, s, -1, 2 * (uint64_t)k + 1, &mr, &sr))) {
            fprintf(f, "%g", s);
            put_values(f, 6, (const double[]){vo, vr, mo, so, mr, sr});
            fputc('\n', f);
        }
        fv_progress_step(&c->bar, 1, "fig4");
    }
    return finish_tsv(&af, st);
}

/* Per-time variance on the reference problem at one t. */
static int ref_at(double deg, fv_coupling coupling, fv_vfield_kind kind, double sigma, double t, double *v)
{
    fv_problem p;
    fv_vfield f = {kind, NULL, NULL};
    fv_var r;
    int st = fv_problem_reference(&p, deg, sigma);
    if (st)
        return st;
    p.coupling = coupling;
    st = fv_variance_at(&p, &f, t, &r, NULL, NULL);
    *v = st == FV_OK ? r.var_total : NAN;
    fv_problem_free(&p);
    return st == FV_ESINGULAR ? FV_OK : st;
}

/* Fig. 5: the OT field's variance over t on the independent and on the 120 deg coupling, sigma 0. */
static int fig5(figctx *c)
{
    fv_atomic_file af;
    FILE *f = open_tsv(c, "fig5", "t\tvar_indep\tvar_rot120\tmc_indep\tse_indep\tmc_rot120\tse_rot120", &af);
    if (!f)
        return FV_EIO;
    int st = FV_OK;
    for (int k = 0; k < 20 && !st; k++) {
        double t = (k + 0.5) / 20, vi, vr, mi, si, mr, sr;
        if (!(st = ref_at(120, FV_COUPLING_INDEPENDENT, FV_VFIELD_OT, 0.0, t, &vi)) &&
            !(st = ref_at(120, FV_COUPLING_ROTATION, FV_VFIELD_OT, 0.0, t, &vr)) &&
            !(st = ref_mc(c, 120, FV_COUPLING_INDEPENDENT, FV_VFIELD_OT, 0.0, t, 100 + 2 * (uint64_t)k, &mi, &si)) &&
            !(st = ref_mc(c, 120, FV_COUPLING_ROTATION, FV_VFIELD_OT, 0.0, t, 101 + 2 * (uint64_t)k, &mr, &sr))) {
            fprintf(f, "%g", t);
            put_values(f, 6, (const double[]){vi, vr, mi, si, mr, sr});
            fputc('\n', f);
        }
        fv_progress_step(&c->bar, 1, "fig5");
    }
    return finish_tsv(&af, st);
}

/* Phase diagram: sigma*(angle) for three target covariances (NaN: no crossing or divergence). */
static int phase(figctx *c)
{
    static const double covs[3][4] = {{2, 0.6, 0.6, 1}, {1, 0, 0, 1}, {4, 1, 1, 0.5}};
    fv_atomic_file af;
    FILE *f = open_tsv(c, "phase", "angle\tsigma_star_ref\tsigma_star_iso\tsigma_star_aniso", &af);
    if (!f)
        return FV_EIO;
    int st = FV_OK;
    for (int deg = 5; deg <= 180 && !st; deg += 5) {
        fprintf(f, "%d", deg);
        for (int m = 0; m < 3 && !st; m++) {
            fv_problem p;
            double s = NAN;
            int found = 0;
            if ((st = fv_problem_reference(&p, deg, 0.0)))
                break;
            memcpy(p.S1, covs[m], sizeof covs[m]);
            st = fv_crossover_sigma(&p, 2.0, 40, 1e-6, 1e-9, &s, &found);
            if (st == FV_EDIVERGE)
                st = FV_OK;
            put_values(f, 1, (const double[]){found ? s : NAN});
            fv_problem_free(&p);
        }
        fprintf(f, "\n");
        fv_progress_step(&c->bar, 1, "phase");
    }
    return finish_tsv(&af, st);
}

/* Integrated variance of both fields against the angle, for several sigma. */
static int angle(figctx *c)
{
    static const double sig[4] = {0.0, 0.05, 0.1, 0.3};
    fv_atomic_file af;
    FILE *f = open_tsv(c, "angle",
                       "angle\tot_s0\trot_s0\tot_s0.05\trot_s0.05\tot_s0.1\trot_s0.1\tot_s0.3\trot_s0.3", &af);
    if (!f)
        return FV_EIO;
    int st = FV_OK;
    for (int deg = 0; deg <= 180 && !st; deg += 5) {
        fprintf(f, "%d", deg);
        for (int k = 0; k < 4 && !st; k++) {
            double vo, vr;
            if (!(st = ref_integrated(deg, FV_COUPLING_ROTATION, FV_VFIELD_OT, sig[k], &vo)) &&
                !(st = ref_integrated(deg, FV_COUPLING_ROTATION, FV_VFIELD_ROTATION, sig[k], &vr)))
                put_values(f, 2, (const double[]){vo, vr});
        }
        fprintf(f, "\n");
        fv_progress_step(&c->bar, 1, "angle");
    }
    return finish_tsv(&af, st);
}

/* Variance over t for each coupling/field pair, sigma = 0.05. */
static int vs_t(figctx *c)
{
    fv_atomic_file af;
    FILE *f = open_tsv(c, "vs_t", "t\tot_data.ot_field\trot120_data.ot_field\trot120_data.rot_field\t"
                       "indep_data.ot_field\tindep_data.markov_field", &af);
    if (!f)
        return FV_EIO;
    int st = FV_OK;
    for (int k = 0; k < 100 && !st; k++) {
        double t = (k + 0.5) / 100, v[5];
        if (!(st = ref_at(120, FV_COUPLING_OT, FV_VFIELD_OT, 0.05, t, &v[0])) &&
            !(st = ref_at(120, FV_COUPLING_ROTATION, FV_VFIELD_OT, 0.05, t, &v[1])) &&
            !(st = ref_at(120, FV_COUPLING_ROTATION, FV_VFIELD_ROTATION, 0.05, t, &v[2])) &&
            !(st = ref_at(120, FV_COUPLING_INDEPENDENT, FV_VFIELD_OT, 0.05, t, &v[3])) &&
            !(st = ref_at(120, FV_COUPLING_INDEPENDENT, FV_VFIELD_MARKOV, 0.05, t, &v[4]))) {
            fprintf(f, "%g", t);
            put_values(f, 5, v);
            fputc('\n', f);
        }
        if (k % 20 == 19)
            fv_progress_step(&c->bar, 1, "vs_t");
    }
    return finish_tsv(&af, st);
}

/* Variance against the dimension: random target (fixed seeds), 120 deg block rotations, sigma 0.05. */
static int dim(figctx *c)
{
    static const size_t dims[] = {2, 4, 8, 16, 32, 64};
    fv_atomic_file af;
    FILE *f = open_tsv(c, "dim", "d\trot120_data.ot_field\trot120_data.rot_field\tindep_data.ot_field", &af);
    if (!f)
        return FV_EIO;
    int st = FV_OK;
    for (size_t k = 0; k < 6 && !st; k++) {
        size_t d = dims[k];
        fv_problem p;
        fv_rng g = fv_rng_make(500, 0);
        if ((st = fv_problem_alloc(&p, d)))
            break;
        fv_rng_normal(&g, d, p.m1);
        fv_random_spd(d, 0.3, &g, p.S1);
        p.sigma = 0.05;
        p.R = malloc(d * d * sizeof *p.R);
        if (!p.R) {
            fv_problem_free(&p);
            st = fv_error(FV_ENOMEM, "out of memory");
            break;
        }
        fv_rotation_blocks(d, 120, p.R);
        const fv_coupling cp[3] = {FV_COUPLING_ROTATION, FV_COUPLING_ROTATION, FV_COUPLING_INDEPENDENT};
        const fv_vfield_kind fk[3] = {FV_VFIELD_OT, FV_VFIELD_ROTATION, FV_VFIELD_OT};
        fprintf(f, "%zu", d);
        for (int j = 0; j < 3 && !st; j++) {
            fv_vfield vf = {fk[j], NULL, NULL};
            fv_var r;
            p.coupling = cp[j];
            st = fv_variance_integrated(&p, &vf, 1e-8, &r, NULL);
            put_values(f, 1, (const double[]){st == FV_OK ? r.var_total : NAN});
            if (st == FV_EDIVERGE)
                st = FV_OK;
        }
        fprintf(f, "\n");
        fv_problem_free(&p);
        fv_progress_step(&c->bar, 1, "dim");
    }
    return finish_tsv(&af, st);
}

/* Fig. 6: for 12 pairs of the 180 deg coupling N(0,I) -> N(5,I) (b = -a + 5), the straight pair
 * lines, the paths of the memorizing field (s = 0, Euler 101 steps) and the OT paths a + 5t; one
 * block per pair (blank lines between). */
static int fig6(figctx *c)
{
    enum { NP = 12, STEPS = 101 };
    double a[NP * 2], b[NP * 2], X[NP * 2], path_mem[(STEPS + 1) * NP * 2];
    fv_rng g = fv_rng_make(600, 0);
    fv_rng_normal(&g, NP * 2, a);
    for (int i = 0; i < NP * 2; i++)
        b[i] = -a[i] + 5.0;
    memcpy(X, a, sizeof X);
    memcpy(path_mem, a, sizeof X);
    fv_kernel_field k = {NP, 2, a, b, 0.0};
    int st = FV_OK;
    for (int s = 0; s < STEPS && !st; s++) {
        fv_ode_opts o = fv_ode_defaults();
        o.solver = FV_ODE_EULER;
        o.steps = 1;
        o.t0 = (double)s / STEPS;
        o.t1 = (double)(s + 1) / STEPS;
        st = fv_kernel_field_transport(&k, NP, X, &o);
        memcpy(path_mem + (size_t)(s + 1) * NP * 2, X, sizeof X);
    }
    if (st)
        return st;
    fv_atomic_file af;
    FILE *f = open_tsv(c, "fig6", "pair\tt\tline_x\tline_y\tmem_x\tmem_y\tot_x\tot_y", &af);
    if (!f)
        return FV_EIO;
    for (int i = 0; i < NP; i++) {
        for (int s = 0; s <= STEPS; s++) {
            double t = (double)s / STEPS, *m = path_mem + ((size_t)s * NP + i) * 2;
            fprintf(f, "%d\t%.6g\t%.10g\t%.10g\t%.10g\t%.10g\t%.10g\t%.10g\n", i, t,
                    (1 - t) * a[2 * i] + t * b[2 * i], (1 - t) * a[2 * i + 1] + t * b[2 * i + 1], m[0], m[1],
                    a[2 * i] + 5 * t, a[2 * i + 1] + 5 * t);
        }
        fprintf(f, "\n\n");
    }
    fv_progress_step(&c->bar, 1, "fig6");
    return finish_tsv(&af, FV_OK);
}

/* v_OT and v_rotation (120 deg) on a 9 x 9 grid at t = 0, 0.3, 0.6, 0.9; one block per time. */
static int quiver(figctx *c)
{
    enum { G = 9 };
    static const double ts[4] = {0.0, 0.3, 0.6, 0.9};
    double X[G * G * 2], Vo[G * G * 2], Vr[G * G * 2];
    for (int i = 0; i < G; i++)
        for (int j = 0; j < G; j++) {
            X[(i * G + j) * 2] = -2.5 + 5.0 * i / (G - 1);
            X[(i * G + j) * 2 + 1] = -2.5 + 5.0 * j / (G - 1);
        }
    fv_problem p;
    fv_field fo = {0}, fr = {0};
    fv_field_work w = {0};
    int st = fv_problem_reference(&p, 120, 0.0);
    if (!st && !(st = fv_field_build(&fo, &p, FV_FIELD_OT)) && !(st = fv_field_build(&fr, &p, FV_FIELD_ROTATION)))
        st = fv_field_work_alloc(&w, 2, G * G);
    fv_atomic_file af;
    FILE *f = st ? NULL : open_tsv(c, "quiver", "t\tx\ty\tu_ot\tv_ot\tu_rot\tv_rot", &af);
    if (!st && !f)
        st = FV_EIO;
    for (int k = 0; k < 4 && !st; k++) {
        if ((st = fv_field_eval(&fo, ts[k], G * G, X, Vo, &w)) || (st = fv_field_eval(&fr, ts[k], G * G, X, Vr, &w)))
            break;
        for (int i = 0; i < G * G; i++)
            fprintf(f, "%g\t%g\t%g\t%.8g\t%.8g\t%.8g\t%.8g\n", ts[k], X[2 * i], X[2 * i + 1], Vo[2 * i],
                    Vo[2 * i + 1], Vr[2 * i], Vr[2 * i + 1]);
        fprintf(f, "\n\n");
    }
    fv_field_work_free(&w);
    fv_field_free(&fo);
    fv_field_free(&fr);
    fv_problem_free(&p);
    fv_progress_step(&c->bar, 1, "quiver");
    return f ? finish_tsv(&af, st) : st;
}

int fv_cmd_figures(int argc, char **argv)
{
    typedef int (*figure_fn)(figctx *);
    static const struct {
        const char *name;
        figure_fn fn;
        size_t steps;
    } figs[] = {{"fig4", fig4, 21}, {"fig5", fig5, 20},  {"phase", phase, 36}, {"angle", angle, 37},
                {"vs_t", vs_t, 5},  {"dim", dim, 6},     {"fig6", fig6, 1},    {"quiver", quiver, 1}};
    fv_args a;
    figctx c = {0};
    char plots[PATH_MAX];
    int st = fv_args_parse(&a, "figures", usage, argc, argv, figures_opts, NULL);
    if (st < 0)
        return 0;
    if (st || (st = fv_args_size(&a, "mc", 20000, 4, &c.mc)) || (st = fv_args_u64(&a, "seed", 0, &c.seed)) ||
        (st = fv_cli_find_plots(&a, plots, sizeof plots)))
        return fv_cli_fail(st);
    c.dir = fv_args_get(&a, "out") ? fv_args_get(&a, "out") : "figures";
    if (fv_mkdirs(c.dir) != 0 && errno != EEXIST)
        return fv_cli_fail(fv_error(FV_EIO, "%s: cannot create folder: %s", c.dir, strerror(errno)));
    size_t total = 0;
    for (size_t i = 0; i < sizeof figs / sizeof *figs; i++)
        total += figs[i].steps;
    fv_progress_start(&c.bar, "figures", total);
    for (size_t i = 0; i < sizeof figs / sizeof *figs && !st; i++)
        if (!(st = figs[i].fn(&c)))
            st = fv_cli_draw(plots, c.dir, figs[i].name);
    fv_progress_end(&c.bar);
    if (st)
        return fv_cli_fail(st);
    printf("figures: wrote %zu figures (TSV, PNG, SVG) into %s\n", sizeof figs / sizeof *figs, c.dir);
    return 0;
}
