"""Stochastic differential equations of score-based diffusion models.

Every SDE here is a forward process ``dx = f(x, t) dt + g(t) dw`` on ``t ∈ [0, T]`` (Song et al. 2021,
eq. 5) whose perturbation kernel is Gaussian with a scalar mean coefficient,

    p_0t(x_t | x_0) = N(x_t; α(t) x_0, σ(t)² I).

A subclass supplies the mathematical primitives — :meth:`SDE.drift`, :meth:`SDE.diffusion` and
:meth:`SDE.marginal_coeffs` — and everything else is derived from them once, here: the marginal
(:meth:`SDE.marginal`), the prior, the Euler–Maruyama discretisation, the exact transition between two
times, the log signal-to-noise ratio and its inverse, the reverse-time SDE (eq. 6) and the
probability-flow ODE (eq. 13). Generic code asks an SDE for these methods; it never checks its class.

Shapes: ``x`` is ``(B, ...)`` of any rank, ``t`` is a float tensor ``(B,)``, per-sample scalars are
returned as ``(B,)``. Every method works in float32 and float64, on any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from scoresde._checks import (
    append_dims,
    batch_dim,
    check_generator,
    check_int,
    check_positive,
    check_time,
    checked_score,
)

ScoreFn = Callable[[Tensor, Tensor], Tensor]

__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE", "LinearSDE", "ReverseSDE", "ScoreFn", "SDES"]


class SDE:
    """Base class: a linear-Gaussian forward SDE ``dx = f(x, t) dt + g(t) dw``.

    Subclasses implement :meth:`drift`, :meth:`diffusion` and :meth:`marginal_coeffs`; they may
    override :meth:`log_mean_coeff`, :meth:`discretize`, :meth:`transition_coeffs`,
    :meth:`t_from_log_snr` and :attr:`prior_std` with closed forms. ``T`` is the terminal time.
    """

    T: float = 1.0

    # ----------------------------------------------------------------- primitives (subclass)
    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """Drift f(x, t), shaped like ``x``."""
        raise NotImplementedError(f"{type(self).__name__} must implement drift(x, t)")

    def diffusion(self, t: Tensor) -> Tensor:
        """Diffusion coefficient g(t), shape ``(B,)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement diffusion(t)")

    def marginal_coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean coefficient α(t) and standard deviation σ(t) of p_0t, each ``(B,)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement marginal_coeffs(t)")

    # ------------------------------------------------------------------------- derived
    def marginal(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``α(t) x0`` (shaped like ``x0``) and std ``σ(t)`` (``(B,)``) of p_0t(x_t | x_0)."""
        check_time(t, self.T, batch=x0.shape[0])
        alpha, std = self.marginal_coeffs(t)
        return append_dims(alpha, x0.ndim) * x0, std

    def g2(self, t: Tensor) -> Tensor:
        """Squared diffusion g(t)², the likelihood weighting of Song et al. 2021b."""
        return self.diffusion(t) ** 2

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        """log α(t); override for accuracy where α underflows."""
        return torch.log(self.marginal_coeffs(t)[0])

    def log_snr(self, t: Tensor) -> Tensor:
        """log-SNR λ(t) = log(α(t)² / σ(t)²), decreasing in t (Kingma et al. 2021)."""
        return 2 * (self.log_mean_coeff(t) - torch.log(self.marginal_coeffs(t)[1]))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`log_snr` on [0, T], by bisection (64 halvings, no host sync)."""
        lo = torch.zeros_like(lam)
        hi = torch.full_like(lam, self.T)
        for _ in range(64):
            mid = (lo + hi) / 2
            above = self.log_snr(mid) > lam  # λ decreasing: the root lies to the right
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return (lo + hi) / 2

    def transition_coeffs(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Exact kernel from time ``s`` to ``t > s``: x_t | x_s ~ N(a x_s, v I); returns (a, v).

        a = α(t)/α(s) and v = σ(t)² − a² σ(s)², both ``(B,)``.
        """
        a = torch.exp(self.log_mean_coeff(t) - self.log_mean_coeff(s))
        std_t, std_s = self.marginal_coeffs(t)[1], self.marginal_coeffs(s)[1]
        return a, (std_t**2 - (a * std_s) ** 2).clamp_min(0)

    @property
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior p_T (default: σ(T))."""
        t = torch.full((1,), self.T, dtype=torch.float64)
        return float(self.marginal_coeffs(t)[1])

    def prior_sample(self, shape, *, generator: torch.Generator | None = None, device=None, dtype=None) -> Tensor:
        """Draw x_T ~ N(0, prior_std² I) of the given shape ``(B, ...)``."""
        check_generator(generator)
        z = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
        return z * self.prior_std

    def prior_logp(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_std² I) per sample, shape ``(B,)``, in nats."""
        s2 = self.prior_std**2
        d = batch_dim(z)
        sq = z.reshape(z.shape[0], -1).pow(2).sum(1)
        return -0.5 * d * math.log(2 * math.pi * s2) - sq / (2 * s2)

    def discretize(self, x: Tensor, t: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        """One forward step of length ``dt`` from ``t``: x_{t+dt} ≈ x + f + G z; returns (f, G).

        The default is Euler–Maruyama, f = f(x, t) dt, G = g(t) sqrt(dt). Subclasses override it with
        their discrete forms (SMLD ladder, DDPM chain), which the reverse-diffusion predictor uses.
        """
        dt_x = append_dims(dt, x.ndim) if isinstance(dt, Tensor) else dt  # a (B,) dt broadcasts over x
        return self.drift(x, t) * dt_x, self.diffusion(t) * _sqrt(dt)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (eq. 6) or, with ``probability_flow``, the probability-flow ODE (eq. 13)."""
        return ReverseSDE(self, score_fn, probability_flow)


class ReverseSDE:
    """dx = [f(x, t) − c g(t)² ∇_x log p_t(x)] dt + [c = 1] g(t) dw̄, with c = 1 (reverse SDE, Song
    et al. 2021 eq. 6) or c = ½ and no noise (probability-flow ODE, eq. 13). Time runs from T to 0.

    ``self.score_fn`` is ``score_fn`` wrapped in a :class:`~scoresde._checks.CheckedScore` (unless it is one
    already): every call's result must have the shape of x, because a (B, 1), (1, D) or scalar score would
    broadcast into a finite but wrong drift. Its values are not read here (no host synchronisation);
    the samplers and :func:`~scoresde.likelihood.log_likelihood` check for NaN themselves.
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        self.sde, self.probability_flow = sde, probability_flow
        self.score_fn = checked_score(score_fn, finite="never")
        self.c = 0.5 if probability_flow else 1.0

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        g2 = append_dims(self.sde.g2(t), x.ndim)
        return self.sde.drift(x, t) - self.c * g2 * self.score_fn(x, t)

    def diffusion(self, t: Tensor) -> Tensor:
        g = self.sde.diffusion(t)
        return torch.zeros_like(g) if self.probability_flow else g

    def discretize(self, x: Tensor, t: Tensor, dt: float | Tensor) -> tuple[Tensor, Tensor]:
        """Reverse of :meth:`SDE.discretize`: x_{t−dt} = x − rev_f + rev_G z (Song et al. 2021, eq. 46)."""
        f, G = self.sde.discretize(x, t, dt)
        rev_f = f - self.c * append_dims(G**2, x.ndim) * self.score_fn(x, t)
        return rev_f, torch.zeros_like(G) if self.probability_flow else G


def _sqrt(v):
    return torch.sqrt(v) if isinstance(v, Tensor) else math.sqrt(v)


def _t_from_integrated_beta(B: Tensor, beta_min: float, beta_max: float) -> Tensor:
    """Solve ½(β_max−β_min) t² + β_min t = B for t ≥ 0 (the cancellation-free root)."""
    d = beta_max - beta_min
    return 2 * B / (beta_min + torch.sqrt(beta_min**2 + 2 * d * B))


class VESDE(SDE):
    """Variance-exploding SDE (Song et al. 2021, eq. 9; the continuous SMLD/NCSN model).

    σ(t) = σ_min (σ_max/σ_min)^t, f = 0, g(t) = σ(t) sqrt(2 ln(σ_max/σ_min)); p_0t = N(x_0, σ(t)² I);
    prior N(0, σ_max² I).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if not sigma_max > sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.log_ratio = math.log(self.sigma_max / self.sigma_min)

    def __repr__(self):
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(t * self.log_ratio)

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2 * self.log_ratio)

    def marginal_coeffs(self, t):
        return torch.ones_like(t), self.sigma(t)

    def log_mean_coeff(self, t):
        return torch.zeros_like(t)

    def log_snr(self, t):
        return -2 * (math.log(self.sigma_min) + t * self.log_ratio)

    def t_from_log_snr(self, lam):
        return (-lam / 2 - math.log(self.sigma_min)) / self.log_ratio

    @property
    def prior_std(self):
        return self.sigma_max

    def discrete_sigmas(self, num_scales: int, *, device=None, dtype=torch.float64) -> Tensor:
        """The SMLD ladder: ``num_scales`` geometric σ's from σ_min up to σ_max (Song & Ermon 2019)."""
        check_int("num_scales", num_scales, minimum=2)
        return torch.exp(torch.linspace(math.log(self.sigma_min), math.log(self.sigma_max), num_scales,
                                        device=device, dtype=dtype))

    def discretize(self, x, t, dt):
        """SMLD step: x_{i+1} = x_i + sqrt(σ(t)² − σ(t−dt)²) z (Song et al. 2021, eq. 43 in continuous t)."""
        prev = self.sigma((t - dt).clamp_min(0))
        return torch.zeros_like(x), torch.sqrt(self.sigma(t) ** 2 - prev**2)


class _LinearBetaSDE(SDE):
    """Shared parts of VP and sub-VP: β(t) = β_min + t(β_max − β_min), drift −½β(t)x, α(t) = exp(−½B(t))."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = check_positive("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if beta_max < beta_min:
            raise ValueError(f"beta_max must be >= beta_min, got beta_min={beta_min}, beta_max={beta_max}")

    def __repr__(self):
        return f"{type(self).__name__}(beta_min={self.beta_min}, beta_max={self.beta_max})"

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: Tensor) -> Tensor:
        """B(t) = ∫_0^t β(s) ds, so that α(t) = exp(−B(t)/2)."""
        return t * self.beta_min + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def drift(self, x, t):
        return -0.5 * append_dims(self.beta(t), x.ndim) * x

    def log_mean_coeff(self, t):
        return -0.5 * self.integrated_beta(t)

    @property
    def prior_std(self):
        return 1.0


class VPSDE(_LinearBetaSDE):
    """Variance-preserving SDE (Song et al. 2021, eq. 11; the continuous DDPM).

    β(t) = β_min + t(β_max − β_min), f = −½β(t)x, g = sqrt(β(t)); α(t) = exp(−¼t²(β_max−β_min) − ½tβ_min),
    σ(t) = sqrt(1 − α(t)²); prior N(0, I).
    """

    def diffusion(self, t):
        return torch.sqrt(self.beta(t))

    def marginal_coeffs(self, t):
        B = self.integrated_beta(t)
        return torch.exp(-0.5 * B), torch.sqrt(-torch.expm1(-B))

    def log_snr(self, t):
        return -torch.log(torch.expm1(self.integrated_beta(t)))

    def t_from_log_snr(self, lam):
        return _t_from_integrated_beta(torch.nn.functional.softplus(-lam), self.beta_min, self.beta_max)

    def transition_coeffs(self, t, s):
        log_a = self.log_mean_coeff(t) - self.log_mean_coeff(s)
        return torch.exp(log_a), -torch.expm1(2 * log_a)

    def discrete_betas(self, num_steps: int, *, device=None, dtype=torch.float64) -> Tensor:
        """The DDPM chain's β_i = β(t_i)/N at t_i = i/(N−1), i = 0..N−1 (Ho et al. 2020)."""
        check_int("num_steps", num_steps, minimum=2)
        t = torch.linspace(0, 1, num_steps, device=device, dtype=dtype)
        return self.beta(t) / num_steps

    def discretize(self, x, t, dt):
        """DDPM step: x_{i+1} = sqrt(1 − β_i) x_i + sqrt(β_i) z (Song et al. 2021, eq. 44).

        β_i = β(t)·dt, DDPM's β(t_i)/N, wherever that is a valid variance (β(t)·dt < 1: every step of a
        grid of ≥ 21 steps with the default β_max = 20, so such runs are the DDPM chain exactly). Where it
        is not, the DDPM chain does not exist (sqrt(1 − β_i) would be NaN) and the step uses its root
        instead: β_i = 1 − exp(−∫_{t−dt}^t β) of the exact transition (:meth:`transition_coeffs`), which
        β(t)·dt approximates to first order and which lies in (0, 1) for every dt > 0.
        """
        dt = torch.as_tensor(dt, dtype=t.dtype, device=t.device)
        ddpm = self.beta(t) * dt
        exact = -torch.expm1(-(self.integrated_beta(t) - self.integrated_beta(t - dt)))
        beta_i = torch.where(ddpm < 1, ddpm, exact)
        return append_dims(torch.sqrt(1 - beta_i) - 1, x.ndim) * x, torch.sqrt(beta_i)


class SubVPSDE(_LinearBetaSDE):
    """sub-VP SDE (Song et al. 2021, eq. 12): drift as VP, g(t)² = β(t)(1 − exp(−2β_min t − (β_max−β_min)t²)).

    α(t) as VP, σ(t) = 1 − α(t)² (the variance is bounded by the VP one); prior N(0, I).
    The discretisation is the default Euler–Maruyama one.
    """

    def diffusion(self, t):
        return torch.sqrt(self.beta(t) * -torch.expm1(-2 * self.integrated_beta(t)))

    def marginal_coeffs(self, t):
        B = self.integrated_beta(t)
        return torch.exp(-0.5 * B), -torch.expm1(-B)

    def log_snr(self, t):
        B = self.integrated_beta(t)
        return -B - 2 * torch.log(-torch.expm1(-B))

    def t_from_log_snr(self, lam):
        B = 2 * torch.asinh(0.5 * torch.exp(-lam / 2))
        return _t_from_integrated_beta(B, self.beta_min, self.beta_max)


class LinearSDE(SDE):
    """An SDE given by two scalar functions: dx = f(t) x dt + g(t) dw.

    ``f`` and ``g`` map a float tensor of times to a tensor of the same shape. The marginal follows from
    the moment equations dα/dt = f α and dσ²/dt = 2 f σ² + g² (Särkkä & Solin 2019, eq. 6.2):

        α(t) = exp(F(t)),  F(t) = ∫_0^t f,      σ(t)² = σ_0² α(t)² + ∫_0^t g(s)² exp(2(F(t) − F(s))) ds,

    computed by composite Gauss–Legendre quadrature in float64 (``panels`` panels of 8 nodes; exact to
    rounding for smooth f, g). ``std0`` is σ(0) (0: noise-free data at t = 0); ``prior_std`` defaults
    to σ(T).
    """

    _NODES = 8

    def __init__(self, f: Callable[[Tensor], Tensor], g: Callable[[Tensor], Tensor], *, T: float = 1.0,
                 std0: float = 0.0, prior_std: float | None = None, panels: int = 256):
        if not callable(f) or not callable(g):
            raise TypeError(f"f and g must be callables of a time tensor, got {type(f).__name__}, {type(g).__name__}")
        self.f, self.g = f, g
        self.T = check_positive("T", T)
        if not (isinstance(std0, (int, float)) and std0 >= 0):
            raise ValueError(f"std0 must be a non-negative number, got {std0!r}")
        self.std0 = float(std0)
        self.panels = check_int("panels", panels)
        self._prior_std = None if prior_std is None else check_positive("prior_std", prior_std)
        nodes, weights = np.polynomial.legendre.leggauss(self._NODES)
        self._gl = (torch.tensor(nodes), torch.tensor(weights))
        self._tables: dict[torch.device, tuple[Tensor, ...]] = {}
        self._table(torch.device("cpu"))  # evaluate f and g once now: errors surface at construction

    def __repr__(self):
        return f"LinearSDE(f={self.f!r}, g={self.g!r}, T={self.T})"

    def _call(self, fn, t: Tensor) -> Tensor:
        out = fn(t)
        return torch.as_tensor(out, dtype=t.dtype, device=t.device).expand_as(t)

    def _quad(self, fn, a: Tensor, b: Tensor) -> Tensor:
        """∫_a^b fn elementwise for tensors a, b of shape (N,), by 8-node Gauss–Legendre."""
        nodes, weights = (v.to(a.device) for v in self._gl)
        half, mid = (b - a) / 2, (b + a) / 2
        s = mid[:, None] + half[:, None] * nodes
        return half * (fn(s.reshape(-1)).reshape(s.shape) * weights).sum(1)

    def _table(self, device):
        if device not in self._tables:
            edges = torch.linspace(0, self.T, self.panels + 1, dtype=torch.float64, device=device)
            f = lambda s: self._call(self.f, s)  # noqa: E731
            F_edges = torch.cat([edges.new_zeros(1), torch.cumsum(self._quad(f, edges[:-1], edges[1:]), 0)])
            self._tables[device] = (edges, F_edges, None)
            I_edges = torch.cat([edges.new_zeros(1),
                                 torch.cumsum(self._quad(self._variance_integrand, edges[:-1], edges[1:]), 0)])
            self._tables[device] = (edges, F_edges, I_edges)
        return self._tables[device]

    def _panel(self, t: Tensor):
        edges = self._table(t.device)[0]
        k = torch.clamp((t / self.T * self.panels).floor().long(), 0, self.panels - 1)
        return k, edges[k]

    def _F(self, t: Tensor) -> Tensor:
        _, F_edges, _ = self._table(t.device)
        k, left = self._panel(t)
        return F_edges[k] + self._quad(lambda s: self._call(self.f, s), left, t)

    def _variance_integrand(self, s: Tensor) -> Tensor:
        return self._call(self.g, s) ** 2 * torch.exp(-2 * self._F(s))

    def log_mean_coeff(self, t):
        return self._F(t.to(torch.float64)).to(t.dtype)

    def marginal_coeffs(self, t):
        t64 = t.to(torch.float64)
        _, _, I_edges = self._table(t.device)
        k, left = self._panel(t64)
        F = self._F(t64)
        integral = I_edges[k] + self._quad(self._variance_integrand, left, t64)
        var = torch.exp(2 * F) * (self.std0**2 + integral)
        return torch.exp(F).to(t.dtype), torch.sqrt(var).to(t.dtype)

    def drift(self, x, t):
        return append_dims(self._call(self.f, t), x.ndim) * x

    def diffusion(self, t):
        return self._call(self.g, t)

    @property
    def prior_std(self):
        return self._prior_std if self._prior_std is not None else super().prior_std


#: The built-in SDEs by their config name (``sde.name``); the one name → SDE table of the library. A config's
#: SDE is built from it by :func:`scoresde.builders.build_sde`, a serialised one (class name) read back by
#: :func:`scoresde.serialize.sde_from_config`.
SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}
