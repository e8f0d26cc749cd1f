/* test_cli.c: the flowvar commands as a user runs them: documented examples, and every kind of
 * bad input ending in "flowvar: error: ...", exit status 2 and no output file. The binary is
 * $FLOWVAR (set by `make test`), else build/flowvar. */
#include <criterion/criterion.h>

#include "core/error.h"
#include "core/io.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "data/dataset.h"
#include "gaussian/ot.h"
#include "nn/checkpoint.h"
#include "nn/trainer.h"

#include "helpers.h"

#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[] = "/tmp/fv_cli_XXXXXX";
static char out_path[256], err_path[256], file_path[256];
static char out_text[8192], err_text[8192];

static void setup(void)
{
    cr_assert(mkdtemp(dir) != NULL);
    snprintf(out_path, sizeof out_path, "%s/stdout", dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    snprintf(file_path, sizeof file_path, "%s/result.npy", dir);
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(cli, .init = setup, .fini = teardown);

/* Run `flowvar ARGS`; returns its exit status, with stdout and stderr in out_text / err_text. */
static int run(const char *args)
{
    return th_flowvar(args, out_path, err_path, out_text, sizeof out_text, err_text, sizeof err_text);
}

/* A failing run with --out FILE: exit 2, the error line naming `needle`, and no file. */
static void expect_input_error(const char *args, const char *needle)
{
    char full[1024];
    snprintf(full, sizeof full, "%s --out %s", args, file_path);
    cr_assert_eq(run(full), 2, "exit status for: %s\nstderr: %s", args, err_text);
    cr_assert(strncmp(err_text, "flowvar: error: ", 16) == 0, "stderr: %s", err_text);
    cr_assert(strstr(err_text, needle) != NULL, "stderr should name '%s': %s", needle, err_text);
    cr_assert(!th_exists(file_path), "no output file after an error");
    cr_assert_eq(out_text[0], '\0', "nothing on stdout after an error");
}

#define REF "--target-mean 1,-0.5 --target-cov 2,0.6,0.6,1"

Test(cli, field_example_of_the_issue)
{
    cr_assert_eq(run("field " REF " --field rotation --angle 120 --t 0.6 --points 0.3,0.2"), 0, "%s", err_text);
    cr_assert_str_eq(out_text, "v1\tv2\n-1.503192355\t-0.5802133695\n");
}

Test(cli, field_writes_npy)
{
    char args[512];
    snprintf(args, sizeof args, "field " REF " --t 0.25 --points 0.3,0.2,1,1 --out %s", file_path);
    cr_assert_eq(run(args), 0, "%s", err_text);
    cr_assert(th_exists(file_path));
}

Test(cli, transport_rk45_reaches_the_coupling_map)
{
    /* the OT map of the reference problem sends (0.3, 0.2) to mu + M^{1/2} x (numpy: 1.468218,
     * -0.229073) */
    cr_assert_eq(run("transport " REF " --points 0.3,0.2 --solver rk45 --rtol 1e-10 --atol 1e-10"), 0, "%s",
                 err_text);
    double a, b;
    cr_assert_eq(sscanf(out_text, "x1\tx2\n%lf\t%lf", &a, &b), 2, "%s", out_text);
    cr_assert_float_eq(a, 1.0 + 1.39113850843 * 0.3 + 0.254428087 * 0.2, 1e-8);
    cr_assert_float_eq(b, -0.5 + 0.254428087 * 0.3 + 0.967091696 * 0.2, 1e-8);
}

Test(cli, w2_prints_distance_and_map)
{
    cr_assert_eq(run("w2 " REF), 0, "%s", err_text);
    cr_assert(strstr(out_text, "w2\tw2_squared\n1.238361656\t1.533539592\n") != NULL, "%s", out_text);
    cr_assert(strstr(out_text, "g1\tg2\n") != NULL, "%s", out_text);
}

Test(cli, help_lists_options_and_exits_zero)
{
    cr_assert_eq(run("field --help"), 0);
    cr_assert(strstr(out_text, "--target-cov") && strstr(out_text, "--points") && strstr(out_text, "--field"));
    cr_assert_eq(run("--help"), 0);
    cr_assert(strstr(out_text, "transport"));
}

Test(cli, rejects_unknown_flag) { expect_input_error("field " REF " --t 0.5 --points 1,1 --bogus 3", "--bogus"); }
Test(cli, rejects_unknown_command)
{
    cr_assert_eq(run("fieldz"), 2);
    cr_assert(strstr(err_text, "unknown command 'fieldz'"));
}
Test(cli, rejects_asymmetric_covariance)
{
    expect_input_error("field --target-cov 2,0.6,0.7,1 --t 0.5 --points 1,1", "--target-cov is not symmetric");
}
Test(cli, rejects_indefinite_covariance)
{
    expect_input_error("field --target-cov 1,2,2,1 --t 0.5 --points 1,1", "--target-cov is not positive definite");
}
Test(cli, rejects_indefinite_source_covariance)
{
    expect_input_error("field " REF " --source-cov 1,0,0,-1 --t 0.5 --points 1,1", "--source-cov");
}
Test(cli, rejects_wrong_covariance_length)
{
    expect_input_error("field --target-mean 1,2,3 --target-cov 1,0,0,1 --t 0.5 --points 1,1,1", "--target-cov has 4");
}
Test(cli, rejects_points_not_multiple_of_dimension)
{
    expect_input_error("field " REF " --t 0.5 --points 1,2,3", "--points has 3 numbers");
}
Test(cli, rejects_nan_in_list) { expect_input_error("field --target-mean 1,nan --t 0.5 --points 1,1", "--target-mean"); }
Test(cli, rejects_time_outside_unit_interval)
{
    expect_input_error("field " REF " --t 1.5 --points 1,1", "--t must be in [0, 1]");
}
Test(cli, rejects_time_not_a_number) { expect_input_error("field " REF " --t abc --points 1,1", "--t: 'abc'"); }
Test(cli, rejects_truncated_npy)
{
    expect_input_error("field --target-mean 0,0,0,0 --t 0.5 --points tests/fixtures/npy/truncated_f64_3x4.npy",
                       "truncated_f64_3x4.npy");
}
Test(cli, rejects_wrong_dtype_npy)
{
    expect_input_error("field --target-mean 0,0 --t 0.5 --points tests/fixtures/npy/int64_6.npy", "int64_6.npy");
}
Test(cli, rejects_missing_npy) { expect_input_error("field " REF " --t 0.5 --points nothere.npy", "nothere.npy"); }
Test(cli, rejects_non_orthogonal_rotation_file)
{
    expect_input_error("field --target-mean 0,0,0,0 --field rotation --rotation tests/fixtures/npy/f64_3x4.npy "
                       "--t 0.5 --points 1,1,1,1",
                       "--rotation");
}
Test(cli, rejects_unknown_field) { expect_input_error("field " REF " --field nope --t 0.5 --points 1,1", "--field"); }
Test(cli, rejects_missing_value) { expect_input_error("field " REF " --points 1,1 --t", "--t needs a value"); }
Test(cli, rejects_rotation_without_angle)
{
    expect_input_error("field " REF " --field rotation --t 0.5 --points 1,1", "--angle");
}
Test(cli, counter_example_1_singular_time_is_an_error)
{
    expect_input_error("field --target-mean 5,5 --field rotation --angle 180 --t 0.5 --points 0.3,0.2",
                       "singular at t = 0.5");
}
Test(cli, transport_through_singular_time_is_an_error)
{
    expect_input_error("transport --target-mean 5,5 --field rotation --angle 180 --points 0.3,0.2 --solver euler "
                       "--steps 10",
                       "singular at t = 0.5");
}
Test(cli, transport_rejects_zero_steps)
{
    expect_input_error("transport " REF " --points 1,1 --steps 0", "--steps must be at least 1");
}
Test(cli, output_into_missing_directory_fails_cleanly)
{
    cr_assert_eq(run("field " REF " --t 0.5 --points 1,1 --out /nonexistent/dir/v.npy"), 1);
    cr_assert(strstr(err_text, "/nonexistent/dir/v.npy") != NULL, "%s", err_text);
}

Test(cli, variance_example_of_the_issue)
{
    cr_assert_eq(run("variance " REF " --coupling rotation --angle 120 --field ot --t 0.6"), 0, "%s", err_text);
    double t, vth, vTh, vtot;
    cr_assert_eq(sscanf(out_text, "t\tvar_theta\tvar_Theta\tvar_total\n%lf\t%lf\t%lf\t%lf", &t, &vth, &vTh, &vtot), 4,
                 "%s", out_text);
    cr_assert_float_eq(vtot, 42.51, 0.005, "var_total %g", vtot);
    cr_assert_float_eq(vth, 22.05, 0.005, "var_theta %g", vth);
}

/* `flowvar variance ARGS` with --mc and one time: the row t, var_theta, var_Theta, var_total, mc_total, mc_se. */
static void variance_mc_row(const char *args, double row[6])
{
    cr_assert_eq(run(args), 0, "%s", err_text);
    cr_assert_eq(sscanf(out_text, "t\tvar_theta\tvar_Theta\tvar_total\tmc_total\tmc_se\n%lf\t%lf\t%lf\t%lf\t%lf\t%lf",
                        &row[0], &row[1], &row[2], &row[3], &row[4], &row[5]),
                 6, "%s", out_text);
}

Test(cli, variance_mc_columns_and_batch_division)
{
    double v[6];
    variance_mc_row("variance " REF " --coupling rotation --angle 120 --field rotation --sigma 0.3 --t 0.6 "
                    "--batch 10 --mc 20000 --seed 3",
                    v);
    cr_assert_float_eq(v[3], 16.70, 0.005, "167.0 per sample / batch 10: %g", v[3]);
    cr_assert_lt(fabs(v[4] - v[3]), 4 * v[5], "MC %g +- %g vs exact %g", v[4], v[5], v[3]);
}

Test(cli, variance_integrated_row_is_labelled)
{
    cr_assert_eq(run("variance " REF " --coupling independent --field ot --integrated"), 0, "%s", err_text);
    cr_assert(strstr(out_text, "\nintegrated\t16.53252964\t27.97780004\t44.51032968\n") != NULL, "%s", out_text);
}

/* A general source: the exact value against the command's own Monte-Carlo column, and the backward OT
 * field N(mu, Sigma) -> N(0, I) on its own coupling without noise has zero variance. */
Test(cli, variance_general_source)
{
    double v[6], t, vth, vTh, vtot;
    variance_mc_row("variance " REF " --source-mean 0.5,0.2 --source-cov 1.5,0.3,0.3,0.8 --coupling independent "
                    "--field ot --sigma 0.1 --t 0.6 --mc 20000 --seed 3",
                    v);
    cr_expect(fabs(v[4] - v[3]) < 4 * v[5] && v[3] > 1.0, "MC %g +- %g vs exact %g", v[4], v[5], v[3]);
    cr_assert_eq(run("variance --source-mean 1,-0.5 --source-cov 2,0.6,0.6,1 --target-mean 0,0 --field ot --t 0.3"), 0,
                 "%s", err_text);
    cr_assert_eq(sscanf(out_text, "t\tvar_theta\tvar_Theta\tvar_total\n%lf\t%lf\t%lf\t%lf", &t, &vth, &vTh, &vtot), 4,
                 "%s", out_text);
    cr_expect(fabs(vtot) < 1e-12, "backward OT field on the OT coupling: variance %g", vtot);
}

Test(cli, variance_rejects_angle_not_a_number)
{
    expect_input_error("variance " REF " --coupling rotation --angle abc --t 0.5", "--angle: 'abc'");
}
Test(cli, variance_rejects_time_outside_unit_interval)
{
    expect_input_error("variance " REF " --t 1.2", "--t must be in [0, 1]");
}
Test(cli, variance_rejects_batch_zero) { expect_input_error("variance " REF " --t 0.5 --batch 0", "--batch"); }
Test(cli, variance_rejects_two_time_choices)
{
    expect_input_error("variance " REF " --t 0.5 --integrated", "exactly one of");
}
Test(cli, variance_rejects_custom_without_parameters)
{
    expect_input_error("variance " REF " --field custom --t 0.5", "--theta");
}
Test(cli, variance_integrated_divergence_names_times)
{
    expect_input_error("variance --target-mean 5,5 --coupling rotation --angle 180 --field rotation --sigma 0.05 "
                       "--integrated",
                       "t = 0.5");
}

Test(cli, crossover_reproduces_theory_sigma_star)
{
    cr_assert_eq(run("crossover " REF " --angles 60,90,120,150,170"), 0, "%s", err_text);
    double a[4], s[4], want[4] = {0.7606, 0.5207, 0.2650, 0.0494};
    cr_assert_eq(sscanf(out_text, "angle\tsigma_star\n%lf\t%lf\n%lf\t%lf\n%lf\t%lf\n%lf\t%lf\n", &a[0], &s[0], &a[1],
                        &s[1], &a[2], &s[2], &a[3], &s[3]),
                 8, "%s", out_text);
    for (int i = 0; i < 4; i++)
        cr_assert_lt(fabs(s[i] - want[i]), 1e-3, "angle %g: sigma* %g, docs/THEORY.md %g", a[i], s[i], want[i]);
    cr_assert(strstr(out_text, "170\tdiverges\n") != NULL, "%s", out_text);
    cr_assert(strstr(err_text, "singular") != NULL, "the reason goes to stderr: %s", err_text);
}

Test(cli, crossover_rejects_missing_angles) { expect_input_error("crossover " REF, "--angles is required"); }

/* At angle 0 (standard source) and at every angle in d = 1 the rotational coupling is the OT coupling, so
 * the variance gap is rounding noise for every sigma: a "crossover" found there (it printed 1.65 and 0.15)
 * was the sign of that noise. Small nonzero angles keep their real crossover near sigma* = 0.99. */
Test(cli, crossover_of_identical_fields_is_none)
{
    cr_assert_eq(run("crossover " REF " --angles 0,0.1"), 0, "%s", err_text);
    double s01 = 0;
    cr_assert_eq(sscanf(out_text, "angle\tsigma_star\n0\tnone\n0.1\t%lf\n", &s01), 1, "angle 0 none: %s", out_text);
    cr_assert_lt(fabs(s01 - 0.9929), 1e-3, "angle 0.1 keeps its crossover: %g", s01);
    cr_assert(strstr(err_text, "angle 0: the rotational coupling is the OT coupling") != NULL, "why, on stderr: %s",
              err_text);
    cr_assert_eq(run("crossover --target-mean 1 --target-cov 2 --angles 0,90"), 0, "%s", err_text);
    cr_assert_str_eq(out_text, "angle\tsigma_star\n0\tnone\n90\tnone\n", "d = 1: one field at every angle");
}

Test(cli, check_passes_every_claim, .timeout = 120)
{
    int rc = run("check");
    cr_assert_eq(rc, 0, "flowvar check failed:\n%s%s", out_text, err_text);
    cr_assert(strstr(out_text, " 0 failed") != NULL, "%s", out_text);
    cr_assert(strstr(out_text, "FAIL") == NULL, "%s", out_text);
}

static const char *const fig_names[] = {"fig4", "fig5", "phase", "angle", "vs_t", "dim", "fig6", "quiver"};

Test(cli, figures_writes_tsv_png_and_svg, .timeout = 180)
{
    char args[512], f[300];
    snprintf(args, sizeof args, "figures --out %s/figs --mc 2000 --plots plots", dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    static const char *const ext[] = {"tsv", "png", "svg"};
    for (int i = 0; i < 8; i++)
        for (int k = 0; k < 3; k++) {
            snprintf(f, sizeof f, "%s/figs/%s.%s", dir, fig_names[i], ext[k]);
            struct stat sb;
            cr_assert(stat(f, &sb) == 0 && sb.st_size > 200, "%s missing or empty", f);
        }
}

/* ---- paths reach no shell, links survive, pictures appear whole, inputs are read once ---- */

/* The absolute path of the flowvar binary, for commands run from another folder. */
static void absolute_bin(char *bin)
{
    const char *b = getenv("FLOWVAR") ? getenv("FLOWVAR") : "build/flowvar";
    cr_assert_not_null(realpath(b, bin), "the binary %s exists", b);
}

/* Run argv (argv[0] an absolute path) without a shell from the scratch folder; its exit status, with
 * its stderr in err_text. */
static int run_argv_in_dir(char *const *argv)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork");
    if (pid == 0) {
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644), nul = open("/dev/null", O_WRONLY);
        if (err < 0 || nul < 0 || dup2(err, 2) < 0 || dup2(nul, 1) < 0 || chdir(dir) != 0)
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid, "wait for flowvar");
    th_slurp_text(err_path, err_text, sizeof err_text);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(cli, figures_out_paths_never_reach_a_shell, .timeout = 120)
{
    static const char *const outs[] = {"figs $(touch X1) `touch X2`; touch X3", "figs 'q' \"d\" &"};
    static const char *const ext[] = {"png", "svg"};
    char bin[PATH_MAX], plots[PATH_MAX], f[1024];
    absolute_bin(bin);
    cr_assert_not_null(realpath("plots", plots), "the plots folder exists");
    for (int i = 0; i < 2; i++) {
        char *argv[] = {bin, "figures", "--out", (char *)outs[i], "--mc", "100", "--plots", plots, NULL};
        cr_assert_eq(run_argv_in_dir(argv), 0, "figures --out '%s' succeeds: %s", outs[i], err_text);
        for (int k = 0; k < 8; k++)
            for (int e = 0; e < 2; e++) {
                snprintf(f, sizeof f, "%s/%s/%s.%s", dir, outs[i], fig_names[k], ext[e]);
                struct stat sb;
                cr_assert(stat(f, &sb) == 0 && sb.st_size > 200, "picture %s is there", f);
            }
        snprintf(f, sizeof f, "%s/%s", dir, outs[i]);
        cr_assert_eq(th_entries_in(f), 24, "only TSV, PNG and SVG of each figure in '%s' (no temporaries)", outs[i]);
    }
    for (int k = 1; k <= 3; k++) {
        snprintf(f, sizeof f, "%s/X%d", dir, k);
        cr_assert(!th_exists(f), "no command from --out was run: X%d does not exist", k);
    }
}

Test(cli, figures_without_gnuplot_say_so)
{
    char bin[PATH_MAX], cmd[PATH_MAX + 1024], f[512];
    absolute_bin(bin);
    /* a PATH without gnuplot, for flowvar alone */
    snprintf(cmd, sizeof cmd, "PATH=%s %s figures --out %s/figs --mc 100 --plots plots 2>%s", dir, bin, dir, err_path);
    int st = system(cmd);
    th_slurp_text(err_path, err_text, sizeof err_text);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status 1 without gnuplot: %s", err_text);
    cr_assert(strstr(err_text, "flowvar: error: gnuplot not found on PATH") != NULL, "the message: %s", err_text);
    snprintf(f, sizeof f, "%s/figs/fig4.png", dir);
    cr_assert(!th_exists(f), "no picture without gnuplot");
}

/* dir/NAME holding text. */
static void write_text(const char *name, const char *text)
{
    FILE *fp = fopen(th_path_in(dir, name), "w");
    cr_assert_not_null(fp, "create %s", name);
    fputs(text, fp);
    fclose(fp);
}

Test(cli, failing_gnuplot_keeps_the_old_picture_and_says_why)
{
    /* the script writes the PNG, then stops on an error */
    cr_assert_eq(mkdir(th_path_in(dir, "plots"), 0755), 0, "make plots/");
    write_text("plots/fig4.gp", "set terminal pngcairo\n"
                                "set output exists(\"png\") ? png : out.\".png\"\n"
                                "plot in using 1:2 skip 1 with lines\n"
                                "print no_such_variable_here\n");
    cr_assert_eq(mkdir(th_path_in(dir, "figs"), 0755), 0, "make figs/");
    write_text("figs/fig4.png", "old\n");
    char args[512];
    snprintf(args, sizeof args, "figures --out %s/figs --mc 100 --plots %s/plots", dir, dir);
    cr_assert_eq(run(args), 1, "a gnuplot failure exits 1: %s", err_text);
    cr_assert(strstr(err_text, "flowvar: error: gnuplot failed") && strstr(err_text, "exit status 1") &&
                  strstr(err_text, "no_such_variable_here"),
              "the message has gnuplot's status and its own message: %s", err_text);
    size_t n;
    unsigned char *b = th_slurp(th_path_in(dir, "figs/fig4.png"), &n);
    cr_assert(n == 4 && memcmp(b, "old\n", 4) == 0, "the old fig4.png is kept");
    free(b);
    cr_assert_eq(th_entries_in(th_path_in(dir, "figs")), 2, "fig4.tsv and the old fig4.png, no temporaries");
}

Test(cli, full_disk_leaves_no_truncated_picture)
{
    /* a 16 KB file-size limit lets fig4.tsv through and cuts fig4.png short, like a full disk; gnuplot
     * itself ignores the failed writes and exits 0 */
    char bin[PATH_MAX], cmd[PATH_MAX + 1024];
    absolute_bin(bin);
    snprintf(cmd, sizeof cmd, "trap '' XFSZ; ulimit -f 16; %s figures --out %s/full --mc 100 --plots plots 2>%s",
             bin, dir, err_path);
    int st = system(cmd);
    th_slurp_text(err_path, err_text, sizeof err_text);
    cr_assert_neq(st, 0, "the figure cannot be written");
    cr_assert(strstr(err_text, "flowvar: error: ") && strstr(err_text, "fig4.png"), "the message: %s", err_text);
    cr_assert(!th_exists(th_path_in(dir, "full/fig4.png")), "no truncated fig4.png");
    cr_assert_eq(th_entries_in(th_path_in(dir, "full")), 1, "only fig4.tsv, no temporaries");
}

Test(cli, output_through_a_symlink_keeps_the_link)
{
    /* the link's target is this command's stdout, redirected to x.tsv */
    char bin[PATH_MAX], cmd[PATH_MAX + 1024];
    absolute_bin(bin);
    snprintf(cmd, sizeof cmd, "cd %s && ln -s /proc/self/fd/1 so && %s field " REF " --t 0.5 --points 1,1 --out so >x.tsv 2>%s",
             dir, bin, err_path);
    int st = system(cmd);
    th_slurp_text(err_path, err_text, sizeof err_text);
    cr_assert_eq(st, 0, "field --out so succeeds: %s", err_text);
    th_slurp_text(th_path_in(dir, "x.tsv"), out_text, sizeof out_text);
    cr_assert(strncmp(out_text, "v1\tv2\n", 6) == 0, "the table reached x.tsv: '%s'", out_text);
    struct stat sb;
    cr_assert(lstat(th_path_in(dir, "so"), &sb) == 0 && S_ISLNK(sb.st_mode), "so is still a symbolic link");
}

/* dir/NAME.npy holding n numbers, and its bytes (malloc'ed) in *bytes. */
static size_t npy_bytes(const char *name, size_t n, const double *x, unsigned char **bytes)
{
    size_t size, shape[1] = {n};
    cr_assert_eq(fv_npy_write_f64(th_path_in(dir, name), x, 1, shape), FV_OK, "write %s", name);
    *bytes = th_slurp(th_path_in(dir, name), &size);
    return size;
}

/* A FIFO dir/NAME and a writer child that feeds it `bytes` once (it gives up after 20 s). */
static pid_t feed_fifo(const char *name, const unsigned char *bytes, size_t n)
{
    cr_assert_eq(mkfifo(th_path_in(dir, name), 0600), 0, "mkfifo %s", name);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork");
    if (pid == 0) {
        alarm(20);
        int fd = open(th_path_in(dir, name), O_WRONLY);
        _exit(fd >= 0 && write(fd, bytes, n) == (ssize_t)n ? 0 : 1);
    }
    return pid;
}

Test(cli, fifo_inputs_are_read_once, .timeout = 90)
{
    static const double mean[2] = {1, -0.5}, cov[4] = {2, 0.6, 0.6, 1};
    /* [i][0] with a FIFO, [i][1] the same numbers as lists; alone, the covariance also gives the dimension */
    static const char *const flags[2][2] = {
        {"--target-mean %s/in.npy --target-cov 2,0.6,0.6,1", "--target-mean 1,-0.5 --target-cov 2,0.6,0.6,1"},
        {"--target-cov %s/in.npy", "--target-cov 2,0.6,0.6,1"}};
    static const char query[] = "--field rotation --angle 120 --t 0.6 --points 0.3,0.2";
    unsigned char *bytes[2];
    size_t n[2] = {npy_bytes("m.npy", 2, mean, &bytes[0]), npy_bytes("c.npy", 4, cov, &bytes[1])};
    char bin[PATH_MAX], flag[512], cmd[PATH_MAX + 2048], expected[sizeof out_text];
    absolute_bin(bin);
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd, "field %s %s", flags[i][1], query);
        cr_assert_eq(run(cmd), 0, "field with lists: %s", err_text);
        snprintf(expected, sizeof expected, "%s", out_text);
        unlink(th_path_in(dir, "in.npy"));
        pid_t writer = feed_fifo("in.npy", bytes[i], n[i]);
        snprintf(flag, sizeof flag, flags[i][0], dir);
        snprintf(cmd, sizeof cmd, "timeout 20 %s field %s %s >%s 2>%s", bin, flag, query, out_path, err_path);
        int st = system(cmd);
        th_slurp_text(out_path, out_text, sizeof out_text);
        th_slurp_text(err_path, err_text, sizeof err_text);
        waitpid(writer, NULL, 0);
        cr_assert_eq(st, 0, "field %s ends (the FIFO is opened once): %s", flag, err_text);
        cr_assert_str_eq(out_text, expected, "field %s reads the numbers of the list", flag);
        free(bytes[i]);
    }
}

Test(cli, dash_reads_an_npy_input_from_stdin)
{
    static const double mean[2] = {1, -0.5};
    unsigned char *bytes;
    npy_bytes("m.npy", 2, mean, &bytes);
    free(bytes);
    static const char query[] = "--target-cov 2,0.6,0.6,1 --t 0.6 --points 0.3,0.2";
    char args[1024], expected[sizeof out_text];
    snprintf(args, sizeof args, "field --target-mean 1,-0.5 %s", query);
    cr_assert_eq(run(args), 0, "field with a list: %s", err_text);
    snprintf(expected, sizeof expected, "%s", out_text);
    snprintf(args, sizeof args, "field --target-mean - %s <%s/m.npy", query, dir);
    cr_assert_eq(run(args), 0, "field --target-mean - reads stdin: %s", err_text);
    cr_assert_str_eq(out_text, expected, "the numbers from stdin");
}

#define TINY REF " --width 16 --depth 2 --batch 64"

/* Run `flowvar train` with TINY settings into dir/NAME plus `extra`; returns the exit status. */
static int train_run(const char *name, const char *extra)
{
    char args[2048];
    snprintf(args, sizeof args, "train " TINY " --out %s/%s %s", dir, name, extra);
    return run(args);
}

/* Byte equality of two files. */
static int same_file(const char *a, const char *b)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cmp -s %s %s", a, b);
    return system(cmd) == 0;
}

Test(cli, train_writes_checkpoint_and_loss_log)
{
    cr_assert_eq(train_run("r", "--steps 50"), 0, "%s", err_text);
    char f[512];
    snprintf(f, sizeof f, "%s/r/checkpoint.safetensors", dir);
    cr_assert(th_exists(f));
    snprintf(f, sizeof f, "%s/r/loss.tsv", dir);
    cr_assert(th_exists(f));
    cr_assert(strstr(out_text, "train: 50 steps") != NULL, "%s", out_text);
}

Test(cli, resume_equals_uninterrupted_run)
{
    cr_assert_eq(train_run("full", "--steps 120 --checkpoint-every 40"), 0, "%s", err_text);
    cr_assert_eq(train_run("part", "--steps 70 --checkpoint-every 40"), 0, "%s", err_text);
    char args[512], a[512], b[512];
    snprintf(args, sizeof args, "train --out %s/part --resume --steps 120", dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    snprintf(a, sizeof a, "%s/full/checkpoint.safetensors", dir);
    snprintf(b, sizeof b, "%s/part/checkpoint.safetensors", dir);
    cr_assert(same_file(a, b), "resumed checkpoint differs from the uninterrupted one");
    snprintf(a, sizeof a, "%s/full/loss.tsv", dir);
    snprintf(b, sizeof b, "%s/part/loss.tsv", dir);
    cr_assert(same_file(a, b), "resumed loss log differs");
}

/* The kill test: KILLS SIGKILLs of one run, each at a random moment 0 to 5 ms after the run (or its
 * resumption) has written a new checkpoint, while it writes one every KILL_EVERY steps;
 * each kill is followed by --resume (or a fresh start when no checkpoint exists yet). */
#define KILLS 20
#define KILL_EVERY 3
#define KILL_STEPS 2000
#define KILL_TINY REF " --width 64 --depth 2 --batch 64"

/* `flowvar ARGS` in the background, its output discarded; the pid is flowvar's own (sh execs it). */
static pid_t spawn_flowvar(const char *args)
{
    const char *bin = getenv("FLOWVAR") ? getenv("FLOWVAR") : "build/flowvar";
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "exec %s %s >/dev/null 2>&1", bin, args);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    cr_assert(pid > 0, "fork failed");
    return pid;
}

/* A stamp of path's inode and modification time, 0 when absent: any new write of path changes it. */
static uint64_t file_stamp(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return 0;
    return ((uint64_t)sb.st_ino * 1000003u) ^ ((uint64_t)sb.st_mtim.tv_sec << 30) ^ (uint64_t)sb.st_mtim.tv_nsec;
}

/* The checkpoint on disk after a kill must be whole: it parses, and the network it describes loads
 * every tensor, the step and the Adam state from it. Returns its step. */
static uint64_t expect_loadable_checkpoint(const char *path)
{
    fv_st_file f;
    cr_assert_eq(fv_st_read(path, &f), FV_OK, "checkpoint after a kill reads: %s", fv_last_error());
    fv_mlp_config mc;
    cr_assert_eq(fv_checkpoint_config(&f, path, &mc), FV_OK, "checkpoint after a kill has its config: %s",
                 fv_last_error());
    fv_adam_config ac = fv_adam_defaults();
    fv_trainer tr;
    cr_assert_eq(fv_trainer_cpu_init(&tr, &mc, &ac, 0, 1), FV_OK, "trainer for the checkpoint: %s", fv_last_error());
    uint64_t step = 0;
    cr_assert_eq(fv_checkpoint_load(&f, path, &tr, &step, NULL), FV_OK, "checkpoint after a kill loads: %s",
                 fv_last_error());
    fv_trainer_free(&tr);
    fv_st_free(&f);
    return step;
}

Test(cli, sigkills_during_checkpoint_writes_resume_bit_identical, .timeout = 180)
{
    char extra[256], ck[512], tmp[600], args[1024], a[512];
    snprintf(extra, sizeof extra, "--steps %d --checkpoint-every %d", KILL_STEPS, KILL_EVERY);
    snprintf(args, sizeof args, "train " KILL_TINY " %s --out %s/ref", extra, dir);
    cr_assert_eq(run(args), 0, "uninterrupted run: %s", err_text);
    snprintf(ck, sizeof ck, "%s/killed/checkpoint.safetensors", dir);
    unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    int kills = 0, during_write = 0, resumes = 0, fresh = 0, finished = 0;
    uint64_t last_step = 0;
    for (int k = 0; k < KILLS && !finished; k++) {
        if (th_exists(ck)) {
            snprintf(args, sizeof args, "train --out %s/killed --resume", dir);
            resumes++;
        } else {
            snprintf(args, sizeof args, "train " KILL_TINY " %s --out %s/killed", extra, dir);
            fresh++;
        }
        uint64_t before = file_stamp(ck);
        pid_t pid = spawn_flowvar(args);
        int status, reaped;
        /* wait for its first checkpoint write, then 0 to 5 ms more */
        while (!(reaped = waitpid(pid, &status, WNOHANG)) && file_stamp(ck) == before)
            usleep(500);
        if (!reaped) {
            usleep((unsigned)(rand_r(&seed) % 5000));
            kill(pid, SIGKILL);
            cr_assert_eq(waitpid(pid, &status, 0), pid);
            kills++;
        }
        finished = WIFEXITED(status); /* the run ended before its kill */
        cr_assert(!finished || WEXITSTATUS(status) == 0, "kill test run %d failed on its own", k);
        snprintf(tmp, sizeof tmp, "%s.tmp.%d", ck, (int)pid);
        during_write += th_exists(tmp); /* its temporary is left behind: the kill hit a write */
        if (th_exists(ck)) {
            uint64_t step = expect_loadable_checkpoint(ck);
            cr_assert(step >= last_step && step % KILL_EVERY == 0, "checkpoint step %llu after %llu",
                      (unsigned long long)step, (unsigned long long)last_step);
            last_step = step;
        }
    }
    snprintf(args, sizeof args, "train --out %s/killed --resume", dir);
    if (!finished) {
        cr_assert_eq(run(args), 0, "final resume: %s", err_text);
        resumes++;
    }
    fprintf(stderr, "kill-test: %d SIGKILLs (seed %u), %d during a checkpoint write, %d fresh starts, %d resumes, "
            "last checkpoint before the final resume at step %llu of %d\n",
            kills, seed, during_write, fresh, resumes, (unsigned long long)last_step, KILL_STEPS);
    cr_assert(!finished, "the run finished before all %d kills (raise KILL_STEPS)", KILLS);
    snprintf(a, sizeof a, "%s/ref/checkpoint.safetensors", dir);
    cr_assert(same_file(a, ck), "the killed and resumed run's checkpoint differs from the uninterrupted one");
    snprintf(a, sizeof a, "%s/ref/loss.tsv", dir);
    snprintf(tmp, sizeof tmp, "%s/killed/loss.tsv", dir);
    cr_assert(same_file(a, tmp), "the killed and resumed run's loss log differs from the uninterrupted one");
}

Test(cli, resume_removes_the_temporary_of_a_killed_write)
{
    cr_assert_eq(train_run("r", "--steps 20"), 0, "first run: %s", err_text);
    pid_t gone = fork(); /* a pid whose process has exited, as after a SIGKILL mid-write */
    cr_assert_geq(gone, 0, "fork");
    if (gone == 0)
        _exit(0);
    cr_assert_eq(waitpid(gone, NULL, 0), gone, "reap the child");
    char orphan[256], args[512];
    snprintf(orphan, sizeof orphan, "r/checkpoint.safetensors.tmp.%ld", (long)gone);
    write_text(orphan, "half a checkpoint");
    snprintf(args, sizeof args, "train --out %s/r --resume --steps 40", dir);
    cr_assert_eq(run(args), 0, "resume: %s", err_text);
    cr_assert(!th_exists(th_path_in(dir, orphan)), "the killed write's temporary is gone after the resume");
}

Test(cli, gap_out_path_never_reaches_a_shell)
{
    cr_assert_eq(train_run("r", "--steps 20"), 0, "train: %s", err_text);
    char bin[PATH_MAX], plots[PATH_MAX], run_dir[512], f[1024];
    absolute_bin(bin);
    cr_assert_not_null(realpath("plots", plots), "the plots folder exists");
    snprintf(run_dir, sizeof run_dir, "%s/r", dir);
    static const char out[] = "gap $(touch X4) 'q' `touch X5`";
    char *argv[] = {bin, "gap", "--run", run_dir, "--t-grid", "2", "--n", "50", "--out", (char *)out, "--plots", plots, NULL};
    cr_assert_eq(run_argv_in_dir(argv), 0, "gap --out '%s' succeeds: %s", out, err_text);
    snprintf(f, sizeof f, "%s/%s", dir, out);
    cr_assert_eq(th_entries_in(f), 3, "gap.tsv, gap.png and gap.svg in '%s'", out);
    cr_assert(!th_exists(th_path_in(dir, "X4")) && !th_exists(th_path_in(dir, "X5")), "no command from --out was run");
}

Test(cli, resume_refuses_changed_options)
{
    cr_assert_eq(train_run("r", "--steps 20"), 0, "%s", err_text);
    char args[512];
    snprintf(args, sizeof args, "train --out %s/r --resume --steps 40 --lr 0.5", dir);
    cr_assert_eq(run(args), 2);
    cr_assert(strstr(err_text, "--lr cannot be changed on --resume") != NULL, "%s", err_text);
}

Test(cli, train_refuses_to_overwrite_a_run)
{
    cr_assert_eq(train_run("r", "--steps 20"), 0, "%s", err_text);
    cr_assert_eq(train_run("r", "--steps 20"), 2);
    cr_assert(strstr(err_text, "already holds a run") != NULL, "%s", err_text);
}

Test(cli, nan_loss_stops_and_keeps_last_good_checkpoint)
{
    /* one pair in ten thousand holds 1e38: the first batch that draws it overflows the loss */
    size_t n = 10000, shape[3] = {10000, 2, 2};
    double *P = malloc(n * 4 * sizeof *P);
    fv_rng g = fv_rng_make(1, 0);
    fv_rng_normal(&g, n * 4, P);
    P[4 * 500] = 1e38;
    char pairs[512];
    snprintf(pairs, sizeof pairs, "%s/poison.npy", dir);
    cr_assert_eq(fv_npy_write_f64(pairs, P, 3, shape), FV_OK);
    free(P);
    char extra[1024];
    snprintf(extra, sizeof extra, "--steps 2000 --checkpoint-every 1 --pairs %s", pairs);
    cr_assert_eq(train_run("nan", extra), 1, "%s", err_text);
    cr_assert(strstr(err_text, "training diverged") != NULL && strstr(err_text, "at step") != NULL, "%s", err_text);
    char args[512];
    snprintf(args, sizeof args, "sample --run %s/nan --n 3", dir);
    cr_assert_eq(run(args), 0, "the last checkpoint still loads: %s", err_text);
    cr_assert(strstr(out_text, "nan") == NULL && strstr(out_text, "inf") == NULL, "last good weights: %s", out_text);
}

Test(cli, full_disk_leaves_no_half_written_checkpoint)
{
    /* a 40 KB file-size limit makes the checkpoint write fail like a full disk */
    const char *bin = getenv("FLOWVAR") ? getenv("FLOWVAR") : "build/flowvar";
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "trap '' XFSZ; ulimit -f 40; %s train " REF " --width 256 --steps 5 --out %s/disk 2>%s",
             bin, dir, err_path);
    int st = system(cmd);
    th_slurp_text(err_path, err_text, sizeof err_text);
    cr_assert_neq(st, 0, "the write must fail");
    cr_assert(strstr(err_text, "flowvar: error:") && strstr(err_text, "write failed"), "%s", err_text);
    snprintf(cmd, sizeof cmd, "ls -A %s/disk", dir);
    FILE *p = popen(cmd, "r");
    char listing[512] = "";
    size_t n = fread(listing, 1, sizeof listing - 1, p);
    listing[n] = '\0';
    pclose(p);
    cr_assert_eq(listing[0], '\0', "no checkpoint or temporary left: %s", listing);
}

Test(cli, pairs_of_the_wrong_dimension_are_refused)
{
    char args[512];
    snprintf(args, sizeof args, "train " TINY " --pairs tests/fixtures/npy/f32_2x5.npy --steps 5 --out %s/p", dir);
    cr_assert_eq(run(args), 2);
    cr_assert(strstr(err_text, "--pairs") && strstr(err_text, "shape (N, 2, 2)"), "%s", err_text);
}

Test(cli, truncated_checkpoint_is_refused)
{
    cr_assert_eq(train_run("r", "--steps 10"), 0, "%s", err_text);
    char cmd[512], args[512];
    snprintf(cmd, sizeof cmd, "truncate -s 1000 %s/r/checkpoint.safetensors", dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(args, sizeof args, "sample --run %s/r --n 3", dir);
    cr_assert_eq(run(args), 2);
    cr_assert(strstr(err_text, "checkpoint.safetensors") != NULL, "%s", err_text);
}

Test(cli, sample_and_gap_of_a_trained_run)
{
    cr_assert_eq(train_run("r", "--steps 200 --finite 50"), 0, "%s", err_text);
    char args[512], f[512];
    snprintf(args, sizeof args, "sample --run %s/r --train-sources --pairs-out %s/reflow.npy", dir, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    snprintf(f, sizeof f, "%s/reflow.npy", dir);
    cr_assert(th_exists(f));
    snprintf(args, sizeof args, "gap --run %s/r --t-grid 4 --n 100", dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    cr_assert(strncmp(out_text, "t\tgap\tgap_se\n0.125\t", 19) == 0, "%s", out_text);
    snprintf(args, sizeof args, "gradvar --run %s/r --t-grid 2 --n 64", dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    cr_assert(strncmp(out_text, "t\tvar\tvar_se\n0.25\t", 18) == 0, "%s", out_text);
    cr_assert(strstr(out_text, "\nintegrated\t") != NULL, "%s", out_text);
    snprintf(args, sizeof args, "gradvar --run %s/r --n 9 --groups 5", dir);
    cr_assert_eq(run(args), 2, "fewer rows than two per group is refused");
    cr_assert(strstr(err_text, "--n") != NULL, "%s", err_text);
}

/* An MLP with Fourier features: trains, resumes, samples; its fixed F travels in the checkpoint (so a
 * resumed run equals an uninterrupted one); the settings that cannot work are refused. */
Test(cli, fourier_features_train_resume_and_sample)
{
    cr_assert_eq(train_run("a", "--steps 40 --fourier 8 --fourier-scale 2 --device cpu"), 0, "%s", err_text);
    cr_assert_eq(train_run("b", "--steps 20 --fourier 8 --fourier-scale 2 --device cpu"), 0, "%s", err_text);
    char args[512], fa[512], fb[512];
    snprintf(args, sizeof args, "train --out %s/b --resume --steps 40", dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    snprintf(fa, sizeof fa, "%s/a/checkpoint.safetensors", dir);
    snprintf(fb, sizeof fb, "%s/b/checkpoint.safetensors", dir);
    cr_assert(same_file(fa, fb), "resumed Fourier run differs from the uninterrupted one");
    fv_st_file f;
    cr_assert_eq(fv_st_read(fa, &f), FV_OK, "%s", fv_last_error());
    const fv_st_tensor *F = fv_st_find(&f, "fourier.B");
    cr_assert(F && F->ndim == 2 && F->shape[0] == 8 && F->shape[1] == 3, "fourier.B of shape 8 x (d + 1)");
    cr_assert_str_eq(fv_st_meta(&f, "model.fourier"), "8");
    fv_st_free(&f);
    snprintf(args, sizeof args, "sample --run %s/a --n 3", dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    cr_assert_eq(train_run("c", "--steps 5 --fourier-scale 2"), 2);
    cr_assert(strstr(err_text, "--fourier-scale needs --fourier") != NULL, "%s", err_text);
    cr_assert_eq(train_run("c", "--steps 5 --fourier 4 --fourier-scale 0"), 2);
    cr_assert(strstr(err_text, "--fourier-scale") != NULL, "%s", err_text);
    cr_assert_eq(train_run("c", "--steps 5 --fourier 4 --device cuda"), 2);
    cr_assert(strstr(err_text, "--device cpu") != NULL, "%s", err_text);
    snprintf(args, sizeof args, "train --data fashion-mnist --model unet --fourier 4 --steps 1 --out %s/u", dir);
    cr_assert_eq(run(args), 2);
    cr_assert(strstr(err_text, "--fourier") != NULL, "%s", err_text);
    snprintf(fa, sizeof fa, "%s/c/checkpoint.safetensors", dir);
    cr_assert(!th_exists(fa), "no checkpoint from a refused run");
}

/* `flowvar gmm` on a tiny setting: the contract table (d sigma gen_mmd mem_mmd, means over the seeds)
 * and the per-run table agree; a memorization fraction is a fraction. */
Test(cli, gmm_writes_the_table_and_every_run, .timeout = 120)
{
    char args[1024];
    snprintf(args, sizeof args,
             "gmm --dims 2 --sigmas 0,0.05 --pairs 20 --steps 60 --seeds 2 --samples 40 --euler 10 --width 16 "
             "--depth 1 --fourier 8 --device cpu --out %s/t1",
             dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    cr_assert(strstr(out_text, "MMD^2 biased") != NULL, "%s", out_text);
    char path[512];
    snprintf(path, sizeof path, "%s/t1/table1.tsv", dir);
    size_t n1, n2;
    char *t1 = (char *)th_slurp(path, &n1);
    snprintf(path, sizeof path, "%s/t1/table1_runs.tsv", dir);
    char *t2 = (char *)th_slurp(path, &n2);
    cr_assert(t1 && t2 && n1 < (1 << 16) && n2 < (1 << 16));
    t1[n1] = t2[n2] = '\0';
    const char *h1 = "d\tsigma\tgen_mmd\tmem_mmd\n", *h2 = "d\tsigma\tseed\tgen_mmd\tmem_mmd\tmem_l2\tmem_hit\n";
    cr_assert(strncmp(t1, h1, strlen(h1)) == 0, "%s", t1);
    cr_assert(strncmp(t2, h2, strlen(h2)) == 0, "%s", t2);
    double cell[2][4], runs[4][7];
    const char *p = strchr(t1, '\n') + 1;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(sscanf(p, "%lf %lf %lf %lf", &cell[i][0], &cell[i][1], &cell[i][2], &cell[i][3]), 4, "%s", t1);
        p = strchr(p, '\n') + 1;
    }
    p = strchr(t2, '\n') + 1;
    for (int i = 0; i < 4; i++) {
        double *r = runs[i];
        cr_assert_eq(sscanf(p, "%lf %lf %lf %lf %lf %lf %lf", r, r + 1, r + 2, r + 3, r + 4, r + 5, r + 6), 7, "%s", t2);
        cr_assert(r[4] >= 0 && r[6] >= 0 && r[6] <= 1 && r[5] > 0, "run %d: biased MMD >= 0, hit a fraction", i);
        p = strchr(p, '\n') + 1;
    }
    cr_assert(*p == '\0', "4 runs: 2 sigmas x 2 seeds");
    for (int c = 0; c < 2; c++) {
        cr_expect(runs[2 * c][1] == cell[c][1] && runs[2 * c][2] == 0 && runs[2 * c + 1][2] == 1, "seeds 0, 1");
        for (int k = 2; k < 4; k++) {
            double mean = 0.5 * (runs[2 * c][k + 1] + runs[2 * c + 1][k + 1]);
            cr_expect(fabs(cell[c][k] - mean) <= 1e-5 * fabs(mean) + 1e-12, "cell %d column %d: %g, runs' mean %g", c,
                      k, cell[c][k], mean);
        }
    }
    /* the ordering lines count the seeds where sigma 0's memorization MMD^2 is lower, and where sigma 0.05's
     * generalization MMD^2 is no higher */
    size_t mem_lower = (runs[0][4] < runs[2][4]) + (runs[1][4] < runs[3][4]);
    size_t gen_ok = (runs[2][3] <= runs[0][3]) + (runs[3][3] <= runs[1][3]);
    const char *m = strstr(out_text, "# d = 2, sigma 0 vs 0.05: memorization MMD^2 ratio");
    const char *g = strstr(out_text, "# d = 2, sigma 0 vs 0.05: generalization MMD^2");
    cr_assert(m && g, "%s", out_text);
    size_t n;
    cr_assert(sscanf(strstr(m, "lower in"), "lower in %zu of 2 seeds", &n) == 1 && n == mem_lower, "%s", m);
    cr_assert(sscanf(strstr(g, "as good in"), "as good in %zu of 2 seeds", &n) == 1 && n == gen_ok, "%s", g);
    free(t1);
    free(t2);
}

Test(cli, gmm_refuses_bad_settings)
{
    expect_input_error("gmm --mmd median", "--mmd");
    expect_input_error("gmm --hit 0", "--hit");
    expect_input_error("gmm --fourier-scale -1", "--fourier-scale");
    expect_input_error("gmm --dims 0", "--dims");
    expect_input_error("gmm --seeds 0", "--seeds");
}

Test(cli, device_and_precision_are_checked)
{
    cr_assert_eq(train_run("r", "--steps 5 --device tpu"), 2);
    cr_assert(strstr(err_text, "--device") != NULL, "%s", err_text);
    cr_assert_eq(train_run("r", "--steps 5 --device cpu --precision tf32"), 2);
    cr_assert(strstr(err_text, "tf32") != NULL, "%s", err_text);
    if (!fv_cuda_available()) { /* asking for the GPU where there is none: a clear refusal */
        cr_assert_eq(train_run("r", "--steps 5 --device cuda"), 2);
        cr_assert(strstr(err_text, "--device cpu") != NULL, "%s", err_text);
    }
    char f[512];
    snprintf(f, sizeof f, "%s/r/checkpoint.safetensors", dir);
    cr_assert(!th_exists(f), "no checkpoint from a refused run");
}

Test(cli, unet_needs_images_and_pngs_need_an_image_run)
{
    cr_assert_eq(train_run("u", "--model unet --steps 2"), 2);
    cr_assert(strstr(err_text, "--data") != NULL, "%s", err_text);
    cr_assert_eq(train_run("r", "--steps 5"), 0, "%s", err_text);
    char args[512];
    snprintf(args, sizeof args, "sample --run %s/r --n 4 --png %s/grid.png", dir, dir);
    cr_assert_eq(run(args), 2);
    cr_assert(strstr(err_text, "not images") != NULL, "%s", err_text);
    snprintf(args, sizeof args, "%s/grid.png", dir);
    cr_assert(!th_exists(args));
}

/* A tiny U-Net on the first 32 Fashion-MNIST images (Debian's package), then a PNG grid of samples. */
Test(cli, unet_trains_on_fashion_mnist_and_draws_a_grid)
{
    if (!th_exists(FV_FASHION_MNIST_DIR))
        cr_skip_test("Debian's dataset-fashion-mnist is not installed (make deps installs it)");
    char args[1024], f[512];
    snprintf(args, sizeof args,
             "train --model unet --data fashion-mnist --images 32 --channels 32 --channel-mult 1,2 --batch 4 "
             "--steps 3 --out %s/u",
             dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    cr_assert(strstr(out_text, "train: 3 steps") != NULL, "%s", out_text);
    snprintf(args, sizeof args, "sample --run %s/u --model mlp --n 4", dir);
    cr_assert_eq(run(args), 2, "--model is checked against the run");
    snprintf(args, sizeof args, "sample --run %s/u --model unet --n 4 --steps 2 --png %s/grid.png --out %s/x.npy", dir,
             dir, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    snprintf(f, sizeof f, "%s/grid.png", dir);
    size_t n;
    unsigned char *png = th_slurp(f, &n);
    cr_assert(png && n > 8 && memcmp(png, "\x89PNG", 4) == 0, "a PNG file");
    free(png);
    /* the CPU run goes on on the GPU where there is one, else a clear refusal */
    snprintf(args, sizeof args, "train --out %s/u --resume --steps 4 --device cuda", dir);
    if (fv_cuda_available()) {
        cr_assert_eq(run(args), 0, "%s", err_text);
    } else {
        cr_assert_eq(run(args), 2);
        cr_assert(strstr(err_text, "--device cpu") != NULL, "%s", err_text);
    }
}

/* Tables 2 and 3 on 12 Fashion-MNIST pairs: both couplings share the folder (reflow reuses the
 * shuffled run at --first-sigma), the TSV has the contract's header, a changed setting is refused. */
Test(cli, memorize_tables_on_fashion_mnist_pairs)
{
    if (!th_exists(FV_FASHION_MNIST_DIR))
        cr_skip_test("Debian's dataset-fashion-mnist is not installed (make deps installs it)");
    char args[1024], f[512];
    const char *common = "--data fashion-mnist --pairs 12 --steps 2 --batch 2 --eval 3 --ode-steps 2";
    snprintf(args, sizeof args, "memorize %s --coupling shuffled --out %s/m", common, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    cr_assert(strstr(out_text, "CFM(0.05)") && strstr(out_text, "34.25 / 55.02"), "%s", out_text);
    snprintf(f, sizeof f, "%s/m/memorize_shuffled.tsv", dir);
    size_t n;
    char *tsv = (char *)th_slurp(f, &n);
    const char *head = "coupling\tsigma\tpairs\tl2_ot_mean\tl2_ot_std\tl2_target_mean\tl2_target_std\n"
                       "shuffled\t0\t12\t";
    cr_assert(tsv && strncmp(tsv, head, strlen(head)) == 0, "%s", tsv ? tsv : "(no file)");
    free(tsv);
    snprintf(args, sizeof args, "memorize %s --coupling reflow --out %s/m", common, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    cr_assert(strstr(out_text, "reflow pairs (12)") != NULL, "%s", out_text);
    cr_assert(strstr(out_text, "train: 2 steps") && !strstr(out_text, "shuffled_sigma0.05/checkpoint"),
              "the first model is the shuffled run, reused: %s", out_text);
    snprintf(f, sizeof f, "%s/m/memorize_reflow.png", dir);
    cr_assert(th_exists(f));
    snprintf(args, sizeof args, "memorize %s --coupling shuffled --sigmas 0.1 --out %s/m", common, dir);
    cr_assert_eq(run(args), 0, "a new sigma is a new run: %s", err_text);
    snprintf(args, sizeof args, "memorize --data fashion-mnist --pairs 10 --steps 2 --coupling shuffled --out %s/m",
             dir);
    cr_assert_eq(run(args), 2, "other pairs in the same folder are refused");
    cr_assert(strstr(err_text, "use another --out") != NULL, "%s", err_text);
}

Test(cli, memorize_refuses_bad_settings)
{
    char args[512];
    snprintf(args, sizeof args, "memorize --data fashion-mnist --out %s/m", dir);
    cr_assert_eq(run(args), 2);
    cr_assert(strstr(err_text, "--coupling") != NULL, "%s", err_text);
    snprintf(args, sizeof args, "memorize --data fashion-mnist --coupling flipped --out %s/m", dir);
    cr_assert_eq(run(args), 2);
    cr_assert(strstr(err_text, "flipped") != NULL, "%s", err_text);
    snprintf(args, sizeof args, "memorize --data fashion-mnist --coupling shuffled --sigmas 0,-1 --out %s/m", dir);
    cr_assert_eq(run(args), 2);
    cr_assert(strstr(err_text, "--sigmas") != NULL, "%s", err_text);
    snprintf(args, sizeof args, "%s/m", dir);
    cr_assert(!th_exists(args), "nothing written for refused settings");
}

/* The U-Net against Gaussian Fashion-MNIST's exact field, in both directions, and its per-sample
 * gradient variance. */
Test(cli, image_runs_gap_samples_and_gradient_variance)
{
    if (!th_exists(FV_FASHION_MNIST_DIR))
        cr_skip_test("Debian's dataset-fashion-mnist is not installed (make deps installs it)");
    char args[1024], f[512];
    const char *net = "--model unet --data fashion-mnist --images 40 --batch 4 --steps 2";
    for (int back = 0; back < 2; back++) {
        snprintf(args, sizeof args, "train %s %s --out %s/u%d", net, back ? "--direction backward" : "", dir, back);
        cr_assert_eq(run(args), 0, "%s", err_text);
        snprintf(args, sizeof args, "gap --run %s/u%d --t-grid 2 --n 8 --samples-png %s/s%d.png --ode-steps 2", dir,
                 back, dir, back);
        cr_assert_eq(run(args), 0, "%s", err_text);
        cr_assert(strncmp(out_text, "t\tgap\tgap_se\n0.25\t", 18) == 0, "%s", out_text);
        snprintf(f, sizeof f, "%s/s%d.png", dir, back);
        cr_assert(th_exists(f));
        snprintf(args, sizeof args, "gradvar --run %s/u%d --t-grid 1 --n 4 --groups 2", dir, back);
        cr_assert_eq(run(args), 0, "%s", err_text);
        cr_assert(strncmp(out_text, "t\tvar\tvar_se\n0.5\t", 17) == 0, "%s", out_text);
    }
    snprintf(args, sizeof args, "gap --run %s/u0 --field rotation --n 8", dir);
    cr_assert_eq(run(args), 2);
    cr_assert(strstr(err_text, "rotation") != NULL, "%s", err_text);
    snprintf(args, sizeof args, "train %s --direction backward --map sharpen --out %s/bad", net, dir);
    cr_assert_eq(run(args), 2);
    cr_assert(strstr(err_text, "--direction backward") != NULL, "%s", err_text);
}

/* A refused command line (no --out added): exit 2, the error line naming `needle`, nothing on stdout. */
static void expect_refusal(const char *args, const char *needle)
{
    cr_assert_eq(run(args), 2, "exit status for: %s\nstderr: %s", args, err_text);
    cr_assert(strncmp(err_text, "flowvar: error: ", 16) == 0, "stderr: %s", err_text);
    cr_assert(strstr(err_text, needle) != NULL, "stderr should name '%s': %s", needle, err_text);
    cr_assert_eq(out_text[0], '\0', "nothing on stdout after an error");
}

/* Issue 22: every command takes only the problem-flag groups it reads; the others are unknown options. */
Test(cli, problem_flags_a_command_does_not_read_are_unknown)
{
    expect_refusal("w2 " REF " --sigma 5", "w2: unknown option '--sigma'");
    expect_refusal("w2 " REF " --coupling rotation --angle 77", "w2: unknown option '--coupling'");
    expect_refusal("crossover " REF " --angles 90 --sigma 0.9", "crossover: unknown option '--sigma'");
    expect_refusal("crossover " REF " --angles 90 --seed 3", "crossover: unknown option '--seed'");
    expect_refusal("field " REF " --field markov --coupling rotation --t 0.5 --points 1,1",
                   "field: unknown option '--coupling'");
    expect_refusal("transport " REF " --points 1,1 --coupling independent", "transport: unknown option '--coupling'");
    expect_refusal("reflow " REF " --sigma 0.1", "reflow: unknown option '--sigma'");
    expect_refusal("check --seed 1", "check: unknown option '--seed'");
    expect_refusal("gmm --target-mean 1,2", "gmm: unknown option '--target-mean'");
}

/* Flags a command takes but that the rest of its command line leaves without effect. */
Test(cli, flags_without_effect_or_in_contradiction_are_refused)
{
    expect_input_error("field " REF " --field ot --angle 30 --t 0.5 --points 1,1", "--angle is not used without --field rotation");
    expect_input_error("field " REF " --field rotation --angle 30 --sigma 0.5 --t 0.5 --points 1,1",
                       "--sigma is not used without --field markov");
    expect_input_error("transport " REF " --points 1,1 --seed 4", "--seed is not used with --points");
    expect_input_error("transport " REF " --points 1,1 --atol 1e-3", "--atol is not used by the fixed-step solvers");
    expect_input_error("variance " REF " --t 0.5 --seed 4", "--seed is not used without --mc");
    expect_input_error("variance " REF " --t 0.5 --epsrel 1e-6", "--epsrel is not used without --integrated");
    expect_input_error("variance " REF " --coupling independent --angle 120 --t 0.5",
                       "--angle is not used without --coupling rotation or --field rotation");
    expect_input_error("variance " REF " --schedule constant --deriv-term --sigma 0.1 --t 0.5",
                       "--deriv-term goes with --schedule bridge");
    char args[512];
    snprintf(args, sizeof args, "train " TINY " --angle 30 --steps 5 --out %s/r", dir);
    cr_assert_eq(run(args), 2, "train without --coupling rotation: %s", err_text);
    cr_assert(strstr(err_text, "--angle is not used without --coupling rotation") != NULL, "%s", err_text);
    /* the same flags where they do take effect */
    cr_assert_eq(run("variance " REF " --field rotation --angle 120 --t 0.3"), 0, "%s", err_text);
    cr_assert_eq(run("variance " REF " --schedule bridge --deriv-term --sigma 0.1 --t 0.5"), 0, "%s", err_text);
    cr_assert_eq(run("transport " REF " --n 2 --seed 4"), 0, "%s", err_text);
}

Test(cli, every_out_option_says_file_or_folder)
{
    static const char *const commands[] = {"field", "transport", "variance", "crossover", "figures", "train", "sample",
                                           "eval", "gap", "gradvar", "gmm", "memorize", "reflow", "fit", "reproduce"};
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
        char args[64];
        snprintf(args, sizeof args, "%s --help", commands[i]);
        cr_assert_eq(run(args), 0, "%s", err_text);
        const char *line = strstr(out_text, "\n  --out ");
        cr_assert(line != NULL, "%s --help lists --out", commands[i]);
        cr_assert(strncmp(line, "\n  --out FILE", 13) == 0 || strncmp(line, "\n  --out DIR", 12) == 0,
                  "%s --help: --out's metavariable is FILE or DIR: %.60s", commands[i], line + 1);
    }
}

Test(cli, numeric_options_are_refused_outside_their_domain)
{
    expect_input_error("field " REF " --t 0.5 --points 1,1 --cond-max 0", "--cond-max must be >= 1, got 0");
    expect_input_error("field " REF " --t 0.5 --points 1,1 --cond-max -1", "--cond-max must be >= 1, got -1");
    expect_input_error("transport " REF " --points 1,1 --solver rk45 --atol -1", "--atol must be >= 0, got -1");
    expect_input_error("transport " REF " --points 1,1 --solver rk45 --rtol 0", "--rtol must be > 0, got 0");
    expect_input_error("variance " REF " --t 0.5 --mc 0", "--mc must be at least 4, got 0");
    expect_input_error("variance " REF " --t 0.5 --sigma -1", "--sigma must be >= 0, got -1");
    expect_input_error("variance " REF " --integrated --epsrel 2", "--epsrel must be in (0, 1), got 2");
    expect_input_error("crossover " REF " --angles 90 --xtol 0", "--xtol must be > 0, got 0");
    expect_input_error("reflow " REF " --lr 0", "--lr must be > 0, got 0");
    expect_input_error("reflow " REF " --width 0", "--width must be at least 1");
}

Test(cli, npy_shapes_are_checked)
{
    double v[6] = {1, 2, 3, 4, 5, 6};
    char p23[300], p14[300], p2[300], args[1024];
    snprintf(p23, sizeof p23, "%s/p23.npy", dir);
    snprintf(p14, sizeof p14, "%s/p14.npy", dir);
    snprintf(p2, sizeof p2, "%s/p2.npy", dir);
    cr_assert_eq(fv_npy_write_f64(p23, v, 2, (size_t[]){2, 3}), FV_OK);
    cr_assert_eq(fv_npy_write_f64(p14, (double[]){2, 0.6, 0.6, 1}, 2, (size_t[]){1, 4}), FV_OK);
    cr_assert_eq(fv_npy_write_f64(p2, v, 1, (size_t[]){2}), FV_OK);
    snprintf(args, sizeof args, "field --target-mean 0,0 --t 0.5 --points %s", p23);
    expect_input_error(args, "has shape (2, 3), expected (n, 2) or (2,)");
    snprintf(args, sizeof args, "field --target-mean 0,0 --target-cov %s --t 0.5 --points 1,1", p14);
    expect_input_error(args, "--target-cov: ");
    cr_assert(strstr(err_text, "has shape (1, 4), expected (2, 2)") != NULL, "%s", err_text);
    snprintf(args, sizeof args, "w2 --target-mean %s", p23);
    expect_refusal(args, "--target-mean: ");
    cr_assert(strstr(err_text, "expected (d,)") != NULL, "%s", err_text);
    snprintf(args, sizeof args, "field --target-mean 1,1 --t 0.5 --points %s", p2);
    cr_assert_eq(run(args), 0, "one point of shape (d,): %s", err_text);
    cr_assert_str_eq(out_text, "v1\tv2\n1\t1\n", "the OT field between N(0, I) and N((1, 1), I) is (1, 1)");
}

Test(cli, refused_runs_leave_no_folder)
{
    static const char *const bad[] = {"--lr 0", "--steps 0", "--log-every 0", "--width 0", "--gmm 2"};
    char args[1024], run_dir[300];
    snprintf(run_dir, sizeof run_dir, "%s/r", dir);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(train_run("r", bad[i]), 2, "train %s: %s", bad[i], err_text);
        cr_assert(!th_exists(run_dir), "train %s left the folder %s", bad[i], run_dir);
    }
    snprintf(args, sizeof args, "memorize --data fashion-mnist --coupling shuffled --lr 0 --out %s/m", dir);
    cr_assert_eq(run(args), 2, "%s", err_text);
    cr_assert(strstr(err_text, "--lr") != NULL, "%s", err_text);
    snprintf(args, sizeof args, "memorize --data cifar10 --coupling shuffled --out %s/m", dir);
    cr_assert_eq(run(args), 2, "%s", err_text);
    snprintf(args, sizeof args, "memorize --data fashion-mnist --coupling shuffled --pairs 70000 --out %s/m", dir);
    cr_assert_eq(run(args), 2, "%s", err_text);
    snprintf(args, sizeof args, "%s/m", dir);
    cr_assert(!th_exists(args), "memorize refused: no folder");
}

/* A trained run whose weights are finite but overflow (3e38 in the hidden layers): every command that
 * evaluates it fails with exit 1, naming where the first non-finite value arose, and writes nothing. */
Test(cli, overflowing_weights_fail_naming_where)
{
    cr_assert_eq(train_run("r", "--steps 20"), 0, "%s", err_text);
    char ck[300], args[1024], f[300];
    snprintf(ck, sizeof ck, "%s/r/checkpoint.safetensors", dir);
    fv_st_file st;
    cr_assert_eq(fv_st_read(ck, &st), FV_OK, "%s", fv_last_error());
    struct stat sb;
    cr_assert_eq(stat(ck, &sb), 0);
    FILE *fp = fopen(ck, "r+b");
    cr_assert(fp != NULL);
    static const char *const layers[] = {"net.0.weight", "net.2.weight"};
    for (int l = 0; l < 2; l++) {
        const fv_st_tensor *t = fv_st_find(&st, layers[l]);
        cr_assert(t && t->dtype == FV_ST_F32, "%s in the checkpoint", layers[l]);
        float big = 3e38f;
        cr_assert_eq(fseek(fp, (long)((size_t)sb.st_size - st.data_size + t->offset), SEEK_SET), 0);
        for (size_t k = 0; k < t->count; k++)
            cr_assert_eq(fwrite(&big, sizeof big, 1, fp), 1u);
    }
    fclose(fp);
    fv_st_free(&st);
    snprintf(f, sizeof f, "%s/x.npy", dir);
    snprintf(args, sizeof args, "sample --run %s/r --n 5 --steps 10 --out %s", dir, f);
    cr_assert_eq(run(args), 1, "sample: %s%s", out_text, err_text);
    cr_assert(strstr(err_text, "non-finite at Euler step ") && strstr(err_text, " of 10 (t = "), "%s", err_text);
    cr_assert(!th_exists(f), "sample wrote nothing");
    snprintf(args, sizeof args, "gap --run %s/r --t-grid 2 --n 16", dir);
    cr_assert_eq(run(args), 1, "gap: %s%s", out_text, err_text);
    cr_assert(strstr(err_text, "gap: at t = 0.25") != NULL, "%s", err_text);
    cr_assert_eq(out_text[0], '\0', "gap printed nothing: %s", out_text);
    snprintf(args, sizeof args, "gradvar --run %s/r --t-grid 2 --n 16 --groups 2", dir);
    cr_assert_eq(run(args), 1, "gradvar: %s%s", out_text, err_text);
    cr_assert(strstr(err_text, "gradvar: at t = 0.25") != NULL, "%s", err_text);
    cr_assert_eq(out_text[0], '\0', "gradvar printed nothing: %s", out_text);
}

/* Analytic commands: input whose result cannot be finite is refused (exit 2); an overflow that only the
 * computation reveals fails (exit 1) naming where; nothing non-finite is printed. */
Test(cli, analytic_overflow_is_refused_or_named)
{
    expect_refusal("w2 --target-mean 1e200,1e200", "--target-mean / --source-mean too large");
    expect_input_error("variance " REF " --t 0.5 --sigma 1e100", "--sigma too large");
    expect_input_error("variance " REF " --t 0.5 --sigma 1e200", "--sigma too large");
    expect_input_error("field --target-mean 0,0 --target-cov 1e200,0,0,1 --t 0.5 --points 1,1", "--target-cov too large");
    char args[512];
    snprintf(args, sizeof args, "transport " REF " --points 1e308,-1e308 --solver rk45 --out %s", file_path);
    cr_assert_eq(run(args), 1, "%s%s", out_text, err_text);
    cr_assert(strstr(err_text, "transport: point 1's path overflowed") != NULL, "%s", err_text);
    cr_assert(!th_exists(file_path), "no output file");
    cr_assert_eq(run("transport " REF " --points 1e308,-1e308 --solver rk45"), 1, "%s", err_text);
    cr_assert(strstr(out_text, "nan") == NULL && strstr(out_text, "inf") == NULL, "stdout: %s", out_text);
    cr_assert_eq(run("field " REF " --t 0.9 --points 1.7e308,1.7e308"), 1, "%s%s", out_text, err_text);
    cr_assert(strstr(err_text, "field: v(x, t = 0.9) at point 1 overflows") != NULL, "%s", err_text);
    cr_assert_eq(out_text[0], '\0', "nothing printed: %s", out_text);
}

/* The options of the run commands that the run or the rest of the line leaves without effect. */
Test(cli, run_commands_refuse_options_without_effect)
{
    cr_assert_eq(train_run("r", "--steps 5"), 0, "%s", err_text);
    char args[512];
    snprintf(args, sizeof args, "gap --run %s/r --t-grid 1 --n 8 --fit-floor 1e-3", dir);
    expect_refusal(args, "--fit-floor is not used for a run without --data");
    snprintf(args, sizeof args, "gap --run %s/r --t-grid 1 --n 8 --ode-steps 3", dir);
    expect_refusal(args, "--ode-steps is not used without --samples-png");
    snprintf(args, sizeof args, "gradvar --run %s/r --t-grid 1 --n 8 --groups 2 --exact-field markov", dir);
    expect_refusal(args, "--exact-field is not used without --exact");
    snprintf(args, sizeof args, "sample --run %s/r --points 1,1 --seed 3", dir);
    expect_refusal(args, "--seed is not used with --points");
    snprintf(args, sizeof args, "memorize --data fashion-mnist --coupling shuffled --first-sigma 0.1 --out %s/m", dir);
    expect_refusal(args, "--first-sigma is not used with --coupling shuffled");
    snprintf(args, sizeof args, "%s/m", dir);
    cr_assert(!th_exists(args), "no folder");
    expect_input_error("crossover " REF " --angles tests/fixtures/npy/f64_3x4.npy", "expected a list (k,)");
}

/* Tables that had no value to show printed nan: the paths without targets, the paper's missing cells. */
Test(cli, tables_print_no_nan)
{
    cr_assert_eq(train_run("r", "--steps 5"), 0, "%s", err_text);
    char args[512], paths[300];
    snprintf(paths, sizeof paths, "%s/paths.tsv", dir);
    snprintf(args, sizeof args, "sample --run %s/r --n 2 --steps 3 --paths-out %s", dir, paths);
    cr_assert_eq(run(args), 0, "%s", err_text);
    size_t n;
    char *text = (char *)th_slurp(paths, &n);
    cr_assert(text != NULL);
    text[n] = '\0';
    cr_assert(strncmp(text, "point\tt\tx1\tx2\tsource1\tsource2\n", 30) == 0, "no target columns without "
              "--train-sources: %s", text);
    cr_assert(strstr(text, "nan") == NULL, "%s", text);
    free(text);
    cr_assert_eq(run("gmm --dims 2 --sigmas 0 --pairs 4 --steps 2 --samples 4 --euler 2 --width 4 --depth 1 --fourier 0 "
                     "--device cpu"),
                 0, "%s", err_text);
    cr_assert(strstr(out_text, "nan") == NULL && strstr(out_text, "inf") == NULL, "%s", out_text);
}

/* ---- issue 18: one-dimensional problems, sizes from flags, strict checkpoints ---- */

/* The first number of the second line of out_text (the first data row of a TSV). */
static double first_value(void)
{
    const char *row = strchr(out_text, '\n');
    cr_assert(row != NULL, "a data row in: %s", out_text);
    return strtod(row + 1, NULL);
}

/* d = 1 once wrote past a d x d workspace (the SAN build caught it); the numbers are the 1-D closed
 * form: between N(0, 1) and N(3, 2) the OT map is x -> 3 + sqrt(2) x, and at t the field is
 * v(y) = 3 + (r - 1)(y - 3t) / (1 + t (r - 1)), r = sqrt(2). */
Test(cli, one_dimensional_field_transport_and_w2_match_the_closed_form)
{
    const double r = sqrt(2.0);
    cr_assert_eq(run("field --target-mean 3 --target-cov 2 --t 0.5 --points 1"), 0, "field at d = 1: %s", err_text);
    double want = 3.0 + (r - 1.0) * (1.0 - 1.5) / (1.0 + 0.5 * (r - 1.0));
    cr_assert_float_eq(first_value(), want, 1e-9, "field v(1, 0.5) = %s, closed form %.10g", out_text, want);
    cr_assert_eq(run("transport --target-mean 3 --target-cov 2 --points 0.5 --solver rk45 --with-map"), 0,
                 "transport at d = 1: %s", err_text);
    double x1, T1;
    cr_assert_eq(sscanf(strchr(out_text, '\n') + 1, "%lf %lf", &x1, &T1), 2, "two columns: %s", out_text);
    cr_assert_float_eq(T1, 3.0 + r * 0.5, 1e-9, "map T(0.5) = %.10g, closed form 3 + sqrt(2)/2", T1);
    cr_assert_float_eq(x1, 3.0 + r * 0.5, 1e-6, "transported end point %.10g reaches the map", x1);
    cr_assert_eq(run("transport --target-mean 3 --n 3"), 0, "transport --n at d = 1: %s", err_text);
    cr_assert_eq(run("w2 --target-mean 3 --target-cov 2"), 0, "w2 at d = 1: %s", err_text);
    want = 9.0 + (r - 1.0) * (r - 1.0); /* |m|^2 + (sqrt(2) - 1)^2 */
    double w2, w2sq;
    cr_assert_eq(sscanf(strstr(out_text, "w2_squared\n") + 11, "%lf %lf", &w2, &w2sq), 2, "%s", out_text);
    cr_assert_float_eq(w2sq, want, 1e-9, "W2^2 at d = 1 = %.10g, closed form %.10g", w2sq, want);
}

Test(cli, zero_dimensional_npy_mean_is_a_one_dimensional_problem)
{
    double *m;
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS];
    cr_assert_eq(fv_npy_read_f64("tests/fixtures/npy/scalar_f64.npy", &m, &ndim, shape), FV_OK, "read the fixture");
    cr_assert_eq(ndim, 0, "the fixture is a 0-d array");
    cr_assert_eq(run("field --target-mean tests/fixtures/npy/scalar_f64.npy --target-cov 2 --t 0.5 --points 1"), 0,
                 "a 0-d --target-mean: %s", err_text);
    const double r = sqrt(2.0), want = m[0] + (r - 1.0) * (1.0 - 0.5 * m[0]) / (1.0 + 0.5 * (r - 1.0));
    cr_assert_float_eq(first_value(), want, 1e-9, "v(1, 0.5) = %s, closed form %.10g", out_text, want);
    free(m);
}

Test(cli, one_dimensional_variance_crossover_and_training_commands_run)
{
    cr_assert_eq(run("variance --target-mean 3 --target-cov 2 --t 0.5 --mc 100"), 0, "variance at d = 1: %s",
                 err_text);
    cr_assert_eq(run("variance --target-mean 3 --target-cov 2 --integrated"), 0, "integrated at d = 1: %s", err_text);
    cr_assert_eq(run("crossover --target-mean 3 --target-cov 2 --angles 90"), 0, "crossover at d = 1: %s", err_text);
    char args[512];
    snprintf(args, sizeof args,
             "train --target-mean 3 --target-cov 2 --width 8 --depth 1 --batch 16 --steps 20 --out %s/r1", dir);
    cr_assert_eq(run(args), 0, "train at d = 1: %s", err_text);
    const char *const cmds[3] = {"sample --run %s/r1 --n 4 --paths-out %s/paths.tsv --steps 4",
                                 "gap --run %s/r1 --t-grid 2 --n 16", "gradvar --run %s/r1 --t-grid 2 --n 16"};
    for (int i = 0; i < 3; i++) {
        snprintf(args, sizeof args, cmds[i], dir, dir);
        cr_assert_eq(run(args), 0, "%s at d = 1: %s", args, err_text);
    }
}

/* A size from a flag that can never be allocated: exit 2, the flag and the machine's memory named. */
static void expect_size_refused(const char *args, const char *flag)
{
    expect_input_error(args, flag);
    cr_assert(strstr(err_text, "this machine has") != NULL, "the limit is stated: %s", err_text);
}

Test(cli, sizes_that_wrap_or_exceed_memory_are_bad_input)
{
    expect_size_refused("variance " REF " --t-grid 18446744073709551615", "--t-grid");
    /* 2^61 + 1 times of 8 bytes wraps to 8 bytes: a small buffer written 2^61 times */
    expect_size_refused("variance " REF " --t-grid 2305843009213693953", "--t-grid");
    expect_size_refused("transport " REF " --n 100000000000000", "--n");
    char args[512];
    snprintf(args, sizeof args, "train " REF " --batch 18446744073709551615 --out %s/b1", dir);
    cr_assert_eq(run(args), 2, "--batch 2^64 - 1: %s", err_text);
    cr_assert(strstr(err_text, "--batch") && strstr(err_text, "this machine has"), "%s", err_text);
    snprintf(args, sizeof args, "train " REF " --batch 1000000000000 --out %s/b2", dir);
    cr_assert_eq(run(args), 2, "--batch 1e12: %s", err_text);
    cr_assert(strstr(err_text, "--batch") && strstr(err_text, "TiB"), "%s", err_text);
}

Test(cli, covariance_output_beyond_memory_is_bad_input)
{
    /* d = 2000: the (d + d^2)^2 covariance is 128 TB */
    double *m = calloc(2000, sizeof *m);
    size_t shape[1] = {2000};
    char mean[512], args[1024];
    snprintf(mean, sizeof mean, "%s/m2000.npy", dir);
    cr_assert_eq(fv_npy_write_f64(mean, m, 1, shape), FV_OK, "write the mean");
    free(m);
    snprintf(args, sizeof args, "variance --target-mean %s --t 0.5 --cov-out %s/cov.npy", mean, dir);
    cr_assert_eq(run(args), 2, "--cov-out at d = 2000: %s", err_text);
    cr_assert(strstr(err_text, "--cov-out") && strstr(err_text, "TiB") && strstr(err_text, "this machine has"), "%s",
              err_text);
    snprintf(args, sizeof args, "%s/cov.npy", dir);
    cr_assert(!th_exists(args), "no covariance file");
}

/* Rewrite the checkpoint at path with one change: float `index` of tensor `name` set to v (name NULL:
 * none), a 4-float tensor `extra` added (NULL: none), metadata `key` set to `value` (NULL: none). */
static void rewrite_checkpoint(const char *path, const char *name, size_t index, float v, const char *extra,
                               const char *key, const char *value)
{
    fv_st_file f;
    cr_assert_eq(fv_st_read(path, &f), FV_OK, "read %s: %s", path, fv_last_error());
    size_t n = f.ntensors, nm = f.nmeta;
    fv_st_entry *e = calloc(n + 1, sizeof *e);
    void **bufs = calloc(n + 1, sizeof *bufs);
    const char **mk = calloc(nm + 1, sizeof *mk), **mv = calloc(nm + 1, sizeof *mv);
    for (size_t i = 0; i < n; i++) {
        const fv_st_tensor *t = &f.tensors[i];
        bufs[i] = malloc(t->count * fv_st_dtype_size(t->dtype) + 1);
        cr_assert_eq(fv_st_get(&f, t->name, t->dtype, t->ndim, t->shape, bufs[i]), FV_OK, "%s", fv_last_error());
        if (name && strcmp(t->name, name) == 0) {
            cr_assert(t->dtype == FV_ST_F32 && index < t->count, "tensor %s has float %zu", name, index);
            ((float *)bufs[i])[index] = v;
        }
        e[i] = (fv_st_entry){t->name, t->dtype, t->ndim, t->shape, bufs[i]};
    }
    static const float four[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    static const size_t four_shape[1] = {4};
    size_t slot = n; /* an extra tensor of an existing name replaces it */
    for (size_t i = 0; extra && i < n; i++)
        if (strcmp(f.tensors[i].name, extra) == 0)
            slot = i;
    if (extra)
        e[slot == n ? n++ : slot] = (fv_st_entry){extra, FV_ST_F32, 1, four_shape, four};
    int replaced = 0;
    for (size_t i = 0; i < nm; i++) {
        mk[i] = f.meta_keys[i];
        mv[i] = key && strcmp(key, mk[i]) == 0 ? (replaced = 1, value) : f.meta_values[i];
    }
    if (key && !replaced) {
        mk[nm] = key;
        mv[nm++] = value;
    }
    cr_assert_eq(fv_st_write(path, n, e, nm, mk, mv), FV_OK, "rewrite %s: %s", path, fv_last_error());
    for (size_t i = 0; i < f.ntensors; i++)
        free(bufs[i]);
    free(bufs);
    free(e);
    free(mk);
    free(mv);
    fv_st_free(&f);
}

/* `flowvar sample` on run NAME (its checkpoint rewritten before): exit 2 naming needle and needle2. */
static void expect_run_refused(const char *name, const char *needle, const char *needle2)
{
    char args[512];
    snprintf(args, sizeof args, "sample --run %s/%s --n 3", dir, name);
    cr_assert_eq(run(args), 2, "exit status, stderr: %s", err_text);
    cr_assert(strstr(err_text, needle) && strstr(err_text, needle2), "should name '%s' and '%s': %s", needle, needle2,
              err_text);
    const char *first = strstr(err_text, "checkpoint.safetensors");
    cr_assert(!first || !strstr(first + 1, "checkpoint.safetensors"), "the file is named once: %s", err_text);
    cr_assert_eq(out_text[0], '\0', "no samples from a refused checkpoint");
}

/* Copy run SRC to run DST (a fresh folder with the same checkpoint) and return DST's checkpoint path. */
static const char *copy_run(const char *src, const char *dst)
{
    static char path[512];
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf %s/%s && cp -r %s/%s %s/%s", dir, dst, dir, src, dir, dst);
    cr_assert_eq(system(cmd), 0, "copy the run");
    snprintf(path, sizeof path, "%s/%s/checkpoint.safetensors", dir, dst);
    return path;
}

Test(cli, checkpoint_with_foreign_tensors_or_bad_values_is_refused)
{
    cr_assert_eq(train_run("r", "--steps 10"), 0, "%s", err_text);
    rewrite_checkpoint(copy_run("r", "x"), NULL, 0, 0, "bogus.weight", NULL, NULL);
    expect_run_refused("x", "bogus.weight", "not part of this run's network");
    rewrite_checkpoint(copy_run("r", "x"), NULL, 0, 0, "ema.net.0.bias", NULL, NULL); /* no --ema in this run */
    expect_run_refused("x", "ema.net.0.bias", "not part of");
    rewrite_checkpoint(copy_run("r", "x"), "net.2.weight", 5, NAN, NULL, NULL, NULL);
    expect_run_refused("x", "net.2.weight", "index 5");
    rewrite_checkpoint(copy_run("r", "x"), "net.0.bias", 1, INFINITY, NULL, NULL, NULL);
    expect_run_refused("x", "net.0.bias", "index 1");
    rewrite_checkpoint(copy_run("r", "x"), "adam.v.net.4.bias", 0, -1e-3f, NULL, NULL, NULL);
    expect_run_refused("x", "adam.v.net.4.bias", "negative");
    rewrite_checkpoint(copy_run("r", "x"), "adam.v.net.0.weight", 2, NAN, NULL, NULL, NULL);
    expect_run_refused("x", "adam.v.net.0.weight", "index 2");
    rewrite_checkpoint(copy_run("r", "x"), "adam.m.net.0.weight", 3, -INFINITY, NULL, NULL, NULL);
    expect_run_refused("x", "adam.m.net.0.weight", "index 3");
    rewrite_checkpoint(copy_run("r", "x"), NULL, 0, 0, "train.log", NULL, NULL); /* a 1-D loss log */
    expect_run_refused("x", "train.log", "rows");
}

Test(cli, checkpoint_step_metadata_is_checked)
{
    cr_assert_eq(train_run("r", "--steps 10"), 0, "%s", err_text);
    rewrite_checkpoint(copy_run("r", "x"), NULL, 0, 0, NULL, "step", "-1");
    expect_run_refused("x", "'step'", "not a whole number");
    rewrite_checkpoint(copy_run("r", "x"), NULL, 0, 0, NULL, "step", "18446744073709551615");
    expect_run_refused("x", "'step'", "2^53");
    rewrite_checkpoint(copy_run("r", "x"), NULL, 0, 0, NULL, "adam.step", "-3");
    expect_run_refused("x", "'adam.step'", "not a whole number");
    rewrite_checkpoint(copy_run("r", "x"), NULL, 0, 0, NULL, "opt.steps", "-5");
    expect_run_refused("x", "opt.steps", "");
    rewrite_checkpoint(copy_run("r", "x"), NULL, 0, 0, NULL, "opt.steps", "99999999999999999999");
    expect_run_refused("x", "opt.steps", "");
    rewrite_checkpoint(copy_run("r", "x"), NULL, 0, 0, NULL, "opt.steps", "5"); /* below the step reached */
    expect_run_refused("x", "opt.steps", "beyond");
}

Test(cli, unet_checkpoint_with_foreign_tensors_or_bad_weights_is_refused, .timeout = 120)
{
    if (!th_exists(FV_FASHION_MNIST_DIR))
        cr_skip_test("Debian's dataset-fashion-mnist is not installed (make deps installs it)");
    char args[1024];
    snprintf(args, sizeof args,
             "train --model unet --data fashion-mnist --images 8 --channels 32 --channel-mult 1,2 --batch 2 "
             "--steps 1 --out %s/u",
             dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    /* attention weights that this U-Net's options do not call for */
    rewrite_checkpoint(copy_run("u", "x"), NULL, 0, 0, "input_blocks.1.1.qkv.weight", NULL, NULL);
    expect_run_refused("x", "input_blocks.1.1.qkv.weight", "not part of");
    rewrite_checkpoint(copy_run("u", "x"), "out.2.weight", 7, NAN, NULL, NULL, NULL);
    expect_run_refused("x", "out.2.weight", "index 7");
}

Test(cli, mixture_and_pair_counts_beyond_memory_are_bad_input)
{
    const char *const cmds[3][2] = {
        {"train --gmm 100000000000 --dim 2 --out %s/g", "Gaussian mixture"},
        {"gmm --dims 2 --pairs 100000000000 --steps 1 --out %s/t", "--pairs"},
        {"reflow " REF " --pairs 100000000000 --out %s/f", "--pairs"},
    };
    char args[512];
    for (int i = 0; i < 3; i++) {
        snprintf(args, sizeof args, cmds[i][0], dir);
        cr_assert_eq(run(args), 2, "%s: %s", args, err_text);
        cr_assert(strstr(err_text, cmds[i][1]) && strstr(err_text, "this machine has"), "%s: %s", args, err_text);
    }
}

Test(cli, unet_batch_beyond_memory_is_bad_input)
{
    if (!th_exists(FV_FASHION_MNIST_DIR))
        cr_skip_test("Debian's dataset-fashion-mnist is not installed (make deps installs it)");
    /* 1e5 images pass the per-row bound of the batch buffers; the U-Net's activations need 1 TiB */
    char args[512];
    snprintf(args, sizeof args, "train --model unet --data fashion-mnist --images 8 --batch 100000 --steps 1 --out %s/u",
             dir);
    cr_assert_eq(run(args), 2, "%s", err_text);
    cr_assert(strstr(err_text, "unet: activations") && strstr(err_text, "this machine has"), "%s", err_text);
}

/* ---- flowvar eval ---------------------------------------------------------------------------- */

/* An NPY written by flowvar: its doubles (malloc'ed), its shape in ndim and shape. */
static double *read_npy(const char *path, int *ndim, size_t shape[FV_NPY_MAX_DIMS])
{
    double *v = NULL;
    cr_assert_eq(fv_npy_read_f64(path, &v, ndim, shape), FV_OK, "reading %s: %s", path, fv_last_error());
    return v;
}

/* `flowvar ARGS --out DIR/NAME`, which must succeed; the NPY it wrote. */
static double *run_npy(const char *args, const char *name, int *ndim, size_t shape[FV_NPY_MAX_DIMS])
{
    char full[2048];
    snprintf(full, sizeof full, "%s --out %s/%s", args, dir, name);
    cr_assert_eq(run(full), 0, "flowvar %s: %s", full, err_text);
    return read_npy(th_path_in(dir, name), ndim, shape);
}

/* One Euler step of `sample` from x0 is x0 + v(x0, 0): eval at t = 0 gives the same v, through the
 * other path, EMA weights in both by default. */
Test(cli, eval_at_time_zero_is_one_euler_step_of_sample)
{
    cr_assert_eq(train_run("r", "--steps 100 --ema 0.9"), 0, "%s", err_text);
    static const double x0[6] = {0.3, 0.2, 1, 1, -2, 0.5};
    char args[1024], points[300];
    snprintf(points, sizeof points, "%s/x0.npy", dir);
    cr_assert_eq(fv_npy_write_f64(points, x0, 2, (size_t[]){3, 2}), FV_OK);
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS];
    snprintf(args, sizeof args, "sample --run %s/r --points %s --steps 1", dir, points);
    double *x1 = run_npy(args, "x1.npy", &ndim, shape);
    snprintf(args, sizeof args, "eval --run %s/r --points %s --t 0", dir, points);
    double *v = run_npy(args, "v.npy", &ndim, shape);
    cr_assert(ndim == 2 && shape[0] == 3 && shape[1] == 2, "eval --t: shape (N, d)");
    for (int i = 0; i < 6; i++)
        cr_expect(fabs(v[i] - (x1[i] - x0[i])) <= 1e-12 * (1 + fabs(x1[i])),
                  "eval at t = 0, entry %d: %.17g, one Euler step of sample gives %.17g", i, v[i], x1[i] - x0[i]);
    free(x1);
    free(v);
}

/* On a well-trained OT run the network is close to the Lemma 1 field, and the closed form eval writes
 * beside it is exactly what `flowvar field` gives at the same points. */
Test(cli, eval_field_ot_beside_the_network_of_a_trained_ot_run)
{
    char args[1024], points[300];
    snprintf(args, sizeof args, "train " REF " --width 64 --depth 3 --batch 256 --steps 1500 --out %s/ot", dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    double x[200]; /* a 10 x 10 grid over [-1.8, 1.8]^2, where the source N(0, I) has its mass */
    for (int i = 0; i < 100; i++) {
        x[2 * i] = -1.8 + 0.4 * (i % 10);
        x[2 * i + 1] = -1.8 + 0.4 * (i / 10);
    }
    snprintf(points, sizeof points, "%s/x.npy", dir);
    cr_assert_eq(fv_npy_write_f64(points, x, 2, (size_t[]){100, 2}), FV_OK);
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS];
    snprintf(args, sizeof args, "eval --run %s/ot --points %s --t 0.5 --field ot", dir, points);
    double *vc = run_npy(args, "vc.npy", &ndim, shape);
    cr_assert(ndim == 3 && shape[0] == 2 && shape[1] == 100 && shape[2] == 2, "--field: shape (2, N, d)");
    snprintf(args, sizeof args, "eval --run %s/ot --points %s --t 0.5", dir, points);
    double *v = run_npy(args, "v.npy", &ndim, shape);
    cr_expect_eq(memcmp(v, vc, 200 * sizeof *v), 0, "[0] with --field is the network's v alone");
    snprintf(args, sizeof args, "field " REF " --field ot --t 0.5 --points %s", points);
    double *c = run_npy(args, "c.npy", &ndim, shape);
    cr_expect_eq(memcmp(c, vc + 200, 200 * sizeof *c), 0, "[1] with --field ot is `flowvar field --field ot`");
    double err = 0, norm = 0;
    for (size_t i = 0; i < 200; i++) {
        err += (vc[i] - c[i]) * (vc[i] - c[i]);
        norm += c[i] * c[i];
    }
    cr_expect(err / norm < 1e-3, "|v_net - v_ot|^2 / |v_ot|^2 = %g on a trained OT run (want < 1e-3)", err / norm);
    free(v);
    free(vc);
    free(c);
}

/* --times gives (n_times, N, d), each time's slice what --t gives; with --field (2, n_times, N, d); as TSV
 * a leading t column and the rows of each time in turn. */
Test(cli, eval_times_shapes_and_tsv)
{
    cr_assert_eq(train_run("r", "--steps 20"), 0, "%s", err_text);
    char args[1024];
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS];
    snprintf(args, sizeof args, "eval --run %s/r --n 5 --times 0,0.5,1", dir);
    double *V = run_npy(args, "v.npy", &ndim, shape);
    cr_assert(ndim == 3 && shape[0] == 3 && shape[1] == 5 && shape[2] == 2, "--times: shape (n_times, N, d)");
    snprintf(args, sizeof args, "eval --run %s/r --n 5 --t 0.5", dir);
    double *v = run_npy(args, "v1.npy", &ndim, shape);
    cr_expect_eq(memcmp(V + 10, v, 10 * sizeof *v), 0, "--times slice 1 is --t 0.5");
    snprintf(args, sizeof args, "eval --run %s/r --n 5 --times 0,0.5,1 --field ot", dir);
    double *VC = run_npy(args, "vc.npy", &ndim, shape);
    cr_assert(ndim == 4 && shape[0] == 2 && shape[1] == 3 && shape[2] == 5 && shape[3] == 2,
              "--times --field: shape (2, n_times, N, d)");
    cr_expect_eq(memcmp(VC, V, 30 * sizeof *V), 0, "[0] is the network");
    snprintf(args, sizeof args, "eval --run %s/r --points 0.3,0.2,1,1 --times 0.25,1 --field ot", dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    cr_expect(strncmp(out_text, "t\tv1\tv2\tc1\tc2\n0.25\t", 19) == 0, "TSV header and first row: %s", out_text);
    int rows = 0;
    for (const char *p = out_text; (p = strchr(p, '\n')); p++)
        rows++;
    cr_expect_eq(rows, 5, "a header and n_times x N rows: %s", out_text);
    cr_expect(strstr(out_text, "\n1\t") != NULL, "the rows of t = 1 follow: %s", out_text);
    free(V);
    free(v);
    free(VC);
}

/* On a run that keeps an EMA, --no-ema takes the live weights: other values. */
Test(cli, eval_no_ema_differs_from_the_ema_weights)
{
    cr_assert_eq(train_run("r", "--steps 50 --ema 0.9"), 0, "%s", err_text);
    char args[1024];
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS];
    snprintf(args, sizeof args, "eval --run %s/r --points 0.3,0.2 --t 0.5", dir);
    double *ema = run_npy(args, "ema.npy", &ndim, shape);
    snprintf(args, sizeof args, "eval --run %s/r --points 0.3,0.2 --t 0.5 --no-ema", dir);
    double *live = run_npy(args, "live.npy", &ndim, shape);
    cr_expect(ema[0] != live[0] || ema[1] != live[1], "--no-ema gives (%g, %g), the EMA (%g, %g)", live[0], live[1],
              ema[0], ema[1]);
    free(ema);
    free(live);
}

/* Bad command lines: exit 2, an error naming the problem, no output file. */
Test(cli, eval_refuses_bad_input)
{
    cr_assert_eq(train_run("r", "--steps 5"), 0, "%s", err_text);
    char args[1024], p23[300], r[300];
    snprintf(p23, sizeof p23, "%s/p23.npy", dir);
    cr_assert_eq(fv_npy_write_f64(p23, (double[]){1, 2, 3, 4, 5, 6}, 2, (size_t[]){2, 3}), FV_OK);
    snprintf(r, sizeof r, "%s/r", dir);
    expect_input_error("eval --points 1,1 --t 0.5", "--run");
    snprintf(args, sizeof args, "eval --run %s --points 1,1 --n 3 --t 0.5", r);
    expect_input_error(args, "--points or --n");
    snprintf(args, sizeof args, "eval --run %s --t 0.5", r);
    expect_input_error(args, "--points or --n");
    snprintf(args, sizeof args, "eval --run %s --n 3", r);
    expect_input_error(args, "--t");
    snprintf(args, sizeof args, "eval --run %s --n 3 --t 0.5 --times 0,1", r);
    expect_input_error(args, "--t");
    snprintf(args, sizeof args, "eval --run %s --n 3 --t 1.5", r);
    expect_input_error(args, "--t");
    snprintf(args, sizeof args, "eval --run %s --n 3 --times 0,-0.1", r);
    expect_input_error(args, "--times");
    snprintf(args, sizeof args, "eval --run %s --points 1,1,1 --t 0.5", r);
    expect_input_error(args, "dimension 2");
    snprintf(args, sizeof args, "eval --run %s --points %s --t 0.5", r, p23);
    expect_input_error(args, "has shape (2, 3), expected (n, 2) or (2,)");
    snprintf(args, sizeof args, "eval --run %s --points 1,1 --t 0.5 --seed 3", r);
    expect_input_error(args, "--seed");
    snprintf(args, sizeof args, "eval --run %s --points 1,1 --t 0.5 --field nope", r);
    expect_input_error(args, "--field");
    snprintf(args, sizeof args, "eval --run %s --points 1,1 --t 0.5 --fit-floor 0.1 --field ot", r);
    expect_input_error(args, "--fit-floor");
    snprintf(args, sizeof args, "eval --run %s --points 1,1 --t 0.5 --sigma 1", r);
    expect_input_error(args, "--sigma");
    cr_assert_eq(run("eval --help"), 0, "%s", err_text);
    cr_expect(strstr(out_text, "\n  --out FILE") != NULL, "eval --help: --out FILE: %s", out_text);
}

/* A U-Net run: points as an NPY of shape (N, C, H, W) and as flat rows of C*H*W numbers give the same v;
 * an image stack of another shape is refused. */
Test(cli, eval_and_sample_on_a_unet_run_take_image_stacks_and_flat_rows, .timeout = 120)
{
    if (!th_exists(FV_FASHION_MNIST_DIR))
        cr_skip_test("Debian's dataset-fashion-mnist is not installed (make deps installs it)");
    char args[1024], flat[300], stack[300], wrong[300];
    snprintf(args, sizeof args,
             "train --model unet --data fashion-mnist --images 8 --channels 32 --channel-mult 1,2 --batch 2 "
             "--steps 1 --out %s/u",
             dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS];
    snprintf(args, sizeof args, "sample --run %s/u --n 2 --steps 1", dir);
    double *x = run_npy(args, "x.npy", &ndim, shape);
    size_t d = shape[1], side = (size_t)llround(sqrt((double)d));
    cr_assert(ndim == 2 && shape[0] == 2 && side * side == d, "a grey square image: d = %zu", d);
    snprintf(flat, sizeof flat, "%s/flat.npy", dir);
    snprintf(stack, sizeof stack, "%s/stack.npy", dir);
    snprintf(wrong, sizeof wrong, "%s/wrong.npy", dir);
    cr_assert_eq(fv_npy_write_f64(flat, x, 2, (size_t[]){2, d}), FV_OK);
    cr_assert_eq(fv_npy_write_f64(stack, x, 4, (size_t[]){2, 1, side, side}), FV_OK);
    cr_assert_eq(fv_npy_write_f64(wrong, x, 4, (size_t[]){2, 1, side / 2, 2 * side}), FV_OK);
    snprintf(args, sizeof args, "eval --run %s/u --points %s --t 0.3", dir, flat);
    double *vf = run_npy(args, "vf.npy", &ndim, shape);
    cr_assert(ndim == 2 && shape[0] == 2 && shape[1] == d, "flat rows: shape (N, d)");
    snprintf(args, sizeof args, "eval --run %s/u --points %s --t 0.3", dir, stack);
    double *vs = run_npy(args, "vs.npy", &ndim, shape);
    cr_assert(ndim == 2 && shape[0] == 2 && shape[1] == d, "an image stack: shape (N, d)");
    cr_expect_eq(memcmp(vf, vs, 2 * d * sizeof *vf), 0, "(N, C, H, W) and flat rows give the same v");
    snprintf(args, sizeof args, "eval --run %s/u --points %s --t 0.3", dir, wrong);
    expect_input_error(args, "(n, 1, ");
    /* sample's --points takes the same two forms */
    snprintf(args, sizeof args, "sample --run %s/u --points %s --steps 1", dir, flat);
    double *sf = run_npy(args, "sf.npy", &ndim, shape);
    snprintf(args, sizeof args, "sample --run %s/u --points %s --steps 1", dir, stack);
    double *ss = run_npy(args, "ss.npy", &ndim, shape);
    cr_assert(ndim == 2 && shape[0] == 2 && shape[1] == d, "sample from an image stack: shape (N, d)");
    cr_expect_eq(memcmp(sf, ss, 2 * d * sizeof *sf), 0, "sample: (N, C, H, W) and flat rows give the same ends");
    snprintf(args, sizeof args, "sample --run %s/u --points %s --steps 1", dir, wrong);
    expect_input_error(args, "(n, 1, ");
    free(x);
    free(vf);
    free(vs);
    free(sf);
    free(ss);
}

/* ---- flowvar w2: digits and the clamp ---------------------------------------------------------- */

/* The numbers of the line after `header` in out_text. */
static int row_after(const char *header, double *v, int n)
{
    const char *p = strstr(out_text, header);
    cr_assert(p != NULL, "no '%s' in: %s", header, out_text);
    p += strlen(header);
    int k = 0;
    char *end;
    for (; k < n; k++, p = end) {
        v[k] = strtod(p, &end);
        if (end == p)
            break;
    }
    return k;
}

Test(cli, w2_of_equal_source_and_target_is_zero_with_the_clamp_reported)
{
    cr_assert_eq(run("w2 " REF " --source-mean 1,-0.5 --source-cov 2,0.6,0.6,1"), 0, "%s", err_text);
    cr_expect(strstr(out_text, "w2\tw2_squared\n0\t0\n") != NULL, "W2 and W2^2 exactly 0: %s", out_text);
    cr_expect(strstr(out_text, "\n# w2_squared clamped at 0 from -") != NULL, "the clamp is reported: %s", out_text);
    cr_expect(strstr(out_text, " (rounding)\n") != NULL, "and said to be rounding: %s", out_text);
    cr_assert_eq(run("w2 " REF), 0, "%s", err_text);
    cr_expect(strstr(out_text, "clamped") == NULL, "no clamp line when W2^2 > 0: %s", out_text);
}

Test(cli, w2_digits_17_round_trips_the_library_value)
{
    fv_problem p = {0};
    cr_assert_eq(fv_problem_alloc(&p, 2), FV_OK);
    memcpy(p.m1, (double[]){1, -0.5}, sizeof(double[2]));
    memcpy(p.S1, (double[]){2, 0.6, 0.6, 1}, sizeof(double[4]));
    double w2sq;
    cr_assert_eq(fv_w2_squared(2, p.m0, p.S0, p.m1, p.S1, &w2sq), FV_OK, "%s", fv_last_error());
    fv_problem_free(&p);
    double row[2];
    cr_assert_eq(run("w2 " REF " --digits 17"), 0, "%s", err_text);
    cr_assert_eq(row_after("w2\tw2_squared\n", row, 2), 2, "%s", out_text);
    cr_expect(row[1] == w2sq, "--digits 17: w2_squared %.17g reads back as fv_w2_squared's %.17g", row[1], w2sq);
    cr_expect(row[0] == sqrt(w2sq), "--digits 17: w2 %.17g is sqrt of it %.17g", row[0], sqrt(w2sq));
    cr_assert_eq(run("w2 " REF), 0, "%s", err_text);
    cr_assert_eq(row_after("w2\tw2_squared\n", row, 2), 2, "%s", out_text);
    cr_expect(row[1] != w2sq, "the default 10 digits do not round-trip this value");
    expect_refusal("w2 " REF " --digits 0", "--digits");
    expect_refusal("w2 " REF " --digits 18", "--digits");
}

/* A network whose output overflows: exit 1 naming the time, the point and the coordinate; nothing written. */
Test(cli, eval_of_an_overflowing_network_names_where)
{
    cr_assert_eq(train_run("r", "--steps 5"), 0, "%s", err_text);
    char ck[300], args[1024];
    snprintf(ck, sizeof ck, "%s/r/checkpoint.safetensors", dir);
    rewrite_checkpoint(ck, "net.0.weight", 0, 3e38f, NULL, NULL, NULL);
    rewrite_checkpoint(ck, "net.2.weight", 0, 3e38f, NULL, NULL, NULL);
    snprintf(args, sizeof args, "eval --run %s/r --points 0,0,1,1 --times 0,0.5 --out %s", dir, file_path);
    cr_assert_eq(run(args), 1, "eval: %s%s", out_text, err_text);
    cr_expect(strstr(err_text, "eval: the network's v at t = 0, point 2, coordinate ") != NULL, "%s", err_text);
    cr_expect(!th_exists(file_path), "eval wrote nothing");
}

/* ---- --field empirical, floor, gap --field empirical (docs/THEORY.md section 7) ---- */

/* n x d data as DIR/NAME; its path (static until the next call). */
static const char *emp_data(const char *name, size_t n, size_t d, const double *Y)
{
    const char *path = th_path_in(dir, name);
    cr_assert_eq(fv_npy_write_f64(path, Y, 2, (size_t[]){n, d}), FV_OK, "writing %s: %s", path, fv_last_error());
    return path;
}

/* Five points in the plane, close enough for their weights to mix at intermediate t. */
static const double emp_five[10] = {0.5, 1.0, -1.2, 0.3, 2.0, -0.7, 0.1, -1.5, -0.8, 1.9};

Test(cli, empirical_field_of_one_point_is_the_straight_line_to_it)
{
    char args[1024];
    double v[2];
    /* x0 = (0.4, 0.2) and y = (2, -1): at t = 0.5 the path is at (1.2, -0.4) with velocity y - x0 */
    const char *y = emp_data("y1.npy", 1, 2, (double[]){2.0, -1.0});
    snprintf(args, sizeof args, "field --field empirical --targets %s --t 0.5 --points 1.2,-0.4", y);
    cr_assert_eq(run(args), 0, "%s", err_text);
    cr_assert_eq(row_after("v1\tv2\n", v, 2), 2, "%s", out_text);
    cr_expect(fabs(v[0] - 1.6) < 1e-9 && fabs(v[1] + 1.2) < 1e-9, "v* = y - x0 = (1.6, -1.2): (%g, %g)", v[0], v[1]);
    /* backward: x = (1-t) y + t x1 with x1 = (0.4, 0.2) has velocity x1 - y */
    snprintf(args, sizeof args, "field --field empirical --direction backward --targets %s --t 0.5 --points 1.2,-0.4",
             y);
    cr_assert_eq(run(args), 0, "%s", err_text);
    cr_assert_eq(row_after("v1\tv2\n", v, 2), 2, "%s", out_text);
    cr_expect(fabs(v[0] + 1.6) < 1e-9 && fabs(v[1] - 1.2) < 1e-9, "backward v* = x1 - y = (-1.6, 1.2): (%g, %g)",
              v[0], v[1]);
}

/* The largest distance from a row of X (n x 2) to its nearest point of emp_five. */
static double emp_worst_distance(size_t n, const double *X)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double best = INFINITY;
        for (size_t j = 0; j < 5; j++)
            best = fmin(best, hypot(X[2 * i] - emp_five[2 * j], X[2 * i + 1] - emp_five[2 * j + 1]));
        worst = fmax(worst, best);
    }
    return worst;
}

Test(cli, empirical_transport_lands_on_training_points_without_noise)
{
    char args[1024];
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS];
    const char *y = emp_data("y5.npy", 5, 2, emp_five);
    static const char *const solvers[] = {"--solver rk4", "--solver euler --steps 400", "--solver rk45"};
    for (int s = 0; s < 3; s++) {
        snprintf(args, sizeof args, "transport --field empirical --targets %s --n 32 --seed 3 %s", y, solvers[s]);
        double *X = run_npy(args, "x.npy", &ndim, shape);
        cr_assert(ndim == 2 && shape[0] == 32 && shape[1] == 2, "32 end points of dimension 2");
        cr_expect_lt(emp_worst_distance(32, X), 1e-6, "%s: every end point is a training point (worst %g)",
                     solvers[s], emp_worst_distance(32, X));
        free(X);
    }
    /* with noise the minimizer no longer memorizes: some end points stay off the data */
    snprintf(args, sizeof args, "transport --field empirical --targets %s --n 32 --seed 3 --sigma 0.5", y);
    double *X = run_npy(args, "x.npy", &ndim, shape);
    cr_expect_gt(emp_worst_distance(32, X), 1e-3, "sigma = 0.5: some end point is off the data (worst %g)",
                 emp_worst_distance(32, X));
    free(X);
    snprintf(args, sizeof args, "transport --field empirical --direction backward --targets %s --n 4", y);
    expect_input_error(args, "singular at t = 0");
}

/* Columns 2 and 3 (floor, floor_se) of the floor table's rows, n rows. */
static void floor_rows(size_t n, double *floor, double *se)
{
    double v[3 * 8];
    cr_assert_eq(row_after("t\tfloor\tfloor_se\n", v, (int)(3 * n)), (int)(3 * n), "%s", out_text);
    for (size_t k = 0; k < n; k++) {
        floor[k] = v[3 * k + 1];
        se[k] = v[3 * k + 2];
    }
}

Test(cli, floor_limits_of_section_7)
{
    char args[1024];
    double fl[2], se[2], mean[2] = {0, 0}, trcov = 0;
    const char *y = emp_data("y5.npy", 5, 2, emp_five);
    for (size_t j = 0; j < 10; j++)
        mean[j % 2] += emp_five[j] / 5;
    for (size_t j = 0; j < 10; j++)
        trcov += (emp_five[j] - mean[j % 2]) * (emp_five[j] - mean[j % 2]) / 5;
    /* f = 0, S0 = I: floor(0) = tr Cov(Y) (population), floor(t -> 1) -> 0, t = 1 itself refused */
    snprintf(args, sizeof args, "floor --targets %s --t 0,0.999 --mc 20000", y);
    cr_assert_eq(run(args), 0, "%s", err_text);
    floor_rows(2, fl, se);
    cr_expect_leq(fabs(fl[0] - trcov), 4 * se[0], "floor(0) = tr Cov(Y) = %g: %g +- %g", trcov, fl[0], se[0]);
    cr_expect_lt(se[0], 0.05 * trcov, "floor(0)'s standard error is small: %g", se[0]);
    cr_expect_lt(fl[1], 1e-6 * trcov, "floor(0.999) is near 0: %g", fl[1]);
    snprintf(args, sizeof args, "floor --targets %s --t 0.5,1", y);
    expect_input_error(args, "singular at t = 1");
    /* sigma > 0, points 50 apart: J is known from X_t and floor(t) = d sigma^2 / ((1-t)^2 + sigma^2), not 0 at 1 */
    double grid[8] = {0, 0, 50, 0, 0, 50, 50, 50};
    y = emp_data("grid.npy", 4, 2, grid);
    snprintf(args, sizeof args, "floor --targets %s --sigma 0.1 --t 0.9,1 --mc 20000 --seed 5", y);
    cr_assert_eq(run(args), 0, "%s", err_text);
    floor_rows(2, fl, se);
    cr_expect_leq(fabs(fl[0] - 1.0), 4 * se[0], "sigma 0.1: floor(0.9) = 2 * 0.01 / 0.02 = 1: %g +- %g", fl[0], se[0]);
    cr_expect_leq(fabs(fl[1] - 2.0), 4 * se[1], "sigma 0.1: floor(1) = d = 2: %g +- %g", fl[1], se[1]);
    cr_expect_lt(se[1], 0.05, "floor(1)'s standard error is small: %g", se[1]);
    /* the grid of gap by default, written to a file */
    snprintf(args, sizeof args, "floor --targets %s --sigma 0.1 --t-grid 4 --mc 100 --out %s/floor.tsv", y, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    th_slurp_text(th_path_in(dir, "floor.tsv"), out_text, sizeof out_text);
    cr_expect(strncmp(out_text, "t\tfloor\tfloor_se\n0.125\t", 23) == 0, "floor.tsv: %s", out_text);
}

/* gap --field empirical on a tiny MLP run on 8 Fashion-MNIST images (both directions): the network's loss
 * is the floor plus the gap to v* within Monte-Carlo error, at each t. */
Test(cli, gap_empirical_decomposes_the_loss_of_an_image_run, .timeout = 120)
{
    if (!th_exists(FV_FASHION_MNIST_DIR))
        cr_skip_test("Debian's dataset-fashion-mnist is not installed (make deps installs it)");
    char args[1024];
    double v[3 * 7];
    for (int back = 0; back < 2; back++) {
        snprintf(args, sizeof args,
                 "train --data fashion-mnist --images 8 --width 32 --depth 2 --steps 200 --batch 16 --sigma 0.05 %s "
                 "--out %s/m%d",
                 back ? "--direction backward" : "", dir, back);
        cr_assert_eq(run(args), 0, "%s", err_text);
        snprintf(args, sizeof args, "gap --run %s/m%d --field empirical --t-grid 3 --n 256 --out %s/g%d", dir, back, dir,
                 back);
        cr_assert_eq(run(args), 0, "%s", err_text);
        snprintf(args, sizeof args, "%s/g%d/gap_empirical.png", dir, back);
        cr_expect(th_exists(args), "--out DIR draws the figure %s", args);
        cr_assert_eq(row_after("t\tgap\tgap_se\tloss\tloss_se\tfloor\tfloor_se\n", v, 21), 21, "%s", out_text);
        for (int k = 0; k < 3; k++) {
            const double *r = v + 7 * k;
            double tol = 4 * sqrt(r[2] * r[2] + r[4] * r[4] + r[6] * r[6]);
            cr_expect_leq(fabs(r[3] - r[5] - r[1]), tol, "%s run, t = %g: loss %g = floor %g + gap %g within %g",
                          back ? "backward" : "forward", r[0], r[3], r[5], r[1], tol);
            cr_expect_gt(r[1], 8 * r[2], "t = %g: the barely trained network is far from v* (gap %g +- %g)", r[0],
                         r[1], r[2]);
        }
    }
    snprintf(args, sizeof args, "gap --run %s/m0 --field empirical --fit-floor 0.1", dir);
    expect_refusal(args, "--fit-floor is not used with --field empirical");
    cr_assert_eq(train_run("g", "--steps 2"), 0, "%s", err_text);
    snprintf(args, sizeof args, "gap --run %s/g --field empirical", dir);
    expect_refusal(args, "--field empirical: the run does not train on a finite data set");
}

Test(cli, empirical_bad_inputs_exit_2)
{
    char args[1024];
    const char *y = emp_data("y5.npy", 5, 2, emp_five);
    static const char *const cases[][2] = {
        {"field --field empirical --targets %s --t 0.5 --points 1,2,3", "--points has 3 numbers"},
        {"field --field empirical --targets %s --t 0.5 --points 1,2 --source-mean 1,2,3", "--source-mean has 3 numbers"},
        {"field --field empirical --targets %s --t 0.5 --points 1,2 --target-mean 1,2",
         "--target-mean is not used with --field empirical forward"},
        {"field --field empirical --direction backward --targets %s --t 0.5 --points 1,2 --source-cov 2,0,0,2",
         "--source-cov is not used with --field empirical backward"},
        {"field --field empirical --targets %s --t 0.5 --points 1,2 --angle 30", "--angle is not used with --field "
                                                                                "empirical"},
        {"field --field ot --target-mean 1,1 --targets %s --t 0.5 --points 1,2", "--targets is not used without "
                                                                               "--field empirical"},
        {"field --field empirical --targets %s --data fashion-mnist --t 0.5 --points 1,2", "--targets or --data"},
        {"field --field empirical --targets %s --images 3 --t 0.5 --points 1,2", "--images is not used without --data"},
        {"field --field empirical --targets %s --t 1 --points 1,2", "singular at t = 1"},
        {"transport --field empirical --targets %s --n 2 --with-map", "--with-map is not used with --field empirical"},
        {"floor --targets %s --t 0.5,1.5", "--t: time 2 is 1.5, outside [0, 1]"},
        {"floor --targets %s --mc 1", "--mc"},
        {"floor --targets %s --t 0.5 --t-grid 3", "--t-grid is not used with --t"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(args, sizeof args, cases[i][0], y);
        expect_input_error(args, cases[i][1]);
    }
    expect_input_error("field --field empirical --t 0.5 --points 1,2", "needs its data");
    expect_input_error("floor --data fashion-mnist --images 0", "--images must be at least 1, got 0");
    expect_input_error("floor --targets 1,2,3", "the data must be an .npy of shape (N, d)");
    snprintf(args, sizeof args, "floor --targets %s", emp_data("empty.npy", 0, 2, emp_five));
    expect_input_error(args, "is of shape (0, 2)");
    const char *flat = th_path_in(dir, "flat.npy");
    cr_assert_eq(fv_npy_write_f64(flat, emp_five, 1, (size_t[]){10}), FV_OK, "writing %s", flat);
    snprintf(args, sizeof args, "floor --targets %s", flat);
    expect_input_error(args, "is of shape (10,)");
}

/* `copies --out FILE` rows (d1 d2 ratio) into v (at most n rows); returns the row count, and the
 * summary comment line into summary. */
static size_t copies_rows(const char *path, double *v, size_t n, char *summary, size_t size)
{
    char text[16384];
    th_slurp_text(path, text, sizeof text);
    cr_assert(strncmp(text, "d1\td2\tratio\n", 12) == 0, "copies header: %.60s", text);
    const char *p = text + 12;
    size_t k = 0;
    summary[0] = '\0';
    while (*p) {
        const char *eol = strchr(p, '\n');
        if (*p == '#') {
            snprintf(summary, size, "%.*s", (int)(eol ? eol - p : (long)strlen(p)), p);
        } else {
            cr_assert(k < n, "more than %zu rows", n);
            cr_assert_eq(sscanf(p, "%lf\t%lf\t%lf", &v[3 * k], &v[3 * k + 1], &v[3 * k + 2]), 3, "row %zu: %.60s", k, p);
            k++;
        }
        if (!eol)
            break;
        p = eol + 1;
    }
    return k;
}

/* The MLP of a --depth 1 --width W run outputs exactly 0 once its last layer (net.2) is zeroed: its
 * samples are then its fresh sources themselves. */
static void zero_output_layer(const char *run_name, size_t width, size_t d)
{
    char ck[300];
    snprintf(ck, sizeof ck, "%s/%s/checkpoint.safetensors", dir, run_name);
    for (size_t i = 0; i < width * d; i++)
        rewrite_checkpoint(ck, "net.2.weight", i, 0.0f, NULL, NULL, NULL);
    for (size_t i = 0; i < d; i++)
        rewrite_checkpoint(ck, "net.2.bias", i, 0.0f, NULL, NULL, NULL);
}

/* A run whose samples are exactly its training points: every sample is a copy, d1 = 0. The samples of a
 * zero network are its fresh sources; a second run is trained on exactly those points. */
Test(cli, copies_of_a_run_whose_samples_are_its_training_points)
{
    char args[1024], tsv[300], summary[200];
    const double Y[] = {3, 0, 0, 3, -3, 0, 0, -3};
    cr_assert_eq(fv_npy_write_f64(th_path_in(dir, "y.npy"), Y, 2, (size_t[]){4, 2}), FV_OK);
    snprintf(args, sizeof args, "train --targets %s/y.npy --width 2 --depth 1 --steps 2 --batch 8 --out %s/a", dir, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    zero_output_layer("a", 2, 2);
    snprintf(args, sizeof args, "sample --run %s/a --n 6 --seed 5 --out %s/x.npy", dir, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    snprintf(args, sizeof args, "train --targets %s/x.npy --width 2 --depth 1 --steps 2 --batch 8 --out %s/b", dir, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    zero_output_layer("b", 2, 2);
    snprintf(tsv, sizeof tsv, "%s/c.tsv", dir);
    snprintf(args, sizeof args, "copies --run %s/b --n 6 --seed 5 --steps 3 --out %s", dir, tsv);
    cr_assert_eq(run(args), 0, "%s", err_text);
    double v[3 * 6];
    cr_assert_eq(copies_rows(tsv, v, 6, summary, sizeof summary), 6, "one row per sample");
    for (size_t i = 0; i < 6; i++) {
        /* the set is the float rounding of the samples: d1 is that rounding, far below d2 */
        cr_expect_lt(v[3 * i], 1e-6, "sample %zu sits on a training point: d1 %g", i, v[3 * i]);
        cr_expect_gt(v[3 * i + 1], 1e-3, "sample %zu: d2 %g is the distance to another point", i, v[3 * i + 1]);
        cr_expect_lt(v[3 * i + 2], 1e-3, "sample %zu: ratio %g", i, v[3 * i + 2]);
    }
    cr_expect(strstr(summary, "# copies: 6 of 6 samples (fraction 1)") != NULL, "summary: %s", summary);
    cr_expect(strstr(out_text, "# copies: 6 of 6") != NULL, "the summary on stdout with --out FILE: %s", out_text);
    /* against run a's set, the same samples are the sources: checked by a brute-force search */
    snprintf(args, sizeof args, "copies --run %s/a --n 6 --seed 5 --out %s", dir, tsv);
    cr_assert_eq(run(args), 0, "%s", err_text);
    cr_assert_eq(copies_rows(tsv, v, 6, summary, sizeof summary), 6, "one row per sample");
    int ndim;
    size_t shape[FV_NPY_MAX_DIMS];
    double *X = read_npy(th_path_in(dir, "x.npy"), &ndim, shape);
    size_t copies = 0;
    for (size_t i = 0; i < 6; i++) {
        double b1 = INFINITY, b2 = INFINITY;
        for (size_t j = 0; j < 4; j++) {
            double q = hypot(X[2 * i] - Y[2 * j], X[2 * i + 1] - Y[2 * j + 1]);
            b2 = q < b1 ? b1 : fmin(b2, q);
            b1 = fmin(b1, q);
        }
        cr_expect_float_eq(v[3 * i], b1, 1e-9 * b2, "sample %zu: d1 %g, brute force %g", i, v[3 * i], b1);
        cr_expect_float_eq(v[3 * i + 1], b2, 1e-9 * b2, "sample %zu: d2 %g, brute force %g", i, v[3 * i + 1], b2);
        copies += b1 / b2 < 1.0 / 3.0;
    }
    char want[64];
    snprintf(want, sizeof want, "# copies: %zu of 6 samples", copies);
    cr_expect(strstr(summary, want) != NULL, "summary %s, brute force %zu copies", summary, copies);
    free(X);
}

Test(cli, copies_refuses_runs_without_a_finite_set_and_bad_input)
{
    char args[1024];
    cr_assert_eq(train_run("g", "--steps 2"), 0, "%s", err_text);
    snprintf(args, sizeof args, "copies --run %s/g --n 4", dir);
    expect_input_error(args, "no finite training set");
    cr_assert_eq(fv_npy_write_f64(th_path_in(dir, "one.npy"), (double[]){1, 2}, 2, (size_t[]){1, 2}), FV_OK);
    snprintf(args, sizeof args, "train --targets %s/one.npy --width 4 --depth 1 --steps 2 --batch 4 --out %s/one", dir, dir);
    cr_assert_eq(run(args), 0, "a one-point set trains: %s", err_text);
    snprintf(args, sizeof args, "copies --run %s/one --n 4", dir);
    expect_input_error(args, "1 distinct point");
    const double Y[] = {3, 0, 0, 3, -3, 0};
    cr_assert_eq(fv_npy_write_f64(th_path_in(dir, "y.npy"), Y, 2, (size_t[]){3, 2}), FV_OK);
    snprintf(args, sizeof args, "train --targets %s/y.npy --width 4 --depth 1 --steps 2 --batch 4 --out %s/y", dir, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    snprintf(args, sizeof args, "copies --run %s/y --n 4 --png %s/w.png", dir, dir);
    expect_input_error(args, "not images");
    cr_expect(!th_exists(th_path_in(dir, "w.png")), "no PNG after the refusal");
    snprintf(args, sizeof args, "copies --run %s/y --n 0", dir);
    expect_input_error(args, "--n");
    snprintf(args, sizeof args, "copies --run %s/y --steps 0", dir);
    expect_input_error(args, "--steps");
    expect_input_error("copies --n 4", "--run DIR is required");
    snprintf(args, sizeof args, "copies --run %s/nothing", dir);
    expect_input_error(args, "nothing");
}

/* --targets takes a set (N, d) or a pairs file (N, 2, d) (its targets); other shapes and mixing it
 * with another target are refused. */
Test(cli, train_targets_shapes_and_conflicts)
{
    char args[1024];
    const double P[] = {0, 0, 3, 0, 0, 0, 0, 3, 0, 0, -3, 0}; /* pairs (0 -> y_i) of the three points */
    cr_assert_eq(fv_npy_write_f64(th_path_in(dir, "p.npy"), P, 3, (size_t[]){3, 2, 2}), FV_OK);
    snprintf(args, sizeof args, "train --targets %s/p.npy --width 4 --depth 1 --steps 2 --batch 4 --out %s/p", dir, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    snprintf(args, sizeof args, "copies --run %s/p --n 5 --steps 2 --out %s/c.tsv", dir, dir);
    cr_assert_eq(run(args), 0, "the pairs' targets are the set: %s", err_text);
    cr_assert_eq(fv_npy_write_f64(th_path_in(dir, "bad.npy"), P, 3, (size_t[]){2, 3, 2}), FV_OK);
    snprintf(args, sizeof args, "train --targets %s/bad.npy --steps 2 --out %s/q", dir, dir);
    expect_refusal(args, "(N, d) or (N, 2, d)");
    snprintf(args, sizeof args, "train --targets %s/p.npy --finite 3 --steps 2 --out %s/q", dir, dir);
    expect_refusal(args, "--finite does not go with --targets");
    snprintf(args, sizeof args, "train --targets %s/p.npy --data fashion-mnist --steps 2 --out %s/q", dir, dir);
    expect_refusal(args, "--data or --targets");
    snprintf(args, sizeof args, "train --targets %s/p.npy --target-mean 1,2 --steps 2 --out %s/q", dir, dir);
    expect_refusal(args, "--target-mean does not go with --targets");
    cr_expect(!th_exists(th_path_in(dir, "q")), "no run folder after a refusal");
}

/* An image run: the PNG of the worst copies beside their nearest training images; a data -> noise run
 * has no training set for its samples (they are noise). */
Test(cli, copies_of_an_image_run_draw_the_worst_copies)
{
    if (!th_exists(FV_FASHION_MNIST_DIR))
        cr_skip_test("Debian's dataset-fashion-mnist is not installed (make deps installs it)");
    char args[1024];
    const char *net = "--model unet --data fashion-mnist --images 8 --channels 32 --channel-mult 1,2 --batch 2 --steps 1";
    snprintf(args, sizeof args, "train %s --out %s/u", net, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    snprintf(args, sizeof args, "copies --run %s/u --n 3 --steps 2 --png %s/w.png --out %s/c.tsv", dir, dir, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    size_t n;
    unsigned char *png = th_slurp(th_path_in(dir, "w.png"), &n);
    cr_assert(png && n > 8 && memcmp(png, "\x89PNG", 4) == 0, "a PNG file");
    /* 3 pairs of 28 x 28 cells at zoom 2: 3 (56 + 2) + 2 = 176 wide, 2 (56 + 2) + 2 = 118 high */
    cr_expect_eq((png[16] << 24 | png[17] << 16 | png[18] << 8 | png[19]), 176, "PNG width");
    cr_expect_eq((png[20] << 24 | png[21] << 16 | png[22] << 8 | png[23]), 118, "PNG height");
    free(png);
    char summary[200];
    double v[9];
    cr_expect_eq(copies_rows(th_path_in(dir, "c.tsv"), v, 3, summary, sizeof summary), 3, "3 rows");
    snprintf(args, sizeof args, "train %s --direction backward --out %s/b", net, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    snprintf(args, sizeof args, "copies --run %s/b --n 3", dir);
    expect_input_error(args, "--direction backward");
}

/* Two points far apart: a network trained on them memorizes within a few hundred steps. */
static void write_two_points(const char *name)
{
    cr_assert_eq(fv_npy_write_f64(th_path_in(dir, name), (double[]){5, 0, -5, 0}, 2, (size_t[]){2, 2}), FV_OK);
}

#define MONITORED "--width 32 --depth 2 --batch 64 --monitor-every 5 --monitor-n 16"

/* monitor.tsv: the header, three rows (t = 0.1, 0.5, 0.9) per multiple of K, the floor the same at every
 * step, and after a resume the very file of an uninterrupted run: rows of steps past the checkpoint
 * (a run killed after a monitor row, before its checkpoint) are replaced, never repeated. */
Test(cli, monitor_rows_and_resume)
{
    char args[1024], ref[16384], got[16384], path[300];
    write_two_points("y.npy");
    snprintf(args, sizeof args, "train --targets %s/y.npy " MONITORED " --steps 20 --out %s/full", dir, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    snprintf(path, sizeof path, "%s/full/monitor.tsv", dir);
    th_slurp_text(path, ref, sizeof ref);
    cr_assert(strncmp(ref, "step\tt\tloss\tfloor\texcess\tgradvar\tcopy_fraction\n", 47) == 0, "header: %.80s", ref);
    double rows[12][7];
    static const double times[3] = {0.1, 0.5, 0.9};
    const char *p = strchr(ref, '\n') + 1;
    for (int i = 0; i < 12; i++) {
        cr_assert_eq(sscanf(p, "%lf\t%lf\t%lf\t%lf\t%lf\t%lf\t%lf", &rows[i][0], &rows[i][1], &rows[i][2], &rows[i][3],
                            &rows[i][4], &rows[i][5], &rows[i][6]), 7, "row %d: %.80s", i, p);
        p = strchr(p, '\n') + 1;
        cr_expect_eq(rows[i][0], 5.0 * (i / 3 + 1), "row %d: step %g", i, rows[i][0]);
        cr_expect_eq(rows[i][1], times[i % 3], "row %d: t %g", i, rows[i][1]);
        cr_expect_eq(rows[i][3], rows[i % 3][3], "row %d: the floor is computed once per t", i);
        cr_expect_eq(rows[i][6], rows[i - i % 3][6], "row %d: one copy fraction per step", i);
        cr_expect(rows[i][4] >= 0 && rows[i][5] >= 0, "row %d: excess %g and gradvar %g are >= 0", i, rows[i][4],
                  rows[i][5]);
    }
    cr_expect_eq(*p, '\0', "12 rows and no more: %s", p);
    /* 10 steps, a fake row of step 15 (as if killed before its checkpoint), then resumed to 20 */
    snprintf(args, sizeof args, "train --targets %s/y.npy " MONITORED " --steps 10 --out %s/part", dir, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    snprintf(path, sizeof path, "%s/part/monitor.tsv", dir);
    FILE *fp = fopen(path, "a");
    cr_assert(fp != NULL);
    fprintf(fp, "15\t0.1\t1\t1\t1\t1\t0\n");
    fclose(fp);
    snprintf(args, sizeof args, "train --out %s/part --resume --steps 20", dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    th_slurp_text(path, got, sizeof got);
    cr_expect_str_eq(got, ref, "the resumed run's monitor.tsv is the uninterrupted run's");
    /* a damaged file is refused on resume, naming it */
    fp = fopen(path, "a");
    fprintf(fp, "25\tnot-a-number\n");
    fclose(fp);
    snprintf(args, sizeof args, "train --out %s/part --resume --steps 30", dir);
    expect_refusal(args, "monitor.tsv: line 14");
}

/* The warning comes once, the first time the copy fraction passes 1/2. */
Test(cli, monitor_warns_once_when_memorizing)
{
    char args[1024];
    write_two_points("y.npy");
    snprintf(args, sizeof args,
             "train --targets %s/y.npy --width 64 --depth 2 --batch 128 --lr 3e-3 --monitor-every 100 --monitor-n 32 "
             "--steps 600 --out %s/m", dir, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    const char *w = strstr(err_text, "flowvar: memorizing: at step ");
    cr_assert(w != NULL, "a memorizing warning: %s", err_text);
    cr_expect(strstr(w + strlen("flowvar: memorizing:"), "memorizing:") == NULL, "only one warning: %s", err_text);
    unsigned long long step;
    cr_assert_eq(sscanf(w, "flowvar: memorizing: at step %llu", &step), 1, "%s", w);
    /* the rows: the fraction passes 1/2 first at that step */
    char text[16384];
    th_slurp_text(th_path_in(dir, "m/monitor.tsv"), text, sizeof text);
    const char *p = strchr(text, '\n') + 1;
    double first = -1, row[7];
    while (*p && sscanf(p, "%lf\t%lf\t%lf\t%lf\t%lf\t%lf\t%lf", &row[0], &row[1], &row[2], &row[3], &row[4], &row[5],
                        &row[6]) == 7) {
        if (first < 0 && row[6] > 0.5)
            first = row[0];
        p = strchr(p, '\n') + 1;
    }
    cr_expect_eq(first, (double)step, "first row above 1/2 at step %g, warned at %llu", first, step);
    /* resumed, the run does not warn again */
    snprintf(args, sizeof args, "train --out %s/m --resume --steps 700", dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    cr_expect(strstr(err_text, "memorizing") == NULL, "no second warning after a resume: %s", err_text);
}

Test(cli, monitor_refusals)
{
    char args[1024];
    write_two_points("y.npy");
    snprintf(args, sizeof args, "train " TINY " --monitor-every 5 --steps 5 --out %s/q", dir);
    expect_refusal(args, "--monitor-every needs a finite target set");
    snprintf(args, sizeof args, "train --targets %s/y.npy --monitor-n 8 --steps 5 --out %s/q", dir, dir);
    expect_refusal(args, "--monitor-n is not used without --monitor-every");
    snprintf(args, sizeof args, "train --targets %s/y.npy --monitor-every 5 --monitor-n 1 --steps 5 --out %s/q", dir, dir);
    expect_refusal(args, "--monitor-n");
    cr_assert_eq(fv_npy_write_f64(th_path_in(dir, "one.npy"), (double[]){1, 2}, 2, (size_t[]){1, 2}), FV_OK);
    snprintf(args, sizeof args, "train --targets %s/one.npy --monitor-every 5 --steps 5 --out %s/q", dir, dir);
    expect_refusal(args, "1 distinct point");
    cr_expect(!th_exists(th_path_in(dir, "q")), "no run folder after a refusal");
    snprintf(args, sizeof args, "train --targets %s/y.npy --steps 5 --out %s/r", dir, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    snprintf(args, sizeof args, "train --out %s/r --resume --steps 10 --monitor-every 5", dir);
    expect_refusal(args, "--monitor-every cannot be changed on --resume");
}

/* A --targets run has the closed forms of an image run: v* of its set (gap --field empirical, where the
 * loss is the floor plus the gap within Monte-Carlo error) and the fields of its Gaussian fit. */
Test(cli, targets_run_gap_to_v_star_and_to_the_fit)
{
    char args[1024];
    const double Y[] = {3, 0, 0, 3, -3, 0, 0, -3, 1, 1};
    cr_assert_eq(fv_npy_write_f64(th_path_in(dir, "y.npy"), Y, 2, (size_t[]){5, 2}), FV_OK);
    snprintf(args, sizeof args, "train --targets %s/y.npy --width 32 --depth 2 --batch 64 --steps 200 --out %s/r", dir, dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    snprintf(args, sizeof args, "gap --run %s/r --field empirical --t-grid 4 --n 2000", dir);
    cr_assert_eq(run(args), 0, "%s", err_text);
    const char *p = strchr(out_text, '\n');
    static const char header[] = "t\tgap\tgap_se\tloss\tloss_se\tfloor\tfloor_se\n";
    cr_assert(strncmp(out_text, header, strlen(header)) == 0, "%s", out_text);
    for (int k = 0; k < 4; k++) {
        double r[7];
        cr_assert_eq(sscanf(p + 1, "%lf\t%lf\t%lf\t%lf\t%lf\t%lf\t%lf", &r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]), 7,
                     "row %d: %s", k, p + 1);
        double se = r[2] + r[4] + r[6];
        cr_expect_leq(fabs(r[3] - r[5] - r[1]), 4 * se, "t = %g: loss %g = floor %g + gap %g within 4 SE (%g)", r[0], r[3],
                      r[5], r[1], se);
        p = strchr(p + 1, '\n');
    }
    snprintf(args, sizeof args, "gap --run %s/r --field markov --t-grid 2 --n 100 --fit-floor 1e-3", dir);
    cr_assert_eq(run(args), 0, "the Markov field of the set's Gaussian fit: %s", err_text);
    cr_expect(strncmp(out_text, "t\tgap\tgap_se\n0.25\t", 18) == 0, "%s", out_text);
}
