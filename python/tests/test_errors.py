"""Errors: every C status code maps to its exception class, failures carry the C message (the CLI's
message, word for word), and bad arguments are refused before they reach C (TypeError for a type,
InputError, a ValueError, for a value): never a crash and never a silent NaN."""

import subprocess
from ctypes import byref

import numpy as np
import pytest
from conftest import FLOWVAR

import flowvar
from flowvar import _lib, errors

EXPECTED = {
    errors.FV_EINPUT: flowvar.InputError,
    errors.FV_ESINGULAR: flowvar.SingularError,
    errors.FV_EDIVERGE: flowvar.DivergenceError,
    errors.FV_ENOMEM: flowvar.OutOfMemoryError,
    errors.FV_EIO: flowvar.FileError,
    errors.FV_ENUMERIC: flowvar.NumericalError,
    errors.FV_EDEVICE: flowvar.DeviceError,
}


def test_every_c_status_code_has_its_class():
    codes = [k for k in range(1, 64) if _lib.lib.fv_status_name(k) != b"unknown status"]
    assert codes == sorted(EXPECTED), "the C library's status codes are the ones mapped here"
    for code, cls in EXPECTED.items():
        e = errors.from_status(code, "msg")
        assert type(e) is cls, f"status {code} ({_lib.lib.fv_status_name(code).decode()}) maps to {cls.__name__}"
        assert e.status == code and e.message == "msg", f"status {code}: the exception keeps status and message"
        assert isinstance(e, flowvar.Error), f"{cls.__name__} is a flowvar.Error"
    assert type(errors.from_status(99, "x")) is flowvar.Error, "an unknown status gives the base class"
    assert issubclass(flowvar.InputError, ValueError), "bad input is a ValueError"
    assert issubclass(flowvar.DivergenceError, flowvar.NumericalError), "a divergence is a numerical failure"


def cli_message(*args):
    r = subprocess.run([FLOWVAR, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 2, f"the CLI refuses flowvar {' '.join(map(str, args))} with exit 2"
    return r.stderr.strip().removeprefix("flowvar: error: ")


def test_invalid_problem_raises_input_error_with_cli_message(reference):
    with pytest.raises(flowvar.InputError) as e:
        flowvar.Problem([1, -0.5], [2, 3, 3, 1])
    assert e.value.status == errors.FV_EINPUT, "status FV_EINPUT"
    assert e.value.message == cli_message("w2", "--target-mean", "1,-0.5", "--target-cov", "2,3,3,1"), \
        "the message is the CLI's"


def test_singular_time_raises_with_time_and_condition_number(reference):
    p = reference.problem(coupling="rotation", angle=170)
    t = flowvar.singular_times(p)[0]
    with pytest.raises(flowvar.SingularError) as e:
        flowvar.field(p, "rotation", [0.3, 0.2], t)
    assert f"singular at t = {t:.6g}" in e.value.message, "the message names the time"
    assert "condition number" in e.value.message, "and the condition number"
    assert e.value.message == cli_message("field", *reference.cli_flags("field", coupling="rotation", angle=170), "--field",
                                          "rotation", "--t", repr(t), "--points", "0.3,0.2"), "the CLI's message"


def test_variance_at_singular_time_raises_not_nan(reference):
    p = reference.problem(coupling="rotation", angle=170)
    with pytest.raises(flowvar.SingularError, match="singular at t"):
        flowvar.variance(p, "rotation", t=flowvar.singular_times(p)[0])


def test_divergent_integral_raises_divergence_error(reference):
    with pytest.raises(flowvar.DivergenceError, match="diverges"):
        flowvar.variance(reference.problem(coupling="rotation", angle=170, sigma=0.05), "rotation", integrated=True)


def test_allocation_beyond_memory_raises_input_error():
    # a size that can never fit is bad input (exit 2 in the CLI), named with what it needs
    w = _lib.FieldWork()
    with pytest.raises(flowvar.InputError, match="needs .*this machine has"):
        _lib.ensure(_lib.lib.fv_field_work_alloc(byref(w), 2, 1 << 58))


@pytest.mark.parametrize("x", [[np.nan, 0.0], [0.0, np.inf]])
def test_non_finite_points_are_refused(reference, x):
    with pytest.raises(flowvar.InputError, match="non-finite"):
        flowvar.field(reference.problem(), "ot", x, 0.5)


@pytest.mark.parametrize("call,match", [
    (lambda p: flowvar.field(p, "ot", [0.3, 0.2], 1.5), r"t must be in \[0, 1\]"),
    (lambda p: flowvar.field(p, "ot", [0.3, 0.2, 0.1], 0.5), r"x has shape \(3,\)"),
    (lambda p: flowvar.field(p, "curl", [0.3, 0.2], 0.5), "field must be one of"),
    (lambda p: flowvar.variance(p, "ot"), "exactly one of"),
    (lambda p: flowvar.variance(p, "ot", t=0.5, mc=2), "at least 4"),
    (lambda p: flowvar.transport(p, "ot"), "give the starting points"),
    (lambda p: flowvar.transport(p, "ot", n=3, seed=2 ** 64), r"seed must be in \[0, 2\^64\)"),
    (lambda p: flowvar.variance(p, "ot", t=0.5, batch=0), r"batch must be in \[1, 2\^64\)"),
    (lambda p: flowvar.Problem([1, np.nan]), "target_mean has a non-finite entry"),
    (lambda p: flowvar.Problem([1, 2], [1, 0, 0]), r"target_cov has shape \(3,\)"),
    (lambda p: flowvar.Problem([1, 2], coupling="rotation"), "needs --angle"),
])
def test_bad_values_raise_input_error(reference, call, match):
    with pytest.raises(flowvar.InputError, match=match):
        call(reference.problem())


@pytest.mark.parametrize("call", [
    lambda p: flowvar.field(p, "ot", np.array([0.3 + 1j, 0.2]), 0.5),
    lambda p: flowvar.field(p, "ot", ["a", "b"], 0.5),
    lambda p: flowvar.field(p, "ot", np.array([True, False]), 0.5),
    lambda p: flowvar.field(p, 0, [0.3, 0.2], 0.5),
    lambda p: flowvar.field("problem", "ot", [0.3, 0.2], 0.5),
    lambda p: flowvar.variance(p, "ot", t_grid=2.5),
    lambda p: flowvar.Problem([1, 2], sigma="0.1"),
])
def test_bad_types_raise_type_error(reference, call):
    with pytest.raises(TypeError):
        call(reference.problem())


def test_other_real_dtypes_are_converted(reference):
    p = reference.problem()
    want = flowvar.field(p, "ot", np.array([[1.0, -2.0]]), 0.5)
    np.testing.assert_array_equal(flowvar.field(p, "ot", np.array([[1, -2]]), 0.5), want, err_msg="int points")
    np.testing.assert_array_equal(flowvar.field(p, "ot", np.asfortranarray([[1.0, -2.0]], np.float32), 0.5), want,
                                  err_msg="float32 Fortran-order points")


def test_problem_is_immutable(reference):
    p = reference.problem()
    with pytest.raises(AttributeError, match="immutable"):
        p.sigma = 0.5
    with pytest.raises(ValueError, match="read-only"):
        p.target_mean[0] = 3.0
    assert p._c.sigma == 0.0 and p.target_mean[0] == 1.0, "the problem the C side sees is unchanged"
