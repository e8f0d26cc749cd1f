/* optim.h: the optimizer of flow-matching training, with torch/torchcfm semantics, on one flat
 * parameter vector (fv_mlp.params or any other):
 *
 *   1. global-norm gradient clipping, as torch.nn.utils.clip_grad_norm_(params, clip): with
 *      norm = |g|_2 over ALL parameters, g <- g * clip / (norm + 1e-6) whenever that factor is < 1
 *      (i.e. when norm + 1e-6 > clip, torch's exact condition); clip <= 0 disables;
 *   2. Adam as torch.optim.Adam (no weight decay, no amsgrad): m <- beta1 m + (1-beta1) g,
 *      v <- beta2 v + (1-beta2) g^2, p <- p - lr_k / (1 - beta1^k) * m / (sqrt(v / (1 - beta2^k)) + eps)
 *      written as torch orders it: sqrt(v) / sqrt(1 - beta2^k) + eps (eps added to sqrt(v_hat));
 *   3. the learning rate lr_k of update k = 1, 2, ... follows torchcfm's warmup, which is
 *      LambdaLR(optim, lambda s: min(s, warmup) / warmup) with sched.step() AFTER each optim.step().
 *      LambdaLR applies lambda(0) = 0 when it is constructed, so update k uses
 *          lr_k = lr * min(k - 1, warmup) / warmup:
 *      the FIRST update runs with lr 0 (the moments and the step count still advance, so it is not a
 *      no-op for later updates) and the full lr is reached at update warmup + 1. warmup = 0 means no
 *      warmup (lr_k = lr; torchcfm would divide by zero); with cosine = T > 0 (after any warmup) the rate
 *      then decays as torch's CosineAnnealingLR(T_max = T) stepped after each update:
 *          lr_k = lr * (1 + cos(pi min(k - 1, T) / T)) / 2 (times the warmup factor),
 *      so the first update uses lr and update T + 1 (and later) 0;
 *   4. EMA of the parameters after the update, as torchcfm's ema(): ema <- decay ema + (1 - decay) p,
 *      starting from a copy of the initial parameters; decay 0 disables it (ema is then NULL).
 *
 * All state is flat arrays of n floats (m, v, ema) plus the step count, so a checkpoint can store it.
 * Per-element formulas are in nn_math.h (shared with a GPU backend). */
#ifndef FV_OPTIM_H
#define FV_OPTIM_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    float lr, beta1, beta2, eps;
    size_t warmup;   /* updates of linear warmup from 0 (torchcfm convention, see above); 0: none */
    size_t cosine;   /* cosine decay to 0 over this many updates (see above); 0: constant rate */
    float clip;      /* global gradient-norm clip; <= 0: none */
    float ema_decay; /* 0: no EMA */
} fv_adam_config;

fv_adam_config fv_adam_defaults(void); /* lr 1e-3, 0.9, 0.999, 1e-8, warmup 0, cosine 0, clip 0, ema 0 */

typedef struct {
    fv_adam_config c;
    size_t n;
    uint64_t step; /* updates done so far */
    float *m, *v;  /* first and second moments, n each */
    float *ema;    /* n, or NULL when c.ema_decay == 0 */
} fv_adam;         /* m, v and ema are carved from one allocation owned by m */

/* FV_EINPUT for an invalid config (lr < 0 or not finite, beta outside [0, 1), eps < 0, ema_decay outside
 * [0, 1), clip not finite) or n == 0; FV_ENOMEM. params (n floats) seeds the EMA; it may be NULL only
 * when the EMA is disabled. On failure *o is zeroed. */
int fv_adam_init(fv_adam *o, const fv_adam_config *c, size_t n, const float *params);
void fv_adam_free(fv_adam *o); /* safe on a zeroed or already freed fv_adam */

/* Learning rate of update k (k = 1 for the first update) under c's warmup and cosine decay, in double as
 * torch keeps it. */
double fv_adam_lr(const fv_adam_config *c, uint64_t k);

/* The global L2 norm of g (n floats), accumulated in double. */
float fv_grad_norm(size_t n, const float *g);

/* Clip g in place to global norm `clip` (torch's rule above); returns the norm before clipping. */
float fv_clip_grad_norm(size_t n, float *g, float clip);

/* fv_adam_elem (nn_math.h) on the n elements of p, m, v with gradients g (none of them aliasing), as
 * one vectorized loop; fv_adam_step's element loop, exposed so a test can compare it with the
 * per-element reference. */
void fv_adam_update(size_t n, float *restrict p, float *restrict m, float *restrict v,
                    const float *restrict g, float one_minus_b1, float b2, float one_minus_b2, float step_size,
                    float bc2_sqrt, float eps);

/* One update: clip grads (in place), Adam step on params, EMA. Returns the global grad norm before
 * clipping. As with torch (error_if_nonfinite = False) a non-finite gradient is not refused: the caller
 * should check isfinite() of the returned norm. */
float fv_adam_step(fv_adam *o, float *restrict params, float *restrict grads);

#endif
