/* helpers.c: see helpers.h. */
#include "helpers.h"

#include "core/error.h"
#include "nn/trainer.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

void th_slurp_text(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, size - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
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

void th_variance_vs_mc(const fv_problem *p, const fv_vfield *f, double t, size_t n, uint64_t stream, double rel,
                       const char *label)
{
    fv_var ex;
    fv_mc mc;
    double lmax = 0.0;
    if (t >= 0) {
        cr_assert_eq(fv_variance_at(p, f, t, &ex, NULL, NULL), FV_OK, "%s: %s", label, fv_last_error());
        lmax = sqrt(2.0) * ex.loss;
    } else {
        cr_assert_eq(fv_variance_integrated(p, f, 1e-9, &ex, NULL), FV_OK, "%s: %s", label, fv_last_error());
        for (int i = 1; i < 100; i++) {
            fv_var vt;
            cr_assert_eq(fv_variance_at(p, f, i / 100.0, &vt, NULL, NULL), FV_OK, "%s", fv_last_error());
            lmax = fmax(lmax, sqrt(3.0) * vt.loss);
        }
    }
    cr_assert_eq(fv_variance_mc(p, f, t, n, 20251018, stream, &mc), FV_OK, "%s: %s", label, fv_last_error());
    double z = (mc.var_total - ex.var_total) / mc.se_total, dev = (mc.var_total - ex.var_total) / ex.var_total;
    cr_log_info("%-58s exact %.10g  MC %.10g +- %.3g (z = %+.2f, %+.2f%%)  loss %.6g / %.6g", label, ex.var_total,
                mc.var_total, mc.se_total, z, 100.0 * dev, ex.loss, mc.loss);
    cr_expect(fabs(z) <= 4.0 && (rel <= 0 || fabs(dev) <= rel), "%s: exact %.10g, MC %.10g +- %.3g", label,
              ex.var_total, mc.var_total, mc.se_total);
    cr_expect(fabs(mc.loss - ex.loss) <= 4.0 * lmax / sqrt((double)n), "%s: loss exact %.10g, MC %.10g", label,
              ex.loss, mc.loss);
    cr_expect(mc.var_theta > 0 && mc.var_Theta > 0 && mc.n == n);
}

void th_problem_finish(fv_problem *p, fv_coupling c, double deg, double sigma, fv_schedule s, int deriv)
{
    size_t d = p->d;
    p->coupling = c;
    p->R = malloc(d * d * sizeof *p->R);
    cr_assert(p->R != NULL);
    fv_rotation_blocks(d, deg, p->R);
    p->sigma = sigma;
    p->schedule = s;
    p->deriv_term = deriv;
    cr_assert_eq(fv_problem_validate(p), FV_OK, "%s", fv_last_error());
}

void th_perturbed_ot(const fv_problem *p, fv_rng *r, double st, double sT, double *theta, double *Theta)
{
    size_t d = p->d;
    fv_vfield ot = {FV_VFIELD_OT, NULL, NULL};
    cr_assert_eq(fv_vfield_params(p, &ot, 0.0, theta, Theta), FV_OK, "%s", fv_last_error());
    double *z = malloc((d + d * d) * sizeof *z);
    cr_assert(z != NULL);
    fv_rng_normal(r, d + d * d, z);
    for (size_t i = 0; i < d; i++)
        theta[i] += st * z[i];
    for (size_t i = 0; i < d * d; i++)
        Theta[i] += sT * z[d + i] / sqrt((double)d);
    free(z);
}

double th_max_rel(size_t n, const float *a, const float *ref)
{
    double e = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - ref[i]));
        s = fmax(s, fabs((double)ref[i]));
    }
    return s > 0 ? e / s : e;
}

void th_need_gpu(void)
{
    if (!fv_cuda_available())
        cr_skip_test("no CUDA device here: CUDA parity skipped (run `make test-cuda` on a GPU machine)");
}

void th_parity_row(const char *what, const char *shape, double err, double bound)
{
    fprintf(stderr, "cuda-parity %-28s %-30s %.3e bound %.0e %s\n", what, shape, err, bound,
            err <= bound ? "PASS" : "FAIL");
}

void th_parity(const char *what, const char *shape, size_t n, const float *gpu, const float *cpu, double tol)
{
    double e = th_max_rel(n, gpu, cpu);
    th_parity_row(what, shape, e, tol);
    cr_expect(e <= tol, "%s at %s: relative error %g > %g", what, shape, e, tol);
}

int th_listed(const char *list, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = list; p && *p;) {
        size_t l = strcspn(p, ",");
        if (l == len && !strncmp(p, name, len))
            return 1;
        p += l + (p[l] == ',');
    }
    return 0;
}

float *th_st_tensor(const fv_st_file *f, const char *name, size_t *n)
{
    const fv_st_tensor *t = fv_st_find(f, name);
    cr_assert_not_null(t, "no tensor '%s'", name);
    float *v = malloc(t->count * sizeof(float));
    cr_assert_eq(fv_st_get_f32(f, name, t->ndim, t->shape, v), FV_OK, "%s: %s", name, fv_last_error());
    if (n)
        *n = t->count;
    return v;
}

int th_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

int th_flowvar(const char *args, const char *out_path, const char *err_path, char *out, size_t out_size, char *err,
               size_t err_size)
{
    const char *bin = getenv("FLOWVAR") ? getenv("FLOWVAR") : "build/flowvar";
    char cmd[8192];
    int len = snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s", bin, args, out_path, err_path);
    cr_assert(len > 0 && (size_t)len < sizeof cmd, "command line too long for th_flowvar: %s", args);
    int st = system(cmd);
    th_slurp_text(out_path, out, out_size);
    th_slurp_text(err_path, err, err_size);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
