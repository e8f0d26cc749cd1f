/* philox.h: the Philox4x32-10 counter-based generator (Salmon et al., SC'11) and the
 * counter -> uniform -> Gaussian conversions, as inline functions compiled for both the host and
 * CUDA devices, so that CPU and GPU draw identical numbers from the same (seed, counter). */
#ifndef FV_PHILOX_H
#define FV_PHILOX_H

#include "core/hd.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

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

/* A uniform double in the open interval (0, 1) from 53 bits of two words: (k + 1/2) / 2^53 with k the
 * 27 high bits of a over the 26 high bits of b, k assembled in doubles (exactly: it is below 2^53) from
 * 32-bit integers, which vectorize where 64-bit conversions do not. */
FV_HD double fv_philox_u01(uint32_t a, uint32_t b)
{
    double k = (double)(int32_t)(a >> 5) * 67108864.0 + (double)(int32_t)(b >> 6);
    return (k + 0.5) * (1.0 / 9007199254740992.0);
}

/* Block number `block` of stream `stream` (independent sequences under one seed). */
FV_HD fv_philox_ctr fv_philox_block(uint64_t seed, uint64_t stream, uint64_t block)
{
    fv_philox_ctr c = {{(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)}};
    fv_philox_key k = {{(uint32_t)seed, (uint32_t)(seed >> 32)}};
    return fv_philox4x32_10(c, k);
}

/* The bits of a double and back (memcpy: defined behaviour in C and CUDA C++, one move once compiled). */
FV_HD uint64_t fv_philox_bits(double x)
{
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

FV_HD double fv_philox_double(uint64_t b)
{
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* log(u) for a u01 draw (normal, positive, at most 1): fdlibm's e_log.c (under 1 ulp) without its
 * branches for zero, subnormals, infinities and NaN, which a u01 draw never is. Branch-free, so that a
 * loop over draws vectorizes; the libm call it replaces was a fifth of an MLP training step. */
FV_HD double fv_philox_log_u01(double u)
{
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    const double lg1 = 6.666666666666735130e-01, lg2 = 3.999999999940941908e-01,
                 lg3 = 2.857142874366239149e-01, lg4 = 2.222219843214978396e-01,
                 lg5 = 1.818357216161805012e-01, lg6 = 1.531383769920937332e-01,
                 lg7 = 1.479819860511658591e-01;
    uint64_t b = fv_philox_bits(u);
    /* u = 2^e m with m in [1, 2) read off the bits; e as a double by the 2^52 trick (no conversion) */
    double m = fv_philox_double((b & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
    double e = fv_philox_double((b >> 52) | 0x4330000000000000ull) - (4503599627370496.0 + 1023.0);
    int high = m > 1.41421356237309504880; /* move m into [sqrt(2)/2, sqrt(2)) */
    m = high ? 0.5 * m : m;
    e = high ? e + 1.0 : e;
    double f = m - 1.0, s = f / (2.0 + f), z = s * s, w = z * z;
    double r = z * (lg1 + w * (lg3 + w * (lg5 + w * lg7))) + w * (lg2 + w * (lg4 + w * lg6));
    double hfsq = 0.5 * f * f;
    return e * ln2_hi - ((hfsq - (s * (hfsq + r) + e * ln2_lo)) - f);
}

/* sin(2 pi u) and cos(2 pi u) for u in [0, 1]: u = q/4 + r exactly (|r| <= 1/8), then fdlibm's kernels
 * k_sin.c and k_cos.c (under 1 ulp) at x = 2 pi r in [-pi/4, pi/4] and the quarter turns q. Reducing u
 * rather than 2 pi u keeps the angle's rounding off large arguments. Branch-free, as above. */
FV_HD void fv_philox_sincos_2pi(double u, double *sn, double *cs)
{
    const double s1 = -1.66666666666666324348e-01, s2 = 8.33333333332248946124e-03,
                 s3 = -1.98412698298579493134e-04, s4 = 2.75573137070700676789e-06,
                 s5 = -2.50507602534068634195e-08, s6 = 1.58969099521155010221e-10;
    const double c1 = 4.16666666666666019037e-02, c2 = -1.38888888888741095749e-03,
                 c3 = 2.48015872894767294178e-05, c4 = -2.75573143513906633035e-07,
                 c5 = 2.08757232129817482790e-09, c6 = -1.13596475577881948265e-11;
    double big = 4.0 * u + 6755399441055744.0; /* 1.5 * 2^52: rounds 4u to an integer in the low bits */
    unsigned q = (unsigned)fv_philox_bits(big) & 3u;
    double x = (u - 0.25 * (big - 6755399441055744.0)) * 6.28318530717958647692;
    double z = x * x, v = z * x;
    double sx = x + v * (s1 + z * (s2 + z * (s3 + z * (s4 + z * (s5 + z * s6)))));
    double rc = z * (c1 + z * (c2 + z * (c3 + z * (c4 + z * (c5 + z * c6))))), hz = 0.5 * z, w = 1.0 - hz;
    double cx = w + (((1.0 - w) - hz) + z * rc);
    /* quarter turns: (sin, cos) of q pi/2 + x */
    double sq = (q & 1u) ? cx : sx, cq = (q & 1u) ? sx : cx;
    *sn = (q & 2u) ? -sq : sq;
    *cs = ((q + 1u) & 2u) ? -cq : cq;
}

/* Two independent standard normals (Box-Muller) from the words of one Philox block. */
FV_HD void fv_philox_box_muller(fv_philox_ctr r, double *z0, double *z1)
{
    double u1 = fv_philox_u01(r.v[0], r.v[1]), u2 = fv_philox_u01(r.v[2], r.v[3]);
    double rad = sqrt(-2.0 * fv_philox_log_u01(u1)), sn, cs;
    fv_philox_sincos_2pi(u2, &sn, &cs);
    *z0 = rad * cs;
    *z1 = rad * sn;
}

/* Two independent standard normals from block number `block` of a stream. */
FV_HD void fv_philox_normal2(uint64_t seed, uint64_t stream, uint64_t block, double *z0, double *z1)
{
    fv_philox_box_muller(fv_philox_block(seed, stream, block), z0, z1);
}

#endif
