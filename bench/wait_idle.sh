#!/bin/sh
# wait_idle.sh: sourced by run_variance.sh and run_train.sh before they time anything. Waits until no
# other benchmark of this directory runs (bench_field, peer_field, bench_variance, bench_train,
# peer_train) and the 1-minute load average is below IDLE_LOAD (default 0.5), checking every 10 s for
# at most IDLE_WAIT_MAX seconds (default 900; then it goes ahead and says so on stderr).
idle_load=${IDLE_LOAD:-0.5}
idle_max=${IDLE_WAIT_MAX:-900}
idle_waited=0
while :; do
    busy=$(pgrep -f 'bench_field|peer_field|bench_variance|bench_train|peer_train' || true)
    load=$(cut -d' ' -f1 /proc/loadavg)
    if [ -z "$busy" ] && awk -v l="$load" -v m="$idle_load" 'BEGIN { exit !(l < m) }'; then
        break
    fi
    if [ "$idle_waited" -ge "$idle_max" ]; then
        echo "wait_idle: still busy after ${idle_waited} s (load $load${busy:+, benchmarks running: $busy}); going ahead" >&2
        break
    fi
    if [ $((idle_waited % 60)) -eq 0 ]; then
        echo "wait_idle: waiting for an idle machine (load $load${busy:+, benchmarks running}) ..." >&2
    fi
    sleep 10
    idle_waited=$((idle_waited + 10))
done
