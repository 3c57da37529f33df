"""Every ```python block of the task pages (docs/tasks/*.md) runs, in order, one namespace per page.

A page's blocks run as written except for the substitutions listed here (smaller sizes, and the checkpoint
fixtures in ../shared/fixtures/score_sde_pytorch in place of a downloaded checkpoint); each substitution must
still find its text on the page, so a page edited without its test fails here. After a page has run, the
values it computed are checked against what the page says they are.
"""

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

import scoresde as sd

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "docs" / "tasks"
FIXTURES = ROOT.parent / "shared" / "fixtures" / "score_sde_pytorch"
VP_FIXTURE = FIXTURES / "ddpmpp_vp"  # configs/vp/cifar10_ddpmpp_continuous.py with nf 128 -> 4

pytestmark = pytest.mark.usefixtures("one_thread")


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def run_page(name: str, substitutions: list[tuple[str, str]], namespace: dict) -> dict:
    code = "\n".join(python_blocks(TASKS / name))
    for old, new in substitutions:
        assert old in code, f"docs/tasks/{name} no longer contains {old!r}: update the page's test"
        code = code.replace(old, new)
    with torch.random.fork_rng(devices=[]):  # pages may initialise networks from the global generator
        exec(compile(code, str(TASKS / name), "exec"), namespace)
    return namespace


def test_every_task_page_with_code_is_run_here():
    with_code = {p.name for p in TASKS.glob("*.md") if python_blocks(p)}
    assert with_code == {"custom_sde.md", "dataset_bpd.md", "official_checkpoint.md"}


def test_custom_sde_page(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the page trains into runs/ou_mixture
    ns = run_page("custom_sde.md", [
        ("training.steps=2000", "training.steps=40"), ("training.ckpt_every=500", "training.ckpt_every=20"),
        ("training.steps=2500", "training.steps=60"), ("(2000, 2), steps=500", "(2000, 2), steps=100"),
    ], {"__name__": "docs"})
    # the exact score of the mixture under the page's SDE returns the mixture: 2000 samples give a weight a
    # standard error of sqrt(0.21/2000) = 0.01; 0.05 also covers the 100-step discretisation
    torch.testing.assert_close(ns["weights"].double(), torch.tensor([0.3, 0.7], dtype=torch.float64), atol=0.05,
                               rtol=0)
    assert ns["result"].step == 60 and ns["result"].losses[0][0] == 41  # resumed from the step-40 checkpoint
    assert ns["run"].step == 60 and ns["run"].sde.theta == 3.0
    state = sd.load_checkpoint(str(tmp_path / "runs" / "ou_mixture" / "ckpt_000000060.pt"))
    assert state["user_objects"]["sde"]["sde_config"] == {"class": "OrnsteinUhlenbeck", "params": {"theta": 3.0}}
    assert ns["x"].shape == (2000, 2) and torch.isfinite(ns["x"]).all()
    assert "mode weights" in capsys.readouterr().out


needs_fixtures = pytest.mark.skipif(not (VP_FIXTURE / "checkpoint.pth").exists(),
                                    reason=f"checkpoint fixtures not found at {FIXTURES}")


def fixture_namespace():
    """The fixture checkpoint and its (reduced) official config, standing in for a downloaded checkpoint."""
    config = json.loads((VP_FIXTURE / "config.json").read_text())
    return {"__name__": "docs", "FIXTURE_CKPT": str(VP_FIXTURE / "checkpoint.pth"), "FIXTURE_CONFIG": config}


def write_images(folder: Path, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random 32×32 RGB PNGs in ``folder/a/``; returns them as uint8 ``(n, 3, 32, 32)``."""
    from PIL import Image  # a dependency of torchvision

    (folder / "a").mkdir(parents=True)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8)
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / "a" / f"{i}.png")
    return images


def standard_normal_score(x, t):
    """The exact score of N(0, I) data under the VP SDE, which keeps N(0, I) at every t: −x."""
    return -x


@needs_fixtures
def test_dataset_bpd_page(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images = write_images(tmp_path / "my_images", 2, torch.Generator().manual_seed(0))
    ns = run_page("dataset_bpd.md", [
        ('sd.load_official_checkpoint("checkpoint_8.pth", name)', "sd.load_official_checkpoint(FIXTURE_CKPT, "
                                                                   "FIXTURE_CONFIG)"),
        ("repeats=5,\n", "repeats=1, rtol=0.1, atol=0.1,\n"),
        # the exact divergence costs D = 3072 network products per evaluation: the oracle's score is cheap
        ("exact = sd.evaluate_nll(model, sde, few,", "exact = sd.evaluate_nll(standard_normal_score, sd.VPSDE(), few,"),
    ], {**fixture_namespace(), "standard_normal_score": standard_normal_score})
    assert ns["scale"] == 2.0 and ns["shift"] == -1.0  # the VP config is centred: [-1, 1]
    res = ns["res"]
    assert res.num_samples == 2 and res.repeats == 1 and res.per_sample_bpd.shape == (2,)
    assert math.isfinite(res.bpd) and res.bpd > 0 and res.bpd_stderr > 0
    # With the exact score of N(0, I) the probability-flow drift is 0, so log p(y) = log N(y; 0, I) exactly and
    # bpd = −(log N(y) + D ln 2)/(D ln 2) + 8. Dequantisation moves y by < 2/256 per value; the closed form
    # at the cell centres differs from it by < D·max|y|·(2/256)/(D ln 2) ≈ 0.012 bits/dim.
    x = images[:2].double()
    y = 2 * (x + 0.5) / 256 - 1
    d = y[0].numel()
    logp = -0.5 * (y**2).flatten(1).sum(1) - 0.5 * d * math.log(2 * math.pi)
    closed = (-(logp + d * math.log(2)) / (d * math.log(2)) + 8).mean()
    assert abs(ns["exact"].bpd - float(closed)) < 0.012
    out = capsys.readouterr().out
    assert "2 torch.uint8 (3, 32, 32)" in out and "bits/dim over 2 images" in out


@needs_fixtures
def test_official_checkpoint_page(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ns = run_page("official_checkpoint.md", [
        ('sd.load_official_checkpoint("checkpoint_8.pth", "vp/cifar10_ddpmpp_continuous")',
         "sd.load_official_checkpoint(FIXTURE_CKPT, FIXTURE_CONFIG)"),
        ("(16, 3, 32, 32)", "(2, 3, 32, 32)"),
    ], fixture_namespace())
    assert ns["res"].nfe == 50 and ns["pc"].nfe == 101  # the evaluation counts the page states
    assert ns["res"].x.shape == (2, 3, 32, 32) and torch.isfinite(ns["res"].x).all()
    assert type(ns["sde"]).__name__ == "VPSDE" and ns["centered"] is True
    assert float(ns["images"].min()) >= 0 and float(ns["images"].max()) <= 1
    assert os.path.getsize(tmp_path / "samples.png") > 0
    config = fixture_namespace()["FIXTURE_CONFIG"]
    assert f"VPSDE {config['params']}" in capsys.readouterr().out  # the fixture's parameter count (nf = 4)
