"""Receptive fields: which input pixels each position of a layer's activation map sees.

Measured from input gradients, so it works for any network (:func:`receptive_field`); dataset
examples crop each winning image to the box its peak position sees.

Example:
    >>> from torch import nn
    >>> rf = receptive_field(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2)), "0", 9)
    >>> rf.box(0, 0)
    (0, 0, 3, 3)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from lucent_core.validate import integer
from lucent_core.hooks import capture, frozen, model_device, run_to_layers
from lucent_core.preprocessing import preprocessing_of
from lucent_core.units import layer_shapes

__all__ = ["ReceptiveField", "measure_receptive_field", "receptive_field"]

Preprocess = Callable[[torch.Tensor], torch.Tensor]
_DRAWS = 4  # random images whose gradient supports are united


@dataclass(frozen=True)
class ReceptiveField:
    """Which input pixels each position of a layer's activation map sees.

    Position ``(y, x)`` (row, column) of the map sees the input box with rows
    ``offset[0] + stride[0] * y`` up to ``offset[0] + stride[0] * y + extent[0]`` (exclusive),
    and columns likewise with index 1, clipped to the image. A layer without spatial
    dimensions (``map_size`` None) sees the whole image from its one position ``(0, 0)``.

    Attributes:
        image_size: ``(height, width)`` of the input image, in pixels.
        map_size: ``(height, width)`` of the layer's activation map, or None.
        stride: input pixels between neighbouring map positions, per axis.
        offset: top and left of position ``(0, 0)``'s box before clipping (may be negative).
        extent: height and width of a box before clipping.

    Example:
        >>> rf = ReceptiveField((8, 8), (4, 4), stride=(2, 2), offset=(-1, -1), extent=(4, 4))
        >>> rf.box(0, 0), rf.box(1, 3)
        ((0, 0, 3, 3), (1, 5, 5, 8))
    """

    image_size: tuple[int, int]
    map_size: tuple[int, int] | None
    stride: tuple[float, float] = (0.0, 0.0)
    offset: tuple[float, float] = (0.0, 0.0)
    extent: tuple[float, float] = (0.0, 0.0)

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """The input box ``(top, left, bottom, right)`` seen by map position ``(y, x)``.

        Bottom and right are exclusive (``image[top:bottom, left:right]`` is the box); the
        box is clipped to the image.

        Args:
            y: row of the activation map.
            x: column of the activation map.

        Returns:
            ``(top, left, bottom, right)`` in input pixels.

        Example:
            >>> ReceptiveField((6, 6), None).box(0, 0)
            (0, 0, 6, 6)
        """
        height, width = self.image_size
        if self.map_size is None:
            if (y, x) != (0, 0):
                raise IndexError(f"position ({y}, {x}): a non-spatial layer has only (0, 0)")
            return 0, 0, height, width
        rows, cols = self.map_size
        if not (0 <= y < rows and 0 <= x < cols):
            raise IndexError(f"position ({y}, {x}) is outside the {rows} x {cols} activation map")
        spans = []
        for axis, (at, length) in enumerate(((y, height), (x, width))):
            start = self.offset[axis] + self.stride[axis] * at
            low = math.floor(round(start, 6))
            high = math.ceil(round(start + self.extent[axis], 6))
            spans.append((min(max(low, 0), length), min(max(high, 0), length)))
        (top, bottom), (left, right) = spans
        return top, left, bottom, right


def _probe_positions(length: int) -> list[int]:
    """Map coordinates to measure along one axis: both ends, quarters and the middle."""
    picks = {0, 1, length // 4, length // 2, length // 2 + 1, 3 * length // 4, length - 2,
             length - 1}
    return sorted(p for p in picks if 0 <= p < length)


def _fit_axis(coords: list[int], lows: list[int], highs: list[int], length: int,
              map_length: int) -> tuple[float, float, float]:
    """Stride, offset and extent of one axis from measured (clipped) supports.

    A low above 0 or a high below ``length`` is unclipped: exactly ``offset + stride * c``
    (or that plus the extent) for a convolution / pooling stack. The stride is the median
    slope between unclipped measurements; the offset is the smallest ``low - stride * c`` and
    the far edge the largest ``high - stride * c``, so clipped measurements never shrink the
    box, and the box of a region that touches both borders everywhere is the whole axis.
    """
    slopes = []
    for values, free in ((lows, lambda v: v > 0), (highs, lambda v: v < length)):
        points = sorted({c: v for c, v in zip(coords, values) if free(v)}.items())
        slopes += [(v2 - v1) / (c2 - c1) for (c1, v1), (c2, v2) in zip(points, points[1:])]
    stride = statistics.median(slopes) if slopes else length / map_length
    stride = round(stride, 6)
    offset = min(lo - stride * c for c, lo in zip(coords, lows))
    end = max(hi - stride * c for c, hi in zip(coords, highs))
    return stride, round(offset, 6), round(end - offset, 6)


def receptive_field(model: nn.Module, layer: str, size: int,
                    preprocess: Preprocess | None = None) -> ReceptiveField:
    """Measure which input box each position of ``layer`` sees, for ``size`` x ``size`` input.

    The field is found from input gradients, so it works for any network: for a few map
    positions, the gradient of the sum over channels of ``|activation|`` at that position is
    taken with respect to the input image (RGB in [0, 1], before ``preprocess``), for several
    random images (so that ReLU gating and max-pooling choices, which cut paths for one image,
    do not shrink the union); the bounding box of the non-zero gradient is that position's
    box. Stride and offset come from how the boxes move between positions. For plain
    convolution and pooling stacks the result is exact; padding shows as boxes clipped at the
    borders. Input that a position does not depend on at all (a dead layer) counts as the
    whole image. A layer without spatial dimensions sees the whole image.

    Args:
        model: the network (left unchanged).
        layer: the layer's name (as :func:`~lucent_core.hooks.capture` takes it).
        size: the input image's height and width in pixels.
        preprocess: model input preprocessing (default: the model's own).

    Returns:
        A :class:`ReceptiveField`; ``rf.box(y, x)`` is ``(top, left, bottom, right)``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2))
        >>> rf = receptive_field(net, "0", 9)
        >>> rf.map_size, rf.stride, rf.box(1, 2)
        ((4, 4), (2.0, 2.0), (2, 4, 5, 7))
    """
    size = integer("size", size, minimum=1)
    preprocess = preprocessing_of(model, preprocess)
    return measure_receptive_field(model, layer, size, preprocess,
                          layer_shapes(model, [layer], size, preprocess)[layer])


def measure_receptive_field(model: nn.Module, layer: str, size: int, preprocess: Preprocess,
                            shape: tuple[int, ...]) -> ReceptiveField:
    """:func:`receptive_field` for a layer whose activation shape (without the batch) is
    already known; the arguments are trusted (checked by the caller)."""
    if len(shape) != 3:
        return ReceptiveField((size, size), None)
    rows, cols = shape[1:]
    ys, xs = _probe_positions(rows), _probe_positions(cols)
    count = max(len(ys), len(xs))
    positions = [(ys[min(i, len(ys) - 1)], xs[min(i, len(xs) - 1)]) for i in range(count)]
    device, dtype = model_device(model)
    generator = torch.Generator().manual_seed(0)
    support = torch.zeros(count, size, size, dtype=torch.bool)
    index = torch.arange(count, device=device)
    at_y = torch.tensor([p[0] for p in positions], device=device)
    at_x = torch.tensor([p[1] for p in positions], device=device)
    with torch.enable_grad(), frozen(model), capture(model, [layer]) as acts:
        for _ in range(_DRAWS):
            image = torch.rand(count, 3, size, size, generator=generator)
            image = image.to(device=device, dtype=dtype).requires_grad_(True)
            run_to_layers(model, preprocess(image), acts)
            picked = acts[layer][index, :, at_y, at_x]  # (count, C): image i, position i
            (grad,) = torch.autograd.grad(picked.float().abs().sum(), image)
            support |= (grad.detach().abs().sum(1) > 0).cpu()
            acts.clear()
    found = [i for i in range(count) if support[i].any()]
    if not found:
        return ReceptiveField((size, size), (rows, cols), (0.0, 0.0), (0.0, 0.0),
                              (float(size), float(size)))
    fits = []
    for axis, length, map_length in ((0, size, rows), (1, size, cols)):
        coords, lows, highs = [], [], []
        for i in found:
            hit = support[i].any(dim=1 - axis).nonzero().flatten()
            coords.append(positions[i][axis])
            lows.append(int(hit[0]))
            highs.append(int(hit[-1]) + 1)
        fits.append(_fit_axis(coords, lows, highs, length, map_length))
    (sy, oy, ey), (sx, ox, ex) = fits
    return ReceptiveField((size, size), (rows, cols), (sy, sx), (oy, ox), (ey, ex))
