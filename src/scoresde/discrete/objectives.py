"""Training objectives of the discrete chain: L_simple, the hybrid loss, and the bound's t-sampling.

- L_simple = E_{t, x_0, ε} ‖ε − ε̂_θ(x_t, t)‖² (Ho et al. 2020, eq. 14), here averaged over dimensions
  as in the DDPM code, per sample.
- L_hybrid = L_simple + λ L_vlb with λ = 0.001 and a stop-gradient on the mean inside L_vlb, so the
  bound trains only the variance (Nichol & Dhariwal 2021, §3.1). L_vlb is an unbiased one-term estimate
  of the whole bound in bits/dim.
- Importance sampling of t for the bound (Nichol & Dhariwal 2021, §3.3, eq. 18): with t ~ p_t, the
  estimate L_T + L_t / p_t is unbiased for L for any proposal with p_t > 0. :class:`LossSecondMomentSampler`
  uses p_t ∝ sqrt(E[L_t²]) from the last ``history`` values of each term (uniform until every term has
  that many); :class:`FixedProposal` takes the user's p; :func:`bound_weight_proposal` gives the fixed
  p_t ∝ w_t, the weight of ‖ε − ε̂‖² in the term L_t (the discrete likelihood weighting).

Losses are per sample; the trainer reduces.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scoresde._checks import batch_dim, check_choice, check_generator, check_int, check_positive, check_tensor
from scoresde.discrete.bound import DECODERS, prior_kl, term_from_kernel_output
from scoresde.discrete.kernel import GaussianReverseKernel

__all__ = ["simple_loss", "hybrid_loss", "vlb_estimate", "TimestepSampler", "UniformSampler", "FixedProposal",
           "LossSecondMomentSampler", "bound_weights", "bound_weight_proposal"]


# ---------------------------------------------------------------------------- t proposals
class TimestepSampler:
    """A proposal p over the T indices; subclasses implement :meth:`probs`."""

    T: int

    def probs(self) -> Tensor:
        """The proposal ``(T,)`` in float64 on CPU, positive and summing to 1."""
        raise NotImplementedError

    def sample(self, batch: int, *, generator: torch.Generator | None = None, device=None) -> tuple[Tensor, Tensor]:
        """Draw ``batch`` indices i ~ p; returns ``(i, p_i)``, both ``(batch,)`` on ``device``."""
        check_int("batch", batch)
        check_generator(generator)
        p = self.probs()
        i = torch.multinomial(p, batch, replacement=True, generator=generator)
        return i.to(device), p[i].to(device)

    def update(self, i: Tensor, losses: Tensor) -> None:
        """Record the per-sample bound terms ``losses`` observed at indices ``i`` (no-op by default)."""


class UniformSampler(TimestepSampler):
    """p_t = 1/T."""

    def __init__(self, T: int):
        self.T = check_int("T", T)

    def probs(self):
        return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)


class FixedProposal(TimestepSampler):
    """A user-given proposal ``probs`` ``(T,)``, all positive (normalised here)."""

    def __init__(self, probs):
        p = torch.as_tensor(probs, dtype=torch.float64).detach().cpu()
        if p.ndim != 1 or p.numel() < 1 or not bool(torch.isfinite(p).all()) or not bool((p > 0).all()):
            raise ValueError(f"probs must be a 1-D tensor of positive finite numbers (p_t > 0 keeps the estimate "
                             f"unbiased), got {p.tolist() if p.numel() <= 8 else tuple(p.shape)}")
        self.T, self._p = p.numel(), p / p.sum()

    def probs(self):
        return self._p


def bound_weights(kernel: GaussianReverseKernel) -> Tensor:
    """w_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t)), ``(T,)`` float64: the bound's term is w_t ‖ε − ε̂‖² + const.

    For an ε-prediction the reverse mean is μ_θ = (x_t − β_t ε̂ / sqrt(1 − ᾱ_t)) / sqrt(α_t) (Ho et al. 2020,
    eq. 11), so μ̃_t − μ_θ = β_t (ε̂ − ε) / sqrt(α_t (1 − ᾱ_t)) and, with Σ = σ_t² I fixed, the KL term is
    ‖μ̃_t − μ_θ‖² / (2 σ_t²) + a constant of the variances (eq. 8 – 12). The Gaussian decoder at t = 1 has the
    same weight, since 1 − ᾱ_1 = β_1. With σ_t² = β_t, w_t = β_t / (2 α_t (1 − ᾱ_t)): the discrete form of
    the likelihood weighting λ(t) = g(t)² of Song et al. (2021b), relative to L_simple's uniform weight.

    Raises:
        ValueError: for a learned variance, whose weights depend on the network.
    """
    if not isinstance(kernel, GaussianReverseKernel):
        raise TypeError(f"kernel must be a GaussianReverseKernel, got {type(kernel).__name__}")
    if kernel.learned_variance:
        raise ValueError(f"bound_weights needs a fixed variance (var_type 'beta' or 'beta_tilde'), got var_type="
                         f"{kernel.var_type!r}, whose weights depend on the network")
    c = kernel.chain
    var = c.betas if kernel.var_type == "beta" else torch.exp(c.log_posterior_var_clipped)
    return c.betas**2 / (2 * var * c.alphas * (1 - c.alpha_bar))


def bound_weight_proposal(kernel: GaussianReverseKernel) -> FixedProposal:
    """The proposal p_t ∝ :func:`bound_weights`: importance sampling of t for the bound.

    When the ε error ‖ε − ε̂‖² is about the same at every t (as early in training), the error part of
    L_t / p_t is then the same at every t, and the one-term estimate of :func:`vlb_estimate` has a small
    variance, where a uniform t would be dominated by the large weights at small t. The continuous analogue is
    the importance sampling of the likelihood-weighted loss in Song et al. (2021b).
    """
    return FixedProposal(bound_weights(kernel))


class LossSecondMomentSampler(TimestepSampler):
    """p_t ∝ sqrt(E[L_t²]) over the last ``history`` terms of each t, mixed with ``uniform_prob`` of uniform.

    Uniform until every index has ``history`` recorded terms (Nichol & Dhariwal 2021, §3.3). :meth:`update`
    copies the observed terms to the host once per call.
    """

    def __init__(self, T: int, *, history: int = 10, uniform_prob: float = 1e-3):
        self.T = check_int("T", T)
        self.history = check_int("history", history)
        if not 0 < uniform_prob <= 1:
            raise ValueError(f"uniform_prob must lie in (0, 1], got {uniform_prob!r}")
        self.uniform_prob = float(uniform_prob)
        self._buf = torch.zeros(self.T, self.history, dtype=torch.float64)
        self._count = torch.zeros(self.T, dtype=torch.long)

    @property
    def warmed_up(self) -> bool:
        return bool((self._count >= self.history).all())

    def probs(self):
        if not self.warmed_up:
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        w = torch.sqrt((self._buf**2).mean(1))
        w = w / w.sum() if float(w.sum()) > 0 else torch.full_like(w, 1.0 / self.T)
        return (1 - self.uniform_prob) * w + self.uniform_prob / self.T

    def update(self, i: Tensor, losses: Tensor) -> None:
        if i.shape != losses.shape or i.ndim != 1:
            raise ValueError(f"i and losses must both be (B,), got {tuple(i.shape)} and {tuple(losses.shape)}")
        for t, loss in zip(i.detach().cpu().tolist(), losses.detach().cpu().double().tolist(), strict=True):
            self._buf[t] = torch.roll(self._buf[t], -1)
            self._buf[t, -1] = loss
            self._count[t] += 1


# ---------------------------------------------------------------------------- losses
def _sample_index(kernel, x0, sampler, generator):
    sampler = sampler if sampler is not None else UniformSampler(kernel.chain.T)
    if sampler.T != kernel.chain.T:
        raise ValueError(f"sampler has T={sampler.T} but the chain has T={kernel.chain.T}")
    i, p = sampler.sample(x0.shape[0], generator=generator, device=x0.device)
    return i, p.to(x0.dtype)


def _noised(kernel, x0, i, generator):
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return noise, kernel.chain.q_sample(x0, i, noise)


def simple_loss(kernel: GaussianReverseKernel, x0: Tensor, *, generator: torch.Generator | None = None,
                i: Tensor | None = None) -> Tensor:
    """L_simple per sample: mean over dimensions of (ε − ε̂)², t uniform (or the given indices ``i``)."""
    check_tensor("x0", x0, min_ndim=2)
    check_generator(generator)
    if i is None:
        i = torch.randint(0, kernel.chain.T, (x0.shape[0],), generator=generator).to(x0.device)
    noise, x_t = _noised(kernel, x0, i, generator)
    out = kernel(x_t, i)
    return (noise - out.eps).pow(2).reshape(x0.shape[0], -1).mean(1)


def vlb_estimate(kernel: GaussianReverseKernel, x0: Tensor, *, sampler: TimestepSampler | None = None,
                 generator: torch.Generator | None = None, decoder: str = "discretized",
                 num_levels: int = 256) -> tuple[Tensor, Tensor, Tensor]:
    """Unbiased one-term estimate of the whole bound: L̂ = L_T + L_i / p_i with i ~ p (nats, per sample).

    Returns ``(estimate, i, term)``; pass ``(i, term.detach())`` to ``sampler.update`` to adapt p.
    """
    check_tensor("x0", x0, min_ndim=2)
    check_choice("decoder", decoder, DECODERS)
    i, p = _sample_index(kernel, x0, sampler, generator)
    _, x_t = _noised(kernel, x0, i, generator)
    out = kernel(x_t, i)
    term = term_from_kernel_output(kernel.chain, x0, x_t, i, out.mean, out.log_var, decoder=decoder,
                                   num_levels=num_levels)
    return prior_kl(kernel.chain, x0) + term / p, i, term


def hybrid_loss(kernel: GaussianReverseKernel, x0: Tensor, *, lam: float = 1e-3,
                sampler: TimestepSampler | None = None, generator: torch.Generator | None = None,
                decoder: str = "discretized", num_levels: int = 256) -> tuple[Tensor, Tensor, Tensor]:
    """L_hybrid = L_simple + λ L_vlb per sample (Nichol & Dhariwal 2021, §3.1), for learned variances.

    One network call serves both parts. L_vlb = (L_i / p_i)/(D ln 2) in bits/dim with the mean detached,
    so it trains only the variance; L_T has no parameters and is left out. With an importance
    ``sampler`` L_simple is reweighted by 1/(T p_i) too, so both parts stay unbiased for their uniform-t
    expectations. Returns ``(loss, i, term)``; ``term`` (nats) is what ``sampler.update`` expects.
    """
    check_tensor("x0", x0, min_ndim=2)
    check_positive("lam", lam)
    if not kernel.learned_variance:
        raise ValueError(f"hybrid_loss trains a learned variance; kernel has var_type={kernel.var_type!r} "
                         f"(use simple_loss, or var_type='learned_range' / 'learned')")
    i, p = _sample_index(kernel, x0, sampler, generator)
    noise, x_t = _noised(kernel, x0, i, generator)
    out = kernel(x_t, i)
    simple = (noise - out.eps).pow(2).reshape(x0.shape[0], -1).mean(1)
    term = term_from_kernel_output(kernel.chain, x0, x_t, i, out.mean.detach(), out.log_var, decoder=decoder,
                                   num_levels=num_levels)
    vlb_bpd = term / p / (batch_dim(x0) * math.log(2))
    return simple / (kernel.chain.T * p) + lam * vlb_bpd, i, term
