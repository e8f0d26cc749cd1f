#!/usr/bin/env python3
"""Write the PyTorch reference fixtures that tests/test_mlp.c and tests/test_optim.c read.

Run from the repository root:  python3 tests/oracle/make_mlp_fixture.py
Needs numpy and torch (CPU is enough: python3 -m pip install torch --index-url
https://download.pytorch.org/whl/cpu). The C tests need neither: the .npy files are committed.

For each configuration below the script builds the network flowvar's src/nn/mlp.c implements, in torch:
nn.Sequential(Linear, Act, ..., Linear) on [x, t] (raw t) or [x, emb(t)] (guided-diffusion/torchcfm
sinusoidal embedding, cos first), loads weights drawn HERE with numpy (so the C test uses the very same
numbers), runs one batch, the CFM loss mean((v - u)^2), backward, and saves, as tests/fixtures/mlp/<cfg>_*.npy:
  cfg.npy      float64 [d, width, depth, act (0 silu 1 selu 2 relu 3 tanh), temb, B]
  x, t, u      the batch (float32)
  out, loss    the network output and the loss
  sqnorm       |g_i|^2, the squared norm of row i's own gradient (by a per-row torch backward)
  P.npy / grad.P.npy   each parameter P ("net.0.weight", ...) and its gradient

Then one Adam run on the "adam" configuration (prefix adam_), with torchcfm's training step exactly:
    loss.backward(); clip_grad_norm_(params, clip); optim.step(); sched.step(); ema(model, ema_model, decay)
with sched = LambdaLR(optim, lambda s: min(s, warmup) / warmup) and ema() as in torchcfm's
examples/images/cifar10/utils_cifar.py. Saved (flat vectors in state_dict order):
  adam_hyper   float64 [lr, beta1, beta2, eps, warmup, clip, ema_decay] (float32-exact values)
  adam_params0 initial parameters; adam_grads (K x n) the gradients BEFORE clipping; adam_norms (K) the
  values clip_grad_norm_ returned; adam_lr (K) the lr each update used; adam_params, adam_m, adam_v,
  adam_ema (K x n) after each update.
"""
import math
import os

import numpy as np
import torch

OUT = os.path.join("tests", "fixtures", "mlp")
ACTS = {"silu": 0, "selu": 1, "relu": 2, "tanh": 3}

# name: (d, width, depth, act, temb, B)
CONFIGS = {
    "silu_raw": (3, 32, 3, "silu", 0, 64),   # torchcfm-style MLP with the raw t input
    "selu_temb": (5, 24, 2, "selu", 16, 48),  # sinusoidal embedding
    "tanh_temb": (2, 16, 1, "tanh", 8, 32),   # depth 1: a single hidden layer
    "relu_raw": (4, 20, 4, "relu", 0, 40),
}
ADAM_CFG = "selu_temb"


def act_module(name):
    return {"silu": torch.nn.SiLU, "selu": torch.nn.SELU, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[name]()


def timestep_embedding(t, dim, max_period=10000):
    """guided-diffusion's timestep_embedding, as torchcfm's UNet uses it (float32, [cos, sin])."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Net(torch.nn.Module):
    def __init__(self, d, width, depth, act, temb):
        super().__init__()
        self.temb = temb
        nin = d + (temb if temb else 1)
        layers = [torch.nn.Linear(nin, width), act_module(act)]
        for _ in range(depth - 1):
            layers += [torch.nn.Linear(width, width), act_module(act)]
        layers.append(torch.nn.Linear(width, d))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x, t):
        tt = timestep_embedding(t, self.temb) if self.temb else t[:, None]
        return self.net(torch.cat([x, tt], dim=-1))


def save(name, a):
    np.save(os.path.join(OUT, name + ".npy"), np.ascontiguousarray(a))


def build(rng, d, width, depth, act, temb):
    """The net with weights drawn by numpy like torch's default init (U(-1/sqrt(in), 1/sqrt(in)))."""
    net = Net(d, width, depth, act, temb)
    with torch.no_grad():
        for name, p in net.named_parameters():
            fan_in = p.shape[-1] if p.ndim == 2 else None
            if fan_in is None:  # bias: the fan-in of its weight
                fan_in = dict(net.named_parameters())[name.replace("bias", "weight")].shape[1]
            bound = 1.0 / math.sqrt(fan_in)
            p.copy_(torch.from_numpy(rng.uniform(-bound, bound, size=tuple(p.shape)).astype(np.float32)))
    return net


def batch(rng, B, d, uscale=1.0):
    x = rng.standard_normal((B, d)).astype(np.float32)
    t = rng.uniform(0.0, 1.0, size=B).astype(np.float32)
    u = (uscale * rng.standard_normal((B, d))).astype(np.float32)
    return x, t, u


def loss_and_grads(net, x, t, u):
    net.zero_grad()
    out = net(torch.from_numpy(x), torch.from_numpy(t))
    loss = torch.mean((out - torch.from_numpy(u)) ** 2)
    loss.backward()
    return out, loss


def flat(tensors):
    return torch.cat([p.detach().reshape(-1) for p in tensors]).numpy().copy()


def network_fixture(name, rng):
    d, width, depth, act, temb, B = CONFIGS[name]
    net = build(rng, d, width, depth, act, temb)
    x, t, u = batch(rng, B, d)
    out, loss = loss_and_grads(net, x, t, u)
    pre = name + "_"
    save(pre + "cfg", np.array([d, width, depth, ACTS[act], temb, B], dtype=np.float64))
    save(pre + "x", x)
    save(pre + "t", t)
    save(pre + "u", u)
    save(pre + "out", out.detach().numpy())
    save(pre + "loss", np.array(loss.item(), dtype=np.float32))
    for pname, p in net.named_parameters():
        save(pre + pname, p.detach().numpy())
        save(pre + "grad." + pname, p.grad.numpy())
    # Per-row gradient norms the slow way: row i's gradient is that of the batch loss restricted to
    # row i (same 1/(B d) factor), i.e. of sum over row i of (v - u)^2 / (B d).
    sq = np.zeros(B, dtype=np.float64)
    for i in range(B):
        net.zero_grad()
        o = net(torch.from_numpy(x[i:i + 1]), torch.from_numpy(t[i:i + 1]))
        li = torch.sum((o - torch.from_numpy(u[i:i + 1])) ** 2) / (B * d)
        li.backward()
        sq[i] = sum(float((p.grad.double() ** 2).sum()) for p in net.parameters())
    save(pre + "sqnorm", sq.astype(np.float32))
    print(f"{name}: {sum(p.numel() for p in net.parameters())} parameters, loss {loss.item():.6g}")


def ema(source, target, decay):
    """torchcfm's examples/images/cifar10/utils_cifar.py ema()."""
    source_dict = source.state_dict()
    target_dict = target.state_dict()
    for key in source_dict.keys():
        target_dict[key].data.copy_(target_dict[key].data * decay + source_dict[key].data * (1 - decay))


def adam_fixture(rng):
    import copy

    d, width, depth, act, temb, B = CONFIGS[ADAM_CFG]
    f32 = lambda v: float(np.float32(v))  # hyperparameters the C side holds exactly as floats
    lr, b1, b2, eps, warmup, decay = f32(1e-2), f32(0.9), f32(0.999), f32(1e-8), 3, f32(0.9)
    K = 5
    uscales = [1.0, 4.0, 0.02, 4.0, 0.02]  # spread the gradient norms around the clip threshold
    net = build(rng, d, width, depth, act, temb)
    batches = [batch(rng, B, d, s) for s in uscales]
    # Threshold between the gradient norms at the initial weights, so some updates clip and some do not.
    norms0 = []
    for x, t, u in batches:
        loss_and_grads(net, x, t, u)
        norms0.append(float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in net.parameters()))))
    clip = f32(math.sqrt(min(norms0) * max(norms0)))

    ema_net = copy.deepcopy(net)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(b1, b2), eps=eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lambda s: min(s, warmup) / warmup)
    params0 = flat(net.parameters())
    rec = {k: [] for k in ("grads", "norms", "lr", "params", "m", "v", "ema")}
    for x, t, u in batches:
        opt.zero_grad()
        loss_and_grads(net, x, t, u)
        rec["grads"].append(flat(p.grad for p in net.parameters()))
        rec["lr"].append(opt.param_groups[0]["lr"])
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        rec["norms"].append(float(norm))
        opt.step()
        sched.step()
        ema(net, ema_net, decay)
        rec["params"].append(flat(net.parameters()))
        rec["m"].append(flat(opt.state[p]["exp_avg"] for p in net.parameters()))
        rec["v"].append(flat(opt.state[p]["exp_avg_sq"] for p in net.parameters()))
        rec["ema"].append(flat(ema_net.parameters()))
    clipped = [n + 1e-6 > clip for n in rec["norms"]]
    assert any(clipped) and not all(clipped), (rec["norms"], clip)
    save("adam_hyper", np.array([lr, b1, b2, eps, warmup, clip, decay], dtype=np.float64))
    save("adam_cfg", np.array([d, width, depth, ACTS[act], temb, B], dtype=np.float64))
    save("adam_params0", params0)
    save("adam_norms", np.array(rec["norms"], dtype=np.float32))
    save("adam_lr", np.array(rec["lr"], dtype=np.float64))
    for k in ("grads", "params", "m", "v", "ema"):
        save("adam_" + k, np.stack(rec[k]).astype(np.float32))
    print(f"adam: {params0.size} parameters, clip {clip:.6g}, norms {rec['norms']}, lr {rec['lr']}")


def main():
    torch.set_num_threads(1)  # deterministic summation order
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20251018)
    for name in CONFIGS:
        network_fixture(name, rng)
    adam_fixture(rng)


if __name__ == "__main__":
    main()
