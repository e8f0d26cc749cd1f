# fig6_trained.gp: Fig. 6 with a TRAINED network: the paths of an MLP trained with CFM (sigma = 0) on
# the 180 deg pairs of Counter Example 1 (b = -a + 5), integrated from the training sources, beside
# the straight pair lines that all cross at (2.5, 2.5) at t = 1/2. Input: the --paths-out TSV of
# `flowvar sample --train-sources` (columns point t x1 x2 source1 source2 target1 target2).
set datafile separator "\t"
set key outside right top box opaque
set grid
set size ratio -1
set title "Fig. 6 with a trained MLP (σ = 0) on the 180° pairs of Counter Example 1"
set xlabel "x_1"
set ylabel "x_2"
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 1000,700 enhanced font "DejaVu Sans,11" } else { set terminal svg size 1000,700 enhanced font "DejaVu Sans,11" }
    set output out.".".fmt
    plot in using ((1-$2)*$5 + $2*$7):((1-$2)*$6 + $2*$8) skip 1 with lines lw 4 lc rgb "#c0c0c0" title "training pair lines", \
         in using 3:4 skip 1 with lines lw 1.5 lc rgb "#d62728" title "trained MLP paths", \
         in using ($2 == 0 ? $3 : 1/0):4 skip 1 with points pt 7 ps 0.8 lc rgb "black" title "sources a_i", \
         in using ($2 == 1 ? $7 : 1/0):8 skip 1 with points pt 6 ps 1.4 lc rgb "black" title "paired targets b_i", \
         in using ($2 == 1 ? $3 : 1/0):4 skip 1 with points pt 2 ps 1.0 lc rgb "#d62728" title "MLP end points"
}
