/* transport.c: closed-form fields as ODE right-hand sides (see transport.h). */
#include "gaussian/transport.h"

#include "core/error.h"

typedef struct {
    const fv_field *f;
    fv_field_work w;
} transport_ctx;

static int field_rhs(double t, size_t n, const double *y, double *dydt, void *ctx)
{
    transport_ctx *c = ctx;
    return fv_field_eval(c->f, t, n / c->f->d, y, dydt, &c->w);
}

int fv_field_transport(const fv_field *f, size_t n, double *X, const fv_ode_opts *o, size_t *nevals)
{
    transport_ctx c = {f, {0}};
    int st = fv_field_work_alloc(&c.w, f->d, n);
    if (!st)
        st = fv_ode_integrate(field_rhs, &c, n * f->d, X, o, nevals);
    fv_field_work_free(&c.w);
    return st;
}
