/* field.c: building and evaluating the closed-form fields of field.h. */
#include "gaussian/field.h"

#include "core/error.h"
#include "core/linalg.h"
#include "core/size.h"
#include "gaussian/ot.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FV_DEFAULT_COND_MAX 1e12

static double *dup_array(const double *src, size_t count)
{
    double *p = malloc(count * sizeof *p);
    if (p)
        memcpy(p, src, count * sizeof *p);
    return p;
}

static int is_identity(size_t d, const double *A)
{
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < d; j++)
            if (A[i * d + j] != (i == j ? 1.0 : 0.0))
                return 0;
    return 1;
}

/* OT: K - I = V diag(l) V^T. For a standard source K = S1^{1/2}, so ONE eigendecomposition of S1
 * gives V and l = sqrt(w) - 1 without forming K. */
static int build_ot(fv_field *f, const fv_problem *p)
{
    size_t d = p->d;
    int st;
    f->symmetric = 1;
    f->V = malloc(d * d * sizeof *f->V);
    f->l = malloc(d * sizeof *f->l);
    f->Vb = malloc(d * sizeof *f->Vb);
    if (!f->V || !f->l || !f->Vb)
        return fv_error(FV_ENOMEM, "out of memory building a %zu-dimensional OT field", d);
    if (is_identity(d, p->S0)) {
        if ((st = fv_linalg_eigh(d, p->S1, f->l, f->V)))
            return st;
        for (size_t i = 0; i < d; i++) {
            if (!(f->l[i] > 0))
                return fv_error(FV_EINPUT, "--target-cov is not positive definite (eigenvalue %g)", f->l[i]);
            f->l[i] = sqrt(f->l[i]) - 1.0;
        }
    } else {
        double *G = malloc(d * d * sizeof *G);
        if (!G)
            return fv_error(FV_ENOMEM, "out of memory building a %zu-dimensional OT field", d);
        st = fv_ot_map_matrix(d, p->S0, p->S1, G);
        if (!st)
            st = fv_linalg_eigh(d, G, f->l, f->V);
        free(G);
        if (st)
            return st;
        for (size_t i = 0; i < d; i++)
            f->l[i] -= 1.0;
    }
    cblas_dgemv(CblasRowMajor, CblasTrans, (int)d, (int)d, 1.0, f->V, (int)d, f->b, 1, 0.0, f->Vb, 1);
    return FV_OK;
}

/* Rotational coupling: K = S1^{1/2} R S0^{-1/2}. */
static int build_rotation(fv_field *f, const fv_problem *p)
{
    size_t d = p->d;
    if (!p->R)
        return fv_error(FV_EINPUT, "the rotation field needs --angle DEG or --rotation R.npy");
    double *R1 = malloc(d * d * sizeof *R1), *Ri = malloc(d * d * sizeof *Ri), *T = malloc(d * d * sizeof *T);
    f->K = malloc(d * d * sizeof *f->K);
    int st = FV_OK;
    if (!R1 || !Ri || !T || !f->K)
        st = fv_error(FV_ENOMEM, "out of memory building a %zu-dimensional rotation field", d);
    else if (!(st = fv_linalg_sqrtm_spd(d, p->S1, R1)) && !(st = fv_linalg_invsqrtm_spd(d, p->S0, Ri))) {
        fv_mat_mul(d, d, d, R1, p->R, T);
        fv_mat_mul(d, d, d, T, Ri, f->K);
        f->norm1 = LAPACKE_dlange(LAPACK_COL_MAJOR, '1', (lapack_int)d, (lapack_int)d, f->K, (lapack_int)d);
    }
    free(R1);
    free(Ri);
    free(T);
    return st;
}

int fv_field_build(fv_field *f, const fv_problem *p, fv_field_kind kind)
{
    size_t d = p->d;
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->d = d;
    f->sigma = p->sigma;
    f->schedule = p->schedule;
    f->deriv_term = p->deriv_term;
    f->cond_max = FV_DEFAULT_COND_MAX;
    f->m0 = dup_array(p->m0, d);
    f->m1 = dup_array(p->m1, d);
    f->b = malloc(d * sizeof *f->b);
    int st = FV_OK;
    if (!f->m0 || !f->m1 || !f->b) {
        st = fv_error(FV_ENOMEM, "out of memory building a %zu-dimensional field", d);
        goto done;
    }
    for (size_t i = 0; i < d; i++)
        f->b[i] = p->m1[i] - p->m0[i];
    switch (kind) {
    case FV_FIELD_OT: st = build_ot(f, p); break;
    case FV_FIELD_ROTATION: st = build_rotation(f, p); break;
    case FV_FIELD_MARKOV:
        f->S0 = dup_array(p->S0, d * d);
        f->S1 = dup_array(p->S1, d * d);
        if (!f->S0 || !f->S1) {
            st = fv_error(FV_ENOMEM, "out of memory building a %zu-dimensional Markov field", d);
            break;
        }
        f->norm0 = LAPACKE_dlange(LAPACK_COL_MAJOR, '1', (lapack_int)d, (lapack_int)d, f->S0, (lapack_int)d);
        f->norm1 = LAPACKE_dlange(LAPACK_COL_MAJOR, '1', (lapack_int)d, (lapack_int)d, f->S1, (lapack_int)d);
        break;
    default: st = fv_error(FV_EINPUT, "unknown field kind %d", (int)kind);
    }
done:
    if (st)
        fv_field_free(f);
    return st;
}

void fv_field_free(fv_field *f)
{
    free(f->b);
    free(f->m0);
    free(f->m1);
    free(f->K);
    free(f->S0);
    free(f->S1);
    free(f->V);
    free(f->l);
    free(f->Vb);
    memset(f, 0, sizeof *f);
}

int fv_field_work_alloc(fv_field_work *w, size_t d, size_t n)
{
    memset(w, 0, sizeof *w);
    w->d = d;
    w->n = n;
    int st;
    /* the n x d blocks are the ones whose size comes from the user; d x d is a problem's own size */
    if ((w->Y = fv_alloc(&st, "a field workspace of n points x d coordinates", n, d, sizeof *w->Y)))
        w->Z = fv_alloc(&st, "a field workspace of n points x d coordinates", n, d, sizeof *w->Z);
    w->A = malloc(d * d * sizeof *w->A);
    w->N = malloc(d * d * sizeof *w->N);
    w->vec = malloc(3 * d * sizeof *w->vec);
    w->piv = malloc(d * sizeof *w->piv);
    if (!st && (!w->A || !w->N || !w->vec || !w->piv))
        st = fv_error(FV_ENOMEM, "out of memory for a field workspace of %zu points in dimension %zu", n, d);
    if (st)
        fv_field_work_free(w);
    return st;
}

void fv_field_work_free(fv_field_work *w)
{
    free(w->Y);
    free(w->Z);
    free(w->A);
    free(w->N);
    free(w->vec);
    free(w->piv);
    memset(w, 0, sizeof *w);
}

static int singular_error(const fv_field *f, double t, double cond)
{
    double times[64];
    size_t n = 0;
    char list[512] = "";
    if (f->d <= 64 && fv_field_singular_times(f, times, &n) == FV_OK)
        for (size_t i = 0, len = 0; i < n && len < sizeof list - 32; i++)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%.6g", i ? ", " : "", times[i]);
    return fv_error(FV_ESINGULAR, "%s field is singular at t = %.6g: relative condition number of A(t) is %.3g (limit %.3g)%s%s",
                    fv_field_kind_name(f->kind), t, cond, f->cond_max, n ? "; singular times in [0,1]: " : "", list);
}

/* Fill every row of o (n x d) with b, so a following product can accumulate onto it. */
static void fill_rows(size_t n, size_t d, const double *b, double *o)
{
    for (size_t i = 0; i < n; i++)
        memcpy(o + i * d, b, d * sizeof *b);
}

/* Symmetric (OT) form at nt times with V^T (x - m0) shared by all of them. */
static int eval_symmetric(const fv_field *f, size_t nt, const double *ts, size_t n, const double *X, double *out,
                          fv_field_work *w)
{
    size_t d = f->d;
    for (size_t k = 0; k < nt; k++) { /* check every time before writing anything */
        double t = ts[k], lo = INFINITY, kmax = 0;
        for (size_t j = 0; j < d; j++) {
            lo = fmin(lo, fabs(1.0 + t * f->l[j]));
            kmax = fmax(kmax, fabs(1.0 + f->l[j]));
        }
        double cond = (fabs(1.0 - t) + t * kmax) / lo;
        if (!(cond <= f->cond_max))
            return singular_error(f, t, cond);
    }
    /* Y = X V - 1 (V^T m0)^T, computed once for all times */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)d, (int)d, 1.0, X, (int)d, f->V, (int)d,
                0.0, w->Y, (int)d);
    double *Vm0 = w->vec, *scale = w->vec + d, *off = w->vec + 2 * d;
    cblas_dgemv(CblasRowMajor, CblasTrans, (int)d, (int)d, 1.0, f->V, (int)d, f->m0, 1, 0.0, Vm0, 1);
    for (size_t k = 0; k < nt; k++) {
        double t = ts[k], *o = out + k * n * d;
        for (size_t j = 0; j < d; j++) {
            scale[j] = f->l[j] / (1.0 + t * f->l[j]);
            off[j] = Vm0[j] + t * f->Vb[j];
        }
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < d; j++)
                w->Z[i * d + j] = (w->Y[i * d + j] - off[j]) * scale[j];
        fill_rows(n, d, f->b, o);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)d, (int)d, 1.0, w->Z, (int)d, f->V,
                    (int)d, 1.0, o, (int)d);
    }
    return FV_OK;
}

/* A(t) and N(t) of the general form (field.h) into w->A and w->N. */
static void general_matrices(const fv_field *f, double t, fv_field_work *w)
{
    size_t d = f->d;
    if (f->kind == FV_FIELD_ROTATION) {
        for (size_t i = 0; i < d * d; i++) {
            w->A[i] = t * f->K[i];
            w->N[i] = f->K[i];
        }
        for (size_t i = 0; i < d; i++) {
            w->A[i * d + i] += 1.0 - t;
            w->N[i * d + i] -= 1.0;
        }
        return;
    }
    double fn, fp;
    fv_noise(f->schedule, f->sigma, t, &fn, &fp); /* fp is infinite at t = 0, 1: only fn is used */
    for (size_t i = 0; i < d * d; i++) {
        w->A[i] = (1 - t) * (1 - t) * f->S0[i] + t * t * f->S1[i];
        w->N[i] = t * f->S1[i] - (1 - t) * f->S0[i];
    }
    for (size_t i = 0; i < d; i++) {
        w->A[i * d + i] += fn * fn;
        if (f->deriv_term)
            w->N[i * d + i] += fv_noise_ffprime(f->schedule, f->sigma, t);
    }
}

/* The size of the terms that form A(t), in the infinity norm of A (the 1-norm of the column-major
 * view LAPACK factors): |1-t| + t |K| for a pair field, (1-t)^2 |S0| + t^2 |S1| + f^2 for Markov. */
static double general_scale(const fv_field *f, double t)
{
    if (f->kind == FV_FIELD_ROTATION)
        return fabs(1.0 - t) + t * f->norm1;
    double fn, fp;
    fv_noise(f->schedule, f->sigma, t, &fn, &fp);
    return (1 - t) * (1 - t) * f->norm0 + t * t * f->norm1 + fn * fn;
}

/* General form at one time: LU of A(t), condition check, solve for all points, multiply by N(t). */
static int eval_general(const fv_field *f, double t, size_t n, const double *X, double *out, fv_field_work *w)
{
    size_t d = f->d;
    general_matrices(f, t, w);
    if (!fv_all_finite(d * d, w->A) || !fv_all_finite(d * d, w->N))
        return singular_error(f, t, INFINITY);
    /* The row-major A read as column-major is A^T: factor it and solve with 'T' so that the
     * row-major points (a column-major d x n block) are solved against A itself. */
    lapack_int dd = (lapack_int)d;
    double anorm = LAPACKE_dlange(LAPACK_COL_MAJOR, '1', dd, dd, w->A, dd), rcond = 0.0;
    lapack_int info = LAPACKE_dgetrf(LAPACK_COL_MAJOR, dd, dd, w->A, dd, w->piv);
    if (info < 0)
        return fv_error(FV_ENUMERIC, "dgetrf rejected argument %d", (int)-info);
    if (info == 0 && LAPACKE_dgecon(LAPACK_COL_MAJOR, '1', dd, w->A, dd, anorm, &rcond) != 0)
        return fv_error(FV_ENUMERIC, "condition estimate (dgecon) failed");
    /* |A^-1| = 1 / (rcond |A|), measured against the size of the terms that make up A: a rotation
     * by 180 degrees gives A = eps * (rotation), perfectly conditioned yet singular to rounding. */
    double cond = info > 0 || rcond == 0.0 ? INFINITY : general_scale(f, t) / (rcond * anorm);
    if (!(cond <= f->cond_max))
        return singular_error(f, t, cond);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++)
            w->Y[i * d + j] = X[i * d + j] - f->m0[j] - t * f->b[j];
    info = LAPACKE_dgetrs(LAPACK_COL_MAJOR, 'T', dd, (lapack_int)n, w->A, dd, w->piv, w->Y, dd);
    if (info != 0)
        return fv_error(FV_ENUMERIC, "dgetrs failed, info = %d", (int)info);
    fill_rows(n, d, f->b, out);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)d, (int)d, 1.0, w->Y, (int)d, w->N, (int)d,
                1.0, out, (int)d);
    return FV_OK;
}

static int check_work(const fv_field *f, size_t n, const fv_field_work *w)
{
    if (w->d != f->d || w->n < n)
        return fv_error(FV_EINPUT, "field workspace is for %zu points in dimension %zu, asked for %zu in %zu", w->n,
                        w->d, n, f->d);
    return FV_OK;
}

int fv_field_eval_times(const fv_field *f, size_t nt, const double *ts, size_t n, const double *X, double *out,
                        fv_field_work *w)
{
    int st;
    if ((st = check_work(f, n, w)))
        return st;
    for (size_t k = 0; k < nt; k++)
        if (!(ts[k] >= 0.0 && ts[k] <= 1.0))
            return fv_error(FV_EINPUT, "time t = %g is outside [0, 1]", ts[k]);
    if (f->symmetric)
        return eval_symmetric(f, nt, ts, n, X, out, w);
    for (size_t k = 0; k < nt; k++)
        if ((st = eval_general(f, ts[k], n, X, out + k * n * f->d, w)))
            return st;
    return FV_OK;
}

int fv_field_eval(const fv_field *f, double t, size_t n, const double *X, double *out, fv_field_work *w)
{
    return fv_field_eval_times(f, 1, &t, n, X, out, w);
}

int fv_field_map(const fv_field *f, size_t n, const double *X, double *out, fv_field_work *w)
{
    size_t d = f->d;
    int st;
    if (f->kind == FV_FIELD_MARKOV)
        return fv_error(FV_EINPUT, "the Markov field has no coupling map (the independent coupling is not a map)");
    if ((st = check_work(f, n, w)))
        return st;
    double *D = w->Y, *E = w->Z;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++)
            D[i * d + j] = X[i * d + j] - f->m0[j];
    fill_rows(n, d, f->m1, out);
    if (f->symmetric) { /* K = V diag(1 + l) V^T */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)d, (int)d, 1.0, D, (int)d, f->V, (int)d,
                    0.0, E, (int)d);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < d; j++)
                E[i * d + j] *= 1.0 + f->l[j];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)d, (int)d, 1.0, E, (int)d, f->V, (int)d,
                    1.0, out, (int)d);
    } else {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)d, (int)d, 1.0, D, (int)d, f->K, (int)d,
                    1.0, out, (int)d);
    }
    return FV_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int fv_field_singular_times(const fv_field *f, double *times, size_t *count)
{
    *count = 0;
    if (f->kind != FV_FIELD_ROTATION)
        return FV_OK;
    size_t d = f->d;
    double *wr = malloc(d * sizeof *wr), *wi = malloc(d * sizeof *wi);
    int st = (!wr || !wi) ? fv_error(FV_ENOMEM, "out of memory") : fv_linalg_eig(d, f->K, wr, wi);
    if (!st) {
        for (size_t i = 0; i < d; i++)
            if (wi[i] == 0.0 && wr[i] <= 0.0)
                times[(*count)++] = 1.0 / (1.0 - wr[i]);
        qsort(times, *count, sizeof *times, cmp_double);
    }
    free(wr);
    free(wi);
    return st;
}

const char *fv_field_kind_name(fv_field_kind k)
{
    static const char *names[] = {"ot", "rotation", "markov"};
    return names[k];
}
