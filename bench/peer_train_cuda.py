#!/usr/bin/env python3
"""peer_train_cuda.py: the PyTorch peer of bench_train_cuda.c, CFM training steps per second on the GPU.

Same problem and step: source N(0, I), target N(mu, M) with M = A A^T / d + 0.5 I and mu Gaussian,
independent coupling, no noise; per step x0 ~ N(0, I), x1 = mu + N(0, I) M^{1/2}, t ~ U(0,1) per row,
x_t = (1-t) x0 + t x1, u = x1 - x0, loss mean((v - u)^2) with v = net([x_t, t]); net = Linear(d+1, w),
SiLU, (Linear(w, w), SiLU) x (depth-1), Linear(w, d); torch.optim.Adam(lr=1e-3) (on CUDA tensors the
default is the foreach implementation; --fused for fused=True). float32; TF32 matmuls off unless --tf32.
After every step the loss is read (loss.item()) and must be finite, as flowvar checks its loss every
step. Eager mode; --compile wraps the step's model in torch.compile.

Prints TSV like bench_train_cuda: "meta KEY VALUE", "steps torch REP SECONDS_PER_STEP",
"memory torch_peak_allocated BYTES".
"""
import argparse
import math
import sys

import torch

from gpu_timing import time_steps
from torch import nn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=50)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--fused", action="store_true")
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()

    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.manual_seed(20251021)
    d, w, B = a.d, a.width, a.batch
    A = torch.randn(d, d, dtype=torch.float64)
    M = A @ A.T / d + 0.5 * torch.eye(d, dtype=torch.float64)
    evals, V = torch.linalg.eigh(M)
    root = ((V * evals.sqrt()) @ V.T).float().to(dev)
    mu = torch.randn(d).float().to(dev)
    layers = [nn.Linear(d + 1, w), nn.SiLU()]
    for _ in range(a.depth - 1):
        layers += [nn.Linear(w, w), nn.SiLU()]
    layers.append(nn.Linear(w, d))
    net = nn.Sequential(*layers).to(dev)
    model = torch.compile(net) if a.compile else net
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True) if a.fused else \
        torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        x0 = torch.randn(B, d, device=dev)
        x1 = mu + torch.randn(B, d, device=dev) @ root.T
        t = torch.rand(B, 1, device=dev)
        xt = (1 - t) * x0 + t * x1
        u = x1 - x0
        v = model(torch.cat([xt, t], dim=1))
        loss = torch.mean((v - u) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        val = loss.item()
        if not math.isfinite(val):
            sys.exit(f"peer_train_cuda: the loss is {val}")

    print(f"meta\ttorch_version\t{torch.__version__}")
    print(f"meta\ttorch_gpu\t{torch.cuda.get_device_name(0)}")
    mode = "compile" if a.compile else "eager"
    print(f"meta\ttorch_mode\t{mode}, adam {'fused' if a.fused else 'default (foreach)'}, tf32 {a.tf32}")
    sys.stdout.flush()
    time_steps(step, a.warmup, a.reps, a.steps)


if __name__ == "__main__":
    main()
