"""Test-set negative log-likelihood and bits/dim over a DataLoader (Song et al. 2021b, Sec. 6: 5 repeats).

Each batch of discrete levels is dequantised (uniform noise, or a
:class:`~scoresde.likelihood.dequant.VariationalDequantizer`), scaled to model space, scored with
:func:`~scoresde.likelihood.ode.log_likelihood` (fresh probes every repeat) and converted with
:func:`~scoresde.likelihood.bpd.bits_per_dim`. Per-sample values are averaged over the repeats first;
the standard error is that of the test-set mean over samples (std of the per-sample averages / sqrt(N)).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde._checks import batch_dim, check_generator, check_int
from scoresde.likelihood.bpd import bits_per_dim, num_levels, to_model_space, uniform_dequantize
from scoresde.likelihood.ode import log_likelihood
from scoresde.progress import progress_bar
from scoresde.sde import SDE, ScoreFn

__all__ = ["NLLResult", "evaluate_nll"]


@dataclass(frozen=True)
class NLLResult:
    """``bpd`` and ``bpd_stderr``: bits/dim of the discrete data (an upper bound, see :mod:`scoresde.likelihood.bpd`);
    ``nll``: the same in nats per sample; ``nfe``: mean score evaluations per ODE solve; ``per_sample_bpd``:
    ``(N,)``, averaged over ``repeats``."""

    bpd: float
    bpd_stderr: float
    nll: float
    nfe: float
    num_samples: int
    repeats: int
    per_sample_bpd: Tensor


def _levels_of(batch) -> Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _check_dequantizer_output(u, log_q, x: Tensor) -> None:
    """u must be shaped like x and log q(u|x) be one value per sample: anything else would broadcast."""
    if not isinstance(u, Tensor) or u.shape != x.shape:
        got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
        raise ValueError(f"dequantizer must return u of the data's shape {tuple(x.shape)}, got {got}")
    if not isinstance(log_q, Tensor) or log_q.shape != (x.shape[0],):
        got = tuple(log_q.shape) if isinstance(log_q, Tensor) else type(log_q).__name__
        raise ValueError(f"dequantizer must return log_q of shape ({x.shape[0]},) (one per sample), got {got}")


def evaluate_nll(score_fn: ScoreFn, sde: SDE, data: Iterable, *, n_bits: int | None = None,
                 levels: int | None = None, scale=1.0, shift=0.0, repeats: int = 5, dequantizer=None,
                 divergence: str = "rademacher", probes: int = 1, eps: float = 1e-5, method: str = "dopri5",
                 rtol: float = 1e-5, atol: float = 1e-5, dtype=torch.float32, device=None,
                 max_batches: int | None = None, generator: torch.Generator | None = None,
                 progress: bool | None = None) -> NLLResult:
    """NLL and bits/dim of discrete test data under the probability-flow model.

    ``data`` yields tensors of levels 0..L−1 (or tuples whose first item is one), e.g. a DataLoader over
    ``transforms.PILToTensor()`` images; model space is y = scale·u + shift. ``device`` moves each batch
    there (none by default). ``progress``: a ``tqdm.auto`` bar counting the likelihood solves (default: only
    when stderr is a terminal); :func:`scoresde.set_progress` (``False``) or ``SCORESDE_PROGRESS=0`` turns it
    off whatever is passed here.
    """
    check_int("repeats", repeats)
    check_generator(generator)
    if dequantizer is not None and not callable(dequantizer):
        raise TypeError(f"dequantizer must be None or a callable x -> (u, log_q), got {type(dequantizer).__name__}")
    L = num_levels(n_bits, levels)
    show = sys.stderr.isatty() if progress is None else progress
    per_sample, nfes = [], []
    bar = progress_bar(None if max_batches is None else max_batches * repeats, "bpd", show)
    for i, batch in enumerate(data):
        if max_batches is not None and i >= max_batches:
            break
        x = _levels_of(batch)
        x = x.to(device) if device is not None else x
        if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] == 0:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"data must yield non-empty batches of levels (B, ...) with B >= 1; batch {i} is {got}")
        D = batch_dim(x)
        bpd = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for _ in range(repeats):
            if dequantizer is None:
                y, log_q = uniform_dequantize(x, levels=L, scale=scale, shift=shift, generator=generator,
                                              dtype=dtype), 0.0
            else:
                with torch.no_grad():
                    u, log_q = dequantizer(x, generator=generator)
                _check_dequantizer_output(u, log_q, x)
                y = to_model_space(x, u.to(dtype), levels=L, scale=scale, shift=shift)
            res = log_likelihood(score_fn, sde, y, divergence=divergence, probes=probes, eps=eps, method=method,
                                 rtol=rtol, atol=atol, generator=generator)
            bpd += bits_per_dim(res.logp - log_q, D, scale=scale, levels=L).to(torch.float64) / repeats
            nfes.append(res.nfe)
            bar.update(1)
        per_sample.append(bpd.cpu())
    bar.close()
    if not per_sample:
        raise ValueError("data yielded no batches")
    values = torch.cat(per_sample)
    n = values.numel()
    stderr = float(values.std()) / math.sqrt(n) if n > 1 else float("nan")
    mean = float(values.mean())
    return NLLResult(bpd=mean, bpd_stderr=stderr, nll=mean * D * math.log(2), nfe=sum(nfes) / len(nfes),
                     num_samples=n, repeats=repeats, per_sample_bpd=values)
