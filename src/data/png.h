/* png.h: images to PNG files through libpng: grids of images for looking at data, samples and
 * eigen-images. Files are written atomically (temporary + rename, core/io.h). */
#ifndef FV_PNG_H
#define FV_PNG_H

#include <stddef.h>

/* Width of the white border around and between the cells of a grid, in pixels. */
#define FV_PNG_BORDER 2

/* Write n images (c x h x w each, c = 1 for grey or 3 for RGB planes, values in [-1, 1]; outside
 * values are clipped) as a grid of rows x cols cells, filled row by row, cells beyond n left
 * white. Each pixel is drawn as a zoom x zoom square (28-pixel images are hard to see at 1), so the
 * picture is cols (zoom w + 2) + 2 wide and rows (zoom h + 2) + 2 high. A value v becomes the byte
 * round((v + 1) 127.5), the inverse of the datasets' normalization. FV_EINPUT for a bad shape,
 * more images than cells, or a non-finite value. */
int fv_png_write_grid(const char *path, size_t n, size_t c, size_t h, size_t w, const float *x, size_t rows,
                      size_t cols, size_t zoom);

/* The same for images of arbitrary scale, each divided by its own largest |value| so that 0 is
 * mid-grey and the sign shows as dark / light: for eigenvectors (whose sign is arbitrary) and other
 * signed patterns. n = 1 writes a single image. */
int fv_png_write_grid_scaled(const char *path, size_t n, size_t c, size_t h, size_t w, const double *x, size_t rows,
                             size_t cols, size_t zoom);

#endif
