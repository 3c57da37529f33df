"""Shape helpers and argument validation shared by every module.

Value checks (ranges, NaN) read tensor contents, which forces a host synchronisation on a GPU.
They therefore run only on CPU tensors; on other devices only shapes and dtypes are checked,
which costs nothing. Shapes are never assumed: per-sample scalars of shape ``(B,)`` broadcast
against ``(B, ...)`` tensors through :func:`append_dims`.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dimensions to ``v`` until it has ``ndim`` dimensions.

    A per-sample scalar of shape ``(B,)`` becomes ``(B, 1, ..., 1)`` and broadcasts against
    ``(B, ...)`` of any rank (k-diffusion's ``append_dims``).
    """
    missing = ndim - v.ndim
    if missing < 0:
        raise ValueError(f"append_dims: tensor has {v.ndim} dims, more than the target {ndim}")
    return v.reshape(v.shape + (1,) * missing)


def batch_sum(x: Tensor) -> Tensor:
    """Sum over every non-batch dimension: ``(B, ...) -> (B,)``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def batch_dim(x: Tensor) -> int:
    """Number of elements per sample (the data dimension D)."""
    return x[0].numel() if x.shape[0] > 0 else int(math.prod(x.shape[1:]))


def on_cpu(x: Tensor) -> bool:
    return x.device.type == "cpu"


def check_tensor(name: str, x, *, min_ndim: int = 1) -> Tensor:
    """Check that ``x`` is a floating tensor of at least ``min_ndim`` dims (and finite, on CPU)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dims (batch first), got shape {tuple(x.shape)}")
    if on_cpu(x) and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_time(t, T: float, *, batch: int | None = None, name: str = "t", lower: float = 0.0) -> Tensor:
    """Check that ``t`` is a float tensor of shape ``(B,)`` with values in ``[lower, T]``.

    A scalar or a tensor of another shape is refused rather than silently broadcast.
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a float tensor of shape (B,), got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.ndim != 1 or (batch is not None and t.shape[0] != batch):
        want = f"({batch},)" if batch is not None else "(B,)"
        raise ValueError(f"{name} must have shape {want} (one time per sample), got {tuple(t.shape)}")
    if on_cpu(t) and t.numel() > 0:
        lo, hi = float(t.min()), float(t.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < lower or hi > T * (1 + 1e-12):
            raise ValueError(f"{name} must lie in [{lower}, {T}], got values in [{lo}, {hi}]")
    return t


def check_positive(name: str, value) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")
    return value


def check_eps(eps, T: float, name: str = "eps") -> float:
    if isinstance(eps, bool) or not isinstance(eps, Real) or not (0 < eps < T):
        raise ValueError(f"{name} must lie in (0, T={T}), got {eps!r}")
    return float(eps)


def check_score(score: Tensor, x: Tensor, *, where: str = "score_fn") -> Tensor:
    """Check the output of a ``score_fn``: same shape as its input, finite (on CPU)."""
    if not isinstance(score, Tensor) or score.shape != x.shape:
        got = tuple(score.shape) if isinstance(score, Tensor) else type(score).__name__
        raise ValueError(f"{where} must return a tensor of the input's shape {tuple(x.shape)}, got {got}")
    if on_cpu(score) and not torch.isfinite(score).all():
        raise ValueError(f"{where} returned NaN or infinite values")
    return score
