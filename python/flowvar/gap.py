"""gap.py: torch_gap, the approximation gap of any Python vector field (a numpy function or a torch
module) against a closed-form field, measured on the same rows `flowvar gap` draws: the library's own
samplers (fv_cfm_pairs and fv_cfm_interpolate of src/nn/cfm.c) through ctypes, so a user's network is
compared with the closed forms without leaving Python. torch is imported only if the caller uses it."""

import sys
from ctypes import byref

import numpy as np

from . import _arrays as A
from . import _lib
from ._lib import dptr, ensure, fptr, lib
from .core import _problem, field as closed_field
from .errors import InputError


def _is_torch_module(fn):
    torch = sys.modules.get("torch")  # a torch module exists only if its caller imported torch
    return torch is not None and isinstance(fn, torch.nn.Module)


def _call_torch(module, x, t):
    import torch

    param = next(module.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    with torch.no_grad():
        out = module(torch.as_tensor(x, dtype=dtype, device=device), torch.as_tensor(t, dtype=dtype, device=device))
    return out.detach().cpu().numpy()


def _evaluate(fn, x, t):
    """fn at the rows x (n x d, float64) and their times t (n,): as float64 (n, d), finite."""
    out = _call_torch(fn, x, t) if _is_torch_module(fn) else fn(x, t)
    if hasattr(out, "detach"):  # a plain function that returned a torch tensor
        out = out.detach().cpu().numpy()
    try:
        out = A.real_array(out, "the output of fn")
    except InputError as e:
        raise InputError(f"{e} at t = {t[0]:g}") from None
    if out.shape != x.shape:
        raise InputError(f"fn returned shape {out.shape} for x of shape {x.shape}")
    return out


def _grid(t_grid):
    """An int N: the times (k + 0.5)/N of the CLI's --t-grid; else an array of times."""
    if isinstance(t_grid, (int, np.integer)) and not isinstance(t_grid, bool):
        N = A.count(t_grid, "t_grid", 1)
        return (np.arange(N) + 0.5) / N
    return A.times(t_grid, "t_grid")[0]


def torch_gap(fn, problem, field="ot", t_grid=20, n=4096, seed=1):
    """E|fn(x, t) - v_closed(x, t)|^2 with its standard error at each time of t_grid (an int N: the
    times (k + 0.5)/N, as `flowvar gap --t-grid N`; or an array of times), over n rows x of the
    problem's interpolant at that time, drawn exactly as `flowvar gap --seed seed` draws them for a
    Gaussian run (time k uses step k; x rounded to float32 as a network sees it). v_closed is the
    closed-form `field` ("ot", "rotation", "markov"). fn(x, t) takes x (n, d) and t (n,) as float64
    numpy arrays and returns (n, d), numpy or torch; a torch.nn.Module is called under no_grad on
    float32 tensors (its parameters' dtype and device). Returns a dict of arrays t, gap, gap_se."""
    p = _problem(problem)
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    ts = _grid(t_grid)
    n, seed, d = A.count(n, "n", 2), A.count(seed, "seed", 0), p.d
    gap, se = np.empty(ts.size), np.empty(ts.size)
    data = _lib.CfmData()
    ensure(lib.fv_cfm_data_init(byref(data), _lib.DATA_PROBLEM, byref(p._c), None, 0, None, None, n))
    try:
        x01 = np.empty((2, n, d))
        xt, u = np.empty((n, d), np.float32), np.empty((n, d), np.float32)
        tt = np.empty(n, np.float32)
        for k, t in enumerate(ts):
            ensure(lib.fv_cfm_pairs(byref(data), seed, k, n, dptr(x01[0]), dptr(x01[1])))
            lib.fv_cfm_interpolate(byref(p._c), seed, k, t, n, d, dptr(x01[0]), dptr(x01[1]), fptr(xt), fptr(tt),
                                   fptr(u))
            x = xt.astype(np.float64)
            e = ((_evaluate(fn, x, tt.astype(np.float64)) - closed_field(p, field, x, t)) ** 2).sum(axis=1)
            gap[k] = e.mean()
            # the standard error as src/nn/cfm.c's fv_cfm_gap forms it
            se[k] = np.sqrt(max((e * e).mean() - gap[k] ** 2, 0.0) / (n - 1))
    finally:
        lib.fv_cfm_data_free(byref(data))
    return {"t": ts, "gap": gap, "gap_se": se}
