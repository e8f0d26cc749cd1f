"""flowvar.variance and flowvar.crossover against `flowvar variance` and `flowvar crossover`. These
commands write TSV only, with 10 significant digits, so the comparison is to 1e-9 relative: the
printing's own rounding is at most 5e-10 relative, and any real difference in the computation would
be far larger."""

import numpy as np
import pytest
from conftest import numbers, read_tsv, run_cli

import flowvar

COLUMNS = ["var_theta", "var_Theta", "var_total"]


def compare(py, cli, what, columns=COLUMNS):
    for name in columns:
        np.testing.assert_allclose(py[name], numbers(cli[name]), rtol=1e-9, atol=0, err_msg=f"{what}: {name}")


SETTINGS = [
    ("ot", {"coupling": "rotation", "angle": 120, "sigma": 0.2}),
    ("rotation", {"coupling": "rotation", "angle": 60, "sigma": 0.1}),
    ("markov", {"coupling": "independent", "sigma": 0.4, "schedule": "bridge"}),
]


@pytest.mark.parametrize("field,changes", SETTINGS)
def test_variance_grid_matches_cli(case, field, changes):
    cli = read_tsv(run_cli("variance", *case.cli_flags(**changes), "--field", field, "--t-grid", 4, "--batch", 3))
    py = flowvar.variance(case.problem(**changes), field, t_grid=4, batch=3)
    assert list(py) == list(cli), "the same columns as the CLI"
    np.testing.assert_allclose(py["t"], numbers(cli["t"]), rtol=1e-9, err_msg="grid times")
    compare(py, cli, f"{field} on the {case.name} problem, t-grid 4, batch 3")


@pytest.mark.parametrize("field,changes", SETTINGS[:2])
def test_variance_integrated_matches_cli(case, field, changes):
    cli = read_tsv(run_cli("variance", *case.cli_flags(**changes), "--field", field, "--integrated"))
    py = flowvar.variance(case.problem(**changes), field, integrated=True)
    assert list(py["t"]) == ["integrated"], "the t column names what was integrated, as in the CLI"
    compare(py, cli, f"{field} integrated on the {case.name} problem")


def test_variance_one_time_with_mc_matches_cli(case):
    changes = {"coupling": "rotation", "angle": 90, "sigma": 0.3}
    cli = read_tsv(run_cli("variance", *case.cli_flags(**changes), "--t", 0.3, "--mc", 2000, "--seed", 5))
    py = flowvar.variance(case.problem(**changes), "ot", t=0.3, mc=2000, seed=5)
    assert list(py) == list(cli), "mc adds the columns mc_total and mc_se"
    compare(py, cli, f"t = 0.3 with 2000 MC samples on the {case.name} problem", COLUMNS + ["mc_total", "mc_se"])


def test_variance_custom_field_matches_cli(reference):
    theta, Theta = [0.9, -0.4], [0.3, 0.1, 0.05, -0.2]
    cli = read_tsv(run_cli("variance", *reference.cli_flags(), "--field", "custom", "--theta", "0.9,-0.4", "--Theta",
                           "0.3,0.1,0.05,-0.2", "--t", 0.5))
    compare(flowvar.variance(reference.problem(), "custom", t=0.5, theta=theta, Theta=Theta), cli, "custom field")


def test_crossover_matches_cli(case):
    cli = read_tsv(run_cli("crossover", *case.cli_flags(), "--angles", "60,120,170", "--sigma-max", 1))
    py = flowvar.crossover(case.problem(), [60, 120, 170], sigma_max=1)
    np.testing.assert_allclose(py["angle"], numbers(cli["angle"]), err_msg="angles")
    assert list(py["state"]) == ["found", "found", "diverges"], "60 and 120 degrees cross, 170 diverges"
    assert list(cli["sigma_star"][2:]) == ["diverges"], "the CLI agrees that 170 degrees diverges"
    assert "singular" in py["message"][2], "the reason of the divergence is kept"
    np.testing.assert_allclose(py["sigma_star"][:2], numbers(cli["sigma_star"][:2]), rtol=1e-9, atol=0,
                               err_msg=f"sigma* at 60 and 120 degrees on the {case.name} problem")
