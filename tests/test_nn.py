"""Score networks: parameter counts of the paper configurations, shapes, dtypes, conditioning, gradients,
mixed precision and memory formats, FIR resampling identities, clear errors."""

import pytest
import torch

from scoresde.nn import PRESETS, DDPMUNet, MLPScoreNet, RefineNet, ScoreUNet, build_network
from scoresde.nn.layers import fir_downsample, fir_filter, fir_upsample, upfirdn2d
from tests.common import seeded, seeded_init

# The official counts (score_sde_pytorch configs; fixture README / index.json), Fourier W included.
OFFICIAL_COUNTS = {
    "ncsnpp_cifar10": 62_758_915, "ncsnpp_deep_cifar10": 107_587_075, "ncsnpp_cifar10_positional": 62_693_251,
    "ddpmpp_cifar10": 61_804_419, "ddpmpp_deep_cifar10": 106_632_579, "ncsnpp_256": 65_574_549,
    "ncsnpp_1024": 105_785_896, "ddpm_cifar10": 35_218_947, "ddpm_256": 111_569_923,
}

# Tiny versions of every U-Net option combination the official configs use, plus the unused ones.
TINY = dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0)
VARIANTS = {
    "ncsnpp": dict(TINY, embedding_type="fourier", fir=True, progressive_input="residual", scale_by_sigma=True,
                   centered=False),
    "ddpmpp": dict(TINY, embedding_type="positional"),
    "hires": dict(TINY, ch_mult=(1, 1, 2), embedding_type="fourier", fir=True, progressive="output_skip",
                  progressive_input="input_skip"),
    "residual_out_cat_in": dict(TINY, fir=True, progressive="residual", progressive_input="input_skip",
                                progressive_combine="cat"),
    "ddpm_blocks": dict(TINY, resblock_type="ddpm", skip_rescale=False),
    "ddpm_blocks_fir": dict(TINY, resblock_type="ddpm", fir=True, progressive="residual"),
}


def n_params(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("preset", sorted(OFFICIAL_COUNTS))
def test_full_size_presets_have_official_parameter_counts(preset):
    with torch.device("meta"):
        net = build_network(preset)
    assert n_params(net) == OFFICIAL_COUNTS[preset]


@pytest.mark.parametrize("variant,size", [(v, 8) for v in sorted(VARIANTS)] + [("hires", 16)])
def test_unet_shapes_dtypes_and_time_dependence(variant, size):
    gen = torch.Generator().manual_seed(0)
    with seeded_init(0):
        net = ScoreUNet(image_size=size, in_channels=2, **VARIANTS[variant]).eval()
    x = torch.rand(3, 2, size, size, generator=gen)
    nc = torch.tensor([0.5, 3.0, 20.0])
    for dtype in (torch.float32, torch.float64):
        out = net.to(dtype)(x.to(dtype), nc.to(dtype))
        assert out.shape == x.shape and out.dtype == dtype and torch.isfinite(out).all()
    net = net.float()
    # the embedding changes the output: same x, different noise_cond
    a, b = net(x, nc), net(x, nc.flip(0))
    assert (a - b).abs().amax() > 1e-6 * a.abs().amax()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_out_channels_sets_the_output_channels_only(variant):
    """out_channels = 2C (ε and a variance for a learned-variance kernel) for every option combination."""
    size = 16 if variant == "hires" else 8
    with seeded_init(0):
        net = ScoreUNet(image_size=size, in_channels=2, out_channels=4, **VARIANTS[variant])
    x = torch.rand(3, 2, size, size, generator=torch.Generator().manual_seed(0))
    out = net(x, torch.tensor([0.5, 3.0, 20.0]))
    assert out.shape == (3, 4, size, size) and torch.isfinite(out).all()
    same = ScoreUNet(image_size=size, in_channels=2, out_channels=2, **VARIANTS[variant])
    assert n_params(same) == n_params(ScoreUNet(image_size=size, in_channels=2, **VARIANTS[variant]))


def test_gradient_reaches_every_trainable_parameter():
    gen = seeded(0)
    image = lambda: torch.rand(2, 1, 8, 8, generator=gen)  # noqa: E731
    with seeded_init(0):
        nets = [ScoreUNet(image_size=8, in_channels=1, num_classes=3, **VARIANTS["hires"]),
                ScoreUNet(image_size=8, in_channels=1, **VARIANTS["residual_out_cat_in"]),
                DDPMUNet(image_size=8, in_channels=1, nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,)),
                RefineNet(nf=8, in_channels=1, num_classes=4, image_size=8), MLPScoreNet(3, hidden=16, layers=2)]
    inputs = [(image(), torch.tensor([0.1, 1.0])), (image(), torch.tensor([0.1, 1.0])),
              (image(), torch.tensor([1.0, 500.0])), (image(), torch.tensor([0, 3])),
              (torch.randn(4, 3, generator=gen), torch.tensor([1.0, 10.0, 100.0, 999.0]))]
    for net, (x, nc) in zip(nets, inputs, strict=True):
        # zero-initialised read-outs (MLP) and near-zero last convs block gradients to earlier layers at
        # init; perturb every parameter so that each one's gradient is generically non-zero.
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        labels = torch.tensor([0, 2]) if getattr(net, "class_emb", None) is not None else None
        out = net(x, nc) if labels is None else net(x, nc, labels)
        (out**2).sum().backward()
        for name, p in net.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and p.grad.abs().sum() > 0, f"{type(net).__name__}.{name} got no gradient"
            else:
                assert name == "embed.W"  # the frozen Fourier frequencies


def test_presets_build_and_run_small():
    gen = seeded(0)
    with seeded_init(0):
        digits, mlp = build_network("digits"), build_network("mlp", dim=5)
        mnist = build_network("small", image_size=28, in_channels=1, nf=16)
        ncsn = RefineNet(nf=8, in_channels=3, num_classes=10, image_size=16)
    assert digits(torch.rand(5, 1, 8, 8, generator=gen), torch.rand(5, generator=gen) * 999).shape == (5, 1, 8, 8)
    assert digits.network_config == {"preset": "digits", "kwargs": {}}
    assert mnist(torch.rand(2, 1, 28, 28, generator=gen), torch.rand(2, generator=gen) * 999).shape == (2, 1, 28, 28)
    assert mlp(torch.randn(7, 5, generator=gen), torch.rand(7, generator=gen)).shape == (7, 5)
    assert ncsn(torch.rand(2, 3, 16, 16, generator=gen), torch.tensor([0, 9])).shape == (2, 3, 16, 16)


def test_bf16_autocast_and_channels_last():
    with seeded_init(0):
        net = ScoreUNet(image_size=8, in_channels=3, **VARIANTS["ncsnpp"]).eval()
    x, nc = torch.rand(2, 3, 8, 8, generator=seeded(0)), torch.tensor([0.3, 2.0])
    ref = net(x, nc)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = net(x, nc)
    # bf16 has an 8-bit mantissa (rel. rounding 2^-9 ≈ 2e-3 per op); through ~30 layers a few % is expected
    assert low.shape == x.shape and torch.isfinite(low).all()
    assert ((low.float() - ref).norm() / ref.norm()) < 0.05
    cl = net.to(memory_format=torch.channels_last)
    out = cl(x.to(memory_format=torch.channels_last), nc)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_fir_resampling_identities():
    k = fir_filter([1, 3, 3, 1])
    assert torch.allclose(k.sum(), torch.tensor(1.0))
    # constant images are preserved by down-sampling and (away from the zero-padded border) up-sampling
    c = torch.full((1, 2, 8, 8), 3.0)
    assert torch.allclose(fir_downsample(c, k)[..., 1:-1, 1:-1], torch.full((1, 2, 2, 2), 3.0))
    up = fir_upsample(c, k)
    assert up.shape == (1, 2, 16, 16) and torch.allclose(up[..., 2:-2, 2:-2], torch.full((1, 2, 12, 12), 3.0))
    # a delta through the 1-D taps [1, 2, 1]/4 gives their outer product (true convolution, centred)
    delta = torch.zeros(1, 1, 5, 5)
    delta[0, 0, 2, 2] = 1
    out = upfirdn2d(delta, fir_filter([1, 2, 1]), pad=(1, 1))
    taps = torch.tensor([1.0, 2, 1])
    torch.testing.assert_close(out[0, 0, 1:4, 1:4], torch.outer(taps, taps) / 16)


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown network preset 'nope'.*ddpmpp_cifar10"):
        build_network("nope")
    with pytest.raises(ValueError, match=r"image_size must be a positive multiple of .* = 8 .* got 28"):
        ScoreUNet(image_size=28, ch_mult=(1, 2, 2, 2))
    net = ScoreUNet(image_size=8, in_channels=3, **VARIANTS["ddpmpp"])
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, 8, 8\).*\(2, 1, 8, 8\)"):
        net(torch.rand(2, 1, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, 8, 8\).*\(2, 3, 16, 16\)"):
        net(torch.rand(2, 3, 16, 16), torch.rand(2))
    with pytest.raises(ValueError, match=r"noise_cond must have shape \(2,\)"):
        net(torch.rand(2, 3, 8, 8), torch.rand(3))
    with pytest.raises(ValueError, match="progressive must be one of"):
        ScoreUNet(progressive="bogus")
    with pytest.raises(ValueError, match="scale_by_sigma .* embedding_type=.fourier."):
        ScoreUNet(embedding_type="positional", scale_by_sigma=True)
    with pytest.raises(ValueError, match="normalisation groups"):
        DDPMUNet(nf=16, image_size=8, ch_mult=(1, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 4\)"):
        MLPScoreNet(4)(torch.randn(3, 5), torch.rand(3))
    with pytest.raises(ValueError, match="out_channels must be a positive int or None.*got 0"):
        ScoreUNet(image_size=8, out_channels=0, **TINY)
    with pytest.raises(ValueError, match="out_channels must be a positive int or None.*got 2.0"):
        DDPMUNet(image_size=8, nf=32, ch_mult=(1, 2), out_channels=2.0)
    with pytest.raises(ValueError, match="class-conditional"):
        ScoreUNet(image_size=8, num_classes=3, **TINY)(torch.rand(1, 3, 8, 8), torch.rand(1))


def test_presets_table_is_complete():
    assert {"digits", "small", "mlp", "ncsn_cifar10"} | set(OFFICIAL_COUNTS) <= set(PRESETS)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    with seeded_init(0):
        net = ScoreUNet(image_size=8, in_channels=1, **VARIANTS["ncsnpp"]).eval()
    x, nc = torch.rand(2, 1, 8, 8, generator=seeded(0)), torch.tensor([0.3, 2.0])
    compiled = torch.compile(net)
    torch.testing.assert_close(compiled(x, nc), net(x, nc), rtol=1e-4, atol=1e-4 * net(x, nc).abs().max().item())
