"""Data: embedded 8×8 digits, 2-D toy distributions, torchvision image sets, scalers, dequantisation.

Nothing here downloads anything unless asked (``download=True``) and nothing draws a random number
without a ``generator``. Two data spaces are used throughout the library:

* *unit space* ``[0, 1]``: the output of every loader here (``u``);
* *model space*: ``y = a·u + b``, either ``[0, 1]`` (``centered=False``, a = 1, b = 0) or ``[−1, 1]``
  (``centered=True``, a = 2, b = −1). :func:`get_scaler` and :func:`get_inverse_scaler` map between them.

Discrete data with ``L`` levels ``k ∈ {0..L−1}`` (L = 256 for 8-bit images, L = 17 for the digits) are
dequantised uniformly (Theis et al. 2016; Song et al. 2021b, Sec. 5): ``u = (k + U[0,1)) / L``. A density
p on model space then gives the discrete log-likelihood bound in bits per dimension

    bpd = −(log p(y) + D ln a) / (D ln 2) + log2 L,

which for L = 256 is the familiar ``+ 8``. :func:`dequantize` and :func:`discrete_bits_per_dim` are the
unit-space fronts of the library's one dequantiser and one formula (:mod:`scoresde.likelihood.bpd`).

The digits are scikit-learn's copy of the UCI optical-recognition digits: 1797 images of 8×8 pixels with
17 grey levels 0..16 (optional extra ``scoresde[digits]``). Level k is mapped to the bin ``[k/17, (k+1)/17)``
of unit space, dequantised with L = 17. The train/test split is fixed: a permutation from a generator seeded
with 0 (deterministic across machines), the last 297 images form the test set and the first 1500 the train set.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

from scoresde._checks import check_choice, check_generator, check_int, check_positive
from scoresde.analytic import GaussianMixture
from scoresde.likelihood.bpd import bits_per_dim, uniform_dequantize

__all__ = [
    "DIGITS_LEVELS", "load_digits", "digits_histogram_bpd", "TOY_DATASETS", "sample_toy", "image_dataset",
    "IMAGE_DATASETS", "toy_mixture", "get_scaler", "get_inverse_scaler", "dequantize", "discrete_bits_per_dim",
    "random_flip",
]

DIGITS_LEVELS = 17
DIGITS_TEST_SIZE = 297


# ---------------------------------------------------------------------------------------------- digits
def _digits_levels() -> tuple[Tensor, Tensor]:
    """All 1797 digits as integer levels ``(N, 1, 8, 8)`` (int64, 0..16) and their labels ``(N,)``."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as err:  # optional extra
        raise ImportError("the 8x8 digits need scikit-learn: pip install scoresde[digits]") from err
    bunch = sk_load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.int64).reshape(-1, 1, 8, 8)
    return images, torch.as_tensor(bunch.target, dtype=torch.int64)


def load_digits(split: str = "train", *, return_labels: bool = False, levels: bool = False):
    """The embedded 8×8 digits, fixed split (see module docstring).

    Args:
        split: ``"train"`` (1500 images), ``"test"`` (297) or ``"all"`` (1797).
        return_labels: also return the class labels ``(N,)``.
        levels: return integer levels 0..16 (int64) instead of bin centres ``(k + ½)/17`` in [0, 1].
    Returns ``(N, 1, 8, 8)`` images (and labels).
    """
    check_choice("split", split, ("train", "test", "all"))
    images, labels = _digits_levels()
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))
    if split != "all":
        n_train = images.shape[0] - DIGITS_TEST_SIZE
        perm = perm[:n_train] if split == "train" else perm[n_train:]
    x = images[perm]
    if not levels:
        x = (x.double() + 0.5) / DIGITS_LEVELS
        x = x.float()
    return (x, labels[perm]) if return_labels else x


def digits_histogram_bpd(alpha: float = 1.0) -> float:
    """Baseline: bits/dim on the digits test set of independent per-pixel histograms fitted on the train set.

    Each of the 64 pixels gets its own categorical distribution over the 17 levels (train counts plus an
    additive ``alpha`` smoothing). A score model must beat this number to have learned any dependence
    between pixels. It is a discrete NLL, directly comparable with :func:`discrete_bits_per_dim` (whose
    dequantised value bounds a discrete NLL from above).
    """
    check_positive("alpha", alpha)
    train = load_digits("train", levels=True).reshape(-1, 64)
    test = load_digits("test", levels=True).reshape(-1, 64)
    counts = torch.zeros(64, DIGITS_LEVELS, dtype=torch.float64)
    counts.scatter_add_(1, train.T, torch.ones_like(train.T, dtype=torch.float64))
    probs = (counts + alpha) / (counts.sum(1, keepdim=True) + alpha * DIGITS_LEVELS)
    logp = torch.log2(probs.gather(1, test.T))  # (64, N_test)
    return float(-logp.mean())


# ---------------------------------------------------------------------------------------------- toy 2-D
def _toy_mixture(n, generator):
    return toy_mixture().sample(n, generator=generator)


def toy_mixture():
    """The library's reference 2-D mixture: three modes with unequal weights (0.5, 0.3, 0.2)."""
    return GaussianMixture([0.5, 0.3, 0.2], [[-2.0, 0.0], [2.0, 1.0], [0.5, -2.5]], [0.4, 0.3, 0.5])


def _uniform(n, generator, lo=0.0, hi=1.0):
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def _toy_rings(n, generator):
    """Two concentric circles of radii 1 and 2 (equal mass), radial noise 0.08."""
    theta = _uniform(n, generator, 0, 2 * math.pi)
    radius = 1.0 + (torch.rand(n, generator=generator) < 0.5).double()
    radius = radius + 0.08 * torch.randn(n, generator=generator, dtype=torch.float64)
    return torch.stack([radius * torch.cos(theta), radius * torch.sin(theta)], 1)


def _toy_checkerboard(n, generator):
    """Uniform on the 8 black squares of a 4×4 board on [−2, 2]²."""
    x = _uniform(n, generator, -2, 2)
    y = _uniform(n, generator, 0, 1) + torch.randint(0, 2, (n,), generator=generator).double() * 2 - 2
    y = y + (torch.floor(x) % 2)  # shift odd columns by one square
    return torch.stack([x, y], 1)


def _toy_swiss_roll(n, generator):
    """A 2-D swiss roll (spiral r = θ), scaled to about [−2, 2]², noise 0.05."""
    theta = 1.5 * math.pi * (1 + 2 * _uniform(n, generator))
    pts = torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], 1) / 7.5
    return pts + 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def _toy_two_moons(n, generator):
    """Two interleaving half circles (scikit-learn's make_moons geometry), centred, noise 0.05."""
    theta = _uniform(n, generator, 0, math.pi)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta)) - 0.5
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta)) - 0.25
    return torch.stack([x, y], 1) * 1.5 + 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


TOY_DATASETS = {
    "mixture": _toy_mixture,
    "rings": _toy_rings,
    "checkerboard": _toy_checkerboard,
    "swiss_roll": _toy_swiss_roll,
    "two_moons": _toy_two_moons,
}


def sample_toy(name: str, n: int, *, generator: torch.Generator | None = None, dtype=torch.float32) -> Tensor:
    """``n`` points ``(n, 2)`` from a 2-D toy distribution (one of :data:`TOY_DATASETS`)."""
    check_choice("toy data set", name, TOY_DATASETS)
    check_int("n", n)
    check_generator(generator)
    return TOY_DATASETS[name](n, generator).to(dtype)


# ---------------------------------------------------------------------------------------------- images
IMAGE_DATASETS = ("mnist", "cifar10", "celeba", "lsun", "imagefolder")

_HOW_TO_GET = {
    "mnist": "pass download=True (torchvision fetches it into root)",
    "cifar10": "pass download=True (torchvision fetches it into root)",
    "celeba": "pass download=True, or place the files from the CelebA site under root/celeba (torchvision layout)",
    "lsun": "download the LMDB databases with the LSUN tools (github.com/fyu/lsun) into root",
    "imagefolder": "point root at a folder with one sub-folder of images per class",
}


def image_dataset(name: str, root: str, *, split: str = "train", download: bool = False, image_size: int | None = None,
                  center_crop: int | None = None, lsun_category: str = "church_outdoor"):
    """A torchvision image data set yielding ``(image in [0, 1] of shape (C, H, W), label)``.

    Transforms are deterministic (centre crop, then resize, then to-tensor); random horizontal flips are
    applied per batch by :func:`random_flip` with an explicit generator, so a resumed run sees the same flips.
    A data set missing under ``root`` raises FileNotFoundError saying how to get it.
    """
    check_choice("data set", name, IMAGE_DATASETS)
    check_choice("split", split, ("train", "test"))
    from torchvision import datasets, transforms

    ops = []
    if center_crop:
        ops.append(transforms.CenterCrop(center_crop))
    if image_size:
        ops += [transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    ops.append(transforms.ToTensor())
    tf = transforms.Compose(ops)
    root = os.path.expanduser(root)
    try:
        if name == "mnist":
            return datasets.MNIST(root, train=split == "train", download=download, transform=tf)
        if name == "cifar10":
            return datasets.CIFAR10(root, train=split == "train", download=download, transform=tf)
        if name == "celeba":
            return datasets.CelebA(root, split="train" if split == "train" else "test", download=download, transform=tf)
        if name == "lsun":
            return datasets.LSUN(root, classes=[f"{lsun_category}_{'train' if split == 'train' else 'val'}"],
                                 transform=tf)
        return datasets.ImageFolder(os.path.join(root, split) if os.path.isdir(os.path.join(root, split)) else root,
                                    transform=tf)
    except (RuntimeError, FileNotFoundError, OSError) as err:
        raise FileNotFoundError(f"data set {name!r} not found under {root!r}: {_HOW_TO_GET[name]} ({err})") from err


def random_flip(x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image of ``(B, C, H, W)`` horizontally with probability ½."""
    check_generator(generator)
    flip = torch.rand(x.shape[0], generator=generator, device=_gen_device(generator, x)) < 0.5
    flip = flip.to(x.device).reshape((-1,) + (1,) * (x.ndim - 1))
    return torch.where(flip, x.flip(-1), x)


# ---------------------------------------------------------------------------------------------- scalers
def get_scaler(centered: bool):
    """Unit space [0, 1] → model space: ``[−1, 1]`` (``2u − 1``) when ``centered``, else the identity."""
    return (lambda u: 2 * u - 1) if centered else (lambda u: u)


def get_inverse_scaler(centered: bool):
    """Model space → unit space [0, 1]; inverse of :func:`get_scaler`."""
    return (lambda y: (y + 1) / 2) if centered else (lambda y: y)


def dequantize(u: Tensor, levels: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantisation: ``u ∈ [0, 1]`` holding ``levels`` discrete values → ``(k + U[0,1)) / levels``.

    ``k = floor(u · levels)`` clamped to ``[0, levels − 1]``, so both bin centres ``(k + ½)/L`` and the
    torchvision convention ``k / (L − 1)`` (``k·L/(L−1) = k + k/(L−1)`` lies in ``[k, k+1)`` for k < L − 1)
    map to level ``k``; then :func:`scoresde.likelihood.uniform_dequantize` of the levels, in u's dtype.
    """
    check_int("levels", levels, minimum=2)
    check_generator(generator)
    k = torch.floor(u * levels).clamp(0, levels - 1)
    return uniform_dequantize(k, levels=levels, generator=generator, dtype=u.dtype)


def discrete_bits_per_dim(logp: Tensor, dim: int, *, levels: int, scale: float) -> Tensor:
    """Bits/dim of dequantised discrete data from a model-space log-density (nats): the one formula of
    :func:`scoresde.likelihood.bits_per_dim`, with ``scale`` = a in y = a·u + b and ``levels`` = L."""
    return bits_per_dim(logp, dim, scale=scale, levels=levels)


def _gen_device(generator, x):
    return generator.device if generator is not None else x.device
