"""Robustness transforms applied to the image at every step (pad, jitter, scale, rotate).

Example:
    >>> import torch
    >>> from lucent_core import transforms
    >>> transforms.standard_transforms()(torch.rand(2, 3, 64, 64)).shape[:2]
    torch.Size([2, 3])
"""

from lucent_core.transforms import functional
from lucent_core.transforms.affine import RandomAffine, standard_affine
from lucent_core.transforms.random import (Compose, Jitter, Pad, RandomRotate, RandomScale,
                                           RandomTransform, standard_transforms)

__all__ = ["Compose", "Jitter", "Pad", "RandomAffine", "RandomRotate", "RandomScale",
           "RandomTransform", "functional", "standard_affine", "standard_transforms"]
