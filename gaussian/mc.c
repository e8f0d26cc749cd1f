/* mc.c: the Monte-Carlo twin of the exact gradient variance (fv_variance_mc in variance.h): sample
 * (t, xi0, xi1, Z), form X0 = m0 + L0 xi0 and X1 by the coupling (fv_variance_factors), form the per-sample gradient with fv_cfm_grad_factored, and estimate the trace of its
 * covariance, with a batch-means standard error. It shares no formula with variance.c beyond the
 * gradient itself, so agreement of the two checks the derivation. */
#include "gaussian/variance.h"

#include "core/error.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const fv_problem *p;
    const fv_vfield *f;
    size_t d, len;                  /* len = d + d*d */
    double *L0, *F1;                /* X0 = m0 + L0 xi0, X1 = m1 + F1 xi0 (or F1 xi1): fv_variance_factors */
    double *theta, *Theta;
    double *xi, *x0, *x, *u, *g;    /* one sample: noise (3d), X0, point, target, gradient */
    double *shift, *s1, *t1;        /* first gradient; batch and total sums of g - shift */
    fv_cfm_work cw;
    fv_rng rng;
    double *buf;
} mc_ws;

static void mc_free(mc_ws *w)
{
    free(w->buf);
    fv_cfm_work_free(&w->cw);
}

static int mc_init(mc_ws *w, const fv_problem *p, const fv_vfield *f, uint64_t seed, uint64_t stream)
{
    size_t d = p->d, len = d + d * d;
    int st;
    memset(w, 0, sizeof *w);
    w->p = p;
    w->f = f;
    w->d = d;
    w->len = len;
    w->rng = fv_rng_make(seed, stream);
    if (!(w->buf = malloc((3 * d * d + 7 * d + 4 * len) * sizeof *w->buf)) || fv_cfm_work_alloc(&w->cw, d)) {
        mc_free(w);
        return fv_error(FV_ENOMEM, "out of memory for Monte Carlo in dimension %zu", d);
    }
    w->L0 = w->buf;
    w->F1 = w->L0 + d * d;
    w->Theta = w->F1 + d * d;
    w->theta = w->Theta + d * d;
    w->xi = w->theta + d;
    w->x0 = w->xi + 3 * d;
    w->x = w->x0 + d;
    w->u = w->x + d;
    w->g = w->u + d;
    w->shift = w->g + len;
    w->s1 = w->shift + len;
    w->t1 = w->s1 + len;
    if ((st = fv_variance_factors(p, w->L0, w->F1)))
        mc_free(w);
    return st;
}

/* Draw one (xi0, [xi1], Z) at time t and form X0, X1, x = X_t and the target u. */
static int draw(mc_ws *w, double t)
{
    const fv_problem *p = w->p;
    size_t d = w->d;
    int indep = p->coupling == FV_COUPLING_INDEPENDENT;
    double f, fp, *X0 = w->x0, *Z = w->xi + (indep ? 2 : 1) * d, *X1 = w->u;
    fv_noise(p->schedule, p->sigma, t, &f, &fp);
    if (!p->deriv_term)
        fp = 0.0;
    else if (!isfinite(fp))
        return fv_error(FV_EDIVERGE, "f'(t) of the %s schedule is infinite at t = %g: the target has infinite "
                                     "variance there",
                        fv_schedule_name(p->schedule), t);
    fv_rng_normal(&w->rng, (indep ? 3 : 2) * d, w->xi);
    memcpy(X0, p->m0, d * sizeof *X0);
    cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)d, (int)d, 1.0, w->L0, (int)d, w->xi, 1, 1.0, X0, 1);
    memcpy(X1, p->m1, d * sizeof *X1);
    cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)d, (int)d, 1.0, w->F1, (int)d, w->xi + (indep ? d : 0), 1, 1.0, X1,
                1);
    for (size_t i = 0; i < d; i++) {
        w->x[i] = (1.0 - t) * X0[i] + t * X1[i] + f * Z[i] - p->m0[i]; /* source-centred (variance.h) */
        w->u[i] = X1[i] - X0[i] + fp * Z[i];
    }
    return FV_OK;
}

/* Add g - shift to the batch sum w->s1 and |g - shift|^2 of the theta and Theta blocks to s2. */
static void accumulate(mc_ws *w, double s2[2])
{
    size_t d = w->d;
    double s = 0.0;
    for (size_t i = 0; i < w->len; i++) {
        double e = w->g[i] - w->shift[i];
        w->s1[i] += e;
        s += e * e;
        if (i + 1 == d) {
            s2[0] += s;
            s = 0.0;
        }
    }
    s2[1] += s;
}

/* Unbiased trace of the covariance of a block from n samples: (sum |e|^2 - |sum e|^2 / n) / (n - 1). */
static double trace_cov(double s2, const double *s1, size_t count, size_t n)
{
    return (s2 - cblas_ddot((int)count, s1, 1, s1, 1) / (double)n) / (double)(n - 1);
}

/* One sample: draw, (re)factor where t or Theta changes per sample, gradient, loss. */
static int sample(mc_ws *w, double t_fixed, double *loss)
{
    int st;
    double t = t_fixed;
    if (t < 0)
        fv_rng_uniform(&w->rng, 1, &t);
    if ((st = draw(w, t)))
        return st;
    if (t_fixed < 0) {
        if ((w->f->kind == FV_VFIELD_MARKOV && (st = fv_vfield_params(w->p, w->f, t, w->theta, w->Theta))) ||
            (st = fv_cfm_factor(&w->cw, w->Theta, t)))
            return st;
    }
    fv_cfm_grad_factored(&w->cw, w->theta, w->Theta, w->x, w->u, w->g, loss);
    return FV_OK;
}

static int run_batches(mc_ws *w, double t, size_t n, fv_mc *out)
{
    size_t d = w->d, nb = n / 2 < FV_MC_BATCHES ? n / 2 : FV_MC_BATCHES, done = 0;
    double est[FV_MC_BATCHES], tot2[2] = {0, 0}, loss_sum = 0.0;
    int st;
    memset(w->t1, 0, w->len * sizeof *w->t1);
    for (size_t b = 0; b < nb; b++) {
        size_t nk = n / nb + (b < n % nb);
        double s2[2] = {0, 0};
        memset(w->s1, 0, w->len * sizeof *w->s1);
        for (size_t i = 0; i < nk; i++, done++) {
            double l;
            if ((st = sample(w, t, &l)))
                return st;
            if (done == 0) /* shifting by one sample keeps the sums small: no cancellation */
                memcpy(w->shift, w->g, w->len * sizeof *w->shift);
            accumulate(w, s2);
            loss_sum += l;
        }
        est[b] = trace_cov(s2[0] + s2[1], w->s1, w->len, nk);
        tot2[0] += s2[0];
        tot2[1] += s2[1];
        cblas_daxpy((int)w->len, 1.0, w->s1, 1, w->t1, 1);
    }
    double mean = 0.0, ss = 0.0;
    for (size_t b = 0; b < nb; b++)
        mean += est[b] / (double)nb;
    for (size_t b = 0; b < nb; b++)
        ss += (est[b] - mean) * (est[b] - mean);
    out->var_theta = trace_cov(tot2[0], w->t1, d, n);
    out->var_Theta = trace_cov(tot2[1], w->t1 + d, d * d, n);
    out->var_total = out->var_theta + out->var_Theta;
    out->se_total = sqrt(ss / (double)(nb - 1) / (double)nb);
    out->loss = loss_sum / (double)n;
    out->n = n;
    return FV_OK;
}

int fv_variance_mc(const fv_problem *p, const fv_vfield *f, double t, size_t n, uint64_t seed, uint64_t stream,
                   fv_mc *out)
{
    mc_ws w;
    int st;
    if (isnan(t) || t > 1.0)
        return fv_error(FV_EINPUT, "Monte-Carlo time t = %g: give t in [0, 1], or t < 0 for t ~ U(0,1)", t);
    if (n < 4)
        return fv_error(FV_EINPUT, "Monte Carlo needs at least 4 samples (2 batches of 2), got %zu", n);
    if ((st = t < 0 ? fv_variance_integrable(p, f) : fv_variance_check(p, f)))
        return st;
    if ((st = mc_init(&w, p, f, seed, stream)))
        return st;
    /* parameters once unless they change per sample (Markov at random t); at a fixed t one factorization
     * serves every sample */
    if (t >= 0 || f->kind != FV_VFIELD_MARKOV)
        st = fv_vfield_params(p, f, t >= 0 ? t : 0.0, w.theta, w.Theta);
    if (!st && t >= 0)
        st = fv_cfm_factor(&w.cw, w.Theta, t);
    if (!st)
        st = run_batches(&w, t, n, out);
    mc_free(&w);
    return st;
}
