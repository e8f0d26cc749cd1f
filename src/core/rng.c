/* rng.c: filling arrays from Philox streams (see rng.h). */
#include "rng.h"

#include "philox.h"

fv_rng fv_rng_make(uint64_t seed, uint64_t stream)
{
    fv_rng r = {seed, stream, 0};
    return r;
}

/* Blocks per batch of philox_lanes: a multiple of every vector width (16 words of AVX-512). */
#define LANES 16

/* Blocks pos .. pos + LANES - 1 of (seed, stream): fv_philox4x32_10's rounds written across blocks, one
 * array per counter word, so that they vectorize (the 32 x 32 -> 64-bit products as vpmuludq); the same
 * words as fv_philox_block. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("avx512f", "avx2", "default"), optimize("tree-vectorize")))
#endif
static void philox_lanes(uint64_t seed, uint64_t stream, uint64_t pos, fv_philox_ctr *out)
{
    uint32_t c0[LANES], c1[LANES], c2[LANES], c3[LANES];
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
    for (int l = 0; l < LANES; l++)
        out[l] = (fv_philox_ctr){{c0[l], c1[l], c2[l], c3[l]}};
}

void fv_rng_normal_at(const fv_rng *r, size_t first, size_t n, double *out)
{
    uint64_t pos = r->pos + first / 2;
    size_t i = 0;
    fv_philox_ctr blk[LANES];
    for (; i + 2 * LANES <= n; i += 2 * LANES, pos += LANES) {
        philox_lanes(r->seed, r->stream, pos, blk);
        for (int l = 0; l < LANES; l++)
            fv_philox_box_muller(blk[l], &out[i + 2 * l], &out[i + 2 * l + 1]);
    }
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
