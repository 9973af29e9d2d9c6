"""Lucid's robustness transforms fused into one affine resampling, drawn independently per image.

:func:`~lucent_core.transforms.standard_transforms` pads, crops, resizes and rotates in five
steps with one draw shared by the batch. :class:`RandomAffine` draws the same kinds of
arguments (pad, two jitters, a scale and an angle) for *each image* and applies them with a
single ``kornia`` warp, so the output has a fixed size and each image can take its random
numbers from its own generator. That makes an image's render independent of the other images
in its batch, which is what lets an atlas re-render any one unit identically on its own.

Where it differs from Lucid's chain (and :func:`standard_transforms`): the output size is
fixed (the scale zooms about the centre instead of resizing the canvas); the warp is bilinear
(Lucid rotates with nearest-neighbour sampling); and the corners a rotation uncovers get the
padding's fill, grey by default (Lucid's rotation fills them with black).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import kornia.geometry.transform as KT
import torch
from torch import nn

from lucent_core._device import to_device
from lucent_core.validate import choice, instance, integer, real, reals, shape
from lucent_core.transforms.functional import PAD_MODES

__all__ = ["RandomAffine", "standard_affine"]

Generators = Union[torch.Generator, Sequence[torch.Generator], None]

_KORNIA_PADDING = {"constant": "zeros", "replicate": "border", "reflect": "reflection"}
LUCID_SCALES = tuple(1 + (i - 5) / 50.0 for i in range(11))
LUCID_ANGLES = tuple(range(-10, 11)) + 5 * (0,)
_NOT_A_PAIR = (str, set, frozenset, dict)  # characters, or no order


class RandomAffine(nn.Module):
    """Pad, jitter, scale, rotate and jitter again in one resampling, with draws per image.

    For each image: a first shift of 0..``jitter[0]`` px, a scale factor from ``scales``, an
    angle in degrees (anticlockwise) from ``angles``, and a second shift of 0..``jitter[1]``
    px. Geometrically this is Lucid's pad / jitter / scale / rotate / jitter chain, except that
    the output keeps a fixed size, ``input + 2 * pad - sum(jitter)``, whatever the scale (the
    scale zooms the content about the centre instead of resizing the canvas). Areas outside
    the image are filled like ``pad_mode`` (``"constant"`` uses ``pad_value``).

    Args:
        pad: padding in pixels on each side.
        jitter: the two maximal shifts in pixels.
        scales: scale factors to draw from.
        angles: rotation angles in degrees to draw from (repeat a value to make it likelier).
        pad_mode: ``"constant"``, ``"reflect"`` or ``"replicate"``.
        pad_value: the fill value of ``"constant"`` padding.

    ``forward(x, generators)`` takes one generator for the whole batch, one per image (each
    image's draws then depend only on its own generator), or None for torch's global RNG.
    Draws are made on the CPU, so a seed gives the same draws on every device.

    Example:
        >>> t = RandomAffine()
        >>> x = torch.rand(2, 3, 32, 32)
        >>> gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
        >>> y = t(x, gens)
        >>> y.shape
        torch.Size([2, 3, 44, 44])
        >>> alone = t(x[1:], [torch.Generator().manual_seed(2)])  # image 1 on its own
        >>> torch.allclose(y[1:], alone, atol=1e-6)
        True
    """

    def __init__(self, pad: int = 12, jitter: Sequence[int] = (8, 4),
                 scales: Sequence[float] = LUCID_SCALES, angles: Sequence[float] = LUCID_ANGLES,
                 pad_mode: str = "constant", pad_value: float = 0.5):
        super().__init__()
        if isinstance(jitter, _NOT_A_PAIR) or not hasattr(jitter, "__len__") or len(jitter) != 2:
            raise ValueError(f"jitter must be two integers >= 0 (the two shifts), got {jitter!r}")
        self.pad = integer("pad", pad, minimum=0)
        self.jitter = tuple(integer(f"jitter[{i}]", j, minimum=0) for i, j in enumerate(jitter))
        self.scales = reals("scales", scales, positive=True)
        self.angles = reals("angles", angles)
        self.pad_mode = choice("pad_mode", pad_mode, PAD_MODES)
        self.pad_value = real("pad_value", pad_value)

    def extra_repr(self) -> str:
        return (f"pad={self.pad}, jitter={self.jitter}, scales={self.scales}, "
                f"angles={self.angles}, pad_mode={self.pad_mode!r}, pad_value={self.pad_value!r}")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(height, width)`` of the output for an input of that size."""
        grow = 2 * self.pad - sum(self.jitter)
        if height + grow < 1 or width + grow < 1:
            raise ValueError(f"pad {self.pad}, jitter {self.jitter} leave none of {height}x{width}")
        return height + grow, width + grow

    def _draw(self, generator: torch.Generator | None) -> list[float]:
        first = torch.randint(self.jitter[0] + 1, (2,), generator=generator).tolist()
        scale = self.scales[int(torch.randint(len(self.scales), (1,), generator=generator))]
        angle = self.angles[int(torch.randint(len(self.angles), (1,), generator=generator))]
        second = torch.randint(self.jitter[1] + 1, (2,), generator=generator).tolist()
        return [*first, scale, angle, *second]

    def sample(self, x: torch.Tensor, generators: Generators = None) -> dict:
        """Draw the arguments of each image: ``{"draws": (B, 6) tensor}``.

        Columns: first shift (top, left), scale, angle in degrees, second shift (top, left).
        """
        batch = x.shape[0]
        if generators is None or isinstance(generators, torch.Generator):
            rows = [self._draw(generators) for _ in range(batch)]
        else:
            for i, g in enumerate(generators):
                instance(f"generators[{i}]", g, torch.Generator, "a torch.Generator")
            shape("generators (one per image)", generators, (batch,))
            rows = [self._draw(g) for g in generators]
        return {"draws": torch.tensor(rows, dtype=torch.float64)}

    def matrices(self, draws: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The ``(B, 2, 3)`` pixel-coordinate matrices (input -> output) for ``draws``."""
        height, width = size
        out_h, out_w = self.output_size(height, width)
        top1, left1, scale, angle, top2, left2 = draws.T
        radians = angle * (math.pi / 180.0)
        # kornia's rotation (positive = anticlockwise on screen, y pointing down)
        cos, sin = torch.cos(radians) * scale, torch.sin(radians) * scale
        # offsets of each shift from its middle, so that no draw moves the image on average
        dx1, dy1 = left1 - self.jitter[0] / 2, top1 - self.jitter[0] / 2
        dx2, dy2 = left2 - self.jitter[1] / 2, top2 - self.jitter[1] / 2
        cx_in, cy_in = (width - 1) / 2 + dx1, (height - 1) / 2 + dy1
        cx_out, cy_out = (out_w - 1) / 2 - dx2, (out_h - 1) / 2 - dy2
        matrix = torch.zeros(draws.shape[0], 2, 3, dtype=torch.float64)
        matrix[:, 0, 0], matrix[:, 0, 1] = cos, sin
        matrix[:, 1, 0], matrix[:, 1, 1] = -sin, cos
        matrix[:, 0, 2] = cx_out - (cos * cx_in + sin * cy_in)
        matrix[:, 1, 2] = cy_out - (-sin * cx_in + cos * cy_in)
        return matrix

    def apply_transform(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Apply the draws of :meth:`sample` (replays a draw exactly)."""
        matrix = to_device(self.matrices(params["draws"], tuple(x.shape[-2:])), x.device,
                           x.dtype)
        fill = self.pad_value if self.pad_mode == "constant" else 0.0
        warped = KT.warp_affine(x - fill, matrix, self.output_size(*x.shape[-2:]),
                                mode="bilinear", padding_mode=_KORNIA_PADDING[self.pad_mode],
                                align_corners=True)
        return warped + fill

    def forward(self, x: torch.Tensor, generators: Generators = None) -> torch.Tensor:
        return self.apply_transform(x, self.sample(x, generators))


def standard_affine() -> RandomAffine:
    """Lucid's standard transforms as one :class:`RandomAffine` (draws per image).

    Pad 12 px with grey, jitter 8 px, scale 0.9..1.1, rotate -10..10 degrees, jitter 4 px.

    Example:
        >>> standard_affine()(torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 3, 140, 140])
    """
    return RandomAffine()
