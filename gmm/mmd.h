/* mmd.h: the maximum mean discrepancy between two samples, the metric of the paper's GMM
 * experiment (docs/THEORY.md section 5, Table 1: unbiased MMD^2, Gaussian kernel, median bandwidth), and
 * the biased estimator (V-statistic), which is 0 for two identical samples.
 *
 * Kernel: k(x, y) = exp(-|x - y|^2 / (2 h^2)).
 *
 * Bandwidth convention (the median heuristic): h^2 = med / 2, where med is the median of the
 * squared distances |z_i - z_j|^2 over the distinct pairs i < j of the pooled sample Z = [X; Y],
 * so that the kernel is exp(-|x - y|^2 / med). The median of an even number of pairs is the mean of
 * the two middle values (numpy.median). When the pooled sample has more than FV_MMD_MEDIAN_MAX
 * points N, the median is taken over the pairs of the fixed, evenly spaced subsample of
 * FV_MMD_MEDIAN_MAX pooled points with indices floor(i N / FV_MMD_MEDIAN_MAX), i = 0, 1, ...
 * (pooled index p < n is row p of X, else row p - n of Y). That needs no random stream, is the same
 * on every run, and keeps X and Y in proportion. The pair distances are held in memory for the
 * selection: at most 4000 * 3999 / 2 doubles (64 MB). */
#ifndef FV_GMM_MMD_H
#define FV_GMM_MMD_H

#include <stddef.h>

/* Pooled sample size above which the median heuristic uses the evenly spaced subsample. */
#define FV_MMD_MEDIAN_MAX 4000
/* Rows per block of the blocked kernel sums (one block x block tile in memory at a time). */
#define FV_MMD_BLOCK 256

/* The median-heuristic bandwidth h = sqrt(med / 2) of the pooled sample (see above). n or m may be
 * 0 (then it is the bandwidth of one sample) but n + m >= 2. FV_EINPUT if d = 0, a point is not
 * finite, or med = 0 (more than half of the pairs coincide: no scale to take a bandwidth from). */
int fv_mmd_median_bandwidth(size_t n, size_t m, size_t d, const double *X, const double *Y, double *h);

/* Unbiased MMD^2 (U-statistic, diagonal terms excluded in the XX and YY sums):
 *   1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j) - 2/(nm) sum_{i,j} k(x_i, y_j).
 * It can be negative when the distributions are equal. X is n x d, Y is m x d, n, m >= 2, d >= 1.
 * h <= 0: the median heuristic; *h_used (may be NULL) receives the bandwidth used. O((n+m)^2 d)
 * time, computed in FV_MMD_BLOCK x FV_MMD_BLOCK tiles: squared distances from the row norms and a
 * cblas_dgemm per tile, after centring the pooled sample on its mean (the kernel is translation
 * invariant, and centring keeps the norm expansion free of cancellation). Memory: the centred
 * copy of the pooled sample ((n+m) x d) plus one tile, never an (n+m)^2 matrix. */
int fv_mmd2_unbiased(size_t n, size_t m, size_t d, const double *X, const double *Y, double h, double *mmd2,
                     double *h_used);

/* Biased MMD^2 (V-statistic, diagonal terms included): |mean_i phi(x_i) - mean_j phi(y_j)|^2 in the
 * kernel's feature space, so >= 0, and exactly 0 when X and Y hold the same points. It is the squared
 * distance between the two empirical distributions, the quantity a memorization measure needs: the
 * unbiased estimator of two identical samples of n points is -(2/n)(1 - mean off-diagonal kernel),
 * not 0. Same arguments, checks and cost as fv_mmd2_unbiased. */
int fv_mmd2_biased(size_t n, size_t m, size_t d, const double *X, const double *Y, double h, double *mmd2,
                   double *h_used);

#endif
