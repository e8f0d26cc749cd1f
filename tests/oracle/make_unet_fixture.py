#!/usr/bin/env python3
"""Write tests/fixtures/unet/unet_small.safetensors, the PyTorch reference that tests/test_unet.c holds
src/nn/unet.c against: torchcfm's own UNetModelWrapper, forward and backward.

Run from the repository root:
    python3 -m pip install torch numpy safetensors          # CPU torch is enough
    python3 -m pip install torchcfm==1.0.7 pot              # torchcfm's __init__ imports POT (`ot`)
    python3 tests/oracle/make_unet_fixture.py
The C tests need none of this: the fixture is committed.

The network: UNetModelWrapper(dim=(3, 8, 12), num_channels=32, num_res_blocks=1, channel_mult=[1, 2],
num_heads=2, attention_resolutions="6", dropout=0) with the wrapper's other defaults (no scale-shift
norm, QKVAttentionLegacy, convolutional up/downsampling): 702,499 parameters, a 6.4 MB file (weights
and gradients). Every layer kind runs: residual blocks with and without the 1x1 skip convolution, the
stride-2 downsampling convolution, nearest upsampling + convolution, attention (at ds = 12 // 6 = 2,
and in the middle block), GroupNorm, SiLU, the skip concatenations. Two levels of 32 and 64 channels
and not 32 and 32 (a third of the size): with 32 channels GroupNorm's 32 groups hold one channel each
and cancel any per-channel constant, so the time embedding, which a residual block adds per channel,
would reach no output at all; at 64 channels it does. The image is not square (8 x 12) so that a
height/width mix-up cannot pass. Weights: torch's default init under a fixed seed, then the tensors
torchcfm zero-initializes (zero_module: each residual block's out_layers.3, attention proj_out, out.2)
are drawn again by their module's reset_parameters(), and every GroupNorm's weight and bias is set to
1 + 0.3 N(0, 1) and 0.3 N(0, 1), so that every gradient is informative.

One batch of B = 3: x ~ N(0, 1) (B x 3 x 8 x 12), t ~ U(0, 1) (B), g ~ N(0, 1) like x; out = model(t, x)
(the wrapper takes t first), loss = sum(out * g), so dL/dout = g. float32, one thread.

Tensors saved (float32):
  <name>                every parameter under its state_dict name ("time_embed.0.weight", ...)
  grad.<name>           its gradient
  x, t, g, out          the batch, the direction and the output
  in.<block>, act.<block>   the input and output of every block, recorded by forward hooks: time_embed
                        (its input is timestep_embedding(t, 32)), input_blocks.i, middle_block,
                        output_blocks.i (input: the concatenation [h, skip]) and out (the head)
Metadata: the configuration ("unet.*", as flowvar's fv_unet_write stores it), "batch", "nparams",
"state_dict" (one "name shape" line per tensor in state_dict order, shape as 3x32x3x3), the versions;
"grad.zero", the gradients that are zero in exact arithmetic (those of per-channel constants that a
GroupNorm of one channel per group cancels: at 32 channels the first convolution's bias and the time
projection of a residual block, and the biases of the last block before the head), whose float32
values are rounding noise; torch's own float32 error, against the same model run in float64:
"f32_vs_f64.out" and "f32_vs_f64.grad" (largest error over the largest magnitude, the worst tensor
among the nonzero gradients) and "f32.grad_zero" (the largest float32 value of a zero gradient over
the largest gradient entry); and for the paper's CIFAR-10 network UNetModelWrapper(dim=(3, 32, 32),
num_channels=128, num_res_blocks=2, channel_mult=[1, 2, 2, 2], num_heads=4, num_head_channels=64,
attention_resolutions="16", dropout=0.1): "paper.nparams" (torchcfm's parameter count) and
"paper.state_dict" (as "state_dict").
"""
import math
import os

import numpy as np
import torch
import torchcfm
import torchcfm.models.unet.nn as tcfm_nn
import torchcfm.models.unet.unet as tcfm_unet
from safetensors.numpy import save_file
from torchcfm.models.unet import UNetModel  # torchcfm exports UNetModelWrapper under this name

OUT = os.path.join("tests", "fixtures", "unet", "unet_small.safetensors")
SEED = 20251106
B = 3
SMALL = dict(dim=(3, 8, 12), num_channels=32, num_res_blocks=1, channel_mult=[1, 2], num_heads=2,
             num_head_channels=-1, attention_resolutions="6", dropout=0.0)
PAPER = dict(dim=(3, 32, 32), num_channels=128, num_res_blocks=2, channel_mult=[1, 2, 2, 2], num_heads=4,
             num_head_channels=64, attention_resolutions="16", dropout=0.1)


def informative_weights(model, gen):
    for m in model.modules():
        if isinstance(m, torch.nn.GroupNorm):
            with torch.no_grad():
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=gen))
        elif isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
            if not m.weight.detach().any():
                m.reset_parameters()


def blocks(model):
    yield "time_embed", model.time_embed
    for i, b in enumerate(model.input_blocks):
        yield f"input_blocks.{i}", b
    yield "middle_block", model.middle_block
    for i, b in enumerate(model.output_blocks):
        yield f"output_blocks.{i}", b
    yield "out", model.out


def run(model, x, t, g):
    """Forward with hooks, then backward of sum(out * g): (out, grads, block inputs and outputs)."""
    rec = {}

    def hook(name):
        def f(_module, args, output):
            rec["in." + name] = args[0].detach().clone()
            rec["act." + name] = output.detach().clone()
        return f

    handles = [m.register_forward_hook(hook(n)) for n, m in blocks(model)]
    model.zero_grad()
    out = model(t, x)
    (out * g).sum().backward()
    for h in handles:
        h.remove()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return out.detach(), grads, rec


def timestep_embedding_f64(timesteps, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
    args = timesteps[:, None].double() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def state_dict_lines(model):
    return "\n".join(f"{n} {'x'.join(str(s) for s in v.shape)}" for n, v in model.state_dict().items())


def rel(a, b):
    """Largest error over the largest magnitude of b."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def main():
    torch.set_num_threads(1)  # one summation order
    torch.manual_seed(SEED)
    model = UNetModel(**SMALL)
    gen = torch.Generator().manual_seed(SEED + 1)
    informative_weights(model, gen)
    model.eval()  # dropout is 0 anyway; eval makes that explicit
    C, H, W = SMALL["dim"]
    x = torch.randn(B, C, H, W, generator=gen)
    t = torch.rand(B, generator=gen)
    g = torch.randn(B, C, H, W, generator=gen)

    out, grads, rec = run(model, x, t, g)
    sd = model.state_dict()
    names = [n for n, _ in model.named_parameters()]
    assert names == list(sd), "parameters and state_dict differ (buffers?)"

    # torch's own float32 error, against the same network in float64 (torchcfm casts the input, the
    # time embedding and GroupNorm's input to float32; those casts are lifted for this twin).
    m64 = UNetModel(**SMALL).double()
    m64.load_state_dict({k: v.double() for k, v in sd.items()})
    m64.eval()
    m64.dtype = torch.float64
    emb32, gn32 = tcfm_unet.timestep_embedding, tcfm_nn.GroupNorm32.forward
    tcfm_unet.timestep_embedding, tcfm_nn.GroupNorm32.forward = timestep_embedding_f64, torch.nn.GroupNorm.forward
    out64, grads64, _ = run(m64, x.double(), t.double(), g.double())
    tcfm_unet.timestep_embedding, tcfm_nn.GroupNorm32.forward = emb32, gn32
    f32_out = rel(out, out64)
    gmax = max(float(grads64[n].abs().max()) for n in names)
    zero = [n for n in names if float(grads64[n].abs().max()) < 1e-10 * gmax]
    f32_grad = max(rel(grads[n], grads64[n]) for n in names if n not in zero)
    f32_zero = max(float(grads[n].abs().max()) for n in zero) / gmax

    paper = UNetModel(**PAPER)
    paper_n = sum(p.numel() for p in paper.parameters())
    paper_sd = state_dict_lines(paper)

    tensors = {"x": x, "t": t, "g": g, "out": out}
    for n in names:
        tensors[n] = sd[n]
        tensors["grad." + n] = grads[n]
    tensors.update(rec)
    tensors = {k: np.ascontiguousarray(v.numpy().astype(np.float32)) for k, v in tensors.items()}
    n_small = sum(p.numel() for p in model.parameters())
    meta = {
        "unet.dim": ",".join(str(d) for d in SMALL["dim"]),
        "unet.num_channels": str(SMALL["num_channels"]),
        "unet.num_res_blocks": str(SMALL["num_res_blocks"]),
        "unet.channel_mult": ",".join(str(m) for m in SMALL["channel_mult"]),
        "unet.attention_resolutions": SMALL["attention_resolutions"],
        "unet.num_heads": str(SMALL["num_heads"]),
        "unet.num_head_channels": str(SMALL["num_head_channels"]),
        "unet.dropout": str(SMALL["dropout"]),
        "batch": str(B),
        "nparams": str(n_small),
        "state_dict": state_dict_lines(model),
        "torch.version": torch.__version__,
        "torchcfm.version": torchcfm.__version__,
        "f32_vs_f64.out": f"{f32_out:.3e}",
        "f32_vs_f64.grad": f"{f32_grad:.3e}",
        "grad.zero": ",".join(zero),
        "f32.grad_zero": f"{f32_zero:.3e}",
        "paper.nparams": str(paper_n),
        "paper.state_dict": paper_sd,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(tensors, OUT, metadata=meta)
    print(f"{OUT}: {n_small} parameters, {len(tensors)} tensors, {os.path.getsize(OUT)} bytes; "
          f"paper-size count {paper_n}; torch float32 vs float64: out {f32_out:.2e}, worst gradient {f32_grad:.2e}; "
          f"{len(zero)} gradients zero in exact arithmetic, float32 values up to {f32_zero:.2e} of the largest")


if __name__ == "__main__":
    main()
