"""Every random draw of a run from one seed: counter-based generators and seeded network initialisation.

A run's randomness is addressed, not consumed: the draw of step ``s``, micro-batch ``chunk`` and purpose
``stream`` comes from :func:`make_generator` ``(seed, s, chunk, stream=...)``, a generator seeded by a fixed
integer hash of the four numbers. Nothing depends on how many draws came before, so a resumed run, or one
whose batch is split over more processes, sees the same numbers.

Streams: 0 batch preparation, 1 the loss, 2 epoch permutations, 3 sample grids, 5 evaluation; steps −1 and
−2 draw the toy train / test sets and −3 the initial weights (:func:`seeded_init`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["make_generator", "seeded_init", "INIT_STEP"]

_MASK = (1 << 63) - 1
#: The step whose generator draws a run's initial weights.
INIT_STEP = -3


def make_generator(seed: int, step: int, chunk: int, *, device="cpu", stream: int = 0) -> torch.Generator:
    """A generator seeded from (seed, step, chunk, stream) by a fixed integer hash (SplitMix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + (step + 3) * 0xBF58476D1CE4E5B9 + chunk * 0x94D049BB133111EB + stream) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return torch.Generator(device=device).manual_seed(z ^ (z >> 31))


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Modules built inside draw their initial weights from ``seed`` (its step :data:`INIT_STEP` generator).

    ``torch.nn`` layers draw from the global CPU generator; it is forked here (``fork_rng``) and restored
    on exit, so the caller's random state is left exactly as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(make_generator(seed, INIT_STEP, 0).get_state())
        yield
