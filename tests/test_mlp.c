/* test_mlp.c: the flow-matching MLP (src/nn/mlp.c).
 *
 * - every parameter of every layer against central finite differences of a double-precision twin of
 *   the forward pass written here (float32 differences would drown in rounding), for each activation,
 *   with the raw t and with the sinusoidal embedding, at depths 1 to 3;
 * - the per-row squared gradient norms of fv_mlp_backward against the gradient of a batch of ONE row,
 *   for every row (the outer-product trick is exact, not an estimate);
 * - outputs, loss, every gradient and the per-row norms against PyTorch on the same weights and batch
 *   (tests/fixtures/mlp, made by tests/oracle/make_mlp_fixture.py);
 * - configuration errors, names, initialisation, the time embedding, the loss. */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "src/core/error.h"
#include "src/core/io.h"
#include "src/core/rng.h"
#include "src/nn/mlp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURES "tests/fixtures/mlp/"

/* ---- helpers --------------------------------------------------------------------------------- */

static void fill_normal(fv_rng *r, size_t n, float *out, double scale)
{
    double z;
    for (size_t i = 0; i < n; i++) {
        fv_rng_normal(r, 1, &z);
        out[i] = (float)(scale * z);
    }
}

static void fill_uniform(fv_rng *r, size_t n, float *out)
{
    double u;
    for (size_t i = 0; i < n; i++) {
        fv_rng_uniform(r, 1, &u);
        out[i] = (float)u;
    }
}

static double act_d(int act, double x)
{
    const double alpha = 1.6732632423543772848170429916717, scale = 1.0507009873554804934193349852946;
    switch (act) {
    case FV_ACT_SILU:
        return x / (1.0 + exp(-x));
    case FV_ACT_SELU:
        return x > 0 ? scale * x : scale * alpha * expm1(x);
    case FV_ACT_RELU:
        return x > 0 ? x : 0.0;
    default:
        return tanh(x);
    }
}

/* The loss mean((net(x, t) - u)^2) in double, with parameters P (double, fv_mlp layout); if out is not
 * NULL the network output is written there. Independent of mlp.c: plain loops, no BLAS. */
static double ref_loss(const fv_mlp *m, const double *P, size_t B, const float *x, const float *t, const float *u,
                       double *out)
{
    const fv_mlp_config *c = &m->cfg;
    size_t nin = m->in[0], w = c->width;
    double *h = malloc((nin > w ? nin : w) * sizeof(double)), *g = malloc(w * sizeof(double));
    double loss = 0.0;
    for (size_t i = 0; i < B; i++) {
        for (size_t j = 0; j < c->d; j++)
            h[j] = x[i * c->d + j];
        if (c->temb) {
            size_t half = c->temb / 2;
            for (size_t k = 0; k < half; k++) {
                double f = exp(-log(10000.0) * (double)k / (double)half);
                h[c->d + k] = cos(t[i] * f);
                h[c->d + half + k] = sin(t[i] * f);
            }
        } else {
            h[c->d] = t[i];
        }
        size_t head = c->d + (c->temb ? c->temb : 1);
        for (size_t j = 0; j < c->fourier; j++) {
            double q = (double)m->fourier[j * (c->d + 1) + c->d] * t[i];
            for (size_t k = 0; k < c->d; k++)
                q += (double)m->fourier[j * (c->d + 1) + k] * x[i * c->d + k];
            h[head + j] = sin(q);
            h[head + c->fourier + j] = cos(q);
        }
        const double *p = P;
        for (size_t l = 0; l < m->nlayers; l++) {
            const double *W = p, *b = p + m->out[l] * m->in[l];
            p = b + m->out[l];
            int last = l + 1 == m->nlayers;
            for (size_t o = 0; o < m->out[l]; o++) {
                double s = b[o];
                for (size_t k = 0; k < m->in[l]; k++)
                    s += W[o * m->in[l] + k] * h[k];
                g[o] = last ? s : act_d(c->act, s);
            }
            memcpy(h, g, m->out[l] * sizeof(double));
        }
        for (size_t j = 0; j < c->d; j++) {
            if (out)
                out[i * c->d + j] = h[j];
            double r = h[j] - u[i * c->d + j];
            loss += r * r;
        }
    }
    free(h);
    free(g);
    return loss / (double)(B * c->d);
}

/* max |a - b| / max |b|: the error relative to the array's scale (elementwise relative errors are
 * meaningless for entries that cancel to ~0). */
static double rel_err_f(size_t n, const float *a, const float *b)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return den > 0 ? num / den : num;
}

/* ---- configuration, names, init -------------------------------------------------------------- */

static void expect_bad_config(fv_mlp_config c, const char *what)
{
    fv_mlp m;
    fv_error_clear();
    cr_expect_eq(fv_mlp_init(&m, &c, 1), FV_EINPUT, "%s accepted", what);
    cr_expect_null(m.params, "%s: params left allocated", what);
    cr_expect_neq(fv_last_error()[0], '\0', "%s: no message", what);
    cr_log_info("%s -> %s", what, fv_last_error());
}

Test(mlp, config_errors)
{
    fv_mlp_config ok = {.d = 3, .width = 8, .depth = 2, .act = FV_ACT_SILU, .temb = 0};
    fv_mlp_config c = ok;
    c.depth = 0;
    expect_bad_config(c, "depth 0");
    c = ok;
    c.temb = 7;
    expect_bad_config(c, "odd temb");
    c = ok;
    c.fourier = 8;
    expect_bad_config(c, "fourier features with scale 0");
    c.fourier_scale = NAN;
    expect_bad_config(c, "fourier features with a NaN scale");
    c = ok;
    c.d = 0;
    expect_bad_config(c, "d 0");
    c = ok;
    c.width = 0;
    expect_bad_config(c, "width 0");
    c = ok;
    c.depth = FV_MLP_MAX_LAYERS;
    expect_bad_config(c, "too deep");
    c = ok;
    c.act = (fv_act)7;
    expect_bad_config(c, "unknown activation code");
    cr_expect_eq(fv_mlp_count_params(&c), 0);
    cr_expect_eq(fv_mlp_config_check(&ok), FV_OK);

    fv_mlp m;
    cr_assert_eq(fv_mlp_init(&m, &ok, 1), FV_OK);
    fv_mlp_acts a;
    cr_expect_eq(fv_mlp_acts_alloc(&a, &m, 0), FV_EINPUT);
    fv_mlp_free(&m);
    fv_mlp_free(&m); /* idempotent */
}

Test(mlp, act_names)
{
    const char *names[] = {"silu", "selu", "relu", "tanh"};
    for (int i = 0; i < 4; i++) {
        fv_act a;
        cr_expect_eq(fv_act_parse(names[i], &a), FV_OK);
        cr_expect_eq((int)a, i);
        cr_expect_str_eq(fv_act_name(a), names[i]);
    }
    fv_act a = FV_ACT_TANH;
    fv_error_clear();
    cr_expect_eq(fv_act_parse("gelu", &a), FV_EINPUT);
    cr_expect_eq((int)a, FV_ACT_TANH, "output touched on failure");
    cr_expect(strstr(fv_last_error(), "gelu") != NULL, "message: %s", fv_last_error());
    cr_expect_eq(fv_act_parse("SiLU", &a), FV_EINPUT); /* names are exact */
    cr_expect_eq(fv_act_parse("", &a), FV_EINPUT);
    cr_expect_str_eq(fv_act_name((fv_act)9), "?");
}

Test(mlp, param_names_and_layout)
{
    fv_mlp_config c = {.d = 3, .width = 32, .depth = 3, .act = FV_ACT_SELU, .temb = 0};
    fv_mlp m;
    cr_assert_eq(fv_mlp_init(&m, &c, 7), FV_OK);
    cr_expect_eq(m.nlayers, 4);
    /* torchcfm's MLP(3, w=32, time_varying=True): 4*32+32 + 2*(32*32+32) + 32*3+3. */
    cr_expect_eq(m.nparams, 160 + 2 * 1056 + 99);
    cr_expect_eq(fv_mlp_count_params(&c), m.nparams);
    char buf[32];
    cr_expect_eq(fv_mlp_param_name(&m, 0, 0, buf, sizeof buf), FV_OK);
    cr_expect_str_eq(buf, "net.0.weight");
    cr_expect_eq(fv_mlp_param_name(&m, 1, 1, buf, sizeof buf), FV_OK);
    cr_expect_str_eq(buf, "net.2.bias");
    cr_expect_eq(fv_mlp_param_name(&m, 3, 0, buf, sizeof buf), FV_OK);
    cr_expect_str_eq(buf, "net.6.weight");
    cr_expect_eq(fv_mlp_param_name(&m, 4, 0, buf, sizeof buf), FV_EINPUT);
    cr_expect_eq(fv_mlp_param_name(&m, 0, 0, buf, 5), FV_EINPUT);
    /* Blocks are contiguous in state_dict order and cover params exactly. */
    cr_expect_eq(m.W[0], m.params);
    for (size_t l = 0; l < m.nlayers; l++) {
        cr_expect_eq(m.b[l], m.W[l] + m.out[l] * m.in[l]);
        if (l + 1 < m.nlayers)
            cr_expect_eq(m.W[l + 1], m.b[l] + m.out[l]);
    }
    cr_expect_eq(m.b[3] + m.out[3], m.params + m.nparams);
    cr_expect_eq(m.in[0], 4);
    cr_expect_eq(m.out[3], 3);
    fv_mlp_free(&m);
}

Test(mlp, init_torch_default)
{
    fv_mlp_config c = {.d = 2, .width = 64, .depth = 2, .act = FV_ACT_SILU, .temb = 16};
    fv_mlp m1, m2, m3;
    cr_assert_eq(fv_mlp_init(&m1, &c, 42), FV_OK);
    cr_assert_eq(fv_mlp_init(&m2, &c, 42), FV_OK);
    cr_assert_eq(fv_mlp_init(&m3, &c, 43), FV_OK);
    cr_expect(memcmp(m1.params, m2.params, m1.nparams * sizeof(float)) == 0, "same seed, different weights");
    cr_expect(memcmp(m1.params, m3.params, m1.nparams * sizeof(float)) != 0, "seed ignored");
    for (size_t l = 0; l < m1.nlayers; l++) {
        double bound = 1.0 / sqrt((double)m1.in[l]);
        size_t n = m1.out[l] * m1.in[l];
        double s2 = 0;
        for (size_t i = 0; i < n; i++) {
            cr_assert(fabs(m1.W[l][i]) <= bound, "W[%zu][%zu] = %g outside +-%g", l, i, m1.W[l][i], bound);
            s2 += (double)m1.W[l][i] * m1.W[l][i];
        }
        for (size_t i = 0; i < m1.out[l]; i++)
            cr_assert(fabs(m1.b[l][i]) <= bound);
        /* U(-a, a) has variance a^2/3; n >= 128 draws here, 5 standard errors (sd of w^2 is a^2 2/sqrt(45)). */
        double var = s2 / (double)n, se = bound * bound * 2.0 / sqrt(45.0) / sqrt((double)n);
        cr_expect(fabs(var - bound * bound / 3.0) < 5 * se, "layer %zu: var %g, expected %g", l, var,
                  bound * bound / 3.0);
    }
    fv_mlp_free(&m1);
    fv_mlp_free(&m2);
    fv_mlp_free(&m3);
}

Test(mlp, time_embedding_values)
{
    /* temb 4: half 2, f = (1, exp(-ln(1e4)/2) = 0.01); emb = [cos t, cos 0.01t, sin t, sin 0.01t]. */
    float x[2] = {0.25f, -1.5f}, t = 0.5f, in[6];
    fv_mlp m;
    fv_mlp_config c = {.d = 2, .width = 3, .depth = 1, .act = FV_ACT_SILU, .temb = 4};
    cr_assert_eq(fv_mlp_init(&m, &c, 1), FV_OK);
    fv_mlp_input(&m, in, x, &t, 1);
    double want[6] = {0.25, -1.5, cos(0.5), cos(0.005), sin(0.5), sin(0.005)};
    for (int i = 0; i < 6; i++)
        cr_expect(fabs(in[i] - want[i]) < 1e-6, "in[%d] = %.9g, want %.9g", i, in[i], want[i]);
    fv_mlp_free(&m);
    c.temb = 0;
    cr_assert_eq(fv_mlp_init(&m, &c, 1), FV_OK);
    fv_mlp_input(&m, in, x, &t, 1);
    cr_expect(in[0] == 0.25f && in[1] == -1.5f && in[2] == 0.5f, "raw t appended after x");
    fv_mlp_free(&m);
}

/* Fourier features after [x, emb(t)]: sin and cos of F [x, t] with the raw t, F drawn once from its
 * own stream with the configured spread (and left out of the trainable parameters). */
Test(mlp, fourier_feature_values)
{
    float x[2] = {0.25f, -1.5f}, t = 0.75f, in[2 + 4 + 2 * 3];
    fv_mlp m, plain;
    fv_mlp_config c = {.d = 2, .width = 5, .depth = 2, .act = FV_ACT_SILU, .temb = 4, .fourier = 3,
                       .fourier_scale = 2.5f};
    cr_assert_eq(fv_mlp_init(&m, &c, 7), FV_OK);
    cr_expect_eq(fv_mlp_input_dim(&c), 12);
    fv_mlp_config cp = c;
    cp.fourier = 0;
    cr_assert_eq(fv_mlp_init(&plain, &cp, 7), FV_OK);
    cr_expect_eq(m.nparams, plain.nparams + 5 * 2 * 3, "only the first layer grows (by width x 2M)");
    cr_expect_eq(m.fourier, m.params + m.nparams, "F sits after the trainable parameters");
    fv_mlp_input(&m, in, x, &t, 1);
    for (size_t j = 0; j < 3; j++) {
        const float *F = m.fourier + j * 3;
        double p = (double)F[0] * x[0] + (double)F[1] * x[1] + (double)F[2] * t;
        cr_expect(fabs(in[6 + j] - sin(p)) < 1e-5, "sin feature %zu: %.7g, want %.7g", j, in[6 + j], sin(p));
        cr_expect(fabs(in[9 + j] - cos(p)) < 1e-5, "cos feature %zu: %.7g, want %.7g", j, in[9 + j], cos(p));
    }
    cr_expect(fabs(in[2] - cos(0.75)) < 1e-6 && in[0] == 0.25f, "[x, emb(t)] unchanged in front");
    fv_mlp_free(&m);
    fv_mlp_free(&plain);
    /* The spread of F: 2000 x 11 normals with standard deviation 2.5. */
    c = (fv_mlp_config){
        .d = 10, .width = 1, .depth = 1, .act = FV_ACT_SILU, .fourier = 2000, .fourier_scale = 2.5f};
    cr_assert_eq(fv_mlp_init(&m, &c, 3), FV_OK);
    double s2 = 0.0, n = 2000.0 * 11.0;
    for (size_t i = 0; i < 2000 * 11; i++)
        s2 += (double)m.fourier[i] * m.fourier[i];
    double sd = sqrt(s2 / n);
    cr_expect(fabs(sd - 2.5) < 5 * 2.5 / sqrt(2.0 * n), "F's standard deviation %.4f, want 2.5", sd);
    fv_mlp_free(&m);
}

Test(mlp, mse_loss)
{
    float v[4] = {1, 2, 3, 4}, u[4] = {0, 2, 5, 3.5f}, d[4];
    /* residuals 1, 0, -2, 0.5: mean of squares (1 + 0 + 4 + 0.25) / 4 = 1.3125; dout = 2 r / 4. */
    float L = fv_mse_loss(4, v, u, d);
    cr_expect_float_eq(L, 1.3125f, 1e-7);
    float want[4] = {0.5f, 0.0f, -1.0f, 0.25f};
    for (int i = 0; i < 4; i++)
        cr_expect_float_eq(d[i], want[i], 1e-7);
    cr_expect_float_eq(fv_mse_loss(4, v, u, NULL), 1.3125f, 1e-7);
}

/* ---- finite differences ---------------------------------------------------------------------- */

/* Every parameter of a (d, width, depth, act, temb) network: the float32 backward against central
 * differences of the double forward (h = 1e-6). Errors are measured per block against the block's
 * scale (floored at 1e-3 of the whole gradient's, for blocks a ReLU net leaves nearly dead). */
static void gradcheck(size_t d, size_t width, size_t depth, fv_act act, size_t temb, size_t fourier, uint64_t seed)
{
    fv_mlp_config c = {
        .d = d, .width = width, .depth = depth, .act = act, .temb = temb, .fourier = fourier, .fourier_scale = 1.5f};
    fv_mlp m;
    cr_assert_eq(fv_mlp_init(&m, &c, seed), FV_OK);
    const size_t B = 6;
    fv_rng r = fv_rng_make(seed, 99);
    /* High-entropy inputs: weights 1.5x torch's init so activations leave their linear range, x spread. */
    for (size_t i = 0; i < m.nparams; i++)
        m.params[i] *= 1.5f;
    float *x = malloc(B * d * sizeof(float)), *t = malloc(B * sizeof(float)), *u = malloc(B * d * sizeof(float));
    float *out = malloc(B * d * sizeof(float)), *dout = malloc(B * d * sizeof(float));
    float *g = malloc(m.nparams * sizeof(float));
    double *P = malloc(m.nparams * sizeof(double)), *fd = malloc(m.nparams * sizeof(double));
    double *outd = malloc(B * d * sizeof(double));
    fill_normal(&r, B * d, x, 1.5);
    fill_uniform(&r, B, t);
    fill_normal(&r, B * d, u, 1.0);

    fv_mlp_acts a;
    cr_assert_eq(fv_mlp_acts_alloc(&a, &m, B), FV_OK);
    fv_mlp_forward(&m, B, x, t, out, &a);
    float L = fv_mse_loss(B * d, out, u, dout);
    fv_mlp_backward(&m, B, dout, g, NULL, &a);

    for (size_t i = 0; i < m.nparams; i++)
        P[i] = m.params[i];
    double Ld = ref_loss(&m, P, B, x, t, u, outd);
    for (size_t i = 0; i < B * d; i++)
        cr_assert(fabs(out[i] - outd[i]) <= 1e-5 * (1 + fabs(outd[i])), "forward differs from the double twin");
    cr_assert(fabs(L - Ld) <= 1e-5 * Ld, "loss %g vs %g", L, Ld);

    const double h = 1e-6;
    double gmax = 0;
    for (size_t i = 0; i < m.nparams; i++) {
        double p0 = P[i];
        P[i] = p0 + h;
        double lp = ref_loss(&m, P, B, x, t, u, NULL);
        P[i] = p0 - h;
        double lm = ref_loss(&m, P, B, x, t, u, NULL);
        P[i] = p0;
        fd[i] = (lp - lm) / (2 * h);
        gmax = fmax(gmax, fabs(fd[i]));
    }
    double worst = 0;
    size_t off = 0;
    for (size_t l = 0; l < m.nlayers; l++)
        for (int isb = 0; isb < 2; isb++) {
            size_t n = isb ? m.out[l] : m.out[l] * m.in[l];
            double num = 0, den = 0;
            for (size_t i = off; i < off + n; i++) {
                num = fmax(num, fabs(g[i] - fd[i]));
                den = fmax(den, fabs(fd[i]));
            }
            double err = num / fmax(den, 1e-3 * gmax);
            worst = fmax(worst, err);
            char name[32];
            fv_mlp_param_name(&m, l, isb, name, sizeof name);
            cr_expect(err < 1e-4, "%s act %s temb %zu fourier %zu depth %zu: %s gradient error %.3g (scale %.3g)",
                      "gradcheck", fv_act_name(act), temb, fourier, depth, name, err, den);
            off += n;
        }
    cr_log_info("gradcheck %s temb %zu fourier %zu depth %zu: %zu parameters, worst block error %.2e",
                fv_act_name(act), temb, fourier, depth, m.nparams, worst);
    fv_mlp_acts_free(&a);
    fv_mlp_free(&m);
    free(x), free(t), free(u), free(out), free(dout), free(g), free(P), free(fd), free(outd);
}

Test(mlp, gradcheck_all)
{
    uint64_t seed = 1000;
    for (int act = FV_ACT_SILU; act <= FV_ACT_TANH; act++)
        for (int e = 0; e < 2; e++) {
            size_t temb = e ? 6 : 0;
            gradcheck(3, 7, 2, (fv_act)act, temb, 0, seed++);
            gradcheck(2, 5, 1, (fv_act)act, temb, 0, seed++);
            gradcheck(4, 6, 3, (fv_act)act, temb, 0, seed++);
            gradcheck(3, 6, 2, (fv_act)act, temb, 4, seed++);
        }
}

/* ---- per-row gradient norms ------------------------------------------------------------------ */

static void sqnorm_check(fv_act act, size_t temb)
{
    fv_mlp_config c = {.d = 3, .width = 11, .depth = 3, .act = act, .temb = temb};
    fv_mlp m;
    cr_assert_eq(fv_mlp_init(&m, &c, 5 + act), FV_OK);
    const size_t B = 9, d = c.d;
    fv_rng r = fv_rng_make(77, act);
    float x[9 * 3], t[9], u[9 * 3], out[9 * 3], dout[9 * 3], sq[9];
    fill_normal(&r, B * d, x, 1.0);
    fill_uniform(&r, B, t);
    fill_normal(&r, B * d, u, 1.0);
    float *g = malloc(m.nparams * sizeof(float)), *g1 = malloc(m.nparams * sizeof(float));
    double *sum = calloc(m.nparams, sizeof(double));
    fv_mlp_acts a;
    cr_assert_eq(fv_mlp_acts_alloc(&a, &m, B), FV_OK);
    fv_mlp_forward(&m, B, x, t, out, &a);
    fv_mse_loss(B * d, out, u, dout);
    fv_mlp_backward(&m, B, dout, g, sq, &a);

    double worst = 0;
    for (size_t i = 0; i < B; i++) {
        /* The same row alone, with its own dout row: its gradient, by a full backward. */
        float o1[3];
        fv_mlp_forward(&m, 1, x + i * d, t + i, o1, &a);
        fv_mlp_backward(&m, 1, dout + i * d, g1, NULL, &a);
        double s = 0;
        for (size_t k = 0; k < m.nparams; k++) {
            s += (double)g1[k] * g1[k];
            sum[k] += g1[k];
        }
        double err = fabs(sq[i] - s) / s;
        worst = fmax(worst, err);
        cr_expect(err < 1e-5, "%s temb %zu row %zu: sqnorm %.9g, one-row gradient %.9g", fv_act_name(act), temb, i,
                  sq[i], s);
    }
    /* And the batch gradient is the sum of the rows' gradients. */
    float *sumf = malloc(m.nparams * sizeof(float));
    for (size_t k = 0; k < m.nparams; k++)
        sumf[k] = (float)sum[k];
    double e = rel_err_f(m.nparams, g, sumf);
    cr_expect(e < 1e-5, "batch gradient vs sum of row gradients: %.3g", e);
    cr_log_info("sqnorm %s temb %zu: worst relative error %.2e", fv_act_name(act), temb, worst);
    fv_mlp_acts_free(&a);
    fv_mlp_free(&m);
    free(g), free(g1), free(sum), free(sumf);
}

Test(mlp, sqnorm_exact_per_row)
{
    for (int act = FV_ACT_SILU; act <= FV_ACT_TANH; act++) {
        sqnorm_check((fv_act)act, 0);
        sqnorm_check((fv_act)act, 8);
    }
}

/* ---- PyTorch fixtures ------------------------------------------------------------------------ */

/* Read FIXTURES<prefix>_<name>.npy as floats; asserts its element count is `count` (unless 0). */
static float *fx_read(const char *prefix, const char *name, size_t count)
{
    char path[256];
    snprintf(path, sizeof path, FIXTURES "%s_%s.npy", prefix, name);
    fv_npy a;
    cr_assert_eq(fv_npy_read(path, &a), FV_OK, "%s: %s", path, fv_last_error());
    cr_assert(count == 0 || a.count == count, "%s: %zu elements, expected %zu", path, a.count, count);
    float *f = malloc(a.count * sizeof(float));
    for (size_t i = 0; i < a.count; i++)
        f[i] = a.dtype == FV_DTYPE_F32 ? ((float *)a.data)[i] : (float)((double *)a.data)[i];
    fv_npy_free(&a);
    return f;
}

static void fixture_check(const char *prefix)
{
    float *cfg = fx_read(prefix, "cfg", 6);
    fv_mlp_config c = {.d = (size_t)cfg[0], .width = (size_t)cfg[1], .depth = (size_t)cfg[2],
                       .act = (fv_act)(int)cfg[3], .temb = (size_t)cfg[4]};
    size_t B = (size_t)cfg[5], d = c.d;
    free(cfg);
    fv_mlp m;
    cr_assert_eq(fv_mlp_init(&m, &c, 0), FV_OK);
    float *grads = malloc(m.nparams * sizeof(float));
    float *gW[FV_MLP_MAX_LAYERS], *gb[FV_MLP_MAX_LAYERS];
    fv_mlp_views(&m, grads, gW, gb);
    /* Load torch's weights by their state_dict names. */
    for (size_t l = 0; l < m.nlayers; l++)
        for (int isb = 0; isb < 2; isb++) {
            char name[32];
            cr_assert_eq(fv_mlp_param_name(&m, l, isb, name, sizeof name), FV_OK);
            size_t n = isb ? m.out[l] : m.out[l] * m.in[l];
            float *p = fx_read(prefix, name, n);
            memcpy(isb ? m.b[l] : m.W[l], p, n * sizeof(float));
            free(p);
        }
    float *x = fx_read(prefix, "x", B * d), *t = fx_read(prefix, "t", B), *u = fx_read(prefix, "u", B * d);
    float *want = fx_read(prefix, "out", B * d), *wloss = fx_read(prefix, "loss", 1);
    float *wsq = fx_read(prefix, "sqnorm", B);
    float *out = malloc(B * d * sizeof(float)), *dout = malloc(B * d * sizeof(float)), *sq = malloc(B * sizeof(float));
    fv_mlp_acts a;
    cr_assert_eq(fv_mlp_acts_alloc(&a, &m, B), FV_OK);
    fv_mlp_forward(&m, B, x, t, out, &a);
    float L = fv_mse_loss(B * d, out, u, dout);
    fv_mlp_backward(&m, B, dout, grads, sq, &a);

    double e_out = rel_err_f(B * d, out, want), e_loss = fabs((double)L - wloss[0]) / wloss[0];
    double e_sq = rel_err_f(B, sq, wsq), e_grad = 0;
    cr_expect(e_out < 1e-5, "%s: output relative error %.3g", prefix, e_out);
    cr_expect(e_loss < 1e-5, "%s: loss %.9g vs torch %.9g", prefix, L, wloss[0]);
    cr_expect(e_sq < 1e-5, "%s: per-row gradient norms relative error %.3g", prefix, e_sq);
    for (size_t l = 0; l < m.nlayers; l++)
        for (int isb = 0; isb < 2; isb++) {
            char name[32], gname[40];
            fv_mlp_param_name(&m, l, isb, name, sizeof name);
            snprintf(gname, sizeof gname, "grad.%s", name);
            size_t n = isb ? m.out[l] : m.out[l] * m.in[l];
            float *w = fx_read(prefix, gname, n);
            double e = rel_err_f(n, isb ? gb[l] : gW[l], w);
            e_grad = fmax(e_grad, e);
            cr_expect(e < 1e-5, "%s: %s relative error %.3g", prefix, gname, e);
            free(w);
        }
    cr_log_info("torch fixture %s (%zu params, B %zu): out %.2e, loss %.2e, worst gradient block %.2e, sqnorm %.2e",
                prefix, m.nparams, B, e_out, e_loss, e_grad, e_sq);
    fv_mlp_acts_free(&a);
    fv_mlp_free(&m);
    free(grads), free(x), free(t), free(u), free(want), free(wloss), free(wsq), free(out), free(dout), free(sq);
}

Test(mlp, torch_silu_raw_t) { fixture_check("silu_raw"); }
Test(mlp, torch_selu_temb) { fixture_check("selu_temb"); }
Test(mlp, torch_tanh_temb) { fixture_check("tanh_temb"); }
Test(mlp, torch_relu_raw_t) { fixture_check("relu_raw"); }

/* ---- the vectorizable exp behind the SiLU (nn_math.h's fv_expf_fast) ---------------------------- */

#include "src/nn/nn_math.h"

#include <float.h>
#include <stdint.h>

/* Distance in units in the last place between two finite floats (counting across zero). */
static int64_t ulp_dist(float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    int64_t la = ia < 0 ? (int64_t)INT32_MIN - ia : ia, lb = ib < 0 ? (int64_t)INT32_MIN - ib : ib;
    return la > lb ? la - lb : lb - la;
}

/* The grid: +-0, +-inf, subnormal and tiny |x|, a dense sweep of [-100, 100] and the values around
 * the overflow threshold of e^-x. */
static size_t act_grid(float *x, size_t cap)
{
    size_t n = 0;
    float fixed[] = {0.0f, -0.0f, 1e-45f, -1e-45f, 1e-40f, -1e-40f, FLT_MIN, -FLT_MIN, 1e-30f, -1e-30f, 1e-10f,
                     -1e-10f, 1e-5f, -1e-5f, 86.0f, -86.0f, 88.0f, -88.0f, 88.72f, -88.72f, 88.7229f, -88.7229f,
                     89.0f, -89.0f, 100.0f, -100.0f, 1e30f, -1e30f, FLT_MAX, -FLT_MAX};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        x[n++] = fixed[i];
    for (float v = 1e-38f; v < 1.0f && n + 2 <= cap; v *= 1.37f) {
        x[n++] = v;
        x[n++] = -v;
    }
    for (int i = -400000; i <= 400000 && n < cap; i++)
        x[n++] = (float)i * 2.5e-4f; /* [-100, 100] every 2.5e-4 */
    return n;
}

Test(mlp, fast_exp_matches_libm)
{
    int64_t worst = 0;
    float worst_z = 0.0f;
    for (int i = -8600000; i <= 8872000; i++) { /* [-86, 88.72] every 1e-5 */
        float z = (float)i * 1e-5f, e = fv_expf_fast(z), r = expf(z);
        int64_t d = ulp_dist(e, r);
        if (d > worst) {
            worst = d;
            worst_z = z;
        }
    }
    cr_log_info("fv_expf_fast: max %lld ulp from expf on [-86, 88.72] (at z = %.9g)", (long long)worst,
                (double)worst_z);
    cr_expect(worst <= 2, "max %lld ulp at z = %.9g", (long long)worst, (double)worst_z);
    cr_expect(isinf(fv_expf_fast(88.73f)) && isinf(fv_expf_fast(1e30f)) && isinf(fv_expf_fast(INFINITY)));
    cr_expect(isfinite(fv_expf_fast(88.72f)));
    cr_expect(isnan(fv_expf_fast(NAN)));
    cr_expect(fv_expf_fast(0.0f) == 1.0f && fv_expf_fast(-0.0f) == 1.0f);
}

/* fv_act_forward / fv_act_backward for SiLU (the vectorized loops) against the same formulas through
 * libm's expf (each a few ulp from the truth): within 8 ulp (6 seen, near x = -88 and -16.7), results below FLT_MIN (where libm's e^-x overflows) counted as equal
 * when both are. The derivative s (1 + x (1 - s)) cancels near x = -1.28, and x (1 - s) multiplies s's
 * error by |x|, so it is held to 6 eps of s (1 + |x|) (4.2 seen) rather than to ulp of itself. */
Test(mlp, silu_matches_libm)
{
    size_t cap = 900000;
    float *x = malloc(cap * sizeof(float)), *y = malloc(cap * sizeof(float)), *d = malloc(cap * sizeof(float));
    cr_assert(x && y && d);
    size_t n = act_grid(x, cap);
    fv_act_forward(y, x, n, FV_ACT_SILU);
    for (size_t i = 0; i < n; i++)
        d[i] = 1.0f;
    fv_act_backward(d, d, x, y, n, FV_ACT_SILU); /* in place, as fv_mlp_backward calls it */
    int64_t worst_y = 0;
    double worst_d = 0.0;
    for (size_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-x[i]));
        float yr = x[i] * s, dr = s * (1.0f + x[i] * (1.0f - s));
        cr_assert(!isnan(y[i]) && !isnan(d[i]), "NaN at x = %g", (double)x[i]);
        int64_t u = (fabsf(y[i]) < FLT_MIN && fabsf(yr) < FLT_MIN) ? 0 : ulp_dist(y[i], yr);
        if (u > worst_y)
            worst_y = u;
        double size = fabs((double)s) * (1.0 + fabs((double)x[i])) + 1e-300; /* x amplifies s's error */
        double e = fabs((double)d[i] - dr) / (size * FLT_EPSILON);
        if (e > worst_d)
            worst_d = e;
        cr_expect(u <= 8, "silu(%.9g) = %.9g, libm %.9g (%lld ulp)", (double)x[i], (double)y[i], (double)yr,
                  (long long)u);
        cr_expect(e <= 6.0, "silu'(%.9g) = %.9g, libm %.9g", (double)x[i], (double)d[i], (double)dr);
    }
    cr_log_info("SiLU over %zu points: forward max %lld ulp from libm, derivative max %.2f eps of its terms",
                n, (long long)worst_y, worst_d);
    free(x);
    free(y);
    free(d);
}
