"""No silent wrong result from bad input.

1. A ``score_fn`` whose result merely broadcasts against x ((B, 1), (1, D), a scalar) used to give finite,
   wrong samples, losses and log-likelihoods; a score that changes shape after the first call slipped past
   the samplers' first-call check. Every entry point that calls a score must refuse it on every call, with
   an error naming score_fn and both shapes.
15. Empty batches, float16/float64 data through a float32 ScoreModel, a NaN score under an adaptive ODE
    solver and a generator of the wrong type each get a clear error naming the argument (or, for dtypes,
    a documented cast at the adapter).
"""

import re

import pytest
import torch

import scoresde as sd
from scoresde._checks import CheckedScore, check_generator, check_score
from scoresde._ode import integrate
from scoresde.likelihood import (
    VariationalDequantizer,
    dequantized_log_prob,
    draw_probes,
    evaluate_nll,
    log_likelihood,
    nll_bound,
    nll_bound_terms,
)
from scoresde.losses import classifier_loss, ddpm_loss, dsm_loss, sample_time, smld_loss, ssm_loss
from scoresde.sampling import (
    encode,
    sample_ancestral,
    sample_annealed_langevin,
    sample_dpm_solver,
    sample_euler_maruyama,
    sample_ode,
    sample_pc,
)
from tests.common import seeded, two_mode_mixture

SDE = sd.VPSDE()
MIX = two_mode_mixture()
GOOD = MIX.score_fn(SDE)
X = MIX.sample(4, generator=seeded(3))  # (4, 2), float64 (the mixture's default dtype)


# ----------------------------------------------------------------------------------- item 1: score shapes
def _bad_scores():
    """name -> (factory of a fresh score_fn, the shape it returns for a (4, 2) input)."""

    def changes_at_third_call():
        calls = [0]

        def score(x, t):
            calls[0] += 1
            s = GOOD(x, t)
            return s if calls[0] < 3 else s[:, :1]

        return score

    return {
        "(B,1)": (lambda: lambda x, t: GOOD(x, t)[:, :1], "(4, 1)"),
        "(1,D)": (lambda: lambda x, t: GOOD(x, t)[:1], "(1, 2)"),
        "scalar": (lambda: lambda x, t: GOOD(x, t).mean(), "()"),
        "3rd call": (changes_at_third_call, "(4, 1)"),
    }


def _rsde(score, pf=False):
    rsde = SDE.reverse(score, probability_flow=pf)
    t = torch.full((4,), 0.5)
    return [rsde.drift(X, t) for _ in range(3)] + [rsde.discretize(X, t, torch.full((4,), 0.1))]


def _levels():
    return [(torch.randint(0, 256, (4, 2), generator=seeded(9)),)]


# Each entry calls its function 3 times, so that a score which changes shape at its 3rd call is met by
# entry points that call the score once per call (the losses) as well as by those that call it often.
ENTRY_POINTS = {
    "sample_pc": lambda s: sample_pc(s, SDE, (4, 2), steps=30, generator=seeded()),
    "sample_pc(ancestral, ald)": lambda s: sample_pc(s, SDE, (4, 2), steps=3, predictor="ancestral",
                                                     corrector="ald", generator=seeded()),
    "sample_euler_maruyama": lambda s: sample_euler_maruyama(s, SDE, (4, 2), steps=3, generator=seeded()),
    "sample_ancestral": lambda s: sample_ancestral(s, SDE, (4, 2), steps=3, generator=seeded()),
    "sample_annealed_langevin": lambda s: sample_annealed_langevin(s, SDE, (4, 2), levels=2, steps=2,
                                                                   generator=seeded()),
    "sample_ode(dopri5)": lambda s: sample_ode(s, SDE, (4, 2), generator=seeded()),
    "sample_ode(euler)": lambda s: sample_ode(s, SDE, (4, 2), method="euler", steps=3, generator=seeded()),
    "encode": lambda s: encode(s, SDE, X, method="euler", steps=3),
    "sample_dpm_solver": lambda s: sample_dpm_solver(s, SDE, (4, 2), steps=3, generator=seeded()),
    "inpaint": lambda s: sd.inpaint(s, SDE, X.float(), torch.tensor([1.0, 0.0]), steps=30, generator=seeded()),
    "log_likelihood(exact)": lambda s: log_likelihood(s, SDE, X, divergence="exact"),
    "log_likelihood(rademacher)": lambda s: log_likelihood(s, SDE, X, generator=seeded()),
    "evaluate_nll": lambda s: evaluate_nll(s, SDE, _levels(), n_bits=8, scale=2.0, shift=-1.0, repeats=1,
                                           generator=seeded()),
    "dsm_loss": lambda s: [dsm_loss(s, SDE, X, generator=seeded()) for _ in range(3)],
    "dsm_loss(likelihood, IS)": lambda s: [dsm_loss(s, SDE, X, weighting="likelihood", importance_sampling=True,
                                                    generator=seeded()) for _ in range(3)],
    "ssm_loss": lambda s: [ssm_loss(s, SDE, X, generator=seeded()) for _ in range(3)],
    "smld_loss": lambda s: [smld_loss(s, sd.VESDE(), X, generator=seeded()) for _ in range(3)],
    "ddpm_loss": lambda s: [ddpm_loss(s, SDE, X, generator=seeded()) for _ in range(3)],
    "nll_bound": lambda s: [nll_bound(s, SDE, X, generator=seeded()) for _ in range(3)],
    "ReverseSDE": _rsde,
    "ReverseSDE(probability_flow)": lambda s: _rsde(s, pf=True),
}


@pytest.mark.parametrize("bad", sorted(_bad_scores()))
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_call_of_a_score_with_a_broadcastable_wrong_shape_is_refused(entry, bad):
    factory, got = _bad_scores()[bad]
    pattern = r"score_fn must return a tensor of the input's shape \(4, 2\), got " + re.escape(got)
    with pytest.raises(ValueError, match=pattern):
        ENTRY_POINTS[entry](factory())


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_entry_point_runs_with_a_correct_score(entry):
    """The checks refuse only wrong scores: the same calls with the exact score go through."""
    ENTRY_POINTS[entry](GOOD)


@pytest.mark.parametrize("bad", sorted(_bad_scores()))
def test_wrappers_that_call_a_score_check_it_before_combining_it(bad):
    """guided_score_fn adds a gradient of x's shape, which would repair a (B, 1) score's shape by broadcasting;
    score_fn_to_eps_net multiplies by a (B, 1, ...) std. Both check the inner score on every call."""
    from scoresde.controllable import guided_score_fn
    from scoresde.discrete import score_fn_to_eps_net

    factory, got = _bad_scores()[bad]
    pattern = r"score_fn must return a tensor of the input's shape \(4, 2\), got " + re.escape(got)
    guided = guided_score_fn(factory(), lambda x, t, y: -(x**2).sum(1), torch.zeros(4, dtype=torch.long))
    eps_net = score_fn_to_eps_net(factory(), SDE, 1000)
    t, i = torch.full((4,), 0.5), torch.full((4,), 500, dtype=torch.long)
    with pytest.raises(ValueError, match=pattern):
        [guided(X, t) for _ in range(3)]
    with pytest.raises(ValueError, match=pattern):
        [eps_net(X, i) for _ in range(3)]


def test_log_likelihood_with_a_broadcast_score_used_to_be_finite_and_wrong():
    """The case of the issue: a (B, 1) score broadcast into a finite log-density (−7.16 instead of −1.36)."""
    with pytest.raises(ValueError, match=r"score_fn .* shape \(4, 2\), got \(4, 1\)"):
        log_likelihood(lambda x, t: GOOD(x, t)[:, :1], SDE, X, divergence="exact")
    # The exact score gives the oracle's value: log p_eps(x) + log π(z) − log p_T(z) (π is not exactly p_T; see
    # tests/test_likelihood.py), to the solver's tolerance (1e-6 per unit time in float64: 1e-4 is ample).
    res = log_likelihood(GOOD, SDE, X, divergence="exact", rtol=1e-6, atol=1e-6)
    t_eps, t_T = torch.full((4,), 1e-5, dtype=X.dtype), torch.full((4,), SDE.T, dtype=X.dtype)
    ref = MIX.log_prob_t(X, t_eps, SDE) + SDE.prior_logp(res.z) - MIX.log_prob_t(res.z, t_T, SDE)
    torch.testing.assert_close(res.logp, ref, atol=1e-4, rtol=0)


def test_checked_score_counts_and_checks_values_as_asked():
    nan_second = [0]

    def score(x, t):
        nan_second[0] += 1
        return -x if nan_second[0] != 2 else torch.full_like(x, float("nan"))

    t = torch.full((4,), 0.5)
    first = CheckedScore(score, finite="first")
    first(X, t), first(X, t)  # the NaN of call 2 is not looked for
    assert first.nfe == 2
    nan_second[0] = 0
    every = CheckedScore(score, finite="every")
    every(X, t)
    with pytest.raises(FloatingPointError, match=r"score_fn returned NaN or infinite values at t = 0\.5"):
        every(X, t)
    with pytest.raises(TypeError, match="score_fn must be a callable"):
        CheckedScore(None)
    with pytest.raises(TypeError, match="floating-point tensor, got dtype torch.int64"):
        check_score(torch.zeros(4, 2, dtype=torch.long), X)
    with pytest.raises(ValueError, match=r"got list"):
        check_score([0.0], X)


# ----------------------------------------------------------------------------------- item 15: empty batches
EMPTY = torch.zeros(0, 2)


@pytest.mark.parametrize("call, name", [
    (lambda: dsm_loss(GOOD, SDE, EMPTY), "x0"),
    (lambda: ssm_loss(GOOD, SDE, EMPTY), "x0"),
    (lambda: smld_loss(GOOD, SDE, EMPTY), "x0"),
    (lambda: ddpm_loss(GOOD, SDE, EMPTY), "x0"),
    (lambda: nll_bound_terms(GOOD, SDE, EMPTY), "x0"),
    (lambda: log_likelihood(GOOD, SDE, EMPTY), "x"),
    (lambda: log_likelihood(GOOD, SDE, EMPTY, divergence="exact"), "x"),
    (lambda: evaluate_nll(GOOD, SDE, [torch.zeros(0, 2, dtype=torch.long)], n_bits=8), "data"),
])
def test_empty_batch_is_a_clear_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must .*(at least one sample|non-empty).*\(0, 2\)"):
        call()


# ----------------------------------------------------------------------------------- item 15: dtypes
def _random_model():
    net = sd.nn.MLPScoreNet(2, hidden=16, layers=1)
    with torch.no_grad():
        gen = seeded(5)
        for p in net.parameters():  # the read-out starts at zero: make every output depend on the input
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return sd.ScoreModel(net, SDE, "eps")


def test_score_model_casts_float64_and_float16_data_at_the_adapter():
    """The network runs in float32 on the rounded inputs; the score comes back in x's dtype."""
    model = _random_model()
    x32, t = X.float(), torch.tensor([0.1, 0.3, 0.6, 0.9])
    ref = model(x32, t)
    assert ref.dtype == torch.float32
    out64 = model(x32.double(), t.double())
    assert out64.dtype == torch.float64
    # Same float32 network outputs; only the ε → score division runs in float64 here: agreement to float32
    # rounding (a few ulps of 1.2e-7 relative).
    torch.testing.assert_close(out64, ref.double(), rtol=1e-6, atol=1e-6)
    x16, t16 = x32.half(), t.half()
    out16 = model(x16, t16)
    assert out16.dtype == torch.float16
    # float16 keeps 11 significant bits: the result, σ(t) and the output rounding each add ≤ 2^-11 relative.
    ref16 = model(x16.float(), t16.float())
    torch.testing.assert_close(out16.float(), ref16, rtol=4e-3, atol=4e-3)


def test_float64_data_through_a_float32_model_in_every_numerical_function():
    """Every public numerical function accepts float64 input."""
    model = _random_model()
    x64 = X
    with torch.no_grad():
        res = log_likelihood(model, SDE, x64, divergence="exact", method="euler", steps=4)
    assert res.logp.dtype == torch.float64 and torch.isfinite(res.logp).all()
    assert dsm_loss(model, SDE, x64, generator=seeded()).dtype == torch.float64
    assert ssm_loss(model, SDE, x64, generator=seeded()).dtype == torch.float64
    assert nll_bound(model, SDE, x64, generator=seeded()).dtype == torch.float64
    out = sample_euler_maruyama(model, SDE, (4, 2), steps=3, dtype=torch.float64, generator=seeded())
    assert out.x.dtype == torch.float64
    out = sample_ode(model, SDE, z=torch.randn(4, 2, dtype=torch.float64, generator=seeded()), method="euler",
                     steps=3)
    assert out.x.dtype == torch.float64


# ----------------------------------------------------------------------------------- item 15: NaN under dopri5
def _nan_below_half(x, t):
    return torch.where(t[:, None] < 0.5, torch.full_like(x, float("nan")), GOOD(x, t))


def test_sample_ode_with_a_score_turning_nan_names_the_time():
    with pytest.raises(FloatingPointError, match=r"score_fn returned NaN or infinite values at t = 0\.[0-4]"):
        sample_ode(_nan_below_half, SDE, (4, 2), generator=seeded())


def test_sample_ode_nan_on_an_accelerator_is_reported_when_the_solver_gives_up(monkeypatch):
    """Off CPU no score value is read during the solve (no host sync); torchdiffeq then gives up with an
    'underflow in dt' AssertionError, which must become a FloatingPointError naming score_fn and t."""
    import scoresde._checks as checks

    monkeypatch.setattr(checks, "on_cpu", lambda x: False)  # what check_score sees for a CUDA tensor
    with pytest.raises(FloatingPointError, match=r"sample_ode: .*score_fn.* NaN or inf at t = 0\.[0-5]"):
        sample_ode(_nan_below_half, SDE, (4, 2), generator=seeded())


def test_log_likelihood_nan_on_an_accelerator_is_reported_when_the_solver_gives_up(monkeypatch):
    import scoresde.likelihood.ode as likelihood

    monkeypatch.setattr(likelihood, "on_cpu", lambda x: False)  # no per-evaluation value check, as on a GPU
    with pytest.raises(FloatingPointError, match=r"log_likelihood: .*score_fn.* NaN or inf at t = 0\.[5-9]"):
        log_likelihood(lambda x, t: torch.where(t[:, None] > 0.5, torch.full_like(x, float("nan")), -x), SDE, X,
                       divergence="exact")


def test_integrate_reports_a_nan_right_hand_side():
    def fn(t, y):
        return -y if float(t) > 0.5 else torch.full_like(y, float("nan"))

    with pytest.raises(FloatingPointError, match=r"the ODE right-hand side returned NaN or inf at t = 0\.[0-5]"):
        integrate(fn, torch.ones(3, 2), 1.0, 1e-3)


# ----------------------------------------------------------------------------------- item 15: generator type
def _dequantizer():
    return VariationalDequantizer(2, n_bits=8, hidden=8, couplings=1)


BAD = 1234  # a seed where a torch.Generator belongs: the most common mistake

GENERATOR_USERS = {
    "sample_pc": lambda g: sample_pc(GOOD, SDE, (4, 2), steps=2, generator=g),
    "sample_euler_maruyama": lambda g: sample_euler_maruyama(GOOD, SDE, (4, 2), steps=2, generator=g),
    "sample_ancestral": lambda g: sample_ancestral(GOOD, SDE, (4, 2), steps=2, generator=g),
    "sample_annealed_langevin": lambda g: sample_annealed_langevin(GOOD, SDE, (4, 2), levels=2, steps=1,
                                                                   generator=g),
    "sample_ode": lambda g: sample_ode(GOOD, SDE, (4, 2), method="euler", steps=2, generator=g),
    "sample_dpm_solver": lambda g: sample_dpm_solver(GOOD, SDE, (4, 2), steps=2, generator=g),
    "log_likelihood": lambda g: log_likelihood(GOOD, SDE, X, generator=g),
    "draw_probes": lambda g: draw_probes("rademacher", (4, 2), 1, generator=g),
    "dsm_loss": lambda g: dsm_loss(GOOD, SDE, X, generator=g),
    "ssm_loss": lambda g: ssm_loss(GOOD, SDE, X, generator=g),
    "smld_loss": lambda g: smld_loss(GOOD, sd.VESDE(), X, generator=g),
    "ddpm_loss": lambda g: ddpm_loss(GOOD, SDE, X, generator=g),
    "classifier_loss": lambda g: classifier_loss(lambda x, t: torch.zeros(4, 3), SDE, X,
                                                 torch.tensor([0, 1, 2, 0]), generator=g),
    "sample_time": lambda g: sample_time(SDE, 4, generator=g),
    "nll_bound": lambda g: nll_bound(GOOD, SDE, X, generator=g),
    "evaluate_nll": lambda g: evaluate_nll(GOOD, SDE, _levels(), n_bits=8, repeats=1, generator=g),
    "VariationalDequantizer": lambda g: _dequantizer()(torch.zeros(4, 2, dtype=torch.long), generator=g),
}




def _kernel():
    from scoresde.discrete.chain import DiscreteChain
    from scoresde.discrete.kernel import GaussianReverseKernel
    from scoresde.discrete.schedules import linear_betas

    chain = DiscreteChain(linear_betas(4, 1e-3, 0.2))
    return GaussianReverseKernel(chain, lambda x, i: torch.zeros_like(x))


def _outside_the_core():
    from scoresde import data
    from scoresde.discrete.bound import vlb
    from scoresde.discrete.objectives import UniformSampler, simple_loss, vlb_estimate
    from scoresde.discrete.sampling import sample_chain
    from scoresde.likelihood import uniform_dequantize
    from scoresde.metrics.sliced import random_directions

    k = _kernel()
    return {
        "SDE.prior_sample": lambda g: SDE.prior_sample((4, 2), generator=g),
        "inpaint": lambda g: sd.inpaint(GOOD, SDE, X.float(), torch.tensor([1.0, 0.0]), steps=2, generator=g),
        "GaussianMixture.sample": lambda g: MIX.sample(4, generator=g),
        "uniform_dequantize": lambda g: uniform_dequantize(torch.zeros(4, 2, dtype=torch.long), n_bits=8,
                                                           generator=g),
        "sample_toy": lambda g: data.sample_toy("rings", 4, generator=g),
        "random_flip": lambda g: data.random_flip(torch.zeros(4, 1, 2, 2), generator=g),
        "data.dequantize": lambda g: data.dequantize(torch.zeros(4, 2), 256, generator=g),
        "discrete.vlb": lambda g: vlb(k, torch.zeros(4, 2), generator=g, decoder="gaussian"),
        "DiscreteChain.step": lambda g: k.chain.step(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long),
                                                     generator=g),
        "TimestepSampler.sample": lambda g: UniformSampler(4).sample(4, generator=g),
        "simple_loss": lambda g: simple_loss(k, torch.zeros(4, 2), generator=g),
        "vlb_estimate": lambda g: vlb_estimate(k, torch.zeros(4, 2), generator=g, decoder="gaussian"),
        "sample_chain": lambda g: sample_chain(k, (4, 2), generator=g),
        "random_directions": lambda g: random_directions(3, 2, generator=g),
    }


GENERATOR_USERS.update(_outside_the_core())


@pytest.mark.parametrize("entry", sorted(GENERATOR_USERS))
def test_a_generator_of_the_wrong_type_is_a_clear_type_error(entry):
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator or None, got int; to seed, pass "
                                        r"torch\.Generator\(\)\.manual_seed\(1234\)"):
        GENERATOR_USERS[entry](BAD)


def test_check_generator():
    g = torch.Generator()
    assert check_generator(g) is g and check_generator(None) is None
    with pytest.raises(TypeError, match="gen must be a torch.Generator or None, got str$"):
        check_generator("cuda", name="gen")


# ----------------------------------------------------------------------------------- other per-sample outputs
def test_dequantized_log_prob_refuses_a_broadcastable_log_density():
    x = torch.zeros(4, 2, dtype=torch.long)
    u = torch.full((4, 2), 0.5)
    with pytest.raises(ValueError, match=r"log_prob_fn must return a tensor of shape \(4,\).*got \(4, 1\)"):
        dequantized_log_prob(lambda y: MIX.log_prob(y)[:, None], x, u, n_bits=8)
    with pytest.raises(ValueError, match=r"log_q must have shape \(4,\).*got \(4, 1\)"):
        dequantized_log_prob(MIX.log_prob, x, u, torch.zeros(4, 1), n_bits=8)


def test_evaluate_nll_refuses_a_dequantizer_with_wrong_shapes():
    def bad(x, generator=None):
        return torch.full(x.shape, 0.5), torch.zeros(x.shape[0], 1)

    with pytest.raises(ValueError, match=r"dequantizer must return log_q of shape \(4,\).*got \(4, 1\)"):
        evaluate_nll(GOOD, SDE, _levels(), n_bits=8, repeats=1, dequantizer=bad)

