/* mlp_cuda.h: the MLP's layers, loss and optimizer on a CUDA device, twins of src/nn/mlp.c and
 * optim.c: the same layout (one flat parameter vector, torch's state_dict order), the same per-element
 * formulas (nn_math.h, compiled for the device), cuBLAS for the matrix products. Only the order of
 * summation inside products and reductions differs from the CPU reference. All pointers are device
 * pointers; everything is queued on the handle's stream. */
#ifndef FV_MLP_CUDA_H
#define FV_MLP_CUDA_H

#include "cuda/cuda_util.h"

/* What forward keeps for backward, for up to B rows; carved from one device allocation. */
typedef struct {
    size_t B, nlayers;
    float *mem;
    float *input;                   /* B x in[0] */
    float *pre[FV_MLP_MAX_LAYERS];  /* hidden layer l: B x out[l] before the activation */
    float *post[FV_MLP_MAX_LAYERS]; /* and after it */
    float *delta[2];                /* backward: B x max(width, d), used alternately */
    float *v, *dout;                /* B x d: the output and dL/dv */
    float *ones;                    /* B ones: bias gradients as a matrix-vector product */
    double *partial;                /* FV_CUDA_REDUCE_BLOCKS partial sums of a reduction, then: */
    double *scalar;                 /* the reduced sum (partial + FV_CUDA_REDUCE_BLOCKS) */
} fv_cuda_acts;

int fv_cuda_acts_alloc(fv_cuda_acts *a, const fv_mlp *m, size_t B);
void fv_cuda_acts_free(fv_cuda_acts *a);

/* The MLP's building blocks, which the U-Net (unet_cuda.h) shares. Linear layers without their bias
 * (row-major, torch's W: nout x nin): out (B x nout) = in W^T; backward dW = dout^T in, db = dout^T 1
 * (ones: B ones on the device), dinp = dout W unless dinp is NULL, as fv_linear_backward. */
int fv_cuda_linear_forward(cublasHandle_t h, float *out, const float *in, const float *W, size_t B, size_t nin,
                           size_t nout);
int fv_cuda_linear_backward(cublasHandle_t h, float *dinp, float *dW, float *db, const float *dout, const float *in,
                            const float *W, const float *ones, size_t B, size_t nin, size_t nout);
/* p[0 .. n) = v (the ones vectors of the bias gradients). */
int fv_cuda_fill(cudaStream_t s, float *p, float v, size_t n);
/* pre (n elements in rows of nout) += b per column, then post = act(pre) unless post is NULL. */
int fv_cuda_bias_act(cudaStream_t s, float *pre, float *post, const float *b, size_t n, size_t nout, int act);
/* d *= act'(pre) (post = act(pre)) over n elements, in place. */
int fv_cuda_act_backward(cudaStream_t s, float *d, const float *pre, const float *post, size_t n, int act);

/* out (B x d) = net([x, t or emb(t)]) with the parameters `params` (device, fv_mlp.params's layout);
 * m supplies the configuration and layer shapes. out may be a->v. */
int fv_cuda_mlp_forward(cublasHandle_t h, const fv_mlp *m, const float *params, size_t B, const float *x,
                        const float *t, float *out, fv_cuda_acts *a);

/* The loss mean((v - u)^2) over n elements, its gradient dout, the sum of squares reduced into
 * partial[FV_CUDA_REDUCE_BLOCKS] (partial: FV_CUDA_REDUCE_BLOCKS + 1 doubles, as fv_cuda_acts's; the loss
 * is that sum / n). */
int fv_cuda_mse_loss(cudaStream_t s, size_t n, const float *v, const float *u, float *dout, double *partial);

/* grads (device, params' layout, OVERWRITTEN) = the gradient of the loss whose dL/dv is a->dout; with
 * sqnorm (device, B) also each row's own squared gradient norm, as fv_mlp_backward. */
int fv_cuda_mlp_backward(cublasHandle_t h, const fv_mlp *m, const float *params, size_t B, float *grads, float *sqnorm,
                         fv_cuda_acts *a);

/* One optimizer update as fv_adam_step (clip, Adam, EMA) over n parameters: the global gradient norm
 * is reduced on the device into partial[FV_CUDA_REDUCE_BLOCKS] (as a sum of squares) and read there by
 * the update kernel, so nothing waits for the host. `k` is the update's number (1 for the first). Any
 * flat parameter vector: the MLP's and the U-Net's. */
int fv_cuda_adam_step(cudaStream_t s, const fv_adam_config *c, uint64_t k, size_t n, float *params, float *m,
                      float *v, float *ema, float *grads, double *partial);

#endif
