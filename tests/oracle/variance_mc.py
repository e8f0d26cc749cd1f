#!/usr/bin/env python3
"""variance_mc.py: an independent numpy oracle for gaussian/variance.c (not used by the tests).

Recomputes the exact gradient variance of docs/THEORY.md section 4, including the non-central terms for
theta != mu (same derivation as the comment block of variance.c, written with dense numpy matrices),
prints the reference values of docs/THEORY.md, and checks a perturbed field against a plain Monte-Carlo
estimate of per-sample gradients.  Usage: python3 tests/oracle/variance_mc.py
"""
import numpy as np
from scipy.linalg import sqrtm

MU = np.array([1.0, -0.5])
M = np.array([[2.0, 0.6], [0.6, 1.0]])
S = np.real(sqrtm(M))


def rot(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def exact(coupling, theta, Theta, t, f, fp=0.0, R=None):
    """(var_total, var_theta, E g, E|g|^2 per block, loss) at one t."""
    d = len(theta)
    I = np.eye(d)
    Ai = np.linalg.inv(I + t * Theta)
    if coupling == "independent":
        L = np.hstack([(1 - t) * I, t * S, f * I])
        U = np.hstack([-I, S, fp * I])
    else:
        K = S @ R
        L = np.hstack([(1 - t) * I + t * K, f * I])
        U = np.hstack([K - I, fp * I])
    W = Ai @ L
    Rr = U - Theta @ W
    G = Ai.T @ Rr
    r0 = Ai @ (MU - theta)
    w0 = t * r0
    a0 = Ai.T @ r0
    trP, trQ = (G**2).sum(), (W**2).sum()
    C = G @ W.T
    trPQ, cross = (C**2).sum(), a0 @ C @ w0
    var_theta = 4 * trP
    var_Theta = 4 * (a0 @ a0 * trQ + w0 @ w0 * trP + 2 * cross + trP * trQ + trPQ)
    Eg = np.concatenate([-2 * a0, (-2 * (np.outer(a0, w0) + C)).ravel()])
    E2 = np.array([4 * (a0 @ a0 + trP),
                   4 * (a0 @ a0 * w0 @ w0 + a0 @ a0 * trQ + w0 @ w0 * trP + 4 * cross + trP * trQ + 2 * trPQ)])
    loss = r0 @ r0 + (Rr**2).sum()
    return var_theta + var_Theta, var_theta, Eg, E2, loss


def integrated(coupling, theta, Theta, f, R=None, n=400):
    ts, ws = np.polynomial.legendre.leggauss(n)
    E2, Eg = 0.0, 0.0
    for t, w in zip((ts + 1) / 2, ws / 2):
        e = exact(coupling, theta, Theta, t, f, R=R)
        E2, Eg = E2 + w * e[3].sum(), Eg + w * e[2]
    return E2 - Eg @ Eg


def monte_carlo(theta, Theta, t, f, R, n, rng):
    d = len(theta)
    X0, Z = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    X1 = MU + X0 @ (S @ R).T
    x, u = (1 - t) * X0 + t * X1 + f * Z, X1 - X0
    A = np.eye(d) + t * Theta
    w = np.linalg.solve(A, (x - t * theta).T).T
    r = u - theta - w @ Theta.T
    a = np.linalg.solve(A.T, r.T).T
    g = np.hstack([-2 * a, (-2 * a[:, :, None] * w[:, None, :]).reshape(n, d * d)])
    return g.var(0).sum(), (r**2).sum(1).mean()


def main():
    ot = S - np.eye(2)
    for name, coupling, Theta, f in [("rot data OT field f=0", "rotation", ot, 0.0),
                                     ("rot data OT field f=0.3", "rotation", ot, 0.3),
                                     ("rot data rot field f=0.3", "rotation", S @ rot(120) - np.eye(2), 0.3),
                                     ("independent data OT field f=0", "independent", ot, 0.0),
                                     ("independent data OT field f=0.3", "independent", ot, 0.3)]:
        v = exact(coupling, MU, Theta, 0.6, f, R=rot(120))
        print(f"t=0.6 {name}: total {v[0]:.10g} theta {v[1]:.10g}")
    for deg, sigma in [(120, 0.3), (120, 0.05), (150, 0.05)]:
        R = rot(deg)
        print(f"integrated {deg} deg sigma {sigma}: OT {integrated('rotation', MU, ot, sigma, R):.10g}"
              f" rot {integrated('rotation', MU, S @ R - np.eye(2), sigma, R):.10g}")
    rng = np.random.default_rng(1)
    theta = MU + 0.3 * rng.standard_normal(2)
    Theta = ot + 0.2 * rng.standard_normal((2, 2))
    ex = exact("rotation", theta, Theta, 0.37, 0.4, R=rot(70))
    mc = monte_carlo(theta, Theta, 0.37, 0.4, rot(70), 400000, rng)
    print(f"perturbed field: exact {ex[0]:.6g} loss {ex[4]:.6g}; MC {mc[0]:.6g} loss {mc[1]:.6g}")


if __name__ == "__main__":
    main()
