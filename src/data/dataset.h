/* dataset.h: image data sets in memory (Fashion-MNIST from IDX files, CIFAR-10 from its binary
 * batches), normalized to [-1, 1] the way torchvision's ToTensor + Normalize(0.5, 0.5) does, so
 * that fits and trained fields here see the same numbers as the paper's PyTorch pipelines.
 *
 * Pixels are float32, flat row-major n x c x h x w (channel planes per image, as torch stores
 * them); labels are one byte per image. Nothing is downloaded: Fashion-MNIST comes from Debian's
 * package dataset-fashion-mnist (or any folder holding the four IDX files, gzipped or not), and
 * CIFAR-10 from a folder the user supplies. */
#ifndef FV_DATASET_H
#define FV_DATASET_H

#include <stddef.h>
#include <stdint.h>

/* Where Debian's dataset-fashion-mnist package puts train-images-idx3-ubyte.gz and the rest. */
#define FV_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef enum { FV_DATASET_FASHION_MNIST = 0, FV_DATASET_CIFAR10 } fv_dataset_kind;
typedef enum { FV_SPLIT_TRAIN = 0, FV_SPLIT_TEST } fv_split;

typedef struct {
    size_t n, c, h, w;
    float *x;              /* n x c x h x w, pixel byte b stored as b / 127.5 - 1 */
    unsigned char *labels; /* n class indices, 0..9 */
} fv_dataset;

/* Load the first `limit` images of a split (limit 0: all of them) from `dir` (NULL: the Debian
 * folder for Fashion-MNIST; CIFAR-10 has no default).
 *   Fashion-MNIST: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz], 60000 / 10000 images of
 *     1 x 28 x 28; the .gz name is tried first, read through zlib (which also reads plain files).
 *   CIFAR-10: data_batch_1.bin .. data_batch_5.bin (train) or test_batch.bin (test), records of one
 *     label byte and 3072 pixel bytes (the R, G, B planes of 32 x 32); 3 x 32 x 32.
 * Every file's size is checked whole even when `limit` keeps fewer images: a missing, truncated,
 * wrong-magic or wrong-size file, a label outside 0..9 among the images kept, or `limit` above the
 * split's size is FV_EINPUT with a message naming the file and the size it should have. On failure
 * *ds is empty. */
int fv_dataset_load(fv_dataset *ds, fv_dataset_kind kind, const char *dir, fv_split split, size_t limit);

void fv_dataset_free(fv_dataset *ds);

/* Pad every image to size x size, centred, with -1 (black): 28 x 28 -> 32 x 32 puts two pixels on
 * each side, the usual way to give Fashion-MNIST a power-of-two side. FV_EINPUT when an image is
 * larger than `size` or the margin is odd (it could not be centred). */
int fv_dataset_pad(fv_dataset *ds, size_t size);

/* Random horizontal flips of n images (c x h x w each) in x, in place. Image i is mirrored when
 * the first word of Philox block (seed, stream, first + i) has its top bit set: the decision is a
 * function of those three numbers only, so a batch can be flipped again identically (which undoes
 * it) and any image's flip is known without replaying the others. Returns how many were flipped. */
size_t fv_dataset_flip(size_t n, size_t c, size_t h, size_t w, float *x, uint64_t seed, uint64_t stream,
                       uint64_t first);

#endif
