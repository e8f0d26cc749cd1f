# memo_end.gp: the memorization experiment (issue 19) at the end of training, over t, for training sets
# of N points at sigma = 0 and 0.05: the gap to the memorizing field v* of the training set and to the
# field of the set's Gaussian fit, the network's loss beside the loss floor L*(t), and the per-sample
# gradient variance. Input: DIR/gapemp_<run>.tsv (flowvar gap --field empirical: t gap gap_se loss
# loss_se floor floor_se), DIR/gapfit_<run>.tsv (flowvar gap --field markov: t gap gap_se) and
# DIR/gradvar_<run>.tsv (flowvar gradvar: t var var_se, the last row 'integrated' skipped), <run> =
# N<N>_s<sigma>. Call: gnuplot -e "in='DIR'; out='DIR/memo_end'; what='TITLE'".
set datafile separator "\t"
set grid
set key top left box opaque font ",8"
set xrange [0:1]
runs = "N16_s0 N16_s0.05 N128_s0 N128_s0.05 N1024_s0 N1024_s0.05"
colors = "#1f77b4 #1f77b4 #ff7f0e #ff7f0e #2ca02c #2ca02c"
f(kind, i) = sprintf("%s/%s_%s.tsv", in, kind, word(runs, i))
label(i) = sprintf("N = %s, {/Symbol s} = %s", substr(word(runs, i), 2, strstrt(word(runs, i), "_") - 1), word(runs, i)[strstrt(word(runs, i), "_s") + 2:])
style(i) = i % 2 ? 1 : 2
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 1280,960 enhanced font "DejaVu Sans,11" } else { set terminal svg size 1280,960 enhanced font "DejaVu Sans,11" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    set multiplot layout 2,2 title what
    set logscale y
    set xlabel "time t"
    set title "gap to the memorizing field v* of the training set"
    set ylabel "E|v_{net} - v*|^2"
    plot for [i=1:6] f("gapemp", i) using 1:2 skip 1 with linespoints lw 2 pt 7 ps 0.5 dt style(i) lc rgb word(colors, i) title label(i)
    unset key
    set title "gap to the field of the set's Gaussian fit"
    set ylabel "E|v_{net} - v_{fit}|^2"
    plot for [i=1:6] f("gapfit", i) using 1:2 skip 1 with linespoints lw 2 pt 7 ps 0.5 dt style(i) lc rgb word(colors, i) notitle
    set title "network loss (points) and loss floor L*(t) (lines)"
    set ylabel "E|u - v|^2"
    set yrange [1e-3:*]
    plot for [i=1:6] f("gapemp", i) using 1:4 skip 1 with points pt 7 ps 0.7 lc rgb word(colors, i) notitle, \
         for [i=1:6] f("gapemp", i) using 1:6 skip 1 with lines lw 2 dt style(i) lc rgb word(colors, i) notitle
    set autoscale y
    set title "per-sample gradient variance of the weights"
    set ylabel "Var[grad_w l]"
    plot for [i=1:6] f("gradvar", i) using 1:2 skip 1 with linespoints lw 2 pt 7 ps 0.5 dt style(i) lc rgb word(colors, i) notitle
    unset multiplot
    set key
}
