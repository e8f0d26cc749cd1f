/* cli.c: the problem flags shared by every command, point input, and error reporting. */
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

const fv_opt fv_problem_opts[] = {
    {"target-mean", "LIST|F.npy", "target mean (d numbers); default 0"},
    {"target-cov", "LIST|F.npy", "target covariance (d*d numbers, row-major); default I"},
    {"source-mean", "LIST|F.npy", "source mean; default 0"},
    {"source-cov", "LIST|F.npy", "source covariance; default I"},
    {"coupling", "ot|rotation|independent", "how targets are paired with sources; default ot"},
    {"angle", "DEG", "rotation angle of the rotational coupling (2x2 blocks in d > 2)"},
    {"rotation", "R.npy",
     "any d x d orthogonal matrix for the rotational coupling, max |R^T R - I| <= " FV_ORTHOGONAL_TOL_TEXT
     " (float32 files pass; det -1 makes the rotation field singular at some t in (0,1))"},
    {"sigma", "S", "interpolant noise level; default 0"},
    {"schedule", "constant|bridge", "noise f(t) = sigma, or sigma*sqrt(t(1-t)); default constant"},
    {"deriv-term", NULL, "add f'(t) Z to the regression target (bridge schedule)"},
    {"seed", "N", "random seed; default 0"},
    {NULL, NULL, NULL},
};

/* Read an optional vector flag of exactly `want` numbers into dst (kept as is when absent). */
static int read_fixed(const fv_args *a, const char *name, size_t want, double *dst)
{
    if (!fv_args_get(a, name))
        return FV_OK;
    double *v;
    size_t n;
    int st = fv_args_array(a, name, &v, &n);
    if (st)
        return st;
    if (n != want) {
        free(v);
        return fv_error(FV_EINPUT, "--%s has %zu numbers, expected %zu (dimension %s)", name, n, want,
                        strstr(name, "cov") || strcmp(name, "rotation") == 0 ? "squared" : "d");
    }
    memcpy(dst, v, n * sizeof *v);
    free(v);
    return FV_OK;
}

/* The dimension: from --target-mean if given, else from --target-cov (a perfect square). */
static int infer_dim(const fv_args *a, size_t *d)
{
    double *v;
    size_t n;
    int st;
    if (fv_args_get(a, "target-mean")) {
        if ((st = fv_args_array(a, "target-mean", &v, &n)))
            return st;
        free(v);
        if (n == 0)
            return fv_error(FV_EINPUT, "--target-mean is empty");
        *d = n;
        return FV_OK;
    }
    if (!fv_args_get(a, "target-cov"))
        return fv_error(FV_EINPUT, "describe the target with --target-mean and/or --target-cov");
    if ((st = fv_args_array(a, "target-cov", &v, &n)))
        return st;
    free(v);
    size_t r = (size_t)llround(sqrt((double)n));
    if (n == 0 || r * r != n)
        return fv_error(FV_EINPUT, "--target-cov has %zu numbers, which is not d*d for any d", n);
    *d = r;
    return FV_OK;
}

int fv_cli_problem(const fv_args *a, fv_problem *p)
{
    static const char *const couplings[] = {"ot", "rotation", "independent", NULL};
    static const char *const schedules[] = {"constant", "bridge", NULL};
    size_t d = 0;
    int st, c, s;
    memset(p, 0, sizeof *p);
    if ((st = infer_dim(a, &d)) || (st = fv_problem_alloc(p, d)))
        return st;
    if ((st = read_fixed(a, "target-mean", d, p->m1)) || (st = read_fixed(a, "target-cov", d * d, p->S1)) ||
        (st = read_fixed(a, "source-mean", d, p->m0)) || (st = read_fixed(a, "source-cov", d * d, p->S0)) ||
        (st = fv_args_choice(a, "coupling", couplings, FV_COUPLING_OT, &c)) ||
        (st = fv_args_choice(a, "schedule", schedules, FV_SCHEDULE_CONSTANT, &s)) ||
        (st = fv_args_double(a, "sigma", 0.0, &p->sigma)))
        goto fail;
    p->coupling = (fv_coupling)c;
    p->schedule = (fv_schedule)s;
    p->deriv_term = fv_args_flag(a, "deriv-term");
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
        } else if ((st = read_fixed(a, "rotation", d * d, p->R))) {
            goto fail;
        }
    }
    if ((st = fv_problem_validate(p)))
        goto fail;
    return FV_OK;
fail:
    fv_problem_free(p);
    return st;
}

int fv_cli_points(const fv_args *a, size_t d, double **X, size_t *n)
{
    if (!fv_args_get(a, "points"))
        return fv_error(FV_EINPUT, "--points is required (an .npy file of shape (n, %zu) or a comma list)", d);
    size_t count;
    int st = fv_args_array(a, "points", X, &count);
    if (st)
        return st;
    if (count == 0 || count % d != 0) {
        free(*X);
        *X = NULL;
        return fv_error(FV_EINPUT, "--points has %zu numbers, not a positive multiple of the dimension %zu", count,
                        d);
    }
    *n = count / d;
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
    int st = fv_atomic_open(&f, path);
    if (st)
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
    if (len > 4 && strcmp(path + len - 4, ".npy") == 0) {
        size_t shape[2] = {n, cols};
        return fv_npy_write_f64(path, M, 2, shape);
    }
    fv_atomic_file f;
    int st = fv_atomic_open(&f, path ? path : "-");
    if (st)
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
