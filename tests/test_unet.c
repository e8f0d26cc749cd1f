/* test_unet.c: torchcfm's U-Net on the CPU (src/nn/unet.c, src/nn/unet_layers.c).
 *
 * - against torchcfm's own UNetModelWrapper (tests/fixtures/unet, made by
 *   tests/oracle/make_unet_fixture.py): the tensor names, shapes and order of the state_dict, for the
 *   fixture's network and the paper's; each block's output from the fixture's input to that block; the
 *   whole network's output and every parameter gradient;
 * - every layer's backward against central differences of its forward on small random inputs, and the
 *   whole network's in training mode with dropout;
 * - the paper's parameter count from the configuration alone, bad configurations, the safetensors
 *   round trip, initialization, dropout's mask. */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "helpers.h"

#include "src/core/error.h"
#include "src/core/rng.h"
#include "src/core/safetensors.h"
#include "src/nn/unet.h"
#include "src/nn/unet_layers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/unet/unet_small.safetensors"
#define PAPER_NPARAMS 35746307 /* torchcfm's count for the paper's CIFAR-10 network (the number) */
#define TOL_TORCH 1e-4         /* relative to each tensor's largest entry */

/* ---- helpers ---------------------------------------------------------------------------------- */

static void fill_normal(fv_rng *r, size_t n, float *out, double scale)
{
    double z;
    for (size_t i = 0; i < n; i++) {
        fv_rng_normal(r, 1, &z);
        out[i] = (float)(scale * z);
    }
}

static double max_abs(size_t n, const float *a)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i]));
    return m;
}

/* The fixture, its network with torch's weights, and the batch size. */
static void load_fixture(fv_st_file *f, fv_unet *net, size_t *B)
{
    cr_assert_eq(fv_st_read(FIXTURE, f), FV_OK, "%s", fv_last_error());
    fv_unet_config c;
    cr_assert_eq(fv_unet_config_from_meta(f, &c), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_unet_init(net, &c, 1), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_unet_read(net, f, "", net->params), FV_OK, "%s", fv_last_error());
    *B = (size_t)atoi(fv_st_meta(f, "batch"));
}

/* The layout's "name shape" lines, one per tensor in order, against a state_dict listing. */
static void expect_state_dict(const fv_unet *net, const char *listing, const char *what)
{
    cr_assert_not_null(listing, "%s: no state_dict listing", what);
    const char *p = listing;
    size_t i = 0;
    for (; *p && i < net->ntensors; i++) {
        const fv_unet_tensor *t = &net->tensors[i];
        char line[128], shape[48] = "";
        for (int d = 0; d < t->ndim; d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%zu", d ? "x" : "", t->shape[d]);
        snprintf(line, sizeof line, "%s %s", t->name, shape);
        size_t len = strcspn(p, "\n");
        cr_expect(len == strlen(line) && !strncmp(p, line, len), "%s tensor %zu: flowvar '%s', torch '%.*s'", what, i,
                  line, (int)len, p);
        p += len + (p[len] == '\n');
    }
    cr_expect(i == net->ntensors && *p == '\0', "%s: flowvar has %zu tensors, torch's listing %s", what,
              net->ntensors, *p ? "has more" : "fewer");
}

/* ---- against torchcfm ------------------------------------------------------------------------- */

Test(unet, fixture_state_dict)
{
    fv_st_file f;
    fv_unet net;
    size_t B;
    load_fixture(&f, &net, &B);
    expect_state_dict(&net, fv_st_meta(&f, "state_dict"), "fixture network");
    cr_expect_eq(net.nparams, (size_t)atol(fv_st_meta(&f, "nparams")));
    cr_expect_eq(fv_unet_count_params(&net.cfg), net.nparams);
    fv_unet_free(&net);
    fv_st_free(&f);
}

Test(unet, paper_count_and_state_dict)
{
    fv_unet_config c = fv_unet_config_cifar10();
    cr_expect_eq(fv_unet_count_params(&c), PAPER_NPARAMS, "paper network: %zu parameters", fv_unet_count_params(&c));
    fv_st_file f;
    cr_assert_eq(fv_st_read(FIXTURE, &f), FV_OK, "%s", fv_last_error());
    cr_expect_eq((size_t)atol(fv_st_meta(&f, "paper.nparams")), PAPER_NPARAMS, "torchcfm's count in the fixture");
    fv_unet net;
    cr_assert_eq(fv_unet_layout(&net, &c), FV_OK, "%s", fv_last_error());
    cr_expect_null(net.params);
    cr_expect_eq(net.nparams, PAPER_NPARAMS);
    expect_state_dict(&net, fv_st_meta(&f, "paper.state_dict"), "paper network");
    fv_unet_free(&net);
    fv_st_free(&f);
}

Test(unet, fixture_blocks)
{
    fv_st_file f;
    fv_unet net;
    size_t B;
    load_fixture(&f, &net, &B);
    fv_unet_acts a;
    cr_assert_eq(fv_unet_acts_alloc(&a, &net, B), FV_OK);
    float *t = th_st_tensor(&f, "t", NULL);
    size_t n;
    float *want = th_st_tensor(&f, "act.time_embed", &n);
    fv_unet_time_forward(&net, B, t, &a);
    double e = th_max_rel(n, a.u[0].out, want), worst = e;
    cr_expect(e < TOL_TORCH, "time_embed: relative error %.3g", e);
    cr_log_info("time_embed: %.2e", e);
    free(want);
    for (size_t blk = 0; blk < net.nblocks; blk++) {
        char name[64];
        size_t nin;
        snprintf(name, sizeof name, "in.%s", net.blocks[blk].name);
        float *in = th_st_tensor(&f, name, &nin);
        memcpy(fv_unet_block_input(&net, &a, blk), in, nin * sizeof(float));
        fv_unet_block_forward(&net, blk, B, &a);
        snprintf(name, sizeof name, "act.%s", net.blocks[blk].name);
        want = th_st_tensor(&f, name, &n);
        e = th_max_rel(n, fv_unet_block_output(&net, &a, blk), want);
        worst = fmax(worst, e);
        cr_expect(e < TOL_TORCH, "%s: relative error %.3g", net.blocks[blk].name, e);
        cr_log_info("%s: %.2e", net.blocks[blk].name, e);
        free(in);
        free(want);
    }
    cr_log_info("blocks: worst relative error %.2e", worst);
    free(t);
    fv_unet_acts_free(&a);
    fv_unet_free(&net);
    fv_st_free(&f);
}

Test(unet, fixture_network)
{
    fv_st_file f;
    fv_unet net;
    size_t B, n;
    load_fixture(&f, &net, &B);
    fv_unet_acts a;
    cr_assert_eq(fv_unet_acts_alloc(&a, &net, B), FV_OK);
    float *x = th_st_tensor(&f, "x", NULL), *t = th_st_tensor(&f, "t", NULL), *g = th_st_tensor(&f, "g", NULL);
    float *want = th_st_tensor(&f, "out", &n), *out = malloc(n * sizeof(float));
    fv_unet_forward(&net, B, x, t, out, &a);
    double e = th_max_rel(n, out, want);
    cr_expect(e < TOL_TORCH, "output: relative error %.3g", e);
    cr_log_info("output: %.2e (torch float32 vs float64: %s)", e, fv_st_meta(&f, "f32_vs_f64.out"));

    float *grads = malloc(net.nparams * sizeof(float)), *tg = malloc(net.nparams * sizeof(float));
    for (size_t i = 0; i < net.nparams; i++)
        grads[i] = NAN; /* every entry must be written */
    fv_unet_backward(&net, B, g, grads, &a);
    cr_assert_eq(fv_unet_read(&net, &f, "grad.", tg), FV_OK, "%s", fv_last_error());
    double gmax = max_abs(net.nparams, tg), worst = 0, worst_zero = 0;
    const char *zero = fv_st_meta(&f, "grad.zero"), *worst_name = "";
    size_t nzero = 0;
    for (size_t i = 0; i < net.ntensors; i++) {
        const fv_unet_tensor *ten = &net.tensors[i];
        const float *mine = grads + ten->offset, *theirs = tg + ten->offset;
        if (th_listed(zero, ten->name)) {
            /* Zero in exact arithmetic: both sides are rounding noise; torch's own reaches f32.grad_zero
             * (about 1e-7) of the largest gradient entry. */
            double z = max_abs(ten->count, mine) / gmax;
            worst_zero = fmax(worst_zero, z);
            nzero++;
            cr_expect(z < 1e-6, "%s (zero in exact arithmetic): %.3g of the largest gradient", ten->name, z);
            continue;
        }
        e = th_max_rel(ten->count, mine, theirs);
        if (e > worst) {
            worst = e;
            worst_name = ten->name;
        }
        cr_expect(e < TOL_TORCH, "grad %s: relative error %.3g (scale %.3g)", ten->name, e,
                  max_abs(ten->count, theirs));
    }
    cr_expect_eq(nzero, 11, "the fixture lists %zu zero gradients", nzero);
    cr_log_info("gradients: worst relative error %.2e (%s; torch float32 vs float64: %s); %zu zero gradients up to "
                "%.2e of the largest (torch: %s)",
                worst, worst_name, fv_st_meta(&f, "f32_vs_f64.grad"), nzero, worst_zero,
                fv_st_meta(&f, "f32.grad_zero"));
    /* A second backward over the same forward gives the same gradients: nothing accumulates across calls. */
    memcpy(tg, grads, net.nparams * sizeof(float));
    fv_unet_backward(&net, B, g, grads, &a);
    cr_expect(memcmp(tg, grads, net.nparams * sizeof(float)) == 0, "a second backward differs");
    free(x), free(t), free(g), free(want), free(out), free(grads), free(tg);
    fv_unet_acts_free(&a);
    fv_unet_free(&net);
    fv_st_free(&f);
}

/* ---- configuration ---------------------------------------------------------------------------- */

static fv_unet_config small_config(void)
{
    fv_unet_config c = {.in_channels = 2,
                        .height = 8,
                        .width = 8,
                        .num_channels = 32,
                        .num_res_blocks = 1,
                        .nlevels = 2,
                        .channel_mult = {1, 2},
                        .nattn = 1,
                        .attention_resolutions = {4},
                        .num_heads = 2};
    return c;
}

static void expect_bad(fv_unet_config c, const char *field, const char *what)
{
    fv_unet net;
    fv_error_clear();
    cr_expect_eq(fv_unet_init(&net, &c, 1), FV_EINPUT, "%s accepted", what);
    cr_expect_null(net.params, "%s: params left allocated", what);
    cr_expect(strstr(fv_last_error(), field) != NULL, "%s: message does not name '%s': %s", what, field,
              fv_last_error());
    cr_expect_eq(fv_unet_count_params(&c), 0, "%s: counted", what);
    cr_log_info("%s -> %s", what, fv_last_error());
}

Test(unet, config_errors)
{
    fv_unet_config ok = small_config(), c;
    cr_expect_eq(fv_unet_config_check(&ok), FV_OK, "%s", fv_last_error());
    c = ok, c.num_channels = 48;
    expect_bad(c, "GroupNorm", "48 channels");
    c = ok, c.channel_mult[1] = 0;
    expect_bad(c, "channel_mult[1]", "channel_mult 0");
    c = ok, c.num_heads = 3;
    expect_bad(c, "num_heads", "3 heads for 64 channels");
    c = ok, c.num_head_channels = 24;
    expect_bad(c, "num_head_channels", "24 channels per head");
    c = ok, c.height = 9;
    expect_bad(c, "divisible by 2^(levels - 1)", "height 9 on 2 levels");
    c = ok, c.width = 12, c.nlevels = 3, c.channel_mult[2] = 2, c.attention_resolutions[0] = 6;
    cr_expect_eq(fv_unet_config_check(&c), FV_OK, "width 12 on 3 levels: %s", fv_last_error());
    c.width = 10;
    expect_bad(c, "divisible by 2^(levels - 1)", "width 10 on 3 levels");
    /* torchcfm's ds = width // r: r = 3 gives 8 // 3 = 2, level 1, as "16" gives attention at full
     * resolution on 28 x 28 images; r = 2 (ds 4) is past the 2 levels, r = 16 (ds 0) is none. */
    c = ok, c.attention_resolutions[0] = 3;
    cr_expect_eq(fv_unet_config_check(&c), FV_OK, "attention resolution 3 on width 8");
    c.attention_resolutions[0] = 2;
    expect_bad(c, "attention resolution 2", "attention at ds 4 on 2 levels");
    c.attention_resolutions[0] = 16;
    expect_bad(c, "attention resolution 16", "attention resolution above the width");
    c = ok, c.attention_resolutions[0] = 0;
    expect_bad(c, "attention resolution 0", "attention resolution 0");
    c = ok, c.dropout = 1.0f;
    expect_bad(c, "dropout", "dropout 1");
    c = ok, c.dropout = NAN;
    expect_bad(c, "dropout", "dropout NaN");
    c = ok, c.num_res_blocks = 0;
    expect_bad(c, "num_res_blocks", "no residual blocks");
    c = ok, c.nlevels = 0;
    expect_bad(c, "channel_mult", "no levels");
    c = ok, c.nlevels = FV_UNET_MAX_LEVELS + 1;
    expect_bad(c, "channel_mult", "too many levels");
    c = ok, c.in_channels = 0;
    expect_bad(c, "in_channels", "no input channels");
    c = ok, c.width = 1 << 17;
    expect_bad(c, "limit", "huge width");
    c = ok, c.height = c.width = 4096, c.num_channels = 256, c.attention_resolutions[0] = 2048;
    expect_bad(c, "32-bit BLAS", "4096 x 4096 x 256");
    cr_expect_eq(fv_unet_config_check(NULL), FV_EINPUT);

    fv_unet net;
    cr_assert_eq(fv_unet_init(&net, &ok, 1), FV_OK);
    fv_unet_acts a;
    cr_expect_eq(fv_unet_acts_alloc(&a, &net, 0), FV_EINPUT);
    fv_unet_free(&net);
    fv_unet_free(&net); /* idempotent */
}

Test(unet, write_read_round_trip)
{
    char dir[64];
    th_scratch_make(dir, "fv_test_unet");
    fv_unet_config c = small_config();
    c.dropout = 0.1f, c.num_head_channels = 32, c.nattn = 2, c.attention_resolutions[1] = 8;
    fv_unet net, back;
    cr_assert_eq(fv_unet_init(&net, &c, 3), FV_OK);
    const char *key = "run.note", *value = "round trip";
    const char *path = th_path_in(dir, "unet.safetensors");
    cr_assert_eq(fv_unet_write(path, &net, net.params, 1, &key, &value), FV_OK, "%s", fv_last_error());
    fv_st_file f;
    cr_assert_eq(fv_st_read(path, &f), FV_OK, "%s", fv_last_error());
    fv_unet_config rc;
    cr_assert_eq(fv_unet_config_from_meta(&f, &rc), FV_OK, "%s", fv_last_error());
    cr_expect(memcmp(&rc, &c, sizeof c) == 0, "configuration changed in the round trip");
    cr_expect_str_eq(fv_st_meta(&f, "run.note"), "round trip");
    cr_assert_eq(fv_unet_init(&back, &rc, 4), FV_OK);
    cr_assert_eq(fv_unet_read(&back, &f, "", back.params), FV_OK, "%s", fv_last_error());
    cr_expect(memcmp(back.params, net.params, net.nparams * sizeof(float)) == 0, "weights changed");
    cr_expect_eq(fv_unet_read(&back, &f, "ema.", back.params), FV_EINPUT, "missing prefix accepted");
    fv_st_free(&f);
    fv_unet_free(&back);
    /* A network of another shape refuses the file, naming the tensor. */
    c.channel_mult[1] = 1;
    cr_assert_eq(fv_unet_init(&back, &c, 4), FV_OK);
    cr_assert_eq(fv_st_read(path, &f), FV_OK);
    fv_error_clear();
    cr_expect_eq(fv_unet_read(&back, &f, "", back.params), FV_EINPUT);
    cr_expect(strstr(fv_last_error(), "input_blocks.") != NULL, "message: %s", fv_last_error());
    fv_st_free(&f);
    fv_unet_free(&back);
    fv_unet_free(&net);
    th_remove_tree(dir);
}

Test(unet, init_like_torch)
{
    fv_unet_config c = small_config();
    fv_unet a, b;
    cr_assert_eq(fv_unet_init(&a, &c, 42), FV_OK);
    cr_assert_eq(fv_unet_init(&b, &c, 42), FV_OK);
    cr_expect(memcmp(a.params, b.params, a.nparams * sizeof(float)) == 0, "same seed, different weights");
    for (size_t i = 0; i < a.ntensors; i++) {
        const fv_unet_tensor *t = &a.tensors[i];
        const float *p = a.params + t->offset;
        const char *leaf = strrchr(t->name, '.') + 1;
        int gn = strstr(t->name, "in_layers.0.") || strstr(t->name, "out_layers.0.") || strstr(t->name, "norm.") ||
                 !strncmp(t->name, "out.0.", 6);
        int zero = strstr(t->name, "out_layers.3.") || strstr(t->name, "proj_out.") || !strncmp(t->name, "out.2.", 6);
        if (gn || zero) {
            float want = gn && !strcmp(leaf, "weight") ? 1.0f : 0.0f;
            for (size_t j = 0; j < t->count; j++)
                cr_assert_eq(p[j], want, "%s[%zu] = %g, want %g", t->name, j, p[j], want);
            continue;
        }
        double bound = 1.0 / sqrt((double)t->fan_in);
        cr_expect(t->fan_in > 0, "%s: no fan-in", t->name);
        for (size_t j = 0; j < t->count; j++)
            cr_assert(fabs(p[j]) <= bound, "%s[%zu] = %g outside +-%g", t->name, j, p[j], bound);
        cr_expect(max_abs(t->count, p) > 0.5 * bound, "%s: values far inside +-%g", t->name, bound);
    }
    fv_unet_free(&a);
    fv_unet_free(&b);
}

/* ---- finite differences of the layers --------------------------------------------------------- */

/* A layer under test: `fwd` writes its nout outputs from the arrays arr[0..narr) (inputs and
 * parameters); `bwd` writes the gradient of every array (grads zeroed before, for the layers that add
 * into their input gradients) given dout. */
typedef struct fd_case {
    const char *name;
    size_t narr, nout;
    float *arr[4];
    size_t len[4];
    const char *arr_name[4];
    void (*fwd)(const struct fd_case *c, float *out);
    void (*bwd)(const struct fd_case *c, const float *dout, float **grads);
    size_t dims[8];
    float *scratch;
} fd_case;

/* L = sum out * r, in double. */
static double fd_loss(const fd_case *c, const float *r, float *out)
{
    c->fwd(c, out);
    double L = 0;
    for (size_t i = 0; i < c->nout; i++)
        L += (double)out[i] * r[i];
    return L;
}

/* Central differences with step h at 6 random coordinates and the largest-gradient coordinate of each
 * array; the error is measured against the array's largest gradient entry. */
static void fd_check(fd_case *c, double h, double tol, uint64_t seed)
{
    fv_rng rng = fv_rng_make(seed, 5);
    float *r = malloc(c->nout * sizeof(float)), *out = malloc(c->nout * sizeof(float));
    fill_normal(&rng, c->nout, r, 1.0);
    float *grads[4];
    for (size_t k = 0; k < c->narr; k++)
        grads[k] = calloc(c->len[k], sizeof(float));
    fd_loss(c, r, out);
    c->bwd(c, r, grads);
    for (size_t k = 0; k < c->narr; k++) {
        double gmax = max_abs(c->len[k], grads[k]), worst = 0;
        cr_expect(gmax > 0, "%s: the gradient of %s is zero", c->name, c->arr_name[k]);
        size_t coords[7], arg = 0;
        for (size_t i = 0; i < c->len[k]; i++)
            if (fabs(grads[k][i]) == gmax)
                arg = i;
        coords[0] = arg;
        for (int j = 1; j < 7; j++) {
            double u;
            fv_rng_uniform(&rng, 1, &u);
            coords[j] = (size_t)(u * (double)c->len[k]) % c->len[k];
        }
        for (int j = 0; j < 7; j++) {
            float *p = &c->arr[k][coords[j]], p0 = *p;
            *p = (float)(p0 + h);
            double lp = fd_loss(c, r, out);
            *p = (float)(p0 - h);
            double lm = fd_loss(c, r, out);
            *p = p0;
            double fd = (lp - lm) / (2 * h), err = fabs(fd - grads[k][coords[j]]) / gmax;
            worst = fmax(worst, err);
            cr_expect(err < tol, "%s: d/d%s[%zu]: backward %.7g, differences %.7g (error %.3g of %.3g)", c->name,
                      c->arr_name[k], coords[j], grads[k][coords[j]], fd, err, gmax);
        }
        cr_log_info("%s: d/d%s worst error %.2e of the largest entry", c->name, c->arr_name[k], worst);
        free(grads[k]);
    }
    free(r);
    free(out);
}

static float *random_array(fv_rng *r, size_t n, double scale)
{
    float *a = malloc(n * sizeof(float));
    fill_normal(r, n, a, scale);
    return a;
}

static void fd_free(fd_case *c)
{
    for (size_t k = 0; k < c->narr; k++)
        free(c->arr[k]);
    free(c->scratch);
}

/* dims: B, cin, cout, h, w, k, stride, pad. */
static fv_conv2d_shape conv_dims(const fd_case *c)
{
    return (fv_conv2d_shape){c->dims[1], c->dims[2], c->dims[3], c->dims[4], c->dims[5], c->dims[6], c->dims[7]};
}

static void conv_fwd(const fd_case *c, float *out)
{
    fv_conv2d_shape s = conv_dims(c);
    fv_conv2d_forward(out, c->arr[0], c->arr[1], c->arr[2], c->scratch, c->dims[0], &s);
}

static void conv_bwd(const fd_case *c, const float *dout, float **g)
{
    fv_conv2d_shape s = conv_dims(c);
    fv_conv2d_backward(g[0], g[1], g[2], dout, c->arr[0], c->arr[1], c->scratch, c->dims[0], &s);
}

static void conv_case(size_t B, size_t cin, size_t cout, size_t h, size_t w, size_t k, size_t stride, size_t pad,
                      uint64_t seed)
{
    fv_rng r = fv_rng_make(seed, 1);
    fd_case c = {.name = "conv2d", .narr = 3, .fwd = conv_fwd, .bwd = conv_bwd,
                 .dims = {B, cin, cout, h, w, k, stride, pad}, .arr_name = {"input", "weight", "bias"}};
    fv_conv2d_shape s = conv_dims(&c);
    size_t oh = fv_conv2d_out_h(&s), ow = fv_conv2d_out_w(&s);
    cr_assert_eq(oh, (h + 2 * pad - k) / stride + 1);
    c.len[0] = B * cin * h * w, c.len[1] = cout * cin * k * k, c.len[2] = cout;
    for (int i = 0; i < 3; i++)
        c.arr[i] = random_array(&r, c.len[i], 1.0);
    c.nout = B * cout * oh * ow;
    size_t col = fv_conv2d_col_size(&s);
    c.scratch = col ? malloc(col * sizeof(float)) : NULL;
    cr_expect_eq(col == 0, k == 1 && stride == 1 && pad == 0);
    cr_log_info("conv2d %zux%zu stride %zu pad %zu, %zu -> %zu channels, %zu x %zu:", k, k, stride, pad, cin, cout, h,
                w);
    /* The forward against the definition, in plain loops. */
    float *out = malloc(c.nout * sizeof(float));
    conv_fwd(&c, out);
    double worst = 0;
    for (size_t b = 0; b < B; b++)
        for (size_t co = 0; co < cout; co++)
            for (size_t oy = 0; oy < oh; oy++)
                for (size_t ox = 0; ox < ow; ox++) {
                    double v = c.arr[2][co];
                    for (size_t ci = 0; ci < cin; ci++)
                        for (size_t ky = 0; ky < k; ky++)
                            for (size_t kx = 0; kx < k; kx++) {
                                ptrdiff_t iy = (ptrdiff_t)(oy * stride + ky) - (ptrdiff_t)pad;
                                ptrdiff_t ix = (ptrdiff_t)(ox * stride + kx) - (ptrdiff_t)pad;
                                if (iy >= 0 && iy < (ptrdiff_t)h && ix >= 0 && ix < (ptrdiff_t)w)
                                    v += (double)c.arr[1][((co * cin + ci) * k + ky) * k + kx] *
                                         c.arr[0][((b * cin + ci) * h + (size_t)iy) * w + (size_t)ix];
                            }
                    worst = fmax(worst, fabs(out[((b * cout + co) * oh + oy) * ow + ox] - v));
                }
    cr_expect(worst < 1e-5, "forward against the definition: %.3g", worst);
    free(out);
    fd_check(&c, 1e-2, 1e-4, seed);
    fd_free(&c);
}

Test(unet_layers, conv2d_gradients)
{
    conv_case(2, 3, 4, 5, 7, 3, 1, 1, 11); /* the U-Net's 3x3 convolutions (im2col's flat path) */
    conv_case(2, 3, 4, 6, 8, 3, 2, 1, 12); /* Downsample's stride-2 convolution */
    conv_case(2, 3, 4, 7, 5, 3, 2, 1, 13); /* odd sizes: the last column reads the padding */
    conv_case(2, 5, 3, 4, 6, 1, 1, 0, 14); /* the 1x1 skip convolution and the attention's projections */
    conv_case(2, 2, 3, 6, 9, 5, 1, 2, 15); /* flat path with shifts of 2 */
    conv_case(2, 2, 3, 6, 5, 3, 1, 0, 16); /* stride 1 without padding: the row-by-row path */
    conv_case(1, 2, 2, 3, 2, 3, 1, 1, 17); /* images narrower than the kernel */
}

Test(unet_layers, conv2d_values)
{
    /* One 3x3 kernel with a single 1 at (ky, kx) shifts the image by (ky - 1, kx - 1) with zero padding. */
    float in[12], out[12], col[9 * 12], W[9], b = 0.5f;
    for (int i = 0; i < 12; i++)
        in[i] = (float)(i + 1);
    fv_conv2d_shape s = {1, 1, 3, 4, 3, 1, 1};
    for (int ky = 0; ky < 3; ky++)
        for (int kx = 0; kx < 3; kx++) {
            memset(W, 0, sizeof W);
            W[ky * 3 + kx] = 1.0f;
            fv_conv2d_forward(out, in, W, &b, col, 1, &s);
            for (int y = 0; y < 3; y++)
                for (int x = 0; x < 4; x++) {
                    int iy = y + ky - 1, ix = x + kx - 1;
                    float want = 0.5f + (iy >= 0 && iy < 3 && ix >= 0 && ix < 4 ? in[iy * 4 + ix] : 0.0f);
                    cr_expect_eq(out[y * 4 + x], want, "kernel (%d, %d), pixel (%d, %d): %g, want %g", ky, kx, y, x,
                                 out[y * 4 + x], want);
                }
        }
    /* Stride 2 keeps every other pixel: out[y][x] = in[2y][2x] for the center tap. */
    fv_conv2d_shape s2 = {1, 1, 3, 4, 3, 2, 1};
    memset(W, 0, sizeof W);
    W[4] = 1.0f;
    cr_assert_eq(fv_conv2d_out_h(&s2), 2);
    cr_assert_eq(fv_conv2d_out_w(&s2), 2);
    fv_conv2d_forward(out, in, W, &b, col, 1, &s2);
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 2; x++)
            cr_expect_eq(out[y * 2 + x], 0.5f + in[2 * y * 4 + 2 * x]);
}

/* dims: B, C, HW, G. */
static void gn_fwd(const fd_case *c, float *out)
{
    size_t B = c->dims[0], G = c->dims[3];
    fv_groupnorm_forward(out, c->scratch, c->scratch + B * G, c->arr[0], c->arr[1], c->arr[2], B, c->dims[1],
                         c->dims[2], G);
}

static void gn_bwd(const fd_case *c, const float *dout, float **g)
{
    size_t B = c->dims[0], G = c->dims[3];
    fv_groupnorm_backward(g[0], g[1], g[2], dout, c->arr[0], c->scratch, c->scratch + B * G, c->arr[1], B, c->dims[1],
                          c->dims[2], G);
}

Test(unet_layers, groupnorm_gradients_and_values)
{
    fv_rng r = fv_rng_make(21, 1);
    size_t B = 2, C = 6, HW = 10, G = 3;
    fd_case c = {.name = "groupnorm", .narr = 3, .fwd = gn_fwd, .bwd = gn_bwd, .dims = {B, C, HW, G},
                 .arr_name = {"input", "gamma", "beta"}, .nout = B * C * HW};
    c.len[0] = B * C * HW, c.len[1] = c.len[2] = C;
    c.arr[0] = random_array(&r, c.len[0], 2.0);
    for (size_t i = 0; i < c.len[0]; i++)
        c.arr[0][i] += 3.0f; /* a mean far from 0 */
    c.arr[1] = random_array(&r, C, 0.3);
    for (size_t i = 0; i < C; i++)
        c.arr[1][i] += 1.0f;
    c.arr[2] = random_array(&r, C, 0.3);
    c.scratch = malloc(2 * B * G * sizeof(float));
    fd_check(&c, 1e-2, 1e-4, 21);
    /* Each group of the output, less beta and over gamma, has mean 0 and variance var / (var + eps). */
    float *out = malloc(c.nout * sizeof(float));
    gn_fwd(&c, out);
    size_t cpg = C / G, n = cpg * HW;
    for (size_t b = 0; b < B; b++)
        for (size_t g = 0; g < G; g++) {
            double s = 0, ss = 0, xs = 0, xss = 0;
            for (size_t k = 0; k < n; k++) {
                size_t ch = g * cpg + k / HW, i = (b * C + g * cpg) * HW + k;
                double z = (out[i] - c.arr[2][ch]) / c.arr[1][ch];
                s += z, ss += z * z, xs += c.arr[0][i], xss += (double)c.arr[0][i] * c.arr[0][i];
            }
            double var = xss / n - (xs / n) * (xs / n);
            cr_expect(fabs(s / n) < 1e-5, "group (%zu, %zu): mean %g", b, g, s / n);
            cr_expect(fabs(ss / n - var / (var + 1e-5)) < 1e-5, "group (%zu, %zu): variance %g", b, g, ss / n);
        }
    free(out);
    fd_free(&c);
}

/* dims: B, heads, C, T. */
static void attn_fwd(const fd_case *c, float *out)
{
    fv_attention_forward(out, c->scratch, c->arr[0], c->dims[0], c->dims[1], c->dims[2], c->dims[3]);
}

static void attn_bwd(const fd_case *c, const float *dout, float **g)
{
    size_t B = c->dims[0], heads = c->dims[1], T = c->dims[3];
    fv_attention_backward(g[0], c->scratch + B * heads * T * T, dout, c->arr[0], c->scratch, B, heads, c->dims[2], T);
}

Test(unet_layers, attention_gradients_and_values)
{
    fv_rng r = fv_rng_make(31, 1);
    size_t B = 2, heads = 2, C = 6, T = 5, ch = C / heads;
    fd_case c = {.name = "attention", .narr = 1, .fwd = attn_fwd, .bwd = attn_bwd, .dims = {B, heads, C, T},
                 .arr_name = {"qkv"}, .nout = B * C * T};
    c.len[0] = B * 3 * C * T;
    c.arr[0] = random_array(&r, c.len[0], 1.0);
    c.scratch = malloc((B * heads * T * T + T * T) * sizeof(float));
    fd_check(&c, 1e-2, 1e-4, 31);
    /* torchcfm's QKVAttentionLegacy in plain loops: per head, q, k, v are consecutive blocks of ch rows. */
    float *out = malloc(c.nout * sizeof(float));
    attn_fwd(&c, out);
    double worst = 0;
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < heads; h++) {
            const float *q = c.arr[0] + (b * 3 * C + 3 * ch * h) * T, *k = q + ch * T, *v = k + ch * T;
            for (size_t t = 0; t < T; t++) {
                double w[5], m = -INFINITY, sum = 0;
                for (size_t s = 0; s < T; s++) {
                    w[s] = 0;
                    for (size_t cc = 0; cc < ch; cc++)
                        w[s] += (double)q[cc * T + t] * k[cc * T + s] / sqrt((double)ch);
                    m = fmax(m, w[s]);
                }
                for (size_t s = 0; s < T; s++)
                    sum += (w[s] = exp(w[s] - m));
                for (size_t cc = 0; cc < ch; cc++) {
                    double a = 0;
                    for (size_t s = 0; s < T; s++)
                        a += w[s] / sum * v[cc * T + s];
                    worst = fmax(worst, fabs(out[(b * C + h * ch + cc) * T + t] - a));
                }
            }
        }
    cr_expect(worst < 1e-6, "attention against plain loops: %.3g", worst);
    free(out);
    fd_free(&c);
}

/* dims: B, C, h, w. */
static void up_fwd(const fd_case *c, float *out)
{
    fv_upsample2x_forward(out, c->arr[0], c->dims[0], c->dims[1], c->dims[2], c->dims[3]);
}

static void up_bwd(const fd_case *c, const float *dout, float **g)
{
    fv_upsample2x_backward(g[0], dout, c->dims[0], c->dims[1], c->dims[2], c->dims[3]);
}

/* dims: B, Ca, Cb, HW. */
static void cat_fwd(const fd_case *c, float *out)
{
    fv_concat_forward(out, c->arr[0], c->arr[1], c->dims[0], c->dims[1], c->dims[2], c->dims[3]);
}

static void cat_bwd(const fd_case *c, const float *dout, float **g)
{
    fv_concat_backward(g[0], g[1], dout, c->dims[0], c->dims[1], c->dims[2], c->dims[3]);
}

/* dims: B, C, HW; arr: x, e. */
static void bias_fwd(const fd_case *c, float *out)
{
    size_t n = c->dims[0] * c->dims[1] * c->dims[2];
    memcpy(out, c->arr[0], n * sizeof(float));
    fv_channel_bias_forward(out, c->arr[1], c->dims[0], c->dims[1], c->dims[2]);
}

static void bias_bwd(const fd_case *c, const float *dout, float **g)
{
    size_t n = c->dims[0] * c->dims[1] * c->dims[2];
    fv_accumulate(g[0], dout, n);
    fv_channel_bias_backward(g[1], dout, c->dims[0], c->dims[1], c->dims[2]);
}

Test(unet_layers, upsample_concat_bias)
{
    fv_rng r = fv_rng_make(41, 1);
    fd_case up = {.name = "upsample2x", .narr = 1, .fwd = up_fwd, .bwd = up_bwd, .dims = {2, 3, 2, 3},
                  .arr_name = {"input"}, .nout = 2 * 3 * 4 * 6, .len = {2 * 3 * 2 * 3}};
    up.arr[0] = random_array(&r, up.len[0], 1.0);
    fd_check(&up, 1e-2, 1e-5, 41);
    float out[144];
    up_fwd(&up, out);
    for (size_t p = 0; p < 6; p++)
        for (size_t y = 0; y < 4; y++)
            for (size_t x = 0; x < 6; x++)
                cr_assert_eq(out[p * 24 + y * 6 + x], up.arr[0][p * 6 + (y / 2) * 3 + x / 2]);
    fd_free(&up);

    fd_case cat = {.name = "concat", .narr = 2, .fwd = cat_fwd, .bwd = cat_bwd, .dims = {2, 3, 2, 5},
                   .arr_name = {"a", "b"}, .nout = 2 * 5 * 5, .len = {2 * 3 * 5, 2 * 2 * 5}};
    cat.arr[0] = random_array(&r, cat.len[0], 1.0);
    cat.arr[1] = random_array(&r, cat.len[1], 1.0);
    fd_check(&cat, 1e-2, 1e-5, 42);
    cat_fwd(&cat, out);
    for (size_t b = 0; b < 2; b++) {
        cr_expect(memcmp(out + b * 25, cat.arr[0] + b * 15, 15 * sizeof(float)) == 0);
        cr_expect(memcmp(out + b * 25 + 15, cat.arr[1] + b * 10, 10 * sizeof(float)) == 0);
    }
    fd_free(&cat);

    fd_case bias = {.name = "channel bias", .narr = 2, .fwd = bias_fwd, .bwd = bias_bwd, .dims = {2, 3, 7},
                    .arr_name = {"x", "e"}, .nout = 42, .len = {42, 6}};
    bias.arr[0] = random_array(&r, 42, 1.0);
    bias.arr[1] = random_array(&r, 6, 1.0);
    fd_check(&bias, 1e-2, 1e-5, 43);
    fd_free(&bias);
}

/* dims: n; p in scratch[0]. */
static void drop_fwd(const fd_case *c, float *out)
{
    fv_dropout_forward(out, c->arr[0], c->dims[0], c->scratch[0], 7, 9, 100);
}

static void drop_bwd(const fd_case *c, const float *dout, float **g)
{
    fv_dropout_backward(g[0], dout, c->dims[0], c->scratch[0], 7, 9, 100);
}

Test(unet_layers, dropout)
{
    fv_rng r = fv_rng_make(51, 1);
    size_t n = 20001; /* not a multiple of 4: the last Philox block is partly used */
    float p = 0.3f, *x = random_array(&r, n, 1.0), *y = malloc(n * sizeof(float)), *y2 = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = fabsf(x[i]) + 0.5f; /* nonzero, so a dropped element is one that reads 0 */
    fv_dropout_forward(y, x, n, p, 7, 9, 100);
    size_t dropped = 0;
    for (size_t i = 0; i < n; i++) {
        if (y[i] == 0.0f)
            dropped++;
        else
            cr_assert(fabsf(y[i] - x[i] / (1 - p)) <= 1e-6f * y[i], "kept element %zu not scaled by 1/(1-p)", i);
    }
    /* Binomial(n, p): 5 standard deviations. */
    double sd = sqrt(n * p * (1 - p));
    cr_expect(fabs((double)dropped - n * p) < 5 * sd, "dropped %zu of %zu at p = %g", dropped, n, p);
    fv_dropout_forward(y2, x, n, p, 7, 9, 100);
    cr_expect(memcmp(y, y2, n * sizeof(float)) == 0, "same key, different mask");
    fv_dropout_forward(y2, x, n, p, 7, 10, 100);
    cr_expect(memcmp(y, y2, n * sizeof(float)) != 0, "another stream, same mask");
    fv_dropout_forward(y2, x, n, 0.0f, 7, 9, 100);
    cr_expect(memcmp(x, y2, n * sizeof(float)) == 0, "p = 0 is not the identity");
    /* Backward applies the same mask (in place here). */
    memcpy(y2, x, n * sizeof(float));
    fv_dropout_backward(y2, y2, n, p, 7, 9, 100);
    cr_expect(memcmp(y, y2, n * sizeof(float)) == 0, "backward's mask differs from forward's");
    free(x), free(y), free(y2);

    fd_case c = {.name = "dropout", .narr = 1, .fwd = drop_fwd, .bwd = drop_bwd, .dims = {50},
                 .arr_name = {"input"}, .nout = 50, .len = {50}};
    c.arr[0] = random_array(&r, 50, 1.0);
    c.scratch = malloc(sizeof(float));
    c.scratch[0] = 0.5f;
    fd_check(&c, 1e-2, 1e-5, 52);
    fd_free(&c);
}

Test(unet_layers, timestep_embedding)
{
    /* torchcfm's timestep_embedding(t, 8): half 4, f_k = 10000^(-k/4) = 1, 0.1, 0.01, 0.001; cos first. */
    float t[2] = {0.7f, 0.05f}, out[16];
    fv_timestep_embedding(out, t, 2, 8);
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 4; k++) {
            double a = t[b] * pow(10.0, -k);
            cr_expect(fabs(out[b * 8 + k] - cos(a)) < 1e-6, "cos t=%g k=%d: %.9g", t[b], k, out[b * 8 + k]);
            cr_expect(fabs(out[b * 8 + 4 + k] - sin(a)) < 1e-6, "sin t=%g k=%d: %.9g", t[b], k, out[b * 8 + 4 + k]);
        }
}

/* ---- finite differences of the network -------------------------------------------------------- */

/* L = sum out * r of the network in training mode (the dropout mask is fixed by the key). */
static double net_loss(const fv_unet *net, fv_unet_acts *a, size_t B, const float *x, const float *t, const float *r,
                       float *out, size_t nout)
{
    fv_unet_forward(net, B, x, t, out, a);
    double L = 0;
    for (size_t i = 0; i < nout; i++)
        L += (double)out[i] * r[i];
    return L;
}

Test(unet, network_gradients_training_mode)
{
    fv_unet_config c = small_config();
    c.dropout = 0.3f;
    fv_unet net;
    cr_assert_eq(fv_unet_init(&net, &c, 61), FV_OK);
    fv_rng r = fv_rng_make(61, 2);
    /* Informative weights, as in the fixture: no zero-initialized tensors, GroupNorm's affine random. */
    for (size_t i = 0; i < net.ntensors; i++) {
        const fv_unet_tensor *ten = &net.tensors[i];
        float *p = net.params + ten->offset;
        if (ten->fan_in)
            continue;
        fill_normal(&r, ten->count, p, 0.2);
        if (ten->fill == 1.0f)
            for (size_t j = 0; j < ten->count; j++)
                p[j] += 1.0f;
    }
    size_t B = 2, nx = B * c.in_channels * c.height * c.width;
    float *x = random_array(&r, nx, 1.0), *rr = random_array(&r, nx, 1.0), *out = malloc(nx * sizeof(float));
    float t[2] = {0.25f, 0.8f};
    fv_unet_acts a;
    cr_assert_eq(fv_unet_acts_alloc(&a, &net, B), FV_OK);
    a.train = 1, a.dropout_seed = 5, a.dropout_stream = 17;
    float *g = malloc(net.nparams * sizeof(float));
    net_loss(&net, &a, B, x, t, rr, out, nx);
    fv_unet_backward(&net, B, rr, g, &a);
    /* The mask is on: the eval-mode output differs. */
    float *eval = malloc(nx * sizeof(float));
    a.train = 0;
    fv_unet_forward(&net, B, x, t, eval, &a);
    cr_expect(memcmp(eval, out, nx * sizeof(float)) != 0, "training mode output equals eval mode's");
    a.train = 1;
    /* Float32 differences of a deep network are noisy (about 5e-3 absolute here at step 1e-2 on one
     * coordinate: the loss sums 256 outputs, each with a relative rounding error near 1e-6), too noisy
     * for single coordinates. So each unit's parameters move together, by +-h along the unit vector of
     * d = g / rms(g) + z, z ~ N(0, 1) per entry (a direction whose projection g.d cannot cancel), and
     * L(p+) - L(p-) is held against g.(p+ - p-), with the steps as rounded to float; the error is
     * measured against |g| |p+ - p-|, Cauchy-Schwarz's bound on that projection. Measured: the worst
     * error is 8.5e-3, 2.1e-3, 5.4e-4, 2.7e-4 at h = 2e-2, 1e-2, 5e-3, 2.5e-3, the h^2 truncation
     * error of central differences down to the rounding floor. */
    const double h = 2.5e-3;
    double worst = 0;
    for (size_t j = 0; j < net.nunits; j++) {
        const fv_unet_unit *u = &net.units[j];
        const fv_unet_tensor *t0 = &net.tensors[u->tensor0], *tl = &net.tensors[u->tensor0 + u->ntensors - 1];
        size_t off = t0->offset, n = tl->offset + tl->count - off;
        float *p = net.params + off, *gi = g + off, *p0 = malloc(n * sizeof(float)), *d = random_array(&r, n, 1.0);
        float *pp = malloc(n * sizeof(float)), *pm = malloc(n * sizeof(float));
        double g2 = 0, d2 = 0, s2 = 0, gs = 0;
        for (size_t i = 0; i < n; i++)
            g2 += (double)gi[i] * gi[i];
        double rms = sqrt(g2 / (double)n);
        for (size_t i = 0; i < n; i++) {
            d[i] += (float)(gi[i] / rms);
            d2 += (double)d[i] * d[i];
        }
        memcpy(p0, p, n * sizeof(float));
        for (size_t i = 0; i < n; i++) {
            pp[i] = (float)(p0[i] + h * d[i] / sqrt(d2));
            pm[i] = (float)(p0[i] - h * d[i] / sqrt(d2));
            double step = (double)pp[i] - pm[i];
            s2 += step * step;
            gs += gi[i] * step;
        }
        memcpy(p, pp, n * sizeof(float));
        double lp = net_loss(&net, &a, B, x, t, rr, out, nx);
        memcpy(p, pm, n * sizeof(float));
        double lm = net_loss(&net, &a, B, x, t, rr, out, nx);
        memcpy(p, p0, n * sizeof(float));
        double err = fabs((lp - lm) - gs) / (sqrt(g2) * sqrt(s2));
        worst = fmax(worst, err);
        cr_expect(err < 1e-3, "unit %zu (%s...): g.step %.7g, L+ - L- %.7g (error %.3g of |g| |step| = %.3g)", j,
                  t0->name, gs, lp - lm, err, sqrt(g2 * s2));
        free(p0), free(d), free(pp), free(pm);
    }
    cr_log_info("network in training mode: %zu units, worst error %.2e of |g| |d|", net.nunits, worst);
    free(x), free(rr), free(out), free(g), free(eval);
    fv_unet_acts_free(&a);
    fv_unet_free(&net);
}
