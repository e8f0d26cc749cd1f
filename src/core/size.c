/* size.c: overflow- and memory-checked buffer sizes (size.h). */
#include "core/size.h"

#include "core/error.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/sysinfo.h>
#include <unistd.h>

size_t fv_size_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    double ram = pages > 0 && page > 0 ? (double)pages * (double)page : (double)SIZE_MAX;
    struct sysinfo si;
    double swap = sysinfo(&si) == 0 ? (double)si.totalswap * (double)si.mem_unit : 0.0;
    double total = ram + swap;
    return total >= (double)SIZE_MAX ? SIZE_MAX : (size_t)total;
}

const char *fv_size_format(double bytes, char *buf, size_t size)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    size_t u = 0;
    while (bytes >= 1024.0 && u + 1 < sizeof units / sizeof *units) {
        bytes /= 1024.0;
        u++;
    }
    snprintf(buf, size, u ? "%.3g %s" : "%.0f %s", bytes, units[u]);
    return buf;
}

int fv_size_mul(size_t *out, const char *what, size_t a, size_t b)
{
    if (__builtin_mul_overflow(a, b, out))
        return fv_error(FV_EINPUT, "%s: %zu x %zu overflows 64 bits", what, a, b);
    return FV_OK;
}

int fv_size_bytes(size_t *bytes, const char *what, size_t a, size_t b, size_t elsize)
{
    size_t ab, limit = fv_size_memory();
    char need[32], have[32];
    /* the size in floating point, exact enough for a message even where size_t overflows */
    double want = (double)a * (double)b * (double)elsize;
    if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, elsize, bytes) || *bytes > limit)
        return fv_error(FV_EINPUT, "%s (%zu x %zu x %zu bytes) needs %s; this machine has %s (memory plus swap)",
                        what, a, b, elsize, fv_size_format(want, need, sizeof need),
                        fv_size_format((double)limit, have, sizeof have));
    return FV_OK;
}

void *fv_alloc(int *st, const char *what, size_t a, size_t b, size_t elsize)
{
    size_t bytes;
    if ((*st = fv_size_bytes(&bytes, what, a, b, elsize)))
        return NULL;
    void *p = malloc(bytes ? bytes : 1); /* malloc(0) may return NULL, which would look like failure */
    if (!p) {
        char need[32];
        *st = fv_error(FV_ENOMEM, "out of memory: %s needs %s", what, fv_size_format((double)bytes, need, sizeof need));
    }
    return p;
}
