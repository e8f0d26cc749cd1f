/* test_variance_source.c: the exact gradient variance (gaussian/variance.c) with a general Gaussian
 * source N(m0, S0) (docs/variance_general_source.md): unchanged values for the standard source, the
 * eigenbasis path against the dense one, the pair fields' zero variance, the Markov member's zero mean
 * gradient, the couplings against field.h's maps, the Monte-Carlo twin for every coupling and field
 * kind, and the backward direction N(mu, Sigma) -> N(0, I) with an ill-conditioned Sigma. */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "src/core/error.h"
#include "src/core/linalg.h"
#include "src/core/rng.h"
#include "gaussian/field.h"
#include "gaussian/problem.h"
#include "gaussian/variance.h"

#include "helpers.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------------- */
/* Problems */

/* Source N(m0, S0) and target N(m1, S1) of dimension d, means 0.7 times standard normals, S0 =
 * fv_random_spd(d, 0.3), S1 = fv_random_spd(d, 0.4), rotation by deg. */
static void general_problem(fv_problem *p, size_t d, fv_rng *r, fv_coupling c, double deg, double sigma,
                            fv_schedule s, int deriv)
{
    cr_assert_eq(fv_problem_alloc(p, d), FV_OK);
    fv_rng_normal(r, d, p->m0);
    fv_rng_normal(r, d, p->m1);
    for (size_t i = 0; i < d; i++) {
        p->m0[i] *= 0.7;
        p->m1[i] *= 0.7;
    }
    fv_random_spd(d, 0.3, r, p->S0);
    fv_random_spd(d, 0.4, r, p->S1);
    th_problem_finish(p, c, deg, sigma, s, deriv);
}

static const char *coupling_label[] = {"OT", "rotation", "independent"};
static const char *kind_label[] = {"OT", "rotation", "Markov", "custom"};

/* ------------------------------------------------------------------------------------------------- */
/* The standard source is unchanged */

/* The standard-source problem the values below were recorded from (the engine before the general
 * source, commit b049e17): d = 5, target mean ~ N(0, I), covariance fv_random_spd(5, 0.4), rotation by
 * 70 degrees, sigma 0.2. */
static void legacy_problem(fv_problem *p, fv_coupling c, fv_schedule s, int deriv)
{
    enum { D = 5 };
    fv_rng r = fv_rng_make(2510, 18118);
    cr_assert_eq(fv_problem_alloc(p, D), FV_OK);
    fv_rng_normal(&r, D, p->m1);
    fv_random_spd(D, 0.4, &r, p->S1);
    p->R = malloc(D * D * sizeof *p->R);
    fv_rotation_blocks(D, 70.0, p->R);
    p->coupling = c;
    p->sigma = 0.2;
    p->schedule = s;
    p->deriv_term = deriv;
}

/* coupling, field kind, bridge with the derivative term (else constant), then var_total and loss at
 * t = 0.1, 0.35, 0.8, and integrated (epsrel 1e-10; constant schedule only). The custom field is the OT
 * field with theta += 0.1 (i - 2), Theta += 0.05 ((7 i mod 5) - 2). */
static const struct {
    int c, k, s;
    double v[8];
} legacy[] = {
    {0, 0, 0, {0.31138509906541267, 0.012251932060325103, 0.36937483156763173, 0.013035928846795544, 0.67546567167176952, 0.016227640748563942, 0.50026858116262629, 0.014331003879433445}},
    {0, 0, 1, {8.9673682360494453, 0.36594771750942423, 0.76492189974823144, 0.027174181272066555, 2.6943164325383746, 0.10235151816516543, 0, 0}},
    {0, 1, 0, {199.87829065046193, 5.5846674526832718, 397.71504967293151, 7.0705570608970838, 402.96422545746981, 6.7973461436228799, 374.41771304224051, 6.6575119669345151}},
    {0, 1, 1, {199.36902380146148, 5.8064323299339797, 374.55685313622223, 6.8667372895316143, 377.54732339537202, 6.673703768286404, 0, 0}},
    {0, 2, 0, {169.3116389015467, 4.231681996435511, 75.116869359461745, 1.2930426594128495, 4.1783937529799129, 3.2852057931518583, 64.850222167625148, 2.5315725142470464}},
    {0, 2, 1, {184.32709325612623, 4.7701870449774617, 81.689441753045486, 1.4006331647186658, 4.0327258717030112, 3.5376550895339554, 0, 0}},
    {0, 3, 0, {6.7182756384472428, 0.25462021372969312, 8.7480705307094624, 0.28472634197953434, 19.818837332552253, 0.38483962860839438, 13.942993888094229, 0.32433740169813774}},
    {0, 3, 1, {14.985513658827402, 0.60062571835533718, 8.6957540223452696, 0.29178336459061127, 19.980552314296347, 0.45674005125702366, 0, 0}},
    {1, 0, 0, {125.0101358681133, 4.722907873676057, 111.5866614056587, 4.7218737419233516, 150.6930156147148, 5.0049319826736882, 136.32053660469273, 4.8522920411243184}},
    {1, 0, 1, {129.36053824794377, 5.0766036591251567, 108.75315467644003, 4.7360119943486216, 147.06048810739168, 5.0910558600902895, 0, 0}},
    {1, 1, 0, {6.8139812485457947, 0.2361147516329698, 12.631814753617622, 0.31449122464373575, 15.786556356941809, 0.32444106821336421, 12.931699530747427, 0.30340969277240148}},
    {1, 1, 1, {12.412066133302009, 0.45787962888367806, 4.2688380559165111, 0.11067145327826491, 7.7310308640780168, 0.20079869287688873, 0, 0}},
    {1, 2, 0, {187.58337102769121, 5.1008826194824639, 208.43196687795117, 4.9193851936623503, 7.4119304002374928, 5.4565070869140087, 117.37469039860864, 5.1040462152182213}},
    {1, 2, 1, {197.20496514023631, 5.5379520711005874, 208.61336215915813, 4.9558489049676933, 6.9244455360777586, 5.6350672367773296, 0, 0}},
    {1, 3, 0, {126.97723694051869, 4.8460682513848479, 114.81095766677171, 4.8249173643291394, 189.50823246702845, 5.274551068636268, 159.90738035918571, 5.0384412781111356}},
    {1, 3, 1, {131.08340064170142, 5.1920737560104904, 111.68803904944235, 4.8319743869402165, 183.21758396575046, 5.3464514912848973, 0, 0}},
    {2, 0, 0, {212.32422055656832, 9.463387772804051, 152.43349784416208, 9.3289575952418495, 213.04546359709491, 9.6238527770921962, 202.85562935400154, 9.4945602671585263}},
    {2, 0, 1, {212.40341329694471, 9.8170835582531488, 146.55603881918165, 9.3430958476671186, 204.71828630593041, 9.7099766545087967, 0, 0}},
    {2, 1, 0, {291.25252184722206, 10.677965803638292, 378.92150527563069, 12.766814368730346, 436.96951561150536, 12.186260603398436, 401.50515267798397, 12.099345124682692}},
    {2, 1, 1, {285.82015897630799, 10.899730680889, 355.04703946400974, 12.562994597364877, 407.64200007772132, 12.062618228061959, 0, 0}},
    {2, 2, 0, {175.37919504299373, 6.0028307466465822, 239.91353446349569, 8.5937751421830271, 8.7554272547400753, 7.3405753612816813, 121.25917931832726, 7.5639903135250828}},
    {2, 2, 1, {180.16017697385831, 6.3459739325806268, 233.80255619183566, 8.5774397713096882, 8.112077704313652, 7.4421435759423993, 0, 0}},
    {2, 3, 0, {216.85252550416268, 9.7257071510469064, 156.07495470499958, 9.5083333922320818, 254.87180075196662, 9.9356998238760283, 230.46391222173156, 9.7558295213612531}},
    {2, 3, 1, {216.60608379583968, 10.071712655672549, 149.89338237990376, 9.515390414843159, 243.53171427047721, 10.007600246524657, 0, 0}},
};

Test(variance_source, standard_source_values_unchanged)
{
    const double ts[3] = {0.1, 0.35, 0.8};
    for (size_t n = 0; n < sizeof legacy / sizeof legacy[0]; n++) {
        fv_problem p;
        double theta[5], Theta[25];
        legacy_problem(&p, (fv_coupling)legacy[n].c, (fv_schedule)legacy[n].s, legacy[n].s);
        fv_vfield of = {FV_VFIELD_OT, NULL, NULL}, f = {(fv_vfield_kind)legacy[n].k, theta, Theta};
        cr_assert_eq(fv_vfield_params(&p, &of, 0.0, theta, Theta), FV_OK);
        for (int i = 0; i < 5; i++)
            theta[i] += 0.1 * (i - 2);
        for (int i = 0; i < 25; i++)
            Theta[i] += 0.05 * ((i * 7) % 5 - 2);
        double got[8] = {0};
        for (int j = 0; j < 3; j++) {
            fv_var v;
            cr_assert_eq(fv_variance_at(&p, &f, ts[j], &v, NULL, NULL), FV_OK, "%s", fv_last_error());
            got[2 * j] = v.var_total;
            got[2 * j + 1] = v.loss;
        }
        if (!legacy[n].s) {
            fv_var v;
            cr_assert_eq(fv_variance_integrated(&p, &f, 1e-10, &v, NULL), FV_OK, "%s", fv_last_error());
            got[6] = v.var_total;
            got[7] = v.loss;
        }
        double worst = 0.0;
        for (int j = 0; j < 8; j++)
            worst = fmax(worst, fabs(got[j] - legacy[n].v[j]) / fmax(fabs(legacy[n].v[j]), 1e-300));
        cr_log_info("%s coupling, %s field, %s: largest relative change %.2g", coupling_label[legacy[n].c],
                    kind_label[legacy[n].k], legacy[n].s ? "bridge + f'" : "constant", worst);
        cr_expect(worst <= 1e-12, "%s coupling, %s field, %s: values moved by %.3g relative",
                  coupling_label[legacy[n].c], kind_label[legacy[n].k], legacy[n].s ? "bridge + f'" : "constant",
                  worst);
        fv_problem_free(&p);
    }
}

/* A standard source moved to m0 = c (and the target by the same c) is the same problem in the
 * source-centred coordinate: every value within 1e-12, on the eigenbasis and the dense path. */
Test(variance_source, shifted_standard_source_equals_standard)
{
    fv_rng r = fv_rng_make(31, 4);
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 4; k++) {
            fv_problem p, q;
            double theta[6], Theta[36], Eg[42], shift[6];
            general_problem(&p, 6, &r, (fv_coupling)c, 50.0, 0.25, FV_SCHEDULE_CONSTANT, 0);
            fv_mat_identity(6, p.S0);
            memset(p.m0, 0, sizeof shift);
            fv_rng_normal(&r, 6, shift);
            general_problem(&q, 6, &r, (fv_coupling)c, 50.0, 0.25, FV_SCHEDULE_CONSTANT, 0);
            memcpy(q.S0, p.S0, sizeof Theta);
            memcpy(q.S1, p.S1, sizeof Theta);
            for (int i = 0; i < 6; i++) {
                q.m0[i] = 3.0 * shift[i];
                q.m1[i] = p.m1[i] + q.m0[i];
            }
            th_perturbed_ot(&p, &r, 0.2, 0.1, theta, Theta);
            fv_vfield f = {(fv_vfield_kind)k, theta, Theta};
            double worst = 0.0;
            for (int j = 1; j < 5; j++) {
                fv_var a, b, e;
                cr_assert_eq(fv_variance_at(&p, &f, j / 5.0, &a, NULL, NULL), FV_OK, "%s", fv_last_error());
                cr_assert_eq(fv_variance_at(&q, &f, j / 5.0, &b, NULL, NULL), FV_OK, "%s", fv_last_error());
                cr_assert_eq(fv_variance_at(&q, &f, j / 5.0, &e, Eg, NULL), FV_OK, "%s", fv_last_error());
                worst = fmax(worst, fabs(a.var_total - b.var_total) / a.var_total);
                worst = fmax(worst, fabs(a.var_total - e.var_total) / a.var_total);
                worst = fmax(worst, fabs(a.loss - b.loss) / a.loss);
            }
            fv_var a, b;
            cr_assert_eq(fv_variance_integrated(&p, &f, 1e-10, &a, NULL), FV_OK, "%s", fv_last_error());
            cr_assert_eq(fv_variance_integrated(&q, &f, 1e-10, &b, NULL), FV_OK, "%s", fv_last_error());
            worst = fmax(worst, fabs(a.var_total - b.var_total) / a.var_total);
            cr_expect(worst <= 1e-12, "%s coupling, %s field: shifted source differs by %.3g relative",
                      coupling_label[c], kind_label[k], worst);
            fv_problem_free(&p);
            fv_problem_free(&q);
        }
}

/* ------------------------------------------------------------------------------------------------- */
/* Internal consistency with a general source */

/* The OT field (any source) and the Markov field of an isotropic source take the eigenbasis path; the
 * same parameters given as CUSTOM take the dense one. Both agree per t and integrated (1e-10 of 1 + |value|). */
static double rel_gap(double a, double b) { return fabs(a - b) / (1.0 + fabs(b)); }

Test(variance_source, eigenbasis_path_equals_dense_path)
{
    fv_rng r = fv_rng_make(37, 1);
    for (int c = 0; c < 3; c++)
        for (int iso = 0; iso < 2; iso++) {
            fv_problem p;
            size_t d = 4 + (size_t)c;
            double theta[6], Theta[36];
            general_problem(&p, d, &r, (fv_coupling)c, 110.0, 0.3, (fv_schedule)iso, iso);
            if (iso) { /* S0 = 2.5 I */
                fv_mat_identity(d, p.S0);
                for (size_t i = 0; i < d; i++)
                    p.S0[i * d + i] = 2.5;
            }
            fv_vfield named[2] = {{FV_VFIELD_OT, NULL, NULL}, {FV_VFIELD_MARKOV, NULL, NULL}};
            fv_vfield custom = {FV_VFIELD_CUSTOM, theta, Theta};
            for (int n = 0; n < 1 + iso; n++) {
                double worst = 0.0;
                for (int k = 1; k < 10; k++) {
                    double t = k / 10.0;
                    fv_var a, b;
                    cr_assert_eq(fv_vfield_params(&p, &named[n], t, theta, Theta), FV_OK, "%s", fv_last_error());
                    cr_assert_eq(fv_variance_at(&p, &named[n], t, &a, NULL, NULL), FV_OK, "%s", fv_last_error());
                    cr_assert_eq(fv_variance_at(&p, &custom, t, &b, NULL, NULL), FV_OK, "%s", fv_last_error());
                    worst = fmax(worst, fmax(rel_gap(a.var_theta, b.var_theta), rel_gap(a.var_Theta, b.var_Theta)));
                    worst = fmax(worst, rel_gap(a.loss, b.loss));
                }
                if (n == 0 && !iso) {
                    fv_var a, b;
                    cr_assert_eq(fv_vfield_params(&p, &named[0], 0.0, theta, Theta), FV_OK);
                    cr_assert_eq(fv_variance_integrated(&p, &named[0], 1e-11, &a, NULL), FV_OK, "%s", fv_last_error());
                    cr_assert_eq(fv_variance_integrated(&p, &custom, 1e-11, &b, NULL), FV_OK, "%s", fv_last_error());
                    worst = fmax(worst, fmax(rel_gap(a.var_total, b.var_total), rel_gap(a.loss, b.loss)));
                }
                cr_expect(worst <= 1e-10, "%s coupling, %s field, %s source: eigenbasis and dense paths differ by %.3g",
                          coupling_label[c], kind_label[named[n].kind], iso ? "isotropic" : "general", worst);
            }
            fv_problem_free(&p);
        }
}

/* Proposition 1 with a general source: without noise the OT field on the OT coupling and the rotation
 * field on the rotational coupling have zero loss and zero variance at every t. */
Test(variance_source, pair_fields_have_zero_variance)
{
    fv_rng r = fv_rng_make(41, 2);
    for (int c = 0; c < 2; c++) {
        fv_problem p;
        general_problem(&p, 6, &r, (fv_coupling)c, 75.0, 0.0, FV_SCHEDULE_CONSTANT, 0);
        fv_vfield f = {c ? FV_VFIELD_ROTATION : FV_VFIELD_OT, NULL, NULL};
        cr_assert_eq(fv_variance_integrable(&p, &f), FV_OK, "%s", fv_last_error());
        double worst = 0.0;
        for (int k = 0; k <= 10; k++) {
            fv_var v, e;
            double Eg[42];
            cr_assert_eq(fv_variance_at(&p, &f, k / 10.0, &v, NULL, NULL), FV_OK, "%s", fv_last_error());
            cr_assert_eq(fv_variance_at(&p, &f, k / 10.0, &e, Eg, NULL), FV_OK, "%s", fv_last_error());
            worst = fmax(worst, fmax(fmax(fabs(v.var_total), fabs(v.loss)), fmax(fabs(e.var_total), fabs(e.loss))));
        }
        cr_log_info("%s field on its coupling, sigma 0: largest |variance| or loss %.3g", kind_label[f.kind], worst);
        cr_expect(worst <= 1e-12, "%s field on its own coupling: variance or loss %.3g", kind_label[f.kind], worst);
        fv_problem_free(&p);
    }
}

/* The Markov member is E[u | X_t] at its t, the minimizer of the loss over all fields: E[g | t] = 0
 * (dense path: a general S0 does not commute with S1). */
Test(variance_source, markov_field_has_zero_mean_gradient)
{
    fv_rng r = fv_rng_make(43, 0);
    for (int s = 0; s < 2; s++) {
        fv_problem p;
        general_problem(&p, 5, &r, FV_COUPLING_INDEPENDENT, 0.0, 0.3, (fv_schedule)s, s);
        fv_vfield f = {FV_VFIELD_MARKOV, NULL, NULL};
        double Eg[30], worst = 0.0;
        for (int k = 0; k < 10; k++) {
            fv_var v;
            double t = s ? (k + 0.5) / 10.0 : k / 9.0;
            cr_assert_eq(fv_variance_at(&p, &f, t, &v, Eg, NULL), FV_OK, "%s", fv_last_error());
            for (int i = 0; i < 30; i++)
                worst = fmax(worst, fabs(Eg[i]) / (1 + v.loss));
        }
        cr_expect(worst <= 1e-12, "%s schedule: |E g| / (1 + loss) up to %.3g", fv_schedule_name((fv_schedule)s),
                  worst);
        fv_problem_free(&p);
    }
}

/* The couplings of variance.h are field.h's: X1 = m1 + F1 xi0 is fv_field_map's T(X0) for the OT and
 * rotational couplings, the named fields' Theta + I is field.h's coupling map, and every F1 keeps the
 * target marginal (F1 F1^T = S1). */
Test(variance_source, couplings_are_field_maps)
{
    enum { D = 5, N = 8 };
    fv_rng r = fv_rng_make(47, 3);
    for (int c = 0; c < 3; c++) {
        fv_problem p;
        fv_field fld;
        fv_field_work fw;
        double L0[D * D], F1[D * D], xi[N * D], X0[N * D], X1[N * D], T[N * D], FF[D * D], theta[D], Theta[D * D];
        general_problem(&p, D, &r, (fv_coupling)c, 130.0, 0.0, FV_SCHEDULE_CONSTANT, 0);
        cr_assert_eq(fv_variance_factors(&p, L0, F1), FV_OK, "%s", fv_last_error());
        cr_assert_eq(fv_field_work_alloc(&fw, D, N), FV_OK);
        fv_rng_normal(&r, N * D, xi);
        for (int n = 0; n < N; n++)
            for (int i = 0; i < D; i++) {
                X0[n * D + i] = p.m0[i];
                X1[n * D + i] = p.m1[i];
                for (int j = 0; j < D; j++) {
                    X0[n * D + i] += L0[i * D + j] * xi[n * D + j];
                    X1[n * D + i] += F1[i * D + j] * xi[n * D + j];
                }
            }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, D, D, D, 1.0, F1, D, F1, D, 0.0, FF, D);
        cr_expect(fv_max_abs_diff(D * D, FF, p.S1) <= 1e-12, "%s coupling: F1 F1^T - S1 up to %.3g", coupling_label[c],
                  fv_max_abs_diff(D * D, FF, p.S1));
        if (c != FV_COUPLING_INDEPENDENT) {
            fv_vfield f = {c ? FV_VFIELD_ROTATION : FV_VFIELD_OT, NULL, NULL};
            cr_assert_eq(fv_field_build(&fld, &p, c ? FV_FIELD_ROTATION : FV_FIELD_OT), FV_OK, "%s", fv_last_error());
            cr_assert_eq(fv_field_map(&fld, N, X0, T, &fw), FV_OK, "%s", fv_last_error());
            cr_expect(fv_max_abs_diff(N * D, T, X1) <= 1e-12, "%s coupling: X1 = m1 + F1 xi0 vs field.h map: %.3g",
                      coupling_label[c], fv_max_abs_diff(N * D, T, X1));
            /* the pair field at t = 0 is u = X1 - X0: v(X0, 0) = theta + Theta (X0 - m0) */
            cr_assert_eq(fv_vfield_params(&p, &f, 0.0, theta, Theta), FV_OK);
            double worst = 0.0;
            for (int n = 0; n < N; n++)
                for (int i = 0; i < D; i++) {
                    double v = theta[i];
                    for (int j = 0; j < D; j++)
                        v += Theta[i * D + j] * (X0[n * D + j] - p.m0[j]);
                    worst = fmax(worst, fabs(v - (X1[n * D + i] - X0[n * D + i])));
                }
            cr_expect(worst <= 1e-12, "%s field at t = 0 is not X1 - X0 (%.3g)", kind_label[f.kind], worst);
            fv_field_free(&fld);
        }
        fv_field_work_free(&fw);
        fv_problem_free(&p);
    }
}

/* ------------------------------------------------------------------------------------------------- */
/* Exact against Monte Carlo */

/* Every coupling and field kind on a d = 4 general-source problem, at two fixed times (one with the
 * bridge schedule and its derivative term) and over t ~ U(0,1). */
Test(variance_source, mc_every_coupling_and_field)
{
    fv_rng r = fv_rng_make(53, 0);
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < 3; j++) {
                fv_problem p;
                double theta[4], Theta[16], t = j == 0 ? 0.25 : j == 1 ? 0.7 : -1.0;
                char label[128];
                int bridge = j == 1;
                general_problem(&p, 4, &r, (fv_coupling)c, 60.0, 0.3, (fv_schedule)bridge, bridge);
                th_perturbed_ot(&p, &r, 0.2, 0.1, theta, Theta);
                fv_vfield f = {(fv_vfield_kind)k, theta, Theta};
                if (t < 0)
                    cr_assert_eq(fv_variance_integrable(&p, &f), FV_OK, "%s", fv_last_error());
                sprintf(label, "general source d=4 %s coupling, %s field, t=%.2f%s", coupling_label[c], kind_label[k],
                        t, bridge ? " bridge+f'" : "");
                th_variance_vs_mc(&p, &f, t, 40000, (uint64_t)(12 * c + 3 * k + j), 0.1, label);
                fv_problem_free(&p);
            }
}

/* Sigma = Q diag(lambda) Q^T with lambda log-spaced over [1e-3, 10] and Q the eigenvectors of a random
 * SPD matrix. */
static void ill_conditioned(size_t d, fv_rng *r, double *Sigma)
{
    double *A = malloc(2 * d * d * sizeof *A), *Q = A + d * d, w[64];
    fv_random_spd(d, 0.1, r, A);
    cr_assert_eq(fv_linalg_eigh(d, A, w, Q), FV_OK);
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < d; j++)
            A[i * d + j] = Q[i * d + j] * pow(10.0, -3.0 + 4.0 * (double)j / (double)(d - 1));
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d, (int)d, (int)d, 1.0, A, (int)d, Q, (int)d, 0.0, Sigma,
                (int)d);
    for (size_t i = 0; i < d; i++) /* exactly symmetric */
        for (size_t j = 0; j < i; j++)
            Sigma[i * d + j] = Sigma[j * d + i];
    free(A);
}

/* The backward field of the image issue: source N(mu, Sigma) (an ill-conditioned Gaussian fit), target
 * N(0, I), d = 20, the OT field on the OT and the independent coupling, constant noise. On the OT
 * coupling without noise the variance is zero (Proposition 1); otherwise exact against Monte Carlo at
 * three times and over t ~ U(0,1). */
Test(variance_source, backward_ill_conditioned_d20)
{
    enum { D = 20 };
    fv_rng r = fv_rng_make(59, 0);
    fv_problem p;
    fv_vfield f = {FV_VFIELD_OT, NULL, NULL};
    cr_assert_eq(fv_problem_alloc(&p, D), FV_OK);
    fv_rng_normal(&r, D, p.m0);
    ill_conditioned(D, &r, p.S0);
    cr_assert_eq(fv_problem_validate(&p), FV_OK, "%s", fv_last_error());
    double worst = 0.0;
    for (int k = 0; k <= 20; k++) {
        fv_var v;
        cr_assert_eq(fv_variance_at(&p, &f, k / 20.0, &v, NULL, NULL), FV_OK, "%s", fv_last_error());
        worst = fmax(worst, fmax(fabs(v.var_total), fabs(v.loss)));
    }
    cr_expect(worst <= 1e-10, "backward OT field on the OT coupling, sigma 0: variance or loss %.3g", worst);
    const double ts[4] = {0.05, 0.5, 0.95, -1.0};
    for (int c = 0; c < 2; c++)
        for (int s = 0; s < 2; s++) {
            p.coupling = c ? FV_COUPLING_INDEPENDENT : FV_COUPLING_OT;
            p.sigma = s ? 0.05 : 0.0;
            if (!c && !s)
                continue;
            for (int j = 0; j < 4; j++) {
                char label[128];
                sprintf(label, "backward d=20 %s coupling sigma=%.2f t=%.2f", coupling_label[p.coupling], p.sigma,
                        ts[j]);
                th_variance_vs_mc(&p, &f, ts[j], 40000, (uint64_t)(100 + 8 * c + 4 * s + j), 0.1, label);
            }
        }
    fv_problem_free(&p);
}

/* ------------------------------------------------------------------------------------------------- */
/* Checks */

Test(variance_source, general_source_accepted_invalid_rejected)
{
    fv_rng r = fv_rng_make(61, 0);
    fv_problem p;
    fv_var v;
    fv_vfield f = {FV_VFIELD_OT, NULL, NULL};
    general_problem(&p, 3, &r, FV_COUPLING_OT, 0.0, 0.1, FV_SCHEDULE_CONSTANT, 0);
    cr_expect_eq(fv_variance_check(&p, &f), FV_OK, "%s", fv_last_error());
    cr_expect_eq(fv_variance_integrated(&p, &f, 1e-8, &v, NULL), FV_OK, "%s", fv_last_error());
    double s00 = p.S0[0];
    p.S0[0] = -1.0;
    cr_expect_eq(fv_variance_at(&p, &f, 0.5, &v, NULL, NULL), FV_EINPUT);
    cr_expect(strstr(fv_last_error(), "--source-cov") != NULL, "%s", fv_last_error());
    p.S0[0] = s00;
    p.m0[1] = NAN;
    cr_expect_eq(fv_variance_at(&p, &f, 0.5, &v, NULL, NULL), FV_EINPUT);
    cr_expect(strstr(fv_last_error(), "--source-mean") != NULL, "%s", fv_last_error());
    fv_problem_free(&p);
}
