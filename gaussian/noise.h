/* noise.h: the interpolant's noise schedules f(t) (docs/THEORY.md section 1), host and device (core/hd.h),
 * so the CPU data path and the CUDA backend add the same noise to a batch. */
#ifndef FV_NOISE_H
#define FV_NOISE_H

#include "core/hd.h"

#include <math.h>

typedef enum { FV_SCHEDULE_CONSTANT = 0, FV_SCHEDULE_BRIDGE } fv_schedule;

/* Noise f(t) and its derivative f'(t) for a schedule. The bridge derivative is infinite at t = 0
 * and t = 1 when sigma > 0 (it is returned as +-inf; callers that need it there must not ask). */
FV_HD void fv_noise(fv_schedule s, double sigma, double t, double *f, double *fprime)
{
    if (s == FV_SCHEDULE_CONSTANT) {
        *f = sigma;
        *fprime = 0.0;
        return;
    }
    double q = sqrt(t * (1.0 - t));
    *f = sigma * q;
    *fprime = sigma == 0.0 ? 0.0 : sigma * (1.0 - 2.0 * t) / (2.0 * q);
}

#endif
