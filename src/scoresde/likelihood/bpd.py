"""Bits per dimension of discrete data, and uniform dequantisation (Theis et al. 2016; Song et al. 2021b, Sec. 5).

The library's one bits/dim formula and its one dequantisation map live here; every other bits/dim
(:func:`scoresde.data.discrete_bits_per_dim`, :func:`scoresde.discrete.bits_per_dim`, the evaluation
helpers) and every dequantiser (:func:`scoresde.data.dequantize`, :mod:`scoresde.likelihood.dequant`) calls them.

Discrete data x ∈ {0, …, L−1}^D (L = 2ⁿ levels for n-bit data) are dequantised to the unit cube,
u = (x + U[0,1)^D)/L, and mapped to the model's space by an affine scaler y = a·u + b. A density p on model
space gives a density on the integer scale r = x + U, p_r(r) = p(a·r/L + b)·|a/L|^D, and since the cell
[x, x+1)^D has volume 1, Jensen's inequality bounds the discrete probability P(x) = ∫_cell p_r:

    −log2 P(x) ≤ E_U[−log2 p_r(x + U)] = −(log p(y) + D ln|a|)/ln 2 + D·log2 L,

which per dimension is bpd = −(log p(y) + D ln|a|)/(D ln 2) + n (the "+ 8" of 8-bit data).
A variational dequantiser q(u|x) replaces E_U by E_q and subtracts log q (:mod:`scoresde.likelihood.dequant`):
pass ``logp − log_q`` to :func:`bits_per_dim`. A model with a discrete likelihood (the discretised decoder of
:mod:`scoresde.discrete.bound`) has −log P(x) itself, and its bits/dim is the unit conversion alone,
:func:`nll_to_bits_per_dim`: −log2 P(x)/D = −log P(x)/(D ln 2).
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

from scoresde._checks import check_generator, check_int, on_cpu

__all__ = ["bits_per_dim", "nll_to_bits_per_dim", "uniform_dequantize", "to_model_space", "check_discrete",
           "num_levels", "log_abs_scale"]


def num_levels(n_bits: int | None = None, levels: int | None = None) -> int:
    """Number of discrete levels L: ``levels`` if given, else 2**``n_bits`` (8 bits when neither is given)."""
    if n_bits is not None and levels is not None:
        raise ValueError(f"give n_bits or levels, not both (got n_bits={n_bits!r}, levels={levels!r})")
    if levels is not None:
        return check_int("levels", levels, minimum=2)
    return 2 ** check_int("n_bits", 8 if n_bits is None else n_bits)


def log_abs_scale(scale, dim: int) -> float | Tensor:
    """D·ln|a| for a scalar scaler ``a``, or Σ_i ln|a_i| for a tensor with one (or D) entries."""
    if isinstance(scale, Tensor):
        if scale.numel() not in (1, dim) or not (scale != 0).all():
            raise ValueError(f"scale must be non-zero with 1 or D={dim} entries, got shape {tuple(scale.shape)}")
        return torch.log(scale.abs()).expand(dim).sum() if scale.numel() == 1 else torch.log(scale.abs()).sum()
    if isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(scale) or scale == 0:
        raise ValueError(f"scale must be a non-zero finite number or a tensor, got {scale!r}")
    return dim * math.log(abs(scale))


def nll_to_bits_per_dim(nll: Tensor, dim: int) -> Tensor:
    """Nats per sample → bits per dimension: ``nll / (D ln 2)`` (D = ``dim`` values per sample).

    The whole conversion for a discrete likelihood (−log P(x) of a discretised decoder); for a density of
    dequantised data use :func:`bits_per_dim`, which adds the dequantisation's volume terms first.
    """
    check_int("dim", dim)
    if not isinstance(nll, Tensor) or not nll.is_floating_point():
        raise TypeError(f"nll must be a floating-point tensor of negative log-likelihoods (nats), got "
                        f"{type(nll).__name__}")
    return nll / (dim * math.log(2))


def bits_per_dim(logp: Tensor, dim: int, *, scale: float | Tensor = 1.0, n_bits: int | None = None,
                 levels: int | None = None) -> Tensor:
    """Upper bound on −log2 P(x)/D for discrete data from a model-space log-density (module docstring).

        bpd = −(log p(y) + D ln|a|)/(D ln 2) + log2 L,    L = 2**n_bits (8-bit data: + 8).

    Args:
        logp: log p(y) in nats per sample, ``(B,)``, at y = a·(x + U)/L + b (uniformly dequantised); for a
            variational dequantiser pass log p(y) − log q(u|x).
        dim: D, the number of values per sample.
        scale: the scaler ``a`` (a number, or a tensor of D per-dimension factors); the shift b does not enter.
        n_bits: bit depth n (L = 2**n).
        levels: the number of levels L, for data that is not n-bit (e.g. 17); give n_bits or levels.
    """
    check_int("dim", dim)
    if not isinstance(logp, Tensor) or not logp.is_floating_point():
        raise TypeError(f"logp must be a floating-point tensor of log-densities (nats), got {type(logp).__name__}")
    L = num_levels(n_bits, levels)
    return nll_to_bits_per_dim(-(logp + log_abs_scale(scale, dim)), dim) + math.log2(L)


def check_discrete(x: Tensor, levels: int, name: str = "x") -> Tensor:
    """Check that ``x`` holds discrete levels {0, …, L−1} (integer dtype, or integral floats on the CPU)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor of discrete levels, got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold integer levels 0..{levels - 1}, got dtype {x.dtype}")
    if on_cpu(x) and x.numel() > 0:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > levels - 1:
            raise ValueError(f"{name} must lie in the declared range 0..{levels - 1} ({levels} levels), got values "
                             f"in [{lo:g}, {hi:g}]")
        if x.is_floating_point() and not torch.equal(x, torch.floor(x)):
            raise ValueError(f"{name} must hold integer levels 0..{levels - 1}, got non-integer values (data already "
                             f"scaled to [0, 1]? multiply by {levels - 1} and round, or pass the raw integers)")
    return x


def uniform_dequantize(x: Tensor, *, n_bits: int | None = None, levels: int | None = None, scale=1.0,
                       shift=0.0, generator: torch.Generator | None = None, dtype=torch.float32) -> Tensor:
    """Dequantise discrete levels and map them to model space: y = a·(x + U[0,1))/L + b.

    With the defaults (a = 1, b = 0) the result is u ∈ [0, 1)^D; ``scale=2, shift=-1`` gives [−1, 1).
    ``x`` holds integers 0..L−1 (any integer dtype, or integral floats); values outside that range raise.
    """
    L = num_levels(n_bits, levels)
    check_discrete(x, L)
    check_generator(generator)
    gen_device = generator.device if generator is not None else x.device
    noise = torch.rand(x.shape, generator=generator, device=gen_device, dtype=dtype).to(x.device)
    return to_model_space(x, noise, levels=L, scale=scale, shift=shift)


def to_model_space(x: Tensor, u: Tensor, *, levels: int, scale=1.0, shift=0.0) -> Tensor:
    """The dequantisation map y = a·(x + u)/L + b of levels ``x`` and offsets ``u`` ∈ [0, 1)^D, in u's dtype.

    Shared by :func:`uniform_dequantize` (u uniform), :func:`~scoresde.likelihood.dequant.dequantized_log_prob`
    and :func:`~scoresde.likelihood.evaluate.evaluate_nll` (u from a variational dequantiser).
    """
    return scale * ((x.to(u.dtype) + u) / levels) + shift
