/* fuzz_npy.c: libFuzzer harness for the NPY reader (fv_npy_read and fv_npy_read_f64, src/core/io.c).
 * A file it accepts must hold exactly `count` elements: every one is read back, so ASan sees any
 * array shorter than the shape claims. */
#include "core/io.h"
#include "fuzz/fuzz.h"

#include <stdlib.h>
#include <string.h>

static void touch(const unsigned char *p, size_t bytes)
{
    volatile unsigned char sink = 0;
    for (size_t i = 0; i < bytes; i++)
        sink ^= p[i];
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fz_write("in.npy", data, size);
    fv_npy a;
    if (fv_npy_read(path, &a) == 0) {
        touch(a.data, a.count * (a.dtype == FV_DTYPE_F32 ? 4 : 8));
        fv_npy_free(&a);
    }
    double *x = NULL;
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS], count = 1;
    if (fv_npy_read_f64(fz_path("in.npy"), &x, &ndim, shape) == 0) {
        for (int i = 0; i < ndim; i++)
            count *= shape[i];
        touch((const unsigned char *)x, count * sizeof *x);
        free(x);
    }
    return 0;
}
