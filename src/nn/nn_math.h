/* nn_math.h: the per-element math of the network layer (activations and their derivatives, the
 * sinusoidal time embedding, dropout, the Adam and EMA updates of one parameter), as inline functions
 * compiled for both the host and CUDA devices. The CPU code in mlp.c / optim.c and a later CUDA
 * backend call these same functions, so the two backends cannot drift apart in the formulas; only
 * the order of summations (matrix products, norms) can differ between them.
 *
 * The formulas follow PyTorch's kernels where PyTorch has a choice (SELU through expm1, the derivative
 * of SELU and ReLU at exactly 0, tanh's derivative from its output, Adam's lerp for the first moment),
 * so that the fixture tests against torch agree to rounding. */
#ifndef FV_NN_MATH_H
#define FV_NN_MATH_H

#include "core/hd.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Activation codes; must equal the fv_act enum of mlp.h (kept as ints here so that this header does
 * not depend on mlp.h and can be included by device code alone). */
#define FV_NNM_SILU 0
#define FV_NNM_SELU 1
#define FV_NNM_RELU 2
#define FV_NNM_TANH 3

/* torch.nn.SELU's constants (Klambauer et al. 2017), as float literals. */
#define FV_SELU_ALPHA 1.6732632423543772848170429916717f
#define FV_SELU_SCALE 1.0507009873554804934193349852946f

/* e^z without libm: branch-free (selects only), so that gcc vectorizes the activation loops that call
 * it (libm's scalar expf was 40 % of a training step). z = k ln2 + r with k = nearest integer to
 * z / ln2 (the 1.5 * 2^23 rounding trick) and ln2 split in two (Cody-Waite) so that r is exact to
 * float precision, |r| <= ln2 / 2; e^r from Cephes' expf polynomial (degree 7 in r); the result is
 * scaled by 2^(k-1) then by 2 so that k = 128 still builds a finite scale. Within 2 ulp of libm's
 * expf for -86 <= z <= 88.72 (tested); z > 88.72 (and +inf) give +inf as expf does, NaN gives NaN.
 * Below -86 it returns e^-86 (4e-38) instead of the smaller (subnormal) value: it is meant for
 * 1 + e^z, where both round to 1. */
FV_HD float fv_expf_fast(float z)
{
    z = z < -86.0f ? -86.0f : z; /* written as selects (not fmaxf) so that NaN passes through */
    z = z > 89.0f ? 89.0f : z;
    float t = z * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: t's low bits hold round(z / ln2) */
    float kf = t - 12582912.0f;
    float r = z - kf * 0.693359375f;  /* ln2 = 0.693359375 - 2.12194440e-4, the first part exact in 9 bits */
    r = r - kf * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    unsigned tb, sb;
    memcpy(&tb, &t, sizeof tb);
    sb = (tb - 0x4B400000u + 126u) << 23; /* biased exponent of 2^(k-1), 1 .. 254 for -86 <= z <= 89 */
    float scale;
    memcpy(&scale, &sb, sizeof scale);
    return p * scale * 2.0f;
}

/* Through fv_expf_fast: for x below about -88.72, e^-x is +inf and the result is the limit 0, as with
 * libm's expf; for x >= 86 it is exactly 1. */
FV_HD float fv_sigmoidf(float x)
{
    return 1.0f / (1.0f + fv_expf_fast(-x));
}

/* y = act(x). */
FV_HD float fv_act_fwd(int act, float x)
{
    switch (act) {
    case FV_NNM_SILU:
        return x * fv_sigmoidf(x);
    case FV_NNM_SELU:
        /* expm1 keeps the relative accuracy of alpha (e^x - 1) for x near 0, as torch's kernel does. */
        return x > 0.0f ? FV_SELU_SCALE * x : FV_SELU_SCALE * FV_SELU_ALPHA * expm1f(x);
    case FV_NNM_RELU:
        return x > 0.0f ? x : 0.0f;
    default: /* FV_NNM_TANH */
        return tanhf(x);
    }
}

/* d act / dx at the pre-activation x, whose activation output is y (tanh uses y: 1 - y^2, as torch's
 * tanh_backward does; the others use x). At the kinks the one-sided values are torch's: ReLU'(0) = 0,
 * SELU'(0) = scale * alpha (the x <= 0 branch). */
FV_HD float fv_act_deriv(int act, float x, float y)
{
    switch (act) {
    case FV_NNM_SILU: {
        float s = fv_sigmoidf(x);
        return s * (1.0f + x * (1.0f - s));
    }
    case FV_NNM_SELU:
        return x > 0.0f ? FV_SELU_SCALE : FV_SELU_SCALE * FV_SELU_ALPHA * expf(x);
    case FV_NNM_RELU:
        return x > 0.0f ? 1.0f : 0.0f;
    default: /* FV_NNM_TANH */
        return 1.0f - y * y;
    }
}

/* Frequency k (0 <= k < half) of the sinusoidal time embedding: f_k = exp(-ln(10000) k / half),
 * evaluated in float in the same order as guided-diffusion's timestep_embedding (used by torchcfm):
 * (-ln 10000 * k) / half, then exp. */
FV_HD float fv_temb_freq(unsigned k, unsigned half)
{
    return expf((-9.21034037197618273607f * (float)k) / (float)half);
}

/* The embedding of one time t into emb[0 .. 2 half): [cos(t f_0..f_{half-1}), sin(t f_0..)], cos
 * first (torchcfm / guided-diffusion order). */
FV_HD void fv_temb(float t, unsigned half, float *emb)
{
    for (unsigned k = 0; k < half; k++) {
        float a = t * fv_temb_freq(k, half);
        emb[k] = cosf(a);
        emb[half + k] = sinf(a);
    }
}

/* Training-mode dropout of one element (unet_layers.h's fv_dropout_*): x is dropped when the uniform
 * made of the top 24 bits of its Philox word is below p, else scaled by scale = 1 / (1 - p) (computed
 * once by the caller, in float). */
FV_HD float fv_dropout_elem(float x, uint32_t word, float p, float scale)
{
    float u = (float)(word >> 8) * 0x1p-24f;
    return u < p ? 0.0f : x * scale;
}

/* One Adam update of one parameter, in torch.optim.Adam's order of operations:
 *   m <- m + (1 - beta1) (g - m)          (torch's lerp; weight < 0.5 takes this branch)
 *   v <- beta2 v + (1 - beta2) g^2
 *   p <- p + (-step_size * m) / (sqrt(v) / bc2_sqrt + eps)   (torch's addcdiv: value * t1 / t2)
 * with step_size = lr / (1 - beta1^k) and bc2_sqrt = sqrt(1 - beta2^k) computed once per step by the
 * caller (in double, as torch does with Python floats). */
FV_HD void fv_adam_elem(float *p, float *m, float *v, float g, float one_minus_b1, float b2,
                        float one_minus_b2, float step_size, float bc2_sqrt, float eps)
{
    float mm = *m + one_minus_b1 * (g - *m);
    float vv = *v * b2 + one_minus_b2 * (g * g);
    float denom = sqrtf(vv) / bc2_sqrt + eps;
    *m = mm;
    *v = vv;
    *p = *p + (-step_size * mm) / denom;
}

/* ema <- decay ema + (1 - decay) p, the two products rounded separately as torch's
 * `ema * decay + p * (1 - decay)` does. */
FV_HD float fv_ema_elem(float ema, float p, float decay, float one_minus_decay)
{
    return ema * decay + p * one_minus_decay;
}

#endif
