/* bench_unet_cuda.c: training steps per second of flowvar's CUDA U-Net trainer (cuda/unet_cuda.h through
 * cuda/trainer_cuda.cu) at the paper's configuration (fv_unet_config_cifar10: 35,746,307 parameters,
 * dropout 0.1, training mode), its achieved TFLOP/s and its device memory; TSV on stdout. The PyTorch
 * peer is bench/peer_unet_cuda.py (torchcfm's UNetModelWrapper, the same step); bench/run_unet_cuda.sh
 * runs both.
 *
 * Step: one batch (x_t and u standard normal, t uniform) loaded once, so the data path is not timed;
 * the loss and its gradient, then clip 1.0 + Adam (lr 2e-4) + EMA 0.9999, the paper's recipe. Each step
 * waits for its loss and for its gradient norm, as the training loop does.
 * FLOPs: the 4.8 TFLOP per step at batch 128, in proportion to the batch.
 * Memory: the device memory the trainer took (cudaMemGetInfo before it was made and after the timed
 * steps, so cuBLAS's workspaces count), and the part flowvar lays out itself (state + workspace).
 *
 * Usage: bench_unet_cuda [--batch B] [--steps N] [--warmup W] [--reps R] [--tf32]
 * Rows: "meta KEY VALUE", "steps flowvar REP SECONDS_PER_STEP", "memory KEY BYTES". */
#include "bench/bench_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "cuda/unet_cuda.h"
#include "nn/trainer.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROGRAM "bench_unet_cuda"
#define SEED 20251123ULL
#define TFLOP_PER_STEP_AT_128 4.8

int main(int argc, char **argv)
{
    size_t B = 128, steps = 20, warmup = 5, reps = 3;
    int tf32 = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tf32"))
            tf32 = 1;
        else if (i + 1 < argc && !strcmp(argv[i], "--batch"))
            B = strtoul(argv[++i], NULL, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--steps"))
            steps = strtoul(argv[++i], NULL, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--warmup"))
            warmup = strtoul(argv[++i], NULL, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--reps"))
            reps = strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: bench_unet_cuda [--batch B] [--steps N] [--warmup W] [--reps R] [--tf32]\n");
            return 2;
        }
    }
    if (!fv_cuda_available()) {
        fprintf(stderr, "bench_unet_cuda: no CUDA device\n");
        return 1;
    }
    fv_unet_config c = fv_unet_config_cifar10();
    fv_adam_config ac = fv_adam_defaults();
    ac.lr = 2e-4f;
    ac.clip = 1.0f;
    ac.ema_decay = 0.9999f;
    size_t used0 = bench_device_used_bytes(PROGRAM);
    fv_trainer tr;
    bench_check(PROGRAM, fv_trainer_unet_cuda_init(&tr, &c, &ac, SEED, B, tf32), "trainer");
    size_t d = tr.d;
    float *xt = malloc((2 * B * d + B) * sizeof *xt), *u = xt + B * d, *t = u + B * d;
    double *z = malloc((2 * B * d + B) * sizeof *z);
    if (!xt || !z)
        return 1;
    fv_rng r = fv_rng_make(SEED, 1);
    fv_rng_normal(&r, 2 * B * d, z);
    fv_rng_uniform(&r, B, z + 2 * B * d);
    for (size_t i = 0; i < 2 * B * d + B; i++)
        xt[i] = (float)z[i];
    bench_check(PROGRAM, tr.ops->load(&tr, B, xt, t, u), "batch");
    float loss, gnorm;
    for (size_t i = 0; i < warmup; i++) {
        bench_check(PROGRAM, tr.ops->loss_grad(&tr, &loss, NULL), "warm-up step");
        bench_check(PROGRAM, tr.ops->update(&tr, &gnorm), "warm-up update");
    }
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
        printf("meta\tgpu\t%s\n", prop.name);
    printf("meta\tconfig\tpaper cifar10 unet, %zu parameters, batch %zu, %s\n", tr.nparams, B, tf32 ? "tf32" : "fp32");
    double best = 1e30;
    for (size_t rep = 0; rep < reps; rep++) {
        double t0 = bench_now();
        for (size_t i = 0; i < steps; i++) {
            bench_check(PROGRAM, tr.ops->loss_grad(&tr, &loss, NULL), "step");
            bench_check(PROGRAM, tr.ops->update(&tr, &gnorm), "update");
        }
        double s = (bench_now() - t0) / (double)steps;
        best = s < best ? s : best;
        printf("steps\tflowvar\t%zu\t%.9f\n", rep, s);
        fflush(stdout);
    }
    printf("meta\tbest_steps_per_s\t%.4f\n", 1.0 / best);
    printf("meta\tbest_tflops\t%.2f\n", TFLOP_PER_STEP_AT_128 * (double)B / 128.0 / best);
    printf("meta\tlast_loss\t%.6g\n", (double)loss);
    printf("memory\tdevice_taken\t%zu\n", bench_device_used_bytes(PROGRAM) - used0);
    printf("memory\tflowvar_laid_out\t%zu\n", fv_cuda_unet_acts_bytes(&tr.unet, B) + 5 * tr.nparams * sizeof(float));
    fv_trainer_free(&tr);
    free(xt);
    free(z);
    return 0;
}
