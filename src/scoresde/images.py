"""Pictures of samples: image grids (enlarged so that 8×8 digits are readable) and scatter plots of 2-D points.

:func:`save_image_grid` writes one grid, or several side by side (e.g. two samplers next to real data);
:func:`scatter_png` a scatter plot of 2-D points (optional matplotlib); :func:`save_samples` draws the
samples a config asks for and saves them with one of the two (what the trainer does every
``training.sample_every`` steps).
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor, nn

from scoresde import config as C
from scoresde import data as D
from scoresde.builders import draw_samples
from scoresde.seeding import make_generator

__all__ = ["MIN_SIDE", "save_image_grid", "titles_drawable", "scatter_png", "save_samples"]

#: Images smaller than this many pixels a side are enlarged (nearest neighbour) in saved grids.
MIN_SIDE = 32


def save_image_grid(images: Tensor | list, path: str, *, upscale: int | None = None,
                    titles: list[str] | None = None, nrow: int | None = None) -> str:
    """Save images ``(B, C, H, W)`` in [0, 1] as one square grid, or a list of such batches as grids side by
    side separated by a white gap, and return ``path``.

    ``upscale``: integer nearest-neighbour enlargement; None enlarges until each image is at least
    :data:`MIN_SIDE` pixels a side (8×8 digits: 4×), so small images are readable.
    ``nrow``: images per row of every grid (default: square grids).
    ``titles``: one label per grid (e.g. the sampler and its number of score evaluations), written above it
    with matplotlib (the ``plot`` extra), at the grids' own pixel size; without matplotlib the same grids
    are saved unlabelled (:func:`titles_drawable` says which will happen).
    """
    from torchvision.utils import make_grid, save_image  # a core dependency; its import is slow

    panels = [images] if isinstance(images, Tensor) else list(images)
    if not panels or any(not isinstance(p, Tensor) or p.ndim != 4 for p in panels):
        raise ValueError("images must be a tensor (B, C, H, W) or a non-empty list of them, got "
                         f"{[tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__ for p in panels]}")
    if nrow is not None and (isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1):
        raise ValueError(f"nrow must be None or an integer >= 1, got {nrow!r}")
    if titles is not None and (isinstance(titles, str) or len(titles) != len(panels)
                               or not all(isinstance(t, str) for t in titles)):
        raise ValueError(f"titles must be a list of {len(panels)} string(s), one per grid, got {titles!r}")
    if upscale is None:
        upscale = max(1, math.ceil(MIN_SIDE / min(min(p.shape[-2:]) for p in panels)))
    grids = []
    for p in panels:
        p = torch.nn.functional.interpolate(p.detach().float().cpu().clamp(0, 1), scale_factor=upscale,
                                            mode="nearest")
        per_row = nrow if nrow is not None else max(int(math.sqrt(p.shape[0])), 1)
        grids.append(make_grid(p, nrow=per_row, padding=2, pad_value=0.5))
    height = max(g.shape[1] for g in grids)
    gap = torch.ones(grids[0].shape[0], height, 4 * upscale)
    row = []
    for g in grids:
        row += [torch.nn.functional.pad(g, (0, 0, 0, height - g.shape[1]), value=1.0), gap]
    if titles is not None and titles_drawable():
        return _save_titled(row[::2], titles, path)
    save_image(torch.cat(row[:-1], dim=2), path)
    return path


def titles_drawable() -> bool:
    """Whether :func:`save_image_grid` can write ``titles`` (matplotlib, the ``plot`` extra, is installed)."""
    try:
        import matplotlib.figure  # noqa: F401  (optional extra)
    except ImportError:
        return False
    return True


def _save_titled(grids: list, titles: list, path: str, dpi: int = 100) -> str:
    """The grids ``(C, H, W)`` side by side, each under its title, one grid pixel per figure pixel."""
    from matplotlib.figure import Figure  # no pyplot: no global backend is changed

    widths = [g.shape[2] for g in grids]
    height, gap, top = grids[0].shape[1], 16, 28  # pixels: between grids, and for the titles
    width = sum(widths) + gap * (len(grids) - 1)
    fig = Figure(figsize=(width / dpi, (height + top) / dpi), dpi=dpi)
    x = 0
    for g, title in zip(grids, titles, strict=True):
        ax = fig.add_axes((x / width, 0, g.shape[2] / width, height / (height + top)))
        image = g.permute(1, 2, 0).numpy()
        ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
        x += g.shape[2] + gap
    fig.savefig(path, dpi=dpi)
    return path


def scatter_png(x: Tensor, path: str) -> str | None:
    """Scatter plot of 2-D points ``(N, 2)`` (needs matplotlib, the ``plot`` extra); None without it."""
    try:
        from matplotlib.figure import Figure  # optional extra; no pyplot, so no global backend is changed
    except ImportError:
        return None
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    ax.scatter(x[:, 0], x[:, 1], s=2)
    ax.set_aspect("equal")
    fig.savefig(path, dpi=100)
    return path


def save_samples(model: nn.Module, sde, cfg: C.Config, data, step: int, device) -> str:
    """Sample ``cfg.sampling.num_samples`` points with ``model`` (the trainer passes the EMA weights) and save
    ``samples_<step>.png``: an image grid, or for 2-D data a scatter plot (and ``samples_<step>.pt``, which
    is the only file written without matplotlib). Returns the path written."""
    n = cfg.sampling.num_samples
    gen = make_generator(cfg.training.seed, step, 0, device=device, stream=3)
    x = draw_samples(model, sde, cfg.sampling, (n, *data.shape), generator=gen, device=device).x.cpu()
    stem = os.path.join(cfg.training.workdir, f"samples_{step:09d}")
    if data.levels is None:
        torch.save(x, stem + ".pt")
        return scatter_png(x, stem + ".png") or stem + ".pt"
    return save_image_grid(D.get_inverse_scaler(cfg.data.centered)(x), stem + ".png")
