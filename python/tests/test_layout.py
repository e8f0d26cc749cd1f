"""The ctypes mirrors of the C structs (flowvar/_lib.py) against what the C library writes into them:
a field added, removed or moved in a C header shifts what these checks read and fails them."""

import ctypes
from ctypes import POINTER, byref, c_double, c_int

import numpy as np
from conftest import reference_case

import flowvar
from flowvar import _lib

lib = _lib.lib
lib.fv_problem_reference.argtypes = [POINTER(_lib.Problem), c_double, c_double]
lib.fv_problem_reference.restype = c_int
lib.fv_problem_free.argtypes = [POINTER(_lib.Problem)]
lib.fv_problem_free.restype = None


def test_problem_layout():
    p = _lib.Problem()
    _lib.ensure(lib.fv_problem_reference(byref(p), 120.0, 0.25))
    try:
        assert p.d == 2, "d"
        assert [p.m1[0], p.m1[1]] == [1.0, -0.5], "target mean"
        assert [p.S1[k] for k in range(4)] == [2.0, 0.6, 0.6, 1.0], "target covariance"
        assert [p.m0[0], p.S0[0], p.S0[1]] == [0.0, 1.0, 0.0], "standard source"
        assert p.coupling == _lib.COUPLINGS["rotation"] and bool(p.R), "rotational coupling with its R"
        assert np.isclose(p.R[2], np.sin(np.radians(120))), "R by 120 degrees"
        assert (p.sigma, p.schedule, p.deriv_term) == (0.25, 0, 0), "noise: sigma, schedule, derivative term"
    finally:
        lib.fv_problem_free(byref(p))


def test_field_and_work_layout():
    prob = reference_case().problem(sigma=0.5)
    f, w = _lib.Field(), _lib.FieldWork()
    _lib.ensure(lib.fv_field_build(byref(f), byref(prob._c), _lib.FIELDS["ot"]))
    _lib.ensure(lib.fv_field_work_alloc(byref(w), 2, 5))
    try:
        assert (f.kind, f.d, f.symmetric, f.sigma) == (0, 2, 1, 0.5), "kind, d, symmetric, sigma"
        assert [f.b[0], f.b[1]] == [1.0, -0.5], "b = m1 - m0"
        G = flowvar.ot_map(prob)
        np.testing.assert_allclose(sorted([f.l[0], f.l[1]]), np.linalg.eigvalsh(G - np.eye(2)), rtol=1e-12,
                                   err_msg="l: the eigenvalues of K - I")
        assert f.cond_max == 1e12, "cond_max, the last member: its default"
        assert (w.d, w.n) == (2, 5) and bool(w.piv), "workspace d, n and its last member piv"
    finally:
        lib.fv_field_work_free(byref(w))
        lib.fv_field_free(byref(f))


def test_ode_rng_layout():
    o = lib.fv_ode_defaults()
    assert (o.solver, o.steps, o.rtol, o.atol, o.t0, o.t1) == (1, 100, 1e-8, 1e-8, 0.0, 1.0), "ODE defaults"
    r = lib.fv_rng_make(5, 7)
    assert (r.seed, r.stream, r.pos) == (5, 7, 0), "a fresh stream"


def test_variance_structs_layout():
    prob = reference_case().problem(coupling="rotation", angle=90, sigma=0.3)
    vf, v, m = _lib.VField(_lib.VFIELDS["ot"], None, None), _lib.Var(), _lib.MC()
    _lib.ensure(lib.fv_variance_at(byref(prob._c), byref(vf), 0.4, byref(v), None, None))
    assert v.var_total > 0 and np.isclose(v.var_total, v.var_theta + v.var_Theta, rtol=1e-14), "Var blocks"
    assert v.loss > 0, "Var loss"
    _lib.ensure(lib.fv_variance_mc(byref(prob._c), byref(vf), 0.4, 1000, 1, 0, byref(m)))
    assert m.n == 1000, "MC n, the last member"
    assert np.isclose(m.var_total, m.var_theta + m.var_Theta, rtol=1e-12) and m.se_total > 0, "MC blocks"


def test_cfm_data_layout():
    prob = reference_case().problem(coupling="rotation", angle=30)
    D = _lib.CfmData()
    _lib.ensure(lib.fv_cfm_data_init(byref(D), _lib.DATA_PROBLEM, byref(prob._c), None, 0, None, None, 8))
    try:
        assert D.id > 0 and (D.kind, D.d) == (_lib.DATA_PROBLEM, 2), "id, kind, d"
        assert ctypes.addressof(D.p.contents) == ctypes.addressof(prob._c), "p: the problem"
        assert (D.map.kind, D.map.d, D.map.cond_max) == (_lib.FIELDS["rotation"], 2, 1e12), "the coupling's map"
        assert (D.map_work.d, D.map_work.n) == (2, 8), "the map's workspace for 8 rows"
        assert D.std_source == 1 and bool(D.root0) and not D.root1, "standard source, its root only"
        assert not D.z and D.zcap == 0, "no scratch yet (z, zcap: the last members)"
    finally:
        lib.fv_cfm_data_free(byref(D))
