#!/bin/sh
# run_train.sh: the training benchmark on an idle machine (wait_idle.sh): flowvar's CPU trainer
# (bench_train) and its PyTorch peer (peer_train.py), same MLP, batch and optimizer, in one run,
# interleaved: two rounds of [flowvar, torch (Adam default), torch (Adam fused)] with 2 and then 1
# thread (OpenBLAS's count for flowvar, torch.set_num_threads for torch). Tabulated by report_train.py
# into out/train.md; with --record also into the train block of ../BENCHMARKS.md (record.py).
# The timed commands of both sides run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (`env -u`):
# some machines set them, a user's machine does not, and they hold OpenBLAS to an older kernel than the
# CPU's (the header says which kernel ran, and torch's CPU capability). Never in tests or CI.
# Called by variance.mk; about 2.5 minutes on the 2-core machine. Settings from the environment:
#   TRAIN_STEPS (500 per timed repetition), TRAIN_REPS (3 per program run), TRAIN_ROUNDS (2).
set -eu
cd "$(dirname "$0")"
record=0
if [ "${1:-}" = "--record" ]; then
    record=1
fi
if ! python3 -c 'import torch' >/dev/null 2>&1; then
    echo "bench: error: the PyTorch peer needs torch for python3: python3 -m pip install torch" >&2
    exit 1
fi
STEPS=${TRAIN_STEPS:-500}
REPS=${TRAIN_REPS:-3}
ROUNDS=${TRAIN_ROUNDS:-2}

# What a user's machine runs: OpenBLAS picks its kernel for the CPU itself.
clean_env() {
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$@"
}

. ./wait_idle.sh
mkdir -p out
rm -f out/train_*.tsv
start=$(date +%s)
{
    echo "meta	date_utc	$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "meta	loadavg_start	$(cut -d' ' -f1-3 /proc/loadavg)"
} >out/train_run.tsv
probe=$(clean_env ./bench_train --steps 1 --warmup 0 --reps 1 --gemm-size 64 2>/dev/null)
default_threads=$(printf '%s\n' "$probe" | awk -F'\t' '$2 == "blas_threads" { print $3 }')
kernel=$(printf '%s\n' "$probe" | awk -F'\t' '$2 == "openblas_corename" { print $3 }')
capability=$(clean_env python3 -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')
echo "bench: OpenBLAS kernel $kernel (openblas_get_corename), torch CPU capability $capability," \
    "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for the timed commands" >&2
round=1
while [ "$round" -le "$ROUNDS" ]; do
    for th in $default_threads 1; do
        echo "bench: round $round, $th thread(s): flowvar" >&2
        clean_env OPENBLAS_NUM_THREADS="$th" ./bench_train --steps "$STEPS" --reps "$REPS" >"out/train_c_t${th}_r$round.tsv"
        echo "bench: round $round, $th thread(s): torch" >&2
        clean_env OPENBLAS_NUM_THREADS="$th" python3 peer_train.py --steps "$STEPS" --reps "$REPS" --threads "$th" \
            >"out/train_torch_t${th}_r$round.tsv"
        echo "bench: round $round, $th thread(s): torch, fused Adam" >&2
        clean_env OPENBLAS_NUM_THREADS="$th" python3 peer_train.py --steps "$STEPS" --reps "$REPS" --threads "$th" \
            --fused \
            >"out/train_torchfused_t${th}_r$round.tsv"
    done
    round=$((round + 1))
done
{
    echo "meta	loadavg_end	$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "meta	wall_s	$(($(date +%s) - start))"
    echo "meta	default_threads	$default_threads"
    echo "meta	openblas_kernel	$kernel"
    echo "meta	torch_capability	$capability"
} >>out/train_run.tsv
python3 report_train.py out >out/train.md
echo "bench: results in bench/out/train.md" >&2
if [ "$record" = 1 ]; then
    python3 record.py train out/train.md ../BENCHMARKS.md
    echo "bench: recorded in BENCHMARKS.md (train block)" >&2
fi
