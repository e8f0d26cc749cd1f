# fig6.gp: Fig. 6 analogue. Counter Example 1: pairs of the 180 deg coupling of N(0, I) to N(5, I)
# (b = -a + 5; every pair line passes through (2.5, 2.5) at t = 1/2), the paths of the memorizing
# field (s = 0, Euler 101 steps), which return the paired targets, and the OT paths a + 5t.
# Input: fig6.tsv (one block per pair).
set datafile separator "\t"
set key outside right top box opaque
set grid
set size ratio -1
set title "Fig. 6: 180° coupling — pair lines, memorizing-field paths and OT paths"
set xlabel "x_1"
set ylabel "x_2"
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 1000,700 enhanced font "DejaVu Sans,11" } else { set terminal svg size 1000,700 enhanced font "DejaVu Sans,11" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    plot in using 3:4 skip 1 with lines lw 4 lc rgb "#c0c0c0" title "training pair lines", \
         in using 5:6 skip 1 with lines lw 1.5 lc rgb "#d62728" title "memorizing field paths", \
         in using 7:8 skip 1 with lines lw 1.5 dt 2 lc rgb "#1f77b4" title "OT paths (x_0 + 5t)", \
         in using ($2 == 0 ? $3 : 1/0):4 skip 1 with points pt 7 ps 0.8 lc rgb "black" title "sources a_i", \
         in using ($2 == 1 ? $3 : 1/0):4 skip 1 with points pt 6 ps 1.2 lc rgb "black" title "paired targets b_i"
}
