/* known_map.c: the sharpening map T(x) = (I + s L) x + b of known_map.h. */
#include "data/known_map.h"

#include "core/error.h"

#include <math.h>

int fv_known_map_init(fv_known_map *m, size_t c, size_t h, size_t w, double strength, double offset)
{
    if (c == 0 || h == 0 || w == 0)
        return fv_error(FV_EINPUT, "known map: zero image size %zu x %zu x %zu", c, h, w);
    if (!(strength >= 0) || !isfinite(strength))
        return fv_error(FV_EINPUT, "known map: the sharpening strength must be finite and >= 0 (got %g)", strength);
    if (!isfinite(offset))
        return fv_error(FV_EINPUT, "known map: the offset must be finite (got %g)", offset);
    *m = (fv_known_map){c, h, w, strength, offset};
    return FV_OK;
}

/* The ramp b at column j: -offset on the left edge, +offset on the right. */
static double ramp(const fv_known_map *m, size_t j)
{
    return m->w > 1 ? m->offset * (2.0 * (double)j / (double)(m->w - 1) - 1.0) : 0.0;
}

void fv_known_map_apply(const fv_known_map *m, size_t n, const double *X, double *Y)
{
    size_t h = m->h, w = m->w;
    for (size_t img = 0; img < n * m->c; img++) {
        const double *x = X + img * h * w;
        double *y = Y + img * h * w;
        for (size_t i = 0; i < h; i++)
            for (size_t j = 0; j < w; j++) {
                /* L x = 4 x - (neighbours), the missing ones outside the image being zero */
                double v = x[i * w + j], lap = 4.0 * v;
                lap -= i > 0 ? x[(i - 1) * w + j] : 0.0;
                lap -= i + 1 < h ? x[(i + 1) * w + j] : 0.0;
                lap -= j > 0 ? x[i * w + j - 1] : 0.0;
                lap -= j + 1 < w ? x[i * w + j + 1] : 0.0;
                y[i * w + j] = v + m->strength * lap + ramp(m, j);
            }
    }
}
