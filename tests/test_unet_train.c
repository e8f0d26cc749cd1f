/* test_unet_train.c: the U-Net in the shared CFM loop on the CPU: image-like target sets as a data
 * source, training that lowers the loss, training-mode dropout that a resumed run replays exactly
 * (bit-identical weights), and U-Net checkpoints. */
#include <criterion/criterion.h>

#include "core/error.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "nn/cfm.h"
#include "nn/checkpoint.h"

#include "helpers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NIMG 24
#define SIDE 8

static fv_problem prob;
static float images[NIMG * SIDE * SIDE];

static void setup(void)
{
    cr_assert_eq(fv_problem_alloc(&prob, SIDE * SIDE), FV_OK);
    prob.sigma = 0.05;
    prob.coupling = FV_COUPLING_INDEPENDENT;
    double z[NIMG * SIDE * SIDE];
    fv_rng r = fv_rng_make(5, 5);
    fv_rng_normal(&r, NIMG * SIDE * SIDE, z);
    for (size_t i = 0; i < NIMG * SIDE * SIDE; i++) /* smooth-ish "images" in [-1, 1] */
        images[i] = (float)tanh(0.5 * z[i] + 0.5 * z[(i + 1) % (NIMG * SIDE * SIDE)]);
}

static void teardown(void) { fv_problem_free(&prob); }

TestSuite(unet_train, .init = setup, .fini = teardown);

static fv_unet_config tiny(float dropout)
{
    fv_unet_config c = {0};
    c.in_channels = 1;
    c.height = c.width = SIDE;
    c.num_channels = 32;
    c.num_res_blocks = 1;
    c.nlevels = 2;
    c.channel_mult[0] = 1;
    c.channel_mult[1] = 2;
    c.nattn = 1;
    c.attention_resolutions[0] = SIDE / 2;
    c.num_heads = 2;
    c.dropout = dropout;
    return c;
}

Test(unet_train, target_sets_pair_standard_normals_with_set_rows)
{
    fv_cfm_data D;
    size_t B = 10, d = SIDE * SIDE;
    double x0[10 * SIDE * SIDE], x1[10 * SIDE * SIDE], z[10 * SIDE * SIDE];
    cr_assert_eq(fv_cfm_data_targets(&D, &prob, NIMG, images, B), FV_OK, "%s", fv_last_error());
    cr_assert(D.std_source, "N(0, I) is recognized");
    cr_assert_eq(fv_cfm_pairs(&D, 3, 11, B, x0, x1), FV_OK);
    fv_rng r = fv_rng_make(3, 2 * 11); /* the step's pair stream */
    fv_rng_normal(&r, B * d, z);
    cr_assert_eq(memcmp(x0, z, sizeof z), 0, "the sources are the stream's normals, bit for bit");
    for (size_t i = 0; i < B; i++) {
        int found = 0;
        for (size_t k = 0; k < NIMG && !found; k++) {
            found = 1;
            for (size_t j = 0; j < d && found; j++)
                found = x1[i * d + j] == (double)images[k * d + j];
        }
        cr_assert(found, "row %zu's target is one of the set's images", i);
    }
    fv_cfm_data_free(&D);
    cr_assert_eq(fv_cfm_data_targets(&D, &prob, 0, images, B), FV_EINPUT);
}

static void train(fv_trainer *tr, fv_cfm_data *D, uint64_t *step, size_t to, const char *ckpt, fv_loss_log *log)
{
    fv_train_opts o = {0};
    o.steps = to;
    o.batch = 6;
    o.seed = 9;
    o.log_every = 1;
    o.checkpoint = ckpt;
    cr_assert_eq(fv_cfm_train(tr, D, &o, step, log), FV_OK, "%s", fv_last_error());
}

Test(unet_train, loss_falls_and_a_resumed_run_is_bit_identical)
{
    char dir[64];
    th_scratch_make(dir, "fv_unet_train");
    fv_unet_config c = tiny(0.2f); /* dropout on: its masks must replay on resume */
    fv_adam_config ac = fv_adam_defaults();
    ac.ema_decay = 0.9f;
    fv_cfm_data D;
    /* one target image: the best field, v = (x1 - x_t) / (1 - t) up to the noise, is learnable, so a
     * few dozen steps must take a large part of the loss away */
    cr_assert_eq(fv_cfm_data_targets(&D, &prob, 1, images, 6), FV_OK);
    fv_trainer whole, part, resumed;
    fv_loss_log lw = {0}, lp = {0}, lr = {0};
    uint64_t sw = 0, sp = 0, sr = 0;
    cr_assert_eq(fv_trainer_unet_init(&whole, &c, &ac, 4, 6), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_trainer_unet_init(&part, &c, &ac, 4, 6), FV_OK);
    cr_assert_eq(fv_trainer_unet_init(&resumed, &c, &ac, 77, 6), FV_OK);
    train(&whole, &D, &sw, 40, NULL, &lw);
    double first = 0, last = 0;
    for (int i = 0; i < 5; i++) {
        first += lw.rows[3 * i + 1] / 5;
        last += lw.rows[3 * (lw.n - 1 - i) + 1] / 5;
    }
    cr_assert_lt(last, 0.5 * first, "mean loss of the first 5 steps %g, of the last 5 %g", first, last);
    char ckpt[256];
    snprintf(ckpt, sizeof ckpt, "%s", th_path_in(dir, "part.safetensors"));
    train(&part, &D, &sp, 20, ckpt, &lp);
    fv_st_file f;
    cr_assert_eq(fv_st_read(ckpt, &f), FV_OK);
    cr_assert_str_eq(fv_st_meta(&f, "model.kind"), "unet");
    fv_mlp_config mc;
    cr_assert_eq(fv_checkpoint_config(&f, ckpt, &mc), FV_EINPUT, "a U-Net file is not an MLP's");
    cr_assert(fv_st_find(&f, "input_blocks.0.0.weight") != NULL, "torchcfm's names");
    cr_assert_eq(fv_checkpoint_load(&f, ckpt, &resumed, &sr, &lr), FV_OK, "%s", fv_last_error());
    fv_st_free(&f);
    cr_assert_eq(sr, 20);
    train(&resumed, &D, &sr, 40, NULL, &lr);
    size_t bytes = whole.nparams * sizeof(float);
    cr_assert_eq(memcmp(whole.params, resumed.params, bytes), 0, "weights bit-identical after resume");
    cr_assert_eq(memcmp(whole.opt.ema, resumed.opt.ema, bytes), 0, "EMA bit-identical after resume");
    cr_assert_eq(memcmp(whole.opt.v, resumed.opt.v, bytes), 0, "Adam state bit-identical after resume");
    fv_loss_log_free(&lw);
    fv_loss_log_free(&lp);
    fv_loss_log_free(&lr);
    fv_trainer_free(&whole);
    fv_trainer_free(&part);
    fv_trainer_free(&resumed);
    fv_cfm_data_free(&D);
    th_remove_tree(dir);
}

/* Every parameter moved by up to 0.05: the zero-initialized tensors (torchcfm's zero_module) would
 * otherwise stop the gradient of everything before them. */
static void perturb(fv_trainer *tr)
{
    fv_rng r = fv_rng_make(9, 9);
    for (size_t k = 0; k < tr->nparams; k++) {
        double u;
        fv_rng_uniform(&r, 1, &u);
        tr->params[k] += (float)(0.1 * u - 0.05);
    }
}

/* A batch of B rows drawn at t = 0.4 for the trainer, its gradient without and with per-row norms. */
static void batch_grads(fv_trainer *tr, fv_cfm_data *D, size_t B, float *whole, float *rows_sum, float *sq,
                        float *loss_whole, float *loss_rows)
{
    cr_assert_eq(tr->ops->draw(tr, D, 3, 7, 0.4, B), FV_OK);
    cr_assert_eq(tr->ops->loss_grad(tr, loss_whole, NULL), FV_OK);
    memcpy(whole, tr->grads, tr->nparams * sizeof *whole);
    cr_assert_eq(tr->ops->loss_grad(tr, loss_rows, sq), FV_OK, "%s", fv_last_error());
    memcpy(rows_sum, tr->grads, tr->nparams * sizeof *rows_sum);
}

Test(unet_train, per_row_gradients_with_dropout_sum_to_the_batch_gradient)
{
    /* each row alone, with the dropout masks it has in the batch: their gradients add up to the
     * batch's (only the order of the sums differs) */
    enum { B = 3 };
    fv_unet_config c = tiny(0.3f);
    fv_adam_config ac = fv_adam_defaults();
    fv_cfm_data D;
    fv_trainer tr;
    cr_assert_eq(fv_cfm_data_targets(&D, &prob, NIMG, images, B), FV_OK);
    cr_assert_eq(fv_trainer_unet_init(&tr, &c, &ac, 1, B), FV_OK);
    perturb(&tr);
    size_t np = tr.nparams;
    float *whole = malloc(np * sizeof *whole), *sum = malloc(np * sizeof *sum), sq[B], lw, lr;
    batch_grads(&tr, &D, B, whole, sum, sq, &lw, &lr);
    cr_assert_float_eq(lr, lw, 1e-5 * lw, "loss of the rows %g vs the batch %g", lr, lw);
    double e = th_max_rel(np, sum, whole);
    cr_assert(e < 1e-5, "sum of the per-row gradients vs the batch gradient: max relative error %g", e);
    double total = 0;
    for (size_t k = 0; k < np; k++)
        total += (double)whole[k] * whole[k];
    for (int i = 0; i < B; i++)
        cr_assert(sq[i] > 0 && sq[i] < 4 * total * B, "row %d: |g|^2 = %g, batch |G|^2 = %g", i, sq[i], total);
    free(whole);
    free(sum);
    fv_trainer_free(&tr);
    fv_cfm_data_free(&D);
}

Test(unet_train, per_row_norms_equal_one_row_batches)
{
    /* without dropout, row i's gradient is that of a batch holding row i alone, scaled by 1/B */
    enum { B = 3 };
    fv_unet_config c = tiny(0);
    fv_adam_config ac = fv_adam_defaults();
    fv_cfm_data D;
    fv_trainer tr;
    cr_assert_eq(fv_cfm_data_targets(&D, &prob, NIMG, images, B), FV_OK);
    cr_assert_eq(fv_trainer_unet_init(&tr, &c, &ac, 1, B), FV_OK);
    perturb(&tr);
    size_t np = tr.nparams, d = tr.d;
    float *whole = malloc(np * sizeof *whole), *sum = malloc(np * sizeof *sum), sq[B], lw, lr;
    batch_grads(&tr, &D, B, whole, sum, sq, &lw, &lr);
    float *xt = malloc(B * d * sizeof *xt), *u = malloc(B * d * sizeof *u), t[B], loss;
    memcpy(xt, tr.xt, B * d * sizeof *xt);
    memcpy(u, tr.u, B * d * sizeof *u);
    memcpy(t, tr.t, sizeof t);
    for (int i = 0; i < B; i++) {
        cr_assert_eq(tr.ops->load(&tr, 1, xt + i * d, t + i, u + i * d), FV_OK);
        cr_assert_eq(tr.ops->loss_grad(&tr, &loss, NULL), FV_OK);
        double s = 0;
        for (size_t k = 0; k < np; k++)
            s += (double)tr.grads[k] * tr.grads[k] / (B * B);
        cr_assert_float_eq(sq[i], s, 1e-4 * s, "row %d: per-row norm %g vs one-row batch %g", i, sq[i], s);
    }
    free(xt);
    free(u);
    free(whole);
    free(sum);
    fv_trainer_free(&tr);
    fv_cfm_data_free(&D);
}
