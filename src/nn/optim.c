/* optim.c: Adam with torchcfm's warmup, global-norm clipping and parameter EMA (see optim.h).
 * Scalars that torch computes from Python floats (bias corrections, the scheduled learning rate) are
 * computed here in double and rounded to float where torch hands them to a float32 kernel, so the
 * fixture comparison against torch agrees to rounding. */
#include "nn/optim.h"

#include "core/error.h"
#include "nn/nn_math.h"
#include "nn/par.h"

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

/* The parameter vector in NCHUNK fixed chunks (of a multiple of 16 floats): the norm sums each chunk on
 * its own and then the chunks in order, so it does not depend on which thread took which chunk. */
#define NCHUNK 64

static void chunk_range(size_t n, size_t k, size_t *lo, size_t *hi)
{
    fv_par_range(n, 16, (int)k, NCHUNK, lo, hi);
}

/* sum g[i]^2 in double, in eight interleaved partial sums (so that it vectorizes in a fixed order). */
FV_SIMD_CLONES static double sumsq(size_t n, const float *restrict g)
{
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t k = 0; k < 8; k++)
            acc[k] += (double)g[i + k] * g[i + k];
    for (; i < n; i++)
        acc[i % 8] += (double)g[i] * g[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static float norm_of_chunks(const double *part)
{
    double s = 0.0;
    for (size_t k = 0; k < NCHUNK; k++)
        s += part[k];
    return (float)sqrt(s);
}

float fv_grad_norm(size_t n, const float *g)
{
    double part[NCHUNK];
    for (size_t k = 0; k < NCHUNK; k++) {
        size_t lo, hi;
        chunk_range(n, k, &lo, &hi);
        part[k] = sumsq(hi - lo, g + lo);
    }
    return norm_of_chunks(part);
}

/* torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to <= 1, in float32; 1 when not clipping. */
static float clip_coef(float norm, float clip)
{
    float coef = clip > 0.0f ? clip / (norm + 1e-6f) : 1.0f;
    return coef < 1.0f ? coef : 1.0f;
}

FV_SIMD_CLONES static void scale(size_t n, float *restrict g, float coef)
{
    for (size_t i = 0; i < n; i++)
        g[i] *= coef;
}

float fv_clip_grad_norm(size_t n, float *g, float clip)
{
    float norm = fv_grad_norm(n, g), coef = clip_coef(norm, clip);
    if (coef < 1.0f)
        scale(n, g, coef);
    return norm;
}

FV_SIMD_CLONES void fv_adam_update(size_t n, float *restrict p, float *restrict m, float *restrict v,
                                   const float *restrict g, float one_minus_b1, float b2, float one_minus_b2,
                                   float step_size, float bc2_sqrt, float eps)
{
    /* Everything loop-invariant in locals and restrict pointers, so that gcc vectorizes the loop (with
     * the Makefile's vectorizer flags for src/nn; -fno-math-errno lets sqrtf become sqrtps, which is as
     * exact as sqrtss: the results equal fv_adam_elem's bit for bit, tested in test_optim.c). */
    for (size_t i = 0; i < n; i++)
        fv_adam_elem(&p[i], &m[i], &v[i], g[i], one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps);
}

FV_SIMD_CLONES static void ema_update(size_t n, float *restrict ema, const float *restrict p, float decay, float omd)
{
    for (size_t i = 0; i < n; i++)
        ema[i] = fv_ema_elem(ema[i], p[i], decay, omd);
}

typedef struct {
    fv_adam *o;
    float *p, *g;
    float omb1, step_size, bc2_sqrt, omb2, decay, omd;
    double part[NCHUNK]; /* each chunk's sum of squared gradients */
} step_ctx;

/* Adam, the gradient norm and the EMA in one pass over each chunk while it is in cache; with clipping
 * the norm must be known first, so the chunks' sums come first and a barrier separates the passes. */
static void step_chunks(void *arg, int tid, int nt)
{
    step_ctx *c = arg;
    fv_adam *o = c->o;
    float clip = o->c.clip;
    size_t k0, k1;
    fv_par_range(NCHUNK, 1, tid, nt, &k0, &k1);
    if (clip > 0.0f) {
        for (size_t k = k0; k < k1; k++) {
            size_t lo, hi;
            chunk_range(o->n, k, &lo, &hi);
            c->part[k] = sumsq(hi - lo, c->g + lo);
        }
        fv_par_barrier();
    }
    float coef = clip > 0.0f ? clip_coef(norm_of_chunks(c->part), clip) : 1.0f;
    for (size_t k = k0; k < k1; k++) {
        size_t lo, hi;
        chunk_range(o->n, k, &lo, &hi);
        if (hi == lo)
            continue;
        if (clip > 0.0f && coef < 1.0f)
            scale(hi - lo, c->g + lo, coef);
        else if (clip <= 0.0f)
            c->part[k] = sumsq(hi - lo, c->g + lo);
        fv_adam_update(hi - lo, c->p + lo, o->m + lo, o->v + lo, c->g + lo, c->omb1, o->c.beta2, c->omb2,
                       c->step_size, c->bc2_sqrt, o->c.eps);
        if (o->ema)
            ema_update(hi - lo, o->ema + lo, c->p + lo, c->decay, c->omd);
    }
}

float fv_adam_step(fv_adam *o, float *restrict params, float *restrict grads)
{
    const fv_adam_config *c = &o->c;
    uint64_t k = ++o->step;
    double b1 = c->beta1, b2 = c->beta2;
    double bc1 = 1.0 - pow(b1, (double)k), bc2 = 1.0 - pow(b2, (double)k);
    step_ctx s = {.o = o, .p = params, .g = grads};
    s.step_size = (float)(fv_adam_lr(c, k) / bc1);
    s.bc2_sqrt = (float)sqrt(bc2);
    s.omb1 = (float)(1.0 - b1);
    s.omb2 = (float)(1.0 - b2);
    s.decay = c->ema_decay;
    s.omd = (float)(1.0 - (double)c->ema_decay);
    for (size_t i = 0; i < NCHUNK; i++)
        s.part[i] = 0.0;
    fv_par_run(step_chunks, &s);
    return norm_of_chunks(s.part);
}
