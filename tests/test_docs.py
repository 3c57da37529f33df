"""The API reference is generated from the docstrings and builds with warnings as errors (mkdocs --strict):
a renamed function, a parameter documented but missing from the signature, or an unannotated public
parameter fails here, not on a reader's screen."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_api_reference_builds_strict(tmp_path):
    pytest.importorskip("mkdocstrings", reason="the API reference needs the docs tools (pip install -e '.[dev]')")
    mkdocs = shutil.which("mkdocs", path=os.path.dirname(sys.executable)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not on the PATH")
    out = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "api" / "sampling" / "index.html").is_file()
