/* crossover.h: the critical noise sigma*(alpha) of docs/THEORY.md section 3: the noise level at which
 * the integrated gradient variances of the OT field and of the pair-optimal (rotational) field are
 * equal, on data from the rotational coupling. Above sigma* the OT field has the lower variance. */
#ifndef FV_CROSSOVER_H
#define FV_CROSSOVER_H

#include "gaussian/problem.h"

/* D(sigma) = V_OT(sigma) - V_rot(sigma), the integrated total variances (fv_variance_integrated with
 * relative accuracy epsrel) on the rotational coupling of p (p->R set, p->sigma ignored). */
int fv_crossover_gap(const fv_problem *p, double sigma, double epsrel, double *gap);

/* The smallest sigma in (0, sigma_max] with D(sigma) = 0: D is scanned on `nscan` equal steps for the
 * first sign change, which is then refined by GSL's Brent solver to |bracket| <= xtol. *found = 0
 * when D keeps its sign over the range. FV_EDIVERGE (from the variance engine, naming the singular
 * times) when the rotational field is singular at some t in [0, 1]. */
int fv_crossover_sigma(const fv_problem *p, double sigma_max, size_t nscan, double xtol, double epsrel,
                       double *sigma_star, int *found);

#endif
