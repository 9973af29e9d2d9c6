"""Photos in, activations out: reading images into tensors and running a model on them once.

Images are RGB in [0, 1]: :func:`load_image` reads PIL images, paths, arrays and tensors;
:func:`layer_activations` and :func:`image_activations` pass them through the model's own
preprocessing (:func:`lucent_core.preprocessing.preprocessing_of`), exactly as rendered images
are, and run the model (in eval mode, without gradient) up to the layers asked for.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> image_activations(net, "1", torch.rand(3, 10, 12)).shape
    torch.Size([1, 4, 8, 10])
"""

from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lucent_core.hooks import capture, frozen, model_device, run_to_layers
from lucent_core.validate import instance, integer, shape, size_pair
from lucent_core.io import centre_crop_box, open_photo
from lucent_core.preprocessing import Preprocessing, preprocessing_of

__all__ = ["ImageSource", "image_activations", "image_batch", "layer_activations", "load_image",
           "run_layers"]

ImageSource = Union[Image.Image, str, "os.PathLike[str]", np.ndarray, torch.Tensor]
Size = Union[int, Sequence[int], None]

_RANGE_TOLERANCE = 1e-3


# --- images ------------------------------------------------------------------------------

def _from_array(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 3 and array.shape[0] == 3 != array.shape[-1]:
        raise ValueError(f"source {array.shape} looks channels-first: use array.transpose(1, 2, 0)")
    shape("source", array, ("H", "W", 3))
    return torch.from_numpy(np.array(array)).permute(2, 0, 1)[None]  # a copy: writable


def _from_tensor(tensor: torch.Tensor) -> torch.Tensor:
    shape("source", tensor, (3, "H", "W"), (1, 3, "H", "W"))
    t = tensor.detach()
    return t[None] if t.dim() == 3 else t


def _to_unit_float(t: torch.Tensor, name: str) -> torch.Tensor:
    """``t`` (the argument ``name``) as floats in [0, 1]: uint8 / 255, or checked floats."""
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if not (t.is_floating_point() or t.dtype in (torch.int16, torch.int32, torch.int64)):
        raise TypeError(f"{name} must be uint8 (0..255) or float in [0, 1], got dtype {t.dtype}")
    t = t.float()
    low, high = t.min().item(), t.max().item()
    if not -_RANGE_TOLERANCE <= low <= high <= 1 + _RANGE_TOLERANCE:  # False for NaN too
        raise ValueError(f"{name} values must be in [0, 1] or uint8 0..255, got {low:g}..{high:g}")
    return t.clamp(0, 1)


def _resize(image: torch.Tensor, size: "int | tuple[int, int] | None") -> torch.Tensor:
    """``image`` resized as :func:`load_image`'s (checked) ``size`` says."""
    if size is None:
        return image
    height, width = image.shape[-2:]
    if isinstance(size, int):  # the shorter side, then the centre square
        scaled, (top, left) = centre_crop_box(height, width, size)
        return _resize(image, scaled)[..., top:top + size, left:left + size]
    if tuple(size) == (height, width):
        return image
    resized = F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False,
                            antialias=True)
    return resized.clamp(0, 1)


def load_image(source: ImageSource, size: Size = None) -> torch.Tensor:
    """Read an image into a ``(1, 3, H, W)`` float32 tensor in [0, 1].

    Args:
        source: a PIL image (any mode; converted to RGB), a file path (turned upright by its
            EXIF orientation, as image viewers show it), an ``(H, W, 3)`` array
            (uint8 0..255 or float in [0, 1]), or a ``(3, H, W)`` / ``(1, 3, H, W)`` tensor
            (uint8 or float in [0, 1]).
        size: None to keep the size; an int to scale the shorter side to ``size`` and crop the
            centre square (as Lucid's recipes do); or ``(height, width)`` to resize to exactly
            that (antialiased bilinear).

    Returns:
        A float32 tensor of shape ``(1, 3, H, W)`` with values in [0, 1], on the CPU (or on
        the input tensor's device).

    Raises:
        TypeError: for an unsupported source type or dtype, or a single ``size`` that is not
            a whole number.
        ValueError: for a wrong or empty shape, values outside [0, 1], another bad ``size``, or
            a file that is not an image.
        FileNotFoundError: for a path that does not exist.

    Example:
        >>> array = np.zeros((20, 40, 3), dtype=np.uint8)
        >>> array[..., 0] = 255
        >>> image = load_image(array, size=10)  # shorter side 10, centre-cropped to 10 x 10
        >>> tuple(image.shape), image[0, :, 5, 5].tolist()
        ((1, 3, 10, 10), [1.0, 0.0, 0.0])
    """
    if isinstance(size, (tuple, list)):
        size = size_pair("size", size)
    elif size is not None:  # the shorter side
        size = integer("size", size, minimum=1)
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"no image file at {os.fspath(source)!r}")
        try:
            source = open_photo(source)  # upright: EXIF orientation applied
        except (Image.UnidentifiedImageError, Image.DecompressionBombError) as error:
            raise ValueError(f"{os.fspath(source)!r} is not an image file PIL can read "
                             f"({error})") from error
    if isinstance(source, Image.Image):
        source = np.asarray(source.convert("RGB"))
    instance("source", source, (np.ndarray, torch.Tensor), "a PIL image, path, array or tensor")
    tensor = _from_array(source) if isinstance(source, np.ndarray) else _from_tensor(source)
    if 0 in tensor.shape:
        raise ValueError(f"source must not be empty, got shape {tuple(source.shape)}")
    return _resize(_to_unit_float(tensor, "source"), size)


def image_batch(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A ``(B, 3, H, W)`` float tensor in [0, 1] from a batch given as a tensor (channels
    first) or an array (``(B, H, W, 3)``, channels last, as renders return), uint8 or float."""
    if isinstance(images, np.ndarray):
        shape("images", images, ("B", "H", "W", 3))
        images = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)
    instance("images", images, torch.Tensor, "a tensor or array (one image: use load_image)")
    shape("images", images, ("B", 3, "H", "W"))
    return _to_unit_float(images.detach(), "images")


def layer_activations(model: nn.Module, images: torch.Tensor | np.ndarray,
                      layers: str | Sequence[str], preprocess: Preprocessing | None = None
                      ) -> dict[str, torch.Tensor]:
    """What ``layers`` give for a batch of images, computed once without gradient.

    The images are moved to the model's device and dtype, passed through ``preprocess``
    (default: the model's own) and the model runs, in eval mode, up to the deepest layer
    (the model is left as it was).

    Args:
        model: the network.
        images: ``(B, 3, H, W)`` RGB tensor, or ``(B, H, W, 3)`` array (``result.images``
            of a render), float in [0, 1] or uint8.
        layers: layer names (or one name).
        preprocess: how images become model input (default: the model's own).

    Returns:
        ``{layer: what it produced}`` (normally ``(B, C, ...)`` tensors).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> layer_activations(net, torch.rand(2, 3, 10, 12), ["1"])["1"].shape
        torch.Size([2, 4, 8, 10])
    """
    return run_layers(model, image_batch(images), layers, preprocess)


def run_layers(model: nn.Module, images: torch.Tensor, layers: str | Sequence[str],
                         preprocess: Preprocessing | None = None) -> dict[str, torch.Tensor]:
    """:func:`layer_activations` for a batch already known to be ``(B, 3, H, W)`` in [0, 1]
    (no range check: on a GPU that check waits for the device)."""
    device, dtype = model_device(model)
    preprocess = preprocessing_of(model, preprocess)
    layers = [layers] if isinstance(layers, str) else list(layers)
    with frozen(model), capture(model, layers) as acts, torch.no_grad():
        run_to_layers(model, preprocess(images.to(device=device, dtype=dtype)), acts)
        return dict(acts)


def image_activations(model: nn.Module, layer: str, image: ImageSource, size: Size = None,
                      preprocess: Preprocessing | None = None) -> torch.Tensor:
    """The activation of ``image`` at ``layer``, computed once without gradient.

    The image is read with :func:`load_image`, moved to the model's device and dtype, passed
    through ``preprocess`` (default: the model's own, :func:`~lucent_core.models.preprocessing_of`)
    and the model is run up to ``layer`` in eval mode (the model is left as it was).

    Args:
        model: the network.
        layer: layer name (see :func:`lucent_core.hooks.resolve_layer`).
        image: anything :func:`load_image` accepts.
        size: passed to :func:`load_image`.
        preprocess: how images become model input (default: the model's own).

    Returns:
        The detached activation, with a batch dimension of 1 (e.g. ``(1, C, H', W')``).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> image_activations(net, "0", torch.rand(3, 10, 12)).shape
        torch.Size([1, 4, 8, 10])
    """
    found = layer_activations(model, load_image(image, size), [layer], preprocess)[layer]
    instance(f"the output of layer {layer!r}", found, torch.Tensor, "a tensor")
    return found.detach().clone()
