/* cmd_field.c: `flowvar field`: evaluate a closed-form field, or the empirical minimizer of a finite data
 * set, at given points and one time; and the parsing of --field and of the empirical field's flags that
 * the other commands share. */
#include "cli/cli.h"

#include "core/error.h"
#include "core/size.h"
#include "gaussian/field.h"

#include <stdlib.h>
#include <string.h>

static const fv_opt field_opts[] = {
    {"field", "ot|rotation|markov|empirical", "which field; default ot (empirical: the exact minimizer for the data\n"
                                              "      of --targets or --data, docs/THEORY.md section 7)"},
    {"t", "T", "time in [0, 1] (required)"},
    {"points", "P.npy|LIST", "points (required): an .npy of shape (n, d) or (d,), or a list of rows of d numbers"},
    {"out", "FILE|-", "output FILE: .npy when it ends so, else TSV; - for TSV on stdout (default)"},
    {"cond-max", "C", "fail where cond(A(t)) exceeds C (>= 1); default 1e12 (closed forms only)"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "Evaluate v(x, t) of a closed-form field: the OT field (Lemma 1), the pair-optimal field of the\n"
    "rotational coupling, or the Markov field of the independent coupling (docs/THEORY.md section 2); or\n"
    "of --field empirical, the exact CFM minimizer v* between a Gaussian and the finite data set of\n"
    "--targets or --data (section 7: the field that memorizes; its dimension is the data's).\n"
    "Example: flowvar field --target-mean 1,-0.5 --target-cov 2,0.6,0.6,1 --field rotation --angle 120 \\\n"
    "           --t 0.6 --points 0.3,0.2\n"
    "         flowvar field --field empirical --targets Y.npy --sigma 0.05 --t 0.9 --points P.npy";

int fv_cli_field_kind(const fv_args *a, fv_field_kind *kind)
{
    static const char *const kinds[] = {"ot", "rotation", "markov", NULL};
    int k, st = fv_args_choice(a, "field", kinds, FV_FIELD_OT, &k);
    *kind = (fv_field_kind)k;
    return st;
}

int fv_cli_field_is_empirical(const fv_args *a)
{
    const char *f = fv_args_get(a, "field");
    return f && strcmp(f, "empirical") == 0;
}

/* --targets Y.npy: N rows of d numbers, d the product of the trailing dimensions. */
static int read_targets(const fv_args *a, double **Y, size_t *n, size_t *d)
{
    size_t count, shape[FV_NPY_MAX_DIMS];
    int ndim, st = fv_args_array(a, "targets", Y, &count, &ndim, shape);
    if (st)
        return st;
    *n = ndim >= 2 ? shape[0] : 0;
    *d = *n ? count / *n : 0;
    if (ndim < 2 || *n == 0 || *d == 0) {
        char found[96] = "a list";
        if (ndim)
            fv_args_shape_text(ndim, shape, found, sizeof found);
        free(*Y);
        *Y = NULL;
        return fv_error(FV_EINPUT, "--targets: %s is %s%s: the data must be an .npy of shape (N, d) with N, d >= 1",
                        fv_args_get(a, "targets"), ndim ? "of shape " : "", found);
    }
    return FV_OK;
}

/* --data SET [--data-dir DIR] [--images N] into c->ds. */
static int read_data_set(const fv_args *a, fv_cli_emp *c)
{
    static const char *const sets[] = {"fashion-mnist", "cifar10", NULL};
    int set, st;
    size_t limit;
    if ((st = fv_args_choice(a, "data", sets, 0, &set)) ||
        (st = fv_args_size(a, "images", 0, fv_args_get(a, "images") ? 1 : 0, &limit)))
        return st;
    if (set == FV_DATASET_CIFAR10 && !fv_args_get(a, "data-dir"))
        return fv_error(FV_EINPUT, "--data cifar10 needs --data-dir DIR (data_batch_1.bin ... as distributed)");
    return fv_dataset_load(&c->ds, (fv_dataset_kind)set, fv_args_get(a, "data-dir"), FV_SPLIT_TRAIN, limit);
}

int fv_cli_empirical_open(const fv_args *a, fv_cli_emp *c)
{
    static const char *const directions[] = {"forward", "backward", NULL};
    static const char *const target_flags[] = {"target-mean", "target-cov", NULL},
                             *const source_flags[] = {"source-mean", "source-cov", NULL};
    double *Y = NULL;
    size_t n = 0, d = 0;
    int dir, st;
    memset(c, 0, sizeof *c);
    if (fv_args_get(a, "targets") && fv_args_get(a, "data"))
        return fv_error(FV_EINPUT, "give --targets or --data, not both");
    if (!fv_args_get(a, "targets") && !fv_args_get(a, "data"))
        return fv_error(FV_EINPUT, "--field empirical needs its data: --targets Y.npy or --data fashion-mnist|cifar10");
    if ((st = fv_args_choice(a, "direction", directions, FV_EMP_FORWARD, &dir)) ||
        (!fv_args_get(a, "data") &&
         (st = fv_cli_unused(a, (const char *const[]){"data-dir", "images", NULL}, "without --data"))) ||
        (st = fv_cli_unused(a, dir == FV_EMP_FORWARD ? target_flags : source_flags,
                            dir == FV_EMP_FORWARD ? "with --field empirical forward (the target is the data)"
                                                  : "with --field empirical backward (the source is the data)")))
        return st;
    if (fv_args_get(a, "targets"))
        st = read_targets(a, &Y, &n, &d);
    else if (!(st = read_data_set(a, c))) {
        n = c->ds.n;
        d = c->ds.c * c->ds.h * c->ds.w;
    }
    if (!st && !(st = fv_cli_problem_dim(a, d, &c->p)))
        st = Y ? fv_empirical_build(&c->e, &c->p, (fv_emp_direction)dir, n, Y)
               : fv_empirical_build_f32(&c->e, &c->p, (fv_emp_direction)dir, n, c->ds.x);
    free(Y);
    if (st)
        fv_cli_empirical_close(c);
    return st;
}

void fv_cli_empirical_close(fv_cli_emp *c)
{
    fv_empirical_free(&c->e);
    fv_problem_free(&c->p);
    fv_dataset_free(&c->ds);
}

/* --field empirical: v* at the points, written as the closed forms are. */
static int field_empirical(const fv_args *a, double t)
{
    fv_cli_emp c;
    fv_empirical_work w = {0};
    double *X = NULL, *V = NULL;
    size_t n;
    int st = fv_cli_unused(a, (const char *const[]){"angle", "rotation", "cond-max", NULL},
                           "with --field empirical");
    if (st || (st = fv_cli_empirical_open(a, &c)))
        return st;
    if (!(st = fv_cli_points(a, c.p.d, &X, &n)) && !(st = fv_empirical_work_alloc(&w, &c.e, 0)) &&
        (V = fv_alloc(&st, "--points x dimension", n, c.p.d, sizeof *V)) &&
        !(st = fv_empirical_eval(&c.e, t, n, X, V, &w)))
        st = fv_cli_write_matrix(fv_args_get(a, "out"), n, c.p.d, V, "v");
    free(X);
    free(V);
    fv_empirical_work_free(&w);
    fv_cli_empirical_close(&c);
    return st;
}

int fv_cli_field_flags(const fv_args *a, fv_field_kind kind)
{
    int st = fv_cli_unused(a, fv_empirical_flags, "without --field empirical");
    st = st ? st : kind == FV_FIELD_ROTATION ? FV_OK : fv_cli_unused(a, fv_rotation_flags, "without --field rotation");
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
                           fv_schedule_opts, fv_empirical_opts, field_opts, NULL);
    if (st < 0)
        return 0;
    if (!st && !fv_args_get(&a, "t"))
        st = fv_error(FV_EINPUT, "--t is required");
    if (st || (st = fv_args_double_in(&a, "t", 0.0, FV_DOM_UNIT, &t)))
        goto done;
    if (fv_cli_field_is_empirical(&a)) {
        st = field_empirical(&a, t);
        goto done;
    }
    if ((st = fv_cli_field_kind(&a, &kind)) || (st = fv_cli_field_flags(&a, kind)))
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
