/* safetensors.h: reading and writing safetensors files (https://huggingface.co/docs/safetensors),
 * the checkpoint format of the python ML ecosystem, so flowvar can load and save model weights
 * that torch/numpy/jax code reads and writes.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
 *   {"__metadata__": {"key": "value", ...}, "NAME": {"dtype": "F32", "shape": [2, 3],
 *    "data_offsets": [BEGIN, END]}, ...}
 * then the data buffer; offsets are relative to the buffer, tensors are C order, little-endian. */
#ifndef FV_SAFETENSORS_H
#define FV_SAFETENSORS_H

#include <stddef.h>

#define FV_ST_MAX_DIMS 8

/* The dtypes flowvar handles. Files holding any other dtype (I32, BOOL, F8_E4M3, ...) are
 * rejected by fv_st_read with a message naming the dtype and the tensor. F16 and BF16 are read
 * (torch models are often saved in them) and converted to float by fv_st_get_as_f32. */
typedef enum { FV_ST_F32 = 0, FV_ST_F64, FV_ST_I64, FV_ST_U8, FV_ST_F16, FV_ST_BF16 } fv_st_dtype;

typedef struct {
    char *name;                   /* UTF-8, NUL-terminated */
    fv_st_dtype dtype;
    int ndim;                     /* 0 for a scalar */
    size_t shape[FV_ST_MAX_DIMS];
    size_t count;                 /* product of shape (1 for a scalar, 0 if an extent is 0) */
    size_t offset, nbytes;        /* where the tensor lies in fv_st_file.data */
} fv_st_tensor;

/* A whole file in memory; free with fv_st_free. `tensors` and the metadata are in the order the
 * header lists them (for files from the official writer that is also the order of the data).
 * `data` holds the raw buffer exactly as stored, i.e. little-endian; use fv_st_get_* for values
 * in host order. `path` is the file name, kept so later errors (fv_st_get_*) can name it. */
typedef struct {
    size_t ntensors;
    fv_st_tensor *tensors;
    size_t nmeta;
    char **meta_keys, **meta_values;
    unsigned char *data;
    size_t data_size;
    char *path;
} fv_st_file;

/* Read the whole file. On failure returns FV_EINPUT (FV_ENOMEM, FV_EIO for the system failing us)
 * with a message starting with the path and naming the problem: a truncated file, a header length
 * beyond the file, invalid JSON or UTF-8, missing/extra/duplicate keys, an unsupported dtype,
 * offsets out of range or not matching dtype*shape, overlapping tensors or holes in the buffer
 * (the format forbids both), duplicate names. *f is then empty (safe to fv_st_free). */
int fv_st_read(const char *path, fv_st_file *f);

/* Safe on a zeroed, failed or already freed file. */
void fv_st_free(fv_st_file *f);

const fv_st_tensor *fv_st_find(const fv_st_file *f, const char *name); /* NULL if absent */
const char *fv_st_meta(const fv_st_file *f, const char *key);          /* NULL if absent */

/* Copy tensor `name` into `out` (count elements, host byte order) after checking that it exists,
 * has `dtype` and has exactly the shape (ndim, shape). Otherwise FV_EINPUT with a message naming
 * the file, the tensor, and the expected and found dtype and shape: this is what rejects a
 * checkpoint that does not fit the model. */
int fv_st_get(const fv_st_file *f, const char *name, fv_st_dtype dtype, int ndim,
              const size_t *shape, void *out);
int fv_st_get_f32(const fv_st_file *f, const char *name, int ndim, const size_t *shape, float *out);
int fv_st_get_f64(const fv_st_file *f, const char *name, int ndim, const size_t *shape, double *out);

/* Tensor `name` of any floating dtype (F16, BF16, F32, F64) converted to float (F16 and BF16
 * exactly, F64 rounded to nearest), after the shape check of fv_st_get; FV_EINPUT naming the file,
 * the tensor and what was found for an absent tensor, an integer dtype or another shape. */
int fv_st_get_as_f32(const fv_st_file *f, const char *name, int ndim, const size_t *shape, float *out);
int fv_st_dtype_is_float(fv_st_dtype dtype); /* F16, BF16, F32 or F64 */

/* "F32", "F64", "I64", "U8", "F16", "BF16"; and the element size in bytes. */
const char *fv_st_dtype_name(fv_st_dtype dtype);
size_t fv_st_dtype_size(fv_st_dtype dtype);

typedef struct {
    const char *name;   /* UTF-8; not "__metadata__" */
    fv_st_dtype dtype;
    int ndim;           /* 0..FV_ST_MAX_DIMS; shape may be NULL when ndim is 0 */
    const size_t *shape;
    const void *data;   /* prod(shape) elements in host byte order, C order */
} fv_st_entry;

/* Write a safetensors file atomically (fv_atomic_open/commit: a failure leaves neither the file
 * nor a temporary). The entries may come in any order: like the python `safetensors` package
 * (save_file), the writer orders tensors by dtype, widest alignment first (I64, F64, F32, U8),
 * then by name byte-wise, and lays out the JSON and the data in that order, with the header padded
 * with spaces to a multiple of 8. Metadata is written first, keys sorted byte-wise (python writes
 * them in hash-map order, so its files match ours byte for byte when that order happens to be
 * sorted, e.g. always with one key). meta_keys == NULL writes no "__metadata__" (python's
 * metadata=None); a non-NULL meta_keys with nmeta == 0 writes "__metadata__":{} (python's {}).
 * Rejects (FV_EINPUT, nothing written) duplicate names or keys, invalid UTF-8, bad dtype or ndim. */
int fv_st_write(const char *path, size_t n, const fv_st_entry *entries, size_t nmeta,
                const char *const *meta_keys, const char *const *meta_values);

#endif
