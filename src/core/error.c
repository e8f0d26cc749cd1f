/* error.c: the thread-local error slot behind fv_error() and fv_last_error(). */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define FV_ERRMSG_MAX 1024

static _Thread_local char fv_errmsg[FV_ERRMSG_MAX];

int fv_error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fv_errmsg, sizeof fv_errmsg, fmt, ap);
    va_end(ap);
    return code;
}

int fv_error_context(int code, const char *fmt, ...)
{
    char prefix[FV_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* shift the old message right by the prefix length (truncating its tail), then write the prefix */
    size_t pl = strlen(prefix);
    memmove(fv_errmsg + pl, fv_errmsg, FV_ERRMSG_MAX - 1 - pl);
    fv_errmsg[FV_ERRMSG_MAX - 1] = '\0';
    memcpy(fv_errmsg, prefix, pl);
    return code;
}

const char *fv_last_error(void) { return fv_errmsg; }

void fv_error_clear(void) { fv_errmsg[0] = '\0'; }

const char *fv_status_name(int code)
{
    switch (code) {
    case FV_OK: return "ok";
    case FV_EINPUT: return "input error";
    case FV_ESINGULAR: return "singular matrix";
    case FV_EDIVERGE: return "divergence";
    case FV_ENOMEM: return "out of memory";
    case FV_EIO: return "i/o error";
    case FV_ENUMERIC: return "numerical failure";
    case FV_EDEVICE: return "device error";
    default: return "unknown status";
    }
}
