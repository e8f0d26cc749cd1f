/* unet_cuda.cu: torchcfm's U-Net on a CUDA device (see unet_cuda.h): the layers of
 * src/nn/unet_layers.c as kernels and cuBLAS products, then the network's forward and backward unit by
 * unit in the order of src/nn/unet.c, over unet.c's own workspace layout placed in device memory. */
#include "cuda/mlp_cuda.h"

extern "C" {
#include "core/philox.h"
}
#include "cuda/unet_cuda.h"

/* Stop at the first failing call: the layers are long chains of launches and products. */
#define TRY(call)                                                                                                      \
    do {                                                                                                               \
        int st_ = (call);                                                                                              \
        if (st_)                                                                                                       \
            return st_;                                                                                                \
    } while (0)

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }
static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* One thread per element of an n-element map. */
#define FOR_EACH_ELEMENT(i, n)                                                                                         \
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;                                                          \
    if (i >= (n))                                                                                                      \
        return

/* ---- 2-D convolution ---------------------------------------------------------------------------- */

static int is_pointwise(const fv_conv2d_shape *s) { return s->k == 1 && s->stride == 1 && s->pad == 0; }

/* col (nb images x cin k k x oh ow) = the unfolding of `in` (nb x cin x h x w) that im2col of
 * unet_layers.c makes one image at a time: row (c, ky, kx) holds channel c shifted by (ky - pad,
 * kx - pad), sampled every `stride` pixels, zero outside the image. */
__global__ void k_im2col(float *col, const float *in, size_t nb, fv_conv2d_shape s, size_t oh, size_t ow)
{
    size_t K = s.cin * s.k * s.k, P = oh * ow;
    FOR_EACH_ELEMENT(e, nb * K * P);
    size_t i = e / (K * P), r = (e / P) % K, p = e % P;
    size_t c = r / (s.k * s.k), ky = (r / s.k) % s.k, kx = r % s.k;
    ptrdiff_t y = (ptrdiff_t)((p / ow) * s.stride + ky) - (ptrdiff_t)s.pad;
    ptrdiff_t x = (ptrdiff_t)((p % ow) * s.stride + kx) - (ptrdiff_t)s.pad;
    int inside = y >= 0 && y < (ptrdiff_t)s.h && x >= 0 && x < (ptrdiff_t)s.w;
    col[e] = inside ? in[((i * s.cin + c) * s.h + (size_t)y) * s.w + (size_t)x] : 0.0f;
}

/* dinp (nb x cin x h x w) += the fold of col (col2im): each input pixel gathers the entries of col that
 * read it, so no two threads write one place (no atomics, a fixed order). */
__global__ void k_col2im(float *dinp, const float *col, size_t nb, fv_conv2d_shape s, size_t oh, size_t ow)
{
    size_t K = s.cin * s.k * s.k, P = oh * ow;
    FOR_EACH_ELEMENT(e, nb * s.cin * s.h * s.w);
    size_t x = e % s.w, y = (e / s.w) % s.h, c = (e / (s.w * s.h)) % s.cin, i = e / (s.cin * s.h * s.w);
    float acc = 0.0f;
    for (size_t ky = 0; ky < s.k; ky++) {
        ptrdiff_t ty = (ptrdiff_t)(y + s.pad) - (ptrdiff_t)ky; /* = oy stride */
        if (ty < 0 || ty % (ptrdiff_t)s.stride || (size_t)ty / s.stride >= oh)
            continue;
        for (size_t kx = 0; kx < s.k; kx++) {
            ptrdiff_t tx = (ptrdiff_t)(x + s.pad) - (ptrdiff_t)kx;
            if (tx < 0 || tx % (ptrdiff_t)s.stride || (size_t)tx / s.stride >= ow)
                continue;
            size_t row = (c * s.k + ky) * s.k + kx, p = ((size_t)ty / s.stride) * ow + (size_t)tx / s.stride;
            acc += col[(i * K + row) * P + p];
        }
    }
    dinp[e] += acc;
}

/* out (B x C x P) = b[c] on every row: the products then add onto it (beta = 1). */
__global__ void k_fill_bias(float *out, const float *b, size_t n, size_t C, size_t P)
{
    FOR_EACH_ELEMENT(i, n);
    out[i] = b[(i / P) % C];
}

/* out[c] = the sum over images and pixels of x (B x C x P) in channel c: one block per channel. */
__global__ void k_channel_sum(float *out, const float *x, size_t B, size_t C, size_t P)
{
    size_t c = blockIdx.x;
    double s = 0.0;
    for (size_t e = threadIdx.x; e < B * P; e += blockDim.x)
        s += x[((e / P) * C + c) * P + e % P];
    s = fv_block_sum(s);
    if (threadIdx.x == 0)
        out[c] = (float)s;
}

extern "C" int fv_cuda_conv2d_forward(cublasHandle_t h, float *out, const float *in, const float *W, const float *b,
                                      float *col, size_t ncol, size_t B, const fv_conv2d_shape *s)
{
    cudaStream_t st = fv_cublas_stream(h);
    size_t oh = fv_conv2d_out_h(s), ow = fv_conv2d_out_w(s), P = oh * ow, K = s->cin * s->k * s->k;
    size_t n_in = s->cin * s->h * s->w, n_out = s->cout * P;
    int pointwise = is_pointwise(s);
    size_t chunk = pointwise ? B : ncol;
    const float one = 1.0f;
    k_fill_bias<<<fv_cuda_blocks(B * n_out), FV_CUDA_THREADS, 0, st>>>(out, b, B * n_out, s->cout, P);
    TRY(fv_cuda_launched("convolution bias"));
    for (size_t i0 = 0; i0 < B; i0 += chunk) {
        size_t nb = min_size(chunk, B - i0);
        const float *cols = in + i0 * n_in; /* a pointwise convolution multiplies the images themselves */
        if (!pointwise) {
            k_im2col<<<fv_cuda_blocks(nb * K * P), FV_CUDA_THREADS, 0, st>>>(col, cols, nb, *s, oh, ow);
            TRY(fv_cuda_launched("im2col"));
            cols = col;
        }
        /* Per image, column-major: out^T (P x cout) += col^T (P x K) W^T (K x cout). */
        TRY(fv_cublas_check(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)P, (int)s->cout, (int)K, &one,
                                                      cols, (int)P, (long long)(K * P), W, (int)K, 0, &one,
                                                      out + i0 * n_out, (int)P, (long long)n_out, (int)nb),
                            "convolution forward"));
    }
    return FV_OK;
}

extern "C" int fv_cuda_conv2d_backward(cublasHandle_t h, float *dinp, float *dW, float *db, const float *dout,
                                       const float *in, const float *W, float *col, size_t ncol, size_t B,
                                       const fv_conv2d_shape *s)
{
    cudaStream_t st = fv_cublas_stream(h);
    size_t oh = fv_conv2d_out_h(s), ow = fv_conv2d_out_w(s), P = oh * ow, K = s->cin * s->k * s->k;
    size_t n_in = s->cin * s->h * s->w, n_out = s->cout * P;
    int pointwise = is_pointwise(s);
    size_t chunk = pointwise ? B : ncol;
    const float one = 1.0f, zero = 0.0f;
    k_channel_sum<<<(unsigned)s->cout, FV_CUDA_THREADS, 0, st>>>(db, dout, B, s->cout, P);
    TRY(fv_cuda_launched("convolution bias gradient"));
    for (size_t i0 = 0; i0 < B; i0 += chunk) {
        size_t nb = min_size(chunk, B - i0);
        const float *cols = in + i0 * n_in;
        if (!pointwise) {
            k_im2col<<<fv_cuda_blocks(nb * K * P), FV_CUDA_THREADS, 0, st>>>(col, cols, nb, *s, oh, ow);
            TRY(fv_cuda_launched("im2col"));
            cols = col;
        }
        /* dW^T (K x cout) = sum over images of col (K x P) dout^T (P x cout): one product per image, each
         * adding onto the last (a sum over images does not fit one product in the NCHW layout). */
        for (size_t i = 0; i < nb; i++)
            TRY(fv_cublas_check(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)K, (int)s->cout, (int)P, &one,
                                            cols + i * K * P, (int)P, dout + (i0 + i) * n_out, (int)P,
                                            i0 + i ? &one : &zero, dW, (int)K),
                                "convolution weight gradient"));
        if (!dinp)
            continue;
        /* d col^T (P x K) = dout^T (P x cout) W (cout x K): straight into dinp for a pointwise convolution,
         * else into col (its unfolding is no longer needed) and folded back. */
        float *dst = pointwise ? dinp + i0 * n_in : col;
        TRY(fv_cublas_check(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, (int)P, (int)K, (int)s->cout, &one,
                                                      dout + i0 * n_out, (int)P, (long long)n_out, W, (int)K, 0,
                                                      pointwise ? &one : &zero, dst, (int)P, (long long)(K * P),
                                                      (int)nb),
                            "convolution input gradient"));
        if (!pointwise) {
            k_col2im<<<fv_cuda_blocks(nb * n_in), FV_CUDA_THREADS, 0, st>>>(dinp + i0 * n_in, col, nb, *s, oh, ow);
            TRY(fv_cuda_launched("col2im"));
        }
    }
    return FV_OK;
}

/* ---- GroupNorm ---------------------------------------------------------------------------------- */

/* One block per (image, group): the two-pass mean and variance in double (as the CPU), then
 * out = x scale + shift per channel with the CPU's float expressions. */
__global__ void k_groupnorm(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                            const float *beta, size_t C, size_t HW, size_t G)
{
    size_t ig = blockIdx.x, i = ig / G, g = ig % G, cpg = C / G, n = cpg * HW, off = (i * C + g * cpg) * HW;
    const float *x = in + off;
    double s = 0.0;
    for (size_t j = threadIdx.x; j < n; j += blockDim.x)
        s += x[j];
    double mu = fv_block_sum(s) / (double)n, ss = 0.0;
    for (size_t j = threadIdx.x; j < n; j += blockDim.x)
        ss += (x[j] - mu) * (x[j] - mu);
    ss = fv_block_sum(ss);
    float r = (float)(1.0 / sqrt(ss / (double)n + (double)FV_GROUPNORM_EPS));
    if (threadIdx.x == 0) {
        mean[ig] = (float)mu;
        rstd[ig] = r;
    }
    for (size_t j = threadIdx.x; j < n; j += blockDim.x) {
        size_t ch = g * cpg + j / HW;
        float scale = r * gamma[ch], shift = beta[ch] - (float)mu * scale;
        out[off + j] = x[j] * scale + shift;
    }
}

/* One block per (image, group): each channel's sums of dy and dy xhat into part (for dgamma, dbeta),
 * then dx += r (dy gamma - mean(dxhat) - xhat mean(dxhat xhat)) as the CPU. */
__global__ void k_groupnorm_backward(float *dinp, double *part, const float *dout, const float *in, const float *mean,
                                     const float *rstd, const float *gamma, size_t C, size_t HW, size_t G)
{
    size_t ig = blockIdx.x, i = ig / G, g = ig % G, cpg = C / G, off = (i * C + g * cpg) * HW;
    float mu = mean[ig], r = rstd[ig];
    double s1 = 0.0, s2 = 0.0;
    for (size_t c = 0; c < cpg; c++) {
        size_t ch = g * cpg + c;
        const float *x = in + off + c * HW, *dy = dout + off + c * HW;
        double sdy = 0.0, sdyx = 0.0;
        for (size_t p = threadIdx.x; p < HW; p += blockDim.x) {
            sdy += dy[p];
            sdyx += (double)dy[p] * ((x[p] - mu) * r);
        }
        sdy = fv_block_sum(sdy);
        sdyx = fv_block_sum(sdyx);
        if (threadIdx.x == 0) {
            part[2 * (i * C + ch)] = sdy;
            part[2 * (i * C + ch) + 1] = sdyx;
        }
        s1 += gamma[ch] * sdy;
        s2 += gamma[ch] * sdyx;
    }
    float m1 = (float)(s1 / (double)(cpg * HW)), m2 = (float)(s2 / (double)(cpg * HW));
    for (size_t j = threadIdx.x; j < cpg * HW; j += blockDim.x) {
        size_t ch = g * cpg + j / HW;
        float xhat = (in[off + j] - mu) * r;
        dinp[off + j] += r * (dout[off + j] * gamma[ch] - m1 - xhat * m2);
    }
}

/* dbeta[c], dgamma[c] = the sums over images of part: one thread per channel. */
__global__ void k_groupnorm_params(float *dgamma, float *dbeta, const double *part, size_t B, size_t C)
{
    FOR_EACH_ELEMENT(c, C);
    double sdy = 0.0, sdyx = 0.0;
    for (size_t i = 0; i < B; i++) {
        sdy += part[2 * (i * C + c)];
        sdyx += part[2 * (i * C + c) + 1];
    }
    dbeta[c] = (float)sdy;
    dgamma[c] = (float)sdyx;
}

extern "C" int fv_cuda_groupnorm_forward(cublasHandle_t h, float *out, float *mean, float *rstd, const float *in,
                                         const float *gamma, const float *beta, size_t B, size_t C, size_t HW, size_t G)
{
    k_groupnorm<<<(unsigned)(B * G), FV_CUDA_THREADS, 0, fv_cublas_stream(h)>>>(out, mean, rstd, in, gamma, beta, C,
                                                                                 HW, G);
    return fv_cuda_launched("groupnorm");
}

extern "C" int fv_cuda_groupnorm_backward(cublasHandle_t h, float *dinp, float *dgamma, float *dbeta, const float *dout,
                                          const float *in, const float *mean, const float *rstd, const float *gamma,
                                          double *part, size_t B, size_t C, size_t HW, size_t G)
{
    cudaStream_t st = fv_cublas_stream(h);
    k_groupnorm_backward<<<(unsigned)(B * G), FV_CUDA_THREADS, 0, st>>>(dinp, part, dout, in, mean, rstd, gamma, C, HW,
                                                                         G);
    TRY(fv_cuda_launched("groupnorm backward"));
    k_groupnorm_params<<<fv_cuda_blocks(C), FV_CUDA_THREADS, 0, st>>>(dgamma, dbeta, part, B, C);
    return fv_cuda_launched("groupnorm parameter gradients");
}

/* ---- upsampling, concatenation, sums, channel bias ---------------------------------------------- */

__global__ void k_upsample2x(float *out, const float *in, size_t planes, size_t H, size_t W)
{
    FOR_EACH_ELEMENT(e, planes * 4 * H * W);
    size_t x = e % (2 * W), y = (e / (2 * W)) % (2 * H), plane = e / (4 * H * W);
    out[e] = in[(plane * H + y / 2) * W + x / 2];
}

__global__ void k_upsample2x_backward(float *dinp, const float *dout, size_t planes, size_t H, size_t W)
{
    FOR_EACH_ELEMENT(e, planes * H * W);
    size_t x = e % W, y = (e / W) % H, plane = e / (H * W);
    const float *r0 = dout + (plane * 2 * H + 2 * y) * 2 * W, *r1 = r0 + 2 * W;
    dinp[e] += (r0[2 * x] + r0[2 * x + 1]) + (r1[2 * x] + r1[2 * x + 1]);
}

/* out (B x (Ca + Cb) x HW) = [a, b] (backward = 0), or da, db += their channels of out (backward = 1). */
__global__ void k_concat(float *out, float *a, float *b, size_t B, size_t Ca, size_t Cb, size_t HW, int backward)
{
    size_t per = (Ca + Cb) * HW;
    FOR_EACH_ELEMENT(e, B * per);
    size_t i = e / per, r = e % per;
    float *src = r < Ca * HW ? a + i * Ca * HW + r : b + i * Cb * HW + (r - Ca * HW);
    if (backward)
        *src += out[e];
    else
        out[e] = *src;
}

__global__ void k_accumulate(float *y, const float *x, size_t n)
{
    FOR_EACH_ELEMENT(i, n);
    y[i] += x[i];
}

__global__ void k_channel_bias(float *x, const float *e, size_t n, size_t HW)
{
    FOR_EACH_ELEMENT(i, n);
    x[i] += e[i / HW];
}

/* de[row] = the sum of row `row` (HW long) of dx: one block per row. */
__global__ void k_row_sums(float *de, const float *dx, size_t HW)
{
    const float *row = dx + blockIdx.x * HW;
    double s = 0.0;
    for (size_t p = threadIdx.x; p < HW; p += blockDim.x)
        s += row[p];
    s = fv_block_sum(s);
    if (threadIdx.x == 0)
        de[blockIdx.x] = (float)s;
}

extern "C" int fv_cuda_upsample2x_forward(cublasHandle_t h, float *out, const float *in, size_t B, size_t C, size_t H,
                                          size_t W)
{
    k_upsample2x<<<fv_cuda_blocks(B * C * 4 * H * W), FV_CUDA_THREADS, 0, fv_cublas_stream(h)>>>(out, in, B * C, H, W);
    return fv_cuda_launched("upsampling");
}

extern "C" int fv_cuda_upsample2x_backward(cublasHandle_t h, float *dinp, const float *dout, size_t B, size_t C,
                                           size_t H, size_t W)
{
    k_upsample2x_backward<<<fv_cuda_blocks(B * C * H * W), FV_CUDA_THREADS, 0, fv_cublas_stream(h)>>>(dinp, dout,
                                                                                                      B * C, H, W);
    return fv_cuda_launched("upsampling backward");
}

extern "C" int fv_cuda_concat_forward(cublasHandle_t h, float *out, const float *a, const float *b, size_t B, size_t Ca,
                                      size_t Cb, size_t HW)
{
    /* the forward only reads a and b */
    k_concat<<<fv_cuda_blocks(B * (Ca + Cb) * HW), FV_CUDA_THREADS, 0, fv_cublas_stream(h)>>>(
        out, (float *)a, (float *)b, B, Ca, Cb, HW, 0);
    return fv_cuda_launched("concatenation");
}

extern "C" int fv_cuda_concat_backward(cublasHandle_t h, float *da, float *db, const float *dout, size_t B, size_t Ca,
                                       size_t Cb, size_t HW)
{
    /* the backward only reads dout */
    k_concat<<<fv_cuda_blocks(B * (Ca + Cb) * HW), FV_CUDA_THREADS, 0, fv_cublas_stream(h)>>>((float *)dout, da, db, B,
                                                                                              Ca, Cb, HW, 1);
    return fv_cuda_launched("concatenation backward");
}

extern "C" int fv_cuda_accumulate(cublasHandle_t h, float *y, const float *x, size_t n)
{
    k_accumulate<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, fv_cublas_stream(h)>>>(y, x, n);
    return fv_cuda_launched("sum");
}

extern "C" int fv_cuda_channel_bias_forward(cublasHandle_t h, float *x, const float *e, size_t B, size_t C, size_t HW)
{
    k_channel_bias<<<fv_cuda_blocks(B * C * HW), FV_CUDA_THREADS, 0, fv_cublas_stream(h)>>>(x, e, B * C * HW, HW);
    return fv_cuda_launched("channel bias");
}

extern "C" int fv_cuda_channel_bias_backward(cublasHandle_t h, float *de, const float *dx, size_t B, size_t C, size_t HW)
{
    k_row_sums<<<(unsigned)(B * C), FV_CUDA_THREADS, 0, fv_cublas_stream(h)>>>(de, dx, HW);
    return fv_cuda_launched("channel bias backward");
}

/* ---- SiLU, time embedding, dropout -------------------------------------------------------------- */

__global__ void k_silu(float *out, const float *in, size_t n)
{
    FOR_EACH_ELEMENT(i, n);
    out[i] = fv_act_fwd(FV_NNM_SILU, in[i]);
}

extern "C" int fv_cuda_silu_forward(cublasHandle_t h, float *out, const float *in, size_t n)
{
    k_silu<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, fv_cublas_stream(h)>>>(out, in, n);
    return fv_cuda_launched("silu");
}

extern "C" int fv_cuda_silu_backward(cublasHandle_t h, float *d, const float *pre, const float *post, size_t n)
{
    return fv_cuda_act_backward(fv_cublas_stream(h), d, pre, post, n, FV_NNM_SILU);
}

/* out (B x 2 half): [cos(t f_k), sin(t f_k)] as fv_temb, one thread per (image, k). */
__global__ void k_timestep_embedding(float *out, const float *t, size_t B, unsigned half)
{
    FOR_EACH_ELEMENT(e, B * half);
    size_t i = e / half;
    unsigned k = (unsigned)(e % half);
    float a = t[i] * fv_temb_freq(k, half);
    out[i * 2 * half + k] = cosf(a);
    out[i * 2 * half + half + k] = sinf(a);
}

extern "C" int fv_cuda_timestep_embedding(cublasHandle_t h, float *out, const float *t, size_t B, size_t dim)
{
    k_timestep_embedding<<<fv_cuda_blocks(B * (dim / 2)), FV_CUDA_THREADS, 0, fv_cublas_stream(h)>>>(out, t, B,
                                                                                                     (unsigned)(dim / 2));
    return fv_cuda_launched("timestep embedding");
}

/* One thread per Philox block: elements 4 q .. 4 q + 3 take its four words (dropout_apply of
 * unet_layers.c). The forward and the backward are the same map. */
__global__ void k_dropout(float *out, const float *in, size_t n, float p, float scale, uint64_t seed, uint64_t stream,
                          uint64_t block0)
{
    FOR_EACH_ELEMENT(q, (n + 3) / 4);
    fv_philox_ctr r = fv_philox_block(seed, stream, block0 + q);
    for (size_t j = 0; j < 4 && 4 * q + j < n; j++)
        out[4 * q + j] = fv_dropout_elem(in[4 * q + j], r.v[j], p, scale);
}

static int dropout(cublasHandle_t h, float *out, const float *in, size_t n, float p, uint64_t seed, uint64_t stream,
                   uint64_t block0)
{
    k_dropout<<<fv_cuda_blocks((n + 3) / 4), FV_CUDA_THREADS, 0, fv_cublas_stream(h)>>>(out, in, n, p, 1.0f / (1.0f - p),
                                                                                        seed, stream, block0);
    return fv_cuda_launched("dropout");
}

extern "C" int fv_cuda_dropout_forward(cublasHandle_t h, float *out, const float *in, size_t n, float p, uint64_t seed,
                                       uint64_t stream, uint64_t block0)
{
    return dropout(h, out, in, n, p, seed, stream, block0);
}

extern "C" int fv_cuda_dropout_backward(cublasHandle_t h, float *dinp, const float *dout, size_t n, float p,
                                        uint64_t seed, uint64_t stream, uint64_t block0)
{
    return dropout(h, dinp, dout, n, p, seed, stream, block0);
}

/* ---- attention ---------------------------------------------------------------------------------- */

/* The softmax of each row (T long) of a in place, one warp per row; its sums and maximum in a fixed
 * shuffle order. backward = 1: d (in a's place) <- P (d - sum_s P d) with P = p, row by row. */
__global__ void k_softmax(float *a, const float *p, size_t rows, size_t T, int backward)
{
    size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    unsigned lane = threadIdx.x % 32;
    if (row >= rows)
        return;
    float *d = a + row * T;
    if (backward) {
        const float *pr = p + row * T;
        float dot = 0.0f;
        for (size_t s = lane; s < T; s += 32)
            dot += pr[s] * d[s];
        for (int o = 16; o > 0; o /= 2)
            dot += __shfl_xor_sync(0xffffffffu, dot, o);
        for (size_t s = lane; s < T; s += 32)
            d[s] = pr[s] * (d[s] - dot);
        return;
    }
    float mx = d[0], sum = 0.0f;
    for (size_t s = lane; s < T; s += 32)
        mx = d[s] > mx ? d[s] : mx;
    for (int o = 16; o > 0; o /= 2) {
        float other = __shfl_xor_sync(0xffffffffu, mx, o);
        mx = other > mx ? other : mx;
    }
    for (size_t s = lane; s < T; s += 32) {
        d[s] = fv_expf_fast(d[s] - mx);
        sum += d[s];
    }
    for (int o = 16; o > 0; o /= 2)
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
    float inv = 1.0f / sum;
    for (size_t s = lane; s < T; s += 32)
        d[s] *= inv;
}

static int softmax_rows(cudaStream_t st, float *a, const float *p, size_t rows, size_t T, int backward)
{
    k_softmax<<<fv_cuda_blocks(32 * rows), FV_CUDA_THREADS, 0, st>>>(a, p, rows, T, backward);
    return fv_cuda_launched(backward ? "softmax backward" : "softmax");
}

/* One strided-batched product over every (image, head). In row-major terms each operand is a ch x T
 * or T x T block; column-major (cuBLAS's view) that is a T x ch or a transposed T x T matrix, so every
 * leading dimension is T. The (image, head) blocks of q, k, v lie 3 ch T apart, of out ch T, of att T T. */
static int batched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, size_t m, size_t n, size_t k,
                   float alpha, const float *A, size_t sa, const float *B, size_t sb, float beta, float *C, size_t sc,
                   size_t T, size_t count, const char *what)
{
    return fv_cublas_check(cublasSgemmStridedBatched(h, ta, tb, (int)m, (int)n, (int)k, &alpha, A, (int)T,
                                                     (long long)sa, B, (int)T, (long long)sb, &beta, C, (int)T,
                                                     (long long)sc, (int)count),
                           what);
}

extern "C" int fv_cuda_attention_forward(cublasHandle_t h, float *out, float *att, const float *qkv, size_t B,
                                         size_t heads, size_t C, size_t T)
{
    size_t ch = C / heads, n = B * heads, sq = 3 * ch * T;
    const float *q = qkv, *k = q + ch * T, *v = k + ch * T;
    float alpha = (float)(1.0 / sqrt((double)ch));
    /* att[t, s] = alpha sum_c q[c, t] k[c, s]: column-major att^T = alpha k' q'^T (k', q': T x ch). */
    TRY(batched(h, CUBLAS_OP_N, CUBLAS_OP_T, T, T, ch, alpha, k, sq, q, sq, 0.0f, att, T * T, T, n,
                "attention scores"));
    TRY(softmax_rows(fv_cublas_stream(h), att, NULL, n * T, T, 0));
    /* a[c, t] = sum_s att[t, s] v[c, s]: column-major a' = (att^T)^T v'. */
    return batched(h, CUBLAS_OP_T, CUBLAS_OP_N, T, ch, T, 1.0f, att, T * T, v, sq, 0.0f, out, ch * T, T, n,
                   "attention output");
}

extern "C" int fv_cuda_attention_backward(cublasHandle_t h, float *dqkv, float *datt, const float *dout,
                                          const float *qkv, const float *att, size_t B, size_t heads, size_t C,
                                          size_t T)
{
    size_t ch = C / heads, n = B * heads, sq = 3 * ch * T;
    const float *q = qkv, *k = q + ch * T, *v = k + ch * T;
    float *dq = dqkv, *dk = dq + ch * T, *dv = dk + ch * T;
    float alpha = (float)(1.0 / sqrt((double)ch));
    /* dv[c, s] += sum_t da[c, t] att[t, s] */
    TRY(batched(h, CUBLAS_OP_N, CUBLAS_OP_N, T, ch, T, 1.0f, att, T * T, dout, ch * T, 1.0f, dv, sq, T, n,
                "attention dv"));
    /* datt[t, s] = sum_c da[c, t] v[c, s] */
    TRY(batched(h, CUBLAS_OP_N, CUBLAS_OP_T, T, T, ch, 1.0f, v, sq, dout, ch * T, 0.0f, datt, T * T, T, n,
                "attention datt"));
    TRY(softmax_rows(fv_cublas_stream(h), datt, att, n * T, T, 1));
    /* dq[c, t] += alpha sum_s k[c, s] dS[t, s]; dk[c, s] += alpha sum_t q[c, t] dS[t, s] */
    TRY(batched(h, CUBLAS_OP_T, CUBLAS_OP_N, T, ch, T, alpha, datt, T * T, k, sq, 1.0f, dq, sq, T, n,
                "attention dq"));
    return batched(h, CUBLAS_OP_N, CUBLAS_OP_N, T, ch, T, alpha, datt, T * T, q, sq, 1.0f, dk, sq, T, n,
                   "attention dk");
}

/* ---- the network's workspace -------------------------------------------------------------------- */

/* im2col scratch: at most this many floats (256 MiB), and at least one image. */
#define COL_BUDGET ((size_t)64 << 20)

/* The sizes of what the device adds to unet.c's layout, for B images. */
typedef struct {
    size_t acts, col1, ncol, datt, gn, d;
} extras;

static extras extras_of(const fv_unet *net, size_t B, size_t acts)
{
    extras x = {acts, 0, 0, 0, 0, 0};
    const fv_unet_config *c = &net->cfg;
    x.d = c->in_channels * c->height * c->width;
    for (size_t j = 1; j < net->nunits; j++) {
        const fv_unet_unit *u = &net->units[j];
        size_t hw = u->h * u->w, up = u->kind == FV_UNET_UP ? 4 : 1;
        /* every 3x3 convolution unfolds at most max(cin, cout) channels at its input's resolution */
        x.col1 = max_size(x.col1, max_size(u->cin, u->cout) * 9 * hw * up);
        x.gn = max_size(x.gn, 2 * B * max_size(u->cin, u->cout));
        if (u->kind == FV_UNET_ATTN)
            x.datt = max_size(x.datt, B * u->heads * hw * hw);
    }
    x.ncol = min_size(B, max_size(1, COL_BUDGET / x.col1));
    return x;
}

/* Bytes of: doubles (partials, GroupNorm sums) first, for their alignment, then floats. */
static size_t extras_bytes(const extras *x, size_t B)
{
    return (FV_CUDA_REDUCE_BLOCKS + 1 + x->gn) * sizeof(double) +
           (x->acts + x->ncol * x->col1 + x->datt + B + 2 * B * x->d) * sizeof(float);
}

extern "C" size_t fv_cuda_unet_acts_bytes(const fv_unet *net, size_t B)
{
    fv_unet_acts a;
    size_t n;
    if (fv_unet_acts_place(&a, net, B, NULL, &n))
        return 0;
    extras x = extras_of(net, B, n);
    return extras_bytes(&x, B);
}

extern "C" int fv_cuda_unet_acts_alloc(fv_cuda_unet_acts *w, const fv_unet *net, size_t B)
{
    memset(w, 0, sizeof *w);
    size_t n;
    TRY(fv_unet_acts_place(&w->a, net, B, NULL, &n));
    extras x = extras_of(net, B, n);
    w->bytes = extras_bytes(&x, B);
    TRY(fv_cuda_check(cudaMalloc(&w->mem, w->bytes), "allocating the U-Net's activations"));
    w->partial = (double *)w->mem;
    w->gn = w->partial + FV_CUDA_REDUCE_BLOCKS + 1;
    float *f = (float *)(w->gn + x.gn);
    int st = fv_unet_acts_place(&w->a, net, B, f, &n);
    if (st) {
        fv_cuda_unet_acts_free(w);
        return st;
    }
    f += n;
    w->col = f;
    w->ncol = x.ncol;
    f += x.ncol * x.col1;
    w->datt = f;
    f += x.datt;
    w->ones = f;
    w->v = f + B;
    w->dout = w->v + B * x.d;
    if ((st = fv_cuda_fill(0, w->ones, 1.0f, B)) || (st = fv_cuda_check(cudaDeviceSynchronize(), "filling ones")))
        fv_cuda_unet_acts_free(w);
    return st;
}

extern "C" void fv_cuda_unet_acts_free(fv_cuda_unet_acts *w)
{
    if (w->mem)
        cudaFree(w->mem);
    fv_unet_acts_free(&w->a); /* the unit table; a.mem is NULL */
    memset(w, 0, sizeof *w);
}

/* ---- forward ------------------------------------------------------------------------------------ */

static const float *param(const fv_unet *net, const float *params, const fv_unet_unit *u, size_t i)
{
    return params + net->tensors[u->tensor0 + i].offset;
}

static float *grad(const fv_unet *net, float *grads, const fv_unet_unit *u, size_t i)
{
    return grads + net->tensors[u->tensor0 + i].offset;
}

static fv_conv2d_shape conv3(size_t cin, size_t cout, size_t h, size_t w, size_t stride)
{
    return (fv_conv2d_shape){cin, cout, h, w, 3, stride, 1};
}

static fv_conv2d_shape conv1(size_t cin, size_t cout, size_t h, size_t w)
{
    return (fv_conv2d_shape){cin, cout, h, w, 1, 1, 0};
}

static int training_dropout(const fv_unet *net, const fv_cuda_unet_acts *w)
{
    return w->a.train && net->cfg.dropout > 0.0f;
}

/* Unit j's first mask block: a batch that starts at image dropout_row0 of a larger one (a rank's shard)
 * starts that many images further, as unet.c's dropout_block0. */
static uint64_t dropout_block0(const fv_unet_unit *u, const fv_cuda_unet_acts *w, size_t j)
{
    return FV_UNET_DROPOUT_BLOCK0(j) + (uint64_t)w->a.dropout_row0 * (u->cout * u->h * u->w / 4);
}

/* GroupNorm of a unit's input with its tensors 0 and 1 (every normalizing unit starts so). */
static int norm_in(cublasHandle_t h, const fv_unet *net, const float *params, const fv_unet_unit *u,
                   fv_unet_unit_acts *ua, size_t B)
{
    return fv_cuda_groupnorm_forward(h, ua->norm, ua->mean, ua->rstd, ua->in, param(net, params, u, 0),
                                     param(net, params, u, 1), B, u->cin, u->h * u->w, FV_UNET_GROUPS);
}

static int time_forward(cublasHandle_t h, const fv_unet *net, const float *params, size_t B, const float *t,
                        fv_cuda_unet_acts *w)
{
    const fv_unet_unit *u = &net->units[0];
    fv_unet_unit_acts *ua = &w->a.u[0];
    size_t E = u->cout;
    cudaStream_t s = fv_cublas_stream(h);
    TRY(fv_cuda_timestep_embedding(h, ua->temb, t, B, u->cin));
    TRY(fv_cuda_linear_forward(h, ua->pre, ua->temb, param(net, params, u, 0), B, u->cin, E));
    TRY(fv_cuda_bias_act(s, ua->pre, ua->post, param(net, params, u, 1), B * E, E, FV_NNM_SILU));
    TRY(fv_cuda_linear_forward(h, ua->out, ua->post, param(net, params, u, 2), B, E, E));
    return fv_cuda_bias_act(s, ua->out, ua->act, param(net, params, u, 3), B * E, E, FV_NNM_SILU);
}

static int res_forward(cublasHandle_t h, const fv_unet *net, const float *params, size_t j, size_t B,
                       fv_cuda_unet_acts *w)
{
    const fv_unet_unit *u = &net->units[j];
    fv_unet_unit_acts *ua = &w->a.u[j];
    size_t hw = u->h * u->w, E = net->units[0].cout, n = B * u->cout * hw;
    fv_conv2d_shape c1 = conv3(u->cin, u->cout, u->h, u->w, 1), c2 = conv3(u->cout, u->cout, u->h, u->w, 1);
    const float *conv2_in = training_dropout(net, w) ? ua->drop : ua->act2;
    TRY(norm_in(h, net, params, u, ua, B));
    TRY(fv_cuda_silu_forward(h, ua->act, ua->norm, B * u->cin * hw));
    TRY(fv_cuda_conv2d_forward(h, ua->h, ua->act, param(net, params, u, 2), param(net, params, u, 3), w->col, w->ncol,
                               B, &c1));
    TRY(fv_cuda_linear_forward(h, ua->eproj, w->a.u[0].act, param(net, params, u, 4), B, E, u->cout));
    TRY(fv_cuda_bias_act(fv_cublas_stream(h), ua->eproj, NULL, param(net, params, u, 5), B * u->cout, u->cout, 0));
    TRY(fv_cuda_channel_bias_forward(h, ua->h, ua->eproj, B, u->cout, hw));
    TRY(fv_cuda_groupnorm_forward(h, ua->norm2, ua->mean2, ua->rstd2, ua->h, param(net, params, u, 6),
                                  param(net, params, u, 7), B, u->cout, hw, FV_UNET_GROUPS));
    TRY(fv_cuda_silu_forward(h, ua->act2, ua->norm2, n));
    if (training_dropout(net, w))
        TRY(fv_cuda_dropout_forward(h, ua->drop, ua->act2, n, net->cfg.dropout, w->a.dropout_seed,
                                    w->a.dropout_stream, dropout_block0(u, w, j)));
    TRY(fv_cuda_conv2d_forward(h, ua->out, conv2_in, param(net, params, u, 8), param(net, params, u, 9), w->col,
                               w->ncol, B, &c2));
    if (u->cin == u->cout)
        return fv_cuda_accumulate(h, ua->out, ua->in, n);
    fv_conv2d_shape sk = conv1(u->cin, u->cout, u->h, u->w);
    TRY(fv_cuda_conv2d_forward(h, w->a.g0, ua->in, param(net, params, u, 10), param(net, params, u, 11), NULL, 0, B,
                               &sk));
    return fv_cuda_accumulate(h, ua->out, w->a.g0, n);
}

static int attn_forward(cublasHandle_t h, const fv_unet *net, const float *params, size_t j, size_t B,
                        fv_cuda_unet_acts *w)
{
    const fv_unet_unit *u = &net->units[j];
    fv_unet_unit_acts *ua = &w->a.u[j];
    size_t C = u->cin, T = u->h * u->w;
    fv_conv2d_shape qkv = conv1(C, 3 * C, u->h, u->w), proj = conv1(C, C, u->h, u->w);
    TRY(norm_in(h, net, params, u, ua, B));
    TRY(fv_cuda_conv2d_forward(h, ua->qkv, ua->norm, param(net, params, u, 2), param(net, params, u, 3), NULL, 0, B,
                               &qkv));
    TRY(fv_cuda_attention_forward(h, ua->h, ua->att, ua->qkv, B, u->heads, C, T));
    TRY(fv_cuda_conv2d_forward(h, ua->out, ua->h, param(net, params, u, 4), param(net, params, u, 5), NULL, 0, B,
                               &proj));
    return fv_cuda_accumulate(h, ua->out, ua->in, B * C * T);
}

static int unit_forward(cublasHandle_t h, const fv_unet *net, const float *params, size_t j, size_t B,
                        fv_cuda_unet_acts *w)
{
    const fv_unet_unit *u = &net->units[j];
    fv_unet_unit_acts *ua = &w->a.u[j];
    fv_conv2d_shape s;
    switch (u->kind) {
    case FV_UNET_RES:
        return res_forward(h, net, params, j, B, w);
    case FV_UNET_ATTN:
        return attn_forward(h, net, params, j, B, w);
    case FV_UNET_CONV:
    case FV_UNET_DOWN:
        s = conv3(u->cin, u->cout, u->h, u->w, u->kind == FV_UNET_DOWN ? 2 : 1);
        return fv_cuda_conv2d_forward(h, ua->out, ua->in, param(net, params, u, 0), param(net, params, u, 1), w->col,
                                      w->ncol, B, &s);
    case FV_UNET_UP:
        s = conv3(u->cin, u->cout, 2 * u->h, 2 * u->w, 1);
        TRY(fv_cuda_upsample2x_forward(h, ua->up, ua->in, B, u->cin, u->h, u->w));
        return fv_cuda_conv2d_forward(h, ua->out, ua->up, param(net, params, u, 0), param(net, params, u, 1), w->col,
                                      w->ncol, B, &s);
    case FV_UNET_HEAD:
        s = conv3(u->cin, u->cout, u->h, u->w, 1);
        TRY(norm_in(h, net, params, u, ua, B));
        TRY(fv_cuda_silu_forward(h, ua->act, ua->norm, B * u->cin * u->h * u->w));
        return fv_cuda_conv2d_forward(h, ua->out, ua->act, param(net, params, u, 2), param(net, params, u, 3), w->col,
                                      w->ncol, B, &s);
    case FV_UNET_TIME:
        break; /* time_forward: it reads t, not an image */
    }
    return FV_OK;
}

/* The output block k's concatenation [h, skip]: channels of each side and the resolution. */
static void concat_sides(const fv_unet *net, const fv_unet_block *k, size_t *Ca, size_t *Cb, size_t *hw)
{
    const fv_unet_block *skip = &net->blocks[k->skip];
    const fv_unet_unit *first = &net->units[k->unit0];
    *Ca = net->units[k->unit0 - 1].cout;
    *Cb = net->units[skip->unit0 + skip->nunits - 1].cout;
    *hw = first->h * first->w;
}

extern "C" int fv_cuda_unet_forward(cublasHandle_t h, const fv_unet *net, const float *params, size_t B,
                                    const float *x, const float *t, float *out, fv_cuda_unet_acts *w)
{
    const fv_unet_config *c = &net->cfg;
    size_t d = c->in_channels * c->height * c->width;
    cudaStream_t s = fv_cublas_stream(h);
    if (B < 1 || B > w->a.B || w->a.nunits != net->nunits)
        return fv_error(FV_EINPUT, "unet: %zu images for a device workspace of %zu", B, w->a.B);
    w->a.rows = B;
    TRY(fv_cuda_check(cudaMemcpyAsync(w->a.x, x, B * d * sizeof(float), cudaMemcpyDeviceToDevice, s), "input copy"));
    TRY(time_forward(h, net, params, B, t, w));
    for (size_t blk = 0; blk < net->nblocks; blk++) {
        const fv_unet_block *k = &net->blocks[blk];
        if (k->skip != FV_UNET_NO_SKIP) {
            const fv_unet_block *skip = &net->blocks[k->skip];
            size_t Ca, Cb, hw;
            concat_sides(net, k, &Ca, &Cb, &hw);
            TRY(fv_cuda_concat_forward(h, w->a.u[k->unit0].in, w->a.u[k->unit0 - 1].out,
                                       w->a.u[skip->unit0 + skip->nunits - 1].out, B, Ca, Cb, hw));
        }
        for (size_t j = k->unit0; j < k->unit0 + k->nunits; j++)
            TRY(unit_forward(h, net, params, j, B, w));
    }
    if (out == w->a.u[net->nunits - 1].out)
        return FV_OK;
    return fv_cuda_check(cudaMemcpyAsync(out, w->a.u[net->nunits - 1].out, B * d * sizeof(float),
                                         cudaMemcpyDeviceToDevice, s),
                         "output copy");
}

/* ---- backward ----------------------------------------------------------------------------------- */

static int zero(cublasHandle_t h, float *p, size_t n)
{
    return fv_cuda_check(cudaMemsetAsync(p, 0, n * sizeof(float), fv_cublas_stream(h)), "clearing a gradient");
}

/* The backward of a unit's leading GroupNorm (tensors 0 and 1) from g into its input's gradient. */
static int norm_in_backward(cublasHandle_t h, const fv_unet *net, const float *params, float *grads,
                            const fv_unet_unit *u, fv_unet_unit_acts *ua, const float *g, size_t B, double *part)
{
    return fv_cuda_groupnorm_backward(h, ua->din, grad(net, grads, u, 0), grad(net, grads, u, 1), g, ua->in, ua->mean,
                                      ua->rstd, param(net, params, u, 0), part, B, u->cin, u->h * u->w,
                                      FV_UNET_GROUPS);
}

static int res_backward(cublasHandle_t h, const fv_unet *net, const float *params, size_t j, size_t B,
                        const float *dout, float *grads, fv_cuda_unet_acts *w)
{
    const fv_unet_unit *u = &net->units[j];
    fv_unet_unit_acts *ua = &w->a.u[j];
    size_t hw = u->h * u->w, E = net->units[0].cout, nin = B * u->cin * hw, n = B * u->cout * hw;
    fv_conv2d_shape c1 = conv3(u->cin, u->cout, u->h, u->w, 1), c2 = conv3(u->cout, u->cout, u->h, u->w, 1);
    float *g0 = w->a.g0, *g1 = w->a.g1, *g2 = w->a.g2;
    if (u->cin != u->cout) {
        fv_conv2d_shape sk = conv1(u->cin, u->cout, u->h, u->w);
        TRY(fv_cuda_conv2d_backward(h, ua->din, grad(net, grads, u, 10), grad(net, grads, u, 11), dout, ua->in,
                                    param(net, params, u, 10), NULL, 0, B, &sk));
    } else {
        TRY(fv_cuda_accumulate(h, ua->din, dout, n));
    }
    TRY(zero(h, g1, n));
    TRY(fv_cuda_conv2d_backward(h, g1, grad(net, grads, u, 8), grad(net, grads, u, 9), dout,
                                training_dropout(net, w) ? ua->drop : ua->act2, param(net, params, u, 8), w->col,
                                w->ncol, B, &c2));
    if (training_dropout(net, w))
        TRY(fv_cuda_dropout_backward(h, g1, g1, n, net->cfg.dropout, w->a.dropout_seed, w->a.dropout_stream,
                                     dropout_block0(u, w, j)));
    TRY(fv_cuda_silu_backward(h, g1, ua->norm2, ua->act2, n));
    TRY(zero(h, g2, n));
    TRY(fv_cuda_groupnorm_backward(h, g2, grad(net, grads, u, 6), grad(net, grads, u, 7), g1, ua->h, ua->mean2,
                                   ua->rstd2, param(net, params, u, 6), w->gn, B, u->cout, hw, FV_UNET_GROUPS));
    /* g1 is free again: it takes the gradient of the time projection (B x cout). */
    TRY(fv_cuda_channel_bias_backward(h, g1, g2, B, u->cout, hw));
    TRY(fv_cuda_linear_backward(h, w->a.ebuf, grad(net, grads, u, 4), grad(net, grads, u, 5), g1, w->a.u[0].act,
                                param(net, params, u, 4), w->ones, B, E, u->cout));
    TRY(fv_cuda_accumulate(h, w->a.u[0].dact, w->a.ebuf, B * E));
    TRY(zero(h, g0, nin));
    TRY(fv_cuda_conv2d_backward(h, g0, grad(net, grads, u, 2), grad(net, grads, u, 3), g2, ua->act,
                                param(net, params, u, 2), w->col, w->ncol, B, &c1));
    TRY(fv_cuda_silu_backward(h, g0, ua->norm, ua->act, nin));
    return norm_in_backward(h, net, params, grads, u, ua, g0, B, w->gn);
}

static int attn_backward(cublasHandle_t h, const fv_unet *net, const float *params, size_t j, size_t B,
                         const float *dout, float *grads, fv_cuda_unet_acts *w)
{
    const fv_unet_unit *u = &net->units[j];
    fv_unet_unit_acts *ua = &w->a.u[j];
    size_t C = u->cin, T = u->h * u->w, n = B * C * T;
    fv_conv2d_shape qkv = conv1(C, 3 * C, u->h, u->w), proj = conv1(C, C, u->h, u->w);
    TRY(fv_cuda_accumulate(h, ua->din, dout, n));
    TRY(zero(h, w->a.g0, n));
    TRY(fv_cuda_conv2d_backward(h, w->a.g0, grad(net, grads, u, 4), grad(net, grads, u, 5), dout, ua->h,
                                param(net, params, u, 4), NULL, 0, B, &proj));
    TRY(zero(h, w->a.g1, 3 * n));
    TRY(fv_cuda_attention_backward(h, w->a.g1, w->datt, w->a.g0, ua->qkv, ua->att, B, u->heads, C, T));
    TRY(zero(h, w->a.g2, n));
    TRY(fv_cuda_conv2d_backward(h, w->a.g2, grad(net, grads, u, 2), grad(net, grads, u, 3), w->a.g1, ua->norm,
                                param(net, params, u, 2), NULL, 0, B, &qkv));
    return norm_in_backward(h, net, params, grads, u, ua, w->a.g2, B, w->gn);
}

static int time_backward(cublasHandle_t h, const fv_unet *net, const float *params, size_t B, float *grads,
                         fv_cuda_unet_acts *w)
{
    const fv_unet_unit *u = &net->units[0];
    fv_unet_unit_acts *ua = &w->a.u[0];
    size_t E = u->cout;
    TRY(fv_cuda_silu_backward(h, ua->dact, ua->out, ua->act, B * E)); /* now dL/demb */
    TRY(fv_cuda_linear_backward(h, w->a.ebuf, grad(net, grads, u, 2), grad(net, grads, u, 3), ua->dact, ua->post,
                                param(net, params, u, 2), w->ones, B, E, E));
    TRY(fv_cuda_silu_backward(h, w->a.ebuf, ua->pre, ua->post, B * E));
    return fv_cuda_linear_backward(h, NULL, grad(net, grads, u, 0), grad(net, grads, u, 1), w->a.ebuf, ua->temb,
                                   param(net, params, u, 0), w->ones, B, u->cin, E);
}

static int unit_backward(cublasHandle_t h, const fv_unet *net, const float *params, size_t j, size_t B,
                         const float *dout, float *grads, fv_cuda_unet_acts *w)
{
    const fv_unet_unit *u = &net->units[j];
    fv_unet_unit_acts *ua = &w->a.u[j];
    size_t hw = u->h * u->w;
    float *g0 = w->a.g0;
    fv_conv2d_shape s;
    switch (u->kind) {
    case FV_UNET_RES:
        return res_backward(h, net, params, j, B, dout, grads, w);
    case FV_UNET_ATTN:
        return attn_backward(h, net, params, j, B, dout, grads, w);
    case FV_UNET_CONV:
    case FV_UNET_DOWN:
        s = conv3(u->cin, u->cout, u->h, u->w, u->kind == FV_UNET_DOWN ? 2 : 1);
        return fv_cuda_conv2d_backward(h, ua->din, grad(net, grads, u, 0), grad(net, grads, u, 1), dout, ua->in,
                                       param(net, params, u, 0), w->col, w->ncol, B, &s);
    case FV_UNET_UP:
        s = conv3(u->cin, u->cout, 2 * u->h, 2 * u->w, 1);
        TRY(zero(h, g0, B * u->cin * 4 * hw));
        TRY(fv_cuda_conv2d_backward(h, g0, grad(net, grads, u, 0), grad(net, grads, u, 1), dout, ua->up,
                                    param(net, params, u, 0), w->col, w->ncol, B, &s));
        return fv_cuda_upsample2x_backward(h, ua->din, g0, B, u->cin, u->h, u->w);
    case FV_UNET_HEAD:
        s = conv3(u->cin, u->cout, u->h, u->w, 1);
        TRY(zero(h, g0, B * u->cin * hw));
        TRY(fv_cuda_conv2d_backward(h, g0, grad(net, grads, u, 2), grad(net, grads, u, 3), dout, ua->act,
                                    param(net, params, u, 2), w->col, w->ncol, B, &s));
        TRY(fv_cuda_silu_backward(h, g0, ua->norm, ua->act, B * u->cin * hw));
        return norm_in_backward(h, net, params, grads, u, ua, g0, B, w->gn);
    case FV_UNET_TIME:
        return time_backward(h, net, params, B, grads, w);
    }
    return FV_OK;
}

extern "C" int fv_cuda_unet_backward(cublasHandle_t h, const fv_unet *net, const float *params, size_t B,
                                     const float *dout, float *grads, fv_cuda_unet_acts *w)
{
    if (B != w->a.rows || w->a.nunits != net->nunits)
        return fv_error(FV_EINPUT, "unet: backward of %zu images after a forward of %zu", B, w->a.rows);
    /* The activation gradients are sums over their consumers: start them at zero. */
    TRY(zero(h, w->a.grad, (size_t)(w->a.grad_end - w->a.grad)));
    for (size_t blk = net->nblocks; blk-- > 0;) {
        const fv_unet_block *k = &net->blocks[blk];
        for (size_t j = k->unit0 + k->nunits; j-- > k->unit0;)
            TRY(unit_backward(h, net, params, j, B, j == net->nunits - 1 ? dout : w->a.u[j].dout, grads, w));
        if (k->skip != FV_UNET_NO_SKIP) {
            const fv_unet_block *skip = &net->blocks[k->skip];
            size_t Ca, Cb, hw;
            concat_sides(net, k, &Ca, &Cb, &hw);
            TRY(fv_cuda_concat_backward(h, w->a.u[k->unit0 - 1].dout, w->a.u[skip->unit0 + skip->nunits - 1].dout,
                                        w->a.u[k->unit0].din, B, Ca, Cb, hw));
        }
    }
    return unit_backward(h, net, params, 0, B, NULL, grads, w);
}
