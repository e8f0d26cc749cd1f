# gap.gp: the approximation gap of a trained network against a closed-form field over t, with
# 2-standard-error bars. Input: gap.tsv from `flowvar gap --out DIR`.
set datafile separator "\t"
set key top left box opaque
set grid
set logscale y
set format y "10^{%L}"
set title "Approximation gap of the learned field: E|v_{net}(X_t, t) - v_{closed}(X_t, t)|^2"
set xlabel "time t"
set ylabel "mean squared gap (log scale)"
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 960,620 enhanced font "DejaVu Sans,11" } else { set terminal svg size 960,620 enhanced font "DejaVu Sans,11" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    plot in using 1:2 skip 1 with lines lw 2 lc rgb "#1f77b4" notitle, \
         in using 1:2:(2*$3) skip 1 with yerrorbars pt 7 ps 0.6 lc rgb "#1f77b4" title "gap ± 2 SE"
}
