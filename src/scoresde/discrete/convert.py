"""Conversion between the chain's ε-network and the continuous VP SDE's ``score_fn`` (Song et al. 2021, §3.3).

The DDPM chain with β_i = β(t_i)/N is the VP SDE's discretisation on t_i = i/(N − 1), i = 0..N−1
(:meth:`DiscreteChain.from_sde`). So an ε-network trained on that chain gives a continuous score,

    score(x, t) = −ε̂(x, t (N − 1)) / σ(t),

with σ(t) the VP marginal std, and a continuous ``score_fn`` gives a chain ε-network,

    ε̂(x, i) = −σ(t_i) score(x, t_i),   t_i = i / (N − 1).

With these a discrete-trained model runs in the SDE / ODE samplers and in the ODE likelihood, and any
continuous model (or the exact mixture score) drives the chain's kernel and bound. The network receives a
fractional index when t is off the grid; networks with a sinusoidal time embedding accept it (score_sde's VP
networks receive 999·t the same way). Pass ``round_index=True`` for networks that need integers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde._checks import append_dims, check_int
from scoresde.sde import SDE, ScoreFn

__all__ = ["eps_net_to_score_fn", "score_fn_to_eps_net", "index_to_time", "time_to_index"]


def index_to_time(i: Tensor, num_steps: int, dtype=torch.float32) -> Tensor:
    """t_i = i / (N − 1)."""
    check_int("num_steps", num_steps, minimum=2)
    return i.to(dtype) / (num_steps - 1)


def time_to_index(t: Tensor, num_steps: int) -> Tensor:
    """The fractional index t (N − 1), float like ``t``."""
    check_int("num_steps", num_steps, minimum=2)
    return t * (num_steps - 1)


def eps_net_to_score_fn(net, sde: SDE, num_steps: int, *, round_index: bool = False,
                        eps_channels: int | None = None) -> ScoreFn:
    """The VP ``score_fn(x, t) = −ε̂(x, t (N − 1)) / σ(t)`` of an ε-network trained on the N-step chain.

    ``eps_channels``: keep only the first ``eps_channels`` channels of the output (a learned-variance
    network returns ε̂ and the variance part stacked along dim 1; pass ``x``'s channel count).
    """
    if not callable(net):
        raise TypeError(f"net must be callable as net(x, i), got {type(net).__name__}")
    check_int("num_steps", num_steps, minimum=2)

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        sde.check_time(t, batch=x.shape[0])
        index = time_to_index(t, num_steps)
        index = index.round().long() if round_index else index
        eps = net(x, index)
        if eps_channels is not None:
            eps = eps[:, :eps_channels]
        std = sde.marginal_coeffs(t)[1]
        return -eps / append_dims(std.to(eps.dtype), x.ndim)

    return score_fn


def score_fn_to_eps_net(score_fn: ScoreFn, sde: SDE, num_steps: int):
    """The chain ε-network ``net(x, i) = −σ(t_i) score_fn(x, t_i)``, t_i = i/(N − 1), of a continuous score."""
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
    check_int("num_steps", num_steps, minimum=2)

    def eps_net(x: Tensor, i: Tensor) -> Tensor:
        t = index_to_time(i, num_steps, dtype=x.dtype).to(x.device)
        std = sde.marginal_coeffs(t)[1]
        return -append_dims(std, x.ndim) * score_fn(x, t)

    return eps_net
