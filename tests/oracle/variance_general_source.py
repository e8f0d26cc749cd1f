#!/usr/bin/env python3
"""variance_general_source.py: an independent numpy check of `flowvar variance` with a general source.

For a d = 3 problem N(m0, S0) -> N(m1, S1) it builds every coupling and named field from their
definitions (docs/variance_general_source.md): the OT map G from scipy's sqrtm, the rotational coupling
X1 = m1 + S1^{1/2} R S0^{-1/2} (X0 - m0), the Markov member Theta_t = B (I - t B)^{-1} with
B = Cov(u, X_t) Cov(X_t)^{-1} written out from the interpolant (not the engine's N E^{-1} form), and
compares the engine's exact var_total at t = 0.4 with a plain numpy Monte-Carlo estimate of the
per-sample gradient's covariance trace. Usage (after `make`): python3 tests/oracle/variance_general_source.py
"""
import subprocess

import numpy as np
from scipy.linalg import sqrtm

M0, M1 = np.array([0.5, -0.3, 1.0]), np.array([1.0, -0.5, 0.2])
S0 = np.array([[1.5, 0.3, 0.1], [0.3, 0.8, -0.2], [0.1, -0.2, 0.6]])
S1 = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, 0.3], [0.0, 0.3, 0.7]])
SIGMA, T, DEG = 0.2, 0.4, 60.0


def root(A):
    return np.real(sqrtm(A))


def rotation(deg):
    a = np.deg2rad(deg)
    R = np.eye(3)
    R[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return R


def field(kind, coupling):
    """theta, Theta of a named field at T (source-centred family)."""
    d = len(M0)
    L0, L0i, R1 = root(S0), np.linalg.inv(root(S0)), root(S1)
    if kind == "ot":
        return M1 - M0, L0i @ root(L0 @ S1 @ L0) @ L0i - np.eye(d)
    if kind == "rotation":
        return M1 - M0, R1 @ rotation(DEG) @ L0i - np.eye(d)
    # Markov: E[u | X_t] = b + B (x - m0 - t b), B = Cov(u, X_t) Cov(X_t)^-1 for independent pairs
    D = (1 - T) ** 2 * S0 + T**2 * S1 + SIGMA**2 * np.eye(d)
    B = (T * S1 - (1 - T) * S0) @ np.linalg.inv(D)
    return M1 - M0, B @ np.linalg.inv(np.eye(d) - T * B)


def monte_carlo(coupling, theta, Theta, n, rng):
    d = len(M0)
    L0, R1 = root(S0), root(S1)
    X0 = M0 + rng.standard_normal((n, d)) @ L0.T
    if coupling == "ot":
        X1 = M1 + (X0 - M0) @ (np.linalg.inv(L0) @ root(L0 @ S1 @ L0) @ np.linalg.inv(L0)).T
    elif coupling == "rotation":
        X1 = M1 + (X0 - M0) @ (R1 @ rotation(DEG) @ np.linalg.inv(L0)).T
    else:
        X1 = M1 + rng.standard_normal((n, d)) @ R1.T
    Z = rng.standard_normal((n, d))
    x, u = (1 - T) * X0 + T * X1 + SIGMA * Z, X1 - X0
    A = np.eye(d) + T * Theta
    w = np.linalg.solve(A, (x - M0 - T * theta).T).T
    r = u - theta - w @ Theta.T
    a = np.linalg.solve(A.T, r.T).T
    g = np.hstack([-2 * a, (-2 * a[:, :, None] * w[:, None, :]).reshape(n, d * d)])
    batches = g.reshape(50, -1, g.shape[1]).var(1, ddof=1).sum(1)
    return g.var(0, ddof=1).sum(), batches.std(ddof=1) / np.sqrt(50)


def flowvar(coupling, kind):
    lst = lambda a: ",".join(f"{v:.17g}" for v in np.ravel(a))
    cmd = ["build/flowvar", "variance", "--source-mean", lst(M0), "--source-cov", lst(S0), "--target-mean", lst(M1),
           "--target-cov", lst(S1), "--coupling", coupling, "--angle", str(DEG), "--field", kind, "--sigma",
           str(SIGMA), "--t", str(T)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
    return float(out[1].split("\t")[3])


def main():
    rng = np.random.default_rng(2510)
    worst = 0.0
    for coupling in ["ot", "rotation", "independent"]:
        for kind in ["ot", "rotation", "markov"]:
            ex = flowvar(coupling, kind)
            mc, se = monte_carlo(coupling, *field(kind, coupling), 400000, rng)
            worst = max(worst, abs(mc - ex) / se)
            print(f"{coupling:12s} coupling, {kind:8s} field: flowvar {ex:.6g}  numpy MC {mc:.6g} +- {se:.2g}"
                  f"  (z = {(mc - ex) / se:+.2f})")
    print(f"largest |z| = {worst:.2f}: {'PASS' if worst <= 4 else 'FAIL'}")


if __name__ == "__main__":
    main()
