/* nn_math.h: the per-element math of the network layer (activations and their derivatives, the
 * sinusoidal time embedding, the Adam and EMA updates of one parameter), as inline functions
 * compiled for both the host and CUDA devices. The CPU code in mlp.c / optim.c and a later CUDA
 * backend call these same functions, so the two backends cannot drift apart in the formulas; only
 * the order of summations (matrix products, norms) can differ between them.
 *
 * The formulas follow PyTorch's kernels where PyTorch has a choice (SELU through expm1, the derivative
 * of SELU and ReLU at exactly 0, tanh's derivative from its output, Adam's lerp for the first moment),
 * so that the fixture tests against torch agree to rounding. */
#ifndef FV_NN_MATH_H
#define FV_NN_MATH_H

#include <math.h>

/* Same definition as core/philox.h (an identical redefinition is allowed), so this header stands
 * alone and both headers can be included in either order. */
#ifndef FV_HD
#ifdef __CUDACC__
#define FV_HD __host__ __device__ __forceinline__
#else
#define FV_HD static inline
#endif
#endif

/* Activation codes; must equal the fv_act enum of mlp.h (kept as ints here so that this header does
 * not depend on mlp.h and can be included by device code alone). */
#define FV_NNM_SILU 0
#define FV_NNM_SELU 1
#define FV_NNM_RELU 2
#define FV_NNM_TANH 3

/* torch.nn.SELU's constants (Klambauer et al. 2017), as float literals. */
#define FV_SELU_ALPHA 1.6732632423543772848170429916717f
#define FV_SELU_SCALE 1.0507009873554804934193349852946f

FV_HD float fv_sigmoidf(float x)
{
    /* For x very negative expf(-x) overflows to inf and the result is the correct limit 0. */
    return 1.0f / (1.0f + expf(-x));
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
