/* cmd_reflow.c: `flowvar reflow`: rounds of ReFlow (train on pairs, re-pair each source with where
 * the trained field takes it) with and without noise, and how far each round moves the coupling
 * toward OT (docs/THEORY.md section 3, Lemma 2 and Remark 2). */
#include "cli/cli.h"
#include "cli/run.h"

#include "core/error.h"
#include "core/io.h"
#include "core/size.h"
#include "gaussian/field.h"
#include "gaussian/ot.h"
#include "nn/cfm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const fv_opt reflow_opts[] = {
    {"rounds", "K", "ReFlow rounds (>= 1); default 3"},
    {"pairs", "N", "training pairs per round (round 0: the problem's --coupling); default 2000"},
    {"sigmas", "LIST", "interpolant noise levels to compare (each >= 0; --sigma is not taken); default 0,0.05"},
    {"steps", "N", "training steps per round; default 2000"},
    {"batch", "B", "batch size; default 256"},
    {"lr", "LR", "Adam learning rate (> 0); default 1e-3"},
    {"width", "N", "MLP width; default 128"},
    {"depth", "N", "MLP hidden layers; default 3"},
    {"euler", "N", "Euler steps when re-pairing; default 100"},
    {"out", "FILE|-", "output TSV FILE, or - for stdout (default)"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "K rounds of ReFlow on a Gaussian problem: round 0 pairs N sources with targets by --coupling (default\n"
    "independent here), each round trains an MLP with CFM(sigma) on the current pairs and re-pairs each\n"
    "source with the end of its trajectory. TSV: round sigma dist_to_ot cost w2_squared, where dist_to_ot\n"
    "= mean |x1 - T_OT(x0)| and cost = mean |x1 - x0|^2 (W2^2 is the cost of the OT coupling).\n"
    "Example: flowvar reflow --target-mean 1,-0.5 --target-cov 2,0.6,0.6,1 --rounds 2";

typedef struct {
    size_t rounds, npairs, steps, batch, width, depth, euler;
    double lr;
    uint64_t seed;
    const char *device;
    int tf32;
} reflow_cfg;

/* Mean distance to the OT map and transport cost of the pairs (a, b). */
static int measure(const fv_field *ot, size_t n, size_t d, const double *a, const double *b, double *dist,
                   double *cost)
{
    fv_field_work w;
    double *T = malloc(n * d * sizeof *T);
    int st = T ? fv_field_work_alloc(&w, d, n) : fv_error(FV_ENOMEM, "out of memory");
    if (st) {
        free(T);
        return st;
    }
    if (!(st = fv_field_map(ot, n, a, T, &w))) {
        *dist = *cost = 0;
        for (size_t i = 0; i < n; i++) {
            double e = 0, c = 0;
            for (size_t j = 0; j < d; j++) {
                e += (b[i * d + j] - T[i * d + j]) * (b[i * d + j] - T[i * d + j]);
                c += (b[i * d + j] - a[i * d + j]) * (b[i * d + j] - a[i * d + j]);
            }
            *dist += sqrt(e) / (double)n;
            *cost += c / (double)n;
        }
    }
    fv_field_work_free(&w);
    free(T);
    return st;
}

/* One ReFlow round: train on (a, b) with noise sigma, then b <- ODE(a). */
static int round_once(const reflow_cfg *c, fv_problem *p, double sigma, uint64_t round, const double *a, double *b)
{
    fv_cfm_data D = {0};
    fv_trainer tr = {0};
    fv_loss_log log = {0};
    size_t d = p->d, n = c->npairs;
    double *b_old = malloc(n * d * sizeof *b_old);
    int st = b_old ? FV_OK : fv_error(FV_ENOMEM, "out of memory");
    if (st)
        return st;
    memcpy(b_old, b, n * d * sizeof *b);
    p->sigma = sigma;
    fv_mlp_config mc = {.d = d, .width = c->width, .depth = c->depth, .act = FV_ACT_SILU, .temb = 0};
    fv_adam_config ac = fv_adam_defaults();
    ac.lr = (float)c->lr;
    fv_train_opts o = {0};
    o.steps = c->steps;
    o.batch = c->batch;
    o.seed = c->seed + 1000 * round;
    o.log_every = 100;
    uint64_t step = 0;
    fv_ode_opts ode = fv_ode_defaults();
    ode.solver = FV_ODE_EULER;
    ode.steps = c->euler;
    if (!(st = fv_cfm_data_init(&D, FV_DATA_PAIRS, p, NULL, n, a, b_old, c->batch)) &&
        !(st = fv_trainer_init(&tr, c->device, &mc, &ac, o.seed, c->batch, c->tf32)) && !(st = fv_cfm_train(&tr, &D, &o, &step, &log))) {
        memcpy(b, a, n * d * sizeof *b);
        st = fv_cfm_integrate(&tr, 0, n, b, &ode);
    }
    fv_loss_log_free(&log);
    fv_trainer_free(&tr);
    fv_cfm_data_free(&D);
    free(b_old);
    return st;
}

static int read_cfg(const fv_args *a, reflow_cfg *c)
{
    int st;
    if ((st = fv_run_device(a, &c->device, &c->tf32)) || (st = fv_args_size(a, "rounds", 3, 1, &c->rounds)) || (st = fv_args_size(a, "pairs", 2000, 2, &c->npairs)) ||
        (st = fv_args_size(a, "steps", 2000, 1, &c->steps)) || (st = fv_args_size(a, "batch", 256, 1, &c->batch)) ||
        (st = fv_args_size(a, "width", 128, 1, &c->width)) || (st = fv_args_size(a, "depth", 3, 1, &c->depth)) ||
        (st = fv_args_size(a, "euler", 100, 1, &c->euler)) ||
        (st = fv_args_double_in(a, "lr", 1e-3, FV_DOM_POSITIVE, &c->lr)) || (st = fv_args_u64(a, "seed", 0, &c->seed)))
        return st;
    const char *coupling = fv_args_get(a, "coupling");
    return coupling && !strcmp(coupling, "rotation") ? FV_OK
                                                     : fv_cli_unused(a, fv_rotation_flags, "without --coupling rotation");
}

int fv_cmd_reflow(int argc, char **argv)
{
    fv_args a;
    fv_problem p = {0};
    fv_field ot = {0};
    fv_cfm_data round0 = {0};
    reflow_cfg c;
    double *sig = NULL, *a0 = NULL, *b0 = NULL, *b = NULL, *rows = NULL, w2sq;
    size_t ns = 0;
    int st = fv_args_parse(&a, "reflow", usage, argc, argv, fv_dist_opts, fv_coupling_opts, fv_rotation_opts,
                           fv_schedule_opts, fv_seed_opts, reflow_opts, fv_device_opts, NULL);
    if (st < 0)
        return 0;
    if (st || (st = read_cfg(&a, &c)) || (st = fv_parse_list(fv_args_get(&a, "sigmas") ? fv_args_get(&a, "sigmas")
                                                                                       : "0,0.05",
                                                             "--sigmas", &sig, &ns)) ||
        (st = fv_cli_problem(&a, &p)))
        goto done;
    for (size_t k = 0; k < ns && !st; k++)
        if (!(sig[k] >= 0))
            st = fv_error(FV_EINPUT, "--sigmas: %g is not >= 0", sig[k]);
    if (!fv_args_get(&a, "coupling"))
        p.coupling = FV_COUPLING_INDEPENDENT;
    size_t n = c.npairs, d = p.d, nrows = ns * (c.rounds + 1);
    if (!st && (a0 = fv_alloc(&st, "--pairs x dimension", n, d, sizeof *a0)) &&
        (b0 = fv_alloc(&st, "--pairs x dimension", n, d, sizeof *b0)) &&
        (b = fv_alloc(&st, "--pairs x dimension", n, d, sizeof *b)))
        rows = malloc(nrows * 5 * sizeof *rows);
    if (!st && !rows)
        st = fv_error(FV_ENOMEM, "out of memory");
    if (st || (st = fv_field_build(&ot, &p, FV_FIELD_OT)) ||
        (st = fv_w2_squared(d, p.m0, p.S0, p.m1, p.S1, &w2sq)) ||
        (st = fv_cfm_data_init(&round0, FV_DATA_PROBLEM, &p, NULL, 0, NULL, NULL, n)) ||
        (st = fv_cfm_pairs(&round0, c.seed, 1ULL << 62, n, a0, b0)))
        goto done;
    for (size_t k = 0; k < ns && !st; k++) {
        memcpy(b, b0, n * d * sizeof *b);
        for (size_t r = 0; r <= c.rounds && !st; r++) {
            double *row = rows + 5 * (k * (c.rounds + 1) + r);
            if (r > 0) {
                fprintf(stderr, "reflow: sigma = %g, round %zu of %zu\n", sig[k], r, c.rounds);
                if ((st = round_once(&c, &p, sig[k], r, a0, b)))
                    break;
            }
            row[0] = (double)r;
            row[1] = sig[k];
            row[4] = w2sq;
            if (!(st = measure(&ot, n, d, a0, b, &row[2], &row[3])) && !(isfinite(row[2]) && isfinite(row[3])))
                st = fv_error(FV_ENUMERIC, "reflow: sigma %g, round %zu: the re-paired targets are not finite (the "
                              "trained field's integration overflowed); nothing written", sig[k], r);
        }
    }
    if (st)
        goto done;
    fv_atomic_file f;
    static const char *const names[] = {"round", "sigma", "dist_to_ot", "cost", "w2_squared"};
    if ((st = fv_atomic_open(&f, fv_args_get(&a, "out") ? fv_args_get(&a, "out") : "-")))
        goto done;
    st = fv_cli_finite("reflow", nrows, 5, rows);
    if (!st)
        st = fv_tsv_header(f.fp, 5, names);
    for (size_t i = 0; i < nrows && !st; i++)
        st = fv_tsv_row(f.fp, 5, rows + 5 * i);
    if (st)
        fv_atomic_abort(&f);
    else
        st = fv_atomic_commit(&f);
done:
    free(sig);
    free(a0);
    free(b0);
    free(b);
    free(rows);
    fv_cfm_data_free(&round0);
    fv_field_free(&ot);
    fv_problem_free(&p);
    return st ? fv_cli_fail(st) : 0;
}
