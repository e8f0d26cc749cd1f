/* unet.h: torchcfm's U-Net vector field v(x, t) (torchcfm.models.unet.UNetModelWrapper, i.e.
 * guided-diffusion's UNetModel) on the CPU, matched to PyTorch layer by layer (tests/test_unet.c against
 * tests/fixtures/unet, made by tests/oracle/make_unet_fixture.py).
 *
 * The architecture is the wrapper's with its defaults: no class conditioning, no learned sigma (as
 * many output channels as input channels), additive time conditioning (use_scale_shift_norm False),
 * QKVAttentionLegacy (use_new_attention_order False), convolutional down/upsampling (conv_resample
 * True, resblock_updown False), GroupNorm of 32 groups everywhere, a middle block with attention at
 * every configuration. Layout, in torch's module order:
 *   time_embed    Linear(nc, 4 nc), SiLU, Linear(4 nc, 4 nc) on timestep_embedding(t, nc)
 *   input_blocks  a 3x3 conv, then per level num_res_blocks residual blocks (each followed by an
 *                 attention block at the attention resolutions) and, except at the last level, a
 *                 stride-2 3x3 conv; every input block's output is kept as a skip
 *   middle_block  residual block, attention block, residual block
 *   output_blocks per level from the last, num_res_blocks + 1 blocks, each on [h, the last unused skip]
 *                 (a residual block, attention where the input side had it, and at the level's last
 *                 block above level 0 nearest 2x upsampling + 3x3 conv)
 *   out           GroupNorm, SiLU, 3x3 conv to the image's channels
 * A residual block is GroupNorm, SiLU, conv3x3, + Linear(SiLU(emb)) per channel, GroupNorm, SiLU,
 * dropout, conv3x3, plus the input (through a 1x1 conv when the channel count changes).
 *
 * As in mlp.h: every parameter in ONE float allocation, in torch's state_dict order with torch's
 * shapes, so a flat vector is both the optimizer's view and a checkpoint's (fv_unet_write / fv_unet_read:
 * safetensors that `model.load_state_dict(safetensors.torch.load_file(path))` accepts); gradients in a
 * caller array of the same layout; activations in a caller-owned workspace (fv_unet_acts) allocated once
 * for a batch size, so forward and backward never allocate. Images are NCHW float32. */
#ifndef FV_UNET_H
#define FV_UNET_H

#include "core/safetensors.h"

#include <stddef.h>
#include <stdint.h>

#define FV_UNET_MAX_LEVELS 8
#define FV_UNET_MAX_RES_BLOCKS 8
#define FV_UNET_GROUPS 32 /* torchcfm's normalization(): GroupNorm32(32, channels) */

/* UNetModelWrapper's arguments. */
typedef struct {
    size_t in_channels, height, width;   /* dim = (C, H, W) */
    size_t num_channels;                 /* base channel count (model_channels) */
    size_t num_res_blocks;               /* per level */
    size_t nlevels;
    size_t channel_mult[FV_UNET_MAX_LEVELS]; /* level l has num_channels * channel_mult[l] channels */
    size_t nattn;
    /* The wrapper's attention_resolutions string as numbers ("16" -> {16}): attention runs at the
     * levels whose downsampling factor 2^l equals width / r (integer division, as torchcfm computes it). */
    size_t attention_resolutions[FV_UNET_MAX_LEVELS];
    size_t num_heads;
    size_t num_head_channels;            /* 0: torchcfm's -1 (use num_heads); else heads = channels / this */
    float dropout;                       /* rate in the residual blocks, 0 <= dropout < 1 */
} fv_unet_config;

/* The paper's CIFAR-10 network: dim (3, 32, 32), num_channels 128, channel_mult (1, 2, 2, 2),
 * num_res_blocks 2, attention_resolutions "16", num_heads 4, num_head_channels 64, dropout 0.1. */
fv_unet_config fv_unet_config_cifar10(void);

/* FV_OK, or FV_EINPUT naming the field: a zero size; more than FV_UNET_MAX_LEVELS levels or
 * FV_UNET_MAX_RES_BLOCKS blocks; a level's channel count that GroupNorm's 32 groups do not divide;
 * height or width not divisible by 2^(nlevels - 1); an attention resolution that is no level's (torchcfm
 * would silently skip it); heads that do not divide an attention block's channels (or num_head_channels
 * that does not); dropout outside [0, 1); sizes past what a 32-bit BLAS index holds. */
int fv_unet_config_check(const fv_unet_config *c);

/* Number of parameters of the network c describes, computed from c alone (nothing is allocated);
 * 0 if c is invalid. The paper's network has 35,746,307, as torchcfm counts. */
size_t fv_unet_count_params(const fv_unet_config *c);

/* One parameter tensor. */
typedef struct {
    char name[64];     /* torch's state_dict name, e.g. "input_blocks.1.0.in_layers.2.weight" */
    int ndim;
    size_t shape[4];   /* torch's shape: conv2d weights cout x cin x k x k, the attention's 1x1 conv1d
                          weights cout x cin x 1, linear weights out x in, vectors n */
    size_t offset;     /* into params (and grads) */
    size_t count;
    size_t fan_in;     /* initialization: U(+-1/sqrt(fan_in)) as torch's Conv/Linear default; 0: every
                          element is `fill` (GroupNorm 1 and 0; the tensors torchcfm zero_module()s) */
    float fill;
} fv_unet_tensor;

typedef enum { FV_UNET_TIME, FV_UNET_CONV, FV_UNET_RES, FV_UNET_ATTN, FV_UNET_DOWN, FV_UNET_UP, FV_UNET_HEAD } fv_unet_kind;

/* One layer group of the network (a torch module with parameters: the time embedding, the first
 * convolution, a residual block, an attention block, a down- or upsampling convolution, the head). */
typedef struct {
    fv_unet_kind kind;
    size_t cin, cout;        /* channels (TIME: num_channels -> 4 num_channels) */
    size_t h, w;             /* input resolution; DOWN halves it, UP doubles it, the others keep it */
    size_t heads;            /* ATTN */
    size_t tensor0, ntensors; /* its parameters: tensors[tensor0 .. tensor0 + ntensors) */
} fv_unet_unit;

#define FV_UNET_NO_SKIP ((size_t)-1)

/* A torch block: input_blocks.i, middle_block, output_blocks.i, or out; units[unit0 .. unit0 + nunits). */
typedef struct {
    char name[32];
    size_t unit0, nunits;
    size_t skip;             /* output blocks: the input block whose output is concatenated after h */
} fv_unet_block;

typedef struct {
    fv_unet_config cfg;
    size_t nparams, ntensors, nunits, nblocks;
    float *params;           /* one allocation, state_dict order */
    fv_unet_tensor *tensors;
    fv_unet_unit *units;     /* units[0] is the time embedding, then the blocks' units in order */
    fv_unet_block *blocks;
} fv_unet;

/* Allocate and initialize like torch (Conv2d/Conv1d/Linear defaults, GroupNorm 1 and 0, zeros where
 * torchcfm's zero_module zeroes), from Philox under `seed`, one stream per tensor
 * (FV_UNET_INIT_STREAM + tensor index). FV_EINPUT for an invalid config, FV_ENOMEM; *net is zeroed on
 * failure. */
#define FV_UNET_INIT_STREAM 0x756e657400000000ULL /* "unet" in the top bytes */
int fv_unet_init(fv_unet *net, const fv_unet_config *c, uint64_t seed);

/* The layout alone (tensors, units, blocks; params NULL), to inspect a configuration without
 * allocating its weights. Errors as fv_unet_init. */
int fv_unet_layout(fv_unet *net, const fv_unet_config *c);
void fv_unet_free(fv_unet *net); /* safe on a zeroed or freed net */

const fv_unet_tensor *fv_unet_tensor_find(const fv_unet *net, const char *name); /* NULL if absent */

/* Every tensor "<prefix><name>" of f, with the tensor's exact shape, into dst (nparams floats, params
 * layout): prefix "" reads weights, "grad." a fixture's gradients. FV_EINPUT naming a missing or
 * mis-shaped tensor. */
int fv_unet_read(const fv_unet *net, const fv_st_file *f, const char *prefix, float *dst);

/* params (net's layout) as a safetensors file of torch names and shapes, with the configuration in the
 * metadata (keys "unet.dim", "unet.num_channels", ... as fv_unet_config_from_meta reads them) and
 * nmeta more key/value pairs. Written atomically. */
int fv_unet_write(const char *path, const fv_unet *net, const float *params, size_t nmeta, const char *const *keys,
                  const char *const *values);

/* The configuration stored in a file's metadata: "unet.dim" "C,H,W", "unet.num_channels",
 * "unet.num_res_blocks", "unet.channel_mult" "1,2,2,2", "unet.attention_resolutions" "16" (comma list),
 * "unet.num_heads", "unet.num_head_channels" (-1 for none), "unet.dropout". FV_EINPUT naming a missing
 * or malformed key; the result is checked with fv_unet_config_check. */
int fv_unet_config_from_meta(const fv_st_file *f, fv_unet_config *c);

/* What one unit keeps between forward and backward (NULL where its kind has no such tensor). */
typedef struct {
    float *in, *din;                 /* input (another unit's output, a concatenation, or the copy of x) and
                                        where its gradient is summed (NULL for x) */
    float *out, *dout;               /* output and its gradient (summed over its consumers) */
    float *norm, *mean, *rstd, *act; /* first GroupNorm and the SiLU after it */
    float *h;                        /* RES: conv + time projection; ATTN: attention output */
    float *eproj;                    /* RES: Linear(SiLU(emb)), B x cout */
    float *norm2, *mean2, *rstd2, *act2, *drop; /* RES: second GroupNorm, SiLU, dropout (training only) */
    float *qkv, *att;                /* ATTN */
    float *up;                       /* UP: the upsampled input */
    float *temb, *pre, *post;        /* TIME: sinusoidal embedding, first linear layer, its SiLU; out is
                                        emb, act = SiLU(emb) (what every residual block projects) and dact
                                        its gradient, summed over the residual blocks */
    float *dact;
} fv_unet_unit_acts;

/* Everything forward keeps for backward, for up to B images, in one float allocation (plus the
 * per-unit pointer table). Set train = 1 (and dropout_seed, dropout_stream, e.g. the run's seed and
 * the step) for training-mode dropout; the default 0 is eval mode, where dropout is the identity. */
struct fv_unet_convs; /* unet.c: the oneDNN convolution plans of a workspace */

typedef struct {
    size_t B, rows;
    float *mem;
    struct fv_unet_convs *convs; /* fv_unet_acts_alloc's oneDNN plans (NULL: the reference layers) */
    size_t nunits;
    fv_unet_unit_acts *u;
    float *x;                        /* the network input, copied */
    float *grad, *grad_end;          /* the activation gradients, zeroed at the start of backward */
    float *g0, *g1, *g2, *col, *ebuf; /* scratch */
    int train;
    uint64_t dropout_seed, dropout_stream;
    size_t dropout_row0; /* the batch's first image is image dropout_row0 of a larger batch whose masks it
                            reuses (one image at a time for per-sample gradients); 0 for a whole batch */
} fv_unet_acts;

/* Training-mode dropout of unit j draws its mask from Philox block FV_UNET_DROPOUT_BLOCK0(j) on, of
 * (dropout_seed, dropout_stream) (each unit draws fewer than 2^40 blocks): every backend the same. */
#define FV_UNET_DROPOUT_BLOCK0(j) ((uint64_t)(j) << 40)

/* FV_EINPUT if B == 0 or the workspace exceeds memory (size.h), FV_ENOMEM, FV_ENUMERIC if oneDNN
 * refuses a convolution. The workspace also holds oneDNN's convolution plans for B images, created
 * here (the kernels are compiled once); a pass over fewer images creates plans for that batch size on
 * its first call and keeps them until a pass of a third size (the trainer's per-image gradients and the
 * last chunk of a prediction), or runs the reference layers when oneDNN cannot make them. The passes
 * run on OpenMP's threads (OMP_NUM_THREADS, default one per core) and hold OpenBLAS at one thread
 * meanwhile, so that the two thread pools never spin against each other. */
int fv_unet_acts_alloc(fv_unet_acts *a, const fv_unet *net, size_t B);

/* fv_unet_acts_alloc's layout over memory the caller owns (the CUDA backend's device allocation: only
 * pointer arithmetic is done on mem). With mem NULL only *nfloats is set, to the floats B images need;
 * else a's pointers are set into mem (*nfloats floats) and its unit table is allocated. a->mem stays
 * NULL, so fv_unet_acts_free frees the table alone. FV_EINPUT if B == 0, FV_ENOMEM. */
int fv_unet_acts_place(fv_unet_acts *a, const fv_unet *net, size_t B, float *mem, size_t *nfloats);
void fv_unet_acts_free(fv_unet_acts *a);

/* out (B x C x H x W) = v(x, t): x B x C x H x W, t B times. B <= a->B (asserted). */
void fv_unet_forward(const fv_unet *net, size_t B, const float *x, const float *t, float *out, fv_unet_acts *a);

/* Given dout = dL/dout (B x C x H x W), grads (nparams, params layout) = dL/dparams, OVERWRITTEN.
 * Follows fv_unet_forward with the same B and acts. */
void fv_unet_backward(const fv_unet *net, size_t B, const float *dout, float *grads, fv_unet_acts *a);

/* The forward in pieces, for layer-by-layer checks: the time embedding (into a->u[0].out, and its
 * SiLU into a->u[0].act), then each block on whatever lies in its input buffer (an output block's
 * input is the concatenation [h, skip]: fv_unet_forward fills it; a caller may write it). */
void fv_unet_time_forward(const fv_unet *net, size_t B, const float *t, fv_unet_acts *a);
float *fv_unet_block_input(const fv_unet *net, const fv_unet_acts *a, size_t blk);
const float *fv_unet_block_output(const fv_unet *net, const fv_unet_acts *a, size_t blk);
void fv_unet_block_forward(const fv_unet *net, size_t blk, size_t B, fv_unet_acts *a);

#endif
