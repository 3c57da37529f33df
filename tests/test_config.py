import dataclasses
import sys

import pytest

from scoresde import config as C
from scoresde.validation import validate


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


def test_every_preset_is_valid():
    for name in C.PRESETS:
        assert validate(C.preset(name)) == C.preset(name)


@pytest.mark.parametrize("override, message", [
    ("training.ckpt_every=0", "training.ckpt_every=0 is not allowed: it must be an integer >= 1"),
    ("training.log_every=0", "training.log_every=0 is not allowed"),
    ("training.grad_accum=0", "training.grad_accum=0 is not allowed"),
    ("training.batch_size=0", "training.batch_size=0 is not allowed"),
    ("training.keep=0", "training.keep=0 is not allowed"),
    ("training.steps=-5", "training.steps=-5 is not allowed"),
    ("training.sample_every=-1", "training.sample_every=-1 is not allowed: it must be an integer >= 0"),
    ("training.batch_size=100", "training.batch_size=100 must be divisible by training.grad_accum=3"),
    ("training.amp=fp16", "unknown training.amp 'fp16'; choose one of \\['bf16', 'none'\\]"),
    ("training.device=tpu", "unknown training.device 'tpu'; choose one of auto, cpu, cuda, cuda:N or mps"),
    ("training.device=cuda:99", "training.device='cuda:99', but"),
    ("model.options.widht=3", "model.options \\['widht'\\] are not arguments of network 'mlp' \\(MLPScoreNet\\); "
                              "allowed: \\['dim', 'emb_dim'"),
    ("model.network=unet9", "unknown model.network 'unet9'"),
    ("model.parameterization=v2", "unknown model.parameterization 'v2'"),
    ("sde.sigma_max=0.001", "sde \\(name 've'\\): sigma_max must exceed sigma_min"),
    ("sde.name=vee", "unknown sde.name 'vee'"),
    ("loss.weighting=sigma", "unknown loss.weighting 'sigma'"),
    ("optim.lr=0", "optim.lr=0.0 is not allowed: it must be a finite number in \\(0, inf\\)"),
    ("optim.ema_decay=1.5", "optim.ema_decay=1.5 is not allowed: it must be a finite number in \\[0, 1\\)"),
    ("sampling.method=heun", "unknown sampling.method 'heun'; choose one of \\['ancestral', 'annealed_langevin', "
                             "'dpm_solver', 'euler_maruyama', 'ode', 'pc'\\]"),
    ("sampling.corrector=annealed_langevin", "sampling.method='annealed_langevin' with sampling.levels"),
    ("sampling.predictor=ddim", "unknown sampling.predictor 'ddim'"),
    ("sampling.steps=0", "sampling.steps=0 is not allowed"),
    ("sampling.snr=-1", "sampling.snr=-1.0 is not allowed"),
    ("sampling.eps=1.5", "sampling.eps=1.5 is not allowed: it must be a finite number in \\(0, 1\\)"),
    ("sampling.order=4", "unknown sampling.order 4"),
    ("sampling.grid=karras", "unknown sampling.grid 'karras'"),
    ("sampling.solver=dopri9", "unknown sampling.solver 'dopri9'"),
    ("sampling.rtol=nan", "sampling.rtol=nan is not allowed"),
    ("eval.divergence=hutch", "unknown eval.divergence 'hutch'; choose one of \\['exact', 'gaussian', 'rademacher'\\]"),
    ("eval.batch_size=0", "eval.batch_size=0 is not allowed"),
    ("eval.probes=0", "eval.probes=0 is not allowed"),
    ("data.name=imagenet", "unknown data.name 'imagenet'"),
])
def test_validate_names_field_value_and_what_is_allowed(override, message):
    extra = ["training.grad_accum=3"] if "divisible" in message else []
    extra += ["sde.name=ve"] if override.startswith("sde.sigma") else []
    cfg = C.apply_overrides(C.preset("toy2d"), [override, *extra])
    if override == "training.device=cuda:99":
        import torch

        if torch.cuda.device_count() > 99:
            pytest.skip("this machine has 100 CUDA devices")
    with pytest.raises(C.ConfigError, match=message):
        validate(cfg)


def test_validate_reports_every_problem_at_once_and_skips_what_is_not_used():
    cfg = C.apply_overrides(C.preset("toy2d"), ["training.ckpt_every=0", "sampling.method=x", "eval.probes=0",
                                                "model.options.nope=1", "optim.lr=-1"])
    with pytest.raises(C.ConfigError, match="5 invalid config values") as info:
        validate(cfg)
    for field in ("training.ckpt_every", "sampling.method", "eval.probes", "model.options", "optim.lr"):
        assert field in str(info.value)
    # sample / likelihood do not use [training] or [optim]; a user's own network does not use [model]
    with pytest.raises(C.ConfigError, match="3 invalid config values"):
        validate(cfg, training=False)
    with pytest.raises(C.ConfigError, match="2 invalid config values"):
        validate(cfg, training=False, model=False)


def test_train_validates_before_any_work(tmp_path):
    from scoresde.train import train

    cfg = C.apply_overrides(C.preset("toy2d"), [f"training.workdir={tmp_path / 'w'}", "eval.divergence=hutch"])
    with pytest.raises(C.ConfigError, match="unknown eval.divergence 'hutch'"):
        train(cfg)
    assert not (tmp_path / "w").exists()


def test_invalid_toml_names_the_file(tmp_path):
    if sys.version_info < (3, 11):
        pytest.importorskip("tomli")
    path = tmp_path / "broken.toml"
    path.write_text("[training\nsteps = 3\n")
    with pytest.raises(C.ConfigError, match=f"{path} is not valid TOML: .*line 1"):
        C.load_toml(str(path))
