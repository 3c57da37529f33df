"""The demo cannot fail silently: it states a plan, refuses a limit it cannot meet, and returns an exit status."""

import json
import time
import types

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


def test_train_watch_shows_progress_and_ends_training_when_the_next_step_would_not_fit():
    """The trainer's on_step of the demo: a progress line on the first and the last step (lines are at most every
    few seconds in between); with a deadline, True once the reserve plus one step no longer fits before it."""
    said = []
    watch = demo._TrainWatch(100, said.append, rate=0.01)
    assert not watch(1, 0.5, 0.01) and not watch(2, 0.3, 0.02)
    assert not watch(100, 0.1, 1.0)  # the last step: no deadline, never True
    assert len(said) == 2 and said[0].startswith("  train: step 1/100 (1%), loss 0.5")
    assert said[1].startswith("  train: step 100/100 (100%), loss 0.2")  # the mean over the steps since the last line
    roomy = demo._TrainWatch(100, said.append, deadline=time.monotonic() + 60, reserve=10.0, rate=1.0)
    assert not roomy(1, 0.5, 1.0)  # 60 s left, 10 s reserved: a step of 1 s fits
    tight = demo._TrainWatch(100, said.append, deadline=time.monotonic() + 10.5, reserve=10.0, rate=1.0)
    assert tight(1, 0.5, 1.0)  # 10.5 s left, 10 s reserved: a step of 1 s does not


def test_demo_trains_once_through_on_step_and_says_when_the_limit_cut_it(monkeypatch, tmp_path):
    """One train() call: the demo's on_step ends it early when the limit comes near (TIME LIMIT, exit status 1 when
    the weak model then fails), and the cut is said; the trainer's JSON rows are not printed."""
    pytest.importorskip("sklearn")
    calls, said, clock = [], [], [1000.0]
    monkeypatch.setattr(demo, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))  # the demo's clock

    class Stop(Exception):
        pass

    def fake_train(cfg, *, on_step, say, progress, **kw):
        calls.append(kw)
        say('{"step": 1, "loss": 1.0}')
        say("training 10 parameters")
        step = 0
        while step < cfg.training.steps:
            step += 1
            clock[0] += 0.2  # a step takes 0.2 s: twice the measured 0.1 s
            if on_step(step, 1.0, 0.2 * step):
                break
        raise Stop(step)

    monkeypatch.setattr(demo, "train", fake_train)  # the demo imports train at its top
    monkeypatch.setattr(demo, "_measure_speed", lambda *a: {"step": 0.1, "forward": 1e-3, "vjp": 1e-5})
    # 2 minutes: ~1140 of 4000 steps fit at the measured 0.1 s per step (a NOTE, training goes ahead); at the true
    # 0.2 s per step the watch ends training before 600 steps (120 s less the small reserve)
    with pytest.raises(Stop) as stopped:
        demo.run_demo(demo.demo_config(), outdir=str(tmp_path), max_minutes=2, threads=1, say=said.append)
    assert len(calls) == 1 and not calls[0].get("resume")  # one call, no chunked resumes
    assert 500 < stopped.value.args[0] < 600, stopped.value.args  # the watch ended training, before the deadline
    assert clock[0] < 1000.0 + 120
    assert "training 10 parameters" in said and not any(s.startswith('{"step"') for s in said)
    assert any(s.startswith("NOTE: at the measured speed about") for s in said)


@pytest.mark.slow  # ~30 s on 2 shared cores: the whole pipeline with 3 training steps
def test_quick_demo_runs_and_exits_0(tmp_path, capsys):
    pytest.importorskip("sklearn")
    cfg = demo.demo_config(quick=True)
    assert demo.run_demo(cfg, outdir=str(tmp_path), quick=True, threads=1) == 0
    figures = json.loads((tmp_path / "demo.json").read_text())
    assert figures["steps"] == 3 and figures["quick"] and (tmp_path / "samples.png").stat().st_size > 100
    assert "SMOKE RUN" in capsys.readouterr().out


def test_cli_passes_max_minutes_and_refuses_a_bad_one(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda cfg, **kw: seen.update(kw) or 0)
    assert main(["demo", "--max-minutes", "7.5"]) == 0 and seen["max_minutes"] == 7.5
    with pytest.raises(SystemExit) as err:
        main(["demo", "--max-minutes", "0"])
    assert err.value.code == 2 and "must be a positive number of minutes, got 0.0" in capsys.readouterr().err
