"""How a model wants its input: value range, mean/std, channel order, input size.

Models from the zoo carry a :class:`Preprocessing` as ``model.preprocessing``;
:func:`preprocessing_of` finds it (or the identity) for any model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lucent_core._device import DeviceCopies
from lucent_core.validate import choice, instance, real_scalar, reals, size_pair

__all__ = ["Preprocessing", "preprocessing_of"]

CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class Preprocessing:
    """Turns rendered RGB images in [0, 1] into the input a model expects.

    Applied in this order: resize to ``input_size`` (if the model needs a fixed size;
    bilinear, antialiased when the image is larger), map
    [0, 1] linearly onto ``value_range``, reorder channels to ``channel_order``, subtract
    ``mean`` and divide by ``std`` (both given in the model's channel order and value range).

    Args:
        value_range: what 0 and 1 become (e.g. ``(0, 255)``; InceptionV1: ``(-117, 138)``).
        mean: per-channel mean to subtract, or None.
        std: per-channel standard deviation to divide by, or None.
        channel_order: ``"RGB"`` or ``"BGR"``.
        input_size: ``(height, width)`` the model requires, or None if any size works.

    Example:
        >>> imagenet = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        >>> imagenet(torch.full((1, 3, 2, 2), 0.485))[0, 0, 0, 0].item()
        0.0
    """

    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str = "RGB"
    input_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("mean", "std"):  # one number, or 1 or 3 of them: a tuple of floats
            values = getattr(self, name)
            if values is not None:
                single = real_scalar(values)
                values = (single,) if single is not None else values
                numbers = tuple(reals(name, values, positive=name == "std"))
                if len(numbers) not in (1, 3):
                    raise ValueError(f"{name} must be 1 number or 3 (RGB), got {numbers}")
                object.__setattr__(self, name, numbers)
        value_range = tuple(reals("value_range", self.value_range))
        if len(value_range) != 2 or value_range[0] == value_range[1]:
            raise ValueError(f"value_range must be two different numbers, got {self.value_range!r}")
        object.__setattr__(self, "value_range", value_range)
        if self.input_size is not None:
            object.__setattr__(self, "input_size", size_pair("input_size", self.input_size))
        choice("channel_order", self.channel_order, CHANNEL_ORDERS)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            shrinks = x.shape[-2] > self.input_size[0] or x.shape[-1] > self.input_size[1]
            # no aliasing when a larger render shrinks; the antialiased kernel has no CPU
            # half-precision version, so half-precision images shrink in float32
            work = torch.float32 if shrinks and x.dtype in (torch.float16, torch.bfloat16) \
                else x.dtype
            x = F.interpolate(x.to(work), size=self.input_size, mode="bilinear",
                              align_corners=False, antialias=shrinks).to(x.dtype)
        low, high = self.value_range
        if (low, high) != (0.0, 1.0):
            x = x * (high - low) + low
        if self.channel_order == "BGR":
            x = x.flip(1)
        if self.mean is not None:
            x = x - _per_channel(self.mean, x.device, x.dtype)
        if self.std is not None:
            x = x / _per_channel(self.std, x.device, x.dtype)
        return x


_PER_CHANNEL: dict[tuple[float, ...], DeviceCopies] = {}


def _per_channel(values: tuple[float, ...], device: torch.device, dtype: torch.dtype
                 ) -> torch.Tensor:
    """``values`` as a ``(1, C, 1, 1)`` tensor, kept on each device and dtype once: building
    it every step would copy from the host each time, which waits for a GPU to catch up."""
    if values not in _PER_CHANNEL:
        _PER_CHANNEL[values] = DeviceCopies(torch.tensor(values).view(1, -1, 1, 1))
    return _PER_CHANNEL[values].on(device, dtype)


def preprocessing_of(model: nn.Module, preprocess: "Preprocessing | Callable | None" = None
                     ) -> "Preprocessing | Callable":
    """``preprocess`` if given (a :class:`Preprocessing`, or any function from images in
    [0, 1] to model input), else the model's own :class:`Preprocessing` (set by the model
    zoo), else the identity: what every function with a ``preprocess=`` argument uses.

    Models from :func:`lucent_core.models.create_model` carry it as ``model.preprocessing``;
    for any other model, images reach it unchanged (RGB in [0, 1], any size) unless you pass
    ``preprocess=`` to the render.

    Example:
        >>> preprocessing_of(nn.Conv2d(3, 4, 1)) == Preprocessing()   # the identity
        True
    """
    if preprocess is not None:
        instance("preprocess", preprocess, Callable, "a lucent_core Preprocessing or a function")
        return preprocess
    found = getattr(model, "preprocessing", None)
    if found is None:
        return Preprocessing()
    return instance("model.preprocessing", found, Preprocessing, "a Preprocessing")
