"""The real-data result: a DDPM trained on the digits beats the per-pixel baseline.

Runs ``benchmarks/discrete_digits.py`` as documented (4000 steps; 10 min on 2 CPU cores). The thresholds
are statistical: each figure is a mean over the 297 test digits with its standard error (SE), and the claims
must hold by 3 SE. Training matters here: after 1500 steps the bound already beats the baseline (1.998 ± 0.016
bits/dim) but the ODE likelihood of that net was worse than its bound (+0.043 ± 0.012).
"""

import os
import runpy

import pytest
import torch

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "discrete_digits.py")


@pytest.mark.slow
def test_ddpm_bound_beats_the_histogram_and_the_ode_likelihood_is_no_worse(tmp_path):
    pytest.importorskip("sklearn")
    main = runpy.run_path(BENCH)["main"]
    threads = torch.get_num_threads()
    try:
        res = main(["--steps", "4000", "--json", str(tmp_path / "res.json")])
    finally:
        torch.set_num_threads(threads)
    bound, bound_se = res["vlb_dequantized"]
    assert bound + 3 * bound_se < res["baseline"], res
    diff, diff_se = res["ode_minus_vlb_dequantized"]  # paired over the same dequantised test digits
    assert diff < 3 * diff_se, res
