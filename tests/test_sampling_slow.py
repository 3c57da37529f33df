"""Slow statistical checks at the official implementation's scale (10k samples), and a CUDA check.

The official score_sde code reaches ±3 % spread with PC at 1000 steps and ±1 % with RK45 (~120
evaluations) on such a mixture. With 10k samples the spread's relative sd is 1 %. Known bias: the
unadjusted Langevin corrector inflates a variance v by h/(2v) with h ≈ 2 snr² v, i.e. by snr² = 2.6 %
at snr = 0.16 (measured: +2.5 % for VE at 1000 steps); we therefore check PC against the official 3 %
at snr = 0.1 (1 % bias), and the default snr against 3 % + 1 sd.
"""

import pytest
import torch

import scoresde as sd
from scoresde.sampling import (
    sample_ancestral,
    sample_annealed_langevin,
    sample_dpm_solver,
    sample_euler_maruyama,
    sample_ode,
    sample_pc,
)
from tests.common import BUILTIN_SDES, EPS, MIXTURE, mode_metrics, reference_spread, tv_tolerance

N = 10_000


def _rel(res, sde, eps, denoise):
    tv, spread = mode_metrics(res.x)
    assert tv < tv_tolerance(N)
    return spread / reference_spread(sde, eps, denoise) - 1


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", sorted(BUILTIN_SDES))
def test_pc_1000_steps_within_official_3_percent(sde_name):
    sde, eps = BUILTIN_SDES[sde_name](), EPS[sde_name]
    score = MIXTURE.score_fn(sde)
    rel = _rel(sample_pc(score, sde, (N, 2), steps=1000, snr=0.1, eps=eps,
                         generator=torch.Generator().manual_seed(0)), sde, eps, True)
    assert abs(rel) < 0.03
    rel = _rel(sample_pc(score, sde, (N, 2), steps=1000, eps=eps, generator=torch.Generator().manual_seed(1)),
               sde, eps, True)
    assert abs(rel) < 0.04


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", sorted(BUILTIN_SDES))
def test_em_and_ancestral_1000_steps(sde_name):
    """Measured biases at 1000 steps: ≤ 1 % (EM), ≤ 0.5 % (ancestral, default analytic variance; the
    2 % target on held-out mixtures is tests/test_sampling_ancestral.py); 3 sd = 3 % on top of nothing."""
    sde, eps = BUILTIN_SDES[sde_name](), EPS[sde_name]
    for fn in (sample_euler_maruyama, sample_ancestral):
        res = fn(MIXTURE.score_fn(sde), sde, (N, 2), steps=1000, eps=eps, generator=torch.Generator().manual_seed(2))
        assert abs(_rel(res, sde, eps, True)) < 0.03


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", sorted(BUILTIN_SDES))
def test_rk45_within_official_1_percent_and_fast_solver(sde_name):
    """RK45 at the official tolerance 1e-5 is exact to ~1e-3 (test_sampling_ode), so its spread error is
    the 1 % sd of 10k samples: 2.5 sd allowed. DPM-Solver++(3M), 50 steps: ≤ 0.7 % bias (VP, sub-VP),
    ≤ 2.1 % (VE), measured against the exact flow on 20k shared latents."""
    sde, eps = BUILTIN_SDES[sde_name](), EPS[sde_name]
    score = MIXTURE.score_fn(sde)
    res = sample_ode(score, sde, (N, 2), method="rk45", eps=eps, generator=torch.Generator().manual_seed(3))
    assert abs(_rel(res, sde, eps, False)) < 0.025
    assert res.nfe < 400
    fast = sample_dpm_solver(score, sde, (N, 2), steps=50, eps=eps, generator=torch.Generator().manual_seed(3))
    assert abs(_rel(fast, sde, eps, False)) < 0.025 + (0.02 if sde_name == "ve" else 0.007)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_samplers_keep_every_tensor_on_the_gpu():
    sde = sd.VESDE()
    dev = torch.device("cuda")
    score_cpu = MIXTURE.score_fn(sde)

    def score(x, t):
        assert x.device.type == "cuda" and t.device.type == "cuda"
        return score_cpu(x, t)

    g = torch.Generator(device=dev).manual_seed(0)
    runs = [
        sample_pc(score, sde, (256, 2), steps=50, eps=1e-5, generator=g, device=dev),
        sample_ancestral(score, sde, (256, 2), steps=50, eps=1e-5, generator=g, device=dev),
        sample_annealed_langevin(score, sde, (256, 2), levels=3, steps=5, generator=g, device=dev),
        sample_ode(score, sde, (256, 2), eps=1e-5, generator=g, device=dev),
        sample_dpm_solver(score, sde, (256, 2), steps=20, eps=1e-5, generator=g, device=dev),
    ]
    for res in runs:
        assert res.x.device.type == "cuda" and torch.isfinite(res.x).all()
