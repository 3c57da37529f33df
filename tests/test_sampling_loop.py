"""The one predictor–corrector loop and the one callback payload.

- annealed Langevin is the loop with no predictor and the ald corrector: it equals NCSN's Algorithm 1
  written out here (Song & Ermon 2019), draw for draw from the same generator;
- the ald corrector's two step forms (NCSN's step_lr, Song et al.'s snr) are one formula;
- the projection hook runs after every predictor and corrector step and its result is the loop's state;
- every sampler calls ``callback(step)`` with a SamplerStep whose fields mean what they say, and the old
  per-sampler callback forms keep working for one release with a DeprecationWarning.
"""

import warnings

import pytest
import torch

import scoresde as sd
from scoresde.controllable import inpaint, inpaint_smc
from scoresde.discrete import DiscreteChain, GaussianReverseKernel
from scoresde.discrete.sampling import sample_chain
from scoresde.sampling import SamplerStep, predictor_corrector, time_grid
from scoresde.sampling._common import CountedScore, tweedie_denoise
from scoresde.sampling.steps import PREDICTORS, annealed_langevin
from tests.common import seeded

MIX = sd.GaussianMixture([0.8, 0.2], [[5.0, 5.0], [-5.0, -5.0]], 1.0)


def test_annealed_langevin_is_ncsn_algorithm_1():
    """x ← x + (α_i/2) ∇log p_{σ_i}(x) + sqrt(α_i) z, α_i = ε σ_i²/σ_L², L levels × T steps, σ_i = σ(t_i)."""
    sde = sd.VESDE(sigma_min=0.1, sigma_max=20.0)
    score = MIX.score_fn(sde)
    L, T, lr, eps = 4, 6, 2e-3, 1e-5
    res = sd.sample_annealed_langevin(score, sde, (50, 2), levels=L, steps=T, step_lr=lr, eps=eps, generator=seeded(3))
    g = seeded(3)
    x = sde.prior_sample((50, 2), generator=g)
    ts = torch.linspace(1.0, eps, L)
    sigmas = sde.marginal_coeffs(ts)[1]
    for t, sigma in zip(ts, sigmas, strict=True):
        alpha = lr * sigma**2 / sigmas[-1] ** 2
        for _ in range(T):
            x = x + alpha / 2 * score(x, t.expand(50)) + torch.sqrt(alpha) * torch.randn(x.shape, generator=g)
    assert res.nfe == L * T
    torch.testing.assert_close(res.x, x, rtol=1e-6, atol=1e-5)  # float32 rounding of the same arithmetic


def test_ald_step_forms_agree():
    """NCSN's form with step_lr = 4 α_i snr² σ_L² is the snr form (α_i = 1 for VE)."""
    sde = sd.VESDE()
    rsde = sde.reverse(MIX.score_fn(sde))
    x = torch.randn(64, 2, generator=seeded(1), dtype=torch.float64) * 3
    t = torch.full((64,), 0.4, dtype=torch.float64)
    snr, sigma_last = 0.2, 0.05
    a = annealed_langevin(x, t, t, rsde=rsde, generator=seeded(2), snr=snr)
    b = annealed_langevin(x, t, t, rsde=rsde, generator=seeded(2), step_lr=4 * snr**2 * sigma_last**2,
                          sigma_last=sigma_last)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="sigma_last"):
        annealed_langevin(x, t, t, rsde=rsde, step_lr=1e-3)


def test_projection_hook_runs_after_every_step_and_sets_the_state():
    sde = sd.VPSDE()
    score = CountedScore(lambda x, t: -x)
    ts = time_grid(sde, 5, 1e-3, dtype=torch.float32)
    calls = []

    def project(x, x_mean, t):
        calls.append(float(t[0]))
        return x.index_fill(1, torch.tensor([0]), 7.0), x_mean.index_fill(1, torch.tensor([0]), 7.0)

    steps = []
    x, x_mean = predictor_corrector(score, sde, torch.zeros(3, 2), ts, predictor=PREDICTORS["euler_maruyama"],
                                    corrector=lambda x, t, t_next, **_: (x + 1, x), corrector_steps=2,
                                    generator=seeded(0), project=project, callback=steps.append)
    assert calls == [c for c in ts[1:].tolist() for _ in range(3)]  # after the predictor and both correctors
    assert bool((x[:, 0] == 7).all()) and bool((x_mean[:, 0] == 7).all())
    assert [s.i for s in steps] == list(range(5)) and [s.nfe for s in steps] == [1, 2, 3, 4, 5]
    assert all(bool((s.x[:, 0] == 7).all()) for s in steps)
    with pytest.raises(ValueError, match="corrector_steps=2 needs a corrector step"):
        predictor_corrector(score, sde, torch.zeros(3, 2), ts, corrector_steps=2)


SDE = sd.VPSDE()


def _score(x, t):
    return -x  # the exact score of N(0, I) data under VP


KERNEL = GaussianReverseKernel(DiscreteChain.from_sde(SDE, 30), lambda x, i: 0.1 * x)
STEPPERS = {  # name -> (run with callback, steps, nfe per step, batch of the state)
    "pc": (lambda cb: sd.sample_pc(_score, SDE, (4, 2), steps=6, generator=seeded(0), callback=cb), 6, 2, 4),
    "em": (lambda cb: sd.sample_euler_maruyama(_score, SDE, (4, 2), steps=6, generator=seeded(0), callback=cb),
           6, 1, 4),
    "ancestral": (lambda cb: sd.sample_ancestral(_score, SDE, (4, 2), steps=6, generator=seeded(0), callback=cb),
                  6, 1, 4),
    "ald": (lambda cb: sd.sample_annealed_langevin(_score, SDE, (4, 2), levels=2, steps=3, generator=seeded(0),
                                                   callback=cb), 6, 1, 4),
    "dpm": (lambda cb: sd.sample_dpm_solver(_score, SDE, (4, 2), steps=6, generator=seeded(0), callback=cb), 6, 1, 4),
    "ode": (lambda cb: sd.sample_ode(_score, SDE, (4, 2), method="euler", steps=6, generator=seeded(0),
                                     callback=cb), 6, 1, 4),
    "inpaint": (lambda cb: inpaint(_score, SDE, torch.zeros(4, 2), torch.tensor([1.0, 0.0]), steps=6,
                                   generator=seeded(0), callback=cb), 6, 2, 4),
    "smc": (lambda cb: inpaint_smc(_score, SDE, torch.zeros(4, 2), torch.tensor([1.0, 0.0]), particles=3, steps=6,
                                   generator=seeded(0), callback=cb), 6, 1, 12),
    "chain": (lambda cb: sample_chain(KERNEL, (4, 2), generator=seeded(0), callback=cb), 30, 1, 4),
}


@pytest.mark.parametrize("sampler", sorted(STEPPERS))
def test_every_sampler_passes_one_sampler_step(sampler):
    run, n, per_step, batch = STEPPERS[sampler]
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the current form raises no deprecation warning
        run(seen.append)
    assert all(isinstance(s, SamplerStep) for s in seen)
    assert [s.i for s in seen] == list(range(n))
    assert [s.nfe for s in seen] == [per_step * (k + 1) for k in range(n)]
    assert all(s.x.shape == (batch, 2) and s.x_mean.shape == (batch, 2) and s.t.shape == (batch,) for s in seen)
    ts = [float(s.t[0]) for s in seen]
    assert ts == sorted(ts, reverse=True)  # time runs backwards (ALD repeats a level's time)


def test_sampler_specific_extras():
    steps = []
    res = sd.sample_dpm_solver(_score, SDE, (4, 2), steps=5, generator=seeded(0), callback=steps.append)
    x_prev = SDE.prior_sample((4, 2), generator=seeded(0))  # x0_hat of step i is Tweedie's formula at (x_i, t_i)
    grid = time_grid(SDE, 5, 1e-3, "time_quadratic").float()
    for s, t in zip(steps, grid[:-1], strict=True):
        torch.testing.assert_close(s.extra, tweedie_denoise(SDE, _score, x_prev, t.expand(4)), rtol=1e-5, atol=1e-6)
        assert s.x_mean is s.x
        x_prev = s.x
    assert torch.equal(steps[-1].x, res.x)
    smc = []
    inpaint_smc(_score, SDE, torch.zeros(4, 2), torch.tensor([1.0, 0.0]), particles=3, steps=4, generator=seeded(0),
                callback=smc.append)
    assert all(s.extra.shape == (4, 3) and bool((s.extra.amax(1) == 0).all()) for s in smc)  # max-normalised log_w
    chain = []
    sample_chain(KERNEL, (4, 2), generator=seeded(0), callback=chain.append)
    assert [int(s.t[0]) for s in chain] == list(range(29, -1, -1))
    assert torch.equal(chain[-1].x, chain[-1].extra.mean) and torch.equal(chain[-1].x_mean, chain[-1].extra.mean)


OLD_FORMS = {  # name -> (run with callback, the old arguments rebuilt from a SamplerStep)
    "pc": (STEPPERS["pc"][0], lambda s: (s.i, s.t, s.x, s.x_mean)),
    "em": (STEPPERS["em"][0], lambda s: (s.i, s.t, s.x, s.x_mean)),
    "ald": (STEPPERS["ald"][0], lambda s: (s.i, s.t, s.x, s.x_mean)),
    "inpaint": (STEPPERS["inpaint"][0], lambda s: (s.i, s.t, s.x, s.x_mean)),
    "dpm": (STEPPERS["dpm"][0], lambda s: (s.i, s.t, s.x, s.extra)),
    "ode": (STEPPERS["ode"][0], lambda s: (s.i, s.t, s.x, s.x)),
    "smc": (STEPPERS["smc"][0], lambda s: (s.i, s.t[0], s.x, s.extra)),
    "chain": (STEPPERS["chain"][0], lambda s: (29 - s.i, s.x, s.extra)),
}


@pytest.mark.parametrize("sampler", sorted(OLD_FORMS))
def test_old_callback_forms_still_work_with_one_deprecation_warning(sampler):
    run, old_args = OLD_FORMS[sampler]
    new, old = [], []
    run(new.append)
    with pytest.warns(DeprecationWarning, match=r"callback\(.*\) is deprecated.*callback\(step\)") as caught:
        run(lambda *args: old.append(args))
    assert len(caught) == 1  # decided once, from the signature, not at every step
    want = [old_args(s) for s in new]
    assert len(old) == len(want)
    for got, exp in zip(old, want, strict=True):
        for a, b in zip(got, exp, strict=True):
            if isinstance(a, int):
                assert a == b
            else:  # a tensor, or the chain's KernelOutput (the very object the new form carries)
                assert torch.equal(a, b) if torch.is_tensor(a) else torch.equal(a.mean, b.mean)


def test_callback_of_another_form_is_refused():
    with pytest.raises(TypeError, match=r"one argument, a scoresde.sampling.SamplerStep.*\(i, t, x, x_mean\)"):
        sd.sample_pc(_score, SDE, (4, 2), steps=2, callback=lambda a, b: None)
    with pytest.raises(TypeError, match="callback must be None or a callable"):
        sd.sample_ode(_score, SDE, (4, 2), callback=3)
