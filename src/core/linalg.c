/* linalg.c: LAPACKE/CBLAS wrappers for eigendecompositions, matrix square roots, solves and
 * condition numbers (see linalg.h). */
#include "linalg.h"

#include "error.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int fv_linalg_eigh(size_t n, const double *A, double *w, double *V)
{
    memcpy(V, A, n * n * sizeof *V);
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)n, V, (lapack_int)n, w);
    if (info != 0)
        return fv_error(FV_ENUMERIC, "symmetric eigendecomposition (dsyevd) failed, info = %d", (int)info);
    return FV_OK;
}

int fv_all_finite(size_t count, const double *x)
{
    for (size_t i = 0; i < count; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

int fv_linalg_spd_check(size_t n, const double *A, const char *what, double sym_tol)
{
    double scale = 0.0;
    for (size_t i = 0; i < n * n; i++) {
        if (!isfinite(A[i]))
            return fv_error(FV_EINPUT, "%s: entry (%zu,%zu) is not a finite number", what, i / n + 1, i % n + 1);
        scale = fmax(scale, fabs(A[i]));
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (fabs(A[i * n + j] - A[j * n + i]) > sym_tol * scale)
                return fv_error(FV_EINPUT, "%s is not symmetric: entry (%zu,%zu) = %g but (%zu,%zu) = %g", what,
                                i + 1, j + 1, A[i * n + j], j + 1, i + 1, A[j * n + i]);
    double *L = malloc(n * n * sizeof *L);
    if (!L)
        return fv_error(FV_ENOMEM, "out of memory checking %s", what);
    memcpy(L, A, n * n * sizeof *L);
    lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)n, L, (lapack_int)n);
    free(L);
    if (info > 0)
        return fv_error(FV_EINPUT, "%s is not positive definite (Cholesky fails at leading minor %d)", what, (int)info);
    if (info < 0)
        return fv_error(FV_ENUMERIC, "Cholesky (dpotrf) rejected argument %d", (int)-info);
    return FV_OK;
}

int fv_linalg_sym_func(size_t n, const double *A, double (*f)(double), double *out)
{
    double *w = malloc(n * sizeof *w), *V = malloc(n * n * sizeof *V), *FV = malloc(n * n * sizeof *FV);
    int st = FV_OK;
    if (!w || !V || !FV) {
        st = fv_error(FV_ENOMEM, "out of memory in a %zu x %zu matrix function", n, n);
        goto done;
    }
    if ((st = fv_linalg_eigh(n, A, w, V)))
        goto done;
    for (size_t j = 0; j < n; j++) {
        double fw = f(w[j]);
        if (!isfinite(fw)) {
            st = fv_error(FV_EINPUT, "matrix function undefined at eigenvalue %g (matrix not positive definite?)", w[j]);
            goto done;
        }
        for (size_t i = 0; i < n; i++)
            FV[i * n + j] = V[i * n + j] * fw;
    }
    /* out = (V diag(f)) V^T */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n, (int)n, 1.0, FV, (int)n, V, (int)n, 0.0,
                out, (int)n);
done:
    free(w);
    free(V);
    free(FV);
    return st;
}

static double sqrt_pos(double x) { return x > 0 ? sqrt(x) : NAN; }
static double invsqrt_pos(double x) { return x > 0 ? 1.0 / sqrt(x) : NAN; }

int fv_linalg_sqrtm_spd(size_t n, const double *A, double *out) { return fv_linalg_sym_func(n, A, sqrt_pos, out); }

int fv_linalg_invsqrtm_spd(size_t n, const double *A, double *out)
{
    return fv_linalg_sym_func(n, A, invsqrt_pos, out);
}

int fv_linalg_solve(size_t n, const double *A, size_t nrhs, double *B)
{
    double *LU = malloc(n * n * sizeof *LU);
    lapack_int *piv = malloc(n * sizeof *piv);
    int st = FV_OK;
    if (!LU || !piv) {
        st = fv_error(FV_ENOMEM, "out of memory in a %zu x %zu solve", n, n);
        goto done;
    }
    memcpy(LU, A, n * n * sizeof *LU);
    lapack_int info = LAPACKE_dgesv(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)nrhs, LU, (lapack_int)n, piv, B,
                                    (lapack_int)nrhs);
    if (info > 0)
        st = fv_error(FV_ESINGULAR, "matrix is exactly singular (zero pivot %d)", (int)info);
    else if (info < 0)
        st = fv_error(FV_ENUMERIC, "dgesv rejected argument %d", (int)-info);
done:
    free(LU);
    free(piv);
    return st;
}

int fv_linalg_rcond(size_t n, const double *A, double *rcond)
{
    double *LU = malloc(n * n * sizeof *LU);
    lapack_int *piv = malloc(n * sizeof *piv);
    int st = FV_OK;
    if (!LU || !piv) {
        st = fv_error(FV_ENOMEM, "out of memory in a %zu x %zu condition estimate", n, n);
        goto done;
    }
    memcpy(LU, A, n * n * sizeof *LU);
    double anorm = LAPACKE_dlange(LAPACK_ROW_MAJOR, '1', (lapack_int)n, (lapack_int)n, LU, (lapack_int)n);
    lapack_int info = LAPACKE_dgetrf(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)n, LU, (lapack_int)n, piv);
    if (info > 0) {
        *rcond = 0.0;
        goto done;
    }
    if (info < 0 || LAPACKE_dgecon(LAPACK_ROW_MAJOR, '1', (lapack_int)n, LU, (lapack_int)n, anorm, rcond) != 0)
        st = fv_error(FV_ENUMERIC, "condition estimate (dgetrf/dgecon) failed");
done:
    free(LU);
    free(piv);
    return st;
}

int fv_linalg_eig(size_t n, const double *A, double *wr, double *wi)
{
    double *B = malloc(n * n * sizeof *B);
    if (!B)
        return fv_error(FV_ENOMEM, "out of memory in a %zu x %zu eigenvalue problem", n, n);
    memcpy(B, A, n * n * sizeof *B);
    lapack_int info =
        LAPACKE_dgeev(LAPACK_ROW_MAJOR, 'N', 'N', (lapack_int)n, B, (lapack_int)n, wr, wi, NULL, 1, NULL, 1);
    free(B);
    if (info != 0)
        return fv_error(FV_ENUMERIC, "general eigenvalue problem (dgeev) failed, info = %d", (int)info);
    return FV_OK;
}

void fv_mat_identity(size_t n, double *A)
{
    memset(A, 0, n * n * sizeof *A);
    for (size_t i = 0; i < n; i++)
        A[i * n + i] = 1.0;
}

void fv_mat_transpose(size_t rows, size_t cols, const double *A, double *At)
{
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++)
            At[j * rows + i] = A[i * cols + j];
}

void fv_mat_mul(size_t m, size_t k, size_t n, const double *A, const double *B, double *C)
{
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0, A, (int)k, B, (int)n, 0.0, C,
                (int)n);
}

double fv_max_abs_diff(size_t count, const double *A, const double *B)
{
    double m = 0.0;
    for (size_t i = 0; i < count; i++)
        m = fmax(m, fabs(A[i] - B[i]));
    return m;
}
