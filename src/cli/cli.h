/* cli.h: what every flowvar command shares: the option table and parser, the problem flags of
 * DESIGN.md, typed option getters that validate, and the mapping from status to exit code. */
#ifndef FV_CLI_H
#define FV_CLI_H

#include "gaussian/field.h"
#include "gaussian/problem.h"

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

/* The problem flags of DESIGN.md (--target-mean ... --seed), NULL-terminated. */
extern const fv_opt fv_problem_opts[];

/* Parse argv[1..] of a command against the NULL-terminated option tables (any number, then NULL).
 * Returns FV_OK, FV_EINPUT (unknown or repeated flag, missing value), or -1 when --help was given
 * (help already printed to stdout). */
int fv_args_parse(fv_args *a, const char *command, const char *usage, int argc, char **argv, ...);

const char *fv_args_get(const fv_args *a, const char *name);
int fv_args_flag(const fv_args *a, const char *name);

/* Typed getters: the default when absent; FV_EINPUT naming the flag when malformed or out of range. */
int fv_args_double(const fv_args *a, const char *name, double def, double *out);
int fv_args_size(const fv_args *a, const char *name, size_t def, size_t min, size_t *out);
int fv_args_u64(const fv_args *a, const char *name, uint64_t def, uint64_t *out);
/* A choice among NULL-terminated names; *out is its index. */
int fv_args_choice(const fv_args *a, const char *name, const char *const *choices, int def, int *out);

/* A vector or matrix flag: an .npy file, "-" (an NPY on standard input) or a comma list. */
int fv_args_array(const fv_args *a, const char *name, double **data, size_t *count);

/* Build and validate the problem described by the problem flags. */
int fv_cli_problem(const fv_args *a, fv_problem *p);

/* Points for a command: --points FILE.npy|LIST (rows of d numbers). */
int fv_cli_points(const fv_args *a, size_t d, double **X, size_t *n);

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

/* --field ot|rotation|markov (default ot). */
int fv_cli_field_kind(const fv_args *a, fv_field_kind *kind);

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

#endif
