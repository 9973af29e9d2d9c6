"""Evaluating a parameterisation at another size: what every parameterisation's
``render_at`` builds on.

Example:
    >>> x = torch.rand(1, 3, 8, 8)
    >>> fourier_resample(x, (16, 16)).shape, resize(x, (4, 4), "bilinear").shape
    (torch.Size([1, 3, 16, 16]), torch.Size([1, 3, 4, 4]))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lucent_core.validate import size_pair

__all__ = ["INTERPOLATIONS", "fourier_resample", "only_pixels_interpolate", "resize"]

#: Valid ``interpolation`` values of ``render_at`` (pixel images only).
INTERPOLATIONS = ("bicubic", "bilinear")


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``x`` resized to ``size`` (``(height, width)``) by ``mode``, antialiased when it
    shrinks; the same size returns ``x`` itself."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=shrink)


def only_pixels_interpolate(interpolation: str | None, who: object, how: str) -> None:
    """``interpolation`` applies to pixel images only: an error for any other ``who``."""
    if interpolation is not None:
        raise ValueError(f"interpolation is for pixel images only; a {type(who).__name__} is {how}")


def _phase(freqs: torch.Tensor, old: int, new: int, dtype: torch.dtype,
           device: torch.device) -> torch.Tensor:
    """``exp(2 pi i k delta / old)``: moves the samples so pixel centres line up
    (``align_corners=False``): new pixel ``j`` sits at old position
    ``(j + 0.5) * old / new - 0.5``."""
    delta = 0.5 * (old / new - 1.0)
    angle = freqs.to(torch.float64) * (2.0 * math.pi * delta / old)
    return torch.polar(torch.ones_like(angle), angle).to(device=device, dtype=dtype)


def _resample_full(spectrum: torch.Tensor, old: int, new: int, dim: int) -> torch.Tensor:
    """Along ``dim``, a full (complex-signal) spectrum in ``fftfreq`` order, ``norm="forward"``:
    ``old`` coefficients to ``new``."""
    spectrum = spectrum.movedim(dim, -1)
    keep = min(old, new)
    positive, negative = (keep + 1) // 2, (keep - 1) // 2   # frequencies 0..p-1 and -q..-1
    shape = spectrum.shape[:-1] + (new,)
    out = spectrum.new_zeros(shape)
    if new > old:
        out[..., :positive] = spectrum[..., :positive]
        if negative:
            out[..., new - negative:] = spectrum[..., old - negative:]
        if old % 2 == 0:   # the old Nyquist coefficient is +old/2 and -old/2 at once: split it
            out[..., old // 2] = spectrum[..., old // 2] / 2
            out[..., new - old // 2] = spectrum[..., old // 2] / 2
        freqs = torch.fft.fftfreq(new, d=1.0 / new)
        out = out * _phase(freqs, old, new, out.dtype, out.device)
    else:
        freqs = torch.fft.fftfreq(old, d=1.0 / old)
        spectrum = spectrum * _phase(freqs, old, new, spectrum.dtype, spectrum.device)
        out[..., :positive] = spectrum[..., :positive]
        if negative:
            out[..., new - negative:] = spectrum[..., old - negative:]
        if new % 2 == 0:   # +new/2 and -new/2 become the same coefficient: they add up
            out[..., new // 2] = spectrum[..., new // 2] + spectrum[..., old - new // 2]
    return out.movedim(-1, dim)


def _resample_half(spectrum: torch.Tensor, old: int, new: int) -> torch.Tensor:
    """Along the last dim, an ``rfft`` half spectrum (``norm="forward"``) of a real signal of
    ``old`` samples, to one of ``new`` samples (``new // 2 + 1`` coefficients)."""
    out = spectrum.new_zeros(spectrum.shape[:-1] + (new // 2 + 1,))
    if new > old:
        out[..., :old // 2 + 1] = spectrum
        if old % 2 == 0:   # the old Nyquist term stands for +old/2 and -old/2: halve it
            out[..., old // 2] = spectrum[..., old // 2] / 2
        freqs = torch.arange(new // 2 + 1)
        return out * _phase(freqs, old, new, out.dtype, out.device)
    freqs = torch.arange(old // 2 + 1)
    spectrum = spectrum * _phase(freqs, old, new, spectrum.dtype, spectrum.device)
    out[...] = spectrum[..., :new // 2 + 1]
    if new % 2 == 0:   # the new Nyquist term gathers +new/2 and its mirror -new/2
        out[..., new // 2] = 2 * spectrum[..., new // 2].real
    return out


def fourier_resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample real, periodic images ``(..., h, w)`` to ``(..., H, W)`` in the Fourier domain.

    The spectrum is zero-padded (to enlarge) or truncated (to shrink): the result is the
    band-limited (periodic sinc) interpolation of the input, adding no frequencies it did not
    have. A Nyquist coefficient of an even size is split evenly between ``+f`` and ``-f``
    (enlarging) or gathers both (shrinking), so the result stays real. Pixel centres line up
    as in ``F.interpolate(..., align_corners=False)``: the picture covers the same area, so
    averaging ``k x k`` blocks of an image enlarged ``k`` times gives (nearly) the original.
    The same size returns ``x`` itself.

    Args:
        x: real tensor, at least 2-D; the last two dims are resampled.
        size: ``(H, W)``.

    Returns:
        ``(..., H, W)``, in ``x``'s dtype (computed in at least float32).

    Example:
        >>> x = torch.cos(torch.arange(8.0) * 2 * math.pi / 8).repeat(8, 1)  # 1 cycle across
        >>> big = fourier_resample(x, (16, 16))
        >>> torch.allclose(F.avg_pool2d(big[None], 2)[0], x, atol=0.05)
        True
    """
    height, width = size_pair("size", size)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a real float tensor, got {getattr(x, 'dtype', type(x))}")
    if x.dim() < 2:
        raise ValueError(f"x must have at least 2 dims (..., h, w), got shape {tuple(x.shape)}")
    old_h, old_w = x.shape[-2:]
    if (old_h, old_w) == (height, width):
        return x
    work = x if x.dtype == torch.float64 else x.float()
    spectrum = torch.fft.rfft(work, dim=-1, norm="forward")
    if width != old_w:
        spectrum = _resample_half(spectrum, old_w, width)
    if height != old_h:
        spectrum = torch.fft.fft(spectrum, dim=-2, norm="forward")
        spectrum = _resample_full(spectrum, old_h, height, dim=-2)
        spectrum = torch.fft.ifft(spectrum, dim=-2, norm="forward")
    return torch.fft.irfft(spectrum, n=width, dim=-1, norm="forward").to(x.dtype)
