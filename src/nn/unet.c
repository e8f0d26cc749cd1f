/* unet.c: torchcfm's U-Net on the CPU (see unet.h): the configuration, the module walk that names and
 * shapes every tensor as torch's state_dict does, initialization, the activation workspace with its
 * oneDNN convolution plans (conv_dnnl.h), forward and backward unit by unit on the layers of
 * unet_layers.h, and safetensors input/output. */
#include "nn/unet.h"

#include "core/error.h"
#include "core/rng.h"
#include "core/size.h"
#include "nn/conv_dnnl.h"
#include "nn/mlp.h"
#include "nn/unet_layers.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- configuration ---------------------------------------------------------------------------- */

fv_unet_config fv_unet_config_cifar10(void)
{
    fv_unet_config c = {.in_channels = 3,
                        .height = 32,
                        .width = 32,
                        .num_channels = 128,
                        .num_res_blocks = 2,
                        .nlevels = 4,
                        .channel_mult = {1, 2, 2, 2},
                        .nattn = 1,
                        .attention_resolutions = {16},
                        .num_heads = 4,
                        .num_head_channels = 64,
                        .dropout = 0.1f};
    return c;
}

/* Below these every size product the network forms fits a size_t, and the check on BLAS indices
 * below can be done in double without losing anything. */
#define SIZE_LIMIT ((size_t)1 << 16)
#define MULT_LIMIT ((size_t)1 << 10)
#define BLAS_LIMIT 2147483647.0 /* blasint is 32-bit in Debian's libopenblas */

/* Level (downsampling factor 2^level) where attention resolution r puts attention, or -1 if none. */
static int attention_level(const fv_unet_config *c, size_t r)
{
    size_t ds = c->width / r;
    for (size_t l = 0; l < c->nlevels; l++)
        if (ds == (size_t)1 << l)
            return (int)l;
    return -1;
}

static int attention_at(const fv_unet_config *c, size_t level)
{
    for (size_t i = 0; i < c->nattn; i++)
        if (attention_level(c, c->attention_resolutions[i]) == (int)level)
            return 1;
    return 0;
}

static size_t heads_for(const fv_unet_config *c, size_t channels)
{
    return c->num_head_channels ? channels / c->num_head_channels : c->num_heads;
}

/* The heads of an attention block with `channels` channels must split them evenly. */
static int check_heads(const fv_unet_config *c, size_t channels)
{
    if (c->num_head_channels && channels % c->num_head_channels)
        return fv_error(FV_EINPUT, "unet: num_head_channels %zu does not divide the %zu channels of an attention block",
                        c->num_head_channels, channels);
    if (!c->num_head_channels && (c->num_heads == 0 || channels % c->num_heads))
        return fv_error(FV_EINPUT, "unet: num_heads %zu does not divide the %zu channels of an attention block",
                        c->num_heads, channels);
    return FV_OK;
}

int fv_unet_config_check(const fv_unet_config *c)
{
    if (!c)
        return fv_error(FV_EINPUT, "unet: no configuration");
    if (c->in_channels == 0 || c->height == 0 || c->width == 0)
        return fv_error(FV_EINPUT, "unet: dim (in_channels, height, width) must be >= 1 each (got %zu, %zu, %zu)",
                        c->in_channels, c->height, c->width);
    if (c->num_channels == 0)
        return fv_error(FV_EINPUT, "unet: num_channels must be >= 1 (got 0)");
    if (c->in_channels > SIZE_LIMIT || c->height > SIZE_LIMIT || c->width > SIZE_LIMIT ||
        c->num_channels > SIZE_LIMIT)
        return fv_error(FV_EINPUT, "unet: dim (%zu, %zu, %zu) or num_channels %zu above the limit %zu", c->in_channels,
                        c->height, c->width, c->num_channels, SIZE_LIMIT);
    if (c->num_res_blocks == 0 || c->num_res_blocks > FV_UNET_MAX_RES_BLOCKS)
        return fv_error(FV_EINPUT, "unet: num_res_blocks must be 1 to %d (got %zu)", FV_UNET_MAX_RES_BLOCKS,
                        c->num_res_blocks);
    if (c->nlevels == 0 || c->nlevels > FV_UNET_MAX_LEVELS)
        return fv_error(FV_EINPUT, "unet: channel_mult must have 1 to %d levels (got %zu)", FV_UNET_MAX_LEVELS,
                        c->nlevels);
    size_t maxch = 0;
    for (size_t l = 0; l < c->nlevels; l++) {
        size_t m = c->channel_mult[l];
        if (m == 0 || m > MULT_LIMIT)
            return fv_error(FV_EINPUT, "unet: channel_mult[%zu] must be 1 to %zu (got %zu)", l, MULT_LIMIT, m);
        size_t ch = c->num_channels * m;
        if (ch % FV_UNET_GROUPS)
            return fv_error(FV_EINPUT,
                            "unet: channel_mult[%zu] * num_channels = %zu channels, not divisible by GroupNorm's %d "
                            "groups",
                            l, ch, FV_UNET_GROUPS);
        maxch = ch > maxch ? ch : maxch;
    }
    size_t f = (size_t)1 << (c->nlevels - 1);
    if (c->height % f || c->width % f)
        return fv_error(FV_EINPUT, "unet: height %zu and width %zu must be divisible by 2^(levels - 1) = %zu",
                        c->height, c->width, f);
    if (c->nattn > FV_UNET_MAX_LEVELS)
        return fv_error(FV_EINPUT, "unet: at most %d attention_resolutions (got %zu)", FV_UNET_MAX_LEVELS, c->nattn);
    for (size_t i = 0; i < c->nattn; i++) {
        size_t r = c->attention_resolutions[i];
        if (r == 0 || attention_level(c, r) < 0)
            return fv_error(FV_EINPUT,
                            "unet: attention resolution %zu is no level's: width %zu / %zu must be 2^level for a "
                            "level below %zu",
                            r, c->width, r ? r : 1, c->nlevels);
    }
    int st;
    for (size_t l = 0; l < c->nlevels; l++)
        if (attention_at(c, l) && (st = check_heads(c, c->num_channels * c->channel_mult[l])))
            return st;
    if ((st = check_heads(c, c->num_channels * c->channel_mult[c->nlevels - 1]))) /* the middle block's */
        return st;
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f))
        return fv_error(FV_EINPUT, "unet: dropout must be in [0, 1) (got %g)", (double)c->dropout);
    /* The largest sgemm operands: an im2col of at most 3 maxch channels (a concatenation is at most
     * 2 maxch, a qkv projection 3 maxch) at full resolution, and the T x T attention weights. */
    double hw = (double)c->height * (double)c->width;
    if (3.0 * (double)maxch * 9.0 * hw > BLAS_LIMIT)
        return fv_error(FV_EINPUT, "unet: %zu channels at %zu x %zu pixels exceed 32-bit BLAS indices", maxch,
                        c->height, c->width);
    for (size_t l = 0; l < c->nlevels; l++) {
        double T = hw / (double)((size_t)1 << (2 * l));
        if ((attention_at(c, l) || l == c->nlevels - 1) && T * T > BLAS_LIMIT)
            return fv_error(FV_EINPUT, "unet: attention over %.0f positions at level %zu exceeds 32-bit BLAS indices", T,
                            l);
    }
    return FV_OK;
}

/* ---- the module walk -------------------------------------------------------------------------- */

/* Walks torch's module construction (UNetModel.__init__) and records units, blocks and tensors in
 * state_dict order; with net == NULL it only counts them. */
typedef struct {
    const fv_unet_config *c;
    fv_unet *net;
    size_t ntensors, nunits, nblocks, nparams;
    char block[32];     /* the current block's name */
    size_t block_units; /* units in it so far */
} builder;

static void add_tensor(builder *b, const char *unit, const char *module, const char *leaf, size_t fan_in, float fill,
                       int ndim, size_t s0, size_t s1, size_t s2, size_t s3)
{
    size_t shape[4] = {s0, s1, s2, s3}, count = 1;
    for (int i = 0; i < ndim; i++)
        count *= shape[i];
    if (b->net) {
        fv_unet_tensor *t = &b->net->tensors[b->ntensors];
        snprintf(t->name, sizeof t->name, "%s%s%s.%s", unit, *module ? "." : "", module, leaf);
        t->ndim = ndim;
        memcpy(t->shape, shape, sizeof shape);
        t->offset = b->nparams;
        t->count = count;
        t->fan_in = fan_in;
        t->fill = fill;
    }
    b->ntensors++;
    b->nparams += count;
}

static void add_groupnorm(builder *b, const char *unit, const char *module, size_t C)
{
    add_tensor(b, unit, module, "weight", 0, 1.0f, 1, C, 0, 0, 0);
    add_tensor(b, unit, module, "bias", 0, 0.0f, 1, C, 0, 0, 0);
}

/* A k x k Conv2d (ndim 4) or a 1x1 Conv1d (ndim 3), zeroed if torchcfm wraps it in zero_module. */
static void add_conv(builder *b, const char *unit, const char *module, size_t cout, size_t cin, size_t k, int ndim,
                     int zero)
{
    size_t fan_in = zero ? 0 : cin * k * k;
    add_tensor(b, unit, module, "weight", fan_in, 0.0f, ndim, cout, cin, k, k);
    add_tensor(b, unit, module, "bias", fan_in, 0.0f, 1, cout, 0, 0, 0);
}

static void add_linear(builder *b, const char *unit, const char *module, size_t nout, size_t nin)
{
    add_tensor(b, unit, module, "weight", nin, 0.0f, 2, nout, nin, 0, 0);
    add_tensor(b, unit, module, "bias", nin, 0.0f, 1, nout, 0, 0, 0);
}

static void begin_block(builder *b, const char *name, size_t index, size_t skip)
{
    if (index == FV_UNET_NO_SKIP)
        snprintf(b->block, sizeof b->block, "%s", name);
    else
        snprintf(b->block, sizeof b->block, "%s.%zu", name, index);
    if (b->net) {
        fv_unet_block *k = &b->net->blocks[b->nblocks];
        memcpy(k->name, b->block, sizeof k->name);
        k->unit0 = b->nunits;
        k->nunits = 0;
        k->skip = skip;
    }
    b->nblocks++;
    b->block_units = 0;
}

static void add_unit(builder *b, fv_unet_kind kind, size_t cin, size_t cout, size_t h, size_t w)
{
    char name[48];
    if (kind == FV_UNET_TIME)
        snprintf(name, sizeof name, "time_embed");
    else if (kind == FV_UNET_HEAD)
        snprintf(name, sizeof name, "%s", b->block);
    else
        snprintf(name, sizeof name, "%s.%zu", b->block, b->block_units);
    size_t t0 = b->ntensors, E = 4 * b->c->num_channels;
    switch (kind) {
    case FV_UNET_TIME:
        add_linear(b, name, "0", cout, cin);
        add_linear(b, name, "2", cout, cout);
        break;
    case FV_UNET_CONV:
        add_conv(b, name, "", cout, cin, 3, 4, 0);
        break;
    case FV_UNET_RES:
        add_groupnorm(b, name, "in_layers.0", cin);
        add_conv(b, name, "in_layers.2", cout, cin, 3, 4, 0);
        add_linear(b, name, "emb_layers.1", cout, E);
        add_groupnorm(b, name, "out_layers.0", cout);
        add_conv(b, name, "out_layers.3", cout, cout, 3, 4, 1);
        if (cin != cout)
            add_conv(b, name, "skip_connection", cout, cin, 1, 4, 0);
        break;
    case FV_UNET_ATTN:
        add_groupnorm(b, name, "norm", cin);
        add_conv(b, name, "qkv", 3 * cin, cin, 1, 3, 0);
        add_conv(b, name, "proj_out", cin, cin, 1, 3, 1);
        break;
    case FV_UNET_DOWN:
        add_conv(b, name, "op", cout, cin, 3, 4, 0);
        break;
    case FV_UNET_UP:
        add_conv(b, name, "conv", cout, cin, 3, 4, 0);
        break;
    case FV_UNET_HEAD:
        add_groupnorm(b, name, "0", cin);
        add_conv(b, name, "2", cout, cin, 3, 4, 1);
        break;
    }
    if (b->net) {
        fv_unet_unit *u = &b->net->units[b->nunits];
        *u = (fv_unet_unit){kind, cin, cout, h, w, kind == FV_UNET_ATTN ? heads_for(b->c, cin) : 0, t0,
                            b->ntensors - t0};
        if (kind != FV_UNET_TIME)
            b->net->blocks[b->nblocks - 1].nunits++;
    }
    b->nunits++;
    b->block_units++;
}

/* UNetModel.__init__ with the wrapper's defaults, module by module. */
static void walk(builder *b)
{
    const fv_unet_config *c = b->c;
    size_t nc = c->num_channels, H = c->height, W = c->width, L = c->nlevels;
    size_t chans[1 + FV_UNET_MAX_LEVELS * (FV_UNET_MAX_RES_BLOCKS + 1)], nskip = 0, nin = 0, ds = 1;
    add_unit(b, FV_UNET_TIME, nc, 4 * nc, 1, 1);
    size_t ch = nc * c->channel_mult[0], head_ch = ch;
    begin_block(b, "input_blocks", nin++, FV_UNET_NO_SKIP);
    add_unit(b, FV_UNET_CONV, c->in_channels, ch, H, W);
    chans[nskip++] = ch;
    for (size_t l = 0; l < L; l++) {
        size_t out = nc * c->channel_mult[l];
        for (size_t r = 0; r < c->num_res_blocks; r++) {
            begin_block(b, "input_blocks", nin++, FV_UNET_NO_SKIP);
            add_unit(b, FV_UNET_RES, ch, out, H / ds, W / ds);
            ch = out;
            if (attention_at(c, l))
                add_unit(b, FV_UNET_ATTN, ch, ch, H / ds, W / ds);
            chans[nskip++] = ch;
        }
        if (l + 1 < L) {
            begin_block(b, "input_blocks", nin++, FV_UNET_NO_SKIP);
            add_unit(b, FV_UNET_DOWN, ch, ch, H / ds, W / ds);
            chans[nskip++] = ch;
            ds *= 2;
        }
    }
    begin_block(b, "middle_block", FV_UNET_NO_SKIP, FV_UNET_NO_SKIP);
    add_unit(b, FV_UNET_RES, ch, ch, H / ds, W / ds);
    add_unit(b, FV_UNET_ATTN, ch, ch, H / ds, W / ds);
    add_unit(b, FV_UNET_RES, ch, ch, H / ds, W / ds);
    size_t nout = 0;
    for (size_t l = L; l-- > 0;) {
        size_t out = nc * c->channel_mult[l];
        for (size_t i = 0; i <= c->num_res_blocks; i++) {
            size_t skip = --nskip; /* input block `skip` pushed chans[skip] */
            begin_block(b, "output_blocks", nout++, skip);
            add_unit(b, FV_UNET_RES, ch + chans[skip], out, H / ds, W / ds);
            ch = out;
            if (attention_at(c, l))
                add_unit(b, FV_UNET_ATTN, ch, ch, H / ds, W / ds);
            if (l && i == c->num_res_blocks) {
                add_unit(b, FV_UNET_UP, ch, ch, H / ds, W / ds);
                ds /= 2;
            }
        }
    }
    begin_block(b, "out", FV_UNET_NO_SKIP, FV_UNET_NO_SKIP);
    add_unit(b, FV_UNET_HEAD, head_ch, c->in_channels, H, W);
}

size_t fv_unet_count_params(const fv_unet_config *c)
{
    if (fv_unet_config_check(c) != FV_OK)
        return 0;
    builder b = {.c = c};
    walk(&b);
    return b.nparams;
}

/* ---- network ---------------------------------------------------------------------------------- */

void fv_unet_free(fv_unet *net)
{
    if (!net)
        return;
    free(net->params);
    free(net->tensors);
    free(net->units);
    free(net->blocks);
    memset(net, 0, sizeof *net);
}

int fv_unet_layout(fv_unet *net, const fv_unet_config *c)
{
    memset(net, 0, sizeof *net);
    int st = fv_unet_config_check(c);
    if (st)
        return st;
    builder count = {.c = c};
    walk(&count);
    net->tensors = malloc(count.ntensors * sizeof *net->tensors);
    net->units = malloc(count.nunits * sizeof *net->units);
    net->blocks = malloc(count.nblocks * sizeof *net->blocks);
    if (!net->tensors || !net->units || !net->blocks) {
        fv_unet_free(net);
        return fv_error(FV_ENOMEM, "unet: cannot allocate the layout of %zu tensors", count.ntensors);
    }
    net->cfg = *c;
    builder b = {.c = c, .net = net};
    walk(&b);
    net->nparams = b.nparams;
    net->ntensors = b.ntensors;
    net->nunits = b.nunits;
    net->nblocks = b.nblocks;
    return FV_OK;
}

int fv_unet_init(fv_unet *net, const fv_unet_config *c, uint64_t seed)
{
    int st = fv_unet_layout(net, c);
    if (st)
        return st;
    net->params = malloc(net->nparams * sizeof(float));
    if (!net->params) {
        size_t n = net->nparams;
        fv_unet_free(net);
        return fv_error(FV_ENOMEM, "unet: cannot allocate %zu parameters", n);
    }
    /* torch's Conv/Linear reset_parameters: kaiming_uniform_(a = sqrt(5)) gives the bound
     * sqrt(6 / ((1 + 5) fan_in)) = 1/sqrt(fan_in) for the weight, and the bias uses the same bound. */
    for (size_t i = 0; i < net->ntensors; i++) {
        const fv_unet_tensor *t = &net->tensors[i];
        float *p = net->params + t->offset;
        if (!t->fan_in) {
            for (size_t j = 0; j < t->count; j++)
                p[j] = t->fill;
            continue;
        }
        double bound = 1.0 / sqrt((double)t->fan_in), u;
        fv_rng r = fv_rng_make(seed, FV_UNET_INIT_STREAM + i);
        for (size_t j = 0; j < t->count; j++) {
            fv_rng_uniform(&r, 1, &u);
            p[j] = (float)(bound * (2.0 * u - 1.0));
        }
    }
    return FV_OK;
}

const fv_unet_tensor *fv_unet_tensor_find(const fv_unet *net, const char *name)
{
    for (size_t i = 0; i < net->ntensors; i++)
        if (!strcmp(net->tensors[i].name, name))
            return &net->tensors[i];
    return NULL;
}

/* ---- convolutions: oneDNN plans, or the reference layers ----------------------------------------- */

static fv_conv2d_shape conv(size_t cin, size_t cout, size_t h, size_t w, size_t k, size_t stride)
{
    return (fv_conv2d_shape){cin, cout, h, w, k, stride, k / 2};
}

#define UNIT_CONVS 3 /* a residual block's two 3x3 convolutions and its 1x1 skip */

/* Convolution i of unit u (in the order unit_forward runs them), and whether its backward adds the
 * input gradient into a buffer other consumers sum into (else it overwrites a scratch); 0 if u has no
 * convolution i. */
static int unit_conv(const fv_unet_unit *u, size_t i, fv_conv2d_shape *s, int *add)
{
    size_t hw1 = u->kind == FV_UNET_UP ? 2 : 1;
    *add = 0;
    switch (u->kind) {
    case FV_UNET_RES:
        if (i == 2 && u->cin == u->cout)
            return 0;
        *add = i == 2;
        *s = i == 0 ? conv(u->cin, u->cout, u->h, u->w, 3, 1)
             : i == 1 ? conv(u->cout, u->cout, u->h, u->w, 3, 1)
                      : conv(u->cin, u->cout, u->h, u->w, 1, 1);
        return i < 3;
    case FV_UNET_ATTN:
        *s = i == 0 ? conv(u->cin, 3 * u->cin, u->h, u->w, 1, 1) : conv(u->cin, u->cin, u->h, u->w, 1, 1);
        return i < 2;
    case FV_UNET_CONV:
    case FV_UNET_DOWN:
        *add = 1;
        *s = conv(u->cin, u->cout, u->h, u->w, 3, u->kind == FV_UNET_DOWN ? 2 : 1);
        return i == 0;
    case FV_UNET_UP:
    case FV_UNET_HEAD:
        *s = conv(u->cin, u->cout, hw1 * u->h, hw1 * u->w, 3, 1);
        return i == 0;
    case FV_UNET_TIME:
        break;
    }
    return 0;
}

/* The plans for one batch size: one per distinct (shape, add), shared by the units that have it, and
 * one scratch for their layout conversions (the plans run one at a time). */
typedef struct {
    size_t B, nplans;
    fv_dnnl_conv **plans;
    fv_conv2d_shape *shapes;
    int *adds;
    size_t *index; /* nunits x UNIT_CONVS: the plan of each unit's convolution */
    float **kept;  /* nunits x UNIT_CONVS: each convolution's blocked input from forward to backward, or NULL */
    float *kept_base, *scratch;
} conv_set;

struct fv_unet_convs {
    conv_set set[2]; /* the workspace's batch size; the last other one a pass ran (0 images: none) */
};

static void conv_set_free(conv_set *c)
{
    for (size_t i = 0; i < c->nplans; i++)
        fv_dnnl_conv_free(c->plans[i]);
    free(c->plans);
    free(c->shapes);
    free(c->adds);
    free(c->index);
    free(c->kept);
    free(c->kept_base);
    free(c->scratch);
    memset(c, 0, sizeof *c);
}

static int same_shape(const fv_conv2d_shape *a, const fv_conv2d_shape *b)
{
    return a->cin == b->cin && a->cout == b->cout && a->h == b->h && a->w == b->w && a->k == b->k &&
           a->stride == b->stride && a->pad == b->pad;
}

/* One buffer per convolution (not per plan: plans are shared) for its forward's blocked input, which its
 * backward reads instead of converting the same input again. */
static int kept_init(conv_set *c, const fv_unet *net)
{
    size_t n = net->nunits * UNIT_CONVS, total = 0;
    for (int pass = 0; pass < 2; pass++) {
        total = 0;
        for (size_t q = 0; q < n; q++) {
            fv_conv2d_shape s;
            int add;
            if (!unit_conv(&net->units[q / UNIT_CONVS], q % UNIT_CONVS, &s, &add))
                continue;
            size_t k = (fv_dnnl_conv_kept_size(c->plans[c->index[q]]) + 15) / 16 * 16; /* 64-byte aligned */
            if (pass && k)
                c->kept[q] = c->kept_base + total;
            total += k;
        }
        if (!pass && total && !(c->kept_base = aligned_alloc(64, total * sizeof(float)))) {
            conv_set_free(c);
            return fv_error(FV_ENOMEM, "unet: cannot allocate the convolutions' kept inputs (%zu floats)", total);
        }
    }
    return FV_OK;
}

static int conv_set_init(conv_set *c, const fv_unet *net, size_t B)
{
    size_t n = net->nunits * UNIT_CONVS, need = 0;
    memset(c, 0, sizeof *c);
    c->plans = calloc(n, sizeof *c->plans);
    c->shapes = calloc(n, sizeof *c->shapes);
    c->adds = calloc(n, sizeof *c->adds);
    c->index = calloc(n, sizeof *c->index);
    c->kept = calloc(n, sizeof *c->kept);
    if (!c->plans || !c->shapes || !c->adds || !c->index || !c->kept) {
        conv_set_free(c);
        return fv_error(FV_ENOMEM, "unet: cannot allocate the convolution plans' table");
    }
    for (size_t j = 0; j < net->nunits; j++)
        for (size_t i = 0; i < UNIT_CONVS; i++) {
            fv_conv2d_shape s;
            int add;
            if (!unit_conv(&net->units[j], i, &s, &add))
                continue;
            size_t p = 0;
            while (p < c->nplans && !(same_shape(&c->shapes[p], &s) && c->adds[p] == add))
                p++;
            if (p == c->nplans) {
                int st = fv_dnnl_conv_create(&c->plans[p], &s, B, add);
                if (st) {
                    conv_set_free(c);
                    return st;
                }
                c->shapes[p] = s;
                c->adds[p] = add;
                c->nplans++;
                size_t m = fv_dnnl_conv_scratch_size(c->plans[p]);
                need = m > need ? m : need;
            }
            c->index[j * UNIT_CONVS + i] = p;
        }
    if (need && !(c->scratch = aligned_alloc(64, (need * sizeof(float) + 63) / 64 * 64))) {
        conv_set_free(c);
        return fv_error(FV_ENOMEM, "unet: cannot allocate the convolutions' scratch (%zu floats)", need);
    }
    int st = kept_init(c, net);
    if (st)
        return st;
    for (size_t p = 0; p < c->nplans; p++)
        fv_dnnl_conv_bind(c->plans[p], c->scratch);
    c->B = B;
    return FV_OK;
}

/* The plans for B images: the workspace's, or (made now if need be) the other size's; NULL where
 * oneDNN is not in use or cannot make them (the pass then runs the reference layers). */
static conv_set *conv_plans(const fv_unet *net, fv_unet_acts *a, size_t B)
{
    struct fv_unet_convs *cv = a->convs;
    if (!cv)
        return NULL;
    if (cv->set[0].B == B)
        return &cv->set[0];
    if (cv->set[1].B != B) {
        conv_set_free(&cv->set[1]);
        if (conv_set_init(&cv->set[1], net, B))
            return NULL;
    }
    return &cv->set[1];
}

static fv_dnnl_conv *plan_of(const conv_set *c, size_t j, size_t i)
{
    return c ? c->plans[c->index[j * UNIT_CONVS + i]] : NULL;
}

/* OpenBLAS's own entry points (Debian's cblas.h declares them too). */
int openblas_get_num_threads(void);
void openblas_set_num_threads(int n);

/* While oneDNN runs a pass on OpenMP's threads, OpenBLAS (the attention's and the linear layers'
 * products) runs on the calling thread alone: its idle workers spin for a while after each product,
 * and on a machine with as many OpenMP threads as cores they took the cores oneDNN's threads wait for
 * (a 3x3 convolution 5-20x slower, measured). Returns the count to restore. */
static int blas_hold(const conv_set *cs)
{
    int n = cs ? openblas_get_num_threads() : 1;
    if (n > 1)
        openblas_set_num_threads(1);
    return n;
}

static void blas_release(int n)
{
    if (n > 1)
        openblas_set_num_threads(n);
}

/* Convolution i of unit j forward: out = conv(in) + b. */
static void conv_forward(const fv_unet *net, const conv_set *cs, fv_unet_acts *a, size_t j, size_t i, size_t B,
                         float *out, const float *in, const float *W, const float *b)
{
    fv_conv2d_shape s;
    int add;
    unit_conv(&net->units[j], i, &s, &add);
    if (cs)
        fv_dnnl_conv_forward(plan_of(cs, j, i), out, in, W, b, cs->kept[j * UNIT_CONVS + i]);
    else
        fv_conv2d_forward(out, in, W, b, s.k == 1 ? NULL : a->col, B, &s);
}

/* Its backward: dW, db overwritten; the input gradient added into dinp (convolutions unit_conv marks
 * `add`) or written over it (the others); none if dinp is NULL. */
static void conv_backward(const fv_unet *net, const conv_set *cs, fv_unet_acts *a, size_t j, size_t i, size_t B,
                          float *dinp, float *dW, float *db, const float *dout, const float *in, const float *W)
{
    fv_conv2d_shape s;
    int add;
    unit_conv(&net->units[j], i, &s, &add);
    if (cs) {
        fv_dnnl_conv_backward(plan_of(cs, j, i), dinp, dW, db, dout, in, W, cs->kept[j * UNIT_CONVS + i]);
        return;
    }
    if (dinp && !add)
        memset(dinp, 0, B * s.cin * s.h * s.w * sizeof(float));
    fv_conv2d_backward(dinp, dW, db, dout, in, W, s.k == 1 ? NULL : a->col, B, &s);
}

/* ---- activations workspace -------------------------------------------------------------------- */

typedef struct {
    float *base; /* NULL while sizing */
    size_t used;
} carver;

static float *take(carver *k, size_t n)
{
    float *p = k->base ? k->base + k->used : NULL;
    k->used += n;
    return p;
}

static size_t out_hw(const fv_unet_unit *u)
{
    size_t hw = u->h * u->w;
    return u->kind == FV_UNET_DOWN ? hw / 4 : u->kind == FV_UNET_UP ? 4 * hw : hw;
}

static int starts_output_block(const fv_unet *net, size_t j)
{
    for (size_t k = 0; k < net->nblocks; k++)
        if (net->blocks[k].unit0 == j)
            return net->blocks[k].skip != FV_UNET_NO_SKIP;
    return 0;
}

/* Lay the workspace out in k (forward tensors, then all activation gradients contiguously, then
 * scratch) and wire each unit's input to its producer's output. */
static void carve_acts(const fv_unet *net, size_t B, fv_unet_acts *a, carver *k)
{
    const fv_unet_config *c = &net->cfg;
    size_t G = FV_UNET_GROUPS, scratch = 0, col = 0, E = 4 * c->num_channels;
    a->x = take(k, B * c->in_channels * c->height * c->width);
    for (size_t j = 0; j < net->nunits; j++) {
        const fv_unet_unit *u = &net->units[j];
        fv_unet_unit_acts *ua = &a->u[j];
        memset(ua, 0, sizeof *ua);
        size_t hw = u->h * u->w, ohw = out_hw(u), big = hw > ohw ? hw : ohw;
        size_t nin = B * u->cin * hw, nout = B * u->cout * hw;
        ua->out = take(k, B * u->cout * ohw);
        switch (u->kind) {
        case FV_UNET_TIME:
            ua->temb = take(k, B * u->cin);
            ua->pre = take(k, B * u->cout);
            ua->post = take(k, B * u->cout);
            ua->act = take(k, B * u->cout);
            break;
        case FV_UNET_RES:
            ua->norm = take(k, nin);
            ua->act = take(k, nin);
            ua->mean = take(k, B * G);
            ua->rstd = take(k, B * G);
            ua->h = take(k, nout);
            ua->eproj = take(k, B * u->cout);
            ua->norm2 = take(k, nout);
            ua->act2 = take(k, nout);
            ua->mean2 = take(k, B * G);
            ua->rstd2 = take(k, B * G);
            if (c->dropout > 0.0f)
                ua->drop = take(k, nout);
            break;
        case FV_UNET_ATTN:
            ua->norm = take(k, nin);
            ua->mean = take(k, B * G);
            ua->rstd = take(k, B * G);
            ua->qkv = take(k, 3 * nin);
            ua->att = take(k, B * u->heads * hw * hw);
            ua->h = take(k, nin);
            break;
        case FV_UNET_UP:
            ua->up = take(k, B * u->cin * ohw);
            break;
        case FV_UNET_HEAD:
            ua->norm = take(k, nin);
            ua->act = take(k, nin);
            ua->mean = take(k, B * G);
            ua->rstd = take(k, B * G);
            break;
        case FV_UNET_CONV:
        case FV_UNET_DOWN:
            break;
        }
        if (starts_output_block(net, j))
            ua->in = take(k, nin); /* the concatenation [h, skip] */
        if (u->kind != FV_UNET_TIME) {
            /* Scratch for the widest tensor a unit's backward differentiates (an attention block's qkv
             * has 3 C channels, an upsampling works at its output's size), and for its im2col (a
             * 3x3 convolution's is 9 channels per input channel, one image) or its T x T attention
             * weights. */
            size_t ch = u->kind == FV_UNET_ATTN ? 3 * u->cin : u->cin > u->cout ? u->cin : u->cout;
            size_t cs = u->kind == FV_UNET_ATTN ? hw * hw : (u->cin > u->cout ? u->cin : u->cout) * 9 * big;
            scratch = B * ch * big > scratch ? B * ch * big : scratch;
            col = cs > col ? cs : col;
        }
    }
    /* Gradients: every unit's output but the head's (the caller's dout), the time embedding's SiLU,
     * and the concatenations. */
    size_t grad0 = k->used;
    for (size_t j = 0; j < net->nunits; j++) {
        const fv_unet_unit *u = &net->units[j];
        fv_unet_unit_acts *ua = &a->u[j];
        if (u->kind == FV_UNET_TIME)
            ua->dact = take(k, B * u->cout);
        else if (u->kind != FV_UNET_HEAD)
            ua->dout = take(k, B * u->cout * out_hw(u));
        if (starts_output_block(net, j))
            ua->din = take(k, B * u->cin * u->h * u->w);
    }
    a->grad = k->base ? k->base + grad0 : NULL;
    a->grad_end = k->base ? k->base + k->used : NULL;
    a->g0 = take(k, scratch);
    a->g1 = take(k, scratch);
    a->g2 = take(k, scratch);
    a->col = take(k, col);
    a->ebuf = take(k, B * E);
    /* Unit 1 (the first convolution) reads the copy of x, whose gradient nobody needs; an output
     * block's first unit reads its concatenation; every other unit reads its predecessor. */
    a->u[1].in = a->x;
    for (size_t j = 2; j < net->nunits; j++)
        if (!starts_output_block(net, j)) {
            a->u[j].in = a->u[j - 1].out;
            a->u[j].din = a->u[j - 1].dout;
        }
}

int fv_unet_acts_place(fv_unet_acts *a, const fv_unet *net, size_t B, float *mem, size_t *nfloats)
{
    memset(a, 0, sizeof *a);
    if (B == 0)
        return fv_error(FV_EINPUT, "unet: activation workspace needs at least one image");
    a->u = malloc(net->nunits * sizeof *a->u);
    if (!a->u)
        return fv_error(FV_ENOMEM, "unet: cannot allocate the workspace's unit table");
    carver k = {NULL, 0};
    carve_acts(net, 1, a, &k); /* one image: every size is at most linear in B */
    size_t bytes; /* B is a batch from the user: a workspace that can never fit is bad input */
    int st =
        fv_size_bytes(&bytes, "unet: activations of a batch (images x floats per image)", B, k.used, sizeof(float));
    if (st) {
        free(a->u);
        a->u = NULL;
        return st;
    }
    k = (carver){mem, 0};
    carve_acts(net, B, a, &k);
    *nfloats = k.used;
    if (!mem) {
        free(a->u);
        a->u = NULL;
        return FV_OK;
    }
    a->B = B;
    a->nunits = net->nunits;
    return FV_OK;
}

int fv_unet_acts_alloc(fv_unet_acts *a, const fv_unet *net, size_t B)
{
    size_t n;
    int st = fv_unet_acts_place(a, net, B, NULL, &n);
    if (st)
        return st;
    float *mem = malloc(n * sizeof(float));
    if (!mem)
        return fv_error(FV_ENOMEM, "unet: cannot allocate activations for %zu images (%zu floats)", B, n);
    if ((st = fv_unet_acts_place(a, net, B, mem, &n))) {
        free(mem);
        return st;
    }
    a->mem = mem;
    if (!(a->convs = calloc(1, sizeof *a->convs))) {
        fv_unet_acts_free(a);
        return fv_error(FV_ENOMEM, "unet: cannot allocate the convolution plans");
    }
    if ((st = conv_set_init(&a->convs->set[0], net, B))) {
        fv_unet_acts_free(a);
        return st;
    }
    return FV_OK;
}

void fv_unet_acts_free(fv_unet_acts *a)
{
    if (!a)
        return;
    if (a->convs) {
        conv_set_free(&a->convs->set[0]);
        conv_set_free(&a->convs->set[1]);
        free(a->convs);
    }
    free(a->mem);
    free(a->u);
    memset(a, 0, sizeof *a);
}

/* ---- forward ---------------------------------------------------------------------------------- */

static const float *param(const fv_unet *net, const fv_unet_unit *u, size_t i)
{
    return net->params + net->tensors[u->tensor0 + i].offset;
}

static float *grad(const fv_unet *net, float *grads, const fv_unet_unit *u, size_t i)
{
    return grads + net->tensors[u->tensor0 + i].offset;
}

/* The dropout mask of unit j (unet.h), four elements per Philox block; a batch that starts at image
 * row0 of a larger one starts row0 images further (exact: channel counts are multiples of 32, so an
 * image's cout * hw elements are whole blocks). */
static uint64_t dropout_block0(const fv_unet *net, const fv_unet_acts *a, size_t j)
{
    const fv_unet_unit *u = &net->units[j];
    return FV_UNET_DROPOUT_BLOCK0(j) + (uint64_t)a->dropout_row0 * (u->cout * u->h * u->w / 4);
}

/* The tensor the second convolution of residual block j reads: the dropout output when training. */
static const float *res_conv2_input(const fv_unet *net, const fv_unet_acts *a, size_t j)
{
    return a->train && net->cfg.dropout > 0.0f ? a->u[j].drop : a->u[j].act2;
}

void fv_unet_time_forward(const fv_unet *net, size_t B, const float *t, fv_unet_acts *a)
{
    const fv_unet_unit *u = &net->units[0];
    fv_unet_unit_acts *ua = &a->u[0];
    size_t E = u->cout;
    fv_timestep_embedding(ua->temb, t, B, u->cin);
    fv_linear_forward(ua->pre, ua->temb, param(net, u, 0), param(net, u, 1), B, u->cin, E);
    fv_act_forward(ua->post, ua->pre, B * E, FV_ACT_SILU);
    fv_linear_forward(ua->out, ua->post, param(net, u, 2), param(net, u, 3), B, E, E);
    fv_act_forward(ua->act, ua->out, B * E, FV_ACT_SILU);
}

static void res_forward(const fv_unet *net, const conv_set *cs, size_t j, size_t B, fv_unet_acts *a)
{
    const fv_unet_unit *u = &net->units[j];
    fv_unet_unit_acts *ua = &a->u[j];
    size_t hw = u->h * u->w, G = FV_UNET_GROUPS, E = net->units[0].cout, n = B * u->cout * hw;
    fv_groupnorm_silu_forward(ua->norm, ua->act, ua->mean, ua->rstd, ua->in, param(net, u, 0), param(net, u, 1), B,
                              u->cin, hw, G);
    conv_forward(net, cs, a, j, 0, B, ua->h, ua->act, param(net, u, 2), param(net, u, 3));
    fv_linear_forward(ua->eproj, a->u[0].act, param(net, u, 4), param(net, u, 5), B, E, u->cout);
    fv_channel_bias_forward(ua->h, ua->eproj, B, u->cout, hw);
    fv_groupnorm_silu_forward(ua->norm2, ua->act2, ua->mean2, ua->rstd2, ua->h, param(net, u, 6), param(net, u, 7), B,
                              u->cout, hw, G);
    if (a->train && net->cfg.dropout > 0.0f)
        fv_dropout_forward(ua->drop, ua->act2, n, net->cfg.dropout, a->dropout_seed, a->dropout_stream,
                           dropout_block0(net, a, j));
    conv_forward(net, cs, a, j, 1, B, ua->out, res_conv2_input(net, a, j), param(net, u, 8), param(net, u, 9));
    if (u->cin != u->cout) {
        conv_forward(net, cs, a, j, 2, B, a->g0, ua->in, param(net, u, 10), param(net, u, 11));
        fv_accumulate(ua->out, a->g0, n);
    } else {
        fv_accumulate(ua->out, ua->in, n);
    }
}

static void attn_forward(const fv_unet *net, const conv_set *cs, size_t j, size_t B, fv_unet_acts *a)
{
    const fv_unet_unit *u = &net->units[j];
    fv_unet_unit_acts *ua = &a->u[j];
    size_t C = u->cin, T = u->h * u->w;
    fv_groupnorm_forward(ua->norm, ua->mean, ua->rstd, ua->in, param(net, u, 0), param(net, u, 1), B, C, T,
                         FV_UNET_GROUPS);
    conv_forward(net, cs, a, j, 0, B, ua->qkv, ua->norm, param(net, u, 2), param(net, u, 3));
    fv_attention_forward(ua->h, ua->att, ua->qkv, B, u->heads, C, T);
    conv_forward(net, cs, a, j, 1, B, ua->out, ua->h, param(net, u, 4), param(net, u, 5));
    fv_accumulate(ua->out, ua->in, B * C * T);
}

static void unit_forward(const fv_unet *net, const conv_set *cs, size_t j, size_t B, fv_unet_acts *a)
{
    const fv_unet_unit *u = &net->units[j];
    fv_unet_unit_acts *ua = &a->u[j];
    switch (u->kind) {
    case FV_UNET_RES:
        res_forward(net, cs, j, B, a);
        break;
    case FV_UNET_ATTN:
        attn_forward(net, cs, j, B, a);
        break;
    case FV_UNET_CONV:
    case FV_UNET_DOWN:
        conv_forward(net, cs, a, j, 0, B, ua->out, ua->in, param(net, u, 0), param(net, u, 1));
        break;
    case FV_UNET_UP:
        fv_upsample2x_forward(ua->up, ua->in, B, u->cin, u->h, u->w);
        conv_forward(net, cs, a, j, 0, B, ua->out, ua->up, param(net, u, 0), param(net, u, 1));
        break;
    case FV_UNET_HEAD:
        fv_groupnorm_silu_forward(ua->norm, ua->act, ua->mean, ua->rstd, ua->in, param(net, u, 0), param(net, u, 1), B,
                                  u->cin, u->h * u->w, FV_UNET_GROUPS);
        conv_forward(net, cs, a, j, 0, B, ua->out, ua->act, param(net, u, 2), param(net, u, 3));
        break;
    case FV_UNET_TIME:
        break; /* fv_unet_time_forward: it reads t, not an image */
    }
}

float *fv_unet_block_input(const fv_unet *net, const fv_unet_acts *a, size_t blk)
{
    return a->u[net->blocks[blk].unit0].in;
}

const float *fv_unet_block_output(const fv_unet *net, const fv_unet_acts *a, size_t blk)
{
    const fv_unet_block *k = &net->blocks[blk];
    return a->u[k->unit0 + k->nunits - 1].out;
}

static void block_forward(const fv_unet *net, const conv_set *cs, size_t blk, size_t B, fv_unet_acts *a)
{
    const fv_unet_block *k = &net->blocks[blk];
    for (size_t j = k->unit0; j < k->unit0 + k->nunits; j++)
        unit_forward(net, cs, j, B, a);
}

void fv_unet_block_forward(const fv_unet *net, size_t blk, size_t B, fv_unet_acts *a)
{
    assert(B >= 1 && B <= a->B && a->nunits == net->nunits);
    a->rows = B;
    const conv_set *cs = conv_plans(net, a, B);
    int nb = blas_hold(cs);
    block_forward(net, cs, blk, B, a);
    blas_release(nb);
}

/* The concatenation an output block reads: the previous unit's output, then its skip. */
static void concat_pieces(const fv_unet *net, const fv_unet_block *k, size_t *Ca, size_t *Cb, size_t *hw)
{
    const fv_unet_block *skip = &net->blocks[k->skip];
    const fv_unet_unit *prev = &net->units[k->unit0 - 1], *s = &net->units[skip->unit0 + skip->nunits - 1];
    *Ca = prev->cout;
    *Cb = s->cout;
    *hw = out_hw(prev);
}

void fv_unet_forward(const fv_unet *net, size_t B, const float *x, const float *t, float *out, fv_unet_acts *a)
{
    const fv_unet_config *c = &net->cfg;
    assert(B >= 1 && B <= a->B && a->nunits == net->nunits);
    memcpy(a->x, x, B * c->in_channels * c->height * c->width * sizeof(float));
    a->rows = B;
    const conv_set *cs = conv_plans(net, a, B);
    int nb = blas_hold(cs);
    fv_unet_time_forward(net, B, t, a);
    for (size_t blk = 0; blk < net->nblocks; blk++) {
        const fv_unet_block *k = &net->blocks[blk];
        if (k->skip != FV_UNET_NO_SKIP) {
            size_t Ca, Cb, hw;
            concat_pieces(net, k, &Ca, &Cb, &hw);
            fv_concat_forward(a->u[k->unit0].in, a->u[k->unit0 - 1].out, fv_unet_block_output(net, a, k->skip), B,
                              Ca, Cb, hw);
        }
        block_forward(net, cs, blk, B, a);
    }
    blas_release(nb);
    memcpy(out, a->u[net->nunits - 1].out, B * c->in_channels * c->height * c->width * sizeof(float));
}

/* ---- backward --------------------------------------------------------------------------------- */

static void res_backward(const fv_unet *net, const conv_set *cs, size_t j, size_t B, const float *dout, float *grads,
                         fv_unet_acts *a)
{
    const fv_unet_unit *u = &net->units[j];
    fv_unet_unit_acts *ua = &a->u[j];
    size_t hw = u->h * u->w, G = FV_UNET_GROUPS, E = net->units[0].cout, n = B * u->cout * hw;
    if (u->cin != u->cout)
        conv_backward(net, cs, a, j, 2, B, ua->din, grad(net, grads, u, 10), grad(net, grads, u, 11), dout, ua->in,
                      param(net, u, 10));
    else
        fv_accumulate(ua->din, dout, n);
    float *g1 = a->g1, *g2 = a->g2, *g0 = a->g0;
    conv_backward(net, cs, a, j, 1, B, g1, grad(net, grads, u, 8), grad(net, grads, u, 9), dout,
                  res_conv2_input(net, a, j), param(net, u, 8));
    if (a->train && net->cfg.dropout > 0.0f)
        fv_dropout_backward(g1, g1, n, net->cfg.dropout, a->dropout_seed, a->dropout_stream,
                            dropout_block0(net, a, j));
    fv_zero(g2, n);
    fv_silu_groupnorm_backward(g2, grad(net, grads, u, 6), grad(net, grads, u, 7), g1, ua->norm2, ua->act2, ua->h,
                               ua->mean2, ua->rstd2, param(net, u, 6), B, u->cout, hw, G);
    /* g1 is free again: it takes the gradient of the time projection (B x cout). */
    fv_channel_bias_backward(g1, g2, B, u->cout, hw);
    fv_linear_backward(a->ebuf, grad(net, grads, u, 4), grad(net, grads, u, 5), g1, a->u[0].act, param(net, u, 4), B,
                       E, u->cout);
    fv_accumulate(a->u[0].dact, a->ebuf, B * E);
    conv_backward(net, cs, a, j, 0, B, g0, grad(net, grads, u, 2), grad(net, grads, u, 3), g2, ua->act,
                  param(net, u, 2));
    fv_silu_groupnorm_backward(ua->din, grad(net, grads, u, 0), grad(net, grads, u, 1), g0, ua->norm, ua->act, ua->in,
                               ua->mean, ua->rstd, param(net, u, 0), B, u->cin, hw, G);
}

static void attn_backward(const fv_unet *net, const conv_set *cs, size_t j, size_t B, const float *dout, float *grads,
                          fv_unet_acts *a)
{
    const fv_unet_unit *u = &net->units[j];
    fv_unet_unit_acts *ua = &a->u[j];
    size_t C = u->cin, T = u->h * u->w, n = B * C * T;
    fv_accumulate(ua->din, dout, n);
    conv_backward(net, cs, a, j, 1, B, a->g0, grad(net, grads, u, 4), grad(net, grads, u, 5), dout, ua->h,
                  param(net, u, 4));
    fv_zero(a->g1, 3 * n);
    fv_attention_backward(a->g1, a->col, a->g0, ua->qkv, ua->att, B, u->heads, C, T);
    conv_backward(net, cs, a, j, 0, B, a->g2, grad(net, grads, u, 2), grad(net, grads, u, 3), a->g1, ua->norm,
                  param(net, u, 2));
    fv_groupnorm_backward(ua->din, grad(net, grads, u, 0), grad(net, grads, u, 1), a->g2, ua->in, ua->mean, ua->rstd,
                          param(net, u, 0), B, C, T, FV_UNET_GROUPS);
}

static void time_backward(const fv_unet *net, size_t B, float *grads, fv_unet_acts *a)
{
    const fv_unet_unit *u = &net->units[0];
    fv_unet_unit_acts *ua = &a->u[0];
    size_t E = u->cout;
    fv_act_backward(ua->dact, ua->dact, ua->out, ua->act, B * E, FV_ACT_SILU); /* now dL/demb */
    fv_linear_backward(a->ebuf, grad(net, grads, u, 2), grad(net, grads, u, 3), ua->dact, ua->post, param(net, u, 2),
                       B, E, E);
    fv_act_backward(a->ebuf, a->ebuf, ua->pre, ua->post, B * E, FV_ACT_SILU);
    fv_linear_backward(NULL, grad(net, grads, u, 0), grad(net, grads, u, 1), a->ebuf, ua->temb, param(net, u, 0), B,
                       u->cin, E);
}

static void unit_backward(const fv_unet *net, const conv_set *cs, size_t j, size_t B, const float *dout, float *grads,
                          fv_unet_acts *a)
{
    const fv_unet_unit *u = &net->units[j];
    fv_unet_unit_acts *ua = &a->u[j];
    size_t hw = u->h * u->w;
    switch (u->kind) {
    case FV_UNET_RES:
        res_backward(net, cs, j, B, dout, grads, a);
        break;
    case FV_UNET_ATTN:
        attn_backward(net, cs, j, B, dout, grads, a);
        break;
    case FV_UNET_CONV:
    case FV_UNET_DOWN:
        conv_backward(net, cs, a, j, 0, B, ua->din, grad(net, grads, u, 0), grad(net, grads, u, 1), dout, ua->in,
                      param(net, u, 0));
        break;
    case FV_UNET_UP:
        conv_backward(net, cs, a, j, 0, B, a->g0, grad(net, grads, u, 0), grad(net, grads, u, 1), dout, ua->up,
                      param(net, u, 0));
        fv_upsample2x_backward(ua->din, a->g0, B, u->cin, u->h, u->w);
        break;
    case FV_UNET_HEAD:
        conv_backward(net, cs, a, j, 0, B, a->g0, grad(net, grads, u, 2), grad(net, grads, u, 3), dout, ua->act,
                      param(net, u, 2));
        fv_silu_groupnorm_backward(ua->din, grad(net, grads, u, 0), grad(net, grads, u, 1), a->g0, ua->norm, ua->act,
                                   ua->in, ua->mean, ua->rstd, param(net, u, 0), B, u->cin, hw, FV_UNET_GROUPS);
        break;
    case FV_UNET_TIME:
        time_backward(net, B, grads, a);
        break;
    }
}

void fv_unet_backward(const fv_unet *net, size_t B, const float *dout, float *grads, fv_unet_acts *a)
{
    assert(B == a->rows && a->nunits == net->nunits);
    const conv_set *cs = conv_plans(net, a, B);
    int nb = blas_hold(cs);
    /* The activation gradients are sums over their consumers: start them at zero. */
    fv_zero(a->grad, (size_t)(a->grad_end - a->grad));
    for (size_t blk = net->nblocks; blk-- > 0;) {
        const fv_unet_block *k = &net->blocks[blk];
        for (size_t j = k->unit0 + k->nunits; j-- > k->unit0;)
            unit_backward(net, cs, j, B, j == net->nunits - 1 ? dout : a->u[j].dout, grads, a);
        if (k->skip != FV_UNET_NO_SKIP) {
            size_t Ca, Cb, hw;
            const fv_unet_block *skip = &net->blocks[k->skip];
            concat_pieces(net, k, &Ca, &Cb, &hw);
            fv_concat_backward(a->u[k->unit0 - 1].dout, a->u[skip->unit0 + skip->nunits - 1].dout, a->u[k->unit0].din,
                               B, Ca, Cb, hw);
        }
    }
    unit_backward(net, cs, 0, B, NULL, grads, a);
    blas_release(nb);
}

/* ---- safetensors ------------------------------------------------------------------------------ */

int fv_unet_read(const fv_unet *net, const fv_st_file *f, const char *prefix, float *dst)
{
    char name[96];
    for (size_t i = 0; i < net->ntensors; i++) {
        const fv_unet_tensor *t = &net->tensors[i];
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        int st = fv_st_get_f32(f, name, t->ndim, t->shape, dst + t->offset);
        if (st)
            return st;
    }
    return FV_OK;
}

/* "a,b,c" of n numbers into buf. */
static void join(char *buf, size_t size, const size_t *v, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%zu", i ? "," : "", v[i]);
}

#define UNET_META_KEYS 8

int fv_unet_write(const char *path, const fv_unet *net, const float *params, size_t nmeta, const char *const *keys,
                  const char *const *values)
{
    static const char *const model_keys[UNET_META_KEYS] = {
        "unet.dim",      "unet.num_channels",      "unet.num_res_blocks",    "unet.channel_mult",
        "unet.num_heads", "unet.num_head_channels", "unet.attention_resolutions", "unet.dropout"};
    const fv_unet_config *c = &net->cfg;
    char v[UNET_META_KEYS][128];
    size_t dim[3] = {c->in_channels, c->height, c->width};
    join(v[0], sizeof v[0], dim, 3);
    snprintf(v[1], sizeof v[1], "%zu", c->num_channels);
    snprintf(v[2], sizeof v[2], "%zu", c->num_res_blocks);
    join(v[3], sizeof v[3], c->channel_mult, c->nlevels);
    snprintf(v[4], sizeof v[4], "%zu", c->num_heads);
    if (c->num_head_channels)
        snprintf(v[5], sizeof v[5], "%zu", c->num_head_channels);
    else
        snprintf(v[5], sizeof v[5], "-1");
    join(v[6], sizeof v[6], c->attention_resolutions, c->nattn);
    snprintf(v[7], sizeof v[7], "%.9g", (double)c->dropout);
    fv_st_entry *e = malloc(net->ntensors * sizeof *e);
    const char **mk = malloc((nmeta + UNET_META_KEYS) * sizeof *mk);
    const char **mv = malloc((nmeta + UNET_META_KEYS) * sizeof *mv);
    int st;
    if (!e || !mk || !mv) {
        st = fv_error(FV_ENOMEM, "unet: out of memory writing %s", path);
    } else {
        for (size_t i = 0; i < net->ntensors; i++) {
            const fv_unet_tensor *t = &net->tensors[i];
            e[i] = (fv_st_entry){t->name, FV_ST_F32, t->ndim, t->shape, params + t->offset};
        }
        for (size_t i = 0; i < UNET_META_KEYS; i++) {
            mk[i] = model_keys[i];
            mv[i] = v[i];
        }
        for (size_t i = 0; i < nmeta; i++) {
            mk[UNET_META_KEYS + i] = keys[i];
            mv[UNET_META_KEYS + i] = values[i];
        }
        st = fv_st_write(path, net->ntensors, e, nmeta + UNET_META_KEYS, mk, mv);
    }
    free(e);
    free(mk);
    free(mv);
    return st;
}

static const char *meta_get(const fv_st_file *f, const char *key, int *st)
{
    const char *s = fv_st_meta(f, key);
    if (!s && !*st)
        *st = fv_error(FV_EINPUT, "%s: no '%s' in the metadata (not a flowvar U-Net file?)", f->path ? f->path : "?",
                       key);
    return s;
}

/* A comma list of 1 to max whole numbers (a single number when max is 1); *n gets the count. Signs
 * and spaces are refused (strtoull would take "-1" as a huge number). */
static int parse_list(const fv_st_file *f, const char *key, size_t *out, size_t max, size_t *n, int *st)
{
    const char *s = meta_get(f, key, st);
    if (!s)
        return *st;
    size_t k = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || errno || *p == '-' || *p == '+' || *p == ' ' || k == max || (*end != ',' && *end != '\0'))
            return *st = fv_error(FV_EINPUT, "%s: metadata '%s' = '%s' is not %s", f->path ? f->path : "?", key, s,
                                  max == 1 ? "a whole number" : "a comma list of whole numbers");
        out[k++] = (size_t)v;
        if (*end == '\0')
            break;
        p = end + 1;
    }
    *n = k;
    return FV_OK;
}

int fv_unet_config_from_meta(const fv_st_file *f, fv_unet_config *c)
{
    fv_unet_config r = {0};
    int st = FV_OK;
    size_t dim[3], n = 0, one;
    const char *path = f->path ? f->path : "?";
    if (parse_list(f, "unet.dim", dim, 3, &n, &st))
        return st;
    if (n != 3)
        return fv_error(FV_EINPUT, "%s: metadata 'unet.dim' needs 3 numbers C,H,W", path);
    r.in_channels = dim[0], r.height = dim[1], r.width = dim[2];
    if (parse_list(f, "unet.num_channels", &r.num_channels, 1, &n, &st) ||
        parse_list(f, "unet.num_res_blocks", &r.num_res_blocks, 1, &n, &st) ||
        parse_list(f, "unet.channel_mult", r.channel_mult, FV_UNET_MAX_LEVELS, &r.nlevels, &st) ||
        parse_list(f, "unet.attention_resolutions", r.attention_resolutions, FV_UNET_MAX_LEVELS, &r.nattn, &st) ||
        parse_list(f, "unet.num_heads", &r.num_heads, 1, &n, &st))
        return st;
    const char *hc = meta_get(f, "unet.num_head_channels", &st), *dr = meta_get(f, "unet.dropout", &st);
    if (st)
        return st;
    if (!strcmp(hc, "-1"))
        r.num_head_channels = 0;
    else if (parse_list(f, "unet.num_head_channels", &one, 1, &n, &st))
        return st;
    else
        r.num_head_channels = one;
    char *end;
    errno = 0;
    double d = strtod(dr, &end);
    if (end == dr || *end != '\0' || errno)
        return fv_error(FV_EINPUT, "%s: metadata 'unet.dropout' = '%s' is not a number", path, dr);
    r.dropout = (float)d;
    if ((st = fv_unet_config_check(&r)))
        return fv_error_context(st, "%s: ", path);
    *c = r;
    return FV_OK;
}
