# imgvar.gp: per-sample gradient variance over t of U-Nets trained on images, forward (noise -> data)
# and backward (data -> noise), sigma = 0 and 0.05, beside the exact variance of the Lemma 1 family on
# the images' Gaussian fit. Each curve is divided by its own mean over the grid (the network and the
# affine family have different parameters: the comparison is of shapes, where the variance peaks).
# Input: DIR/gradvar_{forward,backward}_s{0,0.05}.tsv from `flowvar gradvar --exact` (columns
# t var var_se exact_var; the last row, t = integrated, is skipped). Call: gnuplot -e "in='DIR'; out='DIR/imgvar'".
set datafile separator "\t"
set grid
set logscale y
set format y "10^{%L}"
set xrange [0:1]
set key top center box opaque font ",9"
f(dir, s) = sprintf("%s/gradvar_%s_s%s.tsv", in, dir, s)
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 1280,560 enhanced font "DejaVu Sans,11" } else { set terminal svg size 1280,560 enhanced font "DejaVu Sans,11" }
    set output exists(fmt) ? value(fmt) : out.".".fmt  # png=, svg=: flowvar's temporaries, renamed when whole
    set multiplot layout 1,2 title "Per-sample gradient variance over t, each curve over its mean on the grid"
    do for [dir in "forward backward"] {
        stats f(dir, "0") using (valid(1) ? $2 : NaN) skip 1 nooutput name "n0"
        stats f(dir, "0") using (valid(1) ? $4 : NaN) skip 1 nooutput name "e0"
        stats f(dir, "0.05") using (valid(1) ? $2 : NaN) skip 1 nooutput name "n5"
        stats f(dir, "0.05") using (valid(1) ? $4 : NaN) skip 1 nooutput name "e5"
        set title (dir eq "forward" ? "forward field: noise -> data" : "backward field: data -> noise")
        set xlabel "time t"
        set ylabel "variance / its mean over t"
        plot f(dir, "0") using 1:($2/n0_mean):(2*$3/n0_mean) skip 1 with yerrorlines lw 2 pt 7 ps 0.6 lc rgb "#1f77b4" title "U-Net, {/Symbol s} = 0 (± 2 SE)", \
             f(dir, "0.05") using 1:($2/n5_mean):(2*$3/n5_mean) skip 1 with yerrorlines lw 2 pt 5 ps 0.6 lc rgb "#d62728" title "U-Net, {/Symbol s} = 0.05 (± 2 SE)", \
             f(dir, "0") using 1:($4/e0_mean) skip 1 with lines lw 2 dt 2 lc rgb "#1f77b4" title "exact, Gaussian fit, {/Symbol s} = 0", \
             f(dir, "0.05") using 1:($4/e5_mean) skip 1 with lines lw 2 dt 3 lc rgb "#d62728" title "exact, Gaussian fit, {/Symbol s} = 0.05"
    }
    unset multiplot
}
