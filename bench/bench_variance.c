/* bench_variance.c: the exact gradient variance (gaussian/variance.h) against its Monte-Carlo twin,
 * timed in one process; prints markdown tables on stdout (progress on stderr). Issue "exact gradient
 * variance": exact variance at d = 50 for 100 times t must take less time than a Monte-Carlo estimate
 * with 10^4 samples; the exact-vs-MC speed ratio for equal accuracy at d = 2, 50, 784.
 *
 * Problem per d: standard source, target N(mu, M) with M = fv_random_spd(d, 0.5) (A A^T / d + 0.5 I)
 * and mu Gaussian, the 120-degree block-rotation coupling (fv_rotation_blocks), sigma = 0.05,
 * constant schedule. Fields: OT (Lemma 1) and the coupling's pair-optimal rotation field.
 *
 * Timed: (a) fv_variance_at at one t (t = 0.5); a loop of fv_variance_at at 100 times
 * t = k/99; fv_variance_at_times at the same 100 times; (b) fv_variance_integrated (epsrel 1e-8);
 * (c) fv_variance_mc at t = 0.5 and with t ~ U(0,1), MC_N samples (fewer where one sample is slow:
 * given per row; their cost per sample is extrapolated). MC cost is modelled as setup + n x per-sample:
 * setup = a run with the minimum 4 samples, per-sample = (T(n) - T(4)) / (n - 4).
 *
 * "Equal accuracy": the exact values are accurate to rounding (one t) or to epsrel 1e-8 (integrated),
 * which Monte Carlo cannot reach in any affordable time, so MC is charged for 1 % relative standard
 * error: n_1% = n (se / (0.01 value))^2 from its measured batch-means se, time_1% = setup + n_1% x
 * per-sample; the tables give time_1% / exact time, and the plain ratio at 10^4 samples.
 *
 * Checks before anything is reported: each MC estimate within 4 standard errors of the exact value
 * (fixed t: fv_variance_at at 0.5; random t: fv_variance_integrated), the loop of fv_variance_at
 * equal to fv_variance_at_times to 1e-10 relative. A failed check prints the mismatch and exits 1.
 *
 * Usage: bench_variance [--dims 2,50,784] [--mc-n 10000] [--budget SECONDS per timed item] */
#include "core/error.h"
#include "core/rng.h"
#include "gaussian/problem.h"
#include "gaussian/variance.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_DIMS 8
#define MAX_REPS 41
#define NT 100
#define T_FIXED 0.5
#define SEED 20251021ULL

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

static void die(const char *what, int st)
{
    fprintf(stderr, "bench_variance: %s failed: %s: %s\n", what, fv_status_name(st), fv_last_error());
    exit(1);
}

/* ---- the timed calls ------------------------------------------------------------------------- */

typedef enum { JOB_AT1, JOB_AT_LOOP, JOB_AT_TIMES, JOB_INTEGRATED, JOB_MC } job_kind;

typedef struct {
    job_kind kind;
    const fv_problem *p;
    const fv_vfield *f;
    const double *ts;
    double t_mc;     /* JOB_MC: t, or -1 for t ~ U(0,1) */
    size_t n;        /* JOB_MC: samples */
    size_t stride;   /* JOB_AT_LOOP: every stride-th of the NT times */
    fv_var var[NT];  /* results of the last run */
    fv_mc mc;
    double abserr;
} job;

static void run_job(job *j)
{
    int st = FV_OK;
    switch (j->kind) {
    case JOB_AT1:
        st = fv_variance_at(j->p, j->f, T_FIXED, &j->var[0], NULL, NULL);
        break;
    case JOB_AT_LOOP:
        for (size_t k = 0; k < NT && !st; k += j->stride)
            st = fv_variance_at(j->p, j->f, j->ts[k], &j->var[k], NULL, NULL);
        break;
    case JOB_AT_TIMES:
        st = fv_variance_at_times(j->p, j->f, NT, j->ts, j->var);
        break;
    case JOB_INTEGRATED:
        st = fv_variance_integrated(j->p, j->f, 1e-8, &j->var[0], &j->abserr);
        break;
    case JOB_MC:
        st = fv_variance_mc(j->p, j->f, j->t_mc, j->n, SEED, 7, &j->mc);
        break;
    }
    if (st)
        die("a timed call", st);
}

/* Median time of a job: one first run (timed; it is the only run when it takes more than half the
 * budget), then as many more as fit the budget (at least 2, at most MAX_REPS), whose median is taken. */
typedef struct {
    double median, min;
    int reps;
} timing;

static timing time_job(job *j, double budget)
{
    timing r;
    double t0 = now();
    run_job(j);
    double first = now() - t0;
    if (first > 0.5 * budget) {
        r.median = r.min = first;
        r.reps = 1;
        return r;
    }
    int reps = first > 0 ? (int)(budget / first) : MAX_REPS;
    reps = reps < 2 ? 2 : reps > MAX_REPS ? MAX_REPS : reps;
    double t[MAX_REPS];
    for (int i = 0; i < reps; i++) {
        t0 = now();
        run_job(j);
        t[i] = now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    r.median = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    r.min = t[0];
    r.reps = reps;
    return r;
}

/* ---- formatting ------------------------------------------------------------------------------ */

static const char *fmt_time(double s, char *buf)
{
    if (s < 1e-3)
        snprintf(buf, 32, "%.1f us", s * 1e6);
    else if (s < 1.0)
        snprintf(buf, 32, "%.2f ms", s * 1e3);
    else if (s < 3600.0)
        snprintf(buf, 32, "%.2f s", s);
    else
        snprintf(buf, 32, "%.1f h", s / 3600.0);
    return buf;
}

static const char *fmt_ratio(double x, char *buf)
{
    if (x >= 1e4)
        snprintf(buf, 32, "%.2ex", x);
    else if (x >= 10)
        snprintf(buf, 32, "%.0fx", x);
    else
        snprintf(buf, 32, "%.2fx", x);
    return buf;
}

/* ---- one (d, field) -------------------------------------------------------------------------- */

typedef struct {
    size_t d;
    const char *field;
    double exact_fixed, exact_int, int_abserr;
    timing at1, loop, times, integ, mc_setup_f, mc_setup_r, mc_f, mc_r;
    fv_mc mcf, mcr;
    size_t nf, nr, stride;
} result;

/* MC accounting: per-sample cost, time for 1 % relative SE, time at 10^4 samples. */
typedef struct {
    double per_sample, n1, t1, t1e4, rel_se;
} mc_cost;

static mc_cost mc_model(const timing *setup, const timing *run, const fv_mc *mc, size_t n)
{
    mc_cost c;
    double dt = run->median - setup->median;
    c.per_sample = (dt > 0 ? dt : run->median) / (double)(n - 4);
    c.rel_se = mc->se_total / fabs(mc->var_total);
    c.n1 = (double)n * (c.rel_se / 0.01) * (c.rel_se / 0.01);
    c.t1 = setup->median + c.n1 * c.per_sample;
    c.t1e4 = setup->median + 1e4 * c.per_sample;
    return c;
}

static int check_mc(const char *what, size_t d, const char *field, double exact, const fv_mc *mc)
{
    double z = (mc->var_total - exact) / mc->se_total;
    int ok = fabs(z) <= 4.0;
    fprintf(stderr, "  check d=%zu %s %s: exact %.10g, MC %.10g +- %.3g (%.2f SE) %s\n", d, field, what, exact,
            mc->var_total, mc->se_total, z, ok ? "ok" : "FAIL");
    return ok;
}

static void bench_one(size_t d, const fv_problem *p, fv_vfield_kind kind, size_t mc_n, size_t mc_n_random,
                      size_t loop_stride, double budget, result *R)
{
    static double ts[NT];
    for (size_t k = 0; k < NT; k++)
        ts[k] = (double)k / (NT - 1);
    fv_vfield f = {kind, NULL, NULL};
    memset(R, 0, sizeof *R);
    R->d = d;
    R->field = kind == FV_VFIELD_OT ? "OT" : "rotation";
    job *j = calloc(1, sizeof *j);
    if (!j)
        die("allocation", FV_ENOMEM);
    j->p = p;
    j->f = &f;
    j->ts = ts;

    fprintf(stderr, "d = %zu, %s field\n", d, R->field);
    /* (a) */
    j->kind = JOB_AT1;
    R->at1 = time_job(j, budget);
    R->exact_fixed = j->var[0].var_total;
    j->kind = JOB_AT_LOOP;
    j->stride = R->stride = loop_stride;
    R->loop = time_job(j, budget);
    R->loop.median *= (double)loop_stride; /* extrapolated to all NT times */
    R->loop.min *= (double)loop_stride;
    double loop_vals[NT];
    for (size_t k = 0; k < NT; k += loop_stride)
        loop_vals[k] = j->var[k].var_total;
    j->kind = JOB_AT_TIMES;
    R->times = time_job(j, budget);
    for (size_t k = 0; k < NT; k += loop_stride) {
        double a = loop_vals[k], b = j->var[k].var_total;
        if (fabs(a - b) > 1e-10 * fmax(fabs(a), 1e-300) + 1e-300) {
            fprintf(stderr, "bench_variance: check FAILED: d=%zu %s t=%g: fv_variance_at %.17g, "
                            "fv_variance_at_times %.17g\n", d, R->field, ts[k], a, b);
            exit(1);
        }
    }
    /* (b) */
    j->kind = JOB_INTEGRATED;
    R->integ = time_job(j, budget);
    R->exact_int = j->var[0].var_total;
    R->int_abserr = j->abserr;
    /* (c) */
    j->kind = JOB_MC;
    j->n = 4;
    j->t_mc = T_FIXED;
    R->mc_setup_f = time_job(j, budget);
    j->t_mc = -1;
    R->mc_setup_r = time_job(j, budget);
    j->t_mc = T_FIXED;
    j->n = R->nf = mc_n;
    R->mc_f = time_job(j, budget);
    R->mcf = j->mc;
    j->t_mc = -1;
    j->n = R->nr = mc_n_random;
    R->mc_r = time_job(j, budget);
    R->mcr = j->mc;
    free(j);
    int ok = check_mc("t = 0.5", d, R->field, R->exact_fixed, &R->mcf);
    ok &= check_mc("t ~ U(0,1)", d, R->field, R->exact_int, &R->mcr);
    if (!ok) {
        fprintf(stderr, "bench_variance: check FAILED: an MC estimate is more than 4 SE from the exact value; "
                        "no timings reported\n");
        exit(1);
    }
}

static int parse_dims(const char *s, size_t *dims)
{
    int n = 0;
    while (*s && n < MAX_DIMS) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || v == 0)
            return -1;
        dims[n++] = v;
        s = end;
        while (*s == ',' || *s == ' ')
            s++;
    }
    return n;
}

int main(int argc, char **argv)
{
    size_t dims[MAX_DIMS] = {2, 50, 784};
    int nd = 3;
    size_t mc_n = 10000;
    double budget = 1.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dims") && i + 1 < argc) {
            if ((nd = parse_dims(argv[++i], dims)) <= 0) {
                fprintf(stderr, "bench_variance: bad --dims\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--mc-n") && i + 1 < argc) {
            mc_n = strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--budget") && i + 1 < argc) {
            budget = atof(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_variance [--dims 2,50,784] [--mc-n 10000] [--budget S]\n");
            return 2;
        }
    }
    if (mc_n < 200) {
        fprintf(stderr, "bench_variance: --mc-n must be >= 200\n");
        return 2;
    }

    result res[2 * MAX_DIMS];
    int nres = 0;
    double t_start = now();
    for (int k = 0; k < nd; k++) {
        size_t d = dims[k];
        fv_problem p;
        int st = fv_problem_alloc(&p, d);
        if (st)
            die("fv_problem_alloc", st);
        fv_rng r = fv_rng_make(SEED, 100 + d);
        fv_random_spd(d, 0.5, &r, p.S1);
        fv_rng_normal(&r, d, p.m1);
        p.coupling = FV_COUPLING_ROTATION;
        if (!(p.R = malloc(d * d * sizeof *p.R)))
            die("allocation", FV_ENOMEM);
        fv_rotation_blocks(d, 120.0, p.R);
        p.sigma = 0.05;
        if ((st = fv_problem_validate(&p)))
            die("fv_problem_validate", st);
        /* At d = 784 one MC sample with t ~ U(0,1) factors a 784 x 784 matrix (and at fixed t touches the
         * d^2 gradient entries), and one fv_variance_at call takes most of a second: fewer MC samples
         * there, per-sample cost extrapolated, and the loop over 100 times runs every 10th time, x 10. */
        int big = d >= 500;
        size_t nf = big ? mc_n / 10 : mc_n, nr = big ? mc_n / 50 : mc_n, stride = big ? 10 : 1;
        for (int fk = 0; fk < 2; fk++)
            bench_one(d, &p, fk ? FV_VFIELD_ROTATION : FV_VFIELD_OT, nf, nr, stride, budget, &res[nres++]);
        fv_problem_free(&p);
    }
    double wall = now() - t_start;

    char a[32], b[32], c[32], e[32], g[32], h[32];
    printf("- OpenBLAS: %s, %d threads; wall time of bench_variance %.0f s.\n\n", openblas_get_config(),
           openblas_get_num_threads(), wall);

    printf("#### Values and checks\n\n");
    printf("| d | field | exact at t = 0.5 | MC at t = 0.5 (n) | z | exact integrated (abserr) | MC t ~ U(0,1) (n) "
           "| z |\n|---:|:---|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < nres; i++) {
        result *R = &res[i];
        printf("| %zu | %s | %.8g | %.5g +- %.2g (%zu) | %+.2f | %.10g (%.1e) | %.5g +- %.2g (%zu) | %+.2f |\n",
               R->d, R->field, R->exact_fixed, R->mcf.var_total, R->mcf.se_total, R->nf,
               (R->mcf.var_total - R->exact_fixed) / R->mcf.se_total, R->exact_int, R->int_abserr,
               R->mcr.var_total, R->mcr.se_total, R->nr, (R->mcr.var_total - R->exact_int) / R->mcr.se_total);
    }

    printf("\n#### Exact: times (median of reps)\n\n");
    printf("| d | field | fv_variance_at, one t | 100 t, loop of fv_variance_at | 100 t, fv_variance_at_times "
           "| fv_variance_integrated (epsrel 1e-8) |\n|---:|:---|---:|---:|---:|---:|\n");
    for (int i = 0; i < nres; i++) {
        result *R = &res[i];
        char note[48] = "";
        if (R->stride > 1)
            snprintf(note, sizeof note, ", %zu of the t, x %zu", NT / R->stride, R->stride);
        printf("| %zu | %s | %s (%d) | %s (%d%s) | %s (%d) | %s (%d) |\n", R->d, R->field,
               fmt_time(R->at1.median, a), R->at1.reps, fmt_time(R->loop.median, b), R->loop.reps, note,
               fmt_time(R->times.median, c), R->times.reps, fmt_time(R->integ.median, e), R->integ.reps);
    }

    printf("\n#### Monte Carlo at t = 0.5 against the exact value at one t\n\n");
    printf("| d | field | MC n (time) | per sample | rel. SE at n | n for 1 %% SE | MC time to 1 %% | "
           "exact, one t | MC to 1 %% / exact | MC 10^4 / exact |\n"
           "|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < nres; i++) {
        result *R = &res[i];
        mc_cost m = mc_model(&R->mc_setup_f, &R->mc_f, &R->mcf, R->nf);
        printf("| %zu | %s | %zu (%s) | %s | %.2g | %.3g | %s | %s | %s | %s |\n", R->d, R->field, R->nf,
               fmt_time(R->mc_f.median, a), fmt_time(m.per_sample, b), m.rel_se, m.n1, fmt_time(m.t1, c),
               fmt_time(R->at1.median, e), fmt_ratio(m.t1 / R->at1.median, g),
               fmt_ratio(m.t1e4 / R->at1.median, h));
    }

    printf("\n#### Monte Carlo with t ~ U(0,1) against the exact integrated value\n\n");
    printf("| d | field | MC n (time) | per sample | rel. SE at n | n for 1 %% SE | MC time to 1 %% | "
           "exact integrated | MC to 1 %% / exact | MC 10^4 / exact |\n"
           "|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < nres; i++) {
        result *R = &res[i];
        mc_cost m = mc_model(&R->mc_setup_r, &R->mc_r, &R->mcr, R->nr);
        printf("| %zu | %s | %zu (%s) | %s | %.2g | %.3g | %s | %s | %s | %s |\n", R->d, R->field, R->nr,
               fmt_time(R->mc_r.median, a), fmt_time(m.per_sample, b), m.rel_se, m.n1, fmt_time(m.t1, c),
               fmt_time(R->integ.median, e), fmt_ratio(m.t1 / R->integ.median, g),
               fmt_ratio(m.t1e4 / R->integ.median, h));
    }

    printf("\n#### Requirement: exact at d = 50 for 100 times < one MC estimate with 10^4 samples\n\n");
    printf("| field | exact, 100 t: loop of fv_variance_at | exact, 100 t: fv_variance_at_times | MC 10^4 at t = 0.5 "
           "| MC 10^4, t ~ U(0,1) | met (by the loop, against the cheaper MC) |\n|:---|---:|---:|---:|---:|:---|\n");
    int found = 0;
    for (int i = 0; i < nres; i++) {
        result *R = &res[i];
        if (R->d != 50)
            continue;
        found = 1;
        /* measured directly when the run used 10^4 samples, else the cost model */
        double tf = R->nf == 10000 ? R->mc_f.median : mc_model(&R->mc_setup_f, &R->mc_f, &R->mcf, R->nf).t1e4;
        double tr = R->nr == 10000 ? R->mc_r.median : mc_model(&R->mc_setup_r, &R->mc_r, &R->mcr, R->nr).t1e4;
        double mc_min = fmin(tf, tr);
        printf("| %s | %s | %s | %s | %s | **%s**: %s faster (fv_variance_at_times: %s) |\n", R->field,
               fmt_time(R->loop.median, a), fmt_time(R->times.median, b), fmt_time(tf, c), fmt_time(tr, e),
               R->loop.median < mc_min ? "PASS" : "FAIL", fmt_ratio(mc_min / R->loop.median, g),
               fmt_ratio(mc_min / R->times.median, h));
    }
    if (!found)
        printf("(d = 50 not in this run)\n");
    return 0;
}
