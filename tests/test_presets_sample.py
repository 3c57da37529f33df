"""The sampling section of every preset runs, and every sampling.method reaches its sampler with every field.

Guards against a preset naming a piece that does not exist (``ncsn_cifar10`` once named a corrector
"annealed_langevin" that was registered as "ald", so every NCSN run failed at sampling time). Each preset's
sampling section runs on tiny shapes with few steps, driven (1) by the exact score of a Gaussian data set
(the oracle) and (2) by a stand-in network behind the preset's own parameterisation, noise conditioning
and discrete ladder, so the model section and the sampler are composed as ``scoresde sample`` composes them.
"""

import dataclasses

import pytest
import torch
from torch import nn

from scoresde import config as C
from scoresde.analytic import GaussianMixture
from scoresde.builders import SAMPLERS, build_sde, draw_samples, sampler_evaluations
from scoresde.sampling import (
    sample_ancestral,
    sample_annealed_langevin,
    sample_dpm_solver,
    sample_euler_maruyama,
    sample_ode,
    sample_pc,
)
from scoresde.score import ScoreModel
from scoresde.validation import validate

pytestmark = pytest.mark.usefixtures("one_thread")

#: Tiny stand-ins for each data set's sample shape (the samplers never look at the shape).
SHAPES = {"mixture": (2,), "digits": (1, 8, 8), "cifar10": (3, 4, 4)}


def tiny(cfg: C.SamplingConfig) -> C.SamplingConfig:
    """The same sampler with few samples and steps. 25 steps: the VP reverse-diffusion predictor needs
    β(t)·Δt < 1, i.e. more than β_max = 20 steps (tests/test_sampling.py covers fewer)."""
    return dataclasses.replace(cfg, num_samples=4, steps=min(cfg.steps, 25) if cfg.method != "annealed_langevin"
                               else 3, levels=min(cfg.levels, 3), rtol=1e-3, atol=1e-3)


class StandIn(nn.Module):
    """A network stand-in: any smooth output of x's shape; checks the conditioning input it receives."""

    def forward(self, x, noise_cond):
        assert noise_cond.shape == (x.shape[0],) and torch.isfinite(noise_cond).all()
        return 0.1 * torch.tanh(x)


def oracle(shape):
    """Gaussian data N(0.3, 0.5² I) in the dimension of ``shape`` (an exact score under every SDE)."""
    dim = int(torch.tensor(shape).prod())
    return GaussianMixture([1.0], torch.full((1, dim), 0.3), [0.5])


@pytest.mark.parametrize("name", sorted(C.PRESETS))
def test_every_preset_samples(name):
    cfg = validate(C.preset(name))  # every name the preset uses exists
    sc = tiny(cfg.sampling)
    sde = build_sde(cfg.sde)
    shape = (sc.num_samples, *SHAPES[cfg.data.name])
    gen = torch.Generator().manual_seed(0)
    res = draw_samples(oracle(shape[1:]).score_fn(sde), sde, sc, shape, generator=gen, device="cpu")
    assert res.x.shape == shape and torch.isfinite(res.x).all()
    expected = sampler_evaluations(sc)
    assert expected is None or res.nfe == expected, (name, res.nfe, expected)
    m = cfg.model
    model = ScoreModel(StandIn(), sde, parameterization=m.parameterization, noise_cond=m.noise_cond,
                       discrete_steps=m.discrete_steps or None)
    res = draw_samples(model, sde, sc, shape, generator=gen, device="cpu")
    assert res.x.shape == shape and torch.isfinite(res.x).all()


def test_ncsn_preset_is_annealed_langevin_with_the_papers_ladder():
    """Song & Ermon 2019, Sec. 5: L = 10 levels, σ geometric from 1 to 0.01, T = 100 steps, ε = 2e-5."""
    cfg = C.preset("ncsn_cifar10")
    sc = cfg.sampling
    assert (sc.method, sc.levels, sc.steps, sc.step_lr) == ("annealed_langevin", 10, 100, 2e-5)
    assert sampler_evaluations(sc) == 1000
    # the levels the sampler visits (uniform t from T to eps) are the paper's geometric ladder
    sde = build_sde(cfg.sde)
    t = torch.linspace(1.0, sc.eps, sc.levels, dtype=torch.float64)
    ladder = torch.logspace(0, -2, 10, dtype=torch.float64)
    torch.testing.assert_close(sde.marginal_coeffs(t)[1], ladder, rtol=1e-4, atol=0)  # eps=1e-5: σ_L = 0.01·1.00005


def _direct(method, score, sde, shape, sc, gen):
    """The sampler called by hand with the fields of ``sc`` (what draw_samples must do)."""
    common = dict(eps=sc.eps, generator=gen, device="cpu")
    if method == "pc":
        return sample_pc(score, sde, shape, steps=sc.steps, predictor=sc.predictor, corrector=sc.corrector, snr=sc.snr,
                         corrector_steps=sc.corrector_steps, **common)
    if method == "euler_maruyama":
        return sample_euler_maruyama(score, sde, shape, steps=sc.steps, **common)
    if method == "ancestral":
        return sample_ancestral(score, sde, shape, steps=sc.steps, **common)
    if method == "annealed_langevin":
        return sample_annealed_langevin(score, sde, shape, levels=sc.levels, steps=sc.steps, step_lr=sc.step_lr,
                                        **common)
    if method == "dpm_solver":
        return sample_dpm_solver(score, sde, shape, steps=sc.steps, order=sc.order, grid=sc.grid, **common)
    return sample_ode(score, sde, shape, method=sc.solver, rtol=sc.rtol, atol=sc.atol,
                      steps=sc.steps if sc.solver == "rk4" else None, **common)


@pytest.mark.parametrize("method", sorted(SAMPLERS))
def test_every_method_passes_every_field(method):
    """Non-default values of every field reach the sampler: draw_samples equals the hand-written call bit for bit."""
    sc = C.SamplingConfig(method=method, steps=30, predictor="euler_maruyama", corrector="ald", snr=0.2,
                          corrector_steps=2, levels=3, step_lr=1e-3, order=2, grid="logsnr",
                          solver="rk4" if method == "ode" else "dopri5", eps=2e-3, num_samples=5, rtol=1e-3,
                          atol=1e-3)
    validate(dataclasses.replace(C.Config(), sampling=sc))
    sde = build_sde(C.SDEConfig(name="vp"))
    shape = (5, 2)
    score = oracle(shape[1:]).score_fn(sde)
    got = draw_samples(score, sde, sc, shape, generator=torch.Generator().manual_seed(3), device="cpu")
    want = _direct(method, score, sde, shape, sc, torch.Generator().manual_seed(3))
    assert torch.equal(got.x, want.x) and got.nfe == want.nfe
    expected = sampler_evaluations(sc)
    assert expected is None or got.nfe == expected


def test_progress_bars_go_to_stderr(capsys):
    sde = build_sde(C.SDEConfig(name="vp"))
    score = oracle((2,)).score_fn(sde)
    for method, label in (("pc", "PC sampling"), ("ode", "probability-flow ODE"),
                          ("annealed_langevin", "annealed Langevin")):
        sc = C.SamplingConfig(method=method, steps=25, num_samples=3, rtol=1e-3, atol=1e-3)
        draw_samples(score, sde, sc, (3, 2), generator=torch.Generator().manual_seed(0), device="cpu", progress=True)
        captured = capsys.readouterr()
        assert label in captured.err and label not in captured.out, method
        draw_samples(score, sde, sc, (3, 2), generator=torch.Generator().manual_seed(0), device="cpu")
        assert label not in capsys.readouterr().err  # off by default
