"""Pure image operations on ``(B, C, H, W)`` tensors; the random modules sample their arguments."""

from __future__ import annotations

import kornia.geometry.transform as KT
import numpy as np
import torch
import torch.nn.functional as F

from lucent_core._device import to_device
from lucent_core.validate import choice, integer, real, real_scalar, shape

__all__ = ["crop", "pad", "rotate", "scale"]

PAD_MODES = ("constant", "reflect", "replicate")


def pad(x: torch.Tensor, width: int, mode: str = "constant", value: float = 0.5) -> torch.Tensor:
    """Pad all four sides by ``width`` pixels.

    Args:
        mode: ``"constant"`` (filled with ``value``), ``"reflect"`` or ``"replicate"``.

    Example:
        >>> pad(torch.zeros(1, 3, 4, 4), 2).shape
        torch.Size([1, 3, 8, 8])
    """
    choice("mode", mode, PAD_MODES)
    width = integer("width", width, minimum=0)
    if mode == "reflect" and width >= min(x.shape[-2:]):
        raise ValueError(f"width must be < {min(x.shape[-2:])} with mode='reflect', got {width}")
    if mode == "constant":
        return F.pad(x, [width] * 4, mode="constant", value=value)
    return F.pad(x, [width] * 4, mode=mode)


def crop(x: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """The ``height x width`` window whose top-left pixel is (row ``top``, column ``left``).

    Example:
        >>> crop(torch.arange(16.).reshape(1, 1, 4, 4), 1, 2, 2, 2).flatten().tolist()
        [6.0, 7.0, 10.0, 11.0]
    """
    rows, cols = x.shape[-2:]
    if not (0 <= top and 0 <= left and 1 <= height <= rows - top and 1 <= width <= cols - left):
        raise ValueError(f"crop top={top}, left={left}, {height}x{width} is not in {rows}x{cols}")
    return x[..., top:top + height, left:left + width]


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Resize by ``factor`` (bilinear); the new size is ``int(factor * size)``.

    Example:
        >>> scale(torch.zeros(1, 3, 10, 20), 0.5).shape
        torch.Size([1, 3, 5, 10])
    """
    factor = real("factor", factor, positive=True)
    if factor == 1.0:
        return x
    size = (max(1, int(factor * x.shape[-2])), max(1, int(factor * x.shape[-1])))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def rotate(x: torch.Tensor, degrees: "float | torch.Tensor") -> torch.Tensor:
    """Rotate about the image centre by ``degrees`` (anticlockwise; a float or one per image).

    Example:
        >>> rotate(torch.ones(2, 3, 8, 8), 0.0).shape
        torch.Size([2, 3, 8, 8])
    """
    single = real_scalar(degrees) if not isinstance(degrees, torch.Tensor) else None
    if single is not None:
        if single == 0:  # decided on the host: reading a GPU value would wait for the GPU
            return x
        degrees = torch.full((x.shape[0],), single)
    elif not isinstance(degrees, torch.Tensor):  # one angle per image: a list or an array
        degrees = torch.as_tensor(np.asarray(degrees, dtype=np.float64))
    angle = to_device(degrees, x.device, x.dtype).reshape(-1)
    shape("degrees", angle, (1,), (x.shape[0],))  # one angle, or one per image
    angle = angle.expand(x.shape[0])
    return KT.rotate(x, angle, mode="bilinear", padding_mode="zeros", align_corners=False)
