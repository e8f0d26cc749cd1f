#!/usr/bin/env python3
"""peer_field.py: the numpy/scipy peer of bench_field.c, doing the same job the straightforward way.

Same problem family as the C benchmark (source N(0, I), target N(mu, M), M = A A^T / d + 0.5 I):
  (a) build: Theta = scipy.linalg.sqrtm(M) - I;
  (b) eval:  at n points X and nt times t_k = k / (nt - 1),
             out[k] = mu + (Theta @ scipy.linalg.solve(I + t Theta, (X - t mu).T)).T
      into a preallocated, already touched nt x n x d array (as the C side's output is).
Also numpy's own dgemm rate on a large square product just before and just after each part (b), so
that the report can tell how fast the machine was while the peer ran.

Prints TSV on stdout in bench_field's row format ("meta KEY VALUE", "time IMPL PART D REPS MEDIAN_S
MIN_S", "rate IMPL D SIZE REPS MEDIAN_GFLOPS MAX_GFLOPS"); progress on stderr.
Usage: peer_field.py [--dims 50,784,3072] [--n 10000] [--nt 10] [--rate-size 3072]
"""
import argparse
import ctypes
import glob
import os
import sys
import time

try:
    import numpy as np
    import scipy
    import scipy.linalg
except ImportError as e:  # run.sh checks first; this is for direct use
    sys.exit(f"peer_field.py: {e}; install with: python3 -m pip install numpy scipy")


def build_reps(d):  # bench_field.c's build_reps, but one run past d = 1000: sqrtm takes minutes there
    return 31 if d <= 100 else 9 if d <= 1000 else 1


def eval_reps(d):  # bench_field.c's eval_reps
    return 21 if d <= 100 else 3 if d <= 1000 else 1


def openblas_info(package, stem):
    """(config, corename, threads) of the OpenBLAS bundled in a wheel's <package>.libs, via ctypes
    on the already loaded library; None where it cannot be found."""
    mod = sys.modules[package]
    libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(mod.__file__)), package + ".libs", "lib*openblas*.so*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("64_", ""):
            get_cfg = getattr(lib, f"{stem}get_config{suffix}", None)
            if get_cfg is None:
                continue
            get_cfg.restype = ctypes.c_char_p
            core = getattr(lib, f"{stem}get_corename{suffix}")
            core.restype = ctypes.c_char_p
            thr = getattr(lib, f"{stem}get_num_threads{suffix}")
            return get_cfg().decode(), core().decode(), int(thr())
    return None


def median_min(ts):
    ts = sorted(ts)
    n = len(ts)
    med = ts[n // 2] if n % 2 else 0.5 * (ts[n // 2 - 1] + ts[n // 2])
    return med, ts[0]


def emit(*fields):
    print("\t".join(str(f) for f in fields), flush=True)


def emit_time(impl, part, d, ts):
    med, mn = median_min(ts)
    emit("time", impl, part, d, len(ts), f"{med:.6g}", f"{mn:.6g}")


def make_problem(d):
    rng = np.random.default_rng(20240601 + d)
    mu = rng.standard_normal(d)
    A = rng.standard_normal((d, d))
    M = A @ A.T / d + 0.5 * np.eye(d)
    return mu, 0.5 * (M + M.T)


def build(M):
    return scipy.linalg.sqrtm(M) - np.eye(M.shape[0])


def evaluate(Theta, mu, ts, X, out):
    eye = np.eye(Theta.shape[0])
    for k, t in enumerate(ts):
        out[k] = mu + (Theta @ scipy.linalg.solve(eye + t * Theta, (X - t * mu).T)).T


def rate(size):
    """Three timed runs of numpy's dgemm on a size^3 product after a warm-up, in GFLOP/s."""
    rng = np.random.default_rng(7)
    A = rng.standard_normal((size, size))
    B = rng.standard_normal((size, size))
    A @ B
    g = []
    for _ in range(3):
        t0 = time.perf_counter()
        A @ B
        g.append(2.0 * size**3 / (time.perf_counter() - t0) / 1e9)
    return g


def emit_rate(impl, d, size, g):
    g = sorted(g)
    med = g[len(g) // 2] if len(g) % 2 else 0.5 * (g[len(g) // 2 - 1] + g[len(g) // 2])
    emit("rate", impl, d, size, len(g), f"{med:.6g}", f"{g[-1]:.6g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="50,784,3072")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--nt", type=int, default=10)
    ap.add_argument("--rate-size", type=int, default=3072)
    a = ap.parse_args()
    dims = [int(s) for s in a.dims.replace(",", " ").split()]
    ts = [k / (a.nt - 1) for k in range(a.nt)]

    emit("meta", "numpy_version", np.__version__)
    emit("meta", "scipy_version", scipy.__version__)
    emit("meta", "python_version", sys.version.split()[0])
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        emit("meta", "numpy_blas", f"{cfg.get('name')} {cfg.get('version')}")
    except Exception:  # older numpy: no dict mode
        pass
    for package, stem in (("numpy", "scipy_openblas_"), ("scipy", "scipy_openblas_")):
        info = openblas_info(package, stem)
        if info:
            emit("meta", f"{package}_openblas_config", info[0])
            emit("meta", f"{package}_openblas_corename", info[1])
            emit("meta", f"{package}_blas_threads", info[2])
    emit("meta", "peer_OPENBLAS_NUM_THREADS", os.environ.get("OPENBLAS_NUM_THREADS", "(unset)"))

    for d in dims:
        mu, M = make_problem(d)
        print(f"peer_field.py: d = {d}: sqrtm x {build_reps(d)}", file=sys.stderr, flush=True)
        if d <= 1000:
            build(M)  # warm-up, as on the C side
        tb = []
        for _ in range(build_reps(d)):
            t0 = time.perf_counter()
            Theta = build(M)
            tb.append(time.perf_counter() - t0)
        emit_time("scipy", "build", d, tb)
        if np.iscomplexobj(Theta):  # sqrtm of an SPD matrix should be real
            sys.exit(f"peer_field.py: sqrtm returned a complex matrix at d = {d}")

        print(f"peer_field.py: d = {d}: eval at {a.n} points, {a.nt} times", file=sys.stderr, flush=True)
        g_before = rate(a.rate_size)
        X = np.random.default_rng(20240602 + d).standard_normal((a.n, d))
        out = np.empty((a.nt, a.n, d))
        out.fill(1.0)  # touched now, outside the timed region (np.zeros would map pages lazily)
        if d <= 100:
            evaluate(Theta, mu, ts, X, out)
        te = []
        for _ in range(eval_reps(d)):
            t0 = time.perf_counter()
            evaluate(Theta, mu, ts, X, out)
            te.append(time.perf_counter() - t0)
        g_after = rate(a.rate_size)
        emit_time("scipy", "eval", d, te)
        emit_rate("numpy", d, a.rate_size, g_before + g_after)
        emit_rate("numpy_before", d, a.rate_size, g_before)
        emit_rate("numpy_after", d, a.rate_size, g_after)
        # sanity: the last time's rows satisfy (I + t Theta)(v - mu) = Theta (x - t mu)
        t = ts[-1]
        rows = [0, a.n - 1]
        lhs = (out[-1][rows] - mu) + t * (out[-1][rows] - mu) @ Theta.T
        rhs = (X[rows] - t * mu) @ Theta.T
        rel = float(np.max(np.abs(lhs - rhs)) / np.max(np.abs(rhs)))
        emit("check_peer", d, f"{rel:.3g}", "ok" if rel < 1e-8 else "FAIL")
        del out, X


if __name__ == "__main__":
    main()
