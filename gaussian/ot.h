/* ot.h: optimal transport between two Gaussians: the linear part of the OT map and the
 * 2-Wasserstein distance (docs/THEORY.md section 2, "General Gaussian source"). */
#ifndef FV_OT_H
#define FV_OT_H

#include <stddef.h>

/* G = S0^{-1/2} (S0^{1/2} S1 S0^{1/2})^{1/2} S0^{-1/2}, so T(x) = m1 + G (x - m0) is the OT map
 * from N(m0, S0) to N(m1, S1). G is symmetric positive definite (returned exactly symmetric). */
int fv_ot_map_matrix(size_t d, const double *S0, const double *S1, double *G);

/* W2^2 = |m1 - m0|^2 + tr(S0 + S1 - 2 (S0^{1/2} S1 S0^{1/2})^{1/2}). */
int fv_w2_squared(size_t d, const double *m0, const double *S0, const double *m1, const double *S1, double *w2sq);

#endif
