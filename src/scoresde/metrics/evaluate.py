"""Sample quality of a generator: reference statistics of a data set, and FID / KID / IS of its samples.

A feature extractor is any callable ``images -> features (B, F)``; one that returns ``(features, logits)``
also enables the Inception Score. :class:`~scoresde.metrics.inception.InceptionV3Features` is the standard
one (FID/KID/IS as papers report them); a tiny stand-in network tests the same path without a download.
Samples stream from a ``sampler(n, generator) -> images`` straight into the statistics, batch by batch.

FID depends on the number of samples (the estimate is biased upwards, roughly ∝ 1/n): FID at 1k and at
50k samples are not comparable, so every result states ``num_samples``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from scoresde._checks import check_int
from scoresde.metrics.images import check_images, iter_image_batches
from scoresde.metrics.inception import inception_score
from scoresde.metrics.kernel import kernel_inception_distance
from scoresde.metrics.stats import FeatureAccumulator, FeatureStats, load_stats, save_stats
from scoresde.progress import progress_bar

__all__ = ["EvalResult", "reference_stats", "evaluate_samples"]

Sampler = Callable[[int, torch.Generator], Tensor]
_METRICS = ("fid", "kid", "is")


@dataclass(frozen=True)
class EvalResult:
    """Scores of ``num_samples`` samples against reference statistics (``None``: metric not requested)."""

    num_samples: int
    fid: float | None
    kid_mean: float | None
    kid_std: float | None
    is_mean: float | None
    is_std: float | None
    dataset_id: str
    resolution: tuple[int, int] | None
    feature_id: str


def _features_and_logits(feature_fn, images: Tensor) -> tuple[Tensor, Tensor | None]:
    out = feature_fn(images)
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError(f"a feature extractor returns features (B, F) or (features, logits), got {len(out)} items")
        return out[0], out[1]
    return out, None


def _progress(total: int, desc: str, progress: bool | None):
    """A bar counting images: shown when ``progress`` (None: when stderr is a terminal) and bars are on."""
    return progress_bar(total, desc, sys.stderr.isatty() if progress is None else progress, unit="img")


def reference_stats(data: Iterable, feature_fn: Callable, *, dataset_id: str, cache_path: str | Path | None = None,
                    batch_size: int = 250,
                    keep_features: int = 5000, generator: torch.Generator | None = None,
                    progress: bool | None = None) -> FeatureStats:
    """Feature statistics of a data set, read from ``cache_path`` when present, else computed and written there.

    Args:
        data: a torchvision data set, an ``ImageFolder``, or any iterable of image batches (see
            :func:`~scoresde.metrics.images.iter_image_batches`); images in [0, 1] or uint8.
        feature_fn: ``images -> (B, F)`` or ``-> (features, logits)``; its ``feature_id`` attribute, if any,
            is recorded and checked.
        dataset_id: a name for the data (recorded in the file, checked on reading).
        cache_path: an ``.npz`` file; a file for another data set, resolution or feature extractor is refused.
        keep_features: how many raw feature rows to keep (uniformly at random, for KID); 0 keeps none.
        generator: draws that random subset (default: a local generator seeded with 0).
    """
    feature_id = getattr(feature_fn, "feature_id", "")
    if cache_path is not None and Path(cache_path).is_file():
        return load_stats(cache_path, dataset_id=dataset_id, feature_id=feature_id or None)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    acc = FeatureAccumulator(keep=keep_features, generator=generator)
    resolution = None
    total = len(data) if hasattr(data, "__len__") and isinstance(data, torch.utils.data.Dataset) else None
    with _progress(total, f"reference {dataset_id}", progress) as bar, torch.no_grad():
        for images in iter_image_batches(data, batch_size):
            if resolution is None:
                resolution = tuple(images.shape[-2:])
            elif tuple(images.shape[-2:]) != resolution:
                raise ValueError(f"data images change resolution from {resolution} to {tuple(images.shape[-2:])}")
            acc.update(_features_and_logits(feature_fn, images)[0])
            bar.update(images.shape[0])
    stats = acc.finalize(dataset_id=dataset_id, resolution=resolution, feature_id=feature_id)
    if cache_path is not None:
        save_stats(stats, cache_path)
    return stats


def evaluate_samples(sampler: Sampler, reference: FeatureStats, *, num_samples: int, feature_fn: Callable,
                     batch_size: int = 250, metrics: Iterable[str] = _METRICS, generator: torch.Generator | None = None,
                     seed: int = 0, kid_subsets: int = 100, kid_subset_size: int = 1000, is_splits: int = 10,
                     save_dir: str | Path | None = None, progress: bool | None = None) -> EvalResult:
    """FID / KID / IS of ``num_samples`` samples drawn batch by batch from ``sampler``.

    Args:
        sampler: ``sampler(n, generator) -> images (n, C, H, W)`` in [0, 1] (map [-1, 1] data first).
        reference: statistics of the data (:func:`reference_stats`); KID needs its kept ``features``.
        num_samples: how many samples (stated in the result; FID at different n is not comparable).
        feature_fn: the feature extractor used for ``reference`` (e.g. ``InceptionV3Features()``).
        metrics: any of ``"fid"``, ``"kid"``, ``"is"`` (IS needs a feature extractor returning logits).
        generator: passed to every ``sampler`` call; default ``torch.Generator().manual_seed(seed)``.
        save_dir: if given, also write every sample as a PNG there (off by default).
    """
    num_samples = check_int("num_samples", num_samples, minimum=2)
    batch_size = check_int("batch_size", batch_size)
    metrics = tuple(metrics)
    bad = [m for m in metrics if m not in _METRICS]
    if bad or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {list(_METRICS)}, got {list(metrics)}")
    if "kid" in metrics and (reference.features is None or reference.features.shape[0] < 2):
        raise ValueError("KID needs reference features: compute the reference with keep_features > 0")
    reference.check_compatible(feature_id=getattr(feature_fn, "feature_id", "") or None)
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    acc = FeatureAccumulator()
    kept: list[Tensor] = []  # raw sample features for KID (all of them: 50k x 2048 float32 is 400 MB)
    logits_all: list[Tensor] = []
    done = 0
    with _progress(num_samples, "samples", progress) as bar, torch.no_grad():
        while done < num_samples:
            n = min(batch_size, num_samples - done)
            images = check_images(sampler(n, generator), name="sampler output")
            if images.shape[0] != n:
                raise ValueError(f"sampler(n={n}, generator) returned {images.shape[0]} images")
            reference.check_compatible(resolution=tuple(images.shape[-2:]), where="reference statistics")
            if save_dir is not None:
                _save_pngs(images, save_dir, done)
            features, logits = _features_and_logits(feature_fn, images)
            acc.update(features)
            if "kid" in metrics:
                kept.append(features.detach().to(torch.float32))
            if "is" in metrics:
                if logits is None:
                    raise ValueError("the Inception Score needs a feature extractor that returns (features, logits)")
                logits_all.append(logits.detach().to(torch.float64))
            done += n
            bar.update(n)
    stats = acc.finalize(dataset_id="samples", resolution=reference.resolution, feature_id=reference.feature_id)
    fid = stats.frechet_distance(reference) if "fid" in metrics else None
    kid = None
    if "kid" in metrics:
        sample_features = torch.cat(kept)
        kid = kernel_inception_distance(sample_features, reference.features.to(sample_features.device),
                                        subsets=kid_subsets, subset_size=kid_subset_size, generator=generator)
    is_mean = is_std = None
    if "is" in metrics:
        is_mean, is_std = inception_score(torch.cat(logits_all), splits=min(is_splits, num_samples))
    return EvalResult(num_samples, fid, kid.mean if kid else None, kid.std if kid else None, is_mean, is_std,
                      reference.dataset_id, reference.resolution, reference.feature_id)


def _save_pngs(images: Tensor, save_dir, start: int) -> None:
    from torchvision.utils import save_image

    out = Path(save_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        save_image(img, out / f"{start + i:06d}.png")
