/* test_par.c: the threads of the CPU training step (src/nn/par.h): the pool's regions and barrier, and
 * that the threaded code gives one thread's results: the MLP's forward and backward (with the
 * per-row norms, to rounding), the Adam step with clipping and EMA and the batch draws (bit for bit), and
 * whole training runs (bit for bit with the same count, to rounding across counts).
 * Thread counts are set through OpenBLAS's, as a user sets them (OPENBLAS_NUM_THREADS). */
#include <criterion/criterion.h>

#include "core/philox.h"
#include "core/rng.h"
#include "gaussian/problem.h"
#include "nn/cfm.h"
#include "nn/mlp.h"
#include "nn/optim.h"
#include "nn/par.h"
#include "nn/trainer.h"
#include "src/nn/nn_math.h"
#include "tests/helpers.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int saved_threads;

static void setup(void) { saved_threads = openblas_get_num_threads(); }
static void teardown(void) { openblas_set_num_threads(saved_threads); }

TestSuite(par, .init = setup, .fini = teardown);

Test(par, range_splits_in_order_on_aligned_boundaries)
{
    size_t ns[] = {0, 1, 7, 50, 255, 256, 1000}, aligns[] = {1, 2, 16};
    for (size_t a = 0; a < 3; a++)
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
            for (int nt = 1; nt <= 5; nt++) {
                size_t next = 0;
                for (int t = 0; t < nt; t++) {
                    size_t lo, hi;
                    fv_par_range(ns[k], aligns[a], t, nt, &lo, &hi);
                    cr_expect_eq(lo, next, "n %zu align %zu: thread %d starts at %zu, want %zu", ns[k], aligns[a], t,
                                 lo, next);
                    cr_expect(hi >= lo && (hi == ns[k] || hi % aligns[a] == 0),
                              "n %zu align %zu: thread %d ends at %zu", ns[k], aligns[a], t, hi);
                    next = hi;
                }
                cr_expect_eq(next, ns[k], "n %zu align %zu, %d threads: the ranges cover %zu items", ns[k],
                             aligns[a], nt, next);
            }
}

typedef struct {
    int nt_seen[8];
    int before[8], after[8];
} region_log;

/* Every thread records its count, then (after the barrier) the sum of what all threads wrote before it. */
static void log_region(void *arg, int tid, int nt)
{
    region_log *g = arg;
    g->nt_seen[tid] = nt;
    g->before[tid] = tid + 1;
    fv_par_barrier();
    int s = 0;
    for (int t = 0; t < nt; t++)
        s += g->before[t];
    g->after[tid] = s;
}

Test(par, regions_run_every_thread_and_the_barrier_waits_for_all)
{
    for (int n = 1; n <= 4; n++) {
        openblas_set_num_threads(n);
        cr_expect_eq(fv_par_threads(), n, "fv_par_threads follows OpenBLAS's count %d", n);
        for (int rep = 0; rep < 200; rep++) { /* regions back to back: the pool's hand-over */
            region_log g;
            memset(&g, 0, sizeof g);
            fv_par_run(log_region, &g);
            for (int t = 0; t < n; t++) {
                cr_assert_eq(g.nt_seen[t], n, "%d threads, rep %d: thread %d saw %d threads", n, rep, t,
                             g.nt_seen[t]);
                cr_assert_eq(g.after[t], n * (n + 1) / 2, "%d threads, rep %d: thread %d passed the barrier early",
                             n, rep, t);
            }
        }
        cr_expect_eq(openblas_get_num_threads(), n, "OpenBLAS's count %d is restored after a region", n);
    }
}

/* fork copies the pool's state but not its worker threads: the child must start its own (without
 * that it would wait forever for the parent's workers; the alarm turns a hang into a failure). */
Test(par, a_forked_child_runs_regions_on_its_own_workers)
{
    openblas_set_num_threads(2);
    region_log g;
    memset(&g, 0, sizeof g);
    fv_par_run(log_region, &g); /* the parent's worker exists now */
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork");
    if (pid == 0) {
        alarm(20);
        memset(&g, 0, sizeof g);
        fv_par_run(log_region, &g);
        _exit(g.after[0] == 3 && g.after[1] == 3 ? 0 : 1);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid, "waitpid");
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the child's 2-thread region completed with both threads (status %d)", status);
}

/* fv_rng_normal draws its blocks LANES at a time (rng.c's philox_lanes) and the rest one by one: the
 * numbers are fv_philox_normal2's, block by block, the reference the CUDA draws share; and a part drawn
 * with fv_rng_normal_at from any even offset is the same part of the stream. */
Test(par, normal_at_gives_the_stream_numbers)
{
    enum { N = 101 };
    double all[N], part[N], ref[N + 1];
    fv_rng r = fv_rng_make(7, 3), s = r;
    r.pos = s.pos = 5;
    fv_rng_normal(&r, N, all);
    cr_expect_eq(r.pos, 5 + 51, "101 normals take 51 blocks");
    for (size_t k = 0; k < (N + 1) / 2; k++)
        fv_philox_normal2(7, 3, 5 + k, &ref[2 * k], &ref[2 * k + 1]);
    cr_expect_eq(memcmp(all, ref, sizeof all), 0, "fv_rng_normal's numbers are fv_philox_normal2's, block by block");
    for (size_t first = 0; first < N; first += 34) {
        size_t cnt = N - first < 35 ? N - first : 35;
        fv_rng_normal_at(&s, first, cnt, part + first);
    }
    cr_expect_eq(s.pos, 5, "fv_rng_normal_at leaves the stream where it was");
    cr_expect_eq(memcmp(all, part, sizeof all), 0, "normals drawn in parts equal the one call's");
}

/* A small network with every feature of the threaded paths: odd batch and widths, clipping and EMA. */
static const fv_mlp_config net_cfg = {.d = 5, .width = 33, .depth = 3, .act = FV_ACT_SILU};

/* Train `steps` steps of the problem from seed 11 with nt threads; return the trainer and its log. */
static void train(int nt, size_t steps, fv_problem *p, fv_trainer *tr, fv_loss_log *log)
{
    openblas_set_num_threads(nt);
    fv_adam_config ac = fv_adam_defaults();
    ac.clip = 0.5f;
    ac.ema_decay = 0.99f;
    size_t B = 37;
    cr_assert_eq(fv_trainer_cpu_init(tr, &net_cfg, &ac, 11, B), 0);
    fv_cfm_data D;
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PROBLEM, p, NULL, 0, NULL, NULL, B), 0);
    fv_train_opts o = {.steps = steps, .batch = B, .seed = 11, .log_every = 1};
    uint64_t step = 0;
    memset(log, 0, sizeof *log);
    cr_assert_eq(fv_cfm_train(tr, &D, &o, &step, log), 0);
    fv_cfm_data_free(&D);
}

static void random_problem(fv_problem *p, size_t d)
{
    cr_assert_eq(fv_problem_alloc(p, d), 0);
    fv_rng r = fv_rng_make(3, 1);
    fv_random_spd(d, 0.5, &r, p->S1);
    fv_rng_normal(&r, d, p->m1);
    p->coupling = FV_COUPLING_INDEPENDENT;
    cr_assert_eq(fv_problem_validate(p), 0);
}

/* Two runs with the same thread count give the same bits (no race between the threads), and runs with
 * other counts agree to rounding: OpenBLAS picks its kernel by a product's shape, and a thread's share
 * of the batch is a smaller product, so the bits depend on the count (as they did when OpenBLAS
 * threaded the products itself). */
Test(par, training_runs_repeat_bit_for_bit_and_agree_across_thread_counts)
{
    fv_problem p;
    random_problem(&p, net_cfg.d);
    fv_trainer ref, tr;
    fv_loss_log lref, lg;
    train(1, 30, &p, &ref, &lref);
    for (int nt = 1; nt <= 3; nt++) {
        fv_trainer a;
        fv_loss_log la;
        train(nt, 30, &p, &a, &la);
        train(nt, 30, &p, &tr, &lg);
        size_t n = ref.nparams * sizeof(float);
        cr_expect_eq(memcmp(a.params, tr.params, n), 0, "%d threads: two runs' weights differ", nt);
        cr_expect_eq(memcmp(a.opt.m, tr.opt.m, n), 0, "%d threads: two runs' first moments differ", nt);
        cr_expect_eq(memcmp(a.opt.v, tr.opt.v, n), 0, "%d threads: two runs' second moments differ", nt);
        cr_expect_eq(memcmp(a.opt.ema, tr.opt.ema, n), 0, "%d threads: two runs' EMA differ", nt);
        cr_assert_eq(lg.n, lref.n, "%d threads: %zu log rows, want %zu", nt, lg.n, lref.n);
        cr_expect_eq(memcmp(la.rows, lg.rows, 3 * lg.n * sizeof(double)), 0,
                     "%d threads: two runs' logged losses or gradient norms differ", nt);
        double dp = th_max_rel(ref.nparams, tr.params, ref.params), dl = 0.0;
        for (size_t i = 0; i < lg.n; i++)
            dl = fmax(dl, fabs(lg.rows[3 * i + 1] - lref.rows[3 * i + 1]) / fabs(lref.rows[3 * i + 1]));
        cr_log_info("%d threads against 1: weights %.3g, losses %.3g (relative)", nt, dp, dl);
        cr_expect(dp <= 1e-5, "%d threads: the weights differ from 1 thread's by %.3g of their scale", nt, dp);
        cr_expect(dl <= 1e-5, "%d threads: a loss differs from 1 thread's by %.3g relative", nt, dl);
        fv_trainer_free(&a);
        fv_loss_log_free(&la);
        fv_trainer_free(&tr);
        fv_loss_log_free(&lg);
    }
    fv_trainer_free(&ref);
    fv_loss_log_free(&lref);
    fv_problem_free(&p);
}

/* The per-row gradient norms and the summed gradient of one backward pass with sqnorm. */
static void grads_with_norms(int nt, fv_trainer *tr, float *grads, float *sq)
{
    openblas_set_num_threads(nt);
    float loss;
    cr_assert_eq(tr->ops->loss_grad(tr, &loss, sq), 0);
    memcpy(grads, tr->grads, tr->nparams * sizeof(float));
}

/* The per-row norms and the summed gradient of one backward pass: the same with 2 threads as with 1, to
 * rounding (see above). */
Test(par, per_row_gradient_norms_agree_for_1_and_2_threads)
{
    fv_problem p;
    random_problem(&p, net_cfg.d);
    fv_trainer tr;
    fv_adam_config ac = fv_adam_defaults();
    size_t B = 29;
    cr_assert_eq(fv_trainer_cpu_init(&tr, &net_cfg, &ac, 5, B), 0);
    fv_cfm_data D;
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PROBLEM, &p, NULL, 0, NULL, NULL, B), 0);
    cr_assert_eq(tr.ops->draw(&tr, &D, 5, 0, -1.0, B), 0);
    float *g1 = malloc(2 * tr.nparams * sizeof(float)), *g2 = g1 + tr.nparams, sq1[29], sq2[29];
    cr_assert(g1);
    grads_with_norms(1, &tr, g1, sq1);
    grads_with_norms(2, &tr, g2, sq2);
    double dg = th_max_rel(tr.nparams, g2, g1), ds = th_max_rel(B, sq2, sq1);
    cr_expect(dg <= 1e-5, "the summed gradient with 2 threads differs by %.3g of its scale", dg);
    cr_expect(ds <= 1e-5, "the per-row norms with 2 threads differ by %.3g of their scale", ds);
    int positive = 1;
    for (size_t i = 0; i < B; i++)
        positive &= sq1[i] > 0.0f;
    cr_expect(positive, "every row has a nonzero gradient (the check compares something)");
    free(g1);
    fv_cfm_data_free(&D);
    fv_trainer_free(&tr);
    fv_problem_free(&p);
}

Test(par, pairs_are_the_serial_stream_for_any_thread_count)
{
    size_t d = 51, B = 255; /* odd rows of odd length: Philox blocks straddle rows */
    fv_problem p;
    random_problem(&p, d);
    fv_cfm_data D;
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PROBLEM, &p, NULL, 0, NULL, NULL, B), 0);
    double *x0 = malloc(5 * B * d * sizeof(double)), *x1 = x0 + B * d, *y0 = x1 + B * d, *y1 = y0 + B * d,
           *z = y1 + B * d;
    size_t bytes = B * d * sizeof(double);
    cr_assert(x0);
    fv_rng r = fv_rng_make(4, 2 * 6); /* the pairs' stream of step 6 */
    fv_rng_normal(&r, B * d, z);
    openblas_set_num_threads(1);
    cr_assert_eq(fv_cfm_pairs(&D, 4, 6, B, x0, x1), 0);
    cr_expect_eq(memcmp(x0, z, bytes), 0, "the standard source's x0 is the stream's first normals");
    for (int nt = 2; nt <= 4; nt++) {
        openblas_set_num_threads(nt);
        cr_assert_eq(fv_cfm_pairs(&D, 4, 6, B, y0, y1), 0);
        cr_expect_eq(memcmp(x0, y0, bytes), 0, "%d threads: x0 differs from 1 thread's", nt);
        cr_expect_eq(memcmp(x1, y1, bytes), 0, "%d threads: x1 differs from 1 thread's", nt);
    }
    free(x0);
    fv_cfm_data_free(&D);
    fv_problem_free(&p);
}

/* The fused, threaded step against its parts done one after the other: fv_clip_grad_norm, then the
 * element loop fv_adam_update, then the EMA by fv_ema_elem. */
Test(par, adam_step_equals_clip_then_update_then_ema)
{
    size_t n = 5003;
    float *buf = malloc(6 * n * sizeof(float));
    cr_assert(buf);
    float *p = buf, *g = p + n, *p2 = g + n, *g2 = p2 + n, *m2 = g2 + n, *v2 = m2 + n;
    srand(99);
    for (size_t i = 0; i < n; i++) {
        p[i] = (float)rand() / RAND_MAX - 0.5f;
        g[i] = ((float)rand() / RAND_MAX - 0.5f) * (i % 7 ? 1.0f : 100.0f);
    }
    for (int clip = 0; clip < 2; clip++)
        for (int nt = 1; nt <= 3; nt++) {
            openblas_set_num_threads(nt);
            fv_adam_config c = fv_adam_defaults();
            c.clip = clip ? 1.0f : 0.0f;
            c.ema_decay = 0.9f;
            fv_adam o;
            cr_assert_eq(fv_adam_init(&o, &c, n, p), 0);
            memcpy(p2, p, n * sizeof(float));
            memcpy(g2, g, n * sizeof(float));
            memset(m2, 0, 2 * n * sizeof(float));
            float *ema2 = malloc(n * sizeof(float)), *gw = malloc(n * sizeof(float)), *pw = malloc(n * sizeof(float));
            cr_assert(ema2 && gw && pw);
            memcpy(ema2, p, n * sizeof(float));
            memcpy(gw, g, n * sizeof(float));
            memcpy(pw, p, n * sizeof(float));
            float norm = fv_adam_step(&o, pw, gw);
            float norm2 = fv_clip_grad_norm(n, g2, c.clip);
            float step = (float)((double)1e-3f / (1.0 - (double)0.9f)), bc2 = (float)sqrt(1.0 - (double)0.999f);
            fv_adam_update(n, p2, m2, v2, g2, (float)(1.0 - (double)0.9f), 0.999f, (float)(1.0 - (double)0.999f),
                           step, bc2, 1e-8f);
            for (size_t i = 0; i < n; i++)
                ema2[i] = fv_ema_elem(ema2[i], p2[i], 0.9f, (float)(1.0 - (double)0.9f));
            cr_expect_eq(norm, norm2, "clip %d, %d threads: norm %.9g, fv_clip_grad_norm %.9g", clip, nt,
                         (double)norm, (double)norm2);
            cr_expect_eq(memcmp(gw, g2, n * sizeof(float)), 0, "clip %d, %d threads: clipped gradients differ", clip,
                         nt);
            cr_expect_eq(memcmp(pw, p2, n * sizeof(float)), 0, "clip %d, %d threads: weights differ", clip, nt);
            cr_expect_eq(memcmp(o.m, m2, 2 * n * sizeof(float)), 0, "clip %d, %d threads: moments differ", clip, nt);
            cr_expect_eq(memcmp(o.ema, ema2, n * sizeof(float)), 0, "clip %d, %d threads: EMA differs", clip, nt);
            free(ema2);
            free(gw);
            free(pw);
            fv_adam_free(&o);
        }
    free(buf);
}
