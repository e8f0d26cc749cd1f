/* cli.c: the problem flags (in the groups the commands choose from), point input, the writers that put
 * only finite numbers out, and error reporting. */
#include "cli/cli.h"

#include "core/error.h"
#include "core/io.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <spawn.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
    {"rotation", "R.npy",
     "any d x d orthogonal matrix for the rotational coupling, max |R^T R - I| <= " FV_ORTHOGONAL_TOL_TEXT
     " (float32 files pass; det -1 makes the rotation field singular at some t in (0,1))"},
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
const fv_opt fv_empirical_opts[] = {
    {"targets", "Y.npy", "--field empirical: the finite data set, an .npy of shape (N, d) (or (N, C, H, W))"},
    {"data", "fashion-mnist|cifar10", "--field empirical: the data set is the training images of this set"},
    {"data-dir", "DIR", "with --data: the folder of the files (Fashion-MNIST: Debian's by default)"},
    {"images", "N", "with --data: the first N training images (default all)"},
    {"direction", "forward|backward",
     "--field empirical: forward = Gaussian source -> data (default), backward = data -> Gaussian target"},
    {NULL, NULL, NULL},
};
const fv_opt fv_seed_opts[] = {
    {"seed", "N", "random seed; default 0"},
    {NULL, NULL, NULL},
};

/* An array flag, read once: a FIFO or standard input cannot be read a second time. v is NULL when
 * the flag is absent; ndim and shape are the NPY's (ndim 0 for a comma list). */
typedef struct {
    double *v;
    size_t n;
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS];
} flag_array;

static int read_flag(const fv_args *a, const char *name, flag_array *f)
{
    memset(f, 0, sizeof *f);
    return fv_args_get(a, name) ? fv_args_array(a, name, &f->v, &f->n, &f->ndim, f->shape) : FV_OK;
}

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

/* Copy an array flag of a d-dimensional problem into dst (kept as is when the flag is absent). */
static int copy_fixed(const fv_args *a, const char *name, const flag_array *f, size_t d, double *dst)
{
    if (!f->v)
        return FV_OK;
    size_t want = is_matrix_flag(name) ? d * d : d;
    int st = check_flag_shape(a, name, d, f->ndim, f->shape);
    if (st)
        return st;
    if (f->n != want)
        return fv_error(FV_EINPUT, "--%s has %zu numbers, expected %zu (dimension %s)", name, f->n, want,
                        is_matrix_flag(name) ? "squared" : "d");
    memcpy(dst, f->v, f->n * sizeof *f->v);
    return FV_OK;
}

/* The dimension: from --target-mean if given, else from --target-cov (a perfect square). */
static int infer_dim(const fv_args *a, const flag_array *mean, const flag_array *cov, size_t *d)
{
    char found[96];
    if (mean->v) {
        if (mean->n == 0)
            return fv_error(FV_EINPUT, "--target-mean is empty");
        if (mean->ndim > 1) {
            fv_args_shape_text(mean->ndim, mean->shape, found, sizeof found);
            return fv_error(FV_EINPUT, "--target-mean: %s has shape %s, expected (d,)", fv_args_get(a, "target-mean"),
                            found);
        }
        *d = mean->n;
        return FV_OK;
    }
    if (!cov->v)
        return fv_error(FV_EINPUT, "describe the target with --target-mean and/or --target-cov");
    if (cov->ndim > 2 || (cov->ndim == 2 && cov->shape[0] != cov->shape[1])) {
        fv_args_shape_text(cov->ndim, cov->shape, found, sizeof found);
        return fv_error(FV_EINPUT, "--target-cov: %s has shape %s, expected (d, d)", fv_args_get(a, "target-cov"), found);
    }
    size_t r = cov->ndim == 2 ? cov->shape[0] : (size_t)llround(sqrt((double)cov->n));
    if (cov->n == 0 || r * r != cov->n)
        return fv_error(FV_EINPUT, "--target-cov has %zu numbers, which is not d*d for any d", cov->n);
    *d = r;
    return check_flag_shape(a, "target-cov", r, cov->ndim, cov->shape);
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

/* --angle or --rotation into p->R. */
static int read_rotation(const fv_args *a, fv_problem *p)
{
    size_t d = p->d;
    if (fv_args_get(a, "angle") && fv_args_get(a, "rotation"))
        return fv_error(FV_EINPUT, "give --angle or --rotation, not both");
    if (!fv_args_get(a, "angle") && !fv_args_get(a, "rotation"))
        return FV_OK;
    if (!(p->R = malloc(d * d * sizeof *p->R)))
        return fv_error(FV_ENOMEM, "out of memory");
    if (fv_args_get(a, "angle")) {
        double deg;
        int st = fv_args_double(a, "angle", 0.0, &deg);
        if (!st)
            fv_rotation_blocks(d, deg, p->R);
        return st;
    }
    flag_array rot;
    int st = read_flag(a, "rotation", &rot);
    if (!st)
        st = copy_fixed(a, "rotation", &rot, d, p->R);
    free(rot.v);
    return st;
}

int fv_cli_problem(const fv_args *a, fv_problem *p)
{
    static const char *const couplings[] = {"ot", "rotation", "independent", NULL};
    static const char *const names[4] = {"target-mean", "target-cov", "source-mean", "source-cov"};
    flag_array arr[4] = {{0}};
    size_t d = 0;
    int st = FV_OK, c;
    memset(p, 0, sizeof *p);
    for (int i = 0; i < 4 && !st; i++)
        st = read_flag(a, names[i], &arr[i]);
    if (st || (st = infer_dim(a, &arr[0], &arr[1], &d)) || (st = fv_problem_alloc(p, d)))
        goto done;
    double *const dst[4] = {p->m1, p->S1, p->m0, p->S0};
    for (int i = 0; i < 4 && !st; i++)
        st = copy_fixed(a, names[i], &arr[i], d, dst[i]);
    if (st || (st = fv_args_choice(a, "coupling", couplings, FV_COUPLING_OT, &c)) || (st = fv_cli_noise(a, p)))
        goto done;
    p->coupling = (fv_coupling)c;
    if (!(st = read_rotation(a, p)) && !(st = fv_problem_validate(p)))
        st = check_scale(p);
done:
    for (int i = 0; i < 4; i++)
        free(arr[i].v);
    if (st)
        fv_problem_free(p);
    return st;
}

int fv_cli_problem_dim(const fv_args *a, size_t d, fv_problem *p)
{
    static const char *const names[4] = {"target-mean", "target-cov", "source-mean", "source-cov"};
    flag_array arr[4] = {{0}};
    int st;
    memset(p, 0, sizeof *p);
    if ((st = fv_problem_alloc(p, d)))
        return st;
    double *const dst[4] = {p->m1, p->S1, p->m0, p->S0};
    for (int i = 0; i < 4 && !st; i++)
        if (!(st = read_flag(a, names[i], &arr[i])))
            st = copy_fixed(a, names[i], &arr[i], d, dst[i]);
    p->coupling = FV_COUPLING_INDEPENDENT;
    if (!st && !(st = fv_cli_noise(a, p)) && !(st = fv_problem_validate(p)))
        st = check_scale(p);
    for (int i = 0; i < 4; i++)
        free(arr[i].v);
    if (st)
        fv_problem_free(p);
    return st;
}

const char *const fv_rotation_flags[] = {"angle", "rotation", NULL};
const char *const fv_noise_flags[] = {"sigma", "schedule", "deriv-term", NULL};
const char *const fv_empirical_flags[] = {"targets", "data", "data-dir", "images", "direction", NULL};

int fv_cli_unused(const fv_args *a, const char *const *names, const char *why)
{
    for (size_t i = 0; names[i]; i++)
        if (fv_args_get(a, names[i]))
            return fv_error(FV_EINPUT, "%s: --%s is not used %s", a->command, names[i], why);
    return FV_OK;
}

int fv_cli_points(const fv_args *a, size_t d, double **X, size_t *n)
{
    return fv_cli_points_images(a, d, NULL, X, n);
}

/* An NPY of n images of shape (C, H, W) as image[] gives it. */
static int is_image_stack(int ndim, const size_t *shape, const size_t *image)
{
    return image && ndim == 4 && shape[0] > 0 && shape[1] == image[0] && shape[2] == image[1] && shape[3] == image[2];
}

int fv_cli_points_images(const fv_args *a, size_t d, const size_t *image, double **X, size_t *n)
{
    if (!fv_args_get(a, "points"))
        return fv_error(FV_EINPUT, "--points is required (an .npy file of shape (n, %zu) or a comma list)", d);
    size_t count, shape[FV_NPY_MAX_DIMS];
    int ndim, st = fv_args_array(a, "points", X, &count, &ndim, shape);
    if (st)
        return st;
    if (ndim && !(ndim == 2 && shape[1] == d && shape[0] > 0) && !(ndim == 1 && shape[0] == d) &&
        !is_image_stack(ndim, shape, image)) {
        char found[96], images[96] = "";
        fv_args_shape_text(ndim, shape, found, sizeof found);
        if (image)
            snprintf(images, sizeof images, " or (n, %zu, %zu, %zu)", image[0], image[1], image[2]);
        free(*X);
        *X = NULL;
        return fv_error(FV_EINPUT, "--points: %s has shape %s, expected (n, %zu)%s or (%zu,)", fv_args_get(a, "points"),
                        found, d, images, d);
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

/* `name='value'; ` appended to the gnuplot command being built in buf: gnuplot's single-quoted
 * strings know one special character, ' itself, written ''. Unlike double quotes they also stop
 * gnuplot's backquote command substitution and @macros, so no path can run anything. */
static void gp_assign(char *buf, size_t *len, const char *name, const char *value)
{
    *len += (size_t)sprintf(buf + *len, "%s='", name);
    for (const char *c = value; *c; c++) {
        if (*c == '\'')
            buf[(*len)++] = '\'';
        buf[(*len)++] = *c;
    }
    *len += (size_t)sprintf(buf + *len, "'; ");
}

/* The last line of gnuplot's messages (its "file" line N: what went wrong), trailing blanks cut. */
static const char *last_line(char *text)
{
    size_t n = strlen(text);
    while (n > 0 && isspace((unsigned char)text[n - 1]))
        text[--n] = '\0';
    char *nl = strrchr(text, '\n');
    return nl ? nl + 1 : text;
}

/* Read the child's messages to the end, keeping the last size - 1 bytes. */
static void drain(int fd, char *buf, size_t size)
{
    size_t have = 0;
    char chunk[512];
    ssize_t got;
    while ((got = read(fd, chunk, sizeof chunk)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            break;
        size_t k = (size_t)got < size - 1 ? (size_t)got : size - 1;
        if (have + k > size - 1) {
            memmove(buf, buf + (have + k - (size - 1)), size - 1 - k);
            have = size - 1 - k;
        }
        memcpy(buf + have, chunk + (size_t)got - k, k);
        have += k;
    }
    buf[have] = '\0';
}

/* gnuplot -e COMMANDS SCRIPT, started without a shell (no character of a path is ever interpreted),
 * stdin from /dev/null and its stdout and stderr into a pipe: stdout may be the table a command is
 * printing. Its messages are passed on after a success (warnings) and end the error after a failure. */
static int run_gnuplot(const char *commands, const char *script)
{
    extern char **environ;
    char *argv[] = {"gnuplot", "-e", (char *)commands, (char *)script, NULL};
    char msg[1024];
    int fds[2], rc, status;
    pid_t pid;
    if (pipe(fds) != 0)
        return fv_error(FV_EIO, "cannot start gnuplot: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    rc = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return rc == ENOENT ? fv_error(FV_EIO, "gnuplot not found on PATH (install it: make deps)")
                            : fv_error(FV_EIO, "cannot start gnuplot: %s", strerror(rc));
    }
    drain(fds[0], msg, sizeof msg);
    close(fds[0]);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return fv_error(FV_EIO, "waiting for gnuplot: %s", strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        fputs(msg, stderr);
        return FV_OK;
    }
    const char *why = last_line(msg);
    if (!*why)
        why = "no message";
    if (WIFSIGNALED(status))
        return fv_error(FV_EIO, "gnuplot failed on %s (killed by signal %d): %s", script, WTERMSIG(status), why);
    return fv_error(FV_EIO, "gnuplot failed on %s (exit status %d): %s", script, WEXITSTATUS(status), why);
}

/* gnuplot ignores failed writes (a full disk) and still exits 0, so check that each picture ends the
 * way a whole one does: a PNG with its IEND chunk, an SVG with </svg>. */
static int picture_is_whole(const char *path, int is_png)
{
    static const unsigned char iend[8] = {'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
    unsigned char tail[64];
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return 0;
    if (fseek(fp, -(long)sizeof tail, SEEK_END) != 0)
        rewind(fp); /* shorter than the tail */
    size_t n = fread(tail, 1, sizeof tail, fp);
    fclose(fp);
    if (is_png)
        return n >= sizeof iend && memcmp(tail + n - sizeof iend, iend, sizeof iend) == 0;
    while (n > 0 && isspace(tail[n - 1]))
        n--;
    return n >= 6 && memcmp(tail + n - 6, "</svg>", 6) == 0;
}

/* Draw one figure: gnuplot reads DIR/NAME.tsv and writes DIR/NAME.png and DIR/NAME.svg, through
 * temporaries (the scripts' png and svg variables) that are renamed into place only when gnuplot
 * succeeded and the pictures are whole. */
int fv_cli_draw(const char *plots, const char *dir, const char *name)
{
    static const char *const ext[2] = {"png", "svg"};
    char script[PATH_MAX + 8], tsv[PATH_MAX], out[PATH_MAX], pic[2][PATH_MAX];
    /* "./": a script path starting with '-' is not a gnuplot option */
    if (snprintf(script, sizeof script, "%s%s/%s.gp", plots[0] == '-' ? "./" : "", plots, name) >= (int)sizeof script ||
        snprintf(tsv, sizeof tsv, "%s/%s.tsv", dir, name) >= (int)sizeof tsv ||
        snprintf(out, sizeof out, "%s/%s", dir, name) >= (int)sizeof out ||
        snprintf(pic[0], PATH_MAX, "%s.png", out) >= PATH_MAX || snprintf(pic[1], PATH_MAX, "%s.svg", out) >= PATH_MAX)
        return fv_error(FV_EINPUT, "%s: path too long for the figure %s", dir, name);
    fv_atomic_file f[2];
    int st = fv_atomic_open(&f[0], pic[0]);
    if (st)
        return st;
    if ((st = fv_atomic_open(&f[1], pic[1]))) {
        fv_atomic_abort(&f[0]);
        return st;
    }
    const char *vals[4] = {tsv, out, fv_atomic_name(&f[0]), fv_atomic_name(&f[1])};
    static const char *const vars[4] = {"in", "out", "png", "svg"};
    size_t size = 64, len = 0;
    for (int i = 0; i < 4; i++)
        size += 2 * strlen(vals[i]) + 8;
    char *commands = malloc(size);
    if (!commands)
        st = fv_error(FV_ENOMEM, "out of memory");
    for (int i = 0; i < 4 && commands; i++)
        gp_assign(commands, &len, vars[i], vals[i]);
    if (!st)
        st = run_gnuplot(commands, script);
    free(commands);
    for (int k = 0; k < 2 && !st; k++)
        if (f[k].tmp && !picture_is_whole(f[k].tmp, k == 0))
            st = fv_error(FV_EIO, "%s: gnuplot wrote an incomplete %s picture (is the disk full?)", pic[k], ext[k]);
    for (int k = 0; k < 2; k++)
        if (st)
            fv_atomic_abort(&f[k]);
        else
            st = fv_atomic_commit(&f[k]);
    return st;
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
