"""Class-conditional sampling by guidance (Song et al. 2021, Sec. 5, eq. 14; App. I):

    ∇_x log p_t(x | y) = ∇_x log p_t(x) + ∇_x log p_t(y | x),

so a conditional ``score_fn`` is the unconditional one plus the gradient of a noise-conditional classifier's
log-probability. With a scale s (Dhariwal & Nichol 2021, "classifier guidance"),

    s̃(x, t) = s(x, t) + s · ∇_x log p_t(y | x);

s = 1 is the exact conditional score when p_t(y | x) is exact. :func:`guided_score_fn` returns an ordinary
``score_fn(x, t)`` closure, so every SDE sampler and the probability-flow ODE sampler accept it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real

import torch
from torch import Tensor

from scoresde._checks import check_score

__all__ = ["guided_score_fn", "classifier_log_prob_fn", "check_labels"]

LogProbFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def check_labels(labels, num_classes: int, batch: int | None = None, *, name: str = "labels") -> Tensor:
    """Check integer class labels ``(B,)`` in ``[0, num_classes)`` against a classifier's number of classes."""
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex() or labels.ndim != 1:
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(f"{name} must be an integer tensor of shape (B,), got {got}")
    if batch is not None and labels.shape[0] != batch:
        raise ValueError(f"{name} must have shape ({batch},) (one per sample), got {tuple(labels.shape)}")
    if labels.device.type == "cpu" and labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}) — the classifier has {num_classes} classes — "
                         f"got values in [{int(labels.min())}, {int(labels.max())}]")
    return labels


def classifier_log_prob_fn(classifier: Callable[[Tensor, Tensor], Tensor]) -> LogProbFn:
    """``log_prob_fn(x, t, y) -> (B,)``: log softmax of a noise-conditional classifier's logits
    ``classifier(x, t) -> (B, K)`` at the labels ``y`` ``(B,)``."""
    if not callable(classifier):
        raise TypeError(f"classifier must be a callable (x, t) -> logits (B, K), got {type(classifier).__name__}")

    def log_prob(x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        logits = classifier(x, t)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"classifier must return logits of shape ({x.shape[0]}, K), got {got}")
        check_labels(y, logits.shape[1], x.shape[0], name="y")
        return torch.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)

    return log_prob


def guided_score_fn(score_fn, log_prob_fn: LogProbFn, y: Tensor, scale: float = 1.0):
    """The guided ``score_fn(x, t) = score_fn(x, t) + scale · ∇_x log_prob_fn(x, t, y)``.

    ``log_prob_fn(x, t, y)`` returns log p_t(y | x) per sample ``(B,)`` (e.g. :func:`classifier_log_prob_fn`);
    ``y`` is passed through unchanged (labels ``(B,)`` for a classifier). The gradient is taken with autograd
    even inside the samplers' ``torch.no_grad``; the returned score is detached. ``scale=0`` gives back the
    unconditional score.
    """
    if not callable(score_fn) or not callable(log_prob_fn):
        raise TypeError("score_fn and log_prob_fn must be callables")
    if isinstance(scale, bool) or not isinstance(scale, Real) or scale < 0:
        raise ValueError(f"scale must be a non-negative number, got {scale!r}")
    scale = float(scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        score = check_score(score_fn(x, t), x, finite=False)  # a (B, 1) score would broadcast with the grad
        if scale == 0:
            return score
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = log_prob_fn(xg, t, y)
            if logp.shape != (x.shape[0],):
                raise ValueError(f"log_prob_fn must return ({x.shape[0]},) values, got {tuple(logp.shape)}")
            (grad,) = torch.autograd.grad(logp.sum(), xg)
        return score + scale * grad.detach()

    return guided
