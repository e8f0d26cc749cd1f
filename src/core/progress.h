/* progress.h: a progress bar on stderr for anything that runs longer than a few seconds: a label,
 * a bar, done/total, the rate and the time left. Drawn in place only when stderr is a terminal; when
 * it is not (logs, CI, scripts/reproduce) the only output is one summary line at the end, "LABEL:
 * DONE/TOTAL in S s (RATE/s)", with ", stopped" when the work ended early, so logs stay readable. */
#ifndef FV_PROGRESS_H
#define FV_PROGRESS_H

#include <stddef.h>

typedef struct {
    const char *label;
    size_t total, done;
    double start, last_draw;
    int tty;
} fv_progress;

void fv_progress_start(fv_progress *p, const char *label, size_t total);
/* Advance by `n` steps; `status` (may be NULL) is shown after the numbers, e.g. "loss 0.12". */
void fv_progress_step(fv_progress *p, size_t n, const char *status);
void fv_progress_end(fv_progress *p);

#endif
