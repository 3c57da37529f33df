"""The run directory: the workdir lock (real processes), metrics.jsonl with a torn tail, atomic rewrite."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from scoresde.checkpoint import list_checkpoints
from scoresde.rundir import (
    LOCK_NAME,
    MetricsError,
    WorkdirLocked,
    lock_workdir,
    read_metrics,
    remove_stale_temporaries,
    trim_metrics,
)
from tests.common import child_env, start_lock_holder


def test_lock_held_by_another_process_fails_at_once_and_dies_with_it(tmp_path):
    holder = start_lock_holder(tmp_path)
    try:
        t0 = time.monotonic()
        with pytest.raises(WorkdirLocked, match=rf"in use by another training run \(pid {holder.pid},"):
            with lock_workdir(str(tmp_path)):
                pass
        assert time.monotonic() - t0 < 1.0  # non-blocking: no waiting for the holder
    finally:
        holder.kill()  # SIGKILL: no clean-up in the holder, the kernel drops its lock
        holder.wait(timeout=30)
    with lock_workdir(str(tmp_path)):
        assert open(tmp_path / LOCK_NAME).read().strip() == str(os.getpid())
    assert open(tmp_path / LOCK_NAME).read() == ""  # released: no pid left behind


def test_lock_is_exclusive_within_one_process(tmp_path):
    with lock_workdir(str(tmp_path)):
        with pytest.raises(WorkdirLocked, match=f"pid {os.getpid()}"):
            with lock_workdir(str(tmp_path)):
                pass
    with lock_workdir(str(tmp_path)):  # free again
        pass


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_torn_last_line_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(path, '{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    with pytest.warns(RuntimeWarning, match=r"dropping the torn last line 3"):
        rows = read_metrics(str(path))
    assert rows == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}]


def test_bad_line_before_the_last_is_an_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(path, '{"step": 1, "loss": 0.5}\n{"step": 2, "lo\n{"step": 3, "loss": 0.3}\n')
    with pytest.raises(MetricsError, match=r"metrics.jsonl, line 2, is not a JSON object"):
        read_metrics(str(path))


def test_trim_rewrites_atomically(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    text = "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo'
    _write(path, text)
    inode = os.stat(path).st_ino

    def crash(src, dst):  # a kill between writing the new file and moving it into place
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.warns(RuntimeWarning, match="torn"), pytest.raises(KeyboardInterrupt):
        trim_metrics(str(path), 3)
    assert open(path).read() == text and os.listdir(tmp_path) == ["metrics.jsonl"]  # untouched, no temp left
    monkeypatch.undo()

    with pytest.warns(RuntimeWarning, match="torn"):
        trim_metrics(str(path), 3)
    assert [r["step"] for r in read_metrics(str(path))] == [1, 2, 3]
    assert os.stat(path).st_ino != inode  # a new file moved into place, not rewritten in place
    assert os.listdir(tmp_path) == ["metrics.jsonl"]


def test_remove_stale_temporaries(tmp_path):
    for name in (".ckpt_x1.tmp", ".metrics_y2.tmp", "ckpt_000000001.pt", "metrics.jsonl"):
        (tmp_path / name).write_text("x")
    removed = remove_stale_temporaries(str(tmp_path))
    assert sorted(os.path.basename(p) for p in removed) == [".ckpt_x1.tmp", ".metrics_y2.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["ckpt_000000001.pt", "metrics.jsonl"]


@pytest.mark.slow
def test_second_train_command_on_a_live_workdir_fails_at_once(tmp_path):
    """Two real `scoresde train` processes: the second (a --resume while the first runs) exits with status 2
    naming the first's pid, and leaves the first's checkpoints and metrics alone."""
    run = tmp_path / "run"
    base = [sys.executable, "-m", "scoresde.cli", "train", "--preset", "toy2d", "--no-progress", "--workdir", str(run),
            "--set", "training.steps=1000000", "--set", "training.batch_size=16", "--set", "model.options.hidden=8",
            "--set", "training.log_every=1", "--set", "training.ckpt_every=20", "--set", "data.toy_size=200"]
    first = subprocess.Popen(base, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list_checkpoints(str(run)):  # a first checkpoint is in place: the run is under way
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first run wrote no checkpoint in 120 s"
            time.sleep(0.05)
        second = subprocess.run([*base, "--resume"], env=child_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"scoresde train: error: {run} is in use by another training run (pid {first.pid}," in second.stderr
        assert first.poll() is None  # the first run carries on
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 143, err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    steps = [r["step"] for r in read_metrics(str(run / "metrics.jsonl"))]
    assert steps == list(range(1, steps[-1] + 1))  # one run's rows, in order, none interleaved
