"""Smoke run of examples/controllable_digits.py --quick (trains for a few steps; checks the files and report)."""

import importlib.util
import pathlib

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "controllable_digits.py"


@pytest.mark.slow  # ~30 s on 2 shared CPU cores, dominated by the trainer's set-up
def test_controllable_digits_quick(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("torchvision")
    spec = importlib.util.spec_from_file_location("controllable_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--quick", "--out", str(tmp_path / "figures")])
    for name in ("controllable_inpaint.png", "controllable_classes.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 100
    assert 0.0 <= report["classifier_test_accuracy"] <= 1.0
