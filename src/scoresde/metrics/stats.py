"""Feature statistics (mean, covariance, count) of a data set, accumulated in batches and cached on disk.

A :class:`FeatureStats` holds the Gaussian summary that the Fréchet distance needs, plus what identifies it:
the data set, the image resolution and the feature extractor. A cached file for another data set,
resolution or feature extractor is refused with a clear error rather than silently compared. It may also
keep a uniform random subset of the raw features, which the kernel (KID) estimate needs.

Moments are merged batch by batch with the parallel update of Chan, Golub & LeVeque (1979) in float64,
so a long stream loses no precision to the catastrophic cancellation of ``E[xxᵀ] − μμᵀ``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scoresde.metrics.frechet import frechet_distance

__all__ = ["FeatureStats", "FeatureAccumulator", "save_stats", "load_stats", "feature_stats"]

_FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Gaussian summary of a feature set.

    Attributes:
        mean: ``(F,)`` float64; cov: ``(F, F)`` float64 unbiased covariance (divided by n − 1).
        n: number of images behind the statistics.
        dataset_id: free-form name of the data (e.g. ``"cifar10-train"``); resolution: ``(H, W)`` of the images.
        feature_id: name of the feature extractor (e.g. ``"inception-v3-compat/pool3"``).
        features: optional ``(k, F)`` uniform random subset of the raw features (for KID), or ``None``.
    """

    mean: Tensor
    cov: Tensor
    n: int
    dataset_id: str = ""
    resolution: tuple[int, int] | None = None
    feature_id: str = ""
    features: Tensor | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def frechet_distance(self, other: FeatureStats) -> float:
        """Squared Fréchet distance between the two Gaussian summaries (FID when the features are Inception's)."""
        if other.dim != self.dim:
            raise ValueError(f"feature dimensions differ: {self.dim} vs {other.dim}")
        return frechet_distance(self.mean, self.cov, other.mean, other.cov)

    def check_compatible(self, *, dataset_id: str | None = None, resolution=None, feature_id: str | None = None,
                         where: str = "reference statistics") -> None:
        """Raise ValueError if these statistics are for another data set, resolution or feature extractor."""
        if dataset_id is not None and dataset_id != self.dataset_id:
            raise ValueError(f"{where} are for data set {self.dataset_id!r}, not {dataset_id!r}")
        if resolution is not None and self.resolution is not None and tuple(resolution) != tuple(self.resolution):
            raise ValueError(f"{where} are for resolution {tuple(self.resolution)}, but the images are "
                             f"{tuple(resolution)}; recompute them at this resolution")
        if feature_id and self.feature_id and feature_id != self.feature_id:
            raise ValueError(f"{where} were computed with feature extractor {self.feature_id!r}, not {feature_id!r}")


class FeatureAccumulator:
    """Streaming mean/covariance of ``(B, F)`` feature batches, with an optional uniform reservoir of rows.

    Args:
        keep: how many raw feature rows to keep (a uniform random subset without replacement, by the
            random-key method: each row draws a key from ``generator`` and the ``keep`` largest keys stay).
        generator: the source of those keys.
    """

    def __init__(self, *, keep: int = 0, generator: torch.Generator | None = None):
        self.keep, self.generator = int(keep), generator
        self.n = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None
        self._kept: Tensor | None = None
        self._keys: Tensor | None = None

    def update(self, features: Tensor) -> None:
        if not isinstance(features, Tensor) or features.ndim != 2:
            got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(f"a feature extractor must return a (B, F) tensor, got {got}")
        if self.mean is not None and features.shape[1] != self.mean.shape[0]:
            raise ValueError(f"feature dimension changed from {self.mean.shape[0]} to {features.shape[1]}")
        f = features.detach().to(torch.float64)
        nb = f.shape[0]
        if nb == 0:
            return
        mean_b = f.mean(0)
        centred = f - mean_b
        m2_b = centred.T @ centred
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mean_b, m2_b
        else:  # Chan et al. (1979) pairwise update
            n = self.n + nb
            delta = mean_b - self.mean
            self.mean = self.mean + delta * (nb / n)
            self.m2 = self.m2 + m2_b + torch.outer(delta, delta) * (self.n * nb / n)
            self.n = n
        if self.keep > 0:
            self._reservoir(features.detach())

    def _reservoir(self, rows: Tensor) -> None:
        gen_device = self.generator.device if self.generator is not None else rows.device
        keys = torch.rand(rows.shape[0], generator=self.generator, device=gen_device, dtype=torch.float64)
        keys = keys.to(rows.device)
        if self._kept is not None:
            rows, keys = torch.cat([self._kept, rows]), torch.cat([self._keys, keys])
        if rows.shape[0] > self.keep:
            top = torch.topk(keys, self.keep).indices
            rows, keys = rows[top], keys[top]
        self._kept, self._keys = rows.to(torch.float32), keys

    def finalize(self, *, dataset_id: str = "", resolution=None, feature_id: str = "") -> FeatureStats:
        if self.n < 2:
            raise ValueError(f"a covariance estimate needs at least 2 samples, got {self.n}; "
                             "for an unbiased full-rank estimate use more samples than feature dimensions")
        res = None if resolution is None else tuple(int(r) for r in resolution)
        return FeatureStats(self.mean, self.m2 / (self.n - 1), self.n, dataset_id, res, feature_id, self._kept)


def feature_stats(features: Tensor, **ids) -> FeatureStats:
    """Statistics of one ``(N, F)`` feature tensor (keyword ``ids``: dataset_id, resolution, feature_id)."""
    acc = FeatureAccumulator()
    acc.update(features)
    return acc.finalize(**ids)


def save_stats(stats: FeatureStats, path) -> Path:
    """Write ``stats`` to an ``.npz`` file atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "format_version": np.array(_FORMAT_VERSION),
        "mean": stats.mean.cpu().numpy(),
        "cov": stats.cov.cpu().numpy(),
        "n": np.array(stats.n),
        "dataset_id": np.array(stats.dataset_id),
        "resolution": np.array(stats.resolution if stats.resolution is not None else (-1, -1)),
        "feature_id": np.array(stats.feature_id),
    }
    if stats.features is not None:
        arrays["features"] = stats.features.cpu().numpy()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_stats(path, *, dataset_id: str | None = None, resolution=None, feature_id: str | None = None,
               device=None) -> FeatureStats:
    """Read statistics written by :func:`save_stats`; check they are for the expected data, resolution, features."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no reference-statistics file at {str(path)!r}")
    with np.load(path, allow_pickle=False) as z:
        missing = {"format_version", "mean", "cov", "n", "dataset_id", "resolution", "feature_id"} - set(z.files)
        if missing:
            raise ValueError(f"{str(path)!r} is not a scoresde statistics file (missing {sorted(missing)})")
        res = tuple(int(r) for r in z["resolution"])
        stats = FeatureStats(
            mean=torch.from_numpy(z["mean"]).to(device=device, dtype=torch.float64),
            cov=torch.from_numpy(z["cov"]).to(device=device, dtype=torch.float64),
            n=int(z["n"]),
            dataset_id=str(z["dataset_id"]),
            resolution=None if res == (-1, -1) else res,
            feature_id=str(z["feature_id"]),
            features=torch.from_numpy(z["features"]).to(device) if "features" in z.files else None,
        )
    stats.check_compatible(dataset_id=dataset_id, resolution=resolution, feature_id=feature_id,
                           where=f"the statistics in {str(path)!r}")
    return stats
