"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """Tiny tensors: one intra-op thread is as fast and avoids oversubscribing 2-core machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
