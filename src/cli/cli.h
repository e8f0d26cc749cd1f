/* cli.h: what every flowvar command shares: the option table and parser, the problem flags
 * (README, "Commands"), typed option getters that validate, and the mapping from status to exit code. */
#ifndef FV_CLI_H
#define FV_CLI_H

#include "data/dataset.h"
#include "gaussian/empirical.h"
#include "gaussian/field.h"
#include "gaussian/problem.h"
#include "core/io.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name; /* long option without the dashes */
    const char *arg;  /* metavariable shown in --help, or NULL for a flag */
    const char *help;
} fv_opt;

#define FV_MAX_OPTS 64

typedef struct {
    const char *command;
    const fv_opt *opts[FV_MAX_OPTS];
    const char *values[FV_MAX_OPTS]; /* NULL when absent; "" for a flag that is set */
    size_t nopts;
} fv_args;

/* The problem flags in groups, each NULL-terminated; a command passes to fv_args_parse
 * only the groups it reads, so any other problem flag is an unknown option for it (README, "Commands"). */
extern const fv_opt fv_dist_opts[];     /* --target-mean --target-cov --source-mean --source-cov */
extern const fv_opt fv_coupling_opts[]; /* --coupling */
extern const fv_opt fv_rotation_opts[]; /* --angle --rotation: the rotation of the coupling or field */
extern const fv_opt fv_sigma_opts[];    /* --sigma */
extern const fv_opt fv_schedule_opts[]; /* --schedule --deriv-term */
extern const fv_opt fv_seed_opts[];     /* --seed */
/* --targets --data --data-dir --images --direction: the finite data set of --field empirical */
extern const fv_opt fv_empirical_opts[];
/* All of them, for fv_args_parse's list: the options of a run (train). */
#define FV_PROBLEM_GROUPS fv_dist_opts, fv_coupling_opts, fv_rotation_opts, fv_sigma_opts, fv_schedule_opts, fv_seed_opts

/* Parse argv[1..] of a command against the NULL-terminated option tables (any number, then NULL).
 * Returns FV_OK, FV_EINPUT (unknown or repeated flag, missing value), or -1 when --help was given
 * (help already printed to stdout). */
int fv_args_parse(fv_args *a, const char *command, const char *usage, int argc, char **argv, ...);

const char *fv_args_get(const fv_args *a, const char *name);
int fv_args_flag(const fv_args *a, const char *name);

/* Typed getters: the default when absent; FV_EINPUT naming the flag when malformed or out of range. */
int fv_args_double(const fv_args *a, const char *name, double def, double *out);
/* The domain of a numeric option: [lo, hi], an end excluded when its _open is set (hi may be INFINITY). */
typedef struct {
    double lo, hi;
    int lo_open, hi_open;
} fv_domain;
#define FV_DOM_POSITIVE ((fv_domain){0.0, INFINITY, 1, 0})
#define FV_DOM_NONNEG ((fv_domain){0.0, INFINITY, 0, 0})
#define FV_DOM_UNIT ((fv_domain){0.0, 1.0, 0, 0})      /* [0, 1]: a time */
#define FV_DOM_UNIT_OPEN ((fv_domain){0.0, 1.0, 1, 1}) /* (0, 1): a relative tolerance or floor */
#define FV_DOM_DECAY ((fv_domain){0.0, 1.0, 0, 1})     /* [0, 1): a decay or a dropout rate */
#define FV_DOM_COND ((fv_domain){1.0, INFINITY, 0, 0}) /* a condition-number bound */
/* A number in `dom` (the message names the flag and the domain). */
int fv_args_double_in(const fv_args *a, const char *name, double def, fv_domain dom, double *out);
int fv_args_size(const fv_args *a, const char *name, size_t def, size_t min, size_t *out);
int fv_args_u64(const fv_args *a, const char *name, uint64_t def, uint64_t *out);
/* A comma list of at most max whole numbers >= 1 into out (the list `def` when absent; "" is empty). */
int fv_args_sizes(const fv_args *a, const char *name, const char *def, size_t max, size_t *out, size_t *n);
/* A choice among NULL-terminated names; *out is its index. */
int fv_args_choice(const fv_args *a, const char *name, const char *const *choices, int def, int *out);

/* A vector or matrix flag: an .npy file or "-" (an NPY on standard input; its shape in ndim, shape), or a
 * comma list (*ndim = 0: a flat list of count numbers). Every entry must be finite. */
int fv_args_array(const fv_args *a, const char *name, double **data, size_t *count, int *ndim,
                  size_t shape[FV_NPY_MAX_DIMS]);
/* "(2, 3)" or "(4,)" into buf. */
void fv_args_shape_text(int ndim, const size_t *shape, char *buf, size_t size);

/* --sigma, --schedule, --deriv-term into p (the derivative term only with the bridge schedule). */
int fv_cli_noise(const fv_args *a, fv_problem *p);

/* Build and validate the problem described by the problem flags. */
int fv_cli_problem(const fv_args *a, fv_problem *p);

/* The problem flags of a problem whose dimension d comes from elsewhere (a data set): the means and
 * covariances given (shapes checked against d; N(0, I) where absent), the noise flags, the independent
 * coupling. */
int fv_cli_problem_dim(const fv_args *a, size_t d, fv_problem *p);

/* FV_EINPUT "COMMAND: --NAME is not used WHY" for the first of the NULL-terminated flags given: a flag
 * this command takes but that the rest of its command line makes meaningless. */
int fv_cli_unused(const fv_args *a, const char *const *names, const char *why);
extern const char *const fv_rotation_flags[]; /* angle, rotation */
extern const char *const fv_noise_flags[];    /* sigma, schedule, deriv-term */
extern const char *const fv_empirical_flags[]; /* the flags of fv_empirical_opts */

/* FV_ENUMERIC naming `what`, the row and the column (from 1) of the first non-finite entry of an
 * nrows x ncols table; FV_OK when every entry is finite. Every writer below checks with it first. */
int fv_cli_finite(const char *what, size_t nrows, size_t ncols, const double *rows);
/* The index of the first non-finite of n numbers; n when all are finite. */
size_t fv_cli_first_nonfinite(size_t n, const double *v);

/* Points for a command: --points FILE.npy|LIST: an .npy of shape (n, d) or (d,), or a comma list of
 * rows of d numbers. */
int fv_cli_points(const fv_args *a, size_t d, double **X, size_t *n);
/* The same for a run on images: an .npy of shape (n, C, H, W) with image = {C, H, W} (C H W = d) is
 * also n points (image NULL: as fv_cli_points). */
int fv_cli_points_images(const fv_args *a, size_t d, const size_t *image, double **X, size_t *n);

/* Write an n x d matrix: NPY when `path` ends in .npy, else TSV with columns <prefix>1..<prefix>d,
 * to standard output when `path` is NULL or "-". Files are written atomically. */
int fv_cli_write_matrix(const char *path, size_t n, size_t d, const double *M, const char *prefix);
/* The same for rows made of `nb` blocks of d columns, named <prefixes[b]>1..<prefixes[b]>d. */
int fv_cli_write_blocks(const char *path, size_t n, size_t d, size_t nb, const char *const *prefixes,
                        const double *M);
/* path as a TSV (atomically): a header of ncols names, then nrows rows of ncols numbers. */
int fv_cli_write_tsv(const char *path, size_t ncols, const char *const *names, size_t nrows, const double *rows);

/* The folder of the gnuplot scripts: --plots, $FLOWVAR_PLOTS, ../plots or ../share/flowvar/plots
 * beside the binary. */
int fv_cli_find_plots(const fv_args *a, char *dir, size_t size);

/* The folder of flowvar's scripts (scripts/reproduce): ../scripts or ../share/flowvar/scripts beside
 * the binary. */
int fv_cli_find_scripts(char *dir, size_t size);

/* Draw one figure: gnuplot reads DIR/NAME.tsv with PLOTS/NAME.gp and writes DIR/NAME.png and .svg. */
int fv_cli_draw(const char *plots, const char *dir, const char *name);

/* --field empirical (gaussian/empirical.h): the exact minimizer for a finite data set, opened from the
 * flags of fv_empirical_opts: the data from --targets or --data (its dimension is the problem's), the
 * Gaussian end of --direction from the problem flags (forward: --source-mean/--source-cov; backward:
 * --target-mean/--target-cov; the other end's flags are refused), the noise flags. `ds` keeps the
 * images the engine points to. */
typedef struct {
    fv_problem p;
    fv_empirical e;
    fv_dataset ds;
} fv_cli_emp;
int fv_cli_field_is_empirical(const fv_args *a);
int fv_cli_empirical_open(const fv_args *a, fv_cli_emp *c);
void fv_cli_empirical_close(fv_cli_emp *c);

/* --field ot|rotation|markov (default ot). */
int fv_cli_field_kind(const fv_args *a, fv_field_kind *kind);
/* Refuse the flags a closed-form field of that kind never reads: --angle/--rotation but for the
 * rotation field, the noise flags but for the Markov field. */
int fv_cli_field_flags(const fv_args *a, fv_field_kind kind);

/* Print "flowvar: error: <message>" and return the exit status for a failed status code: 2 for
 * what the user asked (bad input, a singular time, a divergent integral), 1 for runtime failures. */
int fv_cli_fail(int status);

/* Mean and standard deviation of the distances |x_i - y_i| over n rows of d numbers (Tables 2, 3). */
void fv_cli_l2_stats(size_t n, size_t d, const double *x, const double *y, double *mean, double *sd);

/* Commands. */
int fv_cmd_field(int argc, char **argv);
int fv_cmd_transport(int argc, char **argv);
int fv_cmd_w2(int argc, char **argv);
int fv_cmd_variance(int argc, char **argv);
int fv_cmd_check(int argc, char **argv);
int fv_cmd_crossover(int argc, char **argv);
int fv_cmd_figures(int argc, char **argv);
int fv_cmd_train(int argc, char **argv);
int fv_cmd_sample(int argc, char **argv);
int fv_cmd_gap(int argc, char **argv);
int fv_cmd_gradvar(int argc, char **argv);
int fv_cmd_memorize(int argc, char **argv);
int fv_cmd_reproduce(int argc, char **argv);
int fv_cmd_gmm(int argc, char **argv);
int fv_cmd_reflow(int argc, char **argv);
int fv_cmd_fit(int argc, char **argv);
int fv_cmd_eval(int argc, char **argv);
int fv_cmd_floor(int argc, char **argv);
int fv_cmd_copies(int argc, char **argv);
int fv_cmd_import(int argc, char **argv);

#endif
