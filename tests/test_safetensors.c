/* test_safetensors.c: safetensors reading and writing (src/core/safetensors.c).
 *
 * The reader is checked against files the official python package wrote (tests/fixtures/
 * safetensors, made by tests/oracle/make_safetensors_fixtures.py: the expected values below are
 * the same formulas), the writer byte for byte against those same files, and both by round trips.
 * The damaged files are built here, byte by byte, so each test shows exactly what is wrong. */
#include <criterion/criterion.h>

#include "helpers.h"

#include "src/core/error.h"
#include "src/core/safetensors.h"

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIXTURES "tests/fixtures/safetensors/"

/* Each Criterion test runs in its own process, so this per-test scratch directory is private. */
static char scratch[64];

static void make_scratch(void) { th_scratch_make(scratch, "fv_test_st"); }
static void drop_scratch(void) { th_remove_tree(scratch); }

TestSuite(safetensors, .init = make_scratch, .fini = drop_scratch);

static const char *in_scratch(const char *name) { return th_path_in(scratch, name); }

static void spit(const char *path, const void *bytes, size_t n)
{
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp, "cannot create %s", path);
    cr_assert_eq(fwrite(bytes, 1, n, fp), n);
    fclose(fp);
}

/* A file with the given header length field, n bytes of header and ndata of data, in scratch. */
static const char *write_raw_len(const char *name, uint64_t hlen, const char *header, size_t n,
                                 const void *data, size_t ndata)
{
    unsigned char buf[4096];
    cr_assert(8 + n + ndata <= sizeof buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + 8, header, n);
    if (ndata)
        memcpy(buf + 8 + n, data, ndata);
    const char *path = in_scratch(name);
    spit(path, buf, 8 + n + ndata);
    return path;
}

/* A file whose length field is right for its header. */
static const char *write_raw(const char *name, const char *header, size_t ndata)
{
    static const unsigned char zeros[256];
    cr_assert(ndata <= sizeof zeros);
    return write_raw_len(name, strlen(header), header, strlen(header), zeros, ndata);
}

/* The checks every rejection shares: FV_EINPUT, the path and `fragment` in the message, and an
 * empty result. */
static void expect_rejected(const char *path, const char *fragment)
{
    fv_st_file f;
    int rc = fv_st_read(path, &f);
    cr_assert_eq(rc, FV_EINPUT, "status %d for %s: %s", rc, path, fv_last_error());
    cr_assert_not_null(strstr(fv_last_error(), path), "no file name in: %s", fv_last_error());
    cr_assert_not_null(strstr(fv_last_error(), fragment), "no '%s' in: %s", fragment,
                       fv_last_error());
    cr_assert_eq(f.ntensors, 0);
    cr_assert_null(f.tensors);
    cr_assert_null(f.data);
    fv_st_free(&f); /* documented as safe after a failed read */
}

static void expect_same_bytes(const char *expected, const char *actual)
{
    size_t ne, na;
    unsigned char *e = th_slurp(expected, &ne), *a = th_slurp(actual, &na);
    size_t i = 0;
    while (i < ne && i < na && e[i] == a[i])
        i++;
    cr_assert(ne == na && i == ne, "%s (%zu bytes) and %s (%zu bytes) differ at byte %zu",
              expected, ne, actual, na, i);
    free(e);
    free(a);
}

/* Values with no pattern a byte-order or stride mistake could preserve. */
static double entropic(size_t i)
{
    return sin((double)i * 1.37) * pow(1e3, (double)(i % 3));
}

/* ---- the python package's files (formulas as in make_safetensors_fixtures.py) ---- */

typedef struct {
    float weight[6], bias[3], lw[1];
    double scale, grid[8];
    int64_t steps[4];
    uint8_t mask[5], odd[2];
} mixed_values;

static const size_t S_WEIGHT[] = {2, 3}, S_BIAS[] = {3}, S_GRID[] = {2, 2, 2}, S_STEPS[] = {4},
                    S_MASK[] = {5}, S_EMPTY[] = {0, 3}, S_ONE[] = {1}, S_TWO[] = {2};
#define LW_NAME "layer.0/w\xc3\xa9"
#define ODD_NAME "odd \"name\"\n"

static void mixed_fill(mixed_values *v)
{
    for (int k = 0; k < 6; k++)
        v->weight[k] = k * 0.25f - 0.5f;
    for (int k = 0; k < 3; k++)
        v->bias[k] = (float)(k * 0.1 - 0.3);
    v->lw[0] = 7.0f;
    v->scale = -2.718281828459045;
    for (int k = 0; k < 8; k++)
        v->grid[k] = k * 1.5 + 0.5;
    for (int k = 0; k < 4; k++)
        v->steps[k] = k * k - 3;
    for (int k = 0; k < 5; k++)
        v->mask[k] = (uint8_t)(k * 50 + 5);
    v->odd[0] = 1;
    v->odd[1] = 2;
}

/* Deliberately not in the file's order: the writer must sort them as save_file does. */
static size_t mixed_entries(const mixed_values *v, fv_st_entry *e)
{
    const fv_st_entry list[] = {
        {"weight", FV_ST_F32, 2, S_WEIGHT, v->weight},
        {"bias", FV_ST_F32, 1, S_BIAS, v->bias},
        {"scale", FV_ST_F64, 0, NULL, &v->scale},
        {"grid", FV_ST_F64, 3, S_GRID, v->grid},
        {"steps", FV_ST_I64, 1, S_STEPS, v->steps},
        {"mask", FV_ST_U8, 1, S_MASK, v->mask},
        {"empty", FV_ST_F32, 2, S_EMPTY, NULL},
        {LW_NAME, FV_ST_F32, 1, S_ONE, v->lw},
        {ODD_NAME, FV_ST_U8, 1, S_TWO, v->odd},
    };
    memcpy(e, list, sizeof list);
    return sizeof list / sizeof list[0];
}

/* Also deliberately unsorted. */
static const char *const MIXED_KEYS[] = {"step", "format", "note"};
static const char *const MIXED_VALUES[] = {"1200", "flowvar",
                                           "tab\there \"quoted\" caf\xc3\xa9 \xe2\x9c\x93"};

Test(safetensors, writer_matches_python_byte_for_byte)
{
    mixed_values v;
    fv_st_entry e[16];
    mixed_fill(&v);
    size_t n = mixed_entries(&v, e);
    const char *path = in_scratch("mixed.safetensors");
    cr_assert_eq(fv_st_write(path, n, e, 3, MIXED_KEYS, MIXED_VALUES), FV_OK, "%s",
                 fv_last_error());
    expect_same_bytes(FIXTURES "mixed.safetensors", path);
}

Test(safetensors, writer_matches_python_without_metadata)
{
    const float a[] = {1.5f, -2.0f};
    const uint8_t b[] = {1, 2, 3};
    const size_t sa[] = {2}, sb[] = {3};
    const fv_st_entry e[] = {{"b", FV_ST_U8, 1, sb, b}, {"a", FV_ST_F32, 1, sa, a}};
    const char *path = in_scratch("nometa.safetensors");
    cr_assert_eq(fv_st_write(path, 2, e, 0, NULL, NULL), FV_OK, "%s", fv_last_error());
    expect_same_bytes(FIXTURES "nometa.safetensors", path);
}

Test(safetensors, writer_matches_python_for_no_tensors)
{
    const char *path = in_scratch("empty.safetensors");
    cr_assert_eq(fv_st_write(path, 0, NULL, 0, NULL, NULL), FV_OK, "%s", fv_last_error());
    expect_same_bytes(FIXTURES "empty.safetensors", path);
    fv_st_file f;
    cr_assert_eq(fv_st_read(path, &f), FV_OK, "%s", fv_last_error());
    cr_assert_eq(f.ntensors, 0);
    cr_assert_eq(f.nmeta, 0);
    cr_assert_eq(f.data_size, 0);
    fv_st_free(&f);
}

static void expect_tensor(const fv_st_file *f, const char *name, fv_st_dtype dtype, int ndim,
                          const size_t *shape, const void *values, size_t elsize)
{
    const fv_st_tensor *t = fv_st_find(f, name);
    cr_assert_not_null(t, "no tensor '%s'", name);
    cr_assert_eq(t->dtype, dtype, "%s", name);
    cr_assert_eq(t->ndim, ndim, "%s", name);
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        cr_assert_eq(t->shape[i], shape[i], "%s extent %d", name, i);
        count *= shape[i];
    }
    cr_assert_eq(t->count, count, "%s", name);
    cr_assert_eq(t->nbytes, count * elsize, "%s", name);
    unsigned char out[256];
    cr_assert_eq(fv_st_get(f, name, dtype, ndim, shape, out), FV_OK, "%s", fv_last_error());
    if (count) /* values may be NULL for an empty tensor, and memcmp must not see NULL */
        cr_assert_eq(memcmp(out, values, count * elsize), 0, "values of '%s' differ", name);
}

Test(safetensors, reader_reads_python_file_exactly)
{
    mixed_values v;
    mixed_fill(&v);
    fv_st_file f;
    cr_assert_eq(fv_st_read(FIXTURES "mixed.safetensors", &f), FV_OK, "%s", fv_last_error());
    cr_assert_eq(f.ntensors, 9);
    cr_assert_eq(f.data_size, 151);
    cr_assert_str_eq(f.tensors[0].name, "steps", "tensors are kept in the header's order");
    expect_tensor(&f, "weight", FV_ST_F32, 2, S_WEIGHT, v.weight, 4);
    expect_tensor(&f, "bias", FV_ST_F32, 1, S_BIAS, v.bias, 4);
    expect_tensor(&f, "scale", FV_ST_F64, 0, NULL, &v.scale, 8);
    expect_tensor(&f, "grid", FV_ST_F64, 3, S_GRID, v.grid, 8);
    expect_tensor(&f, "steps", FV_ST_I64, 1, S_STEPS, v.steps, 8);
    expect_tensor(&f, "mask", FV_ST_U8, 1, S_MASK, v.mask, 1);
    expect_tensor(&f, "empty", FV_ST_F32, 2, S_EMPTY, NULL, 4);
    expect_tensor(&f, LW_NAME, FV_ST_F32, 1, S_ONE, v.lw, 4);
    expect_tensor(&f, ODD_NAME, FV_ST_U8, 1, S_TWO, v.odd, 1);
    cr_assert_eq(f.nmeta, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_str_eq(fv_st_meta(&f, MIXED_KEYS[i]), MIXED_VALUES[i], "key %s", MIXED_KEYS[i]);
    float w[6];
    cr_assert_eq(fv_st_get_f32(&f, "weight", 2, S_WEIGHT, w), FV_OK, "%s", fv_last_error());
    cr_assert_eq(w[5], 0.75f);
    double s;
    cr_assert_eq(fv_st_get_f64(&f, "scale", 0, NULL, &s), FV_OK, "%s", fv_last_error());
    cr_assert_eq(s, -2.718281828459045);
    fv_st_free(&f);
    fv_st_free(&f); /* documented as safe */
}

Test(safetensors, find_and_meta_return_null_when_absent)
{
    fv_st_file f;
    cr_assert_eq(fv_st_read(FIXTURES "nometa.safetensors", &f), FV_OK, "%s", fv_last_error());
    cr_assert_null(fv_st_find(&f, "c"));
    cr_assert_null(fv_st_meta(&f, "format"));
    cr_assert_not_null(fv_st_find(&f, "a"));
    fv_st_free(&f);
}

/* ---- round trips ---- */

#define RT_DTYPES 6
#define RT_SHAPES 5

Test(safetensors, round_trip_every_dtype_and_shape)
{
    static const size_t shapes[RT_SHAPES][3] = {{0}, {1}, {7}, {3, 4}, {2, 3, 4}};
    static const int ndims[RT_SHAPES] = {0, 1, 1, 2, 3};
    static const fv_st_dtype dtypes[RT_DTYPES] = {FV_ST_F32, FV_ST_F64, FV_ST_I64, FV_ST_U8, FV_ST_F16, FV_ST_BF16};
    static union {
        uint16_t u16[24];
        float f32[24];
        double f64[24];
        int64_t i64[24];
        uint8_t u8[24];
    } data[RT_DTYPES][RT_SHAPES];
    char names[RT_DTYPES][RT_SHAPES][16];
    fv_st_entry e[RT_DTYPES * RT_SHAPES];
    size_t n = 0;
    for (int d = 0; d < RT_DTYPES; d++)
        for (int s = 0; s < RT_SHAPES; s++, n++) {
            for (size_t i = 0; i < 24; i++) {
                double x = entropic(i + n * 24);
                switch (dtypes[d]) {
                case FV_ST_F32: data[d][s].f32[i] = (float)x; break;
                case FV_ST_F64: data[d][s].f64[i] = x; break;
                case FV_ST_I64: data[d][s].i64[i] = (int64_t)(x * 1e12); break;
                case FV_ST_U8: data[d][s].u8[i] = (uint8_t)(i * 37 + n); break;
                case FV_ST_F16:
                case FV_ST_BF16: data[d][s].u16[i] = (uint16_t)(i * 1031 + n * 7); break;
                }
            }
            snprintf(names[d][s], sizeof names[d][s], "%s_%dd_%d", fv_st_dtype_name(dtypes[d]),
                     ndims[s], s);
            e[n] = (fv_st_entry){names[d][s], dtypes[d], ndims[s], shapes[s], &data[d][s]};
        }
    const char *keys[] = {"epoch", "comment"}, *values[] = {"17", "{\"not\": \"json\"} \\ /"};
    const char *path = in_scratch("rt.safetensors");
    cr_assert_eq(fv_st_write(path, n, e, 2, keys, values), FV_OK, "%s", fv_last_error());

    fv_st_file f;
    cr_assert_eq(fv_st_read(path, &f), FV_OK, "%s", fv_last_error());
    cr_assert_eq(f.ntensors, n);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t elsize = fv_st_dtype_size(e[i].dtype);
        expect_tensor(&f, e[i].name, e[i].dtype, e[i].ndim, e[i].shape, e[i].data, elsize);
        total += fv_st_find(&f, e[i].name)->nbytes;
    }
    cr_assert_eq(f.data_size, total);
    cr_assert_eq(f.nmeta, 2);
    cr_assert_str_eq(fv_st_meta(&f, "epoch"), "17");
    cr_assert_str_eq(fv_st_meta(&f, "comment"), values[1]);
    fv_st_free(&f);
}

Test(safetensors, entry_order_does_not_change_the_file)
{
    mixed_values v;
    fv_st_entry e[16], r[16];
    mixed_fill(&v);
    size_t n = mixed_entries(&v, e);
    for (size_t i = 0; i < n; i++)
        r[i] = e[n - 1 - i];
    const char *keys[] = {"note", "step", "format"}, *values[] = {MIXED_VALUES[2], "1200",
                                                                  "flowvar"};
    char first[512];
    snprintf(first, sizeof first, "%s", in_scratch("a.safetensors"));
    cr_assert_eq(fv_st_write(first, n, e, 3, MIXED_KEYS, MIXED_VALUES), FV_OK, "%s",
                 fv_last_error());
    cr_assert_eq(fv_st_write(in_scratch("b.safetensors"), n, r, 3, keys, values), FV_OK, "%s",
                 fv_last_error());
    expect_same_bytes(first, in_scratch("b.safetensors"));
}

/* The exact bytes save_file writes for {"a": np.zeros(1, np.float32)} with metadata={}: an empty
 * __metadata__ is kept, and this header is 72 bytes, already a multiple of 8, so no padding. */
Test(safetensors, empty_metadata_is_written_like_python)
{
    static const char header[] = "{\"__metadata__\":{},\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
                                 "\"data_offsets\":[0,4]}}";
    const float a = 0.0f;
    const size_t shape[] = {1};
    const char *none[1] = {NULL};
    const fv_st_entry e = {"a", FV_ST_F32, 1, shape, &a};
    const char *path = in_scratch("m.safetensors");
    cr_assert_eq(fv_st_write(path, 1, &e, 0, none, none), FV_OK, "%s", fv_last_error());
    size_t n;
    unsigned char *b = th_slurp(path, &n);
    cr_assert_eq(n, 8 + 72 + 4);
    cr_assert_eq(b[0], 72);
    cr_assert_eq(memcmp(b + 8, header, 72), 0, "header: %.72s", (const char *)b + 8);
    free(b);
}

/* Other writers pretty-print and use any escape JSON allows; the reader must take them all. */
Test(safetensors, reader_accepts_whitespace_and_escapes)
{
    const char *path = write_raw(
        "esc.safetensors",
        " {\n  \"__metadata__\" : { \"k\\u00e9\" : \"\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\\\"\\\\\" },\n"
        "  \"caf\\u00E9\" : {\"data_offsets\": [0, 4], \"shape\" : [ 2 , 2 ], \"dtype\": \"U8\"},\n"
        "  \"z\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [4, 6]}\t}\r\n",
        6);
    fv_st_file f;
    cr_assert_eq(fv_st_read(path, &f), FV_OK, "%s", fv_last_error());
    cr_assert_eq(f.ntensors, 2);
    const fv_st_tensor *t = fv_st_find(&f, "caf\xc3\xa9");
    cr_assert_not_null(t);
    cr_assert(t->ndim == 2 && t->shape[1] == 2 && t->nbytes == 4 && t->offset == 0);
    cr_assert_str_eq(fv_st_meta(&f, "k\xc3\xa9"), "\xf0\x9f\x98\x80/\b\f\n\r\t\"\\");
    fv_st_free(&f);
}

/* ---- rejected files ---- */

Test(safetensors, rejects_truncated_data)
{
    size_t n;
    unsigned char *b = th_slurp(FIXTURES "mixed.safetensors", &n);
    const char *path = in_scratch("cut.safetensors");
    spit(path, b, n - 3);
    free(b);
    expect_rejected(path, "truncated");
}

Test(safetensors, rejects_header_length_beyond_the_file)
{
    const char *path = write_raw_len("long.safetensors", 1000, "{}      ", 8, NULL, 0);
    expect_rejected(path, "header length 1000 runs past the end of the file");
}

Test(safetensors, rejects_a_three_byte_file)
{
    const char *path = in_scratch("tiny.safetensors");
    spit(path, "\x02\0\0", 3);
    expect_rejected(path, "too short");
}

Test(safetensors, rejects_a_missing_file)
{
    expect_rejected(in_scratch("absent.safetensors"), "No such file");
}

Test(safetensors, rejects_a_directory) { expect_rejected(scratch, "directory"); }

/* Every one of these has 4 bytes of data, so only the JSON is wrong. */
Test(safetensors, rejects_invalid_json)
{
#define T(rest) "{\"a\":{\"dtype\":\"F32\",\"shape\":" rest
    static const char *const bad[] = {
        T("[1],\"data_offsets\":[0,4]}"),         /* unclosed object */
        T("[1,],\"data_offsets\":[0,4]}}"),       /* trailing comma in an array */
        T("[1],\"data_offsets\":[0,4]},}"),       /* trailing comma in an object */
        T("[01],\"data_offsets\":[0,4]}}"),       /* leading zero */
        T("[1.0],\"data_offsets\":[0,4]}}"),      /* not an integer */
        T("[1e0],\"data_offsets\":[0,4]}}"),      /* not an integer */
        T("[-1],\"data_offsets\":[0,4]}}"),       /* negative */
        T("[1],\"data_offsets\":[0,4]}} x"),      /* text after the object */
        T("[99999999999999999999999],\"data_offsets\":[0,4]}}"), /* overflows */
        T("1,\"data_offsets\":[0,4]}}"),          /* shape not an array */
        "{'a':{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\" {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":F32,\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\\q\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\\ud800\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\\udc00\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\\u00\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\\u0000\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\tb\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}",
        "{\"a",
        "[]",
        "",
        "  ",
    };
#undef T
    char name[32];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(name, sizeof name, "bad%zu.safetensors", i);
        const char *path = write_raw(name, bad[i], 4);
        fv_st_file f;
        cr_assert_eq(fv_st_read(path, &f), FV_EINPUT, "case %zu accepted: %s", i, bad[i]);
        cr_assert_not_null(strstr(fv_last_error(), "invalid JSON"), "case %zu: %s", i,
                           fv_last_error());
        cr_assert_not_null(strstr(fv_last_error(), path), "case %zu: %s", i, fv_last_error());
    }
}

/* Padding must be spaces (JSON whitespace), as the official writer uses. */
Test(safetensors, rejects_nul_padding)
{
    expect_rejected(write_raw_len("nul.safetensors", 8, "{}\0\0\0\0\0\0", 8, NULL, 0),
                    "invalid JSON header: unexpected text after the header's closing '}' at byte 2 "
                    "(found byte 0x00)");
}

Test(safetensors, rejects_invalid_utf8)
{
    expect_rejected(write_raw("u.safetensors",
                              "{\"caf\xe9\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                              1),
                    "not valid UTF-8");
}

Test(safetensors, rejects_i32_naming_dtype_and_tensor)
{
    const char *path = write_raw(
        "i32.safetensors", "{\"w\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_rejected(path, "tensor 'w' has dtype I32");
}

/* Python's F16 file ({1.0, 2.0}) reads, and converts to float; an integer tensor does not convert. */
Test(safetensors, reads_python_f16_file_as_float)
{
    fv_st_file f;
    float v[2];
    size_t shape[1] = {2};
    cr_assert_eq(fv_st_read(FIXTURES "f16.safetensors", &f), FV_OK, "F16 file read: %s", fv_last_error());
    cr_assert_eq(fv_st_get_as_f32(&f, "half", 1, shape, v), FV_OK, "F16 converted: %s", fv_last_error());
    cr_expect(v[0] == 1.0f && v[1] == 2.0f, "F16 values: %g %g", (double)v[0], (double)v[1]);
    cr_expect_eq(fv_st_get_f32(&f, "half", 1, shape, v), FV_EINPUT, "fv_st_get_f32 stays F32 only");
    fv_st_free(&f);
}

/* Every kind of half and bfloat16 value converts exactly: normals, subnormals, zeros, infinities. */
Test(safetensors, f16_and_bf16_convert_exactly)
{
    static const uint16_t half[8] = {0x3c00, 0xc000, 0x0001, 0x03ff, 0x8000, 0x7c00, 0xfc00, 0x7bff};
    static const float half_want[8] = {1.0f, -2.0f, 0x1p-24f, 1023 * 0x1p-24f, -0.0f, INFINITY, -INFINITY, 65504.0f};
    static const uint16_t bf[4] = {0x3f80, 0xc0a0, 0x0001, 0x7f80};
    static const float bf_want[4] = {1.0f, -5.0f, 0x1p-133f, INFINITY};
    size_t s8[1] = {8}, s4[1] = {4};
    fv_st_entry e[2] = {{"h", FV_ST_F16, 1, s8, half}, {"b", FV_ST_BF16, 1, s4, bf}};
    const char *path = in_scratch("half.safetensors");
    fv_st_file f;
    float v[8];
    cr_assert_eq(fv_st_write(path, 2, e, 0, NULL, NULL), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_st_read(path, &f), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_st_get_as_f32(&f, "h", 1, s8, v), FV_OK, "%s", fv_last_error());
    for (int i = 0; i < 8; i++)
        cr_expect(v[i] == half_want[i] && signbit(v[i]) == signbit(half_want[i]), "F16 %04x -> %a, want %a",
                  half[i], (double)v[i], (double)half_want[i]);
    cr_assert_eq(fv_st_get_as_f32(&f, "b", 1, s4, v), FV_OK, "%s", fv_last_error());
    for (int i = 0; i < 4; i++)
        cr_expect(v[i] == bf_want[i], "BF16 %04x -> %a, want %a", bf[i], (double)v[i], (double)bf_want[i]);
    cr_expect_eq(fv_st_get_as_f32(&f, "b", 1, s8, v), FV_EINPUT, "a shape mismatch is refused");
    fv_st_free(&f);
}

#define U8_AT(name, n, b, e) "\"" name "\":{\"dtype\":\"U8\",\"shape\":[" #n "],\"data_offsets\":[" #b "," #e "]}"

Test(safetensors, rejects_overlapping_tensors)
{
    expect_rejected(write_raw("ov.safetensors", "{" U8_AT("a", 8, 0, 8) "," U8_AT("b", 8, 4, 12) "}",
                              12),
                    "tensors 'a' and 'b' overlap");
}

Test(safetensors, rejects_a_zero_size_tensor_inside_another)
{
    expect_rejected(write_raw("ov0.safetensors", "{" U8_AT("a", 8, 0, 8) "," U8_AT("z", 0, 4, 4) "}",
                              8),
                    "overlap");
}

Test(safetensors, rejects_holes)
{
    expect_rejected(write_raw("hole.safetensors", "{" U8_AT("a", 4, 0, 4) "," U8_AT("b", 4, 8, 12) "}",
                              12),
                    "data bytes [4, 8) before tensor 'b' belong to no tensor");
}

Test(safetensors, rejects_trailing_bytes)
{
    expect_rejected(write_raw("tail.safetensors", "{" U8_AT("a", 4, 0, 4) "}", 8),
                    "trailing bytes");
}

Test(safetensors, rejects_offsets_out_of_range)
{
    expect_rejected(write_raw("far.safetensors", "{" U8_AT("a", 4, 100, 104) "}", 8),
                    "tensor 'a' (data_offsets [100, 104]) reaches past the end");
}

Test(safetensors, rejects_offsets_that_do_not_match_dtype_and_shape)
{
    expect_rejected(
        write_raw("span.safetensors",
                  "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8),
        "tensor 'w': data_offsets [0, 8] span 8 bytes, but F32 of shape [3] needs 12");
}

Test(safetensors, rejects_backward_offsets)
{
    expect_rejected(write_raw("back.safetensors", "{" U8_AT("a", 0, 4, 0) "}", 4),
                    "end before they begin");
}

Test(safetensors, rejects_duplicate_names)
{
    expect_rejected(write_raw("dup.safetensors", "{" U8_AT("a", 4, 0, 4) "," U8_AT("a", 4, 4, 8) "}",
                              8),
                    "tensor name 'a' appears twice");
}

Test(safetensors, rejects_missing_extra_and_repeated_keys)
{
    expect_rejected(write_raw("k1.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1),
                    "tensor 'a' lacks 'data_offsets'");
    expect_rejected(write_raw("k2.safetensors",
                              "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],"
                              "\"foo\":[]}}", 1),
                    "tensor 'a' has an unexpected key 'foo'");
    expect_rejected(write_raw("k3.safetensors",
                              "{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],"
                              "\"data_offsets\":[0,1]}}", 1),
                    "tensor 'a' has key 'dtype' twice");
    expect_rejected(write_raw("k4.safetensors",
                              "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1),
                    "tensor 'a': data_offsets has more than 2 entries");
    expect_rejected(write_raw("k5.safetensors",
                              "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1]}}", 1),
                    "tensor 'a': data_offsets must be [BEGIN, END], found 1 number");
}

Test(safetensors, rejects_bad_metadata)
{
    expect_rejected(write_raw("m1.safetensors", "{\"__metadata__\":{\"n\":3}}", 0),
                    "value for key 'n' is not a string");
    expect_rejected(write_raw("m2.safetensors", "{\"__metadata__\":{\"n\":\"1\",\"n\":\"2\"}}", 0),
                    "key 'n' appears twice");
    expect_rejected(write_raw("m3.safetensors", "{\"__metadata__\":{},\"__metadata__\":{}}", 0),
                    "__metadata__ appears twice");
    expect_rejected(write_raw("m4.safetensors", "{\"__metadata__\":[]}", 0), "invalid JSON");
}

Test(safetensors, rejects_more_than_eight_dimensions)
{
    expect_rejected(write_raw("d9.safetensors",
                              "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                              "\"data_offsets\":[0,1]}}", 1),
                    "tensor 'a': shape has more than 8 entries");
}

/* ---- checked reads (what checkpoint loading relies on) ---- */

static void expect_get_error(int rc, const char *const *fragments, size_t n)
{
    cr_assert_eq(rc, FV_EINPUT, "%s", fv_last_error());
    cr_assert_not_null(strstr(fv_last_error(), FIXTURES "mixed.safetensors"), "no file in: %s",
                       fv_last_error());
    for (size_t i = 0; i < n; i++)
        cr_assert_not_null(strstr(fv_last_error(), fragments[i]), "no '%s' in: %s", fragments[i],
                           fv_last_error());
}

Test(safetensors, get_rejects_wrong_shape)
{
    fv_st_file f;
    cr_assert_eq(fv_st_read(FIXTURES "mixed.safetensors", &f), FV_OK, "%s", fv_last_error());
    float out[6];
    const size_t transposed[] = {3, 2}, flat[] = {6};
    const char *msg[] = {"tensor 'weight'", "expected F32 of shape [3, 2]",
                         "found F32 of shape [2, 3]"};
    expect_get_error(fv_st_get_f32(&f, "weight", 2, transposed, out), msg, 3);
    const char *msg1[] = {"tensor 'weight'", "expected F32 of shape [6]"};
    expect_get_error(fv_st_get_f32(&f, "weight", 1, flat, out), msg1, 2);
    fv_st_free(&f);
}

Test(safetensors, get_rejects_wrong_dtype)
{
    fv_st_file f;
    cr_assert_eq(fv_st_read(FIXTURES "mixed.safetensors", &f), FV_OK, "%s", fv_last_error());
    float out[8];
    double d[6];
    const char *msg[] = {"tensor 'grid'", "expected F32 of shape [2, 2, 2]",
                         "found F64 of shape [2, 2, 2]"};
    expect_get_error(fv_st_get_f32(&f, "grid", 3, S_GRID, out), msg, 3);
    const char *msg1[] = {"tensor 'weight'", "expected F64", "found F32"};
    expect_get_error(fv_st_get_f64(&f, "weight", 2, S_WEIGHT, d), msg1, 3);
    fv_st_free(&f);
}

Test(safetensors, get_rejects_missing_tensor)
{
    fv_st_file f;
    cr_assert_eq(fv_st_read(FIXTURES "mixed.safetensors", &f), FV_OK, "%s", fv_last_error());
    float out[6];
    const char *msg[] = {"no tensor named 'encoder.weight'"};
    expect_get_error(fv_st_get_f32(&f, "encoder.weight", 2, S_WEIGHT, out), msg, 1);
    fv_st_free(&f);
}

/* ---- writing ---- */

Test(safetensors, write_into_missing_directory_leaves_nothing)
{
    const float a = 1.0f;
    const fv_st_entry e = {"a", FV_ST_F32, 0, NULL, &a};
    char path[512];
    snprintf(path, sizeof path, "%s/nope/out.safetensors", scratch);
    cr_assert_eq(fv_st_write(path, 1, &e, 0, NULL, NULL), FV_EIO);
    cr_assert_not_null(strstr(fv_last_error(), path), "%s", fv_last_error());
    cr_assert_eq(th_entries_in(scratch), 0);
}

Test(safetensors, write_replaces_an_existing_file_leaving_no_temporary)
{
    const char *path = in_scratch("w.safetensors");
    spit(path, "old", 3);
    const uint8_t a[] = {9};
    const size_t one[] = {1};
    const fv_st_entry e = {"a", FV_ST_U8, 1, one, a};
    cr_assert_eq(fv_st_write(path, 1, &e, 0, NULL, NULL), FV_OK, "%s", fv_last_error());
    cr_assert_eq(th_entries_in(scratch), 1);
    fv_st_file f;
    cr_assert_eq(fv_st_read(path, &f), FV_OK, "%s", fv_last_error());
    cr_assert_eq(f.data[0], 9);
    fv_st_free(&f);
}

static void expect_write_rejected(size_t n, const fv_st_entry *e, size_t nmeta,
                                  const char *const *keys, const char *const *values,
                                  const char *fragment)
{
    const char *path = in_scratch("bad.safetensors");
    cr_assert_eq(fv_st_write(path, n, e, nmeta, keys, values), FV_EINPUT, "%s", fv_last_error());
    cr_assert_not_null(strstr(fv_last_error(), fragment), "no '%s' in: %s", fragment,
                       fv_last_error());
    cr_assert_not_null(strstr(fv_last_error(), path), "no file in: %s", fv_last_error());
    cr_assert_eq(th_entries_in(scratch), 0, "something was written");
}

Test(safetensors, write_rejects_bad_entries_writing_nothing)
{
    const float x[2] = {0};
    const size_t two[] = {2}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    const fv_st_entry dup[] = {{"a", FV_ST_F32, 1, two, x}, {"a", FV_ST_U8, 1, two, x}};
    expect_write_rejected(2, dup, 0, NULL, NULL, "tensor name 'a' given twice");
    const fv_st_entry meta[] = {{"__metadata__", FV_ST_F32, 1, two, x}};
    expect_write_rejected(1, meta, 0, NULL, NULL, "'__metadata__'");
    const fv_st_entry dtype[] = {{"a", (fv_st_dtype)7, 1, two, x}};
    expect_write_rejected(1, dtype, 0, NULL, NULL, "invalid dtype");
    const fv_st_entry dims[] = {{"a", FV_ST_U8, 9, nine, x}};
    expect_write_rejected(1, dims, 0, NULL, NULL, "9 dimensions");
    const fv_st_entry nodata[] = {{"a", FV_ST_F32, 1, two, NULL}};
    expect_write_rejected(1, nodata, 0, NULL, NULL, "no data");
    const fv_st_entry utf8[] = {{"caf\xe9", FV_ST_F32, 1, two, x}};
    expect_write_rejected(1, utf8, 0, NULL, NULL, "UTF-8");
    const char *keys[] = {"k", "k"}, *values[] = {"1", "2"};
    expect_write_rejected(1, dup, 2, keys, values, "metadata key 'k' given twice");
}
