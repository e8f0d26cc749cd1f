"""flowvar: the closed-form engine of flowvar (fields, transport, OT, exact gradient variance,
crossover, claims) on numpy arrays, over libflowvar.so with ctypes. See python/README.md."""

from .core import Problem, check, crossover, field, ot_map, singular_times, transport, variance, w2
from .errors import (DeviceError, DivergenceError, Error, FileError, InputError, NumericalError, OutOfMemoryError,
                     SingularError)
from .gap import torch_gap
from ._lib import path as library_path

__all__ = ["Problem", "field", "transport", "ot_map", "w2", "singular_times", "variance", "crossover", "check",
           "torch_gap", "Error", "InputError", "SingularError", "NumericalError", "DivergenceError",
           "OutOfMemoryError", "FileError", "DeviceError", "library_path"]
