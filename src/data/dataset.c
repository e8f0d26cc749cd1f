/* dataset.c: the IDX (Fashion-MNIST) and CIFAR-10 binary readers, padding and flips (see
 * dataset.h). Files are streamed in fixed chunks, so checking a whole file costs no memory beyond
 * the images kept. */
#include "data/dataset.h"

#include "core/error.h"
#include "core/philox.h"
#include "core/size.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

enum {
    NCLASSES = 10,
    CHUNK = 1 << 16,
    IDX_IMAGE_MAGIC = 0x00000803, /* unsigned bytes, 3 dimensions */
    IDX_LABEL_MAGIC = 0x00000801, /* unsigned bytes, 1 dimension */
    IDX_MAX_SIDE = 4096,          /* far above any IDX image set; stops a corrupt header early */
    CIFAR_SIDE = 32,
    CIFAR_PIXELS = 3 * CIFAR_SIDE * CIFAR_SIDE,
    CIFAR_RECORD = 1 + CIFAR_PIXELS,
    CIFAR_STANDARD_RECORDS = 10000,
    CIFAR_TRAIN_BATCHES = 5
};

/* b / 127.5 - 1 rounded once from double, so every reader produces bit-identical floats. */
static void normalize(size_t count, const unsigned char *b, float *x)
{
    float lut[256];
    for (int i = 0; i < 256; i++)
        lut[i] = (float)(i / 127.5 - 1.0);
    for (size_t k = 0; k < count; k++)
        x[k] = lut[b[k]];
}

static int check_labels(const char *path, size_t count, const unsigned char *labels)
{
    for (size_t k = 0; k < count; k++)
        if (labels[k] >= NCLASSES)
            return fv_error(FV_EINPUT, "%s: label %u of image %zu is outside 0..%d", path, labels[k], k, NCLASSES - 1);
    return FV_OK;
}

void fv_dataset_free(fv_dataset *ds)
{
    free(ds->x);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

static int dataset_alloc(fv_dataset *ds, size_t n, size_t c, size_t h, size_t w)
{
    ds->n = n;
    ds->c = c;
    ds->h = h;
    ds->w = w;
    int st;
    /* c h w is at most 3 x 4096 x 4096 (the readers' limits), so only the product with n can overflow */
    if (!(ds->x = fv_alloc(&st, "the images (count x pixels)", n, c * h * w, sizeof *ds->x)))
        return st;
    if (!(ds->labels = malloc(n)))
        return fv_error(FV_ENOMEM, "out of memory for %zu images of %zu x %zu x %zu", n, c, h, w);
    return FV_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* IDX through zlib: gzread passes files without a gzip header through unchanged. */

typedef struct {
    gzFile gz;
    const char *path;
    uint64_t length;   /* the whole file's length after decompression, measured before reading */
    uint64_t pos;      /* bytes (after decompression) read so far */
    uint64_t expect;   /* the size the header implies */
    char layout[96];   /* what makes up `expect`, for messages */
} idx_file;

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* The decompressed length of a gzip file: every member inflated and counted, so that a header is
 * compared with the real data before anything is allocated from it. gzread would skip what follows
 * the last member when it is not another gzip member; that is refused here. */
static int gzip_length(const char *path, FILE *fp, uint64_t *length)
{
    unsigned char *in = malloc(CHUNK), *out = malloc(CHUNK);
    z_stream z = {0};
    int st = !in || !out || inflateInit2(&z, 16 + MAX_WBITS) != Z_OK ? fv_error(FV_ENOMEM, "out of memory") : FV_OK;
    int zr = Z_OK, member = 1;
    uint64_t offset = 0; /* compressed bytes consumed */
    *length = 0;
    while (!st && member) {
        if (z.avail_in == 0) {
            z.avail_in = (uInt)fread(in, 1, CHUNK, fp);
            z.next_in = in;
            if (ferror(fp))
                st = fv_error(FV_EIO, "%s: read error: %s", path, strerror(errno));
            else if (z.avail_in == 0)
                st = fv_error(FV_EINPUT, "%s: truncated: the gzip stream ends early after %" PRIu64
                                         " bytes uncompressed", path, *length);
            if (st)
                break;
        }
        uInt before = z.avail_in;
        z.next_out = out;
        z.avail_out = CHUNK;
        zr = inflate(&z, Z_NO_FLUSH);
        offset += before - z.avail_in;
        *length += CHUNK - z.avail_out;
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
            st = fv_error(FV_EINPUT, "%s: corrupt compressed data: %s", path, z.msg ? z.msg : "inflate failed");
        if (st || zr != Z_STREAM_END)
            continue;
        /* a member ended: another member may follow (gzip allows concatenation); anything else is refused */
        if (z.avail_in < 2) { /* top up, so that a following member's two magic bytes are seen together */
            if (z.avail_in)
                in[0] = *z.next_in;
            z.avail_in += (uInt)fread(in + z.avail_in, 1, CHUNK - z.avail_in, fp);
            z.next_in = in;
        }
        if (z.avail_in == 0)
            member = 0;
        else if (z.avail_in >= 2 && z.next_in[0] == 0x1f && z.next_in[1] == 0x8b)
            inflateReset(&z);
        else
            st = fv_error(FV_EINPUT, "%s: garbage after the gzip stream at byte %" PRIu64, path, offset);
    }
    inflateEnd(&z);
    free(in);
    free(out);
    return st;
}

/* The length of the data gzread will deliver: the file's size, or its gzip stream's decompressed size. */
static int idx_length(const char *path, uint64_t *length)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return fv_error(FV_EINPUT, "%s: cannot open: %s", path, strerror(errno));
    unsigned char magic[2];
    size_t got = fread(magic, 1, 2, fp);
    int st = FV_OK;
    if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
        rewind(fp);
        st = gzip_length(path, fp, length);
    } else {
        struct stat sb;
        st = fstat(fileno(fp), &sb) == 0 ? FV_OK : fv_error(FV_EIO, "%s: cannot stat: %s", path, strerror(errno));
        *length = st ? 0 : (uint64_t)sb.st_size;
    }
    fclose(fp);
    return st;
}

static int idx_open(idx_file *f, const char *path, size_t header)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    f->expect = header;
    snprintf(f->layout, sizeof f->layout, "at least the %zu-byte IDX header", header);
    int st = idx_length(path, &f->length);
    if (st)
        return st;
    errno = 0;
    if (!(f->gz = gzopen(path, "rb")))
        return fv_error(FV_EINPUT, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
    return FV_OK;
}

static const char *idx_unit(const idx_file *f) { return gzdirect(f->gz) ? "bytes" : "bytes uncompressed"; }

static int idx_truncated(const idx_file *f)
{
    return fv_error(FV_EINPUT, "%s: truncated: the data ends after %" PRIu64 " %s, expected %" PRIu64 " (%s)",
                    f->path, f->pos, idx_unit(f), f->expect, f->layout);
}

/* The header's size against the measured length, before anything is allocated from the header. */
static int idx_check_length(idx_file *f)
{
    if (f->length < f->expect) {
        f->pos = f->length;
        return idx_truncated(f);
    }
    if (f->length > f->expect)
        return fv_error(FV_EINPUT, "%s: longer than expected: %" PRIu64 " %s, expected %" PRIu64 " (%s)", f->path,
                        f->length, idx_unit(f), f->expect, f->layout);
    return FV_OK;
}

/* zlib's error for a failed read: the OS (FV_EIO) or a corrupt stream (the user's file). */
static int idx_zerror(const idx_file *f)
{
    int code;
    const char *msg = gzerror(f->gz, &code);
    if (code == Z_ERRNO)
        return fv_error(FV_EIO, "%s: read error: %s", f->path, strerror(errno));
    if (code == Z_BUF_ERROR)
        return idx_truncated(f);
    return fv_error(FV_EINPUT, "%s: corrupt compressed data: %s", f->path, msg);
}

static int idx_read(idx_file *f, unsigned char *buf, size_t bytes)
{
    while (bytes) {
        int got = gzread(f->gz, buf, (unsigned)(bytes < CHUNK ? bytes : CHUNK));
        if (got < 0)
            return idx_zerror(f);
        if (got == 0) {
            int code;
            gzerror(f->gz, &code);
            return code == Z_OK ? idx_truncated(f) : idx_zerror(f);
        }
        f->pos += (uint64_t)got;
        buf += got;
        bytes -= (size_t)got;
    }
    return FV_OK;
}

/* After the payload: nothing may follow, and a gzip stream must end cleanly (its CRC trailer). */
static int idx_finish(idx_file *f)
{
    unsigned char extra;
    int got = gzread(f->gz, &extra, 1);
    if (got > 0)
        return fv_error(FV_EINPUT, "%s: longer than expected: more than %" PRIu64 " %s, expected %" PRIu64 " (%s)",
                        f->path, f->pos, idx_unit(f), f->expect, f->layout);
    int code;
    gzerror(f->gz, &code);
    return got < 0 || code != Z_OK ? idx_zerror(f) : FV_OK;
}

static void idx_close(idx_file *f)
{
    if (f->gz)
        gzclose(f->gz);
    f->gz = NULL;
}

/* Header of an image file: magic, count, rows, cols. */
static int idx_image_header(idx_file *f, uint32_t *n, uint32_t *rows, uint32_t *cols)
{
    unsigned char h[16];
    int st = idx_read(f, h, sizeof h);
    if (st)
        return st;
    if (be32(h) != IDX_IMAGE_MAGIC)
        return fv_error(FV_EINPUT, "%s: not an IDX image file: magic 0x%08" PRIx32 ", expected 0x%08x", f->path,
                        be32(h), IDX_IMAGE_MAGIC);
    *n = be32(h + 4);
    *rows = be32(h + 8);
    *cols = be32(h + 12);
    if (*n == 0 || *rows == 0 || *cols == 0 || *rows > IDX_MAX_SIDE || *cols > IDX_MAX_SIDE)
        return fv_error(FV_EINPUT, "%s: implausible IDX image header: %" PRIu32 " images of %" PRIu32 " x %" PRIu32,
                        f->path, *n, *rows, *cols);
    f->expect = sizeof h + (uint64_t)*n * *rows * *cols;
    snprintf(f->layout, sizeof f->layout, "16-byte header + %" PRIu32 " images of %" PRIu32 " x %" PRIu32, *n, *rows,
             *cols);
    return idx_check_length(f);
}

static int idx_label_header(idx_file *f, uint32_t *n)
{
    unsigned char h[8];
    int st = idx_read(f, h, sizeof h);
    if (st)
        return st;
    if (be32(h) != IDX_LABEL_MAGIC)
        return fv_error(FV_EINPUT, "%s: not an IDX label file: magic 0x%08" PRIx32 ", expected 0x%08x", f->path,
                        be32(h), IDX_LABEL_MAGIC);
    *n = be32(h + 4);
    f->expect = sizeof h + (uint64_t)*n;
    snprintf(f->layout, sizeof f->layout, "8-byte header + %" PRIu32 " labels", *n);
    return idx_check_length(f);
}

/* Stream `total` payload bytes; the first `keep` go to out (normalized pixels, or raw labels). */
static int idx_payload(idx_file *f, uint64_t total, size_t keep, float *pixels, unsigned char *labels,
                       unsigned char *buf)
{
    for (uint64_t done = 0; done < total;) {
        size_t m = total - done < CHUNK ? (size_t)(total - done) : CHUNK;
        int st = idx_read(f, buf, m);
        if (st)
            return st;
        if (done < keep) {
            size_t use = keep - done < m ? keep - (size_t)done : m;
            if (pixels)
                normalize(use, buf, pixels + done);
            else
                memcpy(labels + done, buf, use);
        }
        done += m;
    }
    return idx_finish(f);
}

static int idx_load(fv_dataset *ds, const char *images, const char *labels, size_t limit)
{
    idx_file fi = {0}, fl = {0};
    uint32_t n = 0, rows = 0, cols = 0, nl = 0;
    unsigned char *buf = malloc(CHUNK);
    int st = buf ? FV_OK : fv_error(FV_ENOMEM, "out of memory");
    if (!st && !(st = idx_open(&fi, images, 16)) && !(st = idx_image_header(&fi, &n, &rows, &cols))) {
        if (limit > n)
            st = fv_error(FV_EINPUT, "%s holds %" PRIu32 " images, %zu asked for", images, n, limit);
        size_t keep = limit ? limit : n, side = (size_t)rows * cols;
        if (!st && !(st = dataset_alloc(ds, keep, 1, rows, cols)))
            st = idx_payload(&fi, (uint64_t)n * side, keep * side, ds->x, NULL, buf);
    }
    idx_close(&fi);
    if (!st && !(st = idx_open(&fl, labels, 8)) && !(st = idx_label_header(&fl, &nl))) {
        if (nl != n)
            st = fv_error(FV_EINPUT, "%s: %" PRIu32 " labels for the %" PRIu32 " images of %s", labels, nl, n, images);
        if (!st && !(st = idx_payload(&fl, nl, ds->n, NULL, ds->labels, buf)))
            st = check_labels(labels, ds->n, ds->labels);
    }
    idx_close(&fl);
    free(buf);
    return st;
}

/* DIR/NAME.gz, else DIR/NAME. */
static int idx_path(char *buf, size_t size, const char *dir, const char *name, int default_dir)
{
    snprintf(buf, size, "%s/%s.gz", dir, name);
    if (access(buf, F_OK) == 0)
        return FV_OK;
    snprintf(buf, size, "%s/%s", dir, name);
    if (access(buf, F_OK) == 0)
        return FV_OK;
    return fv_error(FV_EINPUT, "%s/%s.gz: no such file (nor %s without .gz)%s", dir, name, name,
                    default_dir ? "; install Debian's package dataset-fashion-mnist (make deps does) or give --data-dir"
                                : "");
}

static int fashion_load(fv_dataset *ds, const char *dir, fv_split split, size_t limit)
{
    const char *prefix = split == FV_SPLIT_TRAIN ? "train" : "t10k";
    char name[64], images[4096], labels[4096];
    int st;
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    if ((st = idx_path(images, sizeof images, dir ? dir : FV_FASHION_MNIST_DIR, name, !dir)))
        return st;
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    if ((st = idx_path(labels, sizeof labels, dir ? dir : FV_FASHION_MNIST_DIR, name, !dir)))
        return st;
    return idx_load(ds, images, labels, limit);
}

/* ------------------------------------------------------------------------------------------ */
/* CIFAR-10 binary batches. */

static int cifar_size(const char *path, uint64_t *records)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return fv_error(FV_EINPUT, "%s: cannot open: %s (CIFAR-10's binary version is a folder of data_batch_1.bin .. "
                                   "data_batch_5.bin and test_batch.bin)", path, strerror(errno));
    uint64_t size = sb.st_size > 0 ? (uint64_t)sb.st_size : 0;
    if (!S_ISREG(sb.st_mode) || size == 0 || size % CIFAR_RECORD)
        return fv_error(FV_EINPUT, "%s: %" PRIu64 " bytes, expected a whole number of %d-byte records (1 label byte + "
                                   "%d pixel bytes; the standard file holds %d records, %d bytes)",
                        path, size, CIFAR_RECORD, CIFAR_PIXELS, CIFAR_STANDARD_RECORDS,
                        CIFAR_STANDARD_RECORDS * CIFAR_RECORD);
    *records = size / CIFAR_RECORD;
    return FV_OK;
}

static int cifar_read(const char *path, size_t first, size_t count, fv_dataset *ds, unsigned char *rec)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return fv_error(FV_EINPUT, "%s: cannot open: %s", path, strerror(errno));
    int st = FV_OK;
    for (size_t k = 0; k < count && !st; k++) {
        if (fread(rec, 1, CIFAR_RECORD, fp) != CIFAR_RECORD)
            st = ferror(fp) ? fv_error(FV_EIO, "%s: read error: %s", path, strerror(errno))
                            : fv_error(FV_EINPUT, "%s: truncated while reading record %zu", path, k);
        else {
            ds->labels[first + k] = rec[0];
            normalize(CIFAR_PIXELS, rec + 1, ds->x + (first + k) * CIFAR_PIXELS);
        }
    }
    fclose(fp);
    return st ? st : check_labels(path, count, ds->labels + first);
}

static int cifar_load(fv_dataset *ds, const char *dir, fv_split split, size_t limit)
{
    if (!dir)
        return fv_error(FV_EINPUT, "CIFAR-10 needs --data-dir DIR: the folder of data_batch_1.bin .. data_batch_5.bin "
                                   "and test_batch.bin (the binary version from "
                                   "https://www.cs.toronto.edu/~kriz/cifar.html; nothing is downloaded)");
    size_t nfiles = split == FV_SPLIT_TRAIN ? CIFAR_TRAIN_BATCHES : 1;
    char paths[CIFAR_TRAIN_BATCHES][4096];
    uint64_t records[CIFAR_TRAIN_BATCHES], total = 0;
    int st;
    for (size_t i = 0; i < nfiles; i++) {
        if (split == FV_SPLIT_TRAIN)
            snprintf(paths[i], sizeof paths[i], "%s/data_batch_%zu.bin", dir, i + 1);
        else
            snprintf(paths[i], sizeof paths[i], "%s/test_batch.bin", dir);
        if ((st = cifar_size(paths[i], &records[i])))
            return st;
        total += records[i];
    }
    if (limit > total)
        return fv_error(FV_EINPUT, "%s: the CIFAR-10 %s split there holds %" PRIu64 " images, %zu asked for", dir,
                        split == FV_SPLIT_TRAIN ? "train" : "test", total, limit);
    size_t keep = limit ? limit : (size_t)total;
    unsigned char *rec = malloc(CIFAR_RECORD);
    st = rec ? dataset_alloc(ds, keep, 3, CIFAR_SIDE, CIFAR_SIDE) : fv_error(FV_ENOMEM, "out of memory");
    for (size_t i = 0, done = 0; i < nfiles && done < keep && !st; i++) {
        size_t count = keep - done < records[i] ? keep - done : (size_t)records[i];
        st = cifar_read(paths[i], done, count, ds, rec);
        done += count;
    }
    free(rec);
    return st;
}

int fv_dataset_load(fv_dataset *ds, fv_dataset_kind kind, const char *dir, fv_split split, size_t limit)
{
    memset(ds, 0, sizeof *ds);
    int st = kind == FV_DATASET_CIFAR10 ? cifar_load(ds, dir, split, limit) : fashion_load(ds, dir, split, limit);
    if (st)
        fv_dataset_free(ds);
    return st;
}

/* ------------------------------------------------------------------------------------------ */

int fv_dataset_pad(fv_dataset *ds, size_t size)
{
    size_t h = ds->h, w = ds->w, planes = ds->n * ds->c;
    if (h > size || w > size || (size - h) % 2 || (size - w) % 2)
        return fv_error(FV_EINPUT, "cannot centre %zu x %zu images in %zu x %zu", h, w, size, size);
    if (h == size && w == size)
        return FV_OK;
    float *y = malloc(planes * size * size * sizeof *y);
    if (!y)
        return fv_error(FV_ENOMEM, "out of memory padding %zu images to %zu x %zu", ds->n, size, size);
    size_t top = (size - h) / 2, left = (size - w) / 2;
    for (size_t k = 0; k < planes * size * size; k++)
        y[k] = -1.0f;
    for (size_t p = 0; p < planes; p++)
        for (size_t r = 0; r < h; r++)
            memcpy(y + (p * size + top + r) * size + left, ds->x + (p * h + r) * w, w * sizeof *y);
    free(ds->x);
    ds->x = y;
    ds->h = ds->w = size;
    return FV_OK;
}

size_t fv_dataset_flip(size_t n, size_t c, size_t h, size_t w, float *x, uint64_t seed, uint64_t stream,
                       uint64_t first)
{
    size_t flipped = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(fv_philox_block(seed, stream, first + i).v[0] >> 31))
            continue;
        float *img = x + i * c * h * w;
        for (size_t r = 0; r < c * h; r++)
            for (size_t a = 0; a < w / 2; a++) {
                float t = img[r * w + a];
                img[r * w + a] = img[r * w + w - 1 - a];
                img[r * w + w - 1 - a] = t;
            }
        flipped++;
    }
    return flipped;
}
