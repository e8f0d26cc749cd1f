/* fuzz_checkpoint.c: libFuzzer harness for the checkpoint loader (src/nn/checkpoint.c) on top of the
 * safetensors reader: the MLP path reads the configuration from the metadata (fv_checkpoint_config),
 * builds that network and loads the tensor set into it; a file marked "model.kind" = "unet" loads
 * into the U-Net of fuzz/corpus/checkpoint's U-Net seed (a run's options give that configuration, as
 * they do in flowvar). A trainer keeps an EMA when the file holds an "ema." tensor. */
#include "core/safetensors.h"
#include "fuzz/fuzz.h"
#include "nn/checkpoint.h"

#include <string.h>

/* Networks above this many parameters are skipped: a run's own options bound the network flowvar
 * builds (and must match the stored configuration), so a huge stored config is never built there. */
#define MAX_PARAMS (1u << 20)

static int has_ema(const fv_st_file *f)
{
    for (size_t i = 0; i < f->ntensors; i++)
        if (strncmp(f->tensors[i].name, "ema.", 4) == 0)
            return 1;
    return 0;
}

/* The U-Net of the seed: flowvar train --model unet --data cifar10 --channels 32 --channel-mult 1. */
static fv_unet_config seed_unet(void)
{
    fv_unet_config c;
    memset(&c, 0, sizeof c);
    c.in_channels = 3;
    c.height = c.width = 32;
    c.num_channels = 32;
    c.num_res_blocks = 1;
    c.nlevels = 1;
    c.channel_mult[0] = 1;
    c.num_heads = 1;
    return c;
}

static int build(const fv_st_file *f, const char *path, fv_trainer *tr)
{
    fv_adam_config ac = fv_adam_defaults();
    ac.ema_decay = has_ema(f) ? 0.999f : 0.0f;
    const char *kind = fv_st_meta(f, "model.kind");
    if (kind && strcmp(kind, "unet") == 0) {
        fv_unet_config uc = seed_unet();
        return fv_trainer_unet_init(tr, &uc, &ac, 0, 1);
    }
    fv_mlp_config mc;
    int st = fv_checkpoint_config(f, path, &mc);
    if (st || (st = fv_mlp_config_check(&mc)))
        return st;
    if (fv_mlp_count_params(&mc) > MAX_PARAMS)
        return -1;
    return fv_trainer_cpu_init(tr, &mc, &ac, 0, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fz_write("checkpoint.safetensors", data, size);
    fv_st_file f;
    if (fv_st_read(path, &f) == 0) {
        fv_trainer tr;
        memset(&tr, 0, sizeof tr);
        if (build(&f, path, &tr) == 0) {
            uint64_t step;
            fv_loss_log log = {0};
            fv_checkpoint_load(&f, path, &tr, &step, &log);
            fv_loss_log_free(&log);
            fv_trainer_free(&tr);
        }
    }
    fv_st_free(&f);
    return 0;
}
