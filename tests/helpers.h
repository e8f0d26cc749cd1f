/* helpers.h: small shared pieces of the Criterion tests. */
#ifndef FV_TEST_HELPERS_H
#define FV_TEST_HELPERS_H

#include "core/rng.h"
#include "core/safetensors.h"
#include "gaussian/problem.h"

#include <stddef.h>

/* Sample mean (d) and covariance (d x d, divisor n - 1) of n rows. */
void th_moments(size_t n, size_t d, const double *X, double *mean, double *cov);

/* Scratch folders: a fresh /tmp/PREFIX_XXXXXX in buf (at least 64 bytes), and its removal with one
 * level of subfolders. */
void th_scratch_make(char *buf, const char *prefix);
void th_remove_tree(const char *dir);

/* "dir/name" in a static buffer (valid until the next call). */
const char *th_path_in(const char *dir, const char *name);

/* Entries of a folder besides . and .., or -1 when it cannot be opened. */
int th_entries_in(const char *dir);

/* A whole small file (up to 64 KiB), malloc'ed; *n gets its size. */
unsigned char *th_slurp(const char *path, size_t *n);

/* A float32 tensor of a safetensors file, malloc'ed (asserted present); *n gets its element count
 * unless n is NULL. */
float *th_st_tensor(const fv_st_file *f, const char *name, size_t *n);

/* max |a - ref| / max |ref| over n entries: the error relative to the reference's scale (the absolute
 * error when the reference is all zero). */
double th_max_rel(size_t n, const float *a, const float *ref);

/* Skips the calling test, with one line saying so, where no CUDA device can be used. */
void th_need_gpu(void);

/* One row of the GPU parity table on stderr, "cuda-parity WHAT SHAPE max-rel-err PASS|FAIL", and a
 * Criterion expectation that the error is within tol. */
void th_parity(const char *what, const char *shape, size_t n, const float *gpu, const float *cpu, double tol);

/* 1 when name is an entry of the comma list (NULL: none). */
int th_listed(const char *list, const char *name);

#endif
