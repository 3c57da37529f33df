"""benchmarks/gpu.py cannot rot: its --quick mode runs on the CPU and writes a complete JSON and Markdown report."""

import json
import os
import runpy

import pytest
import torch

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "gpu.py")


@pytest.mark.usefixtures("one_thread")
def test_gpu_suite_quick_on_cpu(tmp_path):
    state = torch.get_rng_state()  # the benchmark seeds the global generator for its random weights
    try:
        main = runpy.run_path(SCRIPT)["main"]
        # torch.compile needs a C++ toolchain on the CPU: the compile variants run on the GPU only
        report = main(["--device", "cpu", "--quick", "--variants", "fp32,bf16,channels_last", "--out", str(tmp_path)])
    finally:
        torch.set_rng_state(state)
    with open(tmp_path / "gpu.json") as f:
        assert json.load(f) == json.loads(json.dumps(report))
    assert {(r["model"], r["variant"]) for r in report["training"]} == {
        (m, v) for m in ("ddpmpp_cont", "ncsnpp_cont") for v in ("fp32", "bf16", "channels_last")}
    for r in report["training"]:
        assert r["images_per_s"] > 0 and r["flops_per_step"] > 0
    samplers = {(r["model"], r["sampler"]): r for r in report["sampling"]}
    assert samplers[("ddpmpp_cont", "pc_1000")]["timed_nfe"] == 2 * 2  # 2 timed steps × (predictor + corrector)
    assert samplers[("ddpmpp_cont", "dpm_solver_3")]["timed_nfe"] == 3
    assert all(0 <= r["fraction_outside_network"] <= 1 for r in report["sampling"])
    assert all(r["nfe"] > 0 and r["seconds_per_nfe"] > 0 for r in report["likelihood"])
    text = (tmp_path / "gpu.md").read_text()
    assert report["machine"]["torch"] in text and "| ncsnpp_cont | channels_last |" in text
