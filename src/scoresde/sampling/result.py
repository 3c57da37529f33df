"""The typed result every sampler returns."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class SampleResult:
    """Samples and their cost.

    Attributes:
        x: the final samples ``(B, ...)`` (for :func:`~scoresde.sampling.encode`: the latents z).
        nfe: the number of calls to ``score_fn`` actually made (one call evaluates the whole batch).
    """

    x: Tensor
    nfe: int
