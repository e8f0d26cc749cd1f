#!/usr/bin/env python3
"""Write the small safetensors fixtures that tests/test_safetensors.c reads, made by the official
python package (safetensors.numpy.save_file), so the C reader is checked against real files and
the C writer is checked byte for byte against the official writer.

Run from the repository root:
    python3 -m pip install safetensors numpy
    python3 tests/oracle/make_safetensors_fixtures.py
The values are simple closed forms that tests/test_safetensors.c recomputes exactly in C; if you
change a formula or a name here, change the matching one there (search for the fixture's name).
"""
import json
import os
import struct

import numpy as np
from safetensors.numpy import save_file

OUT = os.path.join("tests", "fixtures", "safetensors")


def path(name):
    return os.path.join(OUT, name)


def metadata_order(file):
    """The order in which the file's header lists the __metadata__ keys."""
    with open(file, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))  # dicts keep the file's order
    return list(header.get("__metadata__", {}))


def save_with_sorted_metadata(tensors, metadata, file):
    """save_file writes __metadata__ in Rust HashMap order, which is random per call; the C writer
    sorts the keys. Save until the official writer happens to emit them sorted, so the fixture is
    still the package's own output and comparable byte for byte."""
    for _ in range(10000):
        save_file(tensors, file, metadata=metadata)
        if metadata_order(file) == sorted(metadata):
            return
    raise SystemExit("save_file never wrote the metadata keys in sorted order")


def mixed():
    """Every supported dtype, scalar to 3-D, an empty tensor, names that need JSON escapes."""
    i = np.arange
    return {
        # C: weight[k] = k * 0.25f - 0.5f, k = 0..5, F32 (2, 3)
        "weight": (i(6).reshape(2, 3) * 0.25 - 0.5).astype(np.float32),
        # C: bias[k] = (float)(k * 0.1 - 0.3), k = 0..2, F32 (3,)
        "bias": (i(3) * 0.1 - 0.3).astype(np.float32),
        # C: scale = -2.718281828459045, F64 ()
        "scale": np.array(-2.718281828459045),
        # C: grid[k] = k * 1.5 + 0.5, k = 0..7, F64 (2, 2, 2)
        "grid": i(8).reshape(2, 2, 2) * 1.5 + 0.5,
        # C: steps[k] = k * k - 3, k = 0..3, I64 (4,)
        "steps": (i(4) * i(4) - 3).astype(np.int64),
        # C: mask[k] = k * 50 + 5, k = 0..4, U8 (5,)
        "mask": (i(5) * 50 + 5).astype(np.uint8),
        # C: empty, F32 (0, 3)
        "empty": np.zeros((0, 3), dtype=np.float32),
        # C: "layer.0/w\xc3\xa9" = {7.0f}, F32 (1,)
        "layer.0/w\u00e9": np.array([7.0], dtype=np.float32),
        # C: "odd \"name\"\n" = {1, 2}, U8 (2,)
        'odd "name"\n': np.array([1, 2], dtype=np.uint8),
    }


MIXED_METADATA = {
    "format": "flowvar",
    "note": 'tab\there "quoted" caf\u00e9 \u2713',
    "step": "1200",
}


def main():
    os.makedirs(OUT, exist_ok=True)
    save_with_sorted_metadata(mixed(), MIXED_METADATA, path("mixed.safetensors"))

    # C: a = {1.5f, -2.0f} F32 (2,), b = {1, 2, 3} U8 (3,); no metadata (header needs padding)
    save_file({"a": np.array([1.5, -2.0], dtype=np.float32),
               "b": np.array([1, 2, 3], dtype=np.uint8)}, path("nometa.safetensors"))

    # C: no tensors, no metadata: "{}" padded to 8 bytes
    save_file({}, path("empty.safetensors"))

    # F16: read by the C reader and converted to float by fv_st_get_as_f32 (not by fv_st_get_f32).
    save_file({"half": np.array([1.0, 2.0], dtype=np.float16)}, path("f16.safetensors"))


if __name__ == "__main__":
    main()
