/* mmd.c: median-heuristic bandwidth and the blocked MMD^2, unbiased and biased (see mmd.h). */
#include "gmm/mmd.h"

#include "core/error.h"
#include "core/linalg.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* Row p of the pooled sample [X; Y]. */
static const double *pooled_row(size_t p, size_t n, size_t d, const double *X, const double *Y)
{
    return p < n ? X + p * d : Y + (p - n) * d;
}

static double sq_dist(size_t d, const double *a, const double *b)
{
    double s = 0.0;
    for (size_t j = 0; j < d; j++) {
        double e = a[j] - b[j];
        s += e * e;
    }
    return s;
}

static double median3(double a, double b, double c)
{
    if (a > b) {
        double t = a;
        a = b;
        b = t;
    }
    return c < a ? a : (c > b ? b : c);
}

/* The k-th smallest of a[0..len) (0-based), partially reordering a so that a[0..k) <= a[k]
 * (Wirth's selection with a median-of-three pivot value; O(len) on average). The pivot is a value
 * inside the current range, so both scans stop inside it. */
static double select_kth(double *a, size_t len, size_t k)
{
    ptrdiff_t l = 0, r = (ptrdiff_t)len - 1, kk = (ptrdiff_t)k;
    while (l < r) {
        double x = median3(a[l], a[l + (r - l) / 2], a[r]);
        ptrdiff_t i = l, j = r;
        do {
            while (a[i] < x)
                i++;
            while (x < a[j])
                j--;
            if (i <= j) {
                double t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        } while (i <= j);
        if (j < kk)
            l = i;
        if (kk < i)
            r = j;
    }
    return a[k];
}

/* numpy.median of a[0..len): the middle value, or the mean of the two middle values. */
static double median(double *a, size_t len)
{
    size_t h = len / 2;
    double hi = select_kth(a, len, h);
    if (len % 2)
        return hi;
    double lo = a[0]; /* after the selection a[0..h) holds the h smallest: their maximum is next */
    for (size_t i = 1; i < h; i++)
        lo = fmax(lo, a[i]);
    return (lo + hi) / 2;
}

int fv_mmd_median_bandwidth(size_t n, size_t m, size_t d, const double *X, const double *Y, double *h)
{
    size_t N = n + m, S = N > FV_MMD_MEDIAN_MAX ? FV_MMD_MEDIAN_MAX : N;
    if (d == 0 || N < 2)
        return fv_error(FV_EINPUT, "median bandwidth needs d >= 1 and at least 2 points (d = %zu, %zu points)", d, N);
    if (!fv_all_finite(n * d, X) || !fv_all_finite(m * d, Y))
        return fv_error(FV_EINPUT, "median bandwidth: a sample contains a non-finite number");
    size_t *idx = malloc(S * sizeof *idx), P = S * (S - 1) / 2;
    double *d2 = malloc(P * sizeof *d2);
    if (!idx || !d2) {
        free(idx);
        free(d2);
        return fv_error(FV_ENOMEM, "out of memory for the %zu pair distances of the median bandwidth", P);
    }
    for (size_t i = 0; i < S; i++) /* all points, or the documented evenly spaced subsample */
        idx[i] = S == N ? i : i * N / S;
    size_t c = 0;
    for (size_t i = 0; i < S; i++) {
        const double *zi = pooled_row(idx[i], n, d, X, Y);
        for (size_t j = i + 1; j < S; j++)
            d2[c++] = sq_dist(d, zi, pooled_row(idx[j], n, d, X, Y));
    }
    double med = median(d2, P);
    free(idx);
    free(d2);
    if (!(med > 0))
        return fv_error(FV_EINPUT, "median bandwidth: the median pairwise squared distance is %g (more than half of "
                                   "the %zu pairs coincide); pass a bandwidth h > 0", med, P);
    *h = sqrt(med / 2);
    return FV_OK;
}

/* The pooled sample minus its mean (N x d) and its squared row norms. */
static void centre_pool(size_t n, size_t m, size_t d, const double *X, const double *Y, double *Z, double *z2)
{
    size_t N = n + m;
    memcpy(Z, X, n * d * sizeof *Z);
    memcpy(Z + n * d, Y, m * d * sizeof *Z);
    for (size_t j = 0; j < d; j++) {
        double mean = 0.0;
        for (size_t i = 0; i < N; i++)
            mean += Z[i * d + j];
        mean /= (double)N;
        for (size_t i = 0; i < N; i++)
            Z[i * d + j] -= mean;
    }
    for (size_t i = 0; i < N; i++)
        z2[i] = cblas_ddot((int)d, Z + i * d, 1, Z + i * d, 1);
}

typedef struct {
    size_t d;
    const double *Z, *z2; /* centred pooled sample and its squared row norms */
    double gamma;         /* 1 / (2 h^2) */
    double *tile;         /* FV_MMD_BLOCK^2 scratch */
} mmd_ctx;

/* Sum of k(z_i, z_j) over rows i in [i0, i0+ni), j in [j0, j0+nj), leaving out i == j (only
 * possible on a diagonal tile, i0 == j0). |zi - zj|^2 = |zi|^2 + |zj|^2 - 2 zi.zj, clamped at 0
 * against rounding. */
static double tile_sum(const mmd_ctx *c, size_t i0, size_t ni, size_t j0, size_t nj)
{
    size_t d = c->d;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ni, (int)nj, (int)d, 1.0, c->Z + i0 * d, (int)d,
                c->Z + j0 * d, (int)d, 0.0, c->tile, (int)nj);
    double s = 0.0;
    for (size_t i = 0; i < ni; i++) {
        double row = 0.0, ni2 = c->z2[i0 + i];
        for (size_t j = 0; j < nj; j++) {
            if (i0 + i == j0 + j)
                continue;
            double D = fmax(ni2 + c->z2[j0 + j] - 2.0 * c->tile[i * nj + j], 0.0);
            row += exp(-D * c->gamma);
        }
        s += row;
    }
    return s;
}

/* sum_{i != j} k over rows [a, a+len) of the pool: each off-diagonal tile pair once, doubled. */
static double within_sum(const mmd_ctx *c, size_t a, size_t len)
{
    double s = 0.0;
    for (size_t i0 = 0; i0 < len; i0 += FV_MMD_BLOCK) {
        size_t ni = len - i0 < FV_MMD_BLOCK ? len - i0 : FV_MMD_BLOCK;
        s += tile_sum(c, a + i0, ni, a + i0, ni);
        for (size_t j0 = i0 + FV_MMD_BLOCK; j0 < len; j0 += FV_MMD_BLOCK) {
            size_t nj = len - j0 < FV_MMD_BLOCK ? len - j0 : FV_MMD_BLOCK;
            s += 2.0 * tile_sum(c, a + i0, ni, a + j0, nj);
        }
    }
    return s;
}

/* sum_{i, j} k over rows [a, a+la) against rows [b, b+lb). */
static double cross_sum(const mmd_ctx *c, size_t a, size_t la, size_t b, size_t lb)
{
    double s = 0.0;
    for (size_t i0 = 0; i0 < la; i0 += FV_MMD_BLOCK) {
        size_t ni = la - i0 < FV_MMD_BLOCK ? la - i0 : FV_MMD_BLOCK;
        for (size_t j0 = 0; j0 < lb; j0 += FV_MMD_BLOCK) {
            size_t nj = lb - j0 < FV_MMD_BLOCK ? lb - j0 : FV_MMD_BLOCK;
            s += tile_sum(c, a + i0, ni, b + j0, nj);
        }
    }
    return s;
}

static int check_mmd_input(size_t n, size_t m, size_t d, const double *X, const double *Y, double h)
{
    if (d == 0)
        return fv_error(FV_EINPUT, "MMD needs dimension d >= 1");
    if (n < 2 || m < 2)
        return fv_error(FV_EINPUT, "MMD^2 needs at least 2 points in each sample (n = %zu, m = %zu)", n, m);
    if (n + m > INT_MAX || d > INT_MAX)
        return fv_error(FV_EINPUT, "MMD: sample too large for BLAS (n + m = %zu, d = %zu)", n + m, d);
    if (isnan(h) || isinf(h))
        return fv_error(FV_EINPUT, "MMD bandwidth must be a finite number (got %g; <= 0 means the median)", h);
    if (!fv_all_finite(n * d, X) || !fv_all_finite(m * d, Y))
        return fv_error(FV_EINPUT, "MMD: a sample contains a non-finite number");
    return FV_OK;
}

/* Both estimators share the three kernel sums; the biased one adds back the n + m diagonal terms
 * k(x, x) = 1 that the unbiased one leaves out. */
static int mmd2(size_t n, size_t m, size_t d, const double *X, const double *Y, double h, int biased, double *out,
                double *h_used)
{
    int st = check_mmd_input(n, m, d, X, Y, h);
    if (st || (h <= 0 && (st = fv_mmd_median_bandwidth(n, m, d, X, Y, &h))))
        return st;
    size_t N = n + m;
    double *Z = malloc(N * d * sizeof *Z), *z2 = malloc(N * sizeof *z2);
    double *tile = malloc((size_t)FV_MMD_BLOCK * FV_MMD_BLOCK * sizeof *tile);
    if (!Z || !z2 || !tile) {
        free(Z);
        free(z2);
        free(tile);
        return fv_error(FV_ENOMEM, "out of memory for the MMD of %zu + %zu points", n, m);
    }
    centre_pool(n, m, d, X, Y, Z, z2);
    mmd_ctx c = {d, Z, z2, 1.0 / (2.0 * h * h), tile};
    double kxx = within_sum(&c, 0, n), kyy = within_sum(&c, n, m), kxy = cross_sum(&c, 0, n, n, m);
    double dn = (double)n, dm = (double)m;
    if (biased)
        *out = (kxx + dn) / (dn * dn) + (kyy + dm) / (dm * dm) - 2.0 * kxy / (dn * dm);
    else
        *out = kxx / (dn * (dn - 1.0)) + kyy / (dm * (dm - 1.0)) - 2.0 * kxy / (dn * dm);
    if (h_used)
        *h_used = h;
    free(Z);
    free(z2);
    free(tile);
    return FV_OK;
}

int fv_mmd2_unbiased(size_t n, size_t m, size_t d, const double *X, const double *Y, double h, double *mmd2_out,
                     double *h_used)
{
    return mmd2(n, m, d, X, Y, h, 0, mmd2_out, h_used);
}

int fv_mmd2_biased(size_t n, size_t m, size_t d, const double *X, const double *Y, double h, double *mmd2_out,
                   double *h_used)
{
    return mmd2(n, m, d, X, Y, h, 1, mmd2_out, h_used);
}
