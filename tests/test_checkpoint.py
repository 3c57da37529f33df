import os
import pickle

import pytest
import torch

from scoresde.checkpoint import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)


def _state(step):
    return {"step": step, "model": {"w": torch.full((3,), float(step))}, "config": {"a": {"b": 1}}}


def test_roundtrip_and_keep_last_k(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(_state(step), str(tmp_path), keep=2)
    paths = list_checkpoints(str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["ckpt_000000030.pt", "ckpt_000000040.pt"]
    state, path = load_latest(str(tmp_path))
    assert path == paths[-1] and state["step"] == 40 and torch.equal(state["model"]["w"], torch.full((3,), 40.0))
    assert state["config"] == {"a": {"b": 1}}
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # no temp file left behind


def test_truncated_checkpoint_detected_and_previous_used(tmp_path):
    save_checkpoint(_state(1), str(tmp_path))
    newest = save_checkpoint(_state(2), str(tmp_path))
    size = os.path.getsize(newest)
    with open(newest, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(CorruptCheckpointError, match="truncated or corrupt"):
        load_checkpoint(newest)
    with pytest.warns(RuntimeWarning, match="ckpt_000000002.pt.*falling back"):
        state, path = load_latest(str(tmp_path))
    assert state["step"] == 1 and path.endswith("ckpt_000000001.pt")


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):  # unpickling this would create the file `target`
        return (open, (self.target, "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_that_runs_code_is_refused(tmp_path, writer):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "ckpt_000000005.pt"
    evil = {"step": 5, "model": _Payload(str(target))}
    if writer == "pickle":
        with open(path, "wb") as f:
            pickle.dump(evil, f)
    else:
        torch.save(evil, path)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        load_checkpoint(str(path))
    with pytest.raises(UnsafeCheckpointError):  # never silently skipped
        load_latest(str(tmp_path))
    assert not target.exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="step"):
        save_checkpoint({"model": {}}, str(tmp_path))
    with pytest.raises(ValueError, match="keep must be"):
        save_checkpoint(_state(1), str(tmp_path), keep=0)
    assert load_latest(str(tmp_path / "missing")) is None
