/* cfm.h: conditional flow matching, written once for every backend: where training pairs come from
 * (a Gaussian problem and its coupling, a Gaussian mixture, or a finite set of pairs), the noisy
 * interpolant and its regression target (docs/THEORY.md section 1, torchcfm's conventions of section 6),
 * and the training loop with checkpoints, resume and a progress bar. */
#ifndef FV_CFM_H
#define FV_CFM_H

#include "core/ode.h"
#include "gaussian/field.h"
#include "gaussian/problem.h"
#include "gmm/mixture.h"
#include "nn/trainer.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { FV_DATA_PROBLEM = 0, FV_DATA_GMM, FV_DATA_PAIRS, FV_DATA_TARGETS } fv_data_kind;

/* Where a batch's (x0, x1) come from. PROBLEM: x0 from the problem's source, x1 by its coupling (the
 * OT or rotational map, or an independent target draw). GMM: x0 from the problem's source, x1 an
 * independent mixture draw. PAIRS: a uniformly drawn (with replacement) pair of a finite set.
 * TARGETS: x0 from the problem's source, x1 a uniformly drawn row of a finite set of targets (an
 * image set: noise -> data with the independent coupling; with `reverse` the other way round,
 * data -> noise, from the same draws). The noise (sigma, schedule, derivative
 * term) is the problem's in every case. */
typedef struct fv_cfm_data {
    uint64_t id;            /* unique per fv_cfm_data_init: a device backend caches its uploads by it */
    fv_data_kind kind;
    size_t d;
    const fv_problem *p;
    fv_field map;           /* PROBLEM with OT or rotational coupling */
    fv_field_work map_work; /* for one batch */
    const fv_gmm *gmm;
    size_t npairs;
    const double *a, *b;    /* PAIRS: npairs x d sources and targets */
    const float *targets;   /* TARGETS: npairs x d */
    int reverse;            /* TARGETS: the set's row is x0 and the source draw x1 (data -> noise) */
    int std_source;         /* the source is N(0, I): x0 is the normals themselves (no product) */
    double *root0, *root1;  /* PROBLEM, GMM: S0^{1/2}; PROBLEM, independent coupling: S1^{1/2} (taken once
                               at init, not per batch) */
    double *z;              /* scratch for zcap normals */
    size_t zcap;
} fv_cfm_data;

/* Prepare a data source, its scratch sized for batches of `cap` rows (grown on demand); `gmm` and
 * the pairs are kept by pointer. */
int fv_cfm_data_init(fv_cfm_data *D, fv_data_kind kind, const fv_problem *p, const fv_gmm *gmm, size_t npairs,
                     const double *a, const double *b, size_t cap);

/* A TARGETS source: x0 from p's source, x1 among the n rows of `targets` (n x p->d floats, kept by
 * pointer). */
int fv_cfm_data_targets(fv_cfm_data *D, const fv_problem *p, size_t n, const float *targets, size_t cap);
void fv_cfm_data_free(fv_cfm_data *D);

/* Training pairs (x0, x1) for step `step`: a function of (seed, step) alone, so a resumed run draws
 * the same batches as an uninterrupted one. x0, x1: B x d doubles. */
int fv_cfm_pairs(fv_cfm_data *D, uint64_t seed, uint64_t step, size_t B, double *x0, double *x1);

/* Rows [row0, row0 + n) of fv_cfm_pairs' batch of B rows, equal to those rows of the whole batch
 * (every row's draws sit at a position of the stream fixed by (B, row)): one process's shard. */
int fv_cfm_pairs_rows(fv_cfm_data *D, uint64_t seed, uint64_t step, size_t B, size_t row0, size_t n, double *x0,
                      double *x1);

/* The interpolant and target for a batch of pairs: t ~ U(0,1) per row, z ~ N(0, I),
 * x_t = (1-t) x0 + t x1 + f(t) z, u = x1 - x0 (+ f'(t) z with the derivative term), from the stream
 * (seed, step). With t_fixed >= 0 every row uses that time. Outputs in float for the network. */
void fv_cfm_interpolate(const fv_problem *p, uint64_t seed, uint64_t step, double t_fixed, size_t B, size_t d,
                        const double *x0, const double *x1, float *xt, float *t, float *u);

/* The same for rows [row0, row0 + n) of a batch (x0, x1, xt, t, u hold those n rows only). */
void fv_cfm_interpolate_rows(const fv_problem *p, uint64_t seed, uint64_t step, double t_fixed, size_t row0, size_t n,
                             size_t d, const double *x0, const double *x1, float *xt, float *t, float *u);

/* Options of a training run. */
struct fv_dist;

typedef struct {
    size_t steps;            /* train until this step count */
    size_t batch;
    uint64_t seed;
    size_t checkpoint_every; /* 0: only at the end */
    size_t log_every;        /* loss log resolution in steps */
    const char *checkpoint;  /* path of the periodic checkpoint (written atomically) */
    size_t nmeta;            /* metadata saved with every checkpoint (the run's configuration) */
    const char *const *meta_keys, *const *meta_values;
    /* Called after every step with the step reached (NULL: never), e.g. the training monitor; it may use
     * the trainer's batch and gradient buffers, which the next step draws afresh. A failure stops the
     * run; the checkpoint on disk stays the last one written. */
    int (*after_step)(void *ctx, uint64_t step);
    void *after_step_ctx;
    struct fv_dist *dist;    /* ranks of a data-parallel job (nn/dist.h), each training its shard of every
                                batch; NULL: this process alone */
} fv_train_opts;

/* The loss log: rows (step, loss, gradient norm). */
typedef struct {
    size_t n, cap;
    double *rows;
} fv_loss_log;

/* Train from tr's current state at step `*step` up to o->steps, logging into `log`; checkpoints
 * every o->checkpoint_every steps and at the end, each only after a forward pass from that state
 * gave a finite loss. A NaN or infinite loss stops the run with FV_ENUMERIC naming the step; the
 * checkpoint on disk is then the last state known good. With o->dist every rank draws its shard of
 * o->batch (which the ranks divide: fv_dist_shard), the gradients and the loss are summed over ranks
 * in one reduction per step, and the ranks stop together on any rank's failure; give the checkpoint
 * path to one rank only. */
int fv_cfm_train(fv_trainer *tr, fv_cfm_data *D, const fv_train_opts *o, uint64_t *step, fv_loss_log *log);

void fv_loss_log_free(fv_loss_log *log);

/* Integrate dx/dt = v_net(x, t) from t = 0 to 1 for n rows of X (n x d, overwritten), with the EMA
 * weights when use_ema and the trainer keeps them; Euler or RK4 with o->steps steps. */
int fv_cfm_integrate(fv_trainer *tr, int use_ema, size_t n, double *X, const fv_ode_opts *o);

/* A mean over rows with its standard error. */
typedef struct {
    double mean, se;
    size_t n;
} fv_estimate;

/* The approximation gap at time t: E|v_net(X_t, t) - v_closed(X_t, t)|^2 over n rows of the data
 * source's interpolant at that t (stream (seed, step) as in training). */
int fv_cfm_gap(fv_trainer *tr, int use_ema, fv_cfm_data *D, const fv_field *closed, double t, size_t n,
               uint64_t seed, uint64_t step, fv_estimate *gap);

/* The per-sample gradient variance of the network weights, the paper's Var[grad L_MC] for B = 1:
 * trace Cov[grad_w |u - v_w(X_t, t)|^2] over n rows at time t (t < 0: t ~ U(0,1)), unbiased, from the
 * backend's per-row gradient norms (loss_grad with sqnorm: exact for both networks). */
int fv_cfm_grad_variance(fv_trainer *tr, fv_cfm_data *D, double t, size_t n, uint64_t seed, uint64_t step,
                         double *var);

#endif
