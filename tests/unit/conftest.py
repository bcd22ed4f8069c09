"""Shared by the unit tests: they run tiny modules, where one intra-op thread is the fast setting."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny ops on a loaded 2-core machine run ~100x faster than with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
