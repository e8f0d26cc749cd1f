/* bench_field.c: timings of the closed-form OT field (gaussian/field.h) and of their floors, all in
 * one process, printed as TSV on stdout for bench/report.py (progress goes to stderr).
 *
 * Problem: source N(0, I), target N(mu, M) with mu Gaussian and M = A A^T / d + 0.5 I, A Gaussian.
 *   (a) build: fv_field_build(FV_FIELD_OT) against its floor, one bare LAPACKE_dsyevd of M.
 *   (b) eval:  fv_field_eval_times at n points and nt times against its floor, the flops of the
 *       (nt + 1) n x d x d matrix products (one shared V^T x, one per t) at the dgemm rate of a
 *       large square product, measured just before and just after each evaluation. Also a breakdown of (b) into its phases, replicating
 *       field.c's symmetric path with the same BLAS calls, and a check of the timed output against
 *       a straightforward evaluation: v = mu + Theta (I + t Theta)^{-1} (x - t mu) with
 *       Theta = M^{1/2} - I formed from the floor's own dsyevd and one LU solve (dgesv) per t.
 *
 * Usage: bench_field [--dims 50,784,3072] [--n 10000] [--nt 10] [--rate-size 3072]
 * Rows: "meta KEY VALUE", "time IMPL PART D REPS MEDIAN_S MIN_S", "rate IMPL D SIZE RUNS
 * MEDIAN_GFLOPS MAX_GFLOPS" (IMPL floor: every dgemm run around part (b) at D; floor_before,
 * floor_after: the first 3, the last 3), "pair flowvar|breakdown D REP TIME_S GFLOPS" (one
 * evaluation, or the sum of the phases of one breakdown, and the dgemm rate measured around it),
 * "pair build D REP BUILD_S DSYEVD_S" (one build and the dsyevd run next to it), "check D
 * TIMES_CHECKED ROWS MAX_REL_ERR ok|FAIL". */
#include "core/error.h"
#include "core/rng.h"
#include "gaussian/field.h"
#include "gaussian/problem.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_DIMS 16
#define MAX_REPS 32
#define CHECK_ROWS 8
#define CHECK_TOL 1e-9

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median and minimum of t[0..n), n >= 1 (t is sorted in place). */
static double median(double *t, size_t n, double *min)
{
    qsort(t, n, sizeof *t, cmp_double);
    *min = t[0];
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "bench_field: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    /* Zero it and touch every page now, outside any timed region. The memset alone is not enough:
     * GCC turns malloc + memset(0) into calloc, which leaves fresh pages unmapped until their first
     * write (a page fault each, seconds over the 2.4 GB output at d = 3072). */
    memset(p, 0, bytes);
    for (size_t i = 0; i < bytes; i += 4096)
        ((volatile char *)p)[i] = 0;
    return p;
}

static void die_fv(const char *what, int st)
{
    fprintf(stderr, "bench_field: %s failed (%s): %s\n", what, fv_status_name(st), fv_last_error());
    exit(1);
}

static void print_time(const char *impl, const char *part, size_t d, double *t, size_t reps)
{
    double mn, med = median(t, reps, &mn);
    printf("time\t%s\t%s\t%zu\t%zu\t%.6g\t%.6g\n", impl, part, d, reps, med, mn);
    fflush(stdout);
}

/* Repetitions: many where a run is cheap, few at the largest sizes (a dsyevd at d = 3072 takes
 * seconds, an evaluation at 10^4 points and 10 times tens of seconds on two cores). */
static size_t build_reps(size_t d) { return d <= 100 ? 31 : d <= 1000 ? 9 : 5; }
static size_t eval_reps(size_t d) { return d <= 100 ? 21 : d <= 1000 ? 3 : 2; }

/* The target covariance M = A A^T / d + 0.5 I (exactly symmetric) and mean mu. */
static void make_problem(fv_problem *p, size_t d)
{
    int st;
    if ((st = fv_problem_alloc(p, d)))
        die_fv("fv_problem_alloc", st);
    fv_rng r = fv_rng_make(20240601u, d);
    fv_rng_normal(&r, d, p->m1);
    double *A = xmalloc(d * d * sizeof *A);
    fv_rng_normal(&r, d * d, A);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)d, (int)d, 1.0 / (double)d, A, (int)d, 0.0, p->S1,
                (int)d);
    for (size_t i = 0; i < d; i++) {
        p->S1[i * d + i] += 0.5;
        for (size_t j = i + 1; j < d; j++)
            p->S1[j * d + i] = p->S1[i * d + j];
    }
    free(A);
    if ((st = fv_problem_validate(p)))
        die_fv("fv_problem_validate", st);
}

/* (a) fv_field_build against one bare dsyevd of M, interleaved so that drifts in machine speed hit
 * both alike. On return E (column-major eigenvectors of M) and w (eigenvalues) hold the floor's last
 * result, for the check of part (b). */
static void bench_build(const fv_problem *p, double *E, double *w)
{
    size_t d = p->d, reps = build_reps(d);
    double tb[MAX_REPS], tf[MAX_REPS];
    fv_field f;
    int st;
    if (d <= 1000) { /* warm-up: thread pool, page cache, LAPACK workspaces */
        if ((st = fv_field_build(&f, p, FV_FIELD_OT)))
            die_fv("fv_field_build", st);
        fv_field_free(&f);
    }
    for (size_t r = 0; r < reps; r++) {
        double t0 = now();
        st = fv_field_build(&f, p, FV_FIELD_OT);
        tb[r] = now() - t0;
        if (st)
            die_fv("fv_field_build", st);
        fv_field_free(&f);

        memcpy(E, p->S1, d * d * sizeof *E);
        t0 = now();
        lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'U', (lapack_int)d, E, (lapack_int)d, w);
        tf[r] = now() - t0;
        if (info != 0) {
            fprintf(stderr, "bench_field: dsyevd failed, info = %d\n", (int)info);
            exit(1);
        }
    }
    for (size_t r = 0; r < reps; r++)
        printf("pair\tbuild\t%zu\t%zu\t%.6g\t%.6g\n", d, r, tb[r], tf[r]);
    print_time("flowvar", "build", d, tb, reps);
    print_time("floor", "dsyevd", d, tf, reps);
}

/* The square product whose dgemm rate sets the floor of part (b): A B into C, all size x size. */
typedef struct {
    size_t size;
    double *A, *B, *C;
} square;

static void square_alloc(square *q, size_t size)
{
    q->size = size;
    q->A = xmalloc(size * size * sizeof *q->A);
    q->B = xmalloc(size * size * sizeof *q->B);
    q->C = xmalloc(size * size * sizeof *q->C);
    fv_rng r = fv_rng_make(7u, 0u);
    fv_rng_normal(&r, size * size, q->A);
    fv_rng_normal(&r, size * size, q->B);
    int s = (int)size;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s, s, s, 1.0, q->A, s, q->B, s, 0.0, q->C, s); /* warm-up */
}

static void square_free(square *q)
{
    free(q->A);
    free(q->B);
    free(q->C);
}

/* One timed run of the square product, in GFLOP/s. */
static double square_rate(const square *q)
{
    int s = (int)q->size;
    double t0 = now();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s, s, s, 1.0, q->A, s, q->B, s, 0.0, q->C, s);
    return 2.0 * (double)q->size * (double)q->size * (double)q->size / (now() - t0) / 1e9;
}

/* A block of 3 runs, each rate appended to g[*ng]. Measured around the evaluations of part (b):
 * this machine's speed drifts by up to 2x from one minute to the next (a shared host), and the floor
 * should see the same machine as the run. */
static void bench_rate(const square *q, double *g, size_t *ng)
{
    for (int k = 0; k < 3; k++)
        g[(*ng)++] = square_rate(q);
}

static void print_rate(const char *impl, size_t d, size_t size, double *g, size_t ng)
{
    double mn, med = median(g, ng, &mn);
    printf("rate\t%s\t%zu\t%zu\t%zu\t%.6g\t%.6g\n", impl, d, size, ng, med, g[ng - 1]);
    fflush(stdout);
}

/* The phases of field.c's symmetric evaluation, timed one by one with the same BLAS calls: the
 * shared product Y = X V, and for one time t: the elementwise Z = (Y - off) * scale, filling the
 * output rows with b, and the product out += Z V^T. Each repetition sits between two runs of the
 * square product (where there are at most 3; else the runs go before and after all of them), so
 * the sum of its phases (shared + nt per-t) can be set against the floor at a rate measured
 * seconds, not a minute, away: "pair breakdown D REP PHASES_S GFLOPS". */
static void bench_breakdown(const fv_field *f, size_t n, size_t nt, const double *X, double t, double *out,
                            fv_field_work *w, const square *q)
{
    size_t d = f->d, reps = eval_reps(d);
    int di = (int)d, ni = (int)n;
    double ts[4][MAX_REPS];
    double *scale = xmalloc(d * sizeof *scale), *off = xmalloc(d * sizeof *off);
    for (size_t j = 0; j < d; j++) { /* m0 = 0 here: off = V^T m0 + t V^T b = t Vb */
        scale[j] = f->l[j] / (1.0 + t * f->l[j]);
        off[j] = t * f->Vb[j];
    }
    int paired = reps <= 3; /* else one run of the square product before all, one after all */
    double g[MAX_REPS + 1], pred[MAX_REPS];
    size_t ng = 0;
    g[ng++] = square_rate(q);
    for (size_t r = 0; r < reps; r++) {
        double t0 = now();
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, di, di, 1.0, X, di, f->V, di, 0.0, w->Y, di);
        double t1 = now();
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < d; j++)
                w->Z[i * d + j] = (w->Y[i * d + j] - off[j]) * scale[j];
        double t2 = now();
        for (size_t i = 0; i < n; i++)
            memcpy(out + i * d, f->b, d * sizeof *out);
        double t3 = now();
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, di, di, 1.0, w->Z, di, f->V, di, 1.0, out, di);
        double t4 = now();
        ts[0][r] = t1 - t0;
        ts[1][r] = t2 - t1;
        ts[2][r] = t3 - t2;
        ts[3][r] = t4 - t3;
        pred[r] = ts[0][r] + (double)nt * (t4 - t1);
        if (paired || r + 1 == reps)
            g[ng++] = square_rate(q);
    }
    for (size_t r = 0; r < reps; r++)
        printf("pair\tbreakdown\t%zu\t%zu\t%.6g\t%.6g\n", d, r, pred[r],
               paired ? 0.5 * (g[r] + g[r + 1]) : 0.5 * (g[0] + g[ng - 1]));
    print_time("breakdown", "shared_gemm", d, ts[0], reps);
    print_time("breakdown", "t_elementwise", d, ts[1], reps);
    print_time("breakdown", "t_fill", d, ts[2], reps);
    print_time("breakdown", "t_gemm", d, ts[3], reps);
    free(scale);
    free(off);
}

/* Check rows of the timed output against v = mu + Theta (I + t Theta)^{-1} (x - t mu), Theta =
 * E diag(sqrt(w) - 1) E^T from the floor's dsyevd (E column-major) and an LU solve per time. */
static void check_eval(const fv_problem *p, const double *E, const double *w, size_t nt, const double *tgrid,
                       size_t n, const double *X, const double *out)
{
    size_t d = p->d, rows[CHECK_ROWS], nchk = 0, tchk[64];
    int di = (int)d;
    double *Th = xmalloc(d * d * sizeof *Th), *SE = xmalloc(d * d * sizeof *SE), *Am = xmalloc(d * d * sizeof *Am);
    double *U = xmalloc(d * CHECK_ROWS * sizeof *U), *Vv = xmalloc(d * CHECK_ROWS * sizeof *Vv);
    lapack_int *piv = xmalloc(d * sizeof *piv);
    /* E read row-major is E^T (row j = eigenvector j): Theta = (E^T)^T diag(s) E^T */
    for (size_t j = 0; j < d; j++)
        for (size_t i = 0; i < d; i++)
            SE[j * d + i] = (sqrt(w[j]) - 1.0) * E[j * d + i];
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, di, di, di, 1.0, E, di, SE, di, 0.0, Th, di);
    fv_rng r = fv_rng_make(99u, d);
    for (size_t k = 0; k < CHECK_ROWS; k++) {
        double u;
        fv_rng_uniform(&r, 1, &u);
        rows[k] = k == 0 ? 0 : k == 1 ? n - 1 : (size_t)(u * (double)n) % n;
    }
    if (d <= 1000 || nt <= 3)
        for (size_t k = 0; k < nt && nchk < 64; k++)
            tchk[nchk++] = k;
    else { /* an LU per time costs ~1 s at d = 3072: check the first, a middle and the last time */
        tchk[nchk++] = 0;
        tchk[nchk++] = nt / 2;
        tchk[nchk++] = nt - 1;
    }
    double maxrel = 0.0;
    for (size_t c = 0; c < nchk; c++) {
        size_t k = tchk[c];
        double t = tgrid[k];
        for (size_t i = 0; i < d * d; i++)
            Am[i] = t * Th[i];
        for (size_t i = 0; i < d; i++)
            Am[i * d + i] += 1.0;
        for (size_t q = 0; q < CHECK_ROWS; q++) /* U: d x CHECK_ROWS, column q = x_rows[q] - t mu */
            for (size_t i = 0; i < d; i++)
                U[i * CHECK_ROWS + q] = X[rows[q] * d + i] - t * p->m1[i];
        lapack_int info = LAPACKE_dgesv(LAPACK_ROW_MAJOR, di, CHECK_ROWS, Am, di, piv, U, CHECK_ROWS);
        if (info != 0) {
            fprintf(stderr, "bench_field: check: dgesv failed, info = %d\n", (int)info);
            exit(1);
        }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, di, CHECK_ROWS, di, 1.0, Th, di, U, CHECK_ROWS, 0.0,
                    Vv, CHECK_ROWS);
        for (size_t q = 0; q < CHECK_ROWS; q++) {
            double scale = 0.0, err = 0.0;
            const double *o = out + (k * n + rows[q]) * d;
            for (size_t i = 0; i < d; i++) {
                double ref = p->m1[i] + Vv[i * CHECK_ROWS + q];
                scale = fmax(scale, fabs(ref));
                err = fmax(err, fabs(o[i] - ref));
            }
            maxrel = fmax(maxrel, err / scale);
        }
    }
    int ok = maxrel <= CHECK_TOL;
    printf("check\t%zu\t%zu\t%d\t%.3g\t%s\n", d, nchk, CHECK_ROWS, maxrel, ok ? "ok" : "FAIL");
    fflush(stdout);
    free(Th);
    free(SE);
    free(Am);
    free(U);
    free(Vv);
    free(piv);
    if (!ok) {
        fprintf(stderr, "bench_field: d = %zu: output differs from the LU evaluation by %.3g (relative)\n", d, maxrel);
        exit(1);
    }
}

/* (b) fv_field_eval_times at n points and nt times between two measurements of the dgemm rate,
 * then the check and the phase breakdown. */
static void bench_eval(const fv_problem *p, const double *E, const double *w, size_t n, size_t nt,
                       const double *tgrid, const square *q)
{
    size_t d = p->d, reps = eval_reps(d);
    fv_field f;
    fv_field_work wk;
    int st;
    if ((st = fv_field_build(&f, p, FV_FIELD_OT)))
        die_fv("fv_field_build", st);
    if ((st = fv_field_work_alloc(&wk, d, n)))
        die_fv("fv_field_work_alloc", st);
    memset(wk.Y, 0, n * d * sizeof *wk.Y); /* first touch outside the timed region (these were */
    memset(wk.Z, 0, n * d * sizeof *wk.Z); /* malloc'd in another file: no calloc rewrite here) */
    double *X = xmalloc(n * d * sizeof *X), *out = xmalloc(nt * n * d * sizeof *out);
    fv_rng r = fv_rng_make(20240602u, d);
    fv_rng_normal(&r, n * d, X); /* points drawn from the source N(0, I) */
    if (d <= 100 && (st = fv_field_eval_times(&f, nt, tgrid, n, X, out, &wk))) /* warm-up */
        die_fv("fv_field_eval_times", st);
    /* Rate blocks of 3 dgemm runs: before the first repetition and after each one where there are
     * few (each repetition then has its own pair of blocks around it), else before and after all.
     * Each repetition's time is printed with the mean of the medians of its two blocks. */
    int paired = reps <= 3;
    double te[MAX_REPS], g[3 * (MAX_REPS + 1)], around[MAX_REPS], blk[MAX_REPS + 1], tmp[3], mn;
    size_t ng = 0, nblk = 0;
    bench_rate(q, g, &ng);
    memcpy(tmp, g, sizeof tmp);
    blk[nblk++] = median(tmp, 3, &mn);
    for (size_t k = 0; k < reps; k++) {
        double t0 = now();
        st = fv_field_eval_times(&f, nt, tgrid, n, X, out, &wk);
        te[k] = now() - t0;
        if (st)
            die_fv("fv_field_eval_times", st);
        if (paired || k + 1 == reps) {
            bench_rate(q, g, &ng);
            memcpy(tmp, g + ng - 3, sizeof tmp);
            blk[nblk++] = median(tmp, 3, &mn);
        }
    }
    for (size_t k = 0; k < reps; k++) {
        around[k] = paired ? 0.5 * (blk[k] + blk[k + 1]) : 0.5 * (blk[0] + blk[nblk - 1]);
        printf("pair\tflowvar\t%zu\t%zu\t%.6g\t%.6g\n", d, k, te[k], around[k]);
    }
    double gb[3], ga[3];
    memcpy(gb, g, sizeof gb);
    memcpy(ga, g + ng - 3, sizeof ga);
    print_time("flowvar", "eval", d, te, reps);
    print_rate("floor", d, q->size, g, ng);
    print_rate("floor_before", d, q->size, gb, 3);
    print_rate("floor_after", d, q->size, ga, 3);
    check_eval(p, E, w, nt, tgrid, n, X, out); /* before the breakdown overwrites out[0] */
    bench_breakdown(&f, n, nt, X, tgrid[nt / 2], out, &wk, q);
    free(X);
    free(out);
    fv_field_work_free(&wk);
    fv_field_free(&f);
}

static size_t parse_size(const char *s, const char *flag)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v == 0) {
        fprintf(stderr, "bench_field: %s wants a positive integer, got '%s'\n", flag, s);
        exit(2);
    }
    return (size_t)v;
}

int main(int argc, char **argv)
{
    size_t dims[MAX_DIMS] = {50, 784, 3072}, ndims = 3, n = 10000, nt = 10, rate_size = 3072;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) {
            fprintf(stderr, "usage: bench_field [--dims 50,784,3072] [--n 10000] [--nt 10] [--rate-size 3072]\n");
            return 2;
        }
        if (!strcmp(argv[i], "--dims")) {
            char buf[256], *save = NULL;
            snprintf(buf, sizeof buf, "%s", argv[++i]);
            ndims = 0;
            for (char *tok = strtok_r(buf, ", ", &save); tok && ndims < MAX_DIMS; tok = strtok_r(NULL, ", ", &save))
                dims[ndims++] = parse_size(tok, "--dims");
        } else if (!strcmp(argv[i], "--n"))
            n = parse_size(argv[++i], "--n");
        else if (!strcmp(argv[i], "--nt"))
            nt = parse_size(argv[++i], "--nt");
        else if (!strcmp(argv[i], "--rate-size"))
            rate_size = parse_size(argv[++i], "--rate-size");
        else {
            fprintf(stderr, "bench_field: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (nt < 2 || nt > 64) {
        fprintf(stderr, "bench_field: --nt must be in [2, 64]\n");
        return 2;
    }
    double tgrid[64];
    for (size_t k = 0; k < nt; k++)
        tgrid[k] = (double)k / (double)(nt - 1);
    const char *env = getenv("OPENBLAS_NUM_THREADS");
    printf("meta\topenblas_config\t%s\n", openblas_get_config());
    printf("meta\topenblas_corename\t%s\n", openblas_get_corename());
    printf("meta\tblas_threads\t%d\n", openblas_get_num_threads());
    printf("meta\tOPENBLAS_NUM_THREADS\t%s\n", env ? env : "(unset)");
    printf("meta\tn\t%zu\nmeta\tnt\t%zu\n", n, nt);
    fflush(stdout);

    square q;
    square_alloc(&q, rate_size);
    for (size_t i = 0; i < ndims; i++) {
        size_t d = dims[i];
        fprintf(stderr, "bench_field: d = %zu: build\n", d);
        fv_problem p;
        make_problem(&p, d);
        double *E = xmalloc(d * d * sizeof *E), *w = xmalloc(d * sizeof *w);
        bench_build(&p, E, w);
        fprintf(stderr, "bench_field: d = %zu: eval at %zu points, %zu times\n", d, n, nt);
        bench_eval(&p, E, w, n, nt, tgrid, &q);
        free(E);
        free(w);
        fv_problem_free(&p);
    }
    square_free(&q);
    return 0;
}
