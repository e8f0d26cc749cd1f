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
    fprintf(stderr, "\r%s [%s] %zu/%zu %.3g/s %s %.0fs%s%s%s", p->label, bar, p->done, p->total, rate,
            final ? "took" : "ETA", final ? el : left, status ? "  " : "",
            status ? status : "", final ? (p->tty ? "\033[K\n" : "\n") : "\033[K");
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

void fv_progress_end(fv_progress *p) { draw(p, p->done < p->total ? "stopped" : NULL, 1); }
