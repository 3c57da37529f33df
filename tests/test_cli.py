"""The `scoresde` command: dry runs, clear errors, and train → sample → likelihood on a tiny toy run."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import scoresde
from scoresde import cli
from scoresde import config as C
from scoresde.cli import build_parser, main

if sys.version_info >= (3, 11):
    import tomllib
else:
    tomllib = pytest.importorskip("tomli")

TINY = ["--set", "training.steps=4", "--set", "model.options.hidden=16", "--set", "model.options.layers=1",
        "--set", "training.batch_size=32", "--set", "data.toy_size=500", "--set", "training.log_every=2"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_show_config_and_dry_run_print_the_resolved_config(capsys, tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[training]\nsteps = 77\n')
    assert main(["show-config", "--preset", "digits", "--config", str(toml), "--set", "optim.lr=0.01"]) == 0
    cfg = C.from_dict(tomllib.loads(capsys.readouterr().out))
    assert (cfg.data.name, cfg.training.steps, cfg.optim.lr) == ("digits", 77, 0.01)
    assert main(["train", "--dry-run", "--workdir", str(tmp_path / "w"), *TINY]) == 0
    cfg = C.from_dict(tomllib.loads(capsys.readouterr().out))
    assert cfg.training.workdir == str(tmp_path / "w") and cfg.training.steps == 4
    assert not (tmp_path / "w").exists()  # a dry run trains nothing
    assert main(["demo", "--dry-run", "--quick"]) == 0
    assert C.from_dict(tomllib.loads(capsys.readouterr().out)).data.name == "digits"


def test_every_option_has_help_with_its_default():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    for name, p in sub.items():
        for action in p._actions:
            if action.dest in ("help",):
                continue
            assert action.help, (name, action.dest)
            text = p.format_help()
            assert "default" in action.help or action.required, (name, action.dest, action.help)
        assert text


@pytest.mark.parametrize("argv, message", [
    (["show-config", "--set", "training.stepz=1"], "unknown config field 'training.stepz'"),
    (["train", "--dry-run", "--set", "optim.lr=fast"], "'optim.lr' must be of type float, got 'fast'"),
    (["sample", "--workdir", "/nonexistent/run"], "no checkpoint in '/nonexistent/run'"),
])
def test_errors_are_one_clear_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_train_sample_likelihood_and_resume_guard(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--workdir", run, "--no-progress", *TINY]) == 0
    rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
    assert [r["step"] for r in rows] == [2, 4]
    assert main(["sample", "--workdir", run, "--set", "sampling.steps=20", "--set", "sampling.num_samples=10",
                 "--out", str(tmp_path / "s.pt")]) == 0
    x = torch.load(tmp_path / "s.pt", weights_only=True)
    assert x.shape == (10, 2) and torch.isfinite(x).all()
    capsys.readouterr()
    assert main(["likelihood", "--workdir", run, "--set", "eval.num_samples=8", "--set", "eval.rtol=1e-3",
                 "--set", "eval.atol=1e-3"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["test_nll"] > 0
    # resuming into a different architecture is refused with a clear message
    assert main(["train", "--workdir", run, "--resume", *TINY, "--set", "model.options.hidden=24"]) == 2
    assert "cannot resume from" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- fast --help
SRC = str(Path(scoresde.__file__).resolve().parent.parent)
HEAVY = ("torch", "numpy", "scipy", "torchvision", "torchdiffeq", "tqdm")


def _python(*args, **kw):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, env=env, **kw)


def test_help_imports_nothing_heavy():
    """`scoresde --help` parses arguments before any heavy import (it once took 20 s under load)."""
    out = _python("-X", "importtime", "-m", "scoresde.cli", "--help")
    assert out.returncode == 0 and "usage: scoresde" in out.stdout, out.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time")}
    assert "scoresde" in imported and "argparse" in imported  # the import-time report is really there
    assert not {m for m in imported if m.split(".")[0] in HEAVY}, sorted(m for m in imported
                                                                      if m.split(".")[0] in HEAVY)
    # every sub-command's --help and the parser itself: no torch, no numerical module of scoresde
    driver = textwrap.dedent(f"""
        import sys
        from scoresde.cli import build_parser, main
        build_parser()
        for cmd in ("train", "sample", "likelihood", "plot", "show-config", "demo"):
            try:
                main([cmd, "--help"])
            except SystemExit:
                pass
        print(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}
                     or m.startswith("scoresde.") and m not in ("scoresde.cli", "scoresde.config")))
    """)
    out = _python("-c", driver)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------------------------------- a trained run
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained toy run, shared by the tests below."""
    before = torch.get_num_threads()
    workdir = str(tmp_path_factory.mktemp("cli") / "run")
    assert main(["train", "--workdir", workdir, "--no-progress", *TINY]) == 0
    torch.set_num_threads(before)
    return workdir


@pytest.mark.parametrize("method", ["pc", "euler_maruyama", "ancestral", "annealed_langevin", "dpm_solver", "ode"])
def test_sample_reaches_every_sampler_and_says_what_it_does(run, tmp_path, capsys, method):
    out = str(tmp_path / "s.pt")
    capsys.readouterr()
    assert main(["sample", "--workdir", run, "--set", f"sampling.method={method}", "--set", "sampling.steps=25",
                 "--set", "sampling.levels=2", "--set", "sampling.num_samples=6", "--set", "sampling.rtol=1e-3",
                 "--set", "sampling.atol=1e-3", "--out", out]) == 0
    text = capsys.readouterr().out
    from scoresde.builders import describe_sampler, sampler_evaluations

    sc = C.apply_overrides(C.preset("toy2d"), [f"sampling.method={method}", "sampling.steps=25", "sampling.levels=2",
                                               "sampling.num_samples=6", "sampling.rtol=1e-3",
                                               "sampling.atol=1e-3"]).sampling
    # said up front, before the samples are drawn: what, how many, which sampler and its cost
    first = text.index("sampling 6 points of shape (2,) on cpu: " + describe_sampler(sc))
    assert first < text.index("written to")
    x = torch.load(out, weights_only=True)
    assert x.shape == (6, 2) and torch.isfinite(x).all()
    nfe = sampler_evaluations(sc)
    if nfe is not None:  # the announced cost is the real one
        assert f"6 samples ({nfe} score evaluations)" in text


def test_likelihood_prints_standard_error_and_baseline(run, capsys):
    capsys.readouterr()
    assert main(["likelihood", "--workdir", run, "--set", "eval.num_samples=8", "--set", "eval.rtol=1e-3",
                 "--set", "eval.atol=1e-3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    row = json.loads(lines[-1])
    assert set(row) == {"test_nll", "test_nll_se", "n", "baseline_nll"} and row["n"] == 8 and row["test_nll_se"] > 0
    assert any(f"{row['test_nll']:.4f} ± {row['test_nll_se']:.4f}" in line for line in lines)
    assert any("exact NLL" in line and f"{row['baseline_nll']:.4f}" in line for line in lines)


def test_threads_are_set_only_for_commands_that_compute(run, monkeypatch, capsys):
    import scoresde.runtime

    calls = []
    monkeypatch.setattr(scoresde.runtime, "configure_threads", lambda n=None: calls.append(n) or 1)
    assert main(["--threads", "3", "sample", "--workdir", "/nonexistent/run"]) == 2
    assert main(["sample", "--threads", "2", "--workdir", "/nonexistent/run"]) == 2
    assert main(["sample", "--workdir", "/nonexistent/run"]) == 2
    assert calls == [3, 2, None]
    assert main(["--threads", "3", "show-config"]) == 0
    assert main(["--threads", "3", "train", "--dry-run"]) == 0
    assert calls == [3, 2, None]  # nothing computed, nothing set
    for argv, message in ((["--threads", "0", "show-config"], "--threads: must be an integer >= 1, got 0"),
                          (["train", "--stop-after", "-1"], "--stop-after: must be an integer >= 1, got -1")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err


class _NotATensor:
    pass


def test_expected_failures_are_one_line_and_status_2(run, tmp_path, capsys):
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[training\nsteps = 3\n")
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"step": 1, "obj": _NotATensor()}, unsafe)  # a pickle with a foreign class: could run code
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not a zip at all")
    cases = [
        (["train", "--config", str(bad_toml)], "is not valid TOML"),
        (["train", "--config", str(tmp_path / "missing.toml")], "No such file or directory"),
        (["train", "--workdir", str(tmp_path / "z"), "--set", "training.ckpt_every=0"],
         "training.ckpt_every=0 is not allowed: it must be an integer >= 1"),
        (["train", "--workdir", str(tmp_path / "z"), "--set", "model.options.widht=3"],
         "model.options ['widht'] are not arguments of network 'mlp'"),
        (["train", "--workdir", str(tmp_path / "z"), "--set", "training.device=tpu"], "unknown training.device 'tpu'"),
        (["train", "--workdir", str(tmp_path / "z"), "--set", "sampling.method=dpm"], "unknown sampling.method 'dpm'"),
        (["sample", "--workdir", run, "--checkpoint", str(unsafe)], "refusing to load"),
        (["sample", "--workdir", run, "--checkpoint", str(corrupt)], "is truncated or corrupt"),
        (["sample", "--workdir", run, "--out", str(tmp_path / "no" / "such" / "dir" / "s.pt")], "does not exist"),
        (["sample", "--workdir", run, "--out", str(tmp_path / "s.png")], "use a file ending in .pt"),
        (["sample", "--workdir", run, "--set", "model.options.hidden=24"],
         "do not fit the model asked for: --set changed the architecture ({'options':"),
        (["likelihood", "--workdir", run, "--set", "eval.divergence=hutchinson"], "unknown eval.divergence"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"scoresde {argv[0]}: error: ") and message in err, (argv, err)
        assert "Traceback" not in err
    assert not (tmp_path / "z").exists()  # a bad config is refused before any work


def test_bugs_still_raise(monkeypatch):
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setitem(cli._COMMANDS, "show-config", broken)
    with pytest.raises(KeyError):
        main(["show-config"])


def test_image_grids_are_enlarged(tmp_path):
    """64 digits of 8×8 become a readable grid: ×4 nearest-neighbour, 8 × (32 + 2) + 2 = 274 pixels a side."""
    import numpy as np
    from PIL import Image

    from scoresde.images import save_image_grid

    def read_image(path):
        return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)

    images = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    path = save_image_grid(images, str(tmp_path / "g.png"))
    img = read_image(path)[0].int()  # save_image writes 3 equal channels for 1-channel images
    assert img.shape == (274, 274)
    first = img[2:34, 2:34]  # the first digit: each source pixel is a constant 4×4 block
    assert torch.equal(first, first[::4, ::4].repeat_interleave(4, 0).repeat_interleave(4, 1))
    expected = (images[0, 0] * 255).round()  # save_image rounds x·255 + 0.5 down
    assert (first[::4, ::4].double() - expected.double()).abs().max() <= 1
    big = save_image_grid(torch.rand(4, 3, 32, 32), str(tmp_path / "c.png"))  # 32 px images are kept as they are
    assert read_image(big).shape == (3, 2 * 34 + 2, 2 * 34 + 2)
