/* cmd_check.c: `flowvar check`: the paper's claims that need no training, one row each. */
#include "cli/cli.h"

#include "gaussian/claims.h"

#include <stdio.h>

static const fv_opt check_opts[] = {{NULL, NULL, NULL}};

static const char usage[] =
    "Verify numerically every claim of docs/THEORY.md section 3 that needs no training (Lemma 1, Prop. 1,\n"
    "Figs. 4 and 5 with sigma*, Lemma 2, Prop. 2, Counter Example 1, Remark 2). Prints TSV rows\n"
    "claim, measured, value, threshold, result and a closing 'N passed, M failed' line; exit status 0\n"
    "only if every claim passes.";

static void print_row(const fv_claim *c, void *ctx)
{
    (void)ctx;
    printf("%s\t%s\t%.6g\t%c %.3g\t%s\n", c->name, c->measured, c->value, c->cmp, c->threshold,
           c->pass ? "PASS" : "FAIL");
    fflush(stdout);
}

int fv_cmd_check(int argc, char **argv)
{
    fv_args a;
    int st = fv_args_parse(&a, "check", usage, argc, argv, check_opts, NULL);
    if (st < 0)
        return 0;
    if (st)
        return fv_cli_fail(st);
    size_t npass, nfail;
    printf("claim\tmeasured\tvalue\tthreshold\tresult\n");
    fv_claims_run(print_row, NULL, &npass, &nfail);
    printf("check: %zu passed, %zu failed\n", npass, nfail);
    return nfail ? 1 : 0;
}
