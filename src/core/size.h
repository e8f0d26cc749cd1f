/* size.h: checked sizes for buffers whose size comes from the user (a flag, a file header).
 *
 * Policy: a size that can never be allocated (the product overflows 64 bits, or it exceeds this
 * machine's physical memory plus swap) is bad input, FV_EINPUT (exit 2), with the size and the
 * machine's memory in the message; a plausible size that malloc still refuses is FV_ENOMEM (exit 1). */
#ifndef FV_SIZE_H
#define FV_SIZE_H

#include <stddef.h>

/* *out = a * b; FV_EINPUT naming `what` when the product overflows. */
int fv_size_mul(size_t *out, const char *what, size_t a, size_t b);

/* *bytes = a * b * elsize, refused (FV_EINPUT naming `what`) when it overflows or exceeds
 * fv_size_memory(). */
int fv_size_bytes(size_t *bytes, const char *what, size_t a, size_t b, size_t elsize);

/* malloc(a * b * elsize) after fv_size_bytes; NULL with *st set on failure (FV_ENOMEM when malloc
 * itself fails), *st = FV_OK otherwise. Never NULL for a zero size. */
void *fv_alloc(int *st, const char *what, size_t a, size_t b, size_t elsize);

/* Physical memory plus swap in bytes: the most any allocation could ever get here. */
size_t fv_size_memory(void);

/* bytes as "147 EiB", "23 GiB", "512 B" into buf. */
const char *fv_size_format(double bytes, char *buf, size_t size);

#endif
