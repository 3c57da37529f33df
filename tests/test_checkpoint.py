import os
import pickle
import random
import shutil
import struct
import zipfile

import pytest
import torch

from scoresde.checkpoint import (
    CheckpointWriteError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    remove_stale_temporaries,
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


def _big_state(step, n=2000):
    gen = torch.Generator().manual_seed(step)
    return {"step": step, "model": {"w": torch.randn(n, generator=gen), "b": torch.randn(7, generator=gen)},
            "config": {"a": {"b": 1}}}


def _tensor_data_ranges(path, members="/data/"):
    """(start, end) byte ranges of the members whose name contains ``members`` (default: the tensor
    storages ``*/data/N``) inside a torch.save archive."""
    ranges = []
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            if members not in info.filename:
                continue
            f.seek(info.header_offset + 26)  # local header: name length and extra length at offsets 26, 28
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            start = info.header_offset + 30 + name_len + extra_len
            ranges.append((start, start + info.file_size))
    return ranges


def _flip(path, pos, rng):
    with open(path, "r+b") as f:
        f.seek(pos)
        byte = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([byte ^ rng.randrange(1, 256)]))


def test_every_flipped_byte_in_tensor_data_is_detected(tmp_path):
    """A CRC-32 detects every error burst of <= 32 bits, so each of these 30 single-byte flips must be caught
    (before the fix, 8 of 30 such flips silently changed the weights and none was detected)."""
    rng = random.Random(0)
    good = save_checkpoint(_big_state(1), str(tmp_path / "run"), keep=5)
    ranges = _tensor_data_ranges(good)
    assert sum(b - a for a, b in ranges) == 4 * (2000 + 7)  # the float32 data of both tensors
    for trial in range(30):
        bad = tmp_path / f"flip{trial}.pt"
        shutil.copy(good, bad)
        start, end = rng.choice(ranges)
        _flip(bad, rng.randrange(start, end), rng)
        with pytest.raises(CorruptCheckpointError, match="CRC-32 mismatch"):
            load_checkpoint(str(bad))


def test_a_flipped_byte_anywhere_is_detected_or_harmless(tmp_path):
    """Flips in headers, the pickle, the central directory: never a silently different state."""
    rng = random.Random(1)
    state = _big_state(3, n=50)
    good = save_checkpoint(state, str(tmp_path / "run"))
    size = os.path.getsize(good)
    members = _tensor_data_ranges(good, members="")  # every member's bytes: pickle, tensors, version, ...
    in_members = 0
    for _trial in range(60):
        bad = tmp_path / "flip.pt"
        shutil.copy(good, bad)
        pos = rng.randrange(size)
        _flip(bad, pos, rng)
        inside = any(a <= pos < b for a, b in members)
        in_members += inside
        try:
            loaded = load_checkpoint(str(bad))
        except CorruptCheckpointError:
            continue
        assert not inside, pos  # a member's bytes are covered by its CRC-32: always detected
        # undetected flips fall in bytes nothing reads (zip padding, the local copy of a CRC, ...)
        assert loaded["step"] == 3 and loaded["config"] == state["config"]
        assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())
    assert in_members > 0


def test_corrupt_newest_falls_back_to_previous(tmp_path):
    save_checkpoint(_big_state(1), str(tmp_path))
    newest = save_checkpoint(_big_state(2), str(tmp_path))
    start, end = _tensor_data_ranges(newest)[0]
    _flip(newest, (start + end) // 2, random.Random(2))
    with pytest.warns(RuntimeWarning, match="ckpt_000000002.pt.*CRC-32 mismatch.*falling back"):
        state, path = load_latest(str(tmp_path))
    assert state["step"] == 1 and torch.equal(state["model"]["w"], _big_state(1)["model"]["w"])


def test_empty_newest_checkpoint_falls_back(tmp_path):
    save_checkpoint(_state(1), str(tmp_path))
    newest = save_checkpoint(_state(2), str(tmp_path))
    open(newest, "wb").close()  # 0 bytes (a crash of the file system, a full disk)
    with pytest.raises(CorruptCheckpointError, match="empty"):
        load_checkpoint(newest)
    with pytest.warns(RuntimeWarning, match="ckpt_000000002.pt.*empty.*falling back"):
        state, path = load_latest(str(tmp_path))
    assert state["step"] == 1


def test_no_readable_checkpoint_is_an_error_listing_each_file(tmp_path):
    a = save_checkpoint(_state(1), str(tmp_path))
    b = save_checkpoint(_state(2), str(tmp_path))
    open(a, "wb").close()
    with open(b, "r+b") as f:
        f.truncate(os.path.getsize(b) // 2)
    with pytest.warns(RuntimeWarning, match="falling back"):
        with pytest.raises(CorruptCheckpointError, match=r"no readable checkpoint .*all 2 are unreadable") as info:
            load_latest(str(tmp_path))
    assert "ckpt_000000001.pt" in str(info.value) and "empty" in str(info.value)
    assert "ckpt_000000002.pt" in str(info.value)
    assert list_checkpoints(str(tmp_path)) == [a, b]  # nothing deleted


def test_garbage_file_is_corrupt_not_unsafe(tmp_path):
    path = tmp_path / "ckpt_000000001.pt"
    path.write_bytes(b"\x00 not a checkpoint at all")
    with pytest.raises(CorruptCheckpointError, match="neither a zip archive nor a pickle"):
        load_checkpoint(str(path))


def test_stale_temporaries_are_removed(tmp_path):
    keep = save_checkpoint(_state(1), str(tmp_path))
    (tmp_path / ".ckpt_abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "notes.tmp").write_bytes(b"not ours")
    removed = remove_stale_temporaries(str(tmp_path))
    assert [os.path.basename(p) for p in removed] == [".ckpt_abc123.tmp"]
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(keep), "notes.tmp"]


def test_disk_full_says_so_and_keeps_the_previous_checkpoint(tiny_disk):
    first = save_checkpoint(_big_state(1, n=100_000), str(tiny_disk))  # 0.4 MB
    with pytest.raises(CheckpointWriteError, match=r"disk is full.* bytes free in .*disk.*previous checkpoints "
                                                   r"are kept"):
        save_checkpoint(_big_state(2, n=1_000_000), str(tiny_disk))  # 4 MB > 2 MiB
    assert list_checkpoints(str(tiny_disk)) == [first]
    assert not [n for n in os.listdir(tiny_disk) if n.endswith(".tmp")]
    state, path = load_latest(str(tiny_disk))
    assert path == first and torch.equal(state["model"]["w"], _big_state(1, n=100_000)["model"]["w"])
