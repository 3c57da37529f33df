"""Offline digits quality: separates real digits from noise and degraded digits; near its floor on real ones."""

import pytest
import torch
import torchvision.transforms.functional as TF

pytest.importorskip("sklearn")

from scoresde.data import load_digits  # noqa: E402
from scoresde.metrics.digits import (  # noqa: E402
    DIGITS_CLASSIFIER_VERSION,
    digits_quality,
    load_digits_classifier,
    train_digits_classifier,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def classifier(cache):
    return load_digits_classifier(cache_dir=cache)  # trains once (~10-20 s on 2 shared CPU cores) and caches


def test_classifier_cached_atomically_and_accurate(classifier, cache):
    path = cache / f"{DIGITS_CLASSIFIER_VERSION}.pt"
    assert path.is_file() and not list(cache.glob("*.tmp"))
    again = load_digits_classifier(cache_dir=cache)  # read back with weights_only=True, no retraining
    for a, b in zip(classifier.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x, y = load_digits("test", return_labels=True)
    acc = float((classifier(x).argmax(1) == y).float().mean())
    assert acc > 0.95  # measured 98.0% on the 297 held-out digits; 0.95 leaves margin


def test_cache_dir_from_environment(classifier, cache, monkeypatch):
    monkeypatch.setenv("SCORESDE_CACHE", str(cache))
    reloaded = load_digits_classifier()
    assert torch.equal(next(iter(reloaded.state_dict().values())), next(iter(classifier.state_dict().values())))


def test_real_digits_sit_at_the_floor_and_degraded_ones_do_not(classifier):
    real = load_digits("test")
    gen = torch.Generator().manual_seed(0)
    q = digits_quality(real, classifier=classifier)
    assert q.samples == q.floor and q.floor.n == 297
    # the floor: FD of 297 real digits vs the train set (finite-sample bias only), balanced classes, confident
    assert q.floor.fd < 5 and q.floor.class_kl < 0.02 and q.floor.confidence > 0.95
    # the same digits written as level/16 (the other common encoding) stay near the floor
    levels = load_digits("test", levels=True).float()
    assert digits_quality(levels / 16, classifier=classifier).samples.fd < 4 * q.floor.fd
    noise = torch.rand(297, 1, 8, 8, generator=gen)
    shuffled = torch.gather(real.reshape(297, 64), 1, torch.argsort(torch.rand(297, 64, generator=gen), 1))
    blurred = TF.gaussian_blur(real, [3, 3], [1.0, 1.0])
    for name, x in (("noise", noise), ("shuffled", shuffled), ("blurred", blurred)):
        s = digits_quality(x, classifier=classifier).samples
        assert s.fd > 20 * q.floor.fd, name  # measured: 70-120x the floor
        assert s.confidence < q.floor.confidence, name
    # a generator that collapses onto one class is caught by the class-balance score
    ones = real[load_digits("test", return_labels=True)[1] == 1]
    assert digits_quality(ones, classifier=classifier).samples.class_kl > 1.5  # log 10 = 2.30 at full collapse


def test_training_is_deterministic_given_a_generator():
    a = train_digits_classifier(generator=torch.Generator().manual_seed(3), epochs=1)
    b = train_digits_classifier(generator=torch.Generator().manual_seed(3), epochs=1)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_digits_bad_input(classifier):
    with pytest.raises(ValueError, match="8x8 digits"):
        digits_quality(torch.rand(10, 1, 16, 16), classifier=classifier)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        digits_quality(torch.rand(10, 64) * 16, classifier=classifier)
    with pytest.raises(ValueError, match="at least 2 samples"):
        digits_quality(torch.rand(1, 64), classifier=classifier)
