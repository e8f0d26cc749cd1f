/* helpers.c: see helpers.h. */
#include "helpers.h"

#include <criterion/criterion.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

void th_moments(size_t n, size_t d, const double *X, double *mean, double *cov)
{
    memset(mean, 0, d * sizeof *mean);
    memset(cov, 0, d * d * sizeof *cov);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++)
            mean[j] += X[i * d + j] / (double)n;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++)
            for (size_t k = 0; k < d; k++)
                cov[j * d + k] += (X[i * d + j] - mean[j]) * (X[i * d + k] - mean[k]) / (double)(n - 1);
}

void th_scratch_make(char *buf, const char *prefix)
{
    snprintf(buf, 64, "/tmp/%s_XXXXXX", prefix);
    if (!mkdtemp(buf))
        cr_assert_fail("mkdtemp failed");
}

void th_remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (remove(path) != 0)
            th_remove_tree(path);
    }
    closedir(d);
    rmdir(dir);
}

const char *th_path_in(const char *dir, const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

int th_entries_in(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

unsigned char *th_slurp(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp, "cannot open %s", path);
    unsigned char *buf = malloc(1 << 16);
    *n = fread(buf, 1, 1 << 16, fp);
    fclose(fp);
    return buf;
}
