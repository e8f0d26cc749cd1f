/* field.h: closed-form vector fields between Gaussians (docs/THEORY.md section 2), evaluated exactly in
 * double precision at any points and times.
 *
 * Every field here has the form v(x, t) = b + N(t) A(t)^{-1} (x - m0 - t b), b = m1 - m0:
 *   pair field of an affine coupling T(x) = m1 + K (x - m0):  A = (1-t) I + t K,  N = K - I
 *     (OT: K = S0^{-1/2} (S0^{1/2} S1 S0^{1/2})^{1/2} S0^{-1/2}, which is M^{1/2} for a standard
 *      source: Lemma 1; rotational: K = S1^{1/2} R S0^{-1/2}, which is M^{1/2} R);
 *   Markov field of the independent coupling with noise f:
 *     A = (1-t)^2 S0 + t^2 S1 + f^2 I,  N = t S1 - (1-t) S0 (+ f f' I with the derivative term).
 * When K is symmetric (OT), K - I = V diag(l) V^T is computed ONCE and
 *   v = b + V diag(l / (1 + t l)) V^T (x - m0 - t b)   for every t;
 * otherwise A(t) is factored per time and its condition number checked. */
#ifndef FV_FIELD_H
#define FV_FIELD_H

#include "gaussian/problem.h"

#include <stddef.h>

typedef enum { FV_FIELD_OT = 0, FV_FIELD_ROTATION, FV_FIELD_MARKOV } fv_field_kind;

typedef struct {
    fv_field_kind kind;
    size_t d;
    double *b, *m0, *m1;  /* b = m1 - m0 */
    double *K;            /* pair fields: the coupling map's matrix */
    double *S0, *S1;      /* Markov: source and target covariances */
    double sigma;
    fv_schedule schedule;
    int deriv_term;
    int symmetric;        /* OT: eigen form below is used */
    double *V, *l, *Vb;   /* K - I = V diag(l) V^T, Vb = V^T b */
    double norm0, norm1;  /* |S0|, |S1| (Markov) or |K| (rotation): the scale of A(t) */
    double cond_max;      /* evaluation fails when the relative condition number of A(t),
                             |A(t)^-1| times the size of the terms forming A(t), exceeds this
                             (default 1e12) */
} fv_field;

/* Caller-owned scratch for evaluating a field at up to `n` points. */
typedef struct {
    size_t d, n;
    double *Y, *Z, *A, *N; /* Y, Z: n x d; A, N: d x d */
    double *vec;           /* 3 x d: the per-coordinate vectors of the symmetric form */
    int *piv;
} fv_field_work;

/* Build a field of the given kind from a validated problem. ROTATION needs p->R; MARKOV uses
 * p->sigma, p->schedule and p->deriv_term. */
int fv_field_build(fv_field *f, const fv_problem *p, fv_field_kind kind);
void fv_field_free(fv_field *f);

/* FV_EINPUT when n x d points can never fit in memory (size.h), FV_ENOMEM when malloc fails. */
int fv_field_work_alloc(fv_field_work *w, size_t d, size_t n);
void fv_field_work_free(fv_field_work *w);

/* out (n x d) = v(X, t) for X (n x d). FV_ESINGULAR, naming t and the condition number, where
 * A(t) is singular or its condition number exceeds f->cond_max; out is then untouched. */
int fv_field_eval(const fv_field *f, double t, size_t n, const double *X, double *out, fv_field_work *w);

/* The same at nt times: out is nt x n x d. For the symmetric (OT) field V^T (x - m0) is computed
 * once and shared by every t, so each further time costs one n x d x d product. */
int fv_field_eval_times(const fv_field *f, size_t nt, const double *ts, size_t n, const double *X, double *out,
                        fv_field_work *w);

/* The coupling map T(x) = m1 + K (x - m0) of a pair field (OT or rotation), at n points. */
int fv_field_map(const fv_field *f, size_t n, const double *X, double *out, fv_field_work *w);

/* Times in [0, 1] where A(t) = (1-t) I + t K is singular: t = 1/(1 - lambda) for each real
 * eigenvalue lambda <= 0 of K, sorted ascending, duplicates kept. At most d of them. Markov and OT
 * fields have none. */
int fv_field_singular_times(const fv_field *f, double *times, size_t *count);

const char *fv_field_kind_name(fv_field_kind k);

#endif
