#!/usr/bin/env python3
"""fig4.py: Fig. 4's two curves from Python: the integrated gradient variance of the OT field and of
the pair-optimal 120-degree rotational field, on data from the 120-degree rotational coupling of the
reference problem (target mean (1, -0.5), covariance [[2, 0.6], [0.6, 1]]), against the interpolant
noise sigma; the OT field has the lower variance above the crossing sigma*, printed last.
The same numbers as `flowvar figures`' fig4.tsv (columns var_ot, var_rot; same accuracy, 1e-9).

    python3 python/examples/fig4.py                      # sigma = 0, 0.025, ..., 0.5
    python3 python/examples/fig4.py --sigmas 0.05,0.3    # a few values"""

import argparse
import sys

import numpy as np

import flowvar

REFERENCE = {"target_mean": [1.0, -0.5], "target_cov": [[2.0, 0.6], [0.6, 1.0]]}


def curves(sigmas, angle=120.0, epsrel=1e-9):
    """Integrated total variance of the OT and of the rotational field at each sigma."""
    out = np.empty((len(sigmas), 2))
    for i, s in enumerate(sigmas):
        p = flowvar.Problem(**REFERENCE, coupling="rotation", angle=angle, sigma=s)
        for j, field in enumerate(("ot", "rotation")):
            out[i, j] = flowvar.variance(p, field, integrated=True, epsrel=epsrel)["var_total"][0]
    return out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sigmas", help="comma list of noise levels; default 0, 0.025, ..., 0.5 (as flowvar figures)")
    args = ap.parse_args(argv)
    sigmas = [float(s) for s in args.sigmas.split(",")] if args.sigmas else [0.025 * k for k in range(21)]
    v = curves(sigmas)
    print("sigma\tvar_ot\tvar_rot")
    for s, (vo, vr) in zip(sigmas, v):
        print(f"{s:g}\t{vo!r}\t{vr!r}")
    star = flowvar.crossover(flowvar.Problem(**REFERENCE), [120.0])
    print(f"# sigma* (120 degrees) = {star['sigma_star'][0]:.6g}: the OT field has the lower variance above it")


if __name__ == "__main__":
    main(sys.argv[1:])
