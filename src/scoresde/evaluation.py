"""Test-set likelihood of a run, as its config's ``eval`` section says: the trainer's periodic evaluation and
``scoresde likelihood``.

Discrete data go through the public :func:`scoresde.evaluate_nll` (bits/dim), continuous data through
:func:`scoresde.log_likelihood` (NLL in nats); :func:`baseline` gives the reference figure to compare with.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scoresde import config as C
from scoresde import data as D
from scoresde import evaluate_nll, log_likelihood  # the public names (they survive a move of their modules)
from scoresde.seeding import make_generator

__all__ = ["evaluate", "baseline"]


def evaluate(model: nn.Module, sde, cfg: C.Config, data, device, *, progress: bool = False) -> dict:
    """Test-set likelihood of ``data.test`` through the probability-flow ODE, with ``cfg.eval``'s solver settings.

    Discrete data (``data.levels`` L): bits/dim by :func:`scoresde.evaluate_nll` with one repeat (uniform
    dequantisation u = (k + U)/L, model space y = a·u + b from ``cfg.data.centered``), key ``test_bpd``.
    Continuous data: the NLL in nats by :func:`scoresde.log_likelihood`, key ``test_nll``. Also returns the
    standard error over the test points (``*_se``: sample std / sqrt(n); it includes the trace estimator's
    noise) and ``n``. The same dequantisation noise and probes are drawn at every evaluation of a run.
    """
    ec = cfg.eval
    test = data.test if ec.num_samples == 0 else data.test[: ec.num_samples]
    gen = make_generator(cfg.training.seed, 0, 0, device=device, stream=5)
    solver = dict(divergence=ec.divergence, probes=ec.probes, eps=ec.eps, rtol=ec.rtol, atol=ec.atol, generator=gen)
    if data.levels is None:
        values = torch.cat([-log_likelihood(model, sde, x.float().to(device), **solver).logp.detach().double().cpu()
                            for x in torch.split(test, ec.batch_size)])
        n = values.shape[0]
        se = float(values.std() / math.sqrt(n)) if n > 1 else math.nan
        return {"test_nll": float(values.mean()), "test_nll_se": se, "n": n}
    scale, shift = (2.0, -1.0) if cfg.data.centered else (1.0, 0.0)
    res = evaluate_nll(model, sde, torch.split(_levels(test, data.levels), ec.batch_size), levels=data.levels,
                       scale=scale, shift=shift, repeats=1, device=device, progress=progress, **solver)
    return {"test_bpd": res.bpd, "test_bpd_se": res.bpd_stderr, "n": res.num_samples}


def _levels(rows: Tensor, levels: int) -> Tensor:
    """Unit-space rows of discrete data → integer levels k = ⌊u·L⌋ (as :func:`scoresde.data.dequantize` reads them)."""
    return torch.floor(rows.double() * levels).clamp(0, levels - 1).long()


def baseline(cfg: C.Config, data) -> tuple[str, float] | None:
    """A reference value for :func:`evaluate`'s figure on this data set, with what it is, or None.

    Digits: the bits/dim of independent per-pixel histograms (:func:`scoresde.data.digits_histogram_bpd`),
    which a model must beat. The 2-D mixture: the exact NLL of its test points under the true density
    (:func:`scoresde.data.toy_mixture`), the best any model can reach.
    """
    if cfg.data.name == "digits":
        return "per-pixel histogram baseline (a model must beat it)", D.digits_histogram_bpd()
    if cfg.data.name == "mixture" and data.test is not None:
        test = data.test if cfg.eval.num_samples == 0 else data.test[: cfg.eval.num_samples]
        return "exact NLL of these test points under the true mixture (the best reachable)", \
            float(-D.toy_mixture().log_prob(test.double()).mean())
    return None
