/* test_optim.c: Adam, warmup, gradient clipping and EMA (src/nn/optim.c).
 *
 * Hand-computed values for the schedule, the clipping rule on both sides of the threshold, two Adam
 * steps of one parameter (checked against the textbook form m_hat / (sqrt(v_hat) + eps), written
 * independently of optim.c's torch-ordered arithmetic) and the EMA; then five training steps against
 * torch.optim.Adam + clip_grad_norm_ + LambdaLR warmup + torchcfm's ema() (tests/fixtures/mlp/adam_*,
 * made by tests/oracle/make_mlp_fixture.py). */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "src/core/error.h"
#include "src/core/io.h"
#include "src/nn/nn_math.h"
#include "src/nn/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURES "tests/fixtures/mlp/"

static int close_rel(double a, double b, double tol) { return fabs(a - b) <= tol * fmax(fabs(b), 1e-30); }

Test(optim, defaults)
{
    fv_adam_config c = fv_adam_defaults();
    cr_expect(c.lr == 1e-3f && c.beta1 == 0.9f && c.beta2 == 0.999f && c.eps == 1e-8f);
    cr_expect(c.warmup == 0 && c.clip == 0.0f && c.ema_decay == 0.0f);
}

Test(optim, warmup_schedule_torchcfm_convention)
{
    /* LambdaLR(lambda s: min(s, 4) / 4) stepped after each update: update k uses lr min(k - 1, 4) / 4. */
    fv_adam_config c = fv_adam_defaults();
    c.lr = 2.0f;
    c.warmup = 4;
    const double want[] = {0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0};
    for (uint64_t k = 1; k <= 7; k++)
        cr_expect(fv_adam_lr(&c, k) == want[k - 1], "update %llu: lr %g, want %g", (unsigned long long)k,
                  fv_adam_lr(&c, k), want[k - 1]);
    c.warmup = 0;
    for (uint64_t k = 1; k <= 3; k++)
        cr_expect(fv_adam_lr(&c, k) == 2.0, "no warmup: constant lr");

    /* CosineAnnealingLR(T_max = 4) stepped after each update: lr (1 + cos(pi min(k - 1, 4) / 4)) / 2. */
    c.cosine = 4;
    const double cosw[] = {2.0, 1.0 + sqrt(0.5), 1.0, 1.0 - sqrt(0.5), 0.0, 0.0};
    for (uint64_t k = 1; k <= 6; k++)
        cr_expect(fabs(fv_adam_lr(&c, k) - cosw[k - 1]) < 1e-15, "cosine update %llu: lr %.17g, want %.17g",
                  (unsigned long long)k, fv_adam_lr(&c, k), cosw[k - 1]);
    c.warmup = 2; /* the two factors multiply: update 2 has warmup 1/2 and cosine (1 + cos(pi / 4)) / 2 */
    cr_expect(fabs(fv_adam_lr(&c, 2) - 0.5 * (1.0 + sqrt(0.5))) < 1e-15, "warmup x cosine: %.17g", fv_adam_lr(&c, 2));
    c.warmup = 0;
    c.cosine = 0;

    /* The first update of a warmup run changes nothing (lr 0) but does advance the moments. */
    c.warmup = 2;
    c.lr = 0.1f;
    fv_adam o;
    float p = 1.0f, g = 0.5f;
    cr_assert_eq(fv_adam_init(&o, &c, 1, &p), FV_OK);
    fv_adam_step(&o, &p, &g);
    cr_expect(p == 1.0f, "first warmup update moved the parameter to %g", p);
    cr_expect(o.step == 1 && o.m[0] != 0.0f && o.v[0] != 0.0f);
    g = 0.5f;
    fv_adam_step(&o, &p, &g);
    cr_expect(p < 1.0f, "second update uses lr/2");
    fv_adam_free(&o);
}

Test(optim, clip_above_and_below)
{
    /* (Criterion's float_eq evaluates its arguments more than once: call first, then compare.) */
    float g[2] = {3, 4}; /* norm 5 */
    float nrm = fv_clip_grad_norm(2, g, 1.0f);
    cr_expect_float_eq(nrm, 5.0f, 1e-6);
    double s = 1.0 / (5.0 + 1e-6); /* torch: clip / (norm + 1e-6) */
    cr_expect(close_rel(g[0], 3 * s, 1e-6) && close_rel(g[1], 4 * s, 1e-6), "clipped to %g %g", g[0], g[1]);
    cr_expect(close_rel(hypot(g[0], g[1]), 1.0, 1e-6));

    float h[2] = {3, 4};
    nrm = fv_clip_grad_norm(2, h, 10.0f);
    cr_expect_float_eq(nrm, 5.0f, 1e-6);
    cr_expect(h[0] == 3.0f && h[1] == 4.0f, "below the threshold the gradient is untouched");
    nrm = fv_clip_grad_norm(2, h, 0.0f);
    cr_expect_float_eq(nrm, 5.0f, 1e-6);
    cr_expect(h[0] == 3.0f && h[1] == 4.0f, "clip 0 disables");
    nrm = fv_clip_grad_norm(2, h, -1.0f);
    cr_expect_float_eq(nrm, 5.0f, 1e-6);
    cr_expect(h[0] == 3.0f && h[1] == 4.0f, "negative clip disables");
    /* torch's rule at the threshold: norm == clip still scales by clip / (clip + 1e-6) < 1. */
    nrm = fv_clip_grad_norm(2, h, 5.0f);
    cr_expect_float_eq(nrm, 5.0f, 1e-6);
    cr_expect(h[0] < 3.0f && close_rel(h[0], 3.0 * 5.0 / (5.0 + 1e-6), 1e-6), "at the threshold: %.9g", h[0]);

    /* Through fv_adam_step: the returned norm is the one BEFORE clipping, the grads are clipped. */
    fv_adam_config c = fv_adam_defaults();
    c.clip = 1.0f;
    fv_adam o;
    float p[2] = {0, 0}, q[2] = {30, 40};
    cr_assert_eq(fv_adam_init(&o, &c, 2, p), FV_OK);
    nrm = fv_adam_step(&o, p, q);
    cr_expect_float_eq(nrm, 50.0f, 1e-5);
    cr_expect(close_rel(q[0], 0.6, 1e-6) && close_rel(q[1], 0.8, 1e-6), "grads after step: %g %g", q[0], q[1]);
    fv_adam_free(&o);
}

Test(optim, adam_two_steps_by_hand)
{
    fv_adam_config c = fv_adam_defaults();
    c.lr = 0.1f;
    fv_adam o;
    float p = 1.0f;
    cr_assert_eq(fv_adam_init(&o, &c, 1, &p), FV_OK);
    cr_expect_null(o.ema, "EMA disabled by default");
    /* The betas are the floats 0.9f and 0.999f (0.899999976 and 0.999000013), not 0.9 and 0.999. */
    const double b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    /* Step 1, g = 2: m = 2 (1 - b1) ~ 0.2, v = 4 (1 - b2) ~ 0.004, m_hat = 2, v_hat = 4:
     * p = 1 - 0.1 * 2 / (2 + eps). */
    float g = 2.0f;
    float nrm = fv_adam_step(&o, &p, &g); /* not inside cr_expect_float_eq: it evaluates twice */
    cr_expect_float_eq(nrm, 2.0f, 1e-7);
    double m1 = 2 * (1 - b1), v1 = 4 * (1 - b2);
    cr_expect(close_rel(o.m[0], m1, 1e-6) && close_rel(o.v[0], v1, 1e-6), "m %.9g v %.9g", o.m[0], o.v[0]);
    double p1 = 1.0 - 0.1 * 2.0 / (2.0 + eps);
    cr_expect(close_rel(p, p1, 1e-6), "step 1: p = %.9g, want %.9g", p, p1);
    /* Step 2, g = -1: m = b1 m1 - (1 - b1) ~ 0.08, v = b2 v1 + (1 - b2) ~ 0.004996,
     * m_hat = m / (1 - b1^2), v_hat = v / (1 - b2^2). */
    g = -1.0f;
    fv_adam_step(&o, &p, &g);
    double m2 = b1 * m1 - (1 - b1), v2 = b2 * v1 + (1 - b2);
    double mh = m2 / (1 - b1 * b1), vh = v2 / (1 - b2 * b2);
    double p2 = p1 - 0.1 * mh / (sqrt(vh) + eps);
    cr_expect(close_rel(o.m[0], m2, 1e-6) && close_rel(o.v[0], v2, 1e-6), "m %.9g v %.9g", o.m[0], o.v[0]);
    cr_expect(fabs(m2 - 0.08) < 1e-7 && fabs(v2 - 0.004996) < 1e-7, "hand values");
    cr_expect(close_rel(p, p2, 1e-6), "step 2: p = %.9g, want %.9g", p, p2);
    cr_expect(o.step == 2);
    fv_adam_free(&o);
}

Test(optim, ema_by_hand)
{
    fv_adam_config c = fv_adam_defaults();
    c.lr = 0.5f;
    c.ema_decay = 0.75f;
    fv_adam o;
    float p[2] = {1.0f, -2.0f};
    cr_assert_eq(fv_adam_init(&o, &c, 2, p), FV_OK);
    cr_assert_not_null(o.ema);
    cr_expect(o.ema[0] == 1.0f && o.ema[1] == -2.0f, "EMA starts at the initial parameters");
    /* First Adam step moves each parameter by -lr sign(g) (m_hat / sqrt(v_hat) = sign(g) up to eps). */
    float g[2] = {4.0f, -0.25f};
    fv_adam_step(&o, p, g);
    cr_expect(close_rel(p[0], 0.5, 1e-6) && close_rel(p[1], -1.5, 1e-6), "p = %g %g", p[0], p[1]);
    /* ema = 0.75 ema + 0.25 p. */
    cr_expect(close_rel(o.ema[0], 0.75 * 1.0 + 0.25 * 0.5, 1e-6), "ema[0] = %g", o.ema[0]);
    cr_expect(close_rel(o.ema[1], 0.75 * -2.0 + 0.25 * -1.5, 1e-6), "ema[1] = %g", o.ema[1]);
    double e0 = o.ema[0];
    g[0] = 4.0f, g[1] = -0.25f;
    fv_adam_step(&o, p, g);
    cr_expect(close_rel(o.ema[0], 0.75 * e0 + 0.25 * p[0], 1e-6));
    fv_adam_free(&o);
    fv_adam_free(&o); /* idempotent */
}

Test(optim, config_errors)
{
    fv_adam o;
    float p = 0;
    fv_adam_config ok = fv_adam_defaults(), c;
    const char *bad[] = {"negative lr", "beta1 = 1", "beta2 < 0", "negative eps", "ema 1", "NaN clip", "NaN lr"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = ok;
        switch (i) {
        case 0: c.lr = -1e-3f; break;
        case 1: c.beta1 = 1.0f; break;
        case 2: c.beta2 = -0.1f; break;
        case 3: c.eps = -1.0f; break;
        case 4: c.ema_decay = 1.0f; break;
        case 5: c.clip = NAN; break;
        default: c.lr = NAN; break;
        }
        fv_error_clear();
        cr_expect_eq(fv_adam_init(&o, &c, 1, &p), FV_EINPUT, "%s accepted", bad[i]);
        cr_expect_null(o.m);
        cr_log_info("%s -> %s", bad[i], fv_last_error());
    }
    cr_expect_eq(fv_adam_init(&o, &ok, 0, &p), FV_EINPUT, "n = 0 accepted");
    c = ok;
    c.ema_decay = 0.5f;
    cr_expect_eq(fv_adam_init(&o, &c, 1, NULL), FV_EINPUT, "EMA without initial parameters accepted");
}

/* ---- against torch --------------------------------------------------------------------------- */

static double *fx_read(const char *name, size_t *count)
{
    char path[256];
    snprintf(path, sizeof path, FIXTURES "adam_%s.npy", name);
    double *d;
    int nd;
    size_t shape[FV_NPY_MAX_DIMS];
    cr_assert_eq(fv_npy_read_f64(path, &d, &nd, shape), FV_OK, "%s: %s", path, fv_last_error());
    size_t n = 1;
    for (int i = 0; i < nd; i++)
        n *= shape[i];
    *count = n;
    return d;
}

/* max |a - b| / max |b| over n entries. */
static double rel_err(size_t n, const float *a, const double *b)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return den > 0 ? num / den : num;
}

Test(optim, torch_adam_warmup_clip_ema)
{
    size_t nh, n, ng, nl, K;
    double *hy = fx_read("hyper", &nh), *p0 = fx_read("params0", &n), *G = fx_read("grads", &ng);
    double *norms = fx_read("norms", &K), *lrs = fx_read("lr", &nl);
    size_t np_, nm, nv, ne;
    double *P = fx_read("params", &np_), *M = fx_read("m", &nm), *V = fx_read("v", &nv), *E = fx_read("ema", &ne);
    cr_assert(nh == 7 && nl == K && ng == K * n && np_ == K * n && nm == K * n && nv == K * n && ne == K * n);
    fv_adam_config c = {.lr = (float)hy[0],
                        .beta1 = (float)hy[1],
                        .beta2 = (float)hy[2],
                        .eps = (float)hy[3],
                        .warmup = (size_t)hy[4],
                        .clip = (float)hy[5],
                        .ema_decay = (float)hy[6]};
    float *p = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float)), *prev = malloc(n * sizeof(float));
    float *delta = malloc(n * sizeof(float));
    double *tdelta = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++)
        p[i] = (float)p0[i];
    fv_adam o;
    cr_assert_eq(fv_adam_init(&o, &c, n, p), FV_OK);
    int clipped = 0, unclipped = 0;
    for (size_t k = 0; k < K; k++) {
        for (size_t i = 0; i < n; i++)
            g[i] = (float)G[k * n + i];
        memcpy(prev, p, n * sizeof(float));
        double lr = fv_adam_lr(&c, k + 1);
        cr_expect(close_rel(lr, lrs[k], 1e-7) || (lr == 0 && lrs[k] == 0), "update %zu: lr %.9g, torch %.9g", k + 1,
                  lr, lrs[k]);
        float norm = fv_adam_step(&o, p, g);
        if (norm + 1e-6 > c.clip)
            clipped++;
        else
            unclipped++;
        const double *Pk = P + k * n, *Pprev = k ? P + (k - 1) * n : p0;
        for (size_t i = 0; i < n; i++) {
            delta[i] = p[i] - prev[i];
            tdelta[i] = Pk[i] - Pprev[i];
        }
        double e_norm = fabs(norm - norms[k]) / norms[k], e_p = rel_err(n, p, Pk), e_m = rel_err(n, o.m, M + k * n);
        double e_v = rel_err(n, o.v, V + k * n), e_e = rel_err(n, o.ema, E + k * n), e_d = rel_err(n, delta, tdelta);
        cr_expect(e_norm < 1e-6, "update %zu: norm %.9g vs torch %.9g", k + 1, norm, norms[k]);
        cr_expect(e_p < 1e-6, "update %zu: params relative error %.3g", k + 1, e_p);
        cr_expect(e_m < 1e-6, "update %zu: exp_avg relative error %.3g", k + 1, e_m);
        cr_expect(e_v < 1e-6, "update %zu: exp_avg_sq relative error %.3g", k + 1, e_v);
        cr_expect(e_e < 1e-6, "update %zu: EMA relative error %.3g", k + 1, e_e);
        /* The update itself (params change by ~lr, far below the params' scale): to float rounding of p. */
        cr_expect(e_d < 1e-5, "update %zu: parameter change relative error %.3g", k + 1, e_d);
        cr_log_info("torch adam update %zu (lr %.4g, norm %.6g%s): params %.1e, change %.1e, m %.1e, v %.1e, "
                    "ema %.1e, norm %.1e",
                    k + 1, lr, norm, norm + 1e-6 > c.clip ? ", clipped" : "", e_p, e_d, e_m, e_v, e_e, e_norm);
    }
    cr_expect(clipped > 0 && unclipped > 0, "fixture should exercise both sides of the clip threshold");
    fv_adam_free(&o);
    free(hy), free(p0), free(G), free(norms), free(lrs), free(P), free(M), free(V), free(E);
    free(p), free(g), free(prev), free(delta), free(tdelta);
}

/* The vectorized element loop (fv_adam_update) equals the per-element reference fv_adam_elem that the
 * CUDA backend uses, bit for bit, on random state and gradients over several orders of magnitude. */
Test(optim, vector_update_matches_elem)
{
    size_t n = 10007; /* odd, so the loop's scalar tail runs too */
    float *p = malloc(4 * n * sizeof(float)), *m = p + n, *v = p + 2 * n, *g = p + 3 * n;
    float *p2 = malloc(3 * n * sizeof(float)), *m2 = p2 + n, *v2 = p2 + 2 * n;
    cr_assert(p && p2);
    srand(12345);
    for (size_t i = 0; i < n; i++) {
        float sc = powf(10.0f, (float)(rand() % 12) - 8.0f);
        p[i] = ((float)rand() / RAND_MAX - 0.5f) * 2.0f;
        m[i] = ((float)rand() / RAND_MAX - 0.5f) * sc;
        v[i] = i % 17 == 0 ? 0.0f : ((float)rand() / RAND_MAX) * sc * sc;
        g[i] = i % 13 == 0 ? 0.0f : ((float)rand() / RAND_MAX - 0.5f) * sc;
    }
    memcpy(p2, p, 3 * n * sizeof(float));
    for (int k = 1; k <= 3; k++) {
        float omb1 = 0.1f, b2 = 0.999f, omb2 = (float)(1.0 - (double)0.999f);
        float step = (float)(1e-3 / (1.0 - pow(0.9, k))), bc2 = (float)sqrt(1.0 - pow((double)0.999f, k));
        fv_adam_update(n, p, m, v, g, omb1, b2, omb2, step, bc2, 1e-8f);
        for (size_t i = 0; i < n; i++)
            fv_adam_elem(&p2[i], &m2[i], &v2[i], g[i], omb1, b2, omb2, step, bc2, 1e-8f);
        cr_assert_eq(memcmp(p, p2, 3 * n * sizeof(float)), 0, "step %d differs", k);
    }
    free(p);
    free(p2);
}
