/* empirical.c: the exact CFM minimizer v* for a Gaussian and a finite data set, its loss floor and the
 * excess of a field (docs/THEORY.md section 7; the formulas and the storage in empirical.h). */
#include "gaussian/empirical.h"

#include "core/error.h"
#include "core/linalg.h"
#include "core/size.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The logits of one block stay near this many doubles (4 MiB), and a block of data as doubles near
 * FV_EMP_BLOCK_DATA: bounded memory whatever N is, large enough products for BLAS to be efficient. */
#define FV_EMP_LOGITS ((size_t)1 << 19)
#define FV_EMP_BLOCK_DATA ((size_t)1 << 22)

const char *fv_emp_direction_name(fv_emp_direction dir) { return dir == FV_EMP_FORWARD ? "forward" : "backward"; }

/* The Gaussian end's covariance is s I when its off-diagonal entries are 0 and its diagonal constant. */
static int is_isotropic(size_t d, const double *S, double *s)
{
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < d; j++)
            if (S[i * d + j] != (i == j ? S[0] : 0.0))
                return 0;
    *s = S[0];
    return 1;
}

/* Everything but the data: the Gaussian end, its eigenbasis, the noise, and room for a double copy of
 * the data when need_copy (always when S is not isotropic: the data are kept rotated). */
static int build_common(fv_empirical *e, const fv_problem *p, fv_emp_direction dir, size_t n, int need_copy)
{
    size_t d = p->d, count;
    int st;
    memset(e, 0, sizeof *e);
    if (n == 0)
        return fv_error(FV_EINPUT, "the empirical field needs at least one data point (got none)");
    const double *S = dir == FV_EMP_FORWARD ? p->S0 : p->S1;
    e->n = n;
    e->d = d;
    e->dir = dir;
    e->sigma = p->sigma;
    e->schedule = p->schedule;
    e->deriv_term = p->deriv_term;
    e->isotropic = is_isotropic(d, S, &e->s);
    need_copy = need_copy || !e->isotropic;
    /* doubles: data (when copied) + |y|^2 (n) + m (d) + U (d^2) + lambda (d) */
    if ((st = fv_size_mul(&count, "data points x dimension", n, d)))
        return st;
    size_t extra = n + 2 * d + (e->isotropic ? 0 : d * d);
    if (!(e->buf = fv_alloc(&st, "the empirical field's data", (need_copy ? count : 0) + extra, 1, sizeof *e->buf)))
        return st;
    double *q = e->buf;
    if (need_copy) {
        e->Yd = q;
        q += count;
    }
    e->ynorm2 = q;
    e->m = q + n;
    memcpy(e->m, dir == FV_EMP_FORWARD ? p->m0 : p->m1, d * sizeof *e->m);
    if (!e->isotropic) {
        e->lambda = e->m + d;
        e->U = e->lambda + d;
        if ((st = fv_linalg_eigh(d, S, e->lambda, e->U)))
            fv_empirical_free(e);
    }
    return st;
}

/* Rotate the owned data into S's eigenbasis (row y -> y^T U), in blocks through a scratch, and take the
 * squared norms of the isotropic case. */
static int finish_data(fv_empirical *e)
{
    size_t n = e->n, d = e->d;
    if (e->isotropic) {
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            for (size_t k = 0; k < d; k++) {
                double y = e->Yd ? e->Yd[j * d + k] : (double)e->Yf[j * d + k];
                s += y * y;
            }
            e->ynorm2[j] = s;
        }
        return FV_OK;
    }
    size_t rows = d > FV_EMP_BLOCK_DATA ? 1 : FV_EMP_BLOCK_DATA / d;
    rows = rows < n ? rows : n;
    int st;
    double *tmp = fv_alloc(&st, "a block of data", rows, d, sizeof *tmp);
    if (!tmp)
        return st;
    for (size_t j0 = 0; j0 < n; j0 += rows) {
        size_t b = n - j0 < rows ? n - j0 : rows;
        memcpy(tmp, e->Yd + j0 * d, b * d * sizeof *tmp);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)b, (int)d, (int)d, 1.0, tmp, (int)d, e->U, (int)d,
                    0.0, e->Yd + j0 * d, (int)d);
    }
    free(tmp);
    return FV_OK;
}

int fv_empirical_build(fv_empirical *e, const fv_problem *p, fv_emp_direction dir, size_t n, const double *Y)
{
    size_t d = p->d;
    for (size_t i = 0; i < n * d; i++)
        if (!isfinite(Y[i]))
            return fv_error(FV_EINPUT, "data point %zu, coordinate %zu is %g: the data must be finite", i / d + 1,
                            i % d + 1, Y[i]);
    int st = build_common(e, p, dir, n, 1);
    if (st)
        return st;
    memcpy(e->Yd, Y, n * d * sizeof *Y);
    if ((st = finish_data(e)))
        fv_empirical_free(e);
    return st;
}

int fv_empirical_build_f32(fv_empirical *e, const fv_problem *p, fv_emp_direction dir, size_t n, const float *Y)
{
    size_t d = p->d;
    for (size_t i = 0; i < n * d; i++)
        if (!isfinite(Y[i]))
            return fv_error(FV_EINPUT, "data point %zu, coordinate %zu is %g: the data must be finite", i / d + 1,
                            i % d + 1, (double)Y[i]);
    int st = build_common(e, p, dir, n, 0);
    if (st)
        return st;
    if (e->Yd)
        for (size_t i = 0; i < n * d; i++)
            e->Yd[i] = Y[i];
    else
        e->Yf = Y;
    if ((st = finish_data(e)))
        fv_empirical_free(e);
    return st;
}

void fv_empirical_free(fv_empirical *e)
{
    free(e->buf);
    memset(e, 0, sizeof *e);
}

int fv_empirical_work_alloc(fv_empirical_work *w, const fv_empirical *e, size_t chunk)
{
    size_t d = e->d, block, total, part;
    int st;
    memset(w, 0, sizeof *w);
    chunk = chunk ? chunk : 256;
    block = FV_EMP_LOGITS / chunk;
    if (d > 0 && block > FV_EMP_BLOCK_DATA / d)
        block = FV_EMP_BLOCK_DATA / d;
    block = block < 16 ? 16 : block;
    block = block < e->n ? block : e->n;
    /* xr, acc, out, tmp: 4 chunk x d; logit: chunk x block; yb: block x d; mx, sum: 2 chunk;
     * qb: block; ck, ak: 2 d */
    size_t terms[4][2] = {{4 * chunk, d}, {chunk, block}, {e->Yd ? 0 : block, d}, {2 * chunk + block + 2 * d, 1}};
    total = 0;
    for (int i = 0; i < 4; i++) {
        if ((st = fv_size_mul(&part, "the empirical field's workspace", terms[i][0], terms[i][1])))
            return st;
        if (total > SIZE_MAX - part)
            return fv_error(FV_EINPUT, "the empirical field's workspace overflows");
        total += part;
    }
    if (!(w->buf = fv_alloc(&st, "the empirical field's workspace", total, 1, sizeof *w->buf)))
        return st;
    w->chunk = chunk;
    w->block = block;
    w->xr = w->buf;
    w->acc = w->xr + chunk * d;
    w->out = w->acc + chunk * d;
    w->tmp = w->out + chunk * d;
    w->logit = w->tmp + chunk * d;
    w->yb = e->Yd ? NULL : w->logit + chunk * block;
    w->mx = w->logit + chunk * block + (e->Yd ? 0 : block * d);
    w->sum = w->mx + chunk;
    w->qb = w->sum + chunk;
    w->ck = w->qb + block;
    w->ak = w->ck + d;
    return FV_OK;
}

void fv_empirical_work_free(fv_empirical_work *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

/* The time's coefficients: r_j = x - o - alpha y_j, C_t = g^2 S + f^2 I; the bracket's correction
 * factor is (kappa g S + f f') C_t^{-1}: kappa = -1 forward, +1 backward. */
typedef struct {
    double alpha, g, f2, ffp, kappa, o_scale; /* o = o_scale m */
} emp_time;

static emp_time time_coefs(const fv_empirical *e, double t)
{
    emp_time c;
    double f, fp;
    fv_noise(e->schedule, e->sigma, t, &f, &fp);
    int fwd = e->dir == FV_EMP_FORWARD;
    c.alpha = fwd ? t : 1.0 - t;
    c.g = fwd ? 1.0 - t : t;
    c.o_scale = fwd ? 1.0 - t : t;
    c.kappa = fwd ? -1.0 : 1.0;
    c.f2 = f * f;
    c.ffp = e->deriv_term ? fv_noise_ffprime(e->schedule, e->sigma, t) : 0.0;
    return c;
}

static double eigenvalue(const fv_empirical *e, size_t k) { return e->isotropic ? e->s : e->lambda[k]; }

int fv_empirical_check_time(const fv_empirical *e, double t)
{
    if (!(t >= 0.0 && t <= 1.0))
        return fv_error(FV_EINPUT, "the empirical field's time t = %g is outside [0, 1]", t);
    emp_time c = time_coefs(e, t);
    double lmin = e->isotropic ? e->s : e->lambda[0]; /* eigenvalues ascending */
    double cmin = c.g * c.g * lmin + c.f2;
    if (!(cmin > 0.0) || !isfinite(1.0 / cmin))
        return fv_error(FV_ESINGULAR,
                        "the empirical field (%s) is singular at t = %g: C_t = %s has no inverse there (without "
                        "noise, X_t at that end is one of the data points)",
                        fv_emp_direction_name(e->dir), t,
                        e->dir == FV_EMP_FORWARD ? "(1-t)^2 S0 + f^2 I" : "t^2 S1 + f^2 I");
    return FV_OK;
}

/* The data rows [j0, j0 + b) as doubles (in S's eigenbasis when not isotropic). */
static const double *data_block(const fv_empirical *e, size_t j0, size_t b, fv_empirical_work *w)
{
    size_t d = e->d;
    if (e->Yd)
        return e->Yd + j0 * d;
    const float *src = e->Yf + j0 * d;
    for (size_t i = 0; i < b * d; i++)
        w->yb[i] = src[i];
    return w->yb;
}

/* Fold one block's logits (m x b, overwritten by exp) into the running maxima, sums and weighted sums. */
static void fold_block(size_t m, size_t b, size_t d, const double *Yb, fv_empirical_work *w)
{
    for (size_t i = 0; i < m; i++) {
        double *L = w->logit + i * b, bm = L[0];
        for (size_t j = 1; j < b; j++)
            bm = L[j] > bm ? L[j] : bm;
        if (bm > w->mx[i]) { /* a new maximum: rescale what came before (exp(-inf) = 0 at the start) */
            double scale = exp(w->mx[i] - bm);
            w->sum[i] *= scale;
            for (size_t k = 0; k < d; k++)
                w->acc[i * d + k] *= scale;
            w->mx[i] = bm;
        }
        double s = 0;
        for (size_t j = 0; j < b; j++) {
            L[j] = exp(L[j] - w->mx[i]);
            s += L[j];
        }
        w->sum[i] += s;
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)d, (int)b, 1.0, w->logit, (int)b, Yb, (int)d,
                1.0, w->acc, (int)d);
}

/* v* at m <= w->chunk points X into out, C_t already checked. */
static void eval_chunk(const fv_empirical *e, const emp_time *c, size_t m, const double *X, double *out,
                       fv_empirical_work *w)
{
    size_t d = e->d, n = e->n;
    double *xr = w->xr, *P = w->tmp;
    for (size_t i = 0; i < m; i++)
        for (size_t k = 0; k < d; k++)
            P[i * d + k] = X[i * d + k] - c->o_scale * e->m[k];
    if (e->isotropic)
        memcpy(xr, P, m * d * sizeof *xr);
    else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)d, (int)d, 1.0, P, (int)d, e->U, (int)d,
                    0.0, xr, (int)d);
    for (size_t k = 0; k < d; k++) {
        double lam = eigenvalue(e, k), ck = c->g * c->g * lam + c->f2;
        w->ck[k] = 1.0 / ck;
        w->ak[k] = (c->kappa * c->g * lam + c->ffp) / ck;
    }
    /* logit_ij = alpha (xr_i / c) . y_j - alpha^2 / 2 sum_k y_jk^2 / c_k: the term of x alone is the same
     * for every j and drops out of the softmax */
    for (size_t i = 0; i < m; i++) {
        for (size_t k = 0; k < d; k++)
            P[i * d + k] = c->alpha * xr[i * d + k] * w->ck[k];
        w->mx[i] = -INFINITY;
        w->sum[i] = 0.0;
    }
    memset(w->acc, 0, m * d * sizeof *w->acc);
    for (size_t j0 = 0; j0 < n; j0 += w->block) {
        size_t b = n - j0 < w->block ? n - j0 : w->block;
        const double *Yb = data_block(e, j0, b, w);
        for (size_t j = 0; j < b; j++) {
            double q = 0;
            if (e->isotropic)
                q = e->ynorm2[j0 + j] * w->ck[0];
            else
                for (size_t k = 0; k < d; k++)
                    q += Yb[j * d + k] * Yb[j * d + k] * w->ck[k];
            w->qb[j] = 0.5 * c->alpha * c->alpha * q;
        }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)b, (int)d, 1.0, P, (int)d, Yb, (int)d, 0.0,
                    w->logit, (int)b);
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < b; j++)
                w->logit[i * b + j] -= w->qb[j];
        fold_block(m, b, d, Yb, w);
    }
    /* ybar = acc / sum; v (eigenbasis) = sign ybar + a_k (xr - alpha ybar)_k, then back and shifted by m */
    double sign = e->dir == FV_EMP_FORWARD ? 1.0 : -1.0;
    for (size_t i = 0; i < m; i++)
        for (size_t k = 0; k < d; k++) {
            double ybar = w->acc[i * d + k] / w->sum[i];
            P[i * d + k] = sign * ybar + w->ak[k] * (xr[i * d + k] - c->alpha * ybar);
        }
    if (e->isotropic)
        memcpy(out, P, m * d * sizeof *out);
    else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)d, (int)d, 1.0, P, (int)d, e->U, (int)d, 0.0,
                    out, (int)d);
    for (size_t i = 0; i < m; i++)
        for (size_t k = 0; k < d; k++)
            out[i * d + k] -= sign * e->m[k];
}

int fv_empirical_eval(const fv_empirical *e, double t, size_t n, const double *X, double *out, fv_empirical_work *w)
{
    int st = fv_empirical_check_time(e, t);
    if (st)
        return st;
    emp_time c = time_coefs(e, t);
    for (size_t i0 = 0; i0 < n; i0 += w->chunk) {
        size_t m = n - i0 < w->chunk ? n - i0 : w->chunk;
        eval_chunk(e, &c, m, X + i0 * e->d, out + i0 * e->d, w);
    }
    return FV_OK;
}

/* Data row j in the original coordinates into y (d). */
static void data_row(const fv_empirical *e, size_t j, double *y)
{
    size_t d = e->d;
    if (!e->Yd) {
        for (size_t k = 0; k < d; k++)
            y[k] = e->Yf[j * d + k];
        return;
    }
    if (e->isotropic) {
        memcpy(y, e->Yd + j * d, d * sizeof *y);
        return;
    }
    cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)d, (int)d, 1.0, e->U, (int)d, e->Yd + j * d, 1, 0.0, y, 1);
}

/* A draw of the Gaussian end, m + S^{1/2} xi written as m + U diag(sqrt(lambda)) xi (the same law). */
static void gaussian_end(const fv_empirical *e, const double *xi, double *g, double *tmp)
{
    size_t d = e->d;
    if (e->isotropic) {
        for (size_t k = 0; k < d; k++)
            g[k] = e->m[k] + sqrt(e->s) * xi[k];
        return;
    }
    for (size_t k = 0; k < d; k++)
        tmp[k] = sqrt(e->lambda[k]) * xi[k];
    memcpy(g, e->m, d * sizeof *g);
    cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)d, (int)d, 1.0, e->U, (int)d, tmp, 1, 1.0, g, 1);
}

int fv_empirical_draw(const fv_empirical *e, double t, size_t n, fv_rng *r, double *X, double *U)
{
    size_t d = e->d;
    double f, fp;
    if (!(t >= 0.0 && t <= 1.0))
        return fv_error(FV_EINPUT, "the interpolant's time t = %g is outside [0, 1]", t);
    fv_noise(e->schedule, e->sigma, t, &f, &fp);
    fp = e->deriv_term ? fp : 0.0;
    if (U && !isfinite(fp))
        return fv_error(FV_EINPUT, "the derivative term f'(t) of the bridge is infinite at t = %g: the regression "
                        "target has no finite value there", t);
    int st;
    double *s = fv_alloc(&st, "the interpolant's scratch", 5, d, sizeof *s);
    if (!s)
        return st;
    double *xi = s, *z = s + d, *g = s + 2 * d, *y = s + 3 * d, *tmp = s + 4 * d;
    int fwd = e->dir == FV_EMP_FORWARD;
    for (size_t i = 0; i < n; i++) {
        double u;
        fv_rng_normal(r, d, xi);
        fv_rng_uniform(r, 1, &u);
        fv_rng_normal(r, d, z);
        size_t j = (size_t)(u * (double)e->n);
        data_row(e, j < e->n ? j : e->n - 1, y);
        gaussian_end(e, xi, g, tmp);
        const double *x0 = fwd ? g : y, *x1 = fwd ? y : g;
        for (size_t k = 0; k < d; k++) {
            X[i * d + k] = (1.0 - t) * x0[k] + t * x1[k] + f * z[k];
            if (U)
                U[i * d + k] = x1[k] - x0[k] + fp * z[k];
        }
    }
    free(s);
    return FV_OK;
}

/* Running mean and sum of squared deviations (Welford: no cancellation for large, similar values). */
typedef struct {
    size_t n;
    double mean, m2;
} emp_stat;

static void stat_add(emp_stat *s, double x)
{
    s->n++;
    double delta = x - s->mean;
    s->mean += delta / (double)s->n;
    s->m2 += delta * (x - s->mean);
}

static void stat_result(const emp_stat *s, double *mean, double *se)
{
    *mean = s->mean;
    *se = s->n > 1 ? sqrt(s->m2 / (double)(s->n - 1) / (double)s->n) : 0.0;
}

/* Add |A_i - B_i|^2 of m rows of d numbers to s. */
static void add_sqdist(emp_stat *s, size_t m, size_t d, const double *A, const double *B)
{
    for (size_t i = 0; i < m; i++) {
        double q = 0;
        for (size_t k = 0; k < d; k++)
            q += (A[i * d + k] - B[i * d + k]) * (A[i * d + k] - B[i * d + k]);
        stat_add(s, q);
    }
}

int fv_empirical_excess(const fv_empirical *e, double t, size_t n, const double *X, const double *V,
                        fv_empirical_work *w, double *mean, double *se)
{
    int st = fv_empirical_check_time(e, t);
    if (st)
        return st;
    emp_time c = time_coefs(e, t);
    emp_stat s = {0, 0.0, 0.0};
    for (size_t i0 = 0; i0 < n; i0 += w->chunk) {
        size_t m = n - i0 < w->chunk ? n - i0 : w->chunk;
        eval_chunk(e, &c, m, X + i0 * e->d, w->out, w);
        add_sqdist(&s, m, e->d, V + i0 * e->d, w->out);
    }
    stat_result(&s, mean, se);
    return FV_OK;
}

int fv_empirical_floor(const fv_empirical *e, double t, size_t nmc, fv_rng *r, fv_empirical_work *w, double *mean,
                       double *se)
{
    size_t d = e->d;
    int st = fv_empirical_check_time(e, t);
    if (st)
        return st;
    double *X = fv_alloc(&st, "the floor's rows", 2 * w->chunk, d, sizeof *X);
    if (!X)
        return st;
    double *U = X + w->chunk * d;
    emp_time c = time_coefs(e, t);
    emp_stat s = {0, 0.0, 0.0};
    for (size_t i0 = 0; i0 < nmc && !st; i0 += w->chunk) {
        size_t m = nmc - i0 < w->chunk ? nmc - i0 : w->chunk;
        if ((st = fv_empirical_draw(e, t, m, r, X, U)))
            break;
        eval_chunk(e, &c, m, X, w->out, w);
        add_sqdist(&s, m, d, U, w->out);
    }
    free(X);
    stat_result(&s, mean, se);
    return st;
}

typedef struct {
    const fv_empirical *e;
    fv_empirical_work *w;
} emp_rhs_ctx;

static int emp_rhs(double t, size_t n, const double *y, double *dydt, void *ctx)
{
    emp_rhs_ctx *c = ctx;
    return fv_empirical_eval(c->e, t, n / c->e->d, y, dydt, c->w);
}

int fv_empirical_transport(const fv_empirical *e, size_t n, double *X, const fv_ode_opts *o, fv_empirical_work *w)
{
    emp_rhs_ctx ctx = {e, w};
    size_t len = n * e->d;
    int st = fv_empirical_check_time(e, o->t0);
    if (st)
        return st;
    if (fv_empirical_check_time(e, o->t1) == FV_OK)
        return fv_ode_integrate(emp_rhs, &ctx, len, X, o, NULL);
    fv_error_clear();
    /* The end is singular: the solver stops one step short, and the last step is the Euler step that
     * sigma = 0 makes exact (x + (1-t) v* = E[X1 | X_t = x] along straight paths). */
    size_t steps = o->steps ? o->steps : 100;
    double h = (o->t1 - o->t0) / (double)steps;
    fv_ode_opts inner = *o;
    inner.t1 = o->t1 - h;
    inner.steps = steps - 1;
    if (steps > 1 && (st = fv_ode_integrate(emp_rhs, &ctx, len, X, &inner, NULL)))
        return st;
    double *v = fv_alloc(&st, "points x dimension", n, e->d, sizeof *v);
    if (!v)
        return st;
    if (!(st = fv_empirical_eval(e, inner.t1, n, X, v, w)))
        for (size_t i = 0; i < len; i++)
            X[i] += h * v[i];
    free(v);
    return st;
}
