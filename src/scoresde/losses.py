"""Score-matching losses. Every loss takes any ``score_fn(x, t)`` and returns per-sample values ``(B,)``;
the trainer reduces them.

Notation: x_t = α(t) x_0 + σ(t) z with z ~ N(0, I), so the conditional score is
∇ log p_0t(x_t | x_0) = −z/σ(t).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scoresde._checks import (
    CheckedScore,
    append_dims,
    batch_sum,
    check_choice,
    check_eps,
    check_generator,
    check_int,
    check_tensor,
    check_time,
)
from scoresde.sde import SDE, ScoreFn

__all__ = ["dsm_loss", "ssm_loss", "smld_loss", "ddpm_loss", "sample_time", "WEIGHTINGS", "classifier_loss"]

Weighting = str | Callable[[SDE, Tensor], Tensor]

#: Named weightings λ(t) of the continuous-time objective (Song et al. 2021, eq. 7).
WEIGHTINGS: dict[str, Callable[[SDE, Tensor], Tensor]] = {
    "sigma2": lambda sde, t: sde.marginal_coeffs(t)[1] ** 2,  # λ = σ², the Score SDE default
    "likelihood": lambda sde, t: sde.g2(t),  # λ = g², Song et al. 2021b (ScoreFlow), Theorem 1
    "none": lambda sde, t: torch.ones_like(t),
}


def _weighting(weighting: Weighting) -> Callable[[SDE, Tensor], Tensor]:
    if callable(weighting):
        return weighting
    check_choice("weighting", weighting, WEIGHTINGS)
    return WEIGHTINGS[weighting]


def sample_time(sde: SDE, batch: int, *, eps: float = 1e-5, importance_sampling: bool = False,
                generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """Draw training times in [eps, T] and the importance weights that keep estimates unbiased.

    Uniform: t ~ U[eps, T], weight 1. Importance sampling (Song et al. 2021b, Sec. 5.1): t has density
    q(t) ∝ g(t)²/σ(t)². For any linear SDE dσ²/dt = 2fσ² + g² gives g²/σ² = −d/dt log-SNR(t), so q is
    uniform in log-SNR: λ ~ U[λ(T), λ(eps)], t = t_from_log_snr(λ), with normaliser Z = λ(eps) − λ(T).
    The weight 1/((T − eps) q(t)) = Z σ(t)² / ((T − eps) g(t)²) makes E_q[w h(t)] = E_U[h(t)] for any h.
    Returns ``(t, weight)``, both ``(batch,)``.
    """
    eps = check_eps(eps, sde.T)
    check_generator(generator)
    u = torch.rand(batch, generator=generator, device=device, dtype=dtype)
    if not importance_sampling:
        return eps + (sde.T - eps) * u, torch.ones_like(u)
    ends = torch.tensor([eps, sde.T], device=device, dtype=torch.float64)
    lam_eps, lam_T = sde.log_snr(ends).unbind()
    lam = lam_T + (lam_eps - lam_T) * u.to(torch.float64)
    t = sde.t_from_log_snr(lam).clamp(eps, sde.T)
    std = sde.marginal_coeffs(t)[1]
    weight = (lam_eps - lam_T) * std**2 / ((sde.T - eps) * sde.g2(t))
    return t.to(dtype), weight.to(dtype)


def _perturb(sde: SDE, x0: Tensor, t: Tensor, noise: Tensor | None, generator) -> tuple[Tensor, Tensor, Tensor]:
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
    alpha, std = sde.marginal_coeffs(t)
    return append_dims(alpha, x0.ndim) * x0 + append_dims(std, x0.ndim) * noise, noise, std


def _times(sde, x0, t, eps, importance_sampling, generator):
    if t is None:
        return sample_time(sde, x0.shape[0], eps=eps, importance_sampling=importance_sampling,
                           generator=generator, device=x0.device, dtype=x0.dtype)
    check_time(t, sde.T, batch=x0.shape[0])
    return t, torch.ones_like(t)


def dsm_loss(score_fn: ScoreFn, sde: SDE, x0: Tensor, *, weighting: Weighting = "sigma2",
             importance_sampling: bool = False, eps: float = 1e-5, generator: torch.Generator | None = None,
             t: Tensor | None = None, noise: Tensor | None = None) -> Tensor:
    """Continuous-time denoising score matching, per sample (Song et al. 2021, eq. 7):

        ℓ(x_0) = ½ λ(t) ‖s(x_t, t) − ∇ log p_0t(x_t | x_0)‖² = ½ (λ(t)/σ(t)²) ‖σ(t) s(x_t, t) + z‖²,

    with t ~ U[eps, T] (or importance-sampled and reweighted, see :func:`sample_time`) so that its mean
    estimates the time-average (1/(T − eps)) ∫ λ(t) E‖…‖²/2 dt in both cases.

    ``weighting``: ``"sigma2"`` (λ = σ², the Score SDE default), ``"likelihood"`` (λ = g², which makes
    (T − eps)·E[ℓ] the score-dependent part of the ScoreFlow bound, Song et al. 2021b, Theorem 2), ``"none"``
    or a callable ``(sde, t) -> (B,)``. ``importance_sampling`` draws t ∝ g²/σ² (the variance-reduction of
    ScoreFlow Sec. 5.1; meant for likelihood weighting, valid for any). ``t`` and ``noise`` may be given to
    fix the randomness (then no importance weight is applied). Every ``score_fn`` result must have the
    shape of x_t exactly and be finite (checked on CPU).
    """
    check_tensor("x0", x0, min_ndim=1, nonempty=True)
    check_generator(generator)
    t, weight = _times(sde, x0, t, eps, importance_sampling, generator)
    xt, z, std = _perturb(sde, x0, t, noise, generator)
    score = CheckedScore(score_fn)(xt, t)
    lam = _weighting(weighting)(sde, t)
    residual = append_dims(std, x0.ndim) * score + z
    return 0.5 * weight * lam / std**2 * batch_sum(residual**2)


def _projections(shape, n: int, kind: str, generator, like: Tensor) -> Tensor:
    v = torch.randn((n, *shape), generator=generator, device=like.device, dtype=like.dtype)
    return v if kind == "gaussian" else torch.sign(v)  # sign of a Gaussian is a Rademacher variable


def ssm_loss(score_fn: ScoreFn, sde: SDE, x0: Tensor, *, projections: int = 1, distribution: str = "gaussian",
             variance_reduction: bool = False, weighting: Weighting = "sigma2", eps: float = 1e-5,
             generator: torch.Generator | None = None, t: Tensor | None = None,
             noise: Tensor | None = None) -> Tensor:
    """Sliced score matching on perturbed data, per sample (Song, Garg, Shi & Ermon 2019, eq. 7):

        ℓ = λ(t) · mean_v [ vᵀ ∇_x(vᵀ s(x_t, t)) + ½ (vᵀ s(x_t, t))² ],

    with ``projections`` directions v per sample, Gaussian or Rademacher. ``variance_reduction`` replaces
    ½(vᵀs)² by its expectation ½‖s‖² (SSM-VR, eq. 8). In expectation over z,
    E[dsm_loss] = E[ssm_loss] + ½ D E[λ(t)/σ(t)²] (Vincent 2011), so both have the same minimiser.
    The Jacobian-vector products use autograd with ``create_graph=True``, so the loss is trainable.
    """
    check_tensor("x0", x0, min_ndim=1, nonempty=True)
    check_generator(generator)
    check_int("projections", projections)
    check_choice("distribution", distribution, ("gaussian", "rademacher"))
    t, weight = _times(sde, x0, t, eps, False, generator)
    xt, _, _ = _perturb(sde, x0, t, noise, generator)
    with torch.enable_grad():
        xt = xt.detach().requires_grad_(True)
        score = CheckedScore(score_fn)(xt, t)
        vs = _projections(x0.shape, projections, distribution, generator, x0)
        total = torch.zeros_like(t)
        for v in vs:
            sv = batch_sum(v * score)
            (jvp,) = torch.autograd.grad(sv.sum(), xt, create_graph=True)
            total = total + batch_sum(v * jvp) + (0 if variance_reduction else 0.5 * sv**2)
        total = total / projections
        if variance_reduction:
            total = total + 0.5 * batch_sum(score**2)
    return weight * _weighting(weighting)(sde, t) * total


def smld_loss(score_fn: ScoreFn, sde: SDE, x0: Tensor, *, num_scales: int = 10, eps: float = 0.0,
              generator: torch.Generator | None = None) -> Tensor:
    """NCSN's denoising score matching over a discrete noise ladder, per sample (Song & Ermon 2019, eqs. 5–6):

        ℓ = λ(σ_i) · ½ ‖s(x̃, σ_i) + (x̃ − x)/σ_i²‖² = ½ ‖σ_i s + z‖²,   λ(σ) = σ²,

    with i uniform over ``num_scales`` levels at times t_i = linspace(eps, T, num_scales); for the VE SDE these
    are the geometric σ ladder from σ_min to σ_max. The network is conditioned through t_i.
    """
    check_tensor("x0", x0, min_ndim=1, nonempty=True)
    check_generator(generator)
    check_int("num_scales", num_scales, minimum=2)
    if not (0 <= eps < sde.T):
        raise ValueError(f"eps must lie in [0, T={sde.T}), got {eps!r}")
    ladder = torch.linspace(eps, sde.T, num_scales, device=x0.device, dtype=x0.dtype)
    if float(sde.marginal_coeffs(ladder[:1])[1]) <= 0:
        raise ValueError(f"smld_loss needs σ(t) > 0 on its ladder; σ({eps}) = 0 for {sde!r}: pass eps > 0")
    idx = torch.randint(num_scales, (x0.shape[0],), generator=generator, device=x0.device)
    t = ladder[idx]
    return dsm_loss(score_fn, sde, x0, weighting="sigma2", t=t, generator=generator)


def ddpm_loss(score_fn: ScoreFn, sde: SDE, x0: Tensor, *, num_steps: int = 1000,
              generator: torch.Generator | None = None) -> Tensor:
    """DDPM's ε-prediction loss L_simple, per sample (Ho et al. 2020, eq. 14):

        ℓ = ‖ε − ε_θ(x_i, i)‖²,  ε_θ = −σ(t_i) s(x_i, t_i),

    with i uniform in {1..N} at t_i = i/N · T (the VP SDE's discretisation of the chain).
    Equivalent to 2·dsm_loss with λ = σ² at those times.
    """
    check_tensor("x0", x0, min_ndim=1, nonempty=True)
    check_generator(generator)
    check_int("num_steps", num_steps)
    i = torch.randint(1, num_steps + 1, (x0.shape[0],), generator=generator, device=x0.device)
    t = i.to(x0.dtype) * (sde.T / num_steps)
    return 2 * dsm_loss(score_fn, sde, x0, weighting="sigma2", t=t, generator=generator)


def classifier_loss(classifier: Callable[[Tensor, Tensor], Tensor], sde: SDE, x0: Tensor, labels: Tensor, *,
                    eps: float = 1e-5, generator: torch.Generator | None = None,
                    importance_sampling: bool = False) -> Tensor:
    """Cross-entropy of a noise-conditional classifier on perturbed data, per sample (Song et al. 2021, App. I):

        ℓ(x_0, y) = −log softmax(classifier(x_t, t))_y,   x_t = α(t) x_0 + σ(t) z,  t ~ U[eps, T],

    so that classifier(·, t) learns p_t(y | x_t) at every noise level, as guidance needs. ``classifier(x, t)``
    returns logits ``(B, K)``; ``labels`` are integers ``(B,)`` in ``[0, K)``. ``importance_sampling`` draws t
    as :func:`sample_time` does and reweights, so the mean still estimates the uniform time-average.
    """
    check_tensor("x0", x0, min_ndim=1, nonempty=True)
    check_generator(generator)
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.ndim != 1 \
            or labels.shape[0] != x0.shape[0]:
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(f"labels must be an integer tensor of shape ({x0.shape[0]},), got {got}")
    t, weight = _times(sde, x0, None, eps, importance_sampling, generator)
    xt, _, _ = _perturb(sde, x0, t, None, generator)
    logits = classifier(xt, t)
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != x0.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"classifier must return logits of shape ({x0.shape[0]}, K), got {got}")
    k = logits.shape[1]
    if labels.device.type == "cpu" and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"labels must lie in [0, {k}) — the classifier returns {k} classes — got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return weight * torch.nn.functional.cross_entropy(logits, labels.to(logits.device), reduction="none")
