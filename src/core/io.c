/* io.c: how arrays get into and out of flowvar.
 *
 * NPY is the exchange format with numpy (users' inputs, the oracle scripts, the paper's results),
 * TSV is for tables a person or a plotting script reads, and fv_parse_list turns command-line
 * flags into vectors. Every output file goes through fv_atomic_open/commit so an interrupted run
 * never leaves a half-written file that a later step would mistake for a result.
 *
 * Error conventions: anything wrong with what the user handed us (a missing or malformed input
 * file, a bad list) is FV_EINPUT, so the CLI exits 2; FV_EIO is kept for the operating system
 * refusing a read or write we had every right to expect to work (including creating an output
 * file in a directory that does not exist). NPY reader messages start with the file's path. */
#include "io.h"

#include "error.h"
#include "size.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* numpy itself refuses headers over 10000 bytes by default; we are more lenient but still cap the
 * length so a corrupt length field cannot make us allocate gigabytes before noticing. */
#define NPY_MAX_HEADER (1u << 20)
/* numpy aligns the data to 64 bytes so it can be memory-mapped; we match it byte for byte. */
#define NPY_ALIGN 64
/* Enough for the fixed part of the dict plus FV_NPY_MAX_DIMS 20-digit extents, rounded up. */
#define NPY_HEADER_BUF 512

/* ------------------------------------------------------------------------------------------ */
/* Byte order: NPY data is little-endian; on a big-endian host we swap rather than misread. */

int fv_host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

void fv_swap_bytes(void *data, size_t count, size_t elsize)
{
    unsigned char *p = data;
    for (size_t i = 0; i < count; i++, p += elsize)
        for (size_t a = 0, b = elsize - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}

static uint32_t load_le(const unsigned char *b, int nbytes)
{
    uint32_t v = 0;
    for (int i = nbytes - 1; i >= 0; i--)
        v = (v << 8) | b[i];
    return v;
}

/* ------------------------------------------------------------------------------------------ */
/* NPY header dict: a Python literal such as {'descr': '<f8', 'fortran_order': False,
 * 'shape': (3, 4), }. Other writers order keys differently or drop spaces, so we parse it as a
 * tiny grammar instead of matching numpy's exact spelling. */

typedef struct {
    fv_dtype dtype;
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS];
    size_t data_offset; /* bytes before the array data: magic, version, length, dict */
} npy_header;

typedef struct {
    const char *p, *end; /* the text is also NUL-terminated at end, so messages may print p */
} cursor;

static int bad_header(const cursor *c, const char *what)
{
    return fv_error(FV_EINPUT, "malformed NPY header: %s near \"%.24s\"", what, c->p);
}

static void skip_space(cursor *c)
{
    while (c->p < c->end && isspace((unsigned char)*c->p))
        c->p++;
}

static int accept(cursor *c, char ch)
{
    skip_space(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

static int accept_word(cursor *c, const char *word)
{
    size_t n = strlen(word);
    skip_space(c);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return 0;
    if (c->p + n < c->end && (isalnum((unsigned char)c->p[n]) || c->p[n] == '_'))
        return 0; /* "Truex" is not True */
    c->p += n;
    return 1;
}

/* A quoted Python string without escapes: numpy never needs escapes for keys or float dtypes. */
static int parse_string(cursor *c, char *buf, size_t size)
{
    skip_space(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return 0;
    char quote = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != quote) {
        if (*c->p == '\\' || n + 1 >= size)
            return 0;
        buf[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return 0;
    c->p++;
    buf[n] = '\0';
    return 1;
}

static int parse_descr(cursor *c, npy_header *h)
{
    char descr[64];
    skip_space(c);
    if (c->p < c->end && *c->p == '[')
        return fv_error(FV_EINPUT, "unsupported structured dtype; only float32 ('<f4') and "
                                   "float64 ('<f8') arrays are supported");
    if (!parse_string(c, descr, sizeof descr))
        return bad_header(c, "'descr' is not a dtype string");
    if (strcmp(descr, "<f8") == 0) {
        h->dtype = FV_DTYPE_F64;
        return FV_OK;
    }
    if (strcmp(descr, "<f4") == 0) {
        h->dtype = FV_DTYPE_F32;
        return FV_OK;
    }
    if (descr[0] == '>')
        return fv_error(FV_EINPUT, "dtype '%s' is big-endian; only little-endian float32 ('<f4') "
                                   "and float64 ('<f8') are supported (convert with "
                                   "a.astype('<f8'))", descr);
    return fv_error(FV_EINPUT, "unsupported dtype '%s'; only float32 ('<f4') and float64 ('<f8') "
                               "are supported", descr);
}

static int parse_fortran_order(cursor *c)
{
    if (accept_word(c, "False"))
        return FV_OK;
    if (accept_word(c, "True"))
        return fv_error(FV_EINPUT, "fortran_order is True; only C-order arrays are supported "
                                   "(save np.ascontiguousarray(a) instead)");
    return bad_header(c, "'fortran_order' is not True or False");
}

static int parse_extent(cursor *c, size_t *out)
{
    size_t v = 0;
    skip_space(c);
    if (c->p >= c->end || !isdigit((unsigned char)*c->p))
        return bad_header(c, "'shape' holds something other than a non-negative integer");
    while (c->p < c->end && isdigit((unsigned char)*c->p)) {
        size_t d = (size_t)(*c->p++ - '0');
        if (v > (SIZE_MAX - d) / 10)
            return fv_error(FV_EINPUT, "NPY header: an extent in 'shape' is too large");
        v = v * 10 + d;
    }
    if (c->p < c->end && *c->p == 'L')
        c->p++; /* Python 2 wrote longs as 3L */
    *out = v;
    return FV_OK;
}

/* (), (3,), (3), (2, 3) and (2, 3,) are all accepted. */
static int parse_shape(cursor *c, npy_header *h)
{
    h->ndim = 0;
    if (!accept(c, '('))
        return bad_header(c, "'shape' is not a tuple");
    if (accept(c, ')'))
        return FV_OK;
    for (;;) {
        if (h->ndim == FV_NPY_MAX_DIMS)
            return fv_error(FV_EINPUT, "array has more than %d dimensions", FV_NPY_MAX_DIMS);
        int rc = parse_extent(c, &h->shape[h->ndim]);
        if (rc != FV_OK)
            return rc;
        h->ndim++;
        int comma = accept(c, ',');
        if (accept(c, ')'))
            return FV_OK;
        if (!comma)
            return bad_header(c, "expected ',' or ')' in 'shape'");
    }
}

static int parse_entry(cursor *c, npy_header *h, unsigned *seen)
{
    static const char *const keys[] = {"descr", "fortran_order", "shape"};
    char key[32];
    if (!parse_string(c, key, sizeof key))
        return bad_header(c, "expected a quoted key");
    if (!accept(c, ':'))
        return bad_header(c, "expected ':' after a key");
    for (unsigned k = 0; k < 3; k++) {
        if (strcmp(key, keys[k]) != 0)
            continue;
        if (*seen & (1u << k))
            return fv_error(FV_EINPUT, "NPY header: key '%s' appears twice", key);
        *seen |= 1u << k;
        return k == 0 ? parse_descr(c, h) : k == 1 ? parse_fortran_order(c) : parse_shape(c, h);
    }
    return fv_error(FV_EINPUT, "NPY header: unexpected key '%s'", key);
}

static int parse_dict(const char *text, size_t len, npy_header *h)
{
    cursor c = {text, text + len};
    unsigned seen = 0;
    if (!accept(&c, '{'))
        return bad_header(&c, "expected '{'");
    while (!accept(&c, '}')) {
        int rc = parse_entry(&c, h, &seen);
        if (rc != FV_OK)
            return rc;
        if (accept(&c, ','))
            continue;
        skip_space(&c);
        if (c.p >= c.end || *c.p != '}')
            return bad_header(&c, "expected ',' or '}'");
    }
    skip_space(&c);
    if (c.p != c.end)
        return bad_header(&c, "unexpected text after '}'");
    if (seen != 7u)
        return fv_error(FV_EINPUT, "NPY header lacks %s", !(seen & 1u) ? "'descr'"
                                                           : !(seen & 2u) ? "'fortran_order'"
                                                                          : "'shape'");
    return FV_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* NPY reading. */

/* fread that tells a read error (FV_EIO) apart from an early end of file (FV_OK, *got short). */
static int read_some(FILE *fp, void *buf, size_t n, size_t *got)
{
    *got = fread(buf, 1, n, fp);
    if (*got < n && ferror(fp))
        return fv_error(FV_EIO, "read error: %s", strerror(errno));
    return FV_OK;
}

/* Magic, version and header length; leaves fp at the start of the dict. */
static int read_preamble(FILE *fp, size_t *hlen, size_t *prelen)
{
    unsigned char b[12];
    size_t got;
    int rc = read_some(fp, b, 10, &got);
    if (rc != FV_OK)
        return rc;
    if (got < NPY_MAGIC_LEN || memcmp(b, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
        return fv_error(FV_EINPUT, "not an NPY file (bad magic: the file does not start with "
                                   "\\x93NUMPY)");
    if (got < 10)
        return fv_error(FV_EINPUT, "NPY header too short: the file ends after %zu bytes", got);
    if ((b[6] < 1 || b[6] > 3) || b[7] != 0)
        return fv_error(FV_EINPUT, "unsupported NPY format version %u.%u (1.0, 2.0 and 3.0 are "
                                   "supported)", b[6], b[7]);
    if (b[6] == 1) {
        *hlen = load_le(b + 8, 2);
        *prelen = 10;
        return FV_OK;
    }
    /* Versions 2 and 3 widen the length to 4 bytes. */
    if ((rc = read_some(fp, b + 10, 2, &got)) != FV_OK)
        return rc;
    if (got < 2)
        return fv_error(FV_EINPUT, "NPY header too short: the file ends after %zu bytes", 10 + got);
    *hlen = load_le(b + 8, 4);
    *prelen = 12;
    return FV_OK;
}

static int read_header(FILE *fp, npy_header *h)
{
    size_t hlen = 0, prelen = 0, got = 0;
    int rc = read_preamble(fp, &hlen, &prelen);
    if (rc != FV_OK)
        return rc;
    if (hlen > NPY_MAX_HEADER)
        return fv_error(FV_EINPUT, "NPY header length %zu is implausibly large", hlen);
    char *text = malloc(hlen + 1);
    if (!text)
        return fv_error(FV_ENOMEM, "cannot allocate %zu bytes for the NPY header", hlen + 1);
    rc = read_some(fp, text, hlen, &got);
    if (rc == FV_OK && got < hlen)
        rc = fv_error(FV_EINPUT, "NPY header is truncated: it should be %zu bytes, the file has "
                                 "%zu", hlen, got);
    if (rc == FV_OK) {
        text[hlen] = '\0';
        rc = parse_dict(text, hlen, h);
    }
    free(text);
    h->data_offset = prelen + hlen;
    return rc;
}

static int shape_size(const npy_header *h, size_t elsize, size_t *count, size_t *bytes)
{
    size_t n = 1;
    for (int i = 0; i < h->ndim; i++) {
        if (h->shape[i] != 0 && n > SIZE_MAX / h->shape[i])
            return fv_error(FV_EINPUT, "array shape is too large to address");
        n *= h->shape[i];
    }
    if (n > SIZE_MAX / elsize)
        return fv_error(FV_EINPUT, "array shape is too large to address");
    *count = n;
    *bytes = n * elsize;
    return FV_OK;
}

static int size_mismatch(uintmax_t have, size_t want)
{
    return fv_error(FV_EINPUT, "file has %ju bytes of data, header says %zu (%s)", have, want,
                    have < want ? "truncated file" : "unexpected bytes after the array");
}

/* For regular files, check the size before allocating, so a corrupt shape cannot make us allocate
 * a huge buffer for data that is not there. */
static int check_file_size(const struct stat *st, size_t offset, size_t bytes)
{
    uintmax_t size = st->st_size > 0 ? (uintmax_t)st->st_size : 0;
    uintmax_t have = size > offset ? size - offset : 0;
    return have == bytes ? FV_OK : size_mismatch(have, bytes);
}

/* Also catches short and long data on pipes, where the size was not known up front. */
static int read_data(FILE *fp, void *data, size_t bytes)
{
    unsigned char extra[4096];
    size_t got, more;
    int rc = read_some(fp, data, bytes, &got);
    if (rc != FV_OK)
        return rc;
    if (got < bytes)
        return size_mismatch(got, bytes);
    uintmax_t total = 0;
    do {
        if ((rc = read_some(fp, extra, sizeof extra, &more)) != FV_OK)
            return rc;
        total += more;
    } while (more == sizeof extra);
    return total ? size_mismatch((uintmax_t)bytes + total, bytes) : FV_OK;
}

static int npy_read_fp(FILE *fp, fv_npy *out)
{
    struct stat st;
    npy_header h = {0};
    size_t count = 0, bytes = 0;
    if (fstat(fileno(fp), &st) != 0)
        return fv_error(FV_EIO, "cannot stat: %s", strerror(errno));
    if (S_ISDIR(st.st_mode))
        return fv_error(FV_EINPUT, "is a directory, not an NPY file");
    int rc = read_header(fp, &h);
    if (rc != FV_OK)
        return rc;
    size_t elsize = h.dtype == FV_DTYPE_F64 ? sizeof(double) : sizeof(float);
    if ((rc = shape_size(&h, elsize, &count, &bytes)) != FV_OK)
        return rc;
    if (S_ISREG(st.st_mode) && (rc = check_file_size(&st, h.data_offset, bytes)) != FV_OK)
        return rc;
    /* a pipe has no size to check the header against: the header's size must at least fit in memory */
    if (!(out->data = fv_alloc(&rc, "the array the header describes", count, 1, elsize)))
        return rc;
    if ((rc = read_data(fp, out->data, bytes)) != FV_OK)
        return rc;
    if (!fv_host_is_little_endian())
        fv_swap_bytes(out->data, count, elsize);
    out->dtype = h.dtype;
    out->ndim = h.ndim;
    memcpy(out->shape, h.shape, sizeof h.shape);
    out->count = count;
    return FV_OK;
}

/* A missing input file is FV_EINPUT rather than FV_EIO: it is the user's argument that is wrong,
 * and the CLI should exit 2 as for any other bad input. On failure *out is empty (data NULL). The
 * file is opened once and read front to back, so a FIFO or standard input works like a file. */
int fv_npy_read(const char *path, fv_npy *out)
{
    memset(out, 0, sizeof *out);
    int is_stdin = strcmp(path, "-") == 0;
    FILE *fp = is_stdin ? stdin : fopen(path, "rb");
    if (!fp)
        return fv_error(FV_EINPUT, "%s: cannot open: %s", path, strerror(errno));
    int rc = npy_read_fp(fp, out);
    if (!is_stdin)
        fclose(fp);
    if (rc != FV_OK) {
        fv_npy_free(out);
        return fv_error_context(rc, "%s: ", path);
    }
    return FV_OK;
}

static int widen_to_f64(fv_npy *a)
{
    if (a->count > SIZE_MAX / sizeof(double))
        return fv_error(FV_ENOMEM, "array too large to convert to float64");
    double *wide = malloc(a->count ? a->count * sizeof(double) : 1);
    if (!wide)
        return fv_error(FV_ENOMEM, "cannot allocate %zu doubles", a->count);
    const float *narrow = a->data;
    for (size_t i = 0; i < a->count; i++)
        wide[i] = narrow[i];
    free(a->data);
    a->data = wide;
    a->dtype = FV_DTYPE_F64;
    return FV_OK;
}

/* On failure *data is NULL and *ndim, shape are left untouched. */
int fv_npy_read_f64(const char *path, double **data, int *ndim, size_t shape[FV_NPY_MAX_DIMS])
{
    fv_npy a;
    *data = NULL;
    int rc = fv_npy_read(path, &a);
    if (rc == FV_OK && a.dtype == FV_DTYPE_F32 && (rc = widen_to_f64(&a)) != FV_OK) {
        fv_npy_free(&a);
        return fv_error_context(rc, "%s: ", path);
    }
    if (rc != FV_OK)
        return rc;
    *data = a.data;
    *ndim = a.ndim;
    memcpy(shape, a.shape, sizeof a.shape);
    return FV_OK;
}

/* Safe on an already-freed or failed-read array. */
void fv_npy_free(fv_npy *a)
{
    if (!a)
        return;
    free(a->data);
    a->data = NULL;
    a->count = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* NPY writing. */

/* Exactly what numpy writes for a C-order float array (version 1.0, dict padded with spaces and a
 * final newline to a multiple of 64 bytes), so our files are byte-identical to np.save's. Returns
 * the total preamble length. */
static size_t format_header(char buf[NPY_HEADER_BUF], const char *descr, int ndim,
                            const size_t *shape)
{
    size_t n = 10;
    n += (size_t)snprintf(buf + n, NPY_HEADER_BUF - n,
                          "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int i = 0; i < ndim; i++)
        n += (size_t)snprintf(buf + n, NPY_HEADER_BUF - n, i ? ", %zu" : "%zu", shape[i]);
    n += (size_t)snprintf(buf + n, NPY_HEADER_BUF - n, ndim == 1 ? ",), }" : "), }");
    size_t total = (n + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN; /* +1 for the newline */
    memset(buf + n, ' ', total - n);
    buf[total - 1] = '\n';
    memcpy(buf, NPY_MAGIC, NPY_MAGIC_LEN);
    buf[6] = 1;
    buf[7] = 0;
    buf[8] = (char)((total - 10) & 0xff);
    buf[9] = (char)((total - 10) >> 8);
    return total;
}

int fv_write_le(FILE *fp, const void *data, size_t count, size_t elsize)
{
    if (count == 0)
        return 1; /* data may be NULL for an empty array, and fwrite must not see NULL */
    if (fv_host_is_little_endian())
        return fwrite(data, elsize, count, fp) == count;
    unsigned char chunk[4096];
    const unsigned char *p = data;
    size_t per = sizeof chunk / elsize;
    for (size_t done = 0; done < count; done += per) {
        size_t k = count - done < per ? count - done : per;
        memcpy(chunk, p + done * elsize, k * elsize);
        fv_swap_bytes(chunk, k, elsize);
        if (fwrite(chunk, elsize, k, fp) != k)
            return 0;
    }
    return 1;
}

static int npy_write(const char *path, const void *data, size_t elsize, const char *descr,
                     int ndim, const size_t *shape)
{
    char header[NPY_HEADER_BUF];
    size_t count = 1;
    if (ndim < 0 || ndim > FV_NPY_MAX_DIMS || (ndim > 0 && !shape))
        return fv_error(FV_EINPUT, "%s: cannot write a %d-dimensional array (0 to %d supported)",
                        path, ndim, FV_NPY_MAX_DIMS);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] != 0 && count > SIZE_MAX / elsize / shape[i])
            return fv_error(FV_EINPUT, "%s: array shape is too large", path);
        count *= shape[i];
    }
    if (count > 0 && !data)
        return fv_error(FV_EINPUT, "%s: no data to write", path);
    size_t hlen = format_header(header, descr, ndim, shape);
    fv_atomic_file f;
    int rc = fv_atomic_open(&f, path);
    if (rc != FV_OK)
        return rc;
    if (fwrite(header, 1, hlen, f.fp) != hlen || !fv_write_le(f.fp, data, count, elsize)) {
        int err = errno;
        fv_atomic_abort(&f);
        return fv_error(FV_EIO, "%s: write failed: %s", path, strerror(err));
    }
    return fv_atomic_commit(&f);
}

int fv_npy_write_f64(const char *path, const double *data, int ndim, const size_t *shape)
{
    return npy_write(path, data, sizeof(double), "<f8", ndim, shape);
}

int fv_npy_write_f32(const char *path, const float *data, int ndim, const size_t *shape)
{
    return npy_write(path, data, sizeof(float), "<f4", ndim, shape);
}

/* ------------------------------------------------------------------------------------------ */
/* Atomic output files. */

static int is_special_mode(mode_t mode)
{
    return S_ISCHR(mode) || S_ISFIFO(mode) || S_ISSOCK(mode);
}

static void forget(fv_atomic_file *f)
{
    free(f->path);
    free(f->real);
    free(f->tmp);
    f->fp = NULL;
    f->path = NULL;
    f->real = NULL;
    f->tmp = NULL;
}

/* Opening "-" or a special file: no temporary, f->tmp stays NULL. */
static int open_direct(fv_atomic_file *f)
{
    if (strcmp(f->path, "-") == 0) {
        f->fp = stdout;
        return FV_OK;
    }
    f->fp = fopen(f->path, "wb");
    if (f->fp)
        return FV_OK;
    int rc = fv_error(FV_EIO, "%s: cannot open for writing: %s", f->path, strerror(errno));
    forget(f);
    return rc;
}

/* The file the rename will replace, into f->real; it stays NULL when the output must be written in
 * place: a device or FIFO (/dev/null, a pipe, /proc/self/fd/1 onto a terminal) cannot be replaced by
 * a rename, and trying would, run as root, swap /dev/null for a regular file. A symbolic link is
 * followed so that the link survives and its target gets the data; a dangling one is refused rather
 * than written through, since it usually points where nobody means to write any more. */
static int resolve_output(fv_atomic_file *f)
{
    struct stat lst, st;
    int is_link = lstat(f->path, &lst) == 0 && S_ISLNK(lst.st_mode);
    if (stat(f->path, &st) != 0) {
        if (is_link && errno == ENOENT)
            return fv_error(FV_EINPUT, "%s: is a symbolic link to a missing file; create its target or "
                                       "remove the link", f->path);
        if (is_link)
            return fv_error(FV_EINPUT, "%s: cannot follow the symbolic link: %s", f->path, strerror(errno));
        f->real = strdup(f->path); /* a new file; fopen reports what else may be wrong */
    } else if (is_special_mode(st.st_mode)) {
        return FV_OK;
    } else {
        f->real = is_link ? realpath(f->path, NULL) : strdup(f->path);
        if (!f->real && is_link)
            return fv_error(FV_EIO, "%s: cannot resolve the symbolic link: %s", f->path, strerror(errno));
    }
    return f->real ? FV_OK : fv_error(FV_ENOMEM, "%s: out of memory", f->path);
}

/* "NAME.tmp.PID" with PID a positive decimal number: the pid, else 0. */
static long temporary_pid(const char *entry, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(entry, name, n) != 0 || strncmp(entry + n, ".tmp.", 5) != 0 ||
        !isdigit((unsigned char)entry[n + 5]))
        return 0;
    char *end;
    errno = 0;
    long pid = strtol(entry + n + 5, &end, 10);
    return *end || errno || pid > INT_MAX ? 0 : pid;
}

/* A process killed in the middle of a write (SIGKILL, a power cut) leaves its "NAME.tmp.PID" behind
 * for good. Before writing NAME again, remove those whose process is gone. Only temporaries of NAME
 * itself are touched: another "X.tmp.N" may belong to a program that merely names files alike, while
 * NAME's are flowvar's and about to be superseded anyway. A pid that now belongs to another process
 * keeps its file, which is the safe side. */
static void remove_orphans(const char *real)
{
    const char *slash = strrchr(real, '/');
    const char *name = slash ? slash + 1 : real;
    int dirlen = slash ? (int)(slash - real) + 1 : 0; /* with its slash, so that "/x" lists "/" */
    char *dirname = slash ? strndup(real, (size_t)dirlen) : strdup(".");
    DIR *d = dirname ? opendir(dirname) : NULL;
    free(dirname);
    for (struct dirent *e; d && (e = readdir(d));) {
        long pid = temporary_pid(e->d_name, name);
        if (pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char *path = malloc((size_t)dirlen + strlen(e->d_name) + 1);
        if (path) {
            sprintf(path, "%.*s%s", dirlen, real, e->d_name);
            unlink(path);
        }
        free(path);
    }
    if (d)
        closedir(d);
}

/* O_EXCL: a planted symbolic link at the temporary's name is not followed. O_CLOEXEC: programs we
 * start (gnuplot) do not inherit the descriptor. A leftover of an earlier process that had our pid
 * is removed first. */
static FILE *create_temporary(const char *tmp)
{
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0)
        return NULL;
    FILE *fp = fdopen(fd, "wb");
    if (!fp)
        close(fd);
    return fp;
}

int fv_atomic_open(fv_atomic_file *f, const char *path)
{
    f->fp = NULL;
    f->path = NULL;
    f->real = NULL;
    f->tmp = NULL;
    if (!path || !*path)
        return fv_error(FV_EINPUT, "empty output path");
    if (!(f->path = strdup(path)))
        return fv_error(FV_ENOMEM, "%s: out of memory", path);
    int rc = strcmp(path, "-") == 0 ? FV_OK : resolve_output(f);
    if (rc != FV_OK) {
        forget(f);
        return rc;
    }
    if (!f->real)
        return open_direct(f);
    size_t size = strlen(f->real) + 32;
    if (!(f->tmp = malloc(size))) {
        forget(f);
        return fv_error(FV_ENOMEM, "%s: out of memory", path);
    }
    snprintf(f->tmp, size, "%s.tmp.%ld", f->real, (long)getpid());
    remove_orphans(f->real);
    if ((f->fp = create_temporary(f->tmp)))
        return FV_OK;
    rc = fv_error(FV_EIO, "%s: cannot create output file (temporary %s): %s", path, f->tmp, strerror(errno));
    forget(f); /* the open failed, so there is no temporary to remove */
    return rc;
}

const char *fv_atomic_name(const fv_atomic_file *f)
{
    return f->tmp ? f->tmp : f->path;
}

int fv_mkdirs(const char *path)
{
    size_t n = strlen(path);
    char *p = malloc(n + 1);
    if (!p)
        return errno = ENOMEM, -1;
    memcpy(p, path, n + 1);
    while (n > 1 && p[n - 1] == '/') /* "a/b/" is the folder a/b */
        p[--n] = '\0';
    int st = 0;
    for (size_t i = 1; i < n && !st; i++)
        if (p[i] == '/' && p[i - 1] != '/') {
            p[i] = '\0';
            st = mkdir(p, 0777) != 0 && errno != EEXIST ? -1 : 0;
            p[i] = '/';
        }
    if (!st)
        st = mkdir(p, 0777);
    int e = errno;
    free(p);
    errno = e;
    return st;
}

/* Flush, fsync and close. The fsync is what makes the later rename crash-safe: without it a power
 * cut can leave the new name pointing at an empty file. */
static int close_durably(fv_atomic_file *f)
{
    FILE *fp = f->fp;
    int err = 0;
    f->fp = NULL;
    if (fflush(fp) != 0)
        err = errno;
    else if (ferror(fp))
        err = EIO; /* an earlier buffered write failed; its errno is long gone */
    if (!err && fsync(fileno(fp)) != 0 && errno != EINVAL) /* EINVAL: fs without fsync */
        err = errno;
    if (fclose(fp) != 0 && !err)
        err = errno;
    return err ? fv_error(FV_EIO, "%s: write failed: %s", f->path, strerror(err)) : FV_OK;
}

static int commit_direct(fv_atomic_file *f)
{
    int err = 0;
    if (fflush(f->fp) != 0)
        err = errno;
    else if (ferror(f->fp))
        err = EIO;
    if (f->fp != stdout && fclose(f->fp) != 0 && !err)
        err = errno; /* stdout stays open: later messages may still go there */
    int rc = FV_OK;
    if (err)
        rc = f->fp == stdout
                 ? fv_error(FV_EIO, "writing to standard output failed: %s", strerror(err))
                 : fv_error(FV_EIO, "%s: write failed: %s", f->path, strerror(err));
    forget(f);
    return rc;
}

int fv_atomic_commit(fv_atomic_file *f)
{
    if (!f->fp)
        return fv_error(FV_EIO, "commit of an output file that is not open");
    if (!f->tmp)
        return commit_direct(f);
    int rc = close_durably(f);
    if (rc == FV_OK && rename(f->tmp, f->real) != 0)
        rc = fv_error(FV_EIO, "%s: cannot move %s into place: %s", f->path, f->tmp,
                      strerror(errno));
    if (rc != FV_OK)
        remove(f->tmp);
    forget(f);
    return rc;
}

/* Also a no-op after a commit, so error paths can call it unconditionally. */
void fv_atomic_abort(fv_atomic_file *f)
{
    if (f->fp && f->fp != stdout)
        fclose(f->fp);
    if (f->tmp)
        remove(f->tmp);
    forget(f);
}

/* ------------------------------------------------------------------------------------------ */
/* TSV. Write errors on a buffered stream may only show at flush time, i.e. in
 * fv_atomic_commit; these functions report the ones the stream has seen so far. */

static int tsv_status(FILE *fp)
{
    return ferror(fp) ? fv_error(FV_EIO, "writing TSV failed: %s", strerror(errno)) : FV_OK;
}

int fv_tsv_header(FILE *fp, int ncols, const char *const *names)
{
    if (ncols < 0)
        return fv_error(FV_EINPUT, "TSV header with %d columns", ncols);
    /* A tab or newline in a name would silently shift every column after it. */
    for (int j = 0; j < ncols; j++)
        if (strpbrk(names[j], "\t\n\r"))
            return fv_error(FV_EINPUT, "TSV column name '%s' contains a tab or newline", names[j]);
    for (int j = 0; j < ncols; j++)
        if (fprintf(fp, "%s%s", j ? "\t" : "", names[j]) < 0)
            return tsv_status(fp);
    fputc('\n', fp);
    return tsv_status(fp);
}

int fv_tsv_row(FILE *fp, int ncols, const double *values)
{
    return fv_tsv_row_digits(fp, ncols, values, FV_TSV_DIGITS);
}

int fv_tsv_row_digits(FILE *fp, int ncols, const double *values, int digits)
{
    if (ncols < 0)
        return fv_error(FV_EINPUT, "TSV row with %d columns", ncols);
    if (digits < 1 || digits > FV_TSV_MAX_DIGITS)
        return fv_error(FV_EINPUT, "TSV row with %d significant digits (1 to %d)", digits, FV_TSV_MAX_DIGITS);
    for (int j = 0; j < ncols; j++)
        if (fprintf(fp, j ? "\t%.*g" : "%.*g", digits, values[j]) < 0)
            return tsv_status(fp);
    fputc('\n', fp);
    return tsv_status(fp);
}

/* ------------------------------------------------------------------------------------------ */
/* Comma-separated numbers from the command line. strtod follows the C locale, which the CLI never
 * changes, so '.' is always the decimal point. */

static int parse_field(const char *start, const char *end, const char *what, size_t index,
                       const char *text, double *out)
{
    while (start < end && isspace((unsigned char)*start))
        start++;
    while (end > start && isspace((unsigned char)end[-1]))
        end--;
    int len = end - start > 1000 ? 1000 : (int)(end - start);
    if (len == 0)
        return fv_error(FV_EINPUT, "%s: field %zu is empty in '%s'", what, index, text);
    /* strtod stops at the ',' or space that follows the field, so it cannot read past it. */
    char *stop;
    double x = strtod(start, &stop);
    if (stop != end)
        return fv_error(FV_EINPUT, "%s: field %zu '%.*s' is not a number", what, index, len, start);
    if (!isfinite(x))
        return fv_error(FV_EINPUT, "%s: field %zu '%.*s' is not a finite number", what, index,
                        len, start);
    *out = x;
    return FV_OK;
}

int fv_parse_list(const char *text, const char *what, double **values, size_t *n)
{
    *values = NULL;
    *n = 0;
    if (!what)
        what = "list";
    const char *p = text ? text : "";
    while (isspace((unsigned char)*p))
        p++;
    if (!*p)
        return fv_error(FV_EINPUT, "%s: empty list (expected comma-separated numbers)", what);
    size_t count = 1;
    for (p = text; *p; p++)
        count += *p == ',';
    double *v = malloc(count * sizeof *v);
    if (!v)
        return fv_error(FV_ENOMEM, "%s: out of memory", what);
    const char *field = text;
    for (size_t i = 0; i < count; i++) {
        const char *end = strchr(field, ',');
        if (!end)
            end = field + strlen(field);
        int rc = parse_field(field, end, what, i + 1, text, &v[i]);
        if (rc != FV_OK) {
            free(v);
            return rc;
        }
        field = end + 1;
    }
    *values = v;
    *n = count;
    return FV_OK;
}
