"""Conversion between the chain's ε-network and the continuous VP SDE's ``score_fn`` (Song et al. 2021, §3.3).

The DDPM chain with β_i = β(t_i)/N is the VP SDE's discretisation on t_i = i/(N − 1), i = 0..N−1
(:meth:`DiscreteChain.from_sde`). So an ε-network trained on that chain gives a continuous score,

    score(x, t) = −ε̂(x, t (N − 1)) / σ,

and a continuous ``score_fn`` gives a chain ε-network, ε̂(x, i) = −σ score(x, t_i), t_i = i / (N − 1).

``std`` picks σ. ``"chain"`` (default) is the std sqrt(1 − ᾱ) that the network was trained at, log-linearly
interpolated at the fractional index (score_sde_pytorch's discrete DDPM models also divide by the chain's
std). ``"sde"`` is the VP marginal σ(t). They agree to O(1/N) except near t = 0, where the chain's first
step keeps σ ≥ sqrt(β_1) while σ(t) → 0; there ``"sde"`` inflates the score of an ε-network by σ_1/σ(t).

With these a discrete-trained model runs in the SDE / ODE samplers and in the ODE likelihood, and any
continuous model (or the exact mixture score) drives the chain's kernel and bound. The network receives a
fractional index when t is off the grid; networks with a sinusoidal time embedding accept it (score_sde's VP
networks receive 999·t the same way). Pass ``round_index=True`` for networks that need integers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde._checks import append_dims, check_choice, check_int, check_score
from scoresde.discrete.chain import DiscreteChain
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


def _std_fn(sde: SDE, num_steps: int, std: str):
    """σ as a function of the fractional index (``"chain"``) or of t (``"sde"``); returns f(index, t)."""
    check_choice("std", std, ("chain", "sde"))
    if std == "sde":
        return lambda index, t: sde.marginal_coeffs(t)[1]
    log_var = torch.log1p(-DiscreteChain.from_sde(sde, num_steps).alpha_bar)  # log(1 − ᾱ), float64
    tables: dict = {}

    def chain_std(index: Tensor, t: Tensor) -> Tensor:
        key = (index.device, index.dtype)
        if key not in tables:
            tables[key] = log_var.to(device=index.device, dtype=index.dtype)
        lv = tables[key]
        pos = index.clamp(0, num_steps - 1)
        lo = pos.floor().long().clamp(max=num_steps - 2)
        w = pos - lo.to(pos.dtype)
        return torch.exp(0.5 * ((1 - w) * lv[lo] + w * lv[lo + 1]))

    return chain_std


def eps_net_to_score_fn(net, sde: SDE, num_steps: int, *, std: str = "chain", round_index: bool = False,
                        eps_channels: int | None = None) -> ScoreFn:
    """The VP ``score_fn(x, t) = −ε̂(x, t (N − 1)) / σ`` of an ε-network trained on the N-step chain.

    ``std``: ``"chain"`` or ``"sde"`` (module docstring). ``eps_channels``: keep only the first
    ``eps_channels`` channels of the output (a learned-variance network returns ε̂ and the variance part
    stacked along dim 1; pass ``x``'s channel count).
    """
    if not callable(net):
        raise TypeError(f"net must be callable as net(x, i), got {type(net).__name__}")
    check_int("num_steps", num_steps, minimum=2)
    std_of = _std_fn(sde, num_steps, std)

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        sde.check_time(t, batch=x.shape[0])
        index = time_to_index(t, num_steps)
        index = index.round() if round_index else index
        eps = net(x, index.long() if round_index else index)
        if eps_channels is not None:
            eps = eps[:, :eps_channels]
        return -eps / append_dims(std_of(index, t).to(eps.dtype), x.ndim)

    return score_fn


def score_fn_to_eps_net(score_fn: ScoreFn, sde: SDE, num_steps: int, *, std: str = "chain"):
    """The chain ε-network ``net(x, i) = −σ score_fn(x, t_i)``, t_i = i/(N − 1), of a continuous score."""
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
    check_int("num_steps", num_steps, minimum=2)
    std_of = _std_fn(sde, num_steps, std)

    def eps_net(x: Tensor, i: Tensor) -> Tensor:
        t = index_to_time(i, num_steps, dtype=x.dtype).to(x.device)
        return -append_dims(std_of(i.to(x.dtype), t), x.ndim) * check_score(score_fn(x, t), x, finite=False)

    return eps_net
