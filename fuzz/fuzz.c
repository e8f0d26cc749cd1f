/* fuzz.c: scratch files for the harnesses, and a full read of a loaded data set (see fuzz.h). */
#include "fuzz/fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char scratch[64];

/* Removes the scratch folder's files (one level: the harnesses write no subfolders). */
static void scratch_remove(void)
{
    DIR *d = opendir(scratch);
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            unlink(fz_path(e->d_name));
    if (d)
        closedir(d);
    rmdir(scratch);
}

const char *fz_scratch_dir(void)
{
    if (!scratch[0]) {
        strcpy(scratch, "/tmp/fv_fuzz_XXXXXX");
        if (!mkdtemp(scratch)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(scratch_remove);
    }
    return scratch;
}

const char *fz_path(const char *name)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "%s/%s", fz_scratch_dir(), name);
    return buf;
}

const char *fz_write(const char *name, const uint8_t *data, size_t n)
{
    const char *path = fz_path(name);
    FILE *fp = fopen(path, "wb");
    if (!fp || (n && fwrite(data, 1, n, fp) != n) || fclose(fp) != 0) {
        perror(path);
        abort();
    }
    return path;
}

void fz_touch_dataset(const fv_dataset *ds)
{
    volatile float sum = 0.0f;
    for (size_t k = 0; k < ds->n * ds->c * ds->h * ds->w; k++)
        sum += ds->x[k];
    for (size_t k = 0; k < ds->n; k++)
        sum += ds->labels[k];
    (void)sum;
}

void fz_quiet(void)
{
    if (!freopen("/dev/null", "w", stdout))
        abort();
}
