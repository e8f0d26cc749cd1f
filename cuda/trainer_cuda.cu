/* trainer_cuda.cu: the CUDA backend of the trainer (src/nn/trainer.h). Weights, Adam moments, EMA and
 * gradients live in one device allocation; batches are drawn on the device from the same Philox
 * counters as the CPU path (fv_cfm_pairs / fv_cfm_interpolate in src/nn/cfm.c), so a seed gives the
 * same training data on both; the host copies in fv_trainer are synced only for checkpoints (pull,
 * push). Two waits per step: the loss (checked for NaN by the loop) and the gradient norm (logged). */
#include "cuda/mlp_cuda.h"
#include "cuda/unet_cuda.h"

extern "C" {
#include "core/philox.h"
#include "gaussian/noise.h"
#include "nn/dist.h"
}

#include <dlfcn.h>
/* NCCL for data-parallel runs (nn/dist.h) where its header is present; its library is loaded when a
 * job first reduces, not linked, so that flowvar starts on machines without it. */
#if __has_include(<nccl.h>)
#include <nccl.h>
#define FV_HAVE_NCCL 1
#endif

/* Philox streams of one step, as in cfm.c. */
#define STREAM_PAIRS(step) (2 * (step))
#define STREAM_INTERP(step) (2 * (step) + 1)

typedef struct {
    cublasHandle_t h;
    cudaStream_t s;
    float *mem;                         /* params | m | v | ema | grads (ema only with an EMA), then
                                           FV_GRAD_TAIL floats reduced with the gradient (nn/dist.c) */
    float *params, *m, *v, *grads, *ema;
    fv_cuda_acts acts;                  /* MLP: for `cap` rows */
    fv_cuda_unet_acts uacts;            /* U-Net: for `cap` images */
    size_t cap;
    double *partial;                    /* the model workspace's reduction partials (acts' or uacts') */
    float *xt, *t, *u, *sq;             /* the batch, bcap rows */
    double *x01;                        /* its pairs: x0 then x1, bcap x d each */
    size_t bcap;
    double *host_pairs;                 /* pinned staging for pairs drawn on the host (mixtures) */
    size_t host_cap;
    double *host_scalar;                /* pinned: a reduced sum read back */
    uint64_t data_id;                   /* the data source whose constants are uploaded below */
    double *data;                       /* one allocation: */
    double *m0, *root0, *m1, *root1, *K, *a, *b;
    int std_source;                     /* m0 = 0 and root0 = I exactly: x0 is the normals themselves */
} cuda_state;

static cuda_state *state_of(fv_trainer *tr) { return (cuda_state *)tr->dev; }

/* ---- batches on the device ---------------------------------------------------------------------- */

/* z[k] = normal k0 + k of the stream from block pos0 on (fv_rng_normal: two per block). */
__global__ void k_normals(double *z, size_t n, uint64_t seed, uint64_t stream, uint64_t pos0, size_t k0)
{
    size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (k >= n)
        return;
    double z0, z1;
    size_t g = k0 + k;
    fv_philox_normal2(seed, stream, pos0 + g / 2, &z0, &z1);
    z[k] = (g & 1) ? z1 : z0;
}

/* X (n x d) = rows of mean, minus `sub` (per column) when sub is not NULL: X = x - sub otherwise. */
__global__ void k_rows(double *X, const double *x, const double *add, const double *sub, size_t n, size_t d)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n * d)
        return;
    X[i] = x ? x[i] - sub[i % d] : add[i % d];
}

/* Row i takes pair k = floor(u npairs), u the (row0 + i)-th uniform of the stream (fv_cfm_pairs, PAIRS). */
__global__ void k_gather(double *x0, double *x1, const double *a, const double *b, size_t npairs, size_t B,
                         size_t d, uint64_t seed, uint64_t stream, size_t row0)
{
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= B * d)
        return;
    size_t i = e / d, j = e % d;
    fv_philox_ctr c = fv_philox_block(seed, stream, row0 + i);
    size_t k = (size_t)(fv_philox_u01(c.v[0], c.v[1]) * (double)npairs);
    k = k < npairs ? k : npairs - 1;
    x0[e] = a[k * d + j];
    x1[e] = b[k * d + j];
}

/* The interpolant of fv_cfm_interpolate_rows, one thread per element: row i's time from block
 * (row0 + i) (d + 1) of the stream (unless t_fixed >= 0), its j-th noise from the first normal of the
 * block after. */
__global__ void k_interpolate(float *xt, float *t, float *u, const double *x0, const double *x1, size_t B, size_t d,
                              uint64_t seed, uint64_t stream, size_t row0, double t_fixed, fv_schedule sched,
                              double sigma, int deriv)
{
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= B * d)
        return;
    size_t i = e / d, j = e % d;
    int uniform = t_fixed < 0;
    uint64_t base = (uint64_t)(row0 + i) * (d + (uniform ? 1 : 0));
    double ti = t_fixed, f, fp;
    if (uniform) {
        fv_philox_ctr c = fv_philox_block(seed, stream, base);
        ti = fv_philox_u01(c.v[0], c.v[1]);
    }
    fv_noise(sched, sigma, ti, &f, &fp);
    if (j == 0)
        t[i] = (float)ti;
    double a = x0[e], b = x1[e];
    if (f == 0.0 && !(deriv && fp != 0.0)) {
        xt[e] = (float)((1 - ti) * a + ti * b);
        u[e] = (float)(b - a);
        return;
    }
    double z, unused;
    fv_philox_normal2(seed, stream, base + (uniform ? 1 : 0) + j, &z, &unused);
    xt[e] = (float)((1 - ti) * a + ti * b + f * z);
    u[e] = (float)(b - a + (deriv ? fp * z : 0.0));
}

static int ensure_batch(fv_trainer *tr, size_t B)
{
    cuda_state *S = state_of(tr);
    if (B <= S->bcap)
        return FV_OK;
    size_t d = tr->d;
    cudaFree(S->xt);
    cudaFree(S->x01);
    S->xt = NULL;
    S->x01 = NULL;
    S->bcap = 0;
    int st = fv_cuda_check(cudaMalloc((void **)&S->xt, (2 * B * d + 2 * B) * sizeof(float)), "allocating a batch");
    if (!st)
        st = fv_cuda_check(cudaMalloc((void **)&S->x01, 2 * B * d * sizeof(double)), "allocating a batch");
    if (st)
        return st;
    S->u = S->xt + B * d;
    S->t = S->u + B * d;
    S->sq = S->t + B;
    S->bcap = B;
    return FV_OK;
}

/* The model's activation workspace for B rows (images). */
static int ensure_acts(fv_trainer *tr, size_t B)
{
    cuda_state *S = state_of(tr);
    if (B <= S->cap)
        return FV_OK;
    int unet = tr->model == FV_MODEL_UNET, st;
    fv_cuda_acts_free(&S->acts);
    fv_cuda_unet_acts_free(&S->uacts);
    S->cap = 0;
    if ((st = unet ? fv_cuda_unet_acts_alloc(&S->uacts, &tr->unet, B) : fv_cuda_acts_alloc(&S->acts, &tr->net, B)))
        return st;
    S->cap = B;
    S->partial = unet ? S->uacts.partial : S->acts.partial;
    return FV_OK;
}

static int upload(double *dst, const double *src, size_t n)
{
    return fv_cuda_check(cudaMemcpy(dst, src, n * sizeof *dst, cudaMemcpyHostToDevice), "uploading data constants");
}

/* The coupling map's matrix K of x1 = m1 + K (x0 - m0): the rotation field keeps it; the OT field keeps
 * K - I = V diag(l) V^T. */
static void map_matrix(const fv_field *f, double *K)
{
    size_t d = f->d;
    if (f->K) {
        memcpy(K, f->K, d * d * sizeof *K);
        return;
    }
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < d; j++) {
            double s = 0.0;
            for (size_t k = 0; k < d; k++)
                s += f->V[i * d + k] * (1.0 + f->l[k]) * f->V[j * d + k];
            K[i * d + j] = s;
        }
}

/* Upload what a data source's batches are made from, once per source (kept until another comes). */
static int ensure_data(fv_trainer *tr, const fv_cfm_data *D)
{
    cuda_state *S = state_of(tr);
    if (S->data_id == D->id)
        return FV_OK;
    cudaFree(S->data);
    S->data = NULL;
    S->data_id = 0;
    size_t d = D->d, n = D->kind == FV_DATA_PAIRS ? 2 * D->npairs * d : 3 * d * d + 2 * d;
    if (D->kind == FV_DATA_GMM || D->kind == FV_DATA_TARGETS)
        return FV_OK; /* mixtures and target sets are drawn on the host */
    int st = fv_cuda_check(cudaMalloc((void **)&S->data, n * sizeof(double)), "allocating data constants");
    if (st)
        return st;
    if (D->kind == FV_DATA_PAIRS) {
        S->a = S->data;
        S->b = S->a + D->npairs * d;
        if ((st = upload(S->a, D->a, D->npairs * d)) || (st = upload(S->b, D->b, D->npairs * d)))
            return st;
    } else {
        const fv_problem *p = D->p;
        S->m0 = S->data;
        S->m1 = S->m0 + d;
        S->root0 = S->m1 + d;
        S->root1 = S->root0 + d * d;
        S->K = S->root1 + d * d;
        S->std_source = D->std_source;
        if ((st = upload(S->m0, p->m0, d)) || (st = upload(S->m1, p->m1, d)) || (st = upload(S->root0, D->root0, d * d)))
            return st;
        if (D->root1 && (st = upload(S->root1, D->root1, d * d)))
            return st;
        if (p->coupling != FV_COUPLING_INDEPENDENT) {
            double *K = (double *)malloc(d * d * sizeof *K);
            if (!K)
                return fv_error(FV_ENOMEM, "out of memory for a %zu-dimensional map", d);
            map_matrix(&D->map, K);
            st = upload(S->K, K, d * d);
            free(K);
            if (st)
                return st;
        }
    }
    S->data_id = D->id;
    return FV_OK;
}

/* X (B x d) = mean + z root^T, z the normals of `stream` from normal k0 after block pos0 on (sample_rooted
 * of cfm.c: k0 = row0 d for a shard). The standard source skips the product: z I + 0 is z exactly. */
static int sample_rooted(cuda_state *S, double *X, double *z, const double *mean, const double *root, int identity,
                         size_t B, size_t d, uint64_t seed, uint64_t stream, uint64_t pos0, size_t k0)
{
    size_t n = B * d;
    k_normals<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, S->s>>>(identity ? X : z, n, seed, stream, pos0, k0);
    int st = fv_cuda_launched("normals");
    if (st || identity)
        return st;
    k_rows<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, S->s>>>(X, NULL, mean, NULL, B, d);
    const double one = 1.0;
    if (!(st = fv_cuda_launched("mean rows")))
        st = fv_cublas_check(cublasDgemm(S->h, CUBLAS_OP_T, CUBLAS_OP_N, (int)d, (int)B, (int)d, &one, root, (int)d, z,
                                         (int)d, &one, X, (int)d),
                             "sampling a Gaussian");
    return st;
}

/* x1 = m1 + (x0 - m0) K^T (fv_field_map), with dx as scratch. */
static int map_pairs(cuda_state *S, double *x1, const double *x0, double *dx, size_t B, size_t d)
{
    size_t n = B * d;
    k_rows<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, S->s>>>(dx, x0, NULL, S->m0, B, d);
    k_rows<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, S->s>>>(x1, NULL, S->m1, NULL, B, d);
    const double one = 1.0;
    int st = fv_cuda_launched("map rows");
    if (!st)
        st = fv_cublas_check(cublasDgemm(S->h, CUBLAS_OP_T, CUBLAS_OP_N, (int)d, (int)B, (int)d, &one, S->K, (int)d, dx,
                                         (int)d, &one, x1, (int)d),
                             "coupling map");
    return st;
}

/* Rows [row0, row0 + B) of the step's batch of `total` rows. */
static int draw_pairs(fv_trainer *tr, fv_cfm_data *D, uint64_t seed, uint64_t step, size_t total, size_t row0,
                      size_t B)
{
    cuda_state *S = state_of(tr);
    size_t d = D->d, n = B * d;
    double *x0 = S->x01, *x1 = x0 + n;
    uint64_t stream = STREAM_PAIRS(step);
    int st;
    switch (D->kind) {
    case FV_DATA_PAIRS:
        k_gather<<<fv_cuda_blocks(n), FV_CUDA_THREADS, 0, S->s>>>(x0, x1, S->a, S->b, D->npairs, B, d, seed, stream,
                                                                   row0);
        return fv_cuda_launched("gathering pairs");
    case FV_DATA_GMM:
    case FV_DATA_TARGETS:
        if (B > S->host_cap) {
            cudaFreeHost(S->host_pairs);
            S->host_cap = 0;
            if ((st = fv_cuda_check(cudaMallocHost((void **)&S->host_pairs, 2 * n * sizeof(double)), "pinned memory")))
                return st;
            S->host_cap = B;
        }
        if ((st = fv_cfm_pairs_rows(D, seed, step, total, row0, B, S->host_pairs, S->host_pairs + n)))
            return st;
        return fv_cuda_check(cudaMemcpyAsync(x0, S->host_pairs, 2 * n * sizeof(double), cudaMemcpyHostToDevice, S->s),
                             "uploading pairs");
    case FV_DATA_PROBLEM: {
        /* the normals of x0 go into x1's room (x1 is written after), then x1's into the float batch
         * buffers (2 B d floats = B d doubles, overwritten by the interpolant afterwards) */
        double *z = (double *)S->xt;
        if ((st = sample_rooted(S, x0, x1, S->m0, S->root0, S->std_source, B, d, seed, stream, 0, row0 * d)))
            return st;
        if (D->p->coupling == FV_COUPLING_INDEPENDENT)
            return sample_rooted(S, x1, z, S->m1, S->root1, 0, B, d, seed, stream, (total * d + 1) / 2, row0 * d);
        return map_pairs(S, x1, x0, z, B, d);
    }
    }
    return fv_error(FV_EINPUT, "unknown data source %d", (int)D->kind);
}

/* ---- backend operations ------------------------------------------------------------------------- */

static int cuda_draw(fv_trainer *tr, struct fv_cfm_data *D, uint64_t seed, uint64_t step, double t_fixed, size_t B)
{
    cuda_state *S = state_of(tr);
    size_t d = tr->d, row0 = tr->shard_row0, total = tr->shard_batch ? tr->shard_batch : B;
    int st;
    if ((st = ensure_batch(tr, B)) || (st = ensure_data(tr, D)) || (st = draw_pairs(tr, D, seed, step, total, row0, B)))
        return st;
    const fv_problem *p = D->p;
    k_interpolate<<<fv_cuda_blocks(B * d), FV_CUDA_THREADS, 0, S->s>>>(
        S->xt, S->t, S->u, S->x01, S->x01 + B * d, B, d, seed, STREAM_INTERP(step), row0, t_fixed, p->schedule,
        p->sigma, p->deriv_term);
    if (!(st = fv_cuda_launched("interpolant"))) {
        tr->rows = B;
        tr->batch_seed = seed; /* the U-Net's dropout masks follow the batch, as on the CPU */
        tr->batch_step = step;
        tr->batch_row0 = row0;
    }
    return st;
}

static int cuda_load(fv_trainer *tr, size_t B, const float *xt, const float *t, const float *u)
{
    cuda_state *S = state_of(tr);
    size_t d = tr->d;
    int st = ensure_batch(tr, B);
    if (!st)
        st = fv_cuda_check(cudaMemcpyAsync(S->xt, xt, B * d * sizeof *xt, cudaMemcpyHostToDevice, S->s), "batch");
    if (!st)
        st = fv_cuda_check(cudaMemcpyAsync(S->u, u, B * d * sizeof *u, cudaMemcpyHostToDevice, S->s), "batch");
    if (!st)
        st = fv_cuda_check(cudaMemcpyAsync(S->t, t, B * sizeof *t, cudaMemcpyHostToDevice, S->s), "batch");
    if (!st) {
        tr->rows = B;
        tr->batch_row0 = 0;
    }
    return st;
}

/* The reduced sum (after the partials) on the host: the step's one wait. */
static int read_scalar(cuda_state *S, double *out)
{
    int st = fv_cuda_check(cudaMemcpyAsync(S->host_scalar, S->partial + FV_CUDA_REDUCE_BLOCKS, sizeof(double),
                                           cudaMemcpyDeviceToHost, S->s),
                           "reading a sum");
    if (!st)
        st = fv_cuda_check(cudaStreamSynchronize(S->s), "a training step");
    *out = *S->host_scalar;
    return st;
}

static int cuda_loss_grad(fv_trainer *tr, float *loss, float *sqnorm)
{
    cuda_state *S = state_of(tr);
    size_t B = tr->rows, d = tr->d;
    double sum;
    int st;
    if ((st = ensure_acts(tr, B)) ||
        (st = fv_cuda_mlp_forward(S->h, &tr->net, S->params, B, S->xt, S->t, S->acts.v, &S->acts)) ||
        (st = fv_cuda_mse_loss(S->s, B * d, S->acts.v, S->u, S->acts.dout, S->partial)) ||
        (st = fv_cuda_mlp_backward(S->h, &tr->net, S->params, B, S->grads, sqnorm ? S->sq : NULL, &S->acts)))
        return st;
    if (sqnorm) {
        st = fv_cuda_check(cudaMemcpyAsync(sqnorm, S->sq, B * sizeof *sqnorm, cudaMemcpyDeviceToHost, S->s), "norms");
        if (!st)
            st = fv_cuda_check(cudaMemcpyAsync(tr->grads, S->grads, tr->nparams * sizeof(float),
                                               cudaMemcpyDeviceToHost, S->s),
                               "gradients");
        if (st)
            return st;
    }
    st = read_scalar(S, &sum);
    *loss = (float)(sum / (double)(B * d));
    return st;
}

static int cuda_update(fv_trainer *tr, float *gnorm)
{
    cuda_state *S = state_of(tr);
    double sum;
    int st = fv_cuda_adam_step(S->s, &tr->opt.c, tr->opt.step + 1, tr->nparams, S->params, S->m, S->v, S->ema,
                               S->grads, S->partial);
    if (!st)
        st = read_scalar(S, &sum);
    if (!st) {
        tr->opt.step++;
        *gnorm = (float)sqrt(sum);
    }
    return st;
}

/* v of the n points in the batch buffers with the weights w, into *v (the workspace's output); the
 * U-Net in eval mode (no dropout). */
static int forward_points(fv_trainer *tr, const float *w, size_t n, float **v)
{
    cuda_state *S = state_of(tr);
    if (tr->model == FV_MODEL_UNET) {
        S->uacts.a.train = 0;
        *v = S->uacts.v;
        return fv_cuda_unet_forward(S->h, &tr->unet, w, n, S->xt, S->t, *v, &S->uacts);
    }
    *v = S->acts.v;
    return fv_cuda_mlp_forward(S->h, &tr->net, w, n, S->xt, S->t, *v, &S->acts);
}

/* Overwrites the batch (its buffers carry the points). */
static int cuda_predict(fv_trainer *tr, int use_ema, size_t n, const float *x, const float *t, float *out)
{
    cuda_state *S = state_of(tr);
    size_t d = tr->d;
    const float *w = use_ema && S->ema ? S->ema : S->params;
    float *v;
    int st;
    if ((st = ensure_batch(tr, n)) || (st = ensure_acts(tr, n)))
        return st;
    tr->rows = 0;
    if ((st = fv_cuda_check(cudaMemcpyAsync(S->xt, x, n * d * sizeof *x, cudaMemcpyHostToDevice, S->s), "points")) ||
        (st = fv_cuda_check(cudaMemcpyAsync(S->t, t, n * sizeof *t, cudaMemcpyHostToDevice, S->s), "times")) ||
        (st = forward_points(tr, w, n, &v)) ||
        (st = fv_cuda_check(cudaMemcpyAsync(out, v, n * d * sizeof *out, cudaMemcpyDeviceToHost, S->s), "output")))
        return st;
    return fv_cuda_check(cudaStreamSynchronize(S->s), "prediction");
}

/* The U-Net's loss and gradient: training-mode dropout with the batch's masks (trainer.c's rule). */
static int cuda_unet_loss_grad(fv_trainer *tr, float *loss, float *sqnorm)
{
    cuda_state *S = state_of(tr);
    fv_cuda_unet_acts *w = &S->uacts;
    size_t B = tr->rows, d = tr->d;
    double sum;
    int st;
    if (sqnorm)
        return fv_error(FV_EINPUT, "per-sample gradient norms of the U-Net run on the CPU only (--device cpu)");
    if ((st = ensure_acts(tr, B)))
        return st;
    w->a.train = 1;
    w->a.dropout_seed = tr->batch_seed;
    w->a.dropout_stream = FV_UNET_DROPOUT_STREAM(tr->batch_step);
    w->a.dropout_row0 = tr->batch_row0;
    if ((st = fv_cuda_unet_forward(S->h, &tr->unet, S->params, B, S->xt, S->t, w->v, w)) ||
        (st = fv_cuda_mse_loss(S->s, B * d, w->v, S->u, w->dout, S->partial)) ||
        (st = fv_cuda_unet_backward(S->h, &tr->unet, S->params, B, w->dout, S->grads, w)))
        return st;
    st = read_scalar(S, &sum);
    *loss = (float)(sum / (double)(B * d));
    return st;
}

/* The state vectors of the host and the device, in the same order. */
static void state_pairs(fv_trainer *tr, float **host, float **dev, size_t *count)
{
    cuda_state *S = state_of(tr);
    host[0] = tr->params, dev[0] = S->params;
    host[1] = tr->opt.m, dev[1] = S->m;
    host[2] = tr->opt.v, dev[2] = S->v;
    host[3] = tr->opt.ema, dev[3] = S->ema;
    *count = S->ema ? 4 : 3;
}

static int copy_state(fv_trainer *tr, int to_host)
{
    float *host[4], *dev[4];
    size_t count, bytes = tr->nparams * sizeof(float);
    state_pairs(tr, host, dev, &count);
    for (size_t k = 0; k < count; k++) {
        cudaError_t e = to_host ? cudaMemcpy(host[k], dev[k], bytes, cudaMemcpyDeviceToHost)
                                : cudaMemcpy(dev[k], host[k], bytes, cudaMemcpyHostToDevice);
        int st = fv_cuda_check(e, to_host ? "downloading the trainer state" : "uploading the trainer state");
        if (st)
            return st;
    }
    return FV_OK;
}

static int cuda_pull(fv_trainer *tr) { return copy_state(tr, 1); }
static int cuda_push(fv_trainer *tr) { return copy_state(tr, 0); }

static void cuda_release(fv_trainer *tr)
{
    cuda_state *S = state_of(tr);
    if (!S)
        return;
    fv_cuda_acts_free(&S->acts);
    fv_cuda_unet_acts_free(&S->uacts);
    cudaFree(S->mem);
    cudaFree(S->xt);
    cudaFree(S->x01);
    cudaFree(S->data);
    cudaFreeHost(S->host_pairs);
    cudaFreeHost(S->host_scalar);
    if (S->h)
        cublasDestroy(S->h);
    if (S->s)
        cudaStreamDestroy(S->s);
    free(S);
    tr->dev = NULL;
}

/* ---- data parallel: NCCL ------------------------------------------------------------------------ */

#ifdef FV_HAVE_NCCL
/* The NCCL calls a job makes, from libnccl.so.2 (dlopen: see the include above). */
typedef struct {
    ncclResult_t (*get_id)(ncclUniqueId *);
    ncclResult_t (*init_rank)(ncclComm_t *, int, ncclUniqueId, int);
    ncclResult_t (*all_reduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t);
    ncclResult_t (*destroy)(ncclComm_t);
    const char *(*error_string)(ncclResult_t);
} nccl_api;

static nccl_api nccl;

static int nccl_load(void)
{
    static void *lib;
    if (lib)
        return FV_OK;
    if (!(lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL)))
        return fv_error(FV_EDEVICE, "a multi-GPU run needs NCCL, which did not load (%s): put the folder of "
                                    "libnccl.so.2 on LD_LIBRARY_PATH",
                        dlerror());
    *(void **)&nccl.get_id = dlsym(lib, "ncclGetUniqueId");
    *(void **)&nccl.init_rank = dlsym(lib, "ncclCommInitRank");
    *(void **)&nccl.all_reduce = dlsym(lib, "ncclAllReduce");
    *(void **)&nccl.destroy = dlsym(lib, "ncclCommDestroy");
    *(void **)&nccl.error_string = dlsym(lib, "ncclGetErrorString");
    if (!nccl.get_id || !nccl.init_rank || !nccl.all_reduce || !nccl.destroy || !nccl.error_string) {
        dlclose(lib);
        lib = NULL;
        return fv_error(FV_EDEVICE, "libnccl.so.2 lacks the calls flowvar makes (ncclAllReduce, ...)");
    }
    return FV_OK;
}

static int nccl_check(ncclResult_t r, const char *what)
{
    return r == ncclSuccess ? FV_OK : fv_error(FV_EDEVICE, "NCCL: %s: %s", what, nccl.error_string(r));
}

/* The job's communicator, made once: rank 0's id sent to all over MPI. */
static int nccl_comm(fv_dist *g, ncclComm_t *comm)
{
    ncclUniqueId id;
    int st = nccl_load();
    if (!st && g->rank == 0)
        st = nccl_check(nccl.get_id(&id), "a communicator id");
    /* every rank takes part in the broadcast, a failed one too, so that none waits for it */
    int agreed = fv_dist_agree(g, st);
    if (!agreed)
        agreed = fv_dist_bcast(g, &id, sizeof id);
    if (!agreed && !(agreed = nccl_check(nccl.init_rank(comm, g->size, id, g->rank), "joining the job")))
        g->gpu = *comm;
    return agreed;
}

/* The gradient and the tail averaged over the ranks, in place on the device (ncclAvg: the sum times
 * 1 / R, the mean of the ranks' shard means). */
static int cuda_allreduce(fv_trainer *tr, struct fv_dist *g, float *tail)
{
    cuda_state *S = state_of(tr);
    float *dtail = S->grads + tr->nparams;
    ncclComm_t comm = (ncclComm_t)g->gpu;
    int st = comm ? FV_OK : nccl_comm(g, &comm);
    if (!st)
        st = fv_cuda_check(cudaMemcpyAsync(dtail, tail, FV_GRAD_TAIL * sizeof *tail, cudaMemcpyHostToDevice, S->s),
                           "the step's scalars");
    if (!st)
        st = nccl_check(nccl.all_reduce(S->grads, S->grads, tr->nparams + FV_GRAD_TAIL, ncclFloat, ncclAvg, comm, S->s),
                        "the gradient reduction");
    if (!st)
        st = fv_cuda_check(cudaMemcpyAsync(tail, dtail, FV_GRAD_TAIL * sizeof *tail, cudaMemcpyDeviceToHost, S->s),
                           "the step's scalars");
    if (!st)
        st = fv_cuda_check(cudaStreamSynchronize(S->s), "the gradient reduction");
    return st;
}

extern "C" void fv_cuda_comm_free(void *comm)
{
    if (comm)
        nccl.destroy((ncclComm_t)comm);
}
#else
static int cuda_allreduce(fv_trainer *tr, struct fv_dist *g, float *tail)
{
    (void)tr, (void)g, (void)tail;
    return fv_error(FV_EDEVICE, "this flowvar was built without NCCL's header (nccl.h), so it trains on one GPU "
                                "per job: run one process, or rebuild where nccl.h is on the CUDA include path");
}

extern "C" void fv_cuda_comm_free(void *comm) { (void)comm; }
#endif

extern "C" int fv_cuda_use_device(size_t index)
{
    int n = 0;
    int st = fv_cuda_check(cudaGetDeviceCount(&n), "counting devices");
    return st || n == 0 ? st : fv_cuda_check(cudaSetDevice((int)(index % (size_t)n)), "choosing this rank's device");
}

static const fv_backend_ops cuda_ops = {"cuda", cuda_draw, cuda_load, cuda_loss_grad, cuda_update, cuda_predict,
                                        cuda_pull, cuda_push, cuda_release, cuda_allreduce};
static const fv_backend_ops cuda_unet_ops = {"cuda", cuda_draw, cuda_load, cuda_unet_loss_grad, cuda_update,
                                             cuda_predict, cuda_pull, cuda_push, cuda_release, cuda_allreduce};

extern "C" int fv_cuda_available(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    cudaGetLastError(); /* clear the sticky "no device" status */
    return e == cudaSuccess && n > 0;
}

static int refuse_without_device(fv_trainer *tr)
{
    memset(tr, 0, sizeof *tr);
    return fv_error(FV_EINPUT, "no CUDA device is available: use --device cpu");
}

/* The device side of a trainer whose host side (network, Adam, EMA) tr holds: the state vectors
 * uploaded, the stream, the cuBLAS handle (TF32 tensor cores when tf32), activations for cap rows. */
static int device_init(fv_trainer *tr, const fv_backend_ops *ops, size_t cap, int tf32)
{
    cuda_state *S = (cuda_state *)calloc(1, sizeof *S);
    int st;
    if (!S) {
        fv_trainer_free(tr);
        return fv_error(FV_ENOMEM, "out of memory for the CUDA trainer");
    }
    tr->dev = S;
    tr->ops = ops;
    size_t np = tr->nparams, nvec = tr->opt.ema ? 5 : 4;
    if (!(st = fv_cuda_check(cudaMalloc((void **)&S->mem, (nvec * np + FV_GRAD_TAIL) * sizeof(float)),
                             "allocating parameters"))) {
        S->params = S->mem;
        S->m = S->params + np;
        S->v = S->m + np;
        S->ema = tr->opt.ema ? S->v + np : NULL;
        S->grads = S->v + (nvec - 3) * np;
        st = cuda_push(tr);
    }
    if (!st)
        st = fv_cuda_check(cudaStreamCreate(&S->s), "creating a stream");
    if (!st)
        st = fv_cuda_check(cudaMallocHost((void **)&S->host_scalar, sizeof(double)), "pinned memory");
    if (!st && !(st = fv_cublas_check(cublasCreate(&S->h), "creating the cuBLAS handle")) &&
        !(st = fv_cublas_check(cublasSetStream(S->h, S->s), "cuBLAS stream")))
        st = fv_cublas_check(cublasSetMathMode(S->h, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
                             "cuBLAS math mode");
    if (!st)
        st = ensure_acts(tr, cap);
    if (st)
        fv_trainer_free(tr);
    return st;
}

extern "C" int fv_trainer_cuda_init(fv_trainer *tr, const fv_mlp_config *mc, const fv_adam_config *ac, uint64_t seed,
                                    size_t cap, int tf32)
{
    if (!fv_cuda_available())
        return refuse_without_device(tr);
    int st = fv_trainer_host_init(tr, mc, ac, seed);
    return st ? st : device_init(tr, &cuda_ops, cap, tf32);
}

extern "C" int fv_trainer_unet_cuda_init(fv_trainer *tr, const fv_unet_config *uc, const fv_adam_config *ac,
                                         uint64_t seed, size_t cap, int tf32)
{
    if (!fv_cuda_available())
        return refuse_without_device(tr);
    /* The CPU trainer's host side; its one-image CPU workspace is never used here. */
    int st = fv_trainer_unet_init(tr, uc, ac, seed, 1);
    if (st)
        return st;
    fv_unet_acts_free(&tr->uacts);
    tr->cap = 0;
    return device_init(tr, &cuda_unet_ops, cap, tf32);
}
