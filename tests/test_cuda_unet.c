/* test_cuda_unet.c: the U-Net on the GPU (cuda/unet_cuda.h) against the CPU reference, ggml-style: one
 * table row per (layer, shape, tensor) on stderr ("cuda-parity WHAT SHAPE max-rel-err bound BOUND PASS|FAIL"), fp32 within
 * 1e-4 of each tensor's scale; the whole network against the torchcfm fixture; 100 training steps of a
 * tiny configuration on both devices from one seed. Without a GPU each GPU test prints one skip line
 * and passes. The CPU twin of the dropout formula and the paper-size memory budget run everywhere. */
#include <criterion/criterion.h>

#include "core/error.h"
#include "core/philox.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "nn/cfm.h"
#include "nn/mlp.h"
#include "nn/nn_math.h"
#include "nn/trainer.h"
#include "nn/unet.h"
#include "nn/unet_layers.h"

#include "helpers.h"

#ifdef FV_HAVE_CUDA
#include "cuda/unet_cuda.h"

#include <cuda_runtime_api.h>
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_LAYER 1e-4   /* the fp32 bound: one layer, sums in another order */
#define TOL_TRAIN 1e-3   /* the bound on the loss over 100 steps */
#define FIXTURE "tests/fixtures/unet/unet_small.safetensors"

static void fill(fv_rng *r, size_t n, float *out, double scale, double shift)
{
    double z;
    for (size_t i = 0; i < n; i++) {
        fv_rng_normal(r, 1, &z);
        out[i] = (float)(shift + scale * z);
    }
}

/* ---- on every machine --------------------------------------------------------------------------- */

/* fv_dropout_elem is the formula fv_dropout_forward applies to Philox block i / 4, word i % 4. */
Test(cuda_unet, dropout_elem_is_the_cpu_mask)
{
    size_t n = 1003;
    float p = 0.3f, scale = 1.0f / (1.0f - p), *x = malloc(2 * n * sizeof *x), *y = x + n;
    fv_rng r = fv_rng_make(1, 2);
    fill(&r, n, x, 1.0, 0.0);
    fv_dropout_forward(y, x, n, p, 7, 9, 100);
    size_t dropped = 0;
    for (size_t i = 0; i < n; i++) {
        fv_philox_ctr c = fv_philox_block(7, 9, 100 + i / 4);
        float u = (float)(c.v[i % 4] >> 8) * 0x1p-24f, want = u < p ? 0.0f : x[i] * scale;
        cr_assert_eq(fv_dropout_elem(x[i], c.v[i % 4], p, scale), want, "element %zu", i);
        cr_assert_eq(y[i], want, "fv_dropout_forward element %zu", i);
        dropped += y[i] == 0.0f;
    }
    cr_expect(dropped > 0.2 * n && dropped < 0.4 * n, "%zu of %zu dropped at p = 0.3", dropped, n);
    cr_assert_eq(fv_dropout_elem(2.0f, 0u, 0.0f, 1.0f), 2.0f, "p = 0 keeps everything, even u = 0");
    cr_assert_eq(fv_dropout_elem(2.0f, 0u, 0.5f, 2.0f), 0.0f, "u = 0 < p drops");
    cr_assert_eq(fv_dropout_elem(2.0f, 0xffffffffu, 0.5f, 2.0f), 4.0f, "u near 1 keeps, scaled");
    free(x);
}

#ifdef FV_HAVE_CUDA
/* The memory budget: the paper's network at batch 128 in 24 GB (weights, Adam, EMA, gradients
 * and the device workspace, as laid out on the host; cuBLAS's own workspace comes on top). */
Test(cuda_unet, paper_size_batch_128_fits_in_24_gb)
{
    fv_unet net;
    fv_unet_config c = fv_unet_config_cifar10();
    cr_assert_eq(fv_unet_layout(&net, &c), FV_OK);
    size_t acts = fv_cuda_unet_acts_bytes(&net, 128), state = 5 * net.nparams * sizeof(float);
    double gib = (double)(acts + state) / (1 << 30);
    fprintf(stderr, "cuda-memory paper U-Net batch 128: activations %.2f GiB + state %.2f GiB = %.2f GiB\n",
            (double)acts / (1 << 30), (double)state / (1 << 30), gib);
    cr_expect(acts > 0 && gib < 24.0 * 1e9 / (1 << 30), "%.2f GiB", gib);
    fv_unet_free(&net);
}

/* ---- layers ------------------------------------------------------------------------------------- */

/* Device copies made by a test, freed together at its end. */
static void *dev_mem[64];
static size_t dev_n;

static float *dev(const float *host, size_t n)
{
    float *d;
    cr_assert_lt(dev_n, 64);
    cr_assert_eq(cudaMalloc((void **)&d, (n ? n : 1) * sizeof *d), cudaSuccess);
    if (host)
        cr_assert_eq(cudaMemcpy(d, host, n * sizeof *d, cudaMemcpyHostToDevice), cudaSuccess);
    else
        cr_assert_eq(cudaMemset(d, 0, (n ? n : 1) * sizeof *d), cudaSuccess);
    return dev_mem[dev_n++] = d;
}

static void dev_free_all(void)
{
    while (dev_n)
        cudaFree(dev_mem[--dev_n]);
}

/* Download n floats of a device tensor and put its table row. */
static void check(const char *what, const char *shape, size_t n, const float *d, const float *cpu)
{
    float *h = malloc(n * sizeof *h);
    cr_assert_eq(cudaMemcpy(h, d, n * sizeof *h, cudaMemcpyDeviceToHost), cudaSuccess, "%s", what);
    th_parity(what, shape, n, h, cpu, TOL_LAYER);
    free(h);
}

/* Host buffers of a layer check: random inputs and their CPU results, in one allocation. */
static float *host_buf(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    cr_assert_not_null(p);
    return p;
}

static cublasHandle_t handle(void)
{
    cublasHandle_t h;
    cr_assert_eq(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    return h;
}

static void conv_case(cublasHandle_t h, size_t B, fv_conv2d_shape s, size_t ncol)
{
    size_t P = fv_conv2d_out_h(&s) * fv_conv2d_out_w(&s), nin = B * s.cin * s.h * s.w, nout = B * s.cout * P;
    size_t nw = s.cout * s.cin * s.k * s.k, ncs = fv_conv2d_col_size(&s);
    char shape[64];
    snprintf(shape, sizeof shape, "B%zu %zu->%zu %zux%zu k%zu s%zu", B, s.cin, s.cout, s.h, s.w, s.k, s.stride);
    float *in = host_buf(nin), *W = host_buf(nw), *b = host_buf(s.cout), *dout = host_buf(nout);
    float *out = host_buf(nout), *dinp = host_buf(nin), *dW = host_buf(nw), *db = host_buf(s.cout);
    float *col = host_buf(ncs);
    fv_rng r = fv_rng_make(11, s.cin * 100 + s.cout);
    fill(&r, nin, in, 1.0, 0.0);
    fill(&r, nw, W, 0.3, 0.0);
    fill(&r, s.cout, b, 0.5, 0.0);
    fill(&r, nout, dout, 1.0, 0.0);
    fill(&r, nin, dinp, 1.0, 0.0); /* gradients add onto what is there */
    float *d_in = dev(in, nin), *d_W = dev(W, nw), *d_b = dev(b, s.cout), *d_dout = dev(dout, nout);
    float *d_out = dev(NULL, nout), *d_dinp = dev(dinp, nin), *d_dW = dev(NULL, nw), *d_db = dev(NULL, s.cout);
    float *d_col = ncs ? dev(NULL, ncol * ncs) : NULL;
    fv_conv2d_forward(out, in, W, b, col, B, &s);
    fv_conv2d_backward(dinp, dW, db, dout, in, W, col, B, &s);
    cr_assert_eq(fv_cuda_conv2d_forward(h, d_out, d_in, d_W, d_b, d_col, ncol, B, &s), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_cuda_conv2d_backward(h, d_dinp, d_dW, d_db, d_dout, d_in, d_W, d_col, ncol, B, &s), FV_OK, "%s",
                 fv_last_error());
    check("conv2d out", shape, nout, d_out, out);
    check("conv2d dinp", shape, nin, d_dinp, dinp);
    check("conv2d dW", shape, nw, d_dW, dW);
    check("conv2d db", shape, s.cout, d_db, db);
    free(in), free(W), free(b), free(dout), free(out), free(dinp), free(dW), free(db), free(col);
    dev_free_all();
}

Test(cuda_unet, convolutions_match_the_cpu)
{
    th_need_gpu();
    cublasHandle_t h = handle();
    conv_case(h, 3, (fv_conv2d_shape){4, 6, 8, 8, 3, 1, 1}, 2);  /* 3x3, the batch in chunks of 2 and 1 */
    conv_case(h, 2, (fv_conv2d_shape){5, 3, 9, 7, 3, 2, 1}, 1);  /* stride 2 on odd sizes */
    conv_case(h, 2, (fv_conv2d_shape){6, 12, 5, 5, 1, 1, 0}, 1); /* 1x1: the images themselves */
    conv_case(h, 4, (fv_conv2d_shape){64, 32, 16, 16, 3, 1, 1}, 4);
    cublasDestroy(h);
}

static void groupnorm_case(cublasHandle_t h, size_t B, size_t C, size_t HW, size_t G)
{
    size_t n = B * C * HW;
    char shape[64];
    snprintf(shape, sizeof shape, "B%zu C%zu HW%zu G%zu", B, C, HW, G);
    float *in = host_buf(n), *gam = host_buf(C), *bet = host_buf(C), *dout = host_buf(n), *out = host_buf(n);
    float *mean = host_buf(B * G), *rstd = host_buf(B * G), *dinp = host_buf(n), *dg = host_buf(C), *dbt = host_buf(C);
    fv_rng r = fv_rng_make(12, C);
    fill(&r, n, in, 2.0, 3.0); /* a mean far from 0: the variance must not cancel */
    fill(&r, C, gam, 0.5, 1.0);
    fill(&r, C, bet, 0.5, 0.0);
    fill(&r, n, dout, 1.0, 0.0);
    fill(&r, n, dinp, 1.0, 0.0);
    float *d_in = dev(in, n), *d_g = dev(gam, C), *d_b = dev(bet, C), *d_dout = dev(dout, n), *d_out = dev(NULL, n);
    float *d_mean = dev(NULL, B * G), *d_rstd = dev(NULL, B * G), *d_dinp = dev(dinp, n), *d_dg = dev(NULL, C);
    float *d_dbt = dev(NULL, C);
    double *d_part;
    cr_assert_eq(cudaMalloc((void **)&d_part, 2 * B * C * sizeof(double)), cudaSuccess);
    fv_groupnorm_forward(out, mean, rstd, in, gam, bet, B, C, HW, G);
    fv_groupnorm_backward(dinp, dg, dbt, dout, in, mean, rstd, gam, B, C, HW, G);
    cr_assert_eq(fv_cuda_groupnorm_forward(h, d_out, d_mean, d_rstd, d_in, d_g, d_b, B, C, HW, G), FV_OK);
    cr_assert_eq(fv_cuda_groupnorm_backward(h, d_dinp, d_dg, d_dbt, d_dout, d_in, d_mean, d_rstd, d_g, d_part, B, C, HW,
                                            G),
                 FV_OK);
    check("groupnorm out", shape, n, d_out, out);
    check("groupnorm mean", shape, B * G, d_mean, mean);
    check("groupnorm rstd", shape, B * G, d_rstd, rstd);
    check("groupnorm dinp", shape, n, d_dinp, dinp);
    check("groupnorm dgamma", shape, C, d_dg, dg);
    check("groupnorm dbeta", shape, C, d_dbt, dbt);
    cudaFree(d_part);
    free(in), free(gam), free(bet), free(dout), free(out), free(mean), free(rstd), free(dinp), free(dg), free(dbt);
    dev_free_all();
}

Test(cuda_unet, groupnorm_matches_the_cpu)
{
    th_need_gpu();
    cublasHandle_t h = handle();
    groupnorm_case(h, 2, 64, 16, 32);
    groupnorm_case(h, 3, 32, 64, 32);   /* one channel per group */
    groupnorm_case(h, 2, 256, 1024, 32); /* the paper's widest, at 32 x 32 */
    cublasDestroy(h);
}

Test(cuda_unet, attention_matches_the_cpu)
{
    th_need_gpu();
    cublasHandle_t h = handle();
    static const size_t cases[][4] = {{2, 2, 8, 16}, {3, 1, 4, 9}, {2, 4, 256, 64}}; /* B, heads, C, T */
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        size_t B = cases[k][0], H = cases[k][1], C = cases[k][2], T = cases[k][3];
        size_t nq = 3 * B * C * T, n = B * C * T, na = B * H * T * T;
        char shape[64];
        snprintf(shape, sizeof shape, "B%zu heads%zu C%zu T%zu", B, H, C, T);
        float *qkv = host_buf(nq), *out = host_buf(n), *att = host_buf(na), *dout = host_buf(n);
        float *dqkv = host_buf(nq), *datt = host_buf(T * T);
        fv_rng r = fv_rng_make(13, k);
        fill(&r, nq, qkv, 1.0, 0.0);
        fill(&r, n, dout, 1.0, 0.0);
        fill(&r, nq, dqkv, 1.0, 0.0);
        float *d_qkv = dev(qkv, nq), *d_out = dev(NULL, n), *d_att = dev(NULL, na), *d_dout = dev(dout, n);
        float *d_dqkv = dev(dqkv, nq), *d_datt = dev(NULL, na);
        fv_attention_forward(out, att, qkv, B, H, C, T);
        fv_attention_backward(dqkv, datt, dout, qkv, att, B, H, C, T);
        cr_assert_eq(fv_cuda_attention_forward(h, d_out, d_att, d_qkv, B, H, C, T), FV_OK, "%s", fv_last_error());
        cr_assert_eq(fv_cuda_attention_backward(h, d_dqkv, d_datt, d_dout, d_qkv, d_att, B, H, C, T), FV_OK);
        check("attention out", shape, n, d_out, out);
        check("attention weights", shape, na, d_att, att);
        check("attention dqkv", shape, nq, d_dqkv, dqkv);
        free(qkv), free(out), free(att), free(dout), free(dqkv), free(datt);
        dev_free_all();
    }
    cublasDestroy(h);
}

/* The elementwise and reshaping layers: upsampling, concatenation, sums, channel bias, SiLU, the time
 * embedding, dropout (whose masks must be the CPU's exactly: its error is 0). */
Test(cuda_unet, elementwise_layers_match_the_cpu)
{
    th_need_gpu();
    cublasHandle_t h = handle();
    size_t B = 3, C = 5, Cb = 4, H = 4, W = 6, HW = H * W, n = B * C * HW, nup = 4 * n, ncat = B * (C + Cb) * HW;
    const char *shape = "B3 C5(+4) 4x6";
    fv_rng r = fv_rng_make(14, 0);
    float *x = host_buf(nup), *y = host_buf(nup), *g = host_buf(nup), *e = host_buf(B * C), *o = host_buf(ncat);
    fill(&r, nup, x, 1.0, 0.0);
    fill(&r, nup, g, 1.0, 0.0);
    fill(&r, B * C, e, 1.0, 0.0);
    float *d_x = dev(x, nup), *d_g = dev(g, nup), *d_y = dev(NULL, nup), *d_e = dev(e, B * C), *d_o = dev(NULL, ncat);

    fv_upsample2x_forward(y, x, B, C, H, W);
    cr_assert_eq(fv_cuda_upsample2x_forward(h, d_y, d_x, B, C, H, W), FV_OK);
    check("upsample out", shape, nup, d_y, y);
    memcpy(y, x, n * sizeof *y);
    fv_upsample2x_backward(y, g, B, C, H, W);
    cr_assert_eq(fv_cuda_upsample2x_backward(h, d_x, d_g, B, C, H, W), FV_OK); /* onto x: dinp += */
    check("upsample dinp", shape, n, d_x, y);

    cr_assert_eq(cudaMemcpy(d_x, x, nup * sizeof *x, cudaMemcpyHostToDevice), cudaSuccess);
    fv_concat_forward(o, x, g, B, C, Cb, HW);
    cr_assert_eq(fv_cuda_concat_forward(h, d_o, d_x, d_g, B, C, Cb, HW), FV_OK);
    check("concat out", shape, ncat, d_o, o);
    memcpy(y, x, n * sizeof *y);
    memcpy(y + n, g, B * Cb * HW * sizeof *y);
    fv_concat_backward(y, y + n, o, B, C, Cb, HW);
    cr_assert_eq(fv_cuda_concat_backward(h, d_x, d_g, d_o, B, C, Cb, HW), FV_OK);
    check("concat da", shape, n, d_x, y);
    check("concat db", shape, B * Cb * HW, d_g, y + n);

    cr_assert_eq(cudaMemcpy(d_x, x, nup * sizeof *x, cudaMemcpyHostToDevice), cudaSuccess);
    memcpy(y, x, n * sizeof *y);
    fv_channel_bias_forward(y, e, B, C, HW);
    cr_assert_eq(fv_cuda_channel_bias_forward(h, d_x, d_e, B, C, HW), FV_OK);
    check("channel bias out", shape, n, d_x, y);
    fv_channel_bias_backward(y, g, B, C, HW);
    cr_assert_eq(cudaMemcpy(d_g, g, nup * sizeof *g, cudaMemcpyHostToDevice), cudaSuccess);
    cr_assert_eq(fv_cuda_channel_bias_backward(h, d_e, d_g, B, C, HW), FV_OK);
    check("channel bias de", shape, B * C, d_e, y);

    cr_assert_eq(cudaMemcpy(d_x, x, nup * sizeof *x, cudaMemcpyHostToDevice), cudaSuccess);
    memcpy(y, x, nup * sizeof *y);
    fv_accumulate(y, g, nup);
    cr_assert_eq(fv_cuda_accumulate(h, d_x, d_g, nup), FV_OK);
    check("sum", shape, nup, d_x, y);

    fv_act_forward(y, x, nup, FV_ACT_SILU);
    cr_assert_eq(cudaMemcpy(d_x, x, nup * sizeof *x, cudaMemcpyHostToDevice), cudaSuccess);
    cr_assert_eq(fv_cuda_silu_forward(h, d_y, d_x, nup), FV_OK);
    check("silu out", shape, nup, d_y, y);
    float *dg = host_buf(nup);
    fv_act_backward(dg, g, x, y, nup, FV_ACT_SILU);
    cr_assert_eq(fv_cuda_silu_backward(h, d_g, d_x, d_y, nup), FV_OK);
    check("silu dinp", shape, nup, d_g, dg);

    float t[5] = {0.0f, 0.25f, 0.5f, 0.999f, 1.0f};
    float *d_t = dev(t, 5);
    fv_timestep_embedding(y, t, 5, 64);
    cr_assert_eq(fv_cuda_timestep_embedding(h, d_y, d_t, 5, 64), FV_OK);
    check("timestep embedding", "B5 dim64", 5 * 64, d_y, y);

    /* dropout: bit-identical masks; n not a multiple of 4 */
    size_t nd = nup - 3;
    char dshape[32];
    snprintf(dshape, sizeof dshape, "n%zu p0.1", nd);
    fv_dropout_forward(y, x, nd, 0.1f, 5, 6, 7);
    cr_assert_eq(fv_cuda_dropout_forward(h, d_y, d_x, nd, 0.1f, 5, 6, 7), FV_OK);
    float *gy = host_buf(nup);
    cr_assert_eq(cudaMemcpy(gy, d_y, nd * sizeof *gy, cudaMemcpyDeviceToHost), cudaSuccess);
    th_parity("dropout out (exact)", dshape, nd, gy, y, 0.0);
    fv_dropout_backward(y, g, nd, 0.1f, 5, 6, 7);
    cr_assert_eq(cudaMemcpy(d_g, g, nup * sizeof *g, cudaMemcpyHostToDevice), cudaSuccess);
    cr_assert_eq(fv_cuda_dropout_backward(h, d_g, d_g, nd, 0.1f, 5, 6, 7), FV_OK); /* in place */
    cr_assert_eq(cudaMemcpy(gy, d_g, nd * sizeof *gy, cudaMemcpyDeviceToHost), cudaSuccess);
    th_parity("dropout dinp (exact)", dshape, nd, gy, y, 0.0);
    free(x), free(y), free(g), free(e), free(o), free(dg), free(gy);
    dev_free_all();
    cublasDestroy(h);
}

/* ---- the network -------------------------------------------------------------------------------- */

/* torchcfm's output and every parameter gradient (fixture), and the CPU's gradients, against the GPU's. */
Test(cuda_unet, network_matches_the_torchcfm_fixture)
{
    th_need_gpu();
    fv_st_file f;
    fv_unet net;
    fv_unet_config c;
    cr_assert_eq(fv_st_read(FIXTURE, &f), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_unet_config_from_meta(&f, &c), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_unet_init(&net, &c, 1), FV_OK);
    cr_assert_eq(fv_unet_read(&net, &f, "", net.params), FV_OK);
    size_t B = (size_t)atoi(fv_st_meta(&f, "batch")), n, nt, ng, np = net.nparams;
    float *x = th_st_tensor(&f, "x", &n), *t = th_st_tensor(&f, "t", &nt), *g = th_st_tensor(&f, "g", &ng);
    float *want = th_st_tensor(&f, "out", &n), *tg = host_buf(np), *cg = host_buf(np), *gg = host_buf(np);
    cr_assert_eq(fv_unet_read(&net, &f, "grad.", tg), FV_OK);
    fv_unet_acts a;
    cr_assert_eq(fv_unet_acts_alloc(&a, &net, B), FV_OK);
    float *out = host_buf(n);
    fv_unet_forward(&net, B, x, t, out, &a);
    fv_unet_backward(&net, B, g, cg, &a);

    cublasHandle_t h = handle();
    fv_cuda_unet_acts w;
    cr_assert_eq(fv_cuda_unet_acts_alloc(&w, &net, B), FV_OK, "%s", fv_last_error());
    float *d_p = dev(net.params, np), *d_x = dev(x, n), *d_t = dev(t, nt), *d_g = dev(g, ng), *d_out = dev(NULL, n);
    float *d_grads = dev(NULL, np);
    cr_assert_eq(fv_cuda_unet_forward(h, &net, d_p, B, d_x, d_t, d_out, &w), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_cuda_unet_backward(h, &net, d_p, B, d_g, d_grads, &w), FV_OK, "%s", fv_last_error());
    check("network out vs torchcfm", "fixture", n, d_out, want);
    check("network out vs cpu", "fixture", n, d_out, out);
    cr_assert_eq(cudaMemcpy(gg, d_grads, np * sizeof *gg, cudaMemcpyDeviceToHost), cudaSuccess);
    /* Per tensor against torch; the tensors whose gradient is zero in exact arithmetic (rounding noise on
     * every side) against the largest gradient entry instead. */
    const char *zero = fv_st_meta(&f, "grad.zero");
    double gmax = 0.0;
    for (size_t i = 0; i < np; i++)
        gmax = fmax(gmax, fabs((double)tg[i]));
    for (size_t i = 0; i < net.ntensors; i++) {
        const fv_unet_tensor *ten = &net.tensors[i];
        if (th_listed(zero, ten->name)) {
            double z = 0.0;
            for (size_t j = 0; j < ten->count; j++)
                z = fmax(z, fabs((double)gg[ten->offset + j]) / gmax);
            cr_expect(z < 1e-6, "%s (zero in exact arithmetic): %.3g of the largest gradient", ten->name, z);
            continue;
        }
        th_parity(ten->name, "grad vs torchcfm", ten->count, gg + ten->offset, tg + ten->offset, TOL_LAYER);
        th_parity(ten->name, "grad vs cpu", ten->count, gg + ten->offset, cg + ten->offset, TOL_LAYER);
    }
    fv_cuda_unet_acts_free(&w);
    dev_free_all();
    cublasDestroy(h);
    fv_unet_acts_free(&a);
    free(x), free(t), free(g), free(want), free(tg), free(cg), free(gg), free(out);
    fv_unet_free(&net);
    fv_st_free(&f);
}
#endif

/* 100 steps of a tiny U-Net with dropout, CPU and GPU from one seed on one image set: every step's
 * loss within 1e-3 relative (the bound). */
Test(cuda_unet, hundred_training_steps_match_the_cpu)
{
    th_need_gpu();
    enum { NIMG = 16, SIDE = 8, BATCH = 8, STEPS = 100 };
    static float images[NIMG * SIDE * SIDE];
    fv_rng r = fv_rng_make(15, 0);
    fill(&r, NIMG * SIDE * SIDE, images, 0.5, 0.0);
    fv_problem p;
    cr_assert_eq(fv_problem_alloc(&p, SIDE * SIDE), FV_OK);
    p.sigma = 0.05;
    p.coupling = FV_COUPLING_INDEPENDENT;
    fv_cfm_data D;
    cr_assert_eq(fv_cfm_data_targets(&D, &p, NIMG, images, BATCH), FV_OK, "%s", fv_last_error());
    fv_unet_config c = {.in_channels = 1, .height = SIDE, .width = SIDE, .num_channels = 32, .num_res_blocks = 1,
                        .nlevels = 2, .channel_mult = {1, 2}, .nattn = 1, .attention_resolutions = {SIDE / 2},
                        .num_heads = 2, .dropout = 0.1f};
    fv_adam_config ac = fv_adam_defaults();
    ac.warmup = 10;
    ac.clip = 1.0f;
    ac.ema_decay = 0.99f;
    fv_trainer cpu, gpu;
    cr_assert_eq(fv_trainer_unet_init(&cpu, &c, &ac, 3, BATCH), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_trainer_unet_cuda_init(&gpu, &c, &ac, 3, BATCH, 0), FV_OK, "%s", fv_last_error());
    float lc[STEPS], lg[STEPS], gc, gn;
    for (uint64_t s = 0; s < STEPS; s++) {
        cr_assert_eq(cpu.ops->draw(&cpu, &D, 21, s, -1.0, BATCH), FV_OK);
        cr_assert_eq(gpu.ops->draw(&gpu, &D, 21, s, -1.0, BATCH), FV_OK, "%s", fv_last_error());
        cr_assert_eq(cpu.ops->loss_grad(&cpu, &lc[s], NULL), FV_OK);
        cr_assert_eq(gpu.ops->loss_grad(&gpu, &lg[s], NULL), FV_OK, "%s", fv_last_error());
        cr_assert_eq(cpu.ops->update(&cpu, &gc), FV_OK);
        cr_assert_eq(gpu.ops->update(&gpu, &gn), FV_OK, "%s", fv_last_error());
    }
    /* The loss is the measure: a parameter whose gradient is rounding noise (the key bias of
     * attention, which the softmax ignores) takes different Adam steps on the two devices without
     * changing the output, so the weights themselves are not compared. */
    double worst = 0.0;
    for (size_t s = 0; s < STEPS; s++)
        worst = fmax(worst, fabs((double)lg[s] - lc[s]) / fabs((double)lc[s]));
    th_parity_row("loss, worst of 100 steps", "tiny unet dropout 0.1", worst, TOL_TRAIN);
    cr_expect(worst <= TOL_TRAIN, "loss: worst relative difference %g over %d steps", worst, STEPS);
    fv_trainer_free(&cpu);
    fv_trainer_free(&gpu);
    fv_cfm_data_free(&D);
    fv_problem_free(&p);
}

Test(cuda_unet, without_a_device_the_cuda_unet_is_refused_clearly)
{
    if (fv_cuda_available())
        cr_skip_test("a CUDA device is present: the refusal path is not reachable here");
    fv_unet_config c = fv_unet_config_cifar10();
    fv_adam_config ac = fv_adam_defaults();
    fv_trainer tr;
    cr_assert_eq(fv_trainer_unet_cuda_init(&tr, &c, &ac, 1, 4, 0), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "--device cpu") != NULL, "%s", fv_last_error());
    cr_assert_eq(fv_trainer_unet_init_on(&tr, "cpu", &c, &ac, 1, 1, 1), FV_EINPUT, "tf32 needs the GPU");
}
