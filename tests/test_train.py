"""Training loop: learns a 2-D mixture, runs on digits, resumes bit for bit, stops on NaN, refuses a new model."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from scoresde import config as C
from scoresde.checkpoint import CheckpointWriteError, CorruptCheckpointError, list_checkpoints, load_checkpoint
from scoresde.data import toy_mixture
from scoresde.rundir import WorkdirLocked
from scoresde.train import TrainingDiverged, TrainingInterrupted, lr_at, train
from tests.common import seeded_init

QUIET = dict(progress=False, say=lambda *a, **k: None)


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_cfg(workdir, *extra):
    return C.apply_overrides(C.preset("toy2d"), [
        f"training.workdir={workdir}", "training.batch_size=64", "model.options.hidden=32", "model.options.layers=2",
        "training.log_every=1", "training.ckpt_every=3", "optim.warmup=5", "data.toy_size=2000", *extra])


def metric_losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [(r["step"], r["loss"]) for r in map(json.loads, f) if "loss" in r]


def test_warmup_schedule():
    oc = C.OptimConfig(lr=2e-4, warmup=5000)
    assert lr_at(0, oc) == pytest.approx(2e-4 / 5000) and lr_at(2499, oc) == pytest.approx(1e-4)
    assert lr_at(4999, oc) == 2e-4 and lr_at(10**6, oc) == 2e-4
    assert lr_at(0, C.OptimConfig(lr=1e-3, warmup=0)) == 1e-3


@pytest.mark.slow
def test_learns_the_2d_mixture(tmp_path):
    """600 steps, then 4000 PC samples: mode weights, means and spreads against the exact mixture."""
    from scoresde.sampling import sample_pc

    cfg = C.apply_overrides(C.preset("toy2d"), [
        f"training.workdir={tmp_path}", "training.steps=600", "training.batch_size=256", "optim.lr=3e-3",
        "optim.warmup=50", "optim.ema_decay=0.99", "training.ckpt_every=100000", "training.log_every=100"])
    result = train(cfg, **QUIET)
    gen = torch.Generator().manual_seed(0)
    x = sample_pc(result.ema.module, result.ema.module.sde, (4000, 2), steps=200, corrector="none",
                  generator=gen).x.double()
    gm = toy_mixture()
    label = gm.responsibilities(x).argmax(1)
    weights = label.bincount(minlength=3).double() / x.shape[0]
    # sampling noise of a weight: sqrt(.25/4000) = 0.008; the rest is the model's error after 600 steps
    torch.testing.assert_close(weights, gm.weights, atol=0.04, rtol=0)
    for k in range(3):
        xs = x[label == k]
        # means: std 0.5/sqrt(800) < 0.02 from sampling; spreads: a learned score at 600 steps over-disperses
        # by ~10-20% (measured 8-19%), so we allow 35% — an untrained model spreads by > 300%
        torch.testing.assert_close(xs.mean(0), gm.means[k], atol=0.15, rtol=0)
        ratio = xs.std(0) / gm.stds[k]
        assert ((ratio > 0.75) & (ratio < 1.35)).all(), (k, ratio)


class TinyConvScore(nn.Module):
    """A stand-in score model for (B, 1, 8, 8) digits: two convolutions with a time input."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 1, 3, padding=1)

    def forward(self, x, t):
        h = torch.cat([x, t.reshape(-1, 1, 1, 1).expand_as(x)], 1)
        return self.b(torch.nn.functional.silu(self.a(h)))


def test_a_few_steps_on_digits_reduce_the_loss(tmp_path):
    pytest.importorskip("sklearn")
    cfg = C.apply_overrides(C.preset("digits"), [
        f"training.workdir={tmp_path}", "training.steps=40", "training.batch_size=32", "loss.weighting=sigma2",
        "loss.importance_sampling=false", "optim.lr=3e-3", "optim.warmup=1", "training.log_every=1"])
    result = train(cfg, model=TinyConvScore(), **QUIET)
    losses = torch.tensor([v for _, v in result.losses])
    assert losses.shape == (40,) and torch.isfinite(losses).all()
    # an untrained score (≈0) has loss ½·D·E[λ/σ²]·σ² = 32; the first steps learn the −x/σ² part fast
    assert losses[-10:].mean() < 0.8 * losses[:5].mean()
    state = load_checkpoint(list_checkpoints(str(tmp_path))[-1])
    assert state["step"] == 40 and state["config"]["data"]["name"] == "digits"


def test_kill_and_resume_gives_identical_losses(tmp_path):
    """Uninterrupted vs killed-after-step-8 (hard exit in a subprocess) + truncated newest checkpoint + resume."""
    steps = ["training.steps=12"]
    reference = train(toy_cfg(tmp_path / "ref", *steps), **QUIET)
    ref = [(s, v) for s, v in reference.losses]

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "scoresde.cli", "train", "--preset", "toy2d", "--no-progress", "--stop-after", "8"]
    for item in _as_sets(toy_cfg(run, *steps)):
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [os.path.basename(p) for p in list_checkpoints(str(run))] == ["ckpt_000000003.pt", "ckpt_000000006.pt"]
    assert metric_losses(run) == ref[:8]  # the killed run had already logged steps 7, 8 after its last checkpoint

    newest = list_checkpoints(str(run))[-1]
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) - 100)
    with pytest.warns(RuntimeWarning, match="ckpt_000000006.pt is truncated or corrupt"):
        resumed = train(toy_cfg(run, *steps), resume=True, **QUIET)
    assert resumed.losses[0][0] == 4  # restarted from the step-3 checkpoint
    assert metric_losses(run) == ref  # bit-identical, no duplicated rows
    for a, b in zip(resumed.model.parameters(), reference.model.parameters(), strict=True):
        assert torch.equal(a, b)


def _as_sets(cfg):
    d = C.to_dict(cfg)
    out = [f"{sec}.{key}={val}" for sec, fields in d.items() for key, val in fields.items()
           if not isinstance(val, dict) and val != C.to_dict(C.preset("toy2d"))[sec][key]]
    out += [f"model.options.{k}={v}" for k, v in d["model"]["options"].items()]
    return out


def test_initial_weights_follow_the_seed_and_leave_global_rng_alone(tmp_path):
    state = torch.get_rng_state()
    a = train(toy_cfg(tmp_path / "a", "training.steps=1"), **QUIET).model
    b = train(toy_cfg(tmp_path / "b", "training.steps=1"), **QUIET).model
    c = train(toy_cfg(tmp_path / "c", "training.steps=1", "training.seed=1"), **QUIET).model
    assert torch.equal(torch.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_existing_run_needs_resume_and_same_architecture(tmp_path):
    train(toy_cfg(tmp_path, "training.steps=3"), **QUIET)
    with pytest.raises(FileExistsError, match="--resume"):
        train(toy_cfg(tmp_path, "training.steps=6"), **QUIET)
    with pytest.raises(C.ConfigError, match=r"cannot resume from .*ckpt_000000003.pt: it was trained with a "
                                             r"different configuration \(model.options: .*'hidden': 32.*'hidden': 48"):
        train(toy_cfg(tmp_path, "training.steps=6", "model.options.hidden=48"), resume=True, **QUIET)
    with pytest.raises(C.ConfigError, match="its weights do not fit this architecture"):  # even when allowed
        train(toy_cfg(tmp_path, "training.steps=6", "model.options.hidden=48"), resume=True,
              allow_config_change=True, **QUIET)


def test_resume_refuses_a_different_experiment_unless_allowed(tmp_path):
    train(toy_cfg(tmp_path, "training.steps=3"), **QUIET)
    before = open(tmp_path / "metrics.jsonl").read()
    for change, field in [("sde.beta_max=10.0", "sde.beta_max"), ("loss.weighting=likelihood", "loss.weighting"),
                          ("data.toy_size=3000", "data.toy_size"), ("training.seed=7", "training.seed"),
                          ("optim.lr=0.5", "optim.lr")]:
        with pytest.raises(C.ConfigError, match=rf"different configuration \({field}: .* \(checkpoint\) -> .* "
                                                r"\(now\)\).*allow_config_change=True"):
            train(toy_cfg(tmp_path, "training.steps=6", change), resume=True, **QUIET)
    assert list_checkpoints(str(tmp_path))[-1].endswith("ckpt_000000003.pt")  # refused before any step
    assert open(tmp_path / "metrics.jsonl").read() == before
    # fields that may change: steps, intervals, device, sampling / eval settings
    allowed = ["training.steps=4", "training.log_every=2", "training.ckpt_every=4", "training.device=cpu",
               "sampling.steps=10", "eval.probes=2"]
    assert train(toy_cfg(tmp_path, *allowed), resume=True, **QUIET).step == 4
    # an explicit override continues, and the history records where the experiment changed
    result = train(toy_cfg(tmp_path, "training.steps=6", "sde.beta_max=10.0", "training.ckpt_every=4"), resume=True,
                   allow_config_change=True, **QUIET)
    assert result.step == 6
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert {"step": 4, "config_change": {"sde.beta_max": [20.0, 10.0]}} in rows
    assert load_checkpoint(list_checkpoints(str(tmp_path))[-1])["config"]["sde"]["beta_max"] == 10.0


def test_resume_tolerates_a_torn_metrics_line_and_removes_stale_temporaries(tmp_path):
    train(toy_cfg(tmp_path, "training.steps=3"), **QUIET)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 0.2')  # a full disk during an append
    (tmp_path / ".ckpt_dead1234.tmp").write_bytes(b"a checkpoint a kill cut short")
    with pytest.warns(RuntimeWarning, match="torn last line"):
        train(toy_cfg(tmp_path, "training.steps=5"), resume=True, **QUIET)
    assert [s for s, _ in metric_losses(tmp_path)] == [1, 2, 3, 4, 5]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_resume_falls_back_past_an_empty_newest_checkpoint(tmp_path):
    train(toy_cfg(tmp_path, "training.steps=6"), **QUIET)
    open(list_checkpoints(str(tmp_path))[-1], "wb").close()  # ckpt_000000006.pt: 0 bytes
    with pytest.warns(RuntimeWarning, match="ckpt_000000006.pt .*empty.*falling back"):
        resumed = train(toy_cfg(tmp_path, "training.steps=6"), resume=True, **QUIET)
    assert resumed.losses[0][0] == 4


def _snapshot(directory):
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))
            if name != "train.lock"}


def test_no_readable_checkpoint_refuses_and_changes_nothing(tmp_path):
    train(toy_cfg(tmp_path, "training.steps=6"), **QUIET)
    a, b = list_checkpoints(str(tmp_path))
    open(a, "wb").close()
    with open(b, "r+b") as f:
        f.truncate(100)
    before = _snapshot(tmp_path)
    with pytest.raises(FileExistsError, match="--resume"):
        train(toy_cfg(tmp_path, "training.steps=6"), **QUIET)
    with pytest.warns(RuntimeWarning), pytest.raises(CorruptCheckpointError, match="no readable checkpoint") as info:
        train(toy_cfg(tmp_path, "training.steps=9"), resume=True, **QUIET)
    assert f"{b} is truncated or corrupt" in str(info.value) and f"{a} is truncated or corrupt: the file is empty" \
        in str(info.value)
    assert _snapshot(tmp_path) == before  # the metrics history and the files are kept as they were


def test_a_live_run_locks_the_workdir(tmp_path):
    from tests.common import start_lock_holder as _start_holder

    (tmp_path / ".ckpt_live.tmp").write_bytes(b"the other run is writing this")
    holder = _start_holder(tmp_path)
    try:
        with pytest.raises(WorkdirLocked, match=f"pid {holder.pid}"):
            train(toy_cfg(tmp_path, "training.steps=3"), **QUIET)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert sorted(os.listdir(tmp_path)) == [".ckpt_live.tmp", "train.lock"]  # the live run's files untouched


class TurnsBadScore(nn.Module):
    """Finite for the first ``good`` calls, then multiplied by ``factor``: 1e30 (finite, but the float32 loss
    overflows) or NaN (diverged weights)."""

    def __init__(self, good, factor):
        super().__init__()
        self.lin, self.calls, self.good, self.factor = nn.Linear(2, 2), 0, good, factor

    def forward(self, x, t):
        self.calls += 1
        out = self.lin(x)
        return out * self.factor if self.calls > self.good else out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    message = r"loss is inf at step 4; stopping. Last good checkpoint: .*ckpt_000000003.pt"
    with pytest.raises(TrainingDiverged, match=message):
        train(toy_cfg(tmp_path, "training.steps=10"), model=TurnsBadScore(good=4, factor=1e30), **QUIET)
    paths = list_checkpoints(str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["ckpt_000000003.pt"]
    state = load_checkpoint(paths[-1])
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_disk_full_during_training_keeps_the_last_checkpoints(tiny_disk):  # noqa: F811
    """Checkpoints of ~0.8 MB on a 2 MiB disk: the third does not fit next to the first two."""
    cfg = toy_cfg(tiny_disk, "training.steps=12", "model.options.hidden=80", "model.options.layers=3")
    with pytest.raises(CheckpointWriteError, match=r"ckpt_000000009.pt: the disk is full .*bytes free in"):
        train(cfg, **QUIET)
    paths = list_checkpoints(str(tiny_disk))
    assert [os.path.basename(p) for p in paths] == ["ckpt_000000003.pt", "ckpt_000000006.pt"]
    assert load_checkpoint(paths[-1])["step"] == 6  # intact
    assert not [n for n in os.listdir(tiny_disk) if n.endswith(".tmp")]


def test_nan_model_output_is_training_diverged(tmp_path):
    message = r"the model's output is NaN at step 4; stopping. Last good checkpoint: .*ckpt_000000003.pt"
    with pytest.raises(TrainingDiverged, match=message):
        train(toy_cfg(tmp_path, "training.steps=10"), model=TurnsBadScore(good=4, factor=float("nan")), **QUIET)
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == ["ckpt_000000003.pt"]
    assert [s for s, _ in metric_losses(tmp_path)] == [1, 2, 3, 4]  # nothing written after the bad step


class SignallingScore(nn.Module):
    """The toy MLP's stand-in that sends ``signum`` to its own process during its ``at``-th forward call."""

    def __init__(self, signum, at):
        super().__init__()
        self.lin, self.calls, self.signum, self.at = nn.Linear(2, 2), 0, signum, at

    def forward(self, x, t):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)
        return self.lin(x) * t[:, None]


@pytest.fixture
def signals_not_ignored():
    """SIGINT and SIGTERM at their defaults for the test. A suite started in the background by a
    non-interactive shell inherits SIGINT ignored, and the trainer rightly leaves an ignored signal ignored."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, handler in saved.items():
        if handler is signal.SIG_IGN:
            signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _default_signals():  # in a child process, before exec: undo an inherited SIG_IGN (see signals_not_ignored)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.usefixtures("signals_not_ignored")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_the_step_checkpoints_and_resume_is_bit_exact(tmp_path, signum):
    sets = ["training.steps=11", "training.log_every=4", "training.ckpt_every=100"]
    with seeded_init(0):  # the stand-in's initial weights (the trainer seeds only the models it builds)
        init = SignallingScore(signum, at=0).state_dict()
    reference = SignallingScore(signum, at=0)
    reference.load_state_dict(init)
    ref = train(toy_cfg(tmp_path / "ref", *sets), model=reference, **QUIET)

    model = SignallingScore(signum, at=6)
    model.load_state_dict(init)
    previous = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted, match=f"stopped by {signal.Signals(signum).name} after step 6") as info:
        train(toy_cfg(tmp_path / "run", *sets), model=model, **QUIET)
    assert signal.getsignal(signum) is previous  # handlers restored
    err = info.value
    assert err.step == 6 and err.signum == signum and err.exit_code == 128 + signum
    assert err.checkpoint.endswith("ckpt_000000006.pt") and load_checkpoint(err.checkpoint)["step"] == 6
    assert [s for s, _ in metric_losses(tmp_path / "run")] == [4]  # no extra row at the interrupted step

    again = SignallingScore(signum, at=0)
    again.load_state_dict(init)
    resumed = train(toy_cfg(tmp_path / "run", *sets), model=again, resume=True, **QUIET)
    assert resumed.losses == ref.losses[6:]
    assert metric_losses(tmp_path / "run") == metric_losses(tmp_path / "ref")  # rows 4, 8, 11: same means
    for a, b in zip(resumed.model.parameters(), ref.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_train_command(tmp_path, signum):
    """A real `scoresde train` process: the signal arrives at an unknown step; it exits with 128 + signum
    after checkpointing that step, and the resumed run equals an uninterrupted one bit for bit."""
    sets = ["training.steps=1000000", "training.log_every=4", "training.ckpt_every=1000000"]
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "scoresde.cli", "train", "--preset", "toy2d", "--no-progress"]
    for item in _as_sets(toy_cfg(run, *sets)):
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals)
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists() or b"\n" not in (run / "metrics.jsonl").read_bytes():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no metrics after 120 s"
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 128 + signum, err
    (path,) = list_checkpoints(str(run))
    stopped = load_checkpoint(path)["step"]
    assert f"stopped by {signal.Signals(signum).name} after step {stopped}" in err
    total = [f"training.steps={stopped + 6}", *sets[1:]]
    resumed = train(toy_cfg(run, *total), resume=True, **QUIET)
    reference = train(toy_cfg(tmp_path / "ref", *total), **QUIET)
    assert metric_losses(run) == metric_losses(tmp_path / "ref")
    for a, b in zip(resumed.model.parameters(), reference.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_autocast_and_compile_on_cuda(tmp_path):
    cfg = toy_cfg(tmp_path, "training.steps=20", "training.device=cuda", "training.amp=bf16", "training.compile=true")
    result = train(cfg, **QUIET)
    assert next(result.model.parameters()).is_cuda
    losses = torch.tensor([v for _, v in result.losses])
    assert torch.isfinite(losses).all() and losses[-5:].mean() < losses[:5].mean()


def test_on_step_ends_training_after_that_step_with_a_checkpoint(tmp_path):
    """on_step sees every step (1, 2, ...) with its loss; True at step 4 ends the run there, as max_seconds does:
    a checkpoint of step 4, and resuming continues from it."""
    seen = []

    def on_step(step, loss, elapsed):
        seen.append((step, loss, elapsed))
        return step == 4 or None

    cfg = toy_cfg(tmp_path / "run", "training.steps=10", "training.ckpt_every=100")
    res = train(cfg, on_step=on_step, **QUIET)
    assert res.step == 4 and [s for s, _, _ in seen] == [1, 2, 3, 4]
    assert [loss for _, loss, _ in seen] == [loss for _, loss in res.losses]  # the step's own loss
    assert all(b >= a >= 0 for (_, _, a), (_, _, b) in zip(seen, seen[1:], strict=False))  # elapsed, increasing
    assert [os.path.basename(p) for p in list_checkpoints(tmp_path / "run")] == ["ckpt_000000004.pt"]
    assert train(cfg, resume=True, **QUIET).step == 10
    with pytest.raises(TypeError, match="on_step must be None or a callable"):
        train(toy_cfg(tmp_path / "other", "training.steps=1"), on_step=3, **QUIET)
