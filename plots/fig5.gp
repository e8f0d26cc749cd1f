# fig5.gp: Fig. 5 analogue. Per-time gradient variance of the OT field with deterministic interpolant
# (sigma = 0) on independent-coupling data and on 120 deg rotational data; lines exact, points
# Monte-Carlo with 2-standard-error bars. Input: fig5.tsv.
set datafile separator "\t"
set datafile missing "-"
set key top left box opaque
set grid
set title "Fig. 5: OT field variance over t, independent vs 120° rotational coupling, σ = 0"
set xlabel "time t"
set ylabel "per-sample gradient variance tr Cov[g | t]"
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 960,620 enhanced font "DejaVu Sans,11" } else { set terminal svg size 960,620 enhanced font "DejaVu Sans,11" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    plot in using 1:2 skip 1 with lines lw 2 lc rgb "#2ca02c" title "independent coupling (exact)", \
         in using 1:4:(2*$5) skip 1 with yerrorbars pt 7 ps 0.6 lc rgb "#2ca02c" title "independent coupling (MC ± 2 SE)", \
         in using 1:3 skip 1 with lines lw 2 lc rgb "#d62728" title "120° rotational coupling (exact)", \
         in using 1:6:(2*$7) skip 1 with yerrorbars pt 5 ps 0.6 lc rgb "#d62728" title "120° rotational coupling (MC ± 2 SE)"
}
