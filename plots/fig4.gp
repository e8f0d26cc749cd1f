# fig4.gp: Fig. 4 analogue. Integrated gradient variance of the OT field and of the pair-optimal
# rotational field on 120 deg rotational data, against the interpolant noise sigma; lines are exact,
# points are Monte-Carlo estimates with 2-standard-error bars. Input: flowvar figures' fig4.tsv.
set datafile separator "\t"
set datafile missing "-"
set key top left box opaque
set grid
set title "Fig. 4: gradient variance vs noise, 120° rotational coupling (reference problem)"
set xlabel "interpolant noise σ (constant schedule)"
set ylabel "integrated per-sample gradient variance tr Cov[g]"
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 960,620 enhanced font "DejaVu Sans,11" } else { set terminal svg size 960,620 enhanced font "DejaVu Sans,11" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    plot in using 1:2 skip 1 with lines lw 2 lc rgb "#1f77b4" title "OT field (exact)", \
         in using 1:4:(2*$5) skip 1 with yerrorbars pt 7 ps 0.6 lc rgb "#1f77b4" title "OT field (MC ± 2 SE)", \
         in using 1:3 skip 1 with lines lw 2 lc rgb "#d62728" title "rotational field (exact)", \
         in using 1:6:(2*$7) skip 1 with yerrorbars pt 5 ps 0.6 lc rgb "#d62728" title "rotational field (MC ± 2 SE)"
}
