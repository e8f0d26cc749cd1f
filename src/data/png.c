/* png.c: image grids to PNG with libpng's simplified write API (see png.h). The whole picture is
 * laid out in memory first, so a failure leaves nothing but the aborted temporary. */
#include "data/png.h"

#include "core/error.h"
#include "core/io.h"

#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>

static unsigned char to_byte(float v)
{
    double b = floor(((double)v + 1.0) * 127.5 + 0.5);
    return (unsigned char)(b < 0 ? 0 : b > 255 ? 255 : b);
}

static int encode(const char *path, size_t width, size_t height, size_t c, const unsigned char *pixels)
{
    fv_atomic_file f;
    int st = fv_atomic_open(&f, path);
    if (st)
        return st;
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)width;
    img.height = (png_uint_32)height;
    img.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    if (!png_image_write_to_stdio(&img, f.fp, 0, pixels, 0, NULL)) {
        st = fv_error(FV_EIO, "%s: PNG encoding failed: %s", path, img.message);
        png_image_free(&img);
        fv_atomic_abort(&f);
        return st;
    }
    return fv_atomic_commit(&f);
}

static int check_grid(const char *path, size_t n, size_t c, size_t h, size_t w, size_t rows, size_t cols, size_t zoom)
{
    if (c != 1 && c != 3)
        return fv_error(FV_EINPUT, "%s: images must have 1 or 3 channels, not %zu", path, c);
    if (h == 0 || w == 0 || rows == 0 || cols == 0 || zoom == 0)
        return fv_error(FV_EINPUT, "%s: empty grid (%zu x %zu cells of %zu x %zu pixels, zoom %zu)", path, rows, cols,
                        h, w, zoom);
    if (n > rows * cols)
        return fv_error(FV_EINPUT, "%s: %zu images do not fit in %zu x %zu cells", path, n, rows, cols);
    return FV_OK;
}

int fv_png_write_grid(const char *path, size_t n, size_t c, size_t h, size_t w, const float *x, size_t rows,
                      size_t cols, size_t zoom)
{
    int st = check_grid(path, n, c, h, w, rows, cols, zoom);
    if (st)
        return st;
    for (size_t k = 0; k < n * c * h * w; k++)
        if (!isfinite(x[k]))
            return fv_error(FV_EINPUT, "%s: image %zu has a non-finite value", path, k / (c * h * w));
    const size_t B = FV_PNG_BORDER, zh = zoom * h, zw = zoom * w;
    const size_t width = cols * (zw + B) + B, height = rows * (zh + B) + B;
    unsigned char *pix = malloc(width * height * c);
    if (!pix)
        return fv_error(FV_ENOMEM, "%s: out of memory for a %zu x %zu picture", path, width, height);
    memset(pix, 255, width * height * c);
    for (size_t k = 0; k < n; k++) {
        size_t y0 = B + (k / cols) * (zh + B), x0 = B + (k % cols) * (zw + B);
        for (size_t ch = 0; ch < c; ch++)
            for (size_t i = 0; i < zh; i++)
                for (size_t j = 0; j < zw; j++)
                    pix[((y0 + i) * width + x0 + j) * c + ch] =
                        to_byte(x[((k * c + ch) * h + i / zoom) * w + j / zoom]);
    }
    st = encode(path, width, height, c, pix);
    free(pix);
    return st;
}

int fv_png_write_grid_scaled(const char *path, size_t n, size_t c, size_t h, size_t w, const double *x, size_t rows,
                             size_t cols, size_t zoom)
{
    size_t size = c * h * w;
    int st = check_grid(path, n, c, h, w, rows, cols, zoom);
    if (st)
        return st;
    float *y = malloc((n ? n * size : 1) * sizeof *y);
    if (!y)
        return fv_error(FV_ENOMEM, "%s: out of memory", path);
    for (size_t k = 0; k < n; k++) {
        double m = 0;
        for (size_t i = 0; i < size; i++)
            m = fmax(m, fabs(x[k * size + i])); /* fmax drops NaN: the float check below still sees it */
        for (size_t i = 0; i < size; i++)
            y[k * size + i] = m > 0 ? (float)(x[k * size + i] / m) : (float)x[k * size + i];
    }
    st = fv_png_write_grid(path, n, c, h, w, y, rows, cols, zoom);
    free(y);
    return st;
}
