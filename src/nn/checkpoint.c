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

/* The checkpoint of fv_checkpoint_save, or without Adam's state (with_opt 0: no adam.* tensors, no
 * "adam.step", FV_CHECKPOINT_OPTIMIZER_KEY = "none"). */
static int save_state(const char *path, const fv_trainer *tr, uint64_t step, const fv_loss_log *log, int with_opt,
                      size_t nmeta, const char *const *keys, const char *const *values)
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
    for (int role = 0; role < (with_opt ? 4 : 2) && !st; role++) {
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
    size_t nm = 0;
    for (size_t i = 0; i < (tr->model == FV_MODEL_UNET ? 2 : MODEL_KEYS); i++) {
        if (i == 1 && !with_opt) {
            mk[nm] = FV_CHECKPOINT_OPTIMIZER_KEY;
            mv[nm++] = "none";
            continue;
        }
        mk[nm] = model_keys[i];
        mv[nm++] = num[i];
    }
    if (tr->model == FV_MODEL_UNET) {
        mk[nm] = "model.kind";
        mv[nm++] = "unet";
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

int fv_checkpoint_save(const char *path, const fv_trainer *tr, uint64_t step, const fv_loss_log *log, size_t nmeta,
                       const char *const *keys, const char *const *values)
{
    return save_state(path, tr, step, log, 1, nmeta, keys, values);
}

int fv_checkpoint_save_weights(const char *path, const fv_trainer *tr, size_t nmeta, const char *const *keys,
                               const char *const *values)
{
    return save_state(path, tr, 0, NULL, 0, nmeta, keys, values);
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

/* What a file's tensors are to a network: for each, the name the network's blocks use. */
typedef struct {
    const fv_st_tensor *t;
    char key[NAME_MAX_LEN + 32];
    int used;
} named;

#define LIST_SHOWN 4 /* names shown per kind of mismatch; the rest are counted */

typedef struct {
    size_t n;
    char text[LIST_SHOWN * (2 * NAME_MAX_LEN + 64)];
} name_list;

static void list_add(name_list *l, const char *item)
{
    if (l->n++ < LIST_SHOWN) {
        size_t len = strlen(l->text);
        snprintf(l->text + len, sizeof l->text - len, "%s%s", len ? ", " : "", item);
    }
}

/* " N KIND: a, b, c, d and M more;" into buf at *len (nothing for an empty list). */
static void list_put(char *buf, size_t size, const name_list *l, const char *kind)
{
    size_t len = strlen(buf);
    if (!l->n || len >= size)
        return;
    if (l->n > LIST_SHOWN)
        snprintf(buf + len, size - len, " %zu %s: %s and %zu more;", l->n, kind, l->text, l->n - LIST_SHOWN);
    else
        snprintf(buf + len, size - len, " %zu %s: %s;", l->n, kind, l->text);
}

static void shape_text(char *buf, size_t size, int ndim, const size_t *shape)
{
    size_t len = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%zu", i ? ", " : "", shape[i]);
    if (len < size)
        snprintf(buf + len, size - len, "]");
}

static int same_shape(const fv_st_tensor *t, const block *b)
{
    if (t->ndim != b->ndim)
        return 0;
    for (int i = 0; i < b->ndim; i++)
        if (t->shape[i] != b->shape[i])
            return 0;
    return 1;
}

/* The file tensor each block is, by name (idx[k]); FV_EINPUT listing every block the file lacks, every
 * tensor of the file that no block is (but `ignore`), and every tensor of the wrong shape or dtype
 * (F32 only, or any float when any_float): a file of another network is refused whole, with all
 * its differences at once, instead of one at a time or, worse, half-loaded. */
static int match_tensors(named *src, size_t nsrc, const block *bl, size_t nb, int any_float, const char *ignore,
                         size_t *idx)
{
    name_list missing = {0}, unexpected = {0}, shaped = {0}, typed = {0};
    char item[2 * NAME_MAX_LEN + 96], want[96], have[96];
    for (size_t k = 0; k < nb; k++) {
        size_t i = 0;
        while (i < nsrc && (src[i].used || strcmp(src[i].key, bl[k].name) != 0))
            i++;
        idx[k] = i;
        if (i == nsrc) {
            list_add(&missing, bl[k].name);
            continue;
        }
        const fv_st_tensor *t = src[i].t;
        src[i].used = 1;
        if (any_float ? !fv_st_dtype_is_float(t->dtype) : t->dtype != FV_ST_F32) {
            snprintf(item, sizeof item, "%s (%s, not %s)", t->name, fv_st_dtype_name(t->dtype),
                     any_float ? "a float" : "F32");
            list_add(&typed, item);
        } else if (!same_shape(t, &bl[k])) {
            shape_text(want, sizeof want, bl[k].ndim, bl[k].shape);
            shape_text(have, sizeof have, t->ndim, t->shape);
            snprintf(item, sizeof item, "%s (%s, expected %s)", t->name, have, want);
            list_add(&shaped, item);
        }
    }
    for (size_t i = 0; i < nsrc; i++)
        if (!src[i].used && !(ignore && !strcmp(src[i].t->name, ignore)))
            list_add(&unexpected, src[i].t->name);
    if (!missing.n && !unexpected.n && !shaped.n && !typed.n)
        return FV_OK;
    char msg[4 * sizeof missing.text + 256] = "";
    list_put(msg, sizeof msg, &missing, "missing");
    list_put(msg, sizeof msg, &unexpected, "unexpected (not part of this run's network)");
    list_put(msg, sizeof msg, &shaped, "of the wrong shape");
    list_put(msg, sizeof msg, &typed, "of the wrong dtype");
    msg[strlen(msg) - 1] = '\0';
    return fv_error(FV_EINPUT, "the tensors are not those of the network its options call for:%s", msg);
}

/* File tensor t into b.data as float; every value finite (a NaN or inf weight is a damaged file, not a
 * network) and Adam's second moments (role 3) >= 0. The message names the tensor and the index. */
static int load_block(const fv_st_file *f, const fv_st_tensor *t, const block *b, int role)
{
    int st = fv_st_get_as_f32(f, t->name, b->ndim, b->shape, b->data);
    if (st)
        return st;
    for (size_t i = 0; i < t->count; i++) {
        if (!isfinite(b->data[i]))
            return fv_error(FV_EINPUT, "tensor '%s' has the non-finite value %g at index %zu", t->name,
                            (double)b->data[i], i);
        if (role == 3 && b->data[i] < 0.0f)
            return fv_error(FV_EINPUT,
                            "tensor '%s' has the negative value %g at index %zu (Adam's second moments are >= 0)",
                            t->name, (double)b->data[i], i);
    }
    return FV_OK;
}

int fv_checkpoint_has_optimizer(const fv_st_file *f)
{
    const char *o = fv_st_meta(f, FV_CHECKPOINT_OPTIMIZER_KEY);
    return !(o && !strcmp(o, "none"));
}

/* The blocks of the given roles (role_base non-NULL), then the MLP's Fourier matrix; *nb their count. */
static int blocks_of_roles(const fv_trainer *tr, int nroles, const int *roles_wanted, block *bl, int *role_of,
                           size_t *nb)
{
    size_t per = count_blocks(tr);
    int st = FV_OK;
    *nb = 0;
    for (int r = 0; r < nroles && !st; r++) {
        int role = roles_wanted[r];
        if (!role_base(tr, role))
            continue;
        st = blocks_of(tr, role, role_base(tr, role), bl + *nb);
        for (size_t k = 0; k < per; k++)
            role_of[(*nb)++] = role;
    }
    if (!st && tr->model == FV_MODEL_MLP && tr->net.fourier) {
        bl[*nb] = fourier_block(&tr->net);
        role_of[(*nb)++] = 0;
    }
    return st;
}

/* Match the source's tensors to the blocks, then load them. */
static int load_matched(const fv_st_file *f, named *src, const block *bl, const int *role_of, size_t nb,
                        int any_float, const char *ignore)
{
    size_t *idx = malloc((nb ? nb : 1) * sizeof *idx);
    int st = idx ? match_tensors(src, f->ntensors, bl, nb, any_float, ignore, idx)
                 : fv_error(FV_ENOMEM, "out of memory reading a checkpoint");
    for (size_t k = 0; k < nb && !st; k++)
        st = load_block(f, src[idx[k]].t, &bl[k], role_of[k]);
    free(idx);
    return st;
}

int fv_checkpoint_load(const fv_st_file *f, const char *path, fv_trainer *tr, uint64_t *step, fv_loss_log *log)
{
    static const int all_roles[4] = {0, 1, 2, 3};
    size_t nb = 4 * count_blocks(tr) + 1;
    int with_opt = fv_checkpoint_has_optimizer(f);
    block *bl = malloc(nb * sizeof *bl);
    int *role_of = malloc(nb * sizeof *role_of);
    named *src = calloc(f->ntensors ? f->ntensors : 1, sizeof *src);
    uint64_t adam_step = 0;
    /* read first: their messages name the file already */
    int st = fv_checkpoint_step_meta(f, path, "step", step);
    if (!st && with_opt)
        st = fv_checkpoint_step_meta(f, path, "adam.step", &adam_step);
    if (st) {
        free(bl);
        free(role_of);
        free(src);
        return st;
    }
    st = bl && role_of && src ? FV_OK : fv_error(FV_ENOMEM, "out of memory reading a checkpoint");
    for (size_t i = 0; i < f->ntensors && !st; i++) { /* flowvar's own names, as written */
        src[i].t = &f->tensors[i];
        snprintf(src[i].key, sizeof src[i].key, "%s", f->tensors[i].name);
    }
    if (!st)
        st = blocks_of_roles(tr, with_opt ? 4 : 2, all_roles, bl, role_of, &nb);
    if (!st)
        st = load_matched(f, src, bl, role_of, nb, 0, "train.log");
    free(bl);
    free(role_of);
    free(src);
    if (!st && !with_opt) { /* a weights-only checkpoint: Adam starts from zero moments */
        memset(tr->opt.m, 0, tr->nparams * sizeof *tr->opt.m);
        memset(tr->opt.v, 0, tr->nparams * sizeof *tr->opt.v);
    }
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

/* The part of a torch state_dict name that names the parameter: without DataParallel's "module.". */
static const char *torch_name(const char *name)
{
    return strncmp(name, "module.", 7) ? name : name + 7;
}

/* One file of an import: its tensors under the trainer's names (EMA ones under "ema."), matched and
 * loaded; the message names the file once. */
static int import_file(fv_trainer *tr, const fv_st_file *f, const char *path, const char *ema_prefix, int ema_only)
{
    static const int live_roles[2] = {0, 1}, ema_role[1] = {1};
    size_t nb = 2 * count_blocks(tr) + 1, plen = ema_prefix ? strlen(ema_prefix) : 0;
    block *bl = malloc(nb * sizeof *bl);
    int *role_of = malloc(nb * sizeof *role_of);
    named *src = calloc(f->ntensors ? f->ntensors : 1, sizeof *src);
    int st = bl && role_of && src ? FV_OK : fv_error(FV_ENOMEM, "out of memory reading %s", path);
    for (size_t i = 0; i < f->ntensors && !st; i++) {
        const char *name = f->tensors[i].name;
        int ema = ema_only || (plen && !strncmp(name, ema_prefix, plen));
        src[i].t = &f->tensors[i];
        snprintf(src[i].key, sizeof src[i].key, "%s%s", ema ? "ema." : "",
                 torch_name(ema && !ema_only ? name + plen : name));
    }
    if (!st)
        st = blocks_of_roles(tr, ema_only ? 1 : ema_prefix ? 2 : 1, ema_only ? ema_role : live_roles, bl, role_of, &nb);
    if (!st)
        st = load_matched(f, src, bl, role_of, nb, 1, NULL);
    free(bl);
    free(role_of);
    free(src);
    return st && st != FV_ENOMEM ? fv_error_context(st, "%s: ", path) : st;
}

int fv_checkpoint_import(fv_trainer *tr, const fv_st_file *w, const char *wpath, const char *ema_prefix,
                         const fv_st_file *ema, const char *epath)
{
    if ((ema_prefix || ema) && !tr->opt.ema)
        return fv_error(FV_EINPUT, "EMA weights were given for a trainer that keeps no EMA");
    int st = import_file(tr, w, wpath, ema_prefix, 0);
    if (!st && ema)
        st = import_file(tr, ema, epath, NULL, 1);
    if (st)
        return st;
    if (tr->opt.ema && !ema_prefix && !ema) /* no EMA weights given: the EMA starts at the weights */
        memcpy(tr->opt.ema, tr->params, tr->nparams * sizeof *tr->params);
    memset(tr->opt.m, 0, tr->nparams * sizeof *tr->opt.m);
    memset(tr->opt.v, 0, tr->nparams * sizeof *tr->opt.v);
    tr->opt.step = 0;
    return tr->ops && tr->ops->push ? tr->ops->push(tr) : FV_OK;
}
