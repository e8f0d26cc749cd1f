/* fuzz_args.c: libFuzzer harness for the option parser (src/cli/args.c) and the problem flags
 * (src/cli/cli.c). The input, split at NUL bytes, is the argv of `flowvar train` (its real option
 * tables: problem, training, device); a parsed command line then goes through fv_cli_problem, every
 * typed getter on every option that takes a value, the choice lists the help text names, and
 * fv_run_device. */
#include "cli/cli.h"
#include "cli/run.h"
#include "core/io.h"
#include "fuzz/fuzz.h"

#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 64

/* "a|b|c" metavariables (--coupling ot|rotation|independent) as a NULL-terminated choice list. */
static void try_choices(const fv_args *a, const fv_opt *o)
{
    char buf[128];
    const char *choices[16];
    int n = 0, idx;
    if (!strchr(o->arg, '|') || strlen(o->arg) >= sizeof buf)
        return;
    strcpy(buf, o->arg);
    for (char *s = strtok(buf, "|"); s && n < 15; s = strtok(NULL, "|"))
        choices[n++] = s;
    choices[n] = NULL;
    fv_args_choice(a, o->name, choices, 0, &idx);
}

static void try_getters(const fv_args *a)
{
    for (size_t i = 0; i < a->nopts; i++) {
        const fv_opt *o = a->opts[i];
        double x, *list = NULL;
        uint64_t u;
        size_t z, n;
        if (!o->arg || !a->values[i])
            continue;
        fv_args_double(a, o->name, 0.0, &x);
        fv_args_u64(a, o->name, 0, &u);
        fv_args_size(a, o->name, 1, 1, &z);
        try_choices(a, o);
        if (fv_parse_list(a->values[i], o->name, &list, &n) == 0)
            free(list);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_quiet(); /* --help prints the table to stdout */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1), *argv[MAX_ARGS + 1];
    int argc = 0;
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    argv[argc++] = "train";
    for (size_t i = 0; i < size && argc < MAX_ARGS; i += strlen(text + i) + 1)
        argv[argc++] = text + i;
    argv[argc] = NULL;
    fv_args a;
    if (fv_args_parse(&a, "train", "fuzz", argc, argv, FV_PROBLEM_GROUPS, fv_train_opts_table, fv_device_opts, NULL) ==
        0) {
        fv_problem p;
        memset(&p, 0, sizeof p);
        if (fv_cli_problem(&a, &p) == 0)
            fv_problem_free(&p);
        try_getters(&a);
        const char *device;
        int tf32;
        fv_run_device(&a, &device, &tf32);
    }
    free(text);
    return 0;
}
