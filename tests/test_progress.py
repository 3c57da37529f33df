"""Progress bars (scoresde.progress): off means no tqdm object at all (so no TqdmWarning in a notebook and no
output); on, every many-step sampler's bar counts its steps; one switch (set_progress / SCORESDE_PROGRESS=0)
turns every bar off."""

import io
import warnings

import pytest
import torch
import tqdm.auto

import scoresde as sd
from scoresde import config as C
from scoresde.controllable import inpaint, inpaint_smc
from scoresde.discrete import DiscreteChain, GaussianReverseKernel, vlb
from scoresde.discrete.sampling import sample_chain
from scoresde.progress import NullBar, progress_bar, progress_enabled, set_progress
from tests.common import seeded

SDE = sd.VPSDE()


def score(x, t):  # the exact score of N(0, I) data under VP: p_t = N(0, I)
    return -x


KERNEL = GaussianReverseKernel(DiscreteChain.from_sde(SDE, 30), lambda x, i: 0.1 * x)
MASK = torch.tensor([1.0, 0.0])

SAMPLERS = {  # name -> (run with progress=..., steps the bar must count)
    "pc": (lambda p: sd.sample_pc(score, SDE, (4, 2), steps=7, generator=seeded(0), progress=p), 7),
    "em": (lambda p: sd.sample_euler_maruyama(score, SDE, (4, 2), steps=6, generator=seeded(0), progress=p), 6),
    "ancestral": (lambda p: sd.sample_ancestral(score, SDE, (4, 2), steps=5, generator=seeded(0), progress=p), 5),
    "ald": (lambda p: sd.sample_annealed_langevin(score, SDE, (4, 2), levels=3, steps=4, generator=seeded(0),
                                                  progress=p), 12),
    "dpm": (lambda p: sd.sample_dpm_solver(score, SDE, (4, 2), steps=8, generator=seeded(0), progress=p), 8),
    "ode": (lambda p: sd.sample_ode(score, SDE, (4, 2), method="euler", steps=5, generator=seeded(0), progress=p),
            1000),  # the ODE bar counts thousandths of [eps, T]
    "ode_adaptive": (lambda p: sd.sample_ode(score, SDE, (4, 2), rtol=1e-3, atol=1e-3, generator=seeded(0),
                                             progress=p), 1000),
    "inpaint": (lambda p: inpaint(score, SDE, torch.zeros(4, 2), MASK, steps=6, generator=seeded(0), progress=p), 6),
    "smc": (lambda p: inpaint_smc(score, SDE, torch.zeros(4, 2), MASK, particles=2, steps=6, generator=seeded(0),
                                  progress=p), 6),
    "chain": (lambda p: sample_chain(KERNEL, (4, 2), generator=seeded(0), progress=p), 30),
    "vlb": (lambda p: vlb(KERNEL, torch.zeros(4, 2), generator=seeded(0), decoder="gaussian", progress=p), 30),
}


class RecordingTqdm(tqdm.auto.tqdm):
    """tqdm writing to a buffer, remembering every instance."""

    made: list = []

    def __init__(self, *args, **kwargs):
        kwargs["file"] = io.StringIO()
        super().__init__(*args, **kwargs)
        RecordingTqdm.made.append(self)


@pytest.fixture
def bars(monkeypatch):
    RecordingTqdm.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingTqdm)
    monkeypatch.delenv("SCORESDE_PROGRESS", raising=False)
    set_progress(None)
    yield RecordingTqdm.made
    set_progress(None)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_bar_off_creates_no_tqdm_and_warns_nothing(bars, sampler):
    run, _ = SAMPLERS[sampler]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(False)
    assert bars == []
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_bar_on_counts_the_steps(bars, sampler):
    run, steps = SAMPLERS[sampler]
    run(True)
    assert len(bars) == 1
    assert bars[0].total == steps and bars[0].n == steps


@pytest.mark.parametrize("how", ["set_progress", "environment"])
def test_one_switch_turns_every_bar_off(bars, monkeypatch, how):
    if how == "set_progress":
        sd.set_progress(False)
    else:
        monkeypatch.setenv("SCORESDE_PROGRESS", "0")
    assert not progress_enabled()
    for run, _ in SAMPLERS.values():
        run(True)
    assert bars == []
    sd.set_progress(True)  # the function wins over the environment
    assert progress_enabled()
    SAMPLERS["pc"][0](True)
    assert len(bars) == 1


def test_progress_bar_helper(bars):
    assert isinstance(progress_bar(3, "x", False), NullBar)
    with progress_bar(3, "counting", True) as bar:
        for _ in range(3):
            bar.update(1)
    assert bars[0].n == 3 and bars[0].desc.startswith("counting")
    with pytest.raises(TypeError, match="set_progress takes True, False or None, got 0"):
        set_progress(0)


def _train_toy(tmp_path, progress):
    from scoresde.train import train

    cfg = C.apply_overrides(C.preset("toy2d"), [
        f"training.workdir={tmp_path}", "training.batch_size=16", "model.options.hidden=8", "model.options.layers=1",
        "training.steps=5", "training.log_every=1", "training.ckpt_every=100", "data.toy_size=64"])
    return train(cfg, progress=progress, say=lambda *a, **k: None)


def test_training_bar_counts_the_steps_and_the_switch_turns_it_off(bars, tmp_path):
    _train_toy(tmp_path / "on", True)
    assert len(bars) == 1 and bars[0].total == 5 and bars[0].n == 5 and bars[0].desc.startswith("train")
    sd.set_progress(False)
    _train_toy(tmp_path / "off", True)
    assert len(bars) == 1  # no second tqdm object


def test_likelihood_bar_counts_the_solves_and_the_switch_turns_it_off(bars):
    from scoresde.likelihood.evaluate import evaluate_nll

    data = [torch.randint(0, 4, (3, 2), generator=seeded(0)) for _ in range(2)]
    run = lambda p: evaluate_nll(score, SDE, data, levels=4, scale=0.5, shift=-0.75, repeats=2, rtol=1e-2, atol=1e-2,  # noqa: E731
                                 generator=seeded(1), max_batches=2, progress=p)
    run(True)
    assert len(bars) == 1 and bars[0].total == 4 and bars[0].n == 4
    run(False)
    sd.set_progress(False)
    run(True)
    assert len(bars) == 1
