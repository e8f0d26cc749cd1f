/* cmd_train.c: `flowvar train`: train a vector-field network with conditional flow matching. */
#include "cli/cli.h"

#include "cli/run.h"
#include "core/error.h"
#include "core/io.h"
#include "nn/checkpoint.h"
#include "nn/dist.h"
#include "nn/monitor.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const fv_opt train_cmd_opts[] = {
    {"out", "DIR", "run folder (required): checkpoint.safetensors, loss.tsv, pairs.npy (finite sets, not images)"},
    {"resume", NULL, "continue the run in --out from its checkpoint; only --steps may be given again"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "Train an MLP vector field with conditional flow matching: x_t = (1-t) x0 + t x1 + f(t) z, target\n"
    "x1 - x0, loss mean((v - u)^2), Adam. Pairs come from the problem's coupling (fresh draws each step),\n"
    "a Gaussian mixture (--gmm K --dim D), a finite set (--pairs P.npy, --finite N [--shuffle]).\n"
    "Batch k is a function of (--seed, k), so --resume ends bit-identical to an uninterrupted run.\n"
    "Example: flowvar train --target-mean 1,-0.5 --target-cov 2,0.6,0.6,1 --steps 2000 --out run";

/* Only --out, --resume and --steps may be given with --resume: the rest is the run's own. */
static int check_resume_args(const fv_args *a)
{
    for (size_t i = 0; i < a->nopts; i++) {
        const char *n = a->opts[i]->name;
        if (a->values[i] && strcmp(n, "out") && strcmp(n, "resume") && strcmp(n, "steps") && strcmp(n, "device") &&
            strcmp(n, "precision"))
            return fv_error(FV_EINPUT, "--%s cannot be changed on --resume: the run keeps its own options", n);
    }
    return FV_OK;
}

/* The options train reads after the set-up (steps, checkpoints, log), checked before anything is written. */
static int check_train_numbers(const fv_args *a)
{
    size_t v;
    int st;
    if ((st = fv_args_size(a, "steps", 2000, 1, &v)) || (st = fv_args_size(a, "checkpoint-every", 500, 0, &v)))
        return st;
    return fv_args_size(a, "log-every", 10, 1, &v);
}

/* pairs.npy of a finite training set; not for image runs, whose pairs the options rebuild (--map) or
 * name (--pairs) and which would be copies of up to gigabytes. */
static int write_pairs(const fv_run *r, const char *dir)
{
    if (!r->a || r->has_ds)
        return FV_OK;
    size_t d = r->p.d, shape[3] = {r->npairs, 2, d};
    double *P = malloc(r->npairs * 2 * d * sizeof *P);
    if (!P)
        return fv_error(FV_ENOMEM, "out of memory");
    for (size_t i = 0; i < r->npairs; i++) {
        memcpy(P + 2 * i * d, r->a + i * d, d * sizeof *P);
        memcpy(P + (2 * i + 1) * d, r->b + i * d, d * sizeof *P);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/pairs.npy", dir);
    int st = fv_npy_write_f64(path, P, 3, shape);
    free(P);
    return st;
}

static int write_loss(const fv_loss_log *log, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/loss.tsv", dir);
    static const char *const names[] = {"step", "loss", "grad_norm"};
    return fv_cli_write_tsv(path, 3, names, log->n, log->rows);
}

/* --monitor-every K: the monitor of the run (its finite target set with fresh Gaussian sources: an image
 * run noise -> data, or --targets), reading the rows of DIR/monitor.tsv up to the step reached on
 * --resume. mo->every stays 0 without the flag. */
static int start_monitor(fv_run *r, const char *dir, char *path, size_t size, fv_monitor *mo)
{
    size_t every, m;
    int st;
    if ((st = fv_args_size(&r->args, "monitor-every", 0, 0, &every)) || (st = fv_args_size(&r->args, "monitor-n", 32, 2, &m)))
        return st;
    if (!every)
        return fv_cli_unused(&r->args, (const char *const[]){"monitor-n", NULL}, "without --monitor-every K");
    size_t n;
    const float *Y = fv_run_targets(r, &n);
    if (r->reverse || !Y)
        return fv_error(FV_EINPUT, "--monitor-every needs a finite target set drawn with fresh N(0, I) sources (--data "
                                   "noise -> data without --map or --pairs, or --targets): the memorizing field v* is "
                                   "that of section 7");
    if (r->is_unet && strcmp(r->tr.ops->name, "cpu"))
        return fv_error(FV_EINPUT, "--monitor-every on a U-Net needs --device cpu: the monitor's per-sample gradient "
                                   "variance of a U-Net runs on the CPU only");
    snprintf(path, size, "%s/monitor.tsv", dir);
    fv_monitor_free(mo);
    return fv_monitor_init(mo, &r->tr, &r->data, n, Y, every, m, r->seed, 1, path, r->step);
}

/* A fresh run: refuse to overwrite an existing one, set everything up (every option validated), and
 * only then create the folder, so that a refused run leaves nothing behind. */
static int new_run(fv_run *r, const fv_args *a, const char *dir, char *mpath, size_t msize, fv_monitor *mo)
{
    char path[4096];
    struct stat sb;
    fv_run_checkpoint_path(dir, path, sizeof path);
    if (stat(path, &sb) == 0)
        return fv_error(FV_EINPUT, "%s already holds a run: use --resume to continue it, or another --out", dir);
    const char *coupling = fv_args_get(a, "coupling");
    int st = coupling && !strcmp(coupling, "rotation") ? FV_OK
                                                       : fv_cli_unused(a, fv_rotation_flags, "without --coupling rotation");
    memset(r, 0, sizeof *r);
    r->args = *a;
    if (st || (st = fv_run_device(a, &r->device, &r->tf32)) || (st = fv_run_setup(r)) ||
        (st = check_train_numbers(&r->args)) || (st = start_monitor(r, dir, mpath, msize, mo)))
        return st;
    return FV_OK;
}

static int make_folder(const fv_run *r, const char *dir)
{
    if (fv_mkdirs(dir) != 0 && errno != EEXIST)
        return fv_error(FV_EIO, "%s: cannot create the run folder: %s", dir, strerror(errno));
    return write_pairs(r, dir);
}

/* The run set up on every rank of a data-parallel job (or this process alone): the options, the
 * batch's split into shards, then every rank agreeing before rank 0 alone creates the folder. */
static int set_up(fv_run *r, const fv_args *a, const char *dir, const fv_dist *g, int resume, char *mpath,
                  size_t msize, fv_monitor *mo)
{
    size_t rows, row0;
    int st;
    if (resume) {
        if (!(st = check_resume_args(a)) && !(st = fv_run_open(r, dir, fv_args_get(a, "steps"), a))) {
            if (!fv_checkpoint_has_optimizer(&r->ckpt) && g->rank == 0)
                fprintf(stderr, "train: %s holds no optimizer state (an imported run): Adam starts from zero moments\n", dir);
            st = start_monitor(r, dir, mpath, msize, mo);
        }
    } else {
        st = new_run(r, a, dir, mpath, msize, mo);
    }
    /* The monitor drives the trainer between steps (per-sample gradients, samples) on one process's
     * buffers; under several ranks those hold a shard, so it is one process's tool. */
    if (!st && mo->every && g->size > 1)
        st = fv_error(FV_EINPUT, "--monitor-every runs in a single process, not under mpirun with %d ranks: train "
                                 "without it, or monitor the run's checkpoints with gap --field empirical and copies",
                      g->size);
    if (!st)
        st = fv_dist_shard(g, r->batch, &rows, &row0);
    if ((st = fv_dist_agree(g, st)) || resume)
        return st;
    return fv_dist_agree(g, g->rank == 0 ? make_folder(r, dir) : FV_OK);
}

int fv_cmd_train(int argc, char **argv)
{
    fv_args a;
    fv_run r = {0};
    fv_dist dist = {.size = 1};
    const char **keys = NULL, **values = NULL;
    size_t nmeta = 0;
    fv_monitor mo = {0};
    char mpath[4096];
    int st = fv_args_parse(&a, "train", usage, argc, argv, FV_PROBLEM_GROUPS, fv_train_opts_table, fv_device_opts,
                           train_cmd_opts, NULL);
    if (st < 0)
        return 0;
    const char *dir = fv_args_get(&a, "out");
    if (!st && !dir)
        st = fv_error(FV_EINPUT, "--out DIR is required");
    if (st || (st = fv_dist_init(&dist)) ||
        (st = set_up(&r, &a, dir, &dist, fv_args_flag(&a, "resume"), mpath, sizeof mpath, &mo)))
        goto done;
    char ckpt[4096];
    fv_run_checkpoint_path(dir, ckpt, sizeof ckpt);
    fv_train_opts o = {0};
    o.batch = r.batch;
    o.seed = r.seed;
    o.checkpoint = dist.rank == 0 ? ckpt : NULL; /* the other ranks hold the same state */
    o.dist = dist.joined ? &dist : NULL;
    if (!(st = fv_args_size(&r.args, "steps", 2000, 1, &o.steps)) &&
        !(st = fv_args_size(&r.args, "checkpoint-every", 500, 0, &o.checkpoint_every)) &&
        !(st = fv_args_size(&r.args, "log-every", 10, 1, &o.log_every)) &&
        !(st = fv_run_meta(&r, &nmeta, &keys, &values)) && r.step >= o.steps)
        st = fv_error(FV_EINPUT, "the run is already at step %llu; ask for more --steps to continue it",
                      (unsigned long long)r.step);
    if ((st = fv_dist_agree(&dist, st))) /* no rank starts training without the others */
        goto done;
    o.nmeta = nmeta;
    o.meta_keys = keys;
    o.meta_values = values;
    if (mo.every) {
        o.after_step = fv_monitor_after_step;
        o.after_step_ctx = &mo;
    }
    if ((st = fv_cfm_train(&r.tr, &r.data, &o, &r.step, &r.log)) ||
        (st = fv_dist_agree(&dist, dist.rank == 0 ? write_loss(&r.log, dir) : FV_OK)) || dist.rank != 0)
        goto done;
    printf("train: %llu steps, last logged loss %.6g, %zu parameters; checkpoint %s\n", (unsigned long long)r.step,
           r.log.n ? r.log.rows[3 * (r.log.n - 1) + 1] : NAN, r.tr.nparams, ckpt);
done:
    fv_monitor_free(&mo);
    fv_run_meta_free(nmeta, keys, values);
    fv_run_free(&r);
    fv_dist_free(&dist);
    return st ? fv_cli_fail(st) : 0;
}
