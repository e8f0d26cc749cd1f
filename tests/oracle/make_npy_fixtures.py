#!/usr/bin/env python3
"""Write the small NPY fixtures that tests/test_io.c reads, so the C reader is checked against
files made by numpy itself rather than by our own writer.

Run from the repository root:  python3 tests/oracle/make_npy_fixtures.py
The values are simple closed forms so tests/test_io.c can recompute them exactly in C; if you
change a formula here, change the matching one there (search for the fixture's file name).
"""
import io
import os

import numpy as np

OUT = os.path.join("tests", "fixtures", "npy")


def path(name):
    return os.path.join(OUT, name)


def save(name, array, version=None):
    with open(path(name), "wb") as f:
        np.lib.format.write_array(f, array, version=version, allow_pickle=False)


def valid_bytes(array):
    """The bytes np.save would write; used as the base of the damaged fixtures."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, version=(1, 0), allow_pickle=False)
    return buf.getvalue()


def main():
    os.makedirs(OUT, exist_ok=True)

    # C: f64_3x4[i] = i * 0.37 - 1.1, i = 0..11, shape (3, 4)
    f64_3x4 = np.arange(12).reshape(3, 4) * 0.37 - 1.1
    save("f64_3x4.npy", f64_3x4)

    # C: f32_2x5[i] = (float)(i * 0.1 - 0.3), i = 0..9, shape (2, 5)
    f32_2x5 = (np.arange(10).reshape(2, 5) * 0.1 - 0.3).astype(np.float32)
    save("f32_2x5.npy", f32_2x5)

    # C: -2.718281828459045, shape ()
    save("scalar_f64.npy", np.array(-2.718281828459045))

    # C: v2_f64_2x3[i] = i * 1.5 + 0.5, i = 0..5, shape (2, 3); version 2.0 header (4-byte length)
    save("v2_f64_2x3.npy", np.arange(6).reshape(2, 3) * 1.5 + 0.5, version=(2, 0))

    # C: v3_f32_4[i] = (float)(i * 0.25 - 0.5), i = 0..3, shape (4,); version 3.0 header
    save("v3_f32_4.npy", (np.arange(4) * 0.25 - 0.5).astype(np.float32), version=(3, 0))

    # Rejected files.
    save("fortran_3x4.npy", np.asfortranarray(f64_3x4))
    save("int64_6.npy", np.arange(6, dtype=np.int64))
    save("bigendian_f8_4.npy", np.arange(4, dtype=">f8"))

    good = valid_bytes(f64_3x4)
    with open(path("truncated_f64_3x4.npy"), "wb") as f:
        f.write(good[:-5])
    with open(path("trailing_f64_3x4.npy"), "wb") as f:
        f.write(good + b"junk\n")
    with open(path("badmagic.npy"), "wb") as f:
        f.write(b"\x93NUMPZ" + good[6:])


if __name__ == "__main__":
    main()
