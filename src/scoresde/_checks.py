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


def check_tensor(name: str, x, *, min_ndim: int = 1, nonempty: bool = False) -> Tensor:
    """Check that ``x`` is a floating tensor of at least ``min_ndim`` dims (and finite, on CPU).

    ``nonempty``: also refuse a batch of zero samples (functions that return one value per sample and
    reduce over the data dimensions have nothing to compute on an empty batch).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dims (batch first), got shape {tuple(x.shape)}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name} must hold at least one sample with at least one value (shape (B, ...) with "
                         f"B >= 1), got the empty shape {tuple(x.shape)}")
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


def check_generator(generator, name: str = "generator") -> torch.Generator | None:
    """Check that ``generator`` is None or a :class:`torch.Generator` (a seed is not: seed one yourself)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        hint = (f"; to seed, pass torch.Generator().manual_seed({generator})"
                if isinstance(generator, int) and not isinstance(generator, bool) else "")
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}{hint}")
    return generator


class ScoreNotFiniteError(ValueError, FloatingPointError):
    """A ``score_fn`` returned NaN or inf. A :class:`ValueError` (a bad result of a user's function) and a
    :class:`FloatingPointError` (the numerical failure it causes), so either kind of handler catches it."""


def _times_str(t) -> str:
    if not isinstance(t, Tensor) or not on_cpu(t) or t.numel() == 0:
        return ""
    lo, hi = float(t.min()), float(t.max())
    return f" at t = {lo:.6g}" if lo == hi else f" at t in [{lo:.6g}, {hi:.6g}]"


def check_score(score: Tensor, x: Tensor, *, where: str = "score_fn", t: Tensor | None = None,
                finite: bool = True) -> Tensor:
    """Check the output of a ``score_fn`` against its input ``x``: a floating tensor of exactly x's shape
    (free: no host synchronisation) and, with ``finite``, free of NaN/inf (read only on CPU, see the module
    docstring). An output that merely broadcasts against x ((B, 1), (1, D), a scalar) is refused: broadcasting
    would silently turn it into a wrong drift, loss or log-density. The dtype may differ from x's (a float32
    network under a float64 ODE state is legitimate; type promotion keeps the state's precision). ``t`` only
    enriches the NaN message.
    """
    if not isinstance(score, Tensor) or score.shape != x.shape:
        got = tuple(score.shape) if isinstance(score, Tensor) else type(score).__name__
        raise ValueError(f"{where} must return a tensor of the input's shape {tuple(x.shape)}, got {got}"
                         + (" (it would broadcast against x into a wrong result)" if isinstance(score, Tensor)
                            else ""))
    if not score.is_floating_point():
        raise TypeError(f"{where} must return a floating-point tensor, got dtype {score.dtype}")
    if finite and on_cpu(score) and not torch.isfinite(score).all():
        raise ScoreNotFiniteError(f"{where} returned NaN or infinite values{_times_str(t)}")
    return score


class CheckedScore:
    """A ``score_fn`` whose every result is checked by :func:`check_score` (the one place where score outputs
    are checked). It counts its calls in ``nfe``.

    The shape is checked on every call (it costs nothing). ``finite`` says which calls are also checked for
    NaN/inf, on CPU only: ``"every"``, ``"first"`` (the samplers, which check their state after every step
    anyway) or ``"never"`` (callers that check a quantity derived from the score themselves). Wrapping a
    CheckedScore again keeps the inner one's checks and adds the outer one's.
    """

    FINITE = ("every", "first", "never")

    def __init__(self, score_fn, *, finite: str = "every", name: str = "score_fn"):
        if not callable(score_fn):
            raise TypeError(f"{name} must be a callable (x, t) -> score, got {type(score_fn).__name__}")
        self.score_fn, self.name, self.nfe = score_fn, name, 0
        self.finite = check_choice("finite", finite, self.FINITE)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        score = self.score_fn(x, t)
        finite = self.finite == "every" or (self.finite == "first" and self.nfe == 0)
        self.nfe += 1
        return check_score(score, x, where=self.name, t=t, finite=finite)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.score_fn!r}, finite={self.finite!r})"


def checked_score(score_fn, *, finite: str = "every") -> CheckedScore:
    """``score_fn`` itself when it is already a :class:`CheckedScore`, else a new one with ``finite``."""
    return score_fn if isinstance(score_fn, CheckedScore) else CheckedScore(score_fn, finite=finite)
