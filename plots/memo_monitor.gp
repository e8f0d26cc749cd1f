# memo_monitor.gp: the training monitor of the memorization experiment (issue 19): over training, the
# excess loss E|v_net - v*|^2 at t = 0.5 and 0.9 to the memorizing field v* of the training set, and the copy
# fraction of generated samples (d1/d2 < 1/3), for training sets of N points at sigma = 0 and 0.05.
# Input: DIR/N<N>_s<sigma>/monitor.tsv (flowvar train --monitor-every; columns step t loss floor excess
# gradvar copy_fraction). Call: gnuplot -e "in='DIR'; out='DIR/memo_monitor'; what='TITLE'".
set datafile separator "\t"
set grid
runs = "N16_s0 N16_s0.05 N128_s0 N128_s0.05 N1024_s0 N1024_s0.05"
colors = "#1f77b4 #1f77b4 #ff7f0e #ff7f0e #2ca02c #2ca02c"
f(i) = sprintf("%s/%s/monitor.tsv", in, word(runs, i))
style(i) = i % 2 ? 1 : 2
label(i) = sprintf("N = %s, {/Symbol s} = %s", substr(word(runs, i), 2, strstrt(word(runs, i), "_") - 1), word(runs, i)[strstrt(word(runs, i), "_s") + 2:])
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 1500,520 enhanced font "DejaVu Sans,11" } else { set terminal svg size 1500,520 enhanced font "DejaVu Sans,11" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    set multiplot layout 1,3 title what
    set xlabel "training step"
    set logscale y
    do for [k=1:2] {
        set title sprintf("excess loss to the memorizing field v*, t = %s", k == 1 ? "0.5" : "0.9")
        set ylabel "E|v_{net} - v*|^2"
        if (k == 1) { set key top right box opaque font ",8" } else { unset key }
        # rows come in threes (t = 0.1, 0.5, 0.9) per monitored step: every 3th from row k
        plot for [i=1:6] f(i) using 1:5 skip 1 every 3::k with linespoints lw 2 pt 7 ps 0.5 dt style(i) lc rgb word(colors, i) title label(i)
    }
    unset logscale y
    unset key
    set title "copy fraction of generated samples (d1/d2 < 1/3)"
    set ylabel "copy fraction"
    set yrange [0:1]
    plot for [i=1:6] f(i) using 1:7 skip 1 every 3::1 with linespoints lw 2 pt 7 ps 0.5 dt style(i) lc rgb word(colors, i) notitle
    set autoscale y
    unset multiplot
}
