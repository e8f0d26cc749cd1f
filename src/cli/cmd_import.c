/* cmd_import.c: `flowvar import`: a run folder from a network trained elsewhere (torchcfm's MLP or
 * U-Net, as safetensors), so that sample, eval, gap, gradvar, memorize and train --resume take it
 * like a run of flowvar's own. The run records the import's options as train would; its checkpoint
 * holds the weights (and EMA) but no optimizer state (nn/checkpoint.h). */
#include "cli/cli.h"

#include "cli/run.h"
#include "core/error.h"
#include "core/io.h"
#include "nn/checkpoint.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* torchcfm's EMA decay in its training scripts (train_cifar10.py's --ema_decay): the run's --ema when
 * EMA weights are imported and no --ema is given. */
#define TORCHCFM_EMA_DECAY "0.9999"
#define CONFIG_MAX_BYTES (1u << 20)
#define CONFIG_MAX_KEYS 48

static const fv_opt import_cmd_opts[] = {
    {"format", "torchcfm-mlp|torchcfm-unet", "the network: torchcfm.models.MLP(dim, w=W, time_varying=True) or\n"
                                             "      torchcfm's UNetModelWrapper (required, or the config's \"format\")"},
    {"weights", "W.safetensors", "its state_dict (required): F32, F16, BF16 or F64, names as torch's, a \"module.\"\n"
                                 "      prefix (DataParallel) ignored"},
    {"config", "C.json", "the architecture and any other train flag, as scripts/export-torchcfm.py writes it:\n"
                         "      {\"channels\": 128, \"attention\": \"16\", ...}; a flag on the command line wins"},
    {"ema-weights", "E.safetensors", "the EMA weights (torchcfm's ema_model), used by sample, eval and gap"},
    {"ema-prefix", "P", "the EMA weights are the tensors of --weights named P<name> (e.g. ema_model.)"},
    {"out", "DIR", "the run folder to create (required): checkpoint.safetensors and loss.tsv"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "Make a run folder from a network trained elsewhere, for sample, eval, gap, gradvar, memorize and\n"
    "train --resume (fine-tuning: Adam starts from zero moments). Give the network's architecture with\n"
    "train's flags or --config (the MLP's width and depth are read off its weights; its activation is\n"
    "SELU, torchcfm's) and the problem it was trained on with train's problem or --data flags. The\n"
    "tensors must be exactly those the architecture calls for: missing, unexpected and mis-shaped ones\n"
    "are listed and nothing is written. With EMA weights and no --ema the run's --ema is 0.9999.\n"
    "From torchcfm's .pt checkpoints: python3 scripts/export-torchcfm.py MODEL.pt --out DIR writes\n"
    "DIR/weights.safetensors, DIR/ema.safetensors and DIR/config.json.\n"
    "Example: flowvar import --format torchcfm-unet --weights m/weights.safetensors --ema-weights\n"
    "  m/ema.safetensors --config m/config.json --data cifar10 --data-dir cifar --out run";

/* ---- config.json: one flat object of train flags ------------------------------------------------- */

typedef struct {
    size_t n;
    char *keys[CONFIG_MAX_KEYS], *values[CONFIG_MAX_KEYS]; /* value NULL: false (flag absent) */
} config;

static void config_free(config *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->keys[i]);
        free(c->values[i]);
    }
    c->n = 0;
}

static const char *config_get(const config *c, const char *key)
{
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->keys[i], key))
            return c->values[i];
    return NULL;
}

static int config_has(const config *c, const char *key)
{
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->keys[i], key))
            return 1;
    return 0;
}

typedef struct {
    const char *s, *path;
} cursor;

static void skip_ws(cursor *p)
{
    while (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')
        p->s++;
}

static int parse_error(const cursor *p, const char *what)
{
    return fv_error(FV_EINPUT, "%s: not a flowvar import config (a flat JSON object of train flags): %s near '%.12s'",
                    p->path, what, p->s);
}

/* A string without escapes (flag names and values need none). */
static int parse_string(cursor *p, char **out)
{
    if (*p->s != '"')
        return parse_error(p, "expected a string");
    const char *end = strchr(p->s + 1, '"');
    if (!end || memchr(p->s + 1, '\\', (size_t)(end - p->s - 1)))
        return parse_error(p, "an unterminated string or one with escapes");
    *out = strndup(p->s + 1, (size_t)(end - p->s - 1));
    p->s = end + 1;
    return *out ? FV_OK : fv_error(FV_ENOMEM, "out of memory");
}

/* A number, true/false, or an array of numbers (kept as its comma list: "3,32,32"), as text. */
static int parse_scalar(cursor *p, char **out)
{
    *out = NULL;
    if (!strncmp(p->s, "true", 4) || !strncmp(p->s, "false", 5)) {
        int t = p->s[0] == 't';
        p->s += t ? 4 : 5;
        *out = t ? strdup("") : NULL;
        return !t || *out ? FV_OK : fv_error(FV_ENOMEM, "out of memory");
    }
    int array = *p->s == '[';
    const char *start = p->s + array;
    size_t len = strspn(start, array ? "0123456789+-.eE, \t\n\r" : "0123456789+-.eE");
    if (!len || (array && start[len] != ']'))
        return parse_error(p, "expected a string, a number, true, false or a list of numbers");
    char *v = malloc(len + 1);
    if (!v)
        return fv_error(FV_ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)start[i]))
            v[k++] = start[i];
    v[k] = '\0';
    p->s = start + len + array;
    *out = v;
    return FV_OK;
}

static int config_read(const char *path, config *c)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return fv_error(FV_EINPUT, "--config: cannot open %s: %s", path, strerror(errno));
    char *text = malloc(CONFIG_MAX_BYTES + 1);
    size_t n = text ? fread(text, 1, CONFIG_MAX_BYTES + 1, fp) : 0;
    fclose(fp);
    if (!text)
        return fv_error(FV_ENOMEM, "out of memory");
    if (n > CONFIG_MAX_BYTES || memchr(text, '\0', n)) {
        free(text);
        return fv_error(FV_EINPUT, "--config: %s is not a JSON text of at most 1 MiB", path);
    }
    text[n] = '\0';
    cursor p = {text, path};
    int st = FV_OK;
    skip_ws(&p);
    if (*p.s++ != '{')
        st = parse_error(&p, "expected '{'");
    skip_ws(&p);
    while (!st && *p.s != '}') {
        char *key = NULL, *value = NULL;
        if (c->n == CONFIG_MAX_KEYS)
            st = parse_error(&p, "too many keys");
        if (!st && !(st = parse_string(&p, &key))) {
            skip_ws(&p);
            st = *p.s++ == ':' ? FV_OK : parse_error(&p, "expected ':'");
            skip_ws(&p);
            if (!st)
                st = *p.s == '"' ? parse_string(&p, &value) : parse_scalar(&p, &value);
        }
        if (!st && config_has(c, key))
            st = fv_error(FV_EINPUT, "--config: %s gives \"%s\" twice", path, key);
        if (st) {
            free(key);
            free(value);
            break;
        }
        c->keys[c->n] = key;
        c->values[c->n++] = value;
        skip_ws(&p);
        if (*p.s == ',') {
            p.s++;
            skip_ws(&p);
        } else if (*p.s != '}') {
            st = parse_error(&p, "expected ',' or '}'");
        }
    }
    if (!st) {
        p.s++;
        skip_ws(&p);
        if (*p.s)
            st = parse_error(&p, "text after the object");
    }
    free(text);
    return st;
}

/* ---- the run's options ----------------------------------------------------------------------------- */

static int is_import_opt(const char *name)
{
    for (const fv_opt *o = import_cmd_opts; o->name; o++)
        if (!strcmp(o->name, name))
            return 1;
    return 0;
}

/* The argv of train's options: the config's keys (those not on the command line), then the command
 * line's own, then what the format implies. `store` keeps the strings made here. */
typedef struct {
    int argc;
    char *argv[2 * FV_MAX_OPTS + 16];
    char store[FV_MAX_OPTS + 8][80];
    size_t nstore;
    char width[32], depth[32]; /* the MLP's, read off its weights */
} arg_list;

/* "--name" and, unless it is a flag (value NULL), its value. */
static int push_opt(arg_list *l, const char *name, const char *value)
{
    if (l->nstore == sizeof l->store / sizeof l->store[0] || l->argc + 2 >= (int)(sizeof l->argv / sizeof *l->argv))
        return fv_error(FV_EINPUT, "too many options");
    char *flag = l->store[l->nstore++];
    snprintf(flag, sizeof l->store[0], "--%s", name);
    l->argv[l->argc++] = flag;
    if (value)
        l->argv[l->argc++] = (char *)value;
    return FV_OK;
}

/* The option of train called `name` among a's (NULL when there is none). */
static const fv_opt *train_opt(const fv_args *a, const char *name)
{
    for (size_t i = 0; i < a->nopts; i++)
        if (!strcmp(a->opts[i]->name, name))
            return is_import_opt(name) ? NULL : a->opts[i];
    return NULL;
}

/* The MLP's width and depth off its weights (torchcfm's MLP: Linear layers at net.0, net.2, ...,
 * net.2 depth), when neither the command line nor the config gives them: the depth from the last
 * layer (so that a layer missing in between is listed as missing), the width from the first. */
static int mlp_shape_of(const fv_st_file *w, size_t *width, size_t *depth)
{
    size_t last = 0, first = (size_t)-1;
    *width = 0;
    for (size_t i = 0; i < w->ntensors; i++) {
        const char *name = w->tensors[i].name;
        name += strncmp(name, "module.", 7) ? 0 : 7;
        size_t k;
        int used = 0;
        if (sscanf(name, "net.%zu.weight%n", &k, &used) != 1 || name[used] != '\0' || w->tensors[i].ndim != 2)
            continue;
        last = k > last ? k : last;
        if (k < first) {
            first = k;
            *width = w->tensors[i].shape[0];
        }
    }
    if (last < 2 || *width == 0)
        return fv_error(FV_EINPUT, "%s: not torchcfm's MLP (no net.N.weight matrices of its Linear layers); "
                                   "give --width and --depth to have its tensors listed against them", w->path);
    *depth = last / 2;
    return FV_OK;
}

typedef struct {
    const char *format;      /* torchcfm-mlp or torchcfm-unet */
    const char *wpath, *epath, *prefix, *dir, *cpath;
    config cfg;
    fv_st_file w, e;
    int has_e;
} import_job;

static int build_args(const fv_args *a, import_job *j, arg_list *l, fv_args *train)
{
    int unet = !strcmp(j->format, "torchcfm-unet"), st;
    l->argv[l->argc++] = (char *)"import";
    for (size_t i = 0; i < j->cfg.n; i++) {
        const char *k = j->cfg.keys[i];
        const fv_opt *o = train_opt(a, k);
        if (!strcmp(k, "format") || !strcmp(k, "shape"))
            continue;
        if (!o)
            return fv_error(FV_EINPUT, "--config: %s: \"%s\" is no flag of train (nor format or shape)", j->cpath, k);
        if (!j->cfg.values[i] || fv_args_get(a, k))
            continue;
        if (!o->arg && *j->cfg.values[i])
            return fv_error(FV_EINPUT, "--config: %s: \"%s\" is a flag: true or false", j->cpath, k);
        if ((st = push_opt(l, k, o->arg ? j->cfg.values[i] : NULL)))
            return st;
    }
    for (size_t i = 0; i < a->nopts; i++)
        if (a->values[i] && !is_import_opt(a->opts[i]->name) &&
            (st = push_opt(l, a->opts[i]->name, a->opts[i]->arg ? a->values[i] : NULL)))
            return st;
    const char *model = fv_args_get(a, "model") ? fv_args_get(a, "model") : config_get(&j->cfg, "model");
    if (model && strcmp(model, unet ? "unet" : "mlp"))
        return fv_error(FV_EINPUT, "--format %s is a%s, not --model %s", j->format, unet ? " unet" : "n mlp", model);
    if (!model && (st = push_opt(l, "model", unet ? "unet" : "mlp")))
        return st;
    int given_ema = fv_args_get(a, "ema") || config_get(&j->cfg, "ema");
    if ((j->has_e || j->prefix) && !given_ema && (st = push_opt(l, "ema", TORCHCFM_EMA_DECAY)))
        return st;
    if (!unet) {
        int has_width = fv_args_get(a, "width") || config_get(&j->cfg, "width");
        int has_depth = fv_args_get(a, "depth") || config_get(&j->cfg, "depth");
        size_t wd = 0, dp = 0;
        if (!has_width || !has_depth) {
            if ((st = mlp_shape_of(&j->w, &wd, &dp)))
                return st;
            snprintf(l->width, sizeof l->width, "%zu", wd);
            snprintf(l->depth, sizeof l->depth, "%zu", dp);
        }
        if ((!has_width && (st = push_opt(l, "width", l->width))) ||
            (!has_depth && (st = push_opt(l, "depth", l->depth))))
            return st;
        if (!fv_args_get(a, "act") && !config_get(&j->cfg, "act") && (st = push_opt(l, "act", "selu")))
            return st;
    }
    st = fv_args_parse(train, "import", "", l->argc, l->argv, FV_PROBLEM_GROUPS, fv_train_opts_table, NULL);
    if (st)
        return st == -1 ? FV_EINPUT : st;
    if (!unet && fv_args_get(train, "fourier"))
        return fv_error(FV_EINPUT, "--fourier: torchcfm's MLP has no Fourier features");
    return FV_OK;
}

/* The config's "shape" ([d] or [C, H, W]) against the run's problem or image set. */
static int check_shape(const import_job *j, const fv_run *r)
{
    const char *shape = config_get(&j->cfg, "shape");
    if (!shape)
        return FV_OK;
    char have[64];
    if (r->is_unet)
        snprintf(have, sizeof have, "%zu,%zu,%zu", r->ds.c, r->ds.h, r->ds.w);
    else
        snprintf(have, sizeof have, "%zu", r->p.d);
    if (strcmp(shape, have))
        return fv_error(FV_EINPUT, "--config: %s: the network's input has shape [%s], the %s [%s]", j->cpath, shape,
                        r->is_unet ? "images of --data" : "problem's points", have);
    return FV_OK;
}

/* A line on stderr for each file whose weights were not all float32. */
static void say_conversions(const fv_st_file *f, const char *path)
{
    static const fv_st_dtype kinds[3] = {FV_ST_F16, FV_ST_BF16, FV_ST_F64};
    for (int k = 0; k < 3; k++) {
        size_t n = 0;
        for (size_t i = 0; i < f->ntensors; i++)
            n += f->tensors[i].dtype == kinds[k];
        if (n)
            fprintf(stderr, "import: %s: %zu %s tensor%s converted to float32\n", path, n, fv_st_dtype_name(kinds[k]),
                    n == 1 ? "" : "s");
    }
}

/* The run folder: only once everything is loaded, and removed again if a write fails. */
static int write_run(const fv_run *r, const char *dir)
{
    char ckpt[4096], loss[4096];
    const char **keys = NULL, **values = NULL;
    size_t nmeta = 0;
    struct stat sb;
    fv_run_checkpoint_path(dir, ckpt, sizeof ckpt);
    snprintf(loss, sizeof loss, "%s/loss.tsv", dir);
    if (stat(ckpt, &sb) == 0)
        return fv_error(FV_EINPUT, "%s already holds a run: give another --out", dir);
    int made = fv_mkdirs(dir) == 0;
    if (!made && errno != EEXIST)
        return fv_error(FV_EIO, "%s: cannot create the run folder: %s", dir, strerror(errno));
    static const char *const names[] = {"step", "loss", "grad_norm"};
    int st = fv_run_meta(r, &nmeta, &keys, &values);
    if (!st)
        st = fv_checkpoint_save_weights(ckpt, &r->tr, nmeta, keys, values);
    if (!st && (st = fv_cli_write_tsv(loss, 3, names, 0, NULL)))
        unlink(ckpt);
    fv_run_meta_free(nmeta, keys, values);
    if (st && made)
        rmdir(dir);
    return st;
}

static int read_inputs(const fv_args *a, import_job *j)
{
    static const char *const formats[] = {"torchcfm-mlp", "torchcfm-unet", NULL};
    int st, fmt;
    j->cpath = fv_args_get(a, "config");
    if (j->cpath && (st = config_read(j->cpath, &j->cfg)))
        return st;
    const char *cfg_format = config_get(&j->cfg, "format");
    if (!fv_args_get(a, "format") && !cfg_format)
        return fv_error(FV_EINPUT, "--format torchcfm-mlp|torchcfm-unet is required");
    if ((st = fv_args_choice(a, "format", formats, 0, &fmt)))
        return st;
    j->format = fv_args_get(a, "format") ? formats[fmt] : cfg_format;
    if (strcmp(j->format, formats[0]) && strcmp(j->format, formats[1]))
        return fv_error(FV_EINPUT, "--config: %s: \"format\" is '%s', not torchcfm-mlp or torchcfm-unet", j->cpath,
                        j->format);
    if (fv_args_get(a, "format") && cfg_format && strcmp(cfg_format, j->format))
        return fv_error(FV_EINPUT, "--format %s, but the config is of a %s", j->format, cfg_format);
    j->wpath = fv_args_get(a, "weights");
    j->epath = fv_args_get(a, "ema-weights");
    j->prefix = fv_args_get(a, "ema-prefix");
    j->dir = fv_args_get(a, "out");
    if (!j->wpath || !j->dir)
        return fv_error(FV_EINPUT, "--weights W.safetensors and --out DIR are required");
    const char *coupling = fv_args_get(a, "coupling");
    if ((!coupling || strcmp(coupling, "rotation")) &&
        (st = fv_cli_unused(a, fv_rotation_flags, "without --coupling rotation")))
        return st;
    if (j->epath && j->prefix)
        return fv_error(FV_EINPUT, "give --ema-weights or --ema-prefix, not both");
    if (j->prefix && !*j->prefix)
        return fv_error(FV_EINPUT, "--ema-prefix is empty");
    if ((st = fv_st_read(j->wpath, &j->w)))
        return fv_error_context(st, "--weights: ");
    if (j->epath && (st = fv_st_read(j->epath, &j->e)))
        return fv_error_context(st, "--ema-weights: ");
    j->has_e = j->epath != NULL;
    return FV_OK;
}

int fv_cmd_import(int argc, char **argv)
{
    fv_args a, train;
    fv_run r = {0};
    import_job j = {0};
    arg_list l = {0};
    int st = fv_args_parse(&a, "import", usage, argc, argv, FV_PROBLEM_GROUPS, fv_train_opts_table, import_cmd_opts,
                           NULL);
    if (st < 0)
        return 0;
    if (!st && !(st = read_inputs(&a, &j)) && !(st = build_args(&a, &j, &l, &train))) {
        r.args = train;
        r.device = "cpu";
        if (!(st = fv_run_setup(&r)) && !(st = check_shape(&j, &r)))
            st = fv_checkpoint_import(&r.tr, &j.w, j.wpath, j.prefix, j.has_e ? &j.e : NULL, j.epath);
    }
    if (!st) {
        say_conversions(&j.w, j.wpath);
        if (j.has_e)
            say_conversions(&j.e, j.epath);
        st = write_run(&r, j.dir);
    }
    if (!st)
        printf("import: %s, %zu parameters%s; run folder %s\n", j.format, r.tr.nparams,
               r.tr.opt.ema ? (j.has_e || j.prefix ? " and their EMA" : " (EMA starting at them)") : "", j.dir);
    fv_run_free(&r);
    fv_st_free(&j.w);
    fv_st_free(&j.e);
    config_free(&j.cfg);
    return st ? fv_cli_fail(st) : 0;
}
