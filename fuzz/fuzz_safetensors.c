/* fuzz_safetensors.c: libFuzzer harness for the safetensors reader (fv_st_read, src/core/safetensors.c):
 * header length, JSON, dtypes, shapes, data offsets. Every tensor of an accepted file is fetched with
 * fv_st_get (and its metadata looked up), so an offset or size the reader let through that points
 * outside the buffer shows up under ASan. */
#include "core/safetensors.h"
#include "fuzz/fuzz.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fz_write("in.safetensors", data, size);
    fv_st_file f;
    if (fv_st_read(path, &f) != 0) {
        fv_st_free(&f);
        return 0;
    }
    for (size_t i = 0; i < f.ntensors; i++) {
        const fv_st_tensor *t = &f.tensors[i];
        void *out = malloc(t->count * fv_st_dtype_size(t->dtype) + 1);
        if (out && fv_st_find(&f, t->name) == t)
            fv_st_get(&f, t->name, t->dtype, t->ndim, t->shape, out);
        free(out);
    }
    for (size_t i = 0; i < f.nmeta; i++)
        fv_st_meta(&f, f.meta_keys[i]);
    fv_st_free(&f);
    return 0;
}
