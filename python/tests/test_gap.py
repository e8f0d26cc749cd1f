"""flowvar.torch_gap: the gap of a Python field against a closed form, on rows of the problem's
interpolant drawn by the library's samplers. For an affine fn the expectation is known in closed
form from the interpolant's mean and covariance, so the estimate must land within a few standard
errors of it (which it cannot if the rows come from anywhere else)."""

import numpy as np
import pytest

import flowvar


def affine_parts(p, kind, t):
    """c, B with v(x, t) = c + B x for the closed-form field (evaluated at 0 and the unit vectors)."""
    V = flowvar.field(p, kind, np.vstack([np.zeros(p.d), np.eye(p.d)]), t)
    return V[0], (V[1:] - V[0]).T


def interpolant_moments(p, t):
    """Mean and covariance of X_t = (1-t) X0 + t X1 + sigma Z for the OT coupling X1 = m1 + G (X0 - m0)."""
    At = (1 - t) * np.eye(p.d) + t * flowvar.ot_map(p)
    return (1 - t) * p.source_mean + t * p.target_mean, At @ p.source_cov @ At.T + p.sigma ** 2 * np.eye(p.d)


def test_gap_of_identity_matches_its_expectation(case):
    p = case.problem(sigma=0.3)
    out = flowvar.torch_gap(lambda x, t: x, p, "ot", t_grid=4, n=4096)
    np.testing.assert_allclose(out["t"], [0.125, 0.375, 0.625, 0.875], err_msg="the CLI's grid (k + 0.5)/N")
    for k, t in enumerate(out["t"]):
        c, B = affine_parts(p, "ot", t)
        mu, S = interpolant_moments(p, t)
        D = np.eye(p.d) - B  # fn - v = D x - c
        want = np.sum((D @ mu - c) ** 2) + np.trace(D @ S @ D.T)
        assert out["gap_se"][k] > 0, f"t = {t}: a standard error"
        assert abs(out["gap"][k] - want) < 5 * out["gap_se"][k], \
            f"t = {t}: gap {out['gap'][k]:.5g} +- {out['gap_se'][k]:.2g} vs the exact {want:.5g} ({case.name})"


def test_gap_of_the_closed_form_itself_is_zero(reference):
    p = reference.problem(coupling="rotation", angle=120, sigma=0.2)
    out = flowvar.torch_gap(lambda x, t: flowvar.field(p, "rotation", x, 0.4), p, "rotation", t_grid=[0.4], n=100)
    assert out["gap"][0] == 0.0 and out["gap_se"][0] == 0.0, "fn sees exactly the rows the closed form sees"


def test_gap_times_and_draws_follow_the_seed(reference):
    p = reference.problem(sigma=0.5)
    a = flowvar.torch_gap(lambda x, t: x * t[:, None], p, t_grid=3, n=500, seed=4)
    b = flowvar.torch_gap(lambda x, t: x * t[:, None], p, t_grid=3, n=500, seed=4)
    c = flowvar.torch_gap(lambda x, t: x * t[:, None], p, t_grid=3, n=500, seed=5)
    np.testing.assert_array_equal(a["gap"], b["gap"], err_msg="the same seed draws the same rows")
    assert not np.array_equal(a["gap"], c["gap"]), "another seed draws other rows"


@pytest.mark.parametrize("fn,match", [
    (lambda x, t: x * np.nan, "non-finite"),
    (lambda x, t: x[:, :1], "returned shape"),
    (lambda x, t: "no", "dtype"),
])
def test_gap_refuses_bad_outputs(reference, fn, match):
    with pytest.raises((flowvar.InputError, TypeError), match=match):
        flowvar.torch_gap(fn, reference.problem(), t_grid=2, n=10)


def test_gap_of_a_torch_module(reference):
    torch = pytest.importorskip("torch")

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(0.5))

        def forward(self, x, t):
            assert x.dtype == torch.float32 and t.shape == (x.shape[0],), "float32 rows and one time per row"
            return self.a * x + t[:, None]

    p = reference.problem(sigma=0.2)
    got = flowvar.torch_gap(Scale(), p, t_grid=3, n=1000)
    want = flowvar.torch_gap(lambda x, t: 0.5 * x + t[:, None], p, t_grid=3, n=1000)
    np.testing.assert_allclose(got["gap"], want["gap"], rtol=1e-5, err_msg="the module in float32 vs numpy")
