"""Exponential moving average of a model's weights (Song et al. 2021, App. H: decay 0.999 / 0.9999).

After every optimiser step, ``θ_ema ← d·θ_ema + (1 − d)·θ`` for every floating parameter; buffers (e.g.
batch-norm statistics) are copied. The update is one fused ``torch._foreach_lerp_`` over all parameters
(``lerp(θ_ema, θ, 1 − d) = θ_ema + (1 − d)(θ − θ_ema)``), which the tests check against a plain loop.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Shadow copy of ``model`` whose parameters track an exponential moving average.

    Args:
        model: the module being trained (unwrapped: pass ``ddp.module``, not the DDP wrapper).
        decay: ``d`` in ``[0, 1)``.
    ``ema.module`` is a frozen deep copy usable as a ``score_fn``; ``state_dict`` / ``load_state_dict``
    hold its weights and the decay.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be a number in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """θ_ema ← d·θ_ema + (1 − d)·θ for every parameter, buffers copied."""
        ema_params, params = _float_pairs(self.module.parameters(), model.parameters())
        if ema_params:
            torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for b_ema, b in zip(self.module.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.module.load_state_dict(state["module"])


def _float_pairs(ema_params, params):
    a, b = [], []
    for p_ema, p in zip(ema_params, params, strict=True):
        if p_ema.shape != p.shape:
            raise ValueError(f"EMA: parameter shape {tuple(p.shape)} differs from the shadow's {tuple(p_ema.shape)}")
        if p.is_floating_point():
            a.append(p_ema)
            b.append(p.detach())
    return a, b
