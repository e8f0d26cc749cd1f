/* io.h: reading and writing arrays: NPY (v1/v2, float32/float64, C order), TSV tables, and
 * atomic file writes (temporary file + rename, so a crash never leaves half a file). */
#ifndef FV_IO_H
#define FV_IO_H

#include <stddef.h>
#include <stdio.h>

#define FV_NPY_MAX_DIMS 8

typedef enum { FV_DTYPE_F32 = 0, FV_DTYPE_F64 = 1 } fv_dtype;

/* An array read from an NPY file. Owns `data` (free with fv_npy_free). */
typedef struct {
    fv_dtype dtype;
    int ndim;                       /* 0 for a scalar */
    size_t shape[FV_NPY_MAX_DIMS];
    size_t count;                   /* product of shape (1 for a scalar) */
    void *data;                     /* count elements of dtype, C order, native little-endian */
} fv_npy;

/* Read an NPY file. Accepts format versions 1.0, 2.0 (and 3.0), dtypes '<f4' and '<f8', C order.
 * Anything else (Fortran order, other dtypes, big-endian, truncated data, a bad header) is
 * rejected with FV_EINPUT and a message naming the file and the problem. "-" is standard input. */
int fv_npy_read(const char *path, fv_npy *out);

/* Read an NPY file of either float dtype into a newly malloc'ed array of doubles. */
int fv_npy_read_f64(const char *path, double **data, int *ndim, size_t shape[FV_NPY_MAX_DIMS]);

void fv_npy_free(fv_npy *a);

/* Write `count` = prod(shape) elements as NPY (version 1.0 header, C order), atomically. */
int fv_npy_write_f64(const char *path, const double *data, int ndim, const size_t *shape);
int fv_npy_write_f32(const char *path, const float *data, int ndim, const size_t *shape);

/* Atomic output: write to "<path>.tmp.<pid>" and rename onto `path` on commit. The special path
 * "-" means standard output (commit just flushes; abort cannot take back what was printed, so
 * commands that write to stdout compute everything first). A symbolic link is followed: the
 * temporary goes beside its target, which the rename replaces, so the link stays a link; a dangling
 * link is refused (FV_EINPUT). A device, FIFO or socket (also behind a link) is written in place.
 * Opening removes the "<path>.tmp.<pid>" files of processes that no longer exist (killed writes). */
typedef struct {
    FILE *fp;
    char *path; /* as given, for messages */
    char *real; /* the file the rename replaces: path, or its link's target; NULL when in place */
    char *tmp;
} fv_atomic_file;

int fv_atomic_open(fv_atomic_file *f, const char *path);
int fv_atomic_commit(fv_atomic_file *f); /* close + rename; on failure removes the temporary */
void fv_atomic_abort(fv_atomic_file *f); /* close + remove the temporary; safe to call twice */
/* Where the data goes until the commit (the temporary, or path itself when written in place), for
 * another program to write (gnuplot); the commit then renames it into place. */
const char *fv_atomic_name(const fv_atomic_file *f);

/* mkdir(path, 0777) after creating its missing parent folders (as mkdir -p does): 0, or -1 with errno
 * set by the failing mkdir; EEXIST when path itself exists, as from mkdir, so callers tell "made" from
 * "was there". */
int fv_mkdirs(const char *path);

/* TSV: a header line of column names, then rows of numbers printed with %.10g, tab-separated. */
int fv_tsv_header(FILE *fp, int ncols, const char *const *names);
int fv_tsv_row(FILE *fp, int ncols, const double *values);
/* The same with `digits` significant digits, 1 to FV_TSV_MAX_DIGITS (17: strtod gives back the very
 * double that was printed); FV_TSV_DIGITS is fv_tsv_row's. */
#define FV_TSV_DIGITS 10
#define FV_TSV_MAX_DIGITS 17
int fv_tsv_row_digits(FILE *fp, int ncols, const double *values, int digits);

/* Byte order: NPY and safetensors data are little-endian; big-endian hosts swap. */
int fv_host_is_little_endian(void);
void fv_swap_bytes(void *data, size_t count, size_t elsize); /* reverse each elsize-byte element */
/* Write count elements of elsize bytes in little-endian order; 1 on success, 0 on a write error. */
int fv_write_le(FILE *fp, const void *data, size_t count, size_t elsize);

/* Parse a comma-separated list of numbers ("1,-0.5, 2e3"). Every field must be a finite number;
 * `what` names the source in the error message (e.g. "--target-mean"). On success *values is
 * malloc'ed and *n holds the count. */
int fv_parse_list(const char *text, const char *what, double **values, size_t *n);

#endif
