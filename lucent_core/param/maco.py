"""MACO: feature visualisation by optimising only the Fourier *phase* of an image.

Fel et al., "Unlocking Feature Visualization for Deeper Networks with MAgnitude Constrained
Optimization" (NeurIPS 2023, arXiv:2306.06805). The amplitude spectrum of the image is fixed to
that of natural images and only the phase is learnt; every step the model sees many random
crops of the image, with a little noise; and the accumulated absolute gradient of the objective
with respect to the image is a *transparency* (importance) map showing where the image matters.

The pieces:

* :class:`MacoImage` / :func:`maco`: the parameterisation. ``phase`` is its only parameter; the
  magnitude is a buffer. Default magnitude: :func:`natural_magnitude`, a ``1/f^alpha``
  spectrum (no ImageNet spectrum file is needed); :func:`magnitude_from_images` builds one
  from any photos. The module records the transparency map itself (a gradient hook on its
  output), so it works with the ordinary :func:`~lucent_core.render_vis`.
* :class:`RandomCrops` and :func:`maco_transforms`: many random crops per step, plus noise;
  :class:`ShrinkingCrops` (``decay=PAPER_CROP_DECAY``): the paper's crops, shrinking over the
  render.
* :func:`render_maco`: :func:`~lucent_core.render_vis` with the paper's recipe (NAdam at
  learning rate 1.0 on the phase, 256 steps, 32 crops per step, noise); the transparency map
  comes back in ``result.extra``.

Recipe constants (from the authors' reference implementation): NAdam, lr 1.0, 256 steps,
32 crops per step, crop side drawn around an average that decays linearly from 50% to 5% of
the image side (``render_maco`` defaults to crops of 30-100% instead: ``MACO_CROP_SCALE``),
Gaussian noise of standard deviation 0.08 plus uniform noise of width 0.08 in a [-1, 1] value
range (0.04 in the [0, 1] range used here); the phase is standardised and the image
normalised to zero mean and unit standard deviation before the colour recorrelation and the
sigmoid.

Example:
    >>> image = maco(32, 24, batch=2)
    >>> image().shape, [name for name, _ in image.named_parameters()]
    (torch.Size([2, 3, 24, 32]), ['phase'])
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lucent_core._device import to_device
from lucent_core.validate import (integer, integers, not_both, real, real_scalar, reals,
                                   shape, size_pair)
from lucent_core.param.base import Parameterisation
from lucent_core.param.color import ToRGB
from lucent_core.param.resample import fourier_resample, only_pixels_interpolate
from lucent_core.param.spatial import fourier_frequencies
from lucent_core.transforms.random import Compose, RandomTransform

__all__ = ["DEFAULT_ALPHA", "MacoImage", "RandomCrops", "ShrinkingCrops", "crop_resize", "maco",
           "maco_transforms", "magnitude_from_images", "natural_magnitude"]

# Natural images have an amplitude spectrum falling off as 1/f^alpha with alpha close to 1
# (power ~ 1/f^2: Field 1987; van der Schaaf & van Hateren 1996 measure 1.88-2.1 for power).
DEFAULT_ALPHA = 1.0

# The paper's recipe (authors' reference implementation).
MACO_STEPS = 256
MACO_LR = 1.0
MACO_CROPS = 32
# Crop side / image side. The paper's crops shrink over the render, their average side going
# linearly from 50% to 5% (PAPER_CROP_DECAY): zooms of up to 10x, detail that a view of the
# whole picture does not show. benchmarks/quality.py measured a higher held-out score for the
# whole picture with crops uniform in (0.3, 1.0) (README, "Defaults").
MACO_CROP_SCALE = (0.3, 1.0)
PAPER_CROP_DECAY = (0.5, 0.05)
PAPER_CROP_SPREAD = 0.05        # standard deviation of a crop's side around the average
MACO_NOISE = 0.04               # 0.08 in a [-1, 1] value range is 0.04 in [0, 1]
MACO_SIZE = 512
_EPS = 1e-5


def _self_conjugate_columns(width: int) -> list[int]:
    """Columns of an ``rfft2`` spectrum that hold both +f and -f (DC, and Nyquist if even)."""
    return [0, width // 2] if width % 2 == 0 and width > 1 else [0]


def _symmetrise_magnitude(magnitude: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Make ``M(-k) == M(k)`` inside the self-conjugate columns (a real image's spectrum is)."""
    flip = (-torch.arange(height)) % height
    out = magnitude.clone()
    for col in _self_conjugate_columns(width):
        out[..., col] = (magnitude[..., col] + magnitude[..., flip, col]) / 2
    return out


def _resize_spectrum(magnitude: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resample an ``rfft2``-layout magnitude ``(C, h, w // 2 + 1)`` at the frequencies of a
    ``height x width`` image (bilinear in frequency; the last column is taken as Nyquist).

    The zero frequency is first replaced by the mean of its two neighbours, so a large mean
    (e.g. a photo's brightness) does not leak into the low frequencies around it.
    """
    target = (height, width // 2 + 1)
    if tuple(magnitude.shape[-2:]) == target:
        return magnitude
    old_h, old_wf = magnitude.shape[-2:]
    m = magnitude.clone()
    neighbours = [m[:, 0, 1]] if old_wf > 1 else []
    neighbours += [m[:, 1, 0]] if old_h > 1 else []
    m[:, 0, 0] = torch.stack(neighbours).mean(0) if neighbours else 0.0
    shifted = torch.fft.fftshift(m, dim=-2)   # rows in increasing frequency
    rows = torch.fft.fftfreq(height, dtype=torch.float64) * old_h + old_h // 2
    cols = torch.fft.rfftfreq(width, dtype=torch.float64) * 2 * (old_wf - 1)

    def normalised(pos: torch.Tensor, n: int) -> torch.Tensor:
        return pos.clamp(0, n - 1) * 2 / (n - 1) - 1 if n > 1 else torch.zeros_like(pos)

    gy, gx = torch.meshgrid(normalised(rows, old_h), normalised(cols, old_wf), indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None]
    out = F.grid_sample(shifted[None].double(), grid, mode="bilinear", padding_mode="border",
                        align_corners=True)[0]
    return out.clamp(min=0).to(magnitude.dtype)


def natural_magnitude(w: int, h: int | None = None,
                      alpha: "float | Sequence[float]" = DEFAULT_ALPHA) -> torch.Tensor:
    """A natural-image amplitude spectrum model: ``1 / f^alpha`` in every colour channel.

    ``f`` is the spatial frequency in cycles per pixel (see
    :func:`~lucent_core.param.fourier_frequencies`), floored at ``1 / max(h, w)`` as in
    :class:`~lucent_core.param.FourierImage`; the zero frequency (the mean colour) is 0.
    The channels are those of the decorrelated colour space of
    :class:`~lucent_core.param.ToRGB`, which Lucid's colour matrix whitens, so one spectrum
    for all three is the natural default; ``alpha`` may also be given per channel. Only the
    shape matters: :class:`MacoImage` rescales it.

    Args:
        w: width in pixels.
        h: height in pixels (default: ``w``).
        alpha: the fall-off exponent, one float or three (one per channel).

    Returns:
        ``(3, h, w // 2 + 1)`` magnitudes in ``rfft2`` layout.

    Example:
        >>> m = natural_magnitude(8, alpha=1.0)
        >>> m.shape, m[0, 0, 0].item(), m[0, 0, 4].item()   # DC, then f = 1/2: 1 / 0.5
        (torch.Size([3, 8, 5]), 0.0, 2.0)
    """
    w, h = integers(1, width=w, height=w if h is None else h)
    alphas = reals("alpha", alpha if real_scalar(alpha) is None else [alpha] * 3)
    if len(alphas) != 3:
        raise ValueError(f"alpha must be one number or three (one per channel), got {alpha!r}")
    freqs = fourier_frequencies(h, w).clamp(min=1.0 / max(h, w))
    magnitude = torch.stack([freqs ** -a for a in alphas])
    magnitude[:, 0, 0] = 0.0
    return magnitude


def magnitude_from_images(images: "torch.Tensor | Sequence[torch.Tensor]",
                          size: "int | tuple[int, int]", decorrelate: bool = True
                          ) -> torch.Tensor:
    """The average amplitude spectrum of photos: a data-driven magnitude for :class:`MacoImage`.

    Each image is resized to ``size`` (bilinear, antialiased), optionally moved into the
    decorrelated colour space of :class:`~lucent_core.param.ToRGB` (the space a decorrelated
    :class:`MacoImage` is built in), and the magnitudes ``|rfft2|`` are averaged.

    Args:
        images: RGB images in [0, 1]: a ``(N, 3, H, W)`` or ``(3, H, W)`` tensor, or a sequence
            of ``(3, H, W)`` tensors of any sizes.
        size: ``(height, width)`` of the image to be rendered, or an int for a square.
        decorrelate: express the images in decorrelated colour first (use the same setting as
            the :class:`MacoImage`).

    Returns:
        ``(3, height, width // 2 + 1)`` magnitudes in ``rfft2`` layout.

    Example:
        >>> photos = torch.rand(4, 3, 40, 60)
        >>> magnitude_from_images(photos, (32, 48)).shape
        torch.Size([3, 32, 25])
    """
    height, width = size_pair("size", size)
    if isinstance(images, torch.Tensor):
        shape("images", images, ("N", 3, "H", "W"), (3, "H", "W"))
        batch = images[None] if images.dim() == 3 else images
        items: Sequence[torch.Tensor] = list(batch)
    else:
        items = list(images)
    if not items:
        raise ValueError("images is empty; give at least one image")
    matrix = ToRGB().color_matrix.double()
    total = torch.zeros(3, height, width // 2 + 1, dtype=torch.float64)
    for i, item in enumerate(items):
        if not isinstance(item, torch.Tensor):
            raise ValueError(f"images[{i}] must be a (3, H, W) tensor, got {type(item).__name__}")
        shape(f"images[{i}]", item, (3, "H", "W"))
        resized = F.interpolate(item[None].double().cpu(), size=(height, width),
                                mode="bilinear", align_corners=False, antialias=True)[0]
        if decorrelate:
            resized = torch.linalg.solve(matrix, resized.reshape(3, -1)).reshape(resized.shape)
        total += torch.fft.rfft2(resized, norm="ortho").abs()
    return (total / len(items)).float()


class MacoImage(Parameterisation):
    """Images with a fixed natural amplitude spectrum and a learnable Fourier phase.

    ``spatial()`` is ``irfft2(magnitude * exp(i * phase))`` (orthonormal FFT), an
    unconstrained ``(B, 3, H, W)`` image whose amplitude spectrum ``|rfft2(spatial())|``
    equals the ``magnitude`` buffer exactly, whatever the phase; ``forward()`` maps it to RGB
    in [0, 1] with :class:`~lucent_core.param.ToRGB` (decorrelated colour and sigmoid, as in
    the paper). The given magnitude is made into a valid real-image spectrum: resized to the
    image (if its shape differs), symmetrised where ``rfft2`` stores both ``+f`` and ``-f``,
    its zero frequency set to 0 (the mean colour is fixed at the centre of the colour space,
    mid-grey for the sigmoid) and scaled so ``spatial()`` has unit standard deviation. The
    phase is made consistent the same way (odd where the spectrum must be Hermitian, 0 at the
    real-valued coefficients), and by default standardised per image before use, as in the
    reference implementation (this makes the step size of a large learning rate shrink as the
    phase grows, an implicit decay).

    A consequence of the fixed magnitude: the image's power at each frequency, so also its
    overall contrast, its mean colour and its global orientation content, cannot change; only
    *where* structure is (the phase) is learnt.

    Transparency map: while ``track_importance`` is true, each ``forward()`` under autograd
    registers a hook on the returned image that adds ``|d loss / d image|`` (summed over colour
    channels) into the buffer ``importance`` ``(B, H, W)`` during backward: one addition per
    backward pass through each returned image, so calling the module under ``torch.no_grad()``
    (e.g. for a snapshot) adds nothing. :meth:`importance_map` returns a detached copy,
    :meth:`reset_importance` zeroes it.

    Args:
        width, height: image size in pixels (any aspect ratio).
        batch: number of images.
        magnitude: ``(3, h, w // 2 + 1)`` or ``(h, w // 2 + 1)`` (shared by the channels)
            amplitudes in ``rfft2`` layout, e.g. from :func:`magnitude_from_images`; default
            :func:`natural_magnitude` with ``alpha``.
        alpha: the ``1/f^alpha`` exponent of the default magnitude (an error with
            ``magnitude``).
        decorrelate: the spectrum lives in ImageNet-decorrelated colour space.
        standardize_phase: standardise the phase (zero mean, unit std per image) before use.
        track_importance: record the transparency map.

    Shape: ``forward()`` returns ``(batch, 3, height, width)`` in [0, 1].

    Example:
        >>> image = MacoImage(24, 16, batch=2)
        >>> spectrum = torch.fft.rfft2(image.spatial(), norm="ortho").abs()
        >>> torch.allclose(spectrum, image.magnitude.expand_as(spectrum), atol=1e-5)
        True
        >>> image().sum().backward()
        >>> image.importance.shape, bool(image.importance.min() >= 0)
        (torch.Size([2, 16, 24]), True)
    """

    def __init__(self, width: int, height: int, batch: int = 1,
                 magnitude: torch.Tensor | None = None, alpha: float | None = None,
                 decorrelate: bool = True, standardize_phase: bool = True,
                 track_importance: bool = True):
        super().__init__()
        batch, height, width = integers(1, batch=batch, height=height, width=width)
        not_both("alpha", alpha, "magnitude", magnitude)
        self.check_fits(width, height, batch)
        self.size = (height, width)
        self.standardize_phase = standardize_phase
        self.track_importance = track_importance
        if magnitude is None:
            magnitude = natural_magnitude(width, height,
                                          DEFAULT_ALPHA if alpha is None else alpha)
        self.register_buffer("magnitude", self._prepare(magnitude), persistent=False)
        spectrum = (batch, 3, height, width // 2 + 1)
        self.phase = nn.Parameter(torch.randn(spectrum))
        self.to_rgb = ToRGB(decorrelate=decorrelate, mode="sigmoid")
        self.register_buffer("importance", torch.zeros(batch, height, width), persistent=False)

    def _prepare(self, magnitude: torch.Tensor) -> torch.Tensor:
        height, width = self.size
        if not isinstance(magnitude, torch.Tensor):
            magnitude = torch.as_tensor(np.asarray(magnitude))
        magnitude = magnitude.detach().cpu().double()
        shape("magnitude", magnitude, (3, "h", "w // 2 + 1"), ("h", "w // 2 + 1"))
        if magnitude.dim() == 2:
            magnitude = magnitude.expand(3, -1, -1)
        if not torch.isfinite(magnitude).all() or (magnitude < 0).any():
            raise ValueError("magnitude must hold finite, non-negative amplitudes")
        magnitude = _resize_spectrum(magnitude, height, width)
        magnitude = _symmetrise_magnitude(magnitude, height, width)
        magnitude[:, 0, 0] = 0.0
        rms = torch.fft.irfft2(magnitude.to(torch.complex128), s=self.size,
                               norm="ortho").pow(2).mean().sqrt()
        if rms == 0:
            raise ValueError("magnitude is 0 at every non-zero frequency: the image would be flat")
        return (magnitude / rms).float()

    def _consistent_phase(self) -> torch.Tensor:
        phase = self.phase if self.phase.dtype == torch.float64 else self.phase.float()
        if self.standardize_phase:
            dims = (1, 2, 3)
            phase = (phase - phase.mean(dims, keepdim=True)) / (
                phase.std(dims, keepdim=True, unbiased=False) + _EPS)
        height, width = self.size
        flip = (-torch.arange(height, device=phase.device)) % height
        columns = _self_conjugate_columns(width)
        odd = [(phase[..., col] - phase[..., flip, col])[..., None] / 2 for col in columns]
        if len(columns) == 1:
            return torch.cat([odd[0], phase[..., 1:]], dim=-1)
        if width == 2:
            return torch.cat(odd, dim=-1)
        return torch.cat([odd[0], phase[..., 1:-1], odd[1]], dim=-1)

    def spectrum(self) -> torch.Tensor:
        """The complex ``rfft2`` spectrum ``(B, 3, H, W // 2 + 1)`` of :meth:`spatial`."""
        phase = self._consistent_phase()
        return torch.polar(self.magnitude.to(phase.dtype).expand_as(phase), phase)

    def spatial(self) -> torch.Tensor:
        """The unconstrained image ``(B, 3, H, W)`` before colour mixing and sigmoid."""
        image = torch.fft.irfft2(self.spectrum(), s=self.size, norm="ortho")
        return image.to(self.phase.dtype)

    kind = "maco"

    def render_at(self, size: tuple[int, int], interpolation: str | None = None
                  ) -> torch.Tensor:
        """The spectrum ``magnitude * exp(i phase)`` resampled (zero-padded or cut)."""
        only_pixels_interpolate(interpolation, self, "resampled through its spectrum")
        return self.to_rgb(fourier_resample(self.spatial(), size))

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "channels": 3, "decorrelate": self.to_rgb.decorrelate,
                "color_mode": self.to_rgb.mode}

    def forward(self) -> torch.Tensor:
        image = self.to_rgb(self.spatial())
        if self.track_importance and image.requires_grad:
            image.register_hook(self._accumulate)
        return image

    def _accumulate(self, grad: torch.Tensor) -> None:
        with torch.no_grad():
            self.importance.add_(grad.detach().abs().sum(1).to(self.importance.dtype))

    def importance_map(self, normalize: bool = False) -> torch.Tensor:
        """A detached copy of the accumulated ``|gradient|`` map ``(B, H, W)``.

        Args:
            normalize: divide each image's map by its maximum (a transparency in [0, 1]).
        """
        out = self.importance.detach().clone()
        if normalize:
            out = out / out.flatten(1).amax(1).clamp(min=1e-30).view(-1, 1, 1)
        return out

    def reset_importance(self) -> None:
        """Zero the accumulated transparency map."""
        self.importance.zero_()

    def extra_repr(self) -> str:
        return (f"size={self.size}, batch={self.phase.shape[0]}, "
                f"standardize_phase={self.standardize_phase}")


def maco(w: int, h: int | None = None, batch: int = 1, magnitude: torch.Tensor | None = None,
         alpha: float | None = None, decorrelate: bool = True, standardize_phase: bool = True,
         track_importance: bool = True) -> MacoImage:
    """Make a MACO image: fixed natural amplitude spectrum, learnable phase, values in [0, 1].

    Args:
        w: width in pixels.
        h: height in pixels (default: ``w``).
        batch: number of images.
        magnitude: the amplitude spectrum to keep (see :class:`MacoImage`); default a
            ``1/f^alpha`` model (:func:`natural_magnitude`).
        alpha: exponent of the default magnitude (default :data:`DEFAULT_ALPHA` = 1).
        decorrelate: optimise in ImageNet-decorrelated colour space.
        standardize_phase: standardise the phase before use, as the reference code does.
        track_importance: accumulate the transparency map in ``.importance``.

    Example:
        >>> maco(64, 48, batch=3)().shape
        torch.Size([3, 3, 48, 64])
    """
    h = w if h is None else h
    return MacoImage(w, h, batch=batch, magnitude=magnitude, alpha=alpha,
                     decorrelate=decorrelate, standardize_phase=standardize_phase,
                     track_importance=track_importance)


def crop_resize(x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Cut ``n`` boxes out of every image and resize each to ``size`` (bilinear).

    Args:
        x: ``(B, C, H, W)`` images.
        boxes: ``(B * n, 4)`` boxes ``(x0, y0, x1, y1)`` in pixel-edge coordinates (the whole
            image is ``(0, 0, W, H)``); boxes ``b * n .. b * n + n - 1`` belong to image ``b``.
            Parts of a box outside the image repeat the border pixels.
        size: output ``(height, width)``.

    Returns:
        ``(B * n, C, height, width)``: crop ``i`` of image ``b`` at index ``b * n + i``.

    Example:
        >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
        >>> crop_resize(x, torch.tensor([[2.0, 0.0, 4.0, 2.0]]), (2, 2)).flatten().tolist()
        [2.0, 3.0, 6.0, 7.0]
    """
    batch, channels, height, width = x.shape
    if boxes.dim() != 2 or boxes.shape[1] != 4 or boxes.shape[0] % batch:
        raise ValueError(f"boxes must be (B * n, 4) with B = {batch}, got {tuple(boxes.shape)}")
    n = boxes.shape[0] // batch
    out_h, out_w = size
    b = to_device(boxes, x.device, x.dtype if x.is_floating_point() else torch.float32)
    theta = torch.zeros(b.shape[0], 2, 3, device=b.device, dtype=b.dtype)
    theta[:, 0, 0] = (b[:, 2] - b[:, 0]) / width
    theta[:, 0, 2] = (b[:, 0] + b[:, 2]) / width - 1
    theta[:, 1, 1] = (b[:, 3] - b[:, 1]) / height
    theta[:, 1, 2] = (b[:, 1] + b[:, 3]) / height - 1
    grid = F.affine_grid(theta, [b.shape[0], channels, out_h, out_w], align_corners=False)
    # all crops of one image in one sampling grid: no copies of the input
    grid = grid.reshape(batch, n * out_h, out_w, 2)
    crops = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (crops.reshape(batch, channels, n, out_h, out_w).transpose(1, 2)
            .reshape(batch * n, channels, out_h, out_w))


class RandomCrops(RandomTransform):
    """``n_crops`` random crops of every image, resized to one size, with optional noise.

    Turns ``(B, 3, H, W)`` into ``(B * n_crops, 3, h, w)``; crop ``i`` of image ``b`` is at
    index ``b * n_crops + i``. Objectives that average over the batch (``channel``,
    ``neuron``, ``direction`` without ``batch=``) work unchanged: they average over the crops.
    Batch-indexed objectives (``batch=i``, ``batch_channels``, ``diversity``) see
    ``B * n_crops`` images, so with crops use them only with ``B = 1`` or index crops as above.

    Each crop keeps the image's aspect ratio: its side is a fraction ``s`` of the image's,
    ``s`` uniform in ``scale``, and its position is uniform with the crop inside the image.
    The noise, added to the crops, is Gaussian with standard deviation ``noise`` plus uniform
    on ``[-noise / 2, noise / 2]``, as in MACO. Random numbers come from ``generator`` (on the
    CPU; the noise from a generator seeded from it on the image's device), so a generator
    state, or a ``params`` dict from :meth:`sample`, reproduces a draw exactly.

    Args:
        n_crops: crops per image.
        scale: ``(min, max)`` crop side as a fraction of the image side, in (0, 1].
        noise: noise level (0: none).
        size: output ``(height, width)`` or an int; default: the input's size.

    Example:
        >>> crops = RandomCrops(4, scale=(0.5, 1.0), size=16)
        >>> g = torch.Generator().manual_seed(0)
        >>> crops(torch.rand(2, 3, 32, 48), generator=g).shape
        torch.Size([8, 3, 16, 16])
    """

    def __init__(self, n_crops: int = 8, scale: tuple[float, float] = (0.5, 1.0),
                 noise: float = 0.0, size: "int | tuple[int, int] | None" = None):
        super().__init__()
        self.n_crops = integer("n_crops", n_crops, minimum=1)
        self.scale = tuple(reals("scale", scale, positive=True))
        if len(self.scale) != 2 or not self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max <= 1, got {scale!r}")
        self.noise = real("noise", noise, minimum=0)
        self.size = None if size is None else size_pair("size", size)

    def sides(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """``n`` crop sides (float64, fractions of the image side) for this call."""
        low, high = self.scale
        return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        batch, _, height, width = x.shape
        n = batch * self.n_crops
        side = self.sides(n, generator)
        crop_w, crop_h = side * width, side * height
        left = torch.rand(n, generator=generator, dtype=torch.float64) * (width - crop_w)
        top = torch.rand(n, generator=generator, dtype=torch.float64) * (height - crop_h)
        boxes = torch.stack([left, top, left + crop_w, top + crop_h], dim=1).float()
        noise_seed = int(torch.randint(2 ** 62, (1,), generator=generator))
        return {"boxes": boxes, "noise_seed": noise_seed}

    def apply_transform(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        size = self.size if self.size is not None else tuple(x.shape[-2:])
        crops = crop_resize(x, params["boxes"], size)
        if self.noise > 0:
            g = torch.Generator(device=crops.device).manual_seed(params["noise_seed"])
            gauss = torch.randn(crops.shape, generator=g, device=crops.device, dtype=crops.dtype)
            flat = torch.rand(crops.shape, generator=g, device=crops.device, dtype=crops.dtype)
            crops = crops + self.noise * (gauss + flat - 0.5)
        return crops

    def extra_repr(self) -> str:
        return f"n_crops={self.n_crops}, scale={self.scale}, noise={self.noise}, size={self.size}"


class ShrinkingCrops(RandomCrops):
    """:class:`RandomCrops` whose average side shrinks linearly from ``start`` to ``end`` (fractions
    of the image side) over ``steps`` calls, one call per render step, as in the MACO paper:
    each crop's side is normal around the average with standard deviation ``spread``, clipped
    to ``[min(start, end), 1]``; after ``steps`` calls the average stays at ``end``.

    It counts its calls: make a new one for every render (:func:`maco_transforms` does).

    Example:
        >>> crops = ShrinkingCrops(2, start=0.5, end=0.1, steps=3, spread=0.0, size=8)
        >>> g = torch.Generator().manual_seed(0)
        >>> [crops.sides(2, g).tolist() for _ in range(4)]
        [[0.5, 0.5], [0.3, 0.3], [0.1, 0.1], [0.1, 0.1]]
    """

    def __init__(self, n_crops: int = MACO_CROPS, start: float = PAPER_CROP_DECAY[0],
                 end: float = PAPER_CROP_DECAY[1], steps: int = MACO_STEPS,
                 spread: float = PAPER_CROP_SPREAD, noise: float = 0.0,
                 size: "int | tuple[int, int] | None" = None):
        low, high = sorted((real("start", start), real("end", end)))
        if not 0 < low <= high <= 1:
            raise ValueError(f"start and end must be crop sides in (0, 1], got {start!r}, {end!r}")
        super().__init__(n_crops, scale=(low, high), noise=noise, size=size)
        self.start, self.end = float(start), float(end)
        self.steps = integer("steps", steps, minimum=1)
        self.spread = real("spread", spread, minimum=0)
        self.calls = 0

    def sides(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        done = min(self.calls, self.steps - 1) / max(self.steps - 1, 1)
        self.calls += 1
        average = self.start + (self.end - self.start) * done
        side = average + self.spread * torch.randn(n, generator=generator, dtype=torch.float64)
        return side.clamp(self.scale[0], 1.0)

    def extra_repr(self) -> str:
        return (f"n_crops={self.n_crops}, start={self.start}, end={self.end}, "
                f"steps={self.steps}, spread={self.spread}, noise={self.noise}, size={self.size}")


def maco_transforms(n_crops: int = MACO_CROPS, scale: tuple[float, float] | None = None,
                    noise: float = MACO_NOISE, size: "int | tuple[int, int] | None" = None,
                    *, decay: tuple[float, float] | None = None, steps: int = MACO_STEPS
                    ) -> Compose:
    """MACO's robustness transforms: many random crops per step, plus noise.

    The paper draws each step's crops around an average side that shrinks linearly from 50%
    to 5% of the image over the render (``decay=PAPER_CROP_DECAY``, :class:`ShrinkingCrops`;
    with the image at 512 px and crops resized to the model's 224 px), zooming up to 10x:
    detail for a close look, which a view of the whole picture loses. The default, crops
    uniform in ``scale=MACO_CROP_SCALE`` ``(0.3, 1.0)``, keeps the zoom near 1 and, in
    ``benchmarks/quality.py``, scored higher on the whole picture.

    Args:
        n_crops: crops per image and step.
        scale: ``(min, max)`` crop side as a fraction of the image side (default
            ``MACO_CROP_SCALE``).
        noise: noise level in the [0, 1] value range (see :class:`RandomCrops`).
        size: crop output size (default: the image's size).
        decay: ``(start, end)``: shrinking crops instead (not with ``scale``), over ``steps``.
        steps: the render's steps, for ``decay``.

    Example:
        >>> maco_transforms(n_crops=4, size=32)(torch.rand(1, 3, 64, 64)).shape
        torch.Size([4, 3, 32, 32])
        >>> maco_transforms(n_crops=2, decay=PAPER_CROP_DECAY, steps=100, size=8)(
        ...     torch.rand(1, 3, 64, 64)).shape
        torch.Size([2, 3, 8, 8])
    """
    not_both("scale", scale, "decay", decay)
    if decay is not None:
        decay = reals("decay", decay, positive=True)
        if len(decay) != 2:
            raise ValueError(f"decay must be (start, end), got {decay!r}")
        start, end = decay
        return Compose([ShrinkingCrops(n_crops, start, end, steps, noise=noise, size=size)])
    scale = MACO_CROP_SCALE if scale is None else scale
    return Compose([RandomCrops(n_crops, scale=scale, noise=noise, size=size)])
