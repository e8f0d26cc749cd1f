/* cmd_gmm.c: `flowvar gmm`: Table 1 of the paper on Gaussian mixtures: does CFM with sigma = 0
 * memorize its finite training set, and does sigma = 0.05 generalize better? (docs/THEORY.md section 5) */
#include "cli/cli.h"
#include "cli/run.h"

#include "core/error.h"
#include "core/io.h"
#include "core/size.h"
#include "gmm/mixture.h"
#include "gmm/mmd.h"
#include "nn/cfm.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const fv_opt gmm_opts[] = {
    {"dims", "LIST", "dimensions; default 3,50"},
    {"sigmas", "LIST", "interpolant noise levels; default 0,0.05"},
    {"components", "K", "mixture components; default 8"},
    {"pairs", "N", "training pairs (random assignment of sources to mixture samples); default 100"},
    {"steps", "N", "training steps per model; default 8000 (--full: 20000)"},
    {"full", NULL, "the paper-sized training of docs/THEORY.md section 5 (20000 steps) and 3 seeds"},
    {"seeds", "K", "independent repetitions (seeds seed, seed+1, ...); the table shows their means; default 1"},
    {"batch", "B", "batch size; default 256"},
    {"lr", "LR", "Adam learning rate; default 3e-3"},
    {"lr-decay", "cosine|none", "learning-rate schedule: cosine decay to 0 over --steps (default) or constant"},
    {"width", "N", "MLP width; default 256"},
    {"depth", "N", "MLP hidden layers; default 3"},
    {"fourier", "M", "random Fourier input features of [x, t] (0: the plain MLP on [x, t]); default 128"},
    {"fourier-scale", "S", "spread of the Fourier frequencies, N(0, S^2); default 3"},
    {"mmd", "biased|unbiased", "MMD^2 estimator: biased (V-statistic, 0 for identical samples; default) or unbiased"},
    {"hit", "R", "a training source is memorized when its end point is within R of its own target; default 0.1"},
    {"samples", "N", "fresh samples for the generalization MMD; default 2000"},
    {"euler", "N", "Euler steps at inference; default 100"},
    {"seed", "N", "seed of mixture, pairs, network and batches; default 0"},
    {"out", "DIR", "also write DIR/table1.tsv (d sigma gen_mmd mem_mmd: means over seeds) and\n"
                   "      DIR/table1_runs.tsv (d sigma seed gen_mmd mem_mmd mem_l2 mem_hit: every run)"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "Table 1 analogue: for each d and sigma, train an MLP (SiLU, [x, t] input with random Fourier features)\n"
    "with CFM on N pairs (x0 ~ N(0,I), x1 from a K-component mixture, means ~ N(0, 25 I), covariance 0.25 I),\n"
    "integrate with Euler and report Gaussian-kernel MMD^2 (median bandwidth): generalization = outputs from\n"
    "fresh sources vs fresh mixture samples; memorization = outputs from the training sources vs their paired\n"
    "targets; also the mean distance of those outputs to their own targets (mem_l2) and the fraction within\n"
    "--hit of it (mem_hit). The paper's numbers are printed beside for reference (its exact setup is unknown;\n"
    "why these defaults: README, \"Table 1\"). Under the table, for each d, the paper's two orderings between\n"
    "the first sigma and each other one, with the number of seeds that show them.";

typedef struct {
    size_t K, npairs, steps, batch, width, depth, samples, euler, seeds, fourier;
    double lr, fourier_scale, hit;
    int biased, cosine;
    uint64_t seed;
    const char *device;
    int tf32;
} table_cfg;

/* One trained model's measurements. */
typedef struct {
    double gen, mem, mem_l2, mem_hit;
} row_result;

/* The paper's Table 1 (docs/THEORY.md section 5), for reference. */
static void paper_values(size_t d, double sigma, double *gen, double *mem)
{
    *gen = *mem = NAN;
    if (d == 3 && sigma == 0.0)
        *gen = 0.0034, *mem = 1.758e-6;
    if (d == 3 && sigma == 0.05)
        *gen = 0.0018, *mem = 3.105e-5;
    if (d == 50 && sigma == 0.0)
        *gen = 0.0021, *mem = 9.089e-6;
    if (d == 50 && sigma == 0.05)
        *gen = 0.0020, *mem = 6.09e-5;
}

static int mmd2(const table_cfg *c, size_t n, size_t d, const double *X, const double *Y, double *out)
{
    return c->biased ? fv_mmd2_biased(n, n, d, X, Y, 0.0, out, NULL) : fv_mmd2_unbiased(n, n, d, X, Y, 0.0, out, NULL);
}

/* Mean |y_i - x1_i| over the training pairs, and the fraction of them within r. */
static void paired_distances(size_t N, size_t d, const double *Y, const double *X1, double r, row_result *res)
{
    double sum = 0.0;
    size_t hits = 0;
    for (size_t i = 0; i < N; i++) {
        double s2 = 0.0;
        for (size_t k = 0; k < d; k++)
            s2 += (Y[i * d + k] - X1[i * d + k]) * (Y[i * d + k] - X1[i * d + k]);
        sum += sqrt(s2);
        hits += sqrt(s2) <= r;
    }
    res->mem_l2 = sum / (double)N;
    res->mem_hit = (double)hits / (double)N;
}

/* Train on the pairs drawn under `seed` and measure one (d, sigma). */
static int one_row(const table_cfg *c, size_t d, double sigma, uint64_t seed, row_result *res)
{
    fv_problem p = {0};
    fv_gmm g = {0};
    fv_cfm_data fresh = {0}, data = {0};
    fv_trainer tr = {0};
    fv_loss_log log = {0};
    size_t N = c->npairs, S = c->samples;
    int st;
    double *a = fv_alloc(&st, "--pairs x dimension", N, d, sizeof *a), *b = NULL, *X = NULL, *G = NULL;
    if (a && (b = fv_alloc(&st, "--pairs x dimension", N, d, sizeof *b)) &&
        (X = fv_alloc(&st, "--pairs or --samples x dimension", N > S ? N : S, d, sizeof *X)))
        G = fv_alloc(&st, "--samples x dimension", S, d, sizeof *G);
    if (st || (st = fv_problem_alloc(&p, d)))
        goto done;
    p.sigma = sigma;
    p.coupling = FV_COUPLING_INDEPENDENT;
    if ((st = fv_gmm_random(&g, c->K, d, 5.0, 0.25, seed)) ||
        (st = fv_cfm_data_init(&fresh, FV_DATA_GMM, &p, &g, 0, NULL, NULL, N)) ||
        (st = fv_cfm_pairs(&fresh, seed, 1ULL << 62, N, a, b)) ||
        (st = fv_cfm_data_init(&data, FV_DATA_PAIRS, &p, NULL, N, a, b, c->batch)))
        goto done;
    fv_mlp_config mc = {.d = d,
                        .width = c->width,
                        .depth = c->depth,
                        .act = FV_ACT_SILU,
                        .fourier = c->fourier,
                        .fourier_scale = (float)c->fourier_scale};
    fv_adam_config ac = fv_adam_defaults();
    ac.lr = (float)c->lr;
    ac.cosine = c->cosine ? c->steps : 0;
    fv_train_opts o = {0};
    o.steps = c->steps;
    o.batch = c->batch;
    o.seed = seed;
    o.log_every = 100;
    uint64_t step = 0;
    fv_ode_opts ode = fv_ode_defaults();
    ode.solver = FV_ODE_EULER;
    ode.steps = c->euler;
    if ((st = fv_trainer_init(&tr, c->device, &mc, &ac, seed, c->batch, c->tf32)) ||
        (st = fv_cfm_train(&tr, &data, &o, &step, &log)))
        goto done;
    /* memorization: from the training sources to their own targets */
    memcpy(X, a, N * d * sizeof *X);
    if ((st = fv_cfm_integrate(&tr, 0, N, X, &ode)) || (st = mmd2(c, N, d, X, b, &res->mem)))
        goto done;
    paired_distances(N, d, X, b, c->hit, res);
    /* generalization: fresh sources against fresh mixture samples */
    fv_rng r = fv_rng_make(seed, (1ULL << 62) + 7);
    if ((st = fv_gaussian_sample(d, p.m0, p.S0, S, &r, X)) || (st = fv_gmm_sample(&g, S, &r, G, NULL)) ||
        (st = fv_cfm_integrate(&tr, 0, S, X, &ode)))
        goto done;
    st = mmd2(c, S, d, X, G, &res->gen);
done:
    free(a);
    free(b);
    free(X);
    free(G);
    fv_loss_log_free(&log);
    fv_trainer_free(&tr);
    fv_cfm_data_free(&data);
    fv_cfm_data_free(&fresh);
    fv_gmm_free(&g);
    fv_problem_free(&p);
    return st;
}

static int read_cfg(const fv_args *a, table_cfg *c)
{
    static const char *const estimators[] = {"unbiased", "biased", NULL};
    static const char *const schedules[] = {"none", "cosine", NULL};
    int full = fv_args_flag(a, "full"), st;
    if ((st = fv_run_device(a, &c->device, &c->tf32)) || (st = fv_args_size(a, "components", 8, 1, &c->K)) ||
        (st = fv_args_size(a, "pairs", 100, 2, &c->npairs)) ||
        (st = fv_args_size(a, "steps", full ? 20000 : 8000, 1, &c->steps)) ||
        (st = fv_args_size(a, "seeds", full ? 3 : 1, 1, &c->seeds)) ||
        (st = fv_args_size(a, "batch", 256, 1, &c->batch)) || (st = fv_args_size(a, "width", 256, 1, &c->width)) ||
        (st = fv_args_size(a, "depth", 3, 1, &c->depth)) || (st = fv_args_size(a, "fourier", 128, 0, &c->fourier)) ||
        (st = fv_args_double(a, "fourier-scale", 3.0, &c->fourier_scale)) ||
        (st = fv_args_choice(a, "mmd", estimators, 1, &c->biased)) ||
        (st = fv_args_choice(a, "lr-decay", schedules, 1, &c->cosine)) ||
        (st = fv_args_double(a, "hit", 0.1, &c->hit)) || (st = fv_args_size(a, "samples", 2000, 2, &c->samples)) ||
        (st = fv_args_size(a, "euler", 100, 1, &c->euler)) || (st = fv_args_double(a, "lr", 3e-3, &c->lr)) ||
        (st = fv_args_u64(a, "seed", 0, &c->seed)))
        return st;
    if (!(c->lr > 0))
        return fv_error(FV_EINPUT, "--lr must be > 0");
    if (!(c->fourier_scale > 0 && c->fourier_scale < 1e30))
        return fv_error(FV_EINPUT, "--fourier-scale must be a positive number (got %g)", c->fourier_scale);
    if (!(c->hit > 0 && c->hit < 1e300))
        return fv_error(FV_EINPUT, "--hit must be a positive distance (got %g)", c->hit);
    return FV_OK;
}

/* A comma-list flag, or its default when absent. */
static int read_list(const fv_args *a, const char *name, const char *def, double **v, size_t *n)
{
    const char *s = fv_args_get(a, name);
    char what[32];
    snprintf(what, sizeof what, "--%s", name);
    return fv_parse_list(s ? s : def, what, v, n);
}

/* DIR/NAME as a TSV (cli.h's fv_cli_write_tsv). */
static int write_tsv(const char *dir, const char *name, size_t ncol, const char *const *names, size_t nrows,
                     const double *rows)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return fv_cli_write_tsv(path, ncol, names, nrows, rows);
}

#define RUN_COLS 7 /* d sigma seed gen_mmd mem_mmd mem_l2 mem_hit */

/* Means over the seeds of one (d, sigma) cell's runs, and the sample standard deviation (0 for one run). */
static void cell_stats(const double *runs, size_t seeds, size_t col, double *mean, double *sd)
{
    double s = 0.0, s2 = 0.0;
    for (size_t k = 0; k < seeds; k++)
        s += runs[k * RUN_COLS + col];
    *mean = s / (double)seeds;
    for (size_t k = 0; k < seeds; k++)
        s2 += (runs[k * RUN_COLS + col] - *mean) * (runs[k * RUN_COLS + col] - *mean);
    *sd = seeds > 1 ? sqrt(s2 / (double)(seeds - 1)) : 0.0;
}

/* A paper value, or "-" where the paper has none (the table holds no NaN). */
static void print_paper(double v)
{
    if (isnan(v))
        printf("\t-");
    else
        printf("\t%.4g", v);
}

static void print_table(const table_cfg *c, size_t ncell, const double *runs)
{
    printf("# Table 1 analogue: %zu pairs, %zu steps (lr %g, %s), MLP %zu x %zu SiLU, %zu Fourier features (scale %g),\n"
           "# Euler %zu, MMD^2 %s (median bandwidth), mean over %zu seed%s (+- standard deviation); mem_hit: within %g "
           "of the own target\n",
           c->npairs, c->steps, c->lr, c->cosine ? "cosine decay" : "constant", c->depth, c->width, c->fourier,
           c->fourier_scale, c->euler, c->biased ? "biased" : "unbiased", c->seeds, c->seeds > 1 ? "s" : "", c->hit);
    printf("d\tsigma\tgen_mmd\tmem_mmd\tmem_l2\tmem_hit\tpaper_gen\tpaper_mem\n");
    for (size_t k = 0; k < ncell; k++) {
        const double *first = runs + k * c->seeds * RUN_COLS;
        double pg, pm, mean[4], sd[4];
        for (size_t j = 0; j < 4; j++)
            cell_stats(first, c->seeds, 3 + j, &mean[j], &sd[j]);
        paper_values((size_t)first[0], first[1], &pg, &pm);
        printf("%g\t%g", first[0], first[1]);
        for (size_t j = 0; j < 4; j++)
            printf(c->seeds > 1 ? "\t%.4g +- %.2g" : "\t%.4g", mean[j], sd[j]);
        print_paper(pg);
        print_paper(pm);
        printf("\n");
    }
}

/* The paper's claims, checked per dimension between the first listed sigma (sigma_0, 0 by default) and each
 * other: memorization reproduced when sigma_0's memorization MMD^2 is lower in EVERY seed (same seed = same
 * mixture and pairs, so the runs are paired); generalization when the other sigma's mean MMD^2 is no higher. */
static void print_orderings(const table_cfg *c, const double *dims, size_t nd, const double *sigmas, size_t ns,
                            const double *runs)
{
    for (size_t i = 0; i < nd; i++)
        for (size_t j = 1; j < ns; j++) {
            const double *r0 = runs + i * ns * c->seeds * RUN_COLS, *r1 = runs + (i * ns + j) * c->seeds * RUN_COLS;
            double m0, m1, g0, g1, sd, pg0, pm0, pg1, pm1;
            size_t mem_lower = 0, gen_ok = 0;
            for (size_t k = 0; k < c->seeds; k++) {
                mem_lower += r0[k * RUN_COLS + 4] < r1[k * RUN_COLS + 4];
                gen_ok += r1[k * RUN_COLS + 3] <= r0[k * RUN_COLS + 3];
            }
            cell_stats(r0, c->seeds, 4, &m0, &sd);
            cell_stats(r1, c->seeds, 4, &m1, &sd);
            cell_stats(r0, c->seeds, 3, &g0, &sd);
            cell_stats(r1, c->seeds, 3, &g1, &sd);
            paper_values((size_t)dims[i], sigmas[0], &pg0, &pm0);
            paper_values((size_t)dims[i], sigmas[j], &pg1, &pm1);
            char pmem[48] = "", pgen[48] = "";
            if (!isnan(pm0 + pm1))
                snprintf(pmem, sizeof pmem, " (paper %.3g)", pm1 / pm0);
            if (!isnan(pg0 + pg1))
                snprintf(pgen, sizeof pgen, " (paper %.4g vs %.4g)", pg0, pg1);
            char ratio[32] = "undefined (sigma_0's is 0)";
            if (m0 > 0)
                snprintf(ratio, sizeof ratio, "%.3g", m1 / m0);
            printf("# d = %g, sigma %g vs %g: memorization MMD^2 ratio %s%s, sigma %g lower in %zu of %zu seed%s: %s\n",
                   dims[i], sigmas[0], sigmas[j], ratio, pmem, sigmas[0], mem_lower, c->seeds, c->seeds > 1 ? "s" : "",
                   mem_lower == c->seeds ? "memorization ordering reproduced" : "NOT reproduced");
            printf("# d = %g, sigma %g vs %g: generalization MMD^2 %.4g vs %.4g%s, sigma %g at least as good in %zu of "
                   "%zu seed%s: %s\n",
                   dims[i], sigmas[0], sigmas[j], g0, g1, pgen, sigmas[j], gen_ok, c->seeds, c->seeds > 1 ? "s" : "",
                   g1 <= g0 ? "generalization ordering reproduced (means)" : "NOT reproduced (means)");
        }
}

static int write_tables(const char *dir, const table_cfg *c, size_t ncell, const double *runs)
{
    static const char *const names[] = {"d", "sigma", "gen_mmd", "mem_mmd"};
    static const char *const run_names[RUN_COLS] = {"d", "sigma", "seed", "gen_mmd", "mem_mmd", "mem_l2", "mem_hit"};
    double *means = malloc(ncell * 4 * sizeof *means), sd;
    if (!means)
        return fv_error(FV_ENOMEM, "out of memory");
    for (size_t k = 0; k < ncell; k++) {
        const double *first = runs + k * c->seeds * RUN_COLS;
        means[4 * k] = first[0];
        means[4 * k + 1] = first[1];
        cell_stats(first, c->seeds, 3, &means[4 * k + 2], &sd);
        cell_stats(first, c->seeds, 4, &means[4 * k + 3], &sd);
    }
    int st = FV_OK;
    if (fv_mkdirs(dir) != 0 && errno != EEXIST)
        st = fv_error(FV_EIO, "%s: cannot create folder: %s", dir, strerror(errno));
    if (!st)
        st = write_tsv(dir, "table1.tsv", 4, names, ncell, means);
    if (!st)
        st = write_tsv(dir, "table1_runs.tsv", RUN_COLS, run_names, ncell * c->seeds, runs);
    free(means);
    return st;
}

int fv_cmd_gmm(int argc, char **argv)
{
    fv_args a;
    table_cfg c;
    double *dims = NULL, *sigmas = NULL, *runs = NULL;
    size_t nd = 0, ns = 0;
    int st = fv_args_parse(&a, "gmm", usage, argc, argv, gmm_opts, fv_device_opts, NULL);
    if (st < 0)
        return 0;
    if (st || (st = read_cfg(&a, &c)) || (st = read_list(&a, "dims", "3,50", &dims, &nd)) ||
        (st = read_list(&a, "sigmas", "0,0.05", &sigmas, &ns)))
        goto done;
    for (size_t i = 0; i < nd && !st; i++)
        if (!(dims[i] >= 1 && dims[i] == floor(dims[i])))
            st = fv_error(FV_EINPUT, "--dims: %g is not a dimension", dims[i]);
    for (size_t j = 0; j < ns && !st; j++)
        if (!(sigmas[j] >= 0))
            st = fv_error(FV_EINPUT, "--sigmas: %g is not >= 0", sigmas[j]);
    if (st || !(runs = malloc(nd * ns * c.seeds * RUN_COLS * sizeof *runs))) {
        st = st ? st : fv_error(FV_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nd && !st; i++)
        for (size_t j = 0; j < ns && !st; j++)
            for (size_t k = 0; k < c.seeds && !st; k++) {
                double *row = runs + ((i * ns + j) * c.seeds + k) * RUN_COLS;
                row_result res;
                uint64_t seed = c.seed + k;
                fprintf(stderr, "gmm: d = %g, sigma = %g, seed %llu\n", dims[i], sigmas[j], (unsigned long long)seed);
                st = one_row(&c, (size_t)dims[i], sigmas[j], seed, &res);
                double vals[RUN_COLS] = {dims[i], sigmas[j], (double)seed, res.gen, res.mem, res.mem_l2, res.mem_hit};
                memcpy(row, vals, sizeof vals);
            }
    if (st || (st = fv_cli_finite("gmm: the runs' table", nd * ns * c.seeds, RUN_COLS, runs)))
        goto done;
    print_table(&c, nd * ns, runs);
    print_orderings(&c, dims, nd, sigmas, ns, runs);
    if (fv_args_get(&a, "out"))
        st = write_tables(fv_args_get(&a, "out"), &c, nd * ns, runs);
done:
    free(dims);
    free(sigmas);
    free(runs);
    return st ? fv_cli_fail(st) : 0;
}
