/* transport.h: push samples forward through a closed-form field, t = 0 to 1 (docs/THEORY.md section 2). */
#ifndef FV_TRANSPORT_H
#define FV_TRANSPORT_H

#include "core/ode.h"
#include "gaussian/field.h"

/* Integrate dx/dt = v(x, t) for n points X (n x d, overwritten) with the given solver options. */
int fv_field_transport(const fv_field *f, size_t n, double *X, const fv_ode_opts *o, size_t *nevals);

#endif
