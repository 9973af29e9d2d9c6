"""``image()``: the one-line entry point to image parameterisations."""

from __future__ import annotations

import torch
from torch import nn

from lucent_core.validate import flag, instance, shape
from lucent_core.param.base import Parameterisation
from lucent_core.param.color import ToRGB
from lucent_core.param.spatial import FourierImage, PixelImage

__all__ = ["ImageParam", "image", "start_images"]


class ImageParam(Parameterisation):
    """A spatial parameterisation followed by a map to valid RGB; ``forward()`` gives images.

    Shape: ``forward()`` returns ``(B, 3, H, W)`` with values in [0, 1].
    """

    def __init__(self, spatial: Parameterisation, to_rgb: nn.Module):
        super().__init__()
        self.spatial = spatial
        self.to_rgb = to_rgb

    def forward(self) -> torch.Tensor:
        return self.to_rgb(self.spatial())

    @property
    def kind(self) -> str | None:  # type: ignore[override]
        return self.spatial.kind

    @property
    def size(self) -> tuple[int, int]:  # type: ignore[override]
        return self.spatial.size

    def render_at(self, size: tuple[int, int], interpolation: str | None = None
                  ) -> torch.Tensor:
        """The spatial part at ``size``, through the same colour mapping."""
        return self.to_rgb(self.spatial.render_at(size, interpolation))

    def describe(self) -> dict[str, object]:
        return {**self.spatial.describe(), "class": type(self).__name__,
                "spatial": type(self.spatial).__name__, "channels": 3,
                "decorrelate": self.to_rgb.decorrelate, "color_mode": self.to_rgb.mode}


def image(w: int, h: int | None = None, batch: int = 1, sd: float = 0.01, fft: bool = True,
          decorrelate: bool = True, mode: str = "sigmoid", decay_power: float = 1.0,
          init: torch.Tensor | None = None) -> ImageParam:
    """Make a learnable image: Fourier or pixel basis, decorrelated colour, values in [0, 1].

    Args:
        w: width in pixels.
        h: height in pixels (default: ``w``).
        batch: number of images.
        sd: standard deviation of the random initialisation.
        fft: parameterise by the 1/f-scaled Fourier spectrum (else by pixels).
        decorrelate: optimise in ImageNet-decorrelated colour space.
        mode: ``"sigmoid"`` or ``"clamp"`` (straight-through) to reach [0, 1].
        decay_power: the Fourier 1/f exponent (an error with ``fft=False``).
        init: start from these images instead of noise: ``(3, h, w)`` or ``(1 or batch, 3, h,
            w)`` RGB in [0, 1] (e.g. ``load_image(photo, (h, w))``); ``param()`` then gives
            them back at step 0 (up to 1e-4 where a sigmoid meets 0 or 1).

    Example:
        >>> param = image(128, 96, batch=4)
        >>> param().shape
        torch.Size([4, 3, 96, 128])
        >>> photo = torch.rand(3, 8, 8)
        >>> torch.allclose(image(8, init=photo)()[0], photo.clamp(1e-4, 1 - 1e-4), atol=1e-4)
        True
    """
    h = w if h is None else h
    if flag("fft", fft):
        spatial: nn.Module = FourierImage(w, h, batch=batch, sd=sd, decay_power=decay_power)
    else:
        if decay_power != 1.0:
            raise ValueError("decay_power only applies to the Fourier parameterisation (fft=True)")
        spatial = PixelImage(w, h, batch=batch, sd=sd)
    made = ImageParam(spatial, ToRGB(decorrelate=decorrelate, mode=mode))
    if init is not None:
        made.spatial.assign(made.to_rgb.inverse(start_images(init, batch, made.size)))
    return made


def start_images(init: torch.Tensor, batch: int, size: tuple[int, int]) -> torch.Tensor:
    """``init`` as the image factories take it (``(3, H, W)`` or ``(1 or batch, 3, H, W)``,
    values in [0, 1]) as a float32 ``(1 or batch, 3, H, W)`` CPU tensor.

    Example:
        >>> start_images(torch.zeros(3, 4, 6), batch=2, size=(4, 6)).shape
        torch.Size([1, 3, 4, 6])
    """
    instance("init", init, torch.Tensor, "an image tensor (see lucent_core.load_image)")
    start = (init[None] if init.dim() == 3 else init).detach().float().cpu()
    shape("init", start, (1, 3, *size), (batch, 3, *size))
    if not 0 <= start.min() <= start.max() <= 1:  # False for NaN too
        raise ValueError(f"init values must lie in [0, 1], got {start.min():g}..{start.max():g}")
    return start
