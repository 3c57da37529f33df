"""Import of official score_sde_pytorch checkpoints: our loader reproduces the official raw network output
and score, with the model and the EMA weights, on every fixture in ../shared/fixtures/score_sde_pytorch."""

import copy
import json
from pathlib import Path

import pytest
import torch

from scoresde.nn.official import (
    convert_official_state_dict,
    load_official_checkpoint,
    official_network,
    torch_load_official,
)
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


SLOW = {"ncsnpp_deep_ve", "ddpmpp_deep_subvp"}  # same blocks as ncsnpp_ve / ddpmpp_vp, twice as many


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in FIXTURES])
def test_loader_reproduces_official_outputs(name):
    config, io = fixture(name)
    for weights in ("model", "ema"):
        model, sde = load_official_checkpoint(ROOT / name / "checkpoint.pth", config, weights=weights)
        assert sum(p.numel() for p in model.net.parameters()) == config["params"]
        with torch.no_grad():
            assert per_sample_rel(model.noise_cond(io["t"]), io["labels"]) <= TOL
            out = model.net(io["x"], io["labels"])
            assert per_sample_rel(out, io[f"net_out_{weights}"]) <= TOL
            assert per_sample_rel(model.output_to_score(out, io["x"], io["t"]), io[f"score_{weights}"]) <= TOL
            if "std" in io:  # VP / sub-VP: score = −ε̂/std
                assert per_sample_rel(model.coeffs(io["t"])[1][:, None], io["std"][:, None]) <= TOL
            if f"score_{weights}_discrete" in io:  # the discrete-VP convention of vp/cifar10_ddpmpp
                n = config["sde"]["num_scales"]
                discrete = ScoreModel(model.net, sde, "eps", "discrete_index", discrete_steps=n)
                assert torch.equal(discrete.noise_cond(io["t"]), io["t"] * (n - 1))
                assert per_sample_rel(discrete.coeffs(io["t"])[1][:, None], io["std_discrete"][:, None]) <= TOL
                score = discrete.output_to_score(out, io["x"], io["t"])
                assert per_sample_rel(score, io[f"score_{weights}_discrete"]) <= TOL


@pytest.mark.skipif("ncsnpp_ve" not in FIXTURES, reason="needs the ncsnpp_ve fixture")
def test_score_model_forward_is_the_whole_pipeline():
    config, io = fixture("ncsnpp_ve")
    model, _ = load_official_checkpoint(ROOT / "ncsnpp_ve" / "checkpoint.pth", config)
    with torch.no_grad():
        assert per_sample_rel(model(io["x"], io["t"]), io["score_ema"]) <= TOL


def test_model_and_ema_weights_differ():
    """Guards the test above: loading the wrong set of weights would be caught (outputs differ by > 50 %)."""
    name = FIXTURES[0]
    config, io = fixture(name)
    model, _ = load_official_checkpoint(ROOT / name / "checkpoint.pth", config, weights="model")
    with torch.no_grad():
        assert per_sample_rel(model.net(io["x"], io["labels"]), io["net_out_ema"]) > 0.5


@pytest.mark.skipif("ncsnpp_ve" not in FIXTURES, reason="needs the ncsnpp_ve fixture")
def test_numpy_scalar_optimizer_entry_loads_with_weights_only():
    path = ROOT / "ncsnpp_ve" / "checkpoint.pth"
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
        load_official_checkpoint(ROOT / "ddpmpp_vp" / "checkpoint.pth", wrong)
    wider = copy.deepcopy(config)
    wider["model"]["nf"] = 8
    with pytest.raises(ValueError, match=r"shape mismatches \([1-9]\d*\)"):
        load_official_checkpoint(ROOT / "ddpmpp_vp" / "checkpoint.pth", wider)
    # a truncated EMA list is refused (the official copy_to would silently zip it short)
    ckpt = torch_load_official(ROOT / "ddpmpp_vp" / "checkpoint.pth")
    ckpt["ema"]["shadow_params"] = ckpt["ema"]["shadow_params"][:-1]
    torch.save(ckpt, tmp_path / "short.pth")
    with pytest.raises(ValueError, match="EMA shadow list has 563 entries but the network has 564"):
        load_official_checkpoint(tmp_path / "short.pth", config, weights="ema")
    # a missing weight is listed by name
    net = official_network(config)
    sd = dict(ckpt["model"])
    sd.pop("module.all_modules.5.Conv_1.weight")
    with pytest.raises(ValueError, match=r"missing \(1\): \['dec|missing \(1\): \['enc"):
        convert_official_state_dict(net, sd)


def test_bad_arguments():
    config, _ = fixture(FIXTURES[0])
    with pytest.raises(ValueError, match="weights must be 'ema' or 'model'"):
        load_official_checkpoint(ROOT / FIXTURES[0] / "checkpoint.pth", config, weights="avg")
    bad = copy.deepcopy(config)
    bad["model"]["name"] = "ncsnv2_64"
    with pytest.raises(ValueError, match="'ncsnv2_64' is not supported"):
        official_network(bad)
