#!/usr/bin/env python3
"""Write tests/fixtures/import/, the torchcfm models and torch's answers that tests/test_import.c holds
`flowvar import`, eval and sample against; runs scripts/export-torchcfm.py on two .pt files on the way.

Run from the repository root:
    python3 -m pip install torch numpy safetensors torchcfm==1.0.7 pot
    python3 tests/oracle/make_import_fixtures.py
The C tests need none of this: the fixtures are committed (about 1.6 MB).

Models:
  MLP   torchcfm.models.MLP(dim=2, w=16, time_varying=True): Linear(3, 16), SELU, Linear(16, 16), SELU,
        Linear(16, 16), SELU, Linear(16, 2), input [x, t]; torch's default init under a fixed seed. Its EMA
        is the same network with every weight moved by 0.05 N(0, 1).
  U-Net torchcfm's UNetModelWrapper(dim=(3, 32, 32), num_channels=32, num_res_blocks=1, channel_mult=[1, 2],
        num_heads=2, num_head_channels=32, attention_resolutions="16" (torchcfm's default: attention at the
        16 x 16 level), dropout=0); zero-initialized tensors drawn again and GroupNorm's affine parameters
        spread as in make_unet_fixture.py, so that every tensor (and the time) reaches the output.
        64 channels at the second level, so GroupNorm's 32 groups do not cancel the time embedding.

Files (tests/fixtures/import/):
  mlp.safetensors          the MLP's state_dict, F32
  mlp_bf16.safetensors     the same in BF16, every name under DataParallel's "module." prefix
  mlp_prefix.safetensors   live and EMA weights in one F64 file, the EMA under "ema_model."
  mlp_pt/                  export-torchcfm.py of train_cifar10.py's checkpoint dict {"net_model" (with the
                           "module." prefix), "ema_model", "optim", "sched", "step"} of the MLP:
                           weights.safetensors, ema.safetensors, config.json
  unet/                    export-torchcfm.py --dtype f16 --num-heads 2 --num-head-channels 32
                           --dropout 0 of a bare U-Net state_dict .pt (with the "module." prefix):
                           weights.safetensors (F16), config.json
  reference.safetensors    torch's answers, F64 (computed in float32 from the weights as stored):
    mlp.x (6, 2), mlp.times (4,): points and times; mlp.v, mlp.v_ema, mlp.v_bf16 (4, 6, 2): v(x, t) of
    the live, EMA and BF16-rounded MLP; mlp.x0 (6, 2), mlp.euler4, mlp.euler4_ema (6, 2): 4 Euler steps
    of dx/dt = v(x, t) from t = 0 (t_k = k/4, x carried in float64);
    unet.x (2, 3, 32, 32), unet.times (2,), unet.v (2, 2, 3, 32, 32), unet.x0, unet.euler4 (2, 3, 32, 32):
    the same for the F16-rounded U-Net.
Metadata: versions, the model settings, and "unet.nparams".
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import safetensors
import torch
import torchcfm
from safetensors.numpy import save_file as save_np
from safetensors.torch import load_file, save_file
from torchcfm.models import MLP
from torchcfm.models.unet import UNetModel  # torchcfm exports UNetModelWrapper under this name

OUT = os.path.join("tests", "fixtures", "import")
EXPORT = os.path.join("scripts", "export-torchcfm.py")
SEED = 20261203
UNET = dict(dim=(3, 32, 32), num_channels=32, num_res_blocks=1, channel_mult=[1, 2], num_heads=2,
            num_head_channels=32, attention_resolutions="16", dropout=0.0)


def informative_weights(model, gen):
    for m in model.modules():
        if isinstance(m, torch.nn.GroupNorm):
            with torch.no_grad():
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=gen))
        elif isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
            if not m.weight.detach().any():
                m.reset_parameters()


def mlp_v(model, x, t):
    tt = torch.full((x.shape[0], 1), float(t), dtype=torch.float32)
    return model(torch.cat([x.float(), tt], dim=1))


def unet_v(model, x, t):
    return model(torch.full((x.shape[0],), float(t), dtype=torch.float32), x.float())


@torch.no_grad()
def values(model, v, x, times):
    return torch.stack([v(model, x, t) for t in times]).double()


@torch.no_grad()
def euler(model, v, x0, steps=4):
    x = x0.double().clone()
    for k in range(steps):
        x = x + v(model, x, k / steps).double() / steps
    return x


def with_prefix(sd, prefix):
    return {prefix + k: v for k, v in sd.items()}


def export(pt, out, *flags):
    subprocess.run([sys.executable, EXPORT, pt, "--out", out, *flags], check=True)


def loaded(model, path, prefix=""):
    sd = {k[len(prefix):]: v.float() for k, v in load_file(path).items()}
    model.load_state_dict(sd)
    return model.eval()


def main():
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + 1)
    os.makedirs(OUT, exist_ok=True)
    ref, meta = {}, {"torch": torch.__version__, "torchcfm": torchcfm.__version__,
                     "safetensors": safetensors.__version__, "seed": str(SEED)}

    # ---- MLP -------------------------------------------------------------------------------------------
    mlp = MLP(dim=2, w=16, time_varying=True).eval()
    ema = MLP(dim=2, w=16, time_varying=True).eval()
    sd = {k: v.detach().clone() for k, v in mlp.state_dict().items()}
    sd_ema = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in sd.items()}
    ema.load_state_dict(sd_ema)
    save_file(sd, os.path.join(OUT, "mlp.safetensors"))
    save_file(with_prefix({k: v.bfloat16() for k, v in sd.items()}, "module."), os.path.join(OUT, "mlp_bf16.safetensors"))
    both = {k: v.double() for k, v in sd.items()}
    both.update(with_prefix({k: v.double() for k, v in sd_ema.items()}, "ema_model."))
    save_file(both, os.path.join(OUT, "mlp_prefix.safetensors"))
    mlp_bf16 = MLP(dim=2, w=16, time_varying=True)
    mlp_bf16.load_state_dict({k: v.bfloat16().float() for k, v in sd.items()})
    mlp_bf16.eval()

    with tempfile.TemporaryDirectory() as tmp:
        pt = os.path.join(tmp, "otcfm_weights_step_400.pt")
        opt = torch.optim.Adam(mlp.parameters(), lr=2e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lambda s: 1.0)
        torch.save({"net_model": with_prefix(sd, "module."), "ema_model": sd_ema, "sched": sched.state_dict(),
                    "optim": opt.state_dict(), "step": 400}, pt)
        export(pt, os.path.join(OUT, "mlp_pt"))

    x = torch.randn(6, 2, generator=gen)
    times = [0.0, 0.25, 0.6, 1.0]
    x0 = torch.randn(6, 2, generator=gen)
    ref.update({"mlp.x": x.double(), "mlp.times": torch.tensor(times, dtype=torch.float64),
                "mlp.v": values(mlp, mlp_v, x, times), "mlp.v_ema": values(ema, mlp_v, x, times),
                "mlp.v_bf16": values(mlp_bf16, mlp_v, x, times), "mlp.x0": x0.double(),
                "mlp.euler4": euler(mlp, mlp_v, x0), "mlp.euler4_ema": euler(ema, mlp_v, x0)})
    # the exported files hold what went in
    check = loaded(MLP(dim=2, w=16, time_varying=True), os.path.join(OUT, "mlp_pt", "ema.safetensors"))
    assert torch.equal(values(check, mlp_v, x, times), ref["mlp.v_ema"])

    # ---- U-Net -----------------------------------------------------------------------------------------
    unet = UNetModel(**UNET)
    informative_weights(unet, gen)
    with tempfile.TemporaryDirectory() as tmp:
        pt = os.path.join(tmp, "unet_state_dict.pt")
        torch.save(with_prefix(unet.state_dict(), "module."), pt)
        export(pt, os.path.join(OUT, "unet"), "--dtype", "f16", "--num-heads", "2", "--num-head-channels", "32",
               "--dropout", "0")
    unet = loaded(UNetModel(**UNET), os.path.join(OUT, "unet", "weights.safetensors"))  # the F16-rounded net
    ux = torch.randn(2, 3, 32, 32, generator=gen)
    ux0 = torch.randn(2, 3, 32, 32, generator=gen)
    utimes = [0.2, 0.7]
    ref.update({"unet.x": ux.double(), "unet.times": torch.tensor(utimes, dtype=torch.float64),
                "unet.v": values(unet, unet_v, ux, utimes), "unet.x0": ux0.double(),
                "unet.euler4": euler(unet, unet_v, ux0)})
    meta["unet.nparams"] = str(sum(p.numel() for p in unet.parameters()))
    meta["unet"] = json.dumps(UNET)
    save_np({k: v.numpy() for k, v in ref.items()}, os.path.join(OUT, "reference.safetensors"), metadata=meta)
    print("wrote", OUT, meta)


if __name__ == "__main__":
    main()
