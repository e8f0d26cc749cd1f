# quiver.gp: v_OT (blue) against the pair-optimal field of the 120 deg rotational coupling (red) on a
# grid, at t = 0, 0.3, 0.6, 0.9 (reference problem); arrows scaled by 0.07. Input: quiver.tsv.
set datafile separator "\t"
set grid
set size ratio -1
set xrange [-3:3]
set yrange [-3:3]
set xlabel "x_1"
set ylabel "x_2"
set key bottom right box opaque font ",9"
times = "0 0.3 0.6 0.9"
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 1100,1000 enhanced font "DejaVu Sans,10" } else { set terminal svg size 1100,1000 enhanced font "DejaVu Sans,10" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    set multiplot layout 2,2 title "OT field (blue) vs 120° rotational pair field (red); arrows = 0.07 v(x, t)"
    do for [k = 0:3] {
        set title sprintf("t = %s", word(times, k + 1))
        plot in index k using 2:3:(0.07*$4):(0.07*$5) with vectors head filled size 0.06,20 lc rgb "#1f77b4" title "v_{OT}", \
             in index k using 2:3:(0.07*$6):(0.07*$7) with vectors head filled size 0.06,20 lc rgb "#d62728" title "v_{rot}"
    }
    unset multiplot
}
