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

from scoresde._checks import append_dims, check_choice
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


ANCESTRAL_VARIANCES = ("beta", "beta_tilde", "analytic")


def ancestral_variance(sde, t: Tensor, t_next: Tensor, score: Tensor, variance: str = "analytic") -> Tensor:
    """The noise variance σ_i² of one ancestral step from t to s = t_next < t, shape ``(B,)``.

    With (a, v) the exact transition x_t | x_s ~ N(a x_s, v I) and σ_t, σ_s the marginal stds:

    - ``"beta"``: σ_i² = v, the transition variance (Song et al. 2021, eq. 47; DDPM's σ² = β, Ho et al.
      2020 Sec. 3.2). Exact when x_0 ~ N(0, I) under VP; an upper-bound-like choice otherwise.
    - ``"beta_tilde"``: σ_i² = v σ_s²/σ_t², the posterior variance of q(x_s | x_t, x_0) (DDPM's β̃, Ho et
      al. 2020 eq. 7; SMLD's ancestral noise for VE). Exact only for a point mass x_0; it leaves out the
      uncertainty about x_0 given x_t and so under-disperses.
    - ``"analytic"``: the variance that minimises the KL divergence from the true reverse kernel
      q(x_s | x_t) to an isotropic Gaussian with the exact mean (Bao et al. 2022, Analytic-DPM, Thm 1),
      written for any SDE. By the law of total variance and Tweedie's second-order formula
      Cov(x_0 | x_t) = (σ_t²/α_t²)(I + σ_t² ∇² log p_t), averaged over p_t (E[Δ log p_t] = −E‖∇ log p_t‖²):

          σ_i² = v σ_s²/σ_t² + v²/(a² σ_t²) · (1 − σ_t² Γ_t),    Γ_t = E_{p_t} ‖∇ log p_t(x_t)‖² / d,

      which runs from β̃ (point-mass data, σ_t² Γ_t = 1) to v/a² (Γ_t = 0). Γ_t is estimated by the mean
      of ‖score‖²/d over the current batch of B samples, which approximates p_t: no extra score
      evaluations; unbiased for the batch's own distribution (σ_i² is linear in Γ), with a relative
      Monte-Carlo error sd(‖s‖²)/(mean(‖s‖²) sqrt(B)) ≈ sqrt(2/(B d)) for Gaussian modes; where the batch
      itself is off (its own sampling error) the estimate follows it, with a restoring sign: an
      under-dispersed batch has a smaller ‖s‖² and so gets more noise. σ_t² Γ̂_t is clipped to [0, 1]
      (Bao et al.'s bounds), a bias only where the estimate falls outside. The price: a sample depends on
      the rest of its batch (as with the Langevin corrector's batch norms); use batches of ≳ 100 samples.
    """
    check_choice("variance", variance, ANCESTRAL_VARIANCES)
    a, v = sde.transition_coeffs(t, t_next)
    var_t, var_s = sde.marginal_coeffs(t)[1] ** 2, sde.marginal_coeffs(t_next)[1] ** 2
    if variance == "beta":
        return v
    beta_tilde = v * var_s / var_t
    if variance == "beta_tilde":
        return beta_tilde
    gamma = score.reshape(score.shape[0], -1).pow(2).mean(1).mean()
    deficit = (1 - var_t * gamma).clamp(0, 1)
    return beta_tilde + v**2 / (a**2 * var_t) * deficit


def ancestral(x: Tensor, t: Tensor, t_next: Tensor, *, rsde: ReverseSDE, generator=None,
              variance: str = "analytic"):
    """Ancestral sampling from the exact transition x_t | x_s ~ N(a x_s, v I), s = t_next < t.

    The mean is the exact posterior mean E[x_s | x_t] = (x_t + v ∇ log p_t(x_t)) / a (Tweedie's formula
    applied to the transition); the noise variance is ``variance``, one of :data:`ANCESTRAL_VARIANCES`
    (see :func:`ancestral_variance`). (a, v) come from ``sde.transition_coeffs``, so this step works for
    any SDE.
    """
    sde = rsde.sde
    a, v = sde.transition_coeffs(t, t_next)
    score = rsde.score_fn(x, t)
    x_mean = (x + append_dims(v, x.ndim) * score) / append_dims(a, x.ndim)
    noise_std = torch.sqrt(ancestral_variance(sde, t, t_next, score, variance))
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
                      snr: float = 0.16, step_lr: float | None = None, sigma_last=None):
    """NCSN's annealed Langevin step (Song & Ermon 2019, Algorithm 1) at noise level σ = σ(t), with a step
    ε ∝ σ(t)² set in one of two ways:

        NCSN (``step_lr`` and ``sigma_last`` = σ_L given):  α = step_lr σ(t)²/σ_L²,  ε = α/2
        signal-to-noise (default, ``snr``):                ε = 2 α_i (snr σ(t))²
        x_mean = x + ε ∇ log p_t(x),    x = x_mean + sqrt(2ε) z          (= x + (α/2) ∇ log p_t + sqrt(α) z)

    The second form is NCSN's with step_lr = 4 α_i snr² σ_L² (α_i as in :func:`langevin`), the form
    :func:`~scoresde.sampling.sample_pc` uses with ``corrector="ald"``;
    :func:`~scoresde.sampling.sample_annealed_langevin` uses the first.
    """
    std = rsde.sde.marginal_coeffs(t)[1]
    if step_lr is None:
        step = 2 * _alpha_i(rsde.sde, t, t_next) * (snr * std) ** 2
    else:
        if sigma_last is None:
            raise ValueError("the ald corrector with step_lr needs sigma_last, the smallest σ of the ladder (σ_L)")
        step = step_lr * std**2 / sigma_last**2 / 2
    return _langevin_update(x, rsde.score_fn(x, t), step, generator)


def no_corrector(x: Tensor, t: Tensor, t_next: Tensor, *, rsde: ReverseSDE, generator=None, snr: float = 0.16):
    """Leave x unchanged (predictor-only sampling)."""
    return x, x


CORRECTORS = {
    "langevin": langevin,
    "ald": annealed_langevin,
    "none": no_corrector,
}
