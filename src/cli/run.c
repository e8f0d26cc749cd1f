/* run.c: a training run's options, data and network, shared by train, sample, gap and reflow (see
 * run.h). */
#include "cli/run.h"

#include "core/error.h"
#include "core/io.h"
#include "core/size.h"
#include "nn/checkpoint.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Streams of a run's own random draws, far above the training steps' (cfm.c uses 2 step, 2 step + 1). */
#define STREAM_FINITE (1ULL << 62)
/* A lower bound on the bytes per row and coordinate of a batch: pairs and interpolant in double,
 * the network's input, target and output in float, and their copies. */
#define ROW_BYTES (8 * sizeof(double))

const fv_opt fv_train_opts_table[] = {
    {"model", "mlp|unet", "network: mlp (default) or unet (torchcfm's U-Net; needs --data)"},
    {"width", "N", "hidden width; default 256"},
    {"depth", "N", "hidden layers; default 3"},
    {"act", "silu|selu|relu|tanh", "activation; default silu"},
    {"temb", "N", "sinusoidal time embedding size (even); default 0 = raw t input"},
    {"fourier", "M", "mlp: append M random Fourier features sin(F z), cos(F z) of z = [x, t] to the input\n"
                     "      (F fixed, entries ~ N(0, S^2)); lets the MLP fit sharp fields; default 0 = none"},
    {"fourier-scale", "S", "with --fourier: the spread S of F's entries; default 3"},
    {"gmm", "K", "target: a random K-component Gaussian mixture (docs/THEORY.md section 5) instead of a Gaussian"},
    {"dim", "D", "with --gmm: the dimension"},
    {"gmm-scale", "S", "with --gmm: component means ~ N(0, S^2 I); default 5"},
    {"gmm-var", "V", "with --gmm: component covariance V I; default 0.25"},
    {"gmm-seed", "N", "with --gmm: seed of the mixture; default 0"},
    {"data", "fashion-mnist|cifar10", "target: an image set (noise -> data, independent coupling, N(0, I) source)"},
    {"data-dir", "DIR", "with --data: the folder of the files (Fashion-MNIST: Debian's by default)"},
    {"images", "N", "with --data: the first N training images (default all)"},
    {"pad32", NULL, "with --data: pad 28 x 28 images to 32 x 32"},
    {"direction", "forward|backward", "with --data: forward = noise -> data (default), backward = data -> noise"},
    {"map", "sharpen", "with --data: train on the known-OT pairs (image, T(image)) of the --images images,\n"
                       "      T(x) = (I + s L) x + b, L the negative Laplacian (see --map-strength, --map-offset)"},
    {"map-strength", "S", "with --map: the sharpening s; default 0.5"},
    {"map-offset", "A", "with --map: b is a horizontal ramp from -A to A; default 0.5"},
    {"channels", "N", "unet: base channel count; default 32"},
    {"channel-mult", "LIST", "unet: channel multiplier per level; default 1,2"},
    {"res-blocks", "N", "unet: residual blocks per level; default 1"},
    {"attention", "LIST", "unet: resolutions with attention (e.g. 16; default none)"},
    {"heads", "N", "unet: attention heads; default 1"},
    {"head-channels", "N", "unet: channels per head (0: use --heads); default 0"},
    {"dropout", "P", "unet: dropout rate in the residual blocks; default 0"},
    {"targets", "Y.npy", "target: this finite set, shape (N, d) (or a pairs file (N, 2, d): its targets), rows drawn\n"
                         "      uniformly; N(0, I) sources in d dimensions, the independent coupling, the noise flags"},
    {"pairs", "P.npy", "train on this finite set of pairs, shape (N, 2, d): [i,0] source, [i,1] target\n"
                       "      (with --data: image pairs of that set's shape, e.g. from sample --pairs-out)"},
    {"finite", "N", "train on N pairs drawn once from the coupling (or mixture) instead of fresh draws"},
    {"shuffle", NULL, "with --finite or --map: shuffle the targets among the pairs (adversarial coupling)"},
    {"steps", "N", "training steps; default 2000"},
    {"batch", "B", "batch size; default 256"},
    {"lr", "LR", "Adam learning rate; default 1e-3"},
    {"warmup", "N", "linear learning-rate warmup steps; default 0"},
    {"clip", "C", "global gradient-norm clip (0: none); default 0"},
    {"ema", "DECAY", "EMA decay of the weights (0: none); default 0"},
    {"checkpoint-every", "K", "write the checkpoint every K steps (0: only at the end); default 500"},
    {"log-every", "K", "loss log resolution in steps; default 10"},
    {"monitor-every", "K", "every K steps append rows step t loss floor excess gradvar copy_fraction at t = 0.1, 0.5,\n"
                           "      0.9 to DIR/monitor.tsv (runs on --data or --targets, noise -> data); 0: off (default);\n"
                           "      the measured choice is 500 (under 10 % of the training time, README)"},
    {"monitor-n", "M", "with --monitor-every: rows per time and generated samples per measure (>= 2); default 32"},
    {NULL, NULL, NULL},
};

const fv_opt fv_device_opts[] = {
    {"device", "cpu|cuda|auto", "where to compute: auto (the default) takes cuda when a GPU is present, else cpu"},
    {"precision", "fp32|tf32", "cuda matrix products in fp32 (default) or on TF32 tensor cores"},
    {NULL, NULL, NULL},
};

int fv_run_device(const fv_args *a, const char **device, int *tf32)
{
    static const char *const devices[] = {"auto", "cpu", "cuda", NULL}, *const precisions[] = {"fp32", "tf32", NULL};
    int dev, prec, st;
    if ((st = fv_args_choice(a, "device", devices, 0, &dev)) || (st = fv_args_choice(a, "precision", precisions, 0, &prec)))
        return st;
    *device = devices[dev];
    *tf32 = prec == 1;
    return FV_OK;
}

void fv_run_checkpoint_path(const char *dir, char *buf, size_t size)
{
    snprintf(buf, size, "%s/checkpoint.safetensors", dir);
}

/* --model unet: the U-Net's configuration, for the image set's shape. */
static int read_unet(fv_run *r)
{
    const fv_args *a = &r->args;
    fv_unet_config *c = &r->uc;
    double dropout;
    int st;
    memset(c, 0, sizeof *c);
    c->in_channels = r->ds.c;
    c->height = r->ds.h;
    c->width = r->ds.w;
    if ((st = fv_args_size(a, "channels", 32, 1, &c->num_channels)) ||
        (st = fv_args_size(a, "res-blocks", 1, 1, &c->num_res_blocks)) ||
        (st = fv_args_size(a, "heads", 1, 1, &c->num_heads)) ||
        (st = fv_args_size(a, "head-channels", 0, 0, &c->num_head_channels)) ||
        (st = fv_args_double(a, "dropout", 0.0, &dropout)) ||
        (st = fv_args_sizes(a, "channel-mult", "1,2", FV_UNET_MAX_LEVELS, c->channel_mult, &c->nlevels)) ||
        (st = fv_args_sizes(a, "attention", "", FV_UNET_MAX_LEVELS, c->attention_resolutions, &c->nattn)))
        return st;
    c->dropout = (float)dropout;
    if (c->nlevels == 0)
        return fv_error(FV_EINPUT, "--channel-mult needs at least one level");
    return fv_unet_config_check(c);
}

static int read_model(fv_run *r)
{
    static const char *const models[] = {"mlp", "unet", NULL};
    int model, st;
    size_t temb;
    double fscale;
    if ((st = fv_args_choice(&r->args, "model", models, 0, &model)) ||
        (st = fv_args_size(&r->args, "width", 256, 1, &r->mc.width)) ||
        (st = fv_args_size(&r->args, "depth", 3, 1, &r->mc.depth)) ||
        (st = fv_args_size(&r->args, "temb", 0, 0, &temb)) ||
        (st = fv_args_size(&r->args, "fourier", 0, 0, &r->mc.fourier)) ||
        (st = fv_args_double(&r->args, "fourier-scale", 3.0, &fscale)))
        return st;
    if (!(fscale > 0.0 && fscale < 1e30))
        return fv_error(FV_EINPUT, "--fourier-scale must be a positive number (got %g)", fscale);
    if (fv_args_get(&r->args, "fourier-scale") && !r->mc.fourier)
        return fv_error(FV_EINPUT, "--fourier-scale needs --fourier M");
    r->mc.fourier_scale = (float)fscale;
    r->mc.temb = temb;
    r->is_unet = model == 1;
    if (r->is_unet && !fv_args_get(&r->args, "data"))
        return fv_error(FV_EINPUT, "--model unet needs an image set: --data fashion-mnist or --data cifar10");
    if (r->is_unet && r->mc.fourier)
        return fv_error(FV_EINPUT, "--fourier is an option of the MLP, not of --model unet");
    r->mc.act = FV_ACT_SILU;
    if (fv_args_get(&r->args, "act") && (st = fv_act_parse(fv_args_get(&r->args, "act"), &r->mc.act)))
        return fv_error_context(st, "--act: ");
    double lr, clip, ema;
    r->ac = fv_adam_defaults();
    if ((st = fv_args_double(&r->args, "lr", 1e-3, &lr)) || (st = fv_args_double(&r->args, "clip", 0, &clip)) ||
        (st = fv_args_double(&r->args, "ema", 0, &ema)) || (st = fv_args_size(&r->args, "warmup", 0, 0, &r->ac.warmup)) ||
        (st = fv_args_size(&r->args, "batch", 256, 1, &r->batch)) || (st = fv_args_u64(&r->args, "seed", 0, &r->seed)))
        return st;
    if (!(lr > 0) || clip < 0 || !(ema >= 0 && ema < 1))
        return fv_error(FV_EINPUT, "need --lr > 0, --clip >= 0 and 0 <= --ema < 1");
    r->ac.lr = (float)lr;
    r->ac.clip = (float)clip;
    r->ac.ema_decay = (float)ema;
    return FV_OK;
}

/* A standard source in d dimensions, the independent coupling, and the noise flags: the problem of a
 * target given by samples (--gmm, --data) rather than by a Gaussian. `what` names that target. */
static int sampled_target_problem(fv_run *r, size_t d, const char *what)
{
    const fv_args *a = &r->args;
    static const char *const target_flags[] = {"target-mean", "target-cov", "source-mean", "source-cov", "angle",
                                               "rotation", "coupling", NULL};
    for (int i = 0; target_flags[i]; i++)
        if (fv_args_get(a, target_flags[i]))
            return fv_error(FV_EINPUT, "--%s does not go with --%s (its target comes from N(0, I) sources)",
                            target_flags[i], what);
    int st;
    if ((st = fv_problem_alloc(&r->p, d)) || (st = fv_cli_noise(a, &r->p)))
        return st;
    r->p.coupling = FV_COUPLING_INDEPENDENT;
    return fv_problem_validate(&r->p);
}

/* --map and its settings (the image set already loaded). */
static int read_map(fv_run *r)
{
    const fv_args *a = &r->args;
    static const char *const maps[] = {"sharpen", NULL};
    double strength, offset;
    int kind, st;
    if (!fv_args_get(a, "map")) {
        if (fv_args_get(a, "map-strength") || fv_args_get(a, "map-offset"))
            return fv_error(FV_EINPUT, "--map-strength and --map-offset go with --map sharpen");
        return FV_OK;
    }
    if ((st = fv_args_choice(a, "map", maps, 0, &kind)) ||
        (st = fv_args_double(a, "map-strength", FV_KNOWN_MAP_STRENGTH, &strength)) ||
        (st = fv_args_double(a, "map-offset", FV_KNOWN_MAP_OFFSET, &offset)) ||
        (st = fv_known_map_init(&r->map, r->ds.c, r->ds.h, r->ds.w, strength, offset)))
        return st;
    r->has_map = 1;
    return FV_OK;
}

/* --data: the image set and its problem. */
static int read_images(fv_run *r)
{
    static const char *const sets[] = {"fashion-mnist", "cifar10", NULL};
    const fv_args *a = &r->args;
    int set, st;
    size_t limit;
    if (fv_args_get(a, "gmm"))
        return fv_error(FV_EINPUT, "give --gmm or --data, not both");
    if ((st = fv_args_choice(a, "data", sets, 0, &set)) || (st = fv_args_size(a, "images", 0, fv_args_get(a, "images") ? 1 : 0, &limit)))
        return st;
    if (set == FV_DATASET_CIFAR10 && !fv_args_get(a, "data-dir"))
        return fv_error(FV_EINPUT, "--data cifar10 needs --data-dir DIR (data_batch_1.bin ... as distributed)");
    if ((st = fv_dataset_load(&r->ds, (fv_dataset_kind)set, fv_args_get(a, "data-dir"), FV_SPLIT_TRAIN, limit)))
        return st;
    r->has_ds = 1;
    if (fv_args_flag(a, "pad32") && (st = fv_dataset_pad(&r->ds, 32)))
        return st;
    static const char *const directions[] = {"forward", "backward", NULL};
    int dir;
    if ((st = fv_args_choice(a, "direction", directions, 0, &dir)) || (st = read_map(r)))
        return st;
    r->reverse = dir == 1;
    if (r->reverse && (r->has_map || fv_args_get(a, "pairs")))
        return fv_error(FV_EINPUT, "--direction backward is for noise <-> data runs, not with --map or --pairs");
    return sampled_target_problem(r, r->ds.c * r->ds.h * r->ds.w, "data");
}

/* --targets Y.npy: a finite target set, kept in float as the image sets are. */
static int read_targets(fv_run *r)
{
    const fv_args *a = &r->args;
    static const char *const others[] = {"gmm", "pairs", "finite", "shuffle", NULL};
    for (int i = 0; others[i]; i++)
        if (fv_args_get(a, others[i]))
            return fv_error(FV_EINPUT, "--%s does not go with --targets (a finite target set with fresh sources)",
                            others[i]);
    const char *path = fv_args_get(a, "targets");
    double *Y;
    int ndim, st;
    size_t shape[FV_NPY_MAX_DIMS];
    if ((st = fv_npy_read_f64(path, &Y, &ndim, shape)))
        return fv_error_context(st, "--targets: ");
    int pairs = ndim == 3 && shape[1] == 2; /* a pairs file: row i's target is its second half */
    if (!(ndim == 2 || pairs) || shape[0] == 0 || shape[ndim - 1] == 0) {
        free(Y);
        return fv_error(FV_EINPUT, "--targets: %s must have shape (N, d) or (N, 2, d) with N, d >= 1", path);
    }
    size_t n = shape[0], d = shape[ndim - 1], stride = pairs ? 2 * d : d;
    if ((st = sampled_target_problem(r, d, "targets")) || !(r->y = fv_alloc(&st, "--targets rows x dimension", n, d, sizeof *r->y))) {
        free(Y);
        return st;
    }
    r->ny = n;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < d; k++)
            r->y[i * d + k] = (float)Y[i * stride + (pairs ? d : 0) + k];
    free(Y);
    for (size_t i = 0; i < n * d; i++)
        if (!isfinite(r->y[i]))
            return fv_error(FV_EINPUT, "--targets: %s: row %zu, column %zu is %g in float", path, i / d + 1, i % d + 1,
                            (double)r->y[i]);
    return FV_OK;
}

/* The problem: the problem flags, with --gmm a standard source in --dim dimensions, with --data the
 * image set's dimension. */
static int read_problem(fv_run *r)
{
    const fv_args *a = &r->args;
    if (fv_args_get(a, "data") && fv_args_get(a, "targets"))
        return fv_error(FV_EINPUT, "give --data or --targets, not both");
    if (fv_args_get(a, "data"))
        return read_images(r);
    if (fv_args_get(a, "targets"))
        return read_targets(r);
    if (!fv_args_get(a, "gmm"))
        return fv_cli_problem(a, &r->p);
    size_t K, d;
    double scale, var;
    uint64_t gseed;
    int st;
    if (!fv_args_get(a, "dim"))
        return fv_error(FV_EINPUT, "--gmm needs --dim D");
    if ((st = fv_args_size(a, "gmm", 0, 1, &K)) || (st = fv_args_size(a, "dim", 0, 1, &d)) ||
        (st = fv_args_double(a, "gmm-scale", 5.0, &scale)) || (st = fv_args_double(a, "gmm-var", 0.25, &var)) ||
        (st = fv_args_u64(a, "gmm-seed", 0, &gseed)) || (st = sampled_target_problem(r, d, "gmm")))
        return st;
    if (!(var > 0) || !(scale >= 0))
        return fv_error(FV_EINPUT, "--gmm-var must be > 0 and --gmm-scale >= 0");
    if ((st = fv_gmm_random(&r->gmm, K, d, scale, var, gseed)))
        return st;
    r->has_gmm = 1;
    return FV_OK;
}

/* --pairs FILE.npy of shape (N, 2, d) (or (N, 2d)) into a and b. */
static int read_pairs_file(fv_run *r)
{
    const char *path = fv_args_get(&r->args, "pairs");
    size_t d = r->p.d, shape[FV_NPY_MAX_DIMS], count = 1;
    int ndim;
    double *P;
    int st = fv_npy_read_f64(path, &P, &ndim, shape);
    if (st)
        return fv_error_context(st, "--pairs: ");
    for (int i = 0; i < ndim; i++)
        count *= shape[i];
    int ok = (ndim == 3 && shape[1] == 2 && shape[2] == d) || (ndim == 2 && shape[1] == 2 * d);
    if (!ok || shape[0] == 0) {
        free(P);
        return fv_error(FV_EINPUT, "--pairs: %s must have shape (N, 2, %zu) for dimension %zu", path, d, d);
    }
    r->npairs = shape[0];
    r->a = malloc(count / 2 * sizeof *r->a);
    r->b = malloc(count / 2 * sizeof *r->b);
    if (!r->a || !r->b) {
        free(P);
        return fv_error(FV_ENOMEM, "out of memory for %zu pairs", r->npairs);
    }
    for (size_t i = 0; i < r->npairs; i++) {
        memcpy(r->a + i * d, P + 2 * i * d, d * sizeof *P);
        memcpy(r->b + i * d, P + (2 * i + 1) * d, d * sizeof *P);
    }
    free(P);
    for (size_t i = 0; i < count / 2; i++)
        if (!isfinite(r->a[i]) || !isfinite(r->b[i]))
            return fv_error(FV_EINPUT, "--pairs: %s has a non-finite entry", path);
    return FV_OK;
}

/* --shuffle: the targets permuted among the pairs (Fisher-Yates from the run's seed). */
static void shuffle_targets(fv_run *r)
{
    size_t N = r->npairs, d = r->p.d;
    fv_rng g = fv_rng_make(r->seed, 2 * STREAM_FINITE + 2);
    for (size_t i = N - 1; i > 0; i--) {
        double u;
        fv_rng_uniform(&g, 1, &u);
        size_t j = (size_t)(u * (double)(i + 1));
        j = j <= i ? j : i;
        for (size_t c = 0; c < d; c++) {
            double tmp = r->b[i * d + c];
            r->b[i * d + c] = r->b[j * d + c];
            r->b[j * d + c] = tmp;
        }
    }
}

/* --finite N: N pairs drawn once from the coupling or mixture. */
static int draw_finite(fv_run *r, fv_cfm_data *fresh)
{
    size_t N, d = r->p.d;
    int st = fv_args_size(&r->args, "finite", 0, 1, &N);
    if (st)
        return st;
    r->npairs = N;
    if (!(r->a = fv_alloc(&st, "--finite pairs x dimension", N, d, sizeof *r->a)) ||
        !(r->b = fv_alloc(&st, "--finite pairs x dimension", N, d, sizeof *r->b)))
        return st;
    return fv_cfm_pairs(fresh, r->seed, STREAM_FINITE, N, r->a, r->b);
}

/* --map: the pairs (image, T(image)) of the run's images. */
static int map_pairs(fv_run *r)
{
    size_t N = r->ds.n, d = r->p.d;
    r->npairs = N;
    r->a = malloc(N * d * sizeof *r->a);
    r->b = malloc(N * d * sizeof *r->b);
    if (!r->a || !r->b)
        return fv_error(FV_ENOMEM, "out of memory for %zu image pairs", N);
    for (size_t i = 0; i < N * d; i++)
        r->a[i] = r->ds.x[i];
    fv_known_map_apply(&r->map, N, r->a, r->b);
    return FV_OK;
}

int fv_run_setup(fv_run *r)
{
    int st;
    if ((st = read_model(r)) || (st = read_problem(r)) || (st = fv_run_check_rows(r, "--batch", r->batch)))
        return st;
    r->mc.d = r->p.d;
    if (fv_args_get(&r->args, "pairs") && fv_args_get(&r->args, "finite"))
        return fv_error(FV_EINPUT, "give --pairs or --finite, not both");
    int shuffle = fv_args_flag(&r->args, "shuffle");
    if (shuffle && !fv_args_get(&r->args, "finite") && !(r->has_map && !fv_args_get(&r->args, "pairs")))
        return fv_error(FV_EINPUT, "--shuffle goes with --finite N or --map");
    if (r->has_ds && fv_args_get(&r->args, "finite"))
        return fv_error(FV_EINPUT, "--finite does not go with --data: use --images N with --map, or --pairs");
    fv_data_kind fresh_kind = r->has_gmm ? FV_DATA_GMM : FV_DATA_PROBLEM;
    if (fv_args_get(&r->args, "pairs")) {
        st = read_pairs_file(r);
    } else if (r->has_map) {
        st = map_pairs(r);
    } else if (fv_args_get(&r->args, "finite")) {
        fv_cfm_data fresh;
        if (!(st = fv_cfm_data_init(&fresh, fresh_kind, &r->p, r->has_gmm ? &r->gmm : NULL, 0, NULL, NULL, 1)))
            st = draw_finite(r, &fresh);
        fv_cfm_data_free(&fresh);
    }
    if (!st && shuffle)
        shuffle_targets(r);
    if (st)
        return st;
    if (r->has_ds && !r->a) {
        if (!(st = fv_cfm_data_targets(&r->data, &r->p, r->ds.n, r->ds.x, r->batch)))
            r->data.reverse = r->reverse;
    } else if (r->y) {
        st = fv_cfm_data_targets(&r->data, &r->p, r->ny, r->y, r->batch);
    } else {
        fv_data_kind kind = r->a ? FV_DATA_PAIRS : fresh_kind;
        st = fv_cfm_data_init(&r->data, kind, &r->p, r->has_gmm ? &r->gmm : NULL, r->npairs, r->a, r->b, r->batch);
    }
    if (st)
        return st;
    if (!r->is_unet)
        return fv_trainer_init(&r->tr, r->device ? r->device : "auto", &r->mc, &r->ac, r->seed, r->batch, r->tf32);
    if ((st = read_unet(r)))
        return st;
    return fv_trainer_unet_init_on(&r->tr, r->device ? r->device : "auto", &r->uc, &r->ac, r->seed, r->batch, r->tf32);
}

int fv_run_check_rows(const fv_run *r, const char *what, size_t rows)
{
    size_t bytes;
    return fv_size_bytes(&bytes, what, rows, r->p.d, ROW_BYTES);
}

void fv_run_meta_free(size_t n, const char **keys, const char **values)
{
    for (size_t i = 0; keys && i < n; i++)
        free((char *)keys[i]);
    free(keys);
    free(values);
}

int fv_run_meta(const fv_run *r, size_t *n, const char ***keys, const char ***values)
{
    const fv_args *a = &r->args;
    *keys = malloc(a->nopts * sizeof **keys);
    *values = malloc(a->nopts * sizeof **values);
    if (!*keys || !*values)
        return fv_error(FV_ENOMEM, "out of memory");
    *n = 0;
    for (size_t i = 0; i < a->nopts; i++) {
        const char *name = a->opts[i]->name;
        if (!a->values[i] || !strcmp(name, "out") || !strcmp(name, "resume") || !strcmp(name, "device") ||
            !strcmp(name, "precision"))
            continue;
        char *key = malloc(strlen(name) + 5);
        if (!key)
            return fv_error(FV_ENOMEM, "out of memory");
        sprintf(key, "opt.%s", name);
        (*keys)[*n] = key;
        (*values)[(*n)++] = a->values[i];
    }
    return FV_OK;
}

/* The recorded --steps (absent when it was the default) as checkpoints write it: a step count no
 * smaller than the step the run reached. */
static int check_recorded_steps(const fv_run *r, const char *path)
{
    uint64_t steps;
    int st;
    if (!fv_st_meta(&r->ckpt, "opt.steps"))
        return FV_OK;
    if ((st = fv_checkpoint_step_meta(&r->ckpt, path, "opt.steps", &steps)))
        return st;
    if (r->step > steps)
        return fv_error(FV_EINPUT, "%s: metadata 'step' = %" PRIu64 " is beyond the run's 'opt.steps' = %" PRIu64,
                        path, r->step, steps);
    return FV_OK;
}

int fv_run_open(fv_run *r, const char *dir, const char *steps_override, const fv_args *cmd)
{
    char path[4096];
    memset(r, 0, sizeof *r);
    int st = fv_run_device(cmd, &r->device, &r->tf32);
    if (st)
        return st;
    fv_run_checkpoint_path(dir, path, sizeof path);
    if ((st = fv_st_read(path, &r->ckpt)))
        return fv_error_context(st, "opening run %s: ", dir);
    r->has_ckpt = 1;
    /* argv from the recorded options: "--NAME VALUE" (flags alone), then --steps if overridden */
    char *argv[2 * FV_MAX_OPTS + 4], flags[FV_MAX_OPTS][64];
    int argc = 0, nflags = 0;
    static char dummy[] = "train", steps_flag[] = "--steps";
    argv[argc++] = dummy;
    for (size_t i = 0; i < r->ckpt.nmeta && nflags < FV_MAX_OPTS; i++) {
        const char *k = r->ckpt.meta_keys[i];
        if (strncmp(k, "opt.", 4) != 0 || (steps_override && !strcmp(k, "opt.steps")))
            continue;
        snprintf(flags[nflags], sizeof flags[nflags], "--%s", k + 4);
        argv[argc++] = flags[nflags++];
        if (r->ckpt.meta_values[i][0] != '\0')
            argv[argc++] = r->ckpt.meta_values[i];
    }
    if (steps_override) {
        argv[argc++] = steps_flag;
        argv[argc++] = (char *)steps_override;
    }
    st = fv_args_parse(&r->args, "train", "", argc, argv, FV_PROBLEM_GROUPS, fv_train_opts_table, NULL);
    if (st)
        return fv_error_context(st == -1 ? FV_EINPUT : st, "run %s: its recorded options: ", dir);
    fv_mlp_config saved;
    if ((st = fv_run_setup(r)))
        return st;
    if (!r->is_unet) { /* a U-Net's tensors' shapes are checked one by one on load */
        if ((st = fv_checkpoint_config(&r->ckpt, path, &saved)))
            return st;
        if (saved.d != r->mc.d || saved.width != r->mc.width || saved.depth != r->mc.depth ||
            saved.act != r->mc.act || saved.temb != r->mc.temb || saved.fourier != r->mc.fourier ||
            (saved.fourier && saved.fourier_scale != r->mc.fourier_scale))
            return fv_error(FV_EINPUT, "%s: the stored network does not match the run's options", path);
    }
    if ((st = fv_checkpoint_load(&r->ckpt, path, &r->tr, &r->step, &r->log)))
        return st;
    return check_recorded_steps(r, path);
}

void fv_run_free(fv_run *r)
{
    fv_loss_log_free(&r->log);
    fv_trainer_free(&r->tr);
    fv_cfm_data_free(&r->data);
    free(r->a);
    free(r->b);
    free(r->y);
    if (r->has_gmm)
        fv_gmm_free(&r->gmm);
    if (r->has_ds)
        fv_dataset_free(&r->ds);
    fv_problem_free(&r->p);
    if (r->has_ckpt)
        fv_st_free(&r->ckpt);
    memset(r, 0, sizeof *r);
}

int fv_run_fresh_sources(fv_run *r, size_t n, uint64_t seed, double *X)
{
    size_t d = r->p.d;
    fv_rng g = fv_rng_make(seed, 0);
    if (!(r->has_ds && r->reverse))
        return fv_gaussian_sample(d, r->p.m0, r->p.S0, n, &g, X);
    for (size_t i = 0; i < n; i++) {
        double u;
        fv_rng_uniform(&g, 1, &u);
        size_t k = (size_t)(u * (double)r->ds.n);
        k = k < r->ds.n ? k : r->ds.n - 1;
        for (size_t j = 0; j < d; j++)
            X[i * d + j] = r->ds.x[k * d + j];
    }
    return FV_OK;
}

int fv_run_ot_targets(const fv_run *r, size_t n, const double *X0, double *T)
{
    size_t d = r->p.d;
    if (r->has_map) {
        fv_known_map_apply(&r->map, n, X0, T);
        return FV_OK;
    }
    if (r->has_gmm || r->has_ds)
        return fv_error(FV_EINPUT, "this run has no known OT map to compare with (a mixture, or images without --map)");
    fv_field ot = {0};
    fv_field_work w = {0};
    int st = fv_field_build(&ot, &r->p, FV_FIELD_OT);
    if (!st && !(st = fv_field_work_alloc(&w, d, n)))
        st = fv_field_map(&ot, n, X0, T, &w);
    fv_field_work_free(&w);
    fv_field_free(&ot);
    return st;
}

const float *fv_run_targets(const fv_run *r, size_t *n)
{
    *n = r->data.kind == FV_DATA_TARGETS ? r->data.npairs : 0;
    return r->data.kind == FV_DATA_TARGETS ? r->data.targets : NULL;
}

int fv_run_fitted(const fv_run *r)
{
    return r->has_ds || r->y;
}

int fv_run_fit_problem(const fv_run *r, double rel_floor, fv_coupling coupling, fv_problem *p, fv_fit *fit)
{
    if (!fv_run_fitted(r))
        return fv_error(FV_EINPUT, "the run was not trained on an image set (--data) or --targets: there is no fit "
                                   "to make");
    fv_fit f;
    size_t d = r->p.d;
    int st = fv_fit_compute(&f, r->has_ds ? r->ds.n : r->ny, d, r->has_ds ? r->ds.x : r->y, rel_floor, NULL);
    if (st)
        return st;
    if (!(st = fv_fit_problem(&f, p)) && r->reverse) { /* swap the two ends: fit -> N(0, I) */
        double *m = p->m0, *S = p->S0;
        p->m0 = p->m1;
        p->S0 = p->S1;
        p->m1 = m;
        p->S1 = S;
    }
    if (!st) {
        p->coupling = coupling;
        p->sigma = r->p.sigma;
        p->schedule = r->p.schedule;
        p->deriv_term = r->p.deriv_term;
        if ((st = fv_problem_validate(p)))
            fv_problem_free(p);
    }
    if (fit && !st)
        *fit = f;
    else
        fv_fit_free(&f);
    return st;
}
