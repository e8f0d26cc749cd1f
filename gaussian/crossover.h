/* crossover.h: the critical noise sigma*(alpha) of docs/THEORY.md section 3: the noise level at which
 * the integrated gradient variances of the OT field and of the pair-optimal (rotational) field are
 * equal, on data from the rotational coupling. Above sigma* the OT field has the lower variance. */
#ifndef FV_CROSSOVER_H
#define FV_CROSSOVER_H

#include "gaussian/problem.h"

#include <float.h>

/* D(sigma) = V_OT(sigma) - V_rot(sigma), the integrated total variances (fv_variance_integrated with
 * relative accuracy epsrel) on the rotational coupling of p (p->R set, p->sigma ignored). */
int fv_crossover_gap(const fv_problem *p, double sigma, double epsrel, double *gap);

/* How far the rotational coupling of p is from the OT coupling: max |K_R - G| / max |G| over the
 * factors of fv_variance_factors (X1 = m1 + F1 xi0 for both). When it is at rounding level
 * (<= FV_CROSSOVER_SAME_COUPLING) the two fields are the same field and their variance gap is rounding
 * noise whose sign means nothing: R = I with commuting S0 and S1, and every R at d = 1. */
#define FV_CROSSOVER_SAME_COUPLING (64 * DBL_EPSILON)
int fv_crossover_coupling_distance(const fv_problem *p, double *distance);

/* The smallest sigma in (0, sigma_max] with D(sigma) = 0: D is scanned on `nscan` equal steps for the
 * first sign change, which is then refined by GSL's Brent solver to |bracket| <= xtol. *found = 0
 * when D keeps its sign over the range, and without scanning when the rotational coupling is the OT
 * coupling (fv_crossover_coupling_distance at rounding level: D is 0 up to rounding for every sigma). FV_EDIVERGE (from the variance engine, naming the singular
 * times) when the rotational field is singular at some t in [0, 1]. */
int fv_crossover_sigma(const fv_problem *p, double sigma_max, size_t nscan, double xtol, double epsrel,
                       double *sigma_star, int *found);

#endif
