/* run.h: a training run as the commands see it: a folder holding checkpoint.safetensors (weights,
 * optimizer state, loss log and the run's own options as "opt.NAME" metadata), loss.tsv and, for a
 * finite training set, pairs.npy. Every command that uses a run rebuilds the same problem, data
 * source and network from those options. */
#ifndef FV_RUN_H
#define FV_RUN_H

#include "cli/cli.h"
#include "data/dataset.h"
#include "data/fit.h"
#include "data/known_map.h"
#include "gmm/mixture.h"
#include "core/safetensors.h"
#include "nn/cfm.h"
#include "nn/monitor.h"

extern const fv_opt fv_train_opts_table[]; /* the options of `flowvar train` that define a run */
extern const fv_opt fv_device_opts[];      /* --device, --precision: where a run computes (not recorded) */

typedef struct {
    fv_args args;        /* the run's options */
    fv_st_file ckpt;     /* the opened checkpoint (its metadata backs args' values) */
    int has_ckpt;
    fv_problem p;
    fv_gmm gmm;
    int has_gmm;
    fv_dataset ds;       /* --data: the image set (the targets) */
    int has_ds;
    int reverse;         /* --direction backward: the images are the sources, N(0, I) the targets */
    fv_known_map map;    /* --map: the known OT map of the image pairs */
    int has_map;
    fv_unet_config uc;   /* --model unet */
    int is_unet;
    double *a, *b;       /* finite training set (npairs x d each), NULL otherwise */
    float *y;            /* --targets: the finite target set (ny x d), NULL otherwise */
    size_t ny;
    size_t npairs;
    fv_cfm_data data;
    fv_trainer tr;
    uint64_t step;
    fv_loss_log log;
    fv_mlp_config mc;
    fv_adam_config ac;
    uint64_t seed;
    size_t batch;
    const char *device;  /* cpu, cuda or auto (NULL: auto) */
    int tf32;
} fv_run;

/* --device and --precision of a command (defaults auto, fp32). */
int fv_run_device(const fv_args *a, const char **device, int *tf32);

/* Build everything the run's options r->args describe: problem, mixture, finite pairs, data source
 * and a fresh trainer. */
int fv_run_setup(fv_run *r);

/* The checkpoint metadata that records the run's options ("opt.NAME" = value), for fv_train_opts. */
int fv_run_meta(const fv_run *r, size_t *n, const char ***keys, const char ***values);
void fv_run_meta_free(size_t n, const char **keys, const char **values);

/* Open an existing run folder: its options from the checkpoint, then fv_run_setup, then the state.
 * `override` (may be NULL) replaces --steps when resuming; the device comes from `cmd`'s --device and
 * --precision (a run written on one device opens on any). */
int fv_run_open(fv_run *r, const char *dir, const char *steps_override, const fv_args *cmd);

void fv_run_free(fv_run *r);

/* FV_EINPUT (size.h) when `rows` rows of the run's interpolant (pairs, x_t, targets, network values:
 * a few numbers per coordinate) can never fit in this machine's memory; `what` names the flag. */
int fv_run_check_rows(const fv_run *r, const char *what, size_t rows);

/* n fresh sources of the run into X (n x d) from stream (seed, 0): draws of its Gaussian source, or
 * for a data -> noise image run uniformly drawn images of its set. */
int fv_run_fresh_sources(fv_run *r, size_t n, uint64_t seed, double *X);

/* T (n x d) = the OT map's image of the sources X0: the Gaussian problem's OT map, or an image run's
 * known map (--map). FV_EINPUT when the run has no such map (mixtures, image sets without --map). */
int fv_run_ot_targets(const fv_run *r, size_t n, const double *X0, double *T);

/* The Gaussian stand-in of an image or --targets run (docs/THEORY.md: "Gaussian Fashion-MNIST"): its images fitted by
 * N(m, S) (eigenvalues floored at rel_floor times the largest, data/fit.h), and the problem between
 * N(0, I) and that fit in the run's direction (N(0, I) -> fit, or fit -> N(0, I) for --direction
 * backward), with the run's noise and the given coupling. `fit` (may be NULL) receives the fit. */
int fv_run_fit_problem(const fv_run *r, double rel_floor, fv_coupling coupling, fv_problem *p, fv_fit *fit);

/* The closed form to compare a run's network with (cmd_gap.c): --field, else the pair field of the run's
 * coupling (Markov for the independent coupling); for an image run the Lemma 1 field (or with --field
 * markov the Markov field) of its Gaussian fit (--fit-floor) into fitp. */
int fv_run_closed_field(const fv_args *a, const fv_run *r, fv_field *f, fv_problem *fitp);

/* The finite set a run draws its targets from (FV_DATA_TARGETS: an image run without --map or --pairs,
 * or --targets): n rows of floats, kept by the run; NULL for any other run. */
const float *fv_run_targets(const fv_run *r, size_t *n);

/* 1 for a run whose data are samples rather than a Gaussian (images, --targets): its closed forms are
 * those of its Gaussian fit (fv_run_fit_problem). */
int fv_run_fitted(const fv_run *r);

/* The run's finite training set as the copy criterion sees it (cmd_copies.c): an image run's images,
 * --targets, or the targets of --pairs / --finite / --map pairs. FV_EINPUT naming why for a run
 * without one (fresh Gaussian or mixture targets; data -> noise, whose samples are noise). */
int fv_run_copy_set(const fv_run *r, fv_copy_set *s);

/* The checkpoint path of a run folder. */
void fv_run_checkpoint_path(const char *dir, char *buf, size_t size);

#endif
