import pytest
import torch

from tests.common import BUILTIN_SDES


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
