/* args.c: a small long-option parser that knows each command's options, so --help is generated
 * from the same table that parsing uses and can never disagree with it. */
#include "cli/cli.h"

#include "core/error.h"
#include "core/io.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_help(const fv_args *a, const char *usage)
{
    printf("usage: flowvar %s [options]\n\n%s\n\noptions:\n", a->command, usage);
    for (size_t i = 0; i < a->nopts; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", a->opts[i]->name, a->opts[i]->arg ? " " : "",
                 a->opts[i]->arg ? a->opts[i]->arg : "");
        printf("  %-28s %s\n", left, a->opts[i]->help);
    }
    printf("  %-28s %s\n", "--help", "show this help and exit");
}

static int find_opt(const fv_args *a, const char *name, size_t len)
{
    for (size_t i = 0; i < a->nopts; i++)
        if (strlen(a->opts[i]->name) == len && strncmp(a->opts[i]->name, name, len) == 0)
            return (int)i;
    return -1;
}

int fv_args_parse(fv_args *a, const char *command, const char *usage, int argc, char **argv, ...)
{
    memset(a, 0, sizeof *a);
    a->command = command;
    va_list ap;
    va_start(ap, argv);
    for (const fv_opt *table; (table = va_arg(ap, const fv_opt *));)
        for (const fv_opt *o = table; o->name && a->nopts < FV_MAX_OPTS; o++)
            a->opts[a->nopts++] = o;
    va_end(ap);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            print_help(a, usage);
            return -1;
        }
        if (strncmp(s, "--", 2) != 0)
            return fv_error(FV_EINPUT, "%s: unexpected argument '%s' (options start with --)", command, s);
        const char *name = s + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int k = find_opt(a, name, len);
        if (k < 0)
            return fv_error(FV_EINPUT, "%s: unknown option '--%.*s' (see flowvar %s --help)", command, (int)len, name,
                            command);
        if (a->values[k])
            return fv_error(FV_EINPUT, "%s: option --%s given twice", command, a->opts[k]->name);
        if (!a->opts[k]->arg) {
            if (eq)
                return fv_error(FV_EINPUT, "%s: option --%s takes no value", command, a->opts[k]->name);
            a->values[k] = "";
        } else if (eq) {
            a->values[k] = eq + 1;
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            a->values[k] = argv[++i];
        } else {
            return fv_error(FV_EINPUT, "%s: option --%s needs a value %s", command, a->opts[k]->name,
                            a->opts[k]->arg);
        }
    }
    return FV_OK;
}

const char *fv_args_get(const fv_args *a, const char *name)
{
    int k = find_opt(a, name, strlen(name));
    return k < 0 ? NULL : a->values[k];
}

int fv_args_flag(const fv_args *a, const char *name) { return fv_args_get(a, name) != NULL; }

/* "> 0", ">= 1", "in [0, 1)": the domain as the error messages say it. */
static void describe_domain(fv_domain dom, char *buf, size_t size)
{
    if (isinf(dom.hi))
        snprintf(buf, size, "%s %g", dom.lo_open ? ">" : ">=", dom.lo);
    else
        snprintf(buf, size, "in %c%g, %g%c", dom.lo_open ? '(' : '[', dom.lo, dom.hi, dom.hi_open ? ')' : ']');
}

int fv_args_double_in(const fv_args *a, const char *name, double def, fv_domain dom, double *out)
{
    int st = fv_args_double(a, name, def, out);
    if (st)
        return st;
    double v = *out;
    if (v < dom.lo || (dom.lo_open && v == dom.lo) || v > dom.hi || (dom.hi_open && v == dom.hi)) {
        char what[64];
        describe_domain(dom, what, sizeof what);
        return fv_error(FV_EINPUT, "--%s must be %s, got %s", name, what, fv_args_get(a, name));
    }
    return FV_OK;
}

int fv_args_double(const fv_args *a, const char *name, double def, double *out)
{
    const char *s = fv_args_get(a, name);
    if (!s) {
        *out = def;
        return FV_OK;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v))
        return fv_error(FV_EINPUT, "--%s: '%s' is not a finite number", name, s);
    *out = v;
    return FV_OK;
}

static int parse_u64(const char *name, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s == '-' || *s == '\0')
        return fv_error(FV_EINPUT, "--%s: '%s' is not a non-negative whole number", name, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || errno == ERANGE)
        return fv_error(FV_EINPUT, "--%s: '%s' is not a non-negative whole number", name, s);
    *out = v;
    return FV_OK;
}

int fv_args_u64(const fv_args *a, const char *name, uint64_t def, uint64_t *out)
{
    const char *s = fv_args_get(a, name);
    if (!s) {
        *out = def;
        return FV_OK;
    }
    return parse_u64(name, s, out);
}

int fv_args_size(const fv_args *a, const char *name, size_t def, size_t min, size_t *out)
{
    uint64_t v;
    int st = fv_args_u64(a, name, def, &v);
    if (st)
        return st;
    if (v < min)
        return fv_error(FV_EINPUT, "--%s must be at least %zu, got %llu", name, min, (unsigned long long)v);
    *out = (size_t)v;
    return FV_OK;
}

int fv_args_sizes(const fv_args *a, const char *name, const char *def, size_t max, size_t *out, size_t *n)
{
    const char *text = fv_args_get(a, name) ? fv_args_get(a, name) : def;
    double *v;
    size_t k;
    *n = 0;
    if (!*text)
        return FV_OK;
    int st = fv_parse_list(text, name, &v, &k);
    if (st)
        return fv_error_context(st, "--%s: ", name);
    for (size_t i = 0; i < k && !st; i++)
        if (!(v[i] >= 1 && v[i] == floor(v[i])) || k > max)
            st = fv_error(FV_EINPUT, "--%s: '%s' must be at most %zu whole numbers >= 1", name, text, max);
        else
            out[i] = (size_t)v[i];
    free(v);
    if (!st)
        *n = k;
    return st;
}

int fv_args_choice(const fv_args *a, const char *name, const char *const *choices, int def, int *out)
{
    const char *s = fv_args_get(a, name);
    if (!s) {
        *out = def;
        return FV_OK;
    }
    char list[256] = "";
    for (int i = 0; choices[i]; i++) {
        if (strcmp(s, choices[i]) == 0) {
            *out = i;
            return FV_OK;
        }
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? "|" : "", choices[i]);
    }
    return fv_error(FV_EINPUT, "--%s: unknown value '%s' (expected %s)", name, s, list);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int fv_args_array(const fv_args *a, const char *name, double **data, size_t *count, int *ndim,
                  size_t shape[FV_NPY_MAX_DIMS])
{
    const char *s = fv_args_get(a, name);
    char what[64];
    snprintf(what, sizeof what, "--%s", name);
    if (!ends_with(s, ".npy") && strcmp(s, "-") != 0) { /* "-": an NPY on standard input */
        *ndim = 0;
        return fv_parse_list(s, what, data, count);
    }
    int st = fv_npy_read_f64(s, data, ndim, shape);
    if (st)
        return fv_error_context(st, "%s: ", what);
    *count = 1;
    for (int i = 0; i < *ndim; i++)
        *count *= shape[i];
    for (size_t i = 0; i < *count; i++)
        if (!isfinite((*data)[i])) {
            free(*data);
            *data = NULL;
            return fv_error(FV_EINPUT, "%s: %s has a non-finite entry at position %zu", what, s, i);
        }
    return FV_OK;
}

void fv_args_shape_text(int ndim, const size_t *shape, char *buf, size_t size)
{
    size_t k = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < ndim && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, "%s%zu", i ? ", " : "", shape[i]);
    if (k < size)
        snprintf(buf + k, size - k, ndim == 1 ? ",)" : ")");
}
