/* philox.h: the Philox4x32-10 counter-based generator (Salmon et al., SC'11) and the
 * counter -> uniform -> Gaussian conversions, as inline functions compiled for both the host and
 * CUDA devices, so that CPU and GPU draw identical numbers from the same (seed, counter). */
#ifndef FV_PHILOX_H
#define FV_PHILOX_H

#include "core/hd.h"

#include <math.h>
#include <stdint.h>

typedef struct { uint32_t v[4]; } fv_philox_ctr;
typedef struct { uint32_t v[2]; } fv_philox_key;

FV_HD void fv_philox_mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo)
{
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

/* Ten rounds of Philox4x32 with the standard multipliers and Weyl key increments. */
FV_HD fv_philox_ctr fv_philox4x32_10(fv_philox_ctr c, fv_philox_key k)
{
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, lo0, hi1, lo1;
        fv_philox_mulhilo(0xD2511F53u, c.v[0], &hi0, &lo0);
        fv_philox_mulhilo(0xCD9E8D57u, c.v[2], &hi1, &lo1);
        fv_philox_ctr n = {{hi1 ^ c.v[1] ^ k.v[0], lo1, hi0 ^ c.v[3] ^ k.v[1], lo0}};
        c = n;
        k.v[0] += 0x9E3779B9u;
        k.v[1] += 0xBB67AE85u;
    }
    return c;
}

/* A uniform double in the open interval (0, 1) from 53 bits of two words. */
FV_HD double fv_philox_u01(uint32_t a, uint32_t b)
{
    uint64_t k = ((uint64_t)(a >> 5) << 26) | (uint64_t)(b >> 6);
    return ((double)k + 0.5) * (1.0 / 9007199254740992.0);
}

/* Block number `block` of stream `stream` (independent sequences under one seed). */
FV_HD fv_philox_ctr fv_philox_block(uint64_t seed, uint64_t stream, uint64_t block)
{
    fv_philox_ctr c = {{(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)}};
    fv_philox_key k = {{(uint32_t)seed, (uint32_t)(seed >> 32)}};
    return fv_philox4x32_10(c, k);
}

/* Two independent standard normals (Box-Muller) from the words of one Philox block. */
FV_HD void fv_philox_box_muller(fv_philox_ctr r, double *z0, double *z1)
{
    double u1 = fv_philox_u01(r.v[0], r.v[1]), u2 = fv_philox_u01(r.v[2], r.v[3]);
    double rad = sqrt(-2.0 * log(u1)), ang = 6.283185307179586476925 * u2;
    *z0 = rad * cos(ang);
    *z1 = rad * sin(ang);
}

/* Two independent standard normals from block number `block` of a stream. */
FV_HD void fv_philox_normal2(uint64_t seed, uint64_t stream, uint64_t block, double *z0, double *z1)
{
    fv_philox_box_muller(fv_philox_block(seed, stream, block), z0, z1);
}

#endif
