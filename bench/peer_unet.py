#!/usr/bin/env python3
"""peer_unet.py: the PyTorch peer of bench_unet.c, and the report of the U-Net benchmark.

  peer_unet.py [--iters N] [--warmup W] [--reps R] [--threads T] [--config NAME]
      torchcfm's UNetModelWrapper on the CPU, the configurations of bench_unet.c (3 x 32 x 32 images,
      attention_resolutions "16", num_heads 4, num_head_channels 64, dropout 0.1, model.train()):
        tiny   num_channels 32, channel_mult [1, 2, 2], num_res_blocks 1, batch 16
        small  num_channels 64, channel_mult [1, 2, 2], num_res_blocks 2, batch 8
        paper  num_channels 128, channel_mult [1, 2, 2, 2], num_res_blocks 2, batch 4 (the paper's network)
      --config runs one of them (default: all); the last row, "rss CONFIG KIB", is the process's peak
      resident memory (getrusage's ru_maxrss).
      Timed like bench_unet.c: R repetitions of N passes (out = model(t, x); loss = mean((out - u)^2);
      zero_grad(set_to_none=True); loss.backward()) after W untimed ones, then N forward passes alone
      (with autograd recording, as in training). torch.set_num_threads(T), T = OpenBLAS's thread count
      for flowvar. Prints TSV like bench_unet.c ("meta ...", "pass CONFIG REP S", "forward CONFIG REP S"),
      plus "flops CONFIG PASS FORWARD": torch's FlopCounterMode count of one pass and of one forward.
  peer_unet.py --report OUTDIR
      The markdown block of a run (unet.mk): OUTDIR/unet_run.tsv and the rows of every
      OUTDIR/unet_{c,torch}_r{ROUND}[_CONFIG].tsv. Images/s are medians over all repetitions of all rounds (the
      slowest and fastest repetition in brackets).
"""
import argparse
import glob
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

# name, num_channels, num_res_blocks, batch, channel_mult
CONFIGS = [("tiny", 32, 1, 16, [1, 2, 2]), ("small", 64, 2, 8, [1, 2, 2]), ("paper", 128, 2, 4, [1, 2, 2, 2])]


def build(nc, nrb, mult):
    from torchcfm.models.unet import UNetModel  # torchcfm's UNetModelWrapper

    return UNetModel(dim=(3, 32, 32), num_channels=nc, num_res_blocks=nrb, channel_mult=mult, num_heads=4,
                     num_head_channels=64, attention_resolutions="16", dropout=0.1)


def onednn_version(torch):
    m = re.search(r"(?:oneDNN|MKL-DNN) v([0-9.]+)", torch.__config__.show())
    return m.group(1) if m else "?"


def peer(a):
    import torch
    import torchcfm
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(a.threads)
    torch.manual_seed(20251107)
    print(f"meta\ttorch_version\t{torch.__version__}")
    print(f"meta\ttorchcfm_version\t{torchcfm.__version__}")
    print(f"meta\tpython\t{platform.python_version()}")
    print(f"meta\ttorch_threads\t{torch.get_num_threads()}")
    print(f"meta\ttorch_mkldnn\t{torch.backends.mkldnn.is_available()}")
    print(f"meta\ttorch_cpu_capability\t{torch.backends.cpu.get_cpu_capability()}")
    print(f"meta\ttorch_onednn\t{onednn_version(torch)}")
    for name, nc, nrb, B, mult in CONFIGS:
        if a.config and name != a.config:
            continue
        model = build(nc, nrb, mult)
        model.train()
        x, u, t = torch.randn(B, 3, 32, 32), torch.randn(B, 3, 32, 32), (torch.arange(B) + 0.5) / B

        def step():
            out = model(t, x)
            loss = torch.mean((out - u) ** 2)
            model.zero_grad(set_to_none=True)
            loss.backward()

        print(f"meta\t{name}.params\t{sum(p.numel() for p in model.parameters())}")
        print(f"meta\t{name}.batch\t{B}")
        with FlopCounterMode(display=False) as fc:
            step()
        with FlopCounterMode(display=False) as ff:
            model(t, x)
        print(f"flops\t{name}\t{fc.get_total_flops()}\t{ff.get_total_flops()}")
        for _ in range(a.warmup):
            step()
        for rep in range(a.reps):
            t0 = time.perf_counter()
            for _ in range(a.iters):
                step()
            t1 = time.perf_counter()
            for _ in range(a.iters):
                model(t, x)
            t2 = time.perf_counter()
            print(f"pass\t{name}\t{rep}\t{(t1 - t0) / a.iters:.9g}")
            print(f"forward\t{name}\t{rep}\t{(t2 - t1) / a.iters:.9g}")
            print(f"peer_unet: {name} rep {rep}: {B * a.iters / (t1 - t0):.1f} images/s", file=sys.stderr)
            sys.stdout.flush()
    print(f"rss\t{a.config or 'all'}\t{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")


def read_tsv(path):
    with open(path) as f:
        return [ln.rstrip("\n").split("\t") for ln in f if ln.strip()]


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return ""


def machine():
    info = open("/proc/cpuinfo").read()
    m = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    mem = int(re.search(r"^MemTotal:\s*(\d+)", open("/proc/meminfo").read(), re.M).group(1)) / 1048576
    simd = " ".join(x for x in ("avx2", "avx512f") if re.search(rf"\b{x}\b", info))
    return f"{m.group(1) if m else '?'}, {os.cpu_count()} cores, {mem:.1f} GiB memory ({simd}), Linux {platform.release()}"


def report(out):
    run = {r[1]: r[2] for r in read_tsv(os.path.join(out, "unet_run.tsv")) if r[0] == "meta"}
    meta = {"c": {}, "torch": {}}
    times, blocks, flops, rss = {}, {}, {}, {}
    rounds = set()
    for path in sorted(glob.glob(os.path.join(out, "unet_*_r*.tsv"))):
        m = re.match(r"unet_(c|torch)_r(\d+)(_\w+)?\.tsv", os.path.basename(path))
        if not m:
            continue
        impl = m.group(1)
        rounds.add(int(m.group(2)))
        for r in read_tsv(path):
            if r[0] == "meta":
                meta[impl][r[1]] = r[2]
            elif r[0] in ("pass", "forward"):
                times.setdefault((impl, r[0], r[1]), []).append(float(r[3]))
            elif r[0] == "block":
                blocks.setdefault((r[1], r[2]), []).append(float(r[3]))
            elif r[0] == "flops":
                flops[r[1]] = (float(r[2]), float(r[3]))
            elif r[0] == "rss":
                rss.setdefault((impl, r[1]), []).append(int(r[2]))
    c, tm = meta["c"], meta["torch"]
    med = statistics.median
    w = print
    w(f"Recorded {run.get('date_utc', '?')} by `make -C bench record-unet` (bench/unet.mk: bench/bench_unet.c and "
      f"bench/peer_unet.py alternating, {len(rounds)} rounds; wall time {run.get('wall_s', '?')} s).")
    w()
    w(f"- Machine: {machine()}; load average {run.get('loadavg_start', '?')} at the start, "
      f"{run.get('loadavg_end', '?')} at the end.")
    openblas = sh("dpkg-query -W -f '${Package} ${Version}' libopenblas0-pthread") or "OpenBLAS"
    w(f"- flowvar: {sh('cc --version | head -1')}, -O2; {openblas} ({c.get('openblas_config', '?')}, kernel "
      f"{c.get('openblas_corename', '?')}); convolutions on {c.get('onednn', '?')}, "
      f"{c.get('omp_threads', '?')} OpenMP threads.")
    w(f"- PyTorch: torch {tm.get('torch_version', '?')} (CPU execution; oneDNN {tm.get('torch_mkldnn', '?')}, CPU "
      f"capability {tm.get('torch_cpu_capability', '?')}, its own oneDNN {tm.get('torch_onednn', '?')}), torchcfm {tm.get('torchcfm_version', '?')}, Python "
      f"{tm.get('python', '?')}.")
    w(f"- Threads: {run.get('threads', '?')} on both sides (OMP_NUM_THREADS and OPENBLAS_NUM_THREADS for flowvar, "
      f"torch.set_num_threads for torch); OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for both.")
    w(f"- Work: torchcfm's UNetModelWrapper(dim=(3, 32, 32), channel_mult=[1, 2, 2] (paper: [1, 2, 2, 2]), "
      f"attention_resolutions=\"16\", num_heads=4, num_head_channels=64, dropout=0.1) in training mode; one pass = "
      f"forward, MSE loss, backward "
      f"(no optimizer step). {c.get('reps', '?')} timed repetitions of {c.get('iters', '?')} passes per program "
      f"run after {c.get('warmup', '?')} untimed ones. FLOPs per pass: torch's FlopCounterMode count (convolutions, "
      f"matrix products and attention; the elementwise layers are not counted). Peak memory: each side's "
      f"ru_maxrss, one process per configuration (the largest over rounds).")
    w()
    w("| config | parameters | batch | GFLOP per pass | flowvar images/s | torch images/s | flowvar / torch "
      "| flowvar GFLOP/s | torch GFLOP/s | flowvar / torch, forward only | peak MiB flowvar / torch |")
    w("|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, nc, nrb, B, mult in CONFIGS:
        fp, tp = times.get(("c", "pass", name)), times.get(("torch", "pass", name))
        ff, tf = times.get(("c", "forward", name)), times.get(("torch", "forward", name))
        if not (fp and tp and ff and tf):
            continue
        B = int(c.get(f"{name}.batch", B))
        fl = flops.get(name, (float("nan"), float("nan")))[0]
        rate = lambda v: B / med(v)
        mib = lambda impl: f"{max(rss[(impl, name)]) / 1024:.0f}" if (impl, name) in rss else "?"
        w(f"| {name} ({nc} channels, {nrb} block{'s' if nrb > 1 else ''}) | {c.get(name + '.params', '?')} | {B} | "
          f"{fl / 1e9:.1f} | {rate(fp):.1f} ({B / max(fp):.1f}-{B / min(fp):.1f}) | "
          f"{rate(tp):.1f} ({B / max(tp):.1f}-{B / min(tp):.1f}) | **{med(tp) / med(fp):.2f}x** | "
          f"{fl / med(fp) / 1e9:.0f} | {fl / med(tp) / 1e9:.0f} | {med(tf) / med(ff):.2f}x | {mib('c')} / {mib('torch')} |")
    w()
    w("Where flowvar's forward pass goes: each block alone (fv_unet_block_forward on the inputs the last "
      "forward left), ms per pass (median over rounds) and share of the blocks' sum:")
    w()
    for name, *_ in CONFIGS:
        rows = [(blk, med(v)) for (cfg, blk), v in blocks.items() if cfg == name]
        if not rows:
            continue
        total = sum(v for _, v in rows)
        w(f"- {name}: " + ", ".join(f"{blk} {v * 1e3:.1f} ({v / total:.0%})" for blk, v in rows) +
          f"; sum {total * 1e3:.1f} ms, forward measured {med(times[('c', 'forward', name)]) * 1e3:.1f} ms.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", choices=[c[0] for c in CONFIGS])
    ap.add_argument("--report", metavar="OUTDIR")
    a = ap.parse_args()
    if a.report:
        report(a.report)
    else:
        peer(a)


if __name__ == "__main__":
    main()
