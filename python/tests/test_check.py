"""flowvar.check against `flowvar check`: the same claims in the same order, the same descriptions and
results, and the values as the CLI prints them (%.6g: the comparison is at the CLI's own precision)."""

from conftest import run_cli

import flowvar


def test_check_rows_match_cli():
    lines = run_cli("check").splitlines()
    cli = [line.split("\t") for line in lines[1:-1]]
    rows = flowvar.check()
    assert len(rows) == len(cli), "one row per claim"
    for row, (claim, measured, value, threshold, result) in zip(rows, cli):
        assert row["claim"] == claim, "claims in the CLI's order"
        assert row["measured"] == measured, f"{claim}: the description with its numbers"
        assert f"{row['value']:.6g}" == value, f"{claim}: the value"
        assert f"{row['cmp']} {row['threshold']:.3g}" == threshold, f"{claim}: the threshold"
        assert ("PASS" if row["passed"] else "FAIL") == result, f"{claim}: the result"
        holds = row["value"] < row["threshold"] if row["cmp"] == "<" else row["value"] > row["threshold"]
        assert row["passed"] == holds, f"{claim}: passed is value cmp threshold (the Claim mirror's last member)"
