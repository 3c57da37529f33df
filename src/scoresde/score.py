"""Network → ``score_fn`` adapter: :class:`ScoreModel`.

A network maps ``(x, noise_cond)`` to an output of x's shape. :class:`ScoreModel` wraps it with an SDE and
turns the output into the score ∇_x log p_t(x), using only ``sde.marginal_coeffs(t) -> (α(t), σ(t))``,
so it works for every SDE, including a user's own (Song et al. 2021, eq. 7 perturbation kernel
p_0t(x_t | x_0) = N(α x_0, σ² I)):

* ``"score"``: the output is the score.
* ``"eps"``:   the output predicts ε in x_t = α x_0 + σ ε, so the score is −ε̂ / σ (Ho et al. 2020, eq. 11;
  Song et al. 2021, App. B).
* ``"x0"``:    the output predicts x_0 (Tweedie), so the score is (α x̂_0 − x_t) / σ².
* ``"v"``:     the output predicts the velocity v = α ε − σ x_0 (Salimans & Ho 2022, Sec. 4 and App. D;
  diffusers' ``"v_prediction"``). With x_t = α x_0 + σ ε the pair (x_t, v) is a rotation-and-scale of
  (x_0, ε), so ε̂ = (σ x_t + α v̂) / (α² + σ²) and the score is −ε̂ / σ; for a VP SDE α² + σ² = 1 and
  x̂_0 = α x_t − σ v̂ (their eq. for x̂ in App. D). The general denominator serves every SDE.

A network may return a tensor or an object with a ``.sample`` tensor (a diffusers ``UNet2DOutput``).

The network's noise-conditioning input (``noise_cond``) is ``"999t"`` (score_sde_pytorch's VP / sub-VP
convention), ``"sigma"`` (σ(t), its continuous VE convention), ``"t"``, ``"discrete_index"`` (the official
discrete-VP label t·(N − 1), float) or a callable ``t -> (B,)``.

``discrete_steps=N`` reproduces the official discrete VP models (``continuous=False``): the ε → score
division then uses the DDPM chain's std sqrt(1 − ᾱ_i) at the step i of t, ᾱ_i = Π_{j≤i}(1 − β_j) with
β_j from ``sde.discrete_betas(N)`` (Ho et al. 2020, eq. 4), instead of the continuous σ(t).

The discrete-index rule, the library's one (also :func:`scoresde.discrete.eps_net_to_score_fn`'s). Step i of
the N-step chain sits at t_i = i/(N − 1) (the VP SDE's DDPM discretisation, Song et al. 2021, eq. 44):

* the network's label is the fractional index :func:`discrete_index` t·(N − 1), as score_sde_pytorch's
  discrete VP models receive it (``labels = t * (N - 1)``);
* the step whose std divides ε̂ is :func:`step_index` i = ⌊t(N − 1) + 10⁻³⌋, clamped to 0..N−1: the official
  floor (``std[labels.long()]``), with a slack of 10⁻³ of a step so that a grid time t_i, whose float
  product t_i(N − 1) can fall just below i (8 % of the points of a float32 ``linspace(0, 1, 1000)``), gets
  its own step i and not i − 1. It departs from the official floor only in that sliver below a grid time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from scoresde._checks import append_dims, check_choice, check_int

__all__ = ["ScoreModel", "PARAMETERIZATIONS", "NOISE_CONDS", "discrete_index", "step_index", "ddpm_stds",
           "chain_std"]

PARAMETERIZATIONS = ("score", "eps", "x0", "v")
NOISE_CONDS = ("999t", "sigma", "t", "discrete_index")
STEP_SLACK = 1e-3  # of a step: the float error of t_i(N − 1) at a grid time is below 1e-3 for N up to ~10⁴


def discrete_index(t: Tensor, num_steps: int) -> Tensor:
    """The fractional step index t·(N − 1) of times ``t``, in t's dtype: a discrete network's label."""
    return t * (num_steps - 1)


def step_index(t: Tensor, num_steps: int) -> Tensor:
    """The step i = ⌊t(N − 1) + 10⁻³⌋ ∈ 0..N−1 of times ``t``, int64 (module docstring: the one rule)."""
    return torch.floor(discrete_index(t, num_steps) + STEP_SLACK).long().clamp(0, num_steps - 1)


def ddpm_stds(sde, num_steps: int) -> Tensor | None:
    """The DDPM chain's stds sqrt(1 − ᾱ_i), i = 0..N−1, float64, from ``sde.discrete_betas(N)``; None for an
    SDE without a DDPM chain (e.g. the VE ladder of NCSN, whose levels are σ(t_i) exactly)."""
    if not callable(getattr(sde, "discrete_betas", None)):
        return None
    betas = sde.discrete_betas(num_steps, dtype=torch.float64)
    return torch.sqrt(-torch.expm1(torch.cumsum(torch.log1p(-betas), 0)))


def chain_std(stds: Tensor, t: Tensor, *, interpolate: bool = False) -> Tensor:
    """The chain's std at times ``t``, in t's dtype and device: ``stds`` (N,) at :func:`step_index` of t, or,
    with ``interpolate``, log-linearly interpolated at the fractional index t(N − 1) (equal at the grid times,
    continuous in t: for adaptive ODE solvers)."""
    N = stds.shape[0]
    if not interpolate:
        return stds.to(t.device)[step_index(t, N).to(t.device)].to(t.dtype)
    log_std = torch.log(stds).to(device=t.device, dtype=t.dtype)
    pos = discrete_index(t, N).clamp(0, N - 1)
    lo = pos.floor().long().clamp(max=N - 2)
    w = pos - lo.to(pos.dtype)
    return torch.exp((1 - w) * log_std[lo] + w * log_std[lo + 1])


class ScoreModel(nn.Module):
    """``score_fn(x, t)`` from a network, an SDE, a parameterisation and a noise-conditioning rule.

    ``forward(x, t, class_labels=None)`` returns the score, shaped like ``x`` and in x's dtype. The network is
    ``self.net`` (so DDP / EMA wrappers and ``state_dict`` see its parameters under ``net.``).

    Dtypes, decided here once: the network runs in the dtype of its own floating parameters, so float64 (or
    float16) ``x`` through a float32 network is cast to float32 on the way in, together with the noise
    conditioning, and the output is cast back to x's dtype before it becomes a score (the ε → score division
    then runs in x's precision). A float64 ODE state or likelihood therefore works with any network, the score
    itself carrying the network's precision. Under ``torch.autocast`` x already has the parameters' dtype and
    nothing is cast. A network without floating parameters receives its inputs unchanged.
    """

    def __init__(self, net: nn.Module, sde, parameterization: str = "eps", noise_cond: str | Callable = "999t",
                 *, discrete_steps: int | None = None):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if not callable(getattr(sde, "marginal_coeffs", None)):
            raise TypeError(f"sde must provide marginal_coeffs(t) (an scoresde.SDE), got {type(sde).__name__}")
        self.net, self.sde = net, sde
        self.parameterization = check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        if not callable(noise_cond):
            check_choice("noise_cond", noise_cond, NOISE_CONDS)
        self.noise_cond_rule = noise_cond
        self.discrete_steps = None if discrete_steps is None else check_int("discrete_steps", discrete_steps, minimum=2)
        if noise_cond == "discrete_index" and discrete_steps is None:
            raise ValueError("noise_cond='discrete_index' needs discrete_steps=N (the number of discrete steps)")
        # A DDPM chain (discrete_betas) has its own std table; without one (e.g. the VE ladder of NCSN, whose
        # levels are σ(t_i) exactly) the continuous σ(t) at the ladder times is already the discrete std.
        stds = None if discrete_steps is None else ddpm_stds(sde, discrete_steps)
        self.register_buffer("discrete_std", stds, persistent=False)

    def extra_repr(self) -> str:
        rule = getattr(self.noise_cond_rule, "__name__", self.noise_cond_rule)
        return f"sde={self.sde!r}, parameterization={self.parameterization!r}, noise_cond={rule!r}, " \
               f"discrete_steps={self.discrete_steps}"

    # --------------------------------------------------------------------------------------------
    def noise_cond(self, t: Tensor) -> Tensor:
        """The network's conditioning input for times ``t`` (B,)."""
        rule = self.noise_cond_rule
        if callable(rule):
            return rule(t)
        if rule == "999t":
            return 999 * t
        if rule == "t":
            return t
        if rule == "sigma":
            return self._marginal_coeffs(t)[1]
        return discrete_index(t, self.discrete_steps)

    def _marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """α(t), σ(t) evaluated in float64 (B scalars: cheap) and rounded once to t's dtype; float32 σ(t)
        computed directly can be off by a few ulps, which the Fourier embedding of log σ amplifies."""
        if t.dtype == torch.float64 or t.device.type == "mps":
            return self.sde.marginal_coeffs(t)
        alpha, std = self.sde.marginal_coeffs(t.to(torch.float64))
        return alpha.to(t.dtype), std.to(t.dtype)

    def coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(α(t), σ(t)) used to convert the output into a score (the discrete table when discrete_steps)."""
        alpha, std = self._marginal_coeffs(t)
        if self.discrete_std is not None:
            std = chain_std(self.discrete_std, t).to(std.dtype)
        return alpha, std

    def _net_dtype(self) -> torch.dtype | None:
        for p in self.net.parameters():
            if p.is_floating_point():
                return p.dtype
        return None

    def net_output(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """The raw network output for ``(x, t)``, in x's dtype (the network runs in its own; see the class):
        a tensor, or the ``.sample`` of what the network returns (diffusers' ``UNet2DOutput``)."""
        nc = self.noise_cond(t)
        dtype = self._net_dtype()
        if dtype is not None:
            x_in = x.to(dtype) if x.is_floating_point() else x  # .to is a no-op when the dtype already matches
            nc = nc.to(dtype) if isinstance(nc, Tensor) and nc.is_floating_point() else nc
        else:
            x_in = x
        out = self.net(x_in, nc) if class_labels is None else self.net(x_in, nc, class_labels)
        if not isinstance(out, Tensor):
            out = getattr(out, "sample", out)  # diffusers' UNet2DOutput(sample=...)
        if not isinstance(out, Tensor):
            raise TypeError(f"the network must return a tensor or an object with a .sample tensor, got "
                            f"{type(out).__name__}")
        return out.to(x.dtype) if dtype is not None and x.is_floating_point() else out

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """The score ∇_x log p_t(x), shaped like ``x``."""
        if not isinstance(t, Tensor) or t.ndim != 1 or t.shape[0] != x.shape[0]:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"t must be a tensor of shape ({x.shape[0]},) (one time per sample), got {got}")
        return self.output_to_score(self.net_output(x, t, class_labels), x, t)

    def output_to_score(self, out: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """Convert a network output at ``(x, t)`` into the score (identity for ``"score"``)."""
        if self.parameterization == "score":
            return out
        alpha, std = self.coeffs(t)
        std = append_dims(std.to(out.dtype), x.ndim)
        if self.parameterization == "eps":
            return -out / std
        alpha = append_dims(alpha.to(out.dtype), x.ndim)
        if self.parameterization == "v":  # ε̂ = (σ x_t + α v̂) / (α² + σ²), score = −ε̂ / σ
            return -(std * x + alpha * out) / (std * (alpha**2 + std**2))
        return (alpha * out - x) / std**2
