# phase.gp: phase diagram of the critical noise sigma*(angle): above the curve the OT field has the
# lower integrated gradient variance, below it the pair-optimal rotational field does. Gaps: no
# crossing in (0, 2] or a singular rotational field. Input: phase.tsv.
set datafile separator "\t"
set datafile missing "-"
set key bottom left box opaque
set grid
set logscale y
set title "Critical noise σ*(α): where noise makes the OT field the low-variance field"
set xlabel "rotation angle α of the coupling (degrees)"
set ylabel "critical noise σ* (log scale)"
set xrange [0:180]
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 960,620 enhanced font "DejaVu Sans,11" } else { set terminal svg size 960,620 enhanced font "DejaVu Sans,11" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    plot in using 1:2 skip 1 with linespoints lw 2 pt 7 ps 0.6 title "M = [[2, 0.6], [0.6, 1]] (reference)", \
         in using 1:3 skip 1 with linespoints lw 2 pt 5 ps 0.6 title "M = I (isotropic)", \
         in using 1:4 skip 1 with linespoints lw 2 pt 9 ps 0.6 title "M = [[4, 1], [1, 0.5]] (anisotropic)"
}
