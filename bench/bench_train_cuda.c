/* bench_train_cuda.c: CFM training steps per second of flowvar's CUDA trainer (cuda/trainer_cuda.cu)
 * at the two sizes of the CUDA issue, its achieved TFLOP/s, and cuBLAS's SGEMM rate on the same card
 * in the same process; TSV on stdout for bench/report_train_cuda.py. The PyTorch peer is
 * bench/peer_train_cuda.py (same problem, network, batch and optimizer).
 *
 * Problem (as bench_train.c): source N(0, I), target N(mu, M) with M = fv_random_spd(d, 0.5), mu Gaussian,
 * independent coupling, no noise, t ~ U(0, 1) per row; batches drawn on the device. Network: MLP with
 * SiLU, t as an extra input; Adam lr 1e-3 (torch defaults otherwise). fp32 unless --tf32.
 * Timed: fv_cfm_train from step W to W + N, REPS times (each step waits for its loss, as the loop
 * checks it for NaN, and for its gradient norm).
 * FLOPs of a step: the network's, 3 F - 2 B in0 out0 with F = 2 B sum(in out) (no data generation).
 *
 * Then, once: the same steps phase by phase (draw, loss and gradient, update; the device synchronized
 * after each), and the matrix products of one step replayed alone with cuBLAS (each linear layer's
 * forward, weight-gradient and input-gradient product), also with the first layer's inner dimension
 * padded to a multiple of 4 (its d + 1 columns leave rows unaligned for 16-byte loads).
 *
 * Usage: bench_train_cuda --d D --width W --depth L --batch B [--steps N] [--warmup W] [--reps R] [--tf32]
 * Memory: the device memory the trainer took (cudaMemGetInfo before it was made and after the timed
 * steps, cuBLAS's workspaces included).
 * Rows: "meta KEY VALUE", "steps flowvar REP SECONDS_PER_STEP", "memory device_taken BYTES",
 * "phase NAME SECONDS_PER_STEP", "gemms NAME SECONDS_PER_STEP", "sgemm SIZE TFLOPS". */
#include "bench/bench_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "gaussian/problem.h"
#include "nn/cfm.h"
#include "nn/trainer.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROGRAM "bench_train_cuda"
#define SEED 20251021ULL
#define MAX_REPS 32

static void check_cuda(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "bench_train_cuda: %s failed\n", what);
        exit(1);
    }
}

/* cuBLAS SGEMM S x S x S on random data: the median TFLOP/s of 10 products after 3 warm-ups. */
static double sgemm_rate(size_t S, int tf32)
{
    float *a;
    size_t n = S * S;
    check_cuda(cudaMalloc((void **)&a, 3 * n * sizeof *a) == cudaSuccess, "cudaMalloc");
    float *h = malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    cudaMemcpy(a, h, n * sizeof *h, cudaMemcpyHostToDevice);
    cudaMemcpy(a + n, h, n * sizeof *h, cudaMemcpyHostToDevice);
    free(h);
    cublasHandle_t cb;
    check_cuda(cublasCreate(&cb) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
    cublasSetMathMode(cb, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
    const float one = 1.0f, zero = 0.0f;
    double best[10];
    for (int k = 0; k < 13; k++) {
        cudaDeviceSynchronize();
        double t0 = bench_now();
        cublasSgemm(cb, CUBLAS_OP_N, CUBLAS_OP_N, (int)S, (int)S, (int)S, &one, a, (int)S, a + n, (int)S, &zero,
                    a + 2 * n, (int)S);
        cudaDeviceSynchronize();
        if (k >= 3)
            best[k - 3] = bench_now() - t0;
    }
    for (int i = 1; i < 10; i++) /* insertion sort for the median */
        for (int j = i; j > 0 && best[j] < best[j - 1]; j--) {
            double t = best[j];
            best[j] = best[j - 1];
            best[j - 1] = t;
        }
    cublasDestroy(cb);
    cudaFree(a);
    return 2.0 * (double)S * (double)S * (double)S / (0.5 * (best[4] + best[5])) / 1e12;
}

/* Median seconds of one cublasSgemm (m, n, k, column-major, transposes as given) over 20 runs. */
static double time_gemm(cublasHandle_t cb, float *buf, cublasOperation_t ta, cublasOperation_t tb, size_t m, size_t n,
                        size_t k)
{
    const float one = 1.0f, zero = 0.0f;
    size_t lda = ta == CUBLAS_OP_N ? m : k, ldb = tb == CUBLAS_OP_N ? k : n;
    float *A = buf, *Bm = buf + m * k, *C = Bm + k * n;
    double t[20];
    for (int r = 0; r < 23; r++) {
        cudaDeviceSynchronize();
        double t0 = bench_now();
        cublasSgemm(cb, ta, tb, (int)m, (int)n, (int)k, &one, A, (int)lda, Bm, (int)ldb, &zero, C, (int)m);
        cudaDeviceSynchronize();
        if (r >= 3)
            t[r - 3] = bench_now() - t0;
    }
    for (int i = 1; i < 20; i++)
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
    return 0.5 * (t[9] + t[10]);
}

/* The products of one step (as cuda/mlp_cuda.cu issues them), timed alone; pad4 rounds the first
 * layer's inner dimension up to a multiple of 4. */
static double step_gemms(const fv_mlp *m, size_t B, int tf32, int pad4)
{
    size_t big = 0;
    for (size_t l = 0; l < m->nlayers; l++) {
        size_t in = m->in[l] + 3, s = in * m->out[l] + in * B + m->out[l] * B;
        big = s > big ? s : big;
    }
    float *buf;
    check_cuda(cudaMalloc((void **)&buf, big * sizeof *buf) == cudaSuccess, "cudaMalloc");
    cudaMemset(buf, 0, big * sizeof *buf);
    cublasHandle_t cb;
    check_cuda(cublasCreate(&cb) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
    cublasSetMathMode(cb, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
    double total = 0.0;
    for (size_t l = 0; l < m->nlayers; l++) {
        size_t in = m->in[l], out = m->out[l];
        if (l == 0 && pad4)
            in = (in + 3) / 4 * 4;
        total += time_gemm(cb, buf, CUBLAS_OP_T, CUBLAS_OP_N, out, B, in); /* forward */
        total += time_gemm(cb, buf, CUBLAS_OP_N, CUBLAS_OP_T, in, out, B); /* weight gradient */
        if (l)
            total += time_gemm(cb, buf, CUBLAS_OP_N, CUBLAS_OP_N, in, B, out); /* input gradient */
    }
    cublasDestroy(cb);
    cudaFree(buf);
    return total;
}

int main(int argc, char **argv)
{
    size_t d = 50, width = 256, depth = 3, B = 256, steps = 500, warmup = 50;
    int reps = 3, tf32 = 0;
    for (int i = 1; i < argc; i++) {
        size_t *opt = !strcmp(argv[i], "--d") ? &d : !strcmp(argv[i], "--width") ? &width
                    : !strcmp(argv[i], "--depth") ? &depth : !strcmp(argv[i], "--batch") ? &B
                    : !strcmp(argv[i], "--steps") ? &steps : !strcmp(argv[i], "--warmup") ? &warmup : NULL;
        if (opt && i + 1 < argc)
            *opt = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tf32"))
            tf32 = 1;
        else {
            fprintf(stderr, "usage: bench_train_cuda --d D --width W --depth L --batch B [--steps N] [--warmup W] "
                            "[--reps R] [--tf32]\n");
            return 2;
        }
    }
    if (!fv_cuda_available()) {
        fprintf(stderr, "bench_train_cuda: no CUDA device\n");
        return 2;
    }
    if (steps < 1 || B < 1 || reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "bench_train_cuda: need steps >= 1, batch >= 1, 1 <= reps <= %d\n", MAX_REPS);
        return 2;
    }
    fv_problem p;
    bench_check(PROGRAM, fv_problem_alloc(&p, d), "fv_problem_alloc");
    fv_rng r = fv_rng_make(SEED, 1);
    fv_random_spd(d, 0.5, &r, p.S1);
    fv_rng_normal(&r, d, p.m1);
    p.coupling = FV_COUPLING_INDEPENDENT;
    bench_check(PROGRAM, fv_problem_validate(&p), "fv_problem_validate");
    fv_mlp_config mc = {.d = d, .width = width, .depth = depth, .act = FV_ACT_SILU, .temb = 0};
    fv_adam_config ac = fv_adam_defaults();
    fv_trainer tr;
    size_t used0 = bench_device_used_bytes(PROGRAM);
    bench_check(PROGRAM, fv_trainer_cuda_init(&tr, &mc, &ac, SEED, B, tf32), "fv_trainer_cuda_init");
    fv_cfm_data data;
    bench_check(PROGRAM, fv_cfm_data_init(&data, FV_DATA_PROBLEM, &p, NULL, 0, NULL, NULL, B), "fv_cfm_data_init");

    double F = 0.0;
    for (size_t l = 0; l < tr.net.nlayers; l++)
        F += 2.0 * (double)B * (double)tr.net.in[l] * (double)tr.net.out[l];
    double step_flops = 3.0 * F - 2.0 * (double)B * (double)tr.net.in[0] * (double)tr.net.out[0];
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    int rt, drv;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);
    printf("meta\tgpu\t%s\n", prop.name);
    printf("meta\tcuda_runtime\t%d\n", rt);
    printf("meta\tcuda_driver\t%d\n", drv);
    printf("meta\tprecision\t%s\n", tf32 ? "tf32" : "fp32");
    printf("meta\tshape\td=%zu %zux%zu batch %zu\n", d, depth, width, B);
    printf("meta\tparams\t%zu\n", tr.net.nparams);
    printf("meta\tstep_flops\t%.0f\n", step_flops);
    fflush(stdout);

    fv_train_opts o;
    memset(&o, 0, sizeof o);
    o.batch = B;
    o.seed = SEED;
    o.log_every = 1000000;
    fv_loss_log log = {0};
    uint64_t step = 0;
    o.steps = warmup;
    bench_check(PROGRAM, fv_cfm_train(&tr, &data, &o, &step, &log), "fv_cfm_train (warm-up)");
    for (int rep = 0; rep < reps; rep++) {
        o.steps = step + steps;
        double t0 = bench_now();
        bench_check(PROGRAM, fv_cfm_train(&tr, &data, &o, &step, &log), "fv_cfm_train");
        printf("steps\tflowvar\t%d\t%.9f\n", rep, (bench_now() - t0) / (double)steps);
        fflush(stdout);
    }
    /* phase by phase */
    double ph[3] = {0};
    for (size_t k = 0; k < steps; k++, step++) {
        float loss, gnorm;
        double t0 = bench_now();
        bench_check(PROGRAM, tr.ops->draw(&tr, &data, SEED, step, -1.0, B), "draw");
        cudaDeviceSynchronize();
        double t1 = bench_now();
        bench_check(PROGRAM, tr.ops->loss_grad(&tr, &loss, NULL), "loss_grad");
        double t2 = bench_now();
        bench_check(PROGRAM, tr.ops->update(&tr, &gnorm), "update");
        double t3 = bench_now();
        ph[0] += t1 - t0, ph[1] += t2 - t1, ph[2] += t3 - t2;
    }
    printf("memory\tdevice_taken\t%zu\n", bench_device_used_bytes(PROGRAM) - used0);
    printf("phase\tdraw\t%.9f\nphase\tloss_grad\t%.9f\nphase\tupdate\t%.9f\n", ph[0] / (double)steps,
           ph[1] / (double)steps, ph[2] / (double)steps);
    printf("gemms\tstep\t%.9f\n", step_gemms(&tr.net, B, tf32, 0));
    printf("gemms\tstep_first_padded\t%.9f\n", step_gemms(&tr.net, B, tf32, 1));
    size_t S = 8192;
    printf("sgemm\t%zu\t%.2f\n", S, sgemm_rate(S, tf32));
    fv_loss_log_free(&log);
    fv_cfm_data_free(&data);
    fv_trainer_free(&tr);
    fv_problem_free(&p);
    return 0;
}
