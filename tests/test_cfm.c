/* test_cfm.c: conditional flow matching on the CPU: batches and interpolant, the per-sample gradient
 * variance against brute force, checkpoints (round trip and rejection of mismatched files), and a
 * trained network approaching the closed-form field. */
#include <criterion/criterion.h>

#include "core/error.h"
#include "core/safetensors.h"
#include "gaussian/field.h"
#include "nn/cfm.h"
#include "nn/checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static fv_problem ref;

static void setup(void) { cr_assert_eq(fv_problem_reference(&ref, -1, 0.0), FV_OK); }
static void teardown(void) { fv_problem_free(&ref); }

TestSuite(cfm, .init = setup, .fini = teardown);

Test(cfm, pairs_follow_the_coupling_map_and_repeat_by_step)
{
    fv_cfm_data D;
    double x0[40], x1[40], y0[40], y1[40], T[40];
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PROBLEM, &ref, NULL, 0, NULL, NULL, 20), FV_OK);
    cr_assert_eq(fv_cfm_pairs(&D, 5, 17, 20, x0, x1), FV_OK);
    cr_assert_eq(fv_cfm_pairs(&D, 5, 17, 20, y0, y1), FV_OK);
    cr_assert_eq(memcmp(x0, y0, sizeof x0), 0, "same (seed, step), same batch");
    cr_assert_eq(fv_cfm_pairs(&D, 5, 18, 20, y0, y1), FV_OK);
    cr_assert_neq(memcmp(x0, y0, sizeof x0), 0, "another step, another batch");
    fv_field_work w;
    fv_field_work_alloc(&w, 2, 20);
    fv_field_map(&D.map, 20, x0, T, &w);
    for (int i = 0; i < 40; i++)
        cr_assert_float_eq(x1[i], T[i], 1e-14);
    fv_field_work_free(&w);
    fv_cfm_data_free(&D);
}

Test(cfm, finite_pairs_are_drawn_from_the_set)
{
    double a[6] = {0, 1, 2, 3, 4, 5}, b[6] = {10, 11, 12, 13, 14, 15}, x0[32], x1[32];
    fv_cfm_data D;
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PAIRS, &ref, NULL, 3, a, b, 16), FV_OK);
    cr_assert_eq(fv_cfm_pairs(&D, 1, 0, 16, x0, x1), FV_OK);
    for (int i = 0; i < 16; i++) {
        cr_assert(x0[2 * i] == 0 || x0[2 * i] == 2 || x0[2 * i] == 4);
        cr_assert_eq(x1[2 * i], x0[2 * i] + 10, "pairs stay paired");
    }
    fv_cfm_data_free(&D);
}

Test(cfm, interpolant_and_target_follow_the_schedule)
{
    /* bridge noise with the derivative term: x_t - (1-t) x0 - t x1 = f z and u - (x1 - x0) = f' z */
    fv_problem p;
    fv_problem_reference(&p, -1, 0.4);
    p.schedule = FV_SCHEDULE_BRIDGE;
    p.deriv_term = 1;
    double x0[20], x1[20];
    float xt[20], t[10], u[20];
    fv_rng r = fv_rng_make(3, 3);
    fv_rng_normal(&r, 20, x0);
    fv_rng_normal(&r, 20, x1);
    fv_cfm_interpolate(&p, 9, 2, -1.0, 10, 2, x0, x1, xt, t, u);
    for (int i = 0; i < 10; i++) {
        double f, fp, ti = t[i];
        cr_assert(ti > 0 && ti < 1);
        fv_noise(p.schedule, p.sigma, ti, &f, &fp);
        for (int j = 0; j < 2; j++) {
            double z = (xt[2 * i + j] - (1 - ti) * x0[2 * i + j] - ti * x1[2 * i + j]) / f;
            cr_assert_float_eq(u[2 * i + j], x1[2 * i + j] - x0[2 * i + j] + fp * z, 2e-4 * (1 + fabs(fp * z)));
        }
    }
    fv_cfm_interpolate(&p, 9, 2, 0.25, 10, 2, x0, x1, xt, t, u);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(t[i], 0.25f);
    fv_problem_free(&p);
}

static void small_trainer(fv_trainer *tr, float ema)
{
    fv_mlp_config mc = {.d = 2, .width = 16, .depth = 2, .act = FV_ACT_TANH, .temb = 0};
    fv_adam_config ac = fv_adam_defaults();
    ac.ema_decay = ema;
    cr_assert_eq(fv_trainer_cpu_init(tr, &mc, &ac, 11, 64), FV_OK);
}

Test(cfm, gradient_variance_equals_brute_force)
{
    /* per-row gradients by one-row backward passes, then the unbiased trace covariance */
    fv_trainer tr;
    small_trainer(&tr, 0);
    fv_cfm_data D;
    fv_problem p;
    fv_problem_reference(&p, 120, 0.3);
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PROBLEM, &p, NULL, 0, NULL, NULL, 64), FV_OK);
    size_t n = 40, np = tr.net.nparams;
    double var;
    cr_assert_eq(fv_cfm_grad_variance(&tr, &D, 0.3, n, 4, 1, &var), FV_OK);
    double x0[80], x1[80], *sum = calloc(np, sizeof *sum), sq = 0;
    float xt[80], t[40], u[80], loss;
    fv_cfm_pairs(&D, 4, 1, n, x0, x1);
    fv_cfm_interpolate(&p, 4, 1, 0.3, n, 2, x0, x1, xt, t, u);
    for (size_t i = 0; i < n; i++) {
        tr.ops->load(&tr, 1, xt + 2 * i, t + i, u + 2 * i);
        tr.ops->loss_grad(&tr, &loss, NULL);
        /* one row: the loss is |u - v|^2 / 2, so the per-sample gradient is twice the buffer */
        double s = 0;
        for (size_t k = 0; k < np; k++) {
            double g = 2.0 * tr.grads[k];
            sum[k] += g;
            s += g * g;
        }
        sq += s;
    }
    double m2 = 0;
    for (size_t k = 0; k < np; k++)
        m2 += sum[k] * sum[k] / ((double)n * n);
    double want = (sq / (double)n - m2) * (double)n / (double)(n - 1);
    cr_assert_float_eq(var, want, 1e-4 * want, "exact per-row norms %g vs brute force %g", var, want);
    free(sum);
    fv_cfm_data_free(&D);
    fv_problem_free(&p);
    fv_trainer_free(&tr);
}

Test(cfm, trained_network_approaches_the_ot_field)
{
    fv_trainer tr;
    fv_mlp_config mc = {.d = 2, .width = 64, .depth = 3, .act = FV_ACT_SILU, .temb = 0};
    fv_adam_config ac = fv_adam_defaults();
    cr_assert_eq(fv_trainer_cpu_init(&tr, &mc, &ac, 1, 256), FV_OK);
    fv_cfm_data D;
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PROBLEM, &ref, NULL, 0, NULL, NULL, 256), FV_OK);
    fv_train_opts o = {0};
    o.steps = 1500;
    o.batch = 256;
    o.seed = 2;
    o.log_every = 100;
    uint64_t step = 0;
    fv_loss_log log = {0};
    fv_estimate before, after;
    cr_assert_eq(fv_cfm_gap(&tr, 0, &D, &D.map, 0.5, 2000, 9, 0, &before), FV_OK);
    cr_assert_eq(fv_cfm_train(&tr, &D, &o, &step, &log), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_cfm_gap(&tr, 0, &D, &D.map, 0.5, 2000, 9, 0, &after), FV_OK);
    cr_assert_eq(step, 1500);
    cr_assert_eq(log.n, 15);
    cr_assert_lt(after.mean, 0.01 * before.mean, "gap at t = 0.5: %g before, %g after", before.mean, after.mean);
    fv_loss_log_free(&log);
    fv_cfm_data_free(&D);
    fv_trainer_free(&tr);
}

/* Save a trainer, reload it into a fresh one: every buffer equal bit for bit. */
Test(cfm, checkpoint_round_trip)
{
    char path[] = "/tmp/fv_ckpt_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    fv_trainer a, b;
    small_trainer(&a, 0.9f);
    small_trainer(&b, 0.9f);
    for (size_t k = 0; k < a.net.nparams; k++) { /* make every buffer distinct from b's init */
        a.net.params[k] += 0.01f * (float)k;
        a.opt.m[k] = 0.5f + (float)k;
        a.opt.v[k] = 2.0f * (float)k;
        a.opt.ema[k] = -(float)k;
    }
    a.opt.step = 77;
    double rows[6] = {10, 0.5, 1.5, 20, 0.25, 0.75};
    fv_loss_log log = {2, 2, rows}, back = {0};
    const char *k[1] = {"opt.steps"}, *v[1] = {"20"};
    cr_assert_eq(fv_checkpoint_save(path, &a, 20, &log, 1, k, v), FV_OK, "%s", fv_last_error());
    fv_st_file f;
    fv_mlp_config mc;
    uint64_t step;
    cr_assert_eq(fv_st_read(path, &f), FV_OK);
    cr_assert_eq(fv_checkpoint_config(&f, path, &mc), FV_OK);
    cr_assert_eq(mc.width, 16);
    cr_assert_eq(fv_checkpoint_load(&f, path, &b, &step, &back), FV_OK, "%s", fv_last_error());
    cr_assert_eq(step, 20);
    cr_assert_eq(b.opt.step, 77);
    size_t bytes = a.net.nparams * sizeof(float);
    cr_assert_eq(memcmp(a.net.params, b.net.params, bytes), 0);
    cr_assert_eq(memcmp(a.opt.m, b.opt.m, bytes), 0);
    cr_assert_eq(memcmp(a.opt.v, b.opt.v, bytes), 0);
    cr_assert_eq(memcmp(a.opt.ema, b.opt.ema, bytes), 0);
    cr_assert_eq(back.n, 2);
    cr_assert_eq(memcmp(back.rows, rows, sizeof rows), 0);
    cr_assert_str_eq(fv_st_meta(&f, "opt.steps"), "20");
    fv_st_free(&f);
    fv_loss_log_free(&back);
    fv_trainer_free(&a);
    fv_trainer_free(&b);
    unlink(path);
}

/* The fixed Fourier matrix is saved as "fourier.B" and loaded over a network initialised with another
 * seed (so another F): the loaded network then predicts exactly what the saved one did; a bad stored
 * scale is refused naming the key. */
Test(cfm, checkpoint_round_trip_with_fourier_features)
{
    char path[] = "/tmp/fv_ckpt_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    fv_mlp_config mc = {.d = 3, .width = 8, .depth = 2, .act = FV_ACT_SILU, .fourier = 5, .fourier_scale = 2.0f};
    fv_adam_config ac = fv_adam_defaults();
    fv_trainer a, b;
    cr_assert_eq(fv_trainer_cpu_init(&a, &mc, &ac, 1, 4), FV_OK);
    cr_assert_eq(fv_trainer_cpu_init(&b, &mc, &ac, 2, 4), FV_OK);
    cr_assert_neq(memcmp(a.net.fourier, b.net.fourier, 15 * sizeof(float)), 0, "seeds 1 and 2 draw different F");
    cr_assert_eq(fv_checkpoint_save(path, &a, 3, NULL, 0, NULL, NULL), FV_OK, "%s", fv_last_error());
    fv_st_file f;
    fv_mlp_config back;
    uint64_t step;
    cr_assert_eq(fv_st_read(path, &f), FV_OK);
    cr_assert_eq(fv_checkpoint_config(&f, path, &back), FV_OK, "%s", fv_last_error());
    cr_expect(back.fourier == 5 && back.fourier_scale == 2.0f, "config: fourier %zu scale %g", back.fourier,
              (double)back.fourier_scale);
    cr_assert_eq(fv_checkpoint_load(&f, path, &b, &step, NULL), FV_OK, "%s", fv_last_error());
    cr_expect_eq(memcmp(a.net.fourier, b.net.fourier, 15 * sizeof(float)), 0, "F restored");
    float x[6] = {0.3f, -1.2f, 2.0f, 0.7f, 0.1f, -0.4f}, t[2] = {0.25f, 0.8f}, ya[6], yb[6];
    fv_mlp_forward(&a.net, 2, x, t, ya, &a.acts);
    fv_mlp_forward(&b.net, 2, x, t, yb, &b.acts);
    cr_expect_eq(memcmp(ya, yb, sizeof ya), 0, "same predictions after loading");
    fv_st_free(&f);
    /* a Fourier network whose scale is not a positive number */
    size_t shape[2] = {5, 4};
    float F[20] = {0};
    fv_st_entry e = {"net.0.weight", FV_ST_F32, 2, shape, F};
    const char *k[] = {"model.d", "model.width", "model.depth", "model.act", "model.temb", "model.fourier",
                       "model.fourier_scale", "step", "adam.step"};
    const char *v[] = {"3", "8", "2", "silu", "0", "5", "2", "5", "5"};
    v[6] = "-1";
    cr_assert_eq(fv_st_write(path, 1, &e, 9, k, v), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_st_read(path, &f), FV_OK);
    cr_assert_eq(fv_checkpoint_config(&f, path, &back), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "model.fourier_scale") != NULL, "%s", fv_last_error());
    fv_st_free(&f);
    fv_trainer_free(&a);
    fv_trainer_free(&b);
    unlink(path);
}

/* A checkpoint whose tensors disagree with the network is refused, naming the tensor. */
static void expect_mismatch(fv_st_dtype dtype, size_t rows, const char *needle)
{
    char path[] = "/tmp/fv_bad_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    fv_trainer a;
    small_trainer(&a, 0);
    double data[64 * 2] = {0};
    size_t shape[2] = {rows, 3};
    fv_st_entry e = {"net.0.weight", dtype, 2, shape, data};
    const char *k[] = {"model.d", "model.width", "model.depth", "model.act", "model.temb", "step", "adam.step"};
    const char *v[] = {"2", "16", "2", "tanh", "0", "5", "5"};
    cr_assert_eq(fv_st_write(path, 1, &e, 7, k, v), FV_OK, "%s", fv_last_error());
    fv_st_file f;
    uint64_t step;
    cr_assert_eq(fv_st_read(path, &f), FV_OK);
    cr_assert_eq(fv_checkpoint_load(&f, path, &a, &step, NULL), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), needle) != NULL, "%s", fv_last_error());
    cr_assert(strstr(fv_last_error(), path) != NULL, "%s", fv_last_error());
    fv_st_free(&f);
    fv_trainer_free(&a);
    unlink(path);
}

Test(cfm, checkpoint_with_wrong_shape_is_refused) { expect_mismatch(FV_ST_F32, 32, "net.0.weight"); }
Test(cfm, checkpoint_with_wrong_dtype_is_refused) { expect_mismatch(FV_ST_F64, 16, "F64"); }

Test(cfm, checkpoint_without_metadata_is_refused)
{
    char path[] = "/tmp/fv_meta_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    float x = 1;
    size_t shape[1] = {1};
    fv_st_entry e = {"x", FV_ST_F32, 1, shape, &x};
    cr_assert_eq(fv_st_write(path, 1, &e, 0, NULL, NULL), FV_OK);
    fv_st_file f;
    fv_mlp_config mc;
    cr_assert_eq(fv_st_read(path, &f), FV_OK);
    cr_assert_eq(fv_checkpoint_config(&f, path, &mc), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "not a flowvar checkpoint") != NULL, "%s", fv_last_error());
    fv_st_free(&f);
    unlink(path);
}
