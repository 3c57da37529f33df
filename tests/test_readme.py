"""The README's quick start runs as printed and lands on the exact answers it states (tolerances: README)."""

import contextlib
import io
import pathlib
import re

import pytest
import torch

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
NUMBER = r"-?\d+\.\d+"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    following = text.find("\n## ", start + len(heading))
    return text[start:] if following < 0 else text[start:following]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_quick_start_snippet_meets_its_stated_tolerances():
    section = _section(README.read_text(encoding="utf-8"), "## Quick start")
    (snippet,), (expected,) = _blocks(section, "python"), _blocks(section, "text")
    out = io.StringIO()
    before = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out), torch.random.fork_rng(devices=[]):  # the snippet seeds the global RNG
            exec(compile(snippet, "README.md (quick start)", "exec"), {"__name__": "__main__"})
    finally:
        torch.set_num_threads(before)  # the snippet calls configure_threads()
    lines = out.getvalue().splitlines()
    assert [ln.split()[0] for ln in lines] == [ln.split()[0] for ln in expected.splitlines()], out.getvalue()

    mean, exact_mean = (re.findall(NUMBER, part) for part in lines[0].split("exact"))
    assert len(mean) == len(exact_mean) == 2
    assert [float(v) for v in exact_mean] == pytest.approx([0.8, 0.7], abs=1e-3)  # 0.3·(−2, 0) + 0.7·(2, 1)
    # tolerances as the README states them: mean 0.1 per coordinate (≈3 Monte-Carlo standard errors of 4000
    # samples of a mixture with std 1.86 along x, plus the model's error), mode weight 0.03 (4 standard
    # errors of a proportion of 0.3 from 4000 samples), log-likelihood 0.05 nats on the same 256 points
    for got, want in zip(mean, exact_mean, strict=True):
        assert abs(float(got) - float(want)) < 0.1, lines[0]
    weight, exact_weight = (float(v) for v in re.findall(NUMBER, lines[1]))
    assert exact_weight == pytest.approx(0.3) and abs(weight - exact_weight) < 0.03, lines[1]
    logp, exact_logp = (float(v) for v in re.findall(NUMBER, lines[2]))
    assert abs(logp - exact_logp) < 0.05, lines[2]


def test_readme_states_the_tolerances_the_test_checks():
    section = _section(README.read_text(encoding="utf-8"), "## Quick start")
    for phrase in ("within 0.1 of the exact mean", "mode weight within 0.03", "within 0.05 nats"):
        assert phrase in " ".join(section.split()), phrase
