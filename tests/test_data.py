import math

import pytest
import torch

from scoresde.data import (
    DIGITS_LEVELS,
    TOY_DATASETS,
    dequantize,
    digits_histogram_bpd,
    discrete_bits_per_dim,
    get_inverse_scaler,
    get_scaler,
    image_dataset,
    load_digits,
    random_flip,
    sample_toy,
    toy_mixture,
)


def test_digits_split_is_fixed_disjoint_and_complete():
    pytest.importorskip("sklearn")
    train, ytr = load_digits("train", return_labels=True, levels=True)
    test = load_digits("test", levels=True)
    assert train.shape == (1500, 1, 8, 8) and test.shape == (297, 1, 8, 8) and ytr.shape == (1500,)
    assert int(train.min()) == 0 and int(train.max()) == DIGITS_LEVELS - 1
    assert torch.equal(load_digits("train", levels=True), train)  # deterministic
    every = load_digits("all", levels=True).reshape(1797, -1)
    both = torch.cat([train, test]).reshape(1797, -1)
    # same multiset of images: sort rows lexicographically via a unique integer code per row
    code = lambda z: torch.sort((z * torch.tensor(17.0).pow(torch.arange(64) % 8)).sum(1)).values  # noqa: E731
    assert torch.equal(code(every.double()), code(both.double()))
    u = load_digits("test")
    assert torch.allclose(u, (test.float() + 0.5) / DIGITS_LEVELS)


def test_histogram_baseline_between_zero_and_uniform():
    pytest.importorskip("sklearn")
    bpd = digits_histogram_bpd()
    # uniform over 17 levels would be log2(17) = 4.09 bits; many pixels are almost always 0, so much lower
    assert 1.0 < bpd < math.log2(17)


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_toy_sets_are_reproducible(name):
    a = sample_toy(name, 500, generator=torch.Generator().manual_seed(3))
    b = sample_toy(name, 500, generator=torch.Generator().manual_seed(3))
    assert a.shape == (500, 2) and a.dtype == torch.float32 and torch.equal(a, b) and torch.isfinite(a).all()
    assert a.abs().max() < 6


def test_toy_mixture_matches_oracle_weights():
    x = sample_toy("mixture", 20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    frac = toy_mixture().responsibilities(x).argmax(1).bincount(minlength=3).double() / 20000
    # modes are >= 4 std apart so argmax labels are (almost) exact; binomial std <= 0.0035, 4 sigma
    torch.testing.assert_close(frac, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), atol=0.015, rtol=0)


def test_checkerboard_is_on_black_squares():
    x = sample_toy("checkerboard", 2000, generator=torch.Generator().manual_seed(0))
    assert ((torch.floor(x[:, 0]) + torch.floor(x[:, 1])) % 2 == 0).all()


def test_scalers_invert_each_other():
    u = torch.rand(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    for centered in (True, False):
        y = get_scaler(centered)(u)
        assert torch.allclose(get_inverse_scaler(centered)(y), u)
    assert get_scaler(True)(torch.tensor([0.0, 1.0])).tolist() == [-1.0, 1.0]


@pytest.mark.parametrize("levels", [17, 256])
def test_dequantize_stays_in_its_bin(levels):
    k = torch.arange(levels, dtype=torch.float64).repeat(50)
    g = torch.Generator().manual_seed(0)
    for u in ((k + 0.5) / levels, k / (levels - 1)):  # bin centres and torchvision's k/(L-1)
        d = dequantize(u, levels, generator=g)
        assert torch.equal(torch.floor(d * levels), k)
    # uniform within the bin: mean offset 1/2 within 3 std of the mean of n uniforms (std 0.29/sqrt(n))
    off = d * levels - k
    assert abs(float(off.mean()) - 0.5) < 3 * 0.29 / math.sqrt(off.numel())


def test_discrete_bpd_of_uniform_density_is_log2_levels():
    # density 1 on [0,1]^D (logp = 0, scale 1) gives exactly log2(L) bits; a uniform on [-1,1]^D the same
    D = 64
    assert discrete_bits_per_dim(torch.zeros(2), D, levels=256, scale=1.0).tolist() == [8.0, 8.0]
    v = discrete_bits_per_dim(torch.full((1,), -D * math.log(2), dtype=torch.float64), D, levels=17, scale=2.0)
    assert abs(float(v) - math.log2(17)) < 1e-12


def test_random_flip_uses_generator():
    x = torch.arange(16.0).reshape(4, 1, 2, 2)
    a = random_flip(x, generator=torch.Generator().manual_seed(0))
    b = random_flip(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    for i in range(4):
        assert torch.equal(a[i], x[i]) or torch.equal(a[i], x[i].flip(-1))


def test_missing_image_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        image_dataset("cifar10", str(tmp_path))
    with pytest.raises(ValueError, match="unknown data set"):
        image_dataset("imagenet", str(tmp_path))
