#!/bin/sh
# run_unet_cuda.sh: the GPU U-Net benchmark on a GPU machine, one run: bench_unet_cuda (fp32, TF32) and
# peer_unet_cuda.py (torchcfm in PyTorch eager: fp32, TF32, bf16 autocast; default and fused Adam) at the
# paper's configuration and batch 128. Raw TSV in OUT (default out/unet_cuda.tsv); prints each
# configuration's best steps/s and TFLOP/s (4.8 TFLOP per step) and the memory rows. QUICK=1 runs the
# peer in fp32 and TF32 with the default Adam only (scripts/gpu-check's budget).
#   BENCH=path/to/bench_unet_cuda [QUICK=1] bench/run_unet_cuda.sh [OUT]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
BENCH=${BENCH:-$here/bench_unet_cuda}
OUT=${1:-$here/out/unet_cuda.tsv}
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
for prec in "" "--tf32"; do
    # shellcheck disable=SC2086
    { echo "config	flowvar $prec"; "$BENCH" --batch 128 $prec; } >> "$OUT"
done
adams="foreach fused"
set -- "" "--tf32" "--bf16"
if [ "${QUICK:-0}" = 1 ]; then adams=foreach; set -- "" "--tf32"; fi
for prec in "$@"; do
    for adam in $adams; do
        flag=""
        [ "$adam" = fused ] && flag=--fused
        # shellcheck disable=SC2086
        { echo "config	torch $prec $flag"; python3 "$here/peer_unet_cuda.py" --batch 128 $prec $flag; } >> "$OUT"
    done
done
# best (smallest) seconds per step of each configuration
awk -F'\t' '$1 == "config" { c = $2 } $1 == "steps" { if (!(c in best) || $4 < best[c]) best[c] = $4 }
            $1 == "memory" { print c "\t" $2 "\t" $3 }
            END { for (c in best) printf "%s\t%.3f steps/s\t%.1f TFLOP/s\n", c, 1 / best[c], 4.8 / best[c] }' "$OUT"
