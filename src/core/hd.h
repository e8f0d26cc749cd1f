/* hd.h: FV_HD marks a small inline function that is compiled for the host and, under nvcc, for CUDA
 * devices too, so the CPU code and the CUDA backend share one definition of each formula (random
 * numbers, noise schedules, activations, the optimizer step). */
#ifndef FV_HD_H
#define FV_HD_H

#ifdef __CUDACC__
#define FV_HD __host__ __device__ __forceinline__
#else
#define FV_HD static inline
#endif

#endif
