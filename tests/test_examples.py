"""Every example runs with --quick, and the quick-start notebook runs top to bottom (shortened)."""

import json
import os
import runpy
import sys

import pytest
import torch

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.fixture(autouse=True)
def quiet_cpu(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # examples write runs/ under the current directory
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)  # custom_sde.py seeds the global generator, as scripts may
    torch.set_num_threads(before)


@pytest.mark.parametrize("script", ["toy_2d.py", "custom_sde.py", "train_custom_sde.py", "digits.py",
                                    "cifar10_gpu.py"])
def test_example_runs_quick(script, monkeypatch, capsys):
    if script in ("digits.py", "cifar10_gpu.py"):
        pytest.importorskip("sklearn")
    monkeypatch.setattr(sys, "argv", [script, "--quick"])
    runpy.run_path(os.path.join(EXAMPLES, script), run_name="__main__")
    assert capsys.readouterr().out  # every example reports something


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
