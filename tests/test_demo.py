"""The demo cannot fail silently: it states a plan, refuses a limit it cannot meet, and returns an exit status."""

import json
import time

import pytest
import torch

from scoresde import demo
from scoresde.cli import main
from scoresde.sde import VPSDE


def test_demo_refuses_up_front_when_too_few_steps_fit_and_exits_1(monkeypatch, tmp_path, capsys):
    """A machine measured at 1 s per step fits ~1000 of 4000 steps in 20 minutes: a note, training goes ahead;
    at 2 s per step only ~500 fit, fewer than DEMO_MIN_STEPS: the demo says so before training and exits 1."""
    pytest.importorskip("sklearn")
    monkeypatch.delenv(demo.MINUTES_ENV, raising=False)
    monkeypatch.setattr(demo, "_measure_speed", lambda *a: {"step": 2.0, "forward": 0.01, "vjp": 1e-4})
    assert main(["demo", "--outdir", str(tmp_path)]) == 1  # through the CLI: its exit status is run_demo's
    out = capsys.readouterr().out
    assert "estimated training 2.3 h" in out, out  # 4000 steps × 2 s × 1.05 (data, logging, checkpoints)
    assert "NOT STARTED" in out and demo.MINUTES_ENV in out
    assert not list((tmp_path / "run").glob("*.pt"))  # it trained nothing


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan"])
def test_bad_time_limit_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(demo.MINUTES_ENV, value)
    with pytest.raises(ValueError, match=demo.MINUTES_ENV):
        demo._max_minutes(None)


def test_time_limit_default_and_argument(monkeypatch):
    monkeypatch.delenv(demo.MINUTES_ENV, raising=False)
    assert demo._max_minutes(None) == demo.DEMO_MAX_MINUTES
    assert demo._max_minutes(7) == 7.0
    with pytest.raises(ValueError, match="max_minutes"):
        demo._max_minutes(0)


def test_watched_score_is_the_model_and_enforces_the_deadline():
    sde, said = VPSDE(), []
    model = lambda x, t: -x * t[:, None]  # noqa: E731
    x, t = torch.randn(5, 2, generator=torch.Generator().manual_seed(0)), torch.full((5,), 0.3)
    watched = demo._Watched(model, "sampling", sde, 1e-3, said.append, deadline=time.monotonic() + 60, reverse=True)
    assert torch.equal(watched(x, t), model(x, t)) and watched.nfe == 1
    late = demo._Watched(model, "bits/dim", sde, 1e-5, said.append, deadline=time.monotonic() - 1, reverse=False)
    with pytest.raises(demo._OutOfTime, match="bits/dim"):
        late(x, t)


def test_train_progress_shows_rows_as_progress_and_hides_chunk_banners():
    said = []
    progress = demo._TrainProgress(100, said.append)
    progress("training 10 parameters on cpu")
    progress("training 10 parameters on cpu")  # the next chunk's banner (the demo resumes in chunks)
    progress("resumed from run/ckpt_000000050.pt at step 50")
    progress(json.dumps({"step": 100, "loss": 0.5, "lr": 1e-3}))
    progress("something else")
    assert said[0] == "training 10 parameters on cpu" and len(said) == 3
    assert said[1].startswith("  train: step 100/100 (100%)") and said[2] == "something else"


@pytest.mark.slow  # ~30 s on 2 shared cores: the whole pipeline with 3 training steps
def test_quick_demo_runs_and_exits_0(tmp_path, capsys):
    pytest.importorskip("sklearn")
    cfg = demo.demo_config(quick=True)
    assert demo.run_demo(cfg, outdir=str(tmp_path), quick=True, threads=1) == 0
    figures = json.loads((tmp_path / "demo.json").read_text())
    assert figures["steps"] == 3 and figures["quick"] and (tmp_path / "samples.png").stat().st_size > 100
    assert "SMOKE RUN" in capsys.readouterr().out
