/* error.h: flowvar's status codes and its single error slot.
 *
 * Every function that can fail returns an int status (FV_OK on success) and, on failure, leaves a
 * human-readable message in a thread-local slot read by fv_last_error(). The CLI maps statuses to
 * exit codes: input problems exit 2, runtime failures exit 1. */
#ifndef FV_ERROR_H
#define FV_ERROR_H

#ifdef __cplusplus /* the CUDA backend (C++ under nvcc) reports through the same slot */
extern "C" {
#endif

enum fv_status {
    FV_OK = 0,
    FV_EINPUT,    /* bad user input: flag, file, shape, value (exit 2) */
    FV_ESINGULAR, /* a matrix the math needs inverted is singular or ill-conditioned */
    FV_EDIVERGE,  /* an integral or iteration does not converge (e.g. a singular time inside [0,1]) */
    FV_ENOMEM,    /* allocation failed */
    FV_EIO,       /* the operating system refused a read or write */
    FV_ENUMERIC,  /* a library routine (LAPACK, GSL) failed */
    FV_EDEVICE    /* the CUDA runtime or cuBLAS failed */
};

/* Record a printf-style message for status `code` and return `code`, so callers can write
 * `return fv_error(FV_EINPUT, "...", ...);`. */
int fv_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefix the current message with more context ("reading x.npy: " + old message); returns code. */
int fv_error_context(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

const char *fv_last_error(void);
void fv_error_clear(void);

/* Name of a status code, e.g. "input error". */
const char *fv_status_name(int code);

#ifdef __cplusplus
}
#endif

#endif
