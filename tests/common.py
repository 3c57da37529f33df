"""Shared test helpers (importable as ``tests.common``)."""

import math

import torch

import scoresde as sd

BUILTIN_SDES = {
    "ve": lambda: sd.VESDE(sigma_min=0.01, sigma_max=50.0),
    "vp": lambda: sd.VPSDE(beta_min=0.1, beta_max=20.0),
    "subvp": lambda: sd.SubVPSDE(beta_min=0.1, beta_max=20.0),
}


def two_mode_mixture():
    """A 2-D mixture with unequal weights and anisotropic components."""
    return sd.GaussianMixture([0.3, 0.7], [[-2.0, 0.5], [1.5, -1.0]], [[0.4, 0.2], [0.3, 0.6]])


def seeded(seed=1234):
    return torch.Generator().manual_seed(seed)


class OrnsteinUhlenbeck(sd.SDE):
    """dx = −x dt + sqrt(2) dw, written by a user with only the three primitives."""

    def drift(self, x, t):
        return -x

    def diffusion(self, t):
        return torch.full_like(t, math.sqrt(2.0))

    def marginal_coeffs(self, t):
        return torch.exp(-t), torch.sqrt(-torch.expm1(-2 * t))


def discretized_mixture_log_prob(mix, x, *, scale, shift, levels):
    """Exact log P(x) of levels x under y ~ mix, y = scale·u + shift binned into cells [k, k+1)/L (scale > 0).

    Diagonal components factorise over dimensions: P_k(x) = Π_d [Φ((hi_d − m)/s) − Φ((lo_d − m)/s)].
    """
    lo = (scale * x / levels + shift).double()
    hi = (scale * (x + 1) / levels + shift).double()
    m, s = mix.means[None], mix.stds[None]
    cdf = lambda v: torch.special.ndtr((v[:, None, :] - m) / s)  # noqa: E731
    per_comp = (cdf(hi) - cdf(lo)).clamp_min(1e-300).log().sum(-1) + mix.weights.log()
    return torch.logsumexp(per_comp, 1)
