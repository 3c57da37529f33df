"""Ancestral sampling of the reverse chain (Ho et al. 2020, Algorithm 2; Sohl-Dickstein et al. 2015, §2.3).

x_T ~ N(0, I); for t = T..1: x_{t−1} = μ_θ(x_t, t) + σ_t z, z ~ N(0, I), with no noise at the last step
(the decoder's mean is returned, as in DDPM).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scoresde._checks import check_generator, check_int
from scoresde.discrete.kernel import GaussianReverseKernel
from scoresde.progress import progress_bar
from scoresde.sampling.result import SamplerStep, step_callback

__all__ = ["sample_chain"]


def sample_chain(kernel: GaussianReverseKernel, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
                 x_T: Tensor | None = None, device=None, dtype=torch.float32,
                 callback: Callable[[SamplerStep], None] | None = None,
                 progress: bool = False) -> Tensor:
    """Draw samples ``shape`` = ``(B, ...)`` by running the reverse chain from x_T to x_0.

    Args:
        kernel: the reverse kernel p_θ(x_{t−1} | x_t).
        shape: output shape, batch first.
        generator: the only source of randomness.
        x_T: a given start (e.g. to compare two samplers from one latent); drawn from N(0, I) otherwise.
        callback: called as ``callback(step)`` after each step with a
            :class:`~scoresde.sampling.result.SamplerStep`: ``step.i`` counts the steps from 0, ``step.t`` is the
            index t − 1 of the new state x_{t−1} as a ``(B,)`` long tensor, ``step.x`` that state, ``step.x_mean``
            the kernel's mean and ``step.extra`` the kernel output (``extra.x0`` is the x̂_0 prediction). The
            old ``callback(i, x_i, out)`` (i the new state's index) still works, deprecated.
        progress: show a tqdm bar (see :mod:`scoresde.progress`).
    """
    shape = tuple(shape)
    if len(shape) < 2 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape must be (B, ...) of positive ints with at least 2 dims, got {shape}")
    check_generator(generator)
    if x_T is None:
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    elif tuple(x_T.shape) != shape:
        raise ValueError(f"x_T must have shape {shape}, got {tuple(x_T.shape)}")
    else:
        x = x_T
    T = check_int("T", kernel.chain.T)
    callback = step_callback(callback, lambda s: (T - 1 - s.i, s.x, s.extra), "(i, x_i, out)", "sample_chain")
    with progress_bar(T, "ancestral", progress) as bar:
        for k, idx in enumerate(range(T - 1, -1, -1)):
            i = torch.full((shape[0],), idx, dtype=torch.long, device=x.device)
            out = kernel(x, i)
            if idx > 0:
                z = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
                x = out.mean + torch.exp(0.5 * out.log_var) * z
            else:
                x = out.mean
            if callback is not None:
                callback(SamplerStep(i=k, t=i, x=x, x_mean=out.mean, nfe=k + 1, extra=out))
            bar.update(1)
    return x
