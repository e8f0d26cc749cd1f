/* mlp_cuda.cu: the MLP's layers, loss and Adam on a CUDA device (see mlp_cuda.h); the CPU
 * reference is src/nn/mlp.c and optim.c. */
#include "cuda/mlp_cuda.h"

/* ---- kernels ------------------------------------------------------------------------------------ */

/* in (B x nin) = [x, t] or [x, emb(t)], one thread per element (fv_mlp_input's layout). */
__global__ void k_input(float *in, const float *x, const float *t, size_t B, size_t d, size_t temb)
{
    size_t nin = d + (temb ? temb : 1), i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= B * nin)
        return;
    size_t r = i / nin, c = i % nin;
    if (c < d) {
        in[i] = x[r * d + c];
    } else if (!temb) {
        in[i] = t[r];
    } else {
        unsigned half = (unsigned)(temb / 2), k = (unsigned)(c - d);
        float a = t[r] * fv_temb_freq(k < half ? k : k - half, half);
        in[i] = k < half ? cosf(a) : sinf(a);
    }
}

__global__ void k_fill(float *p, float v, size_t n)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n)
        p[i] = v;
}

/* pre += b (per column); post = act(pre). */
__global__ void k_bias_act(float *pre, float *post, const float *b, size_t n, size_t nout, int act)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    float z = pre[i] + b[i % nout];
    pre[i] = z;
    post[i] = fv_act_fwd(act, z);
}

__global__ void k_bias(float *out, const float *b, size_t n, size_t nout)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n)
        out[i] += b[i % nout];
}

/* d *= act'(pre) in place. */
__global__ void k_act_backward(float *d, const float *pre, const float *post, size_t n, int act)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n)
        d[i] *= fv_act_deriv(act, pre[i], post[i]);
}

/* dout = 2 (v - u) / n as fv_mse_loss; partial[block] = the block's sum of (v - u)^2 (grid-stride
 * over a fixed grid, so the summation order never changes). */
__global__ void k_mse(float *dout, double *partial, const float *v, const float *u, size_t n, float scale)
{
    double s = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float r = v[i] - u[i];
        s += (double)r * r;
        dout[i] = scale * r;
    }
    s = fv_block_sum(s);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = s;
}

/* partial[block] = the block's sum of x^2. */
__global__ void k_sumsq(double *partial, const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += (double)x[i] * x[i];
    s = fv_block_sum(s);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = s;
}

/* *out = the sum of the partials (one block). */
__global__ void k_sum_partials(double *out, const double *partial, unsigned np)
{
    double s = 0.0;
    for (unsigned i = threadIdx.x; i < np; i += blockDim.x)
        s += partial[i];
    s = fv_block_sum(s);
    if (threadIdx.x == 0)
        *out = s;
}

/* sq[i] += |delta_i|^2 (|a_i|^2 + 1), one warp per row (add_row_sqnorms of mlp.c). */
__global__ void k_row_sqnorms(float *sq, const float *delta, const float *in, size_t B, size_t nin, size_t nout)
{
    size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    unsigned lane = threadIdx.x % 32;
    if (row >= B)
        return;
    double a = 0.0, d = 0.0;
    for (size_t j = lane; j < nin; j += 32)
        a += (double)in[row * nin + j] * in[row * nin + j];
    for (size_t j = lane; j < nout; j += 32)
        d += (double)delta[row * nout + j] * delta[row * nout + j];
    for (int o = 16; o > 0; o /= 2) {
        a += __shfl_down_sync(0xffffffffu, a, o);
        d += __shfl_down_sync(0xffffffffu, d, o);
    }
    if (lane == 0)
        sq[row] += (float)d * ((float)a + 1.0f);
}

/* Clip (factor from the reduced sum of squares *gsq, torch's rule), Adam, EMA: fv_adam_step per
 * element. */
__global__ void k_adam(size_t n, float *p, float *m, float *v, float *ema, float *g, const double *gsq, float clip,
                       float omb1, float b2, float omb2, float step_size, float bc2_sqrt, float eps, float decay,
                       float omd)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    float gi = g[i];
    if (clip > 0.0f) {
        float coef = clip / ((float)sqrt(*gsq) + 1e-6f);
        if (coef < 1.0f)
            g[i] = gi *= coef;
    }
    fv_adam_elem(&p[i], &m[i], &v[i], gi, omb1, b2, omb2, step_size, bc2_sqrt, eps);
    if (ema)
        ema[i] = fv_ema_elem(ema[i], p[i], decay, omd);
}

/* ---- workspace ---------------------------------------------------------------------------------- */

int fv_cuda_acts_alloc(fv_cuda_acts *a, const fv_mlp *m, size_t B)
{
    memset(a, 0, sizeof *a);
    size_t L = m->nlayers, d = m->cfg.d, wide = d, n = B * m->in[0] + 2 * B * d + B;
    for (size_t l = 0; l + 1 < L; l++) {
        n += 2 * B * m->out[l];
        wide = m->out[l] > wide ? m->out[l] : wide;
    }
    n += 2 * B * wide;
    size_t nd = FV_CUDA_REDUCE_BLOCKS + 1;
    char *mem;
    int st = fv_cuda_check(cudaMalloc((void **)&mem, nd * sizeof(double) + n * sizeof(float)), "allocating activations");
    if (st)
        return st;
    a->B = B;
    a->nlayers = L;
    a->partial = (double *)mem;
    a->scalar = a->partial + FV_CUDA_REDUCE_BLOCKS;
    float *f = (float *)(a->scalar + 1);
    a->mem = (float *)mem;
    a->input = f;
    f += B * m->in[0];
    for (size_t l = 0; l + 1 < L; l++) {
        a->pre[l] = f;
        a->post[l] = f + B * m->out[l];
        f += 2 * B * m->out[l];
    }
    a->delta[0] = f;
    a->delta[1] = f + B * wide;
    f += 2 * B * wide;
    a->v = f;
    a->dout = f + B * d;
    a->ones = f + 2 * B * d;
    if ((st = fv_cuda_fill(0, a->ones, 1.0f, B)) || (st = fv_cuda_check(cudaDeviceSynchronize(), "filling ones")))
        fv_cuda_acts_free(a);
    return st;
}

void fv_cuda_acts_free(fv_cuda_acts *a)
{
    if (a->mem)
        cudaFree(a->mem);
    memset(a, 0, sizeof *a);
}

/* ---- layers ------------------------------------------------------------------------------------- */

/* The offset of layer l's weight (is_bias = 0) or bias in the flat parameter vector. */
static size_t param_offset(const fv_mlp *m, size_t l, int is_bias)
{
    return (size_t)((is_bias ? m->b[l] : m->W[l]) - m->params);
}

/* out (B x nout) = in (B x nin) W^T, row-major: in cuBLAS's column-major terms out^T = W in^T. */
int fv_cuda_linear_forward(cublasHandle_t h, float *out, const float *in, const float *W, size_t B, size_t nin,
                          size_t nout)
{
    const float one = 1.0f, zero = 0.0f;
    return fv_cublas_check(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)nout, (int)B, (int)nin, &one, W, (int)nin,
                                       in, (int)nin, &zero, out, (int)nout),
                           "linear forward");
}

int fv_cuda_linear_backward(cublasHandle_t h, float *dinp, float *dW, float *db, const float *dout, const float *in,
                           const float *W, const float *ones, size_t B, size_t nin, size_t nout)
{
    const float one = 1.0f, zero = 0.0f;
    int st = fv_cublas_check(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, (int)nin, (int)nout, (int)B, &one, in, (int)nin,
                                         dout, (int)nout, &zero, dW, (int)nin),
                             "linear backward (weights)");
    if (!st)
        st = fv_cublas_check(cublasSgemv(h, CUBLAS_OP_N, (int)nout, (int)B, &one, dout, (int)nout, ones, 1, &zero, db, 1),
                             "linear backward (bias)");
    if (!st && dinp)
        st = fv_cublas_check(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)nin, (int)B, (int)nout, &one, W, (int)nin,
                                         dout, (int)nout, &zero, dinp, (int)nin),
                             "linear backward (input)");
    return st;
}

int fv_cuda_fill(cudaStream_t s, float *p, float v, size_t n)
{
    k_fill<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, s>>>(p, v, n);
    return fv_cuda_launched("fill");
}

int fv_cuda_bias_act(cudaStream_t s, float *pre, float *post, const float *b, size_t n, size_t nout, int act)
{
    if (post)
        k_bias_act<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, s>>>(pre, post, b, n, nout, act);
    else
        k_bias<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, s>>>(pre, b, n, nout);
    return fv_cuda_launched(post ? "bias + activation" : "bias");
}

int fv_cuda_act_backward(cudaStream_t s, float *d, const float *pre, const float *post, size_t n, int act)
{
    k_act_backward<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, s>>>(d, pre, post, n, act);
    return fv_cuda_launched("activation backward");
}

/* ---- network ------------------------------------------------------------------------------------ */

int fv_cuda_mlp_forward(cublasHandle_t h, const fv_mlp *m, const float *params, size_t B, const float *x,
                        const float *t, float *out, fv_cuda_acts *a)
{
    cudaStream_t s = fv_cublas_stream(h);
    size_t L = m->nlayers, nin = m->in[0];
    k_input<<<fv_cuda_blocks(B * nin), FV_CUDA_THREADS, 0, s>>>(a->input, x, t, B, m->cfg.d, m->cfg.temb);
    int st = fv_cuda_launched("input assembly");
    const float *hcur = a->input;
    for (size_t l = 0; l + 1 < L && !st; l++) {
        if ((st = fv_cuda_linear_forward(h, a->pre[l], hcur, params + param_offset(m, l, 0), B, m->in[l], m->out[l])))
            break;
        st = fv_cuda_bias_act(s, a->pre[l], a->post[l], params + param_offset(m, l, 1), B * m->out[l], m->out[l],
                              (int)m->cfg.act);
        hcur = a->post[l];
    }
    if (!st)
        st = fv_cuda_linear_forward(h, out, hcur, params + param_offset(m, L - 1, 0), B, m->in[L - 1], m->out[L - 1]);
    if (!st)
        st = fv_cuda_bias_act(s, out, NULL, params + param_offset(m, L - 1, 1), B * m->cfg.d, m->cfg.d, 0);
    return st;
}

/* partial[FV_CUDA_REDUCE_BLOCKS] = sum of the FV_CUDA_REDUCE_BLOCKS partials before it. */
static int reduce_partials(cudaStream_t s, double *partial)
{
    k_sum_partials<<<1, FV_CUDA_THREADS, 0, s>>>(partial + FV_CUDA_REDUCE_BLOCKS, partial, FV_CUDA_REDUCE_BLOCKS);
    return fv_cuda_launched("reduction");
}

int fv_cuda_mse_loss(cudaStream_t s, size_t n, const float *v, const float *u, float *dout, double *partial)
{
    k_mse<<<FV_CUDA_REDUCE_BLOCKS, FV_CUDA_THREADS, 0, s>>>(dout, partial, v, u, n, (float)(2.0 / (double)n));
    int st = fv_cuda_launched("loss");
    return st ? st : reduce_partials(s, partial);
}

int fv_cuda_mlp_backward(cublasHandle_t h, const fv_mlp *m, const float *params, size_t B, float *grads, float *sqnorm,
                         fv_cuda_acts *a)
{
    cudaStream_t s = fv_cublas_stream(h);
    int st = FV_OK, buf = 0;
    if (sqnorm)
        st = fv_cuda_check(cudaMemsetAsync(sqnorm, 0, B * sizeof(float), s), "clearing row norms");
    const float *dcur = a->dout;
    for (size_t l = m->nlayers; l-- > 0 && !st;) {
        const float *in = l ? a->post[l - 1] : a->input;
        float *dinp = l ? a->delta[buf] : NULL; /* the network input needs no gradient */
        if ((st = fv_cuda_linear_backward(h, dinp, grads + param_offset(m, l, 0), grads + param_offset(m, l, 1), dcur, in,
                                  params + param_offset(m, l, 0), a->ones, B, m->in[l], m->out[l])))
            break;
        if (sqnorm) {
            k_row_sqnorms<<<fv_cuda_blocks(32 * B), FV_CUDA_THREADS, 0, s>>>(sqnorm, dcur, in, B, m->in[l], m->out[l]);
            if ((st = fv_cuda_launched("row gradient norms")))
                break;
        }
        if (l) {
            st = fv_cuda_act_backward(s, dinp, a->pre[l - 1], a->post[l - 1], B * m->out[l - 1], (int)m->cfg.act);
            dcur = dinp;
            buf ^= 1;
        }
    }
    return st;
}

int fv_cuda_adam_step(cudaStream_t s, const fv_adam_config *c, uint64_t k, size_t n, float *params, float *m,
                      float *v, float *ema, float *grads, double *partial)
{
    k_sumsq<<<FV_CUDA_REDUCE_BLOCKS, FV_CUDA_THREADS, 0, s>>>(partial, grads, n);
    int st = fv_cuda_launched("gradient norm");
    if (!st)
        st = reduce_partials(s, partial);
    if (st)
        return st;
    /* the scalars of fv_adam_step, computed the same way on the host */
    double b1 = c->beta1, b2 = c->beta2;
    double bc1 = 1.0 - pow(b1, (double)k), bc2 = 1.0 - pow(b2, (double)k);
    float step_size = (float)(fv_adam_lr(c, k) / bc1), bc2_sqrt = (float)sqrt(bc2);
    float decay = c->ema_decay, omd = (float)(1.0 - (double)decay);
    k_adam<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, s>>>(n, params, m, v, ema, grads, partial + FV_CUDA_REDUCE_BLOCKS, c->clip,
                                                         (float)(1.0 - b1), c->beta2, (float)(1.0 - b2), step_size,
                                                         bc2_sqrt, c->eps, decay, omd);
    return fv_cuda_launched("adam");
}
