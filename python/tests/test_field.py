"""flowvar.field and flowvar.transport against `flowvar field` and `flowvar transport` (.npy output:
full precision, so the arrays must agree to 1e-12), on the reference and the random d = 7 problem."""

import numpy as np
import pytest
from conftest import run_cli

import flowvar

FIELDS = [("ot", {}), ("rotation", {"coupling": "rotation", "angle": 60}), ("markov", {"sigma": 0.3})]


def points(d, n=5, seed=3):
    return np.random.default_rng(seed).standard_normal((n, d))


@pytest.mark.parametrize("kind,changes", FIELDS)
def test_field_matches_cli(case, kind, changes, tmp_path):
    p = case.problem(**changes)
    X = points(p.d)
    np.save(tmp_path / "x.npy", X)
    for t in (0.0, 0.37, 1.0):
        run_cli("field", *case.cli_flags("field", **changes), "--field", kind, "--t", t, "--points", tmp_path / "x.npy",
                "--out", tmp_path / "v.npy")
        np.testing.assert_allclose(flowvar.field(p, kind, X, t), np.load(tmp_path / "v.npy"), rtol=1e-12, atol=0,
                                   err_msg=f"field {kind} at t = {t} on the {case.name} problem vs the CLI")


def test_field_times_array_stacks_single_times(case):
    p = case.problem()
    X = points(p.d)
    ts = np.array([0.1, 0.5, 0.9])
    V = flowvar.field(p, "ot", X, ts)
    assert V.shape == (3, 5, p.d), "an array of times gives (nt, n, d)"
    for k, t in enumerate(ts):
        np.testing.assert_allclose(V[k], flowvar.field(p, "ot", X, t), rtol=1e-12, atol=1e-14,
                                   err_msg=f"time {t} of the stacked evaluation vs a single one")


def test_field_single_point_keeps_its_shape(reference):
    p = reference.problem()
    v = flowvar.field(p, "ot", [0.3, 0.2], 0.6)
    assert v.shape == (2,), "one point (d,) in, one vector (d,) out"
    np.testing.assert_array_equal(v, flowvar.field(p, "ot", [[0.3, 0.2]], 0.6)[0], err_msg="(d,) vs (1, d) input")


@pytest.mark.parametrize("kind,changes", FIELDS[:2])
def test_transport_matches_cli(case, kind, changes, tmp_path):
    p = case.problem(**changes)
    X = points(p.d)
    np.save(tmp_path / "x.npy", X)
    run_cli("transport", *case.cli_flags("transport", **changes), "--field", kind, "--points", tmp_path / "x.npy", "--solver",
            "rk45", "--out", tmp_path / "x1.npy")
    np.testing.assert_allclose(flowvar.transport(p, kind, X, solver="rk45"), np.load(tmp_path / "x1.npy"),
                               rtol=1e-12, atol=0, err_msg=f"transport along {kind} on the {case.name} problem")


def test_transport_samples_and_map_match_cli(case, tmp_path):
    p = case.problem()
    run_cli("transport", *case.cli_flags(), "--n", 6, "--seed", 11, "--solver", "euler", "--steps", 50,
            "--with-map", "--out", tmp_path / "xt.npy")
    cli = np.load(tmp_path / "xt.npy")
    x1, T = flowvar.transport(p, n=6, seed=11, solver="euler", steps=50, with_map=True)
    np.testing.assert_allclose(x1, cli[:, :p.d], rtol=1e-12, atol=0, err_msg="end points of --n 6 --seed 11")
    np.testing.assert_allclose(T, cli[:, p.d:], rtol=1e-12, atol=0, err_msg="the closed-form map T(x0)")


def test_transport_leaves_its_input_alone(reference):
    X = points(2)
    before = X.copy()
    flowvar.transport(reference.problem(), "ot", X)
    np.testing.assert_array_equal(X, before, err_msg="the caller's points are not overwritten")
