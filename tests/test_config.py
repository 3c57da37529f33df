import dataclasses
import sys

import pytest

from scoresde import config as C


def test_every_preset_round_trips_through_dict_and_toml(tmp_path):
    if sys.version_info < (3, 11):
        pytest.importorskip("tomli")
    for name in C.PRESETS:
        cfg = C.preset(name)
        assert C.from_dict(C.to_dict(cfg)) == cfg
        path = tmp_path / f"{name}.toml"
        path.write_text(C.to_toml(cfg))
        assert C.load_toml(str(path)) == cfg


def test_configs_are_frozen():
    cfg = C.Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.training.steps = 3


def test_paper_hyperparameters():
    vp, ve = C.preset("ddpmpp_cifar10_vp"), C.preset("ncsnpp_cifar10_ve")
    for cfg in (vp, ve):  # Song et al. 2021, App. H
        assert (cfg.optim.lr, cfg.optim.warmup, cfg.optim.grad_clip, cfg.training.batch_size) == (2e-4, 5000, 1.0, 128)
    assert (vp.optim.ema_decay, ve.optim.ema_decay) == (0.9999, 0.999)
    sf = C.preset("scoreflow_cifar10_vp")
    assert sf.loss.weighting == "likelihood" and sf.loss.importance_sampling


def test_overrides_are_parsed_by_field_type():
    cfg = C.apply_overrides(C.preset("toy2d"), ["training.steps=7", "optim.lr=1e-3", "data.centered=false",
                                                "sde.name=ve", "model.options.hidden=16", "optim.warmup=0"])
    assert cfg.training.steps == 7 and cfg.optim.lr == 1e-3 and cfg.data.centered is False
    assert cfg.sde.name == "ve" and cfg.model.options["hidden"] == 16 and cfg.model.options["layers"] == 3
    assert C.apply_overrides(cfg, ["optim.lr=1"]).optim.lr == 1.0  # an int is a valid float


@pytest.mark.parametrize("override, message", [
    ("training.stepz=3", "unknown config field 'training.stepz'; fields of \\[training\\] are \\['steps'"),
    ("trainin.steps=3", "unknown config section 'trainin'"),
    ("training.steps=3.5", "'training.steps' must be of type int, got '3.5'"),
    ("data.centered=maybe", "'data.centered' must be of type bool, got 'maybe'"),
    ("optim.lr=fast", "'optim.lr' must be of type float, got 'fast'"),
    ("training.steps", "must look like section.field=value"),
])
def test_bad_override_is_a_clear_error(override, message):
    with pytest.raises(C.ConfigError, match=message):
        C.apply_overrides(C.Config(), [override])


def test_bad_toml_is_a_clear_error(tmp_path):
    if sys.version_info < (3, 11):
        pytest.importorskip("tomli")
    path = tmp_path / "bad.toml"
    path.write_text('preset = "digits"\n[training]\nsteps = "many"\n')
    with pytest.raises(C.ConfigError, match="'training.steps' must be of type int, got 'many' \\(str\\)"):
        C.load_toml(str(path))
    path.write_text('[optim]\nlearning_rate = 1e-3\n')
    with pytest.raises(C.ConfigError, match="unknown config field 'optim.learning_rate'"):
        C.load_toml(str(path))
    path.write_text('[training]\nsteps = true\n')
    with pytest.raises(C.ConfigError, match="must be of type int"):
        C.load_toml(str(path))
    with pytest.raises(C.ConfigError, match="unknown preset 'nope'"):
        C.preset("nope")


def test_toml_preset_then_tables(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "digits"\n[training]\nsteps = 12\n[model.options]\nnf = 16\n')
    cfg = C.load_toml(str(path))
    assert cfg.data.name == "digits" and cfg.training.steps == 12 and cfg.model.options == {"nf": 16}
