/* checkpoint.h: a trainer's whole state in one safetensors file: the weights under torch's
 * state_dict names ("net.0.weight", ... for the MLP; torchcfm's UNetModelWrapper names for the
 * U-Net), the EMA weights ("ema.net.0.weight", ...), Adam's moments ("adam.m.net.0.weight",
 * "adam.v. ..."), the MLP's fixed Fourier matrix ("fourier.B", when it has one), the loss log ("train.log",
 * n x 3: step, loss, gradient norm), and metadata: the MLP config ("model.d", "model.width",
 * "model.depth", "model.act", "model.temb", "model.fourier", "model.fourier_scale") or "model.kind" =
 * "unet", "step", "adam.step" and the run's own configuration keys.
 *
 * Optimizer state: a checkpoint holds Adam's whole state (adam.m.*, adam.v.*, "adam.step") unless its
 * metadata says FV_CHECKPOINT_OPTIMIZER_KEY = "none" (the runs `flowvar import` makes from weights
 * trained elsewhere): then it holds none of it, and loading it leaves Adam at zero moments and step 0.
 * Any other checkpoint missing a piece of that state is refused like any missing tensor. */
#ifndef FV_CHECKPOINT_H
#define FV_CHECKPOINT_H

#include "core/safetensors.h"
#include "nn/cfm.h"
#include "nn/trainer.h"

#include <stdint.h>

/* Written atomically: a crash or a full disk leaves the previous checkpoint in place. */
int fv_checkpoint_save(const char *path, const fv_trainer *tr, uint64_t step, const fv_loss_log *log, size_t nmeta,
                       const char *const *keys, const char *const *values);

#define FV_CHECKPOINT_OPTIMIZER_KEY "optimizer"

/* The weights (and EMA) alone, at step 0 with an empty loss log, marked as holding no optimizer state. */
int fv_checkpoint_save_weights(const char *path, const fv_trainer *tr, size_t nmeta, const char *const *keys,
                               const char *const *values);

/* 0 for a checkpoint marked as holding no optimizer state, else 1. */
int fv_checkpoint_has_optimizer(const fv_st_file *f);

/* The MLP configuration stored in an opened checkpoint; FV_EINPUT naming what is missing (or that the
 * file holds a U-Net, marked "model.kind" = "unet": its configuration is the run's options). */
int fv_checkpoint_config(const fv_st_file *f, const char *path, fv_mlp_config *mc);

/* Step counts in metadata ("step", "adam.step", the run's "opt.steps") are at most 2^53: the loss log
 * stores steps as doubles, exact that far, and no run comes near it. */
#define FV_CHECKPOINT_MAX_STEP (UINT64_C(1) << 53)

/* A step count stored as metadata `key`: FV_EINPUT unless it is digits only and at most
 * FV_CHECKPOINT_MAX_STEP. */
int fv_checkpoint_step_meta(const fv_st_file *f, const char *path, const char *key, uint64_t *out);

/* Load weights, EMA, Adam state, step and log into a trainer built with the checkpoint's config.
 * FV_EINPUT for a tensor set that is not the trainer's: listing (the first few of each and a count) the
 * tensors missing, those the trainer does not hold (another network's, EMA the run does not keep), those
 * of the wrong shape and those not F32; naming the tensor or key for a non-finite value in any loaded
 * tensor (weights, EMA, Adam moments), a negative Adam second moment, step metadata that is not a
 * whole number up to FV_CHECKPOINT_MAX_STEP. */
int fv_checkpoint_load(const fv_st_file *f, const char *path, fv_trainer *tr, uint64_t *step, fv_loss_log *log);

/* Weights trained elsewhere, under torch's state_dict names, into a freshly built trainer: `w` (read from
 * wpath) holds the weights, and, under `ema_prefix` (NULL: none), the EMA weights; `ema` (NULL: none, read
 * from epath) a file of EMA weights alone. A DataParallel "module." prefix (after the EMA prefix) is
 * ignored; F16, BF16 and F64 tensors are converted to float. The tensor sets must be exactly the
 * network's (FV_EINPUT as for fv_checkpoint_load, the file named once); with no EMA weights given a
 * trainer that keeps an EMA starts it at the weights. Adam starts from zero moments at step 0. */
int fv_checkpoint_import(fv_trainer *tr, const fv_st_file *w, const char *wpath, const char *ema_prefix,
                         const fv_st_file *ema, const char *epath);

#endif
