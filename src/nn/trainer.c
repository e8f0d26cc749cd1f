/* trainer.c: the CPU backend of the trainer (see trainer.h). */
#include "nn/trainer.h"

#include "core/error.h"

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

static int cpu_loss_grad(fv_trainer *tr, size_t B, const float *xt, const float *t, const float *u, float *loss,
                         float *sqnorm)
{
    size_t d = tr->net.cfg.d;
    int st = ensure_rows(tr, B);
    if (st)
        return st;
    float *v = malloc(2 * B * d * sizeof *v);
    if (!v)
        return fv_error(FV_ENOMEM, "out of memory for a batch of %zu", B);
    float *dout = v + B * d;
    fv_mlp_forward(&tr->net, B, xt, t, v, &tr->acts);
    *loss = fv_mse_loss(B * d, v, u, dout);
    fv_mlp_backward(&tr->net, B, dout, tr->grads, sqnorm, &tr->acts);
    free(v);
    return FV_OK;
}

static int cpu_update(fv_trainer *tr, float *gnorm)
{
    *gnorm = fv_adam_step(&tr->opt, tr->net.params, tr->grads);
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

static const fv_backend_ops cpu_ops = {"cpu", cpu_loss_grad, cpu_update, cpu_predict};

int fv_trainer_cpu_init(fv_trainer *tr, const fv_mlp_config *mc, const fv_adam_config *ac, uint64_t seed, size_t cap)
{
    memset(tr, 0, sizeof *tr);
    tr->ops = &cpu_ops;
    int st = fv_mlp_init(&tr->net, mc, seed);
    if (st)
        return st;
    if ((st = fv_adam_init(&tr->opt, ac, tr->net.nparams, tr->net.params)))
        goto fail;
    if (!(tr->grads = calloc(tr->net.nparams, sizeof *tr->grads))) {
        st = fv_error(FV_ENOMEM, "out of memory for %zu gradients", tr->net.nparams);
        goto fail;
    }
    /* the EMA network is a view: same layout, parameters in the optimizer's EMA buffer */
    tr->ema_net = tr->net;
    if (tr->opt.ema) {
        tr->ema_net.params = tr->opt.ema;
        fv_mlp_views(&tr->net, tr->opt.ema, tr->ema_net.W, tr->ema_net.b);
    }
    tr->cap = cap;
    if ((st = fv_mlp_acts_alloc(&tr->acts, &tr->net, cap)))
        goto fail;
    return FV_OK;
fail:
    fv_trainer_free(tr);
    return st;
}

void fv_trainer_free(fv_trainer *tr)
{
    fv_mlp_acts_free(&tr->acts);
    free(tr->grads);
    fv_adam_free(&tr->opt);
    fv_mlp_free(&tr->net);
    memset(tr, 0, sizeof *tr);
}
