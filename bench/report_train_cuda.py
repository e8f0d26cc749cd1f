#!/usr/bin/env python3
"""report_train_cuda.py: the markdown block of BENCHMARKS.md from run_train_cuda.sh's TSV: per size and
precision, the median seconds per step of flowvar and of PyTorch eager (foreach and fused Adam), the
ratios, and flowvar's achieved TFLOP/s against cuBLAS's SGEMM rate measured in the same process."""
import statistics
import sys
from collections import defaultdict


def main(path):
    runs = defaultdict(lambda: defaultdict(list))
    meta = {}
    config = None
    peer = None
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if f[0] == "config":
            config = " ".join(f[1].split())
            peer = None
        elif f[0] == "meta":
            meta[f[1]] = f[2]
            if f[1] == "torch_mode":
                peer = "torch fused" if "fused" in f[2] else "torch foreach"
            if f[1] == "step_flops":
                runs[config]["flops"] = [float(f[2])]
        elif f[0] == "steps":
            runs[config]["flowvar" if f[1] == "flowvar" else peer].append(float(f[3]))
        elif f[0] == "sgemm":
            runs[config]["sgemm"] = [float(f[2])]
        elif f[0] == "phase":
            runs[config]["phase " + f[1]] = [float(f[2])]
    print(f"GPU: {meta.get('gpu')}, CUDA runtime {meta.get('cuda_runtime')}, driver {meta.get('cuda_driver')}; "
          f"PyTorch {meta.get('torch_version')} eager. Median of 3 repetitions per row.\n")
    print("| shape | precision | flowvar ms/step | torch eager (foreach Adam) | torch eager (fused Adam) | "
          "x foreach | x fused | flowvar TFLOP/s | cuBLAS SGEMM TFLOP/s (8192^3) | fraction |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for config, r in runs.items():
        words = config.split()
        shape = f"d={words[1]}, {words[5]}x{words[3]}, batch {words[7]}"
        prec = "tf32" if "--tf32" in words else "fp32"
        fv = statistics.median(r["flowvar"])
        tf = statistics.median(r["torch foreach"])
        tu = statistics.median(r["torch fused"])
        tflops = r["flops"][0] / fv / 1e12
        print(f"| {shape} | {prec} | {fv * 1e3:.3f} | {tf * 1e3:.3f} | {tu * 1e3:.3f} | {tf / fv:.2f} | "
              f"{tu / fv:.2f} | {tflops:.1f} | {r['sgemm'][0]:.1f} | {tflops / r['sgemm'][0]:.0%} |")
    print("\nflowvar's step, phase by phase (device synchronized after each; ms):\n")
    print("| shape | precision | draw (pairs + interpolant) | forward + loss + backward | Adam + EMA + clip |")
    print("|---|---|---|---|---|")
    for config, r in runs.items():
        words = config.split()
        prec = "tf32" if "--tf32" in words else "fp32"
        print(f"| d={words[1]}, {words[5]}x{words[3]}, batch {words[7]} | {prec} | "
              f"{r['phase draw'][0] * 1e3:.3f} | {r['phase loss_grad'][0] * 1e3:.3f} | {r['phase update'][0] * 1e3:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1])
