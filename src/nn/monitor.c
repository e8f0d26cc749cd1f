/* monitor.c: the copy criterion by blocked GEMM (see monitor.h). */
#include "nn/monitor.h"

#include "core/error.h"
#include "core/io.h"
#include "core/rng.h"
#include "core/size.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rows of samples and of training points per GEMM block: a 256 x 256 product of doubles (512 KiB)
 * plus one block of training rows in double, whatever the set's size. */
#define BLOCK 256

typedef struct {
    const unsigned char *row;
    size_t bytes, idx;
} row_ref;

/* Byte order of the rows, then their index: equal rows end up together, the lowest index first. */
static int row_cmp(const void *pa, const void *pb)
{
    const row_ref *a = pa, *b = pb;
    int c = memcmp(a->row, b->row, a->bytes);
    return c ? c : (a->idx > b->idx) - (a->idx < b->idx);
}

static double row_value(const fv_copy_set *s, size_t j, size_t k)
{
    return s->yf ? (double)s->yf[j * s->d + k] : s->yd[j * s->d + k];
}

int fv_copy_set_init(fv_copy_set *s, size_t n, size_t d, const float *yf, const double *yd)
{
    int st;
    memset(s, 0, sizeof *s);
    s->n = n;
    s->d = d;
    s->yf = yf;
    s->yd = yf ? NULL : yd;
    row_ref *refs = fv_alloc(&st, "training rows", n, 1, sizeof *refs);
    if (!refs || !(s->sq = fv_alloc(&st, "training rows", n, 1, sizeof *s->sq)) ||
        !(s->first = fv_alloc(&st, "training rows", n, 1, sizeof *s->first))) {
        free(refs);
        fv_copy_set_free(s);
        return st;
    }
    size_t bytes = d * (yf ? sizeof *yf : sizeof *yd);
    for (size_t j = 0; j < n; j++) {
        double q = 0;
        for (size_t k = 0; k < d; k++)
            q += row_value(s, j, k) * row_value(s, j, k);
        s->sq[j] = q;
        refs[j] = (row_ref){yf ? (const unsigned char *)(yf + j * d) : (const unsigned char *)(yd + j * d), bytes, j};
    }
    qsort(refs, n, sizeof *refs, row_cmp);
    for (size_t k = 0; k < n; k++) {
        int dup = k > 0 && memcmp(refs[k].row, refs[k - 1].row, bytes) == 0;
        s->first[refs[k].idx] = dup ? s->first[refs[k - 1].idx] : refs[k].idx;
        s->ndistinct += !dup;
    }
    free(refs);
    if (s->ndistinct < 2) {
        size_t nd = s->ndistinct;
        fv_copy_set_free(s);
        return fv_error(FV_EINPUT, "the training set has %zu distinct point%s: the copy criterion d1/d2 needs a "
                                   "second-nearest training point, so at least 2", nd, nd == 1 ? "" : "s");
    }
    return FV_OK;
}

void fv_copy_set_free(fv_copy_set *s)
{
    free(s->sq);
    free(s->first);
    memset(s, 0, sizeof *s);
}

/* Fold one block of squared distances (rows: samples i0.., columns: training rows j0..) into the
 * running nearest two of each sample. */
static void fold_block(const fv_copy_set *s, size_t i0, size_t bi, size_t j0, size_t bj, const double *dots,
                       const double *xsq, double *b1, double *b2, size_t *j1, size_t *j2)
{
    for (size_t i = 0; i < bi; i++)
        for (size_t j = 0; j < bj; j++) {
            size_t row = j0 + j;
            if (s->first[row] != row) /* a duplicate: its first copy stands for it */
                continue;
            double q = fmax(xsq[i0 + i] + s->sq[row] - 2.0 * dots[i * bj + j], 0.0);
            size_t k = i0 + i;
            if (q < b1[k]) {
                b2[k] = b1[k];
                j2[k] = j1[k];
                b1[k] = q;
                j1[k] = row;
            } else if (q < b2[k]) {
                b2[k] = q;
                j2[k] = row;
            }
        }
}

static double distance(const fv_copy_set *s, const double *x, size_t j)
{
    double q = 0;
    for (size_t k = 0; k < s->d; k++) {
        double e = x[k] - row_value(s, j, k);
        q += e * e;
    }
    return sqrt(q);
}

int fv_copy_nearest(const fv_copy_set *s, size_t m, const double *X, double *d1, double *d2, size_t *near)
{
    size_t d = s->d;
    int st;
    double *ybuf = fv_alloc(&st, "copies: a block of training rows", BLOCK, d, sizeof *ybuf);
    double *dots = ybuf ? fv_alloc(&st, "copies: a block of products", BLOCK, BLOCK, sizeof *dots) : NULL;
    double *xsq = dots ? fv_alloc(&st, "copies: samples", m, 3, sizeof *xsq) : NULL;
    size_t *idx = xsq ? fv_alloc(&st, "copies: samples", m, 2, sizeof *idx) : NULL;
    if (!idx) {
        free(ybuf);
        free(dots);
        free(xsq);
        return st;
    }
    double *b1 = xsq + m, *b2 = b1 + m;
    size_t *j1 = idx, *j2 = idx + m;
    for (size_t i = 0; i < m; i++) {
        double q = 0;
        for (size_t k = 0; k < d; k++)
            q += X[i * d + k] * X[i * d + k];
        xsq[i] = q;
        b1[i] = b2[i] = INFINITY;
        j1[i] = j2[i] = 0;
    }
    for (size_t j0 = 0; j0 < s->n; j0 += BLOCK) {
        size_t bj = s->n - j0 < BLOCK ? s->n - j0 : BLOCK;
        for (size_t j = 0; j < bj; j++)
            for (size_t k = 0; k < d; k++)
                ybuf[j * d + k] = row_value(s, j0 + j, k);
        for (size_t i0 = 0; i0 < m; i0 += BLOCK) {
            size_t bi = m - i0 < BLOCK ? m - i0 : BLOCK;
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bi, (int)bj, (int)d, 1.0, X + i0 * d, (int)d,
                        ybuf, (int)d, 0.0, dots, (int)bj);
            fold_block(s, i0, bi, j0, bj, dots, xsq, b1, b2, j1, j2);
        }
    }
    for (size_t i = 0; i < m; i++) {
        d1[i] = distance(s, X + i * d, j1[i]);
        d2[i] = distance(s, X + i * d, j2[i]);
        if (d2[i] < d1[i]) { /* the exact distances reorder a near tie that rounding had the other way */
            double t = d1[i];
            d1[i] = d2[i];
            d2[i] = t;
            size_t u = j1[i];
            j1[i] = j2[i];
            j2[i] = u;
        }
        if (near)
            near[i] = j1[i];
    }
    free(ybuf);
    free(dots);
    free(xsq);
    free(idx);
    return FV_OK;
}

double fv_copy_ratio(double d1, double d2)
{
    return d2 > 0 ? d1 / d2 : 1.0;
}

void fv_copy_summary(size_t m, const double *d1, const double *d2, double *fraction, double *mean_d1)
{
    size_t copies = 0;
    double s = 0;
    for (size_t i = 0; i < m; i++) {
        copies += fv_copy_ratio(d1[i], d2[i]) < FV_COPY_RATIO;
        s += d1[i];
    }
    *fraction = m ? (double)copies / (double)m : 0.0;
    *mean_d1 = m ? s / (double)m : 0.0;
}

/* ---- the training monitor ---- */

const double fv_monitor_times[FV_MONITOR_NT] = {0.1, 0.5, 0.9};
const char *const fv_monitor_names[FV_MONITOR_COLS] = {"step", "t", "loss", "floor", "excess", "gradvar",
                                                       "copy_fraction"};

/* The monitor's draws: "steps" far above any training step's (cfm.c's streams are 2 step, 2 step + 1),
 * the same at every monitoring step, so that the rows over training differ by the network alone. */
#define MONITOR_STEP(k) ((1ULL << 61) + (k))
#define MONITOR_SOURCES MONITOR_STEP(FV_MONITOR_NT)
#define MONITOR_FLOOR(k) MONITOR_STEP(FV_MONITOR_NT + 1 + (k))
/* Rows of the floor's Monte Carlo per monitored sample. */
#define FLOOR_MC_PER_ROW 16

static int push_row(fv_monitor *mo, const double *row)
{
    if (mo->nrows == mo->cap) {
        size_t cap = mo->cap ? 2 * mo->cap : 64;
        double *r = realloc(mo->rows, cap * FV_MONITOR_COLS * sizeof *r);
        if (!r)
            return fv_error(FV_ENOMEM, "out of memory for the monitor's rows");
        mo->rows = r;
        mo->cap = cap;
    }
    memcpy(mo->rows + mo->nrows++ * FV_MONITOR_COLS, row, FV_MONITOR_COLS * sizeof *row);
    if (row[6] > 0.5)
        mo->warned = 1;
    return FV_OK;
}

/* The rows of an existing monitor.tsv up to step `upto`; none when there is no file. */
static int read_rows(fv_monitor *mo, uint64_t upto)
{
    FILE *fp = fopen(mo->path, "r");
    if (!fp)
        return FV_OK;
    char *line = NULL, header[128] = "";
    size_t cap = 0, lineno = 0;
    int st = FV_OK;
    for (int c = 0; c < FV_MONITOR_COLS; c++)
        snprintf(header + strlen(header), sizeof header - strlen(header), "%s%s", c ? "\t" : "", fv_monitor_names[c]);
    while (!st && getline(&line, &cap, fp) > 0) {
        line[strcspn(line, "\n")] = '\0';
        if (++lineno == 1) {
            if (strcmp(line, header))
                st = fv_error(FV_EINPUT, "%s: line 1 is not the monitor's header '%s'", mo->path, header);
            continue;
        }
        double row[FV_MONITOR_COLS];
        char *p = line, *end;
        for (int c = 0; c < FV_MONITOR_COLS && !st; c++, p = end) {
            row[c] = strtod(p, &end);
            if (end == p || !isfinite(row[c]))
                st = fv_error(FV_EINPUT, "%s: line %zu, column %d: not a finite number", mo->path, lineno, c + 1);
        }
        if (!st && *p)
            st = fv_error(FV_EINPUT, "%s: line %zu: more than %d columns", mo->path, lineno, FV_MONITOR_COLS);
        if (!st && row[0] <= (double)upto)
            st = push_row(mo, row);
    }
    free(line);
    fclose(fp);
    return st;
}

int fv_monitor_init(fv_monitor *mo, fv_trainer *tr, fv_cfm_data *D, size_t n, const float *Y, size_t every, size_t m,
                    uint64_t seed, int use_ema, const char *path, uint64_t resume_step)
{
    size_t d = D->d;
    int st;
    *mo = (fv_monitor){.every = every, .m = m, .seed = seed, .use_ema = use_ema, .tr = tr, .D = D, .path = path};
    if (m < 2)
        return fv_error(FV_EINPUT, "--monitor-n must be at least 2 (the gradient variance needs 2 rows); got %zu", m);
    if ((st = fv_copy_set_init(&mo->set, n, d, Y, NULL)))
        return fv_error_context(st, "--monitor-every: ");
    if ((st = fv_empirical_build_f32(&mo->emp, D->p, FV_EMP_FORWARD, n, Y)) ||
        (st = fv_empirical_work_alloc(&mo->w, &mo->emp, m)))
        goto fail;
    if (!(mo->x0 = fv_alloc(&st, "--monitor-n rows", m, 5 * d + 2, sizeof *mo->x0)) ||
        !(mo->xt = fv_alloc(&st, "--monitor-n rows", m, 3 * d + 1, sizeof *mo->xt)))
        goto fail;
    mo->X = mo->x0 + 2 * m * d;
    mo->V = mo->X + m * d;
    mo->d1 = mo->V + m * d;
    mo->u = mo->xt + m * d;
    mo->v = mo->u + m * d;
    mo->tt = mo->v + m * d;
    for (size_t k = 0; k < FV_MONITOR_NT; k++) {
        fv_rng g = fv_rng_make(seed, MONITOR_FLOOR(k));
        double se;
        if ((st = fv_empirical_floor(&mo->emp, fv_monitor_times[k], FLOOR_MC_PER_ROW * m, &g, &mo->w, &mo->floor[k], &se)))
            goto fail;
    }
    if (!resume_step || !(st = read_rows(mo, resume_step)))
        return FV_OK;
fail:
    fv_monitor_free(mo);
    return st;
}

void fv_monitor_free(fv_monitor *mo)
{
    fv_empirical_work_free(&mo->w);
    fv_empirical_free(&mo->emp);
    fv_copy_set_free(&mo->set);
    free(mo->rows);
    free(mo->x0);
    free(mo->xt);
    memset(mo, 0, sizeof *mo);
}

/* Loss and excess at time index k: the network on M rows of the training interpolant at that t. */
static int loss_and_excess(fv_monitor *mo, size_t k, double *loss, double *excess)
{
    size_t m = mo->m, d = mo->D->d;
    double t = fv_monitor_times[k], se;
    int st = fv_cfm_pairs(mo->D, mo->seed, MONITOR_STEP(k), m, mo->x0, mo->x0 + m * d);
    if (st)
        return st;
    fv_cfm_interpolate(mo->D->p, mo->seed, MONITOR_STEP(k), t, m, d, mo->x0, mo->x0 + m * d, mo->xt, mo->tt, mo->u);
    if ((st = mo->tr->ops->predict(mo->tr, mo->use_ema, m, mo->xt, mo->tt, mo->v)))
        return st;
    double s = 0;
    for (size_t i = 0; i < m * d; i++) {
        s += ((double)mo->u[i] - mo->v[i]) * ((double)mo->u[i] - mo->v[i]);
        mo->X[i] = mo->xt[i];
        mo->V[i] = mo->v[i];
    }
    *loss = s / (double)m;
    return fv_empirical_excess(&mo->emp, t, m, mo->X, mo->V, &mo->w, excess, &se);
}

/* The copy fraction of M samples integrated from the same sources each time. */
static int copy_fraction(fv_monitor *mo, uint64_t step, double *frac)
{
    size_t m = mo->m, d = mo->D->d;
    const fv_problem *p = mo->D->p;
    fv_rng g = fv_rng_make(mo->seed, MONITOR_SOURCES);
    fv_ode_opts o = fv_ode_defaults();
    o.solver = FV_ODE_EULER;
    o.steps = FV_MONITOR_ODE_STEPS;
    int st = fv_gaussian_sample(d, p->m0, p->S0, m, &g, mo->X);
    if (st || (st = fv_cfm_integrate(mo->tr, mo->use_ema, m, mo->X, &o)))
        return st;
    for (size_t i = 0; i < m * d; i++)
        if (!isfinite(mo->X[i]))
            return fv_error(FV_ENUMERIC, "monitor: at step %llu the network's samples are not finite (sample %zu)",
                            (unsigned long long)step, i / d + 1);
    double mean;
    if ((st = fv_copy_nearest(&mo->set, m, mo->X, mo->d1, mo->d1 + m, NULL)))
        return st;
    fv_copy_summary(m, mo->d1, mo->d1 + m, frac, &mean);
    return FV_OK;
}

static int write_rows(const fv_monitor *mo)
{
    fv_atomic_file f;
    int st = fv_atomic_open(&f, mo->path);
    if (st)
        return st;
    st = fv_tsv_header(f.fp, FV_MONITOR_COLS, fv_monitor_names);
    for (size_t i = 0; i < mo->nrows && !st; i++)
        st = fv_tsv_row(f.fp, FV_MONITOR_COLS, mo->rows + i * FV_MONITOR_COLS);
    if (st) {
        fv_atomic_abort(&f);
        return st;
    }
    return fv_atomic_commit(&f);
}

int fv_monitor_after_step(void *ctx, uint64_t step)
{
    fv_monitor *mo = ctx;
    if (!mo->every || step % mo->every)
        return FV_OK;
    double frac, rows[FV_MONITOR_NT][FV_MONITOR_COLS];
    int st = copy_fraction(mo, step, &frac);
    for (size_t k = 0; k < FV_MONITOR_NT && !st; k++) {
        double *r = rows[k];
        r[0] = (double)step;
        r[1] = fv_monitor_times[k];
        r[3] = mo->floor[k];
        r[6] = frac;
        if (!(st = loss_and_excess(mo, k, &r[2], &r[4])))
            st = fv_cfm_grad_variance(mo->tr, mo->D, r[1], mo->m, mo->seed, MONITOR_STEP(k), &r[5]);
        for (int c = 2; c < FV_MONITOR_COLS && !st; c++)
            if (!isfinite(r[c]))
                st = fv_error(FV_ENUMERIC, "monitor: at step %llu, t = %g, %s is %g: the network overflows there",
                              (unsigned long long)step, r[1], fv_monitor_names[c], r[c]);
    }
    if (st)
        return st;
    int warn = !mo->warned && frac > 0.5;
    for (size_t k = 0; k < FV_MONITOR_NT && !st; k++)
        st = push_row(mo, rows[k]);
    if (!st && warn)
        fprintf(stderr, "flowvar: memorizing: at step %llu, %.0f%% of %zu generated samples are copies of training "
                        "points (d1/d2 < 1/3); excess loss to the memorizing field v* at t = 0.5: %.4g\n",
                (unsigned long long)step, 100.0 * frac, mo->m, rows[1][4]);
    return st ? st : write_rows(mo);
}
