# gap_empirical.gp: a trained network against the exact minimizer v* of its training set over t: its loss
# E|u - v_net|^2, the loss floor L*(t) = E|u - v*|^2 and the excess E|v_net - v*|^2 (loss = floor +
# excess), with 2-standard-error bars. Input: gap_empirical.tsv from `flowvar gap --field empirical --out DIR`
# (columns t gap gap_se loss loss_se floor floor_se).
set datafile separator "\t"
set key center right box opaque
set grid
set logscale y
set format y "10^{%L}"
set title "Loss = floor + excess: the network against the memorizing field v*"
set xlabel "time t"
set ylabel "summed over coordinates (log scale)"
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 960,620 enhanced font "DejaVu Sans,11" } else { set terminal svg size 960,620 enhanced font "DejaVu Sans,11" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    plot in using 1:4 skip 1 with lines lw 2 lc rgb "#2ca02c" notitle, \
         in using 1:4:(2*$5) skip 1 with yerrorbars pt 7 ps 0.6 lc rgb "#2ca02c" title "network loss E|u - v_{net}|^2", \
         in using 1:2 skip 1 with lines lw 2 lc rgb "#1f77b4" notitle, \
         in using 1:2:(2*$3) skip 1 with yerrorbars pt 7 ps 0.6 lc rgb "#1f77b4" title "excess E|v_{net} - v*|^2", \
         in using 1:6 skip 1 with lines lw 2 lc rgb "#d62728" notitle, \
         in using 1:6:(2*$7) skip 1 with yerrorbars pt 7 ps 0.6 lc rgb "#d62728" title "floor L*(t) = E|u - v*|^2"
}
