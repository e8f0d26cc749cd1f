/* test_cuda.c: the CUDA trainer against the CPU reference (`make test-cuda` runs this suite alone),
 * ggml-style: every device operation on random inputs beside its CPU twin, one table row per check on
 * stderr ("cuda-parity WHAT SHAPE max-rel-err bound BOUND PASS|FAIL"). Errors are measured per tensor as
 * max |gpu - cpu| / max |cpu|. Without a GPU each test prints one skip line and passes. */
#include <criterion/criterion.h>

#include "core/error.h"
#include "core/rng.h"
#include "gaussian/field.h"
#include "gmm/mixture.h"
#include "nn/cfm.h"
#include "nn/checkpoint.h"
#include "nn/trainer.h"

#include "helpers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_FP32 1e-5 /* one step's arithmetic: products summed in another order */
#define TOL_TRAIN 1e-4 /* after a few hundred updates */

static void pair_init(fv_trainer *cpu, fv_trainer *gpu, const fv_mlp_config *mc, const fv_adam_config *ac,
                      uint64_t seed, size_t cap)
{
    cr_assert_eq(fv_trainer_cpu_init(cpu, mc, ac, seed, cap), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_trainer_cuda_init(gpu, mc, ac, seed, cap, 0), FV_OK, "%s", fv_last_error());
}

/* Each layer's weight and bias gradient compared separately. */
static void expect_grads_close(const fv_trainer *cpu, const fv_trainer *gpu, const char *shape, double tol)
{
    const fv_mlp *m = &cpu->net;
    for (size_t l = 0; l < m->nlayers; l++) {
        size_t w = (size_t)(m->W[l] - m->params), b = (size_t)(m->b[l] - m->params);
        char name[64];
        fv_mlp_param_name(m, l, 0, name, sizeof name);
        th_parity(name, shape, m->out[l] * m->in[l], gpu->grads + w, cpu->grads + w, tol);
        fv_mlp_param_name(m, l, 1, name, sizeof name);
        th_parity(name, shape, m->out[l], gpu->grads + b, cpu->grads + b, tol);
    }
}

Test(cuda, forward_loss_and_every_gradient_match_the_cpu)
{
    th_need_gpu();
    static const struct {
        fv_mlp_config mc;
        size_t B;
    } cases[] = {
        {{.d = 2, .width = 16, .depth = 2, .act = FV_ACT_TANH, .temb = 0}, 7},
        {{.d = 50, .width = 256, .depth = 3, .act = FV_ACT_SILU, .temb = 0}, 256},
        {{.d = 5, .width = 64, .depth = 4, .act = FV_ACT_SELU, .temb = 16}, 33},
        {{.d = 784, .width = 512, .depth = 2, .act = FV_ACT_RELU, .temb = 32}, 64},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const fv_mlp_config *mc = &cases[c].mc;
        size_t B = cases[c].B, d = mc->d;
        char shape[64];
        snprintf(shape, sizeof shape, "d%zu w%zu x%zu %s temb%zu B%zu", d, mc->width, mc->depth, fv_act_name(mc->act),
                 mc->temb, B);
        fv_adam_config ac = fv_adam_defaults();
        fv_trainer cpu, gpu;
        pair_init(&cpu, &gpu, mc, &ac, 100 + c, B);
        float *xt = malloc((4 * B * d + 3 * B) * sizeof *xt), *u = xt + B * d, *vc = u + B * d, *t = vc + B * d;
        float *vg = t + B, *sqc = vg + B * d, *sqg = sqc + B, lc, lg;
        double *z = malloc((2 * B * d + B) * sizeof *z);
        fv_rng r = fv_rng_make(7, c);
        fv_rng_normal(&r, 2 * B * d, z);
        fv_rng_uniform(&r, B, z + 2 * B * d);
        for (size_t i = 0; i < B * d; i++) {
            xt[i] = (float)z[i];
            u[i] = (float)z[B * d + i];
        }
        for (size_t i = 0; i < B; i++)
            t[i] = (float)z[2 * B * d + i];
        cr_assert_eq(cpu.ops->predict(&cpu, 0, B, xt, t, vc), FV_OK);
        cr_assert_eq(gpu.ops->predict(&gpu, 0, B, xt, t, vg), FV_OK, "%s", fv_last_error());
        th_parity("forward output", shape, B * d, vg, vc, TOL_FP32);
        cr_assert_eq(cpu.ops->load(&cpu, B, xt, t, u), FV_OK);
        cr_assert_eq(gpu.ops->load(&gpu, B, xt, t, u), FV_OK);
        cr_assert_eq(cpu.ops->loss_grad(&cpu, &lc, sqc), FV_OK);
        cr_assert_eq(gpu.ops->loss_grad(&gpu, &lg, sqg), FV_OK, "%s", fv_last_error());
        th_parity("loss", shape, 1, &lg, &lc, TOL_FP32);
        th_parity("per-row gradient norms", shape, B, sqg, sqc, TOL_FP32);
        expect_grads_close(&cpu, &gpu, shape, TOL_FP32);
        free(xt);
        free(z);
        fv_trainer_free(&cpu);
        fv_trainer_free(&gpu);
    }
}

Test(cuda, optimizer_update_matches_the_cpu)
{
    th_need_gpu();
    fv_mlp_config mc = {.d = 20, .width = 64, .depth = 3, .act = FV_ACT_SILU, .temb = 0};
    fv_adam_config ac = fv_adam_defaults();
    ac.warmup = 3;
    ac.clip = 0.05f; /* small enough to clip */
    ac.ema_decay = 0.9f;
    fv_trainer cpu, gpu;
    pair_init(&cpu, &gpu, &mc, &ac, 5, 32);
    fv_rng r = fv_rng_make(1, 1);
    /* the same gradient on both: the CPU's, uploaded through a batch both compute it from */
    float xt[32 * 20], t[32], u[32 * 20], loss, gc, gg;
    double z[32 * 41];
    fv_rng_normal(&r, 32 * 41, z);
    for (size_t i = 0; i < 32 * 20; i++) {
        xt[i] = (float)z[i];
        u[i] = (float)z[640 + i];
    }
    for (size_t i = 0; i < 32; i++)
        t[i] = (float)(0.5 + 0.1 * z[1280 + i]);
    for (int k = 0; k < 5; k++) {
        cr_assert_eq(cpu.ops->load(&cpu, 32, xt, t, u), FV_OK);
        cr_assert_eq(gpu.ops->load(&gpu, 32, xt, t, u), FV_OK);
        cr_assert_eq(cpu.ops->loss_grad(&cpu, &loss, NULL), FV_OK);
        cr_assert_eq(gpu.ops->loss_grad(&gpu, &loss, NULL), FV_OK);
        cr_assert_eq(cpu.ops->update(&cpu, &gc), FV_OK);
        cr_assert_eq(gpu.ops->update(&gpu, &gg), FV_OK);
        th_parity("gradient norm", "d20 w64 x3 clip warmup ema", 1, &gg, &gc, TOL_FP32);
    }
    cr_assert_eq(gpu.ops->pull(&gpu), FV_OK);
    size_t n = cpu.net.nparams;
    th_parity("params after 5 updates", "d20 w64 x3 clip warmup ema", n, gpu.net.params, cpu.net.params, TOL_FP32);
    th_parity("adam m", "d20 w64 x3 clip warmup ema", n, gpu.opt.m, cpu.opt.m, TOL_FP32);
    th_parity("adam v", "d20 w64 x3 clip warmup ema", n, gpu.opt.v, cpu.opt.v, TOL_FP32);
    th_parity("ema", "d20 w64 x3 clip warmup ema", n, gpu.opt.ema, cpu.opt.ema, TOL_FP32);
    cr_expect_eq(gpu.opt.step, cpu.opt.step);
    fv_trainer_free(&cpu);
    fv_trainer_free(&gpu);
}

/* A 6-dimensional problem with a general source, noise and the given coupling. */
static void test_problem(fv_problem *p, fv_coupling c, fv_schedule s, int deriv)
{
    size_t d = 6;
    fv_rng r = fv_rng_make(3, 9);
    cr_assert_eq(fv_problem_alloc(p, d), FV_OK);
    fv_rng_normal(&r, d, p->m0);
    fv_rng_normal(&r, d, p->m1);
    fv_random_spd(d, 0.5, &r, p->S0);
    fv_random_spd(d, 0.5, &r, p->S1);
    p->coupling = c;
    p->schedule = s;
    p->deriv_term = deriv;
    p->sigma = 0.3;
    if (c == FV_COUPLING_ROTATION) {
        p->R = malloc(d * d * sizeof *p->R);
        fv_rotation_blocks(d, 120, p->R);
    }
    cr_assert_eq(fv_problem_validate(p), FV_OK, "%s", fv_last_error());
}

/* Draw one batch on both devices and compare what depends on every row: the loss, every row's own
 * gradient norm and the gradient. */
static void expect_same_batch(fv_cfm_data *D, const char *what, double t_fixed)
{
    fv_mlp_config mc = {.d = D->d, .width = 32, .depth = 2, .act = FV_ACT_SILU, .temb = 0};
    fv_adam_config ac = fv_adam_defaults();
    fv_trainer cpu, gpu;
    size_t B = 97;
    pair_init(&cpu, &gpu, &mc, &ac, 1, B);
    float lc, lg, sqc[97], sqg[97];
    cr_assert_eq(cpu.ops->draw(&cpu, D, 42, 7, t_fixed, B), FV_OK, "%s", fv_last_error());
    cr_assert_eq(gpu.ops->draw(&gpu, D, 42, 7, t_fixed, B), FV_OK, "%s", fv_last_error());
    cr_assert_eq(cpu.ops->loss_grad(&cpu, &lc, sqc), FV_OK);
    cr_assert_eq(gpu.ops->loss_grad(&gpu, &lg, sqg), FV_OK, "%s", fv_last_error());
    th_parity("batch: loss", what, 1, &lg, &lc, TOL_FP32);
    th_parity("batch: per-row norms", what, B, sqg, sqc, TOL_FP32);
    fv_trainer_free(&cpu);
    fv_trainer_free(&gpu);
}

Test(cuda, batches_drawn_on_the_device_equal_the_cpu_draws)
{
    th_need_gpu();
    static const struct {
        fv_coupling c;
        fv_schedule s;
        int deriv;
        const char *name;
    } cases[] = {
        {FV_COUPLING_OT, FV_SCHEDULE_CONSTANT, 0, "ot constant"},
        {FV_COUPLING_ROTATION, FV_SCHEDULE_BRIDGE, 1, "rotation bridge f'"},
        {FV_COUPLING_INDEPENDENT, FV_SCHEDULE_CONSTANT, 0, "independent"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        fv_problem p;
        fv_cfm_data D;
        test_problem(&p, cases[k].c, cases[k].s, cases[k].deriv);
        cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PROBLEM, &p, NULL, 0, NULL, NULL, 97), FV_OK);
        expect_same_batch(&D, cases[k].name, -1.0);
        expect_same_batch(&D, cases[k].name, 0.3);
        fv_cfm_data_free(&D);
        fv_problem_free(&p);
    }
    /* the standard source (the device skips the product with the identity root) */
    fv_problem p;
    fv_cfm_data D;
    cr_assert_eq(fv_problem_reference(&p, -1, 0.1), FV_OK);
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PROBLEM, &p, NULL, 0, NULL, NULL, 97), FV_OK);
    expect_same_batch(&D, "standard source ot", -1.0);
    fv_cfm_data_free(&D);
    /* a finite set of pairs and a mixture */
    size_t n = 13;
    double a[26], b[26];
    fv_rng r = fv_rng_make(2, 2);
    fv_rng_normal(&r, 26, a);
    fv_rng_normal(&r, 26, b);
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PAIRS, &p, NULL, n, a, b, 97), FV_OK);
    expect_same_batch(&D, "finite pairs", -1.0);
    fv_cfm_data_free(&D);
    fv_gmm g;
    cr_assert_eq(fv_gmm_random(&g, 3, 2, 5.0, 0.25, 4), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_GMM, &p, &g, 0, NULL, NULL, 97), FV_OK);
    expect_same_batch(&D, "mixture", -1.0);
    fv_cfm_data_free(&D);
    fv_gmm_free(&g);
    fv_problem_free(&p);
}

/* Train `tr` from its state to `steps` on D; checkpoint at the end when path is given. */
static void train_to(fv_trainer *tr, fv_cfm_data *D, uint64_t *step, size_t steps, const char *path)
{
    fv_train_opts o = {0};
    fv_loss_log log = {0};
    o.steps = steps;
    o.batch = 64;
    o.seed = 2026;
    o.log_every = 10;
    o.checkpoint = path;
    cr_assert_eq(fv_cfm_train(tr, D, &o, step, &log), FV_OK, "%s", fv_last_error());
    fv_loss_log_free(&log);
}

static void expect_state_close(fv_trainer *gpu, fv_trainer *cpu, const char *what)
{
    if (gpu->ops->pull)
        cr_assert_eq(gpu->ops->pull(gpu), FV_OK);
    if (cpu->ops->pull)
        cr_assert_eq(cpu->ops->pull(cpu), FV_OK);
    size_t n = cpu->net.nparams;
    th_parity("weights", what, n, gpu->net.params, cpu->net.params, TOL_TRAIN);
    th_parity("ema", what, n, gpu->opt.ema, cpu->opt.ema, TOL_TRAIN);
}

static fv_adam_config train_adam(void)
{
    fv_adam_config ac = fv_adam_defaults();
    ac.warmup = 20;
    ac.clip = 1.0f;
    ac.ema_decay = 0.99f;
    return ac;
}

Test(cuda, two_hundred_steps_match_the_cpu)
{
    th_need_gpu();
    fv_problem p;
    fv_cfm_data D;
    test_problem(&p, FV_COUPLING_OT, FV_SCHEDULE_CONSTANT, 0);
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PROBLEM, &p, NULL, 0, NULL, NULL, 64), FV_OK);
    fv_mlp_config mc = {.d = 6, .width = 64, .depth = 3, .act = FV_ACT_SILU, .temb = 0};
    fv_adam_config ac = train_adam();
    fv_trainer cpu, gpu;
    pair_init(&cpu, &gpu, &mc, &ac, 8, 64);
    uint64_t sc = 0, sg = 0;
    train_to(&cpu, &D, &sc, 200, NULL);
    train_to(&gpu, &D, &sg, 200, NULL);
    expect_state_close(&gpu, &cpu, "200 steps d6 w64 x3");
    fv_trainer_free(&cpu);
    fv_trainer_free(&gpu);
    fv_cfm_data_free(&D);
    fv_problem_free(&p);
}

/* Train on `first` to 60 steps with a checkpoint, load it into `second`, continue to 120; compare with
 * `whole` trained to 120 without a stop. */
static void resume_across(fv_trainer *first, fv_trainer *second, fv_trainer *whole, fv_cfm_data *D, const char *dir,
                          const char *what)
{
    uint64_t s1 = 0, s2 = 0, sw = 0;
    const char *path = th_path_in(dir, what[0] == 'g' ? "gpu.safetensors" : "cpu.safetensors");
    char ckpt[256];
    snprintf(ckpt, sizeof ckpt, "%s", path);
    train_to(first, D, &s1, 60, ckpt);
    fv_st_file f;
    cr_assert_eq(fv_st_read(ckpt, &f), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_checkpoint_load(&f, ckpt, second, &s2, NULL), FV_OK, "%s", fv_last_error());
    fv_st_free(&f);
    cr_assert_eq(s2, 60);
    train_to(second, D, &s2, 120, NULL);
    train_to(whole, D, &sw, 120, NULL);
    expect_state_close(second, whole, what);
}

Test(cuda, checkpoints_resume_across_devices)
{
    th_need_gpu();
    char dir[64];
    th_scratch_make(dir, "fv_cuda");
    fv_problem p;
    fv_cfm_data D;
    test_problem(&p, FV_COUPLING_ROTATION, FV_SCHEDULE_CONSTANT, 0);
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PROBLEM, &p, NULL, 0, NULL, NULL, 64), FV_OK);
    fv_mlp_config mc = {.d = 6, .width = 32, .depth = 2, .act = FV_ACT_TANH, .temb = 8};
    fv_adam_config ac = train_adam();
    fv_trainer a, b, w;
    /* gpu -> cpu, against a gpu run */
    cr_assert_eq(fv_trainer_cuda_init(&a, &mc, &ac, 3, 64, 0), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_trainer_cpu_init(&b, &mc, &ac, 99, 64), FV_OK);
    cr_assert_eq(fv_trainer_cuda_init(&w, &mc, &ac, 3, 64, 0), FV_OK);
    resume_across(&a, &b, &w, &D, dir, "gpu checkpoint resumed on cpu");
    fv_trainer_free(&a);
    fv_trainer_free(&b);
    fv_trainer_free(&w);
    /* cpu -> gpu, against a cpu run */
    cr_assert_eq(fv_trainer_cpu_init(&a, &mc, &ac, 3, 64), FV_OK);
    cr_assert_eq(fv_trainer_cuda_init(&b, &mc, &ac, 99, 64, 0), FV_OK);
    cr_assert_eq(fv_trainer_cpu_init(&w, &mc, &ac, 3, 64), FV_OK);
    resume_across(&a, &b, &w, &D, dir, "cpu checkpoint resumed on gpu");
    fv_trainer_free(&a);
    fv_trainer_free(&b);
    fv_trainer_free(&w);
    fv_cfm_data_free(&D);
    fv_problem_free(&p);
    th_remove_tree(dir);
}

Test(cuda, gradient_variance_and_gap_match_the_cpu)
{
    th_need_gpu();
    fv_problem p;
    fv_cfm_data D;
    fv_field f;
    test_problem(&p, FV_COUPLING_OT, FV_SCHEDULE_CONSTANT, 0);
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PROBLEM, &p, NULL, 0, NULL, NULL, 64), FV_OK);
    cr_assert_eq(fv_field_build(&f, &p, FV_FIELD_OT), FV_OK);
    fv_mlp_config mc = {.d = 6, .width = 64, .depth = 3, .act = FV_ACT_SILU, .temb = 0};
    fv_adam_config ac = train_adam();
    fv_trainer cpu, gpu;
    pair_init(&cpu, &gpu, &mc, &ac, 4, 64);
    for (int k = 0; k < 3; k++) {
        double t = k == 2 ? -1.0 : 0.2 + 0.5 * k;
        double vc, vg;
        fv_estimate gc, gg;
        cr_assert_eq(fv_cfm_grad_variance(&cpu, &D, t, 500, 1, 3, &vc), FV_OK);
        cr_assert_eq(fv_cfm_grad_variance(&gpu, &D, t, 500, 1, 3, &vg), FV_OK, "%s", fv_last_error());
        float fc = (float)vc, fg = (float)vg;
        th_parity("gradient variance", k == 2 ? "t ~ U(0,1)" : (k ? "t = 0.7" : "t = 0.2"), 1, &fg, &fc, 1e-4);
        if (t < 0)
            continue;
        cr_assert_eq(fv_cfm_gap(&cpu, 1, &D, &f, t, 500, 1, 3, &gc), FV_OK);
        cr_assert_eq(fv_cfm_gap(&gpu, 1, &D, &f, t, 500, 1, 3, &gg), FV_OK, "%s", fv_last_error());
        fc = (float)gc.mean, fg = (float)gg.mean;
        th_parity("approximation gap", k ? "t = 0.7" : "t = 0.2", 1, &fg, &fc, TOL_FP32);
    }
    fv_trainer_free(&cpu);
    fv_trainer_free(&gpu);
    fv_field_free(&f);
    fv_cfm_data_free(&D);
    fv_problem_free(&p);
}

Test(cuda, without_a_device_the_cuda_trainer_is_refused_clearly)
{
    if (fv_cuda_available())
        cr_skip_test("a CUDA device is present: the refusal path is not reachable here");
    fv_trainer tr;
    fv_mlp_config mc = {.d = 2, .width = 8, .depth = 1, .act = FV_ACT_SILU, .temb = 0};
    fv_adam_config ac = fv_adam_defaults();
    cr_assert_eq(fv_trainer_cuda_init(&tr, &mc, &ac, 1, 4, 0), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "--device cpu") != NULL, "%s", fv_last_error());
    cr_assert_eq(fv_trainer_init(&tr, "auto", &mc, &ac, 1, 4, 0), FV_OK, "auto falls back to the cpu");
    cr_assert_str_eq(tr.ops->name, "cpu");
    fv_trainer_free(&tr);
}
