import os

import pytest
import torch

# One thread for everything, module-scoped fixtures included: the tests run tiny networks, which
# are fastest on one thread and do not busy-wait when a shared 2-core CI machine is loaded.
torch.set_num_threads(1)

# The kernel-or-torch route of the CPU flow is decided by a timing on first use of each shape,
# which compiles the torch route: with the tests' many tiny shapes that is minutes of compiling,
# and a timing on a loaded machine may decide either way. The tests of the measurement itself
# unset this (tests/test_native_flow.py); the rest take the kernel, as the measurement does here.
os.environ.setdefault("FDRL_CPU_KERNEL_ROUTE", "kernel")


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """The CPU kernel's library() rebuilt from scratch in a temporary cache, and forgotten again
    afterwards."""
    from fdrl import native

    monkeypatch.setenv("FDRL_CACHE_DIR", str(tmp_path / "cache"))
    native.library.cache_clear()
    yield tmp_path / "cache" / "kernels"
    native.library.cache_clear()
