/* test_reproduce.c: scripts/reproduce as a newcomer meets it, run with stand-ins for flowvar and gnuplot
 * (tests/fixtures/reproduce) that take no time: a line per step with its time, a closing summary, and a
 * report whose embedded figures are named relative to the report and exist there. */
#include <criterion/criterion.h>

#include "helpers.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define STUBS "tests/fixtures/reproduce"

static char scratch[64];
static char out_text[16384], err_text[8192];

static void make_scratch(void) { th_scratch_make(scratch, "fv_test_reproduce"); }
/* The results folder holds subfolders two deep (figures, runs/ot), which th_remove_tree does not reach. */
static void drop_scratch(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    cr_assert_eq(system(cmd), 0, "cleanup: rm -rf %s", scratch);
}

/* Runs `scripts/reproduce OPTS STUB scratch/results` with the stubs first on PATH and `env` (may be "")
 * in its environment; returns the exit status, with stdout and stderr in out_text and err_text. */
static int reproduce(const char *env, const char *opts)
{
    char cwd[512], cmd[2048], out[128], err[128];
    cr_assert_not_null(getcwd(cwd, sizeof cwd), "getcwd");
    snprintf(out, sizeof out, "%s/stdout", scratch);
    snprintf(err, sizeof err, "%s/stderr", scratch);
    snprintf(cmd, sizeof cmd, "%s PATH='%s/" STUBS ":'\"$PATH\" bash scripts/reproduce %s " STUBS "/flowvar '%s/results' >%s 2>%s",
             env, cwd, opts, scratch, out, err);
    int st = system(cmd);
    th_slurp_text(out, out_text, sizeof out_text);
    th_slurp_text(err, err_text, sizeof err_text);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Every line of stdout before the summary is a finished step, "reproduce: WHAT ... TIME"; then
 * "reproduce: done: ...", the checks, the figures and the report's path. */
static void expect_progress_and_summary(const char *report)
{
    regex_t step;
    cr_assert_eq(regcomp(&step, "^reproduce: .+ \\.\\.\\. [0-9.]+ s$", REG_EXTENDED | REG_NOSUB), 0, "regcomp");
    int steps = 0, done = 0;
    for (char *line = strtok(out_text, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "reproduce: done: ", 17)) {
            done = 1;
            break;
        }
        cr_expect_eq(regexec(&step, line, 0, NULL, 0), 0, "step_line: \"%s\" is a step with its time", line);
        steps++;
    }
    regfree(&step);
    cr_expect_gt(steps, 1, "steps: one line per step as it runs (got %d)", steps);
    cr_expect(done, "summary: a closing \"reproduce: done:\" line");
    char *rest = strtok(NULL, "");
    rest = rest ? rest : "";
    cr_expect_not_null(strstr(rest, "  checks:  "), "summary_checks: the checks passed (got \"%s\")", rest);
    cr_expect_not_null(strstr(rest, "  figures: "), "summary_figures: the figures written (got \"%s\")", rest);
    cr_expect_not_null(strstr(rest, report), "summary_report: the report's path %s (got \"%s\")", report, rest);
}

/* Every "![alt](path)" of the report names a file relative to the report's folder that exists. */
static void expect_embedded_figures(const char *folder)
{
    static char text[65536];
    char path[512];
    snprintf(path, sizeof path, "%s/REPORT.md", folder);
    th_slurp_text(path, text, sizeof text);
    int n = 0;
    for (char *p = strstr(text, "!["); p; p = strstr(p + 2, "![")) {
        char *open = strstr(p, "]("), *close = open ? strchr(open, ')') : NULL;
        cr_assert(open && close, "image_syntax: an image link is closed in %s", path);
        char rel[256];
        snprintf(rel, sizeof rel, "%.*s", (int)(close - open - 2), open + 2);
        cr_expect_neq(rel[0], '/', "relative: %s is relative to the report", rel);
        cr_expect_null(strstr(rel, scratch), "relative: %s does not name the results folder", rel);
        snprintf(path, sizeof path, "%s/%s", folder, rel);
        struct stat sb;
        cr_expect_eq(stat(path, &sb), 0, "exists: the embedded %s is in %s", rel, folder);
        n++;
    }
    cr_expect_gt(n, 0, "embedded: the report embeds its figures");
}

/* One stub run of scripts/reproduce (opts "" or "--images"), its report in scratch/results/SUB. */
static void expect_report(const char *opts, const char *sub)
{
    char folder[128];
    snprintf(folder, sizeof folder, "%s/results%s", scratch, sub);
    cr_assert_eq(reproduce("", opts), 0, "exit_status: the stub run succeeds\nstderr: %s", err_text);
    expect_embedded_figures(folder);
    strcat(folder, "/REPORT.md");
    expect_progress_and_summary(folder);
}

Test(reproduce, default_report_shows_progress_and_embeds_figures, .init = make_scratch, .fini = drop_scratch)
{
    expect_report("", "");
}

Test(reproduce, image_report_shows_progress_and_embeds_figures, .init = make_scratch, .fini = drop_scratch)
{
    expect_report("--images", "/images");
}

Test(reproduce, missing_figure_fails_without_a_report, .init = make_scratch, .fini = drop_scratch)
{
    char report[128];
    snprintf(report, sizeof report, "%s/results/REPORT.md", scratch);
    cr_expect_eq(reproduce("STUB_SKIP=quiver", ""), 1, "exit_status: a figure the report embeds is missing");
    cr_expect_not_null(strstr(err_text, "figures/quiver.png"), "names_figure: stderr names it (got \"%s\")", err_text);
    struct stat sb;
    cr_expect_neq(stat(report, &sb), 0, "no_report: no REPORT.md is written");
}
