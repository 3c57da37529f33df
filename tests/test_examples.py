"""Every example runs with --quick (and says it is a smoke run), can be run again in the same folder, writes only
under its own fresh output folder; the quick-start notebook runs top to bottom (shortened)."""

import json
import os
import runpy
import sys

import pytest
import torch

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.fixture(autouse=True)
def quiet_cpu(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # examples write outputs/ under the current directory
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)  # custom_sde.py seeds the global generator, as scripts may
    torch.set_num_threads(before)


def _run(script, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", [script, *args])
    try:
        runpy.run_path(os.path.join(EXAMPLES, script), run_name="__main__")
    except SystemExit as done:  # scripts end with sys.exit(main()); argparse errors exit with status 2
        if done.code not in (None, 0):
            raise


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@pytest.mark.parametrize("script", ["toy_2d.py", "custom_sde.py", "digits.py", "cifar10_gpu.py"])
def test_example_runs_quick_and_says_it_is_a_smoke_run(script, monkeypatch, capsys, tmp_path):
    if script in ("digits.py", "cifar10_gpu.py"):
        pytest.importorskip("sklearn")
    _run(script, monkeypatch, "--quick", "--threads", "1")
    out = capsys.readouterr().out
    assert "SMOKE RUN" in out, out
    assert torch.get_num_threads() == 1  # --threads was applied
    assert all(path.startswith("outputs" + os.sep) for path in _files(tmp_path)), _files(tmp_path)


def test_train_custom_sde_runs_quick_into_its_out_folder(monkeypatch, capsys, tmp_path):
    _run("train_custom_sde.py", monkeypatch, "--quick", "--out", str(tmp_path / "custom"))
    assert "--quick: too few steps" in capsys.readouterr().out
    assert {"samples.pt", "train_custom_sde.json"} <= set(os.listdir(tmp_path / "custom"))


@pytest.mark.parametrize("script", ["toy_2d.py", "digits.py"])
def test_example_runs_twice_in_the_same_folder(script, monkeypatch, capsys, tmp_path):
    """The second run goes to a new timestamped folder instead of failing on the first run's checkpoints."""
    if script == "digits.py":
        pytest.importorskip("sklearn")
    _run(script, monkeypatch, "--quick")
    _run(script, monkeypatch, "--quick")
    runs = os.listdir(tmp_path / "outputs" / script.removesuffix(".py"))
    assert len(runs) == 2, runs
    assert capsys.readouterr().out.count("smoke run finished") == 2


def test_example_out_folder_needs_overwrite_when_it_holds_files(monkeypatch, capsys, tmp_path):
    _run("toy_2d.py", monkeypatch, "--quick", "--out", "mine")
    assert (tmp_path / "mine" / "run" / "metrics.jsonl").exists()
    with pytest.raises(SystemExit) as err:
        _run("toy_2d.py", monkeypatch, "--quick", "--out", "mine")
    assert err.value.code == 2 and "--overwrite" in capsys.readouterr().err
    _run("toy_2d.py", monkeypatch, "--quick", "--out", "mine", "--overwrite")  # replaces its own earlier run
    rows = (tmp_path / "mine" / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1, rows  # a fresh run, not one appended to the old metrics


def test_controllable_example_defaults_to_a_fresh_folder_not_docs(monkeypatch, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("controllable_digits", os.path.join(EXAMPLES,
                                                                                      "controllable_digits.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse_args(["--quick"])
    assert os.path.relpath(args.out, tmp_path).startswith("outputs" + os.sep + "controllable_digits")
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "controllable_inpaint.png").write_bytes(b"tracked figure")
    with pytest.raises(SystemExit):
        module.parse_args(["--quick", "--out", "img"])  # like docs/img: it holds files
    assert module.parse_args(["--out", "img", "--overwrite"]).out == "img"
    assert (tmp_path / "img" / "controllable_inpaint.png").read_bytes() == b"tracked figure"  # nothing deleted


def test_quickstart_notebook_is_valid_and_runs(monkeypatch, capsys):
    with open(os.path.join(EXAMPLES, "quickstart.ipynb")) as f:
        nb = json.load(f)
    assert nb["nbformat"] == 4 and nb["cells"]
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("markdown", "code") and isinstance(cell["source"], list)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and "execution_count" in cell
    monkeypatch.setenv("SCORESDE_QUICK", "1")
    namespace = {"__name__": "__main__"}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "quickstart.ipynb", "exec"), namespace)
    out = capsys.readouterr().out
    assert "mode weights from the exact score" in out and "model log p" in out
