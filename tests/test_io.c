/* test_io.c: NPY, atomic files, TSV and list parsing (src/core/io.c).
 *
 * The NPY reader is checked against files numpy wrote (tests/fixtures/npy, made by
 * tests/oracle/make_npy_fixtures.py: the expected values below are the same formulas), and the
 * writer is checked both by round trips and byte for byte against np.save's output. */
#include <criterion/criterion.h>

#include "helpers.h"
#include <criterion/redirect.h>

#include "src/core/error.h"
#include "src/core/io.h"
#include "src/core/size.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIXTURES "tests/fixtures/npy/"

/* Each Criterion test runs in its own process, so this per-test scratch directory is private. */
static char scratch[64];

static void make_scratch(void) { th_scratch_make(scratch, "fv_test_io"); }
static void drop_scratch(void) { th_remove_tree(scratch); }

TestSuite(io, .init = make_scratch, .fini = drop_scratch);

static const char *in_scratch(const char *name) { return th_path_in(scratch, name); }

/* Values with no pattern a byte-order or stride mistake could preserve. */
static double entropic(size_t i)
{
    return sin((double)i * 1.37) * pow(1e3, (double)(i % 3));
}

static size_t product(int ndim, const size_t *shape)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

static void expect_shape(const fv_npy *a, int ndim, const size_t *shape)
{
    cr_assert_eq(a->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        cr_assert_eq(a->shape[i], shape[i], "extent %d", i);
    cr_assert_eq(a->count, product(ndim, shape));
}

/* ---- round trips ---- */

static void roundtrip_f64(int ndim, const size_t *shape)
{
    size_t n = product(ndim, shape);
    double x[64];
    for (size_t i = 0; i < n; i++)
        x[i] = entropic(i);
    const char *path = in_scratch("rt.npy");
    cr_assert_eq(fv_npy_write_f64(path, x, ndim, shape), FV_OK, "%s", fv_last_error());
    fv_npy a;
    cr_assert_eq(fv_npy_read(path, &a), FV_OK, "%s", fv_last_error());
    cr_assert_eq(a.dtype, FV_DTYPE_F64);
    expect_shape(&a, ndim, shape);
    cr_assert_eq(memcmp(a.data, x, n * sizeof *x), 0, "data differs after round trip");
    fv_npy_free(&a);
}

static void roundtrip_f32(int ndim, const size_t *shape)
{
    size_t n = product(ndim, shape);
    float x[64];
    for (size_t i = 0; i < n; i++)
        x[i] = (float)entropic(i);
    const char *path = in_scratch("rt.npy");
    cr_assert_eq(fv_npy_write_f32(path, x, ndim, shape), FV_OK, "%s", fv_last_error());
    fv_npy a;
    cr_assert_eq(fv_npy_read(path, &a), FV_OK, "%s", fv_last_error());
    cr_assert_eq(a.dtype, FV_DTYPE_F32);
    expect_shape(&a, ndim, shape);
    cr_assert_eq(memcmp(a.data, x, n * sizeof *x), 0, "data differs after round trip");
    fv_npy_free(&a);
}

Test(io, roundtrip_f64_scalar) { roundtrip_f64(0, NULL); }
Test(io, roundtrip_f64_vector) { roundtrip_f64(1, (size_t[]){5}); }
Test(io, roundtrip_f64_matrix) { roundtrip_f64(2, (size_t[]){3, 4}); }
Test(io, roundtrip_f64_3d) { roundtrip_f64(3, (size_t[]){2, 3, 4}); }
Test(io, roundtrip_f32_scalar) { roundtrip_f32(0, NULL); }
Test(io, roundtrip_f32_vector) { roundtrip_f32(1, (size_t[]){5}); }
Test(io, roundtrip_f32_matrix) { roundtrip_f32(2, (size_t[]){3, 4}); }
Test(io, roundtrip_f32_3d) { roundtrip_f32(3, (size_t[]){2, 3, 4}); }

Test(io, roundtrip_empty_array)
{
    const char *path = in_scratch("empty.npy");
    cr_assert_eq(fv_npy_write_f64(path, NULL, 2, (size_t[]){0, 3}), FV_OK, "%s", fv_last_error());
    fv_npy a;
    cr_assert_eq(fv_npy_read(path, &a), FV_OK, "%s", fv_last_error());
    expect_shape(&a, 2, (size_t[]){0, 3});
    fv_npy_free(&a);
}

Test(io, write_max_dims_header_is_aligned)
{
    size_t shape[FV_NPY_MAX_DIMS] = {1, 2, 1, 1, 1, 1, 1, 2};
    double x[4] = {1.5, -2.25, 3.125, 4e-300};
    const char *path = in_scratch("8d.npy");
    cr_assert_eq(fv_npy_write_f64(path, x, 8, shape), FV_OK, "%s", fv_last_error());
    size_t n;
    unsigned char *b = th_slurp(path, &n);
    size_t data_offset = 10 + (size_t)(b[8] | b[9] << 8);
    cr_assert(data_offset % 64 == 0 && b[data_offset - 1] == '\n' && n == data_offset + 32,
              "offset %zu, size %zu", data_offset, n);
    free(b);
}

Test(io, write_rejects_too_many_dims)
{
    size_t shape[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    double x = 1;
    cr_assert_eq(fv_npy_write_f64(in_scratch("9d.npy"), &x, 9, shape), FV_EINPUT);
    cr_assert_eq(th_entries_in(scratch), 0);
}

/* ---- the writer agrees with numpy byte for byte ---- */

static void expect_same_bytes(const char *ours, const char *numpys)
{
    size_t n1, n2;
    unsigned char *a = th_slurp(ours, &n1), *b = th_slurp(numpys, &n2);
    cr_assert(n1 == n2 && memcmp(a, b, n1) == 0, "%s differs from numpy's %s", ours, numpys);
    free(a);
    free(b);
}

Test(io, writer_matches_numpy_f64_matrix)
{
    double x[12];
    for (int i = 0; i < 12; i++)
        x[i] = i * 0.37 - 1.1;
    const char *path = in_scratch("f64_3x4.npy");
    cr_assert_eq(fv_npy_write_f64(path, x, 2, (size_t[]){3, 4}), FV_OK, "%s", fv_last_error());
    expect_same_bytes(path, FIXTURES "f64_3x4.npy");
}

Test(io, writer_matches_numpy_f32_matrix)
{
    float x[10];
    for (int i = 0; i < 10; i++)
        x[i] = (float)(i * 0.1 - 0.3);
    const char *path = in_scratch("f32_2x5.npy");
    cr_assert_eq(fv_npy_write_f32(path, x, 2, (size_t[]){2, 5}), FV_OK, "%s", fv_last_error());
    expect_same_bytes(path, FIXTURES "f32_2x5.npy");
}

Test(io, writer_matches_numpy_scalar)
{
    double x = -2.718281828459045;
    const char *path = in_scratch("scalar_f64.npy");
    cr_assert_eq(fv_npy_write_f64(path, &x, 0, NULL), FV_OK, "%s", fv_last_error());
    expect_same_bytes(path, FIXTURES "scalar_f64.npy");
}

/* ---- reading numpy's files ---- */

Test(io, read_numpy_f64_matrix)
{
    fv_npy a;
    cr_assert_eq(fv_npy_read(FIXTURES "f64_3x4.npy", &a), FV_OK, "%s", fv_last_error());
    cr_assert_eq(a.dtype, FV_DTYPE_F64);
    expect_shape(&a, 2, (size_t[]){3, 4});
    const double *x = a.data;
    for (int i = 0; i < 12; i++)
        cr_assert_eq(x[i], i * 0.37 - 1.1, "element %d", i);
    fv_npy_free(&a);
}

Test(io, read_numpy_f32_matrix)
{
    fv_npy a;
    cr_assert_eq(fv_npy_read(FIXTURES "f32_2x5.npy", &a), FV_OK, "%s", fv_last_error());
    cr_assert_eq(a.dtype, FV_DTYPE_F32);
    expect_shape(&a, 2, (size_t[]){2, 5});
    const float *x = a.data;
    for (int i = 0; i < 10; i++)
        cr_assert_eq(x[i], (float)(i * 0.1 - 0.3), "element %d", i);
    fv_npy_free(&a);
}

Test(io, read_numpy_scalar)
{
    fv_npy a;
    cr_assert_eq(fv_npy_read(FIXTURES "scalar_f64.npy", &a), FV_OK, "%s", fv_last_error());
    expect_shape(&a, 0, NULL);
    cr_assert_eq(*(const double *)a.data, -2.718281828459045);
    fv_npy_free(&a);
}

Test(io, read_numpy_version_2_header)
{
    fv_npy a;
    cr_assert_eq(fv_npy_read(FIXTURES "v2_f64_2x3.npy", &a), FV_OK, "%s", fv_last_error());
    expect_shape(&a, 2, (size_t[]){2, 3});
    const double *x = a.data;
    for (int i = 0; i < 6; i++)
        cr_assert_eq(x[i], i * 1.5 + 0.5, "element %d", i);
    fv_npy_free(&a);
}

Test(io, read_numpy_version_3_header)
{
    fv_npy a;
    cr_assert_eq(fv_npy_read(FIXTURES "v3_f32_4.npy", &a), FV_OK, "%s", fv_last_error());
    expect_shape(&a, 1, (size_t[]){4});
    const float *x = a.data;
    for (int i = 0; i < 4; i++)
        cr_assert_eq(x[i], (float)(i * 0.25 - 0.5), "element %d", i);
    fv_npy_free(&a);
}

Test(io, read_f64_widens_float32)
{
    double *x;
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS];
    cr_assert_eq(fv_npy_read_f64(FIXTURES "f32_2x5.npy", &x, &ndim, shape), FV_OK, "%s",
                 fv_last_error());
    cr_assert(ndim == 2 && shape[0] == 2 && shape[1] == 5);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(x[i], (double)(float)(i * 0.1 - 0.3), "element %d", i);
    free(x);
}

/* Writes an NPY file by hand so header spellings numpy never produces can be tested. */
static const char *write_raw(const char *name, int major, const char *dict, const void *data,
                             size_t nbytes)
{
    const char *path = in_scratch(name);
    FILE *fp = fopen(path, "wb");
    size_t hlen = strlen(dict);
    unsigned char pre[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0,
                             (unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8), 0, 0};
    fwrite(pre, 1, major == 1 ? 10 : 12, fp);
    fwrite(dict, 1, hlen, fp);
    fwrite(data, 1, nbytes, fp);
    fclose(fp);
    return path;
}

Test(io, read_header_in_any_key_order_without_spaces)
{
    double x[2] = {0.125, -7.5};
    const char *path = write_raw("odd.npy", 1, "{\"shape\":(2,),'fortran_order':False,"
                                               "'descr':'<f8'}\n", x, sizeof x);
    fv_npy a;
    cr_assert_eq(fv_npy_read(path, &a), FV_OK, "%s", fv_last_error());
    expect_shape(&a, 1, (size_t[]){2});
    cr_assert_eq(memcmp(a.data, x, sizeof x), 0);
    fv_npy_free(&a);
}

/* ---- rejections ---- */

static void expect_rejected(const char *path, const char *fragment)
{
    fv_npy a;
    int rc = fv_npy_read(path, &a);
    cr_assert_eq(rc, FV_EINPUT, "status %d (%s)", rc, fv_last_error());
    cr_assert_null(a.data);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    cr_assert_not_null(strstr(fv_last_error(), base), "no file name in: %s", fv_last_error());
    cr_assert_not_null(strstr(fv_last_error(), fragment), "no '%s' in: %s", fragment,
                       fv_last_error());
}

Test(io, reject_fortran_order) { expect_rejected(FIXTURES "fortran_3x4.npy", "fortran_order"); }
Test(io, reject_int64_naming_dtype)
{
    expect_rejected(FIXTURES "int64_6.npy", "unsupported dtype '<i8'; only float32");
}
Test(io, reject_big_endian) { expect_rejected(FIXTURES "bigendian_f8_4.npy", "'>f8' is big-endian"); }
Test(io, reject_truncated_data)
{
    expect_rejected(FIXTURES "truncated_f64_3x4.npy", "file has 91 bytes of data, header says 96");
}
Test(io, reject_trailing_bytes)
{
    expect_rejected(FIXTURES "trailing_f64_3x4.npy", "file has 101 bytes of data, header says 96");
}
Test(io, reject_bad_magic) { expect_rejected(FIXTURES "badmagic.npy", "bad magic"); }
Test(io, reject_missing_file_as_input_error)
{
    expect_rejected(FIXTURES "no_such_file.npy", "No such file or directory");
}
Test(io, reject_directory) { expect_rejected(scratch, "directory"); }

Test(io, reject_header_too_short)
{
    const char *path = in_scratch("short.npy");
    FILE *fp = fopen(path, "wb");
    fwrite("\x93NUMPY\x01\x00", 1, 8, fp); /* magic and version, no header length */
    fclose(fp);
    expect_rejected(path, "too short");
}

Test(io, reject_truncated_header)
{
    const char *path = in_scratch("cut.npy");
    FILE *fp = fopen(path, "wb");
    fwrite("\x93NUMPY\x01\x00\x40\x00{'descr'", 1, 18, fp); /* says 64 bytes, has 8 */
    fclose(fp);
    expect_rejected(path, "header is truncated");
}

Test(io, reject_unsupported_version)
{
    double x = 1;
    expect_rejected(write_raw("v4.npy", 4, "{'descr': '<f8', 'fortran_order': False, 'shape': ()}",
                              &x, sizeof x),
                    "version 4.0");
}

Test(io, reject_unknown_header_key)
{
    double x = 1;
    expect_rejected(write_raw("key.npy", 1, "{'descr': '<f8', 'fortran_order': False, "
                                            "'shape': (), 'extra': 1}", &x, sizeof x),
                    "unexpected key 'extra'");
}

Test(io, reject_missing_header_key)
{
    double x = 1;
    expect_rejected(write_raw("nokey.npy", 1, "{'descr': '<f8', 'shape': ()}", &x, sizeof x),
                    "lacks 'fortran_order'");
}

Test(io, reject_more_than_max_dims)
{
    double x = 1;
    expect_rejected(write_raw("9d.npy", 1, "{'descr': '<f8', 'fortran_order': False, "
                                           "'shape': (1,1,1,1,1,1,1,1,1)}", &x, sizeof x),
                    "more than 8 dimensions");
}

Test(io, reject_malformed_shape)
{
    double x = 1;
    expect_rejected(write_raw("shape.npy", 1, "{'descr': '<f8', 'fortran_order': False, "
                                              "'shape': (1 1)}", &x, sizeof x),
                    "malformed NPY header");
}

Test(io, read_f64_failure_leaves_null)
{
    double *x = (double *)&x;
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS];
    cr_assert_eq(fv_npy_read_f64(FIXTURES "int64_6.npy", &x, &ndim, shape), FV_EINPUT);
    cr_assert_null(x);
}

/* ---- atomic files ---- */

Test(io, atomic_commit_leaves_only_the_file)
{
    fv_atomic_file f;
    const char *path = in_scratch("out.txt");
    cr_assert_eq(fv_atomic_open(&f, path), FV_OK, "%s", fv_last_error());
    fputs("hello\n", f.fp);
    cr_assert_eq(fv_atomic_commit(&f), FV_OK, "%s", fv_last_error());
    size_t n;
    unsigned char *b = th_slurp(path, &n);
    cr_assert(n == 6 && memcmp(b, "hello\n", 6) == 0 && th_entries_in(scratch) == 1);
    free(b);
}

Test(io, atomic_commit_replaces_existing_file)
{
    const char *path = in_scratch("out.txt");
    FILE *old = fopen(path, "w");
    fputs("old contents that are longer\n", old);
    fclose(old);
    fv_atomic_file f;
    cr_assert_eq(fv_atomic_open(&f, path), FV_OK, "%s", fv_last_error());
    fputs("new\n", f.fp);
    cr_assert_eq(fv_atomic_commit(&f), FV_OK, "%s", fv_last_error());
    size_t n;
    unsigned char *b = th_slurp(path, &n);
    cr_assert(n == 4 && memcmp(b, "new\n", 4) == 0);
    free(b);
}

Test(io, atomic_abort_leaves_nothing)
{
    fv_atomic_file f;
    cr_assert_eq(fv_atomic_open(&f, in_scratch("out.txt")), FV_OK, "%s", fv_last_error());
    fputs("half a result", f.fp);
    fv_atomic_abort(&f);
    fv_atomic_abort(&f); /* documented as safe */
    cr_assert_eq(th_entries_in(scratch), 0);
}

Test(io, atomic_open_in_missing_directory_fails)
{
    fv_atomic_file f;
    char path[512];
    snprintf(path, sizeof path, "%s/nope/out.npy", scratch);
    cr_assert_eq(fv_atomic_open(&f, path), FV_EIO);
    cr_assert(strstr(fv_last_error(), path) && strstr(fv_last_error(), "No such file or directory"),
              "message: %s", fv_last_error());
    cr_assert_eq(th_entries_in(scratch), 0);
}

Test(io, npy_write_in_missing_directory_leaves_nothing)
{
    double x = 1;
    char path[512];
    snprintf(path, sizeof path, "%s/nope/out.npy", scratch);
    cr_assert_eq(fv_npy_write_f64(path, &x, 0, NULL), FV_EIO);
    cr_assert_eq(th_entries_in(scratch), 0);
}

Test(io, atomic_failed_rename_removes_temporary)
{
    const char *path = in_scratch("taken");
    mkdir(path, 0700); /* a directory cannot be replaced by a file */
    fv_atomic_file f;
    cr_assert_eq(fv_atomic_open(&f, path), FV_OK, "%s", fv_last_error());
    fputs("x", f.fp);
    cr_assert_eq(fv_atomic_commit(&f), FV_EIO);
    cr_assert_eq(th_entries_in(scratch), 1, "temporary left behind");
}

Test(io, atomic_dash_is_stdout, .init = cr_redirect_stdout)
{
    /* Criterion runs the suite's .init first, then this test's redirect. */
    fv_atomic_file f;
    cr_assert_eq(fv_atomic_open(&f, "-"), FV_OK, "%s", fv_last_error());
    cr_assert(f.fp == stdout);
    fputs("to stdout\n", f.fp);
    cr_assert_eq(fv_atomic_commit(&f), FV_OK, "%s", fv_last_error());
    fflush(stdout);
    cr_assert_stdout_eq_str("to stdout\n");
}

Test(io, atomic_special_file_is_written_in_place)
{
    /* Through a symlink, so a regression replaces the link, never /dev/null itself. */
    const char *link = in_scratch("null");
    cr_assert_eq(symlink("/dev/null", link), 0);
    fv_atomic_file f;
    cr_assert_eq(fv_atomic_open(&f, link), FV_OK, "%s", fv_last_error());
    fputs("discarded\n", f.fp);
    cr_assert_eq(fv_atomic_commit(&f), FV_OK, "%s", fv_last_error());
    struct stat st;
    cr_assert(lstat(link, &st) == 0 && S_ISLNK(st.st_mode) && th_entries_in(scratch) == 1);
}

/* A small file holding "old\n" at path. */
static void write_old(const char *path)
{
    FILE *fp = fopen(path, "w");
    cr_assert_not_null(fp, "cannot create %s", path);
    fputs("old\n", fp);
    fclose(fp);
}

static int is_link(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISLNK(st.st_mode);
}

Test(io, atomic_write_through_symlink_keeps_the_link)
{
    char target[512];
    snprintf(target, sizeof target, "%s", in_scratch("real.npy"));
    write_old(target);
    const char *link = in_scratch("link.npy");
    cr_assert_eq(symlink("real.npy", link), 0);
    double x[2] = {1.5, -2};
    size_t shape[1] = {2};
    cr_assert_eq(fv_npy_write_f64(link, x, 1, shape), FV_OK, "write through the link: %s", fv_last_error());
    cr_assert(is_link(link), "the link is still a symbolic link");
    fv_npy a;
    cr_assert_eq(fv_npy_read(target, &a), FV_OK, "the link's target holds the array: %s", fv_last_error());
    cr_assert(a.count == 2 && ((double *)a.data)[1] == -2, "the target holds the new data");
    fv_npy_free(&a);
    cr_assert_eq(th_entries_in(scratch), 2, "no temporary left beside the link or the target");
}

Test(io, atomic_dangling_symlink_is_refused)
{
    const char *link = in_scratch("dangling.npy");
    cr_assert_eq(symlink("missing/target.npy", link), 0);
    double x = 1;
    cr_assert_eq(fv_npy_write_f64(link, &x, 0, NULL), FV_EINPUT, "a dangling link is an input error");
    cr_assert(strstr(fv_last_error(), "dangling.npy") && strstr(fv_last_error(), "symbolic link"),
              "the message names the link: %s", fv_last_error());
    cr_assert(is_link(link), "the link is left alone");
    cr_assert_eq(th_entries_in(scratch), 1, "no file created");
}

/* The pid of a process that has exited (and been reaped). */
static pid_t dead_pid(void)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork");
    if (pid == 0)
        _exit(0);
    cr_assert_eq(waitpid(pid, NULL, 0), pid, "reap the child");
    return pid;
}

Test(io, atomic_write_removes_orphan_temporaries_of_dead_processes)
{
    char dead[512], live[512], other[512];
    pid_t gone = dead_pid();
    snprintf(dead, sizeof dead, "%s/ck.safetensors.tmp.%ld", scratch, (long)gone);
    snprintf(live, sizeof live, "%s/ck.safetensors.tmp.%ld", scratch, (long)getppid());
    snprintf(other, sizeof other, "%s/other.npy.tmp.%ld", scratch, (long)gone);
    write_old(dead);
    write_old(live);
    write_old(other);
    double x = 1;
    cr_assert_eq(fv_npy_write_f64(in_scratch("ck.safetensors"), &x, 0, NULL), FV_OK, "%s", fv_last_error());
    cr_assert_eq(access(dead, F_OK), -1, "the temporary of a dead process is removed");
    cr_assert_eq(access(live, F_OK), 0, "the temporary of a live process stays");
    cr_assert_eq(access(other, F_OK), 0, "temporaries of other files are not touched");
}

Test(io, npy_read_dash_is_stdin)
{
    int fd = open(FIXTURES "f64_3x4.npy", O_RDONLY);
    cr_assert(fd >= 0 && dup2(fd, 0) == 0, "stdin from the fixture");
    close(fd);
    fv_npy a;
    cr_assert_eq(fv_npy_read("-", &a), FV_OK, "'-' reads standard input: %s", fv_last_error());
    cr_assert(a.ndim == 2 && a.shape[0] == 3 && a.shape[1] == 4, "the fixture's shape");
    fv_npy_free(&a);
}

/* ---- TSV ---- */

Test(io, tsv_format_is_exact)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    const char *names[] = {"a", "b", "c"};
    int rc = fv_tsv_header(fp, 3, names);
    rc |= fv_tsv_row(fp, 3, (double[]){1.5, -1.0 / 3, 1e20});
    rc |= fv_tsv_row(fp, 3, (double[]){0, 123456789012.0, -2.5e-7});
    fclose(fp);
    cr_assert_eq(rc, FV_OK, "%s", fv_last_error());
    cr_assert_str_eq(buf, "a\tb\tc\n1.5\t-0.3333333333\t1e+20\n0\t1.23456789e+11\t-2.5e-07\n");
    free(buf);
}

Test(io, tsv_write_failure_is_eio)
{
    FILE *fp = fopen("/dev/full", "w");
    if (!fp)
        cr_skip_test("no /dev/full");
    setvbuf(fp, NULL, _IONBF, 0); /* so the failure shows now, not at fclose */
    int rc = fv_tsv_row(fp, 2, (double[]){1, 2});
    fclose(fp);
    cr_assert_eq(rc, FV_EIO, "status %d", rc);
}

Test(io, tsv_rejects_tab_in_name)
{
    const char *names[] = {"ok", "bad\tname"};
    cr_assert_eq(fv_tsv_header(stderr, 2, names), FV_EINPUT);
}

/* ---- fv_parse_list ---- */

Test(io, parse_list_accepts_spaces_and_exponents)
{
    double *v;
    size_t n;
    cr_assert_eq(fv_parse_list("1,-0.5, 2e3 ", "--x", &v, &n), FV_OK, "%s", fv_last_error());
    cr_assert(n == 3 && v[0] == 1 && v[1] == -0.5 && v[2] == 2000);
    free(v);
}

Test(io, parse_list_single_value)
{
    double *v;
    size_t n;
    cr_assert_eq(fv_parse_list(" 7 ", "--x", &v, &n), FV_OK, "%s", fv_last_error());
    cr_assert(n == 1 && v[0] == 7);
    free(v);
}

static void expect_list_error(const char *text, const char *message)
{
    double *v = (double *)&v;
    size_t n = 99;
    cr_assert_eq(fv_parse_list(text, "--target-mean", &v, &n), FV_EINPUT);
    cr_assert(v == NULL && n == 0);
    cr_assert_str_eq(fv_last_error(), message);
}

Test(io, parse_list_rejects_non_number)
{
    expect_list_error("1,abc", "--target-mean: field 2 'abc' is not a number");
}
Test(io, parse_list_rejects_empty_string)
{
    expect_list_error("", "--target-mean: empty list (expected comma-separated numbers)");
}
Test(io, parse_list_rejects_blank_string)
{
    expect_list_error("  ", "--target-mean: empty list (expected comma-separated numbers)");
}
Test(io, parse_list_rejects_empty_field)
{
    expect_list_error("1,,2", "--target-mean: field 2 is empty in '1,,2'");
}
Test(io, parse_list_rejects_trailing_comma)
{
    expect_list_error("1,2,", "--target-mean: field 3 is empty in '1,2,'");
}
Test(io, parse_list_rejects_leading_comma)
{
    expect_list_error(",1", "--target-mean: field 1 is empty in ',1'");
}
Test(io, parse_list_rejects_inf)
{
    expect_list_error("1,inf", "--target-mean: field 2 'inf' is not a finite number");
}
Test(io, parse_list_rejects_nan)
{
    expect_list_error("nan", "--target-mean: field 1 'nan' is not a finite number");
}
Test(io, parse_list_rejects_overflow)
{
    expect_list_error("1e999", "--target-mean: field 1 '1e999' is not a finite number");
}
Test(io, parse_list_rejects_space_separated)
{
    expect_list_error("1 2", "--target-mean: field 1 '1 2' is not a number");
}
Test(io, parse_list_rejects_trailing_junk)
{
    expect_list_error("3x", "--target-mean: field 1 '3x' is not a number");
}

/* ---- checked sizes (core/size.h) ---- */

Test(io, size_products_that_overflow_or_exceed_memory_are_bad_input)
{
    size_t out, mem = fv_size_memory();
    cr_assert_gt(mem, (size_t)1 << 20, "physical memory plus swap is read: %zu bytes", mem);
    cr_assert_eq(fv_size_mul(&out, "--x", (size_t)1 << 32, (size_t)1 << 31), FV_OK, "2^63 fits");
    cr_assert_eq(out, (size_t)1 << 63, "2^32 x 2^31 = 2^63");
    cr_assert_eq(fv_size_mul(&out, "--x", (size_t)1 << 32, (size_t)1 << 32), FV_EINPUT, "2^64 overflows");
    cr_assert(strstr(fv_last_error(), "--x") && strstr(fv_last_error(), "overflows"), "%s", fv_last_error());
    cr_assert_eq(fv_size_bytes(&out, "--t-grid", SIZE_MAX, 1, 8), FV_EINPUT, "(2^64 - 1) x 8 bytes");
    cr_assert(strstr(fv_last_error(), "--t-grid") && strstr(fv_last_error(), "128 EiB") &&
                  strstr(fv_last_error(), "this machine has"),
              "size and memory named: %s", fv_last_error());
    cr_assert_eq(fv_size_bytes(&out, "--n", mem / 8 + 1, 1, 8), FV_EINPUT, "just over memory plus swap");
    cr_assert_eq(fv_size_bytes(&out, "--n", 1000, 3, 8), FV_OK, "a small size");
    cr_assert_eq(out, 24000, "1000 x 3 x 8 bytes");
    int st;
    double *p = fv_alloc(&st, "--n", 0, 5, sizeof *p);
    cr_assert(p != NULL && st == FV_OK, "a zero size still allocates (never NULL for success)");
    free(p);
    cr_assert_null(fv_alloc(&st, "--n", SIZE_MAX / 2, 3, 1), "an overflowing size allocates nothing");
    cr_assert_eq(st, FV_EINPUT, "and is bad input");
}

Test(io, size_format_picks_a_binary_unit)
{
    char buf[32];
    cr_assert_str_eq(fv_size_format(512, buf, sizeof buf), "512 B", "bytes");
    cr_assert_str_eq(fv_size_format(1536, buf, sizeof buf), "1.5 KiB", "KiB");
    cr_assert_str_eq(fv_size_format(23.5 * 1073741824.0, buf, sizeof buf), "23.5 GiB", "GiB");
    cr_assert_str_eq(fv_size_format(147.0 * 1152921504606846976.0, buf, sizeof buf), "147 EiB", "EiB");
}

Test(io, npy_from_a_pipe_claiming_more_than_memory_is_bad_input)
{
    /* a pipe has no length to check the header against: the size alone must be refused */
    char fifo[128];
    snprintf(fifo, sizeof fifo, "%s", in_scratch("huge.npy"));
    cr_assert_eq(mkfifo(fifo, 0600), 0, "make a FIFO");
    static const char header[] = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000000,), }";
    char block[128];
    memset(block, ' ', sizeof block);
    memcpy(block, "\x93NUMPY\x01\x00\x76\x00", 10);
    memcpy(block + 10, header, sizeof header - 1);
    block[127] = '\n';
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork the writer");
    if (pid == 0) { /* the writer: header, then a few bytes of data */
        int fd = open(fifo, O_WRONLY);
        ssize_t w = fd >= 0 ? write(fd, block, sizeof block) + write(fd, "\0\0\0\0\0\0\0\0", 8) : -1;
        _exit(w == (ssize_t)sizeof block + 8 ? 0 : 1);
    }
    fv_npy a = {0};
    int st = fv_npy_read(fifo, &a);
    waitpid(pid, NULL, 0);
    cr_assert_eq(st, FV_EINPUT, "status %d: %s", st, fv_last_error());
    cr_assert(strstr(fv_last_error(), "728 TiB") && strstr(fv_last_error(), "this machine has"), "%s", fv_last_error());
    fv_npy_free(&a);
}

/* fv_mkdirs: missing parents made (doubled and trailing slashes too), EEXIST for a folder that is
 * there, ENOTDIR under a file, and nothing made past the failing component. */
Test(io, mkdirs_makes_missing_parents)
{
    char deep[256];
    snprintf(deep, sizeof deep, "%s/a//b/c/", scratch);
    cr_assert_eq(fv_mkdirs(deep), 0, "mkdirs %s: %s", deep, strerror(errno));
    struct stat sb;
    cr_expect(stat(in_scratch("a/b/c"), &sb) == 0 && S_ISDIR(sb.st_mode), "a/b/c is a folder");
    errno = 0;
    cr_expect_eq(fv_mkdirs(in_scratch("a/b")), -1, "an existing folder");
    cr_expect_eq(errno, EEXIST);
    FILE *fp = fopen(in_scratch("file"), "w");
    cr_assert_not_null(fp);
    fclose(fp);
    errno = 0;
    cr_expect_eq(fv_mkdirs(in_scratch("file/x/y")), -1, "a folder under a file");
    cr_expect_eq(errno, ENOTDIR, "errno %d", errno);
}
