/* test_import.c: `flowvar import` of torchcfm models against torch's own answers
 * (tests/fixtures/import/, made by tests/oracle/make_import_fixtures.py): the imported MLP and U-Net
 * evaluate and integrate as in torch, their runs work with gap, gradvar and train --resume, and every
 * tensor set that is not the network's (an import's or a checkpoint's) is refused with exit 2 and
 * nothing written. The binary is $FLOWVAR (set by `make test`), else build/flowvar. */
#include <criterion/criterion.h>

#include "core/error.h"
#include "core/io.h"
#include "core/safetensors.h"
#include "nn/checkpoint.h"

#include "helpers.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define FIX "tests/fixtures/import/"
#define REL_TOL 1e-5 /* the bound: float32 networks, the same formulas in another order */
#define MLP_PROBLEM "--target-mean 1,-0.5"

static char dir[] = "/tmp/fv_import_XXXXXX";
static char out_path[256], err_path[256];
static char out_text[8192], err_text[8192];
static fv_st_file ref;

static void setup(void)
{
    cr_assert(mkdtemp(dir) != NULL);
    snprintf(out_path, sizeof out_path, "%s/stdout", dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    cr_assert_eq(fv_st_read(FIX "reference.safetensors", &ref), FV_OK, "reference fixture: %s", fv_last_error());
}

static void teardown(void)
{
    char cmd[300];
    fv_st_free(&ref);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(import, .init = setup, .fini = teardown, .timeout = 300);

/* Run `flowvar ARGS` (printf-style); its exit status, with stdout and stderr in out_text / err_text. */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    return th_flowvar(args, out_path, err_path, out_text, sizeof out_text, err_text, sizeof err_text);
}

/* A reference tensor (F64), malloc'ed; *n its element count. */
static double *ref_tensor(const char *name, size_t *n)
{
    const fv_st_tensor *t = fv_st_find(&ref, name);
    cr_assert_not_null(t, "reference tensor '%s'", name);
    double *v = malloc(t->count * sizeof *v);
    cr_assert_eq(fv_st_get_f64(&ref, name, t->ndim, t->shape, v), FV_OK, "%s: %s", name, fv_last_error());
    *n = t->count;
    return v;
}

/* Reference tensor `name` as an NPY file in the scratch folder (its own shape, or (rows, n / rows) when
 * rows > 0), for --points; returns the path (static). */
static const char *ref_npy(const char *name, size_t rows)
{
    static char path[512];
    const fv_st_tensor *t = fv_st_find(&ref, name);
    size_t n, shape[2];
    double *v = ref_tensor(name, &n);
    snprintf(path, sizeof path, "%s/%s.npy", dir, name);
    if (rows) {
        shape[0] = rows;
        shape[1] = n / rows;
    }
    cr_assert_eq(fv_npy_write_f64(path, v, rows ? 2 : t->ndim, rows ? shape : t->shape), FV_OK, "%s",
                 fv_last_error());
    free(v);
    return path;
}

/* max |out - ref| / max |ref| of an NPY the command wrote against reference `name`, element for element. */
static double rel_err(const char *npy, const char *name)
{
    double *got, err = 0.0, scale = 0.0;
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS], n, count = 1;
    cr_assert_eq(fv_npy_read_f64(npy, &got, &ndim, shape), FV_OK, "%s: %s", npy, fv_last_error());
    for (int i = 0; i < ndim; i++)
        count *= shape[i];
    double *want = ref_tensor(name, &n);
    cr_assert_eq(count, n, "%s holds %zu numbers, reference %s %zu", npy, count, name, n);
    for (size_t i = 0; i < n; i++) {
        err = fmax(err, fabs(got[i] - want[i]));
        scale = fmax(scale, fabs(want[i]));
    }
    free(got);
    free(want);
    return err / scale;
}

/* DIR/name in one of 4 static buffers, reused in turn. */
static const char *in_dir(const char *name)
{
    static char path[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s/%s", dir, name);
    return path[k];
}

/* v at reference points `xname` and times `tname` of run `run_dir`, against reference `vname`. */
static void expect_eval(const char *run_dir, const char *xname, const char *times, const char *vname,
                        const char *extra)
{
    const char *out = in_dir("v.npy");
    cr_assert_eq(run("eval --run %s --points %s --times %s %s --out %s", run_dir, ref_npy(xname, 0), times, extra, out),
                 0, "eval: %s", err_text);
    double e = rel_err(out, vname);
    cr_expect(e <= REL_TOL, "eval of %s against torch's %s: relative error %.3g > %g", run_dir, vname, e, REL_TOL);
}

/* 4 Euler steps of `sample` from reference sources `x0name` (rows of d numbers) against torch's. */
static void expect_euler(const char *run_dir, const char *x0name, size_t rows, const char *ename, const char *extra)
{
    const char *out = in_dir("x1.npy");
    cr_assert_eq(run("sample --run %s --points %s --steps 4 --solver euler %s --out %s", run_dir, ref_npy(x0name, rows),
                     extra, out),
                 0, "sample: %s", err_text);
    double e = rel_err(out, ename);
    cr_expect(e <= REL_TOL, "4 Euler steps of %s against torch's %s: relative error %.3g > %g", run_dir, ename, e,
              REL_TOL);
}

#define MLP_TIMES "0,0.25,0.6,1"
#define UNET_TIMES "0.2,0.7"

Test(import, mlp_matches_torch)
{
    const char *r = in_dir("m");
    cr_assert_eq(run("import --format torchcfm-mlp --weights " FIX "mlp.safetensors " MLP_PROBLEM " --out %s", r), 0,
                 "import: %s", err_text);
    cr_expect(strstr(out_text, "642 parameters"), "import says what it made: %s", out_text);
    cr_expect(th_exists(th_path_in(r, "loss.tsv")), "the run folder has its loss log");
    expect_eval(r, "mlp.x", MLP_TIMES, "mlp.v", "");
    expect_euler(r, "mlp.x0", 0, "mlp.euler4", "");
}

/* export-torchcfm.py's output of train_cifar10.py's checkpoint dict: weights, EMA and config. */
Test(import, mlp_exported_with_ema_matches_torch)
{
    const char *r = in_dir("pt");
    cr_assert_eq(run("import --weights " FIX "mlp_pt/weights.safetensors --ema-weights " FIX "mlp_pt/ema.safetensors"
                     " --config " FIX "mlp_pt/config.json " MLP_PROBLEM " --out %s", r),
                 0, "import: %s", err_text);
    expect_eval(r, "mlp.x", MLP_TIMES, "mlp.v_ema", "");
    expect_eval(r, "mlp.x", MLP_TIMES, "mlp.v", "--no-ema");
    expect_euler(r, "mlp.x0", 0, "mlp.euler4_ema", "");
}

Test(import, mlp_ema_prefix_and_f64_weights_match_torch)
{
    const char *r = in_dir("pre");
    cr_assert_eq(run("import --format torchcfm-mlp --weights " FIX "mlp_prefix.safetensors --ema-prefix ema_model. "
                     MLP_PROBLEM " --out %s", r),
                 0, "import: %s", err_text);
    cr_expect(strstr(err_text, "16 F64 tensors converted to float32"), "the conversion is said: %s", err_text);
    expect_eval(r, "mlp.x", MLP_TIMES, "mlp.v_ema", "");
    expect_eval(r, "mlp.x", MLP_TIMES, "mlp.v", "--no-ema");
}

Test(import, mlp_bf16_under_module_prefix_matches_torch)
{
    const char *r = in_dir("bf");
    cr_assert_eq(run("import --format torchcfm-mlp --weights " FIX "mlp_bf16.safetensors " MLP_PROBLEM " --out %s", r),
                 0, "import: %s", err_text);
    cr_expect(strstr(err_text, "8 BF16 tensors converted to float32"), "the conversion is said: %s", err_text);
    expect_eval(r, "mlp.x", MLP_TIMES, "mlp.v_bf16", "");
}

/* A CIFAR-10 folder of 10 random images (2 per training batch file) for the U-Net's run. */
static const char *cifar_folder(void)
{
    const char *cdir = in_dir("cifar");
    cr_assert_eq(mkdir(cdir, 0777), 0, "make %s", cdir);
    uint32_t s = 12345;
    for (int b = 1; b <= 5; b++) {
        char path[600];
        snprintf(path, sizeof path, "%s/data_batch_%d.bin", cdir, b);
        FILE *fp = fopen(path, "wb");
        cr_assert_not_null(fp, "write %s", path);
        for (int rec = 0; rec < 2; rec++) {
            fputc(rec + b, fp); /* the label, 0..9 */
            for (int i = 0; i < 3072; i++) {
                s = s * 1664525u + 1013904223u;
                fputc((int)(s >> 24), fp);
            }
        }
        cr_assert_eq(fclose(fp), 0);
    }
    return cdir;
}

static const char *import_unet(const char *name)
{
    const char *cdir = cifar_folder(), *r = in_dir(name);
    cr_assert_eq(run("import --weights " FIX "unet/weights.safetensors --config " FIX "unet/config.json "
                     "--data cifar10 --data-dir %s --out %s", cdir, r),
                 0, "import: %s", err_text);
    cr_expect(strstr(err_text, "128 F16 tensors converted to float32"), "the conversion is said: %s", err_text);
    return r;
}

/* torchcfm's UNetModelWrapper with its default attention at resolution 16, F16 weights. */
Test(import, unet_with_attention_matches_torch)
{
    const char *r = import_unet("u");
    expect_eval(r, "unet.x", UNET_TIMES, "unet.v", "");
    expect_euler(r, "unet.x0", 2, "unet.euler4", "");
}

/* Every number of a TSV body finite, and at least `rows` rows. */
static void expect_finite_tsv(const char *what, size_t rows)
{
    const char *p = strchr(out_text, '\n');
    size_t n = 0;
    cr_assert_not_null(p, "%s: a header line: %s", what, out_text);
    for (p++; *p; n++) {
        const char *end = strchr(p, '\n');
        for (const char *q = p; q && q < (end ? end : p + strlen(p));) {
            char *stop;
            double v = strtod(q, &stop);
            if (stop == q) { /* the 'integrated' label of gradvar's last row */
                q = strchr(q, '\t') ? strchr(q, '\t') + 1 : NULL;
                continue;
            }
            cr_expect(isfinite(v), "%s: a non-finite value in row %zu: %s", what, n + 1, out_text);
            q = stop;
        }
        p = end ? end + 1 : p + strlen(p);
    }
    cr_expect(n >= rows, "%s: %zu rows, expected %zu: %s", what, n, rows, out_text);
}

Test(import, unet_gap_and_gradvar_run)
{
    const char *r = import_unet("u");
    cr_assert_eq(run("gap --run %s --t-grid 2 --n 4", r), 0, "gap: %s", err_text);
    expect_finite_tsv("gap", 2);
    cr_assert_eq(run("gradvar --run %s --t-grid 2 --n 4 --groups 2", r), 0, "gradvar: %s", err_text);
    expect_finite_tsv("gradvar", 3);
}

Test(import, resume_of_imported_mlp_starts_adam_from_zero)
{
    const char *r = in_dir("m");
    fv_st_file f;
    cr_assert_eq(run("import --format torchcfm-mlp --weights " FIX "mlp.safetensors " MLP_PROBLEM " --out %s", r), 0,
                 "import: %s", err_text);
    cr_assert_eq(fv_st_read(th_path_in(r, "checkpoint.safetensors"), &f), FV_OK, "%s", fv_last_error());
    cr_expect_eq(fv_checkpoint_has_optimizer(&f), 0, "the imported checkpoint is marked as holding no Adam state");
    cr_expect_null(fv_st_find(&f, "adam.m.net.0.weight"), "and holds none");
    fv_st_free(&f);
    cr_assert_eq(run("train --resume --out %s --steps 6", r), 0, "train --resume: %s", err_text);
    cr_expect(strstr(err_text, "Adam starts from zero moments"), "resume says so: %s", err_text);
    cr_assert_eq(fv_st_read(th_path_in(r, "checkpoint.safetensors"), &f), FV_OK, "%s", fv_last_error());
    cr_expect_eq(fv_checkpoint_has_optimizer(&f), 1, "after training the checkpoint holds Adam's state");
    cr_expect_not_null(fv_st_find(&f, "adam.v.net.6.bias"), "Adam's moments are saved");
    cr_expect_str_eq(fv_st_meta(&f, "step"), "6", "the run went on to step 6");
    fv_st_free(&f);
    cr_assert_eq(run("train --resume --out %s --steps 8", r), 0, "second resume: %s", err_text);
    cr_expect_null(strstr(err_text, "zero moments"), "a resumed flowvar checkpoint has its moments: %s", err_text);
}

/* ---- refusals ------------------------------------------------------------------------------------ */

/* How to change a safetensors file: drop a tensor or a metadata key, add a tensor, give one a
 * shape of 15 columns or the dtype I64. */
typedef struct {
    const char *drop, *add, *narrow, *to_i64, *drop_meta;
} edit;

/* src rewritten by e into dst (all tensors kept as stored, metadata included). */
static void rewrite(const char *src, const char *dst, edit e)
{
    static const float zeros[3] = {0};
    static const int64_t izeros[256] = {0};
    static size_t add_shape[1] = {3};
    fv_st_file f;
    cr_assert_eq(fv_st_read(src, &f), FV_OK, "%s", fv_last_error());
    fv_st_entry *en = calloc(f.ntensors + 1, sizeof *en);
    size_t (*shapes)[FV_ST_MAX_DIMS] = calloc(f.ntensors + 1, sizeof *shapes);
    const char **mk = calloc(f.nmeta + 1, sizeof *mk), **mv = calloc(f.nmeta + 1, sizeof *mv);
    size_t n = 0, nm = 0;
    for (size_t i = 0; i < f.ntensors; i++) {
        const fv_st_tensor *t = &f.tensors[i];
        if (e.drop && !strcmp(t->name, e.drop))
            continue;
        memcpy(shapes[n], t->shape, sizeof shapes[n]);
        en[n] = (fv_st_entry){t->name, t->dtype, t->ndim, shapes[n], f.data + t->offset};
        if (e.narrow && !strcmp(t->name, e.narrow))
            shapes[n][1] -= 1; /* the first rows x (cols - 1) numbers */
        if (e.to_i64 && !strcmp(t->name, e.to_i64)) {
            cr_assert(t->count <= 256, "a small tensor to retype");
            en[n].dtype = FV_ST_I64;
            en[n].data = izeros;
        }
        n++;
    }
    if (e.add)
        en[n++] = (fv_st_entry){e.add, FV_ST_F32, 1, add_shape, zeros};
    for (size_t i = 0; i < f.nmeta; i++)
        if (!(e.drop_meta && !strcmp(f.meta_keys[i], e.drop_meta))) {
            mk[nm] = f.meta_keys[i];
            mv[nm++] = f.meta_values[i];
        }
    cr_assert_eq(fv_st_write(dst, n, en, nm, f.nmeta ? mk : NULL, mv), FV_OK, "%s", fv_last_error());
    free(en);
    free(shapes);
    free(mk);
    free(mv);
    fv_st_free(&f);
}

/* `flowvar ARGS --out DIR/x`: exit 2, "flowvar: error: " naming both needles, the file `path` named
 * once, no run folder and nothing on stdout. */
static void expect_refused(const char *args, const char *path, const char *needle, const char *needle2)
{
    const char *r = in_dir("x");
    cr_assert_eq(run("%s --out %s", args, r), 2, "exit status of %s: %s", args, err_text);
    cr_expect(strncmp(err_text, "flowvar: error: ", 16) == 0, "the error line: %s", err_text);
    cr_expect(strstr(err_text, needle) && strstr(err_text, needle2), "%s: should name '%s' and '%s': %s", args, needle,
              needle2, err_text);
    const char *first = strstr(err_text, path);
    cr_expect(first && !strstr(first + 1, path), "the file is named once: %s", err_text);
    cr_expect(!th_exists(r), "no run folder left by: %s", args);
    cr_expect_eq(out_text[0], '\0', "nothing on stdout: %s", out_text);
}

static void expect_mlp_refused(edit e, const char *needle, const char *needle2)
{
    const char *w = in_dir("w.safetensors");
    char args[1024];
    rewrite(FIX "mlp.safetensors", w, e);
    snprintf(args, sizeof args, "import --format torchcfm-mlp --weights %s " MLP_PROBLEM, w);
    expect_refused(args, w, needle, needle2);
}

Test(import, foreign_tensor_sets_are_refused)
{
    expect_mlp_refused((edit){.drop = "net.2.bias"}, "1 missing: net.2.bias", "not those of the network");
    expect_mlp_refused((edit){.add = "bogus.weight"}, "1 unexpected", "bogus.weight");
    expect_mlp_refused((edit){.narrow = "net.2.weight"}, "1 of the wrong shape", "net.2.weight ([16, 15], expected [16, 16])");
    expect_mlp_refused((edit){.to_i64 = "net.0.bias"}, "1 of the wrong dtype", "net.0.bias (I64, not a float)");
    /* several at once: every kind listed, the first few of each with a count */
    expect_mlp_refused((edit){.drop = "net.4.weight", .add = "bogus.weight", .narrow = "net.6.weight"},
                       "1 missing: net.4.weight; 1 unexpected", "net.6.weight ([2, 15], expected [2, 16])");
}

/* A header whose offsets do not fit its dtype and shape: the reader refuses it. */
Test(import, header_lying_about_offsets_is_refused)
{
    const char *w = in_dir("lying.safetensors");
    static const char header[] = "{\"net.0.weight\":{\"dtype\":\"F32\",\"shape\":[16,3],\"data_offsets\":[0,100]}}";
    unsigned char len[8] = {sizeof header - 1};
    char zeros[100] = {0}, args[1024];
    FILE *fp = fopen(w, "wb");
    cr_assert_not_null(fp);
    cr_assert(fwrite(len, 8, 1, fp) == 1 && fwrite(header, sizeof header - 1, 1, fp) == 1 && fwrite(zeros, 100, 1, fp) == 1);
    cr_assert_eq(fclose(fp), 0);
    snprintf(args, sizeof args, "import --format torchcfm-mlp --weights %s " MLP_PROBLEM, w);
    expect_refused(args, w, "data_offsets [0, 100]", "needs 192");
}

/* A config (or flags) that disagrees with the weights: the U-Net without the attention its weights
 * have (the silently different network), with other channels; an MLP config of another
 * dimension; a config key that is no flag. */
Test(import, config_disagreeing_with_the_weights_is_refused)
{
    char cdir[256], cfg[256], args[2048]; /* copies: in_dir's buffers are reused */
    snprintf(cdir, sizeof cdir, "%s", cifar_folder());
    snprintf(cfg, sizeof cfg, "%s", in_dir("config.json"));
    snprintf(args, sizeof args, "import --weights " FIX "unet/weights.safetensors --config " FIX "unet/config.json "
             "--data cifar10 --data-dir %s --attention ''", cdir);
    expect_refused(args, FIX "unet/weights.safetensors", "20 unexpected", "input_blocks.3.1.norm.bias");
    FILE *fp = fopen(cfg, "w");
    cr_assert_not_null(fp);
    fputs("{\"format\": \"torchcfm-unet\", \"channels\": 64, \"channel-mult\": \"1,2\", \"attention\": \"16\",\n"
          " \"heads\": 2, \"res-blocks\": 1}\n", fp);
    cr_assert_eq(fclose(fp), 0);
    snprintf(args, sizeof args, "import --weights " FIX "unet/weights.safetensors --config %s --data cifar10 "
             "--data-dir %s", cfg, cdir);
    expect_refused(args, FIX "unet/weights.safetensors", "127 of the wrong shape",
                   "time_embed.0.weight ([128, 32], expected [256, 64])");
    expect_refused("import --weights " FIX "mlp_pt/weights.safetensors --config " FIX "mlp_pt/config.json "
                   "--target-mean 1,-0.5,2", "config.json", "input has shape [2]", "points [3]");
    fp = fopen(cfg, "w");
    cr_assert_not_null(fp);
    fputs("{\"format\": \"torchcfm-mlp\", \"colour\": \"blue\"}", fp);
    cr_assert_eq(fclose(fp), 0);
    snprintf(args, sizeof args, "import --weights " FIX "mlp.safetensors --config %s " MLP_PROBLEM, cfg);
    expect_refused(args, cfg, "\"colour\"", "no flag of train");
}

/* flowvar's own checkpoints are held to the same rule: a missing or an extra tensor is refused, and so
 * is a checkpoint without Adam's state that is not marked as such. */
Test(import, own_checkpoint_with_missing_or_extra_tensor_is_refused)
{
    char r[512], x[512], ckpt[600], xckpt[600], args[1024];
    snprintf(r, sizeof r, "%s", in_dir("r"));
    snprintf(x, sizeof x, "%s", in_dir("x"));
    cr_assert_eq(run("train " MLP_PROBLEM " --width 8 --depth 1 --steps 4 --out %s", r), 0, "train: %s", err_text);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", r);
    snprintf(xckpt, sizeof xckpt, "%s/checkpoint.safetensors", x);
    static const edit edits[4] = {{.drop = "adam.m.net.0.weight"}, {.add = "bogus.weight"}, {.drop = "net.2.bias"},
                                  {.drop_meta = "adam.step"}};
    static const char *const needles[4][2] = {{"1 missing", "adam.m.net.0.weight"},
                                              {"1 unexpected", "bogus.weight"},
                                              {"1 missing", "net.2.bias"},
                                              {"'adam.step'", "not a flowvar checkpoint"}};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(mkdir(x, 0777), 0);
        rewrite(ckpt, xckpt, edits[i]);
        snprintf(args, sizeof args, "sample --run %s --n 2", x);
        cr_expect_eq(run("%s", args), 2, "case %d: exit status: %s", i, err_text);
        cr_expect(strstr(err_text, needles[i][0]) && strstr(err_text, needles[i][1]), "case %d: should name '%s' and "
                  "'%s': %s", i, needles[i][0], needles[i][1], err_text);
        const char *first = strstr(err_text, "checkpoint.safetensors");
        cr_expect(first && !strstr(first + 1, "checkpoint.safetensors"), "the file is named once: %s", err_text);
        cr_expect_eq(out_text[0], '\0', "no samples from a refused checkpoint");
        th_remove_tree(x);
    }
}
