"""ScoreModel: every parameterisation gives the exact score when the network is the exact oracle
(Gaussian mixture), for the built-in SDEs and a user-defined one; discrete VP table; config round trip."""

import json

import pytest
import torch
from torch import nn

import scoresde as sd
from scoresde.nn import build_network
from scoresde.score import ScoreModel
from scoresde.serialize import model_config, model_from_config
from tests.common import seeded, seeded_init, two_mode_mixture


class OracleNet(nn.Module):
    """Outputs the exact score / ε / x0 prediction of a Gaussian mixture under ``sde``; fed noise_cond = t.

    ε̂ = −σ ∇log p_t (Tweedie / Vincent 2011) and x̂0 = (x + σ² ∇log p_t)/α (Tweedie's formula).
    """

    def __init__(self, mixture, sde, kind):
        super().__init__()
        self.mixture, self.sde, self.kind = mixture, sde, kind

    def forward(self, x, t):
        score = self.mixture.score_t(x, t, self.sde)
        alpha, std = (v[:, None] for v in self.sde.marginal_coeffs(t))
        if self.kind == "eps":
            return -std * score
        if self.kind == "x0":
            return (x + std**2 * score) / alpha
        return score


class MyVP(sd.SDE):
    """A user-defined SDE (not a library class): VP with constant β = 2."""

    def drift(self, x, t):
        return -x

    def diffusion(self, t):
        return torch.full_like(t, 2**0.5)

    def marginal_coeffs(self, t):
        return torch.exp(-t), torch.sqrt(-torch.expm1(-2 * t))


SDES = {"ve": lambda: sd.VESDE(), "vp": lambda: sd.VPSDE(), "subvp": lambda: sd.SubVPSDE(), "user": MyVP}


@pytest.mark.parametrize("sde_name", sorted(SDES))
@pytest.mark.parametrize("kind", ["score", "eps", "x0"])
def test_every_parameterization_recovers_the_exact_score(sde_name, kind):
    sde, mix = SDES[sde_name](), two_mode_mixture()
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(64, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    x = mix.sample(64, generator=gen) * 1.5
    model = ScoreModel(OracleNet(mix, sde, kind), sde, kind, noise_cond="t")
    exact = mix.score_t(x, t, sde)
    # float64 throughout: only rounding separates the two (relative 1e-10 leaves room for σ² cancellations)
    torch.testing.assert_close(model(x, t), exact, rtol=1e-10, atol=1e-10 * exact.abs().max().item())


def test_noise_cond_rules():
    vp, ve = sd.VPSDE(), sd.VESDE()
    t = torch.tensor([0.0, 0.25, 1.0])
    net = nn.Identity()
    assert torch.equal(ScoreModel(net, vp, noise_cond="999t").noise_cond(t), 999 * t)
    assert torch.equal(ScoreModel(net, vp, noise_cond="t").noise_cond(t), t)
    # σ(t) of the VE SDE, correctly rounded to float32 (computed in float64)
    want = (0.01 * (50 / 0.01) ** t.double()).float()
    assert torch.equal(ScoreModel(net, ve, "score", "sigma").noise_cond(t), want)
    assert torch.equal(ScoreModel(net, vp, noise_cond=lambda s: s + 1).noise_cond(t), t + 1)
    assert torch.equal(ScoreModel(net, vp, noise_cond="discrete_index", discrete_steps=11).noise_cond(t), 10 * t)


def test_discrete_vp_std_is_the_ddpm_table():
    sde, n = sd.VPSDE(), 1000
    model = ScoreModel(nn.Identity(), sde, "eps", "discrete_index", discrete_steps=n)
    betas = torch.linspace(0.1 / n, 20 / n, n, dtype=torch.float64)  # Ho et al. 2020's linear schedule
    table = torch.sqrt(1 - torch.cumprod(1 - betas, 0))
    t = torch.tensor([0.0, 0.1, 0.4567, 1.0], dtype=torch.float64)
    idx = (t * (n - 1)).long()
    torch.testing.assert_close(model.coeffs(t)[1], table[idx], rtol=1e-12, atol=0)


def test_config_round_trip_rebuilds_the_same_score_fn():
    with seeded_init(0):
        model = ScoreModel(build_network("digits", nf=16), sd.VPSDE(beta_min=0.2, beta_max=15.0), "x0", "999t")
    cfg = json.loads(json.dumps(model_config(model)))
    assert cfg["sde"] == {"class": "VPSDE", "params": {"beta_min": 0.2, "beta_max": 15.0}}
    assert cfg["network"] == {"preset": "digits", "kwargs": {"nf": 16}}
    rebuilt = model_from_config(cfg)
    rebuilt.load_state_dict(model.state_dict())
    x, t = torch.rand(3, 1, 8, 8, generator=seeded(0)), torch.tensor([0.1, 0.5, 0.9])
    torch.testing.assert_close(rebuilt.eval()(x, t), model.eval()(x, t), rtol=0, atol=0)
    # a user-defined SDE is passed explicitly
    assert isinstance(model_from_config(cfg, sde=MyVP()).sde, MyVP)


def test_score_model_errors():
    with pytest.raises(ValueError, match="unknown parameterization 'velocity'"):
        ScoreModel(nn.Identity(), sd.VPSDE(), "velocity")
    with pytest.raises(ValueError, match="unknown noise_cond 'log'"):
        ScoreModel(nn.Identity(), sd.VPSDE(), "eps", "log")
    with pytest.raises(ValueError, match="discrete_steps"):
        ScoreModel(nn.Identity(), sd.VPSDE(), "eps", "discrete_index")
    # An SDE without a DDPM chain takes discrete_steps with its continuous σ(t): see the test below.
    assert ScoreModel(nn.Identity(), MyVP(), "eps", discrete_steps=10).discrete_std is None
    with pytest.raises(TypeError, match="marginal_coeffs"):
        ScoreModel(nn.Identity(), object())
    with pytest.raises(ValueError, match=r"t must be a tensor of shape \(2,\)"):
        ScoreModel(nn.Identity(), sd.VPSDE())(torch.rand(2, 3), torch.rand(3))
    with pytest.raises(ValueError, match="network_config"):
        model_config(ScoreModel(nn.Identity(), sd.VPSDE()))
    with pytest.raises(ValueError, match="unknown SDE class 'Foo'"):
        model_from_config({"network": {"preset": "mlp"}, "sde": {"class": "Foo"}, "parameterization": "eps",
                                "noise_cond": "999t"})


def test_discrete_index_on_a_ladder_without_a_chain_uses_sigma_of_t():
    """NCSN's VE ladder has no DDPM table: its discrete std is σ(t_i) itself (the ncsn_cifar10 preset)."""
    import scoresde as sd

    ve = sd.VESDE(sigma_min=0.01, sigma_max=1.0)
    model = sd.ScoreModel(sd.nn.MLPScoreNet(2), ve, "eps", "discrete_index", discrete_steps=10)
    t = torch.linspace(0, 1, 10)
    assert model.discrete_std is None
    assert torch.allclose(model.coeffs(t)[1], ve.marginal_coeffs(t)[1])
    assert torch.allclose(model.noise_cond(t), torch.arange(10.0))
