#!/bin/sh
# run_variance.sh: the exact-variance benchmark (bench_variance: exact gradient variance against its
# Monte-Carlo twin at d = 2, 50, 784) on an idle machine (wait_idle.sh), with the run's date, machine
# and load averages, into out/variance.md; with --record also into the variance block of
# ../BENCHMARKS.md (record.py). Called by variance.mk; about 1.5 minutes on the 2-core machine.
#   run_variance.sh [--record] [bench_variance options, e.g. --dims 2,50]
set -eu
cd "$(dirname "$0")"
record=0
if [ "${1:-}" = "--record" ]; then
    record=1
    shift
fi
. ./wait_idle.sh
mkdir -p out
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s)
date_utc=$(date -u '+%Y-%m-%d %H:%M UTC')
echo "bench: bench_variance $*" >&2
./bench_variance "$@" >out/variance.body.md
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
wall=$(($(date +%s) - start))
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
{
    echo "Recorded $date_utc by \`bench/run_variance.sh\` (wall time $wall s)."
    echo
    echo "- Machine: $cpu, $(nproc) cores, $mem, Linux $(uname -r); load average $load_start at the start, $load_end at the end."
    echo "- flowvar: $(cc --version | head -1), -O2; $(dpkg-query -W -f '${Package} ${Version}' libopenblas0-pthread 2>/dev/null || echo 'OpenBLAS'), $(dpkg-query -W -f '${Package} ${Version}' liblapacke 2>/dev/null || echo 'LAPACKE')."
    cat out/variance.body.md
} >out/variance.md
echo "bench: results in bench/out/variance.md" >&2
if [ "$record" = 1 ]; then
    python3 record.py variance out/variance.md ../BENCHMARKS.md
    echo "bench: recorded in BENCHMARKS.md (variance block)" >&2
fi
