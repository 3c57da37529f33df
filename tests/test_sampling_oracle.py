"""Shared oracle metrics for the sampler tests (importable as ``tests.test_sampling_oracle``), and checks
that the metrics themselves read zero on exact samples.

The target is a 2-D mixture with unequal weights 0.2/0.3/0.5 and well-separated modes (nearest-mode
distances ≥ 5 = 10 component stds), so assigning a sample to its nearest mode mislabels a fraction
< 1e-6 of exact samples: the mode weights and the within-mode spread (mean squared distance to the
nearest mode) are then exact functionals of the distribution, computed here from exact samples.
"""

import functools
import math

import torch

import scoresde as sd
from scoresde.sampling._common import tweedie_denoise

MEANS = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
WEIGHTS = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
STD = 0.5
MIXTURE = sd.GaussianMixture(WEIGHTS, MEANS, STD)
EPS = {"ve": 1e-5, "vp": 1e-3, "subvp": 1e-3}  # the paper's end times
REF_SAMPLES = 100_000


def mode_metrics(x: torch.Tensor) -> tuple[float, float]:
    """(total variation between the nearest-mode frequencies and the true weights, within-mode spread)."""
    d2 = ((x.reshape(x.shape[0], 1, -1).double().cpu() - MEANS[None]) ** 2).sum(-1)
    dist, k = d2.min(1)
    freq = torch.bincount(k, minlength=len(WEIGHTS)).double() / x.shape[0]
    return 0.5 * float((freq - WEIGHTS).abs().sum()), float(dist.mean())


@functools.cache
def _reference_spread(sde_key: str, eps: float, denoise: bool) -> float:
    return _exact_spread(_SDES[sde_key], eps, denoise)


def reference_spread(sde, eps: float, denoise: bool) -> float:
    """Cached :func:`_exact_spread` for the built-in SDEs (keyed by their repr), computed otherwise."""
    key = repr(sde)
    _SDES.setdefault(key, sde)
    return _reference_spread(key, eps, denoise)


_SDES: dict = {}


def _exact_spread(sde, eps: float, denoise: bool) -> float:
    """The exact spread of what a sampler should return: samples of p_eps, or their Tweedie denoising.

    From 100k exact samples: its relative Monte-Carlo error is 1/sqrt(100k) = 0.32 % (the squared
    distance to a mode of a 2-D Gaussian is s²·χ²₂, whose relative std is 1).
    """
    x = MIXTURE.at_time(sde, eps).sample(REF_SAMPLES, generator=torch.Generator().manual_seed(7))
    if denoise:
        x = tweedie_denoise(sde, MIXTURE.score_fn(sde), x, torch.full((REF_SAMPLES,), eps, dtype=torch.float64))
    return mode_metrics(x)[1]


def tv_tolerance(n: int, z: float = 4.0) -> float:
    """z standard deviations of the empirical TV of n exact samples: TV = ½ Σ|f_k − w_k| with
    sd(f_k) = sqrt(w_k(1 − w_k)/n); the sum of the K sds bounds sd(TV)·2 (triangle inequality)."""
    return z * 0.5 * float(torch.sqrt(WEIGHTS * (1 - WEIGHTS) / n).sum())


def spread_tolerance(n: int, z: float = 4.0) -> float:
    """z standard deviations of the relative spread error of n samples (relative sd of s²χ²₂ is 1)."""
    return z / math.sqrt(n)


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
