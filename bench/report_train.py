#!/usr/bin/env python3
"""report_train.py: tabulate the training benchmark (run_train.sh) as markdown on stdout.

Usage: report_train.py OUTDIR
Reads OUTDIR/train_run.tsv and OUTDIR/train_{c,torch,torchfused}_t{THREADS}_r{ROUND}.tsv, the TSV rows
of bench_train.c and peer_train.py. Steps/s are medians over every timed repetition of every round (the
spread, slowest to fastest repetition, in brackets); phase and sgemm numbers are medians over rounds.
"""
import glob
import os
import platform
import re
import statistics
import subprocess
import sys


def read_tsv(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                rows.append(line.split("\t"))
    return rows


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return ""


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1048576:.1f} GiB"
    flags = open("/proc/cpuinfo").read()
    simd = " ".join(x for x in ("avx2", "avx512f") if re.search(rf"\b{x}\b", flags))
    return cpu, os.cpu_count(), mem, simd, platform.release()


# Issue 16's targets, by thread count: flowvar / torch steps/s, and the step against its GEMM floor.
TARGET_DEFAULT = {2: 2.0, 1: 2.0}
TARGET_FUSED = {2: 1.8}
FLOOR_MAX = 2.0


def verdict(ratio, target, label=None):
    """'**yes** (>= 2.0x)' or '**NO** (>= 2.0x)'; '-' without a target."""
    if target is None:
        return "-"
    return f"**{'yes' if ratio >= target else 'NO'}** ({label or f'>= {target:.1f}x'})"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    run = {r[1]: r[2] for r in read_tsv(os.path.join(out, "train_run.tsv")) if r[0] == "meta"}

    # per (impl, threads): list of seconds per step; phase rows etc. per threads
    steps = {}
    meta = {}
    phase, layer, data, sgemm = {}, {}, {}, {}
    for path in sorted(glob.glob(os.path.join(out, "train_*_t*_r*.tsv"))):
        m = re.match(r"train_(c|torch|torchfused)_t(\d+)_r(\d+)\.tsv", os.path.basename(path))
        if not m:
            continue
        impl, th = m.group(1), int(m.group(2))
        for r in read_tsv(path):
            if r[0] == "meta":
                meta.setdefault(impl, {})[r[1]] = r[2]
            elif r[0] == "steps":
                key = {"train": "flowvar", "phases": "flowvar_phases", "torch": "torch",
                       "torch_fused": "torch_fused"}[r[1]]
                steps.setdefault((key, th), []).append(float(r[3]))
            elif r[0] == "phase":
                phase.setdefault((th, r[1]), []).append(float(r[2]))
            elif r[0] == "layer":
                layer.setdefault((th, r[1]), []).append(float(r[2]))
            elif r[0] == "data":
                data.setdefault((th, r[1]), []).append(float(r[2]))
            elif r[0] == "sgemm":
                sgemm.setdefault((th, r[1]), []).append((float(r[2]), float(r[3])))
    threads = sorted({th for (_, th) in steps}, reverse=True)
    med = statistics.median
    c = meta.get("c", {})
    tm = meta.get("torch", {})
    flops = float(c.get("step_flops", "nan"))

    def rate(key, th):
        v = steps.get((key, th))
        if not v:
            return None, None, None
        return 1.0 / med(v), 1.0 / max(v), 1.0 / min(v)

    def gemm(th, name):
        v = sgemm.get((th, name))
        return (med([x[0] for x in v]), max(x[1] for x in v)) if v else (float("nan"), float("nan"))

    cpu, ncpu, mem, simd, kernel = machine()
    cc = sh("cc --version | head -1")
    ob = sh("dpkg-query -W -f '${Package} ${Version}' libopenblas0-pthread")
    blas = re.findall(r"(BLAS_INFO=[^,]*|LAPACK_INFO=[^,]*)", tm.get("torch_blas", ""))
    w = print
    w(f"Recorded {run.get('date_utc', '?')} by `bench/run_train.sh` (bench/bench_train.c and "
      f"bench/peer_train.py interleaved in one run; wall time {run.get('wall_s', '?')} s).")
    w()
    w(f"- Machine: {cpu}, {ncpu} cores, {mem} memory ({simd}), Linux {kernel}; load average "
      f"{run.get('loadavg_start', '?')} at the start, {run.get('loadavg_end', '?')} at the end.")
    w(f"- Kernels: OpenBLAS {run.get('openblas_kernel', c.get('openblas_corename', '?'))} "
      f"(openblas_get_corename), torch CPU capability "
      f"{run.get('torch_capability', tm.get('torch_cpu_capability', '?'))}; both sides' timed commands run with "
      f"OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, as on a user's machine.")
    w(f"- flowvar: {cc}, -O2; {ob or 'OpenBLAS'} ({c.get('openblas_config', '?')}, kernel "
      f"{c.get('openblas_corename', '?')}).")
    w(f"- PyTorch: torch {tm.get('torch_version', '?')} from pip (CPU execution; {', '.join(blas) or '?'}, "
      f"oneDNN {tm.get('torch_mkldnn', '?')}, CPU capability {tm.get('torch_cpu_capability', '?')}), "
      f"Python {tm.get('python', '?')}.")
    w(f"- Threads: OpenBLAS's default is {run.get('default_threads', '?')} on this machine; each row runs "
      f"flowvar with OPENBLAS_NUM_THREADS = n (its training threads and OpenBLAS's) and torch with "
      f"torch.set_num_threads(n) (and OPENBLAS_NUM_THREADS = n).")
    w(f"- Work: MLP 51 -> 256 -> 256 -> 256 -> 50 (SiLU, {c.get('params', '?')} parameters), batch "
      f"{c.get('batch', '?')}, Adam lr 1e-3; {c.get('reps', '?')} timed repetitions of {c.get('steps', '?')} "
      f"steps per program run after {c.get('warmup', '?')} warm-up steps, "
      f"{len(steps.get(('flowvar', threads[0]), [])) // max(1, int(c.get('reps', 1)))} rounds. "
      f"FLOPs per step (forward + backward GEMMs): {flops / 1e6:.1f} M.")
    w(f"- Targets (issue 16): flowvar / torch at least {TARGET_DEFAULT[2]:.1f}x (default Adam) and "
      f"{TARGET_FUSED[2]:.1f}x (fused Adam) with 2 threads, at least {TARGET_DEFAULT[1]:.1f}x with 1 thread; "
      f"flowvar's step at most {FLOOR_MAX:.0f}x its GEMM floor (the step's own sgemm calls back to back, "
      f"measured in the same process).")
    w()
    w("| threads | flowvar steps/s (fv_cfm_train) | torch steps/s (Adam default) | flowvar / torch | target "
      "| torch steps/s (Adam fused=True) | flowvar / torch fused | target | GEMM floor per step "
      "| flowvar per step | step / floor | target |")
    w("|---:|---:|---:|---:|:---|---:|---:|:---|---:|---:|---:|:---|")
    for th in threads:
        f, flo, fhi = rate("flowvar", th)
        t, tlo, thi = rate("torch", th)
        tf, tflo, tfhi = rate("torch_fused", th)
        if f is None or t is None:
            continue
        sl, _ = gemm(th, "step_gemms")
        floor_ms = flops / sl / 1e6
        step_ms = 1e3 / f
        w(f"| {th} | {f:.0f} ({flo:.0f}-{fhi:.0f}) | {t:.0f} ({tlo:.0f}-{thi:.0f}) | {f / t:.2f}x | "
          f"{verdict(f / t, TARGET_DEFAULT.get(th))} | "
          + (f"{tf:.0f} ({tflo:.0f}-{tfhi:.0f}) | {f / tf:.2f}x | {verdict(f / tf, TARGET_FUSED.get(th))} | "
             if tf else "- | - | - | ")
          + f"{floor_ms:.2f} ms | {step_ms:.2f} ms | {step_ms / floor_ms:.2f}x | "
          f"{verdict(FLOOR_MAX / (step_ms / floor_ms), 1.0, f'<= {FLOOR_MAX:.0f}x')} |")
    w()
    w("Achieved rate: the step's GEMM FLOPs over flowvar's time per step, against OpenBLAS sgemm measured in "
      "the same process (median of the runs; the best in brackets): a large square product, the MLP's "
      "256 x 256 x 256, and the exact list of sgemm calls of one step (shapes and transposes) replayed "
      "back to back. GEMM floor: the step's FLOPs at that last rate.")
    w()
    w("| threads | flowvar GFLOP/s | sgemm " + c.get("gemm_size", "?") + "^3 GFLOP/s | fraction of peak | "
      "sgemm 256^3 GFLOP/s | step's sgemm list GFLOP/s | fraction of it | GEMM floor per step | flowvar per step |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for th in threads:
        f, _, _ = rate("flowvar", th)
        if f is None:
            continue
        g = flops * f / 1e9
        sq, sqb = gemm(th, "square")
        s256, s256b = gemm(th, "256x256x256")
        sl, slb = gemm(th, "step_gemms")
        w(f"| {th} | {g:.1f} | {sq:.1f} ({sqb:.1f}) | {g / sq:.0%} | {s256:.1f} ({s256b:.1f}) | {sl:.1f} ({slb:.1f}) "
          f"| {g / sl:.0%} | {flops / sl / 1e6:.2f} ms | {1e3 / f:.2f} ms |")
    w()
    w("#### Where flowvar's time goes")
    w()
    w("The same step written out with each phase timed (bench_train.c, `phases`): fv_cfm_pairs (x0 ~ N(0, I), "
      "x1 ~ N(mu, M)), fv_cfm_interpolate (t, x_t, u), the network's forward, the loss, the backward, "
      "and the Adam update; the pairs, forward, backward and update run on flowvar's threads (src/nn/par.h), "
      "the interpolant and the loss on one. ms per step (share of their sum):")
    w()
    names = ["pairs", "interpolate", "forward", "loss", "backward", "update"]
    w("| threads | " + " | ".join(names) + " | sum | measured step (phases loop) |")
    w("|---:|" + "---:|" * (len(names) + 2))
    for th in threads:
        v = [med(phase.get((th, n), [float("nan")])) for n in names]
        tot = sum(v)
        ph = steps.get(("flowvar_phases", th))
        measured = f"{med(ph) * 1e3:.3f}" if ph else "-"
        w(f"| {th} | " + " | ".join(f"{x * 1e3:.3f} ({x / tot:.0%})" for x in v) +
          f" | {tot * 1e3:.3f} | {measured} |")
    w()
    w("Forward and backward replayed with mlp.h's public layer functions on the whole batch, one call at a "
      "time, each kind timed on its own (the products on OpenBLAS's threads, the elementwise loops on one "
      "thread; the threaded step fuses the bias into the activation and splits both over its threads, so "
      "this shows what each kind of work costs, not the step's schedule), and the update: the "
      "gradient norm alone (fv_grad_norm) and the whole update (fv_adam_step, the norm fused into its pass). "
      "ms per step:")
    w()
    lnames = ["input_assembly", "linear_forward", "act_forward", "linear_backward", "act_backward", "grad_norm",
              "adam_step"]
    w("| threads | " + " | ".join(n.replace("_", " ") for n in lnames) + " | GEMMs alone (floor) |")
    w("|---:|" + "---:|" * (len(lnames) + 1))
    for th in threads:
        v = [med(layer.get((th, n), [float("nan")])) for n in lnames]
        sl, _ = gemm(th, "step_gemms")
        w(f"| {th} | " + " | ".join(f"{x * 1e3:.3f}" for x in v) + f" | {flops / sl / 1e6:.3f} |")
    w()
    w("The data generation's parts, ms per call: the 50 x 50 square root fv_gaussian_sample takes per "
      "call (fv_cfm_pairs took two per step until commit 9a28b85 cached them), 12800 normals drawn in bulk "
      "(two per Philox "
      "block), and 13056 Philox blocks drawn one call at a time as fv_cfm_interpolate does with sigma > 0 "
      "(one t and 50 normals per row, one normal kept per block; at sigma = 0 it now skips the normals); "
      "and malloc + free of the 100 KB buffer "
      "cpu_loss_grad allocates per step:")
    w()
    dnames = sorted({n for (_, n) in data})
    malloc_name = next((n for (_, n) in phase if n.startswith("malloc")), None)
    w("| threads | " + " | ".join(n.replace("_", " ") for n in dnames) +
      (f" | {malloc_name.replace('_', ' ')} |" if malloc_name else " |"))
    w("|---:|" + "---:|" * (len(dnames) + (1 if malloc_name else 0)))
    for th in threads:
        v = [med(data.get((th, n), [float("nan")])) for n in dnames]
        row = f"| {th} | " + " | ".join(f"{x * 1e3:.3f}" for x in v)
        if malloc_name:
            row += f" | {med(phase.get((th, malloc_name), [float('nan')])) * 1e6:.3f} us"
        w(row + " |")


if __name__ == "__main__":
    main()
