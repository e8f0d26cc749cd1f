/* trainer.c: the host state every backend shares and the CPU backends of the trainer (see trainer.h):
 * the MLP and the U-Net, which differ only in their forward and backward. */
#include "nn/trainer.h"

#include "core/error.h"
#include "nn/cfm.h"

#include <stdlib.h>
#include <string.h>

/* Grow the activation workspace when a call needs more rows than it has. */
static int ensure_rows(fv_trainer *tr, size_t n)
{
    if (n <= tr->cap)
        return FV_OK;
    fv_mlp_acts_free(&tr->acts);
    tr->cap = n;
    return fv_mlp_acts_alloc(&tr->acts, &tr->net, n);
}

/* Grow the batch buffers (floats for the network, doubles for the pairs) to n rows. */
static int ensure_batch(fv_trainer *tr, size_t n)
{
    if (n <= tr->bcap)
        return FV_OK;
    size_t d = tr->d;
    free(tr->xt);
    free(tr->x0);
    tr->xt = malloc((2 * n * d + n) * sizeof *tr->xt);
    tr->x0 = malloc(2 * n * d * sizeof *tr->x0);
    if (!tr->xt || !tr->x0) {
        tr->bcap = 0;
        return fv_error(FV_ENOMEM, "out of memory for a batch of %zu", n);
    }
    tr->u = tr->xt + n * d;
    tr->t = tr->u + n * d;
    tr->bcap = n;
    return FV_OK;
}

static int cpu_draw(fv_trainer *tr, struct fv_cfm_data *D, uint64_t seed, uint64_t step, double t_fixed, size_t B)
{
    size_t d = tr->d, row0 = tr->shard_row0;
    int st = ensure_batch(tr, B);
    if (!st)
        st = fv_cfm_pairs_rows(D, seed, step, tr->shard_batch ? tr->shard_batch : B, row0, B, tr->x0, tr->x0 + B * d);
    if (st)
        return st;
    fv_cfm_interpolate_rows(D->p, seed, step, t_fixed, row0, B, d, tr->x0, tr->x0 + B * d, tr->xt, tr->t, tr->u);
    tr->rows = B;
    tr->batch_seed = seed;
    tr->batch_step = step;
    tr->batch_row0 = row0;
    return FV_OK;
}

static int cpu_load(fv_trainer *tr, size_t B, const float *xt, const float *t, const float *u)
{
    size_t d = tr->d;
    int st = ensure_batch(tr, B);
    if (st)
        return st;
    memcpy(tr->xt, xt, B * d * sizeof *xt);
    memcpy(tr->u, u, B * d * sizeof *u);
    memcpy(tr->t, t, B * sizeof *t);
    tr->rows = B;
    tr->batch_row0 = 0;
    return FV_OK;
}

static int cpu_loss_grad(fv_trainer *tr, float *loss, float *sqnorm)
{
    size_t B = tr->rows, d = tr->d;
    int st = ensure_rows(tr, B);
    if (st)
        return st;
    float *v = malloc(2 * B * d * sizeof *v);
    if (!v)
        return fv_error(FV_ENOMEM, "out of memory for a batch of %zu", B);
    float *dout = v + B * d;
    fv_mlp_forward(&tr->net, B, tr->xt, tr->t, v, &tr->acts);
    *loss = fv_mse_loss(B * d, v, tr->u, dout);
    fv_mlp_backward(&tr->net, B, dout, tr->grads, sqnorm, &tr->acts);
    free(v);
    return FV_OK;
}

static int cpu_update(fv_trainer *tr, float *gnorm)
{
    *gnorm = fv_adam_step(&tr->opt, tr->params, tr->grads);
    return FV_OK;
}

static int cpu_predict(fv_trainer *tr, int use_ema, size_t n, const float *x, const float *t, float *out)
{
    int st = ensure_rows(tr, n);
    if (st)
        return st;
    fv_mlp_forward(use_ema && tr->opt.ema ? &tr->ema_net : &tr->net, n, x, t, out, &tr->acts);
    return FV_OK;
}

static const fv_backend_ops cpu_ops = {"cpu", cpu_draw, cpu_load, cpu_loss_grad, cpu_update, cpu_predict,
                                       NULL, NULL, NULL, NULL};

/* ---- the U-Net on the CPU ------------------------------------------------------------------------ */

static int ensure_unet_rows(fv_trainer *tr, size_t n)
{
    if (n <= tr->cap)
        return FV_OK;
    fv_unet_acts_free(&tr->uacts);
    tr->cap = n;
    return fv_unet_acts_alloc(&tr->uacts, &tr->unet, n);
}

/* Image i of the batch alone, as the batch's masks had it: its share (1 / B) |v_i - u_i|^2 / d of the loss
 * (returned) and that share's gradient into tr->row_grads. */
static float unet_row_loss_grad(fv_trainer *tr, size_t i, float *v, float *dout)
{
    size_t B = tr->rows, d = tr->d;
    tr->uacts.dropout_row0 = tr->batch_row0 + i;
    fv_unet_forward(&tr->unet, 1, tr->xt + i * d, tr->t + i, v, &tr->uacts);
    float loss = fv_mse_loss(d, v, tr->u + i * d, dout) / (float)B;
    for (size_t k = 0; k < d; k++)
        dout[k] /= (float)B;
    fv_unet_backward(&tr->unet, 1, dout, tr->row_grads, &tr->uacts);
    return loss;
}

/* With sqnorm, one backward pass per image: a convolution's weight gradient sums over pixels as well
 * as images, so the per-image norms have no shortcut like the linear layers' (mlp.c). */
static int unet_loss_grad(fv_trainer *tr, float *loss, float *sqnorm)
{
    size_t B = tr->rows, d = tr->d;
    int st = ensure_unet_rows(tr, B);
    if (st)
        return st;
    if (sqnorm && !tr->row_grads && !(tr->row_grads = malloc(tr->nparams * sizeof *tr->row_grads)))
        return fv_error(FV_ENOMEM, "out of memory for a gradient of %zu parameters", tr->nparams);
    float *v = malloc(2 * B * d * sizeof *v);
    if (!v)
        return fv_error(FV_ENOMEM, "out of memory for a batch of %zu", B);
    float *dout = v + B * d;
    tr->uacts.train = 1;
    tr->uacts.dropout_seed = tr->batch_seed;
    tr->uacts.dropout_stream = FV_UNET_DROPOUT_STREAM(tr->batch_step);
    tr->uacts.dropout_row0 = tr->batch_row0;
    if (!sqnorm) {
        fv_unet_forward(&tr->unet, B, tr->xt, tr->t, v, &tr->uacts);
        *loss = fv_mse_loss(B * d, v, tr->u, dout);
        fv_unet_backward(&tr->unet, B, dout, tr->grads, &tr->uacts);
        free(v);
        return FV_OK;
    }
    double total = 0.0;
    memset(tr->grads, 0, tr->nparams * sizeof *tr->grads);
    for (size_t i = 0; i < B; i++) {
        total += unet_row_loss_grad(tr, i, v, dout);
        double sq = 0.0;
        for (size_t k = 0; k < tr->nparams; k++) {
            sq += (double)tr->row_grads[k] * tr->row_grads[k];
            tr->grads[k] += tr->row_grads[k];
        }
        sqnorm[i] = (float)sq;
    }
    tr->uacts.dropout_row0 = 0;
    *loss = (float)total;
    free(v);
    return FV_OK;
}

/* In chunks of the activations' capacity (the batch size): a U-Net's activations take megabytes per
 * image, so thousands of rows at once would not fit. */
static int unet_predict(fv_trainer *tr, int use_ema, size_t n, const float *x, const float *t, float *out)
{
    size_t d = tr->d, chunk = tr->cap ? tr->cap : 1;
    tr->uacts.train = 0; /* eval mode: dropout is the identity */
    for (size_t i = 0; i < n; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        fv_unet_forward(use_ema && tr->opt.ema ? &tr->ema_unet : &tr->unet, m, x + i * d, t + i, out + i * d,
                        &tr->uacts);
    }
    return FV_OK;
}

static const fv_backend_ops unet_ops = {"cpu", cpu_draw, cpu_load, unet_loss_grad, cpu_update, unet_predict,
                                        NULL, NULL, NULL, NULL};

/* The optimizer, its EMA and the gradient buffer for the network already in tr (params, nparams). */
static int optimizer_init(fv_trainer *tr, const fv_adam_config *ac)
{
    int st = fv_adam_init(&tr->opt, ac, tr->nparams, tr->params);
    if (st)
        return st;
    if (!(tr->grads = calloc(tr->nparams + FV_GRAD_TAIL, sizeof *tr->grads)))
        return fv_error(FV_ENOMEM, "out of memory for %zu gradients", tr->nparams);
    return FV_OK;
}

int fv_trainer_unet_init(fv_trainer *tr, const fv_unet_config *uc, const fv_adam_config *ac, uint64_t seed, size_t cap)
{
    memset(tr, 0, sizeof *tr);
    int st = fv_unet_init(&tr->unet, uc, seed);
    if (st)
        return st;
    tr->ops = &unet_ops;
    tr->model = FV_MODEL_UNET;
    tr->d = uc->in_channels * uc->height * uc->width;
    tr->nparams = tr->unet.nparams;
    tr->params = tr->unet.params;
    tr->ema_unet = tr->unet; /* a view: same layout, parameters in the optimizer's EMA buffer */
    if ((st = optimizer_init(tr, ac)))
        goto fail;
    tr->ema_unet.params = tr->opt.ema ? tr->opt.ema : tr->unet.params;
    tr->cap = cap;
    if ((st = fv_unet_acts_alloc(&tr->uacts, &tr->unet, cap)))
        goto fail;
    return FV_OK;
fail:
    fv_trainer_free(tr);
    return st;
}

/* ---- the MLP ------------------------------------------------------------------------------------- */

int fv_trainer_host_init(fv_trainer *tr, const fv_mlp_config *mc, const fv_adam_config *ac, uint64_t seed)
{
    memset(tr, 0, sizeof *tr);
    int st = fv_mlp_init(&tr->net, mc, seed);
    if (st)
        return st;
    tr->model = FV_MODEL_MLP;
    tr->d = mc->d;
    tr->nparams = tr->net.nparams;
    tr->params = tr->net.params;
    if ((st = optimizer_init(tr, ac)))
        goto fail;
    /* the EMA network is a view: same layout, parameters in the optimizer's EMA buffer */
    tr->ema_net = tr->net;
    if (tr->opt.ema) {
        tr->ema_net.params = tr->opt.ema;
        fv_mlp_views(&tr->net, tr->opt.ema, tr->ema_net.W, tr->ema_net.b);
    }
    return FV_OK;
fail:
    fv_trainer_free(tr);
    return st;
}

int fv_trainer_cpu_init(fv_trainer *tr, const fv_mlp_config *mc, const fv_adam_config *ac, uint64_t seed, size_t cap)
{
    int st = fv_trainer_host_init(tr, mc, ac, seed);
    if (st)
        return st;
    tr->ops = &cpu_ops;
    tr->cap = cap;
    if ((st = fv_mlp_acts_alloc(&tr->acts, &tr->net, cap)))
        fv_trainer_free(tr);
    return st;
}

/* "auto" -> cuda when a device can be used, else cpu; FV_EINPUT for another name, or tf32 on the CPU. */
static int pick_device(const char **device, int tf32)
{
    if (strcmp(*device, "auto") == 0)
        *device = fv_cuda_available() ? "cuda" : "cpu";
    if (strcmp(*device, "cuda") == 0)
        return FV_OK;
    if (strcmp(*device, "cpu") != 0)
        return fv_error(FV_EINPUT, "unknown device '%s' (expected cpu, cuda or auto)", *device);
    if (tf32)
        return fv_error(FV_EINPUT, "--precision tf32 needs the cuda device (the CPU trainer computes in fp32)");
    return FV_OK;
}

int fv_trainer_init(fv_trainer *tr, const char *device, const fv_mlp_config *mc, const fv_adam_config *ac,
                    uint64_t seed, size_t cap, int tf32)
{
    if (mc->fourier && strcmp(device, "auto") == 0)
        device = "cpu"; /* the CUDA MLP has no Fourier input features */
    int st = pick_device(&device, tf32);
    if (st)
        return st;
    if (strcmp(device, "cuda") == 0 && mc->fourier)
        return fv_error(FV_EINPUT, "an MLP with Fourier features runs on the CPU only (--device cpu)");
    if (strcmp(device, "cuda") == 0)
        return fv_trainer_cuda_init(tr, mc, ac, seed, cap, tf32);
    return fv_trainer_cpu_init(tr, mc, ac, seed, cap);
}

int fv_trainer_unet_init_on(fv_trainer *tr, const char *device, const fv_unet_config *uc, const fv_adam_config *ac,
                            uint64_t seed, size_t cap, int tf32)
{
    int st = pick_device(&device, tf32);
    if (st)
        return st;
    if (strcmp(device, "cuda") == 0)
        return fv_trainer_unet_cuda_init(tr, uc, ac, seed, cap, tf32);
    return fv_trainer_unet_init(tr, uc, ac, seed, cap);
}

#ifndef FV_HAVE_CUDA
/* This build has no CUDA backend (no nvcc when it was built). */
int fv_cuda_available(void) { return 0; }

int fv_cuda_use_device(size_t index)
{
    (void)index;
    return FV_OK;
}

void fv_cuda_comm_free(void *comm) { (void)comm; }

static int no_cuda(fv_trainer *tr)
{
    memset(tr, 0, sizeof *tr);
    return fv_error(FV_EINPUT, "this flowvar was built without CUDA (nvcc was not found at build time): use --device cpu");
}

int fv_trainer_cuda_init(fv_trainer *tr, const fv_mlp_config *mc, const fv_adam_config *ac, uint64_t seed, size_t cap,
                         int tf32)
{
    (void)mc, (void)ac, (void)seed, (void)cap, (void)tf32;
    return no_cuda(tr);
}

int fv_trainer_unet_cuda_init(fv_trainer *tr, const fv_unet_config *uc, const fv_adam_config *ac, uint64_t seed,
                              size_t cap, int tf32)
{
    (void)uc, (void)ac, (void)seed, (void)cap, (void)tf32;
    return no_cuda(tr);
}
#endif

void fv_trainer_free(fv_trainer *tr)
{
    if (tr->ops && tr->ops->release)
        tr->ops->release(tr);
    fv_mlp_acts_free(&tr->acts);
    fv_unet_acts_free(&tr->uacts);
    free(tr->xt);
    free(tr->x0);
    free(tr->grads);
    free(tr->row_grads);
    fv_adam_free(&tr->opt);
    fv_mlp_free(&tr->net);
    fv_unet_free(&tr->unet);
    memset(tr, 0, sizeof *tr);
}
