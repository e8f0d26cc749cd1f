/* rng.h: reproducible random streams for flowvar. A stream is (seed, stream id, position); the
 * n-th Gaussian of a stream depends only on those three numbers (Philox, see philox.h), so any
 * subset can be regenerated, on the CPU or the GPU, without replaying the rest. */
#ifndef FV_RNG_H
#define FV_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t seed;
    uint64_t stream;
    uint64_t pos; /* index of the next Philox block; each block gives two Gaussians */
} fv_rng;

fv_rng fv_rng_make(uint64_t seed, uint64_t stream);

/* Fill out[0..n) with standard normals and advance the stream by ceil(n/2) blocks. */
void fv_rng_normal(fv_rng *r, size_t n, double *out);

/* The normals number first .. first + n - 1 of r's stream, counted from its position, into out[0..n)
 * without moving r: first must be even (a whole Philox block). fv_rng_normal's numbers, so that threads
 * can each draw their part of one call's. */
void fv_rng_normal_at(const fv_rng *r, size_t first, size_t n, double *out);

/* Philox blocks per fv_philox_lanes call: a multiple of every vector width (16 words of AVX-512). */
#define FV_PHILOX_LANES 16

/* The words of blocks pos .. pos + FV_PHILOX_LANES - 1 of (seed, stream), word k of block pos + l in
 * w[k][l]: fv_philox_block's words, computed in vector lanes (for loops that draw many blocks). */
void fv_philox_lanes(uint64_t seed, uint64_t stream, uint64_t pos, uint32_t w[4][FV_PHILOX_LANES]);

/* Fill out[0..n) with uniforms in (0, 1) and advance the stream by n blocks. */
void fv_rng_uniform(fv_rng *r, size_t n, double *out);

#endif
