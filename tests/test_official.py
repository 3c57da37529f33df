"""Import of official score_sde_pytorch checkpoints: our loader reproduces the official raw network output
and score, with the model and the EMA weights, on every fixture in ../shared/fixtures/score_sde_pytorch
(the configs themselves, the full-size builds and the presets' claims are in test_official_configs.py)."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch

import scoresde as sd
from scoresde.interop.official import (
    SigmaIndexLabels,
    SigmaIndexScaling,
    convert_official_state_dict,
    load_official_checkpoint,
    official_network,
    torch_load_official,
)
from scoresde.nn.layers import ResBlock
from scoresde.score import ScoreModel

ROOT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "score_sde_pytorch"
FIXTURES = sorted(p.name for p in ROOT.iterdir() if (p / "checkpoint.pth").exists()) if ROOT.exists() else []
pytestmark = pytest.mark.skipif(not FIXTURES, reason=f"fixtures not found at {ROOT}")

# The fixture README ("Numerics and tolerances"): a different kernel order moved outputs by ≤ 1.1e-6
# per-sample relative; 1e-5 leaves room for that but not for a wrong weight (model vs EMA differ by 70-110 %).
TOL = 1e-5


def per_sample_rel(a, b):
    """max |a − b| / max |b| per sample (VE outputs scale like 1/σ, so compare each sample on its own)."""
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    return ((a - b).abs().amax(1) / b.abs().amax(1)).max().item()


def fixture(name):
    return json.loads((ROOT / name / "config.json").read_text()), torch.load(ROOT / name / "io.pt", weights_only=True)


def checkpoint(name):
    return ROOT / name / "checkpoint.pth"


SLOW = {"ncsnpp_deep_ve", "ddpmpp_deep_subvp"}  # same blocks as ncsnpp_ve / ddpmpp_vp, twice as many


def unused_dense_params(net):
    """Parameters of the official blocks' Dense_0 (4·nf → C) that an unconditional network does not have."""
    return sum((4 * net.enc[next(iter(net.enc))].out_channels + 1) * m.conv0.out_channels
               for m in net.modules() if isinstance(m, ResBlock))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in FIXTURES])
def test_loader_reproduces_official_outputs(name):
    config, io = fixture(name)
    for weights in ("model", "ema"):
        model, sde = load_official_checkpoint(checkpoint(name), config, weights=weights)
        n_params = sum(p.numel() for p in model.net.parameters())
        if config["model"]["conditional"]:
            assert n_params == config["params"]
        else:  # the official blocks keep Dense_0 projections that the forward never uses; we drop them
            assert n_params + unused_dense_params(model.net) == config["params"]
        with torch.no_grad():
            labels = model.noise_cond(io["t"])
            if io["labels"].dtype == torch.int64:  # discrete VE: σ-index labels must be exact
                assert labels.dtype == torch.int64 and torch.equal(labels, io["labels"])
            else:
                assert per_sample_rel(labels[:, None], io["labels"][:, None]) <= TOL
            out = model.net(io["x"], io["labels"])
            assert per_sample_rel(out, io[f"net_out_{weights}"]) <= TOL
            assert per_sample_rel(model.output_to_score(out, io["x"], io["t"]), io[f"score_{weights}"]) <= TOL
            score = model(io["x"], io["t"])  # the whole pipeline from continuous t
            assert score.dtype == io["x"].dtype and per_sample_rel(score, io[f"score_{weights}"]) <= TOL
            if "std" in io:  # VP / sub-VP: score = −ε̂/std
                assert per_sample_rel(model.coeffs(io["t"])[1][:, None], io["std"][:, None]) <= TOL
            if f"score_{weights}_discrete" in io:  # the discrete-VP convention of vp/cifar10_ddpmpp
                n = config["sde"]["num_scales"]
                discrete = ScoreModel(model.net, sde, "eps", "discrete_index", discrete_steps=n)
                assert torch.equal(discrete.noise_cond(io["t"]), io["t"] * (n - 1))
                assert per_sample_rel(discrete.coeffs(io["t"])[1][:, None], io["std_discrete"][:, None]) <= TOL
                score = discrete.output_to_score(out, io["x"], io["t"])
                assert per_sample_rel(score, io[f"score_{weights}_discrete"]) <= TOL


def test_model_and_ema_weights_differ():
    """Guards the test above: loading the wrong set of weights would be caught (outputs differ by > 50 %)."""
    for name in FIXTURES[:2]:
        config, io = fixture(name)
        model, _ = load_official_checkpoint(checkpoint(name), config, weights="model")
        with torch.no_grad():
            assert per_sample_rel(model.net(io["x"], io["labels"]), io["net_out_ema"]) > 0.5


def test_sigma_index_labels_pick_the_nearest_level():
    """round((1 − t)(N − 1)) picks the official level nearest to σ(t) in log σ (index 0 = σ_max): within half
    a ladder step, |log σ_i − log σ(t)| ≤ ½ ln(σ_max/σ_min)/(N − 1)."""
    sde, n = sd.VESDE(0.01, 50.0), 1000
    labels = SigmaIndexLabels(n)
    t = torch.linspace(0, 1, 4001, dtype=torch.float64)
    idx = labels(t)
    assert idx.dtype == torch.int64 and idx[0] == n - 1 and idx[-1] == 0
    sigmas = sde.discrete_sigmas(n).flip(0)  # the official table runs from σ_max down
    gap = (sigmas[idx].log() - sde.sigma(t).log()).abs().max().item()
    assert gap <= 0.5 * math.log(50.0 / 0.01) / (n - 1) * (1 + 1e-9)


@pytest.mark.skipif("ncsnpp_ve_discrete_64" not in FIXTURES, reason="needs the ncsnpp_ve_discrete_64 fixture")
def test_discrete_ve_checkpoint_samples_from_continuous_t():
    """A discrete-VE checkpoint (the released ve/cifar10_ncsnpp's code path) samples with our samplers: each
    continuous t reaches the network as the official integer label, and x keeps its dtype."""
    name = "ncsnpp_ve_discrete_64"
    config, _ = fixture(name)
    model, sde = load_official_checkpoint(checkpoint(name), config)
    assert isinstance(model.net, SigmaIndexScaling) and isinstance(sde, sd.VESDE) and sde.sigma_max == 90.0
    seen = []
    model.net.net.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    with torch.no_grad():
        res = sd.sample_pc(model, sde, (1, 3, 64, 64), steps=3, corrector="none", eps=1e-5,
                           generator=torch.Generator().manual_seed(0))
    assert res.x.dtype == torch.float32 and torch.isfinite(res.x).all()
    assert all(s.dtype == torch.int64 for s in seen)
    assert seen[0].item() == 0 and seen[-1].item() == 999  # t = 1 → σ_max, t = eps → σ_min


@pytest.mark.skipif("ddpm_vp_uncond" not in FIXTURES, reason="needs the ddpm_vp_uncond fixture")
def test_unconditional_checkpoint_drops_exactly_the_unused_projections():
    name = "ddpm_vp_uncond"
    config, io = fixture(name)
    ckpt = torch_load_official(checkpoint(name))
    net = official_network(config)
    _, dropped = convert_official_state_dict(net, ckpt["model"], config)
    blocks = sum(isinstance(m, ResBlock) for m in net.modules())
    assert sorted(dropped) == sorted(["module.sigmas"] + [k for k in ckpt["model"] if ".Dense_0." in k])
    assert len(dropped) == 1 + 2 * blocks
    with torch.no_grad():  # the network ignores its noise input, as the official unconditional one does
        model, _ = load_official_checkpoint(checkpoint(name), config)
        torch.testing.assert_close(model.net(io["x"], io["labels"]), model.net(io["x"], None), rtol=0, atol=0)


@pytest.mark.skipif("ncsnpp_ve" not in FIXTURES, reason="needs the ncsnpp_ve fixture")
def test_numpy_scalar_optimizer_entry_loads_with_weights_only():
    path = checkpoint("ncsnpp_ve")
    with pytest.raises(Exception, match="numpy"):
        torch.load(path, weights_only=True)
    ckpt = torch_load_official(path)
    assert set(ckpt) == {"optimizer", "model", "ema", "step"}


@pytest.mark.skipif("ddpmpp_vp" not in FIXTURES, reason="needs the ddpmpp_vp fixture")
def test_mismatched_config_lists_the_keys(tmp_path):
    config, _ = fixture("ddpmpp_vp")
    wrong = copy.deepcopy(config)
    wrong["model"]["num_res_blocks"] = 2
    with pytest.raises(ValueError, match=r"does not match the configured network(.|\n)*unexpected \(\d+\): \['module"):
        load_official_checkpoint(checkpoint("ddpmpp_vp"), wrong)
    wider = copy.deepcopy(config)
    wider["model"]["nf"] = 8
    with pytest.raises(ValueError, match=r"shape mismatches \([1-9]\d*\)"):
        load_official_checkpoint(checkpoint("ddpmpp_vp"), wider)
    other_ladder = copy.deepcopy(config)
    other_ladder["model"]["num_scales"] = 2000
    with pytest.raises(ValueError, match="sigmas buffer .*1000 levels.* does not match .*2000 levels"):
        load_official_checkpoint(checkpoint("ddpmpp_vp"), other_ladder)
    # a truncated EMA list is refused (the official copy_to would silently zip it short)
    ckpt = torch_load_official(checkpoint("ddpmpp_vp"))
    ckpt["ema"]["shadow_params"] = ckpt["ema"]["shadow_params"][:-1]
    torch.save(ckpt, tmp_path / "short.pth")
    with pytest.raises(ValueError, match="EMA shadow list has 563 entries but the official network has 564"):
        load_official_checkpoint(tmp_path / "short.pth", config, weights="ema")
    # a missing weight is listed by name
    net = official_network(config)
    state = dict(ckpt["model"])
    state.pop("module.all_modules.5.Conv_1.weight")
    with pytest.raises(ValueError, match=r"missing \(1\): \['enc\.32x32_block2\.conv1\.weight'\]"):
        convert_official_state_dict(net, state, config)


def test_bad_arguments():
    config, _ = fixture(FIXTURES[0])
    with pytest.raises(ValueError, match="weights must be 'ema' or 'model'"):
        load_official_checkpoint(checkpoint(FIXTURES[0]), config, weights="avg")
    with pytest.raises(TypeError, match="config must be an official config name .* got int"):
        load_official_checkpoint(checkpoint(FIXTURES[0]), 3)
