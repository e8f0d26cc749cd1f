/* cmd_reproduce.c: `flowvar reproduce`: run scripts/reproduce (the report of every experiment, each
 * number printed by the flowvar command shown beside it) with this binary. */
#include "cli/cli.h"

#include "core/error.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const fv_opt reproduce_opts[] = {
    {"out", "DIR", "results folder; default results"},
    {"images", NULL, "the image experiments (Fashion-MNIST): DIR/images/REPORT.md instead of DIR/REPORT.md"},
    {"full", NULL, "paper-sized settings (hours on a CPU; the image runs are GPU jobs)"},
    {NULL, NULL, NULL},
};

static const char usage[] =
    "Regenerate the paper's results with this flowvar: the Gaussian experiments into DIR/REPORT.md (about\n"
    "1 minute measured on a quiet 2-core machine), or with --images the image experiments into\n"
    "DIR/images/REPORT.md (7 minutes there). Runs scripts/reproduce: one line per step as it runs (what,\n"
    "then how long), then a summary (checks passed, figures written, wall time, the report's path). The\n"
    "report embeds its figures by paths relative to itself. Example: flowvar reproduce --images --out results";

int fv_cmd_reproduce(int argc, char **argv)
{
    fv_args a;
    char scripts[PATH_MAX], script[PATH_MAX + 16], exe[PATH_MAX];
    int st = fv_args_parse(&a, "reproduce", usage, argc, argv, reproduce_opts, NULL);
    if (st < 0)
        return 0;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (!st && n <= 0)
        st = fv_error(FV_EIO, "cannot find this program's path (/proc/self/exe)");
    if (st || (st = fv_cli_find_scripts(scripts, sizeof scripts)))
        return fv_cli_fail(st);
    exe[n] = '\0';
    snprintf(script, sizeof script, "%s/reproduce", scripts);
    char *args[8];
    int k = 0;
    args[k++] = "bash";
    args[k++] = script;
    if (fv_args_flag(&a, "images"))
        args[k++] = "--images";
    if (fv_args_flag(&a, "full"))
        args[k++] = "--full";
    args[k++] = exe;
    args[k++] = (char *)(fv_args_get(&a, "out") ? fv_args_get(&a, "out") : "results");
    args[k] = NULL;
    fflush(stdout);
    execvp("bash", args);
    return fv_cli_fail(fv_error(FV_EIO, "cannot run %s with bash", script));
}
