/* bench_unet.c: training passes per second (forward, loss, backward) of flowvar's CPU U-Net
 * (src/nn/unet.h) on 3 x 32 x 32 images, for bench/peer_unet.py's PyTorch peer (torchcfm's
 * UNetModelWrapper, same configurations and batch) to be set against. Prints TSV on stdout (progress
 * on stderr).
 *
 * Configurations (attention_resolutions "16", num_heads 4, num_head_channels 64, dropout 0.1 in training
 * mode):
 *   tiny   num_channels 32, channel_mult (1, 2, 2), num_res_blocks 1, batch 16
 *   small  num_channels 64, channel_mult (1, 2, 2), num_res_blocks 2, batch 8
 *   paper  the paper's CIFAR-10 network: num_channels 128, channel_mult (1, 2, 2, 2), num_res_blocks 2,
 *          batch 4
 * Timed, per configuration, REPS times after WARMUP untimed passes: ITERS passes of
 *   fv_unet_forward, fv_mse_loss against a fixed target, fv_unet_backward
 * and ITERS forward passes alone; then each block's forward alone (fv_unet_block_forward), ITERS
 * times, to show where the forward's time goes.
 *
 * Usage: bench_unet [--iters N] [--warmup W] [--reps R] [--config NAME] [--info]
 * --config runs one configuration (default: all), so that the peak resident memory (getrusage's
 * ru_maxrss at the end, row "rss CONFIG KIB") is that configuration's; --info prints the meta rows alone.
 * Rows: "meta KEY VALUE", "meta CONFIG.KEY VALUE", "pass CONFIG REP SECONDS_PER_PASS",
 * "forward CONFIG REP SECONDS_PER_PASS", "block CONFIG NAME SECONDS_PER_PASS", "rss CONFIG KIB". */
#include "core/error.h"
#include "core/rng.h"
#include "nn/conv_dnnl.h"
#include "nn/mlp.h"
#include "nn/unet.h"

#include <omp.h>
#include <sys/resource.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* OpenBLAS's own entry points (Debian's cblas.h declares them as well; stated here so the benchmark
 * does not depend on which cblas.h is found first). */
char *openblas_get_config(void);
char *openblas_get_corename(void);
int openblas_get_num_threads(void);

#define SEED 20251107ULL

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void check(int st, const char *what)
{
    if (st) {
        fprintf(stderr, "bench_unet: %s failed: %s: %s\n", what, fv_status_name(st), fv_last_error());
        exit(1);
    }
}

static float *xmalloc(size_t n)
{
    float *p = malloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "bench_unet: out of memory\n");
        exit(1);
    }
    return p;
}

static void fill_normal(fv_rng *r, size_t n, float *out)
{
    double z;
    for (size_t i = 0; i < n; i++) {
        fv_rng_normal(r, 1, &z);
        out[i] = (float)z;
    }
}

typedef struct {
    const char *name;
    size_t num_channels, num_res_blocks, batch, nlevels;
} bench_config;

static const bench_config configs[] = {{"tiny", 32, 1, 16, 3}, {"small", 64, 2, 8, 3}, {"paper", 128, 2, 4, 4}};

static void run(const bench_config *bc, size_t iters, size_t warmup, size_t reps)
{
    fv_unet_config c = fv_unet_config_cifar10();
    c.num_channels = bc->num_channels;
    c.num_res_blocks = bc->num_res_blocks;
    c.nlevels = bc->nlevels; /* channel_mult (1, 2, 2) or the paper's (1, 2, 2, 2) */
    fv_unet net;
    check(fv_unet_init(&net, &c, SEED), "fv_unet_init");
    size_t B = bc->batch, n = B * c.in_channels * c.height * c.width;
    fv_unet_acts a;
    check(fv_unet_acts_alloc(&a, &net, B), "fv_unet_acts_alloc");
    a.train = 1;
    a.dropout_seed = SEED;
    float *x = xmalloc(n), *u = xmalloc(n), *out = xmalloc(n), *dout = xmalloc(n), *t = xmalloc(B);
    float *grads = xmalloc(net.nparams);
    fv_rng r = fv_rng_make(SEED, 1);
    fill_normal(&r, n, x);
    fill_normal(&r, n, u);
    for (size_t i = 0; i < B; i++)
        t[i] = (float)(i + 0.5) / (float)B;
    printf("meta\t%s.params\t%zu\n", bc->name, net.nparams);
    printf("meta\t%s.batch\t%zu\n", bc->name, B);
    printf("meta\t%s.num_channels\t%zu\n", bc->name, c.num_channels);
    printf("meta\t%s.num_res_blocks\t%zu\n", bc->name, c.num_res_blocks);
    double loss = 0;
    for (size_t k = 0; k < warmup; k++) {
        a.dropout_stream = k;
        fv_unet_forward(&net, B, x, t, out, &a);
        loss = fv_mse_loss(n, out, u, dout);
        fv_unet_backward(&net, B, dout, grads, &a);
    }
    for (size_t rep = 0; rep < reps; rep++) {
        double t0 = now();
        for (size_t k = 0; k < iters; k++) {
            a.dropout_stream = warmup + k; /* a fresh dropout mask per pass, as in training */
            fv_unet_forward(&net, B, x, t, out, &a);
            loss = fv_mse_loss(n, out, u, dout);
            fv_unet_backward(&net, B, dout, grads, &a);
        }
        double t1 = now();
        for (size_t k = 0; k < iters; k++)
            fv_unet_forward(&net, B, x, t, out, &a);
        double t2 = now();
        printf("pass\t%s\t%zu\t%.9g\n", bc->name, rep, (t1 - t0) / (double)iters);
        printf("forward\t%s\t%zu\t%.9g\n", bc->name, rep, (t2 - t1) / (double)iters);
        fprintf(stderr, "bench_unet: %s rep %zu: %.1f images/s (loss %.4g)\n", bc->name, rep,
                (double)(B * iters) / (t1 - t0), loss);
        fflush(stdout);
    }
    /* The blocks one at a time, on the inputs the last forward left in place. */
    double t0 = now();
    for (size_t k = 0; k < iters; k++)
        fv_unet_time_forward(&net, B, t, &a);
    printf("block\t%s\ttime_embed\t%.9g\n", bc->name, (now() - t0) / (double)iters);
    for (size_t blk = 0; blk < net.nblocks; blk++) {
        t0 = now();
        for (size_t k = 0; k < iters; k++)
            fv_unet_block_forward(&net, blk, B, &a);
        printf("block\t%s\t%s\t%.9g\n", bc->name, net.blocks[blk].name, (now() - t0) / (double)iters);
    }
    fv_unet_acts_free(&a);
    fv_unet_free(&net);
    free(x), free(u), free(out), free(dout), free(t), free(grads);
}

int main(int argc, char **argv)
{
    size_t iters = 10, warmup = 2, reps = 3;
    const char *only = NULL;
    int info = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--iters"))
            iters = (size_t)atol(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--warmup"))
            warmup = (size_t)atol(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--reps"))
            reps = (size_t)atol(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--config"))
            only = argv[++i];
        else if (!strcmp(argv[i], "--info"))
            info = 1;
        else {
            fprintf(stderr, "usage: bench_unet [--iters N] [--warmup W] [--reps R] [--config NAME] [--info]\n");
            return 2;
        }
    }
    if (!iters || !reps) {
        fprintf(stderr, "bench_unet: --iters and --reps must be >= 1\n");
        return 2;
    }
    printf("meta\topenblas_config\t%s\n", openblas_get_config());
    printf("meta\topenblas_corename\t%s\n", openblas_get_corename());
    printf("meta\tblas_threads\t%d\n", openblas_get_num_threads());
    printf("meta\tonednn\t%s\n", fv_dnnl_describe());
    printf("meta\tomp_threads\t%d\n", omp_get_max_threads());
    printf("meta\titers\t%zu\n", iters);
    printf("meta\twarmup\t%zu\n", warmup);
    printf("meta\treps\t%zu\n", reps);
    if (info)
        return 0;
    int found = 0;
    for (size_t k = 0; k < sizeof configs / sizeof *configs; k++)
        if (!only || !strcmp(only, configs[k].name)) {
            run(&configs[k], iters, warmup, reps);
            found = 1;
        }
    if (!found) {
        fprintf(stderr, "bench_unet: no configuration '%s' (tiny, small, paper)\n", only);
        return 2;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("rss\t%s\t%ld\n", only ? only : "all", ru.ru_maxrss);
    return 0;
}
