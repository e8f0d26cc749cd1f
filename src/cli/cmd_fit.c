/* cmd_fit.c: `flowvar fit`: the Gaussian fitted to an image set (Fashion-MNIST, CIFAR-10): its mean,
 * covariance and spectrum as NPY, a summary table, and pictures of the data, the mean, the leading
 * eigen-images and samples of the fit. Everything is computed before the output folder is touched,
 * so bad input leaves no folder and no files. */
#include "cli/cli.h"

#include "core/error.h"
#include "core/io.h"
#include "core/progress.h"
#include "data/dataset.h"
#include "data/fit.h"
#include "data/png.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Zoom: the mean alone is drawn 4x, grids 2x, so that 28-pixel images are visible. */
enum { NEIGEN = 16, NSHOW = 64, GRID_COLS = 8, PAD_SIDE = 32, ZOOM_ONE = 4, ZOOM_GRID = 2 };

static const fv_opt fit_opts[] = {
    {"data", "fashion-mnist|cifar10", "the image set (required)"},
    {"data-dir", "DIR", "folder of its files; default " FV_FASHION_MNIST_DIR " (fashion-mnist), none (cifar10)"},
    {"split", "train|test", "which split; default train"},
    {"n", "N", "use the first N images (at least 2); default all"},
    {"pad32", NULL, "pad 28 x 28 images to 32 x 32 with black, 2 pixels on each side"},
    {"floor", "F", "raise eigenvalues below F times the largest to it, F in (0, 1); default 1e-6"},
    {"seed", "S", "random seed of the samples in samples.png; default 0"},
    {"out", "DIR", "output folder (required; created if missing)"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "Fit N(mean, cov) to an image set (pixels scaled to [-1, 1]) and write DIR/mean.npy, cov.npy,\n"
    "eigvals.npy (descending), fit.tsv (summary, also printed), and the pictures mean.png,\n"
    "eigenimages.png (leading 16), samples.png (64 draws of the fit) and data.png (the first 64 images).\n"
    "Example: flowvar fit --data fashion-mnist --out fitfm";

typedef struct {
    fv_dataset ds;
    fv_fit fit;
    double rel_floor;
    float *mean_img, *samples_img; /* the mean and NSHOW samples as images for the PNG writer */
    double *eigen_img;             /* the leading eigenvectors, one image each */
    size_t neigen;
} fit_run;

static int read_options(const fv_args *a, int *kind, int *split, size_t *n, double *rel_floor, uint64_t *seed)
{
    static const char *const kinds[] = {"fashion-mnist", "cifar10", NULL};
    static const char *const splits[] = {"train", "test", NULL};
    const char *out = fv_args_get(a, "out");
    struct stat sb;
    int st;
    if (!fv_args_get(a, "data"))
        return fv_error(FV_EINPUT, "--data fashion-mnist|cifar10 is required");
    if (!out || !*out)
        return fv_error(FV_EINPUT, "--out DIR is required");
    if (stat(out, &sb) == 0 && !S_ISDIR(sb.st_mode))
        return fv_error(FV_EINPUT, "--out %s exists and is not a folder", out);
    *n = 0;
    if ((st = fv_args_choice(a, "data", kinds, 0, kind)) || (st = fv_args_choice(a, "split", splits, 0, split)) ||
        (fv_args_get(a, "n") && (st = fv_args_size(a, "n", 0, 2, n))) ||
        (st = fv_args_double_in(a, "floor", FV_FIT_DEFAULT_FLOOR, FV_DOM_UNIT_OPEN, rel_floor)))
        return st;
    return fv_args_u64(a, "seed", 0, seed);
}

/* The pictures' pixels: the mean, the leading eigenvectors (columns of V) and NSHOW samples. */
static int make_images(fit_run *r, uint64_t seed)
{
    size_t d = r->fit.d;
    double *X = malloc(NSHOW * d * sizeof *X);
    r->neigen = d < NEIGEN ? d : NEIGEN;
    r->mean_img = malloc(d * sizeof *r->mean_img);
    r->samples_img = malloc(NSHOW * d * sizeof *r->samples_img);
    r->eigen_img = malloc(r->neigen * d * sizeof *r->eigen_img);
    if (!X || !r->mean_img || !r->samples_img || !r->eigen_img) {
        free(X);
        return fv_error(FV_ENOMEM, "out of memory for the pictures");
    }
    fv_rng rng = fv_rng_make(seed, 0);
    int st = fv_fit_sample(&r->fit, NSHOW, &rng, X);
    for (size_t k = 0; k < NSHOW * d; k++)
        r->samples_img[k] = (float)X[k];
    for (size_t j = 0; j < d; j++) {
        r->mean_img[j] = (float)r->fit.mean[j];
        for (size_t k = 0; k < r->neigen; k++)
            r->eigen_img[k * d + j] = r->fit.V[j * d + k];
    }
    free(X);
    return st;
}

/* The summary table, to DIR/fit.tsv or "-" (stdout). */
static int write_summary(const fit_run *r, const char *path)
{
    const fv_fit *f = &r->fit;
    double trace = 0;
    for (size_t k = 0; k < f->d; k++)
        trace += f->cov[k * f->d + k];
    const char *names[] = {"n", "channels", "height", "width", "dim", "trace", "eig_max", "eig_min", "floor_rel",
                           "floor", "floored"};
    const double values[] = {(double)f->n, (double)r->ds.c, (double)r->ds.h, (double)r->ds.w, (double)f->d, trace,
                             f->eigval[0], f->eigval[f->d - 1], r->rel_floor, f->floor, (double)f->nfloored};
    fv_atomic_file out;
    int st = fv_cli_finite("fit: the summary", sizeof values / sizeof *values, 1, values);
    if (st || (st = fv_atomic_open(&out, path)))
        return st;
    fprintf(out.fp, "quantity\tvalue\n");
    for (size_t i = 0; i < sizeof values / sizeof *values; i++)
        fprintf(out.fp, "%s\t%.10g\n", names[i], values[i]);
    return fv_atomic_commit(&out);
}

/* "dir/name" in buf (4096 bytes). */
static const char *in_dir(char *buf, const char *dir, const char *name)
{
    snprintf(buf, 4096, "%s/%s", dir, name);
    return buf;
}

static int write_outputs(const fit_run *r, const char *dir)
{
    const fv_dataset *ds = &r->ds;
    const fv_fit *f = &r->fit;
    size_t d = f->d, nshow = ds->n < NSHOW ? ds->n : NSHOW;
    char path[4096];
    int st;
    if (fv_mkdirs(dir) != 0 && errno != EEXIST)
        return fv_error(FV_EIO, "%s: cannot create folder: %s", dir, strerror(errno));
    if ((st = fv_npy_write_f64(in_dir(path, dir, "mean.npy"), f->mean, 1, (size_t[]){d})) ||
        (st = fv_npy_write_f64(in_dir(path, dir, "cov.npy"), f->cov, 2, (size_t[]){d, d})) ||
        (st = fv_npy_write_f64(in_dir(path, dir, "eigvals.npy"), f->eigval, 1, (size_t[]){d})) ||
        (st = write_summary(r, in_dir(path, dir, "fit.tsv"))) ||
        (st = fv_png_write_grid(in_dir(path, dir, "mean.png"), 1, ds->c, ds->h, ds->w, r->mean_img, 1, 1, ZOOM_ONE)) ||
        (st = fv_png_write_grid_scaled(in_dir(path, dir, "eigenimages.png"), r->neigen, ds->c, ds->h, ds->w,
                                       r->eigen_img, (r->neigen + 3) / 4, 4, ZOOM_GRID)) ||
        (st = fv_png_write_grid(in_dir(path, dir, "samples.png"), NSHOW, ds->c, ds->h, ds->w, r->samples_img,
                                NSHOW / GRID_COLS, GRID_COLS, ZOOM_GRID)) ||
        (st = fv_png_write_grid(in_dir(path, dir, "data.png"), nshow, ds->c, ds->h, ds->w, ds->x,
                                (nshow + GRID_COLS - 1) / GRID_COLS, GRID_COLS, ZOOM_GRID)))
        return st;
    return write_summary(r, "-");
}

int fv_cmd_fit(int argc, char **argv)
{
    fv_args a;
    fit_run r = {0};
    int kind, split;
    size_t n;
    uint64_t seed;
    int st = fv_args_parse(&a, "fit", usage, argc, argv, fit_opts, NULL);
    if (st < 0)
        return 0;
    if (st || (st = read_options(&a, &kind, &split, &n, &r.rel_floor, &seed)) ||
        (st = fv_dataset_load(&r.ds, (fv_dataset_kind)kind, fv_args_get(&a, "data-dir"), (fv_split)split, n)) ||
        (fv_args_flag(&a, "pad32") && (st = fv_dataset_pad(&r.ds, PAD_SIDE))))
        goto done;
    size_t d = r.ds.c * r.ds.h * r.ds.w;
    fprintf(stderr, "fit: %zu images of %zu x %zu x %zu (dimension %zu)\n", r.ds.n, r.ds.c, r.ds.h, r.ds.w, d);
    fv_progress bar;
    fv_progress_start(&bar, "fit", r.ds.n);
    st = fv_fit_compute(&r.fit, r.ds.n, d, r.ds.x, r.rel_floor, &bar);
    fv_progress_end(&bar);
    if (st || (st = make_images(&r, seed)))
        goto done;
    st = write_outputs(&r, fv_args_get(&a, "out"));
done:
    fv_dataset_free(&r.ds);
    fv_fit_free(&r.fit);
    free(r.mean_img);
    free(r.samples_img);
    free(r.eigen_img);
    return st ? fv_cli_fail(st) : 0;
}
