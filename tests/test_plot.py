"""Curves of a run (`scoresde plot`, metrics.png at the end of training) from a small metrics.jsonl."""

import json
import sys

import pytest

from scoresde import config as C
from scoresde.cli import main
from scoresde.plots import plot_metrics, read_curves

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = [
    {"step": 10, "loss": 2.0, "lr": 1e-3},
    {"step": 20, "loss": 1.5, "lr": 1e-3},
    {"step": 20, "test_bpd": 3.1, "test_bpd_se": 0.05, "n": 30},
    {"step": 20, "config_change": {"optim.lr": [1e-3, 5e-4]}},
    {"step": 30, "loss": 1.2, "lr": 5e-4},
    {"step": 30, "test_bpd": 2.7, "test_bpd_se": 0.04, "n": 30},
]


def _write(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


def _png_size(path):
    from PIL import Image

    with Image.open(path) as img:
        return img.size


def test_curves_are_read_from_the_rows_that_carry_them(tmp_path):
    path = _write(tmp_path / "metrics.jsonl", ROWS, tail='{"step": 40, "lo')  # a torn last line is dropped
    with pytest.warns(RuntimeWarning, match="torn last line"):
        losses, key, evals, changes = read_curves(str(path))
    assert losses == [(10, 2.0), (20, 1.5), (30, 1.2)]
    assert key == "test_bpd" and evals == [(20, 3.1, 0.05), (30, 2.7, 0.04)]
    assert changes == [20]
    nll = _write(tmp_path / "toy.jsonl", [{"step": 5, "loss": 0.3}, {"step": 5, "test_nll": 2.9, "n": 4}])
    assert read_curves(str(nll))[1:3] == ("test_nll", [(5, 2.9, None)])


def test_plot_has_a_bits_per_dim_panel_only_when_the_run_was_evaluated(tmp_path):
    pytest.importorskip("matplotlib")
    _write(tmp_path / "metrics.jsonl", ROWS)
    path = plot_metrics(str(tmp_path))
    assert path == str(tmp_path / "metrics.png")
    assert _png_size(path) == (1000, 340)  # two panels of figsize (10, 3.4) at 100 dpi
    only_loss = _write(tmp_path / "loss.jsonl", [r for r in ROWS if "loss" in r])
    assert _png_size(plot_metrics(str(only_loss), str(tmp_path / "l.png"))) == (500, 340)


def test_plot_refuses_a_run_without_losses(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        plot_metrics(str(tmp_path))
    _write(tmp_path / "metrics.jsonl", [{"step": 1, "test_bpd": 3.0}])
    with pytest.raises(ValueError, match="no loss rows"):
        plot_metrics(str(tmp_path))
    assert main(["plot", "--workdir", str(tmp_path)]) == 2
    assert "scoresde plot: error:" in capsys.readouterr().err


def test_cli_plot_writes_the_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    _write(tmp_path / "metrics.jsonl", ROWS)
    out = tmp_path / "curves.png"
    assert main(["plot", "--workdir", str(tmp_path), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out and _png_size(out) == (1000, 340)
    assert main(["plot", "--workdir", str(tmp_path), "--out", str(tmp_path / "curves.txt")]) == 2
    assert "ending in .png" in capsys.readouterr().err


@pytest.fixture
def no_matplotlib(monkeypatch):
    """Make `import matplotlib...` fail as it does where the plot extra is not installed."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)


def test_without_matplotlib_the_error_names_the_extra(tmp_path, capsys, no_matplotlib):
    _write(tmp_path / "metrics.jsonl", ROWS)
    with pytest.raises(ImportError, match=r"pip install 'scoresde\[plot\]'"):
        plot_metrics(str(tmp_path))
    assert main(["plot", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'scoresde[plot]'" in err  # one line, no traceback


def _tiny_run(workdir):
    return C.apply_overrides(C.preset("toy2d"), [
        f"training.workdir={workdir}", "training.steps=2", "training.log_every=1", "training.batch_size=16",
        "training.sample_every=0", "training.eval_every=0", "data.toy_size=64", "model.options.hidden=8",
        "model.options.layers=1"])


def test_training_writes_metrics_png(tmp_path):
    pytest.importorskip("matplotlib")
    from scoresde.train import train

    lines = []
    train(_tiny_run(tmp_path / "run"), progress=False, say=lines.append)
    assert (tmp_path / "run" / "metrics.png").is_file()
    assert any("metrics.png" in line for line in lines)


def test_training_without_matplotlib_skips_the_plot_with_one_line(tmp_path, no_matplotlib):
    from scoresde.train import train

    lines = []
    train(_tiny_run(tmp_path / "run"), progress=False, say=lines.append)
    assert not (tmp_path / "run" / "metrics.png").exists()
    assert [line for line in lines if "metrics.png" in line] == [
        "metrics.png skipped: matplotlib is not installed (pip install 'scoresde[plot]')"]
