# angle.gp: integrated gradient variance of the OT field (solid) and of the pair-optimal rotational
# field (dashed) on rotational data, against the rotation angle, for several noise levels. The
# rotational field's curve stops where it becomes singular (about 164 deg); at sigma = 0 it is
# identically 0 (Proposition 1), which a log axis cannot show. Input: angle.tsv.
set datafile separator "\t"
set datafile missing "-"
set key outside right top box opaque
set grid
set logscale y
set title "Gradient variance vs coupling angle (solid: OT field; dashed: rotational field, which is 0 at σ = 0)"
set xlabel "rotation angle α of the coupling (degrees)"
set ylabel "integrated per-sample gradient variance (log scale)"
set xrange [0:180]
set yrange [1e-3:*]
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 1100,620 enhanced font "DejaVu Sans,11" } else { set terminal svg size 1100,620 enhanced font "DejaVu Sans,11" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    plot in using 1:2 skip 1 with lines lw 2 lc 1 title "OT, σ = 0", \
         in using 1:4 skip 1 with lines lw 2 lc 2 title "OT, σ = 0.05", \
         in using 1:5 skip 1 with lines lw 2 dt 2 lc 2 title "rotational, σ = 0.05", \
         in using 1:6 skip 1 with lines lw 2 lc 3 title "OT, σ = 0.1", \
         in using 1:7 skip 1 with lines lw 2 dt 2 lc 3 title "rotational, σ = 0.1", \
         in using 1:8 skip 1 with lines lw 2 lc 4 title "OT, σ = 0.3", \
         in using 1:9 skip 1 with lines lw 2 dt 2 lc 4 title "rotational, σ = 0.3"
}
