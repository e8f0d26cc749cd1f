/* test_linalg.c: the LAPACKE/CBLAS wrappers against identities on random matrices. */
#include <criterion/criterion.h>

#include "core/error.h"
#include "core/linalg.h"
#include "helpers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define D 7

Test(linalg, eigh_reconstructs_matrix)
{
    fv_rng r = fv_rng_make(11, 0);
    double S[D * D], w[D], V[D * D], VW[D * D], back[D * D];
    fv_random_spd(D, 0.3, &r, S);
    cr_assert_eq(fv_linalg_eigh(D, S, w, V), FV_OK);
    for (size_t i = 0; i < D; i++)
        for (size_t j = 0; j < D; j++)
            VW[i * D + j] = V[i * D + j] * w[j];
    double Vt[D * D];
    fv_mat_transpose(D, D, V, Vt);
    fv_mat_mul(D, D, D, VW, Vt, back);
    cr_assert_lt(fv_max_abs_diff(D * D, S, back), 1e-12);
    for (size_t j = 1; j < D; j++)
        cr_assert_leq(w[j - 1], w[j], "eigenvalues ascending");
}

Test(linalg, sqrtm_squares_back_and_inverse_root_inverts)
{
    fv_rng r = fv_rng_make(12, 0);
    double S[D * D], R[D * D], Ri[D * D], RR[D * D], I[D * D], P[D * D];
    fv_random_spd(D, 0.2, &r, S);
    cr_assert_eq(fv_linalg_sqrtm_spd(D, S, R), FV_OK);
    cr_assert_eq(fv_linalg_invsqrtm_spd(D, S, Ri), FV_OK);
    fv_mat_mul(D, D, D, R, R, RR);
    cr_assert_lt(fv_max_abs_diff(D * D, S, RR), 1e-12);
    fv_mat_mul(D, D, D, R, Ri, P);
    fv_mat_identity(D, I);
    cr_assert_lt(fv_max_abs_diff(D * D, I, P), 1e-12);
}

Test(linalg, sqrtm_rejects_indefinite)
{
    double A[4] = {1, 2, 2, 1}; /* eigenvalues 3 and -1 */
    double R[4];
    cr_assert_eq(fv_linalg_sqrtm_spd(2, A, R), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "-1") != NULL, "message names the eigenvalue: %s", fv_last_error());
}

Test(linalg, spd_check_accepts_spd)
{
    fv_rng r = fv_rng_make(13, 0);
    double S[D * D];
    fv_random_spd(D, 0.1, &r, S);
    cr_assert_eq(fv_linalg_spd_check(D, S, "--target-cov", 1e-12), FV_OK);
}

Test(linalg, spd_check_rejects_asymmetric)
{
    double A[4] = {2, 0.6, 0.7, 1};
    cr_assert_eq(fv_linalg_spd_check(2, A, "--target-cov", 1e-12), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "--target-cov is not symmetric") != NULL, "%s", fv_last_error());
}

Test(linalg, spd_check_rejects_indefinite)
{
    double A[4] = {1, 2, 2, 1};
    cr_assert_eq(fv_linalg_spd_check(2, A, "--source-cov", 1e-12), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "--source-cov is not positive definite") != NULL, "%s", fv_last_error());
}

Test(linalg, spd_check_rejects_nan)
{
    double A[4] = {1, 0, 0, NAN};
    cr_assert_eq(fv_linalg_spd_check(2, A, "--target-cov", 1e-12), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "(2,2) is not a finite number") != NULL, "%s", fv_last_error());
}

Test(linalg, solve_matches_product)
{
    fv_rng r = fv_rng_make(14, 0);
    double A[D * D], X[D * 3], B[D * 3];
    fv_rng_normal(&r, D * D, A);
    fv_rng_normal(&r, D * 3, X);
    fv_mat_mul(D, D, 3, A, X, B);
    cr_assert_eq(fv_linalg_solve(D, A, 3, B), FV_OK);
    cr_assert_lt(fv_max_abs_diff(D * 3, X, B), 1e-10);
}

Test(linalg, solve_reports_singular)
{
    double A[4] = {1, 2, 2, 4}, B[2] = {1, 1};
    cr_assert_eq(fv_linalg_solve(2, A, 1, B), FV_ESINGULAR);
}

Test(linalg, rcond_is_zero_for_singular_and_one_for_identity)
{
    double A[4] = {1, 2, 2, 4}, I[4] = {1, 0, 0, 1}, rc;
    cr_assert_eq(fv_linalg_rcond(2, A, &rc), FV_OK);
    cr_assert_eq(rc, 0.0);
    cr_assert_eq(fv_linalg_rcond(2, I, &rc), FV_OK);
    cr_assert_float_eq(rc, 1.0, 1e-15);
}

Test(linalg, eig_of_rotation_is_conjugate_pair)
{
    double R[4], wr[2], wi[2];
    fv_rotation_blocks(2, 120.0, R);
    cr_assert_eq(fv_linalg_eig(2, R, wr, wi), FV_OK);
    cr_assert_float_eq(wr[0], -0.5, 1e-14);
    cr_assert_float_eq(fabs(wi[0]), sqrt(3.0) / 2, 1e-14);
    cr_assert_eq(wi[0], -wi[1]);
}
