/* test_unet_fast.c: the U-Net's fast paths against the readable references they replace.
 *
 * - oneDNN's convolutions (src/nn/conv_dnnl.c) against unet_layers.c's im2col + sgemm convolution on
 *   random inputs, forward and all three gradients, with the input gradient added or written;
 * - the fused GroupNorm + SiLU (both directions) against the two layers one after the other, bit for
 *   bit;
 * - the OpenMP loops: the same bits on one thread as on two;
 * - a workspace's plans for other batch sizes (a pass over fewer images than it holds) against
 *   workspaces made for those sizes. */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "helpers.h"

#include "src/core/error.h"
#include "src/core/rng.h"
#include "src/nn/conv_dnnl.h"
#include "src/nn/mlp.h"
#include "src/nn/unet.h"
#include "src/nn/unet_layers.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Relative to each tensor's largest entry: the two convolutions sum up to 9 cin products per output
 * in different orders (and oneDNN's blocked layouts), in float. */
#define TOL_CONV 2e-5

static float *random_floats(fv_rng *r, size_t n, double scale)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    cr_assert_not_null(p, "allocating %zu floats", n);
    double z;
    for (size_t i = 0; i < n; i++) {
        fv_rng_normal(r, 1, &z);
        p[i] = (float)(scale * z);
    }
    return p;
}

static float *copy_floats(const float *a, size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    cr_assert_not_null(p, "allocating %zu floats", n);
    memcpy(p, a, n * sizeof(float));
    return p;
}

static void expect_close(const char *what, const char *shape, size_t n, const float *got, const float *want)
{
    double e = th_max_rel(n, got, want);
    cr_log_info("%s, %s: relative error %.2e", shape, what, e);
    cr_expect(e <= TOL_CONV, "%s, %s: relative error %.3g > %g", shape, what, e, TOL_CONV);
}

/* One shape, B images: forward, dW, db, and dinp both ways (added onto a random start, or written over
 * a poisoned buffer). Returns the kept input's size (fv_dnnl_conv_kept_size). */
static size_t conv_case(size_t B, size_t cin, size_t cout, size_t h, size_t w, size_t k, size_t stride, uint64_t seed)
{
    fv_conv2d_shape s = {cin, cout, h, w, k, stride, k / 2};
    size_t P = fv_conv2d_out_h(&s) * fv_conv2d_out_w(&s), nin = B * cin * h * w, nout = B * cout * P;
    size_t nw = cout * cin * k * k, ncol = fv_conv2d_col_size(&s), kept_size = 0;
    char shape[96];
    snprintf(shape, sizeof shape, "%zu images %zu -> %zu channels %zu x %zu, %zux%zu stride %zu", B, cin, cout, h, w, k,
             k, stride);
    fv_rng r = fv_rng_make(seed, 1);
    float *in = random_floats(&r, nin, 1.0), *W = random_floats(&r, nw, 0.2), *b = random_floats(&r, cout, 1.0);
    float *dout = random_floats(&r, nout, 1.0), *start = random_floats(&r, nin, 1.0);
    float *col = malloc((ncol ? ncol : 1) * sizeof(float));
    float *out_ref = malloc(nout * sizeof(float)), *out = malloc(nout * sizeof(float));
    float *dW_ref = malloc(nw * sizeof(float)), *dW = malloc(nw * sizeof(float));
    float *db_ref = malloc(cout * sizeof(float)), *db = malloc(cout * sizeof(float));
    float *din_ref = copy_floats(start, nin), *din = malloc(nin * sizeof(float));
    cr_assert(col && out_ref && out && dW_ref && dW && db_ref && db && din, "allocating the %s case", shape);
    fv_conv2d_forward(out_ref, in, W, b, ncol ? col : NULL, B, &s);
    fv_conv2d_backward(din_ref, dW_ref, db_ref, dout, in, W, ncol ? col : NULL, B, &s); /* start + gradient */

    for (int add = 0; add < 2; add++) {
        fv_dnnl_conv *plan;
        cr_assert_eq(fv_dnnl_conv_create(&plan, &s, B, add), FV_OK, "%s: plan: %s", shape, fv_last_error());
        size_t ns = fv_dnnl_conv_scratch_size(plan);
        float *scratch = aligned_alloc(64, (ns * sizeof(float) + 64) / 64 * 64);
        cr_assert_not_null(scratch, "%s: scratch of %zu floats", shape, ns);
        fv_dnnl_conv_bind(plan, scratch);
        /* The adding plan keeps the forward's blocked input where it can, and its backward is then handed
         * a decoy for the input: the gradients below show it read the kept copy. */
        size_t nk = add ? fv_dnnl_conv_kept_size(plan) : 0;
        kept_size = nk;
        float *kept = nk ? aligned_alloc(64, (nk * sizeof(float) + 63) / 64 * 64) : NULL;
        const float *bin = nk ? start : in;
        fv_dnnl_conv_forward(plan, out, in, W, b, kept);
        expect_close(add ? "forward (plan adding dinp)" : "forward", shape, nout, out, out_ref);
        if (add) {
            memcpy(din, start, nin * sizeof(float));
        } else {
            for (size_t i = 0; i < nin; i++)
                din[i] = 1e30f; /* must be written over */
        }
        fv_dnnl_conv_backward(plan, din, dW, db, dout, bin, W, kept);
        expect_close("dW", shape, nw, dW, dW_ref);
        expect_close("db", shape, cout, db, db_ref);
        if (add) {
            expect_close("dinp added onto its start", shape, nin, din, din_ref);
        } else {
            for (size_t i = 0; i < nin; i++)
                din[i] += start[i]; /* the reference added the gradient onto start */
            expect_close("dinp written", shape, nin, din, din_ref);
        }
        /* Without dinp only the parameter gradients are computed. */
        memset(dW, 0, nw * sizeof(float));
        fv_dnnl_conv_backward(plan, NULL, dW, db, dout, bin, W, kept);
        expect_close("dW without dinp", shape, nw, dW, dW_ref);
        fv_dnnl_conv_free(plan);
        free(scratch);
        free(kept);
    }
    free(in), free(W), free(b), free(dout), free(start), free(col), free(out_ref), free(out), free(dW_ref), free(dW);
    free(db_ref), free(db), free(din_ref), free(din);
    return kept_size;
}

Test(unet_fast, dnnl_convolutions_match_the_reference)
{
    conv_case(3, 4, 6, 8, 8, 3, 1, 1);    /* 3x3, a residual block's */
    conv_case(2, 5, 3, 9, 7, 3, 2, 2);    /* Downsample's stride 2 on odd sizes */
    conv_case(2, 6, 12, 5, 5, 1, 1, 3);   /* 1x1: the skip convolution, the attention's projections */
    size_t kept = conv_case(4, 64, 32, 16, 16, 3, 1, 4); /* U-Net sizes: oneDNN's blocked layouts and reorders */
    cr_expect_geq(kept, (size_t)4 * 64 * 16 * 16, "the U-Net-sized plan keeps its blocked input (%zu floats)", kept);
    conv_case(2, 32, 3, 16, 16, 3, 1, 5); /* the head: 3 output channels */
    conv_case(1, 3, 32, 8, 8, 3, 1, 6);   /* the first convolution: 3 input channels, one image */
}

/* ---- fused GroupNorm + SiLU -------------------------------------------------------------------- */

Test(unet_fast, groupnorm_silu_fused_equals_the_two_layers)
{
    size_t B = 3, C = 64, HW = 20, G = 32, n = B * C * HW;
    fv_rng r = fv_rng_make(7, 1);
    float *in = random_floats(&r, n, 2.0), *gamma = random_floats(&r, C, 1.0), *beta = random_floats(&r, C, 1.0);
    float *dact = random_floats(&r, n, 1.0), *start = random_floats(&r, n, 1.0);
    float *norm_ref = malloc(n * sizeof(float)), *act_ref = malloc(n * sizeof(float));
    float *norm = malloc(n * sizeof(float)), *act = malloc(n * sizeof(float));
    float stats_ref[2 * 3 * 32], stats[2 * 3 * 32];
    cr_assert(norm_ref && act_ref && norm && act, "allocating");
    fv_groupnorm_forward(norm_ref, stats_ref, stats_ref + B * G, in, gamma, beta, B, C, HW, G);
    fv_act_forward(act_ref, norm_ref, n, FV_ACT_SILU);
    fv_groupnorm_silu_forward(norm, act, stats, stats + B * G, in, gamma, beta, B, C, HW, G);
    cr_expect(!memcmp(norm, norm_ref, n * sizeof(float)), "forward: the normalized values differ");
    cr_expect(!memcmp(act, act_ref, n * sizeof(float)), "forward: the SiLU values differ");
    cr_expect(!memcmp(stats, stats_ref, sizeof stats), "forward: the means or inverse deviations differ");

    float *g_ref = copy_floats(dact, n), *g = copy_floats(dact, n);
    float *din_ref = copy_floats(start, n), *din = copy_floats(start, n);
    float dgam_ref[64], dbet_ref[64], dgam[64], dbet[64];
    fv_act_backward(g_ref, g_ref, norm_ref, act_ref, n, FV_ACT_SILU);
    fv_groupnorm_backward(din_ref, dgam_ref, dbet_ref, g_ref, in, stats_ref, stats_ref + B * G, gamma, B, C, HW, G);
    fv_silu_groupnorm_backward(din, dgam, dbet, g, norm, act, in, stats, stats + B * G, gamma, B, C, HW, G);
    cr_expect(!memcmp(g, g_ref, n * sizeof(float)), "backward: the gradient at the normalized values differs");
    cr_expect(!memcmp(din, din_ref, n * sizeof(float)), "backward: the input gradient differs");
    cr_expect(!memcmp(dgam, dgam_ref, sizeof dgam), "backward: dgamma differs");
    cr_expect(!memcmp(dbet, dbet_ref, sizeof dbet), "backward: dbeta differs");
    free(in), free(gamma), free(beta), free(dact), free(start), free(norm_ref), free(act_ref), free(norm), free(act);
    free(g_ref), free(g), free(din_ref), free(din);
}

/* ---- the OpenMP loops --------------------------------------------------------------------------- */

/* Every threaded layer of unet_layers.c once, each writing its own part of out. */
static void threaded_layers(const float *x, float *out, size_t B, size_t C, size_t h, size_t w)
{
    size_t HW = h * w, n = B * C * HW, G = 32;
    float *gamma = out, *beta = out + C, *norm = out + 2 * C, *act = norm + n, *mean = act + n, *rstd = mean + B * G;
    float *din = rstd + B * G, *dg = din + n, *db = dg + C, *up = db + C, *dup = up + 4 * n, *cat = dup + n;
    float *drop = cat + 2 * n, *de = drop + n, *g = de + B * C;
    for (size_t c = 0; c < C; c++)
        gamma[c] = 1.0f + 0.01f * (float)c, beta[c] = 0.1f * (float)c;
    fv_groupnorm_silu_forward(norm, act, mean, rstd, x, gamma, beta, B, C, HW, G);
    memcpy(g, x, n * sizeof(float));
    memset(din, 0, n * sizeof(float));
    fv_silu_groupnorm_backward(din, dg, db, g, norm, act, x, mean, rstd, gamma, B, C, HW, G);
    fv_upsample2x_forward(up, act, B, C, h, w);
    memset(dup, 0, n * sizeof(float));
    fv_upsample2x_backward(dup, up, B, C, h, w);
    fv_concat_forward(cat, act, norm, B, C, C, HW);
    fv_concat_backward(din, dup, cat, B, C, C, HW);
    fv_dropout_forward(drop, act, n, 0.3f, 5, 6, 7);
    fv_accumulate(drop, din, n);
    fv_channel_bias_forward(drop, x, B, C, HW);
    fv_channel_bias_backward(de, drop, B, C, HW);
}

Test(unet_fast, threaded_layers_do_not_depend_on_the_thread_count)
{
    size_t B = 3, C = 64, h = 6, w = 10, n = B * C * h * w;
    size_t nout = 2 * 64 + 2 * n + 2 * B * 32 + n + 2 * 64 + 4 * n + n + 2 * n + n + B * C + n;
    fv_rng r = fv_rng_make(9, 1);
    float *x = random_floats(&r, n, 1.5), *one = calloc(nout, sizeof(float)), *two = calloc(nout, sizeof(float));
    cr_assert(one && two, "allocating");
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    threaded_layers(x, one, B, C, h, w);
    omp_set_num_threads(2);
    threaded_layers(x, two, B, C, h, w);
    omp_set_num_threads(saved);
    size_t differ = 0;
    for (size_t i = 0; i < nout; i++)
        differ += memcmp(&one[i], &two[i], sizeof(float)) != 0;
    cr_expect_eq(differ, 0, "%zu of %zu outputs differ between one and two threads", differ, nout);
    free(x), free(one), free(two);
}

/* ---- plans for other batch sizes ----------------------------------------------------------------- */

static fv_unet_config small_config(void)
{
    fv_unet_config c = fv_unet_config_cifar10();
    c.height = c.width = 16;
    c.num_channels = 32;
    c.num_res_blocks = 1;
    c.nlevels = 2;
    c.channel_mult[0] = 1, c.channel_mult[1] = 2;
    c.attention_resolutions[0] = 8;
    return c;
}

/* Output and gradients of a training-loss pass (forward, MSE, backward) over B images in a. */
static void pass(const fv_unet *net, fv_unet_acts *a, size_t B, const float *x, const float *t, const float *u,
                 float *out, float *grads)
{
    size_t d = net->cfg.in_channels * net->cfg.height * net->cfg.width;
    float *dout = malloc(B * d * sizeof(float));
    cr_assert_not_null(dout, "allocating");
    fv_unet_forward(net, B, x, t, out, a);
    fv_mse_loss(B * d, out, u, dout);
    fv_unet_backward(net, B, dout, grads, a);
    free(dout);
}

Test(unet_fast, fewer_images_than_the_workspace_holds_match_a_workspace_of_that_size)
{
    fv_unet_config c = small_config();
    fv_unet net;
    cr_assert_eq(fv_unet_init(&net, &c, 3), FV_OK, "%s", fv_last_error());
    size_t d = c.in_channels * c.height * c.width, cap = 3;
    fv_rng r = fv_rng_make(11, 1);
    float *x = random_floats(&r, cap * d, 1.0), *u = random_floats(&r, cap * d, 1.0), t[3] = {0.1f, 0.5f, 0.9f};
    float *out = malloc(cap * d * sizeof(float)), *want = malloc(cap * d * sizeof(float));
    float *grads = malloc(net.nparams * sizeof(float)), *gwant = malloc(net.nparams * sizeof(float));
    cr_assert(out && want && grads && gwant, "allocating");
    fv_unet_acts big;
    cr_assert_eq(fv_unet_acts_alloc(&big, &net, cap), FV_OK, "%s", fv_last_error());
    /* 1, 2, 1, 3 images through the 3-image workspace: its own plans, then another size's twice over. */
    size_t sizes[] = {1, 2, 1, 3};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t B = sizes[k];
        fv_unet_acts own;
        cr_assert_eq(fv_unet_acts_alloc(&own, &net, B), FV_OK, "%s", fv_last_error());
        pass(&net, &own, B, x, t, u, want, gwant);
        fv_unet_acts_free(&own);
        pass(&net, &big, B, x, t, u, out, grads);
        cr_expect(!memcmp(out, want, B * d * sizeof(float)), "%zu images (pass %zu): the outputs differ", B, k);
        cr_expect(!memcmp(grads, gwant, net.nparams * sizeof(float)), "%zu images (pass %zu): the gradients differ",
                  B, k);
    }
    fv_unet_acts_free(&big);
    fv_unet_free(&net);
    free(x), free(u), free(out), free(want), free(grads), free(gwant);
}
