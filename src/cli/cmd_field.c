/* cmd_field.c: `flowvar field`: evaluate a closed-form field at given points and one time. */
#include "cli/cli.h"

#include "core/error.h"
#include "core/size.h"
#include "gaussian/field.h"

#include <stdlib.h>

static const fv_opt field_opts[] = {
    {"field", "ot|rotation|markov", "which closed-form field; default ot"},
    {"t", "T", "time in [0, 1] (required)"},
    {"points", "P.npy|LIST", "points (required): an .npy of shape (n, d) or (d,), or a list of rows of d numbers"},
    {"out", "FILE|-", "output FILE: .npy when it ends so, else TSV; - for TSV on stdout (default)"},
    {"cond-max", "C", "fail where cond(A(t)) exceeds C (>= 1); default 1e12"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "Evaluate v(x, t) of a closed-form field: the OT field (Lemma 1), the pair-optimal field of the\n"
    "rotational coupling, or the Markov field of the independent coupling (docs/THEORY.md section 2).\n"
    "Example: flowvar field --target-mean 1,-0.5 --target-cov 2,0.6,0.6,1 --field rotation --angle 120 \\\n"
    "           --t 0.6 --points 0.3,0.2";

int fv_cli_field_kind(const fv_args *a, fv_field_kind *kind)
{
    static const char *const kinds[] = {"ot", "rotation", "markov", NULL};
    int k, st = fv_args_choice(a, "field", kinds, FV_FIELD_OT, &k);
    *kind = (fv_field_kind)k;
    return st;
}

int fv_cli_field_flags(const fv_args *a, fv_field_kind kind)
{
    int st = kind == FV_FIELD_ROTATION ? FV_OK : fv_cli_unused(a, fv_rotation_flags, "without --field rotation");
    return st ? st : kind == FV_FIELD_MARKOV ? FV_OK
                                            : fv_cli_unused(a, fv_noise_flags,
                                                            "without --field markov (the OT and rotation fields do not "
                                                            "depend on the noise)");
}

int fv_cmd_field(int argc, char **argv)
{
    fv_args a;
    fv_problem p = {0};
    fv_field f = {0};
    fv_field_work w = {0};
    fv_field_kind kind;
    double t, *X = NULL, *V = NULL;
    size_t n;
    int st = fv_args_parse(&a, "field", usage, argc, argv, fv_dist_opts, fv_rotation_opts, fv_sigma_opts,
                           fv_schedule_opts, field_opts, NULL);
    if (st < 0)
        return 0;
    if (st || (st = fv_cli_field_kind(&a, &kind)) || (st = fv_cli_field_flags(&a, kind)))
        goto done;
    if (!fv_args_get(&a, "t")) {
        st = fv_error(FV_EINPUT, "--t is required");
        goto done;
    }
    if ((st = fv_args_double_in(&a, "t", 0.0, FV_DOM_UNIT, &t)))
        goto done;
    if ((st = fv_cli_problem(&a, &p)) || (st = fv_cli_points(&a, p.d, &X, &n)) ||
        (st = fv_field_build(&f, &p, kind)) || (st = fv_args_double_in(&a, "cond-max", f.cond_max, FV_DOM_COND, &f.cond_max)) ||
        (st = fv_field_work_alloc(&w, p.d, n)))
        goto done;
    if (!(V = fv_alloc(&st, "--points x dimension", n, p.d, sizeof *V)))
        goto done;
    if ((st = fv_field_eval(&f, t, n, X, V, &w)))
        goto done;
    size_t bad = fv_cli_first_nonfinite(n * p.d, V);
    if (bad < n * p.d) {
        st = fv_error(FV_ENUMERIC, "field: v(x, t = %g) at point %zu overflows (%g); nothing written", t, bad / p.d + 1,
                      V[bad]);
        goto done;
    }
    st = fv_cli_write_matrix(fv_args_get(&a, "out"), n, p.d, V, "v");
done:
    free(X);
    free(V);
    fv_field_work_free(&w);
    fv_field_free(&f);
    fv_problem_free(&p);
    return st ? fv_cli_fail(st) : 0;
}
