/* known_map.h: an image-to-image map whose optimal-transport property is known exactly, the
 * download-free analogue of the paper's benchmark pairs with ground-truth OT maps (Table 2/3).
 *
 * T(x) = G x + b with G = I + s L, L the 5-point negative Laplacian of each channel with zero
 * (Dirichlet) boundary: L is symmetric with eigenvalues in (0, 8), so G is symmetric positive definite
 * (spectrum in (1, 1 + 8 s)): a sharpening filter. A symmetric positive definite linear map plus a
 * constant is the gradient of the convex quadratic x^T G x / 2 + b^T x, hence by Brenier's theorem the
 * OT map (quadratic cost) from ANY source distribution of images to its image under T. The offset b
 * is a fixed horizontal ramp from -b_amp to +b_amp [choice: s = 0.5, b_amp = 0.5 by default:
 * on Fashion-MNIST |T(x) - x| averages 15, against 34 between the targets of two random images], so
 * that T is not linear. Pixels are in [-1, 1]; targets may leave that range (they are not clipped:
 * clipping would break the OT property). */
#ifndef FV_KNOWN_MAP_H
#define FV_KNOWN_MAP_H

#include <stddef.h>

#define FV_KNOWN_MAP_STRENGTH 0.5
#define FV_KNOWN_MAP_OFFSET 0.5

typedef struct {
    size_t c, h, w;
    double strength; /* s */
    double offset;   /* b_amp */
} fv_known_map;

/* FV_EINPUT naming the value for a zero size, s < 0 or a non-finite offset. */
int fv_known_map_init(fv_known_map *m, size_t c, size_t h, size_t w, double strength, double offset);

/* Y = T(X) for n images (n x c*h*w, NCHW rows); Y must not alias X. */
void fv_known_map_apply(const fv_known_map *m, size_t n, const double *X, double *Y);

#endif
