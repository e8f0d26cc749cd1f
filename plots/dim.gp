# dim.gp: integrated gradient variance against the dimension d (random target N(mu, M) with fixed
# seeds, 120 deg block rotations, sigma = 0.05). Input: dim.tsv.
set datafile separator "\t"
set datafile missing "-"
set key top left box opaque
set grid
set logscale xy
set title "Gradient variance vs dimension (σ = 0.05, random SPD target)"
set xlabel "dimension d (log scale)"
set ylabel "integrated per-sample gradient variance (log scale)"
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 960,620 enhanced font "DejaVu Sans,11" } else { set terminal svg size 960,620 enhanced font "DejaVu Sans,11" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    plot in using 1:2 skip 1 with linespoints lw 2 pt 7 title "120° data, OT field", \
         in using 1:3 skip 1 with linespoints lw 2 pt 5 title "120° data, rotational field", \
         in using 1:4 skip 1 with linespoints lw 2 pt 9 title "independent data, OT field"
}
