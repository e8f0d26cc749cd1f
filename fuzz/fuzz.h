/* fuzz.h: what the libFuzzer harnesses share. The readers take paths, so each harness writes the
 * input bytes to a scratch file (made once per process under /tmp) and reads that back. */
#ifndef FV_FUZZ_H
#define FV_FUZZ_H

#include "data/dataset.h"

#include <stddef.h>
#include <stdint.h>

/* A fresh scratch folder /tmp/fv_fuzz_XXXXXX, made on the first call and removed at exit; the same
 * folder on every later call. Aborts if it cannot be made (the harness would test nothing). */
const char *fz_scratch_dir(void);

/* "scratch/name" in a static buffer (valid until the next call). */
const char *fz_path(const char *name);

/* Write n bytes to scratch/name (replacing it); returns that path. Aborts on a write error. */
const char *fz_write(const char *name, const uint8_t *data, size_t n);

/* Read every pixel and label of an accepted data set, so that ASan checks the sizes its header gave. */
void fz_touch_dataset(const fv_dataset *ds);

/* Silence stdout (--help text, progress) so the fuzzer's own log stays readable. */
void fz_quiet(void);

#endif
