/* crossover.c: root bracketing of V_OT(sigma) - V_rot(sigma) (see crossover.h). */
#include "gaussian/crossover.h"

#include "core/error.h"
#include "gaussian/variance.h"

#include <gsl/gsl_errno.h>
#include <gsl/gsl_roots.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int fv_crossover_gap(const fv_problem *p, double sigma, double epsrel, double *gap)
{
    fv_problem q = *p; /* shallow copy: only sigma changes */
    q.sigma = sigma;
    q.coupling = FV_COUPLING_ROTATION;
    fv_vfield ot = {FV_VFIELD_OT, NULL, NULL}, rot = {FV_VFIELD_ROTATION, NULL, NULL};
    fv_var vo, vr;
    int st;
    if ((st = fv_variance_integrated(&q, &ot, epsrel, &vo, NULL)) ||
        (st = fv_variance_integrated(&q, &rot, epsrel, &vr, NULL)))
        return st;
    *gap = vo.var_total - vr.var_total;
    return FV_OK;
}

typedef struct {
    const fv_problem *p;
    double epsrel;
    int status;
} gap_ctx;

static double gap_fn(double sigma, void *params)
{
    gap_ctx *c = params;
    double g = NAN;
    if (!c->status)
        c->status = fv_crossover_gap(c->p, sigma, c->epsrel, &g);
    return g;
}

/* Brent's method on [lo, hi], where the gap changes sign. */
static int refine(gap_ctx *c, double lo, double hi, double xtol, double *root)
{
    gsl_function F = {gap_fn, c};
    gsl_root_fsolver *s = gsl_root_fsolver_alloc(gsl_root_fsolver_brent);
    if (!s)
        return fv_error(FV_ENOMEM, "out of memory for a root solver");
    gsl_set_error_handler_off();
    int gs = gsl_root_fsolver_set(s, &F, lo, hi);
    for (int it = 0; it < 200 && gs == GSL_SUCCESS && !c->status; it++) {
        if ((gs = gsl_root_fsolver_iterate(s)) != GSL_SUCCESS)
            break;
        lo = gsl_root_fsolver_x_lower(s);
        hi = gsl_root_fsolver_x_upper(s);
        if (gsl_root_test_interval(lo, hi, xtol, 0.0) == GSL_SUCCESS)
            break;
    }
    *root = gsl_root_fsolver_root(s);
    gsl_root_fsolver_free(s);
    if (c->status)
        return c->status;
    if (gs != GSL_SUCCESS)
        return fv_error(FV_ENUMERIC, "root bracketing of the variance gap failed: %s", gsl_strerror(gs));
    return FV_OK;
}

int fv_crossover_coupling_distance(const fv_problem *p, double *distance)
{
    size_t dd = p->d * p->d;
    double *w = malloc(3 * dd * sizeof *w);
    if (!w)
        return fv_error(FV_ENOMEM, "out of memory comparing the couplings of a %zu-dimensional problem", p->d);
    double *L0 = w, *G = w + dd, *K = w + 2 * dd, diff = 0.0, size = 0.0;
    fv_problem q = *p;
    q.coupling = FV_COUPLING_OT;
    int st = fv_variance_factors(&q, L0, G);
    q.coupling = FV_COUPLING_ROTATION;
    if (!st)
        st = fv_variance_factors(&q, L0, K);
    for (size_t i = 0; i < dd && !st; i++) {
        diff = fmax(diff, fabs(K[i] - G[i]));
        size = fmax(size, fabs(G[i]));
    }
    free(w);
    if (!st)
        *distance = diff / size;
    return st;
}

int fv_crossover_sigma(const fv_problem *p, double sigma_max, size_t nscan, double xtol, double epsrel,
                       double *sigma_star, int *found)
{
    if (!(sigma_max > 0) || nscan == 0 || !(xtol > 0))
        return fv_error(FV_EINPUT, "crossover search needs sigma_max > 0, nscan >= 1 and xtol > 0");
    double distance;
    int st = fv_crossover_coupling_distance(p, &distance);
    *found = 0;
    if (st || distance <= FV_CROSSOVER_SAME_COUPLING)
        return st;
    gap_ctx c = {p, epsrel, FV_OK};
    double prev_s = 0.0, prev_g = gap_fn(0.0, &c);
    for (size_t k = 1; k <= nscan && !c.status; k++) {
        double s = sigma_max * (double)k / (double)nscan, g = gap_fn(s, &c);
        if (c.status)
            break;
        if (prev_g == 0.0 || (prev_g > 0) != (g > 0)) {
            *found = 1;
            return prev_g == 0.0 ? (*sigma_star = prev_s, FV_OK) : refine(&c, prev_s, s, xtol, sigma_star);
        }
        prev_s = s;
        prev_g = g;
    }
    return c.status;
}
