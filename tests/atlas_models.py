"""Tiny models for the atlas tests, importable by subprocesses as ``atlas_models:tiny``."""

from __future__ import annotations

from torch import nn


def tiny() -> nn.Module:
    """A two-layer conv net with random weights (the CLI seeds the construction)."""
    return nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(),
                         nn.Conv2d(8, 12, 3, stride=2), nn.ReLU())
