/* bench_util.h: what the GPU benchmark programs share: a monotonic clock, and an exit with flowvar's
 * message when a call fails. */
#ifndef FV_BENCH_UTIL_H
#define FV_BENCH_UTIL_H

#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* st from a flowvar call: on failure, "PROGRAM: WHAT: the error" on stderr and exit status 1. */
static inline void bench_check(const char *program, int st, const char *what)
{
    if (st) {
        fprintf(stderr, "%s: %s: %s\n", program, what, fv_last_error());
        exit(1);
    }
}

#endif
