"""Samplers fed the exact score reproduce a 2-D mixture with weights 0.2/0.3/0.5 (VE, VP, sub-VP).

Tolerances: n samples give a mode-weight TV with sd ≤ ½ Σ_k sqrt(w_k(1−w_k)/n) and a relative spread
error with sd 1/sqrt(n) (see tests/test_sampling_oracle.py); we allow 4 sds plus the discretisation
bias measured for each sampler at the step count used (20k samples, CPU): |bias| ≤ 1.5 % for PC and
Euler–Maruyama at 100 steps and the ODE samplers, ≤ 3 % for ancestral sampling at 100 steps with its
default analytic variance (+1.8 … +2.7 % measured, 16k samples; benchmarks/ancestral_variance.py; the
variance choices are tested in tests/test_sampling_ancestral.py). The 1000-step / 10k-sample checks
against the official figures are in tests/test_sampling_slow.py.
"""

import pytest
import torch

import scoresde as sd
from scoresde.sampling import (
    CORRECTORS,
    PREDICTORS,
    SampleResult,
    sample_ancestral,
    sample_annealed_langevin,
    sample_dpm_solver,
    sample_euler_maruyama,
    sample_ode,
    sample_pc,
)
from tests.common import BUILTIN_SDES, EPS, MIXTURE, mode_metrics, reference_spread, spread_tolerance, tv_tolerance

N = 2000

SAMPLERS = {  # name -> (call, denoise default, steps, spread bias allowance)
    "pc": (lambda s, sde, g, eps, st: sample_pc(s, sde, (N, 2), steps=st, eps=eps, generator=g), True, 100, 0.015),
    "em": (lambda s, sde, g, eps, st: sample_euler_maruyama(s, sde, (N, 2), steps=st, eps=eps, generator=g),
           True, 100, 0.015),
    "ancestral": (lambda s, sde, g, eps, st: sample_ancestral(s, sde, (N, 2), steps=st, eps=eps, generator=g),
                  True, 100, 0.03),
    "ode": (lambda s, sde, g, eps, st: sample_ode(s, sde, (N, 2), eps=eps, generator=g), False, None, 0.005),
    "dpm": (lambda s, sde, g, eps, st: sample_dpm_solver(s, sde, (N, 2), steps=st, eps=eps, generator=g),
            False, 50, 0.021),
}


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("sde_name", sorted(BUILTIN_SDES))
def test_reproduces_mixture(sde_name, sampler):
    sde = BUILTIN_SDES[sde_name]()
    call, denoise, steps, bias = SAMPLERS[sampler]
    res = call(MIXTURE.score_fn(sde), sde, torch.Generator().manual_seed(11), EPS[sde_name], steps)
    assert isinstance(res, SampleResult) and res.x.shape == (N, 2) and res.x.dtype == torch.float32
    tv, spread = mode_metrics(res.x)
    assert tv < tv_tolerance(N)
    rel = spread / reference_spread(sde, EPS[sde_name], denoise) - 1
    assert abs(rel) < spread_tolerance(N) + bias, f"{sampler} on {sde_name}: spread off by {rel:+.3%}"


@pytest.mark.slow  # ~15 s CPU each: beyond the default run's budget on 2 shared cores
@pytest.mark.parametrize("sde_name", sorted(BUILTIN_SDES))
def test_error_shrinks_with_steps(sde_name):
    """Coarse grids are biased well beyond sampling noise (≥ 8 %, measured; the analytic ancestral variance
    is already within ~6 % at 30 steps, so it is checked from 10 steps: +15 … +38 %); 5-10× more steps
    remove most of it. (PC starts at 25 steps, where VP's step is the DDPM chain.)"""
    sde = BUILTIN_SDES[sde_name]()
    score = MIXTURE.score_fn(sde)
    for sampler in ("pc", "ancestral", "dpm"):
        call, denoise, _, _ = SAMPLERS[sampler]
        ref = reference_spread(sde, EPS[sde_name], denoise)
        errs = [abs(mode_metrics(call(score, sde, torch.Generator().manual_seed(5), EPS[sde_name], st).x)[1] / ref - 1)
                for st in {"pc": (25, 250), "ancestral": (10, 100), "dpm": (8, 40)}[sampler]]
        assert errs[1] < errs[0] / 2, f"{sampler} on {sde_name}: errors {errs}"


def test_every_predictor_corrector_pair_runs_and_counts_evaluations():
    sde = sd.VPSDE()
    calls = []

    def score(x, t):
        calls.append(1)
        return MIXTURE.score_t(x, t, sde)

    for p in PREDICTORS:
        for c in CORRECTORS:
            calls.clear()
            res = sample_pc(score, sde, (64, 2), predictor=p, corrector=c, corrector_steps=2, steps=30,
                            generator=torch.Generator().manual_seed(0))
            expected = 30 * ((p != "none") + 2 * (c != "none")) + 1
            assert res.nfe == len(calls) == expected, (p, c)
            assert torch.isfinite(res.x).all()


def test_callback_sees_every_step_on_the_grid():
    seen = []
    sde = sd.VESDE()
    sample_pc(MIXTURE.score_fn(sde), sde, (8, 2), steps=5, eps=1e-5, generator=torch.Generator().manual_seed(0),
              callback=lambda step: seen.append((step.i, float(step.t[0]), step.x.shape, step.x_mean.shape)))
    assert [s[0] for s in seen] == list(range(5))
    assert seen[-1][1] == pytest.approx(1e-5) and seen[0][1] == pytest.approx(1 - (1 - 1e-5) / 5)


@pytest.mark.parametrize("sampler", ["pc", "em", "ancestral", "dpm", "ald"])
def test_same_seed_is_bit_identical(sampler):
    sde = sd.VESDE()  # NCSN's default step_lr is tuned for VE's σ_min = 0.01
    score = MIXTURE.score_fn(sde)
    run = {
        "pc": lambda g: sample_pc(score, sde, (32, 2), steps=20, generator=g),
        "em": lambda g: sample_euler_maruyama(score, sde, (32, 2), steps=20, generator=g),
        "ancestral": lambda g: sample_ancestral(score, sde, (32, 2), steps=20, generator=g),
        "dpm": lambda g: sample_dpm_solver(score, sde, (32, 2), steps=10, generator=g),
        "ald": lambda g: sample_annealed_langevin(score, sde, (32, 2), levels=3, steps=5, generator=g),
    }[sampler]
    a, b = run(torch.Generator().manual_seed(3)), run(torch.Generator().manual_seed(3))
    assert torch.equal(a.x, b.x)
    assert not torch.equal(a.x, run(torch.Generator().manual_seed(4)).x)


def test_float64_and_any_rank():
    """float64 state and a (B, 1, 2, 1) shape: the samplers never assume (B, D)."""
    sde = sd.VPSDE()
    base = MIXTURE.score_fn(sde)

    def score(x, t):  # the oracle is 2-D; reshape around it as a network adapter would
        return base(x.reshape(x.shape[0], 2), t).reshape(x.shape)

    for fn in (sample_pc, sample_ancestral, sample_dpm_solver, sample_ode):
        kw = {} if fn is sample_ode else {"steps": 100 if fn is not sample_dpm_solver else 40}
        res = fn(score, sde, (N, 1, 2, 1), dtype=torch.float64, generator=torch.Generator().manual_seed(2), **kw)
        assert res.x.shape == (N, 1, 2, 1) and res.x.dtype == torch.float64
        tv, spread = mode_metrics(res.x.reshape(N, 2))
        assert tv < tv_tolerance(N)
        denoise = fn in (sample_pc, sample_ancestral)
        assert abs(spread / reference_spread(sde, 1e-3, denoise) - 1) < spread_tolerance(N) + 0.06


class OrnsteinUhlenbeck(sd.SDE):
    """dx = −θ x dt + sqrt(2θ) dw, written as a user would: drift, diffusion, marginal_coeffs only.
    α(t) = e^{−θt}, σ(t)² = 1 − e^{−2θt}; θ = 5 makes α(T) = 0.007, so p_T ≈ N(0, I)."""

    theta = 5.0

    def drift(self, x, t):
        return -self.theta * x

    def diffusion(self, t):
        return torch.full_like(t, (2 * self.theta) ** 0.5)

    def marginal_coeffs(self, t):
        return torch.exp(-self.theta * t), torch.sqrt(-torch.expm1(-2 * self.theta * t))


USER_SDES = {
    "ou": OrnsteinUhlenbeck,
    "linear": lambda: sd.LinearSDE(lambda t: torch.full_like(t, -4.0), lambda t: 1 + 2 * t),
}


@pytest.mark.parametrize("sde_name", sorted(USER_SDES))
@pytest.mark.parametrize("sampler", ["ode", "em", "dpm"])
def test_user_sdes_sample_correctly(sde_name, sampler):
    """Generic code only: a hand-written SDE subclass and the LinearSDE. The prior N(0, σ(T)² I) ignores
    the residual mean α(T)·m (≤ 0.07 here), a prior mismatch of KL ≈ ½‖α(T) m‖²/σ(T)² < 3e-3: within
    the stated bias allowance."""
    sde = USER_SDES[sde_name]()
    call, denoise, steps, bias = SAMPLERS[sampler]
    if sampler == "em" and sde_name == "ou":  # constant g² = 2θ = 10: the reverse drift is stiff near t = 0
        steps = 500  # (g²/s² = 40 per unit time), so Euler–Maruyama needs dt ≤ 0.002 for a 1.5 % bias
    res = call(MIXTURE.score_fn(sde), sde, torch.Generator().manual_seed(8), 1e-3, steps)
    tv, spread = mode_metrics(res.x)
    assert tv < tv_tolerance(N) + 0.01
    rel = spread / reference_spread(sde, 1e-3, denoise) - 1
    assert abs(rel) < spread_tolerance(N) + bias + 0.01, f"{sampler} on {sde_name}: {rel:+.3%}"


# ----------------------------------------------------------------------------------------- bad input
def _score(sde=None):
    return MIXTURE.score_fn(sde or sd.VPSDE())


@pytest.mark.parametrize("kwargs, match", [
    ({"predictor": "heun"}, r"predictor 'heun'.*ancestral.*euler_maruyama.*none.*reverse_diffusion"),
    ({"corrector": "hmc"}, r"corrector 'hmc'.*ald.*langevin.*none"),
    ({"steps": 0}, r"steps must be an integer >= 1, got 0"),
    ({"snr": 0.0}, r"snr must be a positive finite number, got 0.0"),
    ({"eps": 0.0}, r"eps must lie in \(0, T=1.0\), got 0.0"),
    ({"eps": 1.5}, r"eps must lie in \(0, T=1.0\), got 1.5"),
    ({"corrector_steps": 0}, r"corrector_steps must be an integer >= 1, got 0"),
])
def test_pc_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_pc(_score(), sd.VPSDE(), (4, 2), **{"steps": 3, **kwargs})


def test_other_samplers_reject_bad_arguments():
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match="method 'rk4x'"):
        sample_ode(_score(), sde, (4, 2), method="rk4x")
    with pytest.raises(ValueError, match="pass steps"):
        sample_ode(_score(), sde, (4, 2), method="euler")
    with pytest.raises(ValueError, match="order must be 1"):
        sample_dpm_solver(_score(), sde, (4, 2), order=4)
    with pytest.raises(ValueError, match="unknown grid 'cosine'"):
        sample_dpm_solver(_score(), sde, (4, 2), grid="cosine")
    with pytest.raises(ValueError, match="levels must be an integer >= 1"):
        sample_annealed_langevin(_score(), sde, (4, 2), levels=0)
    with pytest.raises(ValueError, match="shape must be"):
        sample_euler_maruyama(_score(), sde, (4,), steps=3)
    with pytest.raises(TypeError, match="sde must be an instance of scoresde.SDE"):
        sample_ancestral(_score(), "vp", (4, 2), steps=3)
    with pytest.raises(TypeError, match="score_fn must be a callable"):
        sample_pc(None, sde, (4, 2), steps=3)


def test_score_fn_with_wrong_shape_or_nan_is_caught_at_first_call():
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match=r"score_fn must return a tensor of the input's shape \(4, 2\), got \(4,\)"):
        sample_pc(lambda x, t: x.sum(1), sde, (4, 2), steps=3)
    with pytest.raises(ValueError, match="score_fn returned NaN"):
        sample_ode(lambda x, t: torch.full_like(x, float("nan")), sde, (4, 2))


def test_nan_during_sampling_names_step_and_time():
    sde = sd.VPSDE()
    calls = [0]

    def score(x, t):  # finite at first, NaN from the 4th call on
        calls[0] += 1
        return -x if calls[0] < 4 else torch.full_like(x, float("nan"))

    with pytest.raises(FloatingPointError, match=r"at step 3 \(t = 0\.6"):
        sample_euler_maruyama(score, sde, (4, 2), steps=10)


# ----------------------------------------------------------------------------------------- short runs
@pytest.mark.parametrize("sde_name", sorted(BUILTIN_SDES))
@pytest.mark.parametrize("steps", [1, 2, 5, 10, 19])
def test_pc_runs_at_any_step_count(sde_name, steps):
    """VP's DDPM step needs β(t)·dt < 1 (≥ 21 steps); below that the discretisation falls back
    to the exact transition's β_i, so PC runs (finite) with the exact score at every step count ≥ 1."""
    sde = BUILTIN_SDES[sde_name]()
    for predictor in ("reverse_diffusion", "ancestral", "euler_maruyama"):
        res = sample_pc(MIXTURE.score_fn(sde), sde, (256, 2), steps=steps, eps=EPS[sde_name], predictor=predictor,
                        generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(res.x).all(), (predictor, steps)


def test_vp_discretisation_is_ddpm_where_valid_and_exact_beyond():
    """β(t)·dt < 1: exactly the DDPM step (so runs of ≥ 21 steps are unchanged); otherwise the exact
    transition's β_i = 1 − a², which lies in (0, 1)."""
    sde = sd.VPSDE()
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    t = torch.tensor([1.0, 0.5], dtype=torch.float64)
    f, G = sde.discretize(x, t, 1e-3)
    beta = sde.beta(t) * 1e-3
    assert torch.equal(G, torch.sqrt(beta)) and torch.equal(f, (torch.sqrt(1 - beta) - 1)[:, None] * x)
    f, G = sde.discretize(x, t, torch.tensor([0.5, 0.4], dtype=torch.float64))  # β(t)·dt = 10, 4.04
    a = sde.transition_coeffs(t, t - torch.tensor([0.5, 0.4], dtype=torch.float64))[0]
    assert torch.allclose(G**2, 1 - a**2, rtol=1e-12) and torch.allclose(f, (a - 1)[:, None] * x, rtol=1e-12)


class NaiveDDPM(sd.VPSDE):
    """A user SDE with the textbook DDPM step and no guard: invalid when β(t)·dt ≥ 1."""

    def discretize(self, x, t, dt):
        beta_i = self.beta(t) * dt
        return (torch.sqrt(1 - beta_i) - 1)[:, None] * x, torch.sqrt(beta_i)


def test_invalid_discretisation_is_refused_up_front_naming_the_step_count():
    calls = []

    def score(x, t):
        calls.append(1)
        return MIXTURE.score_t(x, t, sd.VPSDE())

    with pytest.raises(ValueError, match=r"steps=19 is too few for the reverse_diffusion predictor with "
                                         r"NaiveDDPM.*not finite at step 0 \(t = 1"):
        sample_pc(score, NaiveDDPM(), (8, 2), steps=19)
    assert not calls  # refused before any score evaluation
    assert torch.isfinite(sample_pc(score, NaiveDDPM(), (8, 2), steps=21).x).all()


# --------------------------------------------------------------------------- NaN in the final denoise
@pytest.mark.parametrize("sampler", ["pc", "em", "ald"])
def test_nan_in_final_denoising_step_is_raised(sampler):
    """A score that is finite at every call but whose last value makes the Tweedie step overflow
    (σ(eps)² = 4 times 3e38 is inf in float32) must raise, not return inf. (A finite score keeps this test
    independent of how the score's own values are checked.)"""
    sde = sd.VESDE(sigma_min=2.0, sigma_max=50.0)
    total = {"pc": 2 * 4 + 1, "em": 4 + 1, "ald": 2 * 3 + 1}[sampler]
    calls = [0]

    def score(x, t):
        calls[0] += 1
        return -x / 2500 if calls[0] < total else torch.full_like(x, 3e38)

    run = {
        "pc": lambda: sample_pc(score, sde, (4, 2), steps=4, eps=1e-5),
        "em": lambda: sample_euler_maruyama(score, sde, (4, 2), steps=4, eps=1e-5),
        "ald": lambda: sample_annealed_langevin(score, sde, (4, 2), levels=2, steps=3, denoise=True),
    }[sampler]
    with pytest.raises(FloatingPointError, match=r"NaN or inf in the final denoising step \(Tweedie's formula "
                                                 r"at t = (1e-05|0\.001)\)"):
        run()
    assert calls[0] == total
