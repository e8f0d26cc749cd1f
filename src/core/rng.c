/* rng.c: filling arrays from Philox streams (see rng.h). */
#include "rng.h"

#include "philox.h"

fv_rng fv_rng_make(uint64_t seed, uint64_t stream)
{
    fv_rng r = {seed, stream, 0};
    return r;
}

void fv_rng_normal_at(const fv_rng *r, size_t first, size_t n, double *out)
{
    uint64_t pos = r->pos + first / 2;
    for (size_t i = 0; i < n; i += 2) {
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
