/* variance.c: exact first and second moments of the CFM loss gradient for the affine field family,
 * at one time and integrated over t ~ U(0,1), and the per-sample gradient (see variance.h).
 *
 * Derivation (docs/THEORY.md section 4, extended to theta != b and to a general source; the general-source
 * steps are written out in docs/variance_general_source.md) [derived, checked by Monte Carlo]:
 * Stack the noise as xi ~ N(0, I): xi = (xi0, Z) for the OT and rotational couplings, xi = (xi0, xi1, Z)
 * for the independent one, with X0 = m0 + L0 xi0, L0 = S0^{1/2}, and X1 = m1 + F1 xi0 (F1 = K L0 for
 * the coupling map K: G L0 for OT, S1^{1/2} R for the rotational coupling) or X1 = m1 + F1 xi1
 * (independent, F1 = S1^{1/2}). With b = m1 - m0 and delta = b - theta:
 *   X_t - m0 - t theta = t delta + L xi,   u = b + U xi,
 *   L = [(1-t) L0 + t F1, f I]  or  [(1-t) L0, t F1, f I],
 *   U = [F1 - L0, f' I]         or  [-L0, F1, f' I]          (f' only with the derivative term).
 * (For the standard source L0 = I, F1 = M^{1/2} R or M^{1/2}: docs/THEORY.md section 4.)
 * With A = I + t Theta (which commutes with Theta):
 *   w = A^{-1} (X_t - m0 - t theta) = w0 + W xi,   w0 = t A^{-1} delta,  W = A^{-1} L,
 *   r = u - v = delta + U xi - Theta w = r0 + Rr xi,  r0 = (I - t Theta A^{-1}) delta = A^{-1} delta,
 *                                                      Rr = U - Theta W,
 *   a = A^{-T} r = a0 + G xi,                  a0 = A^{-T} r0,  G = A^{-T} Rr,
 * and g_theta = -2 a, g_Theta = -2 a w^T. Let alpha = G xi, beta = W xi (centred, jointly Gaussian) and
 * P = G^T G, Q = W^T W, C = G W^T = E[alpha beta^T]; then tr P = |G|^2, tr Q = |W|^2, tr(PQ) = |C|^2, so
 * nothing of the size of xi squared is ever formed.
 *   E g_theta = -2 a0,  Var_theta = 4 tr P.
 *   E |a|^2 |w|^2 = |a0|^2 |w0|^2 + |a0|^2 tr Q + |w0|^2 tr P + 4 a0^T C w0 + E |alpha|^2 |beta|^2:
 *     the terms odd in xi vanish, E (a0.alpha)(w0.beta) = a0^T C w0, and by Isserlis
 *     E |alpha|^2 |beta|^2 = tr P tr Q + 2 tr(PQ).
 *   E g_Theta = -2 (a0 w0^T + C),  |E g_Theta|^2 = 4 (|a0|^2 |w0|^2 + 2 a0^T C w0 + tr(PQ)), hence
 *   Var_Theta = 4 (|a0|^2 tr Q + |w0|^2 tr P + 2 a0^T C w0 + tr P tr Q + tr(PQ)).
 *   loss = E |r|^2 = |r0|^2 + |Rr|^2.
 * At theta = b (a0 = w0 = 0) this is docs/THEORY.md section 4. The full covariance uses the covariance of
 * products of jointly Gaussian x, y, z, v with means m:
 *   Cov(xy, zv) = mx mz Cov(y,v) + mx mv Cov(y,z) + my mz Cov(x,v) + my mv Cov(x,z)
 *               + Cov(x,z) Cov(y,v) + Cov(x,v) Cov(y,z),
 * with Saa = G G^T = Cov(a), Sww = W W^T = Cov(w), C = Cov(a, w):
 *   Cov(g_theta_i, g_theta_k)   = 4 Saa_ik,
 *   Cov(g_theta_i, g_Theta_kl)  = 4 (a0_k C_il + w0_l Saa_ik),
 *   Cov(g_Theta_ij, g_Theta_kl) = 4 (a0_i a0_k Sww_jl + a0_i w0_l C_kj + w0_j a0_k C_il + w0_j w0_l Saa_ik
 *                                    + Saa_ik Sww_jl + C_il C_kj). */
#include "gaussian/variance.h"

#include "core/error.h"
#include "core/linalg.h"
#include "gaussian/ot.h"

#include <cblas.h>
#include <float.h>
#include <gsl/gsl_integration.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *vfield_name(fv_vfield_kind k)
{
    static const char *names[] = {"OT", "rotation", "Markov", "custom"};
    return names[k];
}

/* ---------------------------------------------------------------------------------------------------
 * Checks, the problem's square roots, and field parameters */

int fv_variance_check(const fv_problem *p, const fv_vfield *f)
{
    int st;
    if (!p || !f)
        return fv_error(FV_EINPUT, "variance engine called without a problem or a field");
    if ((st = fv_problem_validate(p)))
        return st;
    switch (f->kind) {
    case FV_VFIELD_OT:
    case FV_VFIELD_MARKOV: return FV_OK;
    case FV_VFIELD_ROTATION:
        if (!p->R)
            return fv_error(FV_EINPUT, "the rotation field needs a rotation: --angle DEG or --rotation R.npy");
        return FV_OK;
    case FV_VFIELD_CUSTOM:
        if (!f->theta || !f->Theta)
            return fv_error(FV_EINPUT, "a custom field needs both theta (%zu numbers) and Theta (%zu x %zu)", p->d,
                            p->d, p->d);
        if (!fv_all_finite(p->d, f->theta) || !fv_all_finite(p->d * p->d, f->Theta))
            return fv_error(FV_EINPUT, "the custom field's theta or Theta has a non-finite entry");
        return FV_OK;
    }
    return fv_error(FV_EINPUT, "unknown field kind %d", (int)f->kind);
}

static int check_time(double t)
{
    if (!(t >= 0.0 && t <= 1.0))
        return fv_error(FV_EINPUT, "time t = %g is outside [0, 1]", t);
    return FV_OK;
}

/* f(t) and the f'(t) the target carries (0 without the derivative term); FV_EDIVERGE where that f' is
 * infinite (bridge schedule at t = 0 or 1). */
static int noise_at(const fv_problem *p, double t, double *f, double *fp)
{
    fv_noise(p->schedule, p->sigma, t, f, fp);
    if (!p->deriv_term)
        *fp = 0.0;
    else if (!isfinite(*fp))
        return fv_error(FV_EDIVERGE, "f'(t) of the %s schedule is infinite at t = %g: the target u = X1 - X0 + "
                                     "f'(t) Z has infinite variance there",
                        fv_schedule_name(p->schedule), t);
    return FV_OK;
}

/* c when S0 = c I (an isotropic source, c > 0 once validated: every field then keeps the eigenvectors
 * of S1), else 0. */
static double isotropic_source(const fv_problem *p)
{
    size_t d = p->d;
    double c = p->S0[0];
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < d; j++)
            if (p->S0[i * d + j] != (i == j ? c : 0.0))
                return 0.0;
    return c;
}

/* The Markov member at t (variance.h): Theta_t = N E^{-1} with N = t S1 - (1-t) S0 + f f' I and
 * E = (1-t) S0 + (f^2 - t f f') I, from B (I - t B)^{-1}, B = N D^{-1}, I - t B = E D^{-1}. Since
 * f^2 - t f f' >= 0 for both schedules (sigma^2, f^2 without the derivative term, sigma^2 t / 2 for the
 * bridge with it), E is positive definite exactly when (1-t) + f^2 - t f f' > 0: everywhere but t = 1
 * with f(1) = 0. Returns f and the target's f'. */
static int markov_noise(const fv_problem *p, double t, double *f, double *fp)
{
    int st = noise_at(p, t, f, fp);
    if (st)
        return st;
    if (!((1.0 - t) + *f * *f - t * *f * *fp > 0.0))
        return fv_error(FV_ESINGULAR, "the Markov field has no member of the family at t = %g: I - t B(t) is "
                                      "singular there (theta = m1 - m0, Theta = B (I - t B)^-1 is infinite)",
                        t);
    return FV_OK;
}

/* The isotropic source S0 = c I: E is the scalar e = (1-t) c + f^2 - t f f' and Theta_t = scale S1 +
 * shift I, scale = t / e, shift = (f f' - (1-t) c) / e. */
static int markov_coeffs(const fv_problem *p, double c, double t, double *scale, double *shift)
{
    double f, fp;
    int st = markov_noise(p, t, &f, &fp);
    if (st)
        return st;
    double e = (1.0 - t) * c + f * f - t * f * fp;
    *scale = t / e;
    *shift = (f * fp - (1.0 - t) * c) / e;
    return FV_OK;
}

static int markov_params(const fv_problem *p, double t, double *Theta)
{
    size_t d = p->d;
    double c = isotropic_source(p), scale, shift, f, fp;
    int st;
    if (c > 0) {
        if ((st = markov_coeffs(p, c, t, &scale, &shift)))
            return st;
        for (size_t i = 0; i < d * d; i++)
            Theta[i] = scale * p->S1[i];
        for (size_t i = 0; i < d; i++)
            Theta[i * d + i] += shift;
        return FV_OK;
    }
    if ((st = markov_noise(p, t, &f, &fp)))
        return st;
    double *E = malloc(2 * d * d * sizeof *E), *N = E + d * d;
    if (!E)
        return fv_error(FV_ENOMEM, "out of memory for the Markov field in dimension %zu", d);
    for (size_t i = 0; i < d * d; i++) {
        E[i] = (1.0 - t) * p->S0[i];
        N[i] = t * p->S1[i] - (1.0 - t) * p->S0[i];
    }
    for (size_t i = 0; i < d; i++) {
        E[i * d + i] += f * f - t * f * fp;
        N[i * d + i] += f * fp;
    }
    /* E and N are symmetric: Theta = N E^{-1} = (E^{-1} N)^T */
    if (!(st = fv_linalg_solve(d, E, d, N)))
        fv_mat_transpose(d, d, N, Theta);
    free(E);
    return st;
}

/* The square roots and maps the couplings and fields are built from (d x d each, caller's buffers):
 *   S1 = V diag(s^2) V^T, S = S1^{1/2} = V diag(s) V^T, L0 = S0^{1/2}, G = the OT map matrix (ot.h), and
 *   F1, the factor of X1 (variance.h): G L0 (OT), S1^{1/2} R (rotational), S1^{1/2} (independent).
 * An isotropic source S0 = c I needs no cross root: L0 = sqrt(c) I, G = S / sqrt(c), G L0 = S, so the
 * standard source gets exactly I and M^{1/2}. G (needed by the OT field and the OT coupling) and F1 are
 * skipped when NULL. */
typedef struct {
    double c; /* S0 = c I, or 0 */
    double *V, *s, *S, *L0, *G, *F1;
} var_roots;

static int roots_compute(const fv_problem *p, var_roots *r)
{
    size_t d = p->d;
    int st;
    r->c = isotropic_source(p);
    if ((st = fv_linalg_eigh(d, p->S1, r->s, r->V)))
        return st;
    for (size_t i = 0; i < d; i++) {
        if (!(r->s[i] > 0))
            return fv_error(FV_EINPUT, "--target-cov is not positive definite (eigenvalue %g)", r->s[i]);
        r->s[i] = sqrt(r->s[i]);
        for (size_t j = 0; j < d; j++)
            r->L0[j * d + i] = r->V[j * d + i] * r->s[i]; /* V diag(s), scratch */
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d, (int)d, (int)d, 1.0, r->L0, (int)d, r->V, (int)d,
                0.0, r->S, (int)d);
    if (r->c > 0) {
        double rc = sqrt(r->c);
        fv_mat_identity(d, r->L0);
        for (size_t i = 0; i < d; i++)
            r->L0[i * d + i] = rc;
        for (size_t i = 0; r->G && i < d * d; i++)
            r->G[i] = r->S[i] / rc;
    } else if ((st = fv_linalg_sqrtm_spd(d, p->S0, r->L0)) || (r->G && (st = fv_ot_map_matrix(d, p->S0, p->S1, r->G)))) {
        return st;
    }
    if (!r->F1)
        return FV_OK;
    if (p->coupling == FV_COUPLING_ROTATION)
        fv_mat_mul(d, d, d, r->S, p->R, r->F1);
    else if (p->coupling == FV_COUPLING_OT && r->c == 0.0)
        fv_mat_mul(d, d, d, r->G, r->L0, r->F1);
    else
        memcpy(r->F1, r->S, d * d * sizeof *r->F1);
    return FV_OK;
}

int fv_variance_factors(const fv_problem *p, double *L0, double *F1)
{
    size_t d = p->d;
    int st;
    if ((st = fv_problem_validate(p)))
        return st;
    double *buf = malloc((3 * d * d + d) * sizeof *buf);
    if (!buf)
        return fv_error(FV_ENOMEM, "out of memory for the square roots of a %zu-dimensional problem", d);
    var_roots r = {0.0, buf, buf + 3 * d * d, buf + d * d, L0, p->coupling == FV_COUPLING_OT ? buf + 2 * d * d : NULL,
                   F1};
    st = roots_compute(p, &r);
    free(buf);
    return st;
}

/* theta = b = m1 - m0 and Theta of a fixed field (OT: G - I; rotation: K_R - I with the map
 * K_R = S1^{1/2} R S0^{-1/2} of the rotational coupling; custom: as given). */
static int fixed_params(const fv_problem *p, const fv_vfield *f, const var_roots *r, double *theta, double *Theta)
{
    size_t d = p->d;
    if (f->kind == FV_VFIELD_CUSTOM) {
        memcpy(theta, f->theta, d * sizeof *theta);
        memcpy(Theta, f->Theta, d * d * sizeof *Theta);
        return FV_OK;
    }
    for (size_t i = 0; i < d; i++)
        theta[i] = p->m1[i] - p->m0[i];
    if (f->kind == FV_VFIELD_OT) {
        memcpy(Theta, r->G, d * d * sizeof *Theta);
    } else if (r->c > 0) {
        double rc = sqrt(r->c);
        fv_mat_mul(d, d, d, r->S, p->R, Theta);
        for (size_t i = 0; i < d * d; i++)
            Theta[i] /= rc;
    } else {
        double *T = malloc(2 * d * d * sizeof *T), *Ri = T + d * d;
        int st = T ? fv_linalg_invsqrtm_spd(d, p->S0, Ri)
                   : fv_error(FV_ENOMEM, "out of memory for the rotation field in dimension %zu", d);
        if (!st) {
            fv_mat_mul(d, d, d, r->S, p->R, T);
            fv_mat_mul(d, d, d, T, Ri, Theta);
        }
        free(T);
        if (st)
            return st;
    }
    for (size_t i = 0; i < d; i++)
        Theta[i * d + i] -= 1.0;
    return FV_OK;
}

/* Parameters at t given the roots (r may be NULL for MARKOV and CUSTOM). */
static int params_with_roots(const fv_problem *p, const fv_vfield *f, const var_roots *r, double t, double *theta,
                             double *Theta)
{
    if (f->kind != FV_VFIELD_MARKOV)
        return fixed_params(p, f, r, theta, Theta);
    for (size_t i = 0; i < p->d; i++)
        theta[i] = p->m1[i] - p->m0[i];
    return markov_params(p, t, Theta);
}

int fv_vfield_params(const fv_problem *p, const fv_vfield *f, double t, double *theta, double *Theta)
{
    int st;
    if ((st = check_time(t)))
        return st;
    if (f->kind == FV_VFIELD_MARKOV || f->kind == FV_VFIELD_CUSTOM)
        return params_with_roots(p, f, NULL, t, theta, Theta);
    size_t d = p->d;
    double *buf = malloc((4 * d * d + d) * sizeof *buf);
    if (!buf)
        return fv_error(FV_ENOMEM, "out of memory for a %zu x %zu matrix", d, d);
    var_roots r = {0.0, buf, buf + 4 * d * d, buf + d * d, buf + 2 * d * d,
                   f->kind == FV_VFIELD_OT ? buf + 3 * d * d : NULL, NULL};
    if (!(st = roots_compute(p, &r)))
        st = fixed_params(p, f, &r, theta, Theta);
    free(buf);
    return st;
}
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Where I + t Theta is singular for t in [0, 1]: t = -1/lambda for every real eigenvalue lambda <= -1 of a
 * fixed Theta (complex eigenvalues never vanish at real t). Writes the distinct times, ascending, into msg. */
static int singular_times(size_t d, const double *Theta, char *msg, size_t msglen, size_t *count)
{
    double *wr = malloc(3 * d * sizeof *wr), *times = wr + 2 * d;
    *count = 0;
    msg[0] = '\0';
    if (!wr)
        return fv_error(FV_ENOMEM, "out of memory for the eigenvalues of a %zu x %zu matrix", d, d);
    int st = fv_linalg_eig(d, Theta, wr, wr + d);
    for (size_t i = 0; !st && i < d; i++)
        if (wr[d + i] == 0.0 && wr[i] <= -1.0)
            times[(*count)++] = -1.0 / wr[i];
    qsort(times, *count, sizeof *times, cmp_double);
    for (size_t i = 0, len = 0; i < *count; i++)
        if ((i == 0 || times[i] != times[i - 1]) && len + 32 < msglen)
            len += (size_t)snprintf(msg + len, msglen - len, "%s%.6g", i ? ", " : "", times[i]);
    free(wr);
    return st;
}

/* The divergence checks of fv_variance_integrable, with the field's Theta known when it is fixed
 * (NULL for MARKOV, whose A = I + t Theta_t = D E^{-1} is invertible wherever the member exists: see
 * markov_noise). */
static int integrable_with(const fv_problem *p, const fv_vfield *f, const double *Theta)
{
    if (p->schedule == FV_SCHEDULE_BRIDGE && p->deriv_term && p->sigma > 0)
        return fv_error(FV_EDIVERGE, "the integrated variance diverges for the bridge schedule with the derivative "
                                     "term and sigma > 0: f'(t)^2 ~ sigma^2 / (4 t) near t = 0 and t = 1");
    if (!Theta)
        return FV_OK;
    char list[512];
    size_t n;
    int st = singular_times(p->d, Theta, list, sizeof list, &n);
    if (!st && n)
        st = fv_error(FV_EDIVERGE, "the %s field is singular at t = %s in [0, 1] (I + t Theta is not invertible): "
                                   "the integrated variance diverges",
                      vfield_name(f->kind), list);
    return st;
}

int fv_variance_integrable(const fv_problem *p, const fv_vfield *f)
{
    int st;
    if ((st = fv_variance_check(p, f)))
        return st;
    if (f->kind == FV_VFIELD_MARKOV)
        return integrable_with(p, f, NULL);
    size_t d = p->d;
    double *theta = malloc((d + d * d) * sizeof *theta);
    if (!theta)
        return fv_error(FV_ENOMEM, "out of memory for a %zu-dimensional field", d);
    if (!(st = fv_vfield_params(p, f, 0.0, theta, theta + d)))
        st = integrable_with(p, f, theta + d);
    free(theta);
    return st;
}


/* ---------------------------------------------------------------------------------------------------
 * Per-sample gradient */

int fv_cfm_work_alloc(fv_cfm_work *w, size_t d)
{
    memset(w, 0, sizeof *w);
    w->d = d;
    w->lu = malloc((d * d + 6 * d) * sizeof *w->lu);
    w->piv = malloc(2 * d * sizeof *w->piv);
    if (!w->lu || !w->piv) {
        fv_cfm_work_free(w);
        return fv_error(FV_ENOMEM, "out of memory for a %zu-dimensional gradient workspace", d);
    }
    w->w = w->lu + d * d;
    w->r = w->w + d;
    return FV_OK;
}

void fv_cfm_work_free(fv_cfm_work *w)
{
    free(w->lu);
    free(w->piv);
    memset(w, 0, sizeof *w);
}

int fv_cfm_factor(fv_cfm_work *w, const double *Theta, double t)
{
    size_t d = w->d;
    lapack_int dd = (lapack_int)d;
    double tnorm = 0.0, anorm = 0.0, rcond = 0.0;
    /* The row-major A read column-major is A^T; its 1-norm is the infinity norm of A. */
    for (size_t i = 0; i < d; i++) {
        double rowT = 0.0, rowA = 0.0;
        for (size_t j = 0; j < d; j++) {
            double a = t * Theta[i * d + j] + (i == j);
            w->lu[i * d + j] = a;
            rowT += fabs(Theta[i * d + j]);
            rowA += fabs(a);
        }
        tnorm = fmax(tnorm, rowT);
        anorm = fmax(anorm, rowA);
    }
    lapack_int info = LAPACKE_dgetrf_work(LAPACK_COL_MAJOR, dd, dd, w->lu, dd, w->piv);
    if (info < 0)
        return fv_error(FV_ENUMERIC, "dgetrf rejected argument %d", (int)-info);
    /* dgecon's scratch: 4d doubles after w and r, d ints after the pivots */
    if (info == 0 && LAPACKE_dgecon_work(LAPACK_COL_MAJOR, '1', dd, w->lu, dd, anorm, &rcond, w->r + d,
                                         w->piv + d) != 0)
        return fv_error(FV_ENUMERIC, "condition estimate (dgecon) failed");
    double cond = info > 0 || rcond == 0.0 ? INFINITY : (1.0 + t * tnorm) / (rcond * anorm);
    if (!(cond <= FV_VAR_COND_MAX))
        return fv_error(FV_ESINGULAR, "I + t Theta is singular at t = %.9g: relative condition number %.3g (limit %.3g)",
                        t, cond, FV_VAR_COND_MAX);
    w->t = t;
    return FV_OK;
}

/* Solve with the factors of A^T: trans 'T' applies A^{-1}, 'N' applies A^{-T}; b has nrhs rows of d. */
static void lu_solve(const fv_cfm_work *w, char trans, size_t nrhs, double *b)
{
    lapack_int dd = (lapack_int)w->d;
    LAPACKE_dgetrs_work(LAPACK_COL_MAJOR, trans, dd, (lapack_int)nrhs, w->lu, dd, w->piv, b, dd);
}

void fv_cfm_grad_factored(fv_cfm_work *w, const double *theta, const double *Theta, const double *x,
                          const double *u, double *g, double *loss)
{
    size_t d = w->d;
    double t = w->t, *a = g, *G = g + d;
    for (size_t i = 0; i < d; i++) {
        w->w[i] = x[i] - t * theta[i];
        w->r[i] = u[i] - theta[i];
    }
    lu_solve(w, 'T', 1, w->w);
    cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)d, (int)d, -1.0, Theta, (int)d, w->w, 1, 1.0, w->r, 1);
    if (loss)
        *loss = cblas_ddot((int)d, w->r, 1, w->r, 1);
    memcpy(a, w->r, d * sizeof *a);
    lu_solve(w, 'N', 1, a);
    for (size_t i = 0; i < d; i++) {
        for (size_t j = 0; j < d; j++)
            G[i * d + j] = -2.0 * a[i] * w->w[j];
        a[i] *= -2.0;
    }
}

int fv_cfm_grad(size_t d, const double *theta, const double *Theta, const double *x, const double *u, double t,
                double *g, double *loss)
{
    fv_cfm_work w;
    int st = fv_cfm_work_alloc(&w, d);
    if (!st && !(st = fv_cfm_factor(&w, Theta, t)))
        fv_cfm_grad_factored(&w, theta, Theta, x, u, g, loss);
    fv_cfm_work_free(&w);
    return st;
}

/* ---------------------------------------------------------------------------------------------------
 * Exact moments at one t
 *
 * Two evaluations of the same formulas. The dense one works for any (theta, Theta) in O(d^3) per t.
 * The eigenbasis one serves the fields whose Theta = Ve diag(lambda) Ve^T keeps its eigenvectors Ve at
 * every t and whose theta = b (so a0 = w0 = r0 = 0): the OT field (Ve the eigenvectors of G, any source)
 * and the Markov field of an isotropic source S0 = c I (Ve those of S1; for a general S0, Theta_t =
 * N E^{-1} is not symmetric and changes its eigenvectors with t, so it takes the dense path). In that
 * basis A^{-1} = diag(alpha), alpha = 1/(1 + t lambda), and with l = 1 + lambda the rows of the
 * rotated blocks (the noise stack rotated by Ve in each block, which leaves every trace unchanged) are
 *   L' = [(1-t) P0 + t P1, f I],  Rr' = U' - diag(lambda alpha) L' = [diag(alpha) (P1 - diag(l) P0), diag(z)],
 *   P0 = Ve^T L0 Ve, P1 = Ve^T F1 Ve (for the independent coupling in separate blocks), z = f' - f lambda alpha,
 * since 1 + lambda alpha (1-t) = alpha l and 1 - lambda alpha t = alpha. W = diag(alpha) L' and
 * G = diag(alpha) Rr', so only the Grams H00 = P0 P0^T, H01 = P0 P1^T (0 for the independent coupling,
 * whose blocks do not overlap) and H11 = P1 P1^T enter:
 *   |Rr|^2 = sum_i alpha_i^2 (H11_ii - 2 l_i H01_ii + l_i^2 H00_ii) + z_i^2,  |G|^2 likewise with alpha_i^2 more,
 *   |W|^2  = sum_i alpha_i^2 ((1-t)^2 H00_ii + 2 t (1-t) H01_ii + t^2 H11_ii + f^2),
 *   C_ij   = alpha_i^2 alpha_j ((1-t) H01_ji + t H11_ij - l_i ((1-t) H00_ij + t H01_ij)) + delta_ij f alpha_i^2 z_i.
 * The OT coupling's F1 = G L0 and Ve diagonalizes G (G = Ve diag(g) Ve^T) in both cases, so P1 = diag(g) P0
 * and everything factors through H00 alone, with e_i = g_i - l_i (exactly 0 up to rounding for the OT
 * field, so its zero variance without noise is not the difference of large terms):
 *   |row i of Rr|^2 = alpha_i^2 e_i^2 H00_ii + z_i^2,  |row i of L'|^2 = (1 - t + t g_i)^2 H00_ii + f^2,
 *   C_ij = alpha_i^2 alpha_j e_i (1 - t + t g_j) H00_ij + delta_ij f alpha_i^2 z_i.
 * For the standard source P0 = I, H00 = I, H01 = P1^T, H11 = diag(s^2) as in docs/THEORY.md. So these
 * fields cost O(d^2) per t after an O(d^3) setup, C being formed in the eigenbasis; |E g| and the traces
 * do not depend on the basis. */

typedef struct {
    const fv_problem *p;
    const fv_vfield *f;
    size_t d, m;              /* m = k d columns of L, U, W, Rr, G: k = 2 or 3 noise blocks */
    int fixed;                /* theta, Theta do not depend on t */
    int eigen;                /* use the eigenbasis evaluation (C is then in the eigenbasis) */
    var_roots r;              /* S1^{1/2}, S0^{1/2}, the OT map G, the factor F1 of X1 */
    double *Ve, *ge;          /* eigenbasis evaluation: Theta = Ve diag(lambda) Ve^T, G = Ve diag(ge) Ve^T */
    double *H00, *H01, *H11;  /* Grams of P0 = Ve^T L0 Ve and P1 = Ve^T F1 Ve (see above) */
    double *b;                /* m1 - m0 */
    double *theta, *Theta, *delta, *lam, *alpha;
    double *Ainv, *L, *U, *W, *Rr, *G, *C, *r0, *w0, *a0, *Cw0;
    double *Saa, *Sww;        /* Cov(a), Cov(w): only for the full covariance */
    fv_cfm_work cw;
    double *buf;
} var_ws;

/* The scalars every output is built from (see the derivation above). */
typedef struct {
    double trP, trQ, trPQ, cross, a2, w2, loss;
} var_mom;

static void ws_free(var_ws *w)
{
    free(w->buf);
    fv_cfm_work_free(&w->cw);
    memset(w, 0, sizeof *w);
}

/* Ve, ge and the Grams H00, H01, H11 of the eigenbasis evaluation (H00 alone for the OT coupling). */
static int ws_eigen(var_ws *w)
{
    const fv_problem *p = w->p;
    const var_roots *r = &w->r;
    size_t d = w->d;
    int id = (int)d, st;
    double *P0 = w->G, *P1 = w->G + d * d, *T = w->W; /* scratch: G and W hold at least 2 d^2 */
    if (r->c > 0) {
        double rc = sqrt(r->c);
        memcpy(w->Ve, r->V, d * d * sizeof *w->Ve);
        for (size_t i = 0; i < d; i++)
            w->ge[i] = r->s[i] / rc;
        fv_mat_identity(d, P0);
        for (size_t i = 0; i < d; i++)
            P0[i * d + i] = rc;
    } else {
        if ((st = fv_linalg_eigh(d, r->G, w->ge, w->Ve)))
            return st;
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, id, id, id, 1.0, w->Ve, id, r->L0, id, 0.0, T, id);
        fv_mat_mul(d, d, d, T, w->Ve, P0);
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, id, id, id, 1.0, P0, id, P0, id, 0.0, w->H00, id);
    if (p->coupling == FV_COUPLING_OT) /* P1 = diag(g) P0: everything factors through H00 */
        return FV_OK;
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, id, id, id, 1.0, w->Ve, id, r->F1, id, 0.0, T, id);
    fv_mat_mul(d, d, d, T, w->Ve, P1);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, id, id, id, 1.0, P1, id, P1, id, 0.0, w->H11, id);
    if (p->coupling == FV_COUPLING_INDEPENDENT)
        memset(w->H01, 0, d * d * sizeof *w->H01);
    else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, id, id, id, 1.0, P0, id, P1, id, 0.0, w->H01, id);
    return FV_OK;
}

/* eigen: allow the eigenbasis evaluation (callers that want E g or the covariance in the original
 * basis pass 0). */
static int ws_init(var_ws *w, const fv_problem *p, const fv_vfield *f, int eigen)
{
    int st;
    memset(w, 0, sizeof *w);
    if ((st = fv_variance_check(p, f)))
        return st;
    size_t d = p->d, k = p->coupling == FV_COUPLING_INDEPENDENT ? 3 : 2, m = k * d;
    size_t total = 14 * d * d + 5 * d * m + 11 * d;
    w->p = p;
    w->f = f;
    w->d = d;
    w->m = m;
    w->fixed = f->kind != FV_VFIELD_MARKOV;
    if (!(w->buf = malloc(total * sizeof *w->buf)) || fv_cfm_work_alloc(&w->cw, d)) {
        ws_free(w);
        return fv_error(FV_ENOMEM, "out of memory for the variance of a %zu-dimensional problem", d);
    }
    double *q = w->buf;
    double **dd[] = {&w->r.V,  &w->r.S, &w->r.L0, &w->r.G, &w->r.F1, &w->Ve,  &w->H00,
                     &w->H01, &w->H11, &w->Theta, &w->Ainv, &w->C,   &w->Saa, &w->Sww};
    for (size_t i = 0; i < sizeof dd / sizeof dd[0]; i++, q += d * d)
        *dd[i] = q;
    double **dm[] = {&w->L, &w->U, &w->W, &w->Rr, &w->G};
    for (size_t i = 0; i < sizeof dm / sizeof dm[0]; i++, q += d * m)
        *dm[i] = q;
    double **dv[] = {&w->r.s, &w->ge, &w->b, &w->lam, &w->alpha, &w->theta, &w->delta, &w->r0, &w->w0, &w->a0, &w->Cw0};
    for (size_t i = 0; i < sizeof dv / sizeof dv[0]; i++, q += d)
        *dv[i] = q;
    for (size_t i = 0; i < d; i++)
        w->b[i] = p->m1[i] - p->m0[i];
    if (f->kind != FV_VFIELD_OT && p->coupling != FV_COUPLING_OT)
        w->r.G = NULL; /* no cross root needed */
    if ((st = roots_compute(p, &w->r)))
        goto fail;
    w->eigen = eigen && (f->kind == FV_VFIELD_OT || (f->kind == FV_VFIELD_MARKOV && w->r.c > 0));
    if ((w->eigen && (st = ws_eigen(w))) ||
        (w->fixed && (st = params_with_roots(p, f, &w->r, 0.0, w->theta, w->Theta))))
        goto fail;
    return FV_OK;
fail:
    ws_free(w);
    return st;
}

/* L and U of the derivation at t (row-major d x m). */
static void build_LU(var_ws *w, double t, double f, double fp)
{
    size_t d = w->d, m = w->m;
    int indep = w->p->coupling == FV_COUPLING_INDEPENDENT;
    const double *L0 = w->r.L0, *F1 = w->r.F1;
    memset(w->L, 0, d * m * sizeof *w->L);
    memset(w->U, 0, d * m * sizeof *w->U);
    for (size_t i = 0; i < d; i++) {
        double *Li = w->L + i * m, *Ui = w->U + i * m;
        for (size_t j = 0; j < d; j++) {
            double l0 = L0[i * d + j], f1 = F1[i * d + j];
            if (indep) {
                Li[j] = (1.0 - t) * l0;
                Li[d + j] = t * f1;
                Ui[j] = -l0;
                Ui[d + j] = f1;
            } else {
                Li[j] = (1.0 - t) * l0 + t * f1;
                Ui[j] = f1 - l0;
            }
        }
        Li[m - d + i] = f;
        Ui[m - d + i] = fp;
    }
}

static double sumsq(size_t n, const double *x) { return cblas_ddot((int)n, x, 1, x, 1); }

static int moments_dense(var_ws *w, double t, double f, double fp, var_mom *o)
{
    size_t d = w->d, m = w->m;
    int id = (int)d, im = (int)m, st;
    if (!w->fixed && (st = params_with_roots(w->p, w->f, &w->r, t, w->theta, w->Theta)))
        return st;
    if ((st = fv_cfm_factor(&w->cw, w->Theta, t)))
        return fv_error_context(st, "%s field: ", vfield_name(w->f->kind));
    fv_mat_identity(d, w->Ainv);
    lu_solve(&w->cw, 'N', d, w->Ainv); /* rows become A^{-T} e_i: the row-major array is A^{-1} */
    build_LU(w, t, f, fp);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, id, im, id, 1.0, w->Ainv, id, w->L, im, 0.0, w->W, im);
    memcpy(w->Rr, w->U, d * m * sizeof *w->Rr);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, id, im, id, -1.0, w->Theta, id, w->W, im, 1.0, w->Rr, im);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, id, im, id, 1.0, w->Ainv, id, w->Rr, im, 0.0, w->G, im);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, id, id, im, 1.0, w->G, im, w->W, im, 0.0, w->C, id);
    for (size_t i = 0; i < d; i++)
        w->delta[i] = w->b[i] - w->theta[i];
    cblas_dgemv(CblasRowMajor, CblasNoTrans, id, id, 1.0, w->Ainv, id, w->delta, 1, 0.0, w->r0, 1);
    cblas_dgemv(CblasRowMajor, CblasTrans, id, id, 1.0, w->Ainv, id, w->r0, 1, 0.0, w->a0, 1);
    for (size_t i = 0; i < d; i++)
        w->w0[i] = t * w->r0[i];
    cblas_dgemv(CblasRowMajor, CblasNoTrans, id, id, 1.0, w->C, id, w->w0, 1, 0.0, w->Cw0, 1);
    o->trP = sumsq(d * m, w->G);
    o->trQ = sumsq(d * m, w->W);
    o->trPQ = sumsq(d * d, w->C);
    o->cross = cblas_ddot(id, w->a0, 1, w->Cw0, 1);
    o->a2 = sumsq(d, w->a0);
    o->w2 = sumsq(d, w->w0);
    o->loss = sumsq(d * m, w->Rr);
    o->loss += sumsq(d, w->r0);
    return FV_OK;
}

/* Eigenvalues of Theta at t for the eigenbasis evaluation, and the same singularity test as
 * fv_cfm_factor: (1 + t max |lambda|) / min |1 + t lambda| against FV_VAR_COND_MAX. */
static int eigen_lambda(var_ws *w, double t)
{
    size_t d = w->d;
    double scale = 1.0, shift = -1.0, lmax = 0.0, amin = INFINITY;
    int st;
    if (w->f->kind == FV_VFIELD_MARKOV && (st = markov_coeffs(w->p, w->r.c, t, &scale, &shift)))
        return st;
    for (size_t i = 0; i < d; i++) { /* OT: lambda = g - 1; Markov: scale s^2 + shift */
        w->lam[i] = w->f->kind == FV_VFIELD_MARKOV ? scale * w->r.s[i] * w->r.s[i] + shift : w->ge[i] - 1.0;
        lmax = fmax(lmax, fabs(w->lam[i]));
        amin = fmin(amin, fabs(1.0 + t * w->lam[i]));
        w->alpha[i] = 1.0 / (1.0 + t * w->lam[i]);
    }
    double cond = (1.0 + t * lmax) / amin;
    if (!(cond <= FV_VAR_COND_MAX))
        return fv_error(FV_ESINGULAR, "%s field: I + t Theta is singular at t = %.9g: relative condition number %.3g "
                                      "(limit %.3g)",
                        vfield_name(w->f->kind), t, cond, FV_VAR_COND_MAX);
    return FV_OK;
}

static int moments_eigen(var_ws *w, double t, double f, double fp, var_mom *o)
{
    size_t d = w->d;
    int st = eigen_lambda(w, t);
    if (st)
        return st;
    const double *H00 = w->H00, *H01 = w->H01, *H11 = w->H11;
    double u = 1.0 - t;
    int ot = w->p->coupling == FV_COUPLING_OT;
    memset(o, 0, sizeof *o);
    for (size_t i = 0; i < d; i++) {
        size_t ii = i * d + i;
        double al = w->alpha[i], l = 1.0 + w->lam[i], z = fp - f * w->lam[i] * al, a2 = al * al, r2, q2;
        double *Ci = w->C + i * d;
        if (ot) { /* P1 = diag(g) P0: the rows factor, and the OT field's g - l vanishes without cancellation */
            double e = w->ge[i] - l, h = u + t * w->ge[i];
            r2 = a2 * e * e * H00[ii];
            q2 = h * h * H00[ii];
            for (size_t j = 0; j < d; j++)
                Ci[j] = a2 * w->alpha[j] * e * (u + t * w->ge[j]) * H00[i * d + j];
        } else {
            r2 = a2 * (H11[ii] - 2.0 * l * H01[ii] + l * l * H00[ii]);
            q2 = u * u * H00[ii] + 2.0 * t * u * H01[ii] + t * t * H11[ii];
            for (size_t j = 0; j < d; j++)
                Ci[j] = a2 * w->alpha[j] *
                        (u * H01[j * d + i] + t * H11[i * d + j] - l * (u * H00[i * d + j] + t * H01[i * d + j]));
        }
        o->loss += r2 + z * z; /* r2: |row i of the xi0 (xi1) blocks of Rr|^2 */
        o->trP += a2 * (r2 + z * z);
        o->trQ += a2 * (q2 + f * f);
        Ci[i] += f * a2 * z;
    }
    o->trPQ = sumsq(d * d, w->C);
    /* theta = b: the means of r, w and a vanish */
    memset(w->a0, 0, d * sizeof *w->a0);
    memset(w->w0, 0, d * sizeof *w->w0);
    return FV_OK;
}

static int moments(var_ws *w, double t, var_mom *o)
{
    double f, fp;
    int st = noise_at(w->p, t, &f, &fp);
    if (st)
        return st;
    return w->eigen ? moments_eigen(w, t, f, fp, o) : moments_dense(w, t, f, fp, o);
}

static void mom_to_var(const var_mom *o, fv_var *v)
{
    v->var_theta = 4.0 * o->trP;
    v->var_Theta = 4.0 * (o->a2 * o->trQ + o->w2 * o->trP + 2.0 * o->cross + o->trP * o->trQ + o->trPQ);
    v->var_total = v->var_theta + v->var_Theta;
    v->loss = o->loss;
}

/* E g = (-2 a0, -2 (a0 w0^T + C)) from the last moments() call (in the eigenbasis after moments_eigen). */
static void mean_gradient(const var_ws *w, double *Eg)
{
    size_t d = w->d;
    for (size_t i = 0; i < d; i++) {
        Eg[i] = -2.0 * w->a0[i];
        for (size_t j = 0; j < d; j++)
            Eg[d + i * d + j] = -2.0 * (w->a0[i] * w->w0[j] + w->C[i * d + j]);
    }
}

/* The full covariance (n = d + d*d, row-major n x n) from the last moments() call. */
static void covariance(var_ws *w, double *cov)
{
    size_t d = w->d, n = d + d * d;
    int id = (int)d, im = (int)w->m;
    const double *a0 = w->a0, *w0 = w->w0, *C = w->C, *Saa = w->Saa, *Sww = w->Sww;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, id, id, im, 1.0, w->G, im, w->G, im, 0.0, w->Saa, id);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, id, id, im, 1.0, w->W, im, w->W, im, 0.0, w->Sww, id);
    for (size_t i = 0; i < d; i++) {
        for (size_t k = 0; k < d; k++)
            cov[i * n + k] = 4.0 * Saa[i * d + k];
        for (size_t k = 0; k < d; k++)
            for (size_t l = 0; l < d; l++) {
                double c = 4.0 * (a0[k] * C[i * d + l] + w0[l] * Saa[i * d + k]);
                cov[i * n + d + k * d + l] = c;
                cov[(d + k * d + l) * n + i] = c;
            }
    }
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < d; j++) {
            double *row = cov + (d + i * d + j) * n + d;
            for (size_t k = 0; k < d; k++)
                for (size_t l = 0; l < d; l++)
                    row[k * d + l] = 4.0 * (a0[i] * a0[k] * Sww[j * d + l] + a0[i] * w0[l] * C[k * d + j] +
                                            w0[j] * a0[k] * C[i * d + l] + w0[j] * w0[l] * Saa[i * d + k] +
                                            Saa[i * d + k] * Sww[j * d + l] + C[i * d + l] * C[k * d + j]);
        }
}

int fv_variance_at(const fv_problem *p, const fv_vfield *f, double t, fv_var *out, double *Eg, double *cov)
{
    var_ws w;
    var_mom o;
    int st;
    if (!Eg && !cov)
        return fv_variance_at_times(p, f, 1, &t, out);
    if ((st = check_time(t)) || (st = ws_init(&w, p, f, 0)))
        return st;
    if (!(st = moments(&w, t, &o))) {
        mom_to_var(&o, out);
        if (Eg)
            mean_gradient(&w, Eg);
        if (cov)
            covariance(&w, cov);
    }
    ws_free(&w);
    return st;
}

int fv_variance_at_times(const fv_problem *p, const fv_vfield *f, size_t nt, const double *ts, fv_var *out)
{
    var_ws w;
    var_mom o;
    int st = FV_OK;
    for (size_t k = 0; k < nt && !st; k++)
        st = check_time(ts[k]);
    if (st || (st = ws_init(&w, p, f, 1)))
        return st;
    for (size_t k = 0; k < nt && !(st = moments(&w, ts[k], &o)); k++)
        mom_to_var(&o, out + k);
    ws_free(&w);
    return st;
}

void fv_var_minibatch(fv_var *v, size_t B)
{
    double b = B ? (double)B : 1.0;
    v->var_theta /= b;
    v->var_Theta /= b;
    v->var_total /= b;
}

/* ---------------------------------------------------------------------------------------------------
 * Integration over t ~ U(0,1)
 *
 * The integrand is the vector q(t) = (E|g_theta|^2, E|g_Theta|^2, loss, E g_theta, E g_Theta) of length
 * QH + d + d*d. Every interval keeps its Gauss-Legendre value; splitting one compares the parent's value
 * with the sum of its halves', and each half inherits half of that difference as its error, summarized
 * by the change in E|g|^2, in the loss and the norm of the change in E g. */

enum { Q_TH2 = 0, Q_THETA2, Q_LOSS, QH };

typedef struct {
    double a, b;
    double d2, dl, dg; /* |change of E|g|^2 (both blocks)|, |change of loss|, |change of E g| */
} quad_iv;

typedef struct {
    var_ws *w;
    gsl_integration_glfixed_table *tab;
    size_t len, count, cap; /* len: length of q; intervals used and allocated */
    quad_iv *iv;
    double *q;              /* cap x len values, one row per interval */
    double *tot, *tmp;      /* running sum of the rows; integrand scratch */
} quad;

static int integrand(var_ws *w, double t, double *v)
{
    var_mom o;
    int st = moments(w, t, &o);
    if (st)
        return st;
    v[Q_TH2] = 4.0 * (o.a2 + o.trP);
    v[Q_THETA2] = 4.0 * (o.a2 * o.w2 + o.a2 * o.trQ + o.w2 * o.trP + 4.0 * o.cross + o.trP * o.trQ + 2.0 * o.trPQ);
    v[Q_LOSS] = o.loss;
    mean_gradient(w, v + QH);
    return FV_OK;
}

static int gl_rule(quad *Q, double a, double b, double *out)
{
    memset(out, 0, Q->len * sizeof *out);
    for (size_t i = 0; i < FV_VAR_GL_ORDER; i++) {
        double x, wt;
        int st;
        gsl_integration_glfixed_point(a, b, i, &x, &wt, Q->tab);
        if ((st = integrand(Q->w, x, Q->tmp)))
            return st;
        cblas_daxpy((int)Q->len, wt, Q->tmp, 1, out, 1);
    }
    return FV_OK;
}

static int quad_grow(quad *Q)
{
    if (Q->count < Q->cap)
        return FV_OK;
    size_t cap = Q->cap ? 2 * Q->cap : 16;
    quad_iv *iv = realloc(Q->iv, cap * sizeof *iv);
    if (iv)
        Q->iv = iv;
    double *q = iv ? realloc(Q->q, cap * Q->len * sizeof *q) : NULL;
    if (!q)
        return fv_error(FV_ENOMEM, "out of memory for %zu quadrature intervals of %zu values", cap, Q->len);
    Q->q = q;
    Q->cap = cap;
    return FV_OK;
}

/* Replace interval i by its two halves (the right one appended). */
static int quad_split(quad *Q, size_t i)
{
    int st;
    if ((st = quad_grow(Q)))
        return st;
    size_t len = Q->len, j = Q->count;
    double a = Q->iv[i].a, b = Q->iv[i].b, mid = 0.5 * (a + b);
    double *qi = Q->q + i * len, *qj = Q->q + j * len, *diff = Q->tmp + len;
    memcpy(diff, qi, len * sizeof *diff);
    if ((st = gl_rule(Q, a, mid, qi)) || (st = gl_rule(Q, mid, b, qj)))
        return st;
    for (size_t k = 0; k < len; k++) {
        diff[k] -= qi[k] + qj[k];
        Q->tot[k] -= diff[k];
    }
    quad_iv half = {a, mid, 0.5 * fabs(diff[Q_TH2] + diff[Q_THETA2]), 0.5 * fabs(diff[Q_LOSS]),
                    0.5 * sqrt(sumsq(len - QH, diff + QH))};
    Q->iv[i] = half;
    half.a = mid;
    half.b = b;
    Q->iv[j] = half;
    Q->count++;
    return FV_OK;
}

/* Error of interval i in var_total, given |integral of E g| = cn: |d(E|g|^2)| + |d|E g|^2|. */
static double iv_err(const quad_iv *v, double cn) { return v->d2 + 2.0 * cn * v->dg + v->dg * v->dg; }

static void quad_result(const quad *Q, fv_var *out)
{
    size_t d = Q->w->d;
    double g1 = sumsq(d, Q->tot + QH), g2 = sumsq(d * d, Q->tot + QH + d);
    out->var_theta = Q->tot[Q_TH2] - g1;
    out->var_Theta = Q->tot[Q_THETA2] - g2;
    out->var_total = out->var_theta + out->var_Theta;
    out->loss = Q->tot[Q_LOSS];
}

/* Bisect the interval with the largest error until both targets are met. */
static int quad_run(quad *Q, double epsrel, double scale, fv_var *out, double *abserr)
{
    int st;
    double floor_rel = 64.0 * DBL_EPSILON;
    Q->iv[0] = (quad_iv){0.0, 1.0, 0.0, 0.0, 0.0};
    Q->count = 1;
    if ((st = gl_rule(Q, 0.0, 1.0, Q->q)))
        return st;
    memcpy(Q->tot, Q->q, Q->len * sizeof *Q->tot);
    if ((st = quad_split(Q, 0)))
        return st;
    for (;;) {
        quad_result(Q, out);
        double cn = sqrt(sumsq(Q->len - QH, Q->tot + QH)), ev = 0.0, el = 0.0;
        double tv = fmax(epsrel * fabs(out->var_total), floor_rel * fmax(Q->tot[Q_TH2] + Q->tot[Q_THETA2], scale));
        double tl = fmax(fmax(epsrel, floor_rel) * out->loss, floor_rel * scale);
        size_t worst_v = 0, worst_l = 0;
        for (size_t i = 0; i < Q->count; i++) {
            double e = iv_err(&Q->iv[i], cn);
            ev += e;
            el += Q->iv[i].dl;
            if (e > iv_err(&Q->iv[worst_v], cn))
                worst_v = i;
            if (Q->iv[i].dl > Q->iv[worst_l].dl)
                worst_l = i;
        }
        if (abserr)
            *abserr = ev;
        if (ev <= tv && el <= tl)
            break;
        if (Q->count >= FV_VAR_MAX_INTERVALS)
            return fv_error(FV_ENUMERIC, "the integral over t did not reach relative accuracy %g within %d intervals "
                                         "(error estimate %.3g of %.6g): the integrand may be nearly singular",
                            epsrel, FV_VAR_MAX_INTERVALS, ev, out->var_total);
        if ((st = quad_split(Q, ev > tv ? worst_v : worst_l)))
            return st;
    }
    /* the running sum drifts by rounding: sum the final rows afresh */
    memset(Q->tot, 0, Q->len * sizeof *Q->tot);
    for (size_t i = 0; i < Q->count; i++)
        cblas_daxpy((int)Q->len, 1.0, Q->q + i * Q->len, 1, Q->tot, 1);
    quad_result(Q, out);
    return FV_OK;
}

/* The size of a squared gradient on this problem where the field is off by O(1):
 * (1 + |m1 - m0|^2 + tr S0 + tr S1 + d sigma^2)^2 (written so that the standard source gives the same
 * bits as (1 + |mu|^2 + tr M + d (1 + sigma^2))^2). A variance that is exactly zero (the pair field on its
 * own coupling) integrates to rounding noise of about DBL_EPSILON^2 times this, which no relative target
 * can reach; the rounding floor is measured against it. */
static double data_scale(const fv_problem *p)
{
    size_t d = p->d;
    double s = 1.0 + (double)d * (1.0 + p->sigma * p->sigma);
    for (size_t i = 0; i < d; i++) {
        double b = p->m1[i] - p->m0[i];
        s += b * b + p->S1[i * d + i] + (p->S0[i * d + i] - 1.0);
    }
    return s * s;
}

int fv_variance_integrated(const fv_problem *p, const fv_vfield *f, double epsrel, fv_var *out, double *abserr)
{
    var_ws w;
    quad Q = {0};
    int st;
    if (!(epsrel >= 0.0 && isfinite(epsrel)))
        return fv_error(FV_EINPUT, "relative accuracy epsrel must be a finite number >= 0, got %g", epsrel);
    if ((st = ws_init(&w, p, f, 1))) /* |integral of E g| does not depend on the basis */
        return st;
    if ((st = integrable_with(p, f, w.fixed ? w.Theta : NULL)))
        goto done;
    Q.w = &w;
    Q.len = QH + w.d + w.d * w.d;
    Q.tab = gsl_integration_glfixed_table_alloc(FV_VAR_GL_ORDER);
    Q.tot = malloc(3 * Q.len * sizeof *Q.tot);
    if (!Q.tab || !Q.tot || (st = quad_grow(&Q))) {
        st = st ? st : fv_error(FV_ENOMEM, "out of memory for the quadrature of a %zu-dimensional problem", w.d);
        goto done;
    }
    Q.tmp = Q.tot + Q.len;
    st = quad_run(&Q, epsrel, data_scale(p), out, abserr);
    if (st == FV_ESINGULAR) /* a near-singular time the eigenvalue test did not see as real */
        st = fv_error_context(FV_EDIVERGE, "integrated variance of the %s field: ", vfield_name(f->kind));
done:
    if (Q.tab)
        gsl_integration_glfixed_table_free(Q.tab);
    free(Q.tot);
    free(Q.iv);
    free(Q.q);
    ws_free(&w);
    return st;
}
