"""The 39 official score_sde_pytorch configs: the library's table equals the official config dicts of the
fixtures' index.json, every buildable one builds at full size with the official parameter count, NCSN /
NCSNv2 are refused first, optional fields are read as the official code reads them, names resolve, and
each network preset equals the official configs it claims."""

import ast
import copy
import inspect
import json
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn

from scoresde.interop import OFFICIAL_CONFIGS, official_config
from scoresde.interop.official import (
    SigmaIndexScaling,
    load_official_checkpoint,
    official_layout,
    official_network,
    official_network_kwargs,
    official_score_model,
    resolve_official_config,
)
from scoresde.nn import presets as presets_module
from scoresde.nn.layers import ResBlock
from scoresde.nn.presets import NETWORKS, OFFICIAL_EQUIVALENTS, PRESETS, build_network

ROOT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "score_sde_pytorch"
INDEX = json.loads((ROOT / "index.json").read_text()) if (ROOT / "index.json").exists() else None
pytestmark = pytest.mark.skipif(INDEX is None, reason=f"index.json not found under {ROOT}")
ENTRIES = {e["config"].removeprefix("configs/").removesuffix(".py"): e
           for e in (INDEX or {}).get("full_size_params", [])}
UNBUILDABLE = ("ncsn", "ncsnv2_64", "ncsnv2_128", "ncsnv2_256")


def n_params(net):
    return sum(p.numel() for p in net.parameters())


@cache
def full_size_network(name):
    with torch.device("meta"):  # no memory, no initialisation cost
        return official_network(name)


def normalised(cls, kwargs):
    """(class name, every constructor argument) with defaults filled in and lists as tuples."""
    full = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    full.update(kwargs)
    return cls.__name__, {k: tuple(v) if isinstance(v, list) else v for k, v in full.items()}


def test_table_equals_the_official_config_dicts():
    assert len(ENTRIES) == len(OFFICIAL_CONFIGS) == 39 and set(ENTRIES) == set(OFFICIAL_CONFIGS)
    for name, entry in ENTRIES.items():
        official = {k: v for k, v in entry["config_dict"].items() if k != "sde"}  # `sde`: added by the generator
        assert json.loads(json.dumps(official_config(name))) == official, name


def test_fixture_configs_are_the_named_configs_with_the_reductions():
    for folder in sorted(p for p in ROOT.iterdir() if (p / "config.json").exists()):
        fixture = json.loads((folder / "config.json").read_text())
        ours = json.loads(json.dumps(official_config(fixture["source_config"])))  # tuples as lists
        for field, change in fixture["reduced"].items():
            section, key = field.split(".")
            assert ours[section][key] == change["official"]
            ours[section][key] = change["fixture"]
        for section in ("model", "data", "training"):
            assert ours[section] == fixture[section], (folder.name, section)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_official_config_builds_at_full_size_or_is_refused(name):
    entry = ENTRIES[name]
    model_name = entry["config_dict"]["model"]["name"]
    if model_name in UNBUILDABLE:
        with pytest.raises(ValueError, match=f"official model '{model_name}' .* cannot be built by the official"):
            official_network(name)
        return
    net = full_size_network(name)
    count = n_params(net)
    if "params" in entry:
        assert count == entry["params"]
    else:  # vp/ddpm/cifar10_unconditional: the official code crashes; its evident fix keeps unused Dense_0
        assert not entry["config_dict"]["model"]["conditional"]
        unused = sum((4 * 128 + 1) * m.conv0.out_channels for m in net.modules() if isinstance(m, ResBlock))
        assert count + unused == entry["params_with_construction_workaround"]


@pytest.mark.parametrize("model_name", UNBUILDABLE)
def test_ncsn_is_refused_before_any_other_field_is_read(model_name):
    # nothing but the name: reading any other field first would raise "lacks ..." instead
    with pytest.raises(ValueError, match="cannot be built by the official score_sde_pytorch code itself"):
        official_network({"model": {"name": model_name}})
    with pytest.raises(ValueError, match="cannot be built by the official"):
        load_official_checkpoint("/nonexistent/checkpoint.pth", {"model": {"name": model_name}})
    with pytest.raises(ValueError, match="cannot be built by the official"):
        official_score_model(nn.Identity(), {"model": {"name": model_name}})


def test_names_resolve_and_bad_names_list_the_known_ones():
    assert official_config("configs/vp/cifar10_ddpmpp_continuous.py") == official_config("vp/cifar10_ddpmpp_continuous")
    first = official_config("ve/cifar10_ncsnpp")
    first["model"]["nf"] = 1
    assert official_config("ve/cifar10_ncsnpp")["model"]["nf"] == 128  # a fresh copy every time
    with pytest.raises(ValueError, match=r"unknown official config 've/cifar10_ncsn'(.|\n)*ve/cifar10_ncsnpp\n"):
        official_config("ve/cifar10_ncsn")

    class ConfigDict:  # the official ml_collections configs are converted with to_dict()
        def to_dict(self):
            return official_config("ve/cifar10_ddpm")

    assert resolve_official_config(ConfigDict()) == official_config("ve/cifar10_ddpm")
    # the by-name config reaches the loader: a reduced checkpoint does not fit the full-size network
    if (ROOT / "ddpmpp_vp" / "checkpoint.pth").exists():
        with pytest.raises(ValueError, match=r"shape mismatches \([1-9]"):
            load_official_checkpoint(ROOT / "ddpmpp_vp" / "checkpoint.pth", "vp/cifar10_ddpmpp_continuous")


def test_sigma_index_scaling_exactly_for_the_discrete_ve_configs():
    """The official code divides by sigmas[label] where scale_by_sigma meets a σ-index input (NCSN++ with a
    sinusoidal embedding, the DDPM U-Net): that is the three buildable discrete-VE configs and no other."""
    buildable = [n for n in OFFICIAL_CONFIGS if official_config(n)["model"]["name"] not in UNBUILDABLE]
    wrapped = {n for n in buildable if isinstance(full_size_network(n), SigmaIndexScaling)}
    discrete_ve = {n for n in buildable if official_config(n)["training"] == {"sde": "vesde", "continuous": False}}
    assert wrapped == discrete_ve == {"ve/cifar10_ncsnpp", "ve/celeba_ncsnpp", "ve/cifar10_ddpm"}


@pytest.mark.parametrize("name", ["ve/cifar10_ncsnpp_continuous", "ve/cifar10_ncsnpp", "vp/cifar10_ddpmpp",
                                  "vp/ddpm/cifar10_unconditional", "subvp/cifar10_ddpm_continuous"])
def test_missing_fields_get_official_defaults_or_a_clear_error(name):
    """Delete each field in turn: the config still resolves (a field the official code does not read here, or
    one with an official default) or raises a ValueError naming the field — never a KeyError. (A default can
    itself be refused: embedding_type defaults to 'fourier', which the official NCSN++ refuses for discrete
    training, and says so naming model.embedding_type.)"""
    defaults = {("training", "continuous"), ("data", "centered"), ("data", "num_channels"), ("model", "conditional"),
                ("model", "embedding_type"), ("model", "sigma_min"), ("model", "beta_min"), ("model", "beta_max"),
                ("model", "nonlinearity")}
    base = official_config(name)
    for section in ("model", "data", "training"):
        for key in base[section]:
            cfg = copy.deepcopy(base)
            del cfg[section][key]
            try:
                official_network_kwargs(cfg)
                official_score_model(nn.Identity(), cfg)
            except ValueError as err:
                assert f"{section}.{key}" in str(err) or (key == "name" and "'model' section" in str(err)), \
                    (section, key, err)
                assert (section, key) not in defaults or "lacks" not in str(err)
    # conditional: True when absent (the value of every official config but vp/ddpm/cifar10_unconditional)
    cfg = copy.deepcopy(base)
    del cfg["model"]["conditional"]
    assert official_network_kwargs(cfg)[1]["conditional"] is True


def preset_network(preset, **overrides):
    cls_name, kwargs = PRESETS[preset]
    return normalised(NETWORKS[cls_name], {**kwargs, **overrides})


def official_networks():
    out = {}
    for name in OFFICIAL_CONFIGS:
        if official_config(name)["model"]["name"] not in UNBUILDABLE:
            out[name] = normalised(*official_network_kwargs(name))
    return out


def test_presets_equal_exactly_the_official_configs_they_claim():
    official = official_networks()
    for preset, claimed in OFFICIAL_EQUIVALENTS.items():
        equal = {name for name, net in official.items() if net == preset_network(preset)}
        assert equal == set(claimed), preset
        with torch.device("meta"):
            count = n_params(build_network(preset))
        assert all(count == ENTRIES[name]["params"] for name in claimed), preset
        # the docstring's bullet for this preset names every claimed config
        doc = presets_module.__doc__
        bullet = doc[doc.index(f"* ``{preset}``"):].split("\n* ")[0]
        assert all(name in bullet for name in claimed), preset
    # the docstring's derived statements: the remaining official networks are presets with a few overrides
    derived = {("ncsnpp_cifar10_positional", (("num_res_blocks", 8),)): {"vp/cifar10_ncsnpp_deep_continuous",
                                                                        "subvp/cifar10_ncsnpp_deep_continuous"},
               ("ncsnpp_cifar10_positional", (("centered", False),)): {"ve/cifar10_ncsnpp"},
               ("ncsnpp_cifar10_positional", (("centered", False), ("image_size", 64))): {"ve/celeba_ncsnpp"},
               ("ddpm_cifar10", (("centered", False),)): {"ve/cifar10_ddpm"},
               ("ddpm_cifar10", (("conditional", False),)): {"vp/ddpm/cifar10_unconditional"}}
    for (preset, overrides), names in derived.items():
        assert {n for n, net in official.items() if net == preset_network(preset, **dict(overrides))} == names
    covered = set().union(*OFFICIAL_EQUIVALENTS.values(), *derived.values())
    assert covered == set(official)  # every buildable official network is a preset (with those overrides)


def test_unconditional_ncsnpp_layout_and_forward():
    """conditional=False in NCSN++ (no official config uses it; the official forward then ignores its Fourier
    projection and the blocks' Dense_0): our network has neither, and the layout marks the projection."""
    cfg = official_config("ve/cifar10_ncsnpp_continuous")
    cfg["model"].update(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,))
    cfg["data"]["image_size"] = 16
    conditional = official_layout(cfg)
    cfg["model"]["conditional"] = False
    layout = official_layout(cfg)
    assert layout[0] is None and layout[1:] == conditional[3:] and conditional[:3] == ["embed", "emb_dense0",
                                                                                         "emb_dense1"]
    net = official_network(cfg)
    assert not hasattr(net, "embed") and all(m.emb_proj is None for m in net.modules() if isinstance(m, ResBlock))
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.5, 5.0])  # scale_by_sigma still divides by the σ input
    torch.testing.assert_close(net(x, sigma) * sigma[:, None, None, None], net(x, sigma.flip(0)) *
                               sigma.flip(0)[:, None, None, None])


def test_the_interop_imports_at_the_top():
    """Every import of the checkpoint interop, torch's included, at the top (nn/ being a leaf, and the import
    directions of the whole package, are tests/test_layers.py's)."""
    src = Path(__file__).resolve().parents[1] / "src" / "scoresde"
    for path in sorted((src / "interop").glob("official*.py")):
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                assert id(node) in top, f"{path.name}:{node.lineno} imports inside a function"
