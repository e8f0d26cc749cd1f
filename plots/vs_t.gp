# vs_t.gp: per-time gradient variance for each coupling/field pair at sigma = 0.05 (reference
# problem, 120 deg for the rotational coupling). Input: vs_t.tsv.
set datafile separator "\t"
set datafile missing "-"
set key outside right top box opaque
set grid
set logscale y
set title "Gradient variance over t for each coupling / field pair (σ = 0.05)"
set xlabel "time t"
set ylabel "per-sample gradient variance tr Cov[g | t] (log scale)"
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 1100,620 enhanced font "DejaVu Sans,11" } else { set terminal svg size 1100,620 enhanced font "DejaVu Sans,11" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    plot in using 1:2 skip 1 with lines lw 2 title "OT data, OT field", \
         in using 1:3 skip 1 with lines lw 2 title "120° data, OT field", \
         in using 1:4 skip 1 with lines lw 2 title "120° data, rotational field", \
         in using 1:5 skip 1 with lines lw 2 title "independent data, OT field", \
         in using 1:6 skip 1 with lines lw 2 title "independent data, Markov field"
}
