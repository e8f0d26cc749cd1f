#!/bin/sh
# run_train_cuda.sh: the GPU training benchmark on a GPU machine: bench_train_cuda and peer_train_cuda.py
# (PyTorch eager, default foreach Adam and fused Adam) at the two sizes of the CUDA issue, fp32 and TF32,
# all in one run; prints the markdown block for BENCHMARKS.md (bench/report_train_cuda.py) and keeps
# the raw TSV in OUT (default out/train_cuda.tsv).
#   BENCH=path/to/bench_train_cuda bench/run_train_cuda.sh [OUT]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
BENCH=${BENCH:-$here/bench_train_cuda}
OUT=${1:-$here/out/train_cuda.tsv}
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
for size in "--d 50 --width 256 --depth 3 --batch 256 --steps 500" \
            "--d 3072 --width 1024 --depth 4 --batch 1024 --steps 100"; do
    for prec in "" "--tf32"; do
        # shellcheck disable=SC2086
        { echo "config	$size $prec"; "$BENCH" $size $prec --reps 3 2>/dev/null; } >> "$OUT"
        # shellcheck disable=SC2086
        { echo "config	$size $prec"; python3 "$here/peer_train_cuda.py" $size $prec --reps 3; } >> "$OUT"
        # shellcheck disable=SC2086
        { echo "config	$size $prec"; python3 "$here/peer_train_cuda.py" $size $prec --reps 3 --fused; } >> "$OUT"
    done
done
python3 "$here/report_train_cuda.py" "$OUT"
