# fig6_steps.gp: how many Euler steps a trained sigma = 0 MLP may take and still return its 180 deg
# training pairs (Counter Example 1): mean distance of the end points to the paired targets and to the
# OT map's targets against the number of steps. Input: TSV with columns steps l2_to_pair l2_to_ot
# (one `flowvar sample --train-sources --l2-report` per row, see scripts/reproduce).
set datafile separator "\t"
set key right bottom box opaque
set grid
set logscale x
set xlabel "Euler steps (even counts evaluate the field at t = 1/2, where all training paths meet)"
set ylabel "mean distance of the end points"
set title "Trained MLP on the 180° pairs: few odd steps return the pairs, fine integration does not"
set yrange [0:*]
set xrange [0.9:130]
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 900,600 enhanced font "DejaVu Sans,11" } else { set terminal svg size 900,600 enhanced font "DejaVu Sans,11" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    plot in using 1:2 skip 1 with linespoints lw 2 pt 7 lc rgb "#d62728" title "to the paired (training) targets", \
         in using 1:3 skip 1 with linespoints lw 2 pt 5 lc rgb "#1f77b4" title "to the OT targets T_{OT}(a_i)"
}
