/* fuzz_cifar.c: libFuzzer harness for the CIFAR-10 binary batch reader (fv_dataset_load, src/data/dataset.c).
 * Input layout: one byte choosing the image limit (byte % 3: 0 = all, 1, 2), the rest is test_batch.bin. */
#include "data/dataset.h"
#include "fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fz_write("test_batch.bin", data + 1, size - 1);
    fv_dataset ds;
    if (fv_dataset_load(&ds, FV_DATASET_CIFAR10, fz_scratch_dir(), FV_SPLIT_TEST, data[0] % 3) == 0) {
        fz_touch_dataset(&ds);
        fv_dataset_free(&ds);
    }
    return 0;
}
