"""conftest.py: what every Python test shares: the package from this source tree, the CLI binary
($FLOWVAR, else the repository's build/flowvar) run with subprocess, and the two test problems of the
issue: the README's reference problem and a random d = 7 problem, each as a flowvar.Problem and as the
CLI flags that describe the same problem (the random one through .npy files: full precision)."""

import os
import subprocess
import sys

import numpy as np
import pytest

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(PYTHON_DIR)
sys.path.insert(0, PYTHON_DIR)

import flowvar  # noqa: E402  (after the path above: the package of this tree, not an installed copy)

FLOWVAR = os.environ.get("FLOWVAR", os.path.join(REPO, "build", "flowvar"))


def run_cli(*args, expect=0):
    """Run `flowvar ARGS`; check its exit status; return its standard output."""
    r = subprocess.run([FLOWVAR, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == expect, f"flowvar {' '.join(map(str, args))}: exit {r.returncode}, stderr: {r.stderr}"
    return r.stdout


def read_tsv(text):
    """A TSV table of numbers (the CLI's %.10g) as a dict of column arrays; '#' lines are skipped."""
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    names = lines[0].split("\t")
    rows = [line.split("\t") for line in lines[1:]]
    return {name: np.array([r[i] for r in rows]) for i, name in enumerate(names)}


def numbers(column):
    return column.astype(np.float64)


class Case:
    """A test problem: the keyword arguments of flowvar.Problem and the matching CLI flags."""

    def __init__(self, name, kwargs, flags):
        self.name, self.kwargs, self.flags = name, kwargs, flags

    def problem(self, **changes):
        return flowvar.Problem(**{**self.kwargs, **changes})

    def cli_flags(self, command=None, **changes):
        """The flags with the changed keywords (coupling, angle, sigma, schedule) replaced. `field` and
        `transport` take no --coupling (their --field says which field), so it is left out for them."""
        flags = list(self.flags)
        if command in ("field", "transport"):
            changes.pop("coupling", None)
        for key, value in changes.items():
            flag = "--" + key.replace("_", "-")
            if flag in flags:
                i = flags.index(flag)
                del flags[i:i + 2]
            flags += [flag, value]
        return flags


def reference_case():
    return Case("reference", {"target_mean": [1, -0.5], "target_cov": [2, 0.6, 0.6, 1]},
                ["--target-mean", "1,-0.5", "--target-cov", "2,0.6,0.6,1"])


def random_spd(rng, d, floor):
    A = rng.standard_normal((d, d))
    return A @ A.T / d + floor * np.eye(d)


def random_case(folder, d=7, seed=2026):
    """A random d-dimensional problem with a general source; its arrays go to the CLI as .npy files."""
    rng = np.random.default_rng(seed)
    arrays = {"target_mean": rng.standard_normal(d), "target_cov": random_spd(rng, d, 0.3),
              "source_mean": 0.5 * rng.standard_normal(d), "source_cov": random_spd(rng, d, 0.5)}
    flags = []
    for key, a in arrays.items():
        path = os.path.join(folder, key + ".npy")
        np.save(path, a)
        flags += ["--" + key.replace("_", "-"), path]
    return Case(f"random d={d}", arrays, flags)


@pytest.fixture(scope="session")
def reference():
    return reference_case()


@pytest.fixture(scope="session")
def random7(tmp_path_factory):
    return random_case(str(tmp_path_factory.mktemp("random7")))


@pytest.fixture(scope="session", params=["reference", "random7"])
def case(request, tmp_path_factory):
    if request.param == "reference":
        return reference_case()
    return random_case(str(tmp_path_factory.mktemp("random7")))


