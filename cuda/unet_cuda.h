/* unet_cuda.h: torchcfm's U-Net on a CUDA device: a twin of every layer of src/nn/unet_layers.h and of
 * the whole network of src/nn/unet.h (forward, backward), with the same argument order, layouts (NCHW
 * float32, the flat parameter vector in torch's state_dict order) and gradient conventions (parameter
 * gradients overwritten, input gradients added, SiLU and dropout in place). Per-element formulas are
 * nn_math.h's and philox.h's, so dropout masks are bit-identical to the CPU's; only the order of sums
 * differs. Convolutions are im2col + cuBLAS (no cuDNN: one path, the one that runs wherever cuBLAS
 * does), attention is cuBLAS strided-batched products around a softmax kernel.
 *
 * All pointers are device pointers; everything is queued on the cuBLAS handle's stream and returns
 * FV_OK or FV_EDEVICE (FV_ENOMEM for allocations). Plain C, so that tests and benchmarks written in C
 * can call the layers (they need CUDA's include directory). */
#ifndef FV_UNET_CUDA_H
#define FV_UNET_CUDA_H

#include <cublas_v2.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "nn/unet.h"
#include "nn/unet_layers.h"

/* ---- layers ------------------------------------------------------------------------------------ */

/* Convolution (fv_conv2d_*). col: scratch for the im2col of ncol images (ncol fv_conv2d_col_size(s)
 * floats; unused, may be NULL, for a 1x1 stride-1 convolution); the batch goes through it ncol images
 * at a time. */
int fv_cuda_conv2d_forward(cublasHandle_t h, float *out, const float *in, const float *W, const float *b, float *col,
                           size_t ncol, size_t B, const fv_conv2d_shape *s);
int fv_cuda_conv2d_backward(cublasHandle_t h, float *dinp, float *dW, float *db, const float *dout, const float *in,
                            const float *W, float *col, size_t ncol, size_t B, const fv_conv2d_shape *s);

/* GroupNorm (fv_groupnorm_*); part: 2 B C doubles of scratch (per image and channel sums). */
int fv_cuda_groupnorm_forward(cublasHandle_t h, float *out, float *mean, float *rstd, const float *in,
                              const float *gamma, const float *beta, size_t B, size_t C, size_t HW, size_t G);
int fv_cuda_groupnorm_backward(cublasHandle_t h, float *dinp, float *dgamma, float *dbeta, const float *dout,
                               const float *in, const float *mean, const float *rstd, const float *gamma, double *part,
                               size_t B, size_t C, size_t HW, size_t G);

int fv_cuda_upsample2x_forward(cublasHandle_t h, float *out, const float *in, size_t B, size_t C, size_t H, size_t W);
int fv_cuda_upsample2x_backward(cublasHandle_t h, float *dinp, const float *dout, size_t B, size_t C, size_t H,
                                size_t W);
int fv_cuda_concat_forward(cublasHandle_t h, float *out, const float *a, const float *b, size_t B, size_t Ca, size_t Cb,
                           size_t HW);
int fv_cuda_concat_backward(cublasHandle_t h, float *da, float *db, const float *dout, size_t B, size_t Ca, size_t Cb,
                            size_t HW);
int fv_cuda_accumulate(cublasHandle_t h, float *y, const float *x, size_t n);
int fv_cuda_channel_bias_forward(cublasHandle_t h, float *x, const float *e, size_t B, size_t C, size_t HW);
int fv_cuda_channel_bias_backward(cublasHandle_t h, float *de, const float *dx, size_t B, size_t C, size_t HW);

/* SiLU: out = silu(in); backward d *= silu'(pre) in place (post = silu(pre)). */
int fv_cuda_silu_forward(cublasHandle_t h, float *out, const float *in, size_t n);
int fv_cuda_silu_backward(cublasHandle_t h, float *d, const float *pre, const float *post, size_t n);

/* Attention (fv_attention_*). Backward's datt holds the softmax gradients of every image and head at
 * once: B heads T T floats (the CPU's is one T x T). */
int fv_cuda_attention_forward(cublasHandle_t h, float *out, float *att, const float *qkv, size_t B, size_t heads,
                              size_t C, size_t T);
int fv_cuda_attention_backward(cublasHandle_t h, float *dqkv, float *datt, const float *dout, const float *qkv,
                               const float *att, size_t B, size_t heads, size_t C, size_t T);

int fv_cuda_timestep_embedding(cublasHandle_t h, float *out, const float *t, size_t B, size_t dim);

/* Dropout (fv_dropout_*): the same Philox words as the CPU, so the same mask; in place allowed. */
int fv_cuda_dropout_forward(cublasHandle_t h, float *out, const float *in, size_t n, float p, uint64_t seed,
                            uint64_t stream, uint64_t block0);
int fv_cuda_dropout_backward(cublasHandle_t h, float *dinp, const float *dout, size_t n, float p, uint64_t seed,
                             uint64_t stream, uint64_t block0);

/* ---- the network ------------------------------------------------------------------------------- */

/* Everything the network's forward keeps and its backward needs, for up to B images, in one device
 * allocation: unet.c's own workspace layout (fv_unet_acts_place) followed by what the device adds. */
typedef struct {
    fv_unet_acts a;   /* device pointers; a.train, a.dropout_seed, a.dropout_stream as on the CPU */
    void *mem;        /* the allocation */
    size_t bytes;     /* its size: the activations' device memory */
    float *col;       /* im2col of ncol images */
    size_t ncol;
    float *datt;      /* attention backward, for the largest attention block */
    double *gn;       /* GroupNorm backward sums, for the widest normalization */
    float *ones;      /* B ones: bias gradients of the linear layers */
    float *v, *dout;  /* the output (B C H W) and dL/dv, for the loss */
    double *partial;  /* FV_CUDA_REDUCE_BLOCKS + 1 doubles: the loss's and the gradient norm's reductions */
} fv_cuda_unet_acts;

int fv_cuda_unet_acts_alloc(fv_cuda_unet_acts *w, const fv_unet *net, size_t B);
void fv_cuda_unet_acts_free(fv_cuda_unet_acts *w); /* safe on a zeroed or freed workspace */

/* The device memory fv_cuda_unet_acts_alloc takes for B images (computed on the host alone). */
size_t fv_cuda_unet_acts_bytes(const fv_unet *net, size_t B);

/* out (B x C x H x W) = v(x, t) with the device parameter vector `params` (net's layout; net supplies
 * the shapes, its host params are not read). x, t, out: device. B <= w->a.B. */
int fv_cuda_unet_forward(cublasHandle_t h, const fv_unet *net, const float *params, size_t B, const float *x,
                         const float *t, float *out, fv_cuda_unet_acts *w);

/* grads (device, OVERWRITTEN) = dL/dparams given dout = dL/dout (device), after a forward of B images. */
int fv_cuda_unet_backward(cublasHandle_t h, const fv_unet *net, const float *params, size_t B, const float *dout,
                          float *grads, fv_cuda_unet_acts *w);

#ifdef __cplusplus
}
#endif

#endif
