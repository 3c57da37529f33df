"""Offline sample quality for the embedded 8×8 digits: a small classifier's features and predictions.

No download and no GPU: a tiny conv net is trained once, deterministically (a seeded local generator, about
ten seconds on two CPU cores), on the train split of :func:`scoresde.data.load_digits` and cached on disk.
For a batch of samples it reports

* **digits FD**: the Fréchet distance (:func:`~scoresde.metrics.frechet.frechet_distance`) between the
  classifier's penultimate features (64-d) of the samples and of the training digits — FID's recipe with a
  network that knows digits;
* **class KL**: KL(p̄ ‖ uniform) = log 10 − H(p̄) of the mean predicted class distribution p̄ (0 when the
  ten classes are equally represented, log 10 when one class takes all);
* **confidence**: the mean over samples of the top predicted probability (low for ambiguous images);

next to the same numbers for the held-out real test digits (the *floor* a perfect generator reaches with
that many samples). The classifier is trained on dequantised digits u = (k + U[0,1))/17, so it reads every
common encoding of level k in [0, 1]: the bin centre (k + ½)/17 of ``load_digits``, dequantised values, and
k/16; all lie in the bin [k/17, (k+1)/17].
"""

from __future__ import annotations

import math
import os
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from scoresde.data import DIGITS_LEVELS, load_digits
from scoresde.metrics.frechet import frechet_distance
from scoresde.metrics.images import check_images
from scoresde.metrics.stats import FeatureStats, feature_stats

__all__ = ["DigitsClassifier", "DigitsScores", "DigitsQuality", "train_digits_classifier",
           "load_digits_classifier", "digits_quality", "default_cache_dir"]

# Bump when the architecture, the data or the training recipe change: it keys the cache file.
DIGITS_CLASSIFIER_VERSION = "digits-cnn-v1"
CACHE_ENV = "SCORESDE_CACHE"
_SEED, _EPOCHS, _BATCH, _LR = 0, 12, 64, 3e-3


def default_cache_dir(cache_dir=None) -> Path:
    """``cache_dir`` if given, else ``$SCORESDE_CACHE``, else ``~/.cache/scoresde``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "scoresde")


class DigitsClassifier(nn.Module):
    """Conv(1→16) → Conv(16→32) → max-pool → Linear(512→64) = features → Linear(64→10), ReLUs between."""

    feature_id = f"{DIGITS_CLASSIFIER_VERSION}/penultimate"

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(B, 64)`` of images ``(B, 1, 8, 8)`` in [0, 1]."""
        h = torch.relu(self.conv1(x - 0.5))
        h = torch.max_pool2d(torch.relu(self.conv2(h)), 2)
        return torch.relu(self.fc1(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, 10)``."""
        return self.fc2(self.features(x))


def _digits_input(images, name: str = "samples") -> Tensor:
    """Accept ``(B, 1, 8, 8)``, ``(B, 8, 8)`` or ``(B, 64)`` digits in [0, 1] -> ``(B, 1, 8, 8)``."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of 8x8 digits, got {type(images).__name__}")
    if images.ndim >= 2 and images[0].numel() == 64:
        images = images.reshape(images.shape[0], 1, 8, 8)
    else:
        raise ValueError(f"{name} must be 8x8 digits shaped (B, 1, 8, 8), (B, 8, 8) or (B, 64), "
                         f"got {tuple(images.shape)}")
    return check_images(images, name=name)


def _init_params(model: nn.Module, generator: torch.Generator) -> None:
    """Kaiming-uniform weights and zero biases, drawn from ``generator`` only (the global RNG is untouched)."""
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(p)
        else:
            nn.init.kaiming_uniform_(p, nonlinearity="relu", generator=generator)


def train_digits_classifier(*, generator: torch.Generator | None = None, epochs: int = _EPOCHS) -> DigitsClassifier:
    """Train the classifier on the digits train split (Adam, dequantised inputs), on the CPU, deterministically.

    ``generator`` drives the initialisation, the batch order and the dequantisation noise (default: a local
    generator seeded with 0 — the cached model).
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(_SEED)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ops this small run faster on one thread; restored below
    try:
        return _train(gen, epochs)
    finally:
        torch.set_num_threads(threads)


def _train(gen: torch.Generator, epochs: int) -> DigitsClassifier:
    levels, labels = load_digits("train", levels=True, return_labels=True)
    with torch.device("meta"):
        model = DigitsClassifier()
    model = model.to_empty(device="cpu")
    _init_params(model, gen)
    opt = torch.optim.Adam(model.parameters(), lr=_LR, weight_decay=1e-4)
    n = levels.shape[0]
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, _BATCH):
            idx = perm[start:start + _BATCH]
            u = (levels[idx].float() + torch.rand(idx.shape[0], 1, 8, 8, generator=gen)) / DIGITS_LEVELS
            loss = nn.functional.cross_entropy(model(u), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval().requires_grad_(False)


def load_digits_classifier(*, cache_dir=None, retrain: bool = False) -> DigitsClassifier:
    """The cached classifier (``<cache_dir>/<version>.pt``), trained and written atomically if missing."""
    path = default_cache_dir(cache_dir) / f"{DIGITS_CLASSIFIER_VERSION}.pt"
    if path.is_file() and not retrain:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(blob, dict) and blob.get("version") == DIGITS_CLASSIFIER_VERSION:
            model = DigitsClassifier()
            model.load_state_dict(blob["state_dict"])  # strict: a mismatch is an error, not a silent skip
            return model.eval().requires_grad_(False)
    model = train_digits_classifier()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"version": DIGITS_CLASSIFIER_VERSION, "state_dict": model.state_dict()}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return model


@dataclass(frozen=True)
class DigitsScores:
    """Digits FD (vs the train-split features), class KL to uniform (nats), mean confidence, sample count."""

    fd: float
    class_kl: float
    confidence: float
    n: int


@dataclass(frozen=True)
class DigitsQuality:
    """Scores of the samples, and of the held-out real digits (the floor) for comparison."""

    samples: DigitsScores
    floor: DigitsScores


@torch.no_grad()
def _scores(model: DigitsClassifier, x: Tensor, reference: FeatureStats) -> DigitsScores:
    if x.shape[0] < 2:
        raise ValueError(f"digits quality needs at least 2 samples for a covariance, got {x.shape[0]}")
    feats = model.features(x)
    probs = torch.softmax(model.fc2(feats).double(), dim=1)
    stats = feature_stats(feats)
    p_bar = probs.mean(0)
    class_kl = math.log(10) + float((p_bar * p_bar.clamp_min(1e-300).log()).sum())
    fd = frechet_distance(stats.mean, stats.cov, reference.mean, reference.cov)
    return DigitsScores(fd, class_kl, float(probs.max(1).values.mean()), x.shape[0])


# Per-classifier (train-split statistics, held-out floor), computed on first use; dropped with the classifier.
_REFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _reference_and_floor(model: DigitsClassifier) -> tuple[FeatureStats, DigitsScores]:
    if model not in _REFERENCE:
        with torch.no_grad():
            reference = feature_stats(model.features(load_digits("train")))
        _REFERENCE[model] = (reference, _scores(model, load_digits("test"), reference))
    return _REFERENCE[model]


def digits_quality(samples: Tensor, *, classifier: DigitsClassifier | None = None, cache_dir=None) -> DigitsQuality:
    """Digits FD, class balance and confidence of ``samples`` (8×8 in [0, 1]) and of the held-out floor.

    The FD is biased upward by finite samples (about ∝ 1/n): compare samples and floor at similar n
    (the test split has 297 digits; use a few hundred samples or more). The train-split statistics and
    the floor are computed once per classifier object (do not train a classifier after passing it here).
    """
    x = _digits_input(samples).float().cpu()
    model = classifier if classifier is not None else load_digits_classifier(cache_dir=cache_dir)
    reference, floor = _reference_and_floor(model)
    return DigitsQuality(_scores(model, x, reference), floor)
