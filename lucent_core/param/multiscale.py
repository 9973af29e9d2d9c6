"""Multi-scale image parameterisations: a low-resolution image, and a Laplacian pyramid.

Both give an unconstrained ``(B, 3, H, W)`` tensor (the ``spatial`` part) that the same
:class:`~lucent_core.param.color.ToRGB` as :func:`~lucent_core.param.image` maps to RGB in
[0, 1]. Upsampling is bilinear with ``align_corners=False`` (pixel centres line up the way
``F.interpolate`` and image libraries resize).

Both factories can start from a photo (``init=``), as :func:`~lucent_core.param.image` does:
the pyramid gives it back exactly, the low-resolution image as closely as its resolution
allows (see :func:`lowres_image`).

Example:
    >>> lowres_image(64, 48, scale=4)().shape
    torch.Size([1, 3, 48, 64])
    >>> laplacian_pyramid_image(64, 48, levels=4)().shape
    torch.Size([1, 3, 48, 64])
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lucent_core.validate import integers, real, real_scalar, reals
from lucent_core.param.base import Parameterisation
from lucent_core.param.color import ToRGB
from lucent_core.param.images import ImageParam, start_images
from lucent_core.param.resample import only_pixels_interpolate, resize
from lucent_core.param.spatial import FourierImage, PixelImage

__all__ = ["LaplacianPyramid", "LowResImage", "laplacian_pyramid_image", "lowres_image",
           "max_pyramid_levels"]


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class LowResImage(Parameterisation):
    """A small learnable image (pixel or Fourier basis) bilinearly upsampled to full size.

    The small image is ``ceil(height / scale) x ceil(width / scale)`` pixels, so any size and
    aspect ratio works; only detail coarser than about ``scale`` pixels can be expressed.

    Args:
        width, height: output size in pixels.
        batch: number of images.
        scale: downsampling factor of the learnable image (1: full resolution).
        sd: standard deviation of the random initialisation.
        fft: parameterise the small image by its 1/f-scaled spectrum (else by pixels).

    Shape: ``forward()`` returns ``(batch, 3, height, width)``, unconstrained values.

    Example:
        >>> module = LowResImage(15, 10, scale=4)
        >>> tuple(module.inner().shape), tuple(module().shape)
        ((1, 3, 3, 4), (1, 3, 10, 15))
    """

    def __init__(self, width: int, height: int, batch: int = 1, scale: int = 4,
                 sd: float = 0.01, fft: bool = False):
        super().__init__()
        # the inner image checks sd (and its own size)
        batch, height, width, scale = integers(1, batch=batch, height=height, width=width,
                                               scale=scale)
        self.check_fits(width, height, batch)
        self.size = (height, width)
        self.scale = scale
        small = (math.ceil(height / scale), math.ceil(width / scale))
        self.inner: nn.Module = (FourierImage(small[1], small[0], batch=batch, sd=sd) if fft
                                 else PixelImage(small[1], small[0], batch=batch, sd=sd))

    kind = "lowres"
    memory_factor = 2.0  # the upsampled image and its gradient (the inner image checks its own)

    def forward(self) -> torch.Tensor:
        return _upsample(self.inner(), self.size)

    def render_at(self, size: tuple[int, int], interpolation: str | None = None
                  ) -> torch.Tensor:
        """Its own bilinear upsampling, to the new size."""
        only_pixels_interpolate(interpolation, self, "upsampled its own way (bilinear)")
        return resize(self.inner(), size, "bilinear")

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}"


def max_pyramid_levels(height: int, width: int) -> int:
    """The most pyramid levels for an image: the coarsest level is the first that is 1 pixel
    in its longer side (each level halves the size, rounding up).

    Example:
        >>> max_pyramid_levels(64, 64), max_pyramid_levels(65, 20), max_pyramid_levels(1, 1)
        (7, 8, 1)
    """
    return 1 + math.ceil(math.log2(max(height, width)))


class LaplacianPyramid(Parameterisation):
    """An image that is the sum of ``levels`` learnable tensors at halving resolutions.

    Level ``k`` (``k = 0`` finest) is a ``(B, 3, ceil(H / 2^k), ceil(W / 2^k))`` tensor; each
    level is upsampled bilinearly to ``(H, W)``, multiplied by its weight and summed, so coarse
    levels move large regions at once and fine levels add detail. Since a weight ``w`` makes a
    level's effective step ``w`` times larger under Adam (``w**2`` under plain SGD), weights act
    as per-level learning rates: ``level_weights=2.0`` gives level ``k`` the weight ``2**k``,
    favouring coarse structure.

    Args:
        width, height: output size in pixels.
        batch: number of images.
        levels: number of levels (1: a plain pixel image); at most
            :func:`max_pyramid_levels` ``(height, width)``.
        sd: standard deviation of each level's random initialisation.
        level_weights: a float ``w`` (level ``k`` gets ``w**k``) or one weight per level,
            finest first.

    Shape: ``forward()`` returns ``(batch, 3, height, width)``, unconstrained values.

    Example:
        >>> pyramid = LaplacianPyramid(20, 12, levels=3)
        >>> [tuple(level.shape[-2:]) for level in pyramid.pyramid]
        [(12, 20), (6, 10), (3, 5)]
        >>> pyramid().shape
        torch.Size([1, 3, 12, 20])
    """

    def __init__(self, width: int, height: int, batch: int = 1, levels: int = 4,
                 sd: float = 0.01, level_weights: "float | Sequence[float]" = 1.0):
        super().__init__()
        batch, height, width, levels = integers(1, batch=batch, height=height, width=width,
                                                levels=levels)
        most = max_pyramid_levels(height, width)
        if levels > most:
            raise ValueError(f"levels must be 1..{most} for a {height}x{width} image, got {levels}")
        self.check_fits(width, height, batch)
        self.size = (height, width)
        if real_scalar(level_weights) is not None:  # w: level k gets w ** k
            level_weights = [real("level_weights", level_weights) ** k for k in range(levels)]
        weights = reals("level_weights", level_weights)
        if len(weights) != levels:
            raise ValueError(f"level_weights must be 1 or {levels} numbers, got {len(weights)}")
        self.register_buffer("level_weights", torch.tensor(weights), persistent=False)
        self.pyramid = nn.ParameterList(
            nn.Parameter(torch.randn(batch, 3, math.ceil(height / 2 ** k),
                                     math.ceil(width / 2 ** k)) * sd)
            for k in range(levels))

    def forward(self) -> torch.Tensor:
        weights = self.level_weights.to(self.pyramid[0].dtype)
        total = self.pyramid[0] * weights[0]
        for level, weight in zip(self.pyramid[1:], weights[1:]):
            total = total + _upsample(level, self.size) * weight
        return total

    kind = "laplacian_pyramid"
    memory_factor = 5.0  # the levels are up to 4/3 of the image: 4 copies of them, at least

    def assign(self, image: torch.Tensor) -> None:
        """Make ``forward()`` give ``image`` (unconstrained, ``(B or 1, 3, H, W)``), exactly:
        all of it in the finest level (divided by its weight), the coarser levels zero.

        Any other split giving the same image would render the same way: the gradient of each
        level depends on the image only, and Adam's steps on the gradients only.
        """
        weight = self.level_weights[0].item()
        if weight == 0:
            raise ValueError("level_weights[0] is 0: the finest level cannot hold an image")
        with torch.no_grad():
            self.pyramid[0].copy_((image / weight).expand_as(self.pyramid[0]))
            for level in self.pyramid[1:]:
                level.zero_()

    def render_at(self, size: tuple[int, int], interpolation: str | None = None
                  ) -> torch.Tensor:
        """Every level upsampled (bilinear) to the new size and summed with its weight."""
        only_pixels_interpolate(interpolation, self, "upsampled its own way (bilinear)")
        weights = self.level_weights.to(self.pyramid[0].dtype)
        return sum(resize(level, size, "bilinear") * weight
                   for level, weight in zip(self.pyramid, weights))

    def extra_repr(self) -> str:
        return f"size={self.size}, levels={len(self.pyramid)}"


def lowres_image(w: int, h: int | None = None, batch: int = 1, scale: int = 4,
                 sd: float = 0.01, fft: bool = False, decorrelate: bool = True,
                 mode: str = "sigmoid", init: torch.Tensor | None = None) -> ImageParam:
    """A learnable image optimised at ``1/scale`` resolution and upsampled: smooth by design.

    Args:
        w: width in pixels.
        h: height in pixels (default: ``w``).
        batch: number of images.
        scale: how many times smaller the learnable image is (``ceil`` of the division).
        sd: standard deviation of the random initialisation.
        fft: parameterise the small image by its Fourier spectrum (else by pixels).
        decorrelate: optimise in ImageNet-decorrelated colour space.
        mode: ``"sigmoid"`` or ``"clamp"`` (straight-through) to reach [0, 1].
        init: start from these images instead of noise: ``(3, h, w)`` or ``(1 or batch, 3, h,
            w)`` RGB in [0, 1], as :func:`~lucent_core.param.image` takes them. What is exact
            is the small image: through the colour map it is ``init`` resized (antialiased
            bilinear) to its size, up to 1e-4 where a sigmoid meets 0 or 1. ``param()`` is
            its upsampling, so it differs from ``init`` by the detail finer than ``scale``
            pixels; with ``scale=1`` it is ``init``.

    Returns:
        An :class:`~lucent_core.param.ImageParam` whose ``spatial`` is a :class:`LowResImage`.

    Example:
        >>> param = lowres_image(100, 60, batch=2, scale=8)
        >>> param().shape, tuple(param.spatial.inner.pixels.shape)
        (torch.Size([2, 3, 60, 100]), (2, 3, 8, 13))
        >>> flat = torch.full((3, 16, 16), 0.25)   # no detail to lose: given back whole
        >>> torch.allclose(lowres_image(16, init=flat)(), flat, atol=1e-5)
        True
    """
    h = w if h is None else h
    made = ImageParam(LowResImage(w, h, batch=batch, scale=scale, sd=sd, fft=fft),
                      ToRGB(decorrelate=decorrelate, mode=mode))
    if init is not None:
        small = resize(start_images(init, batch, made.size), made.spatial.inner.size, "bilinear")
        made.spatial.inner.assign(made.to_rgb.inverse(small))
    return made


def laplacian_pyramid_image(w: int, h: int | None = None, batch: int = 1, levels: int = 4,
                            sd: float = 0.01, level_weights: "float | Sequence[float]" = 1.0,
                            decorrelate: bool = True, mode: str = "sigmoid",
                            init: torch.Tensor | None = None) -> ImageParam:
    """A learnable image that is a sum of upsampled levels, coarse to fine.

    Args:
        w: width in pixels.
        h: height in pixels (default: ``w``).
        batch: number of images.
        levels: pyramid levels; level ``k`` has ``1/2^k`` of the resolution.
        sd: standard deviation of each level's random initialisation.
        level_weights: per-level multipliers, acting like per-level learning rates: a float
            ``w`` gives level ``k`` the weight ``w**k`` (``> 1`` favours coarse structure), or
            a sequence with one weight per level, finest first.
        decorrelate: optimise in ImageNet-decorrelated colour space.
        mode: ``"sigmoid"`` or ``"clamp"`` (straight-through) to reach [0, 1].
        init: start from these images instead of noise: ``(3, h, w)`` or ``(1 or batch, 3, h,
            w)`` RGB in [0, 1], as :func:`~lucent_core.param.image` takes them; ``param()``
            gives them back at step 0 (up to 1e-4 where a sigmoid meets 0 or 1). They go
            into the finest level (:meth:`LaplacianPyramid.assign`), whose weight must not be 0.

    Returns:
        An :class:`~lucent_core.param.ImageParam` whose ``spatial`` is a
        :class:`LaplacianPyramid`.

    Example:
        >>> param = laplacian_pyramid_image(64, 32, levels=3, level_weights=2.0)
        >>> param().shape, param.spatial.level_weights.tolist()
        (torch.Size([1, 3, 32, 64]), [1.0, 2.0, 4.0])
        >>> photo = torch.rand(3, 9, 13)
        >>> start = laplacian_pyramid_image(13, 9, init=photo)()
        >>> torch.allclose(start[0], photo.clamp(1e-4, 1 - 1e-4), atol=1e-5)
        True
    """
    h = w if h is None else h
    made = ImageParam(LaplacianPyramid(w, h, batch=batch, levels=levels, sd=sd,
                                       level_weights=level_weights),
                      ToRGB(decorrelate=decorrelate, mode=mode))
    if init is not None:
        made.spatial.assign(made.to_rgb.inverse(start_images(init, batch, made.size)))
    return made
