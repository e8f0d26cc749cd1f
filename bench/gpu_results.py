#!/usr/bin/env python3
"""gpu_results.py: the machine-readable results of scripts/gpu-check --device, from the files it left in
DIR: DIR/gpu_parity.tsv from the parity suite's log (its "cuda-parity ..." table rows, then one row per
Criterion test of the CUDA suites), DIR/gpu_bench.tsv from the raw benchmark TSVs (run_train_cuda.sh's
train_cuda.tsv, run_unet_cuda.sh's unet_cuda.tsv): per network, configuration and precision the median
steps/s of flowvar and of each PyTorch peer (one row per peer Adam variant), their ratio, and the device
memory (flowvar: what the trainer took by cudaMemGetInfo, cuBLAS's workspaces included; torch: its
allocator's peak over the timed steps). Exit status 1 when a parity check or test failed or was skipped
(no GPU found), or a file is missing, so that the check's status says so.

    python3 bench/gpu_results.py DIR
"""
import os
import re
import statistics
import sys
from collections import defaultdict

ROW = re.compile(r"^cuda-parity (.*?)\s+(\S+) bound (\S+) (PASS|FAIL)\s*$")
TEST = re.compile(r"^\[(PASS|FAIL|SKIP)\] (cuda\w*::\w+)")
GIB = 2.0 ** 30


def parity(log):
    """(check, max_rel_err, bound, verdict) rows of the log, table rows first."""
    rows, tests = [], []
    for line in open(log, errors="replace"):
        m = ROW.match(line)
        if m:
            rows.append((" ".join(m.group(1).split()), m.group(2), m.group(3), m.group(4)))
            continue
        m = TEST.match(line)
        if m:
            tests.append(("test " + m.group(2), "-", "-", m.group(1)))
    if "CRASH" in open(log, errors="replace").read():
        tests.append(("a test crashed (see parity.log)", "-", "-", "FAIL"))
    return rows + tests


def runs(path):
    """{config: {who: {"s": [seconds per step], "mem": bytes}}} of one raw benchmark TSV; who is
    "flowvar" or "torch ADAM" (foreach or fused, from the peer's torch_mode)."""
    out = defaultdict(lambda: defaultdict(lambda: {"s": [], "mem": None}))
    config = who = None
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if f[0] == "config":
            config, who = " ".join(f[1].split()), None
        elif f[0] == "meta" and f[1] == "torch_mode":
            who = "torch " + ("fused" if "fused" in f[2] else "foreach")
        elif f[0] == "steps":
            out[config][who or "flowvar"]["s"].append(float(f[3]))
        elif f[0] == "memory" and f[1] in ("device_taken", "torch_peak_allocated"):
            out[config][who or "flowvar"]["mem"] = int(f[2])
    return out


def bench_rows(network, path, describe):
    """gpu_bench.tsv rows of one network: each torch peer against flowvar at the same configuration and
    precision. describe(config) gives (configuration words, precision, flowvar's config key)."""
    rows = []
    r = runs(path)
    for config, by in r.items():
        for who, peer in by.items():
            if who == "flowvar" or not peer["s"]:
                continue
            words, precision, fv_key = describe(config)
            fv = r.get(fv_key, {}).get("flowvar")
            if not fv or not fv["s"]:
                continue
            fv_sps, t_sps = 1.0 / statistics.median(fv["s"]), 1.0 / statistics.median(peer["s"])
            mem = lambda b: f"{b / GIB:.3f}" if b is not None else "-"
            rows.append((network, f"{words}; torch adam {who.split()[1]}", precision, f"{fv_sps:.4g}",
                         f"{t_sps:.4g}", f"{fv_sps / t_sps:.3f}", mem(fv["mem"]), mem(peer["mem"])))
    return rows


def mlp_config(config):
    # "--d 50 --width 256 --depth 3 --batch 256 --steps 500 [--tf32]": flowvar and torch share it
    w = config.split()
    return (f"d={w[1]} {w[5]}x{w[3]} batch {w[7]}", "tf32" if "--tf32" in w else "fp32", config)


def unet_config(config):
    # "torch [--tf32] [--fused]" against "flowvar [--tf32]"
    tf32 = "--tf32" in config.split()
    return ("paper cifar10 unet batch 128", "tf32" if tf32 else "fp32", "flowvar --tf32" if tf32 else "flowvar")


def write_tsv(path, header, rows):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(row) + "\n")
    os.replace(tmp, path)


def main(out):
    ok = True
    log = os.path.join(out, "parity.log")
    if os.path.exists(log):
        rows = parity(log)
        write_tsv(os.path.join(out, "gpu_parity.tsv"), ("check", "max_rel_err", "bound", "verdict"), rows)
        # on the device machine a skipped GPU test means that it did not run: a failure of the check
        failed = [r[0] for r in rows if r[3] in ("FAIL", "SKIP")]
        print(f"gpu_results: {len(rows)} parity rows, {len(failed)} failed or skipped" + (f": {failed}" if failed else ""))
        ok = ok and not failed and any(r[3] == "PASS" for r in rows)
    else:
        print(f"gpu_results: {log} missing", file=sys.stderr)
        ok = False
    rows = []
    for network, name, describe in (("mlp", "train_cuda.tsv", mlp_config), ("unet", "unet_cuda.tsv", unet_config)):
        path = os.path.join(out, name)
        if os.path.exists(path):
            rows += bench_rows(network, path, describe)
        else:
            print(f"gpu_results: {path} missing", file=sys.stderr)
            ok = False
    write_tsv(os.path.join(out, "gpu_bench.tsv"), ("network", "config", "precision", "flowvar_steps_s",
                                                   "torch_steps_s", "ratio", "flowvar_mem_gib", "torch_mem_gib"), rows)
    for row in rows:
        print("\t".join(row))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gpu_results.py DIR")
    sys.exit(main(sys.argv[1]))
