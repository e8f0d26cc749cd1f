#!/usr/bin/env python3
"""peer_unet_cuda.py: the PyTorch peer of bench_unet_cuda.c, U-Net training steps per second on the GPU.

The same step: torchcfm's UNetModelWrapper at the paper's CIFAR-10 configuration (dim (3, 32, 32),
num_channels 128, channel_mult [1, 2, 2, 2], num_res_blocks 2, attention_resolutions "16", num_heads 4,
num_head_channels 64, dropout 0.1, model.train()), one batch (x_t, u standard normal, t uniform) made
once; per step loss = mean((model(t, x_t) - u)^2), backward, clip_grad_norm_(1.0), Adam(lr 2e-4; the
default foreach implementation, --fused for fused=True), then the EMA 0.9999 over every parameter
(torch._foreach_lerp_), and loss.item() (flowvar reads its loss every step). Eager mode.
Precision: fp32 (TF32 off for matmuls and cuDNN convolutions), --tf32 (both on), --bf16 (autocast to
bfloat16 around the forward and the loss, fp32 weights and optimizer, TF32 off).

Prints TSV like bench_unet_cuda: "meta KEY VALUE", "steps torch REP SECONDS_PER_STEP",
"memory torch_peak_allocated BYTES".
"""
import argparse
import contextlib
import math
import sys

import torch

from gpu_timing import time_steps


def torchcfm_unet():
    """torchcfm's UNetModelWrapper and torchcfm's version. Where the package's __init__ cannot run (it
    imports POT, which a GPU machine without a registry may lack; scripts/gpu-bundle carries torchcfm's
    pure-Python sources only), its models subpackage is imported under an empty parent package."""
    try:
        import torchcfm
        from torchcfm.models.unet.unet import UNetModelWrapper
        return UNetModelWrapper, torchcfm.__version__
    except ImportError:
        import importlib.util
        import types

        spec = importlib.util.find_spec("torchcfm")
        if spec is None:
            sys.exit("peer_unet_cuda: torchcfm is not importable (scripts/gpu-bundle carries it in .gpu/python)")
        parent = types.ModuleType("torchcfm")
        parent.__path__ = list(spec.submodule_search_locations)
        sys.modules["torchcfm"] = parent
        from torchcfm.models.unet.unet import UNetModelWrapper
        from torchcfm.version import __version__
        return UNetModelWrapper, __version__ + " (models only)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--fused", action="store_true")
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    a = ap.parse_args()
    UNetModelWrapper, version = torchcfm_unet()
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    torch.manual_seed(20251123)
    model = UNetModelWrapper(dim=(3, 32, 32), num_res_blocks=2, num_channels=128, channel_mult=[1, 2, 2, 2],
                             num_heads=4, num_head_channels=64, attention_resolutions="16", dropout=0.1).to(dev)
    model.train()
    params = [p for p in model.parameters()]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=2e-4, fused=True) if a.fused else torch.optim.Adam(params, lr=2e-4)
    B = a.batch
    x, u, t = torch.randn(B, 3, 32, 32, device=dev), torch.randn(B, 3, 32, 32, device=dev), torch.rand(B, device=dev)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext

    def step():
        with autocast():
            loss = torch.mean((model(t, x) - u) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1 - 0.9999)
        val = loss.item()
        if not math.isfinite(val):
            sys.exit(f"peer_unet_cuda: the loss is {val}")

    print(f"meta\ttorch_version\t{torch.__version__}")
    print(f"meta\ttorchcfm_version\t{version}")
    print(f"meta\ttorch_gpu\t{torch.cuda.get_device_name(0)}")
    print(f"meta\ttorch_cudnn\t{torch.backends.cudnn.version()}")
    print(f"meta\tparameters\t{sum(p.numel() for p in params)}")
    prec = "bf16 autocast" if a.bf16 else "tf32" if a.tf32 else "fp32"
    print(f"meta\ttorch_mode\teager, adam {'fused' if a.fused else 'default (foreach)'}, {prec}, batch {B}")
    sys.stdout.flush()
    time_steps(step, a.warmup, a.reps, a.steps)


if __name__ == "__main__":
    main()
