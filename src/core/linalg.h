/* linalg.h: the dense linear algebra flowvar needs, as thin wrappers over LAPACKE and CBLAS.
 *
 * All matrices are flat row-major arrays of doubles, n x n unless stated. Functions that are called
 * once per problem (eigendecompositions, square roots) allocate their own LAPACK workspace; the
 * per-time-step routines of the field engine take caller-owned buffers instead. */
#ifndef FV_LINALG_H
#define FV_LINALG_H

#include <stddef.h>

/* Symmetric eigendecomposition A = V diag(w) V^T (LAPACK dsyevd). w ascending; the eigenvectors
 * are the COLUMNS of the row-major V. A is read only. */
int fv_linalg_eigh(size_t n, const double *A, double *w, double *V);

/* Check that A (named `what` in messages, e.g. "--target-cov") holds finite numbers, is symmetric
 * to `sym_tol` relative to its largest entry, and is positive definite (Cholesky succeeds).
 * Returns FV_EINPUT with a message naming the first problem found. */
int fv_linalg_spd_check(size_t n, const double *A, const char *what, double sym_tol);

/* out = V diag(f(w)) V^T for a symmetric A = V diag(w) V^T: the matrix function behind the square
 * roots. Fails with FV_EINPUT if some eigenvalue is outside f's domain (f returns NaN). */
int fv_linalg_sym_func(size_t n, const double *A, double (*f)(double), double *out);

/* Symmetric positive definite square root and inverse square root. */
int fv_linalg_sqrtm_spd(size_t n, const double *A, double *out);
int fv_linalg_invsqrtm_spd(size_t n, const double *A, double *out);

/* Solve A X = B for X (B is n x nrhs, row-major, overwritten with X). FV_ESINGULAR if A is
 * exactly singular. A is read only. */
int fv_linalg_solve(size_t n, const double *A, size_t nrhs, double *B);

/* Reciprocal condition number of A in the 1-norm (LAPACK dgetrf + dgecon); 0 if exactly singular. */
int fv_linalg_rcond(size_t n, const double *A, double *rcond);

/* Eigenvalues of a general real matrix (LAPACK dgeev): wr + i wi. Real eigenvalues have wi == 0
 * exactly; complex ones come in conjugate pairs. */
int fv_linalg_eig(size_t n, const double *A, double *wr, double *wi);

/* Small helpers on row-major matrices. */
void fv_mat_identity(size_t n, double *A);
void fv_mat_transpose(size_t rows, size_t cols, const double *A, double *At); /* At: cols x rows */
/* C = A B with A m x k, B k x n (cblas_dgemm). */
void fv_mat_mul(size_t m, size_t k, size_t n, const double *A, const double *B, double *C);
/* Largest absolute entry of A - B over count elements. */
double fv_max_abs_diff(size_t count, const double *A, const double *B);
int fv_all_finite(size_t count, const double *x);

#endif
