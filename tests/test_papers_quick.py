"""benchmarks/papers.py (make reproduce) cannot rot: its --quick mode runs every row at toy size."""

import json
import os
import runpy

import pytest
import torch

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "papers.py")
VERDICTS = {"agrees", "disagrees", "inconclusive", "measured"}


@pytest.mark.usefixtures("one_thread")
def test_every_claim_row_runs_quick(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="the digits need scikit-learn (scoresde[digits])")
    state = torch.get_rng_state()
    try:
        report = runpy.run_path(SCRIPT)["main"](["--quick", "--out", str(tmp_path)])
    finally:
        torch.set_rng_state(state)
    papers = {r["paper"] for r in report["rows"]}
    assert {"Score SDE", "ScoreFlow", "NCSN", "Sohl-Dickstein 2015 / DDPM", "beyond the papers"} <= papers
    assert len(report["rows"]) >= 15 and all(r["verdict"] in VERDICTS for r in report["rows"])
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["rows"] == json.loads(json.dumps(report["rows"]))
    text = (tmp_path / "results.md").read_text()
    assert "quick (toy) sizes" in text and text.count("\n| ") == len(report["rows"]) + 1


def test_quick_needs_an_output_folder():
    with pytest.raises(SystemExit, match="--quick needs --out"):
        runpy.run_path(SCRIPT)["main"](["--quick"])
