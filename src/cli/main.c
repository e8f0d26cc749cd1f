/* main.c: `flowvar COMMAND [options]`: dispatch to one file per command. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"field", fv_cmd_field, "evaluate a closed-form field (OT, rotation, Markov) or the empirical minimizer at points"},
    {"transport", fv_cmd_transport, "integrate points from t = 0 to 1 along a closed-form or the empirical field"},
    {"w2", fv_cmd_w2, "W2 distance between two Gaussians and the OT map matrix"},
    {"variance", fv_cmd_variance, "exact (and Monte-Carlo) variance of the CFM loss gradient"},
    {"crossover", fv_cmd_crossover, "critical noise sigma* where OT and rotational fields' variances cross"},
    {"figures", fv_cmd_figures, "regenerate the variance figures (TSV + gnuplot PNG/SVG)"},
    {"train", fv_cmd_train, "train a vector field (MLP, or U-Net on images) with conditional flow matching"},
    {"sample", fv_cmd_sample, "integrate a trained field from given or fresh sources"},
    {"import", fv_cmd_import, "a run folder from a torchcfm MLP or U-Net trained elsewhere (safetensors)"},
    {"eval", fv_cmd_eval, "a trained network's v(x, t) at points and times, beside a closed form"},
    {"gap", fv_cmd_gap, "approximation gap of a trained field against a closed form, over t"},
    {"floor", fv_cmd_floor, "loss floor L*(t) of a finite data set: the smallest CFM loss any field can reach"},
    {"gradvar", fv_cmd_gradvar, "per-sample gradient variance of a trained network's weights, over t"},
    {"copies", fv_cmd_copies, "copies among a run's samples: distances to the nearest two training points"},
    {"gmm", fv_cmd_gmm, "Table 1 on Gaussian mixtures: memorization and generalization MMD"},
    {"memorize", fv_cmd_memorize, "Tables 2 and 3 on images: memorization of shuffled or regenerated pairs of a known OT map"},
    {"reflow", fv_cmd_reflow, "rounds of ReFlow with and without noise: how far the coupling moves toward OT"},
    {"fit", fv_cmd_fit, "fit a Gaussian to an image set (Fashion-MNIST, CIFAR-10): moments, spectrum, pictures"},
    {"reproduce", fv_cmd_reproduce, "regenerate the paper's results into a report (scripts/reproduce; --images for images)"},
    {"check", fv_cmd_check, "verify the paper's propositions numerically, one PASS/FAIL row per claim"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: flowvar COMMAND [options]   (flowvar COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "flowvar: error: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
