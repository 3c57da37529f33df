"""The training data as a stream: which data set, which rows each step sees, and every random draw of a step.

Reproducibility rests on one rule: every random draw of step ``s`` (which rows, dequantisation noise, flips,
the loss's t and noise) comes from a generator seeded by ``(seed, s, chunk, stream)``
(:func:`make_generator`), where a chunk is one micro-batch of one process. The rows of a step are positions
of the concatenation of per-epoch permutations (:func:`batch_rows`), so they depend on the global row index
only: resuming a run, or splitting its batch over more processes or accumulation steps, sees the same rows.

Streams (the last argument of :func:`make_generator`): 0 batch preparation, 1 the loss, 2 epoch permutations,
3 sample grids, 5 evaluation; steps −1, −2 draw the toy train / test sets and −3 the initial weights.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from scoresde import config as C
from scoresde import data as D

__all__ = ["DataSource", "load_data", "make_generator", "batch_rows", "prepare_batch", "training_batch"]

_MASK = (1 << 63) - 1


@dataclass
class DataSource:
    """Training rows (a tensor ``(N, ...)`` in unit/raw space, or a torch Dataset) and how to read them.

    ``levels`` None: the rows are continuous and used as they are (model space). ``levels`` L: the rows are
    discrete values in [0, 1] (k/L) that each step dequantises, flips and scales as ``cfg.data`` says.
    ``train`` may be a tensor or a Dataset whose items are ``(x, label)`` pairs.
    """

    train: object
    test: Tensor | None
    shape: tuple  # shape of one sample
    levels: int | None  # discrete levels for dequantisation / bits per dim (None: continuous data)


def load_data(cfg: C.DataConfig, seed: int, *, test_images: int = 0) -> DataSource:
    """The training data named by ``cfg`` (toy sets are drawn once from a generator seeded by ``seed``).

    For torchvision sets the test split is loaded only when ``test_images`` > 0 (that many images, in memory).
    """
    if cfg.name in D.TOY_DATASETS:
        n = cfg.toy_size
        train = D.sample_toy(cfg.name, n, generator=make_generator(seed, -1, 0))
        test = D.sample_toy(cfg.name, max(n // 10, 1), generator=make_generator(seed, -2, 0))
        return DataSource(train, test, (2,), None)
    if cfg.name == "digits":
        return DataSource(D.load_digits("train"), D.load_digits("test"), (1, 8, 8), D.DIGITS_LEVELS)
    if cfg.name in D.IMAGE_DATASETS:
        kw = dict(download=cfg.download, image_size=cfg.image_size or None, center_crop=cfg.center_crop or None)
        train = D.image_dataset(cfg.name, cfg.root, split="train", **kw)
        test = None
        if test_images > 0:
            test_set = D.image_dataset(cfg.name, cfg.root, split="test", **kw)
            test = torch.stack([test_set[i][0] for i in range(min(test_images, len(test_set)))])
        return DataSource(train, test, tuple(train[0][0].shape), 256)
    raise C.ConfigError(f"unknown data.name {cfg.name!r}; choose a toy set {sorted(D.TOY_DATASETS)}, 'digits' "
                        f"or an image set {list(D.IMAGE_DATASETS)}")


def make_generator(seed: int, step: int, chunk: int, *, device="cpu", stream: int = 0) -> torch.Generator:
    """A generator seeded from (seed, step, chunk, stream) by a fixed integer hash (SplitMix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + (step + 3) * 0xBF58476D1CE4E5B9 + chunk * 0x94D049BB133111EB + stream) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return torch.Generator(device=device).manual_seed(z ^ (z >> 31))


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    return torch.randperm(n, generator=make_generator(seed, epoch, 0, stream=2))


def batch_rows(source, step: int, chunk: int, micro: int, chunks: int, seed: int) -> Tensor:
    """Rows of chunk ``chunk`` (of ``chunks`` per step) of step ``step``: positions
    ``[(step·chunks + chunk)·micro, +micro)`` of the concatenation of per-epoch permutations.

    A position only depends on the global row index, so the split of a step's batch into processes and
    micro-batches does not change which rows it sees. ``source``: a tensor ``(N, ...)`` or a Dataset of (x, label).
    """
    n = len(source)
    if n == 0:
        raise ValueError("the training data set is empty")
    start = (step * chunks + chunk) * micro
    positions = torch.arange(start, start + micro)
    epochs, offsets = positions // n, positions % n
    index = torch.stack([_epoch_permutation(n, seed, int(e))[o] for e, o in zip(epochs, offsets, strict=True)])
    if isinstance(source, Tensor):
        return source[index]
    return torch.stack([source[int(i)][0] for i in index])


def prepare_batch(rows: Tensor, cfg: C.DataConfig, levels: int | None, generator: torch.Generator) -> Tensor:
    """Unit-space rows → model space: dequantise (discrete data), flip (images), scale to [−1, 1] if centred.

    Continuous (toy) data are used as they are.
    """
    x = rows.float()
    if levels is None:
        return x
    if cfg.dequantize:
        x = D.dequantize(x, levels, generator=generator)
    if cfg.random_flip and x.ndim == 4:
        x = D.random_flip(x, generator=generator)
    return D.get_scaler(cfg.centered)(x)


def training_batch(data: DataSource, cfg: C.DataConfig, seed: int, step: int, chunk: int, micro: int, chunks: int,
                   device) -> tuple[Tensor, torch.Generator]:
    """``(x0, loss generator)`` of micro-batch ``chunk`` of step ``step``: its rows (:func:`batch_rows`) in model
    space on ``device`` (:func:`prepare_batch`, stream 0) and the generator of the loss's t and noise (stream 1)."""
    rows = batch_rows(data.train, step, chunk, micro, chunks, seed)
    x0 = prepare_batch(rows, cfg, data.levels, make_generator(seed, step, chunk)).to(device)
    return x0, make_generator(seed, step, chunk, device=device, stream=1)
