/* monitor.c: the copy criterion by blocked GEMM (see monitor.h). */
#include "nn/monitor.h"

#include "core/error.h"
#include "core/size.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows of samples and of training points per GEMM block: a 256 x 256 product of doubles (512 KiB)
 * plus one block of training rows in double, whatever the set's size. */
#define BLOCK 256

typedef struct {
    const unsigned char *row;
    size_t bytes, idx;
} row_ref;

/* Byte order of the rows, then their index: equal rows end up together, the lowest index first. */
static int row_cmp(const void *pa, const void *pb)
{
    const row_ref *a = pa, *b = pb;
    int c = memcmp(a->row, b->row, a->bytes);
    return c ? c : (a->idx > b->idx) - (a->idx < b->idx);
}

static double row_value(const fv_copy_set *s, size_t j, size_t k)
{
    return s->yf ? (double)s->yf[j * s->d + k] : s->yd[j * s->d + k];
}

int fv_copy_set_init(fv_copy_set *s, size_t n, size_t d, const float *yf, const double *yd)
{
    int st;
    memset(s, 0, sizeof *s);
    s->n = n;
    s->d = d;
    s->yf = yf;
    s->yd = yf ? NULL : yd;
    row_ref *refs = fv_alloc(&st, "training rows", n, 1, sizeof *refs);
    if (!refs || !(s->sq = fv_alloc(&st, "training rows", n, 1, sizeof *s->sq)) ||
        !(s->first = fv_alloc(&st, "training rows", n, 1, sizeof *s->first))) {
        free(refs);
        fv_copy_set_free(s);
        return st;
    }
    size_t bytes = d * (yf ? sizeof *yf : sizeof *yd);
    for (size_t j = 0; j < n; j++) {
        double q = 0;
        for (size_t k = 0; k < d; k++)
            q += row_value(s, j, k) * row_value(s, j, k);
        s->sq[j] = q;
        refs[j] = (row_ref){yf ? (const unsigned char *)(yf + j * d) : (const unsigned char *)(yd + j * d), bytes, j};
    }
    qsort(refs, n, sizeof *refs, row_cmp);
    for (size_t k = 0; k < n; k++) {
        int dup = k > 0 && memcmp(refs[k].row, refs[k - 1].row, bytes) == 0;
        s->first[refs[k].idx] = dup ? s->first[refs[k - 1].idx] : refs[k].idx;
        s->ndistinct += !dup;
    }
    free(refs);
    if (s->ndistinct < 2) {
        size_t nd = s->ndistinct;
        fv_copy_set_free(s);
        return fv_error(FV_EINPUT, "the training set has %zu distinct point%s: the copy criterion d1/d2 needs a "
                                   "second-nearest training point, so at least 2", nd, nd == 1 ? "" : "s");
    }
    return FV_OK;
}

void fv_copy_set_free(fv_copy_set *s)
{
    free(s->sq);
    free(s->first);
    memset(s, 0, sizeof *s);
}

/* Fold one block of squared distances (rows: samples i0.., columns: training rows j0..) into the
 * running nearest two of each sample. */
static void fold_block(const fv_copy_set *s, size_t i0, size_t bi, size_t j0, size_t bj, const double *dots,
                       const double *xsq, double *b1, double *b2, size_t *j1, size_t *j2)
{
    for (size_t i = 0; i < bi; i++)
        for (size_t j = 0; j < bj; j++) {
            size_t row = j0 + j;
            if (s->first[row] != row) /* a duplicate: its first copy stands for it */
                continue;
            double q = fmax(xsq[i0 + i] + s->sq[row] - 2.0 * dots[i * bj + j], 0.0);
            size_t k = i0 + i;
            if (q < b1[k]) {
                b2[k] = b1[k];
                j2[k] = j1[k];
                b1[k] = q;
                j1[k] = row;
            } else if (q < b2[k]) {
                b2[k] = q;
                j2[k] = row;
            }
        }
}

static double distance(const fv_copy_set *s, const double *x, size_t j)
{
    double q = 0;
    for (size_t k = 0; k < s->d; k++) {
        double e = x[k] - row_value(s, j, k);
        q += e * e;
    }
    return sqrt(q);
}

int fv_copy_nearest(const fv_copy_set *s, size_t m, const double *X, double *d1, double *d2, size_t *near)
{
    size_t d = s->d;
    int st;
    double *ybuf = fv_alloc(&st, "copies: a block of training rows", BLOCK, d, sizeof *ybuf);
    double *dots = ybuf ? fv_alloc(&st, "copies: a block of products", BLOCK, BLOCK, sizeof *dots) : NULL;
    double *xsq = dots ? fv_alloc(&st, "copies: samples", m, 3, sizeof *xsq) : NULL;
    size_t *idx = xsq ? fv_alloc(&st, "copies: samples", m, 2, sizeof *idx) : NULL;
    if (!idx) {
        free(ybuf);
        free(dots);
        free(xsq);
        return st;
    }
    double *b1 = xsq + m, *b2 = b1 + m;
    size_t *j1 = idx, *j2 = idx + m;
    for (size_t i = 0; i < m; i++) {
        double q = 0;
        for (size_t k = 0; k < d; k++)
            q += X[i * d + k] * X[i * d + k];
        xsq[i] = q;
        b1[i] = b2[i] = INFINITY;
        j1[i] = j2[i] = 0;
    }
    for (size_t j0 = 0; j0 < s->n; j0 += BLOCK) {
        size_t bj = s->n - j0 < BLOCK ? s->n - j0 : BLOCK;
        for (size_t j = 0; j < bj; j++)
            for (size_t k = 0; k < d; k++)
                ybuf[j * d + k] = row_value(s, j0 + j, k);
        for (size_t i0 = 0; i0 < m; i0 += BLOCK) {
            size_t bi = m - i0 < BLOCK ? m - i0 : BLOCK;
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bi, (int)bj, (int)d, 1.0, X + i0 * d, (int)d,
                        ybuf, (int)d, 0.0, dots, (int)bj);
            fold_block(s, i0, bi, j0, bj, dots, xsq, b1, b2, j1, j2);
        }
    }
    for (size_t i = 0; i < m; i++) {
        d1[i] = distance(s, X + i * d, j1[i]);
        d2[i] = distance(s, X + i * d, j2[i]);
        if (d2[i] < d1[i]) { /* the exact distances reorder a near tie that rounding had the other way */
            double t = d1[i];
            d1[i] = d2[i];
            d2[i] = t;
            size_t u = j1[i];
            j1[i] = j2[i];
            j2[i] = u;
        }
        if (near)
            near[i] = j1[i];
    }
    free(ybuf);
    free(dots);
    free(xsq);
    free(idx);
    return FV_OK;
}

double fv_copy_ratio(double d1, double d2)
{
    return d2 > 0 ? d1 / d2 : 1.0;
}

void fv_copy_summary(size_t m, const double *d1, const double *d2, double *fraction, double *mean_d1)
{
    size_t copies = 0;
    double s = 0;
    for (size_t i = 0; i < m; i++) {
        copies += fv_copy_ratio(d1[i], d2[i]) < FV_COPY_RATIO;
        s += d1[i];
    }
    *fraction = m ? (double)copies / (double)m : 0.0;
    *mean_d1 = m ? s / (double)m : 0.0;
}
