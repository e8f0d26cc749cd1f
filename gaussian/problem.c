/* problem.c: allocation and validation of a Gaussian transport problem (see problem.h). */
#include "gaussian/problem.h"

#include "core/error.h"
#include "core/linalg.h"
#include "core/size.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Input validation only (never inside an algorithm): a covariance typed with 15 digits may be
 * asymmetric in the last place. An orthogonal matrix rounded to float32 (unit roundoff u = 2^-24)
 * has |R^T R - I| <= 2u + u^2 = 1.2e-7 in every entry, whatever d (each column keeps norm 1 to u, and
 * Cauchy-Schwarz bounds the cross terms by u); FV_ORTHOGONAL_TOL leaves 4x room for that and
 * refuses anything further from orthogonal. */
#define FV_SYMMETRY_TOL 1e-12

int fv_problem_alloc(fv_problem *p, size_t d)
{
    memset(p, 0, sizeof *p);
    if (d == 0)
        return fv_error(FV_EINPUT, "dimension must be at least 1");
    p->d = d;
    int st;
    /* d comes from the user (a list or a file): d x d may never fit, which is bad input */
    if ((p->S0 = fv_alloc(&st, "a d x d covariance", d, d, sizeof *p->S0)))
        p->S1 = fv_alloc(&st, "a d x d covariance", d, d, sizeof *p->S1);
    p->m0 = calloc(d, sizeof *p->m0);
    p->m1 = calloc(d, sizeof *p->m1);
    if (!st && (!p->m0 || !p->m1))
        st = fv_error(FV_ENOMEM, "out of memory for a problem of dimension %zu", d);
    if (st) {
        fv_problem_free(p);
        return st;
    }
    fv_mat_identity(d, p->S0);
    fv_mat_identity(d, p->S1);
    return FV_OK;
}

void fv_problem_free(fv_problem *p)
{
    free(p->m0);
    free(p->m1);
    free(p->S0);
    free(p->S1);
    free(p->R);
    memset(p, 0, sizeof *p);
}

static int check_orthogonal(size_t d, const double *R)
{
    if (!fv_all_finite(d * d, R))
        return fv_error(FV_EINPUT, "--rotation: matrix has a non-finite entry");
    double *G = malloc(d * d * sizeof *G);
    if (!G)
        return fv_error(FV_ENOMEM, "out of memory checking --rotation");
    /* G = R^T R in one product: the triple loop took most of a d = 784 variance evaluation */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0, R, (int)d, R, (int)d, 0.0, G,
                (int)d);
    double worst = 0.0;
    size_t wi = 0, wj = 0;
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < d; j++) {
            double r = fabs(G[i * d + j] - (i == j ? 1.0 : 0.0));
            if (r > worst) {
                worst = r;
                wi = i;
                wj = j;
            }
        }
    free(G);
    if (worst > FV_ORTHOGONAL_TOL)
        return fv_error(FV_EINPUT, "--rotation: matrix is not orthogonal: max |R^T R - I| = %.3g at (%zu,%zu), "
                                   "tolerance %g", worst, wi + 1, wj + 1, FV_ORTHOGONAL_TOL);
    return FV_OK;
}

int fv_problem_validate(const fv_problem *p)
{
    int st;
    if (!fv_all_finite(p->d, p->m0))
        return fv_error(FV_EINPUT, "--source-mean has a non-finite entry");
    if (!fv_all_finite(p->d, p->m1))
        return fv_error(FV_EINPUT, "--target-mean has a non-finite entry");
    if ((st = fv_linalg_spd_check(p->d, p->S0, "--source-cov", FV_SYMMETRY_TOL)))
        return st;
    if ((st = fv_linalg_spd_check(p->d, p->S1, "--target-cov", FV_SYMMETRY_TOL)))
        return st;
    if (p->coupling == FV_COUPLING_ROTATION && !p->R)
        return fv_error(FV_EINPUT, "the rotational coupling needs --angle DEG or --rotation R.npy");
    if (p->R && (st = check_orthogonal(p->d, p->R)))
        return st;
    if (!isfinite(p->sigma) || p->sigma < 0)
        return fv_error(FV_EINPUT, "--sigma must be a finite number >= 0, got %g", p->sigma);
    return FV_OK;
}

void fv_rotation_blocks(size_t d, double deg, double *R)
{
    /* quarter turns exactly, so that 180 degrees is -I and not -I plus a 1e-16 rotation */
    double r = fmod(deg, 360.0);
    if (r < 0)
        r += 360.0;
    double a = r * M_PI / 180.0, c = cos(a), s = sin(a);
    if (r == 0.0 || r == 180.0) {
        c = r == 0.0 ? 1.0 : -1.0;
        s = 0.0;
    } else if (r == 90.0 || r == 270.0) {
        c = 0.0;
        s = r == 90.0 ? 1.0 : -1.0;
    }
    fv_mat_identity(d, R);
    for (size_t i = 0; i + 1 < d; i += 2) {
        R[i * d + i] = c;
        R[i * d + i + 1] = -s;
        R[(i + 1) * d + i] = s;
        R[(i + 1) * d + i + 1] = c;
    }
}

double fv_noise_ffprime(fv_schedule s, double sigma, double t)
{
    return s == FV_SCHEDULE_CONSTANT ? 0.0 : sigma * sigma * (1.0 - 2.0 * t) / 2.0;
}

const char *fv_coupling_name(fv_coupling c)
{
    static const char *names[] = {"ot", "rotation", "independent"};
    return names[c];
}

const char *fv_schedule_name(fv_schedule s) { return s == FV_SCHEDULE_CONSTANT ? "constant" : "bridge"; }

int fv_gaussian_sample(size_t d, const double *mean, const double *cov, size_t n, fv_rng *r, double *X)
{
    double *root = malloc(d * d * sizeof *root), *Z = malloc(n * d * sizeof *Z);
    int st = (!root || !Z) ? fv_error(FV_ENOMEM, "out of memory sampling %zu points", n)
                           : fv_linalg_sqrtm_spd(d, cov, root);
    if (!st) {
        fv_rng_normal(r, n * d, Z);
        for (size_t i = 0; i < n; i++)
            memcpy(X + i * d, mean, d * sizeof *X);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)d, (int)d, 1.0, Z, (int)d, root, (int)d,
                    1.0, X, (int)d);
    }
    free(root);
    free(Z);
    return st;
}

int fv_problem_reference(fv_problem *p, double deg, double sigma)
{
    int st = fv_problem_alloc(p, 2);
    if (st)
        return st;
    const double mu[2] = {1.0, -0.5}, M[4] = {2.0, 0.6, 0.6, 1.0};
    memcpy(p->m1, mu, sizeof mu);
    memcpy(p->S1, M, sizeof M);
    p->sigma = sigma;
    if (deg >= 0) {
        p->coupling = FV_COUPLING_ROTATION;
        if (!(p->R = malloc(4 * sizeof *p->R))) {
            fv_problem_free(p);
            return fv_error(FV_ENOMEM, "out of memory");
        }
        fv_rotation_blocks(2, deg, p->R);
    }
    return FV_OK;
}

void fv_random_spd(size_t d, double floor, fv_rng *r, double *S)
{
    double *A = malloc(d * d * sizeof *A);
    if (!A) { /* callers check S with fv_linalg_spd_check; NaN makes that fail loudly */
        for (size_t i = 0; i < d * d; i++)
            S[i] = NAN;
        return;
    }
    fv_rng_normal(r, d * d, A);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)d, (int)d, 1.0 / (double)d, A, (int)d, 0.0, S, (int)d);
    for (size_t i = 0; i < d; i++) {
        S[i * d + i] += floor;
        for (size_t j = 0; j < i; j++)
            S[i * d + j] = S[j * d + i];
    }
    free(A);
}
