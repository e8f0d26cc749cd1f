/* variance.h: the exact variance of the CFM loss gradient for the affine field family of docs/THEORY.md
 * section 2, at one time, integrated over t ~ U(0,1), and its Monte-Carlo twin (docs/THEORY.md section 4).
 *
 * Setting: source X0 ~ N(m0, S0) (p->m0, p->S0; the paper's standard source is m0 = 0, S0 = I), target
 * X1 ~ N(m1, S1) (p->m1, p->S1), coupling p->coupling, interpolant X_t = (1-t) X0 + t X1 + f(t) Z,
 * target u = X1 - X0 (+ f'(t) Z with p->deriv_term). Field family, in the source-centred coordinate
 * (docs/THEORY.md section 2, general source): v(x, t) = theta + Theta (I + t Theta)^{-1} (x - m0 - t theta),
 * with m0 a fixed shift, not a parameter; per-sample loss l = |u - v(X_t, t)|^2 and its gradient
 * g = (grad_theta l, grad_Theta l) in R^{d + d*d}, the Theta block flattened row-major (entry i*d + j
 * is dl/dTheta_ij). Every "variance" below is the trace of the covariance of g (or of one block of it):
 * E|g|^2 - |E g|^2. For the standard source everything reduces to docs/THEORY.md section 4.
 *
 * Couplings, with xi0, xi1 ~ N(0, I), L0 = S0^{1/2} (symmetric root) and X0 = m0 + L0 xi0:
 *   OT:          X1 = m1 + G (X0 - m0) = m1 + G L0 xi0, G = S0^{-1/2} (S0^{1/2} S1 S0^{1/2})^{1/2} S0^{-1/2}
 *                (gaussian/ot.h); M^{1/2} X0 for the standard source.
 *   rotational:  X1 = m1 + S1^{1/2} R xi0 = m1 + K_R (X0 - m0), K_R = S1^{1/2} R S0^{-1/2}: the same
 *                coupling as field.h's rotation field and the training data (src/nn/cfm.c use fv_field_map).
 *                [derived] It keeps both marginals for any orthogonal R (K_R S0 K_R^T = S1); for a
 *                non-isotropic source it is not the OT coupling at R = I unless S0 and S1 commute.
 *   independent: X1 = m1 + S1^{1/2} xi1.
 * The noise stack is xi = (xi0, Z) or (xi0, xi1, Z) (independent); fv_variance_factors gives L0 and the
 * factor F1 of X1 (G L0, S1^{1/2} R, S1^{1/2}). */
#ifndef FV_VARIANCE_H
#define FV_VARIANCE_H

#include "gaussian/problem.h"

#include <stddef.h>
#include <stdint.h>

/* A = I + t Theta counts as singular where its relative condition number, |A^-1| times the size
 * 1 + t |Theta| of the terms that form it (infinity norms), exceeds this: the default of field.h. */
#define FV_VAR_COND_MAX 1e12

/* Which member of the family to evaluate (b = m1 - m0):
 *   OT:       theta = b, Theta = G - I (Lemma 1; M^{1/2} - I for the standard source).
 *   ROTATION: theta = b, Theta = K_R - I = S1^{1/2} R S0^{-1/2} - I, pair-optimal for the rotational
 *             coupling (needs p->R) [derived]: along the line x = X0 + t (X1 - X0),
 *             x - m0 - t b = (I + t (K_R - I)) (X0 - m0), so v = b + (K_R - I)(X0 - m0) = u.
 *   MARKOV:   the Markov field of the independent coupling, v*(x,t) = E[u | X_t = x] = b + B(t) (x - m0 - t b),
 *             B(t) = N D^{-1}, N = Cov(u, X_t) = t S1 - (1-t) S0 [+ f f' I],
 *             D = Cov(X_t) = (1-t)^2 S0 + t^2 S1 + f^2 I [derived]. It is not a fixed member of the family.
 *             [choice] At each t we use the member that coincides with it at that t: theta = b,
 *             Theta_t = B (I - t B)^{-1} = N E^{-1}, E = (1-t) S0 + (f^2 [- t f f']) I (then
 *             I + t Theta_t = D E^{-1}); for the standard source Theta_t = N / ((1-t) + f^2 [- t f f']).
 *             Theta_t is symmetric only when S0 and S1 commute. The gradient is then the gradient with
 *             respect to that member's parameters. With f(1) = 0 the member does not exist at t = 1
 *             (FV_ESINGULAR there); the integrand tends to 0 as t -> 1.
 *   CUSTOM:   theta (d) and Theta (d x d, row-major) given by the caller. */
typedef enum { FV_VFIELD_OT = 0, FV_VFIELD_ROTATION, FV_VFIELD_MARKOV, FV_VFIELD_CUSTOM } fv_vfield_kind;
typedef struct {
    fv_vfield_kind kind;
    const double *theta, *Theta; /* CUSTOM only */
} fv_vfield;

typedef struct {
    double var_theta, var_Theta, var_total; /* trace of the covariance of the per-sample gradient, by block */
    double loss;                            /* E l = E|u - v|^2 */
} fv_var;

/* Checks every entry point makes: a valid problem (fv_problem_validate: any source N(m0, S0) with S0
 * positive definite), and a vfield the problem can provide (p->R for ROTATION; finite theta and Theta
 * for CUSTOM). */
int fv_variance_check(const fv_problem *p, const fv_vfield *f);

/* The (theta, Theta) of a vfield at time t (only MARKOV depends on t). theta: d numbers, Theta: d x d.
 * p and f must have passed fv_variance_check (not repeated here, so that the Markov field can be asked
 * per sample: it needs no allocation for an isotropic source S0 = c I, one d x d solve otherwise; OT and
 * ROTATION take matrix square roots). FV_EINPUT for t outside [0, 1]; FV_ESINGULAR where the Markov
 * member does not exist (t = 1 with f(1) = 0). */
int fv_vfield_params(const fv_problem *p, const fv_vfield *f, double t, double *theta, double *Theta);

/* The factors of the noise stack (d x d each): L0 = S0^{1/2} and F1 with X1 = m1 + F1 xi0 (OT: G L0;
 * rotational: S1^{1/2} R) or X1 = m1 + F1 xi1 (independent: S1^{1/2}). Exactly I and M^{1/2} (R) for
 * the standard source. p is validated (fv_problem_validate). */
int fv_variance_factors(const fv_problem *p, double *L0, double *F1);

/* At one t in [0,1]. Eg (NULL or d + d*d numbers) receives E[g]; cov (NULL or (d+d*d)^2, row-major)
 * the full covariance of g. FV_ESINGULAR naming t if I + t Theta is singular there (the coupling maps
 * M^{1/2} R are always invertible); FV_EDIVERGE at t = 0 or 1 where f' is infinite (bridge schedule
 * with the derivative term). Without cov nothing of size (d + d*d)^2 is formed: O(d^3) per call, and
 * for the OT field (any source) and the Markov field of an isotropic source S0 = c I without Eg O(d^2)
 * after an O(d^3) setup (see fv_variance_at_times). */
int fv_variance_at(const fv_problem *p, const fv_vfield *f, double t, fv_var *out, double *Eg, double *cov);

/* The same at nt times ts[k] into out[k], with the setup (square roots, the OT map G, an
 * eigendecomposition) done once: the OT field and the Markov field of an isotropic source then cost
 * O(d^2) per time, other fields (including the Markov field of a general source, whose Theta_t changes
 * its eigenvectors with t) O(d^3). All times are checked before any is evaluated; on an error at some
 * time, out holds the earlier ones. */
int fv_variance_at_times(const fv_problem *p, const fv_vfield *f, size_t nt, const double *ts, fv_var *out);

/* FV_OK when the variance integrated over t ~ U(0,1) is finite, else FV_EDIVERGE saying why: I + t Theta
 * singular at some t in [0,1] (the times are named), or the bridge schedule with the derivative term and
 * sigma > 0 (f'^2 ~ sigma^2 / (4 t) near t = 0 and t = 1). */
int fv_variance_integrable(const fv_problem *p, const fv_vfield *f);

/* Over t ~ U(0,1): var = integral of E|g|^2 dt minus |integral of E[g] dt|^2 (per block), loss
 * integrated. The integrand is a vector (E|g|^2 per block, the loss, and all d + d*d entries of E[g]), so
 * this is a vector-valued adaptive quadrature: Gauss-Legendre rules from GSL (order FV_VAR_GL_ORDER) on
 * bisected intervals, each interval's error the change from its parent's rule to the rules on its two
 * halves. It stops when the error estimate of var_total is below epsrel |var_total| and that of the loss
 * below epsrel * loss, or at the rounding floor 64 DBL_EPSILON times the larger of the integral of
 * E|g|^2 (of the loss) and the problem's scale (1 + |m1 - m0|^2 + tr S0 + tr S1 + d sigma^2)^2, which keeps an
 * exactly zero variance (a pair field on its own coupling) from chasing rounding noise; *abserr (may be NULL) receives the estimate for var_total. FV_EDIVERGE as in
 * fv_variance_integrable; FV_ENUMERIC when FV_VAR_MAX_INTERVALS intervals do not reach the accuracy. */
#define FV_VAR_GL_ORDER 10
#define FV_VAR_MAX_INTERVALS 500
int fv_variance_integrated(const fv_problem *p, const fv_vfield *f, double epsrel, fv_var *out, double *abserr);

/* Monte Carlo from n sampled (t, xi0, xi1, Z) with the Philox stream (seed, stream) of src/core/rng.h;
 * t fixed if t >= 0 (t <= 1), else t ~ U(0,1) per sample (then FV_EDIVERGE where the exact integral
 * diverges, see fv_variance_integrable). Per sample, in this order: t if random, then xi0 (d normals),
 * xi1 (d normals, independent coupling only), Z (d normals); X0 = m0 + L0 xi0 and X1 = m1 + F1 xi0 (or
 * F1 xi1) with the factors of fv_variance_factors. Estimates: the unbiased sample trace of the
 * covariance per block over all n samples, and the mean loss. se_total is the standard error of var_total
 * by batch means: the n samples are split into FV_MC_BATCHES consecutive batches (fewer when n < 2
 * FV_MC_BATCHES; n >= 4 is required), the unbiased estimate is formed on each, and se_total is the
 * standard deviation of those batch estimates divided by sqrt(number of batches). To first order in 1/n
 * this is the standard error of the pooled estimate as well. */
#define FV_MC_BATCHES 50
typedef struct {
    double var_theta, var_Theta, var_total, se_total, loss;
    size_t n;
} fv_mc;
int fv_variance_mc(const fv_problem *p, const fv_vfield *f, double t, size_t n, uint64_t seed, uint64_t stream,
                   fv_mc *out);

/* Minibatch of B samples: every variance divides by B (the loss does not). B = 0 is treated as 1. */
void fv_var_minibatch(fv_var *v, size_t B);

/* Per-sample gradient. The workspace holds the LU factors of A = I + t Theta, so that many samples at
 * one (t, Theta) share one factorization. */
typedef struct {
    size_t d;
    double t;
    double *lu;  /* LU factors of A^T (the row-major A read column-major), d x d */
    int *piv;
    double *w, *r; /* w = A^{-1} (x - t theta) and r = u - v of the last sample */
} fv_cfm_work;

int fv_cfm_work_alloc(fv_cfm_work *w, size_t d);
void fv_cfm_work_free(fv_cfm_work *w);

/* Factor A = I + t Theta; FV_ESINGULAR naming t where it is singular (FV_VAR_COND_MAX). */
int fv_cfm_factor(fv_cfm_work *w, const double *Theta, double t);

/* g (d + d*d) = gradient of l = |u - v(x, t)|^2 at one sample (x, u), t as factored, with x in the
 * source-centred coordinate (x = X_t - m0; X_t itself for a source mean 0):
 * grad_theta l = -2 A^{-T} r, grad_Theta l = -2 (A^{-T} r) w^T, r = u - v, w = A^{-1} (x - t theta).
 * *loss (may be NULL) receives l. */
void fv_cfm_grad_factored(fv_cfm_work *w, const double *theta, const double *Theta, const double *x,
                          const double *u, double *g, double *loss);

/* The same in one call (allocates its own workspace). */
int fv_cfm_grad(size_t d, const double *theta, const double *Theta, const double *x, const double *u, double t,
                double *g, double *loss);

#endif
