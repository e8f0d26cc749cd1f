"""flowvar.ot_map, w2 and singular_times. The OT map against `flowvar w2 --map-out` (.npy: 1e-12); W2
against the CLI's TSV, which prints 10 significant digits, so to 1e-9 relative (the printing's own
rounding is at most 5e-10 relative); singular times against numpy's eigenvalues of K = M^{1/2} R."""

import numpy as np
from conftest import numbers, read_tsv, run_cli

import flowvar


def test_ot_map_matches_cli(case, tmp_path):
    out = run_cli("w2", *case.cli_flags(), "--map-out", tmp_path / "G.npy")
    p = case.problem()
    np.testing.assert_allclose(flowvar.ot_map(p), np.load(tmp_path / "G.npy"), rtol=1e-12, atol=0,
                               err_msg=f"OT map matrix on the {case.name} problem")
    table = read_tsv(out.split("# OT map")[0])
    np.testing.assert_allclose(flowvar.w2(p), numbers(table["w2"])[0], rtol=1e-9, atol=0, err_msg="W2")
    np.testing.assert_allclose(flowvar.w2(p, squared=True), numbers(table["w2_squared"])[0], rtol=1e-9, atol=0,
                               err_msg="W2 squared")


def sqrtm_spd(S):
    w, V = np.linalg.eigh(S)
    return (V * np.sqrt(w)) @ V.T


def test_singular_times_are_those_of_the_eigenvalues(case):
    p = case.problem(coupling="rotation", angle=170)
    K = sqrtm_spd(p.target_cov) @ p.rotation @ np.linalg.inv(sqrtm_spd(p.source_cov))  # K_R = S1^1/2 R S0^-1/2
    lam = np.linalg.eigvals(K)
    want = np.sort([1 / (1 - l.real) for l in lam if abs(l.imag) < 1e-9 and l.real <= 0])
    got = flowvar.singular_times(p)
    assert got.size >= 2 and got.size == want.size, f"170 degrees: {want.size} real eigenvalues <= 0 ({case.name})"
    np.testing.assert_allclose(got, want, rtol=1e-10, err_msg="t = 1/(1 - lambda) for each real lambda <= 0")


def test_no_singular_times_for_small_angles_and_ot(reference):
    assert flowvar.singular_times(reference.problem(coupling="rotation", angle=60)).size == 0, "60 degrees"
    assert flowvar.singular_times(reference.problem(), "ot").size == 0, "the OT field has none"
