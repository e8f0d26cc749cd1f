#!/bin/sh
# monitor.sh: what the training monitor (train --monitor-every K) costs: the same run timed without and
# with it, alternately (ROUNDS rounds, so that both see the same load), for
#   mlp:  the default MLP (3 x 256, batch 256) on 1024 points of an 8-component mixture in d = 2
#         (--targets), MLP_STEPS steps, K = MLP_K (500), M = 32 (the default);
#   unet: the README's U-Net (32 channels, 1,2; batch 16) on 1024 Fashion-MNIST images, UNET_STEPS
#         steps, K = UNET_K (100), M = 32.
# Prints TSV rows `net steps K plain_s monitor_s overhead` (overhead = monitor_s / plain_s - 1, which
# includes the floors computed once at the start), then the U-Net's cost per monitoring event as a
# fraction of K training steps for K = 500. Usage: bench/monitor.sh [FLOWVAR] (default build/flowvar);
# NETS="mlp" or "unet" times one of the two.
set -eu
fv=$(realpath "${1:-build/flowvar}")
ROUNDS=${ROUNDS:-2}
MLP_STEPS=${MLP_STEPS:-2000}
MLP_K=${MLP_K:-500}
UNET_STEPS=${UNET_STEPS:-200}
UNET_K=${UNET_K:-100}
NETS=${NETS:-mlp unet}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$fv" train --gmm 8 --dim 2 --finite 1024 --steps 1 --out "$tmp/gen" >/dev/null 2>&1
secs() { # seconds of one training run: $1 the run folder, the rest its options
    d=$1
    shift
    rm -rf "$d"
    s=$(date +%s.%N)
    "$fv" train "$@" --out "$d" >/dev/null 2>&1
    e=$(date +%s.%N)
    awk -v s="$s" -v e="$e" 'BEGIN { printf "%.2f", e - s }'
}
printf 'net\tsteps\tK\tplain_s\tmonitor_s\toverhead\n'
mlp="--targets $tmp/gen/pairs.npy --steps $MLP_STEPS"
unet="--model unet --data fashion-mnist --images 1024 --channels 32 --channel-mult 1,2 --batch 16 --lr 5e-4 --steps $UNET_STEPS"
time_mlp() {
    # shellcheck disable=SC2086
    p=$(secs "$tmp/m0" $mlp)
    # shellcheck disable=SC2086
    m=$(secs "$tmp/m1" $mlp --monitor-every "$MLP_K")
    awk -v p="$p" -v m="$m" -v n="$MLP_STEPS" -v k="$MLP_K" 'BEGIN { printf "mlp\t%d\t%d\t%s\t%s\t%.3f\n", n, k, p, m, m / p - 1 }'
}
time_unet() {
    # shellcheck disable=SC2086
    p=$(secs "$tmp/u0" $unet)
    # shellcheck disable=SC2086
    m=$(secs "$tmp/u1" $unet --monitor-every "$UNET_K")
    awk -v p="$p" -v m="$m" -v n="$UNET_STEPS" -v k="$UNET_K" 'BEGIN {
        printf "unet\t%d\t%d\t%s\t%s\t%.3f\n", n, k, p, m, m / p - 1
        ev = (m - p) / (n / k); step = p / n
        printf "# unet: %.1f s per monitoring event (with the start-up floors), %.2f s per step: %.1f%% at K = 500\n", ev, step, 100 * ev / (500 * step)
    }'
}
r=1
while [ "$r" -le "$ROUNDS" ]; do
    for net in $NETS; do
        "time_$net"
    done
    r=$((r + 1))
done
