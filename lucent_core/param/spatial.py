"""Spatial parameterisations: learnable tensors giving unconstrained ``(B, 3, H, W)`` images."""

from __future__ import annotations

import torch
from torch import nn

from lucent_core.validate import integers, real
from lucent_core.param.base import Parameterisation
from lucent_core.param.resample import fourier_resample, only_pixels_interpolate, resize

__all__ = ["FourierImage", "PixelImage", "fourier_frequencies", "fourier_scale",
           "spectrum_to_image"]


class PixelImage(Parameterisation):
    """One learnable value per pixel and channel, initialised with small Gaussian noise.

    Args:
        width, height: image size in pixels.
        batch: number of images.
        sd: standard deviation of the initial noise.

    Example:
        >>> PixelImage(6, 4, batch=2)().shape
        torch.Size([2, 3, 4, 6])
    """

    def __init__(self, width: int, height: int, batch: int = 1, sd: float = 0.01):
        super().__init__()
        batch, height, width = integers(1, batch=batch, height=height, width=width)
        sd = real("sd", sd, minimum=0)
        self.check_fits(width, height, batch)
        self.pixels = nn.Parameter(torch.randn(batch, 3, height, width) * sd)

    kind = "pixel"

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.pixels.shape[-2:])  # type: ignore[return-value]

    def forward(self) -> torch.Tensor:
        return self.pixels

    def assign(self, image: torch.Tensor) -> None:
        """Make ``forward()`` give ``image`` (unconstrained, ``(B or 1, 3, H, W)``)."""
        with torch.no_grad():
            self.pixels.copy_(image.expand_as(self.pixels))

    def render_at(self, size: tuple[int, int], interpolation: str | None = None
                  ) -> torch.Tensor:
        """The pixels interpolated (default bicubic; antialiased when shrinking)."""
        return resize(self.pixels, size, interpolation or "bicubic")


def fourier_frequencies(height: int, width: int) -> torch.Tensor:
    """Spatial frequency magnitude (cycles per pixel) of each coefficient of ``rfft2``.

    Shape: ``(height, width // 2 + 1)``.
    """
    fy = torch.fft.fftfreq(height).unsqueeze(1)
    fx = torch.fft.rfftfreq(width).unsqueeze(0)
    return torch.sqrt(fx * fx + fy * fy)


def fourier_scale(height: int, width: int, decay_power: float = 1.0) -> torch.Tensor:
    """The 1/f scaling of each ``rfft2`` coefficient: ``1 / max(f, 1 / max(H, W)) ** decay_power``.

    Example:
        >>> fourier_scale(4, 4)[0, 0].item()  # the mean colour: f = 0, floored at 1/4
        4.0
    """
    freqs = fourier_frequencies(height, width)
    return 1.0 / freqs.clamp(min=1.0 / max(height, width)) ** decay_power


def spectrum_to_image(spectrum: torch.Tensor, scale: torch.Tensor, size: tuple[int, int]
                      ) -> torch.Tensor:
    """Image from a real-valued ``(..., H, W // 2 + 1, 2)`` spectrum, scaled, orthonormal FFT.

    Computed in at least float32 (complex half precision is poorly supported); divided by 4 as
    in Lucid, so a unit-variance spectrum gives a gently varying image.
    """
    real = spectrum if spectrum.dtype == torch.float64 else spectrum.float()
    complex_spectrum = torch.view_as_complex(real.contiguous()) * scale.to(real.dtype)
    image = torch.fft.irfft2(complex_spectrum, s=size, norm="ortho")
    return (image / 4.0).to(spectrum.dtype)


class FourierImage(Parameterisation):
    """An image parameterised by its 2-D real Fourier spectrum, scaled like natural images (1/f).

    Each coefficient is multiplied by ``1 / max(f, 1 / max(H, W)) ** decay_power``, so an
    optimiser step changes low frequencies as readily as high ones; this is what makes
    Fourier renders smooth where pixel renders are noisy (Olah et al., Distill 2017).
    Even sizes give Lucid's image for the same spectrum; odd widths use the exact odd-length
    inverse FFT (as Lucent does), where Lucid inverts one column wider and crops.

    Args:
        width, height: image size in pixels (any size; not only squares).
        batch: number of images.
        sd: standard deviation of the initial spectrum.
        decay_power: exponent of the 1/f scaling (0: white spectrum, like pixels).

    Example:
        >>> FourierImage(7, 5, batch=2)().shape
        torch.Size([2, 3, 5, 7])
    """

    def __init__(self, width: int, height: int, batch: int = 1, sd: float = 0.01,
                 decay_power: float = 1.0):
        super().__init__()
        batch, height, width = integers(1, batch=batch, height=height, width=width)
        sd = real("sd", sd, minimum=0)
        self.check_fits(width, height, batch)
        self.size = (height, width)
        self.decay_power = real("decay_power", decay_power)
        scale = fourier_scale(height, width, self.decay_power)
        self.register_buffer("scale", scale, persistent=False)
        self.spectrum = nn.Parameter(torch.randn(batch, 3, *scale.shape, 2) * sd)

    kind = "fourier"

    def forward(self) -> torch.Tensor:
        return spectrum_to_image(self.spectrum, self.scale, self.size)

    def assign(self, image: torch.Tensor) -> None:
        """Make ``forward()`` give ``image`` (unconstrained, ``(B or 1, 3, H, W)``): the
        inverse of :func:`spectrum_to_image` (exact: ``rfft2`` inverts ``irfft2`` of a real
        image of this size)."""
        with torch.no_grad():
            spectrum = torch.fft.rfft2(4.0 * image.double(), norm="ortho") / self.scale.double()
            self.spectrum.copy_(torch.view_as_real(spectrum).expand_as(self.spectrum))

    def render_at(self, size: tuple[int, int], interpolation: str | None = None
                  ) -> torch.Tensor:
        """The scaled spectrum zero-padded (or cut) in frequency space (see
        :func:`~lucent_core.param.resample.fourier_resample`)."""
        only_pixels_interpolate(interpolation, self, "resampled through its spectrum")
        return fourier_resample(self(), size)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "decay_power": self.decay_power}
