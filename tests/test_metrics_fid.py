"""The full FID / KID / IS path with a tiny stand-in feature network (no download), and its errors."""

import math
import sys

import pytest
import torch
from torch import nn

from scoresde.metrics.evaluate import evaluate_samples, reference_stats
from scoresde.metrics.frechet import frechet_distance
from scoresde.metrics.inception import InceptionV3Features, inception_score
from scoresde.metrics.stats import feature_stats


class TinyNet:
    """Stand-in for Inception: fixed random conv features (B, 8) and logits (B, 5)."""

    feature_id = "tiny-standin"

    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 4, stride=4)
        self.head = nn.Linear(8, 5)
        for p in list(self.conv.parameters()) + list(self.head.parameters()):
            p.data = torch.randn(p.shape, generator=gen) * 0.5
        self.calls = 0

    @torch.no_grad()
    def __call__(self, images):
        self.calls += 1
        f = torch.tanh(self.conv(images)).mean((2, 3))
        return f, self.head(f)


def _images(n, gen, shift=0.0, size=16):
    base = torch.linspace(0, 1, size)[None, None, None, :].expand(n, 3, size, size)
    return (0.2 + 0.6 * base * torch.rand(n, 3, 1, 1, generator=gen) + shift
            + 0.05 * torch.randn(n, 3, size, size, generator=gen)).clamp(0, 1)


def _sampler(shift=0.0, size=16):
    return lambda n, generator: _images(n, generator, shift, size)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("stats") / "toy_ref.npz"
    data = torch.utils.data.TensorDataset(_images(600, torch.Generator().manual_seed(1)))
    stats = reference_stats(data, TinyNet(), dataset_id="toy", cache_path=path, batch_size=128, keep_features=400)
    return stats, path


def test_reference_stats_cached_and_reloaded(reference):
    stats, path = reference
    assert path.is_file() and stats.n == 600 and stats.resolution == (16, 16) and stats.features.shape == (400, 8)

    class Exploding:  # a cached file must be read, not recomputed: iterating the data would fail
        def __iter__(self):
            raise AssertionError("data iterated although a cache exists")

    again = reference_stats(Exploding(), TinyNet(), dataset_id="toy", cache_path=path)
    torch.testing.assert_close(again.cov, stats.cov, rtol=0, atol=0)
    with pytest.raises(ValueError, match="data set 'toy', not 'cifar10'"):
        reference_stats(Exploding(), TinyNet(), dataset_id="cifar10", cache_path=path)


def test_reference_from_a_torchvision_dataset_of_pil_images():
    import torchvision

    data = torchvision.datasets.FakeData(size=20, image_size=(3, 16, 16), num_classes=2)  # PIL images, no download
    stats = reference_stats(data, TinyNet(), dataset_id="fake", batch_size=8, keep_features=0, progress=False)
    assert stats.n == 20 and stats.resolution == (16, 16) and stats.features is None and stats.dataset_id == "fake"


def test_full_path_fid_equals_direct_computation(reference):
    stats, _ = reference
    net = TinyNet()
    res = evaluate_samples(_sampler(), stats, num_samples=300, feature_fn=net, batch_size=64, seed=5,
                           kid_subsets=20, kid_subset_size=200)
    assert res.num_samples == 300 and res.dataset_id == "toy" and res.feature_id == "tiny-standin"
    assert net.calls == math.ceil(300 / 64)  # samples stream in batches straight into the metric
    # the same samples (same seed, same batch split), features and Fréchet distance computed in one go
    gen = torch.Generator().manual_seed(5)
    feats = torch.cat([net(_images(n, gen))[0] for n in (64, 64, 64, 64, 44)])
    direct = feature_stats(feats)
    assert res.fid == pytest.approx(frechet_distance(direct.mean, direct.cov, stats.mean, stats.cov), rel=1e-9)
    assert 1.0 <= res.is_mean <= 5.0  # IS lies in [1, number of classes]
    again = evaluate_samples(_sampler(), stats, num_samples=300, feature_fn=net, batch_size=64, seed=5,
                             kid_subsets=20, kid_subset_size=200)
    assert again == res  # a fixed seed gives the same numbers


def test_full_path_separates_distributions(reference):
    stats, _ = reference
    kw = dict(num_samples=300, feature_fn=TinyNet(), batch_size=100, kid_subsets=20, kid_subset_size=200)
    good = evaluate_samples(_sampler(), stats, **kw)
    bad = evaluate_samples(_sampler(shift=0.15), stats, **kw)
    assert bad.fid > 10 * good.fid
    assert bad.kid_mean > 5 * bad.kid_std / math.sqrt(20) and abs(good.kid_mean) < bad.kid_mean / 10


def test_bad_inputs_are_explained(reference, tmp_path):
    stats, _ = reference
    kw = dict(num_samples=10, feature_fn=TinyNet(), metrics=("fid",))
    with pytest.raises(ValueError, match=r"resolution \(16, 16\).*\(32, 32\)"):
        evaluate_samples(_sampler(size=32), stats, **kw)
    with pytest.raises(ValueError, match=r"\[0, 1\].*\(x \+ 1\) / 2"):
        evaluate_samples(lambda n, generator: 2 * _images(n, generator) - 1, stats, **kw)
    with pytest.raises(TypeError, match="uint8"):
        evaluate_samples(lambda n, generator: torch.zeros(n, 3, 16, 16, dtype=torch.int32), stats, **kw)
    with pytest.raises(ValueError, match="metrics must be"):
        evaluate_samples(_sampler(), stats, num_samples=10, feature_fn=TinyNet(), metrics=("fidd",))
    with pytest.raises(ValueError, match="at least 2 samples"):
        reference_stats([_images(1, torch.Generator())], TinyNet(), dataset_id="one")
    other = TinyNet()
    other.feature_id = "other-net"
    with pytest.raises(ValueError, match="feature extractor 'tiny-standin', not 'other-net'"):
        evaluate_samples(_sampler(), stats, num_samples=10, feature_fn=other, metrics=("fid",))


def test_missing_torch_fidelity_names_the_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'scoresde\[fid\]'.*torch-fidelity>=0.3"):
        InceptionV3Features()


def test_inception_score_extremes():
    # confident and spread over all C classes: IS = C; the same prediction everywhere: IS = 1
    C = 7
    one_hot = 60.0 * torch.eye(C).repeat(20, 1)  # softmax ≈ one-hot to e^-60
    mean, _ = inception_score(one_hot, splits=4)
    assert mean == pytest.approx(C, rel=1e-9)
    same, _ = inception_score(torch.randn(1, C).expand(140, C), splits=4)
    assert same == pytest.approx(1.0, abs=1e-12)


@pytest.mark.gpu
def test_inception_features_on_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    pytest.importorskip("torch_fidelity")
    net = InceptionV3Features()  # downloads torch-fidelity's weights on first use
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)).cuda()
    f, logits = net(images)
    assert f.shape == (4, 2048) and logits.shape == (4, 1008) and f.device.type == "cuda"
    assert (f >= 0).all()  # pool-3 features follow a ReLU
