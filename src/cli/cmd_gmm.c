/* cmd_gmm.c: `flowvar gmm`: Table 1 of the paper on Gaussian mixtures: does CFM with sigma = 0
 * memorize its finite training set, and does sigma = 0.05 generalize better? (THEORY.md section 5) */
#include "cli/cli.h"
#include "cli/run.h"

#include "core/error.h"
#include "core/io.h"
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
    {"pairs", "N", "training pairs (random assignment of sources to mixture samples); default 1000"},
    {"steps", "N", "training steps per model; default 3000 (--full: 20000)"},
    {"full", NULL, "the paper-sized settings of THEORY.md section 5 (20000 steps)"},
    {"batch", "B", "batch size; default 256"},
    {"lr", "LR", "Adam learning rate; default 1e-3"},
    {"width", "N", "MLP width; default 256"},
    {"depth", "N", "MLP hidden layers; default 3"},
    {"samples", "N", "fresh samples for the generalization MMD; default 2000"},
    {"euler", "N", "Euler steps at inference; default 100"},
    {"seed", "N", "seed of mixture, pairs, network and batches; default 0"},
    {"out", "DIR", "also write DIR/table1.tsv (d sigma gen_mmd mem_mmd)"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "Table 1 analogue: for each d and sigma, train an MLP (SiLU, time input) with CFM on N pairs (x0 ~ N(0,I),\n"
    "x1 from a K-component mixture, means ~ N(0, 25 I), covariance 0.25 I), integrate with Euler, and report\n"
    "unbiased Gaussian-kernel MMD^2 (median bandwidth): generalization = outputs from fresh sources vs fresh\n"
    "mixture samples; memorization = outputs from the training sources vs their paired targets.\n"
    "The paper's numbers are printed beside for reference (its exact setup is unknown).";

typedef struct {
    size_t K, npairs, steps, batch, width, depth, samples, euler;
    double lr;
    uint64_t seed;
    const char *device;
    int tf32;
} table_cfg;

/* The paper's Table 1 (THEORY.md section 5), for reference. */
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

/* Train on the pairs and measure both MMDs for one (d, sigma). */
static int one_row(const table_cfg *c, size_t d, double sigma, double *gen, double *mem)
{
    fv_problem p = {0};
    fv_gmm g = {0};
    fv_cfm_data fresh = {0}, data = {0};
    fv_trainer tr = {0};
    fv_loss_log log = {0};
    size_t N = c->npairs, S = c->samples;
    double *a = malloc(N * d * sizeof *a), *b = malloc(N * d * sizeof *b);
    double *X = malloc((N > S ? N : S) * d * sizeof *X), *G = malloc(S * d * sizeof *G);
    int st = (!a || !b || !X || !G) ? fv_error(FV_ENOMEM, "out of memory") : fv_problem_alloc(&p, d);
    if (st)
        goto done;
    p.sigma = sigma;
    p.coupling = FV_COUPLING_INDEPENDENT;
    if ((st = fv_gmm_random(&g, c->K, d, 5.0, 0.25, c->seed)) ||
        (st = fv_cfm_data_init(&fresh, FV_DATA_GMM, &p, &g, 0, NULL, NULL, N)) ||
        (st = fv_cfm_pairs(&fresh, c->seed, 1ULL << 62, N, a, b)) ||
        (st = fv_cfm_data_init(&data, FV_DATA_PAIRS, &p, NULL, N, a, b, c->batch)))
        goto done;
    fv_mlp_config mc = {.d = d, .width = c->width, .depth = c->depth, .act = FV_ACT_SILU, .temb = 0};
    fv_adam_config ac = fv_adam_defaults();
    ac.lr = (float)c->lr;
    fv_train_opts o = {0};
    o.steps = c->steps;
    o.batch = c->batch;
    o.seed = c->seed;
    o.log_every = 100;
    uint64_t step = 0;
    fv_ode_opts ode = fv_ode_defaults();
    ode.solver = FV_ODE_EULER;
    ode.steps = c->euler;
    if ((st = fv_trainer_init(&tr, c->device, &mc, &ac, c->seed, c->batch, c->tf32)) ||
        (st = fv_cfm_train(&tr, &data, &o, &step, &log)))
        goto done;
    /* memorization: from the training sources to their own targets */
    memcpy(X, a, N * d * sizeof *X);
    if ((st = fv_cfm_integrate(&tr, 0, N, X, &ode)) || (st = fv_mmd2_unbiased(N, N, d, X, b, 0.0, mem, NULL)))
        goto done;
    /* generalization: fresh sources against fresh mixture samples */
    fv_rng r = fv_rng_make(c->seed, (1ULL << 62) + 7);
    if ((st = fv_gaussian_sample(d, p.m0, p.S0, S, &r, X)) || (st = fv_gmm_sample(&g, S, &r, G, NULL)) ||
        (st = fv_cfm_integrate(&tr, 0, S, X, &ode)))
        goto done;
    st = fv_mmd2_unbiased(S, S, d, X, G, 0.0, gen, NULL);
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
    int st;
    size_t def_steps = fv_args_flag(a, "full") ? 20000 : 3000;
    if ((st = fv_run_device(a, &c->device, &c->tf32)) || (st = fv_args_size(a, "components", 8, 1, &c->K)) || (st = fv_args_size(a, "pairs", 1000, 2, &c->npairs)) ||
        (st = fv_args_size(a, "steps", def_steps, 1, &c->steps)) || (st = fv_args_size(a, "batch", 256, 1, &c->batch)) ||
        (st = fv_args_size(a, "width", 256, 1, &c->width)) || (st = fv_args_size(a, "depth", 3, 1, &c->depth)) ||
        (st = fv_args_size(a, "samples", 2000, 2, &c->samples)) || (st = fv_args_size(a, "euler", 100, 1, &c->euler)) ||
        (st = fv_args_double(a, "lr", 1e-3, &c->lr)) || (st = fv_args_u64(a, "seed", 0, &c->seed)))
        return st;
    if (!(c->lr > 0))
        return fv_error(FV_EINPUT, "--lr must be > 0");
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

static int write_table(const char *dir, size_t nrows, const double *rows)
{
    char path[4096];
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return fv_error(FV_EIO, "%s: cannot create folder: %s", dir, strerror(errno));
    snprintf(path, sizeof path, "%s/table1.tsv", dir);
    fv_atomic_file f;
    static const char *const names[] = {"d", "sigma", "gen_mmd", "mem_mmd"};
    int st = fv_atomic_open(&f, path);
    if (st)
        return st;
    st = fv_tsv_header(f.fp, 4, names);
    for (size_t i = 0; i < nrows && !st; i++)
        st = fv_tsv_row(f.fp, 4, rows + 4 * i);
    if (st) {
        fv_atomic_abort(&f);
        return st;
    }
    return fv_atomic_commit(&f);
}

int fv_cmd_gmm(int argc, char **argv)
{
    fv_args a;
    table_cfg c;
    double *dims = NULL, *sigmas = NULL, *rows = NULL;
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
    if (st || !(rows = malloc(nd * ns * 4 * sizeof *rows))) {
        st = st ? st : fv_error(FV_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nd && !st; i++)
        for (size_t j = 0; j < ns && !st; j++) {
            double *row = rows + 4 * (i * ns + j);
            row[0] = dims[i];
            row[1] = sigmas[j];
            fprintf(stderr, "gmm: d = %g, sigma = %g\n", dims[i], sigmas[j]);
            st = one_row(&c, (size_t)dims[i], sigmas[j], &row[2], &row[3]);
        }
    if (st)
        goto done;
    printf("# Table 1 analogue: %zu pairs, %zu steps, MLP %zu x %zu SiLU, Euler %zu, MMD^2 unbiased (median bandwidth)\n",
           c.npairs, c.steps, c.depth, c.width, c.euler);
    printf("d\tsigma\tgen_mmd\tmem_mmd\tpaper_gen\tpaper_mem\n");
    for (size_t k = 0; k < nd * ns; k++) {
        double pg, pm, *row = rows + 4 * k;
        paper_values((size_t)row[0], row[1], &pg, &pm);
        printf("%g\t%g\t%.4g\t%.4g\t%.4g\t%.4g\n", row[0], row[1], row[2], row[3], pg, pm);
    }
    if (fv_args_get(&a, "out"))
        st = write_table(fv_args_get(&a, "out"), nd * ns, rows);
done:
    free(dims);
    free(sigmas);
    free(rows);
    return st ? fv_cli_fail(st) : 0;
}
