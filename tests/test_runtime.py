"""scoresde.runtime: the thread count is chosen deliberately and validated; output folders never collide."""

import os

import pytest
import torch

from scoresde import runtime


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    for name in (runtime.THREADS_ENV, "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_explicit_count_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(runtime.THREADS_ENV, "2")
    assert runtime.configure_threads(1) == 1 and torch.get_num_threads() == 1


def test_environment_then_omp_then_default(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv(runtime.THREADS_ENV, " 1 ")
    assert runtime.configure_threads() == 1
    monkeypatch.delenv(runtime.THREADS_ENV)
    assert runtime.configure_threads() == 2 == torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # an OpenMP nesting list: not a count, so the default applies
    assert runtime.configure_threads() == runtime.default_threads()


def test_default_is_half_the_available_cpus_capped(monkeypatch):
    for cpus, want in ((1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (64, 4)):
        monkeypatch.setattr(runtime, "_available_cpus", lambda cpus=cpus: cpus)
        assert runtime.default_threads() == want


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2", [1]])
def test_bad_argument_is_a_clear_error(bad):
    with pytest.raises((TypeError, ValueError), match="threads must be a positive integer"):
        runtime.configure_threads(bad)


def test_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(runtime.THREADS_ENV, "many")
    with pytest.raises(ValueError, match="SCORESDE_THREADS must be a positive integer, got 'many'"):
        runtime.configure_threads()
    monkeypatch.setenv(runtime.THREADS_ENV, "0")
    with pytest.raises(ValueError, match="SCORESDE_THREADS"):
        runtime.configure_threads()


def test_output_dir_is_new_each_time(tmp_path):
    first = runtime.output_dir("ex", root=str(tmp_path))
    second = runtime.output_dir("ex", root=str(tmp_path))
    assert first != second and os.path.isdir(first) and os.path.isdir(second)


def test_output_dir_refuses_a_folder_with_files_unless_asked(tmp_path):
    out = tmp_path / "out"
    assert runtime.output_dir("ex", str(out)) == str(out)  # missing: created
    assert runtime.output_dir("ex", str(out)) == str(out)  # empty: fine
    (out / "kept.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        runtime.output_dir("ex", str(out))
    assert runtime.output_dir("ex", str(out), overwrite=True) == str(out)
    assert (out / "kept.txt").read_text() == "x"  # overwrite replaces files by name; it deletes nothing
    with pytest.raises(FileExistsError, match="is a file"):
        runtime.output_dir("ex", str(out / "kept.txt"))
