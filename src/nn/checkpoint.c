/* checkpoint.c: saving and loading a trainer (see checkpoint.h). */
#include "nn/checkpoint.h"

#include "core/error.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 96
#define MODEL_KEYS 9

/* One tensor per parameter block and role: live, ema, adam.m, adam.v. */
typedef struct {
    char name[NAME_MAX_LEN];
    size_t shape[4];
    int ndim;
    float *data;
} block;

static const char *const roles[4] = {"", "ema.", "adam.m.", "adam.v."};

/* Parameter tensors of the trainer's network. */
static size_t count_blocks(const fv_trainer *tr)
{
    return tr->model == FV_MODEL_UNET ? tr->unet.ntensors : 2 * tr->net.nlayers;
}

/* The MLP's fixed Fourier matrix, saved once (no EMA or Adam state: it is not trained). */
static block fourier_block(const fv_mlp *m)
{
    block b = {"fourier.B", {m->cfg.fourier, m->cfg.d + 1}, 2, m->fourier};
    return b;
}

/* The U-Net's tensors for a role, under torch's names and shapes. */
static int unet_blocks(const fv_unet *net, int role, const float *base, block *out)
{
    for (size_t k = 0; k < net->ntensors; k++) {
        const fv_unet_tensor *t = &net->tensors[k];
        snprintf(out[k].name, sizeof out[k].name, "%s%s", roles[role], t->name);
        out[k].ndim = t->ndim;
        memcpy(out[k].shape, t->shape, sizeof t->shape);
        out[k].data = (float *)base + t->offset;
    }
    return FV_OK;
}

/* The parameter blocks of the network for a role, with pointers into `base` (same layout). */
static int blocks_of(const fv_trainer *tr, int role, const float *base, block *out)
{
    if (tr->model == FV_MODEL_UNET)
        return unet_blocks(&tr->unet, role, base, out);
    const fv_mlp *m = &tr->net;
    size_t k = 0;
    for (size_t l = 0; l < m->nlayers; l++)
        for (int bias = 0; bias < 2; bias++, k++) {
            char pname[NAME_MAX_LEN - 8];
            int st = fv_mlp_param_name(m, l, bias, pname, sizeof pname);
            if (st)
                return st;
            snprintf(out[k].name, sizeof out[k].name, "%s%s", roles[role], pname);
            out[k].ndim = bias ? 1 : 2;
            out[k].shape[0] = m->out[l];
            out[k].shape[1] = m->in[l];
            out[k].data = (float *)base + ((bias ? m->b[l] : m->W[l]) - m->params);
        }
    return FV_OK;
}

static const float *role_base(const fv_trainer *tr, int role)
{
    const float *bases[4] = {tr->params, tr->opt.ema, tr->opt.m, tr->opt.v};
    return bases[role];
}

int fv_checkpoint_save(const char *path, const fv_trainer *tr, uint64_t step, const fv_loss_log *log, size_t nmeta,
                       const char *const *keys, const char *const *values)
{
    size_t nb = count_blocks(tr), ne = 0;
    block *bl = malloc((4 * nb + 1) * sizeof *bl);
    fv_st_entry *e = malloc((4 * nb + 2) * sizeof *e);
    const char **mk = malloc((nmeta + MODEL_KEYS) * sizeof *mk), **mv = malloc((nmeta + MODEL_KEYS) * sizeof *mv);
    char num[MODEL_KEYS][32];
    int st = FV_OK;
    if (!bl || !e || !mk || !mv) {
        st = fv_error(FV_ENOMEM, "out of memory writing a checkpoint");
        goto done;
    }
    for (int role = 0; role < 4 && !st; role++) {
        if (!role_base(tr, role))
            continue; /* no EMA kept */
        if ((st = blocks_of(tr, role, role_base(tr, role), bl + ne)))
            break;
        for (size_t k = 0; k < nb; k++, ne++)
            e[ne] = (fv_st_entry){bl[ne].name, FV_ST_F32, bl[ne].ndim, bl[ne].shape, bl[ne].data};
    }
    if (!st && tr->model == FV_MODEL_MLP && tr->net.fourier) {
        bl[ne] = fourier_block(&tr->net);
        e[ne] = (fv_st_entry){bl[ne].name, FV_ST_F32, 2, bl[ne].shape, bl[ne].data};
        ne++;
    }
    size_t log_shape[2] = {log ? log->n : 0, 3};
    e[ne++] = (fv_st_entry){"train.log", FV_ST_F64, 2, log_shape, log && log->n ? log->rows : (const void *)""};
    const fv_mlp_config *c = &tr->net.cfg;
    snprintf(num[0], 32, "%" PRIu64, step);
    snprintf(num[1], 32, "%" PRIu64, tr->opt.step);
    snprintf(num[2], 32, "%zu", c->d);
    snprintf(num[3], 32, "%zu", c->width);
    snprintf(num[4], 32, "%zu", c->depth);
    snprintf(num[5], 32, "%s", fv_act_name(c->act));
    snprintf(num[6], 32, "%zu", c->temb);
    snprintf(num[7], 32, "%zu", c->fourier);
    snprintf(num[8], 32, "%.9g", (double)c->fourier_scale);
    /* a U-Net's configuration is the run's options (opt.*); its tensors' shapes are checked on load */
    static const char *const model_keys[MODEL_KEYS] = {
        "step",      "adam.step",  "model.d",       "model.width",        "model.depth",
        "model.act", "model.temb", "model.fourier", "model.fourier_scale"};
    static const char *const unet_keys[2] = {"model.kind", "unet"};
    size_t nm = tr->model == FV_MODEL_UNET ? 3 : MODEL_KEYS;
    for (size_t i = 0; i < nm; i++) {
        mk[i] = tr->model == FV_MODEL_UNET && i == 2 ? unet_keys[0] : model_keys[i];
        mv[i] = tr->model == FV_MODEL_UNET && i == 2 ? unet_keys[1] : num[i];
    }
    for (size_t i = 0; i < nmeta; i++) {
        mk[nm + i] = keys[i];
        mv[nm + i] = values[i];
    }
    if (!st)
        st = fv_st_write(path, ne, e, nmeta + nm, mk, mv);
done:
    free(bl);
    free(e);
    free(mk);
    free(mv);
    return st;
}

/* A whole number stored as metadata `key`: digits only (strtoull alone would take "-1" as 2^64 - 1). */
static int meta_size(const fv_st_file *f, const char *path, const char *key, uint64_t *out)
{
    const char *s = fv_st_meta(f, key);
    char *end;
    if (!s)
        return fv_error(FV_EINPUT, "%s: not a flowvar checkpoint (no '%s' in its metadata)", path, key);
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s < '0' || *s > '9' || *end != '\0' || errno)
        return fv_error(FV_EINPUT, "%s: metadata '%s' = '%s' is not a whole number", path, key, s);
    *out = v;
    return FV_OK;
}

int fv_checkpoint_step_meta(const fv_st_file *f, const char *path, const char *key, uint64_t *out)
{
    int st = meta_size(f, path, key, out);
    if (!st && *out > FV_CHECKPOINT_MAX_STEP)
        st = fv_error(FV_EINPUT, "%s: metadata '%s' = %" PRIu64 " is beyond any run (at most 2^53 = %" PRIu64 " steps)",
                      path, key, *out, (uint64_t)FV_CHECKPOINT_MAX_STEP);
    return st;
}

int fv_checkpoint_config(const fv_st_file *f, const char *path, fv_mlp_config *mc)
{
    uint64_t d, w, depth, temb;
    int st;
    const char *kind = fv_st_meta(f, "model.kind");
    if (kind && strcmp(kind, "mlp") != 0)
        return fv_error(FV_EINPUT, "%s: holds a %s, not an MLP", path, kind);
    if ((st = meta_size(f, path, "model.d", &d)) || (st = meta_size(f, path, "model.width", &w)) ||
        (st = meta_size(f, path, "model.depth", &depth)) || (st = meta_size(f, path, "model.temb", &temb)))
        return st;
    const char *act = fv_st_meta(f, "model.act");
    if (!act)
        return fv_error(FV_EINPUT, "%s: not a flowvar checkpoint (no 'model.act' in its metadata)", path);
    if ((st = fv_act_parse(act, &mc->act)))
        return fv_error_context(st, "%s: ", path);
    mc->d = d;
    mc->width = w;
    mc->depth = depth;
    mc->temb = temb;
    mc->fourier = 0; /* checkpoints from before Fourier features have neither key */
    mc->fourier_scale = 0.0f;
    if (fv_st_meta(f, "model.fourier")) {
        uint64_t nf;
        const char *sc = fv_st_meta(f, "model.fourier_scale");
        char *end = NULL;
        if ((st = meta_size(f, path, "model.fourier", &nf)))
            return st;
        mc->fourier = nf;
        mc->fourier_scale = sc ? strtof(sc, &end) : 0.0f;
        if (nf && (!sc || *end != '\0' || !(mc->fourier_scale > 0.0f)))
            return fv_error(FV_EINPUT, "%s: metadata 'model.fourier_scale' is missing or not a positive number", path);
    }
    return FV_OK;
}

/* One tensor into b.data, marked used; every value finite (a NaN or inf weight is a damaged file, not
 * a network) and Adam's second moments (role 3) >= 0. The message names the tensor and the index. */
static int load_block(const fv_st_file *f, const block *b, int role, unsigned char *used)
{
    int st = fv_st_get_f32(f, b->name, b->ndim, b->shape, b->data);
    if (st)
        return st;
    used[fv_st_find(f, b->name) - f->tensors] = 1;
    size_t count = 1;
    for (int i = 0; i < b->ndim; i++)
        count *= b->shape[i];
    for (size_t i = 0; i < count; i++) {
        if (!isfinite(b->data[i]))
            return fv_error(FV_EINPUT, "tensor '%s' has the non-finite value %g at index %zu", b->name,
                            (double)b->data[i], i);
        if (role == 3 && b->data[i] < 0.0f)
            return fv_error(FV_EINPUT,
                            "tensor '%s' has the negative value %g at index %zu (Adam's second moments are >= 0)",
                            b->name, (double)b->data[i], i);
    }
    return FV_OK;
}

/* Every tensor of the file must be one the trainer loaded (or the loss log): another network's
 * tensors (attention the options do not call for, a stray "bogus.weight") would be ignored silently. */
static int check_all_used(const fv_st_file *f, const unsigned char *used)
{
    for (size_t i = 0; i < f->ntensors; i++)
        if (!used[i] && strcmp(f->tensors[i].name, "train.log") != 0)
            return fv_error(FV_EINPUT,
                            "tensor '%s' is not part of this run's network (options, EMA and optimizer state)",
                            f->tensors[i].name);
    return FV_OK;
}

int fv_checkpoint_load(const fv_st_file *f, const char *path, fv_trainer *tr, uint64_t *step, fv_loss_log *log)
{
    size_t nb = count_blocks(tr);
    block *bl = malloc(nb * sizeof *bl);
    unsigned char *used = calloc(f->ntensors ? f->ntensors : 1, 1);
    uint64_t adam_step;
    /* read first: their messages name the file already */
    int st = fv_checkpoint_step_meta(f, path, "step", step);
    if (!st)
        st = fv_checkpoint_step_meta(f, path, "adam.step", &adam_step);
    if (st) {
        free(bl);
        free(used);
        return st;
    }
    st = bl && used ? FV_OK : fv_error(FV_ENOMEM, "out of memory reading a checkpoint");
    for (int role = 0; role < 4 && !st; role++) {
        if (!role_base(tr, role))
            continue;
        if ((st = blocks_of(tr, role, role_base(tr, role), bl)))
            break;
        for (size_t k = 0; k < nb && !st; k++)
            st = load_block(f, &bl[k], role, used);
    }
    free(bl);
    if (!st && tr->model == FV_MODEL_MLP && tr->net.fourier) {
        block fb = fourier_block(&tr->net);
        st = load_block(f, &fb, 0, used);
    }
    if (!st)
        st = check_all_used(f, used);
    free(used);
    if (!st)
        tr->opt.step = adam_step;
    const fv_st_tensor *lt = st ? NULL : fv_st_find(f, "train.log");
    if (lt && (lt->ndim != 2 || lt->shape[1] != 3))
        st = fv_error(FV_EINPUT, "tensor 'train.log' is not a table of (step, loss, grad norm) rows");
    if (!st && log && lt) {
        size_t shape[2] = {lt->shape[0], 3};
        fv_loss_log_free(log);
        log->n = log->cap = shape[0];
        if (shape[0] && !(log->rows = malloc(shape[0] * 3 * sizeof *log->rows)))
            st = fv_error(FV_ENOMEM, "out of memory for the loss log");
        else if (shape[0])
            st = fv_st_get_f64(f, "train.log", 2, shape, log->rows);
    }
    if (!st && tr->ops && tr->ops->push) /* a device backend takes the loaded state */
        st = tr->ops->push(tr);
    if (st && st != FV_ENOMEM)
        return fv_error_context(st, "%s: ", path);
    return st;
}
