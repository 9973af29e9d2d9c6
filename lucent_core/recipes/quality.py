"""How far to trust a rendering: superstimulus ratio, robustness and diversity scores.

* :func:`superstimulus_ratio`: the rendering's peak activation over the unit's highest peak
  activation on real images (its dataset examples). Above 1, the rendering drives the unit
  harder than anything in the dataset.
* :func:`robustness`: the unit's value on the rendering under a fixed set of held-out random
  transforms (:func:`held_out_transforms`: larger rotations and zooms, reflected borders and a
  brightness/contrast change, none of which the render's own transforms use), relative to its
  value on the plain rendering. Near 1: the feature survives being moved; near 0: the
  rendering exploits exact pixel positions.
* :func:`diversity_score`: the mean pairwise cosine similarity of a batch's Gram matrices at
  a layer (what the ``diversity`` objective pushes down); lower is more diverse.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> images = torch.rand(2, 3, 32, 32)
    >>> robustness(net, images, "1", [0, 1]).shape
    torch.Size([2])
    >>> 0 <= diversity_score(net, images, "1") <= 1
    True
"""

from __future__ import annotations

import math
from typing import Sequence

import kornia.geometry.transform as KT
import torch
from torch import nn

from lucent_core._device import to_device
from lucent_core import validate
from lucent_core.validate import index, integer
from lucent_core.preprocessing import Preprocessing, preprocessing_of
from lucent_core.objectives.catalogue import gram_similarity
from lucent_core.activations import image_batch, run_layers
from lucent_core.units import Series, unit_values

__all__ = ["HELD_OUT_SEED", "diversity_score", "held_out_transforms", "robustness",
           "superstimulus_ratio", "apply_held_out"]

#: The seed of the default held-out transforms: fixed, so scores are comparable everywhere.
HELD_OUT_SEED = 20261130
_MAX_ANGLE = 25.0            # degrees; the render's transforms use at most 10
_SCALES = (0.8, 1.25)        # the render's use 0.9..1.1
_MAX_SHIFT = 0.1             # of the image size
_BRIGHTNESS = 0.1            # +-; the render's transforms leave colours alone
_CONTRAST = (0.8, 1.2)


def held_out_transforms(count: int = 16, seed: int = HELD_OUT_SEED) -> torch.Tensor:
    """The held-out transforms: ``(count, 6)`` float64 rows, drawn once from ``seed``.

    Columns: angle in degrees, scale, shift x and shift y (fractions of the image size),
    brightness offset, contrast factor. The same ``count`` and ``seed`` always give the same
    rows, on every machine.

    Example:
        >>> torch.equal(held_out_transforms(4), held_out_transforms(4))
        True
    """
    count = integer("count", count, minimum=1)
    g = torch.Generator().manual_seed(validate.seed("seed", seed))

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, generator=g, dtype=torch.float64)

    log_scale = uniform(math.log(_SCALES[0]), math.log(_SCALES[1]))
    return torch.stack([uniform(-_MAX_ANGLE, _MAX_ANGLE), log_scale.exp(),
                        uniform(-_MAX_SHIFT, _MAX_SHIFT), uniform(-_MAX_SHIFT, _MAX_SHIFT),
                        uniform(-_BRIGHTNESS, _BRIGHTNESS), uniform(*_CONTRAST)], dim=1)


def apply_held_out(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Every image under every transform row: ``(B, 3, H, W)`` -> ``(B * T, 3, H, W)``.

    Output ``b * T + t`` is image ``b`` under row ``t``. The image keeps its size; areas
    moved in from outside are reflected; values are clamped to [0, 1].

    Example:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> apply_held_out(x, held_out_transforms(3)).shape
        torch.Size([6, 3, 16, 16])
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shown = tuple(getattr(images, "shape", ())) or type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {shown}")
    batch, _, height, width = images.shape
    rows = _checked_rows(rows)
    count = rows.shape[0]
    angle, scale, dx, dy, brightness, contrast = rows.T
    centre = torch.tensor([[(width - 1) / 2, (height - 1) / 2]], dtype=torch.float64)
    matrix = KT.get_rotation_matrix2d(centre.expand(count, 2), angle,
                                      torch.stack([scale, scale], dim=1))
    matrix[:, 0, 2] += dx * width
    matrix[:, 1, 2] += dy * height
    repeated = images.repeat_interleave(count, dim=0)
    matrix = to_device(matrix.repeat(batch, 1, 1), images.device, images.dtype)
    warped = KT.warp_affine(repeated, matrix, (height, width), mode="bilinear",
                            padding_mode="reflection", align_corners=True)
    shape = (batch * count, 1, 1, 1)
    contrast = to_device(contrast.repeat(batch), images.device, images.dtype).view(shape)
    brightness = to_device(brightness.repeat(batch), images.device, images.dtype).view(shape)
    mean = warped.mean(dim=(1, 2, 3), keepdim=True)
    return ((warped - mean) * contrast + mean + brightness).clamp(0, 1)


def _checked_rows(rows: object) -> torch.Tensor:
    """Held-out transform rows as a float64 ``(T, 6)`` tensor of finite numbers."""
    if not isinstance(rows, torch.Tensor) or rows.dim() != 2 or rows.shape[1] != 6 \
            or rows.shape[0] == 0 or not torch.isfinite(rows).all():
        shown = tuple(rows.shape) if isinstance(rows, torch.Tensor) else type(rows).__name__
        raise ValueError(f"transforms must be a (T, 6) tensor of finite numbers, got {shown}")
    return rows.to(torch.float64)


def _series(layer: "str | Series") -> Series:
    return layer if isinstance(layer, Series) else Series(layer)


def _values(model: nn.Module, images: torch.Tensor, series: Series, units: torch.Tensor,
            directions: torch.Tensor | None, preprocess: Preprocessing) -> torch.Tensor:
    acts = run_layers(model, images, [series.layer], preprocess)[series.layer]
    along = series.unit_kind.needs_directions
    width = directions.shape[1] if along else acts.shape[1]
    if not along and int(units.max()) >= width:
        raise IndexError(f"unit {int(units.max())} of {series.layer!r} is not in 0..{width - 1}")
    if along and width != acts.shape[1]:
        raise ValueError(f"directions have {width} values; {series.layer!r} needs {acts.shape[1]}")
    return unit_values(acts, series, units.to(acts.device), directions).float()


def robustness(model: nn.Module, images: torch.Tensor, layer: "str | Series",
               units: Sequence[int], *, directions: torch.Tensor | None = None,
               transforms: torch.Tensor | None = None, preprocess: Preprocessing | None = None,
               batch_size: int = 64) -> torch.Tensor:
    """Mean value under the held-out transforms over the value on the plain image, per image.

    Image ``i`` is scored on unit ``units[i]`` with the unit's objective value (a channel's
    mean activation, a neuron's centre activation, a direction's mean projection), as in an
    atlas record.

    Args:
        model: the network.
        images: ``(B, 3, H, W)`` renderings in [0, 1] (or ``result.images`` arrays).
        layer: a layer name (channels) or a :class:`~lucent_core.atlas.Series`.
        units: ``B`` unit numbers.
        directions: ``(B, C)`` direction rows for a direction series (default: the
            series' own rows for ``units``); only for direction series.
        transforms: rows from :func:`held_out_transforms` (default: its 16 default rows).
        preprocess: model input preprocessing (default: the model's own).
        batch_size: transformed images per forward pass.

    Returns:
        ``(B,)`` ratios; NaN where the plain value is not positive (no ratio to speak of).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())
        >>> ratios = robustness(net, torch.rand(2, 3, 16, 16), "1", [0, 1])
        >>> ratios.shape
        torch.Size([2])
    """
    series = _series(layer)
    images = image_batch(images)  # tensors or render_vis's (B, H, W, 3) arrays alike
    preprocess = preprocessing_of(model, preprocess)
    rows = held_out_transforms() if transforms is None else _checked_rows(transforms)
    batch_size = integer("batch_size", batch_size, minimum=1)
    if isinstance(units, (str, bytes)) or not hasattr(units, "__len__"):
        raise TypeError(f"units must be a list of unit numbers, one per image, got {units!r}")
    units_t = torch.as_tensor([index("units", u, minimum=0) for u in units], dtype=torch.long)
    validate.shape("units", units_t, (images.shape[0],))  # one per image
    if not series.unit_kind.needs_directions and directions is not None:
        raise ValueError(f"directions= applies to a direction series, not to {series.kind}s")
    if series.unit_kind.needs_directions and directions is None:
        directions = series.directions[units_t]  # each image's unit: its row of the series
    plain = _values(model, images, series, units_t, directions, preprocess)
    count = rows.shape[0]
    moved = []
    for i in range(images.shape[0]):   # one image's transforms at a time bounds memory
        variants = apply_held_out(images[i:i + 1], rows)
        rows_i = None if directions is None else directions[i:i + 1].expand(count, -1)
        values = [_values(model, chunk, series, units_t[i].repeat(len(chunk)),
                          None if rows_i is None else rows_i[:len(chunk)], preprocess)
                  for chunk in variants.split(batch_size)]
        moved.append(torch.cat(values).mean())
    moved_t = torch.stack(moved).to(plain.device)
    return torch.where(plain > 0, moved_t / plain, torch.full_like(plain, float("nan"))).cpu()


def diversity_score(model: nn.Module, images: torch.Tensor, layer: str,
                    preprocess: Preprocessing | None = None) -> float:
    """Mean pairwise cosine similarity of the images' Gram matrices at ``layer``.

    1 means every image has the same channel correlations (no diversity); lower is more
    diverse. This is the quantity the ``diversity`` objective minimises, averaged over pairs.
    NaN when the layer gives some image nothing at all (all zeros: no correlations to compare).

    Args:
        model: the network.
        images: ``(B, 3, H, W)`` in [0, 1], ``B >= 2``.
        layer: where to compare the images.
        preprocess: model input preprocessing (default: the model's own).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> diversity_score(net, torch.rand(1, 3, 8, 8).repeat(3, 1, 1, 1), "1")  # all alike
        1.0
    """
    images = image_batch(images)
    if images.shape[0] < 2:
        raise ValueError("diversity needs a batch of at least 2 images")
    acts = run_layers(model, images, [layer], preprocess)[layer]
    acts = acts.double()
    if (acts.flatten(1).abs().amax(1) == 0).any():
        return float("nan")  # an image the layer does not respond to has no Gram matrix
    similarity = gram_similarity(acts)
    batch = similarity.shape[0]
    pairs = (similarity.sum() - similarity.diagonal().sum()) / (batch * (batch - 1))
    return round(float(pairs), 12)


def superstimulus_ratio(rendering_peak: float, example_peaks: Sequence[float]) -> float | None:
    """The rendering's peak activation over the highest peak among the dataset examples.

    Both are the unit's largest activation over positions (what dataset examples are ranked
    by). None when there are no examples or the best example does not activate the unit;
    non-finite example peaks are left out.

    Example:
        >>> superstimulus_ratio(6.0, [3.0, 2.0, 1.5])
        2.0
    """
    if isinstance(example_peaks, (str, bytes)) or not hasattr(example_peaks, "__iter__"):
        raise TypeError(f"example_peaks must be a list of numbers, got {example_peaks!r}")
    peaks = [float(p) for p in example_peaks if math.isfinite(float(p))]
    if not peaks or max(peaks) <= 0:
        return None
    return float(rendering_peak) / max(peaks)
