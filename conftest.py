"""Settings for the doctests in ``lucent_core`` (``tests/conftest.py`` holds the tests' own)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def seeded_doctest(request):
    """Every doctest starts from one random state, whatever ran before it in the process:
    examples that build a random net then show the same outputs in any test order."""
    if type(request.node).__name__ == "DoctestItem":
        torch.manual_seed(0)
    yield
