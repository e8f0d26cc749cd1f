/* optim.c: Adam with torchcfm's warmup, global-norm clipping and parameter EMA (see optim.h).
 * Scalars that torch computes from Python floats (bias corrections, the scheduled learning rate) are
 * computed here in double and rounded to float where torch hands them to a float32 kernel, so the
 * fixture comparison against torch agrees to rounding. */
#include "nn/optim.h"

#include "core/error.h"
#include "nn/nn_math.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

fv_adam_config fv_adam_defaults(void)
{
    fv_adam_config c = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    return c;
}

int fv_adam_init(fv_adam *o, const fv_adam_config *c, size_t n, const float *params)
{
    memset(o, 0, sizeof *o);
    if (!c)
        return fv_error(FV_EINPUT, "adam: no configuration");
    if (!(c->lr >= 0.0f) || !isfinite(c->lr))
        return fv_error(FV_EINPUT, "adam: learning rate must be finite and >= 0 (got %g)", (double)c->lr);
    if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f) || !(c->beta2 >= 0.0f && c->beta2 < 1.0f))
        return fv_error(FV_EINPUT, "adam: betas must be in [0, 1) (got %g, %g)", (double)c->beta1,
                        (double)c->beta2);
    if (!(c->eps >= 0.0f) || !isfinite(c->eps))
        return fv_error(FV_EINPUT, "adam: eps must be finite and >= 0 (got %g)", (double)c->eps);
    if (!isfinite(c->clip))
        return fv_error(FV_EINPUT, "adam: clip must be finite (got %g)", (double)c->clip);
    if (!(c->ema_decay >= 0.0f && c->ema_decay < 1.0f))
        return fv_error(FV_EINPUT, "adam: EMA decay must be in [0, 1) (got %g)", (double)c->ema_decay);
    if (n == 0)
        return fv_error(FV_EINPUT, "adam: no parameters");
    int ema = c->ema_decay > 0.0f;
    if (ema && !params)
        return fv_error(FV_EINPUT, "adam: the EMA needs the initial parameters");
    size_t k = ema ? 3 : 2;
    if (n > ((size_t)-1) / sizeof(float) / k)
        return fv_error(FV_ENOMEM, "adam: %zu parameters overflow", n);
    float *mem = calloc(k * n, sizeof(float)); /* m = v = 0, as torch's lazily created state */
    if (!mem)
        return fv_error(FV_ENOMEM, "adam: cannot allocate state for %zu parameters", n);
    o->c = *c;
    o->n = n;
    o->m = mem;
    o->v = mem + n;
    if (ema) {
        o->ema = mem + 2 * n;
        memcpy(o->ema, params, n * sizeof(float));
    }
    return FV_OK;
}

void fv_adam_free(fv_adam *o)
{
    if (!o)
        return;
    free(o->m);
    memset(o, 0, sizeof *o);
}

double fv_adam_lr(const fv_adam_config *c, uint64_t k)
{
    /* Both schedulers are evaluated at k - 1 before update k (their value at construction is lambda(0)). */
    uint64_t s = k > 0 ? k - 1 : 0;
    double lr = (double)c->lr;
    if (c->cosine)
        lr *= 0.5 * (1.0 + cos(M_PI * (double)(s < c->cosine ? s : c->cosine) / (double)c->cosine));
    if (c->warmup)
        lr *= (double)(s < c->warmup ? s : c->warmup) / (double)c->warmup;
    return lr;
}

float fv_grad_norm(size_t n, const float *g)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)g[i] * g[i];
    return (float)sqrt(s);
}

float fv_clip_grad_norm(size_t n, float *g, float clip)
{
    float norm = fv_grad_norm(n, g);
    if (clip > 0.0f) {
        /* torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to <= 1, in float32. */
        float coef = clip / (norm + 1e-6f);
        if (coef < 1.0f)
            for (size_t i = 0; i < n; i++)
                g[i] *= coef;
    }
    return norm;
}

void fv_adam_update(size_t n, float *restrict p, float *restrict m, float *restrict v,
                    const float *restrict g, float one_minus_b1, float b2, float one_minus_b2, float step_size,
                    float bc2_sqrt, float eps)
{
    /* Everything loop-invariant in locals and restrict pointers, so that gcc vectorizes the loop (with
     * the Makefile's vectorizer flags for src/nn; -fno-math-errno lets sqrtf become sqrtps, which is as
     * exact as sqrtss: the results equal fv_adam_elem's bit for bit, tested in test_optim.c). */
    for (size_t i = 0; i < n; i++)
        fv_adam_elem(&p[i], &m[i], &v[i], g[i], one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps);
}

float fv_adam_step(fv_adam *o, float *restrict params, float *restrict grads)
{
    const fv_adam_config *c = &o->c;
    /* params, grads and the moments never alias */
    float *restrict m = o->m, *restrict v = o->v;
    float norm = fv_clip_grad_norm(o->n, grads, c->clip);
    uint64_t k = ++o->step;
    double b1 = c->beta1, b2 = c->beta2;
    double bc1 = 1.0 - pow(b1, (double)k), bc2 = 1.0 - pow(b2, (double)k);
    float step_size = (float)(fv_adam_lr(c, k) / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float omb1 = (float)(1.0 - b1), omb2 = (float)(1.0 - b2);
    fv_adam_update(o->n, params, m, v, grads, omb1, c->beta2, omb2, step_size, bc2_sqrt, c->eps);
    if (o->ema) {
        float decay = c->ema_decay, omd = (float)(1.0 - (double)decay);
        float *restrict ema = o->ema;
        size_t n = o->n;
        for (size_t i = 0; i < n; i++)
            ema[i] = fv_ema_elem(ema[i], params[i], decay, omd);
    }
    return norm;
}
