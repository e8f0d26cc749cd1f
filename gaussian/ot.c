/* ot.c: the Gaussian OT map matrix and W2 distance (see ot.h). */
#include "gaussian/ot.h"

#include "core/error.h"
#include "core/linalg.h"

#include <stdlib.h>

/* C = (S0^{1/2} S1 S0^{1/2})^{1/2}; also returns S0^{1/2} in R0 when asked. */
static int cross_root(size_t d, const double *S0, const double *S1, double *R0, double *C)
{
    double *T = malloc(d * d * sizeof *T), *U = malloc(d * d * sizeof *U);
    int st;
    if (!T || !U) {
        st = fv_error(FV_ENOMEM, "out of memory in a %zu-dimensional OT map", d);
        goto done;
    }
    if ((st = fv_linalg_sqrtm_spd(d, S0, R0)))
        goto done;
    fv_mat_mul(d, d, d, R0, S1, T);
    fv_mat_mul(d, d, d, T, R0, U);
    for (size_t i = 0; i < d; i++) /* symmetrize: U is symmetric up to rounding */
        for (size_t j = 0; j < i; j++)
            U[i * d + j] = U[j * d + i] = 0.5 * (U[i * d + j] + U[j * d + i]);
    st = fv_linalg_sqrtm_spd(d, U, C);
done:
    free(T);
    free(U);
    return st;
}

int fv_ot_map_matrix(size_t d, const double *S0, const double *S1, double *G)
{
    double *R0 = malloc(d * d * sizeof *R0), *C = malloc(d * d * sizeof *C), *Ri = malloc(d * d * sizeof *Ri),
           *T = malloc(d * d * sizeof *T);
    int st;
    if (!R0 || !C || !Ri || !T) {
        st = fv_error(FV_ENOMEM, "out of memory in a %zu-dimensional OT map", d);
        goto done;
    }
    if ((st = cross_root(d, S0, S1, R0, C)) || (st = fv_linalg_invsqrtm_spd(d, S0, Ri)))
        goto done;
    fv_mat_mul(d, d, d, Ri, C, T);
    fv_mat_mul(d, d, d, T, Ri, G);
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < i; j++)
            G[i * d + j] = G[j * d + i] = 0.5 * (G[i * d + j] + G[j * d + i]);
done:
    free(R0);
    free(C);
    free(Ri);
    free(T);
    return st;
}

int fv_w2_squared(size_t d, const double *m0, const double *S0, const double *m1, const double *S1, double *w2sq)
{
    double *R0 = malloc(d * d * sizeof *R0), *C = malloc(d * d * sizeof *C);
    int st;
    if (!R0 || !C) {
        st = fv_error(FV_ENOMEM, "out of memory in a %zu-dimensional W2 distance", d);
        goto done;
    }
    if ((st = cross_root(d, S0, S1, R0, C)))
        goto done;
    double s = 0.0;
    for (size_t i = 0; i < d; i++)
        s += (m1[i] - m0[i]) * (m1[i] - m0[i]) + S0[i * d + i] + S1[i * d + i] - 2.0 * C[i * d + i];
    *w2sq = s;
done:
    free(R0);
    free(C);
    return st;
}
