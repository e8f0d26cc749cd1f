/* bench_util.h: what the GPU benchmark programs share: a monotonic clock, an exit with flowvar's
 * message when a call fails, and the device memory in use. */
#ifndef FV_BENCH_UTIL_H
#define FV_BENCH_UTIL_H

#include "core/error.h"

#include <cuda_runtime_api.h>
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

/* Bytes of device memory in use (the whole card's, other processes included): the difference around a
 * trainer's life is what it took, cuBLAS's workspaces included. */
static inline size_t bench_device_used_bytes(const char *program)
{
    size_t free_b, total;
    if (cudaMemGetInfo(&free_b, &total) != cudaSuccess) {
        fprintf(stderr, "%s: cudaMemGetInfo failed\n", program);
        exit(1);
    }
    return total - free_b;
}

#endif
