#!/usr/bin/env python3
"""export-torchcfm.py: turn a torchcfm checkpoint (.pt) into the files `flowvar import` reads.

    python3 scripts/export-torchcfm.py MODEL.pt --out DIR [options]

MODEL.pt is either what torchcfm's examples/images/cifar10/train_cifar10.py saves, a dict
{"net_model", "ema_model", "optim", "sched", "step"}, or a bare state_dict (torch.save(model.state_dict())).
Writes
    DIR/weights.safetensors  the network's weights ("net_model", or the bare state_dict)
    DIR/ema.safetensors      the EMA weights ("ema_model"; only when the checkpoint has them)
    DIR/config.json          the architecture, under the names of flowvar train's flags, for
                             `flowvar import --config DIR/config.json`
A "module." prefix (DataParallel, DistributedDataParallel) is stripped; the optimizer and scheduler
states are not exported (flowvar's Adam starts from zero moments when an imported run is trained on).

The architecture is inferred from the tensors' shapes where they determine it: the MLP's dimension, width
and depth (torchcfm.models.MLP: SELU, the time appended to x), the U-Net's channels, channel multipliers,
residual blocks per level and the levels with attention. What the shapes cannot tell comes from the
options below, whose defaults are train_cifar10.py's: the image size (--image-size 32, which turns the
attention levels into resolutions), the attention heads (--num-heads 4, --num-head-channels 64) and the
dropout (--dropout 0.1, used only when training on). Needs python3 with torch and safetensors.
"""
import argparse
import json
import os
import re
import sys

import torch
from safetensors.torch import save_file

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def fail(msg):
    sys.stderr.write("export-torchcfm: error: %s\n" % msg)
    sys.exit(2)


def strip_module(sd):
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def mlp_config(sd):
    layers = sorted(int(m.group(1)) for k in sd for m in [re.fullmatch(r"net\.(\d+)\.weight", k)] if m)
    if layers != list(range(0, 2 * len(layers), 2)):
        fail("the net.N.weight tensors are not those of torchcfm's MLP (Linear layers at even N)")
    w0 = sd["net.0.weight"]
    return {"format": "torchcfm-mlp", "model": "mlp", "width": int(w0.shape[0]), "depth": len(layers) - 1,
            "act": "selu", "shape": [int(w0.shape[1]) - 1]}


def unet_config(sd, args):
    ch = int(sd["input_blocks.0.0.weight"].shape[0])
    levels, res_blocks, attn_levels = [], None, []
    i, level, count = 1, 0, 0
    while "input_blocks.%d.0.in_layers.0.weight" % i in sd or "input_blocks.%d.0.op.weight" % i in sd:
        if "input_blocks.%d.0.op.weight" % i in sd:  # a downsampling convolution ends the level
            res_blocks = count if res_blocks is None else res_blocks
            level, count = level + 1, 0
        else:
            cout = int(sd["input_blocks.%d.0.out_layers.3.weight" % i].shape[0])
            if count == 0:
                levels.append(cout // ch)
            if "input_blocks.%d.1.qkv.weight" % i in sd and level not in attn_levels:
                attn_levels.append(level)
            count += 1
        i += 1
    res_blocks = count if res_blocks is None else res_blocks
    size = args.image_size
    if size % (1 << (len(levels) - 1)):
        fail("--image-size %d is not divisible by 2^%d for %d levels" % (size, len(levels) - 1, len(levels)))
    heads = args.num_head_channels if args.num_head_channels > 0 else 0
    # torchcfm always builds the middle block's attention; the levels' attention follows attention_resolutions
    attention = ",".join(str(size >> l) for l in attn_levels)
    return {"format": "torchcfm-unet", "model": "unet", "channels": ch,
            "channel-mult": ",".join(str(m) for m in levels), "res-blocks": res_blocks, "attention": attention,
            "heads": args.num_heads, "head-channels": heads, "dropout": args.dropout,
            "shape": [int(sd["input_blocks.0.0.weight"].shape[1]), size, size]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="torchcfm .pt checkpoint or bare state_dict")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--image-size", type=int, default=32, help="U-Net: image height and width (default 32)")
    ap.add_argument("--num-heads", type=int, default=4, help="U-Net: attention heads (default 4)")
    ap.add_argument("--num-head-channels", type=int, default=64,
                    help="U-Net: channels per head, -1 to use --num-heads (default 64)")
    ap.add_argument("--dropout", type=float, default=0.1, help="U-Net: dropout when training on (default 0.1)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32",
                    help="dtype of the written weights (default f32; f16 and bf16 halve the files)")
    args = ap.parse_args()
    try:
        ckpt = torch.load(args.model, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises many kinds)
        fail("%s: cannot be read as a torch checkpoint: %s" % (args.model, e))
    if not isinstance(ckpt, dict):
        fail("%s: holds a %s, not a state_dict or a checkpoint dict" % (args.model, type(ckpt).__name__))
    if "net_model" in ckpt:
        net, ema = ckpt["net_model"], ckpt.get("ema_model")
    else:
        net, ema = ckpt, None
    net = strip_module(net)
    ema = strip_module(ema) if ema is not None else None
    if any(not torch.is_tensor(v) for v in net.values()):
        fail("%s: the state_dict holds entries that are not tensors" % args.model)
    if "net.0.weight" in net:
        config = mlp_config(net)
    elif "input_blocks.0.0.weight" in net:
        config = unet_config(net, args)
    else:
        fail("%s: neither torchcfm's MLP (net.0.weight) nor its U-Net (input_blocks.0.0.weight)" % args.model)
    if ema is not None and set(ema) != set(net):
        fail("%s: ema_model and net_model hold different tensors" % args.model)
    os.makedirs(args.out, exist_ok=True)
    dt = DTYPES[args.dtype]
    save_file({k: v.detach().to(dt).contiguous() for k, v in net.items()}, os.path.join(args.out, "weights.safetensors"))
    if ema is not None:
        save_file({k: v.detach().to(dt).contiguous() for k, v in ema.items()}, os.path.join(args.out, "ema.safetensors"))
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
        f.write("\n")
    print("export-torchcfm: %s: %d tensors%s, %s; config %s" % (
        args.model, len(net), " + EMA" if ema is not None else "", args.dtype, json.dumps(config)))


if __name__ == "__main__":
    main()
