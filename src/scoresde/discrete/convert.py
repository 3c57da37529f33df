"""Conversion between the chain's ε-network and the continuous VP SDE's ``score_fn`` (Song et al. 2021, §3.3).

The DDPM chain with β_i = β(t_i)/N is the VP SDE's discretisation on t_i = i/(N − 1), i = 0..N−1
(:meth:`DiscreteChain.from_sde`). So an ε-network trained on that chain gives a continuous score,

    score(x, t) = −ε̂(x, t (N − 1)) / σ,

and a continuous ``score_fn`` gives a chain ε-network, ε̂(x, i) = −σ score(x, t_i), t_i = i / (N − 1).

The index rule is :class:`scoresde.ScoreModel`'s, from the same functions (:mod:`scoresde.score`): the network
receives the fractional index t(N − 1) (:func:`~scoresde.score.discrete_index`; ``integer_index=True`` gives
it the step i instead, for networks that need integers), and the step whose std is used is
i = ⌊t(N − 1) + 10⁻³⌋ (:func:`~scoresde.score.step_index`: score_sde_pytorch's floor, robust at the grid
times). With the defaults, ``eps_net_to_score_fn(net, sde, N)`` and
``ScoreModel(net, sde, "eps", "discrete_index", discrete_steps=N)`` are the same score.

``std`` picks σ:

* ``"chain"`` (default): the chain's std sqrt(1 − ᾱ_i) at the step i of t, the std the network was trained
  at (score_sde_pytorch's discrete DDPM models divide by it too);
* ``"interpolate"``: the chain's std log-linearly interpolated at the fractional index; equal to ``"chain"``
  at the grid times and continuous in t, so an adaptive ODE solver (the likelihood) meets no jump of the
  score at each of the N − 1 grid times (an exact 2-D mixture likelihood at tolerance 1e-5: 73 evaluations
  instead of 313 with ``"chain"``);
* ``"sde"``: the VP marginal σ(t). It agrees with the chain's to O(1/N) except near t = 0, where the chain's
  first step keeps σ ≥ sqrt(β_1) while σ(t) → 0; there ``"sde"`` inflates the score of an ε-network by σ_1/σ(t).

With these a discrete-trained model runs in the SDE / ODE samplers and in the ODE likelihood, and any
continuous model (or the exact mixture score) drives the chain's kernel and bound. Networks with a
sinusoidal time embedding accept a fractional index (score_sde's VP networks receive 999·t the same way).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde._checks import append_dims, check_choice, check_int, check_score, check_time
from scoresde.score import chain_std, ddpm_stds, discrete_index, step_index
from scoresde.sde import SDE, ScoreFn

__all__ = ["eps_net_to_score_fn", "score_fn_to_eps_net", "index_to_time", "STDS"]

STDS = ("chain", "interpolate", "sde")


def index_to_time(i: Tensor, num_steps: int, dtype=torch.float32) -> Tensor:
    """t_i = i / (N − 1)."""
    check_int("num_steps", num_steps, minimum=2)
    return i.to(dtype) / (num_steps - 1)


def _std_fn(sde: SDE, num_steps: int, std: str):
    """σ as a function of t, by the rule ``std`` (module docstring)."""
    check_choice("std", std, STDS)
    if std == "sde":
        return lambda t: sde.marginal_coeffs(t)[1]
    stds = ddpm_stds(sde, num_steps)
    if stds is None:
        raise TypeError(f"{type(sde).__name__} has no discrete_betas(N), so it has no DDPM chain whose std "
                        f"std={std!r} could use; pass std='sde' or a VP-type SDE")
    tables: dict = {}

    def std_of(t: Tensor) -> Tensor:
        key = t.device
        if key not in tables:
            tables[key] = stds.to(t.device)
        return chain_std(tables[key], t, interpolate=std == "interpolate")

    return std_of


def eps_net_to_score_fn(net, sde: SDE, num_steps: int, *, std: str = "chain", integer_index: bool = False,
                        eps_channels: int | None = None) -> ScoreFn:
    """The VP ``score_fn(x, t) = −ε̂(x, t (N − 1)) / σ`` of an ε-network trained on the N-step chain.

    ``std``: ``"chain"``, ``"interpolate"`` or ``"sde"`` (module docstring). ``integer_index``: call
    ``net(x, i)`` with the step i = ⌊t(N − 1) + 10⁻³⌋ (int64) instead of the fractional index.
    ``eps_channels``: keep only the first ``eps_channels`` channels of the output (a learned-variance network
    returns ε̂ and the variance part stacked along dim 1; pass ``x``'s channel count).
    """
    if not callable(net):
        raise TypeError(f"net must be callable as net(x, i), got {type(net).__name__}")
    check_int("num_steps", num_steps, minimum=2)
    std_of = _std_fn(sde, num_steps, std)

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        check_time(t, sde.T, batch=x.shape[0])
        label = step_index(t, num_steps) if integer_index else discrete_index(t, num_steps)
        eps = net(x, label)
        if eps_channels is not None:
            eps = eps[:, :eps_channels]
        return -eps / append_dims(std_of(t).to(eps.dtype), x.ndim)

    return score_fn


def score_fn_to_eps_net(score_fn: ScoreFn, sde: SDE, num_steps: int, *, std: str = "chain"):
    """The chain ε-network ``net(x, i) = −σ score_fn(x, t_i)``, t_i = i/(N − 1), of a continuous score."""
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
    check_int("num_steps", num_steps, minimum=2)
    std_of = _std_fn(sde, num_steps, std)

    def eps_net(x: Tensor, i: Tensor) -> Tensor:
        t = index_to_time(i, num_steps, dtype=x.dtype).to(x.device)
        return -append_dims(std_of(t).to(x.dtype), x.ndim) * check_score(score_fn(x, t), x, finite=False)

    return eps_net
