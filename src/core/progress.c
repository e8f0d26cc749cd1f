/* progress.c: see progress.h. */
#include "progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The in-place bar, for a terminal only: '\r' and the erase-to-end escape would litter a log. */
static void draw(const fv_progress *p, const char *status, int final)
{
    enum { WIDTH = 30 };
    double el = now() - p->start, rate = el > 0 ? (double)p->done / el : 0.0;
    double left = rate > 0 ? (double)(p->total - p->done) / rate : 0.0;
    size_t fill = p->total ? WIDTH * p->done / p->total : WIDTH;
    char bar[WIDTH + 1];
    for (size_t i = 0; i < WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = '\0';
    fprintf(stderr, "\r%s [%s] %zu/%zu %.3g/s %s %.0fs%s%s\033[K%s", p->label, bar, p->done, p->total, rate,
            final ? "took" : "ETA", final ? el : left, status ? "  " : "", status ? status : "",
            final ? "\n" : "");
    fflush(stderr);
}

/* The one line a log gets instead of the bar: what ran, how far, how long. */
static void summarize(const fv_progress *p, const char *status)
{
    double el = now() - p->start;
    fprintf(stderr, "%s: %zu/%zu in %.1f s (%.3g/s)%s%s\n", p->label, p->done, p->total, el,
            el > 0 ? (double)p->done / el : 0.0, status ? ", " : "", status ? status : "");
    fflush(stderr);
}

void fv_progress_start(fv_progress *p, const char *label, size_t total)
{
    p->label = label;
    p->total = total;
    p->done = 0;
    p->start = p->last_draw = now();
    p->tty = isatty(STDERR_FILENO);
}

void fv_progress_step(fv_progress *p, size_t n, const char *status)
{
    p->done += n;
    if (p->done > p->total)
        p->done = p->total;
    double t = now();
    if (p->tty && t - p->last_draw > 0.1) {
        draw(p, status, 0);
        p->last_draw = t;
    }
}

void fv_progress_end(fv_progress *p)
{
    const char *status = p->done < p->total ? "stopped" : NULL;
    if (p->tty)
        draw(p, status, 1);
    else
        summarize(p, status);
}
