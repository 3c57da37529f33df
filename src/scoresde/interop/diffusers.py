"""diffusers models as scoresde score functions: :func:`from_diffusers` and :class:`TabulatedVPSDE`.

A diffusers noise scheduler (``DDPMScheduler``, ``DDIMScheduler``, ``EulerDiscreteScheduler``, ...) defines
its forward process by a table of N = ``num_train_timesteps`` cumulative products
ᾱ_i = Π_{j≤i} (1 − β_j), i = 0..N−1 (Ho et al. 2020, eq. 4; diffusers' ``alphas_cumprod``), and noises data
as ``add_noise(x0, ε, i) = sqrt(ᾱ_i) x0 + sqrt(1 − ᾱ_i) ε``. Whatever the β schedule ("linear",
"scaled_linear", "squaredcos_cap_v2", a zero-terminal-SNR rescale), the table is the truth, so the SDE here
is built from the table itself.

Time mapping (continuous t ∈ [0, 1] ↔ timestep index i):

    t_i = (i + 1) / N,        timestep(t) = t·N − 1,

with t = 0 the clean data (ᾱ = 1). Why not score_sde_pytorch's t = i/(N − 1): ᾱ_i holds i + 1 factors
(1 − β_j), so index i sits i + 1 steps of length 1/N after the clean data; with i/(N − 1), t = 0 would
carry the noise of ᾱ_0 < 1. For N = 1000 the default sampler end ``eps = 1e-3`` is exactly timestep 0.

The SDE (:class:`TabulatedVPSDE`) is the VP SDE dx = −½β(t)x dt + sqrt(β(t)) dw (Song et al. 2021,
eq. 11) whose log ᾱ(t) = 2 log α(t) interpolates the N + 1 nodes (j/N, log ᾱ_{j−1}) (node 0: log ᾱ = 0),
with β(t) = −d log ᾱ/dt. Any interpolant through the nodes gives the exact marginals at every timestep
and, since a VP transition depends only on α(t)/α(s), the exact DDPM step between consecutive timesteps,
x_{t_i} | x_{t_{i−1}} ~ N(sqrt(1 − β_i) x, β_i I) (Ho et al. 2020, eq. 2): the SDE reproduces the whole
Markov chain. The interpolant is a C² cubic spline (not-a-knot), so that the probability-flow drift is
smooth for adaptive ODE solvers: with piecewise-linear log ᾱ (a constant β per step) dopri5 needed 889
evaluations for a likelihood error of 4e-3 nats where the spline needs 97 for 1e-5, as on the VPSDE
(measured on a 2-D mixture, rtol = atol = 1e-6). Where the spline's β would not stay positive (a table
with a sharp end), a monotone C¹ piecewise-cubic Hermite interpolant (PCHIP; Fritsch & Carlson 1980) is
used instead; :attr:`TabulatedVPSDE.interpolation` says which.

Between the nodes the network receives a fractional timestep (as k-diffusion's discrete-schedule
wrappers do; a sinusoidal embedding is smooth in it); a UNet with a ``"learned"`` (lookup-table) time
embedding gets the nearest integer. Below t = 1/N the timestep lies in (−1, 0), outside the training
range: stop samplers (and start likelihoods) at ``eps ≥ 1/N``.

A linear β schedule from β_1 to β_N is the discretisation of ``VPSDE(beta_min=β_1·N, beta_max=β_N·N)``
(Song et al. 2021, App. B); the table SDE agrees with that VPSDE to O(1/N) and equals the chain exactly.

Importing this module imports nothing from diffusers: the model and scheduler are used through their
attributes (``alphas_cumprod``, ``config``) and their call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from scoresde._checks import append_dims
from scoresde.score import ScoreModel
from scoresde.sde import SDE

__all__ = ["TabulatedVPSDE", "from_diffusers", "PREDICTION_TYPES"]

#: diffusers' ``prediction_type`` → :class:`~scoresde.ScoreModel` parameterisation.
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}

# diffusers' Euler scheduler stands 2^-24 in for the ᾱ = 0 of a zero-terminal-SNR table (even where that
# exceeds the previous entry).
_EULER_ZERO_SNR = 2.0**-24


class TabulatedVPSDE(SDE):
    """The VP SDE of a discrete ᾱ table: log ᾱ(t) a cubic spline through (j/N, log ᾱ_{j−1}), j = 0..N.

    ``alphas_cumprod`` is the 1-D table ᾱ_0 > ᾱ_1 > ... > ᾱ_{N−1} > 0 of a diffusers scheduler. A
    zero-terminal-SNR table (Lin et al. 2024, ``rescale_betas_zero_snr=True``) ends in ᾱ = 0 (DDPM, DDIM) or
    in the Euler scheduler's stand-in 2^-24; log ᾱ = −∞ has no place in a log-SNR SDE, so that last entry
    becomes ᾱ_{N−2}² / ᾱ_{N−3}, the previous step's decay continued (SNR ≈ 1e-9 for diffusers' tables; the
    prior N(0, I) is exact to that). Then

        α(t)² = ᾱ(t),  σ(t)² = 1 − ᾱ(t),  β(t) = −d log ᾱ(t)/dt > 0,  ∫_{t_{i−1}}^{t_i} β = −log(1 − β_i),

    and α(t_i), σ(t_i) at t_i = (i + 1)/N are sqrt(ᾱ_i), sqrt(1 − ᾱ_i) (module docstring: the time mapping
    and the choice of spline). Coefficients are computed in float64 (float32 on MPS, which has no float64)
    and returned in t's dtype.
    """

    def __init__(self, alphas_cumprod):
        table = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
        if table.ndim != 1 or table.numel() < 2:
            raise ValueError(f"alphas_cumprod must be a 1-D table of at least 2 values, got shape {tuple(table.shape)}")
        if not torch.isfinite(table).all() or not (table[:-1] > 0).all() or not (table <= 1).all() or table[-1] < 0:
            raise ValueError("alphas_cumprod must lie in (0, 1] (the last entry in [0, 1]), got values in "
                             f"[{float(table.min())}, {float(table.max())}]")
        table = table.clone()
        if table[-1] == 0 or (table[-1] == _EULER_ZERO_SNR and table[-1] >= table[-2]):
            # zero terminal SNR: continue the last step's decay of log ᾱ
            before = table[-3] if table.numel() > 2 else table.new_ones(())
            table[-1] = table[-2] ** 2 / before
        log_abar = torch.cat([table.new_zeros(1), torch.log(table)])  # nodes j = 0..N
        if not (log_abar[1:] < log_abar[:-1]).all():
            i = int(torch.nonzero(log_abar[1:] >= log_abar[:-1])[0])
            raise ValueError(f"alphas_cumprod must decrease strictly from below 1 (every β_i > 0); it does not at "
                             f"index {i} (value {float(table[i])}" + (")" if i == 0 else
                                                                       f", previous {float(table[i - 1])})"))
        self.num_timesteps = n = table.numel()
        self._log_abar = log_abar
        self.interpolation, coef = _spline(log_abar, n)
        self._coef = coef  # (N, 4): log ᾱ = ((c0 u + c1) u + c2) u + c3 on panel j, u = t − j/N
        self._cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def __repr__(self):
        return f"TabulatedVPSDE(num_timesteps={self.num_timesteps}, interpolation={self.interpolation!r})"

    @property
    def alphas_cumprod(self) -> Tensor:
        """The table ᾱ_0..ᾱ_{N−1} in float64 (with a zero-SNR last entry replaced as described above)."""
        return torch.exp(self._log_abar[1:])

    # ------------------------------------------------------------------ time mapping
    def timestep(self, t: Tensor) -> Tensor:
        """The (fractional) diffusers timestep of SDE time t: t·N − 1 (computed in float64)."""
        return (t.to(_wide(t)) * self.num_timesteps - 1).to(t.dtype)

    def time(self, timestep) -> Tensor:
        """The SDE time of a diffusers timestep index (int or float): t = (timestep + 1) / N, float64."""
        return (torch.as_tensor(timestep, dtype=torch.float64) + 1) / self.num_timesteps

    # ------------------------------------------------------------------ the spline
    def _tables(self, device) -> tuple[Tensor, Tensor]:
        if device not in self._cache:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            self._cache[device] = (self._log_abar.to(device, dtype), self._coef.to(device, dtype))
        return self._cache[device]

    def _eval(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """log ᾱ(t) and β(t) = −d log ᾱ/dt in float64 (panel j: t ∈ [j/N, (j+1)/N), the last one closed)."""
        t64 = t.to(_wide(t))
        _, coef = self._tables(t.device)
        j = (t64 * self.num_timesteps).floor().long().clamp(0, self.num_timesteps - 1)
        u = t64 - j.to(t64.dtype) / self.num_timesteps  # (a long / int would be float32)
        c = coef[j]
        c0, c1, c2, c3 = c.unbind(-1)
        return ((c0 * u + c1) * u + c2) * u + c3, -((3 * c0 * u + 2 * c1) * u + c2)

    # ------------------------------------------------------------------ primitives
    def beta(self, t: Tensor) -> Tensor:
        """β(t) = −d log ᾱ/dt; its integral over step i is −log(1 − β_i) ≈ β_i."""
        return self._eval(t)[1].to(t.dtype)

    def drift(self, x, t):
        return -0.5 * append_dims(self.beta(t), x.ndim) * x

    def diffusion(self, t):
        return torch.sqrt(self.beta(t))

    def log_mean_coeff(self, t):
        return (0.5 * self._eval(t)[0]).to(t.dtype)

    def marginal_coeffs(self, t):
        L = self._eval(t)[0]
        return torch.exp(0.5 * L).to(t.dtype), torch.sqrt(-torch.expm1(L)).to(t.dtype)

    def log_snr(self, t):
        L = self._eval(t)[0]
        return (L - torch.log(-torch.expm1(L))).to(t.dtype)

    def t_from_log_snr(self, lam):
        """Inverse of :meth:`log_snr`: log ᾱ = log sigmoid(λ), its step j found among the nodes, then the
        monotone cubic on that step solved by bisection (60 halvings of 1/N: float64 exact)."""
        L = torch.nn.functional.logsigmoid(lam.to(_wide(lam)))
        nodes, coef = self._tables(lam.device)
        L = L.clamp(float(nodes[-1]), 0.0)
        j = (torch.searchsorted(-nodes, -L, right=True) - 1).clamp(0, self.num_timesteps - 1)  # nodes[j] >= L
        c0, c1, c2, c3 = coef[j].unbind(-1)
        lo, hi = torch.zeros_like(L), torch.full_like(L, 1.0 / self.num_timesteps)
        for _ in range(60):
            mid = (lo + hi) / 2
            above = ((c0 * mid + c1) * mid + c2) * mid + c3 > L  # log ᾱ decreasing: the root lies to the right
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return (j.to(L.dtype) / self.num_timesteps + (lo + hi) / 2).to(lam.dtype)

    def transition_coeffs(self, t, s):
        log_a = 0.5 * (self._eval(t)[0] - self._eval(s)[0])
        return torch.exp(log_a).to(t.dtype), (-torch.expm1(2 * log_a)).to(t.dtype)

    def discretize(self, x, t, dt):
        """The exact step from t − dt to t: x_t = a x + sqrt(1 − a²) z, a = α(t)/α(t − dt); on the grid
        (dt = 1/N) this is the DDPM step with the scheduler's own β (Ho et al. 2020, eq. 2)."""
        a, v = self.transition_coeffs(t, (t - dt).clamp_min(0))
        return append_dims(a - 1, x.ndim) * x, torch.sqrt(v)

    @property
    def prior_std(self):
        return 1.0


def _wide(t: Tensor) -> torch.dtype:
    """float64 for the coefficient arithmetic, except on MPS (no float64 there)."""
    return torch.float32 if t.device.type == "mps" else torch.float64


def _spline(log_abar: Tensor, n: int) -> tuple[str, Tensor]:
    """Per-step cubic coefficients (N, 4) of log ᾱ(t) through the nodes, highest power first in the local
    variable u = t − j/N: the C² not-a-knot cubic spline, or, where its β = −d log ᾱ/dt would not stay
    positive on every step, the monotone piecewise-cubic Hermite interpolant with Fritsch–Butland
    (harmonic-mean) node slopes and the end steps' secants at the ends (Fritsch & Carlson 1980): every
    node slope is negative and at most twice a neighbouring secant, so each cubic decreases strictly."""
    from scipy.interpolate import CubicSpline

    knots, values = np.arange(n + 1) / n, log_abar.numpy()
    coef = CubicSpline(knots, values).c.T.copy()  # (N, 4)
    if _min_beta(coef, 1.0 / n) > 0:
        return "cubic", torch.from_numpy(coef)
    h = 1.0 / n
    secant = np.diff(values) / h  # all negative
    slope = np.empty(n + 1)
    slope[0], slope[-1] = secant[0], secant[-1]
    slope[1:-1] = 2 * secant[:-1] * secant[1:] / (secant[:-1] + secant[1:])
    d0, d1 = slope[:-1], slope[1:]
    coef = np.stack([(d0 + d1 - 2 * secant) / h**2, (3 * secant - 2 * d0 - d1) / h, d0, values[:-1]], axis=1)
    return "pchip", torch.from_numpy(coef)


def _min_beta(coef, h: float) -> float:
    """min over every step of β(u) = −(3 c0 u² + 2 c1 u + c2), u ∈ [0, h] (ends and the vertex)."""
    c0, c1, c2 = coef[:, 0], coef[:, 1], coef[:, 2]
    beta = lambda u: -((3 * c0 * u + 2 * c1) * u + c2)  # noqa: E731
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.clip(np.where(c0 != 0, -c1 / (3 * c0), 0.0), 0.0, h)
    return float(np.minimum(np.minimum(beta(0.0), beta(h)), beta(vertex)).min())


class _TimestepInput:
    """Noise conditioning of a diffusers network: timestep = t·N − 1 (rounded for a learned embedding)."""

    def __init__(self, sde: TabulatedVPSDE, integer: bool):
        self.sde, self.integer = sde, integer
        self.__name__ = "timestep = round(t·N − 1)" if integer else "timestep = t·N − 1"

    def __call__(self, t: Tensor) -> Tensor:
        ts = self.sde.timestep(t)
        return ts.round().clamp(0, self.sde.num_timesteps - 1).long() if self.integer else ts


class _CallableNet(nn.Module):
    """Holds a plain callable ``(x, timestep[, class_labels])`` so :class:`ScoreModel` can wrap it."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _scheduler_field(scheduler, name: str):
    config = getattr(scheduler, "config", None)
    value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
    return getattr(scheduler, name, None) if value is None else value


def from_diffusers(unet: Callable, scheduler: object, *,
                   prediction_type: str | None = None) -> tuple[ScoreModel, TabulatedVPSDE]:
    """A scoresde ``(score_fn, sde)`` pair from a diffusers network and its noise scheduler.

    Args:
        unet: a diffusers ``UNet2DModel`` (or any ``nn.Module`` / callable ``(x, timestep[, class_labels])``)
            returning a tensor or an object with a ``.sample`` tensor.
        scheduler: a diffusers scheduler with ``alphas_cumprod`` and a ``config`` holding
            ``num_train_timesteps`` and ``prediction_type`` (DDPM, DDIM, Euler, DPM-Solver, PNDM, ...).
        prediction_type: overrides the scheduler's: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.

    Returns:
        ``(score_fn, sde)``: a :class:`~scoresde.ScoreModel` (the network is ``score_fn.net``) and the
        :class:`TabulatedVPSDE` of the scheduler's ᾱ table. The network is called with
        ``timestep = t·N − 1`` (module docstring); the output is converted by the matching
        parameterisation (ε: score = −ε̂/σ; v: Salimans & Ho 2022; sample: Tweedie). Every scoresde
        sampler, likelihood and loss accepts the pair; :func:`~scoresde.interop.to_k_diffusion` turns it
        into a k-diffusion denoiser.
    """
    if not callable(unet):
        raise TypeError(f"unet must be a callable network (a diffusers UNet2DModel), got {type(unet).__name__}")
    table = getattr(scheduler, "alphas_cumprod", None)
    if table is None:
        raise TypeError(f"scheduler must have alphas_cumprod (a DDPM/DDIM-style diffusers scheduler), got "
                        f"{type(scheduler).__name__}")
    sde = TabulatedVPSDE(table)
    n = _scheduler_field(scheduler, "num_train_timesteps")
    if n is not None and int(n) != sde.num_timesteps:
        raise ValueError(f"scheduler num_train_timesteps={n} does not match its alphas_cumprod of length "
                         f"{sde.num_timesteps}")
    kind = prediction_type if prediction_type is not None else _scheduler_field(scheduler, "prediction_type")
    kind = "epsilon" if kind is None else kind
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {kind!r}; choose one of {sorted(PREDICTION_TYPES)}")
    unet_config = getattr(unet, "config", None)
    embedding = (unet_config.get("time_embedding_type") if isinstance(unet_config, dict)
                 else getattr(unet_config, "time_embedding_type", None))
    if embedding == "fourier":
        raise ValueError("this UNet has a 'fourier' time embedding, which diffusers uses for VE models "
                         "conditioned on σ (ScoreSdeVe); from_diffusers serves ᾱ-table (VP) schedulers")
    net = unet if isinstance(unet, nn.Module) else _CallableNet(unet)
    model = ScoreModel(net, sde, PREDICTION_TYPES[kind], _TimestepInput(sde, integer=embedding == "learned"))
    return model, sde

