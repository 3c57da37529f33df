import shutil
import subprocess

import pytest
import torch

from scoresde.runtime import configure_threads
from tests.common import BUILTIN_SDES


@pytest.fixture(scope="session", autouse=True)
def _one_cpu_thread():
    """One intra-op CPU thread for the whole session: on a shared 2-core machine it is as fast as two when idle
    and many times faster when busy (scoresde.runtime), and CPU reductions then run in one fixed order, so results
    repeat from run to run. A test that needs more sets them itself."""
    before = torch.get_num_threads()
    configure_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def gen():
    """A fresh, seeded CPU generator: the only source of randomness in tests."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(params=sorted(BUILTIN_SDES))
def builtin_sde(request):
    return BUILTIN_SDES[request.param]()


@pytest.fixture
def one_thread():
    """Bit-identical CPU losses need the same reduction order in every process: one thread while the test runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs (needs root / CAP_SYS_ADMIN and the mount command), unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command to create a small tmpfs")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True,
                          text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a 2 MiB tmpfs as a full disk: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30)
