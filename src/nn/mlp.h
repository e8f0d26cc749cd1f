/* mlp.h: the time-conditioned multilayer perceptron v(x, t) of flow matching, CPU reference.
 *
 * The network is torch's nn.Sequential(Linear, Act, Linear, Act, ..., Linear) on the input [x, t]
 * (torchcfm's MLP(dim, w, time_varying=True) with SELU is depth 3), or on [x, emb(t)] with the
 * sinusoidal embedding of guided-diffusion/torchcfm, optionally followed by random Fourier features of
 * [x, t] (Tancik et al. 2020: without them an MLP on raw coordinates cannot fit the sharp fields of
 * small pair sets, see `flowvar gmm`). Style follows llm.c: every layer is a pair of free
 * functions (fv_linear_forward / fv_linear_backward, fv_act_forward / fv_act_backward); all parameters
 * live in ONE float allocation (gradients in one caller array of the same layout, so an optimizer and a
 * checkpoint see a flat vector); activations live in a caller-owned workspace (fv_mlp_acts), so
 * forward and backward never allocate; matrix products go through OpenBLAS cblas_sgemm. float32
 * throughout.
 *
 * Besides the batch gradient, backward can return the squared norm of every row's own gradient
 * (the per-sample gradient norms whose variance the paper studies) at almost no cost: a linear layer's
 * per-row weight gradient is the outer product delta_i a_i^T, whose squared Frobenius norm is
 * |delta_i|^2 |a_i|^2. */
#ifndef FV_MLP_H
#define FV_MLP_H

#include <stddef.h>
#include <stdint.h>

#define FV_MLP_MAX_LAYERS 16 /* linear layers, i.e. depth <= 15 */

typedef enum { FV_ACT_SILU = 0, FV_ACT_SELU, FV_ACT_RELU, FV_ACT_TANH } fv_act;

typedef struct {
    size_t d;     /* data dimension: input x in R^d, output v in R^d */
    size_t width; /* hidden width */
    size_t depth; /* number of hidden layers (>= 1); depth+1 linear layers in all */
    fv_act act;
    size_t temb;  /* 0: the raw t is one extra input (input dim d+1); else an even sinusoidal embedding
                     dimension: emb(t) = [cos(t f_k), sin(t f_k)], f_k = exp(-ln(10000) k / (temb/2)),
                     k = 0..temb/2-1 (torchcfm/guided-diffusion order: cos first), input dim d + temb */
    size_t fourier;      /* 0: none; else M random Fourier features appended to the input: [sin(F z), cos(F z)],
                            z = [x, t] (raw t), F an M x (d + 1) matrix with entries ~ N(0, fourier_scale^2),
                            fixed at initialisation (not trained); input dim grows by 2 M */
    float fourier_scale; /* the standard deviation of F's entries (> 0 when fourier > 0) */
} fv_mlp_config;

typedef struct {
    fv_mlp_config cfg;
    size_t nlayers, nparams;
    float *params; /* one allocation of nparams floats: W[0], b[0], W[1], b[1], ... (state_dict order) */
    size_t in[FV_MLP_MAX_LAYERS], out[FV_MLP_MAX_LAYERS];
    float *W[FV_MLP_MAX_LAYERS], *b[FV_MLP_MAX_LAYERS]; /* W: out x in row-major (torch nn.Linear layout) */
    float *fourier; /* cfg.fourier x (d + 1) row-major, the fixed F; in the same allocation, after the
                       nparams trainable floats (so optimizers and gradients never see it); NULL if none */
} fv_mlp;

/* FV_OK if the configuration describes a network (d, width >= 1; 1 <= depth < FV_MLP_MAX_LAYERS; temb
 * even; a known activation; a positive finite fourier_scale with fourier features; sizes that do not
 * overflow), else FV_EINPUT naming the field. */
int fv_mlp_config_check(const fv_mlp_config *c);

/* Number of parameters of the network c describes (0 if c is invalid). */
size_t fv_mlp_count_params(const fv_mlp_config *c);

/* Input dimension of the first layer: d + 1 (raw t) or d + temb, plus 2 fourier. */
size_t fv_mlp_input_dim(const fv_mlp_config *c);

/* Layer names in torch state_dict order: "net.0.weight", "net.0.bias", "net.2.weight", ... i.e. the
 * indices of an nn.Sequential(Linear, Act, Linear, Act, ..., Linear). FV_EINPUT if layer is out of
 * range or buf is too small. */
int fv_mlp_param_name(const fv_mlp *m, size_t layer, int is_bias, char *buf, size_t size);

/* Allocate and initialise like torch's nn.Linear default: W, b ~ U(-1/sqrt(in), 1/sqrt(in)), drawn
 * from Philox (core/rng.h) under `seed`, one stream per tensor (FV_MLP_INIT_STREAM + 2 layer + is_bias),
 * so each tensor's values depend only on (seed, layer, shape); the Fourier matrix F from stream
 * FV_MLP_FOURIER_STREAM. FV_EINPUT for an invalid config, FV_ENOMEM. On failure *m is zeroed. */
#define FV_MLP_INIT_STREAM 0x6d6c700000000000ULL /* "mlp" in the top bytes: apart from data streams */
#define FV_MLP_FOURIER_STREAM (FV_MLP_INIT_STREAM + 2 * FV_MLP_MAX_LAYERS)
int fv_mlp_init(fv_mlp *m, const fv_mlp_config *c, uint64_t seed);

/* Point W[l], b[l] into params (nparams floats, the layout of fv_mlp.params). Used to view a gradient
 * or an EMA vector with the same per-layer structure. */
void fv_mlp_views(const fv_mlp *m, float *params, float **W, float **b);

void fv_mlp_free(fv_mlp *m); /* safe on a zeroed or already freed fv_mlp */

/* Everything forward keeps for backward, for up to B rows; one allocation. */
typedef struct {
    size_t B;                        /* capacity in rows */
    size_t nlayers;
    float *mem;                      /* the single allocation the pointers below carve */
    float *input;                    /* B x in[0]: [x, t] or [x, emb(t)], then the Fourier features */
    float *pre[FV_MLP_MAX_LAYERS];   /* hidden layer l < nlayers-1: B x out[l], before the activation */
    float *post[FV_MLP_MAX_LAYERS];  /* hidden layer l: B x out[l], after it (the next layer's input) */
    float *delta[2];                 /* backward: two B x max(width, d) buffers, used alternately */
    float *rowsq;                    /* backward: B, |a_i|^2 of a layer's input rows */
    size_t rows;                     /* rows of the last forward (backward uses the same B) */
} fv_mlp_acts;

/* FV_EINPUT if B == 0 or the workspace exceeds memory (size.h), FV_ENOMEM */
int fv_mlp_acts_alloc(fv_mlp_acts *a, const fv_mlp *m, size_t B);
void fv_mlp_acts_free(fv_mlp_acts *a);

/* out (B x d) = net([x, t or emb(t)]). x: B x d, t: B. B must be <= a->B (asserted). */
void fv_mlp_forward(const fv_mlp *m, size_t B, const float *x, const float *t, float *out, fv_mlp_acts *a);

/* Given dout = dL/dout (B x d), write grads (nparams, same layout as params, OVERWRITTEN) = the sum over
 * rows of the per-row gradients. If sqnorm is not NULL, also sqnorm[i] = |g_i|^2, the squared norm of row
 * i's own gradient over all parameters, computed exactly WITHOUT per-sample backward passes: for a linear
 * layer, row i's weight gradient is delta_i a_i^T, so its squared norm is |delta_i|^2 |a_i|^2, and its bias
 * gradient's is |delta_i|^2. Must follow fv_mlp_forward with the same B and acts. */
void fv_mlp_backward(const fv_mlp *m, size_t B, const float *dout, float *grads, float *sqnorm, fv_mlp_acts *a);

/* The CFM loss mean((v - u)^2) over all n = B*d elements (torchcfm's convention), writing
 * dout = 2 (v - u) / n when dout is not NULL. Returns the loss (accumulated in double). */
float fv_mse_loss(size_t n, const float *v, const float *u, float *dout);

int fv_act_parse(const char *name, fv_act *a); /* "silu" "selu" "relu" "tanh"; FV_EINPUT otherwise */
const char *fv_act_name(fv_act a);             /* "?" for an invalid value */

/* The layers, usable on their own (llm.c style). Shapes: in B x nin, out B x nout, W nout x nin, b nout.
 * fv_linear_forward: out = in W^T + b (b may be NULL).
 * fv_linear_backward: dW = dout^T in, db = column sums of dout (both OVERWRITTEN; db may be NULL);
 * dinp = dout W (OVERWRITTEN) unless dinp is NULL. */
void fv_linear_forward(float *out, const float *in, const float *W, const float *b, size_t B, size_t nin,
                       size_t nout);
void fv_linear_backward(float *dinp, float *dW, float *db, const float *dout, const float *in, const float *W,
                        size_t B, size_t nin, size_t nout);
/* post = act(pre) over n elements; dinp = dout * act'(pre) (in place allowed: dinp == dout). */
void fv_act_forward(float *post, const float *pre, size_t n, fv_act act);
void fv_act_backward(float *dinp, const float *dout, const float *pre, const float *post, size_t n, fv_act act);
/* Row-wise input assembly: in (B x in[0]) = [x, t] or [x, emb(t)], then [sin(F z), cos(F z)] with z = [x, t]
 * when m has Fourier features. */
void fv_mlp_input(const fv_mlp *m, float *in, const float *x, const float *t, size_t B);

#endif
