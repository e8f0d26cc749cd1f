/* trainer.h: a vector-field network with its optimizer, behind a small table of backend operations
 * so the CFM loop (cfm.h) is written once: the CPU backend (trainer.c) and the CUDA backend
 * (cuda/trainer_cuda.cu). The host copies of params, Adam state and EMA are the truth that
 * checkpoints save and load; a backend that keeps its own copies (on a GPU) syncs them through
 * pull and push. */
#ifndef FV_TRAINER_H
#define FV_TRAINER_H

#include "nn/mlp.h"
#include "nn/optim.h"
#include "nn/unet.h"

#include <stddef.h>

typedef struct fv_trainer fv_trainer;
struct fv_cfm_data;
struct fv_dist;

typedef struct {
    const char *name;
    /* The batch of training step `step` into the backend's batch: the pairs of fv_cfm_pairs and the
     * interpolant of fv_cfm_interpolate (t_fixed < 0: t ~ U(0, 1) per row). A function of (seed, step)
     * alone; every backend draws the same Philox numbers. */
    int (*draw)(fv_trainer *tr, struct fv_cfm_data *D, uint64_t seed, uint64_t step, double t_fixed, size_t B);
    /* A batch given by the caller instead (host arrays: xt, u B x d, t B). */
    int (*load)(fv_trainer *tr, size_t B, const float *xt, const float *t, const float *u);
    /* Loss mean((v - u)^2) over the batch and its gradient into the backend's gradient buffer. With
     * sqnorm != NULL also the squared norm of each row's own gradient (of that row's share of the
     * loss, (1 / (B d)) |v_i - u_i|^2), and the summed gradient in tr->grads on the host (the MLP
     * from its linear layers' row products in one pass; the U-Net by one backward pass per row, with
     * the dropout masks the row has in the batch). */
    int (*loss_grad)(fv_trainer *tr, float *loss, float *sqnorm);
    /* One optimizer update from the gradient buffer; *gnorm receives the norm before clipping. */
    int (*update)(fv_trainer *tr, float *gnorm);
    /* v(x, t) with the live or the EMA weights, for n rows of host arrays. */
    int (*predict)(fv_trainer *tr, int use_ema, size_t n, const float *x, const float *t, float *out);
    /* Backend state -> host copies (pull: before a checkpoint is saved) and back (push: after one is
     * loaded); NULL when the host copies are the backend's state. */
    int (*pull)(fv_trainer *tr);
    int (*push)(fv_trainer *tr);
    void (*release)(fv_trainer *tr); /* the backend's own resources; NULL when it has none */
    /* A data-parallel step's reduction (nn/dist.h): the gradient buffer and the FV_GRAD_TAIL floats at
     * tail averaged over the ranks of g, in place; NULL: the gradient is tr->grads, on the host. */
    int (*allreduce)(fv_trainer *tr, struct fv_dist *g, float *tail);
} fv_backend_ops;

typedef enum { FV_MODEL_MLP = 0, FV_MODEL_UNET } fv_model_kind;

/* Room after the gradient for the scalars that travel with it in a data-parallel step's one
 * reduction (nn/dist.c: the loss and a failure count). */
#define FV_GRAD_TAIL 2

struct fv_trainer {
    const fv_backend_ops *ops;
    fv_model_kind model;
    size_t d, nparams; /* data dimension (C H W for a U-Net) and parameter count */
    float *params;     /* the live weights (host): net.params or unet.params */
    fv_mlp net;       /* MLP: live weights */
    fv_mlp ema_net;   /* shares the config; its params point at the optimizer's EMA copy */
    fv_unet unet, ema_unet; /* U-Net: the same two views */
    fv_unet_acts uacts;     /* U-Net: activations for up to `cap` rows */
    uint64_t batch_seed, batch_step; /* of the drawn batch: the U-Net's dropout masks follow them */
    size_t batch_row0; /* and its first row's place in its step's whole batch (a rank's shard, nn/dist.h) */
    size_t shard_row0, shard_batch; /* data parallel (nn/dist.h): draw's B rows are rows [shard_row0,
                                       shard_row0 + B) of the step's batch of shard_batch rows (set by
                                       fv_cfm_train); 0, 0: the B rows are the whole batch */
    fv_adam opt;
    float *grads;     /* nparams, then FV_GRAD_TAIL floats that nn/dist.c reduces with them */
    float *row_grads; /* U-Net: one row's gradient, for per-sample norms (allocated on first use) */
    fv_mlp_acts acts; /* CPU: activations for up to `cap` rows */
    size_t cap;
    size_t rows;      /* rows of the current batch */
    size_t bcap;      /* capacity of the batch buffers below, in rows */
    float *xt, *t, *u; /* CPU: the batch (B x d, B, B x d) */
    double *x0;        /* CPU: the batch's pairs (2 B x d: x0 then x1) */
    void *dev;         /* a device backend's state */
};

/* The host side of an MLP trainer that every backend shares: the network initialized from `seed`, Adam state, EMA and the
 * gradient buffer (no activations, no batch). On failure *tr is freed. */
int fv_trainer_host_init(fv_trainer *tr, const fv_mlp_config *mc, const fv_adam_config *ac, uint64_t seed);

/* A CPU trainer for a U-Net of config `uc` (nn/unet.h), initialized from `seed`, activations for `cap`
 * images. Training-mode dropout (masks from the batch's seed and step), eval mode in predict. */
int fv_trainer_unet_init(fv_trainer *tr, const fv_unet_config *uc, const fv_adam_config *ac, uint64_t seed, size_t cap);

/* The U-Net's dropout masks of the batch of step `step` (drawn under the run's seed): a Philox stream of
 * their own for every step, apart from the data's; the same on every backend. */
#define FV_UNET_DROPOUT_STREAM(step) ((1ULL << 63) | (step))

/* The same U-Net trainer on the CUDA device (cuda/trainer_cuda.cu, layers in cuda/unet_cuda.h), with the
 * same initial weights for a seed; tf32 as fv_trainer_cuda_init. Per-sample gradient norms are refused
 * as on the CPU. FV_EINPUT without CUDA or a device. */
int fv_trainer_unet_cuda_init(fv_trainer *tr, const fv_unet_config *uc, const fv_adam_config *ac, uint64_t seed,
                              size_t cap, int tf32);

/* "cpu", "cuda" or "auto" -> a U-Net trainer, as fv_trainer_init for the MLP. */
int fv_trainer_unet_init_on(fv_trainer *tr, const char *device, const fv_unet_config *uc, const fv_adam_config *ac,
                            uint64_t seed, size_t cap, int tf32);

/* A CPU trainer for an MLP of config `mc`, initialized from `seed`, activations for `cap` rows. */
int fv_trainer_cpu_init(fv_trainer *tr, const fv_mlp_config *mc, const fv_adam_config *ac, uint64_t seed, size_t cap);

/* The same trainer on the CUDA device (cuda/trainer_cuda.cu), initialized with the same weights as the
 * CPU one for a seed; tf32 != 0 lets cuBLAS use TF32 tensor cores (fp32 otherwise). FV_EINPUT when
 * flowvar was built without CUDA or no device is present. */
int fv_trainer_cuda_init(fv_trainer *tr, const fv_mlp_config *mc, const fv_adam_config *ac, uint64_t seed, size_t cap,
                         int tf32);

/* 1 when flowvar was built with CUDA and a device can be used, else 0 (no error is set). */
int fv_cuda_available(void);

/* This process's GPU: device `index` modulo the devices present (a rank's place on its machine,
 * nn/dist.c); FV_OK without CUDA. */
int fv_cuda_use_device(size_t index);

/* A data-parallel job's NCCL communicator (fv_dist.gpu), freed; NULL and builds without CUDA: nothing. */
void fv_cuda_comm_free(void *comm);

/* "cpu" or "cuda" -> a trainer; "auto" picks cuda when fv_cuda_available(). */
int fv_trainer_init(fv_trainer *tr, const char *device, const fv_mlp_config *mc, const fv_adam_config *ac,
                    uint64_t seed, size_t cap, int tf32);

void fv_trainer_free(fv_trainer *tr);

#endif
