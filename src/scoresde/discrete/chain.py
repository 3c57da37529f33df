"""The discrete forward chain of Sohl-Dickstein et al. (2015) and Ho et al. (2020).

    q(x_t | x_{t−1}) = N(sqrt(1 − β_t) x_{t−1}, β_t I),   t = 1..T,
    q(x_t | x_0)     = N(sqrt(ᾱ_t) x_0, (1 − ᾱ_t) I),     ᾱ_t = Π_{s≤t} (1 − β_s)       (Ho et al. 2020, eq. 4)
    q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I),  μ̃_t = c0_t x_0 + ct_t x_t,                 (Ho et al. 2020, eq. 6–7)
        c0_t = sqrt(ᾱ_{t−1}) β_t / (1 − ᾱ_t),  ct_t = sqrt(α_t)(1 − ᾱ_{t−1}) / (1 − ᾱ_t),
        β̃_t = (1 − ᾱ_{t−1}) β_t / (1 − ᾱ_t).

Index convention: code indices ``i`` run 0..T−1 and stand for the papers' t = i + 1, so ``alpha_bar[i]``
is ᾱ_{i+1}, ``q_sample(x0, i)`` draws x_{i+1}, and a network ``net(x, i)`` sees the index as DDPM's code
does. Tables are kept in float64 and cached per (device, dtype) so that no step copies from the host.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde._checks import append_dims, check_generator, check_int, check_tensor
from scoresde.discrete.schedules import check_betas

__all__ = ["DiscreteChain", "check_index"]


def check_index(i, T: int, *, batch: int | None = None, name: str = "i") -> Tensor:
    """Check a step index: an integer tensor ``(B,)`` with values in 0..T−1."""
    if not isinstance(i, Tensor) or i.is_floating_point() or i.is_complex() or i.dtype == torch.bool:
        got = i.dtype if isinstance(i, Tensor) else type(i).__name__
        raise TypeError(f"{name} must be an integer tensor of shape (B,) with step indices, got {got}")
    if i.ndim != 1 or (batch is not None and i.shape[0] != batch):
        raise ValueError(f"{name} must have shape ({batch if batch is not None else 'B'},), got {tuple(i.shape)}")
    if i.device.type == "cpu" and i.numel() and (int(i.min()) < 0 or int(i.max()) > T - 1):
        raise ValueError(f"{name} must lie in 0..{T - 1} (T={T}), got values in [{int(i.min())}, {int(i.max())}]")
    return i


class DiscreteChain:
    """Forward chain with schedule ``betas`` ``(T,)``; closed-form marginals and posteriors.

    Args:
        betas: β_1..β_T, each in (0, 1) (see :mod:`scoresde.discrete.schedules`).
        monotone: require a non-decreasing schedule (see :func:`check_betas`).
    """

    def __init__(self, betas: Tensor, *, monotone: bool = True):
        self.betas = check_betas(betas, monotone=monotone)
        self.T = self.betas.numel()
        b = self.betas
        self.alphas = 1 - b
        self.alpha_bar = torch.cumprod(self.alphas, 0)
        self.alpha_bar_prev = torch.cat([b.new_ones(1), self.alpha_bar[:-1]])
        self.posterior_var = (1 - self.alpha_bar_prev) * b / (1 - self.alpha_bar)  # β̃; β̃_1 = 0
        # log β̃ with β̃_1 replaced by β̃_2 (Nichol & Dhariwal 2021, §3.1): the t = 1 kernel is then a
        # proper Gaussian for the decoder and for the learned-range interpolation.
        tilde = self.posterior_var.clone()
        tilde[0] = tilde[1] if self.T > 1 else b[0]
        self.log_posterior_var_clipped = torch.log(tilde)
        self.coef_x0 = torch.sqrt(self.alpha_bar_prev) * b / (1 - self.alpha_bar)
        self.coef_xt = torch.sqrt(self.alphas) * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        self._cache: dict[tuple, dict[str, Tensor]] = {}

    @classmethod
    def from_sde(cls, sde, num_steps: int) -> DiscreteChain:
        """The chain that discretises a VP SDE: β_i = β(t_i)/N at t_i = i/(N−1) (Song et al. 2021, eq. 44).

        ``sde`` must provide ``discrete_betas(N)`` (as :class:`scoresde.sde.VPSDE` does).
        """
        check_int("num_steps", num_steps, minimum=2)
        make = getattr(sde, "discrete_betas", None)
        if not callable(make):
            raise TypeError(f"{type(sde).__name__} has no discrete_betas(N); a DiscreteChain needs a VP-type SDE")
        return cls(make(num_steps))

    def __repr__(self):
        return f"DiscreteChain(T={self.T}, beta_1={float(self.betas[0]):.3g}, beta_T={float(self.betas[-1]):.3g})"

    # ------------------------------------------------------------------ table lookup
    def coeff(self, name: str, i: Tensor, like: Tensor) -> Tensor:
        """Table ``name`` (e.g. ``"alpha_bar"``) at indices ``i``, as ``(B,)`` in ``like``'s device/dtype."""
        key = (like.device, like.dtype)
        tables = self._cache.get(key)
        if tables is None:
            names = ("betas", "alphas", "alpha_bar", "alpha_bar_prev", "posterior_var",
                     "log_posterior_var_clipped", "coef_x0", "coef_xt")
            tables = {n: getattr(self, n).to(device=like.device, dtype=like.dtype) for n in names}
            self._cache[key] = tables
        return tables[name][i.to(like.device)]

    def _bcast(self, name: str, i: Tensor, x: Tensor) -> Tensor:
        return append_dims(self.coeff(name, i, x), x.ndim)

    # ------------------------------------------------------------------ q(x_t | x_0)
    def marginal(self, x0: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        """Mean sqrt(ᾱ) x0 and std sqrt(1 − ᾱ) ``(B,)`` of q(x_{i+1} | x_0) (Ho et al. 2020, eq. 4)."""
        check_tensor("x0", x0)
        check_index(i, self.T, batch=x0.shape[0])
        ab = self.coeff("alpha_bar", i, x0)
        return append_dims(torch.sqrt(ab), x0.ndim) * x0, torch.sqrt(1 - ab)

    def q_sample(self, x0: Tensor, i: Tensor, noise: Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> Tensor:
        """Draw x_{i+1} = sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε with ε = ``noise`` or fresh N(0, I) noise."""
        mean, std = self.marginal(x0, i)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return mean + append_dims(std, x0.ndim) * noise

    def step(self, x_prev: Tensor, i: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """One forward step x_{i+1} ~ q(· | x_i) = N(sqrt(1 − β) x_i, β I)."""
        check_generator(generator)
        check_index(i, self.T, batch=x_prev.shape[0])
        beta = self._bcast("betas", i, x_prev)
        noise = torch.randn(x_prev.shape, generator=generator, device=x_prev.device, dtype=x_prev.dtype)
        return torch.sqrt(1 - beta) * x_prev + torch.sqrt(beta) * noise

    # ------------------------------------------------------------------ q(x_{t-1} | x_t, x_0)
    def posterior(self, x0: Tensor, x_t: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        """Mean μ̃ and variance β̃ ``(B,)`` of q(x_i | x_{i+1}, x_0) (Ho et al. 2020, eq. 6–7).

        At i = 0 (t = 1) the variance is exactly 0: x_0 is known.
        """
        check_index(i, self.T, batch=x0.shape[0])
        mean = self._bcast("coef_x0", i, x0) * x0 + self._bcast("coef_xt", i, x_t) * x_t
        return mean, self.coeff("posterior_var", i, x0)

    # ------------------------------------------------------------------ parameterisation identities
    def x0_from_eps(self, x_t: Tensor, i: Tensor, eps: Tensor) -> Tensor:
        """x̂_0 = (x_t − sqrt(1 − ᾱ) ε) / sqrt(ᾱ) (inverts eq. 4)."""
        ab = self._bcast("alpha_bar", i, x_t)
        return (x_t - torch.sqrt(1 - ab) * eps) / torch.sqrt(ab)

    def eps_from_x0(self, x_t: Tensor, i: Tensor, x0: Tensor) -> Tensor:
        """ε = (x_t − sqrt(ᾱ) x_0) / sqrt(1 − ᾱ)."""
        ab = self._bcast("alpha_bar", i, x_t)
        return (x_t - torch.sqrt(ab) * x0) / torch.sqrt(1 - ab)

    def eps_from_score(self, x_t: Tensor, i: Tensor, score: Tensor) -> Tensor:
        """ε = −sqrt(1 − ᾱ) ∇ log q(x_t) (Tweedie; Song et al. 2021, eq. 44 with σ² = 1 − ᾱ)."""
        return -torch.sqrt(1 - self._bcast("alpha_bar", i, x_t)) * score

    def mean_from_eps(self, x_t: Tensor, i: Tensor, eps: Tensor) -> Tensor:
        """μ = (x_t − β/sqrt(1 − ᾱ) ε) / sqrt(α) (Ho et al. 2020, eq. 11)."""
        beta, ab = self._bcast("betas", i, x_t), self._bcast("alpha_bar", i, x_t)
        return (x_t - beta / torch.sqrt(1 - ab) * eps) / torch.sqrt(1 - beta)
