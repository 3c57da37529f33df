"""Two CPU processes (gloo, launched by torchrun) train exactly like one process with the same global batch."""

import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from scoresde import config as C
from scoresde.train import train

WORKER = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    from scoresde import config as C
    from scoresde.train import train
    cfg = C.apply_overrides(C.preset("toy2d"), sys.argv[2:])
    result = train(cfg, progress=False)
    rank = int(os.environ["RANK"])
    out = os.path.join(sys.argv[1], f"rank{rank}.pt")
    torch.save({"params": result.model.state_dict(), "losses": result.losses}, out)
    torch.distributed.destroy_process_group()
""")

SETS = ["training.steps=6", "training.batch_size=64", "model.options.hidden=32", "model.options.layers=2",
        "training.log_every=1", "training.ckpt_every=100", "optim.warmup=2", "data.toy_size=1000",
        "training.device=cpu"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(
    sys.executable), "torchrun")), reason="torchrun not installed")
def test_two_gloo_processes_match_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--nnodes=1", "--nproc_per_node=2", f"--master_port={_free_port()}", str(script), str(tmp_path),
           f"training.workdir={tmp_path / 'ddp'}", "training.grad_accum=1", *SETS]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in r0["params"]:  # DDP keeps the replicas identical: all-reduced gradients, same Adam steps
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    assert r0["losses"] == r1["losses"]  # the logged loss is the all-reduced mean over both ranks

    # one process, two accumulation micro-batches of 32 = the same global batch of 64, the same rows and noise
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(C.apply_overrides(C.preset("toy2d"), [f"training.workdir={tmp_path / 'one'}",
                                                             "training.grad_accum=2", *SETS]),
                       progress=False, say=lambda *a: None)
    finally:
        torch.set_num_threads(before)
    # gradient sums in a different order (all-reduce vs accumulation): float32 rounding, amplified a little by
    # Adam's normalisation over 6 steps of lr 2e-3; measured on a 2-core CPU: 0 (bit-identical)
    worst = max(float((r0["params"][k] - v).abs().max()) for k, v in single.model.state_dict().items())
    print(f"largest parameter difference, 2 processes vs 1: {worst:.3g}")
    assert worst <= 1e-6
    for (s0, l0), (s1, l1) in zip(r0["losses"], single.losses, strict=True):
        assert s0 == s1 and abs(l0 - l1) <= 1e-6 * max(1.0, abs(l1))
