/* ode.h: integrating dy/dt = F(t, y) for one large state vector (all points of a batch at once,
 * so each right-hand side is one BLAS-friendly field evaluation): fixed-step Euler, fixed-step RK4
 * (GSL odeiv2 rk4) and adaptive RK45 (GSL odeiv2 rkf45 with absolute and relative tolerances). */
#ifndef FV_ODE_H
#define FV_ODE_H

#include <stddef.h>

typedef enum { FV_ODE_EULER = 0, FV_ODE_RK4, FV_ODE_RK45 } fv_ode_solver;

/* Right-hand side: dydt = F(t, y) for a state of n numbers. Returns an fv status; a failure stops
 * the integration and its message is kept. */
typedef int (*fv_ode_rhs)(double t, size_t n, const double *y, double *dydt, void *ctx);

typedef struct {
    fv_ode_solver solver;
    size_t steps;        /* Euler and RK4: number of equal steps */
    double rtol, atol;   /* RK45: tolerances */
    double t0, t1;
} fv_ode_opts;

/* Default options: RK4, 100 steps, rtol = atol = 1e-8, from t = 0 to 1. */
fv_ode_opts fv_ode_defaults(void);

/* Integrate y (n numbers, overwritten) from t0 to t1. *nevals (if not NULL) receives the number
 * of right-hand-side evaluations. On failure y holds the last accepted state. */
int fv_ode_integrate(fv_ode_rhs F, void *ctx, size_t n, double *y, const fv_ode_opts *o, size_t *nevals);

/* Parse "euler" | "rk4" | "rk45". */
int fv_ode_solver_parse(const char *name, fv_ode_solver *s);
const char *fv_ode_solver_name(fv_ode_solver s);

#endif
