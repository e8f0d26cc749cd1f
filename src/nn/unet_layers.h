/* unet_layers.h: the layers of torchcfm's U-Net (guided-diffusion's UNetModel) on the CPU, each a pair
 * of free functions in the style of mlp.h (llm.c's): fv_<layer>_forward(out, in, weights, dims...) and
 * fv_<layer>_backward(dinp, dweights, dout, ...). float32, images in torch's NCHW layout (B x C x H x W,
 * row-major), caller-owned buffers; nothing allocates. The convolution's matrix products go through
 * cblas_sgemm (it is the reference that conv_dnnl.h's oneDNN convolutions are checked against), the
 * attention's through oneDNN's sgemm (on OpenMP's threads, as the rest).
 *
 * Gradient conventions, chosen so the network (unet.c) can sum the gradients of a tensor that feeds
 * several layers (a residual block's input feeds its skip path and its normalization; a skip tensor
 * feeds the next block and a later concatenation; the time embedding feeds every residual block):
 *   - parameter gradients are OVERWRITTEN with the sum over the batch (every parameter is used by one
 *     layer of the network, so its layer's backward completes it);
 *   - input gradients are ADDED into dinp (dinp += ...), except for the elementwise SiLU and dropout,
 *     which write dinp and may work in place (dinp == dout), like mlp.h's fv_act_backward.
 * The linear layers and the SiLU are mlp.h's fv_linear_* and fv_act_*(FV_ACT_SILU). The loops run on
 * OpenMP's threads in the main build, with results independent of the thread count. */
#ifndef FV_UNET_LAYERS_H
#define FV_UNET_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/* ---- 2-D convolution -------------------------------------------------------------------------- */

/* A square k x k kernel (torch.nn.Conv2d(cin, cout, k, stride, padding) with a bias) on h x w images. */
typedef struct {
    size_t cin, cout;
    size_t h, w;             /* input height and width */
    size_t k, stride, pad;
} fv_conv2d_shape;

size_t fv_conv2d_out_h(const fv_conv2d_shape *s);
size_t fv_conv2d_out_w(const fv_conv2d_shape *s);

/* Floats of the im2col scratch `col` the convolution needs (cin k k x out_h out_w, one image at a
 * time); 0 for a 1x1 stride-1 unpadded convolution, which multiplies the image directly. */
size_t fv_conv2d_col_size(const fv_conv2d_shape *s);

/* out (B x cout x out_h x out_w) = conv(in (B x cin x h x w)) + b. W: cout x cin x k x k (torch's
 * layout), b: cout. col: fv_conv2d_col_size floats (NULL when that is 0). */
void fv_conv2d_forward(float *out, const float *in, const float *W, const float *b, float *col, size_t B,
                       const fv_conv2d_shape *s);

/* dW, db overwritten; dinp += the input gradient unless dinp is NULL. Recomputes im2col of `in`. */
void fv_conv2d_backward(float *dinp, float *dW, float *db, const float *dout, const float *in, const float *W,
                        float *col, size_t B, const fv_conv2d_shape *s);

/* ---- GroupNorm -------------------------------------------------------------------------------- */

#define FV_GROUPNORM_EPS 1e-5f /* torch.nn.GroupNorm's default, as torchcfm's GroupNorm32 uses */

/* out = (in - mean_g) / sqrt(var_g + eps) * gamma[c] + beta[c] over each of the G groups of C / G
 * consecutive channels of each image (biased variance, torch.nn.GroupNorm(G, C)). in, out: B x C x HW;
 * mean, rstd: B x G, kept for backward. C must be a multiple of G. */
void fv_groupnorm_forward(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                          const float *beta, size_t B, size_t C, size_t HW, size_t G);

/* dgamma, dbeta overwritten; dinp += the input gradient. */
void fv_groupnorm_backward(float *dinp, float *dgamma, float *dbeta, const float *dout, const float *in,
                           const float *mean, const float *rstd, const float *gamma, size_t B, size_t C, size_t HW,
                           size_t G);

/* GroupNorm followed by SiLU in one sweep over each group (the pair every residual block and the head
 * open with): out, mean, rstd as fv_groupnorm_forward, act = SiLU(out) as fv_act_forward computes it. */
void fv_groupnorm_silu_forward(float *out, float *act, float *mean, float *rstd, const float *in, const float *gamma,
                               const float *beta, size_t B, size_t C, size_t HW, size_t G);

/* Its backward: dact (the gradient at act) is overwritten with the gradient at out (through the SiLU,
 * as fv_act_backward), then fv_groupnorm_backward's results (dgamma, dbeta overwritten, dinp +=). */
void fv_silu_groupnorm_backward(float *dinp, float *dgamma, float *dbeta, float *dact, const float *norm,
                                const float *act, const float *in, const float *mean, const float *rstd,
                                const float *gamma, size_t B, size_t C, size_t HW, size_t G);

/* ---- nearest 2x upsampling, channel concatenation --------------------------------------------- */

/* out (B x C x 2h x 2w)[c, y, x] = in (B x C x h x w)[c, y/2, x/2] (F.interpolate(scale_factor=2,
 * mode="nearest")). Backward: dinp += the sum of each 2 x 2 block of dout. */
void fv_upsample2x_forward(float *out, const float *in, size_t B, size_t C, size_t h, size_t w);
void fv_upsample2x_backward(float *dinp, const float *dout, size_t B, size_t C, size_t h, size_t w);

/* out (B x (Ca + Cb) x HW) = torch.cat([a, b], dim=1). Backward: da += and db += their channels of dout. */
void fv_concat_forward(float *out, const float *a, const float *b, size_t B, size_t Ca, size_t Cb, size_t HW);
void fv_concat_backward(float *da, float *db, const float *dout, size_t B, size_t Ca, size_t Cb, size_t HW);

/* ---- sums ------------------------------------------------------------------------------------- */

/* y += x over n elements: a residual connection, or one more consumer's share of a gradient. */
void fv_accumulate(float *y, const float *x, size_t n);

/* y = 0 over n elements (on every thread: the gradient buffers a backward pass starts from). */
void fv_zero(float *y, size_t n);

/* ---- per-image channel bias ------------------------------------------------------------------- */

/* x (B x C x HW) += e[b, c] over each channel of each image: a residual block adds its projection of
 * the time embedding so. Backward: de (B x C) = the sum over HW of each channel of dx (overwritten). */
void fv_channel_bias_forward(float *x, const float *e, size_t B, size_t C, size_t HW);
void fv_channel_bias_backward(float *de, const float *dx, size_t B, size_t C, size_t HW);

/* ---- attention -------------------------------------------------------------------------------- */

/* torchcfm's QKVAttentionLegacy (the default of UNetModelWrapper: use_new_attention_order False):
 * qkv (B x 3C x T) holds, for head h of `heads`, q, k, v as consecutive blocks of ch = C / heads rows
 * starting at row 3 ch h (heads split before q/k/v); for each image and head
 *   att = softmax_s(q^T k / sqrt(ch)) (T x T, rows t, softmax over s),   a[c, t] = sum_s att[t, s] v[c, s]
 * and out (B x C x T) holds head h's a in rows [h ch, (h + 1) ch). torchcfm scales q and k each by
 * ch^(-1/4) before the product (for fp16 range); here one factor 1/sqrt(ch) multiplies the product:
 * equal up to rounding. att: B x heads x T x T, kept for backward. */
void fv_attention_forward(float *out, float *att, const float *qkv, size_t B, size_t heads, size_t C, size_t T);

/* dqkv += the gradient of qkv. datt: T x T scratch. */
void fv_attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv, const float *att,
                           size_t B, size_t heads, size_t C, size_t T);

/* ---- timestep embedding, dropout -------------------------------------------------------------- */

/* out (B x dim) = torchcfm's timestep_embedding(t, dim) for even dim: [cos(t f_k), sin(t f_k)],
 * f_k = exp(-ln(10000) k / (dim / 2)) (nn_math.h's fv_temb). No backward: t is data. */
void fv_timestep_embedding(float *out, const float *t, size_t B, size_t dim);

/* Training-mode dropout of rate p (0 <= p < 1): out[i] = in[i] / (1 - p) if kept, 0 if dropped, with
 * element i dropped when its uniform u_i < p; u_i is 24 bits of word i % 4 of Philox block
 * block0 + i / 4 of (seed, stream), so backward regenerates the mask instead of storing it. p = 0 is
 * the identity (eval mode is: do not call it). */
void fv_dropout_forward(float *out, const float *in, size_t n, float p, uint64_t seed, uint64_t stream,
                        uint64_t block0);
/* dinp = dout / (1 - p) where kept, 0 where dropped; in place allowed. */
void fv_dropout_backward(float *dinp, const float *dout, size_t n, float p, uint64_t seed, uint64_t stream,
                         uint64_t block0);

#endif
