/* cuda_util.h: what the CUDA backend's files share: CUDA and cuBLAS status -> flowvar's error slot,
 * and the project's C headers included with C linkage (the .cu files are C++ under nvcc). */
#ifndef FV_CUDA_UTIL_H
#define FV_CUDA_UTIL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define restrict __restrict__ /* C99's keyword in the C headers; C++ spells it this way */
extern "C" {
#include "core/error.h"
#include "nn/cfm.h"
#include "nn/mlp.h"
#include "nn/nn_math.h"
#include "nn/optim.h"
#include "nn/trainer.h"
}
#undef restrict

/* Threads per block of the elementwise kernels, and the fixed number of blocks of the reductions:
 * a fixed grid keeps every sum in the same order on every run (bit-reproducible losses and norms). */
#define FV_CUDA_THREADS 256
#define FV_CUDA_REDUCE_BLOCKS 256

static inline unsigned fv_cuda_blocks(size_t n)
{
    return (unsigned)((n + FV_CUDA_THREADS - 1) / FV_CUDA_THREADS);
}

/* The sum of a block's per-thread doubles, in a fixed order (a tree over FV_CUDA_THREADS threads,
 * which the block must have), returned to every thread. The closing barrier lets a kernel call it
 * again at once. */
static __device__ inline double fv_block_sum(double s)
{
    __shared__ double buf[FV_CUDA_THREADS];
    buf[threadIdx.x] = s;
    __syncthreads();
    for (unsigned w = FV_CUDA_THREADS / 2; w > 0; w /= 2) {
        if (threadIdx.x < w)
            buf[threadIdx.x] += buf[threadIdx.x + w];
        __syncthreads();
    }
    double total = buf[0];
    __syncthreads();
    return total;
}

static inline int fv_cuda_check(cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return FV_OK;
    if (e == cudaErrorMemoryAllocation)
        return fv_error(FV_ENOMEM, "out of GPU memory (%s)", what);
    return fv_error(FV_EDEVICE, "CUDA error in %s: %s", what, cudaGetErrorString(e));
}

static inline int fv_cublas_check(cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return FV_OK;
    return fv_error(FV_EDEVICE, "cuBLAS error in %s: %s", what, cublasGetStatusString(s));
}

/* The stream a cuBLAS handle queues on: the layers' own kernels go there too. */
static inline cudaStream_t fv_cublas_stream(cublasHandle_t h)
{
    cudaStream_t s;
    cublasGetStream(h, &s);
    return s;
}

/* The launch of the kernel just queued (configuration errors surface here, execution errors at the
 * next synchronizing call). */
static inline int fv_cuda_launched(const char *what)
{
    return fv_cuda_check(cudaGetLastError(), what);
}

#endif
