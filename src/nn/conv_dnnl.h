/* conv_dnnl.h: the U-Net's convolutions on oneDNN (the library PyTorch's CPU convolutions run on), the
 * fast twin of unet_layers.h's im2col + sgemm reference fv_conv2d_forward / fv_conv2d_backward, which
 * the tests check it against.
 *
 * A plan holds oneDNN's forward, backward-data and backward-weights primitives for one convolution
 * shape at one batch size, created once (oneDNN JIT-compiles its kernels then) and executed on the
 * caller's buffers, in flowvar's layouts (images NCHW, weights torch's cout x cin x k x k), converted
 * to and from oneDNN's blocked layouts in a caller-owned scratch: nothing is allocated while a plan
 * runs. oneDNN threads its primitives with OpenMP; with a fixed thread
 * count its results are deterministic run to run (each thread's share of a reduction and the order
 * the shares are summed in depend on the thread count alone). A plan is used by one thread at a time. */
#ifndef FV_CONV_DNNL_H
#define FV_CONV_DNNL_H

#include "nn/unet_layers.h"

#include <stddef.h>

typedef struct fv_dnnl_conv fv_dnnl_conv;

/* The plan of convolution s on B images. With dinp_add the backward's input gradient is added into
 * dinp (as fv_conv2d_backward does), else it overwrites dinp. FV_ENUMERIC naming oneDNN's status when
 * oneDNN refuses, FV_ENOMEM. */
int fv_dnnl_conv_create(fv_dnnl_conv **plan, const fv_conv2d_shape *s, size_t B, int dinp_add);
void fv_dnnl_conv_free(fv_dnnl_conv *plan); /* NULL is fine */

/* Floats of scratch the plan's layout conversions need (64-byte aligned), and the scratch to use for
 * them, bound once before the plan runs: plans that never run at the same time may share one. */
size_t fv_dnnl_conv_scratch_size(const fv_dnnl_conv *plan);
void fv_dnnl_conv_bind(fv_dnnl_conv *plan, float *scratch);

/* Floats of the plan's kept input (64-byte aligned): the forward's blocked copy of its input, which the
 * backward-weights primitive reads too, so that the backward need not convert the input again; 0 where
 * the two primitives read it in different layouts (nothing is kept then). */
size_t fv_dnnl_conv_kept_size(const fv_dnnl_conv *plan);

/* out (B x cout x oh x ow) = conv(in) + b, as fv_conv2d_forward. kept: NULL, or a buffer of
 * fv_dnnl_conv_kept_size floats (64-byte aligned) that receives the blocked input for the backward. */
void fv_dnnl_conv_forward(fv_dnnl_conv *plan, float *out, const float *in, const float *W, const float *b,
                          float *kept);

/* dW, db overwritten; the input gradient into dinp (added or written as the plan was created), none if
 * dinp is NULL. kept: NULL (the input is converted from in), or what the forward of this same in left. */
void fv_dnnl_conv_backward(fv_dnnl_conv *plan, float *dinp, float *dW, float *db, const float *dout, const float *in,
                           const float *W, const float *kept);

/* "oneDNN 2.6.3 (CPU ISA avx512_core, OpenMP threads 2)": what the benchmarks print. */
const char *fv_dnnl_describe(void);

#endif
