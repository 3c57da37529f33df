"""load_run / export_run: a run directory or an export comes back as the same score function, bit for bit."""

import os

import pytest
import torch

from scoresde import config as C
from scoresde.checkpoint import list_checkpoints, load_checkpoint
from scoresde.run import load_run
from scoresde.train import train

QUIET = dict(progress=False, say=lambda *a, **k: None)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    cfg = C.apply_overrides(C.preset("toy2d"), [
        f"training.workdir={workdir}", "training.steps=6", "training.batch_size=32", "model.options.hidden=16",
        "model.options.layers=2", "training.log_every=1", "training.ckpt_every=3", "data.toy_size=500"])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(cfg, **QUIET)
    finally:
        torch.set_num_threads(before)
    return workdir, result


def _score(model, x, t):
    with torch.no_grad():
        return model(x, t)


def test_load_run_equals_trained_ema(toy_run, gen):
    workdir, result = toy_run
    run = load_run(workdir)
    x, t = torch.randn(8, 2, generator=gen), torch.rand(8, generator=gen) * 0.9 + 0.05
    assert run.step == 6 and run.weights == "ema" and run.data_shape == (2,)
    assert torch.equal(_score(run.model, x, t), _score(result.ema.module, x, t))
    raw = load_run(workdir, weights="model")
    assert torch.equal(_score(raw.model, x, t), _score(result.model, x, t))
    assert not torch.equal(_score(raw.model, x, t), _score(run.model, x, t))  # EMA and raw weights differ


def test_load_run_step_and_errors(toy_run, tmp_path):
    workdir, _ = toy_run
    first = load_run(workdir, step=3)
    state = load_checkpoint(list_checkpoints(workdir)[0])
    assert first.step == 3 == state["step"]
    with pytest.raises(FileNotFoundError, match=r"step 4 .*available steps: \[3, 6\]"):
        load_run(workdir, step=4)
    with pytest.raises(ValueError, match="weights"):
        load_run(workdir, weights="best")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_run(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_run(str(tmp_path / "missing"))


def test_export_round_trip(toy_run, tmp_path, gen):
    pytest.importorskip("safetensors", reason="exports need the optional safetensors package (scoresde[export])")
    from scoresde.run import export_run

    workdir, result = toy_run
    out = export_run(workdir, str(tmp_path / "export"))
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    run = load_run(out)
    x, t = torch.randn(8, 2, generator=gen), torch.rand(8, generator=gen) * 0.9 + 0.05
    assert run.step == 6 and run.data_shape == (2,) and run.config == result_config(workdir)
    assert torch.equal(_score(run.model, x, t), _score(result.ema.module, x, t))
    with pytest.raises(FileExistsError, match="out="):
        export_run(workdir, out)
    with pytest.raises(ValueError, match="holds the 'ema' weights only"):
        load_run(out, weights="model")


def result_config(workdir):
    return C.from_dict(load_checkpoint(list_checkpoints(workdir)[-1])["config"])


def test_export_command_round_trip(toy_run, tmp_path, gen):
    pytest.importorskip("safetensors", reason="exports need the optional safetensors package (scoresde[export])")
    from scoresde.cli import main

    workdir, result = toy_run
    out = str(tmp_path / "cli_export")
    assert main(["export", "--workdir", workdir, "--out", out, "--step", "3"]) == 0
    run = load_run(out)
    assert run.step == 3 and run.weights == "ema"
    assert main(["export", "--workdir", workdir, "--out", out]) == 2  # an existing export is never written over
