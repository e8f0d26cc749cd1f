/* test_data.c: image datasets (src/data/dataset.c), the Gaussian fit (fit.c), PNG grids (png.c)
 * the known-OT image map (known_map.c) and `flowvar fit`.
 *
 * Every data file is written here, small, into a scratch folder: IDX files (gzipped and plain) and
 * CIFAR-10 batches of a few records, with byte patterns that reach all 256 values. The one test on
 * the real Fashion-MNIST test split runs only where Debian's dataset-fashion-mnist is installed. */
#include <criterion/criterion.h>

#include "helpers.h"

#include "core/error.h"
#include "core/io.h"
#include "core/linalg.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "data/fit.h"
#include "data/known_map.h"
#include "data/png.h"
#include "gaussian/field.h"

#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

/* Each Criterion test runs in its own process, so this per-test scratch directory is private. */
static char scratch[64];

static void make_scratch(void) { th_scratch_make(scratch, "fv_test_data"); }
static void drop_scratch(void) { th_remove_tree(scratch); }

TestSuite(data, .init = make_scratch, .fini = drop_scratch);

static const char *in_scratch(const char *name) { return th_path_in(scratch, name); }

/* Pixel byte k of a synthetic set: every value 0..255 occurs, with no stride pattern. */
static unsigned char pixel_byte(size_t k) { return (unsigned char)((k * 37 + k / 251 + 11) % 256); }

static void put_be32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

/* Write `len` bytes to path, gzipped or plain. */
static void write_bytes(const char *path, int gz, const unsigned char *b, size_t len)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(gzwrite(f, b, (unsigned)len), (int)len);
        cr_assert_eq(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(b, 1, len, f), len);
        cr_assert_eq(fclose(f), 0);
    }
}

/* An IDX image file of n images rows x cols (header says `claimed` images; `payload` pixel bytes
 * follow), and its label file; names as Fashion-MNIST's in `dir`. */
static void write_idx(const char *dir, const char *prefix, int gz, uint32_t claimed, size_t payload, uint32_t rows,
                      uint32_t cols, uint32_t image_magic, uint32_t nlabels)
{
    char path[512];
    unsigned char *b = malloc(16 + payload);
    put_be32(b, image_magic);
    put_be32(b + 4, claimed);
    put_be32(b + 8, rows);
    put_be32(b + 12, cols);
    for (size_t k = 0; k < payload; k++)
        b[16 + k] = pixel_byte(k);
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte%s", dir, prefix, gz ? ".gz" : "");
    write_bytes(path, gz, b, 16 + payload);
    put_be32(b, 0x801);
    put_be32(b + 4, nlabels);
    for (size_t k = 0; k < nlabels; k++)
        b[8 + k] = (unsigned char)((k * 7) % 10);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte%s", dir, prefix, gz ? ".gz" : "");
    write_bytes(path, gz, b, 8 + nlabels);
    free(b);
}

/* A well-formed Fashion-MNIST-like split of n 28 x 28 images. */
static void write_fashion(const char *dir, const char *prefix, int gz, uint32_t n)
{
    write_idx(dir, prefix, gz, n, (size_t)n * 784, 28, 28, 0x803, n);
}

/* A CIFAR-10 batch of `records` records; record r of batch `batch` has label (batch + r) % 10 and
 * pixel bytes pixel_byte(offset + k) where offset counts the pixels of earlier records. */
static void write_cifar(const char *name, size_t records, size_t first_record, size_t extra_bytes)
{
    size_t len = records * 3073 + extra_bytes;
    unsigned char *b = calloc(len, 1);
    for (size_t r = 0; r < records; r++) {
        b[r * 3073] = (unsigned char)((first_record + r) % 10);
        for (size_t k = 0; k < 3072; k++)
            b[r * 3073 + 1 + k] = pixel_byte((first_record + r) * 3072 + k);
    }
    write_bytes(in_scratch(name), 0, b, len);
    free(b);
}

static const size_t cifar_records[5] = {2, 3, 1, 2, 2};

static void write_cifar_folder(void)
{
    char name[64];
    for (size_t i = 0, first = 0; i < 5; first += cifar_records[i++]) {
        snprintf(name, sizeof name, "data_batch_%zu.bin", i + 1);
        write_cifar(name, cifar_records[i], first, 0);
    }
    write_cifar("test_batch.bin", 3, 100, 0);
}

static float normalized(unsigned char b) { return (float)(b / 127.5 - 1.0); }

/* A failing load: FV_EINPUT, a message naming `needle` and `needle2`, and an empty dataset. */
static void expect_load_error(fv_dataset_kind kind, const char *dir, fv_split split, size_t limit, const char *needle,
                              const char *needle2)
{
    fv_dataset ds;
    int st = fv_dataset_load(&ds, kind, dir, split, limit);
    cr_assert_eq(st, FV_EINPUT, "status %d: %s", st, fv_last_error());
    cr_assert(strstr(fv_last_error(), needle), "message should name '%s': %s", needle, fv_last_error());
    cr_assert(strstr(fv_last_error(), needle2), "message should say '%s': %s", needle2, fv_last_error());
    cr_assert(ds.x == NULL && ds.labels == NULL && ds.n == 0);
}

/* ---- IDX (Fashion-MNIST) ---- */

static void idx_roundtrip(int gz, fv_split split)
{
    write_fashion(scratch, split == FV_SPLIT_TRAIN ? "train" : "t10k", gz, 5);
    fv_dataset ds;
    cr_assert_eq(fv_dataset_load(&ds, FV_DATASET_FASHION_MNIST, scratch, split, 0), FV_OK, "%s", fv_last_error());
    cr_assert(ds.n == 5 && ds.c == 1 && ds.h == 28 && ds.w == 28);
    for (size_t k = 0; k < 5 * 784; k++) {
        cr_assert_eq(ds.x[k], normalized(pixel_byte(k)), "pixel %zu", k);
        cr_assert_eq((int)lrint((ds.x[k] + 1.0) * 127.5), pixel_byte(k), "pixel %zu does not round-trip", k);
    }
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(ds.labels[i], (i * 7) % 10);
    fv_dataset_free(&ds);
}

Test(data, idx_gzip_train_roundtrip) { idx_roundtrip(1, FV_SPLIT_TRAIN); }
Test(data, idx_plain_test_roundtrip) { idx_roundtrip(0, FV_SPLIT_TEST); }

Test(data, normalization_maps_bytes_onto_minus_one_to_one)
{
    cr_assert_eq(normalized(0), -1.0f);
    cr_assert_eq(normalized(255), 1.0f);
    write_fashion(scratch, "train", 1, 1);
    fv_dataset ds;
    cr_assert_eq(fv_dataset_load(&ds, FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 0), FV_OK);
    float lo = 1, hi = -1;
    for (size_t k = 0; k < 784; k++) {
        lo = fminf(lo, ds.x[k]);
        hi = fmaxf(hi, ds.x[k]);
    }
    cr_assert(lo == -1.0f && hi == 1.0f, "range [%g, %g]", lo, hi);
    fv_dataset_free(&ds);
}

Test(data, idx_limit_keeps_the_first_images_and_checks_the_rest)
{
    write_fashion(scratch, "train", 1, 6);
    fv_dataset ds;
    cr_assert_eq(fv_dataset_load(&ds, FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 2), FV_OK);
    cr_assert_eq(ds.n, 2);
    for (size_t k = 0; k < 2 * 784; k++)
        cr_assert_eq(ds.x[k], normalized(pixel_byte(k)));
    cr_assert(ds.labels[0] == 0 && ds.labels[1] == 7);
    fv_dataset_free(&ds);
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 7, "train-images-idx3-ubyte.gz",
                      "holds 6 images, 7 asked for");
    /* a short file is found even when the images asked for are all there */
    write_idx(scratch, "train", 1, 6, 5 * 784, 28, 28, 0x803, 6);
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 2, "train-images-idx3-ubyte.gz",
                      "truncated");
}

Test(data, truncated_idx_names_file_and_expected_size)
{
    write_idx(scratch, "train", 1, 5, 4 * 784 + 100, 28, 28, 0x803, 5);
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 0, "train-images-idx3-ubyte.gz",
                      "expected 3936 (16-byte header + 5 images of 28 x 28)");
    char path[512];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", scratch);
    remove(path);
    write_idx(scratch, "train", 0, 5, 4 * 784 + 100, 28, 28, 0x803, 5);
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 0, "train-images-idx3-ubyte:",
                      "ends after 3252 bytes, expected 3936");
}

Test(data, cut_gzip_stream_is_refused)
{
    write_fashion(scratch, "train", 1, 5);
    char path[512];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", scratch);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(truncate(path, sb.st_size - 20), 0);
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 0, "train-images-idx3-ubyte.gz", "");
}

Test(data, idx_header_shorter_than_sixteen_bytes)
{
    unsigned char b[10] = {0, 0, 8, 3, 0, 0, 0, 5, 0, 0};
    write_bytes(in_scratch("train-images-idx3-ubyte"), 0, b, sizeof b);
    write_bytes(in_scratch("train-labels-idx1-ubyte"), 0, b, sizeof b);
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 0, "train-images-idx3-ubyte",
                      "expected 16 (at least the 16-byte IDX header)");
}

Test(data, longer_idx_is_refused)
{
    write_idx(scratch, "train", 0, 5, 5 * 784 + 3, 28, 28, 0x803, 5);
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 0, "train-images-idx3-ubyte",
                      "longer than expected");
}

/* Append raw bytes to a file. */
static void append_bytes(const char *path, const unsigned char *b, size_t len)
{
    FILE *f = fopen(path, "ab");
    cr_assert_not_null(f, "open %s to append", path);
    cr_assert_eq(fwrite(b, 1, len, f), len, "append to %s", path);
    cr_assert_eq(fclose(f), 0, "close %s", path);
}

Test(data, idx_header_claiming_huge_images_is_refused_before_allocating)
{
    /* 2^31 images of 4096 x 4096 would be 2^57 floats: the header is checked against the file first */
    write_idx(scratch, "train", 1, 1u << 31, 5 * 784, 4096, 4096, 0x803, 5);
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 0, "train-images-idx3-ubyte.gz",
                      "truncated: the data ends after 3936 bytes uncompressed");
    write_idx(scratch, "t10k", 0, 4294967295u, 5 * 784, 4096, 4096, 0x803, 5);
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TEST, 0, "t10k-images-idx3-ubyte",
                      "truncated: the data ends after 3936 bytes");
}

Test(data, gzip_idx_with_garbage_after_the_stream_is_refused)
{
    write_fashion(scratch, "train", 1, 5);
    const unsigned char junk[5] = {'j', 'u', 'n', 'k', '\n'};
    append_bytes(in_scratch("train-labels-idx1-ubyte.gz"), junk, sizeof junk);
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 0, "train-labels-idx1-ubyte.gz",
                      "garbage after the gzip stream");
}

Test(data, gzip_idx_of_concatenated_members_loads)
{
    /* gzip allows several members back to back (what `cat a.gz b.gz` makes): the data is their concatenation */
    write_fashion(scratch, "train", 1, 5);
    unsigned char *b = malloc(16 + 5 * 784);
    put_be32(b, 0x803);
    put_be32(b + 4, 5);
    put_be32(b + 8, 28);
    put_be32(b + 12, 28);
    for (size_t k = 0; k < 5 * 784; k++)
        b[16 + k] = pixel_byte(k);
    const char *path = in_scratch("train-images-idx3-ubyte.gz");
    write_bytes(path, 1, b, 1000);
    char second[512];
    snprintf(second, sizeof second, "%s/second.gz", scratch);
    write_bytes(second, 1, b + 1000, 16 + 5 * 784 - 1000);
    size_t n;
    unsigned char *tail = th_slurp(second, &n);
    append_bytes(path, tail, n);
    free(tail);
    free(b);
    fv_dataset ds;
    cr_assert_eq(fv_dataset_load(&ds, FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 0), FV_OK,
                 "two gzip members load: %s", fv_last_error());
    cr_assert_eq(ds.n, 5, "five images from two members");
    for (size_t k = 0; k < 5 * 784; k++)
        cr_assert_eq(ds.x[k], normalized(pixel_byte(k)), "pixel %zu across the member boundary", k);
    fv_dataset_free(&ds);
}

Test(data, cifar_batch_too_large_for_memory_is_bad_input)
{
    /* a sparse data_batch_1.bin of 2^28 records (825 GB, no disk used) asks for 3.3 TB of floats */
    write_cifar_folder();
    cr_assert_eq(truncate(in_scratch("data_batch_1.bin"), (off_t)3073 << 28), 0, "make a sparse batch");
    expect_load_error(FV_DATASET_CIFAR10, scratch, FV_SPLIT_TRAIN, 0, "the images", "this machine has");
}

Test(data, wrong_magic_is_refused)
{
    write_idx(scratch, "train", 1, 5, 5 * 784, 28, 28, 0x801, 5);
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 0, "train-images-idx3-ubyte.gz",
                      "magic 0x00000801, expected 0x00000803");
}

Test(data, labels_must_match_the_images)
{
    write_idx(scratch, "train", 1, 5, 5 * 784, 28, 28, 0x803, 4);
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 0, "train-labels-idx1-ubyte.gz",
                      "4 labels for the 5 images");
    /* a label outside 0..9 */
    unsigned char b[10] = {0, 0, 8, 1, 0, 0, 0, 2, 3, 12};
    char path[512];
    write_fashion(scratch, "t10k", 0, 2);
    snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte", scratch);
    write_bytes(path, 0, b, sizeof b);
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TEST, 0, "t10k-labels-idx1-ubyte",
                      "label 12 of image 1 is outside 0..9");
}

Test(data, missing_files_are_named)
{
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 0, "train-images-idx3-ubyte.gz",
                      "no such file");
    char path[512];
    write_fashion(scratch, "train", 1, 2);
    snprintf(path, sizeof path, "%s/train-labels-idx1-ubyte.gz", scratch);
    remove(path);
    expect_load_error(FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 0, "train-labels-idx1-ubyte.gz",
                      "no such file");
}

/* ---- CIFAR-10 ---- */

Test(data, cifar_roundtrip_across_batches)
{
    write_cifar_folder();
    fv_dataset ds;
    cr_assert_eq(fv_dataset_load(&ds, FV_DATASET_CIFAR10, scratch, FV_SPLIT_TRAIN, 0), FV_OK, "%s", fv_last_error());
    cr_assert(ds.n == 10 && ds.c == 3 && ds.h == 32 && ds.w == 32, "%zu x %zu x %zu x %zu", ds.n, ds.c, ds.h, ds.w);
    for (size_t k = 0; k < 10 * 3072; k++)
        cr_assert_eq(ds.x[k], normalized(pixel_byte(k)), "pixel %zu", k);
    for (size_t i = 0; i < 10; i++)
        cr_assert_eq(ds.labels[i], i % 10);
    /* the R plane comes first: pixel (row 1, col 2) of image 3's green plane */
    cr_assert_eq(ds.x[3 * 3072 + 1024 + 32 + 2], normalized(pixel_byte(3 * 3072 + 1024 + 34)));
    fv_dataset_free(&ds);

    cr_assert_eq(fv_dataset_load(&ds, FV_DATASET_CIFAR10, scratch, FV_SPLIT_TRAIN, 4), FV_OK);
    cr_assert(ds.n == 4 && ds.labels[3] == 3 && ds.x[4 * 3072 - 1] == normalized(pixel_byte(4 * 3072 - 1)));
    fv_dataset_free(&ds);

    cr_assert_eq(fv_dataset_load(&ds, FV_DATASET_CIFAR10, scratch, FV_SPLIT_TEST, 0), FV_OK);
    cr_assert(ds.n == 3 && ds.labels[0] == 0 && ds.x[0] == normalized(pixel_byte(100 * 3072)));
    fv_dataset_free(&ds);
}

Test(data, cifar_errors_name_the_file)
{
    write_cifar_folder();
    write_cifar("data_batch_2.bin", 3, 2, 100);
    expect_load_error(FV_DATASET_CIFAR10, scratch, FV_SPLIT_TRAIN, 0, "data_batch_2.bin",
                      "9319 bytes, expected a whole number of 3073-byte records");
    expect_load_error(FV_DATASET_CIFAR10, scratch, FV_SPLIT_TRAIN, 0, "data_batch_2.bin", "30730000 bytes");
    write_cifar("data_batch_2.bin", 3, 2, 0);
    remove(in_scratch("data_batch_4.bin"));
    expect_load_error(FV_DATASET_CIFAR10, scratch, FV_SPLIT_TRAIN, 0, "data_batch_4.bin", "cannot open");
    expect_load_error(FV_DATASET_CIFAR10, scratch, FV_SPLIT_TEST, 4, "test split there holds 3 images", "4 asked");
    expect_load_error(FV_DATASET_CIFAR10, NULL, FV_SPLIT_TRAIN, 0, "--data-dir", "nothing is downloaded");
    write_cifar("test_batch.bin", 0, 0, 0);
    expect_load_error(FV_DATASET_CIFAR10, scratch, FV_SPLIT_TEST, 0, "test_batch.bin", "0 bytes");
}

/* ---- padding and flips ---- */

Test(data, pad_centres_28_in_32_with_black)
{
    write_fashion(scratch, "train", 0, 2);
    fv_dataset ds;
    cr_assert_eq(fv_dataset_load(&ds, FV_DATASET_FASHION_MNIST, scratch, FV_SPLIT_TRAIN, 0), FV_OK);
    cr_assert_eq(fv_dataset_pad(&ds, 32), FV_OK);
    cr_assert(ds.n == 2 && ds.h == 32 && ds.w == 32);
    for (size_t i = 0; i < 2; i++)
        for (size_t r = 0; r < 32; r++)
            for (size_t c = 0; c < 32; c++) {
                float v = ds.x[(i * 32 + r) * 32 + c];
                if (r < 2 || r >= 30 || c < 2 || c >= 30)
                    cr_assert_eq(v, -1.0f, "border (%zu, %zu) of image %zu", r, c, i);
                else
                    cr_assert_eq(v, normalized(pixel_byte(i * 784 + (r - 2) * 28 + c - 2)));
            }
    cr_assert_eq(fv_dataset_pad(&ds, 32), FV_OK, "padding to the same size is a no-op");
    cr_assert_eq(fv_dataset_pad(&ds, 33), FV_EINPUT, "an odd margin cannot be centred");
    cr_assert_eq(fv_dataset_pad(&ds, 30), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "cannot centre 32 x 32 images in 30 x 30"), "%s", fv_last_error());
    fv_dataset_free(&ds);
}

Test(data, flips_are_reproducible_halves_and_involutions)
{
    enum { N = 1000, C = 3, H = 2, W = 5, SIZE = C * H * W };
    float *x = malloc(N * SIZE * sizeof *x), *a = malloc(N * SIZE * sizeof *a), *b = malloc(N * SIZE * sizeof *b);
    for (size_t k = 0; k < N * SIZE; k++)
        x[k] = (float)k;
    memcpy(a, x, N * SIZE * sizeof *x);
    memcpy(b, x, N * SIZE * sizeof *x);
    size_t na = fv_dataset_flip(N, C, H, W, a, 7, 3, 0);
    cr_assert(na > 430 && na < 570, "%zu of %d flipped", na, N);
    /* the same decisions again, here in two calls that start at different indices */
    size_t nb = fv_dataset_flip(600, C, H, W, b, 7, 3, 0) + fv_dataset_flip(400, C, H, W, b + 600 * SIZE, 7, 3, 600);
    cr_assert_eq(nb, na);
    cr_assert_eq(memcmp(a, b, N * SIZE * sizeof *a), 0, "flips are a function of (seed, stream, index)");
    size_t flipped = 0;
    for (size_t i = 0; i < N; i++) {
        int mirrored = a[i * SIZE] != x[i * SIZE];
        flipped += mirrored;
        for (size_t row = 0; row < C * H; row++)
            for (size_t c = 0; c < W; c++)
                cr_assert_eq(a[i * SIZE + row * W + c], x[i * SIZE + row * W + (mirrored ? W - 1 - c : c)]);
    }
    cr_assert_eq(flipped, na);
    cr_assert_eq(fv_dataset_flip(N, C, H, W, a, 7, 3, 0), na);
    cr_assert_eq(memcmp(a, x, N * SIZE * sizeof *a), 0, "flipping twice is the identity");
    fv_dataset_flip(N, C, H, W, b, 7, 4, 0);
    cr_assert_neq(memcmp(a, b, N * SIZE * sizeof *a), 0, "another stream flips other images");
    free(x);
    free(a);
    free(b);
}

/* ---- Gaussian fit ---- */

/* n x d floats with different scales and offsets per coordinate. */
static float *random_images(size_t n, size_t d, uint64_t seed)
{
    double *z = malloc(n * d * sizeof *z);
    float *X = malloc(n * d * sizeof *X);
    fv_rng r = fv_rng_make(seed, 0);
    fv_rng_normal(&r, n * d, z);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++)
            X[i * d + j] = (float)(0.3 * (double)j - 1 + (0.2 + 0.1 * (double)j) * (z[i * d + j] + 0.5 * z[i * d]));
    free(z);
    return X;
}

Test(data, fit_moments_match_two_pass)
{
    size_t n = 601, d = 9; /* more than two blocks of 256 rows, the last one partial */
    float *X = random_images(n, d, 1);
    double *Xd = malloc(n * d * sizeof *Xd), mean[9], cov[81];
    for (size_t k = 0; k < n * d; k++)
        Xd[k] = X[k];
    th_moments(n, d, Xd, mean, cov);
    fv_fit f;
    cr_assert_eq(fv_fit_compute(&f, n, d, X, FV_FIT_DEFAULT_FLOOR, NULL), FV_OK, "%s", fv_last_error());
    cr_assert(f.n == n && f.d == d);
    cr_assert_leq(fv_max_abs_diff(d, f.mean, mean), 1e-12);
    cr_assert_leq(fv_max_abs_diff(d * d, f.cov, cov), 1e-12, "%g", fv_max_abs_diff(d * d, f.cov, cov));
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < d; j++)
            cr_assert_eq(f.cov[i * d + j], f.cov[j * d + i], "exactly symmetric");
    /* descending spectrum, orthonormal V, V diag(eigval) V^T = cov */
    double R[81], Vt[81], W[81];
    for (size_t k = 0; k + 1 < d; k++)
        cr_assert_geq(f.eigval[k], f.eigval[k + 1]);
    fv_mat_transpose(d, d, f.V, Vt);
    fv_mat_mul(d, d, d, Vt, f.V, R);
    double I[81];
    fv_mat_identity(d, I);
    cr_assert_leq(fv_max_abs_diff(d * d, R, I), 1e-12);
    for (size_t i = 0; i < d; i++)
        for (size_t k = 0; k < d; k++)
            W[i * d + k] = f.V[i * d + k] * f.eigval[k];
    fv_mat_mul(d, d, d, W, Vt, R);
    cr_assert_leq(fv_max_abs_diff(d * d, R, cov), 1e-12);
    cr_assert_eq(f.nfloored, 0);
    fv_fit_free(&f);
    free(X);
    free(Xd);
}

Test(data, eigen_floor_counts_the_missing_directions)
{
    /* 5 images in dimension 10: rank 4, so 6 zero eigenvalues; plus one constant pixel */
    size_t n = 5, d = 10;
    float *X = random_images(n, d, 2);
    for (size_t i = 0; i < n; i++)
        X[i * d + 9] = 0.25f;
    fv_fit f;
    cr_assert_eq(fv_fit_compute(&f, n, d, X, 1e-3, NULL), FV_OK, "%s", fv_last_error());
    cr_assert_eq(f.nfloored, 6, "%zu floored", f.nfloored);
    cr_assert_eq(f.floor, 1e-3 * f.eigval[0]);
    for (size_t k = 0; k < d; k++)
        cr_assert_eq(f.lam[k], k < 4 ? f.eigval[k] : f.floor);
    fv_fit_free(&f);
    free(X);
}

Test(data, fit_refuses_bad_input)
{
    float X[6] = {1, 2, 3, 1, 2, 3};
    fv_fit f;
    cr_assert_eq(fv_fit_compute(&f, 1, 3, X, 1e-6, NULL), FV_EINPUT);
    cr_assert_eq(fv_fit_compute(&f, 2, 3, X, 0, NULL), FV_EINPUT);
    cr_assert_eq(fv_fit_compute(&f, 2, 3, X, 1, NULL), FV_EINPUT);
    cr_assert_eq(fv_fit_compute(&f, 2, 3, X, 1e-6, NULL), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "all the same"), "%s", fv_last_error());
    X[4] = NAN;
    cr_assert_eq(fv_fit_compute(&f, 2, 3, X, 1e-6, NULL), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "image 1 has a non-finite value at pixel 1"), "%s", fv_last_error());
    cr_assert(f.mean == NULL && f.cov == NULL && f.V == NULL);
}

/* mean + V diag(sqrt(lam)) y for a d-vector y. */
static void push(const fv_fit *f, const double *y, double *out, int transpose_first)
{
    size_t d = f->d;
    double u[16];
    for (size_t k = 0; k < d; k++) {
        u[k] = 0;
        if (transpose_first)
            for (size_t j = 0; j < d; j++)
                u[k] += f->V[j * d + k] * y[j]; /* V^T y */
        else
            u[k] = y[k];
        u[k] *= sqrt(f->lam[k]);
    }
    for (size_t j = 0; j < d; j++) {
        out[j] = f->mean[j];
        for (size_t k = 0; k < d; k++)
            out[j] += f->V[j * d + k] * u[k];
    }
}

Test(data, fitted_problem_gives_lemma1_field_to_the_fit)
{
    size_t n = 4, d = 6; /* rank 3: the floor matters */
    float *X = random_images(n, d, 3);
    fv_fit f;
    cr_assert_eq(fv_fit_compute(&f, n, d, X, 1e-4, NULL), FV_OK, "%s", fv_last_error());
    cr_assert_eq(f.nfloored, 3);
    fv_problem p;
    cr_assert_eq(fv_fit_problem(&f, &p), FV_OK, "%s", fv_last_error());
    cr_assert(p.d == d && p.coupling == FV_COUPLING_OT && p.sigma == 0);
    cr_assert_leq(fv_max_abs_diff(d, p.m1, f.mean), 0);
    fv_field fld;
    fv_field_work w;
    cr_assert_eq(fv_field_build(&fld, &p, FV_FIELD_OT), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_field_work_alloc(&w, d, 1), FV_OK);
    /* Lemma 1's map is mean + S^{1/2} z = mean + V diag(sqrt(lam)) V^T z */
    double z[6] = {0.3, -1.2, 0.7, 2.0, -0.4, 0.1}, T[6], want[6];
    cr_assert_eq(fv_field_map(&fld, 1, z, T, &w), FV_OK);
    push(&f, z, want, 1);
    cr_assert_leq(fv_max_abs_diff(d, T, want), 1e-10, "%g", fv_max_abs_diff(d, T, want));
    fv_field_work_free(&w);
    fv_field_free(&fld);
    fv_problem_free(&p);
    fv_fit_free(&f);
    free(X);
}

Test(data, samples_are_mean_plus_scaled_eigenvectors)
{
    size_t n = 50, d = 4;
    float *X = random_images(n, d, 4);
    fv_fit f;
    cr_assert_eq(fv_fit_compute(&f, n, d, X, 1e-6, NULL), FV_OK);
    double S[3 * 4], z[3 * 4], want[4];
    fv_rng r = fv_rng_make(9, 2), r2 = fv_rng_make(9, 2);
    cr_assert_eq(fv_fit_sample(&f, 3, &r, S), FV_OK);
    fv_rng_normal(&r2, 3 * d, z);
    for (size_t i = 0; i < 3; i++) {
        push(&f, z + i * d, want, 0);
        cr_assert_leq(fv_max_abs_diff(d, S + i * d, want), 1e-12);
    }
    fv_fit_free(&f);
    free(X);
}

/* ---- PNG ---- */

/* Read a PNG back as 8-bit grey (c = 1) or RGB (c = 3); returns the malloc'ed pixels. */
static unsigned char *read_png(const char *path, size_t c, size_t *width, size_t *height)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    cr_assert(png_image_begin_read_from_file(&img, path), "%s: %s", path, img.message);
    cr_assert_eq(img.format & PNG_FORMAT_FLAG_COLOR, c == 3 ? PNG_FORMAT_FLAG_COLOR : 0u, "colour type");
    img.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    unsigned char *pix = malloc(PNG_IMAGE_SIZE(img));
    cr_assert(png_image_finish_read(&img, NULL, pix, 0, NULL), "%s", img.message);
    *width = img.width;
    *height = img.height;
    return pix;
}

Test(data, png_grey_grid_reads_back)
{
    enum { N = 3, H = 4, W = 5 };
    float x[N * H * W];
    for (size_t k = 0; k < N * H * W; k++)
        x[k] = normalized(pixel_byte(k * 5));
    x[0] = 1.7f; /* clipped */
    x[1] = -3.0f;
    const char *path = in_scratch("grid.png");
    cr_assert_eq(fv_png_write_grid(path, N, 1, H, W, x, 2, 2, 1), FV_OK, "%s", fv_last_error());
    size_t width, height;
    unsigned char *p = read_png(path, 1, &width, &height);
    cr_assert(width == 2 * (W + 2) + 2 && height == 2 * (H + 2) + 2, "%zu x %zu", width, height);
    for (size_t y = 0; y < height; y++)
        for (size_t xx = 0; xx < width; xx++) {
            size_t cy = (y - 2) / (H + 2), cx = (xx - 2) / (W + 2), i = (y - 2) % (H + 2), j = (xx - 2) % (W + 2);
            size_t k = cy * 2 + cx;
            int inside = y >= 2 && xx >= 2 && i < H && j < W && k < N;
            int clipped = k == 0 && i == 0 && j < 2;
            int want = !inside ? 255 : clipped ? (j == 0 ? 255 : 0) : pixel_byte((k * H * W + i * W + j) * 5);
            cr_assert_eq(p[y * width + xx], want, "pixel (%zu, %zu)", y, xx);
        }
    free(p);
}

Test(data, png_rgb_grid_with_zoom_reads_back)
{
    enum { N = 2, C = 3, H = 2, W = 3, Z = 2 };
    float x[N * C * H * W];
    for (size_t k = 0; k < N * C * H * W; k++)
        x[k] = normalized(pixel_byte(k * 11));
    const char *path = in_scratch("rgb.png");
    cr_assert_eq(fv_png_write_grid(path, N, C, H, W, x, 1, 2, Z), FV_OK, "%s", fv_last_error());
    size_t width, height;
    unsigned char *p = read_png(path, 3, &width, &height);
    cr_assert(width == 2 * (Z * W + 2) + 2 && height == Z * H + 4, "%zu x %zu", width, height);
    for (size_t k = 0; k < N; k++)
        for (size_t y = 0; y < Z * H; y++)
            for (size_t xx = 0; xx < Z * W; xx++)
                for (size_t ch = 0; ch < C; ch++) {
                    size_t px = 2 + k * (Z * W + 2) + xx;
                    cr_assert_eq(p[((2 + y) * width + px) * 3 + ch],
                                 pixel_byte((((k * C + ch) * H + y / Z) * W + xx / Z) * 11));
                }
    cr_assert_eq(p[0], 255, "white border");
    free(p);
}

Test(data, png_scaled_puts_zero_at_mid_grey)
{
    double x[4] = {-2, 0, 1, 2};
    const char *path = in_scratch("scaled.png");
    cr_assert_eq(fv_png_write_grid_scaled(path, 1, 1, 1, 4, x, 1, 1, 1), FV_OK, "%s", fv_last_error());
    size_t width, height;
    unsigned char *p = read_png(path, 1, &width, &height);
    cr_assert(width == 8 && height == 5);
    const unsigned char want[4] = {0, 128, 191, 255};
    for (size_t j = 0; j < 4; j++)
        cr_assert_eq(p[2 * width + 2 + j], want[j], "value %g", x[j]);
    free(p);
}

Test(data, png_refuses_bad_grids_and_leaves_no_file)
{
    float x[4] = {0, 0, 0, 0};
    const char *path = in_scratch("bad.png");
    cr_assert_eq(fv_png_write_grid(path, 1, 2, 1, 2, x, 1, 1, 1), FV_EINPUT);
    cr_assert_eq(fv_png_write_grid(path, 3, 1, 1, 1, x, 1, 2, 1), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "3 images do not fit in 1 x 2 cells"), "%s", fv_last_error());
    cr_assert_eq(fv_png_write_grid(path, 1, 1, 2, 2, x, 1, 1, 0), FV_EINPUT);
    x[3] = NAN;
    cr_assert_eq(fv_png_write_grid(path, 1, 1, 2, 2, x, 1, 1, 1), FV_EINPUT);
    cr_assert(!th_exists(path));
    x[3] = 0;
    cr_assert_eq(fv_png_write_grid(in_scratch("no/such/folder.png"), 1, 1, 2, 2, x, 1, 1, 1), FV_EIO);
    cr_assert_eq(th_entries_in(scratch), 0, "no file or temporary left");
}

/* ---- the real Fashion-MNIST test split, where Debian's package is installed ---- */

Test(data, debian_fashion_mnist_test_split)
{
    if (!th_exists(FV_FASHION_MNIST_DIR "/t10k-images-idx3-ubyte.gz"))
        cr_skip_test("dataset-fashion-mnist is not installed (" FV_FASHION_MNIST_DIR ")");
    fv_dataset ds;
    cr_assert_eq(fv_dataset_load(&ds, FV_DATASET_FASHION_MNIST, NULL, FV_SPLIT_TEST, 0), FV_OK, "%s",
                 fv_last_error());
    cr_assert(ds.n == 10000 && ds.c == 1 && ds.h == 28 && ds.w == 28);
    size_t count[10] = {0};
    for (size_t i = 0; i < ds.n; i++)
        count[ds.labels[i]]++;
    for (int k = 0; k < 10; k++)
        cr_assert_eq(count[k], 1000, "class %d has %zu images", k, count[k]);
    fv_dataset_free(&ds);
}

/* ---- flowvar fit ---- */

static char err_text[4096];

/* Run `flowvar fit ARGS` with stdout and stderr into the scratch folder; returns the exit status. */
static int run_fit(const char *args)
{
    const char *bin = getenv("FLOWVAR") ? getenv("FLOWVAR") : "build/flowvar";
    char cmd[2048], errf[256];
    snprintf(errf, sizeof errf, "%s/stderr", scratch);
    snprintf(cmd, sizeof cmd, "%s fit %s >%s/stdout 2>%s", bin, args, scratch, errf);
    int st = system(cmd);
    FILE *f = fopen(errf, "r");
    size_t n = f ? fread(err_text, 1, sizeof err_text - 1, f) : 0;
    err_text[n] = '\0';
    if (f)
        fclose(f);
    remove(errf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(data, cli_fit_on_a_synthetic_fashion_folder)
{
    write_fashion(scratch, "train", 1, 40);
    char args[1024];
    snprintf(args, sizeof args, "--data fashion-mnist --data-dir %s --n 30 --pad32 --seed 3 --out %s/fit", scratch,
             scratch);
    cr_assert_eq(run_fit(args), 0, "%s", err_text);
    static const char *const files[] = {"mean.npy", "cov.npy",         "eigvals.npy", "fit.tsv",
                                        "mean.png", "eigenimages.png", "samples.png", "data.png"};
    char path[512];
    for (size_t i = 0; i < 8; i++) {
        snprintf(path, sizeof path, "%s/fit/%s", scratch, files[i]);
        cr_assert(th_exists(path), "%s missing", path);
    }
    /* the mean of the padded images */
    double *mean;
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS];
    snprintf(path, sizeof path, "%s/fit/mean.npy", scratch);
    cr_assert_eq(fv_npy_read_f64(path, &mean, &ndim, shape), FV_OK, "%s", fv_last_error());
    cr_assert(ndim == 1 && shape[0] == 1024);
    for (size_t r = 0; r < 32; r++)
        for (size_t c = 0; c < 32; c++) {
            double want = 0;
            for (size_t i = 0; i < 30 && r >= 2 && r < 30 && c >= 2 && c < 30; i++)
                want += normalized(pixel_byte(i * 784 + (r - 2) * 28 + c - 2)) / 30.0;
            if (r < 2 || r >= 30 || c < 2 || c >= 30)
                want = -1;
            cr_assert_float_eq(mean[r * 32 + c], want, 1e-12, "pixel (%zu, %zu)", r, c);
        }
    free(mean);
    snprintf(path, sizeof path, "%s/fit/cov.npy", scratch);
    double *cov;
    cr_assert_eq(fv_npy_read_f64(path, &cov, &ndim, shape), FV_OK);
    cr_assert(ndim == 2 && shape[0] == 1024 && shape[1] == 1024);
    free(cov);
    /* the summary: 30 images, dimension 1024, rank 29 so 995 eigenvalues floored */
    snprintf(path, sizeof path, "%s/fit/fit.tsv", scratch);
    size_t len;
    char *tsv = (char *)th_slurp(path, &len);
    tsv[len < 65535 ? len : 65535] = '\0';
    cr_assert(strstr(tsv, "quantity\tvalue\nn\t30\nchannels\t1\nheight\t32\nwidth\t32\ndim\t1024\n"), "%s", tsv);
    cr_assert(strstr(tsv, "floored\t995\n"), "%s", tsv);
    free(tsv);
    size_t width, height;
    snprintf(path, sizeof path, "%s/fit/mean.png", scratch);
    unsigned char *p = read_png(path, 1, &width, &height);
    cr_assert(width == 4 * 32 + 4 && height == 4 * 32 + 4, "mean.png %zu x %zu", width, height);
    free(p);
    snprintf(path, sizeof path, "%s/fit/data.png", scratch);
    p = read_png(path, 1, &width, &height);
    cr_assert(width == 8 * 66 + 2 && height == 4 * 66 + 2, "data.png %zu x %zu: 30 images in 4 rows", width, height);
    free(p);
}

/* A failing `flowvar fit`: exit 2, the error naming `needle`, and no output folder. */
static void expect_fit_error(const char *args, const char *needle)
{
    char full[1024], out[256];
    snprintf(out, sizeof out, "%s/out", scratch);
    snprintf(full, sizeof full, args, scratch);
    strncat(full, " --out ", sizeof full - strlen(full) - 1);
    strncat(full, out, sizeof full - strlen(full) - 1);
    cr_assert_eq(run_fit(full), 2, "exit status for: %s\nstderr: %s", full, err_text);
    cr_assert(strncmp(err_text, "flowvar: error: ", 16) == 0, "stderr: %s", err_text);
    cr_assert(strstr(err_text, needle), "stderr should name '%s': %s", needle, err_text);
    cr_assert(!th_exists(out), "no output folder after an error");
}

Test(data, cli_fit_errors_leave_no_output)
{
    write_cifar_folder();
    remove(in_scratch("data_batch_3.bin"));
    expect_fit_error("--data cifar10 --data-dir %s", "data_batch_3.bin: cannot open");
    write_cifar("data_batch_3.bin", 1, 5, 7);
    expect_fit_error("--data cifar10 --data-dir %s", "data_batch_3.bin: 3080 bytes");
    expect_fit_error("--data cifar10 --data-dir %s --split test --n 5", "holds 3 images, 5 asked for");
    expect_fit_error("--data cifar10", "--data-dir");
    expect_fit_error("--data mnist --data-dir %s", "--data");
    expect_fit_error("--data fashion-mnist --data-dir %s", "train-images-idx3-ubyte.gz: no such file");
    write_fashion(scratch, "train", 1, 3);
    expect_fit_error("--data fashion-mnist --data-dir %s --floor 2", "--floor must be in (0, 1)");
    expect_fit_error("--data fashion-mnist --data-dir %s --n 1", "--n must be at least 2");
    expect_fit_error("--data fashion-mnist --data-dir %s --bogus", "unknown option '--bogus'");
    char args[512];
    snprintf(args, sizeof args, "--data fashion-mnist --data-dir %s", scratch);
    cr_assert_eq(run_fit(args), 2);
    cr_assert(strstr(err_text, "--out DIR is required"), "%s", err_text);
    write_bytes(in_scratch("afile"), 0, (const unsigned char *)"x", 1);
    snprintf(args, sizeof args, "--data fashion-mnist --data-dir %s --out %s/afile", scratch, scratch);
    cr_assert_eq(run_fit(args), 2);
    cr_assert(strstr(err_text, "exists and is not a folder"), "%s", err_text);
}

/* ---- the known-OT map ------------------------------------------------------------------------- */

static double dot(size_t n, const double *x, const double *y)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += x[i] * y[i];
    return s;
}

Test(data, known_map_stencil_by_hand)
{
    /* a 3 x 3 image with one lit centre: the centre gains 4 s, its four neighbours lose s, corners 0;
     * the ramp adds -a, 0, +a across the columns */
    fv_known_map m;
    cr_assert_eq(fv_known_map_init(&m, 1, 3, 3, 0.5, 0.2), FV_OK);
    double x[9] = {0, 0, 0, 0, 1, 0, 0, 0, 0}, y[9];
    double want[9] = {-0.2, -0.5, 0.2, -0.7, 3.0, -0.3, -0.2, -0.5, 0.2};
    fv_known_map_apply(&m, 1, x, y);
    for (int i = 0; i < 9; i++)
        cr_assert_float_eq(y[i], want[i], 1e-15, "pixel %d: %g, want %g", i, y[i], want[i]);
}

Test(data, known_map_is_symmetric_positive_definite_plus_offset)
{
    /* G = T - b is symmetric (<G x, y> = <x, G y>) with spectrum in [1, 1 + 8 s]: checked on random
     * two-channel images with rectangular sides, where boundary handling would show */
    enum { C = 2, H = 5, W = 7, D = C * H * W };
    fv_known_map m;
    cr_assert_eq(fv_known_map_init(&m, C, H, W, 0.3, 0.25), FV_OK);
    double zero[D] = {0}, b[D], x[2 * D], gx[2 * D];
    fv_known_map_apply(&m, 1, zero, b);
    fv_rng r = fv_rng_make(3, 1);
    for (int rep = 0; rep < 20; rep++) {
        fv_rng_normal(&r, 2 * D, x);
        fv_known_map_apply(&m, 2, x, gx);
        for (int i = 0; i < 2 * D; i++)
            gx[i] -= b[i % D];
        double a = dot(D, gx, x + D), c = dot(D, x, gx + D);
        cr_assert_float_eq(a, c, 1e-12 * (fabs(a) + 1), "<Gx, y> = %.17g vs <x, Gy> = %.17g", a, c);
        double q = dot(D, gx, x) / dot(D, x, x);
        cr_assert(q >= 1.0 && q <= 1.0 + 8 * 0.3, "Rayleigh quotient %g outside [1, 3.4]", q);
    }
}

Test(data, known_map_pairs_are_cyclically_monotone)
{
    /* the OT property on a finite set: no swap of two targets lowers the quadratic cost, i.e.
     * <x_i - x_j, T x_i - T x_j> >= 0 for every pair of images (shifted so that the map's offset
     * and the identity's contribution are not what carries the sign) */
    enum { N = 12, D = 4 * 4 };
    fv_known_map m;
    cr_assert_eq(fv_known_map_init(&m, 1, 4, 4, FV_KNOWN_MAP_STRENGTH, FV_KNOWN_MAP_OFFSET), FV_OK);
    double X[N * D], T[N * D];
    fv_rng r = fv_rng_make(4, 2);
    fv_rng_normal(&r, N * D, X);
    fv_known_map_apply(&m, N, X, T);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < i; j++) {
            double keep = 0, swap = 0;
            for (int k = 0; k < D; k++) {
                keep += pow(X[i * D + k] - T[i * D + k], 2) + pow(X[j * D + k] - T[j * D + k], 2);
                swap += pow(X[i * D + k] - T[j * D + k], 2) + pow(X[j * D + k] - T[i * D + k], 2);
            }
            cr_assert(keep <= swap, "pairs %d, %d: cost %g kept vs %g swapped", i, j, keep, swap);
        }
}

Test(data, known_map_refuses_bad_settings)
{
    fv_known_map m;
    cr_assert_eq(fv_known_map_init(&m, 1, 0, 3, 0.2, 0), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "size") != NULL, "%s", fv_last_error());
    cr_assert_eq(fv_known_map_init(&m, 1, 3, 3, -0.1, 0), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "strength") != NULL, "%s", fv_last_error());
    cr_assert_eq(fv_known_map_init(&m, 1, 3, 3, 0.1, NAN), FV_EINPUT);
    cr_assert(strstr(fv_last_error(), "offset") != NULL, "%s", fv_last_error());
}
