/* problem.h: one transport problem between Gaussians, shared by every closed-form and learned
 * engine: source N(m0, S0), target N(m1, S1), the coupling that pairs them, and the interpolant's
 * noise schedule (docs/THEORY.md section 1). */
#ifndef FV_PROBLEM_H
#define FV_PROBLEM_H

#include "core/rng.h"
#include "gaussian/noise.h"

#include <stddef.h>

typedef enum { FV_COUPLING_OT = 0, FV_COUPLING_ROTATION, FV_COUPLING_INDEPENDENT } fv_coupling;

typedef struct {
    size_t d;
    double *m0, *S0;       /* source mean (d) and covariance (d x d); default N(0, I) */
    double *m1, *S1;       /* target mean and covariance */
    fv_coupling coupling;
    double *R;             /* d x d orthogonal matrix of the rotational coupling (NULL otherwise) */
    double sigma;          /* noise level of the interpolant */
    fv_schedule schedule;  /* f(t) = sigma (constant) or sigma sqrt(t(1-t)) (bridge) */
    int deriv_term;        /* add f'(t) Z to the regression target (bridge schedule) */
} fv_problem;

/* Allocate a problem of dimension d: source and target N(0, I), OT coupling, sigma = 0. */
int fv_problem_alloc(fv_problem *p, size_t d);
void fv_problem_free(fv_problem *p);

/* R is accepted as orthogonal when max |R^T R - I| <= FV_ORTHOGONAL_TOL (problem.c says why this
 * value); FV_ORTHOGONAL_TOL_TEXT is the same number for help texts. A reflection (det R = -1) is a
 * valid coupling too (docs/THEORY.md: any orthogonal R); its A(t) is singular at some t in (0, 1), which
 * the fields report as a singular time. */
#define FV_ORTHOGONAL_TOL 5e-7
#define FV_ORTHOGONAL_TOL_TEXT "5e-7"

/* Validate covariances (finite, symmetric, positive definite), means (finite), R (orthogonal),
 * sigma (finite, >= 0). Messages name the flag a user would have set. */
int fv_problem_validate(const fv_problem *p);

/* The default rotation of docs/THEORY.md section 1: 2x2 rotations by `deg` degrees on coordinate pairs
 * (1,2), (3,4), ..., and 1 on the last coordinate when d is odd. R is d x d. */
void fv_rotation_blocks(size_t d, double deg, double *R);

/* The reference problem of docs/THEORY.md section 4: d = 2, target mean (1, -0.5), covariance
 * [[2, 0.6], [0.6, 1]], standard source; the rotational coupling by `deg` degrees when deg >= 0
 * (else OT); noise sigma, constant schedule. */
int fv_problem_reference(fv_problem *p, double deg, double sigma);

/* A random SPD matrix S = A A^T / d + floor I, A with standard normal entries from r: its
 * eigenvalues spread over about [floor, floor + 4]. */
void fv_random_spd(size_t d, double floor, fv_rng *r, double *S);

/* n samples of N(mean, cov) into X (n x d), mean + cov^{1/2} z with z from the stream r. */
int fv_gaussian_sample(size_t d, const double *mean, const double *cov, size_t n, fv_rng *r, double *X);

/* f(t) f'(t), finite everywhere: sigma^2 (1 - 2t) / 2 for the bridge, 0 for a constant. */
double fv_noise_ffprime(fv_schedule s, double sigma, double t);

const char *fv_coupling_name(fv_coupling c);
const char *fv_schedule_name(fv_schedule s);

#endif
