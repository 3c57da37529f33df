"""Predictor and corrector steps: pure functions ``(x, t, t_next, *, rsde, generator, ...) -> (x, x_mean)``.

``t`` and ``t_next`` are ``(B,)`` time tensors with ``t_next < t`` for predictors; ``rsde`` is the reverse
SDE ``sde.reverse(score_fn)`` that the sampling loop builds once (it carries ``rsde.sde`` and
``rsde.score_fn``); ``x_mean`` is the state before the noise of the step was added. Noise is drawn with
``generator`` on the state's device. The steps work for any :class:`~scoresde.sde.SDE`: they only call
its generic methods.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde._checks import append_dims
from scoresde.sde import ReverseSDE


def _noise(x: Tensor, generator) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


# ------------------------------------------------------------------------------------------ predictors
def euler_maruyama(x: Tensor, t: Tensor, t_next: Tensor, *, rsde: ReverseSDE, generator=None):
    """One Euler–Maruyama step of the reverse SDE (Song et al. 2021, eq. 6), dt = t_next − t < 0:

        x_mean = x + [f(x, t) − g(t)² ∇ log p_t(x)] dt,     x = x_mean + g(t) sqrt(|dt|) z.
    """
    dt = append_dims(t_next - t, x.ndim)
    x_mean = x + rsde.drift(x, t) * dt
    g = append_dims(rsde.diffusion(t), x.ndim)
    return x_mean + g * torch.sqrt(-dt) * _noise(x, generator), x_mean


def reverse_diffusion(x: Tensor, t: Tensor, t_next: Tensor, *, rsde: ReverseSDE, generator=None):
    """Reverse diffusion (Song et al. 2021, eq. 46): invert the SDE's own discretisation ``sde.discretize``,

        x_mean = x − f_i + G_i² ∇ log p_t(x),     x = x_mean + G_i z,

    where x_{i+1} = x_i + f_i + G_i z is the forward step of length t − t_next (the SMLD ladder for VE,
    the DDPM chain for VP, Euler–Maruyama for other SDEs).
    """
    rev_f, rev_G = rsde.discretize(x, t, t - t_next)
    x_mean = x - rev_f
    return x_mean + append_dims(rev_G, x.ndim) * _noise(x, generator), x_mean


def ancestral(x: Tensor, t: Tensor, t_next: Tensor, *, rsde: ReverseSDE, generator=None):
    """Ancestral sampling from the exact transition x_t | x_s ~ N(a x_s, v I), s = t_next < t.

    The mean is the exact posterior mean E[x_s | x_t] = (x_t + v ∇ log p_t(x_t)) / a (Tweedie's formula
    applied to the transition). The noise variance is the posterior variance of q(x_s | x_t, x_0),
    v σ(s)² / σ(t)² — DDPM's β̃ (Ho et al. 2020, eq. 7) for VP and the SMLD ancestral noise of Song
    et al. 2021 eq. (47) for VE; it vanishes at s = 0. (Song et al.'s VP variant, eq. (47), uses v instead.)
    (a, v) come from ``sde.transition_coeffs``, so this step works for any SDE.
    """
    sde = rsde.sde
    a, v = sde.transition_coeffs(t, t_next)
    std_t, std_s = sde.marginal_coeffs(t)[1], sde.marginal_coeffs(t_next)[1]
    x_mean = (x + append_dims(v, x.ndim) * rsde.score_fn(x, t)) / append_dims(a, x.ndim)
    noise_std = torch.sqrt(v) * std_s / std_t
    return x_mean + append_dims(noise_std, x.ndim) * _noise(x, generator), x_mean


def no_predictor(x: Tensor, t: Tensor, t_next: Tensor, *, rsde: ReverseSDE, generator=None):
    """Leave x unchanged (corrector-only sampling, as NCSN's annealed Langevin dynamics)."""
    return x, x


PREDICTORS = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral": ancestral,
    "none": no_predictor,
}


# ------------------------------------------------------------------------------------------ correctors
def _langevin_update(x: Tensor, score: Tensor, step: Tensor, generator):
    """x_mean = x + ε ∇ log p(x),  x = x_mean + sqrt(2ε) z, with a per-sample step ε of shape (B,)."""
    step = append_dims(step, x.ndim)
    x_mean = x + step * score
    return x_mean + torch.sqrt(2 * step) * _noise(x, generator), x_mean


def _alpha_i(sde, t: Tensor, t_next: Tensor) -> Tensor:
    """α_i of Song et al. 2021 Algorithm 5, generically: the squared mean coefficient of the exact
    transition between t and t_next, (α(max)/α(min))². It is DDPM's 1 − β_i for VP, 1 for VE, and
    defined the same way for sub-VP and any user SDE."""
    hi, lo = torch.maximum(t, t_next), torch.minimum(t, t_next)
    return sde.transition_coeffs(hi, lo)[0] ** 2


def langevin(x: Tensor, t: Tensor, t_next: Tensor, *, rsde: ReverseSDE, generator=None, snr: float = 0.16):
    """One Langevin MCMC step at time t with the signal-to-noise step size of Song et al. 2021,
    Algorithms 4 (VE) and 5 (VP), in one generic formula:

        ε = 2 α_i (snr ‖z‖ / ‖∇ log p_t(x)‖)²,    x_mean = x + ε ∇ log p_t(x),    x = x_mean + sqrt(2ε) z,

    with α_i from :func:`_alpha_i` (so it works for VE, VP, sub-VP and user SDEs alike). The norms are
    averaged over the batch, as the official code does, so ε is one number per step: a per-sample ε
    would depend on the position (‖∇ log p_t(x)‖ → 0 near a mode gives a huge step) and on the noise it
    scales, and such a chain no longer leaves p_t invariant — measured on a 2-D mixture, per-sample norms
    inflate the spread several-fold. The price: a sample depends on the rest of its batch.
    """
    score = rsde.score_fn(x, t)
    noise = _noise(x, generator)
    grad_norm = score.reshape(x.shape[0], -1).norm(dim=1).mean()
    noise_norm = noise.reshape(x.shape[0], -1).norm(dim=1).mean()
    step = 2 * _alpha_i(rsde.sde, t, t_next) * (snr * noise_norm / grad_norm.clamp_min(torch.finfo(x.dtype).tiny)) ** 2
    step = append_dims(step, x.ndim)
    x_mean = x + step * score
    return x_mean + torch.sqrt(2 * step) * noise, x_mean


def annealed_langevin(x: Tensor, t: Tensor, t_next: Tensor, *, rsde: ReverseSDE, generator=None,
                      snr: float = 0.16):
    """NCSN's annealed Langevin step (Song & Ermon 2019, Algorithm 1) at noise level σ = σ(t):

        ε = 2 α_i (snr σ(t))²,    x_mean = x + ε ∇ log p_t(x),    x = x_mean + sqrt(2ε) z.

    ε ∝ σ² is NCSN's α_i = ε₀ σ_i²/σ_L² with ε₀ = 2 α_i (snr σ_L)²; α_i as in :func:`langevin`.
    """
    std = rsde.sde.marginal_coeffs(t)[1]
    step = 2 * _alpha_i(rsde.sde, t, t_next) * (snr * std) ** 2
    return _langevin_update(x, rsde.score_fn(x, t), step, generator)


def no_corrector(x: Tensor, t: Tensor, t_next: Tensor, *, rsde: ReverseSDE, generator=None, snr: float = 0.16):
    """Leave x unchanged (predictor-only sampling)."""
    return x, x


CORRECTORS = {
    "langevin": langevin,
    "ald": annealed_langevin,
    "none": no_corrector,
}
