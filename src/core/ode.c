/* ode.c: fixed-step Euler and RK4 by hand (GSL has no explicit Euler, and its rk4 stepper always
 * estimates the error by step doubling, tripling the cost of a fixed-step run), adaptive RK45
 * through GSL odeiv2's rkf45 driver. */
#include "ode.h"

#include "error.h"

#include <gsl/gsl_errno.h>
#include <gsl/gsl_odeiv2.h>
#include <stdlib.h>
#include <string.h>

fv_ode_opts fv_ode_defaults(void)
{
    fv_ode_opts o = {FV_ODE_RK4, 100, 1e-8, 1e-8, 0.0, 1.0};
    return o;
}

typedef struct {
    fv_ode_rhs F;
    void *ctx;
    size_t n;
    int status;
    size_t nevals;
} gsl_bridge;

static int bridge_rhs(double t, const double y[], double dydt[], void *params)
{
    gsl_bridge *b = params;
    b->nevals++;
    b->status = b->F(t, b->n, y, dydt, b->ctx);
    return b->status ? GSL_EBADFUNC : GSL_SUCCESS;
}

/* y += h * k */
static void axpy(size_t n, double h, const double *k, double *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] += h * k[i];
}

static int integrate_fixed(gsl_bridge *b, double *y, const fv_ode_opts *o)
{
    size_t n = b->n, nbuf = o->solver == FV_ODE_RK4 ? 5 : 1;
    double *buf = malloc(nbuf * n * sizeof *buf);
    if (!buf)
        return fv_error(FV_ENOMEM, "out of memory for an ODE state of %zu numbers", n);
    double *k1 = buf, *k2 = buf + n, *k3 = buf + 2 * n, *k4 = buf + 3 * n, *tmp = buf + 4 * n;
    double h = (o->t1 - o->t0) / (double)o->steps;
    int st = FV_OK;
    for (size_t s = 0; s < o->steps && !st; s++) {
        double t = o->t0 + (double)s * h;
        b->nevals++;
        if ((st = b->F(t, n, y, k1, b->ctx)))
            break;
        if (o->solver == FV_ODE_EULER) {
            axpy(n, h, k1, y);
            continue;
        }
        memcpy(tmp, y, n * sizeof *tmp);
        axpy(n, h / 2, k1, tmp);
        if ((st = b->F(t + h / 2, n, tmp, k2, b->ctx)))
            break;
        memcpy(tmp, y, n * sizeof *tmp);
        axpy(n, h / 2, k2, tmp);
        if ((st = b->F(t + h / 2, n, tmp, k3, b->ctx)))
            break;
        memcpy(tmp, y, n * sizeof *tmp);
        axpy(n, h, k3, tmp);
        if ((st = b->F(t + h, n, tmp, k4, b->ctx)))
            break;
        b->nevals += 3;
        for (size_t i = 0; i < n; i++)
            y[i] += h / 6 * (k1[i] + 2 * k2[i] + 2 * k3[i] + k4[i]);
    }
    free(buf);
    return st;
}

static int integrate_rk45(gsl_bridge *b, double *y, const fv_ode_opts *o)
{
    gsl_odeiv2_system sys = {bridge_rhs, NULL, b->n, b};
    double t = o->t0, h = (o->t1 - o->t0) / (double)(o->steps ? o->steps : 100);
    gsl_odeiv2_driver *drv = gsl_odeiv2_driver_alloc_y_new(&sys, gsl_odeiv2_step_rkf45, h, o->atol, o->rtol);
    if (!drv)
        return fv_error(FV_ENOMEM, "out of memory for an ODE solver of %zu equations", b->n);
    int gs = gsl_odeiv2_driver_apply(drv, &t, o->t1, y);
    gsl_odeiv2_driver_free(drv);
    if (b->status)
        return fv_error_context(b->status, "ODE integration stopped at t = %.6g: ", t);
    if (gs != GSL_SUCCESS)
        return fv_error(FV_ENUMERIC, "ODE solver failed at t = %.6g: %s", t, gsl_strerror(gs));
    return FV_OK;
}

int fv_ode_integrate(fv_ode_rhs F, void *ctx, size_t n, double *y, const fv_ode_opts *o, size_t *nevals)
{
    if (o->solver != FV_ODE_RK45 && o->steps == 0)
        return fv_error(FV_EINPUT, "--steps must be at least 1");
    if (o->solver == FV_ODE_RK45 && !(o->rtol > 0 && o->atol >= 0))
        return fv_error(FV_EINPUT, "RK45 needs rtol > 0 and atol >= 0");
    /* GSL's default handler aborts the process; flowvar reports errors through status codes. */
    gsl_set_error_handler_off();
    gsl_bridge b = {F, ctx, n, FV_OK, 0};
    int st = o->solver == FV_ODE_RK45 ? integrate_rk45(&b, y, o) : integrate_fixed(&b, y, o);
    if (nevals)
        *nevals = b.nevals;
    return st;
}

int fv_ode_solver_parse(const char *name, fv_ode_solver *s)
{
    static const char *names[] = {"euler", "rk4", "rk45"};
    for (int i = 0; i < 3; i++)
        if (strcmp(name, names[i]) == 0) {
            *s = (fv_ode_solver)i;
            return FV_OK;
        }
    return fv_error(FV_EINPUT, "--solver: unknown solver '%s' (expected euler, rk4 or rk45)", name);
}

const char *fv_ode_solver_name(fv_ode_solver s)
{
    static const char *names[] = {"euler", "rk4", "rk45"};
    return names[s];
}
