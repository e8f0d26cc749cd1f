#!/bin/sh
# run.sh: run the field benchmark (bench_field) and its numpy/scipy peer (peer_field.py) one after
# the other on an otherwise idle machine, then tabulate both with report.py: out/report.md always,
# and the generated block of ../BENCHMARKS.md when the run is the recorded configuration
# (dims 50 784 3072, n = 10^4, 10 times). Called by bench/Makefile; settings from the environment:
#   BENCH_DIMS (default "50 784 3072"), BENCH_N (10000), BENCH_NT (10), BENCH_RATE_SIZE (3072).
set -eu
cd "$(dirname "$0")"

DIMS=${BENCH_DIMS:-50 784 3072}
N=${BENCH_N:-10000}
NT=${BENCH_NT:-10}
RATE=${BENCH_RATE_SIZE:-3072}

if ! command -v python3 >/dev/null 2>&1; then
    echo "bench: error: python3 not found; the numpy/scipy peer needs python3 with numpy and scipy" >&2
    exit 1
fi
if ! python3 -c 'import numpy, scipy.linalg' >/dev/null 2>&1; then
    echo "bench: error: the numpy/scipy peer needs numpy and scipy; install them with:" >&2
    echo "    python3 -m pip install numpy scipy" >&2
    exit 1
fi

mkdir -p out
start=$(date +%s)
{
    echo "meta	date_utc	$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "meta	loadavg_start	$(cut -d' ' -f1-3 /proc/loadavg)"
} >out/run.tsv

echo "bench: flowvar (bench_field --dims \"$DIMS\" --n $N --nt $NT)" >&2
./bench_field --dims "$DIMS" --n "$N" --nt "$NT" --rate-size "$RATE" >out/flowvar.tsv

# numpy's and scipy's OpenBLAS get the thread count the C side's OpenBLAS chose by default
threads=$(awk -F'\t' '$1 == "meta" && $2 == "blas_threads" { print $3 }' out/flowvar.tsv)
echo "bench: numpy/scipy peer (OPENBLAS_NUM_THREADS=$threads peer_field.py)" >&2
OPENBLAS_NUM_THREADS=$threads python3 peer_field.py --dims "$DIMS" --n "$N" --nt "$NT" --rate-size "$RATE" \
    >out/peer.tsv

{
    echo "meta	loadavg_end	$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "meta	wall_s	$(($(date +%s) - start))"
} >>out/run.tsv

record=""
if [ "$DIMS" = "50 784 3072" ] && [ "$N" = 10000 ] && [ "$NT" = 10 ]; then
    record="--record ../BENCHMARKS.md"
fi
# shellcheck disable=SC2086
python3 report.py out/run.tsv out/flowvar.tsv out/peer.tsv --out out/report.md $record
