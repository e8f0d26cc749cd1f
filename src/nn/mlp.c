/* mlp.c: the flow-matching MLP on the CPU (see mlp.h): configuration, torch-default initialisation,
 * forward and backward over a batch with cblas_sgemm, exact per-row gradient norms, the MSE loss.
 * The per-element formulas (activations, time embedding) are in nn_math.h, shared with the GPU. */
#include "nn/mlp.h"

#include "core/error.h"
#include "core/rng.h"
#include "core/size.h"
#include "nn/nn_math.h"
#include "nn/par.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* nn_math.h keeps its own activation codes (device code includes it alone); they must agree. */
_Static_assert(FV_ACT_SILU == FV_NNM_SILU && FV_ACT_SELU == FV_NNM_SELU && FV_ACT_RELU == FV_NNM_RELU &&
                   FV_ACT_TANH == FV_NNM_TANH,
               "fv_act and nn_math.h activation codes differ");

/* ---- configuration --------------------------------------------------------------------------- */

/* Above this a size is surely a mistake, and below it every product we form fits a size_t and an
 * OpenBLAS int (blasint is 32-bit in Debian's libopenblas). */
#define FV_MLP_DIM_LIMIT ((size_t)1 << 24)

int fv_mlp_config_check(const fv_mlp_config *c)
{
    if (!c)
        return fv_error(FV_EINPUT, "mlp: no configuration");
    if (c->d == 0)
        return fv_error(FV_EINPUT, "mlp: data dimension d must be >= 1 (got 0)");
    if (c->width == 0)
        return fv_error(FV_EINPUT, "mlp: hidden width must be >= 1 (got 0)");
    if (c->depth == 0)
        return fv_error(FV_EINPUT, "mlp: depth (number of hidden layers) must be >= 1 (got 0)");
    if (c->depth + 1 > FV_MLP_MAX_LAYERS)
        return fv_error(FV_EINPUT, "mlp: depth %zu exceeds the maximum %d hidden layers", c->depth,
                        FV_MLP_MAX_LAYERS - 1);
    if (c->temb % 2 != 0)
        return fv_error(FV_EINPUT, "mlp: time embedding dimension must be even (cos and sin halves), got %zu",
                        c->temb);
    if ((unsigned)c->act > FV_ACT_TANH)
        return fv_error(FV_EINPUT, "mlp: unknown activation code %d", (int)c->act);
    if (c->d > FV_MLP_DIM_LIMIT || c->width > FV_MLP_DIM_LIMIT || c->temb > FV_MLP_DIM_LIMIT ||
        c->fourier > FV_MLP_DIM_LIMIT)
        return fv_error(FV_EINPUT, "mlp: dimensions too large (d %zu, width %zu, temb %zu, fourier %zu; limit %zu)",
                        c->d, c->width, c->temb, c->fourier, FV_MLP_DIM_LIMIT);
    if (c->fourier && !(c->fourier_scale > 0.0f && isfinite(c->fourier_scale)))
        return fv_error(FV_EINPUT, "mlp: the Fourier feature scale must be positive and finite (got %g)",
                        (double)c->fourier_scale);
    /* in*out of any layer must fit a 32-bit BLAS leading dimension product. */
    size_t nin = fv_mlp_input_dim(c), w = c->width;
    if ((double)w * (double)(nin > w ? nin : w) > 2147483647.0)
        return fv_error(FV_EINPUT, "mlp: a weight matrix of %zu x %zu is too large", w, nin > w ? nin : w);
    return FV_OK;
}

size_t fv_mlp_input_dim(const fv_mlp_config *c) { return c->d + (c->temb ? c->temb : 1) + 2 * c->fourier; }

/* Fill in[], out[] for c (assumed valid); returns the layer count. */
static size_t layer_shapes(const fv_mlp_config *c, size_t *in, size_t *out)
{
    size_t L = c->depth + 1;
    for (size_t l = 0; l < L; l++) {
        in[l] = l == 0 ? fv_mlp_input_dim(c) : c->width;
        out[l] = l == L - 1 ? c->d : c->width;
    }
    return L;
}

size_t fv_mlp_count_params(const fv_mlp_config *c)
{
    if (fv_mlp_config_check(c) != FV_OK)
        return 0;
    size_t in[FV_MLP_MAX_LAYERS], out[FV_MLP_MAX_LAYERS], n = 0;
    size_t L = layer_shapes(c, in, out);
    for (size_t l = 0; l < L; l++)
        n += out[l] * in[l] + out[l];
    return n;
}

int fv_mlp_param_name(const fv_mlp *m, size_t layer, int is_bias, char *buf, size_t size)
{
    if (!m || layer >= m->nlayers)
        return fv_error(FV_EINPUT, "mlp: layer %zu out of range (%zu layers)", layer, m ? m->nlayers : 0);
    /* Index 2*layer: in nn.Sequential(Linear, Act, Linear, ...) the activations take the odd slots. */
    int n = snprintf(buf, size, "net.%zu.%s", 2 * layer, is_bias ? "bias" : "weight");
    if (n < 0 || (size_t)n >= size)
        return fv_error(FV_EINPUT, "mlp: name buffer of %zu bytes too small for layer %zu", size, layer);
    return FV_OK;
}

void fv_mlp_views(const fv_mlp *m, float *params, float **W, float **b)
{
    float *p = params;
    for (size_t l = 0; l < m->nlayers; l++) {
        W[l] = p;
        p += m->out[l] * m->in[l];
        b[l] = p;
        p += m->out[l];
    }
}

int fv_mlp_init(fv_mlp *m, const fv_mlp_config *c, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    int rc = fv_mlp_config_check(c);
    if (rc != FV_OK)
        return rc;
    m->cfg = *c;
    m->nlayers = layer_shapes(c, m->in, m->out);
    for (size_t l = 0; l < m->nlayers; l++)
        m->nparams += m->out[l] * m->in[l] + m->out[l];
    size_t nf = c->fourier * (c->d + 1);
    m->params = malloc((m->nparams + nf) * sizeof(float));
    if (!m->params) {
        size_t n = m->nparams;
        memset(m, 0, sizeof *m);
        return fv_error(FV_ENOMEM, "mlp: cannot allocate %zu parameters", n);
    }
    fv_mlp_views(m, m->params, m->W, m->b);
    if (nf) {
        m->fourier = m->params + m->nparams;
        fv_rng r = fv_rng_make(seed, FV_MLP_FOURIER_STREAM);
        for (size_t i = 0; i < nf; i++) {
            double z;
            fv_rng_normal(&r, 1, &z);
            m->fourier[i] = (float)(c->fourier_scale * z);
        }
    }
    /* torch's nn.Linear.reset_parameters: kaiming_uniform_(a = sqrt(5)) gives bound
     * sqrt(6 / ((1 + 5) fan_in)) = 1/sqrt(fan_in) for W, and the bias uses the same bound. */
    for (size_t l = 0; l < m->nlayers; l++) {
        double bound = 1.0 / sqrt((double)m->in[l]);
        for (int is_bias = 0; is_bias < 2; is_bias++) {
            fv_rng r = fv_rng_make(seed, FV_MLP_INIT_STREAM + 2 * l + (uint64_t)is_bias);
            float *p = is_bias ? m->b[l] : m->W[l];
            size_t n = is_bias ? m->out[l] : m->out[l] * m->in[l];
            for (size_t i = 0; i < n; i++) {
                double u;
                fv_rng_uniform(&r, 1, &u);
                p[i] = (float)(bound * (2.0 * u - 1.0));
            }
        }
    }
    return FV_OK;
}

void fv_mlp_free(fv_mlp *m)
{
    if (!m)
        return;
    free(m->params);
    memset(m, 0, sizeof *m);
}

/* ---- activations workspace ------------------------------------------------------------------- */

int fv_mlp_acts_alloc(fv_mlp_acts *a, const fv_mlp *m, size_t B)
{
    memset(a, 0, sizeof *a);
    if (B == 0)
        return fv_error(FV_EINPUT, "mlp: activation workspace needs at least one row");
    size_t w = m->cfg.width, nh = m->nlayers - 1;
    /* input + pre/post of each hidden layer + two delta buffers + row norms. */
    size_t per_row = m->in[0] + 2 * nh * w + 2 * w + 1;
    size_t bytes; /* B is a batch from the user: a workspace that can never fit is bad input */
    int st = fv_size_bytes(&bytes, "mlp: activations of a batch (rows x floats per row)", B, per_row, sizeof(float));
    if (st)
        return st;
    a->mem = malloc(B * per_row * sizeof(float));
    if (!a->mem)
        return fv_error(FV_ENOMEM, "mlp: cannot allocate activations for %zu rows (%zu floats)", B, B * per_row);
    a->B = B;
    a->nlayers = m->nlayers;
    float *p = a->mem;
    a->input = p;
    p += B * m->in[0];
    for (size_t l = 0; l < nh; l++) {
        a->pre[l] = p;
        p += B * w;
        a->post[l] = p;
        p += B * w;
    }
    a->delta[0] = p;
    p += B * w;
    a->delta[1] = p;
    p += B * w;
    a->rowsq = p;
    return FV_OK;
}

void fv_mlp_acts_free(fv_mlp_acts *a)
{
    if (!a)
        return;
    free(a->mem);
    memset(a, 0, sizeof *a);
}

/* ---- layers ---------------------------------------------------------------------------------- */

void fv_linear_forward(float *out, const float *in, const float *W, const float *b, size_t B, size_t nin,
                       size_t nout)
{
    /* Start from the bias in every row and let sgemm add in W^T (beta = 1): one pass over out. */
    if (b)
        for (size_t i = 0; i < B; i++)
            memcpy(out + i * nout, b, nout * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)nout, (int)nin, 1.0f, in, (int)nin, W,
                (int)nin, b ? 1.0f : 0.0f, out, (int)nout);
}

/* Layer l's weight and bias gradients for output units [j0, j1): they sum over every row of dcur. */
static void weight_grads(float *dW, float *db, const float *dcur, const float *in, size_t B, size_t nin, size_t nout,
                         size_t j0, size_t j1)
{
    if (j0 == j1)
        return;
    /* dW rows j0..j1 (nout x nin) = dout^T (nout x B) in (B x nin): the sum over rows of delta_i a_i^T. */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(j1 - j0), (int)nin, (int)B, 1.0f, dcur + j0,
                (int)nout, in, (int)nin, 0.0f, dW + j0 * nin, (int)nin);
    if (!db)
        return;
    memset(db + j0, 0, (j1 - j0) * sizeof(float));
    for (size_t i = 0; i < B; i++)
        for (size_t j = j0; j < j1; j++)
            db[j] += dcur[i * nout + j];
}

/* dinp (B x nin) = dout (B x nout) W (nout x nin). */
static void input_grad(float *dinp, const float *dout, const float *W, size_t B, size_t nin, size_t nout)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)nin, (int)nout, 1.0f, dout, (int)nout, W,
                (int)nin, 0.0f, dinp, (int)nin);
}

void fv_linear_backward(float *dinp, float *dW, float *db, const float *dout, const float *in, const float *W,
                        size_t B, size_t nin, size_t nout)
{
    weight_grads(dW, db, dout, in, B, nin, nout, 0, nout);
    if (dinp)
        input_grad(dinp, dout, W, B, nin, nout);
}

/* One loop per activation with a constant code, so the switch inside fv_act_fwd / fv_act_deriv folds
 * away and the loops vectorise (gcc -O2 does not unswitch a loop on a runtime code). */
#define ACT_LOOP(A, BODY)                                                                                      \
    case A:                                                                                                    \
        for (size_t i = 0; i < n; i++)                                                                         \
            BODY;                                                                                              \
        break

FV_SIMD_CLONES void fv_act_forward(float *post, const float *pre, size_t n, fv_act act)
{
    switch (act) {
        ACT_LOOP(FV_ACT_SILU, post[i] = fv_act_fwd(FV_NNM_SILU, pre[i]));
        ACT_LOOP(FV_ACT_SELU, post[i] = fv_act_fwd(FV_NNM_SELU, pre[i]));
        ACT_LOOP(FV_ACT_RELU, post[i] = fv_act_fwd(FV_NNM_RELU, pre[i]));
        ACT_LOOP(FV_ACT_TANH, post[i] = fv_act_fwd(FV_NNM_TANH, pre[i]));
    }
}

FV_SIMD_CLONES void fv_act_backward(float *dinp, const float *dout, const float *pre, const float *post, size_t n,
                                    fv_act act)
{
    switch (act) {
        ACT_LOOP(FV_ACT_SILU, dinp[i] = dout[i] * fv_act_deriv(FV_NNM_SILU, pre[i], post[i]));
        ACT_LOOP(FV_ACT_SELU, dinp[i] = dout[i] * fv_act_deriv(FV_NNM_SELU, pre[i], post[i]));
        ACT_LOOP(FV_ACT_RELU, dinp[i] = dout[i] * fv_act_deriv(FV_NNM_RELU, pre[i], post[i]));
        ACT_LOOP(FV_ACT_TANH, dinp[i] = dout[i] * fv_act_deriv(FV_NNM_TANH, pre[i], post[i]));
    }
}
#undef ACT_LOOP

/* feat[j] = sin(F_j . z), feat[M + j] = cos(F_j . z) for z = [x, t]. */
static void fourier_features(float *feat, const float *F, size_t M, const float *x, float t, size_t d)
{
    for (size_t j = 0; j < M; j++) {
        const float *Fj = F + j * (d + 1);
        float p = Fj[d] * t;
        for (size_t k = 0; k < d; k++)
            p += Fj[k] * x[k];
        feat[j] = sinf(p);
        feat[M + j] = cosf(p);
    }
}

void fv_mlp_input(const fv_mlp *m, float *in, const float *x, const float *t, size_t B)
{
    size_t d = m->cfg.d, temb = m->cfg.temb, nin = m->in[0], head = d + (temb ? temb : 1);
    for (size_t i = 0; i < B; i++) {
        float *row = in + i * nin;
        memcpy(row, x + i * d, d * sizeof(float));
        if (temb)
            fv_temb(t[i], (unsigned)(temb / 2), row + d);
        else
            row[d] = t[i];
        if (m->fourier)
            fourier_features(row + head, m->fourier, m->cfg.fourier, x + i * d, t[i], d);
    }
}

/* ---- network --------------------------------------------------------------------------------- */

/* pre (rows x n) += b in every row, then post = act(pre): the bias and the activation in one pass. */
#define BIAS_ACT_LOOP(A)                                                                                       \
    case A:                                                                                                    \
        for (size_t i = 0; i < rows; i++)                                                                      \
            for (size_t j = 0; j < n; j++) {                                                                   \
                float z = pre[i * n + j] + b[j];                                                               \
                pre[i * n + j] = z;                                                                            \
                post[i * n + j] = fv_act_fwd(A, z);                                                            \
            }                                                                                                  \
        break

FV_SIMD_CLONES static void bias_act(float *restrict post, float *restrict pre, const float *restrict b, size_t rows,
                                    size_t n, fv_act act)
{
    switch (act) {
        BIAS_ACT_LOOP(FV_NNM_SILU);
        BIAS_ACT_LOOP(FV_NNM_SELU);
        BIAS_ACT_LOOP(FV_NNM_RELU);
        BIAS_ACT_LOOP(FV_NNM_TANH);
    }
}
#undef BIAS_ACT_LOOP

typedef struct {
    const fv_mlp *m;
    size_t B;
    const float *x, *t;
    float *out;
    fv_mlp_acts *a;
} forward_ctx;

/* One thread's rows through the whole network: rows never meet in the forward pass, so the threads
 * need no synchronisation until the end. */
static void forward_rows(void *arg, int tid, int nt)
{
    const forward_ctx *c = arg;
    const fv_mlp *m = c->m;
    fv_mlp_acts *a = c->a;
    size_t r0, r1, L = m->nlayers, d = m->cfg.d;
    fv_par_range(c->B, 1, tid, nt, &r0, &r1);
    if (r0 == r1)
        return;
    size_t rows = r1 - r0;
    fv_mlp_input(m, a->input + r0 * m->in[0], c->x + r0 * d, c->t + r0, rows);
    const float *h = a->input + r0 * m->in[0];
    for (size_t l = 0; l + 1 < L; l++) {
        float *pre = a->pre[l] + r0 * m->out[l], *post = a->post[l] + r0 * m->out[l];
        fv_linear_forward(pre, h, m->W[l], NULL, rows, m->in[l], m->out[l]);
        bias_act(post, pre, m->b[l], rows, m->out[l], m->cfg.act);
        h = post;
    }
    fv_linear_forward(c->out + r0 * d, h, m->W[L - 1], m->b[L - 1], rows, m->in[L - 1], m->out[L - 1]);
}

void fv_mlp_forward(const fv_mlp *m, size_t B, const float *x, const float *t, float *out, fv_mlp_acts *a)
{
    assert(B >= 1 && B <= a->B && a->nlayers == m->nlayers);
    a->rows = B;
    forward_ctx c = {m, B, x, t, out, a};
    fv_par_run(forward_rows, &c);
}

/* sq[i] += |delta_i|^2 (|a_i|^2 + 1): row i's weight gradient delta_i a_i^T plus its bias gradient delta_i. */
static void add_row_sqnorms(float *sq, float *asq, const float *delta, const float *in, size_t B, size_t nin,
                            size_t nout)
{
    for (size_t i = 0; i < B; i++) {
        const float *r = in + i * nin;
        double s = 0.0;
        for (size_t j = 0; j < nin; j++)
            s += (double)r[j] * r[j];
        asq[i] = (float)s;
    }
    for (size_t i = 0; i < B; i++) {
        const float *r = delta + i * nout;
        double s = 0.0;
        for (size_t j = 0; j < nout; j++)
            s += (double)r[j] * r[j];
        sq[i] += (float)(s * ((double)asq[i] + 1.0));
    }
}

typedef struct {
    const fv_mlp *m;
    size_t B;
    const float *dout;
    float *sqnorm;
    fv_mlp_acts *a;
    float *gW[FV_MLP_MAX_LAYERS], *gb[FV_MLP_MAX_LAYERS];
} backward_ctx;

/* Each layer in two splits: its weight gradient by output units (a sum over all rows), then the rows'
 * own work (the gradient flowing to the layer's input, the activation's derivative, the per-row
 * norms); a barrier before the next layer, whose weight gradient reads every row of that input
 * gradient. */
static void backward_part(void *arg, int tid, int nt)
{
    const backward_ctx *c = arg;
    const fv_mlp *m = c->m;
    fv_mlp_acts *a = c->a;
    size_t B = c->B, r0, r1;
    fv_par_range(B, 1, tid, nt, &r0, &r1);
    size_t rows = r1 - r0;
    if (c->sqnorm && rows)
        memset(c->sqnorm + r0, 0, rows * sizeof(float));
    const float *dcur = c->dout; /* dL/d(pre-activation) of layer l, B x out[l] */
    int buf = 0;
    for (size_t l = m->nlayers; l-- > 0;) {
        size_t nin = m->in[l], nout = m->out[l], j0, j1;
        const float *in = l ? a->post[l - 1] : a->input;
        fv_par_range(nout, 1, tid, nt, &j0, &j1);
        weight_grads(c->gW[l], c->gb[l], dcur, in, B, nin, nout, j0, j1);
        if (c->sqnorm && rows)
            add_row_sqnorms(c->sqnorm + r0, a->rowsq + r0, dcur + r0 * nout, in + r0 * nin, rows, nin, nout);
        if (l) { /* the network input needs no gradient */
            float *dinp = a->delta[buf];
            if (rows) {
                input_grad(dinp + r0 * nin, dcur + r0 * nout, m->W[l], rows, nin, nout);
                fv_act_backward(dinp + r0 * nin, dinp + r0 * nin, a->pre[l - 1] + r0 * nin,
                                a->post[l - 1] + r0 * nin, rows * nin, m->cfg.act);
            }
            fv_par_barrier();
            dcur = dinp;
            buf ^= 1;
        }
    }
}

void fv_mlp_backward(const fv_mlp *m, size_t B, const float *dout, float *grads, float *sqnorm, fv_mlp_acts *a)
{
    assert(B == a->rows && a->nlayers == m->nlayers);
    backward_ctx c = {m, B, dout, sqnorm, a, {0}, {0}};
    fv_mlp_views(m, grads, c.gW, c.gb);
    fv_par_run(backward_part, &c);
}

float fv_mse_loss(size_t n, const float *v, const float *u, float *dout)
{
    double s = 0.0;
    float scale = (float)(2.0 / (double)n);
    for (size_t i = 0; i < n; i++) {
        float r = v[i] - u[i];
        s += (double)r * r;
        if (dout)
            dout[i] = scale * r;
    }
    return (float)(s / (double)n);
}

/* ---- activation names ------------------------------------------------------------------------ */

static const char *const act_names[] = {"silu", "selu", "relu", "tanh"};

int fv_act_parse(const char *name, fv_act *a)
{
    for (int i = 0; i <= FV_ACT_TANH; i++)
        if (name && !strcmp(name, act_names[i])) {
            *a = (fv_act)i;
            return FV_OK;
        }
    return fv_error(FV_EINPUT, "unknown activation '%s' (expected silu, selu, relu or tanh)", name ? name : "");
}

const char *fv_act_name(fv_act a) { return (unsigned)a <= FV_ACT_TANH ? act_names[a] : "?"; }
