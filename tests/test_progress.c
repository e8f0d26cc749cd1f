/* test_progress.c: the progress bar (src/core/progress.c) when stderr is not a terminal, as in a
 * log or under scripts/reproduce: no in-place redraws, one summary line at the end. */
#include <criterion/criterion.h>

#include "helpers.h"

#include "src/core/progress.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char scratch[64];

static void make_scratch(void) { th_scratch_make(scratch, "fv_test_progress"); }
static void drop_scratch(void) { th_remove_tree(scratch); }

/* Runs a bar of `total` steps that stops after `done`, with stderr sent to a file (not a TTY), and
 * returns what it wrote (malloc'ed, NUL-terminated). The steps are spaced past the bar's 0.1 s
 * redraw interval, so a terminal would have seen redraws. */
static char *log_of_bar(size_t total, size_t done)
{
    const char *path = th_path_in(scratch, "stderr.log");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600), saved = dup(STDERR_FILENO);
    cr_assert(fd >= 0 && saved >= 0, "redirect: cannot open %s", path);
    fflush(stderr);
    dup2(fd, STDERR_FILENO);
    fv_progress bar;
    fv_progress_start(&bar, "work", total);
    for (size_t i = 0; i < done; i++) {
        usleep(120000);
        fv_progress_step(&bar, 1, "loss 0.5");
    }
    fv_progress_end(&bar);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fd);
    size_t n;
    char *text = (char *)th_slurp(path, &n);
    text[n] = '\0';
    return text;
}

static int count_char(const char *s, char c)
{
    int k = 0;
    for (; *s; s++)
        k += *s == c;
    return k;
}

Test(progress, log_gets_one_summary_line, .init = make_scratch, .fini = drop_scratch)
{
    char *text = log_of_bar(3, 3);
    cr_expect_null(strchr(text, '\r'), "no_carriage_return: the log holds no '\\r' (got \"%s\")", text);
    cr_expect_null(strchr(text, '\033'), "no_escape: the log holds no terminal escape (got \"%s\")", text);
    cr_expect_eq(count_char(text, '\n'), 1, "one_line: one line in the log (got \"%s\")", text);
    cr_expect_eq(strncmp(text, "work: 3/3 in ", 13), 0, "summary: label, steps done and time (got \"%s\")", text);
    cr_expect_null(strstr(text, "stopped"), "complete: a finished bar is not called stopped (got \"%s\")", text);
    free(text);
}

Test(progress, log_says_when_work_stopped_early, .init = make_scratch, .fini = drop_scratch)
{
    char *text = log_of_bar(5, 2);
    cr_expect_eq(count_char(text, '\n'), 1, "one_line: one line in the log (got \"%s\")", text);
    cr_expect_eq(strncmp(text, "work: 2/5 in ", 13), 0, "summary: the steps actually done (got \"%s\")", text);
    cr_expect_not_null(strstr(text, ", stopped\n"), "stopped: the line ends with \", stopped\" (got \"%s\")", text);
    free(text);
}
