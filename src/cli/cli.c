/* cli.c: the problem flags (in the groups the commands choose from), point input, the writers that put
 * only finite numbers out, and error reporting. */
#include "cli/cli.h"

#include "core/error.h"
#include "core/io.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const fv_opt fv_dist_opts[] = {
    {"target-mean", "LIST|F.npy", "target mean (d numbers); default 0"},
    {"target-cov", "LIST|F.npy", "target covariance (d*d numbers row-major, or a (d, d) .npy); default I"},
    {"source-mean", "LIST|F.npy", "source mean; default 0"},
    {"source-cov", "LIST|F.npy", "source covariance; default I"},
    {NULL, NULL, NULL},
};
const fv_opt fv_coupling_opts[] = {
    {"coupling", "ot|rotation|independent", "how targets are paired with sources; default ot"},
    {NULL, NULL, NULL},
};
const fv_opt fv_rotation_opts[] = {
    {"angle", "DEG", "rotation angle of the rotational coupling (2x2 blocks in d > 2)"},
    {"rotation", "R.npy", "any d x d orthogonal matrix for the rotational coupling"},
    {NULL, NULL, NULL},
};
const fv_opt fv_sigma_opts[] = {
    {"sigma", "S", "interpolant noise level (>= 0); default 0"},
    {NULL, NULL, NULL},
};
const fv_opt fv_schedule_opts[] = {
    {"schedule", "constant|bridge", "noise f(t) = sigma, or sigma*sqrt(t(1-t)); default constant"},
    {"deriv-term", NULL, "add f'(t) Z to the regression target (needs --schedule bridge)"},
    {NULL, NULL, NULL},
};
const fv_opt fv_seed_opts[] = {
    {"seed", "N", "random seed; default 0"},
    {NULL, NULL, NULL},
};

static int is_matrix_flag(const char *name) { return strstr(name, "cov") || strcmp(name, "rotation") == 0; }

/* An .npy given for a vector flag must have shape (d,), for a matrix flag (d, d) or (d*d,). */
static int check_flag_shape(const fv_args *a, const char *name, size_t d, int ndim, const size_t *shape)
{
    if (ndim == 0)
        return FV_OK;
    int matrix = is_matrix_flag(name);
    if ((ndim == 1 && shape[0] == (matrix ? d * d : d)) || (matrix && ndim == 2 && shape[0] == d && shape[1] == d))
        return FV_OK;
    char found[96];
    fv_args_shape_text(ndim, shape, found, sizeof found);
    if (matrix)
        return fv_error(FV_EINPUT, "--%s: %s has shape %s, expected (%zu, %zu) (or %zu numbers)", name,
                        fv_args_get(a, name), found, d, d, d * d);
    return fv_error(FV_EINPUT, "--%s: %s has shape %s, expected (%zu,)", name, fv_args_get(a, name), found, d);
}

/* Read an optional vector or matrix flag of a d-dimensional problem into dst (kept as is when absent). */
static int read_fixed(const fv_args *a, const char *name, size_t d, double *dst)
{
    if (!fv_args_get(a, name))
        return FV_OK;
    double *v;
    size_t n, want = is_matrix_flag(name) ? d * d : d, shape[FV_NPY_MAX_DIMS];
    int ndim, st = fv_args_array(a, name, &v, &n, &ndim, shape);
    if (st)
        return st;
    if ((st = check_flag_shape(a, name, d, ndim, shape))) {
        free(v);
        return st;
    }
    if (n != want) {
        free(v);
        return fv_error(FV_EINPUT, "--%s has %zu numbers, expected %zu (dimension %s)", name, n, want,
                        is_matrix_flag(name) ? "squared" : "d");
    }
    memcpy(dst, v, n * sizeof *v);
    free(v);
    return FV_OK;
}

/* The dimension: from --target-mean if given, else from --target-cov (a perfect square). */
static int infer_dim(const fv_args *a, size_t *d)
{
    double *v;
    size_t n, shape[FV_NPY_MAX_DIMS];
    int st, ndim;
    if (fv_args_get(a, "target-mean")) {
        if ((st = fv_args_array(a, "target-mean", &v, &n, &ndim, shape)))
            return st;
        free(v);
        if (n == 0)
            return fv_error(FV_EINPUT, "--target-mean is empty");
        if (ndim > 1) {
            char found[96];
            fv_args_shape_text(ndim, shape, found, sizeof found);
            return fv_error(FV_EINPUT, "--target-mean: %s has shape %s, expected (d,)", fv_args_get(a, "target-mean"),
                            found);
        }
        *d = n;
        return FV_OK;
    }
    if (!fv_args_get(a, "target-cov"))
        return fv_error(FV_EINPUT, "describe the target with --target-mean and/or --target-cov");
    if ((st = fv_args_array(a, "target-cov", &v, &n, &ndim, shape)))
        return st;
    free(v);
    if (ndim > 2 || (ndim == 2 && shape[0] != shape[1])) {
        char found[96];
        fv_args_shape_text(ndim, shape, found, sizeof found);
        return fv_error(FV_EINPUT, "--target-cov: %s has shape %s, expected (d, d)", fv_args_get(a, "target-cov"), found);
    }
    size_t r = ndim == 2 ? shape[0] : (size_t)llround(sqrt((double)n));
    if (n == 0 || r * r != n)
        return fv_error(FV_EINPUT, "--target-cov has %zu numbers, which is not d*d for any d", n);
    *d = r;
    return check_flag_shape(a, "target-cov", r, ndim, shape);
}

/* The gradient variance is measured against s^2, s = 1 + |m1 - m0|^2 + tr S0 + tr S1 + d sigma^2 (its
 * natural scale, gaussian/variance.c), and W2^2 and the fields' terms are of the size of s: a problem
 * whose s^2 overflows can have no finite result, so it is refused here, naming the term that makes it
 * overflow. */
static int check_scale(const fv_problem *p)
{
    size_t d = p->d;
    double term[4] = {0, 0, 0, (double)d * p->sigma * p->sigma};
    static const char *const names[4] = {"--target-mean / --source-mean", "--target-cov", "--source-cov", "--sigma"};
    for (size_t i = 0; i < d; i++) {
        term[0] += (p->m1[i] - p->m0[i]) * (p->m1[i] - p->m0[i]);
        term[1] += p->S1[i * d + i];
        term[2] += p->S0[i * d + i];
    }
    double s = 1.0 + term[0] + term[1] + term[2] + term[3];
    if (isfinite(s * s))
        return FV_OK;
    int k = 0;
    for (int i = 1; i < 4; i++)
        if (!(term[i] <= term[k]))
            k = i;
    return fv_error(FV_EINPUT,
                    "%s too large: the problem's scale 1 + |m1 - m0|^2 + tr S0 + tr S1 + d sigma^2 = %g overflows "
                    "when squared, so no result could be finite",
                    names[k], s);
}

int fv_cli_noise(const fv_args *a, fv_problem *p)
{
    static const char *const schedules[] = {"constant", "bridge", NULL};
    int s, st;
    if ((st = fv_args_choice(a, "schedule", schedules, FV_SCHEDULE_CONSTANT, &s)) ||
        (st = fv_args_double_in(a, "sigma", 0.0, FV_DOM_NONNEG, &p->sigma)))
        return st;
    p->schedule = (fv_schedule)s;
    p->deriv_term = fv_args_flag(a, "deriv-term");
    if (p->deriv_term && p->schedule != FV_SCHEDULE_BRIDGE)
        return fv_error(FV_EINPUT, "--deriv-term goes with --schedule bridge (the constant schedule has f' = 0)");
    return FV_OK;
}

int fv_cli_problem(const fv_args *a, fv_problem *p)
{
    static const char *const couplings[] = {"ot", "rotation", "independent", NULL};
    size_t d = 0;
    int st, c;
    memset(p, 0, sizeof *p);
    if ((st = infer_dim(a, &d)) || (st = fv_problem_alloc(p, d)))
        return st;
    if ((st = read_fixed(a, "target-mean", d, p->m1)) || (st = read_fixed(a, "target-cov", d, p->S1)) ||
        (st = read_fixed(a, "source-mean", d, p->m0)) || (st = read_fixed(a, "source-cov", d, p->S0)) ||
        (st = fv_args_choice(a, "coupling", couplings, FV_COUPLING_OT, &c)) || (st = fv_cli_noise(a, p)))
        goto fail;
    p->coupling = (fv_coupling)c;
    if (fv_args_get(a, "angle") && fv_args_get(a, "rotation")) {
        st = fv_error(FV_EINPUT, "give --angle or --rotation, not both");
        goto fail;
    }
    if (fv_args_get(a, "angle") || fv_args_get(a, "rotation")) {
        if (!(p->R = malloc(d * d * sizeof *p->R))) {
            st = fv_error(FV_ENOMEM, "out of memory");
            goto fail;
        }
        double deg;
        if (fv_args_get(a, "angle")) {
            if ((st = fv_args_double(a, "angle", 0.0, &deg)))
                goto fail;
            fv_rotation_blocks(d, deg, p->R);
        } else if ((st = read_fixed(a, "rotation", d, p->R))) {
            goto fail;
        }
    }
    if ((st = fv_problem_validate(p)) || (st = check_scale(p)))
        goto fail;
    return FV_OK;
fail:
    fv_problem_free(p);
    return st;
}

const char *const fv_rotation_flags[] = {"angle", "rotation", NULL};
const char *const fv_noise_flags[] = {"sigma", "schedule", "deriv-term", NULL};

int fv_cli_unused(const fv_args *a, const char *const *names, const char *why)
{
    for (size_t i = 0; names[i]; i++)
        if (fv_args_get(a, names[i]))
            return fv_error(FV_EINPUT, "%s: --%s is not used %s", a->command, names[i], why);
    return FV_OK;
}

int fv_cli_points(const fv_args *a, size_t d, double **X, size_t *n)
{
    if (!fv_args_get(a, "points"))
        return fv_error(FV_EINPUT, "--points is required (an .npy file of shape (n, %zu) or a comma list)", d);
    size_t count, shape[FV_NPY_MAX_DIMS];
    int ndim, st = fv_args_array(a, "points", X, &count, &ndim, shape);
    if (st)
        return st;
    if (ndim && !(ndim == 2 && shape[1] == d && shape[0] > 0) && !(ndim == 1 && shape[0] == d)) {
        char found[96];
        fv_args_shape_text(ndim, shape, found, sizeof found);
        free(*X);
        *X = NULL;
        return fv_error(FV_EINPUT, "--points: %s has shape %s, expected (n, %zu) or (%zu,)", fv_args_get(a, "points"),
                        found, d, d);
    }
    if (count == 0 || count % d != 0) {
        free(*X);
        *X = NULL;
        return fv_error(FV_EINPUT, "--points has %zu numbers, not a positive multiple of the dimension %zu", count,
                        d);
    }
    *n = count / d;
    return FV_OK;
}

size_t fv_cli_first_nonfinite(size_t n, const double *v)
{
    size_t i = 0;
    while (i < n && isfinite(v[i]))
        i++;
    return i;
}

int fv_cli_finite(const char *what, size_t nrows, size_t ncols, const double *rows)
{
    size_t i = fv_cli_first_nonfinite(nrows * ncols, rows);
    if (i < nrows * ncols)
        return fv_error(FV_ENUMERIC, "%s: row %zu, column %zu is %g; nothing written (flowvar writes only finite "
                            "numbers)", what, i / ncols + 1, i % ncols + 1, rows[i]);
    return FV_OK;
}

int fv_cli_fail(int status)
{
    fprintf(stderr, "flowvar: error: %s\n", fv_last_error());
    return status == FV_EINPUT || status == FV_ESINGULAR || status == FV_EDIVERGE ? 2 : 1;
}

int fv_cli_write_matrix(const char *path, size_t n, size_t d, const double *M, const char *prefix)
{
    return fv_cli_write_blocks(path, n, d, 1, &prefix, M);
}

int fv_cli_write_tsv(const char *path, size_t ncols, const char *const *names, size_t nrows, const double *rows)
{
    fv_atomic_file f;
    int st = fv_cli_finite(strcmp(path, "-") ? path : "standard output", nrows, ncols, rows);
    if (st || (st = fv_atomic_open(&f, path)))
        return st;
    st = fv_tsv_header(f.fp, (int)ncols, names);
    for (size_t i = 0; i < nrows && !st; i++)
        st = fv_tsv_row(f.fp, (int)ncols, rows + ncols * i);
    if (st) {
        fv_atomic_abort(&f);
        return st;
    }
    return fv_atomic_commit(&f);
}

int fv_cli_write_blocks(const char *path, size_t n, size_t d, size_t nb, const char *const *prefixes,
                        const double *M)
{
    size_t len = path ? strlen(path) : 0, cols = nb * d;
    int st = fv_cli_finite(path && strcmp(path, "-") ? path : "standard output", n, cols, M);
    if (st)
        return st;
    if (len > 4 && strcmp(path + len - 4, ".npy") == 0) {
        size_t shape[2] = {n, cols};
        return fv_npy_write_f64(path, M, 2, shape);
    }
    fv_atomic_file f;
    if ((st = fv_atomic_open(&f, path ? path : "-")))
        return st;
    char **names = calloc(cols, sizeof *names);
    for (size_t c = 0; names && c < cols; c++)
        if ((names[c] = malloc(strlen(prefixes[c / d]) + 24)))
            sprintf(names[c], "%s%zu", prefixes[c / d], c % d + 1);
    st = names ? fv_tsv_header(f.fp, (int)cols, (const char *const *)names)
               : fv_error(FV_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && !st; i++)
        st = fv_tsv_row(f.fp, (int)cols, M + i * cols);
    for (size_t c = 0; names && c < cols; c++)
        free(names[c]);
    free(names);
    if (st) {
        fv_atomic_abort(&f);
        return st;
    }
    return fv_atomic_commit(&f);
}

/* The folder of the gnuplot scripts: --plots, $FLOWVAR_PLOTS, ../plots or ../share/flowvar/plots
 * from the binary. */
/* The folder `rel[0]` or `rel[1]` beside the running binary's own folder, into dir. */
static int find_beside_binary(const char *const rel[2], char *dir, size_t size)
{
    char exe[PATH_MAX];
    struct stat sb;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return 0;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    for (int i = 0; i < 2; i++)
        if (snprintf(dir, size, "%s/%s", exe, rel[i]) < (int)size && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode))
            return 1;
    return 0;
}

int fv_cli_find_plots(const fv_args *a, char *dir, size_t size)
{
    const char *given = fv_args_get(a, "plots") ? fv_args_get(a, "plots") : getenv("FLOWVAR_PLOTS");
    struct stat sb;
    if (given) {
        snprintf(dir, size, "%s", given);
        if (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode))
            return FV_OK;
        return fv_error(FV_EINPUT, "--plots: '%s' is not a folder", dir);
    }
    static const char *const rel[] = {"../plots", "../share/flowvar/plots"};
    if (find_beside_binary(rel, dir, size))
        return FV_OK;
    return fv_error(FV_EINPUT, "cannot find the gnuplot scripts: give --plots DIR or set FLOWVAR_PLOTS");
}

int fv_cli_find_scripts(char *dir, size_t size)
{
    static const char *const rel[] = {"../scripts", "../share/flowvar/scripts"};
    if (find_beside_binary(rel, dir, size))
        return FV_OK;
    return fv_error(FV_EIO, "cannot find flowvar's scripts folder beside the binary (../scripts or "
                            "../share/flowvar/scripts)");
}

/* Draw one figure: gnuplot reads DIR/NAME.tsv and writes DIR/NAME.png and DIR/NAME.svg. */
int fv_cli_draw(const char *plots, const char *dir, const char *name)
{
    char cmd[3 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "gnuplot -e \"in='%s/%s.tsv'; out='%s/%s'\" '%s/%s.gp'", dir, name, dir, name, plots,
             name);
    int rc = system(cmd);
    if (rc != 0)
        return fv_error(FV_EIO, "gnuplot failed on %s/%s.gp (exit %d); is gnuplot installed (make deps)?", plots,
                        name, rc);
    return FV_OK;
}

void fv_cli_l2_stats(size_t n, size_t d, const double *x, const double *y, double *mean, double *sd)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        double e = 0;
        for (size_t j = 0; j < d; j++)
            e += (x[i * d + j] - y[i * d + j]) * (x[i * d + j] - y[i * d + j]);
        e = sqrt(e);
        s += e;
        s2 += e * e;
    }
    *mean = s / (double)n;
    *sd = n > 1 ? sqrt(fmax(s2 - (double)n * *mean * *mean, 0.0) / (double)(n - 1)) : 0.0;
}
