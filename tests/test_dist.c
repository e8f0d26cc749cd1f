/* test_dist.c: data-parallel training (src/nn/dist.c). Suite dist_shard, the library alone: a rank's
 * shard of a batch is those rows of the whole batch for every data source, and the U-Net's shard
 * gradients (dropout masks included) average to the batch gradient. Suite dist, the binary under
 * `mpirun --oversubscribe` (skipped, with a SKIP line, where flowvar was built without MPI or mpirun
 * is missing): 2 ranks against 1 process, resume across rank counts, a batch the ranks cannot split,
 * and a rank killed mid-run. Suite cuda_dist, on a GPU only: one rank through NCCL against the plain
 * CUDA trainer. The binary is $FLOWVAR (set by `make test`), else build/flowvar. */
#include <criterion/criterion.h>

#include "core/error.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "gmm/mixture.h"
#include "nn/cfm.h"
#include "nn/checkpoint.h"
#include "nn/dist.h"

#include "helpers.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- shards in the library ---------------------------------------------------------------------- */

#define SB 7 /* a batch of 7 rows of d = 3: shards start in the middle of a Philox block of normals */
#define SD 3

static const size_t shard_edges[] = {0, 3, 4, 7};

/* Every shard of the batch drawn alone equals those rows of the whole batch, bit for bit. */
static void expect_shards_equal_batch(fv_cfm_data *D, const char *what)
{
    double x0[SB * SD], x1[SB * SD], y0[SB * SD], y1[SB * SD];
    cr_assert_eq(fv_cfm_pairs(D, 11, 5, SB, x0, x1), FV_OK, "%s: whole batch: %s", what, fv_last_error());
    for (size_t s = 0; s + 1 < sizeof shard_edges / sizeof *shard_edges; s++) {
        size_t r0 = shard_edges[s], n = shard_edges[s + 1] - r0;
        cr_assert_eq(fv_cfm_pairs_rows(D, 11, 5, SB, r0, n, y0, y1), FV_OK, "%s: shard: %s", what, fv_last_error());
        cr_assert_eq(memcmp(y0, x0 + r0 * SD, n * SD * sizeof *y0), 0, "%s: x0 of rows %zu..%zu", what, r0, r0 + n);
        cr_assert_eq(memcmp(y1, x1 + r0 * SD, n * SD * sizeof *y1), 0, "%s: x1 of rows %zu..%zu", what, r0, r0 + n);
    }
}

/* A 3-dimensional problem: target N((1, -0.5, 2), S1), source standard or N(m0, S0). */
static void shard_problem(fv_problem *p, int std_source, fv_coupling c)
{
    cr_assert_eq(fv_problem_alloc(p, SD), FV_OK);
    fv_rng r = fv_rng_make(3, 3);
    fv_random_spd(SD, 0.5, &r, p->S1);
    p->m1[0] = 1, p->m1[1] = -0.5, p->m1[2] = 2;
    if (!std_source) {
        fv_random_spd(SD, 0.5, &r, p->S0);
        p->m0[0] = -1;
    }
    th_problem_finish(p, c, 30.0, 0.1, FV_SCHEDULE_BRIDGE, 1);
}

Test(dist_shard, shards_of_every_data_source_are_rows_of_the_batch)
{
    fv_problem p;
    fv_cfm_data D;
    static const struct {
        int std_source;
        fv_coupling c;
        const char *what;
    } problems[] = {{1, FV_COUPLING_OT, "OT coupling, standard source"},
                    {0, FV_COUPLING_INDEPENDENT, "independent coupling, Gaussian source"},
                    {0, FV_COUPLING_ROTATION, "rotational coupling, Gaussian source"}};
    for (size_t k = 0; k < sizeof problems / sizeof *problems; k++) {
        shard_problem(&p, problems[k].std_source, problems[k].c);
        cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PROBLEM, &p, NULL, 0, NULL, NULL, SB), FV_OK, "%s", fv_last_error());
        expect_shards_equal_batch(&D, problems[k].what);
        fv_cfm_data_free(&D);
        fv_problem_free(&p);
    }
    shard_problem(&p, 1, FV_COUPLING_INDEPENDENT);
    fv_gmm g;
    cr_assert_eq(fv_gmm_random(&g, 3, SD, 2.0, 0.3, 9), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_GMM, &p, &g, 0, NULL, NULL, SB), FV_OK, "%s", fv_last_error());
    expect_shards_equal_batch(&D, "mixture");
    fv_cfm_data_free(&D);
    double a[5 * SD], b[5 * SD];
    float rows[5 * SD];
    for (size_t i = 0; i < 5 * SD; i++) {
        a[i] = (double)i;
        b[i] = 100.0 + (double)i;
        rows[i] = (float)i / 8.0f;
    }
    cr_assert_eq(fv_cfm_data_init(&D, FV_DATA_PAIRS, &p, NULL, 5, a, b, SB), FV_OK, "%s", fv_last_error());
    expect_shards_equal_batch(&D, "finite pairs");
    fv_cfm_data_free(&D);
    for (int reverse = 0; reverse < 2; reverse++) {
        cr_assert_eq(fv_cfm_data_targets(&D, &p, 5, rows, SB), FV_OK, "%s", fv_last_error());
        D.reverse = reverse;
        expect_shards_equal_batch(&D, reverse ? "target set, data -> noise" : "target set");
        fv_cfm_data_free(&D);
    }
    fv_gmm_free(&g);
    fv_problem_free(&p);
}

Test(dist_shard, interpolant_rows_are_rows_of_the_batch)
{
    fv_problem p;
    shard_problem(&p, 1, FV_COUPLING_OT);
    double x0[SB * SD], x1[SB * SD];
    float xt[SB * SD], t[SB], u[SB * SD], yt[SB * SD], s[SB], v[SB * SD];
    for (size_t i = 0; i < SB * SD; i++)
        x0[i] = sin((double)i), x1[i] = cos((double)i);
    for (double t_fixed = -1.0; t_fixed < 1.0; t_fixed += 1.3) { /* t ~ U(0, 1), then t = 0.3 */
        fv_cfm_interpolate(&p, 4, 2, t_fixed, SB, SD, x0, x1, xt, t, u);
        for (size_t k = 0; k + 1 < sizeof shard_edges / sizeof *shard_edges; k++) {
            size_t r0 = shard_edges[k], n = shard_edges[k + 1] - r0;
            fv_cfm_interpolate_rows(&p, 4, 2, t_fixed, r0, n, SD, x0 + r0 * SD, x1 + r0 * SD, yt, s, v);
            cr_assert_eq(memcmp(yt, xt + r0 * SD, n * SD * sizeof *yt), 0, "x_t of rows %zu.. (t_fixed %g)", r0, t_fixed);
            cr_assert_eq(memcmp(s, t + r0, n * sizeof *s), 0, "t of rows %zu.. (t_fixed %g)", r0, t_fixed);
            cr_assert_eq(memcmp(v, u + r0 * SD, n * SD * sizeof *v), 0, "u of rows %zu.. (t_fixed %g)", r0, t_fixed);
        }
    }
    fv_problem_free(&p);
}

/* The U-Net with dropout: the shards' gradients and losses (each a mean over its rows) average to
 * the whole batch's, which holds only if each shard draws its rows' dropout masks (the batch draws
 * them by image, so a shard starts at its first row's). */
Test(dist_shard, unet_shard_gradients_average_to_the_batch_gradient, .timeout = 120)
{
    enum { SIDE = 8, B = 4, NIMG = 6 };
    fv_problem p;
    cr_assert_eq(fv_problem_alloc(&p, SIDE * SIDE), FV_OK);
    p.coupling = FV_COUPLING_INDEPENDENT;
    p.sigma = 0.05;
    static float images[NIMG * SIDE * SIDE];
    for (size_t i = 0; i < NIMG * SIDE * SIDE; i++)
        images[i] = (float)sin(0.37 * (double)i);
    fv_unet_config c = {0};
    c.in_channels = 1;
    c.height = c.width = SIDE;
    c.num_channels = 32;
    c.num_res_blocks = 1;
    c.nlevels = 2;
    c.channel_mult[0] = 1;
    c.channel_mult[1] = 2;
    c.num_heads = 2;
    c.dropout = 0.3f;
    fv_adam_config ac = fv_adam_defaults();
    fv_trainer tr;
    fv_cfm_data D;
    cr_assert_eq(fv_cfm_data_targets(&D, &p, NIMG, images, B), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_trainer_unet_init(&tr, &c, &ac, 7, B), FV_OK, "%s", fv_last_error());
    /* off the initialization, whose zero output convolution stops every gradient but its own (the
     * masks would not matter) */
    fv_rng r = fv_rng_make(8, 8);
    for (size_t k = 0; k < tr.nparams; k++) {
        double z;
        fv_rng_normal(&r, 1, &z);
        tr.params[k] += 0.05f * (float)z;
    }
    float loss, part, *whole = malloc(tr.nparams * sizeof *whole), *avg = calloc(tr.nparams, sizeof *avg);
    cr_assert(whole && avg);
    cr_assert_eq(tr.ops->draw(&tr, &D, 3, 9, -1.0, B), FV_OK, "%s", fv_last_error());
    cr_assert_eq(tr.ops->loss_grad(&tr, &loss, NULL), FV_OK, "%s", fv_last_error());
    memcpy(whole, tr.grads, tr.nparams * sizeof *whole);
    double mean_loss = 0.0;
    tr.shard_batch = B;
    for (tr.shard_row0 = 0; tr.shard_row0 < B; tr.shard_row0 += B / 2) {
        cr_assert_eq(tr.ops->draw(&tr, &D, 3, 9, -1.0, B / 2), FV_OK, "%s", fv_last_error());
        cr_assert_eq(tr.ops->loss_grad(&tr, &part, NULL), FV_OK, "%s", fv_last_error());
        for (size_t k = 0; k < tr.nparams; k++)
            avg[k] += 0.5f * tr.grads[k];
        mean_loss += 0.5 * part;
    }
    double err = th_max_rel(tr.nparams, avg, whole);
    cr_expect(err <= 1e-5, "shard gradients average to the batch gradient: max rel err %.3g", err);
    cr_expect(fabs(mean_loss - loss) <= 1e-6 * loss, "shard losses average to the batch loss: %.9g vs %.9g", mean_loss,
              (double)loss);
    free(whole);
    free(avg);
    fv_trainer_free(&tr);
    fv_cfm_data_free(&D);
    fv_problem_free(&p);
}

Test(dist_shard, a_batch_the_ranks_cannot_split_is_refused)
{
    fv_dist g = {.rank = 1, .size = 3};
    size_t rows, row0;
    cr_assert_eq(fv_dist_shard(&g, 12, &rows, &row0), FV_OK, "12 rows over 3 ranks");
    cr_assert(rows == 4 && row0 == 4, "rank 1 of 3 takes rows 4..8 of 12 (got %zu from %zu)", rows, row0);
    cr_assert_eq(fv_dist_shard(&g, 13, &rows, &row0), FV_EINPUT, "13 rows over 3 ranks are refused");
    cr_assert(strstr(fv_last_error(), "13") && strstr(fv_last_error(), "3"), "the message names both: %s",
              fv_last_error());
}

/* ---- the binary under mpirun --------------------------------------------------------------------- */

static char dir[] = "/tmp/fv_dist_XXXXXX";
static char out_path[256], err_path[256];
static char err_text[8192];

static void setup(void)
{
    cr_assert(mkdtemp(dir) != NULL);
    snprintf(out_path, sizeof out_path, "%s/stdout", dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    if (geteuid() == 0) { /* Open MPI refuses root unless told twice */
        setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    }
}

static void teardown(void) { th_remove_tree(dir); }

TestSuite(dist, .init = setup, .fini = teardown);

static const char *binary(void) { return getenv("FLOWVAR") ? getenv("FLOWVAR") : "build/flowvar"; }

/* Skip, with a line saying so, where this build has no MPI or mpirun is missing. */
static void need_mpi(void)
{
#ifndef FV_HAVE_MPI
    fprintf(stderr, "SKIP dist: flowvar was built without MPI (install libopenmpi-dev openmpi-bin, rebuild)\n");
    cr_skip_test("built without MPI");
#else
    if (system("mpirun --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "SKIP dist: no mpirun on PATH (install openmpi-bin)\n");
        cr_skip_test("no mpirun");
    }
#endif
}

/* `flowvar ARGS` on `ranks` processes under mpirun (ranks 0: alone, no launcher); the exit status,
 * stderr in err_text. */
static int run_ranks(int ranks, const char *args)
{
    char cmd[2048];
    if (ranks)
        snprintf(cmd, sizeof cmd, "mpirun --oversubscribe -np %d %s %s >%s 2>%s", ranks, binary(), args, out_path,
                 err_path);
    else
        snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s", binary(), args, out_path, err_path);
    int st = system(cmd);
    th_slurp_text(err_path, err_text, sizeof err_text);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int train(int ranks, const char *run, const char *opts)
{
    char args[1024];
    snprintf(args, sizeof args, "train %s --out %s/%s", opts, dir, run);
    return run_ranks(ranks, args);
}

static int resume(int ranks, const char *run, int steps)
{
    char args[512];
    snprintf(args, sizeof args, "train --out %s/%s --resume --steps %d", dir, run, steps);
    return run_ranks(ranks, args);
}

/* The loss logs of runs a and b agree to `tol` relative, number by number (step, loss, gradient norm). */
static void expect_logs_agree(const char *a, const char *b, double tol)
{
    char pa[512], pb[512], ta[8192], tb[8192];
    snprintf(pa, sizeof pa, "%s/%s/loss.tsv", dir, a);
    snprintf(pb, sizeof pb, "%s/%s/loss.tsv", dir, b);
    th_slurp_text(pa, ta, sizeof ta);
    th_slurp_text(pb, tb, sizeof tb);
    char *ea = strchr(ta, '\n'), *eb = strchr(tb, '\n'); /* past the header */
    cr_assert(ea && eb, "both loss logs have a header");
    size_t count = 0;
    for (;;) {
        char *na, *nb;
        double va = strtod(ea, &na), vb = strtod(eb, &nb);
        if (na == ea || nb == eb)
            break;
        cr_expect(fabs(va - vb) <= tol * fabs(vb), "%s vs %s: loss log number %zu: %.10g vs %.10g", a, b, count, va,
                  vb);
        ea = na, eb = nb, count++;
    }
    cr_assert(count > 0 && *ea == *eb, "%s and %s log the same rows (%zu numbers compared)", a, b, count);
}

/* Runs a and b agree to `tol` relative: their loss logs, and every float tensor of their checkpoints
 * (weights, EMA, Adam moments; the max error over the tensor's scale). */
static void expect_runs_agree(const char *a, const char *b, double tol)
{
    char pa[512], pb[512];
    fv_st_file fa, fb;
    snprintf(pa, sizeof pa, "%s/%s/checkpoint.safetensors", dir, a);
    snprintf(pb, sizeof pb, "%s/%s/checkpoint.safetensors", dir, b);
    cr_assert_eq(fv_st_read(pa, &fa), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fv_st_read(pb, &fb), FV_OK, "%s", fv_last_error());
    cr_assert_eq(fa.ntensors, fb.ntensors, "%s and %s hold as many tensors", a, b);
    cr_assert_str_eq(fv_st_meta(&fa, "step"), fv_st_meta(&fb, "step"), "%s and %s end at the same step", a, b);
    for (size_t i = 0; i < fa.ntensors; i++) {
        const char *name = fa.tensors[i].name;
        if (fa.tensors[i].dtype != FV_ST_F32)
            continue;
        size_t n, m;
        float *x = th_st_tensor(&fa, name, &n), *y = th_st_tensor(&fb, name, &m);
        cr_assert_eq(n, m, "tensor %s has one size in both", name);
        double err = th_max_rel(n, x, y);
        cr_expect(err <= tol, "%s vs %s: tensor %s differs by %.3g relative (bound %.1g)", a, b, name, err, tol);
        free(x);
        free(y);
    }
    fv_st_free(&fa);
    fv_st_free(&fb);
    expect_logs_agree(a, b, tol);
}

/* The MLP runs of this suite: the reference problem, a small network, the global batch 64. */
#define MLP "--target-mean 1,-0.5 --target-cov 2,0.6,0.6,1 --width 32 --depth 2 --batch 64 --log-every 5"

/* Two ranks sum the gradients of their halves of each batch where one process sums all rows at once:
 * the only difference is the order of that sum (one float addition of two partial sums per value, and
 * the halving), so after 100 Adam steps the runs agree to float rounding, 1e-6 relative. */
Test(dist, two_ranks_train_as_one_process_with_the_same_batch, .timeout = 120)
{
    need_mpi();
    cr_assert_eq(train(0, "one", MLP " --steps 100 --checkpoint-every 40"), 0, "one process: %s", err_text);
    cr_assert_eq(train(2, "two", MLP " --steps 100 --checkpoint-every 40"), 0, "two ranks: %s", err_text);
    expect_runs_agree("two", "one", 1e-6);
    /* every data source: a mixture and a finite set, with clipping and an EMA */
    cr_assert_eq(train(0, "gmm1", "--gmm 3 --dim 3 --width 32 --batch 32 --steps 30 --clip 1 --ema 0.9"), 0, "%s",
                 err_text);
    cr_assert_eq(train(2, "gmm2", "--gmm 3 --dim 3 --width 32 --batch 32 --steps 30 --clip 1 --ema 0.9"), 0, "%s",
                 err_text);
    expect_runs_agree("gmm2", "gmm1", 1e-6);
    cr_assert_eq(train(0, "fin1", MLP " --finite 16 --steps 30 --coupling independent"), 0, "%s", err_text);
    cr_assert_eq(train(2, "fin2", MLP " --finite 16 --steps 30 --coupling independent"), 0, "%s", err_text);
    expect_runs_agree("fin2", "fin1", 1e-6);
}

/* The checkpoint holds nothing of the ranks: a run started on 2 resumes on 1 and the other way round,
 * and both end where one process running throughout does. */
Test(dist, runs_resume_on_another_rank_count, .timeout = 120)
{
    need_mpi();
    cr_assert_eq(train(0, "ref", MLP " --steps 100 --checkpoint-every 20"), 0, "%s", err_text);
    cr_assert_eq(train(2, "two_one", MLP " --steps 60 --checkpoint-every 20"), 0, "%s", err_text);
    cr_assert_eq(resume(0, "two_one", 100), 0, "2 ranks -> 1 process: %s", err_text);
    expect_runs_agree("two_one", "ref", 1e-6);
    cr_assert_eq(train(0, "one_two", MLP " --steps 60 --checkpoint-every 20"), 0, "%s", err_text);
    cr_assert_eq(resume(2, "one_two", 100), 0, "1 process -> 2 ranks: %s", err_text);
    expect_runs_agree("one_two", "ref", 1e-6);
}

Test(dist, a_batch_the_ranks_cannot_split_is_bad_input, .timeout = 60)
{
    need_mpi();
    cr_assert_eq(train(2, "odd", "--target-mean 1,-0.5 --batch 63 --steps 5"), 2, "exit status 2: %s", err_text);
    cr_assert(strstr(err_text, "flowvar: error: --batch 63 does not split into 2 equal shards"), "%s", err_text);
    char path[512];
    snprintf(path, sizeof path, "%s/odd", dir);
    struct stat sb;
    cr_assert_neq(stat(path, &sb), 0, "no run folder after the refusal");
}

/* The process of `rank` among mpirun `launcher`'s children (its environment names the rank), or 0. */
static pid_t rank_pid(pid_t launcher, int rank)
{
    char want[64], path[64], env[16384];
    int child;
    snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)launcher, (int)launcher);
    FILE *kids = fopen(path, "r");
    cr_assert(kids != NULL, "mpirun's children in %s", path);
    while (fscanf(kids, "%d", &child) == 1) {
        snprintf(path, sizeof path, "/proc/%d/environ", child);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(env, 1, sizeof env - 1, f);
        fclose(f);
        env[n] = '\0';
        for (size_t i = 0; i < n; i += strlen(env + i) + 1)
            if (strcmp(env + i, want) == 0) {
                fclose(kids);
                return (pid_t)child;
            }
    }
    fclose(kids);
    return 0;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* SIGKILL one rank of a run after its first checkpoint: the job ends within seconds with a nonzero
 * status (no rank waits forever for the dead one), and the checkpoint on disk loads and resumes. */
Test(dist, a_killed_rank_ends_the_job_and_leaves_a_whole_checkpoint, .timeout = 120)
{
    need_mpi();
    char cmd[1024], ck[512];
    snprintf(ck, sizeof ck, "%s/killed/checkpoint.safetensors", dir);
    snprintf(cmd, sizeof cmd, "exec mpirun --oversubscribe -np 2 %s train " MLP " --steps 10000000 --checkpoint-every 5 "
             "--out %s/killed >/dev/null 2>%s", binary(), dir, err_path);
    pid_t job = fork();
    if (job == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    cr_assert(job > 0, "fork");
    struct stat sb;
    int status, reaped = 0;
    double t0 = seconds();
    while (stat(ck, &sb) != 0 && !(reaped = waitpid(job, &status, WNOHANG)) && seconds() - t0 < 60)
        usleep(10000);
    cr_assert(!reaped, "the run ended before it could be killed");
    pid_t victim = rank_pid(job, 1);
    cr_assert(victim > 0, "rank 1's process among mpirun's children");
    cr_assert_eq(kill(victim, SIGKILL), 0, "kill rank 1");
    double t1 = seconds();
    while (!(reaped = waitpid(job, &status, WNOHANG)) && seconds() - t1 < 30)
        usleep(10000);
    if (!reaped) {
        kill(job, SIGKILL);
        waitpid(job, &status, 0);
    }
    double took = seconds() - t1;
    fprintf(stderr, "dist kill test: the job ended %.2f s after rank 1 was killed\n", took);
    cr_assert(reaped, "the job still ran 30 s after a rank died");
    cr_expect(took < 10.0, "the job ended within 10 s of the kill (%.1f s)", took);
    cr_expect(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "the job's status is a failure");
    fv_st_file f;
    cr_assert_eq(fv_st_read(ck, &f), FV_OK, "the checkpoint after the kill reads: %s", fv_last_error());
    uint64_t step;
    cr_assert_eq(fv_checkpoint_step_meta(&f, ck, "step", &step), FV_OK, "%s", fv_last_error());
    fv_st_free(&f);
    cr_expect(step > 0 && step % 5 == 0, "the checkpoint is one of the periodic ones (step %llu)",
              (unsigned long long)step);
    cr_assert_eq(resume(0, "killed", (int)step + 5), 0, "the killed run resumes: %s", err_text);
}

/* The U-Net (dropout on) on 2 ranks: each step's loss and gradient norm equal to one process's. Its
 * weights are not compared: the output layers start at zero, so some gradient entries are zero but
 * for rounding, and Adam's normalized update m / sqrt(v) turns their rounding differences into whole
 * steps of lr either way. The gradient norm is of the summed gradient: a shard with wrong rows or
 * wrong dropout masks shows there at once (dist_shard compares the gradient itself). */
Test(dist, unet_on_two_ranks_trains_as_one_process, .timeout = 300)
{
    need_mpi();
    const char *net = "--model unet --data fashion-mnist --images 16 --channels 32 --channel-mult 1,2 --batch 4 "
                      "--dropout 0.1 --steps 4 --log-every 1";
    cr_assert_eq(train(0, "u1", net), 0, "one process: %s", err_text);
    cr_assert_eq(train(2, "u2", net), 0, "two ranks: %s", err_text);
    expect_logs_agree("u2", "u1", 1e-5);
}

/* GPU (scripts/gpu-check runs the cuda* suites): one rank under mpirun trains through the NCCL
 * reduction, the same code path as many, and must end where the plain CUDA trainer does (one rank's
 * average is its own gradient; the tolerance only allows for cuBLAS choosing other kernels). */
TestSuite(cuda_dist, .init = setup, .fini = teardown);

Test(cuda_dist, one_rank_through_nccl_trains_as_the_plain_cuda_trainer, .timeout = 300)
{
    th_need_gpu();
    need_mpi();
    cr_assert_eq(train(0, "plain", MLP " --steps 100 --device cuda"), 0, "plain CUDA run: %s", err_text);
    cr_assert_eq(train(1, "nccl", MLP " --steps 100 --device cuda"), 0, "one rank under mpirun: %s", err_text);
    expect_runs_agree("nccl", "plain", 1e-6);
}
