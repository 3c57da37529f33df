"""Image batches for the metrics: one convention, checked once.

Metrics take images as float tensors ``(B, C, H, W)`` with values in [0, 1] (``uint8`` 0..255 is accepted
and divided by 255). Data in model space [−1, 1] must be mapped with ``(x + 1) / 2`` first; the error says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

__all__ = ["check_images", "iter_image_batches"]


def check_images(images, *, name: str = "images") -> Tensor:
    """Return ``images`` as a floating ``(B, C, H, W)`` tensor in [0, 1], or raise a clear error."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (B, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise TypeError(f"{name} must be float in [0, 1] or uint8 in [0, 255], got dtype {images.dtype}")
    if images.numel() > 0:
        lo, hi = torch.aminmax(images.detach())
        lo, hi = float(lo), float(hi)  # one synchronisation per batch, not per step of a loop
        if not (0.0 <= lo and hi <= 1.0):
            hint = "; map data in [-1, 1] with (x + 1) / 2 and clamp to [0, 1]" if lo < 0 else "; clamp to [0, 1]"
            raise ValueError(f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]{hint}")
    return images


def _to_tensor(item) -> Tensor:
    if isinstance(item, Tensor):
        return item
    from torchvision.transforms.functional import pil_to_tensor  # PIL images from torchvision data sets

    return pil_to_tensor(item)


def _collate(items) -> Tensor:
    return torch.stack([_to_tensor(it[0] if isinstance(it, (tuple, list)) else it) for it in items])


def iter_image_batches(data, batch_size: int = 250) -> Iterator[Tensor]:
    """Yield ``(B, C, H, W)`` image batches in [0, 1] from a data set or an iterable of batches.

    ``data`` may be a map-style ``torch.utils.data.Dataset`` (a torchvision data set, ``ImageFolder``,
    a ``TensorDataset``) whose items are images or ``(image, label)`` pairs — PIL images or tensors —
    or any iterable of batches (tensors or ``(images, labels)`` tuples, e.g. a ``DataLoader``).
    """
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        loader: Iterable = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False,
                                                       collate_fn=_collate)
    elif isinstance(data, Iterable):
        loader = data
    else:
        raise TypeError(f"data must be a Dataset or an iterable of image batches, got {type(data).__name__}")
    for batch in loader:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        yield check_images(x, name="data batch")
