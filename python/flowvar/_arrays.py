"""_arrays.py: turning Python inputs into the float64 C-contiguous arrays and plain numbers the C
library takes, refusing what cannot be converted with TypeError and bad values with InputError."""

import numbers

import numpy as np

from .errors import InputError


def real_array(x, name):
    """x as a float64 C-contiguous array; TypeError unless it holds real numbers (bool, complex,
    strings and objects are refused rather than guessed at); InputError for NaN or infinity."""
    a = np.asarray(x)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected real numbers, got an array of dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise InputError(f"{name} has a non-finite entry")
    return a


def vector(x, name, d=None):
    """A 1-D array (of length d when given)."""
    a = real_array(x, name)
    if a.ndim != 1 or (d is not None and a.shape[0] != d):
        want = f"({d},)" if d is not None else "1-D"
        raise InputError(f"{name} has shape {a.shape}, expected {want}")
    return a


def matrix(x, name, d):
    """A d x d array; a flat list of d*d numbers (row-major, as the CLI takes it) is reshaped."""
    a = real_array(x, name)
    if a.ndim == 1 and a.shape[0] == d * d:
        a = a.reshape(d, d)
    if a.shape != (d, d):
        raise InputError(f"{name} has shape {a.shape}, expected ({d}, {d}) or {d * d} numbers")
    return a


def points(x, name, d):
    """Rows of d numbers: (n, d), or one point (d,). Returns the (n, d) array and whether x was one
    point (so the result can take the same shape)."""
    a = real_array(x, name)
    single = a.ndim == 1
    if single:
        a = a.reshape(1, -1)
    if a.ndim != 2 or a.shape[1] != d or a.shape[0] == 0:
        raise InputError(f"{name} has shape {np.shape(x)}, expected (n, {d}) with n >= 1, or ({d},)")
    return a, single


def number(x, name):
    """A finite real number."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(x).__name__}")
    x = float(x)
    if not np.isfinite(x):
        raise InputError(f"{name} must be finite, got {x}")
    return x


def count(x, name, minimum):
    """An integer >= minimum that fits the C side's 64-bit size_t and uint64_t (ctypes would wrap it)."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {type(x).__name__}")
    if not minimum <= x < 2 ** 64:
        raise InputError(f"{name} must be in [{minimum}, 2^64), got {x}")
    return int(x)


def choice(x, name, table):
    """The C enum value of a name among table's keys."""
    if not isinstance(x, str):
        raise TypeError(f"{name}: expected one of {', '.join(table)}, got {type(x).__name__}")
    if x not in table:
        raise InputError(f"{name} must be one of {', '.join(table)}, got '{x}'")
    return table[x]


def times(t, name="t"):
    """Times in [0, 1]: a float gives a scalar flag and a 1-element array; an array gives 1-D times."""
    scalar = np.ndim(t) == 0
    a = real_array(t, name).reshape(-1)
    if a.size == 0:
        raise InputError(f"{name} is empty")
    bad = a[(a < 0) | (a > 1)]
    if bad.size:
        raise InputError(f"{name} must be in [0, 1], got {bad[0]:g}")
    return a, scalar
