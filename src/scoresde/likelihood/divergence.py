"""Divergence estimators for the instantaneous change of variables (Song et al. 2021, App. D.2).

∇·F(x) = tr ∂F/∂x, per sample, of a vector field F = ``out`` computed from ``x`` with autograd enabled:

* :func:`exact_divergence`: the trace from D vector–Jacobian products over the standard basis (low D only);
* :func:`hutchinson_divergence`: the Hutchinson–Skilling estimate E_v[vᵀ (∂F/∂x) v] (Hutchinson 1989;
  Skilling 1989; Grathwohl et al. 2019) with probes from :func:`draw_probes`, Gaussian or Rademacher.

:func:`scoresde.likelihood.log_likelihood` uses them on the probability-flow drift.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde._checks import batch_dim, check_choice, check_generator, check_int

__all__ = ["draw_probes", "hutchinson_divergence", "exact_divergence", "PROBE_KINDS", "DIVERGENCES"]

PROBE_KINDS = ("rademacher", "gaussian")
DIVERGENCES = PROBE_KINDS + ("exact",)
_EXACT_CHUNK = 256  # basis vectors per batched backward pass in exact_divergence (bounds memory)


def draw_probes(kind: str, shape, probes: int, *, generator: torch.Generator | None = None, device=None,
                dtype=torch.float32) -> Tensor:
    """``probes`` Hutchinson probe vectors of shape ``shape``, stacked: ``(probes, *shape)``.

    ``"gaussian"``: v ~ N(0, I); ``"rademacher"``: v uniform on {−1, +1}. Both have E[v vᵀ] = I, so
    E[vᵀ A v] = tr A; Rademacher has the smaller variance 2 Σ_{i≠j} A_ij² (vs. 2‖A‖_F² for Gaussian).
    """
    check_choice("probe kind", kind, PROBE_KINDS)
    check_int("probes", probes)
    check_generator(generator)
    gen_device = generator.device if generator is not None else device
    full = (probes, *shape)
    if kind == "gaussian":
        v = torch.randn(full, generator=generator, device=gen_device, dtype=dtype)
    else:
        v = torch.randint(0, 2, full, generator=generator, device=gen_device).to(dtype) * 2 - 1
    return v.to(device)


def hutchinson_divergence(out: Tensor, x: Tensor, probes: Tensor) -> Tensor:
    """Hutchinson–Skilling estimate of ∇·F(x) per sample, ``(B,)``, averaged over the probes.

    ``out = F(x)`` must have been computed from ``x`` with autograd enabled; ``probes`` is
    ``(P, *x.shape)``. All P vector–Jacobian products vᵀ ∂F/∂x run in one batched backward pass.
    """
    (vjp,) = torch.autograd.grad(out, x, grad_outputs=probes, is_grads_batched=True, retain_graph=True)
    P, B = probes.shape[0], x.shape[0]
    return (vjp * probes).reshape(P, B, -1).sum(-1).mean(0)


def exact_divergence(out: Tensor, x: Tensor) -> Tensor:
    """Exact ∇·F(x) = tr ∂F/∂x per sample, ``(B,)``: one vector–Jacobian product per data dimension.

    The D products run as batched backward passes over the standard basis (chunks of 256), so the cost
    is about D backward passes: meant for low-dimensional data (toy problems, tests, reference values).
    """
    B, D = x.shape[0], batch_dim(x)
    total = x.new_zeros(B)
    eye = torch.eye(D, device=x.device, dtype=x.dtype)
    for start in range(0, D, _EXACT_CHUNK):
        rows = eye[start:start + _EXACT_CHUNK]  # (C, D): basis vectors e_i, i in the chunk
        C = rows.shape[0]
        basis = rows[:, None, :].expand(C, B, D).reshape(C, *x.shape)
        (vjp,) = torch.autograd.grad(out, x, grad_outputs=basis, is_grads_batched=True, retain_graph=True)
        # e_iᵀ (∂F/∂x) e_i is the i-th entry of the i-th product: the diagonal of the Jacobian.
        total = total + (vjp.reshape(C, B, D) * rows[:, None, :]).sum((0, 2))
    return total
