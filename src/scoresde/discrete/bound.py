"""The variational bound of the discrete chain, its exact Gaussian KLs and the data decoders.

    −log p_θ(x_0) ≤ L = L_T + Σ_{t=2..T} L_{t−1} + L_0                         (Ho et al. 2020, eq. 5)
        L_T     = KL(q(x_T | x_0) ‖ N(0, I))
        L_{t−1} = E_q KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t))
        L_0     = E_q −log p_θ(x_0 | x_1)

(Sohl-Dickstein et al. 2015, eq. 14 is the same bound.) Every KL is computed in closed form; only the
expectation over x_t ~ q(x_t | x_0) is Monte Carlo. The decoder p_θ(x_0 | x_1) is either the
discretised Gaussian of Ho et al. 2020, eq. 13 (integer-level data, e.g. 8-bit, scaled to [−1, 1]) or a
plain Gaussian density (continuous data). All values are per sample, in nats, summed over dimensions;
:func:`bits_per_dim` converts.

Code index ``i`` = t − 1: term ``i = 0`` is L_0 (the decoder), term ``i ≥ 1`` is L_i = KL at step t = i + 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde._checks import (
    append_dims,
    batch_dim,
    batch_sum,
    check_choice,
    check_generator,
    check_int,
    check_tensor,
)
from scoresde.discrete.chain import check_index
from scoresde.discrete.kernel import GaussianReverseKernel
from scoresde.likelihood.bpd import nll_to_bits_per_dim
from scoresde.progress import progress_bar

__all__ = ["normal_kl", "gaussian_log_prob", "discretized_gaussian_log_prob", "check_levels", "prior_kl",
           "vlb_term", "term_from_kernel_output", "vlb", "VLBResult", "bits_per_dim", "DECODERS"]

DECODERS = ("discretized", "gaussian")


def normal_kl(mean1: Tensor, log_var1: Tensor, mean2: Tensor, log_var2: Tensor) -> Tensor:
    """Elementwise KL(N(mean1, e^{log_var1}) ‖ N(mean2, e^{log_var2})) in nats (all arguments broadcast)."""
    return 0.5 * (log_var2 - log_var1 + torch.exp(log_var1 - log_var2)
                  + (mean1 - mean2) ** 2 * torch.exp(-log_var2) - 1)


def gaussian_log_prob(x: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """Elementwise log N(x; mean, e^{log_var}) in nats."""
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * torch.exp(-log_var))


def check_levels(x: Tensor, num_levels: int, *, name: str = "x0", tol: float = 1e-3) -> Tensor:
    """Check that ``x`` holds integer-level data scaled to [−1, 1]: x = 2k/(L−1) − 1, k ∈ {0..L−1}.

    Returns the levels k as a tensor of x's dtype. The check of values runs on CPU tensors only.
    """
    k = (x + 1) * (num_levels - 1) / 2
    if x.device.type == "cpu" and x.numel():
        lo, hi = float(k.min()), float(k.max())
        off = float((k - k.round()).abs().max())
        if lo < -tol or hi > num_levels - 1 + tol or off > tol:
            raise ValueError(
                f"{name} must be {num_levels}-level data scaled to [-1, 1] (values 2k/{num_levels - 1} - 1 for "
                f"integer k in 0..{num_levels - 1}) for the discretised decoder; got levels k in [{lo:.4g}, "
                f"{hi:.4g}], up to {off:.3g} away from an integer")
    return k.round()


def _log_normal_cdf_diff(a: Tensor, b: Tensor) -> Tensor:
    """log(Φ(b) − Φ(a)) for a < b, accurate in both tails (uses Φ(b) − Φ(a) = Φ(−a) − Φ(−b) for a > 0)."""
    flip = a > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi = torch.special.log_ndtr(hi)
    mass_ratio = -torch.expm1(torch.special.log_ndtr(lo) - log_hi)  # 1 − Φ(lo)/Φ(hi), in (0, 1]
    return log_hi + torch.log(mass_ratio.clamp_min(torch.finfo(mass_ratio.dtype).tiny))


def discretized_gaussian_log_prob(x: Tensor, mean: Tensor, log_var: Tensor, *, num_levels: int = 256) -> Tensor:
    """Elementwise log-probability of integer-level data under a Gaussian integrated over its bin.

    Ho et al. 2020, eq. 13: the bin of x is [x − δ, x + δ], δ = 1/(L − 1), stretched to −∞ at the lowest
    and +∞ at the highest level, so the L probabilities sum to 1 for any mean and variance. ``x`` must be
    L-level data scaled to [−1, 1] (``num_levels`` L = 256 for 8-bit data); a ValueError says otherwise.
    """
    check_int("num_levels", num_levels, minimum=2)
    k = check_levels(x, num_levels)
    delta = 1.0 / (num_levels - 1)
    inv_std = torch.exp(-0.5 * log_var)
    centred = 2 * k / (num_levels - 1) - 1 - mean
    a = torch.where(k <= 0, -math.inf, (centred - delta) * inv_std)
    b = torch.where(k >= num_levels - 1, math.inf, (centred + delta) * inv_std)
    return _log_normal_cdf_diff(a, b)


def prior_kl(chain, x0: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x_0) ‖ N(0, I)) per sample, exact, in nats."""
    i = torch.full((x0.shape[0],), chain.T - 1, dtype=torch.long, device=x0.device)
    mean, std = chain.marginal(x0, i)
    log_var = append_dims(2 * torch.log(std), x0.ndim)
    return batch_sum(normal_kl(mean, log_var, torch.zeros_like(mean), torch.zeros_like(log_var)))


def vlb_term(kernel: GaussianReverseKernel, x0: Tensor, i: Tensor, *, noise: Tensor | None = None,
             generator: torch.Generator | None = None, decoder: str = "discretized",
             num_levels: int = 256) -> Tensor:
    """One-sample estimate of the bound's term at index ``i`` (per sample, nats).

    Draws x_{i+1} ~ q(· | x_0) (with ``noise`` if given), then returns L_i = KL(q(x_i | x_{i+1}, x_0) ‖
    p_θ(x_i | x_{i+1})) where i ≥ 1 and the decoder term −log p_θ(x_0 | x_1) where i = 0.
    """
    check_tensor("x0", x0, min_ndim=2)
    check_index(i, kernel.chain.T, batch=x0.shape[0])
    check_choice("decoder", decoder, DECODERS)
    x_t = kernel.chain.q_sample(x0, i, noise, generator=generator)
    out = kernel(x_t, i)
    return term_from_kernel_output(kernel.chain, x0, x_t, i, out.mean, out.log_var, decoder=decoder,
                                   num_levels=num_levels)


def term_from_kernel_output(chain, x0: Tensor, x_t: Tensor, i: Tensor, mean: Tensor, log_var: Tensor, *,
                            decoder: str = "discretized", num_levels: int = 256) -> Tensor:
    """The bound's term at index ``i`` given p_θ(x_i | x_{i+1}) = N(mean, e^{log_var}) (per sample, nats).

    The building block of :func:`vlb_term` and of the hybrid loss, which passes a detached mean.
    """
    out_mean, out_log_var = mean, log_var
    q_mean, q_var = chain.posterior(x0, x_t, i)
    is_decoder = i == 0
    # β̃_1 = 0: substitute 1 where the decoder replaces the KL, so no log(0) reaches the autograd graph
    q_log_var = append_dims(torch.log(torch.where(is_decoder, torch.ones_like(q_var), q_var)), x0.ndim)
    kl = batch_sum(normal_kl(q_mean, q_log_var, out_mean, out_log_var).expand_as(x0))
    if decoder == "discretized":
        log_p = discretized_gaussian_log_prob(x0, out_mean, out_log_var.expand_as(x0), num_levels=num_levels)
    else:
        log_p = gaussian_log_prob(x0, out_mean, out_log_var)
    nll = -batch_sum(log_p.expand_as(x0))
    return torch.where(is_decoder, nll, kl)


@dataclass(frozen=True)
class VLBResult:
    """The full bound per sample: ``total`` and ``prior`` L_T ``(B,)``, ``terms`` ``(B, T)`` (index i = t − 1)."""

    total: Tensor
    prior: Tensor
    terms: Tensor

    def bits_per_dim(self, x0: Tensor) -> Tensor:
        return bits_per_dim(self.total, x0)


def vlb(kernel: GaussianReverseKernel, x0: Tensor, *, generator: torch.Generator | None = None,
        decoder: str = "discretized", num_levels: int = 256, progress: bool = False) -> VLBResult:
    """The whole bound L = L_T + Σ_i L_i (Ho et al. 2020, eq. 5) per sample, one x_t draw per term, in nats.

    ``decoder="discretized"`` (default) expects ``num_levels``-level data scaled to [−1, 1] and gives a
    bound on the discrete −log P(x_0); ``decoder="gaussian"`` bounds the continuous −log p(x_0).
    Runs the network T times on the batch; use ``torch.no_grad()`` for evaluation.
    """
    check_tensor("x0", x0, min_ndim=2)
    check_generator(generator)
    check_choice("decoder", decoder, DECODERS)
    if decoder == "discretized":
        check_levels(x0, num_levels)
    T = kernel.chain.T
    terms = []
    with progress_bar(T, "bound", progress) as bar:
        for idx in range(T):
            i = torch.full((x0.shape[0],), idx, dtype=torch.long, device=x0.device)
            terms.append(vlb_term(kernel, x0, i, generator=generator, decoder=decoder, num_levels=num_levels))
            bar.update(1)
    terms = torch.stack(terms, dim=1)
    prior = prior_kl(kernel.chain, x0)
    return VLBResult(total=prior + terms.sum(1), prior=prior, terms=terms)


def bits_per_dim(nats: Tensor, x: Tensor) -> Tensor:
    """Per-sample nats → bits per dimension: nats / (D ln 2), D the number of values per sample of ``x``.

    For a discrete likelihood (the discretised decoder) this is the whole conversion:
    :func:`scoresde.likelihood.nll_to_bits_per_dim`. Continuous densities of dequantised data need the
    volume terms of the dequantisation as well: :func:`scoresde.likelihood.bits_per_dim`.
    """
    return nll_to_bits_per_dim(nats, batch_dim(x))
