/* claims.h: the paper's claims that need no training (docs/THEORY.md section 3), verified numerically.
 * Each claim yields rows: what was measured, a value, a threshold and PASS/FAIL. */
#ifndef FV_CLAIMS_H
#define FV_CLAIMS_H

#include "gaussian/problem.h"
#include "gaussian/variance.h"

#include <stddef.h>

typedef struct {
    char name[48];
    char measured[256]; /* what the value is, in words, with the numbers behind it */
    double value, threshold;
    char cmp;           /* '<' or '>': PASS when value cmp threshold */
    int pass;
} fv_claim;

/* Called once per row, as soon as it is computed. */
typedef void (*fv_claim_report)(const fv_claim *c, void *ctx);

/* Run every claim, reporting each row; counts the rows that pass and fail. A computation that
 * fails unexpectedly is reported as a FAIL row carrying the error message. */
void fv_claims_run(fv_claim_report report, void *ctx, size_t *npass, size_t *nfail);

/* The integrated total variance of a field on the reference problem (fv_problem_reference) rotated
 * by deg (no rotation when deg < 0), with data from `coupling`, noise sigma; NaN in *v on failure. */
int fv_reference_variance(double deg, fv_coupling coupling, fv_vfield_kind kind, double sigma, double epsrel,
                          double *v);

#endif
