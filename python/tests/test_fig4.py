"""python/examples/fig4.py: run as a user would, on a few sigma values; its two curves against
`flowvar variance --integrated --epsrel 1e-9` (the accuracy of flowvar figures), whose TSV has 10
significant digits: 1e-9 relative. The curves cross between 0.1 and 0.3 (sigma* = 0.265)."""

import os
import subprocess
import sys

import numpy as np
from conftest import PYTHON_DIR, numbers, read_tsv, run_cli

SIGMAS = [0.0, 0.1, 0.3]


def test_fig4_example_matches_cli(reference):
    env = {**os.environ, "PYTHONPATH": PYTHON_DIR}
    r = subprocess.run([sys.executable, os.path.join(PYTHON_DIR, "examples", "fig4.py"), "--sigmas",
                        ",".join(map(str, SIGMAS))], capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"fig4.py runs: {r.stderr}"
    table = read_tsv(r.stdout)
    assert list(table) == ["sigma", "var_ot", "var_rot"], "the two curves against sigma"
    for k, s in enumerate(SIGMAS):
        for field, column in (("ot", "var_ot"), ("rotation", "var_rot")):
            cli = read_tsv(run_cli("variance", *reference.cli_flags(coupling="rotation", angle=120, sigma=s),
                                   "--field", field, "--integrated", "--epsrel", "1e-9"))
            np.testing.assert_allclose(numbers(table[column])[k], numbers(cli["var_total"])[0], rtol=1e-9, atol=0,
                                       err_msg=f"{column} at sigma = {s}")
    ot, rot = numbers(table["var_ot"]), numbers(table["var_rot"])
    assert ot[1] > rot[1] and ot[2] < rot[2], "the rotational field is lower at 0.1, the OT field at 0.3"
    assert "sigma* (120 degrees) = 0.265" in r.stdout, "the crossing is printed"
