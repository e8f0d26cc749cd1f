/* unet_layers.c: the U-Net's layers on the CPU (see unet_layers.h): convolution by im2col + sgemm,
 * GroupNorm (alone and fused with the SiLU after it), nearest upsampling, concatenation, attention on
 * oneDNN's sgemm, the time embedding, dropout. */
#include "nn/unet_layers.h"

#include "core/philox.h"
#include "core/rng.h"
#include "nn/nn_math.h"
#include "nn/par.h"

#include <cblas.h>
#include <math.h>
#include <oneapi/dnnl/dnnl.h>
#include <string.h>

/* The loops over images, groups, channels or chunks run on OpenMP's threads where the build has
 * OpenMP (the main build; the fuzz build compiles them serial). Every iteration writes its own
 * outputs and sums in a fixed order, so results do not depend on the thread count. */
#ifdef _OPENMP
#define PARALLEL_FOR _Pragma("omp parallel for schedule(static)")
#else
#define PARALLEL_FOR
#endif

/* Elementwise loops are split into chunks of this many floats (a multiple of 16: whole vectors). */
#define CHUNK 4096

/* ---- 2-D convolution -------------------------------------------------------------------------- */

size_t fv_conv2d_out_h(const fv_conv2d_shape *s) { return (s->h + 2 * s->pad - s->k) / s->stride + 1; }
size_t fv_conv2d_out_w(const fv_conv2d_shape *s) { return (s->w + 2 * s->pad - s->k) / s->stride + 1; }

static int is_pointwise(const fv_conv2d_shape *s) { return s->k == 1 && s->stride == 1 && s->pad == 0; }

size_t fv_conv2d_col_size(const fv_conv2d_shape *s)
{
    return is_pointwise(s) ? 0 : s->cin * s->k * s->k * fv_conv2d_out_h(s) * fv_conv2d_out_w(s);
}

/* The outputs [*a, *b) of n whose input o * stride + kk - pad lies in [0, size); the others read the zero
 * padding. Columns: kk = kx, size = w; rows: kk = ky, size = h. */
static void valid_range(const fv_conv2d_shape *s, size_t size, size_t n, size_t kk, size_t *a, size_t *b)
{
    ptrdiff_t st = (ptrdiff_t)s->stride, lo = (ptrdiff_t)s->pad - (ptrdiff_t)kk;
    ptrdiff_t hi = (ptrdiff_t)size + lo; /* o * stride < size + pad - kk */
    ptrdiff_t first = lo > 0 ? (lo + st - 1) / st : 0, end = hi > 0 ? (hi + st - 1) / st : 0;
    *b = (size_t)end < n ? (size_t)end : n;
    *a = (size_t)first < *b ? (size_t)first : *b;
}

/* col (cin k k x oh ow): row (c, ky, kx) holds input channel c shifted by (ky - pad, kx - pad) and
 * sampled every `stride` pixels, so that the convolution is the product W (cout x cin k k) col. With
 * add = 0 the image is unfolded into col; with add = 1 col is folded back, img += col (col2im), and
 * col's padding entries are zeroed on the way. */
static void im2col(float *col, float *img, const fv_conv2d_shape *s, int add)
{
    size_t k = s->k, oh = fv_conv2d_out_h(s), ow = fv_conv2d_out_w(s), st = s->stride;
    /* A stride-1 convolution that keeps the width (the U-Net's 3x3 ones) maps each row (c, ky, kx) to a
     * flat shifted copy of the channel's valid rows: one long copy, then the entries that wrapped around
     * a row's end are set to the padding's zero. */
    int flat = st == 1 && ow == s->w;
    for (size_t c = 0; c < s->cin; c++)
        for (size_t ky = 0; ky < k; ky++)
            for (size_t kx = 0; kx < k; kx++) {
                float *rows = col + ((c * k + ky) * k + kx) * oh * ow;
                size_t x0, x1, y0, y1;
                valid_range(s, s->w, ow, kx, &x0, &x1);
                valid_range(s, s->h, oh, ky, &y0, &y1);
                if (!add) {
                    memset(rows, 0, y0 * ow * sizeof(float));
                    memset(rows + y1 * ow, 0, (oh - y1) * ow * sizeof(float));
                }
                if (flat) {
                    float *d = rows + y0 * ow, *src = img + (c * s->h + y0 + ky - s->pad) * s->w;
                    ptrdiff_t sh = (ptrdiff_t)kx - (ptrdiff_t)s->pad, n = (ptrdiff_t)((y1 - y0) * ow);
                    ptrdiff_t lo = sh < 0 ? -sh : 0, hi = sh > 0 ? n - sh : n; /* d[i] is src[i + sh] */
                    if (!add && hi > lo)
                        memcpy(d + lo, src + lo + sh, (size_t)(hi - lo) * sizeof(float));
                    for (size_t oy = 0; oy < y1 - y0; oy++) {
                        for (size_t ox = 0; ox < x0; ox++)
                            d[oy * ow + ox] = 0.0f;
                        for (size_t ox = x1; ox < ow; ox++)
                            d[oy * ow + ox] = 0.0f;
                    }
                    if (add)
                        for (ptrdiff_t i = lo; i < hi; i++)
                            src[i + sh] += d[i];
                    continue;
                }
                for (size_t oy = y0; oy < y1; oy++) {
                    float *d = rows + oy * ow;
                    /* Output column x0 + i reads src[i * st]. */
                    float *src = img + (c * s->h + oy * st + ky - s->pad) * s->w + x0 * st + kx - s->pad;
                    size_t m = x1 - x0;
                    if (add) {
                        for (size_t i = 0; i < m; i++)
                            src[i * st] += d[x0 + i];
                    } else {
                        memset(d, 0, x0 * sizeof(float));
                        for (size_t i = 0; i < m; i++)
                            d[x0 + i] = src[i * st];
                        memset(d + x1, 0, (ow - x1) * sizeof(float));
                    }
                }
            }
}

void fv_conv2d_forward(float *out, const float *in, const float *W, const float *b, float *col, size_t B,
                       const fv_conv2d_shape *s)
{
    size_t K = s->cin * s->k * s->k, P = fv_conv2d_out_h(s) * fv_conv2d_out_w(s), n_in = s->cin * s->h * s->w;
    for (size_t i = 0; i < B; i++) {
        float *o = out + i * s->cout * P;
        const float *cols = in + i * n_in;
        if (!is_pointwise(s)) {
            im2col(col, (float *)cols, s, 0); /* add = 0 only reads the image */
            cols = col;
        }
        /* Rows start at the bias; sgemm adds W col onto them (beta = 1). */
        for (size_t c = 0; c < s->cout; c++)
            for (size_t p = 0; p < P; p++)
                o[c * P + p] = b[c];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s->cout, (int)P, (int)K, 1.0f, W, (int)K, cols,
                    (int)P, 1.0f, o, (int)P);
    }
}

void fv_conv2d_backward(float *dinp, float *dW, float *db, const float *dout, const float *in, const float *W,
                        float *col, size_t B, const fv_conv2d_shape *s)
{
    size_t K = s->cin * s->k * s->k, P = fv_conv2d_out_h(s) * fv_conv2d_out_w(s), n_in = s->cin * s->h * s->w;
    int pointwise = is_pointwise(s);
    for (size_t c = 0; c < s->cout; c++) {
        double acc = 0.0;
        for (size_t i = 0; i < B; i++) {
            const float *r = dout + (i * s->cout + c) * P;
            for (size_t p = 0; p < P; p++)
                acc += r[p];
        }
        db[c] = (float)acc;
    }
    for (size_t i = 0; i < B; i++) {
        const float *d = dout + i * s->cout * P, *cols = in + i * n_in;
        if (!pointwise) {
            im2col(col, (float *)cols, s, 0);
            cols = col;
        }
        /* dW (cout x K) = sum over images of dout_i (cout x P) col_i^T. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)s->cout, (int)K, (int)P, 1.0f, d, (int)P, cols,
                    (int)P, i ? 1.0f : 0.0f, dW, (int)K);
        if (!dinp)
            continue;
        /* d col (K x P) = W^T dout_i; a pointwise convolution's col is the image itself, so its gradient
         * is added in place, else it is folded back by col2im. */
        float *dimg = dinp + i * n_in;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)K, (int)P, (int)s->cout, 1.0f, W, (int)K, d,
                    (int)P, pointwise ? 1.0f : 0.0f, pointwise ? dimg : col, (int)P);
        if (!pointwise)
            im2col(col, dimg, s, 1);
    }
}

/* ---- GroupNorm -------------------------------------------------------------------------------- */

/* The group sums in double, each over eight interleaved partial sums (summed in a fixed order at the
 * end): one running double sum is a chain of dependent additions, 4 cycles an element, and was a tenth
 * of the tiny U-Net's pass. Inlined into the SIMD clones of the group functions, which vectorize them. */
enum { NACC = 8 };

static inline __attribute__((always_inline)) double fold(const double acc[NACC])
{
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static inline __attribute__((always_inline)) double sum_floats(const float *x, size_t n)
{
    double acc[NACC] = {0};
    size_t j = 0;
    for (; j + NACC <= n; j += NACC)
        for (int k = 0; k < NACC; k++)
            acc[k] += x[j + k];
    for (; j < n; j++)
        acc[j % NACC] += x[j];
    return fold(acc);
}

static inline __attribute__((always_inline)) double sum_sq_dev(const float *x, size_t n, double mu)
{
    double acc[NACC] = {0};
    size_t j = 0;
    for (; j + NACC <= n; j += NACC)
        for (int k = 0; k < NACC; k++)
            acc[k] += (x[j + k] - mu) * (x[j + k] - mu);
    for (; j < n; j++)
        acc[j % NACC] += (x[j] - mu) * (x[j] - mu);
    return fold(acc);
}

/* sum dy and sum dy (x - mu) r over one channel of the backward. */
static inline __attribute__((always_inline)) void sums_dy(const float *dy, const float *x, size_t n, float mu, float r, double *sdy, double *sdyx)
{
    double a[NACC] = {0}, b[NACC] = {0};
    size_t j = 0;
    for (; j + NACC <= n; j += NACC)
        for (int k = 0; k < NACC; k++) {
            a[k] += dy[j + k];
            b[k] += (double)dy[j + k] * ((x[j + k] - mu) * r);
        }
    for (; j < n; j++) {
        a[j % NACC] += dy[j];
        b[j % NACC] += (double)dy[j] * ((x[j] - mu) * r);
    }
    *sdy = fold(a);
    *sdyx = fold(b);
}

/* One group (cpg channels of HW pixels, from channel ch0) of one image: its statistics into *mean,
 * *rstd, the normalized values into y and, unless act is NULL, their SiLU into act. */
FV_SIMD_CLONES static void gn_group_forward(float *y, float *act, float *mean, float *rstd, const float *x, const float *gamma,
                             const float *beta, size_t ch0, size_t cpg, size_t HW)
{
    size_t n = cpg * HW;
    /* Two passes in double: the variance of a group with a large mean must not cancel. */
    double mu = sum_floats(x, n) / (double)n, ss = sum_sq_dev(x, n, mu);
    float r = (float)(1.0 / sqrt(ss / (double)n + (double)FV_GROUPNORM_EPS));
    *mean = (float)mu;
    *rstd = r;
    for (size_t c = 0; c < cpg; c++) {
        size_t ch = ch0 + c;
        float scale = r * gamma[ch], shift = beta[ch] - (float)mu * scale;
        const float *xc = x + c * HW;
        float *yc = y + c * HW;
        for (size_t p = 0; p < HW; p++)
            yc[p] = xc[p] * scale + shift;
        if (act)
            for (size_t p = 0; p < HW; p++)
                act[c * HW + p] = fv_act_fwd(FV_NNM_SILU, yc[p]);
    }
}

static void gn_forward(float *out, float *act, float *mean, float *rstd, const float *in, const float *gamma,
                       const float *beta, size_t B, size_t C, size_t HW, size_t G)
{
    size_t cpg = C / G;
    PARALLEL_FOR
    for (size_t ig = 0; ig < B * G; ig++) {
        size_t off = (ig / G * C + ig % G * cpg) * HW;
        gn_group_forward(out + off, act ? act + off : NULL, mean + ig, rstd + ig, in + off, gamma, beta,
                         ig % G * cpg, cpg, HW);
    }
}

void fv_groupnorm_forward(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                          const float *beta, size_t B, size_t C, size_t HW, size_t G)
{
    gn_forward(out, NULL, mean, rstd, in, gamma, beta, B, C, HW, G);
}

void fv_groupnorm_silu_forward(float *out, float *act, float *mean, float *rstd, const float *in, const float *gamma,
                               const float *beta, size_t B, size_t C, size_t HW, size_t G)
{
    gn_forward(out, act, mean, rstd, in, gamma, beta, B, C, HW, G);
}

/* Group g of every image: with norm and act given, dout is first taken back through the SiLU (in
 * place: dout[p] *= SiLU'(norm[p])). Images in order, so dgamma and dbeta sum as the serial loop does. */
FV_SIMD_CLONES static void gn_group_backward(float *dinp, float *dgamma, float *dbeta, float *dout, const float *norm,
                              const float *act, const float *in, const float *mean, const float *rstd,
                              const float *gamma, size_t B, size_t C, size_t HW, size_t G, size_t g)
{
    size_t cpg = C / G, n = cpg * HW;
    for (size_t c = 0; c < cpg; c++)
        dgamma[g * cpg + c] = dbeta[g * cpg + c] = 0.0f;
    for (size_t i = 0; i < B; i++) {
        size_t off = (i * C + g * cpg) * HW;
        float mu = mean[i * G + g], r = rstd[i * G + g];
        if (norm)
            for (size_t j = 0; j < n; j++)
                dout[off + j] *= fv_act_deriv(FV_NNM_SILU, norm[off + j], act[off + j]);
        /* With xhat = (x - mu) r and dxhat = dy gamma: dx = r (dxhat - mean(dxhat) - xhat mean(dxhat xhat)). */
        double s1 = 0.0, s2 = 0.0;
        for (size_t c = 0; c < cpg; c++) {
            size_t ch = g * cpg + c;
            const float *x = in + off + c * HW, *dy = dout + off + c * HW;
            double sdy, sdyx;
            sums_dy(dy, x, HW, mu, r, &sdy, &sdyx);
            dgamma[ch] += (float)sdyx;
            dbeta[ch] += (float)sdy;
            s1 += gamma[ch] * sdy;
            s2 += gamma[ch] * sdyx;
        }
        float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
        for (size_t c = 0; c < cpg; c++) {
            size_t ch = g * cpg + c;
            const float *x = in + off + c * HW, *dy = dout + off + c * HW;
            float *dx = dinp + off + c * HW;
            for (size_t p = 0; p < HW; p++) {
                float xhat = (x[p] - mu) * r;
                dx[p] += r * (dy[p] * gamma[ch] - m1 - xhat * m2);
            }
        }
    }
}

void fv_groupnorm_backward(float *dinp, float *dgamma, float *dbeta, const float *dout, const float *in,
                           const float *mean, const float *rstd, const float *gamma, size_t B, size_t C, size_t HW,
                           size_t G)
{
    PARALLEL_FOR
    for (size_t g = 0; g < G; g++) /* without norm, dout is only read */
        gn_group_backward(dinp, dgamma, dbeta, (float *)dout, NULL, NULL, in, mean, rstd, gamma, B, C, HW, G, g);
}

void fv_silu_groupnorm_backward(float *dinp, float *dgamma, float *dbeta, float *dact, const float *norm,
                                const float *act, const float *in, const float *mean, const float *rstd,
                                const float *gamma, size_t B, size_t C, size_t HW, size_t G)
{
    PARALLEL_FOR
    for (size_t g = 0; g < G; g++)
        gn_group_backward(dinp, dgamma, dbeta, dact, norm, act, in, mean, rstd, gamma, B, C, HW, G, g);
}

/* ---- nearest 2x upsampling, channel concatenation --------------------------------------------- */

void fv_upsample2x_forward(float *out, const float *in, size_t B, size_t C, size_t h, size_t w)
{
    PARALLEL_FOR
    for (size_t plane = 0; plane < B * C; plane++) {
        const float *src = in + plane * h * w;
        float *dst = out + plane * 4 * h * w;
        for (size_t y = 0; y < 2 * h; y++) {
            const float *row = src + (y / 2) * w;
            float *d = dst + y * 2 * w;
            for (size_t x = 0; x < 2 * w; x++)
                d[x] = row[x / 2];
        }
    }
}

void fv_upsample2x_backward(float *dinp, const float *dout, size_t B, size_t C, size_t h, size_t w)
{
    PARALLEL_FOR
    for (size_t plane = 0; plane < B * C; plane++) {
        const float *d = dout + plane * 4 * h * w;
        float *dst = dinp + plane * h * w;
        for (size_t y = 0; y < h; y++) {
            const float *r0 = d + 2 * y * 2 * w, *r1 = r0 + 2 * w;
            for (size_t x = 0; x < w; x++)
                dst[y * w + x] += (r0[2 * x] + r0[2 * x + 1]) + (r1[2 * x] + r1[2 * x + 1]);
        }
    }
}

/* Channel rows: row r of the concatenation (image r / (Ca + Cb), channel r % (Ca + Cb)) is a's or b's. */
static size_t concat_row(size_t r, size_t Ca, size_t Cb, size_t HW, size_t *from_b)
{
    size_t i = r / (Ca + Cb), c = r % (Ca + Cb);
    *from_b = c >= Ca;
    return (c < Ca ? i * Ca + c : i * Cb + c - Ca) * HW;
}

void fv_concat_forward(float *out, const float *a, const float *b, size_t B, size_t Ca, size_t Cb, size_t HW)
{
    PARALLEL_FOR
    for (size_t r = 0; r < B * (Ca + Cb); r++) {
        size_t from_b, off = concat_row(r, Ca, Cb, HW, &from_b);
        memcpy(out + r * HW, (from_b ? b : a) + off, HW * sizeof(float));
    }
}

void fv_concat_backward(float *da, float *db, const float *dout, size_t B, size_t Ca, size_t Cb, size_t HW)
{
    PARALLEL_FOR
    for (size_t r = 0; r < B * (Ca + Cb); r++) {
        size_t from_b, off = concat_row(r, Ca, Cb, HW, &from_b);
        float *d = (from_b ? db : da) + off;
        const float *src = dout + r * HW;
        for (size_t p = 0; p < HW; p++)
            d[p] += src[p];
    }
}

/* ---- sums ------------------------------------------------------------------------------------- */

void fv_accumulate(float *y, const float *x, size_t n)
{
    PARALLEL_FOR
    for (size_t c = 0; c < (n + CHUNK - 1) / CHUNK; c++) {
        size_t end = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;
        for (size_t i = c * CHUNK; i < end; i++)
            y[i] += x[i];
    }
}

void fv_zero(float *y, size_t n)
{
    PARALLEL_FOR
    for (size_t c = 0; c < (n + CHUNK - 1) / CHUNK; c++) {
        size_t end = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;
        memset(y + c * CHUNK, 0, (end - c * CHUNK) * sizeof(float));
    }
}

/* ---- per-image channel bias ------------------------------------------------------------------- */

void fv_channel_bias_forward(float *x, const float *e, size_t B, size_t C, size_t HW)
{
    PARALLEL_FOR
    for (size_t bc = 0; bc < B * C; bc++) {
        float v = e[bc], *row = x + bc * HW;
        for (size_t p = 0; p < HW; p++)
            row[p] += v;
    }
}

void fv_channel_bias_backward(float *de, const float *dx, size_t B, size_t C, size_t HW)
{
    PARALLEL_FOR
    for (size_t bc = 0; bc < B * C; bc++) {
        const float *row = dx + bc * HW;
        double s = 0.0;
        for (size_t p = 0; p < HW; p++)
            s += row[p];
        de[bc] = (float)s;
    }
}

/* ---- attention -------------------------------------------------------------------------------- */

/* Row-wise softmax of a T x T matrix in place. */
static void softmax_rows(float *a, size_t T)
{
    for (size_t t = 0; t < T; t++) {
        float *row = a + t * T, mx = row[0], sum = 0.0f;
        for (size_t s = 1; s < T; s++)
            mx = row[s] > mx ? row[s] : mx;
        for (size_t s = 0; s < T; s++) {
            row[s] = fv_expf_fast(row[s] - mx);
            sum += row[s];
        }
        float inv = 1.0f / sum;
        for (size_t s = 0; s < T; s++)
            row[s] *= inv;
    }
}

/* C (M x N, row-major) = alpha op(A) op(B) + beta C on oneDNN's sgemm, which threads itself on
 * OpenMP's threads, or runs on the calling thread inside a parallel loop (OpenBLAS's own threads would
 * spin against OpenMP's: unet.c holds OpenBLAS at one thread during a pass). */
static void sgemm(char ta, char tb, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                  const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
    dnnl_sgemm(ta, tb, (dnnl_dim_t)M, (dnnl_dim_t)N, (dnnl_dim_t)K, alpha, A, (dnnl_dim_t)lda, B, (dnnl_dim_t)ldb,
               beta, C, (dnnl_dim_t)ldc);
}

void fv_attention_forward(float *out, float *att, const float *qkv, size_t B, size_t heads, size_t C, size_t T)
{
    size_t ch = C / heads;
    float alpha = (float)(1.0 / sqrt((double)ch));
    PARALLEL_FOR
    for (size_t ih = 0; ih < B * heads; ih++) {
        size_t i = ih / heads, h = ih % heads;
        const float *q = qkv + (i * 3 * C + 3 * ch * h) * T, *k = q + ch * T, *v = k + ch * T;
        float *P = att + ih * T * T;
        /* P[t, s] = alpha sum_c q[c, t] k[c, s]. */
        sgemm('T', 'N', T, T, ch, alpha, q, T, k, T, 0.0f, P, T);
        softmax_rows(P, T);
        /* a[c, t] = sum_s v[c, s] P[t, s]. */
        sgemm('N', 'T', ch, T, T, 1.0f, v, T, P, T, 0.0f, out + (i * C + h * ch) * T, T);
    }
}

void fv_attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv, const float *att,
                           size_t B, size_t heads, size_t C, size_t T)
{
    size_t ch = C / heads;
    float alpha = (float)(1.0 / sqrt((double)ch));
    for (size_t i = 0; i < B; i++)
        for (size_t h = 0; h < heads; h++) {
            size_t off = (i * 3 * C + 3 * ch * h) * T;
            const float *q = qkv + off, *k = q + ch * T, *v = k + ch * T;
            float *dq = dqkv + off, *dk = dq + ch * T, *dv = dk + ch * T;
            const float *da = dout + (i * C + h * ch) * T, *P = att + (i * heads + h) * T * T;
            /* dv[c, s] += sum_t da[c, t] P[t, s]; dP[t, s] = sum_c da[c, t] v[c, s]. */
            sgemm('N', 'N', ch, T, T, 1.0f, da, T, P, T, 1.0f, dv, T);
            sgemm('T', 'N', T, T, ch, 1.0f, da, T, v, T, 0.0f, datt, T);
            /* Through the softmax: dS[t, s] = P[t, s] (dP[t, s] - sum_s' P[t, s'] dP[t, s']). */
            PARALLEL_FOR
            for (size_t t = 0; t < T; t++) {
                const float *p = P + t * T;
                float *d = datt + t * T, dot = 0.0f;
                for (size_t s = 0; s < T; s++)
                    dot += p[s] * d[s];
                for (size_t s = 0; s < T; s++)
                    d[s] = p[s] * (d[s] - dot);
            }
            /* dq[c, t] += alpha sum_s k[c, s] dS[t, s]; dk[c, s] += alpha sum_t q[c, t] dS[t, s]. */
            sgemm('N', 'T', ch, T, T, alpha, k, T, datt, T, 1.0f, dq, T);
            sgemm('N', 'N', ch, T, T, alpha, q, T, datt, T, 1.0f, dk, T);
        }
}

/* ---- timestep embedding, dropout -------------------------------------------------------------- */

void fv_timestep_embedding(float *out, const float *t, size_t B, size_t dim)
{
    for (size_t i = 0; i < B; i++)
        fv_temb(t[i], (unsigned)(dim / 2), out + i * dim);
}

/* One span of dropout: the 4 FV_PHILOX_LANES elements from out, in whose words fv_philox_lanes made. */
FV_SIMD_CLONES static void dropout_span(float *out, const float *in, uint32_t w[4][FV_PHILOX_LANES], float p,
                                        float scale)
{
    uint32_t word[4 * FV_PHILOX_LANES]; /* the words in element order, so that the map is one plain loop */
    for (size_t l = 0; l < FV_PHILOX_LANES; l++)
        for (size_t j = 0; j < 4; j++)
            word[4 * l + j] = w[j][l];
    for (size_t e = 0; e < 4 * FV_PHILOX_LANES; e++)
        out[e] = fv_dropout_elem(in[e], word[e], p, scale);
}

/* out = in * mask / (1 - p): the forward and the backward are the same map. */
static void dropout_apply(float *out, const float *in, size_t n, float p, uint64_t seed, uint64_t stream,
                          uint64_t block0)
{
    float scale = 1.0f / (1.0f - p);
    enum { SPAN = 4 * FV_PHILOX_LANES }; /* elements per fv_philox_lanes call; CHUNK is a multiple */
    PARALLEL_FOR
    for (size_t c = 0; c < (n + CHUNK - 1) / CHUNK; c++) {
        size_t end = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n, i = c * CHUNK;
        uint32_t w[4][FV_PHILOX_LANES];
        for (; i + SPAN <= end; i += SPAN) {
            fv_philox_lanes(seed, stream, block0 + i / 4, w);
            dropout_span(out + i, in + i, w, p, scale);
        }
        for (; i < end; i += 4) { /* the last partial span: block by block */
            fv_philox_ctr r = fv_philox_block(seed, stream, block0 + i / 4);
            for (size_t j = 0; j < 4 && i + j < n; j++)
                out[i + j] = fv_dropout_elem(in[i + j], r.v[j], p, scale);
        }
    }
}

void fv_dropout_forward(float *out, const float *in, size_t n, float p, uint64_t seed, uint64_t stream,
                        uint64_t block0)
{
    dropout_apply(out, in, n, p, seed, stream, block0);
}

void fv_dropout_backward(float *dinp, const float *dout, size_t n, float p, uint64_t seed, uint64_t stream,
                         uint64_t block0)
{
    dropout_apply(dinp, dout, n, p, seed, stream, block0);
}
