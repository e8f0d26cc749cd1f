/* cmd_w2.c: `flowvar w2`: the 2-Wasserstein distance between source and target, and the OT map. */
#include "cli/cli.h"

#include "core/error.h"
#include "core/io.h"
#include "gaussian/ot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static const fv_opt w2_opts[] = {
    {"map-out", "G.npy", "also write the OT map matrix G to an .npy file"},
    {NULL, NULL, NULL},
};

static const char usage[] = "Print W2(N(m0,S0), N(m1,S1)) and the OT map T(x) = m1 + G (x - m0), as TSV tables\n"
                            "('#' lines are comments). Example: flowvar w2 --target-mean 1,-0.5 "
                            "--target-cov 2,0.6,0.6,1";

int fv_cmd_w2(int argc, char **argv)
{
    fv_args a;
    fv_problem p = {0};
    double *G = NULL, w2sq;
    int st = fv_args_parse(&a, "w2", usage, argc, argv, fv_dist_opts, w2_opts, NULL);
    if (st < 0)
        return 0;
    if (st || (st = fv_cli_problem(&a, &p)))
        goto done;
    size_t d = p.d;
    if (!(G = malloc(d * d * sizeof *G))) {
        st = fv_error(FV_ENOMEM, "out of memory");
        goto done;
    }
    if ((st = fv_w2_squared(d, p.m0, p.S0, p.m1, p.S1, &w2sq)) || (st = fv_ot_map_matrix(d, p.S0, p.S1, G)) ||
        (st = fv_cli_finite("w2: W2^2", 1, 1, &w2sq)) || (st = fv_cli_finite("w2: the OT map matrix G", d, d, G)))
        goto done;
    if (fv_args_get(&a, "map-out")) {
        size_t shape[2] = {d, d};
        if ((st = fv_npy_write_f64(fv_args_get(&a, "map-out"), G, 2, shape)))
            goto done;
    }
    printf("# W2 distance between the source N(m0,S0) and the target N(m1,S1)\nw2\tw2_squared\n%.10g\t%.10g\n",
           sqrt(fmax(w2sq, 0.0)), w2sq);
    printf("# OT map T(x) = m1 + G (x - m0): the rows of G\n");
    for (size_t j = 0; j < d; j++)
        printf("%sg%zu", j ? "\t" : "", j + 1);
    printf("\n");
    for (size_t i = 0; i < d; i++)
        fv_tsv_row(stdout, (int)d, G + i * d);
done:
    free(G);
    fv_problem_free(&p);
    return st ? fv_cli_fail(st) : 0;
}
