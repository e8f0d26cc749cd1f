"""_lib.py: loading libflowvar.so with ctypes, the C structs it needs mirrored, and the prototypes.

Which library: $FLOWVAR_LIB when set; else build/libflowvar.so of the repository the package comes
from (beside this source tree, or the one `pip install ./python` recorded in _origin.py); else the
system's libflowvar.so (ctypes.util.find_library, e.g. after `make install`).

The Structure classes below must match the C headers field for field (gaussian/problem.h, field.h,
variance.h, claims.h, src/core/ode.h, rng.h, src/nn/cfm.h); python/tests/test_layout.py (and
test_check.py for the claim rows) checks each against values the C side writes, so a change there
fails the tests instead of corrupting memory.

ctypes releases the GIL for the whole of every call into a CDLL, so long computations run while other
Python threads continue; the library keeps its error message per thread (src/core/error.c)."""

import ctypes
import ctypes.util
import os
from ctypes import POINTER, c_char, c_char_p, c_double, c_float, c_int, c_size_t, c_uint64, c_void_p

from . import errors

c_double_p = POINTER(c_double)
c_float_p = POINTER(c_float)


class Problem(ctypes.Structure):
    _fields_ = [("d", c_size_t), ("m0", c_double_p), ("S0", c_double_p), ("m1", c_double_p), ("S1", c_double_p),
                ("coupling", c_int), ("R", c_double_p), ("sigma", c_double), ("schedule", c_int),
                ("deriv_term", c_int)]


class Field(ctypes.Structure):
    _fields_ = [("kind", c_int), ("d", c_size_t), ("b", c_double_p), ("m0", c_double_p), ("m1", c_double_p),
                ("K", c_double_p), ("S0", c_double_p), ("S1", c_double_p), ("sigma", c_double), ("schedule", c_int),
                ("deriv_term", c_int), ("symmetric", c_int), ("V", c_double_p), ("l", c_double_p),
                ("Vb", c_double_p), ("norm0", c_double), ("norm1", c_double), ("cond_max", c_double)]


class FieldWork(ctypes.Structure):
    _fields_ = [("d", c_size_t), ("n", c_size_t), ("Y", c_double_p), ("Z", c_double_p), ("A", c_double_p),
                ("N", c_double_p), ("vec", c_double_p), ("piv", POINTER(c_int))]


class OdeOpts(ctypes.Structure):
    _fields_ = [("solver", c_int), ("steps", c_size_t), ("rtol", c_double), ("atol", c_double), ("t0", c_double),
                ("t1", c_double)]


class Rng(ctypes.Structure):
    _fields_ = [("seed", c_uint64), ("stream", c_uint64), ("pos", c_uint64)]


class VField(ctypes.Structure):
    _fields_ = [("kind", c_int), ("theta", c_double_p), ("Theta", c_double_p)]


class Var(ctypes.Structure):
    _fields_ = [("var_theta", c_double), ("var_Theta", c_double), ("var_total", c_double), ("loss", c_double)]


class MC(ctypes.Structure):
    _fields_ = [("var_theta", c_double), ("var_Theta", c_double), ("var_total", c_double), ("se_total", c_double),
                ("loss", c_double), ("n", c_size_t)]


class Claim(ctypes.Structure):
    _fields_ = [("name", c_char * 48), ("measured", c_char * 256), ("value", c_double), ("threshold", c_double),
                ("cmp", c_char), ("pass_", c_int)]


class CfmData(ctypes.Structure):
    _fields_ = [("id", c_uint64), ("kind", c_int), ("d", c_size_t), ("p", POINTER(Problem)), ("map", Field),
                ("map_work", FieldWork), ("gmm", c_void_p), ("npairs", c_size_t), ("a", c_double_p),
                ("b", c_double_p), ("targets", c_float_p), ("reverse", c_int), ("std_source", c_int),
                ("root0", c_double_p), ("root1", c_double_p), ("z", c_double_p), ("zcap", c_size_t)]


CLAIM_REPORT = ctypes.CFUNCTYPE(None, POINTER(Claim), c_void_p)

# Enums of the C headers, by the names the CLI uses.
COUPLINGS = {"ot": 0, "rotation": 1, "independent": 2}
SCHEDULES = {"constant": 0, "bridge": 1}
FIELDS = {"ot": 0, "rotation": 1, "markov": 2}
VFIELDS = {"ot": 0, "rotation": 1, "markov": 2, "custom": 3}
SOLVERS = {"euler": 0, "rk4": 1, "rk45": 2}
DATA_PROBLEM = 0

_PROTOTYPES = {
    "fv_last_error": (c_char_p, []),
    "fv_status_name": (c_char_p, [c_int]),
    "fv_problem_validate": (c_int, [POINTER(Problem)]),
    "fv_rotation_blocks": (None, [c_size_t, c_double, c_double_p]),
    "fv_field_build": (c_int, [POINTER(Field), POINTER(Problem), c_int]),
    "fv_field_free": (None, [POINTER(Field)]),
    "fv_field_work_alloc": (c_int, [POINTER(FieldWork), c_size_t, c_size_t]),
    "fv_field_work_free": (None, [POINTER(FieldWork)]),
    "fv_field_eval": (c_int, [POINTER(Field), c_double, c_size_t, c_double_p, c_double_p, POINTER(FieldWork)]),
    "fv_field_eval_times": (c_int, [POINTER(Field), c_size_t, c_double_p, c_size_t, c_double_p, c_double_p,
                                    POINTER(FieldWork)]),
    "fv_field_map": (c_int, [POINTER(Field), c_size_t, c_double_p, c_double_p, POINTER(FieldWork)]),
    "fv_field_singular_times": (c_int, [POINTER(Field), c_double_p, POINTER(c_size_t)]),
    "fv_field_transport": (c_int, [POINTER(Field), c_size_t, c_double_p, POINTER(OdeOpts), POINTER(c_size_t)]),
    "fv_ode_defaults": (OdeOpts, []),
    "fv_rng_make": (Rng, [c_uint64, c_uint64]),
    "fv_gaussian_sample": (c_int, [c_size_t, c_double_p, c_double_p, c_size_t, POINTER(Rng), c_double_p]),
    "fv_ot_map_matrix": (c_int, [c_size_t, c_double_p, c_double_p, c_double_p]),
    "fv_w2_squared": (c_int, [c_size_t, c_double_p, c_double_p, c_double_p, c_double_p, c_double_p]),
    "fv_variance_check": (c_int, [POINTER(Problem), POINTER(VField)]),
    "fv_variance_at": (c_int, [POINTER(Problem), POINTER(VField), c_double, POINTER(Var), c_double_p, c_double_p]),
    "fv_variance_integrated": (c_int, [POINTER(Problem), POINTER(VField), c_double, POINTER(Var), c_double_p]),
    "fv_variance_mc": (c_int, [POINTER(Problem), POINTER(VField), c_double, c_size_t, c_uint64, c_uint64,
                               POINTER(MC)]),
    "fv_var_minibatch": (None, [POINTER(Var), c_size_t]),
    "fv_crossover_sigma": (c_int, [POINTER(Problem), c_double, c_size_t, c_double, c_double, c_double_p,
                                   POINTER(c_int)]),
    "fv_claims_run": (None, [CLAIM_REPORT, c_void_p, POINTER(c_size_t), POINTER(c_size_t)]),
    "fv_cfm_data_init": (c_int, [POINTER(CfmData), c_int, POINTER(Problem), c_void_p, c_size_t, c_double_p,
                                 c_double_p, c_size_t]),
    "fv_cfm_data_free": (None, [POINTER(CfmData)]),
    "fv_cfm_pairs": (c_int, [POINTER(CfmData), c_uint64, c_uint64, c_size_t, c_double_p, c_double_p]),
    "fv_cfm_interpolate": (None, [POINTER(Problem), c_uint64, c_uint64, c_double, c_size_t, c_size_t, c_double_p,
                                  c_double_p, c_float_p, c_float_p, c_float_p]),
}


def _candidates():
    """The library paths to try, in the documented order, with where each came from."""
    env = os.environ.get("FLOWVAR_LIB")
    if env:
        return [(env, "$FLOWVAR_LIB")]
    here = os.path.dirname(os.path.abspath(__file__))
    found = [(os.path.join(here, "..", "..", "build", "libflowvar.so"), "the source tree's build/")]
    try:
        from . import _origin  # written by `pip install ./python`: the repository it was installed from
        found.append((os.path.join(_origin.REPOSITORY, "build", "libflowvar.so"), "the repository's build/"))
    except ImportError:
        pass
    system = ctypes.util.find_library("flowvar")
    if system:
        found.append((system, "the system"))
    return found


def _load():
    tried = []
    for path, origin in _candidates():
        # find_library returns a bare soname for the dynamic loader to resolve; other paths must exist
        if os.sep not in path or os.path.exists(path):
            return ctypes.CDLL(path), path
        tried.append(f"{path} ({origin})")
    raise ImportError("flowvar: cannot find libflowvar.so; build it with `make` in the repository, or set "
                      "FLOWVAR_LIB to its path. Tried: " + ("; ".join(tried) or "nothing"))


lib, path = _load()
for _name, (_restype, _argtypes) in _PROTOTYPES.items():
    _fn = getattr(lib, _name)
    _fn.restype = _restype
    _fn.argtypes = _argtypes

# GSL's default error handler aborts the process; flowvar checks GSL's return codes itself, and a
# Python process must get an exception, not an abort (the CLI's ODE and crossover code does the same).
lib.gsl_set_error_handler_off.restype = c_void_p
lib.gsl_set_error_handler_off()


def last_error():
    """The calling thread's C error message."""
    return lib.fv_last_error().decode("utf-8", "replace")


def ensure(status):
    """Raise the exception of a failed C call, with its message; nothing for FV_OK."""
    if status != errors.FV_OK:
        raise errors.from_status(status, last_error())


def dptr(a):
    """A double* to a float64 C-contiguous array (None for NULL); the caller keeps `a` alive."""
    return None if a is None else a.ctypes.data_as(c_double_p)


def fptr(a):
    return a.ctypes.data_as(c_float_p)
