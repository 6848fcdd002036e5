import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Tests compare floating-point results; one thread: small models run fastest so and do not busy-wait on a loaded CI machine."""
    torch.set_num_threads(1)
    yield
