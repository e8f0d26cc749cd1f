/* trainer.h: a vector-field network with its optimizer, behind a small table of backend operations
 * so the CFM loop (cfm.h) is written once: the CPU backend here, a CUDA backend later. The host
 * copies of params, Adam state and EMA are the truth that checkpoints save and load. */
#ifndef FV_TRAINER_H
#define FV_TRAINER_H

#include "nn/mlp.h"
#include "nn/optim.h"

#include <stddef.h>

typedef struct fv_trainer fv_trainer;

typedef struct {
    const char *name;
    /* Loss mean((v - u)^2) over a batch and its gradient into the trainer's gradient buffer. With
     * sqnorm != NULL also the squared norm of each row's own gradient (of that row's share of the
     * loss, (1 / (B d)) |v_i - u_i|^2). */
    int (*loss_grad)(fv_trainer *tr, size_t B, const float *xt, const float *t, const float *u, float *loss,
                     float *sqnorm);
    /* One optimizer update from the gradient buffer; *gnorm receives the norm before clipping. */
    int (*update)(fv_trainer *tr, float *gnorm);
    /* v(x, t) with the live or the EMA weights, for n rows. */
    int (*predict)(fv_trainer *tr, int use_ema, size_t n, const float *x, const float *t, float *out);
} fv_backend_ops;

struct fv_trainer {
    const fv_backend_ops *ops;
    fv_mlp net;       /* live weights (host) */
    fv_mlp ema_net;   /* shares the config; its params point at the optimizer's EMA copy */
    fv_adam opt;
    float *grads;     /* nparams */
    fv_mlp_acts acts; /* for up to `cap` rows */
    size_t cap;
};

/* A CPU trainer for an MLP of config `mc`, initialized from `seed`, activations for `cap` rows. */
int fv_trainer_cpu_init(fv_trainer *tr, const fv_mlp_config *mc, const fv_adam_config *ac, uint64_t seed, size_t cap);
void fv_trainer_free(fv_trainer *tr);

#endif
