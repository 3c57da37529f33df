"""The sampler tests' oracle metrics (:mod:`tests.common`: mode weights and within-mode spread of the
three-mode mixture) read zero on exact samples and detect wrong weights and spread."""


import torch

import scoresde as sd
from tests.common import MEANS, MIXTURE, STD, WEIGHTS, mode_metrics, reference_spread, spread_tolerance, tv_tolerance


def test_metrics_read_zero_on_exact_samples():
    n = 20_000
    for sde in (sd.VESDE(), sd.VPSDE()):
        x = MIXTURE.at_time(sde, 1e-3).sample(n, generator=torch.Generator().manual_seed(3))
        tv, spread = mode_metrics(x)
        assert tv < tv_tolerance(n)
        assert abs(spread / reference_spread(sde, 1e-3, False) - 1) < spread_tolerance(n)


def test_metrics_detect_wrong_weights_and_spread():
    wrong = sd.GaussianMixture([1 / 3, 1 / 3, 1 / 3], MEANS, 1.1 * STD)
    tv, spread = mode_metrics(wrong.sample(20_000, generator=torch.Generator().manual_seed(3)))
    exact_tv = 0.5 * float((WEIGHTS - 1 / 3).abs().sum())  # 0.1667
    assert abs(tv - exact_tv) < tv_tolerance(20_000)
    assert abs(spread / (2 * STD**2) - 1.21) < 1.21 * spread_tolerance(20_000)
