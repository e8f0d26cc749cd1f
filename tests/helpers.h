/* helpers.h: small shared pieces of the Criterion tests. */
#ifndef FV_TEST_HELPERS_H
#define FV_TEST_HELPERS_H

#include "core/rng.h"
#include "core/safetensors.h"
#include "gaussian/problem.h"
#include "gaussian/variance.h"

#include <stddef.h>
#include <stdint.h>

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
/* The text of path into buf (at most size - 1 bytes, NUL-terminated; empty when it cannot be read). */
void th_slurp_text(const char *path, char *buf, size_t size);
unsigned char *th_slurp(const char *path, size_t *n);

/* 1 when path names an existing file, folder or link target. */
int th_exists(const char *path);

/* Run `$FLOWVAR ARGS` (build/flowvar without $FLOWVAR) through the shell with stdout and stderr into
 * out_path and err_path, then their text into out and err (th_slurp_text); returns the exit status,
 * -1 when the command did not exit normally. */
int th_flowvar(const char *args, const char *out_path, const char *err_path, char *out, size_t out_size, char *err,
               size_t err_size);

/* The rest of a random test problem once its means and covariances are drawn: the rotation by deg
 * (fv_rotation_blocks, allocated), the coupling, the noise, and a check that it validates. */
void th_problem_finish(fv_problem *p, fv_coupling c, double deg, double sigma, fv_schedule s, int deriv);

/* A field near the OT field, not at it: theta = b + st z, Theta = (G - I) + sT Z / sqrt(d), z and Z
 * standard normals from r. */
void th_perturbed_ot(const fv_problem *p, fv_rng *r, double st, double sT, double *theta, double *Theta);

/* The exact gradient variance (fv_variance_at at t >= 0, fv_variance_integrated at t < 0) against
 * fv_variance_mc with n samples (seed 20251018, stream `stream`), one check line each: the totals within
 * 4 standard errors and, when rel > 0, within rel * |exact| (so that a loose estimate cannot pass); the
 * loss against a bound on its standard error: for one t, l is a quadratic form in a Gaussian with
 * Var l <= 2 (E l)^2; over t ~ U(0,1), Var l <= 3 max_t (E[l | t])^2. */
void th_variance_vs_mc(const fv_problem *p, const fv_vfield *f, double t, size_t n, uint64_t stream, double rel,
                       const char *label);

/* A float32 tensor of a safetensors file, malloc'ed (asserted present); *n gets its element count
 * unless n is NULL. */
float *th_st_tensor(const fv_st_file *f, const char *name, size_t *n);

/* max |a - ref| / max |ref| over n entries: the error relative to the reference's scale (the absolute
 * error when the reference is all zero). */
double th_max_rel(size_t n, const float *a, const float *ref);

/* Skips the calling test, with one line saying so, where no CUDA device can be used. */
void th_need_gpu(void);

/* One row of the GPU parity table on stderr, "cuda-parity WHAT SHAPE max-rel-err bound BOUND PASS|FAIL"
 * (scripts/gpu-check turns these rows into gpu_parity.tsv). */
void th_parity_row(const char *what, const char *shape, double err, double bound);
/* th_parity_row of max |gpu - cpu| / max |cpu| over n entries, and a Criterion expectation that it is
 * within tol. */
void th_parity(const char *what, const char *shape, size_t n, const float *gpu, const float *cpu, double tol);

/* 1 when name is an entry of the comma list (NULL: none). */
int th_listed(const char *list, const char *name);

#endif
