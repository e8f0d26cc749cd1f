# fig6_trained.gp: Fig. 6 with a TRAINED network: the paths of an MLP trained with CFM (sigma = 0) on
# the 180 deg pairs of Counter Example 1 (b = -a + 5), integrated from the training sources, beside
# the straight pair lines that all cross at (2.5, 2.5) at t = 1/2. Two panels: the fine Euler
# integration (close to the network's ODE flow) and a few-step Euler sampler whose steps skip t = 1/2.
# Inputs: the --paths-out TSVs of `flowvar sample --train-sources` (columns point t x1 x2 source1
# source2 target1 target2): fine = the fine run, coarse = the few-step run; nfine, ncoarse = their steps.
set datafile separator "\t"
set grid
set size ratio -1
set xlabel "x_1"
set ylabel "x_2"
set xrange [-3:8]
set yrange [-3:8]
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 1400,700 enhanced font "DejaVu Sans,11" } else { set terminal svg size 1400,700 enhanced font "DejaVu Sans,11" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    set multiplot layout 1,2 title "Fig. 6 with a trained MLP (σ = 0) on the 12 pairs of the 180° coupling of Counter Example 1"
    do for [k = 1:2] {
        file = (k == 1 ? fine : coarse)
        set title (k == 1 ? sprintf("%d Euler steps: the flow cannot separate paths that met at t = 1/2", nfine) \
                          : sprintf("%d Euler steps (skipping t = 1/2): the training pairs come back", ncoarse))
        if (k == 1) { set key bottom right box opaque } else { unset key }
        plot file using ((1-$2)*$5 + $2*$7):((1-$2)*$6 + $2*$8) skip 1 with lines lw 4 lc rgb "#c0c0c0" title "training pair lines", \
             file using 3:4 skip 1 with linespoints lw 1.5 pt 7 ps (k == 1 ? 0 : 0.5) lc rgb "#d62728" title "MLP paths", \
             file using ($2 == 0 ? $3 : 1/0):4 skip 1 with points pt 7 ps 0.8 lc rgb "black" title "sources a_i", \
             file using ($2 == 1 ? $7 : 1/0):8 skip 1 with points pt 6 ps 1.6 lc rgb "black" title "paired targets b_i", \
             file using ($2 == 1 ? $3 : 1/0):4 skip 1 with points pt 2 ps 1.2 lc rgb "#1f77b4" title "MLP end points"
    }
    unset multiplot
}
