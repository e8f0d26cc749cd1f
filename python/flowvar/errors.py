"""flowvar's exceptions: one class per C status code of src/core/error.h.

Every failing call of the library becomes an exception carrying the C status and the C message
(fv_last_error, read on the calling thread: the C error slot is thread-local). Python-side checks
of arguments raise the same classes (InputError for a bad value, TypeError for a bad type)."""

# The status codes of src/core/error.h (enum fv_status).
FV_OK = 0
FV_EINPUT = 1
FV_ESINGULAR = 2
FV_EDIVERGE = 3
FV_ENOMEM = 4
FV_EIO = 5
FV_ENUMERIC = 6
FV_EDEVICE = 7


class Error(Exception):
    """A failure reported by flowvar. `status` is the C status code, `message` the C message."""

    status = None

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class InputError(Error, ValueError):
    """Bad input: a value, a shape, a problem that is not valid (FV_EINPUT)."""

    status = FV_EINPUT


class SingularError(Error):
    """A matrix the math inverts is singular or ill-conditioned, e.g. a field at a singular time
    (FV_ESINGULAR). The message names the time and the condition number."""

    status = FV_ESINGULAR


class NumericalError(Error):
    """A library routine (LAPACK, GSL) or an adaptive quadrature failed (FV_ENUMERIC)."""

    status = FV_ENUMERIC


class DivergenceError(NumericalError):
    """An integral or iteration diverges, e.g. a singular time inside [0, 1] (FV_EDIVERGE)."""

    status = FV_EDIVERGE


class OutOfMemoryError(Error, MemoryError):
    """An allocation failed (FV_ENOMEM)."""

    status = FV_ENOMEM


class FileError(Error, OSError):
    """The operating system refused a read or a write (FV_EIO)."""

    status = FV_EIO


class DeviceError(Error):
    """The CUDA runtime or cuBLAS failed (FV_EDEVICE)."""

    status = FV_EDEVICE


BY_STATUS = {
    cls.status: cls
    for cls in (InputError, SingularError, NumericalError, DivergenceError, OutOfMemoryError, FileError, DeviceError)
}


def from_status(status, message):
    """The exception for a C status code; an unknown code gives the base class."""
    return BY_STATUS.get(status, Error)(message, status)
