"""The training data as a stream: which data set, which rows each step sees, and every random draw of a step.

Reproducibility rests on one rule: every random draw of step ``s`` (which rows, dequantisation noise, flips,
the loss's t and noise) comes from a generator seeded by ``(seed, s, chunk, stream)``
(:func:`scoresde.seeding.make_generator`), where a chunk is one micro-batch of one process. The rows of a
step are positions of the concatenation of per-epoch permutations (:func:`batch_rows`), so they depend on
the global row index only: resuming a run, or splitting its batch over more processes or accumulation steps,
sees the same rows.

The data of a run come from ``cfg.data`` (:func:`load_data`) or from the user (:func:`as_data_source`:
a tensor of rows, a Dataset, or a :class:`DataSource`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from scoresde import config as C
from scoresde import data as D
from scoresde.seeding import make_generator

__all__ = ["DataSource", "UserData", "load_data", "as_data_source", "make_generator", "batch_rows", "prepare_batch",
           "training_batch"]


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


#: What ``train(data=...)`` accepts: rows ``(N, ...)``, a Dataset (or any indexable) of tensors or
#: ``(tensor, label)`` tuples, or a :class:`DataSource`.
UserData = Tensor | Dataset | Sequence | DataSource


class Items:
    """An indexable of tensors (or of (tensor, ...) tuples) seen as items whose first entry is the row."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        return item if isinstance(item, (tuple, list)) else (item,)


def as_data_source(data: UserData) -> DataSource:
    """``train(data=...)`` as a :class:`DataSource`: a tensor or Dataset gives continuous rows used as they are
    (``levels`` None, no test split); a DataSource is kept (its Dataset rows read through :class:`Items`)."""
    if isinstance(data, DataSource):
        return data if isinstance(data.train, Tensor) else DataSource(Items(data.train), data.test, data.shape,
                                                                      data.levels)
    if isinstance(data, Tensor):
        if data.ndim < 2 or data.shape[0] == 0:
            raise ValueError(f"train: data must be a tensor of rows (N, ...) with N >= 1 and one dimension or more "
                             f"per row, got shape {tuple(data.shape)}")
        if not data.is_floating_point():
            raise TypeError(f"train: a data tensor holds rows in model space (floating point), got {data.dtype}; "
                            "pass discrete data as DataSource(rows / levels, None, shape, levels)")
        return DataSource(data, None, tuple(data.shape[1:]), None)
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(f"train: data must be a tensor (N, ...), a torch Dataset (or any object with len() and "
                        f"integer indexing) of tensors or (tensor, label) tuples, or a DataSource; got "
                        f"{type(data).__name__}")
    if len(data) == 0:
        raise ValueError("train: data is empty")
    items = Items(data)
    first = items[0][0]
    if not isinstance(first, Tensor):
        raise TypeError(f"train: the items of data must be tensors or (tensor, label) tuples, got item 0 of type "
                        f"{type(first).__name__}")
    return DataSource(items, None, tuple(first.shape), None)


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
