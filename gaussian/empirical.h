/* empirical.h: the exact minimizer v* of the CFM loss between a Gaussian and a FINITE data set
 * {y_1, ..., y_N} with the independent coupling (docs/THEORY.md section 7), the loss floor
 * L*(t) = E|u - v*(X_t, t)|^2 and the excess E|v - v*|^2 of any field, in double precision.
 *
 *   forward  (Gaussian N(m0, S0) -> data):  r_j = x - (1-t) m0 - t y_j,  C_t = (1-t)^2 S0 + f^2 I,
 *            v* = sum_j w_j [y_j - m0 + ((f f') I - (1-t) S0) C_t^{-1} r_j]
 *   backward (data -> Gaussian N(m1, S1)):  r_j = x - t m1 - (1-t) y_j,  C_t = t^2 S1 + f^2 I,
 *            v* = sum_j w_j [m1 - y_j + ((f f') I + t S1) C_t^{-1} r_j]
 *   w_j = softmax_j(-r_j^T C_t^{-1} r_j / 2), f f' only with the derivative term.
 * The bracket is affine in y_j, so v* needs only the weighted mean ybar = sum_j w_j y_j: per time and
 * block of data, ONE matrix product of the points against the data gives the weights' logits and one
 * more gives ybar. The Gaussian end's covariance S = U diag(lambda) U^T is diagonalized once at build
 * time and the data rotated once into its eigenbasis (S a multiple of I: nothing rotated), so every
 * C_t is diagonal there. The softmax runs online over blocks of data (log-sum-exp with a running
 * maximum), so memory stays bounded by the workspace whatever N is and far-away points never give NaN.
 *
 * Storage: the data are kept either as doubles (an owned copy: fv_empirical_build) or as the caller's
 * floats by pointer (fv_empirical_build_f32: an image set of 60,000 x 3,072 pixels is not copied; the
 * caller keeps it alive while the engine lives). With a non-isotropic S the rotated data are an owned
 * double copy in both cases. Every computation is in double precision. */
#ifndef FV_EMPIRICAL_H
#define FV_EMPIRICAL_H

#include "core/ode.h"
#include "core/rng.h"
#include "gaussian/problem.h"

#include <stddef.h>

/* Which end is the Gaussian: forward = noise -> data (train's default), backward = data -> noise. */
typedef enum { FV_EMP_FORWARD = 0, FV_EMP_BACKWARD } fv_emp_direction;

typedef struct {
    size_t n, d;              /* data points and dimension */
    fv_emp_direction dir;
    const float *Yf;          /* n x d data by pointer (build_f32, isotropic S), else NULL */
    double *Yd;               /* n x d data as doubles (owned; in S's eigenbasis when !isotropic) */
    double *ynorm2;           /* n: |y_j|^2 (isotropic only) */
    double *m;                /* d: mean of the Gaussian end (m0 forward, m1 backward) */
    int isotropic;            /* S = s I: no rotation */
    double s;                 /* isotropic: the scale s */
    double *U, *lambda;       /* !isotropic: S = U diag(lambda) U^T (U's COLUMNS are eigenvectors) */
    double sigma;
    fv_schedule schedule;
    int deriv_term;
    double *buf;              /* owns Yd, ynorm2, m, U, lambda */
} fv_empirical;

/* Caller-owned scratch for evaluating at up to `chunk` points at a time (more are done in chunks),
 * with the data in blocks of `block` rows. */
typedef struct {
    size_t chunk, block;
    double *xr;               /* chunk x d: points, shifted and rotated */
    double *logit;            /* chunk x block */
    double *yb;               /* block x d: a block of data as doubles (float storage only) */
    double *acc;              /* chunk x d: running weighted sums of y */
    double *mx, *sum;         /* chunk: running maximum logit and sum of exp(logit - mx) */
    double *qb;               /* block: per-row quadratic terms */
    double *ck, *ak;          /* d: 1 / c_k, and the correction factor per eigen-coordinate */
    double *out, *tmp;        /* chunk x d: v* of a chunk (excess, floor), and a rotation buffer */
    double *buf;
} fv_empirical_work;

/* Build the engine from n x d data Y (copied as doubles) and the Gaussian end and noise of a
 * validated problem p of dimension d: forward uses p->m0, p->S0, backward p->m1, p->S1; sigma,
 * schedule and deriv_term always. FV_EINPUT for n = 0 or a non-finite datum (naming its row). */
int fv_empirical_build(fv_empirical *e, const fv_problem *p, fv_emp_direction dir, size_t n, const double *Y);
/* The same with float data kept BY POINTER when the Gaussian end's covariance is a multiple of I (else
 * rotated into an owned double copy); Y must outlive e. */
int fv_empirical_build_f32(fv_empirical *e, const fv_problem *p, fv_emp_direction dir, size_t n, const float *Y);
void fv_empirical_free(fv_empirical *e);

/* Scratch for chunks of `chunk` points (0: 256); the block of data rows is chosen to keep the logits
 * near 4 MiB. FV_EINPUT when the sizes can never fit (size.h), FV_ENOMEM when malloc fails. */
int fv_empirical_work_alloc(fv_empirical_work *w, const fv_empirical *e, size_t chunk);
void fv_empirical_work_free(fv_empirical_work *w);

/* FV_ESINGULAR naming t when C_t is singular there (forward: t = 1 with f(1) = 0, i.e. sigma = 0 or
 * the bridge; backward: t = 0 with f(0) = 0) or t is outside [0, 1]; FV_OK otherwise. */
int fv_empirical_check_time(const fv_empirical *e, double t);

/* out (n x d) = v*(X, t) for X (n x d). FV_ESINGULAR (fv_empirical_check_time) leaves out untouched. */
int fv_empirical_eval(const fv_empirical *e, double t, size_t n, const double *X, double *out, fv_empirical_work *w);

/* n rows of the interpolant at time t: X (n x d) = X_t and U (n x d) = the regression target u, from
 * the stream r (per row: the Gaussian end's d normals, the data index J uniform over the data, Z's d
 * normals). U may be NULL (X_t alone: then a bridge's infinite f'(t) at t = 0 or 1 does not matter). */
int fv_empirical_draw(const fv_empirical *e, double t, size_t n, fv_rng *r, double *X, double *U);

/* The excess of a field at n points X at time t: mean over rows of |V_i - v*(X_i, t)|^2 and its
 * standard error (se = 0 for n = 1). */
int fv_empirical_excess(const fv_empirical *e, double t, size_t n, const double *X, const double *V,
                        fv_empirical_work *w, double *mean, double *se);

/* The loss floor L*(t) = E|u - v*(X_t, t)|^2 by Monte Carlo over nmc rows of the interpolant
 * (fv_empirical_draw from the stream r), with its standard error. */
int fv_empirical_floor(const fv_empirical *e, double t, size_t nmc, fv_rng *r, fv_empirical_work *w, double *mean,
                       double *se);

/* Integrate dx/dt = v*(x, t) from t = 0 to 1 for n points X (n x d, overwritten), fixed-step (Euler,
 * RK4: o->steps steps) or RK45 (o's tolerances). Where C_1 is singular (forward with f(1) = 0) the
 * solver stops at 1 - 1/o->steps and the last step is an Euler step, x + (1-t) v*(x, t), which for
 * sigma = 0 is exactly E[X1 | X_t = x]: the flow lands on the data. A backward flow with f(0) = 0 starts
 * at the singular time: FV_ESINGULAR naming t = 0. */
int fv_empirical_transport(const fv_empirical *e, size_t n, double *X, const fv_ode_opts *o, fv_empirical_work *w);

const char *fv_emp_direction_name(fv_emp_direction dir);

#endif
