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
    {"digits", "N", "significant digits of the printed numbers, 1 to 17 (17 gives back the exact double); default 10"},
    {NULL, NULL, NULL},
};

static const char usage[] = "Print W2(N(m0,S0), N(m1,S1)) and the OT map T(x) = m1 + G (x - m0), as TSV tables\n"
                            "('#' lines are comments). W2^2 is clamped at 0 when rounding makes it negative (a\n"
                            "comment line says from what). Example: flowvar w2 --target-mean 1,-0.5 "
                            "--target-cov 2,0.6,0.6,1";

/* The two tables on stdout with `digits` significant digits; a W2^2 below 0 is rounding error (it is a
 * squared distance), printed as 0 with a comment line giving the value it had. */
static int print_tables(size_t d, double w2sq, const double *G, int digits)
{
    static const char *const names[] = {"w2", "w2_squared"};
    double row[2] = {sqrt(fmax(w2sq, 0.0)), fmax(w2sq, 0.0)};
    printf("# W2 distance between the source N(m0,S0) and the target N(m1,S1)\n");
    int st = fv_tsv_header(stdout, 2, names);
    if (st || (st = fv_tsv_row_digits(stdout, 2, row, digits)))
        return st;
    if (w2sq < 0)
        printf("# w2_squared clamped at 0 from %.*g (rounding)\n", digits, w2sq);
    printf("# OT map T(x) = m1 + G (x - m0): the rows of G\n");
    for (size_t j = 0; j < d; j++)
        printf("%sg%zu", j ? "\t" : "", j + 1);
    printf("\n");
    for (size_t i = 0; i < d && !st; i++)
        st = fv_tsv_row_digits(stdout, (int)d, G + i * d, digits);
    return st;
}

int fv_cmd_w2(int argc, char **argv)
{
    fv_args a;
    fv_problem p = {0};
    double *G = NULL, w2sq;
    size_t digits;
    int st = fv_args_parse(&a, "w2", usage, argc, argv, fv_dist_opts, w2_opts, NULL);
    if (st < 0)
        return 0;
    if (st || (st = fv_args_size(&a, "digits", FV_TSV_DIGITS, 1, &digits)))
        goto done;
    if (digits > FV_TSV_MAX_DIGITS) {
        st = fv_error(FV_EINPUT, "--digits must be 1 to %d (17 round-trips a double), got %zu", FV_TSV_MAX_DIGITS,
                      digits);
        goto done;
    }
    if ((st = fv_cli_problem(&a, &p)))
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
    st = print_tables(d, w2sq, G, (int)digits);
done:
    free(G);
    fv_problem_free(&p);
    return st ? fv_cli_fail(st) : 0;
}
