"""The `scoresde` command: dry runs, clear errors, and train → sample → likelihood on a tiny toy run."""

import json
import sys

import pytest
import torch

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
