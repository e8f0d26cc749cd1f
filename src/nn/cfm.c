/* cfm.c: batches, interpolant and the training loop of conditional flow matching (see cfm.h). */
#include "nn/cfm.h"

#include "core/error.h"
#include "core/linalg.h"
#include "core/progress.h"
#include "core/rng.h"
#include "nn/checkpoint.h"
#include "nn/dist.h"
#include "nn/par.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Philox streams of one step: the pairs, then the interpolant. Disjoint for every step. */
#define STREAM_PAIRS(step) (2 * (step))
#define STREAM_INTERP(step) (2 * (step) + 1)

/* N(0, I) exactly: zero mean, identity covariance. */
static int is_standard(size_t d, const double *m, const double *S)
{
    for (size_t i = 0; i < d; i++) {
        if (m[i] != 0.0)
            return 0;
        for (size_t j = 0; j < d; j++)
            if (S[i * d + j] != (i == j ? 1.0 : 0.0))
                return 0;
    }
    return 1;
}

int fv_cfm_data_init(fv_cfm_data *D, fv_data_kind kind, const fv_problem *p, const fv_gmm *gmm, size_t npairs,
                     const double *a, const double *b, size_t cap)
{
    static _Atomic uint64_t last_id; /* unique even when threads set up their data at once */
    memset(D, 0, sizeof *D);
    D->id = atomic_fetch_add(&last_id, 1) + 1;
    D->kind = kind;
    D->d = p->d;
    D->p = p;
    D->gmm = gmm;
    D->npairs = npairs;
    D->a = a;
    D->b = b;
    if (kind == FV_DATA_GMM && (!gmm || gmm->d != p->d))
        return fv_error(FV_EINPUT, "the mixture's dimension does not match the problem's");
    if (kind == FV_DATA_PAIRS && npairs == 0)
        return fv_error(FV_EINPUT, "a finite training set needs at least one pair");
    int st = FV_OK;
    size_t d = p->d;
    /* The covariances' square roots, once: fv_gaussian_sample would take one (a dsyevd) per batch.
     * The standard source's is the identity, known without one (a dsyevd of an image's dimension
     * takes seconds). */
    if (kind != FV_DATA_PAIRS) {
        int indep = kind == FV_DATA_PROBLEM && p->coupling == FV_COUPLING_INDEPENDENT;
        D->std_source = is_standard(d, p->m0, p->S0);
        if (!(D->root0 = malloc((indep ? 2 : 1) * d * d * sizeof *D->root0)))
            st = fv_error(FV_ENOMEM, "out of memory for a %zu-dimensional data source", d);
        else if (D->std_source)
            fv_mat_identity(d, D->root0);
        else
            st = fv_linalg_sqrtm_spd(d, p->S0, D->root0);
        if (!st && indep)
            st = fv_linalg_sqrtm_spd(d, p->S1, D->root1 = D->root0 + d * d);
    }
    if (!st && kind == FV_DATA_PROBLEM && p->coupling != FV_COUPLING_INDEPENDENT) {
        fv_field_kind fk = p->coupling == FV_COUPLING_OT ? FV_FIELD_OT : FV_FIELD_ROTATION;
        if (!(st = fv_field_build(&D->map, p, fk)))
            st = fv_field_work_alloc(&D->map_work, p->d, cap);
    }
    if (st)
        fv_cfm_data_free(D);
    return st;
}

int fv_cfm_data_targets(fv_cfm_data *D, const fv_problem *p, size_t n, const float *targets, size_t cap)
{
    if (n == 0)
        return fv_error(FV_EINPUT, "a target set needs at least one row");
    int st = fv_cfm_data_init(D, FV_DATA_TARGETS, p, NULL, n, NULL, NULL, cap);
    if (!st)
        D->targets = targets;
    return st;
}

void fv_cfm_data_free(fv_cfm_data *D)
{
    fv_field_free(&D->map);
    fv_field_work_free(&D->map_work);
    free(D->root0);
    free(D->z);
    memset(D, 0, sizeof *D);
}

typedef struct {
    const fv_cfm_data *D;
    const double *mean, *root;
    int identity;
    size_t row0, n;
    const fv_rng *r;
    double *X;
} sample_ctx;

/* Normals first .. first + n - 1 of r's stream (counted from its position) into out, without moving r:
 * fv_rng_normal_at for any parity of first (a shard's first row may start inside a Philox block). */
static void normals_from(const fv_rng *r, size_t first, size_t n, double *out)
{
    if (first % 2 && n) { /* the first is the second of its block */
        double pair[2];
        fv_rng_normal_at(r, first - 1, 2, pair);
        *out++ = pair[1];
        first++;
        n--;
    }
    fv_rng_normal_at(r, first, n, out);
}

/* One thread's rows of sample_rooted: row boundaries even, so that most threads' first normal starts a
 * Philox block whatever d is. */
static void sample_rows(void *arg, int tid, int nt)
{
    const sample_ctx *c = arg;
    size_t d = c->D->d, r0, r1;
    fv_par_range(c->n, 2, tid, nt, &r0, &r1);
    if (r0 == r1)
        return;
    size_t rows = r1 - r0;
    double *X = c->X + r0 * d, *z = c->identity ? X : c->D->z + r0 * d;
    normals_from(c->r, (c->row0 + r0) * d, rows * d, z);
    if (c->identity)
        return;
    for (size_t i = 0; i < rows; i++)
        memcpy(X + i * d, c->mean, d * sizeof *X);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)d, (int)d, 1.0, z, (int)d, c->root, (int)d,
                1.0, X, (int)d);
}

/* Rows [row0, row0 + n) of B samples of N(mean, root root^T) into X (n x d): exactly
 * fv_gaussian_sample's draws and arithmetic (same normals, same dgemm) with the square root taken once
 * by fv_cfm_data_init, the rows split over the training threads (par.h). With `identity` (mean 0, root I)
 * X is the normals: what the product would give, bit for bit. The stream is left past all B samples'
 * normals, where the single draw leaves it. */
static int sample_rooted(fv_cfm_data *D, const double *mean, const double *root, int identity, size_t B, size_t row0,
                         size_t n, fv_rng *r, double *X)
{
    size_t d = D->d;
    if (!identity && n * d > D->zcap) {
        double *z = realloc(D->z, n * d * sizeof *z);
        if (!z)
            return fv_error(FV_ENOMEM, "out of memory sampling %zu points", n);
        D->z = z;
        D->zcap = n * d;
    }
    sample_ctx c = {D, mean, root, identity, row0, n, r, X};
    fv_par_run(sample_rows, &c);
    r->pos += (B * d + 1) / 2;
    return FV_OK;
}

int fv_cfm_pairs(fv_cfm_data *D, uint64_t seed, uint64_t step, size_t B, double *x0, double *x1)
{
    return fv_cfm_pairs_rows(D, seed, step, B, 0, B, x0, x1);
}

/* The stream of a step holds, in order: x0's B d normals (all but PAIRS), then per row either one
 * uniform (PAIRS, TARGETS), or one uniform and d normals (GMM: fv_gmm_sample), or x1's B d normals
 * (PROBLEM, independent coupling); a shard starts each part at its first row's position. */
int fv_cfm_pairs_rows(fv_cfm_data *D, uint64_t seed, uint64_t step, size_t B, size_t row0, size_t n, double *x0,
                      double *x1)
{
    fv_rng r = fv_rng_make(seed, STREAM_PAIRS(step));
    size_t d = D->d;
    const fv_problem *p = D->p;
    switch (D->kind) {
    case FV_DATA_PAIRS:
        r.pos = row0;
        for (size_t i = 0; i < n; i++) {
            double u;
            fv_rng_uniform(&r, 1, &u);
            size_t k = (size_t)(u * (double)D->npairs);
            k = k < D->npairs ? k : D->npairs - 1;
            memcpy(x0 + i * d, D->a + k * d, d * sizeof *x0);
            memcpy(x1 + i * d, D->b + k * d, d * sizeof *x1);
        }
        return FV_OK;
    case FV_DATA_TARGETS: {
        double *src = D->reverse ? x1 : x0, *row = D->reverse ? x0 : x1;
        int st = sample_rooted(D, p->m0, D->root0, D->std_source, B, row0, n, &r, src);
        r.pos += row0;
        for (size_t i = 0; i < n && !st; i++) {
            double u;
            fv_rng_uniform(&r, 1, &u);
            size_t k = (size_t)(u * (double)D->npairs);
            k = k < D->npairs ? k : D->npairs - 1;
            for (size_t j = 0; j < d; j++)
                row[i * d + j] = D->targets[k * d + j];
        }
        return st;
    }
    case FV_DATA_GMM: {
        int st = sample_rooted(D, p->m0, D->root0, D->std_source, B, row0, n, &r, x0);
        r.pos += row0 * (1 + (d + 1) / 2);
        return st ? st : fv_gmm_sample(D->gmm, n, &r, x1, NULL);
    }
    case FV_DATA_PROBLEM: {
        int st = sample_rooted(D, p->m0, D->root0, D->std_source, B, row0, n, &r, x0);
        if (st)
            return st;
        if (p->coupling == FV_COUPLING_INDEPENDENT)
            return sample_rooted(D, p->m1, D->root1, 0, B, row0, n, &r, x1);
        if (n > D->map_work.n) { /* measurements may ask for more rows than a training batch */
            fv_field_work_free(&D->map_work);
            if ((st = fv_field_work_alloc(&D->map_work, d, n)))
                return st;
        }
        return fv_field_map(&D->map, n, x0, x1, &D->map_work);
    }
    }
    return fv_error(FV_EINPUT, "unknown data source %d", (int)D->kind);
}

void fv_cfm_interpolate(const fv_problem *p, uint64_t seed, uint64_t step, double t_fixed, size_t B, size_t d,
                        const double *x0, const double *x1, float *xt, float *t, float *u)
{
    fv_cfm_interpolate_rows(p, seed, step, t_fixed, 0, B, d, x0, x1, xt, t, u);
}

void fv_cfm_interpolate_rows(const fv_problem *p, uint64_t seed, uint64_t step, double t_fixed, size_t row0, size_t n,
                             size_t d, const double *x0, const double *x1, float *xt, float *t, float *u)
{
    fv_rng r = fv_rng_make(seed, STREAM_INTERP(step));
    r.pos = (uint64_t)row0 * (d + (t_fixed < 0 ? 1 : 0)); /* each row: its time's block, then d blocks of noise */
    for (size_t i = 0; i < n; i++) {
        double ti, z[1], f, fp;
        if (t_fixed >= 0)
            ti = t_fixed;
        else
            fv_rng_uniform(&r, 1, &ti);
        fv_noise(p->schedule, p->sigma, ti, &f, &fp);
        t[i] = (float)ti;
        if (f == 0.0 && !(p->deriv_term && fp != 0.0)) {
            /* No noise in this row (sigma = 0, or the bridge at t = 0 or 1): its d normals would be
             * multiplied by 0, so skip drawing them (one Philox block each) but keep the stream where
             * drawing them would have left it, so later rows get the same numbers. The outputs are
             * those of the general branch below (x + 0 * z = x, up to the sign of an exact zero). */
            r.pos += d;
            for (size_t j = 0; j < d; j++) {
                double a = x0[i * d + j], b = x1[i * d + j];
                xt[i * d + j] = (float)((1 - ti) * a + ti * b);
                u[i * d + j] = (float)(b - a);
            }
            continue;
        }
        for (size_t j = 0; j < d; j++) {
            fv_rng_normal(&r, 1, z);
            double a = x0[i * d + j], b = x1[i * d + j];
            xt[i * d + j] = (float)((1 - ti) * a + ti * b + f * z[0]);
            u[i * d + j] = (float)(b - a + (p->deriv_term ? fp * z[0] : 0.0));
        }
    }
}

static int log_push(fv_loss_log *log, double step, double loss, double gnorm)
{
    if (log->n == log->cap) {
        size_t cap = log->cap ? 2 * log->cap : 256;
        double *rows = realloc(log->rows, cap * 3 * sizeof *rows);
        if (!rows)
            return fv_error(FV_ENOMEM, "out of memory for the loss log");
        log->rows = rows;
        log->cap = cap;
    }
    double *row = log->rows + 3 * log->n++;
    row[0] = step;
    row[1] = loss;
    row[2] = gnorm;
    return FV_OK;
}

void fv_loss_log_free(fv_loss_log *log)
{
    free(log->rows);
    memset(log, 0, sizeof *log);
}

static int save(fv_trainer *tr, const fv_train_opts *o, uint64_t step, const fv_loss_log *log)
{
    if (!o->checkpoint)
        return FV_OK;
    int st = tr->ops->pull ? tr->ops->pull(tr) : FV_OK;
    return st ? st : fv_checkpoint_save(o->checkpoint, tr, step, log, o->nmeta, o->meta_keys, o->meta_values);
}

int fv_cfm_train(fv_trainer *tr, fv_cfm_data *D, const fv_train_opts *o, uint64_t *step, fv_loss_log *log)
{
    fv_progress bar;
    char status[64];
    int st = FV_OK, pending = 0, shown = !o->dist || o->dist->rank == 0; /* one progress line per job */
    size_t every = o->log_every ? o->log_every : 1, rows = o->batch;
    if (o->dist && (st = fv_dist_shard(o->dist, o->batch, &rows, &tr->shard_row0)))
        return st;
    tr->shard_batch = o->dist ? o->batch : 0;
    if (shown)
        fv_progress_start(&bar, "train", o->steps > *step ? o->steps - *step : 0);
    /* A state is saved only once a forward pass from it gave a finite loss: the checkpoint of step k
     * is written during step k + 1, and the final one after one more validating forward pass. */
    for (;;) {
        float loss = 0.0f, gnorm;
        if (!st && !(st = tr->ops->draw(tr, D, o->seed, *step, -1.0, rows)))
            st = tr->ops->loss_grad(tr, &loss, NULL);
        /* ranks: the summed gradient and loss, and every rank stops on a failure of any (its own
         * included, carried over from the end of the last step) */
        if (o->dist)
            st = fv_dist_reduce(o->dist, tr, &loss, st);
        if (st)
            break;
        if (!isfinite(loss)) {
            st = fv_error(FV_ENUMERIC, "training diverged: the loss is %g at step %llu; the checkpoint on disk "
                                       "(if any) holds the last state that gave a finite loss",
                          (double)loss, (unsigned long long)*step + 1);
            break;
        }
        if (pending || *step >= o->steps) {
            st = save(tr, o, *step, log);
            if (o->dist) /* the ranks go on only if the checkpoint was written */
                st = fv_dist_agree(o->dist, st);
            if (st || *step >= o->steps)
                break;
            pending = 0;
        }
        if (!(st = tr->ops->update(tr, &gnorm))) {
            ++*step;
            if (*step % every == 0 || *step == o->steps)
                st = log_push(log, (double)*step, loss, gnorm);
            pending = o->checkpoint_every && *step % o->checkpoint_every == 0;
            snprintf(status, sizeof status, "loss %.4g", loss);
            if (shown)
                fv_progress_step(&bar, 1, status);
            if (!st && o->after_step)
                st = o->after_step(o->after_step_ctx, *step);
        }
        if (st && !o->dist)
            break;
    }
    if (shown)
        fv_progress_end(&bar);
    tr->shard_row0 = tr->shard_batch = 0;
    return st;
}

typedef struct {
    fv_trainer *tr;
    int use_ema;
    size_t d;
    float *xf, *tf, *vf;
} net_ctx;

static int net_rhs(double t, size_t n, const double *y, double *dydt, void *ctx)
{
    net_ctx *c = ctx;
    size_t rows = n / c->d;
    for (size_t i = 0; i < n; i++)
        c->xf[i] = (float)y[i];
    for (size_t i = 0; i < rows; i++)
        c->tf[i] = (float)t;
    int st = c->tr->ops->predict(c->tr, c->use_ema, rows, c->xf, c->tf, c->vf);
    for (size_t i = 0; i < n && !st; i++)
        dydt[i] = c->vf[i];
    return st;
}

int fv_cfm_integrate(fv_trainer *tr, int use_ema, size_t n, double *X, const fv_ode_opts *o)
{
    size_t d = tr->d;
    net_ctx c = {tr, use_ema, d, malloc(n * d * sizeof(float)), malloc(n * sizeof(float)),
                 malloc(n * d * sizeof(float))};
    int st = (!c.xf || !c.tf || !c.vf) ? fv_error(FV_ENOMEM, "out of memory integrating %zu points", n)
                                       : fv_ode_integrate(net_rhs, &c, n * d, X, o, NULL);
    free(c.xf);
    free(c.tf);
    free(c.vf);
    return st;
}

/* x_t, t and u for n rows at time t (t < 0: uniform), as in training step `step`. */
static int draw_rows(fv_cfm_data *D, uint64_t seed, uint64_t step, double t, size_t n, double *x0, float *xt,
                     float *tt, float *u)
{
    int st = fv_cfm_pairs(D, seed, step, n, x0, x0 + n * D->d);
    if (!st)
        fv_cfm_interpolate(D->p, seed, step, t, n, D->d, x0, x0 + n * D->d, xt, tt, u);
    return st;
}

int fv_cfm_gap(fv_trainer *tr, int use_ema, fv_cfm_data *D, const fv_field *closed, double t, size_t n,
               uint64_t seed, uint64_t step, fv_estimate *gap)
{
    size_t d = D->d;
    double *x0 = malloc(2 * n * d * sizeof *x0), *xd = malloc(2 * n * d * sizeof *xd);
    float *xt = malloc((3 * n * d + n) * sizeof *xt);
    fv_field_work w = {0};
    int st = (!x0 || !xd || !xt) ? fv_error(FV_ENOMEM, "out of memory for %zu rows", n)
                                 : fv_field_work_alloc(&w, d, n);
    if (st)
        goto done;
    float *u = xt + n * d, *v = u + n * d, *tt = v + n * d;
    double *vc = xd + n * d;
    if ((st = draw_rows(D, seed, step, t, n, x0, xt, tt, u)) ||
        (st = tr->ops->predict(tr, use_ema, n, xt, tt, v)))
        goto done;
    for (size_t i = 0; i < n * d; i++)
        xd[i] = xt[i];
    if ((st = fv_field_eval(closed, t, n, xd, vc, &w)))
        goto done;
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        double e = 0;
        for (size_t j = 0; j < d; j++)
            e += (v[i * d + j] - vc[i * d + j]) * (v[i * d + j] - vc[i * d + j]);
        s += e;
        s2 += e * e;
    }
    gap->n = n;
    gap->mean = s / (double)n;
    gap->se = n > 1 ? sqrt(fmax(s2 / (double)n - gap->mean * gap->mean, 0.0) / (double)(n - 1)) : NAN;
done:
    free(x0);
    free(xd);
    free(xt);
    fv_field_work_free(&w);
    return st;
}

int fv_cfm_grad_variance(fv_trainer *tr, fv_cfm_data *D, double t, size_t n, uint64_t seed, uint64_t step,
                         double *var)
{
    size_t d = D->d;
    if (n < 2)
        return fv_error(FV_EINPUT, "the gradient variance needs at least 2 rows");
    float loss, *sq = malloc(n * sizeof *sq);
    int st = !sq ? fv_error(FV_ENOMEM, "out of memory for %zu rows", n) : FV_OK;
    if (!st && !(st = tr->ops->draw(tr, D, seed, step, t, n)))
        st = tr->ops->loss_grad(tr, &loss, sq);
    if (!st) {
        /* row i's loss share is |u_i - v_i|^2 / c with c = n d: rescale to the per-sample loss */
        double c = (double)n * (double)d, msq = 0, mean2 = 0;
        for (size_t i = 0; i < n; i++)
            msq += (double)sq[i] / (double)n;
        for (size_t k = 0; k < tr->nparams; k++)
            mean2 += (double)tr->grads[k] * tr->grads[k];
        mean2 /= (double)n * (double)n; /* |mean of row gradients|^2, grads being their sum */
        *var = c * c * (msq - mean2) * (double)n / (double)(n - 1);
    }
    free(sq);
    return st;
}
