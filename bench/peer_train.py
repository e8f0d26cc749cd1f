#!/usr/bin/env python3
"""peer_train.py: the PyTorch peer of bench_train.c, CFM training steps per second on the CPU.

Same problem and step as bench_train.c: source N(0, I), target N(mu, M) with M = A A^T / d + 0.5 I and
mu Gaussian, independent coupling, no noise; per step x0 ~ N(0, I), x1 = mu + N(0, I) M^{1/2} (the
symmetric root, as flowvar's fv_gaussian_sample), t ~ U(0,1) per row, x_t = (1-t) x0 + t x1,
u = x1 - x0, loss mean((v - u)^2) with v = net([x_t, t]); net = nn.Sequential(Linear(51, 256), SiLU,
Linear(256, 256), SiLU, Linear(256, 256), SiLU, Linear(256, 50)); torch.optim.Adam(lr=1e-3), its
defaults otherwise (on CPU tensors that is the per-tensor for-loop implementation). float32.

Threads: torch.set_num_threads(--threads) (the count flowvar's OpenBLAS uses); torch's intra-op pool
also drives its BLAS. Timed: --reps runs of --steps steps after --warmup steps; after every step the
loss is read (loss.item()) and must be finite, as flowvar checks its loss every step.

Prints TSV like bench_train: "meta KEY VALUE", "steps torch REP SECONDS_PER_STEP".
"""
import argparse
import math
import platform
import sys
import time

import torch
from torch import nn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--fused", action="store_true", help="torch.optim.Adam(fused=True) instead of the default")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(20251021)
    d, w, B = 50, 256, a.batch
    A = torch.randn(d, d, dtype=torch.float64)
    M = A @ A.T / d + 0.5 * torch.eye(d, dtype=torch.float64)
    evals, V = torch.linalg.eigh(M)
    root = ((V * evals.sqrt()) @ V.T).float()
    mu = torch.randn(d).float()

    net = nn.Sequential(nn.Linear(d + 1, w), nn.SiLU(), nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w), nn.SiLU(),
                        nn.Linear(w, d))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True) if a.fused else \
        torch.optim.Adam(net.parameters(), lr=1e-3)

    def step(check):
        x0 = torch.randn(B, d)
        x1 = mu + torch.randn(B, d) @ root.T
        t = torch.rand(B, 1)
        xt = (1 - t) * x0 + t * x1
        u = x1 - x0
        v = net(torch.cat([xt, t], dim=1))
        loss = torch.mean((v - u) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if check:
            val = loss.item()
            if not math.isfinite(val):
                sys.exit(f"peer_train: the loss is {val}")

    print(f"meta\ttorch_version\t{torch.__version__}")
    print(f"meta\tpython\t{platform.python_version()}")
    print(f"meta\ttorch_threads\t{torch.get_num_threads()}")
    print(f"meta\ttorch_interop_threads\t{torch.get_num_interop_threads()}")
    cfg = torch.__config__.show()
    blas = [ln.strip() for ln in cfg.splitlines() if "BLAS_INFO" in ln or "LAPACK_INFO" in ln]
    print(f"meta\ttorch_blas\t{'; '.join(blas) or '?'}")
    print(f"meta\ttorch_mkldnn\t{torch.backends.mkldnn.is_available()}")
    print(f"meta\ttorch_cpu_capability\t{torch.backends.cpu.get_cpu_capability()}")
    print(f"meta\ttorch_adam\t{'fused' if a.fused else 'default (for-loop on CPU)'}")
    sys.stdout.flush()

    for i in range(a.warmup):
        step(True)
    for rep in range(a.reps):
        t0 = time.perf_counter()
        for i in range(a.steps):
            step(True)
        dt = (time.perf_counter() - t0) / a.steps
        print(f"steps\ttorch{'_fused' if a.fused else ''}\t{rep}\t{dt:.9f}")
        sys.stdout.flush()
    print(f"peer_train: torch {1 / dt:.1f} steps/s (last rep, {a.threads} threads)", file=sys.stderr)


if __name__ == "__main__":
    main()
