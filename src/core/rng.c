/* rng.c: filling arrays from Philox streams (see rng.h). */
#include "rng.h"

#include "philox.h"

fv_rng fv_rng_make(uint64_t seed, uint64_t stream)
{
    fv_rng r = {seed, stream, 0};
    return r;
}

#define LANES FV_PHILOX_LANES

/* Blocks pos .. pos + LANES - 1 of (seed, stream): fv_philox4x32_10's rounds written across blocks, one
 * array per counter word, so that they vectorize (the 32 x 32 -> 64-bit products as vpmuludq). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void fv_philox_lanes(uint64_t seed, uint64_t stream, uint64_t pos, uint32_t w[4][FV_PHILOX_LANES])
{
    uint32_t *c0 = w[0], *c1 = w[1], *c2 = w[2], *c3 = w[3];
    for (int l = 0; l < LANES; l++) {
        uint64_t b = pos + (uint64_t)l;
        c0[l] = (uint32_t)b;
        c1[l] = (uint32_t)(b >> 32);
        c2[l] = (uint32_t)stream;
        c3[l] = (uint32_t)(stream >> 32);
    }
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        for (int l = 0; l < LANES; l++) {
            uint64_t p0 = (uint64_t)0xD2511F53u * c0[l], p1 = (uint64_t)0xCD9E8D57u * c2[l];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[l] ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3[l] ^ k1;
            c0[l] = n0;
            c1[l] = (uint32_t)p1;
            c2[l] = n2;
            c3[l] = (uint32_t)p0;
        }
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

/* The 2 LANES normals of blocks pos .. pos + LANES - 1, fv_philox_normal2's numbers bit for bit: Box-
 * Muller across blocks, one array per quantity, so that the logarithm and sine run in vector lanes. The
 * Makefile builds this file without contraction into fused multiply-adds, which the scalar code does
 * not have, so that every clone gives the same bits. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
static void normal_lanes(uint64_t seed, uint64_t stream, uint64_t pos, double *out)
{
    uint32_t w[4][LANES];
    fv_philox_lanes(seed, stream, pos, w);
    double rad[LANES], sn[LANES], cs[LANES];
    for (int l = 0; l < LANES; l++) {
        rad[l] = sqrt(-2.0 * fv_philox_log_u01(fv_philox_u01(w[0][l], w[1][l])));
        fv_philox_sincos_2pi(fv_philox_u01(w[2][l], w[3][l]), &sn[l], &cs[l]);
    }
    for (int l = 0; l < LANES; l++) {
        out[2 * l] = rad[l] * cs[l];
        out[2 * l + 1] = rad[l] * sn[l];
    }
}

void fv_rng_normal_at(const fv_rng *r, size_t first, size_t n, double *out)
{
    uint64_t pos = r->pos + first / 2;
    size_t i = 0;
    for (; i + 2 * LANES <= n; i += 2 * LANES, pos += LANES)
        normal_lanes(r->seed, r->stream, pos, out + i);
    for (; i < n; i += 2) {
        double z0, z1;
        fv_philox_normal2(r->seed, r->stream, pos++, &z0, &z1);
        out[i] = z0;
        if (i + 1 < n)
            out[i + 1] = z1;
    }
}

void fv_rng_normal(fv_rng *r, size_t n, double *out)
{
    fv_rng_normal_at(r, 0, n, out);
    r->pos += (n + 1) / 2;
}

void fv_rng_uniform(fv_rng *r, size_t n, double *out)
{
    for (size_t i = 0; i < n; i++) {
        fv_philox_ctr b = fv_philox_block(r->seed, r->stream, r->pos++);
        out[i] = fv_philox_u01(b.v[0], b.v[1]);
    }
}
