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
