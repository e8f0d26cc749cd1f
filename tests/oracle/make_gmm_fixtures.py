#!/usr/bin/env python3
"""Write the NPY fixtures that tests/test_gmm.c checks gmm/mmd.c and gmm/mixture.c against, so the
C code is compared with an independent numpy/scipy computation rather than with itself.

Run from the repository root:  python3 tests/oracle/make_gmm_fixtures.py

MMD (gmm/mmd.h): X (n x d) and a shifted, rescaled Y (m x d), sizes that are not multiples of the
C block size (256) so the oracle also covers partial tiles. The unbiased MMD^2 is computed here
naively from the full kernel matrices with directly computed squared differences:
  mmd2_fixed.npy  = [h, MMD^2] at the fixed bandwidth h = 1.3
  mmd2_median.npy = [h, MMD^2] with the median heuristic h = sqrt(median_{i<j} |z_i - z_j|^2 / 2)
                    over the pooled sample z = [X; Y] (numpy.median: mean of the two middle values)

Mixture log density (gmm/mixture.h): a K = 3, d = 3 mixture with unequal weights and correlated
covariances (gmm_w, gmm_mu, gmm_cov), points gmm_points (some far in the tails), and
gmm_logpdf = logsumexp_k(log w_k + scipy.stats.multivariate_normal.logpdf).
"""
import os

import numpy as np
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

OUT = os.path.join("tests", "fixtures", "gmm")
H_FIXED = 1.3


def save(name, array):
    np.save(os.path.join(OUT, name), np.ascontiguousarray(array, dtype=np.float64))


def sq_dists(A, B):
    return ((A[:, None, :] - B[None, :, :]) ** 2).sum(axis=-1)


def mmd2_unbiased(X, Y, h):
    n, m = len(X), len(Y)
    g = 1.0 / (2.0 * h * h)
    kxx, kyy, kxy = np.exp(-g * sq_dists(X, X)), np.exp(-g * sq_dists(Y, Y)), np.exp(-g * sq_dists(X, Y))
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2.0 * kxy.sum() / (n * m))


def median_bandwidth(X, Y):
    Z = np.vstack([X, Y])
    iu = np.triu_indices(len(Z), k=1)
    return np.sqrt(np.median(sq_dists(Z, Z)[iu]) / 2.0)


def mmd_fixtures(rng):
    n, m, d = 300, 277, 3
    X = rng.standard_normal((n, d))
    Y = 0.4 + 1.2 * rng.standard_normal((m, d))
    save("X.npy", X)
    save("Y.npy", Y)
    save("mmd2_fixed.npy", [H_FIXED, mmd2_unbiased(X, Y, H_FIXED)])
    h = median_bandwidth(X, Y)
    save("mmd2_median.npy", [h, mmd2_unbiased(X, Y, h)])


def gmm_fixtures(rng):
    K, d = 3, 3
    w = np.array([0.5, 0.3, 0.2])
    mu = rng.normal(scale=3.0, size=(K, d))
    cov = np.empty((K, d, d))
    for k in range(K):
        A = rng.standard_normal((d, d))
        cov[k] = A @ A.T / d + 0.3 * np.eye(d)
    P = np.vstack([rng.normal(scale=4.0, size=(40, d)), 25.0 + rng.standard_normal((2, d))])
    logp = logsumexp(np.stack([np.log(w[k]) + multivariate_normal(mu[k], cov[k]).logpdf(P) for k in range(K)]),
                     axis=0)
    for name, a in [("gmm_w", w), ("gmm_mu", mu), ("gmm_cov", cov), ("gmm_points", P), ("gmm_logpdf", logp)]:
        save(name + ".npy", a)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20251018)
    mmd_fixtures(rng)
    gmm_fixtures(rng)


if __name__ == "__main__":
    main()
