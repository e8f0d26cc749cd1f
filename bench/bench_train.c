/* bench_train.c: CFM training steps per second of flowvar's CPU trainer (src/nn/trainer.h, cfm.h),
 * its achieved GFLOP/s, and OpenBLAS sgemm's rate in the same process; prints TSV on stdout for
 * bench/report_train.py (progress on stderr). Issue 16: at least 2x PyTorch's steps/s (bench/peer_train.py,
 * same MLP, batch and optimizer) and a step at most 2x its GEMM floor (the step's own sgemm calls).
 *
 * Problem: standard source N(0, I) to N(mu, M), M = fv_random_spd(d, 0.5), mu Gaussian, independent
 * coupling, no noise (x_t = (1-t) x0 + t x1, u = x1 - x0, t ~ U(0,1) per row); batch B. Network: MLP
 * d = 50, 3 hidden layers of 256, SiLU, t as an extra input (51 -> 256 -> 256 -> 256 -> 50), Adam lr 1e-3
 * (torch defaults otherwise: no warmup, clipping or EMA).
 *
 * Timed:
 *   train  fv_cfm_train from step W to W + N (after W warm-up steps), REPS times; one fv_cfm_train call
 *          of N updates makes N + 1 forward/backward passes (the last validates the final state), so
 *          its time is divided by N and slightly overstates a step's cost (by 1/N of a forward/backward).
 *   phases the same step written out (fv_cfm_pairs, fv_cfm_interpolate, loss_grad split into forward,
 *          loss and backward, update), each phase timed, N steps (once); then forward and backward
 *          replayed with mlp.h's layer functions, each kind timed (N steps); the data generation's parts
 *          (square root, normals in bulk and one at a time); malloc + free of cpu_loss_grad's buffer.
 *   sgemm  cblas_sgemm on S x S x S (S = 2048 by default) and on 256 x 256 x 256, and the exact list of
 *          sgemm calls (shapes and transposes) of one training step, replayed.
 * FLOPs of a step: 2 B in out per linear layer forward, twice that backward (dW and dinp) except dinp of
 * the first layer (the input needs no gradient): 3 F - 2 B in0 out0 with F = 2 B sum(in out).
 *
 * Usage: bench_train [--steps N] [--warmup W] [--reps R] [--batch B] [--gemm-size S]
 * Rows: "meta KEY VALUE", "steps train|phases REP SECONDS_PER_STEP", "phase NAME SECONDS_PER_STEP",
 * "layer NAME SECONDS_PER_STEP", "data NAME SECONDS_PER_CALL", "sgemm NAME GFLOPS_MEDIAN GFLOPS_MAX". */
#include "core/error.h"
#include "core/linalg.h"
#include "core/rng.h"
#include "gaussian/problem.h"
#include "nn/cfm.h"
#include "nn/mlp.h"
#include "nn/trainer.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define D 50
#define WIDTH 256
#define DEPTH 3
#define SEED 20251021ULL
#define MAX_REPS 64

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *t, size_t n)
{
    qsort(t, n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static void check(int st, const char *what)
{
    if (st) {
        fprintf(stderr, "bench_train: %s failed: %s: %s\n", what, fv_status_name(st), fv_last_error());
        exit(1);
    }
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "bench_train: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---- sgemm rates ----------------------------------------------------------------------------- */

typedef struct {
    int ta, tb, m, n, k; /* row-major C (m x n) = op(A) op(B), op(X) = X^T when tX */
} gemm_shape;

/* The sgemm calls of one step of the MLP (mlp.c): forward out = in W^T per layer; backward
 * dW = dout^T in per layer and dinp = dout W for every layer but the first. */
static size_t step_gemms(const fv_mlp *m, size_t B, gemm_shape *g)
{
    size_t n = 0;
    for (size_t l = 0; l < m->nlayers; l++)
        g[n++] = (gemm_shape){0, 1, (int)B, (int)m->out[l], (int)m->in[l]};
    for (size_t l = m->nlayers; l-- > 0;) {
        g[n++] = (gemm_shape){1, 0, (int)m->out[l], (int)m->in[l], (int)B};
        if (l)
            g[n++] = (gemm_shape){0, 0, (int)B, (int)m->in[l], (int)m->out[l]};
    }
    return n;
}

static double gemm_flops(const gemm_shape *g, size_t n)
{
    double f = 0;
    for (size_t i = 0; i < n; i++)
        f += 2.0 * g[i].m * g[i].n * g[i].k;
    return f;
}

/* Run the list once on buffers big enough for every shape (values are irrelevant to the rate). */
static void run_gemms(const gemm_shape *g, size_t n, const float *A, const float *Bm, float *C)
{
    for (size_t i = 0; i < n; i++) {
        int lda = g[i].ta ? g[i].m : g[i].k, ldb = g[i].tb ? g[i].k : g[i].n;
        cblas_sgemm(CblasRowMajor, g[i].ta ? CblasTrans : CblasNoTrans, g[i].tb ? CblasTrans : CblasNoTrans, g[i].m,
                    g[i].n, g[i].k, 1.0f, A, lda, Bm, ldb, 0.0f, C, g[i].n);
    }
}

/* GFLOP/s of the list: `reps` timed runs after one warm-up; median and best. */
static void gemm_rate(const char *name, const gemm_shape *g, size_t n, size_t maxdim, int reps)
{
    float *A = xcalloc(maxdim * maxdim, sizeof *A), *Bm = xcalloc(maxdim * maxdim, sizeof *Bm),
          *C = xcalloc(maxdim * maxdim, sizeof *C);
    for (size_t i = 0; i < maxdim * maxdim; i++) {
        A[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
        Bm[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
    }
    double flops = gemm_flops(g, n), t[MAX_REPS], best = 0;
    reps = reps > MAX_REPS ? MAX_REPS : reps;
    run_gemms(g, n, A, Bm, C);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        run_gemms(g, n, A, Bm, C);
        t[r] = flops / (now() - t0) * 1e-9;
        best = t[r] > best ? t[r] : best;
    }
    printf("sgemm\t%s\t%.2f\t%.2f\n", name, median(t, (size_t)reps), best);
    fflush(stdout);
    free(A);
    free(Bm);
    free(C);
}

/* ---- training -------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    size_t steps = 500, warmup = 50, B = 256, gemm_size = 2048;
    int reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
            warmup = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            B = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--gemm-size") && i + 1 < argc)
            gemm_size = strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: bench_train [--steps N] [--warmup W] [--reps R] [--batch B] [--gemm-size S]\n");
            return 2;
        }
    }
    if (steps < 1 || B < 1 || reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "bench_train: need steps >= 1, batch >= 1, 1 <= reps <= %d\n", MAX_REPS);
        return 2;
    }

    fv_problem p;
    check(fv_problem_alloc(&p, D), "fv_problem_alloc");
    fv_rng r = fv_rng_make(SEED, 1);
    fv_random_spd(D, 0.5, &r, p.S1);
    fv_rng_normal(&r, D, p.m1);
    p.coupling = FV_COUPLING_INDEPENDENT;
    check(fv_problem_validate(&p), "fv_problem_validate");

    fv_mlp_config mc = {.d = D, .width = WIDTH, .depth = DEPTH, .act = FV_ACT_SILU, .temb = 0};
    fv_adam_config ac = fv_adam_defaults(); /* lr 1e-3, betas 0.9 / 0.999, eps 1e-8 */
    fv_trainer tr;
    check(fv_trainer_cpu_init(&tr, &mc, &ac, SEED, B), "fv_trainer_cpu_init");
    fv_cfm_data data;
    check(fv_cfm_data_init(&data, FV_DATA_PROBLEM, &p, NULL, 0, NULL, NULL, B), "fv_cfm_data_init");

    gemm_shape g[3 * FV_MLP_MAX_LAYERS];
    size_t ng = step_gemms(&tr.net, B, g);
    double step_flops = gemm_flops(g, ng);
    printf("meta\topenblas_config\t%s\n", openblas_get_config());
    printf("meta\topenblas_corename\t%s\n", openblas_get_corename());
    printf("meta\tblas_threads\t%d\n", openblas_get_num_threads());
    printf("meta\tparams\t%zu\n", tr.net.nparams);
    printf("meta\tbatch\t%zu\n", B);
    printf("meta\tsteps\t%zu\n", steps);
    printf("meta\twarmup\t%zu\n", warmup);
    printf("meta\treps\t%d\n", reps);
    printf("meta\tstep_flops\t%.0f\n", step_flops);
    fflush(stdout);

    /* (1) the library's own loop, fv_cfm_train, no checkpoints */
    fv_train_opts o;
    memset(&o, 0, sizeof o);
    o.batch = B;
    o.seed = SEED;
    o.log_every = 1000000;
    fv_loss_log log = {0};
    uint64_t step = 0;
    o.steps = warmup;
    check(fv_cfm_train(&tr, &data, &o, &step, &log), "fv_cfm_train (warm-up)");
    double tt[MAX_REPS];
    for (int rep = 0; rep < reps; rep++) {
        o.steps = step + steps;
        double t0 = now();
        check(fv_cfm_train(&tr, &data, &o, &step, &log), "fv_cfm_train");
        tt[rep] = (now() - t0) / (double)steps;
        printf("steps\ttrain\t%d\t%.9f\n", rep, tt[rep]);
        fflush(stdout);
    }
    fprintf(stderr, "bench_train: fv_cfm_train %.1f steps/s (median of %d x %zu steps, %d BLAS threads)\n",
            1.0 / median(tt, (size_t)reps), reps, steps, openblas_get_num_threads());

    /* (2) the same step, phase by phase */
    enum { PH_PAIRS, PH_INTERP, PH_FORWARD, PH_LOSS, PH_BACKWARD, PH_UPDATE, NPH };
    static const char *ph_name[NPH] = {"pairs", "interpolate", "forward", "loss", "backward", "update"};
    double ph[NPH] = {0};
    double *x0 = xcalloc(2 * B * D, sizeof *x0), *x1 = x0 + B * D;
    float *xt = xcalloc(4 * B * D + B, sizeof *xt), *u = xt + B * D, *v = u + B * D, *dout = v + B * D,
          *t = dout + B * D;
    for (int rep = 0; rep < 1; rep++) { /* one pass: the breakdown, not the headline number */
        double t_start = now();
        for (size_t s = 0; s < steps; s++, step++) {
            double c0 = now();
            check(fv_cfm_pairs(&data, SEED, step, B, x0, x1), "fv_cfm_pairs");
            double c1 = now();
            fv_cfm_interpolate(&p, SEED, step, -1.0, B, D, x0, x1, xt, t, u);
            double c2 = now();
            fv_mlp_forward(&tr.net, B, xt, t, v, &tr.acts);
            double c3 = now();
            float loss = fv_mse_loss(B * D, v, u, dout);
            double c4 = now();
            fv_mlp_backward(&tr.net, B, dout, tr.grads, NULL, &tr.acts);
            double c5 = now();
            float gnorm;
            check(tr.ops->update(&tr, &gnorm), "update");
            double c6 = now();
            if (!isfinite(loss)) {
                fprintf(stderr, "bench_train: the loss is %g at step %zu\n", (double)loss, (size_t)step);
                return 1;
            }
            ph[PH_PAIRS] += c1 - c0;
            ph[PH_INTERP] += c2 - c1;
            ph[PH_FORWARD] += c3 - c2;
            ph[PH_LOSS] += c4 - c3;
            ph[PH_BACKWARD] += c5 - c4;
            ph[PH_UPDATE] += c6 - c5;
        }
        tt[rep] = (now() - t_start) / (double)steps;
        printf("steps\tphases\t%d\t%.9f\n", rep, tt[rep]);
        fflush(stdout);
    }
    for (int k = 0; k < NPH; k++)
        printf("phase\t%s\t%.9f\n", ph_name[k], ph[k] / (double)steps);

    /* forward and backward replayed with mlp.h's public layer functions, in fv_mlp_forward's and
     * fv_mlp_backward's order, each kind of call timed on its own: where the non-GEMM time goes */
    {
        enum { L_INPUT, L_LIN_F, L_ACT_F, L_LIN_B, L_ACT_B, L_NORM, L_ADAM, NL };
        static const char *l_name[NL] = {"input_assembly", "linear_forward", "act_forward", "linear_backward",
                                         "act_backward", "grad_norm", "adam_step"};
        double lt[NL] = {0};
        fv_mlp *m = &tr.net;
        fv_mlp_acts *a = &tr.acts;
        float *gW[FV_MLP_MAX_LAYERS], *gb[FV_MLP_MAX_LAYERS];
        fv_mlp_views(m, tr.grads, gW, gb);
        size_t L = m->nlayers;
        for (size_t s = 0; s < steps; s++, step++) {
            check(fv_cfm_pairs(&data, SEED, step, B, x0, x1), "fv_cfm_pairs");
            fv_cfm_interpolate(&p, SEED, step, -1.0, B, D, x0, x1, xt, t, u);
            double c0 = now();
            fv_mlp_input(m, a->input, xt, t, B);
            lt[L_INPUT] += now() - c0;
            const float *h = a->input;
            for (size_t l = 0; l < L; l++) {
                float *out = l + 1 < L ? a->pre[l] : v;
                c0 = now();
                fv_linear_forward(out, h, m->W[l], m->b[l], B, m->in[l], m->out[l]);
                double c1 = now();
                lt[L_LIN_F] += c1 - c0;
                if (l + 1 < L) {
                    fv_act_forward(a->post[l], a->pre[l], B * m->out[l], m->cfg.act);
                    lt[L_ACT_F] += now() - c1;
                    h = a->post[l];
                }
            }
            float loss = fv_mse_loss(B * D, v, u, dout);
            const float *dcur = dout;
            int buf = 0;
            for (size_t l = L; l-- > 0;) {
                const float *in = l ? a->post[l - 1] : a->input;
                float *dinp = l ? a->delta[buf] : NULL;
                c0 = now();
                fv_linear_backward(dinp, gW[l], gb[l], dcur, in, m->W[l], B, m->in[l], m->out[l]);
                double c1 = now();
                lt[L_LIN_B] += c1 - c0;
                if (l) {
                    fv_act_backward(dinp, dinp, a->pre[l - 1], a->post[l - 1], B * m->out[l - 1], m->cfg.act);
                    lt[L_ACT_B] += now() - c1;
                    dcur = dinp;
                    buf ^= 1;
                }
            }
            c0 = now();
            float gn = fv_grad_norm(m->nparams, tr.grads);
            double c1 = now();
            float gnorm;
            check(tr.ops->update(&tr, &gnorm), "update");
            double c2 = now();
            lt[L_NORM] += c1 - c0;
            lt[L_ADAM] += c2 - c1; /* the whole update, the norm fused into its pass */
            if (!isfinite(loss) || !isfinite(gn)) {
                fprintf(stderr, "bench_train: non-finite loss or gradient at step %zu\n", (size_t)step);
                return 1;
            }
        }
        for (int k = 0; k < NL; k++)
            printf("layer\t%s\t%.9f\n", l_name[k], lt[k] / (double)steps);
    }

    /* the data generation's parts: fv_cfm_pairs samples x0 and x1 with fv_gaussian_sample, which takes
     * the covariance's square root (one dsyevd) on every call; the normals (fv_rng_normal, two per
     * Philox block) for both; fv_cfm_interpolate draws t (one block) and d normals (one block each,
     * one normal kept) per row, one call per number */
    {
        size_t n = steps;
        double *root = xcalloc(D * D, sizeof *root), *z = xcalloc(B * D, sizeof *z), sq = 0, nr = 0, un = 0;
        for (size_t i = 0; i < n; i++) {
            double c0 = now();
            check(fv_linalg_sqrtm_spd(D, p.S1, root), "sqrtm");
            double c1 = now();
            fv_rng rr = fv_rng_make(SEED, 2 * i);
            fv_rng_normal(&rr, B * D, z);
            double c2 = now();
            for (size_t k = 0; k < B * (D + 1); k++) {
                double one[1];
                fv_rng_normal(&rr, 1, one);
            }
            double c3 = now();
            sq += c1 - c0;
            nr += c2 - c1;
            un += c3 - c2;
        }
        printf("data\tsqrtm_%dx%d\t%.9f\n", D, D, sq / (double)n);
        printf("data\tnormals_bulk_%zu\t%.9f\n", B * D, nr / (double)n);
        printf("data\tnormals_one_by_one_%zu\t%.9f\n", B * (D + 1), un / (double)n);
        free(root);
        free(z);
    }

    /* the per-step allocation of cpu_loss_grad's output buffer, alone */
    {
        size_t n = 100000;
        double t0 = now();
        for (size_t i = 0; i < n; i++) {
            float *buf = malloc(2 * B * D * sizeof *buf);
            if (!buf)
                return 1;
            ((volatile float *)buf)[0] = 1.0f;
            free(buf);
        }
        printf("phase\tmalloc_free_%zu_bytes\t%.9f\n", 2 * B * D * sizeof(float), (now() - t0) / (double)n);
    }
    fflush(stdout);

    /* (3) sgemm rates: the step's own calls, 256^3, and a large square product */
    gemm_rate("step_gemms", g, ng, WIDTH > B ? WIDTH : B, 200);
    gemm_shape sq256 = {0, 1, 256, 256, 256};
    gemm_rate("256x256x256", &sq256, 1, 256, 400);
    gemm_shape big = {0, 1, (int)gemm_size, (int)gemm_size, (int)gemm_size};
    gemm_rate("square", &big, 1, gemm_size, 5);
    printf("meta\tgemm_size\t%zu\n", gemm_size);

    free(x0);
    free(xt);
    fv_loss_log_free(&log);
    fv_cfm_data_free(&data);
    fv_trainer_free(&tr);
    fv_problem_free(&p);
    return 0;
}
