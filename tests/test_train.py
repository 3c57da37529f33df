"""Training loop: learns a 2-D mixture, runs on digits, resumes bit for bit, stops on NaN, refuses a new model."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from scoresde import config as C
from scoresde.checkpoint import list_checkpoints, load_checkpoint
from scoresde.data import toy_mixture
from scoresde.train import TrainingDiverged, lr_at, train

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
    with pytest.raises(C.ConfigError, match="cannot resume from .*ckpt_000000003.pt: it was trained with model"):
        train(toy_cfg(tmp_path, "training.steps=6", "model.options.hidden=48"), resume=True, **QUIET)


class ExplodingScore(nn.Module):
    """Finite for the first ``good`` calls, then finite but so large (1e30) that the float32 loss overflows."""

    def __init__(self, good):
        super().__init__()
        self.lin, self.calls, self.good = nn.Linear(2, 2), 0, good

    def forward(self, x, t):
        self.calls += 1
        out = self.lin(x)
        return out * 1e30 if self.calls > self.good else out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    message = r"loss is inf at step 4; stopping. Last good checkpoint: .*ckpt_000000003.pt"
    with pytest.raises(TrainingDiverged, match=message):
        train(toy_cfg(tmp_path, "training.steps=10"), model=ExplodingScore(good=4), **QUIET)
    paths = list_checkpoints(str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["ckpt_000000003.pt"]
    state = load_checkpoint(paths[-1])
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_autocast_and_compile_on_cuda(tmp_path):
    cfg = toy_cfg(tmp_path, "training.steps=20", "training.device=cuda", "training.amp=bf16", "training.compile=true")
    result = train(cfg, **QUIET)
    assert next(result.model.parameters()).is_cuda
    losses = torch.tensor([v for _, v in result.losses])
    assert torch.isfinite(losses).all() and losses[-5:].mean() < losses[:5].mean()
