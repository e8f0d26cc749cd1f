/* fuzz_idx.c: libFuzzer harness for the Fashion-MNIST IDX reader (fv_dataset_load, src/data/dataset.c),
 * plain and gzipped. Input layout: one byte choosing the image limit (byte % 3: 0 = all, 1, 2), a
 * 4-byte little-endian length L, L bytes of the image file, and the rest as the label file (either may
 * be gzip: zlib reads both). */
#include "data/dataset.h"
#include "fuzz/fuzz.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    size_t limit = data[0] % 3;
    size_t len = (size_t)data[1] | (size_t)data[2] << 8 | (size_t)data[3] << 16 | (size_t)data[4] << 24;
    data += 5;
    size -= 5;
    if (len > size)
        len = size;
    fz_write("t10k-images-idx3-ubyte", data, len);
    fz_write("t10k-labels-idx1-ubyte", data + len, size - len);
    fv_dataset ds;
    if (fv_dataset_load(&ds, FV_DATASET_FASHION_MNIST, fz_scratch_dir(), FV_SPLIT_TEST, limit) == 0) {
        fz_touch_dataset(&ds);
        fv_dataset_pad(&ds, 32);
        fv_dataset_free(&ds);
    }
    return 0;
}
