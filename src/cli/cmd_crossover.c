/* cmd_crossover.c: `flowvar crossover`: the critical noise sigma*(alpha) per angle. */
#include "cli/cli.h"

#include "core/error.h"
#include "core/io.h"
#include "gaussian/crossover.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static const fv_opt crossover_opts[] = {
    {"angles", "LIST", "rotation angles in degrees (required), e.g. 60,90,120,150"},
    {"sigma-max", "S", "upper end of the searched noise range (> 0); default 2"},
    {"scan", "N", "scan steps before Brent refinement (>= 1); default 40"},
    {"xtol", "X", "absolute tolerance on sigma* (> 0); default 1e-8"},
    {"out", "FILE|-", "output TSV FILE, or - for stdout (default)"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "Critical noise sigma*: the interpolant noise at which the OT field and the pair-optimal rotational\n"
    "field have equal integrated gradient variance on the rotational coupling (docs/THEORY.md section 3);\n"
    "above it the OT field has the lower variance. Output TSV 'angle sigma_star', where sigma_star is\n"
    "'none' when the two do not cross in (0, sigma-max] (also when the rotational coupling is the OT\n"
    "coupling, e.g. angle 0 or d = 1: then the fields are the same) and 'diverges' when the rotational\n"
    "field is singular at some t (the reason goes to stderr). Uses --schedule (constant or bridge).\n"
    "Example: flowvar crossover --target-mean 1,-0.5 --target-cov 2,0.6,0.6,1 --angles 60,90,120,150";

int fv_cmd_crossover(int argc, char **argv)
{
    fv_args a;
    fv_problem p = {0};
    double *angles = NULL, smax, xtol, *sig = NULL;
    int *state = NULL; /* per angle: 0 none, 1 found, 2 diverges */
    size_t na = 0, nscan;
    int st = fv_args_parse(&a, "crossover", usage, argc, argv, fv_dist_opts, fv_schedule_opts, crossover_opts,
                           NULL);
    if (st < 0)
        return 0;
    if (st)
        goto done;
    if (!fv_args_get(&a, "angles")) {
        st = fv_error(FV_EINPUT, "--angles is required");
        goto done;
    }
    size_t shape[FV_NPY_MAX_DIMS];
    int ndim;
    if ((st = fv_args_array(&a, "angles", &angles, &na, &ndim, shape)))
        goto done;
    if (ndim > 1) {
        char found[96];
        fv_args_shape_text(ndim, shape, found, sizeof found);
        st = fv_error(FV_EINPUT, "--angles: %s has shape %s, expected a list (k,)", fv_args_get(&a, "angles"), found);
        goto done;
    }
    if ((st = fv_args_double_in(&a, "sigma-max", 2.0, FV_DOM_POSITIVE, &smax)) ||
        (st = fv_args_size(&a, "scan", 40, 1, &nscan)) ||
        (st = fv_args_double_in(&a, "xtol", 1e-8, FV_DOM_POSITIVE, &xtol)) || (st = fv_cli_problem(&a, &p)))
        goto done;
    free(p.R);
    p.R = malloc(p.d * p.d * sizeof *p.R);
    sig = malloc(na * sizeof *sig);
    state = malloc(na * sizeof *state);
    if (!p.R || !sig || !state) {
        st = fv_error(FV_ENOMEM, "out of memory");
        goto done;
    }
    p.coupling = FV_COUPLING_ROTATION;
    for (size_t i = 0; i < na && !st; i++) {
        fv_rotation_blocks(p.d, angles[i], p.R);
        double distance;
        if ((st = fv_crossover_coupling_distance(&p, &distance)))
            break;
        if (distance <= FV_CROSSOVER_SAME_COUPLING)
            fprintf(stderr,
                    "flowvar: crossover: angle %g: the rotational coupling is the OT coupling (relative distance "
                    "%.1e): the two fields are one field, so there is no crossover\n",
                    angles[i], distance);
        st = fv_crossover_sigma(&p, smax, nscan, xtol, 1e-10, &sig[i], &state[i]);
        if (st == FV_EDIVERGE) {
            fprintf(stderr, "flowvar: crossover: angle %g: %s\n", angles[i], fv_last_error());
            state[i] = 2;
            st = FV_OK;
        }
    }
    for (size_t i = 0; i < na && !st; i++)
        if (state[i] == 1 && !isfinite(sig[i]))
            st = fv_error(FV_ENUMERIC, "crossover: angle %g: sigma* is not finite; nothing written", angles[i]);
    if (st)
        goto done;
    fv_atomic_file f;
    if ((st = fv_atomic_open(&f, fv_args_get(&a, "out") ? fv_args_get(&a, "out") : "-")))
        goto done;
    fprintf(f.fp, "angle\tsigma_star\n");
    for (size_t i = 0; i < na; i++) {
        if (state[i] == 1)
            fprintf(f.fp, "%.10g\t%.10g\n", angles[i], sig[i]);
        else
            fprintf(f.fp, "%.10g\t%s\n", angles[i], state[i] == 2 ? "diverges" : "none");
    }
    st = fv_atomic_commit(&f);
done:
    free(angles);
    free(sig);
    free(state);
    fv_problem_free(&p);
    return st ? fv_cli_fail(st) : 0;
}
