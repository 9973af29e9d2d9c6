"""Matching a photo's activations: feature inversion and caricatures.

Run a photo through the model once, keep its activation at a layer as a fixed *target*, then
render an image whose activation at that layer resembles the target:

* :func:`feature_inversion` reproduces the photo as the layer sees it: by default it minimises
  the relative L2 distance (:func:`activation_distance`, Mahendran & Vedaldi, 2015).
* :func:`caricature` exaggerates what the layer sees: it maximises the dot product with the
  target (:func:`activation_match`, Lucid's ``dot_compare`` with a cosine-similarity power).

Images are RGB in [0, 1] (:func:`load_image` reads PIL images, paths, arrays and tensors). The
photo goes through the model's own preprocessing
(:func:`lucent_core.models.preprocessing_of`), exactly as rendered images do, so render at the
photo's size (``param.image(width, height)``) to get activations of the target's shape.

Example:
    >>> from torch import nn
    >>> from lucent_core import param, render_vis
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> photo = torch.rand(1, 3, 16, 16)
    >>> result = render_vis(net, feature_inversion(net, "1", photo),
    ...                     param_f=lambda: param.image(16), transforms=[], thresholds=(5,),
    ...                     progress=False, seed=0)
    >>> result.image.shape
    (1, 16, 16, 3)
"""

from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lucent_core._device import DeviceCopies
from lucent_core._validate import finite_real
from lucent_core.hooks import capture, frozen, model_device, run_to_layers
from lucent_core.io import centre_crop_box, open_photo
from lucent_core.models.config import Preprocessing, preprocessing_of
from lucent_core.objectives.catalogue import _layer
from lucent_core.objectives.core import Activations, Objective, wrap_objective

__all__ = ["ImageSource", "activation_distance", "activation_match", "caricature",
           "feature_inversion", "image_activations", "layer_activations", "load_image"]

ImageSource = Union[Image.Image, str, "os.PathLike[str]", np.ndarray, torch.Tensor]
Size = Union[int, Sequence[int], None]

_RANGE_TOLERANCE = 1e-3


# --- images ------------------------------------------------------------------------------

def _from_array(array: np.ndarray) -> torch.Tensor:
    if array.ndim != 3 or array.shape[-1] != 3:
        hint = ""
        if array.ndim == 3 and array.shape[0] == 3:
            hint = " (this looks channels-first: use array.transpose(1, 2, 0))"
        raise ValueError(f"an image array must be (H, W, 3) RGB, channels last; got shape "
                         f"{array.shape}{hint}")
    return torch.from_numpy(np.array(array)).permute(2, 0, 1)[None]  # a copy: writable


def _from_tensor(tensor: torch.Tensor) -> torch.Tensor:
    t = tensor.detach()
    if t.dim() == 3:
        t = t[None]
    if t.dim() != 4 or t.shape[:2] != (1, 3):
        raise ValueError(f"an image tensor must be (3, H, W) or (1, 3, H, W) RGB, channels "
                         f"first; got shape {tuple(tensor.shape)}")
    return t


def _to_unit_float(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in
                                     (torch.int16, torch.int32, torch.int64)):
        raise TypeError(f"unsupported image dtype {t.dtype}; use uint8 (0..255) or float in [0, 1]")
    t = t.float()
    low, high = t.min().item(), t.max().item()
    if not np.isfinite([low, high]).all() or low < -_RANGE_TOLERANCE or \
            high > 1 + _RANGE_TOLERANCE:
        raise ValueError(f"image values must lie in [0, 1] (got {low:g}..{high:g} for shape "
                         f"{shape}); for 0..255 values pass uint8 or divide by 255")
    return t.clamp(0, 1)


def _resize(image: torch.Tensor, size: Size) -> torch.Tensor:
    if size is None:
        return image
    height, width = image.shape[-2:]
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        side = int(size)
        if side < 1:
            raise ValueError(f"size must be positive, got {size}")
        scaled, (top, left) = centre_crop_box(height, width, side)
        image = _resize(image, scaled)
        return image[..., top:top + side, left:left + side]
    if isinstance(size, (tuple, list)) and len(size) == 2 and \
            all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1
                for s in size):
        target = (int(size[0]), int(size[1]))
        if target == (height, width):
            return image
        resized = F.interpolate(image, size=target, mode="bilinear", align_corners=False,
                                antialias=True)
        return resized.clamp(0, 1)
    raise ValueError(f"size must be None, a positive int (shorter side, then a centre crop "
                     f"to a square) or a (height, width) pair; got {size!r}")


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
        TypeError: for an unsupported source type or dtype.
        ValueError: for a wrong or empty shape, values outside [0, 1], a bad ``size``, or a
            file that is not an image.
        FileNotFoundError: for a path that does not exist.

    Example:
        >>> array = np.zeros((20, 40, 3), dtype=np.uint8)
        >>> array[..., 0] = 255
        >>> image = load_image(array, size=10)  # shorter side 10, centre-cropped to 10 x 10
        >>> tuple(image.shape), image[0, :, 5, 5].tolist()
        ((1, 3, 10, 10), [1.0, 0.0, 0.0])
    """
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
    if isinstance(source, np.ndarray):
        shape = source.shape
        tensor = _from_array(source)
    elif isinstance(source, torch.Tensor):
        shape = tuple(source.shape)
        tensor = _from_tensor(source)
    else:
        raise TypeError(f"cannot read an image from {type(source).__name__}; pass a PIL image, "
                        "a file path, an (H, W, 3) numpy array or a (3, H, W) / (1, 3, H, W) "
                        "tensor in [0, 1]")
    if 0 in tensor.shape:
        raise ValueError(f"the image is empty (shape {shape})")
    return _resize(_to_unit_float(tensor, shape), size)


def _image_batch(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A ``(B, 3, H, W)`` float tensor in [0, 1] from a batch given as a tensor (channels
    first) or an array (``(B, H, W, 3)``, channels last, as renders return), uint8 or float."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"an image batch array must be (B, H, W, 3), channels last; got "
                             f"shape {images.shape}")
        tensor = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)
    elif isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"an image batch tensor must be (B, 3, H, W), channels first; got "
                             f"shape {tuple(images.shape)}")
        tensor = images.detach()
    else:
        raise TypeError(f"images must be a (B, 3, H, W) tensor or a (B, H, W, 3) array; got "
                        f"{type(images).__name__} (one picture: use load_image)")
    return _to_unit_float(tensor, tuple(images.shape))


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
    return _checked_activations(model, _image_batch(images), layers, preprocess)


def _checked_activations(model: nn.Module, images: torch.Tensor, layers: str | Sequence[str],
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
    if not isinstance(found, torch.Tensor):
        raise TypeError(f"layer {layer!r} did not produce a tensor (got {type(found).__name__})")
    return found.detach().clone()


# --- the objective -----------------------------------------------------------------------

def _as_target(target: torch.Tensor | np.ndarray) -> torch.Tensor:
    goal = torch.as_tensor(np.asarray(target) if isinstance(target, np.ndarray) else target)
    goal = goal.detach().float()
    if goal.numel() == 0 or not torch.isfinite(goal).all():
        raise ValueError("the target activation must be a non-empty tensor of finite values")
    if goal.pow(2).sum() == 0:
        raise ValueError("the target activation is all zeros: there is nothing to match "
                         "(try another layer or image)")
    return goal


def _centre_crop(t: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    for dim, want in enumerate(size, start=2):
        start = (t.shape[dim] - want) // 2
        t = t.narrow(dim, start, want)
    return t


class _Target(DeviceCopies):
    """A target activation (one, or one per image of the batch), kept on each device."""

    def __init__(self, target: torch.Tensor | np.ndarray):
        super().__init__(_as_target(target))
        self.rows_checked = False


def _paired(acts: Activations, layer: str, goal: _Target, batch: int | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's activation and the target, both flattened to ``(B or 1, N)``.

    A spatial activation larger than the target (robustness transforms pad the image) is
    centre-cropped to the target's size. With ``batch``, a per-image target gives its row
    for that image.
    """
    t = _layer(acts, layer, batch)
    shape = tuple(t.shape)
    g = goal.like(t)
    if g.dim() == t.dim() - 1:
        g = g[None]
    full = acts[layer].shape[0] if isinstance(acts[layer], torch.Tensor) else None
    if batch is not None and g.dim() == t.dim() and g.shape[0] > 1 and g.shape[0] == full:
        g = g[batch:batch + 1]
    if not goal.rows_checked and g.shape[0] > 1:  # once: the first step reads the device
        zero = (g.reshape(g.shape[0], -1).norm(dim=1) == 0).nonzero().flatten().tolist()
        if zero:
            raise ValueError(f"the target activation of image(s) {zero} is all zeros: there "
                             "is nothing to match for them (try another layer or image)")
        goal.rows_checked = True
    if t.dim() > 2 and g.dim() == t.dim() and g.shape[1] == t.shape[1] and \
            all(have >= want for have, want in zip(t.shape[2:], g.shape[2:])):
        t = _centre_crop(t, tuple(g.shape[2:]))
    if g.dim() != t.dim() or g.shape[1:] != t.shape[1:] or g.shape[0] not in (1, t.shape[0]):
        raise ValueError(
            f"the target activation has shape {tuple(goal.tensor.shape)} but layer {layer!r} "
            f"gives {shape} (batch first); render at the size of the image the target came "
            "from, e.g. param.image(width, height)")
    return t.reshape(t.shape[0], -1), g.reshape(g.shape[0], -1)


@wrap_objective
def activation_match(layer: str, target: torch.Tensor | np.ndarray, cossim_pow: float = 0.0,
                     batch: int | None = None) -> Objective:
    """Similarity to a target activation: dot product times cosine similarity to a power.

    For each image, with ``a`` its activation at ``layer`` and ``t`` the target (both
    flattened over channels and positions)::

        value = (a . t) / |t|^2 * max(0.1, cos(a, t)) ** cossim_pow

    averaged over the images. This is Lucid's ``dot_compare`` (feature-inversion and
    caricature notebooks, ``recipes/caricature.py``), whose default is ``cossim_pow=0``: the
    plain dot product. It rewards activations that are *large* along the target, so it
    exaggerates what the layer sees (a *caricature*); a larger ``cossim_pow`` rewards pointing
    in the target's *direction* more. No exponent gives it a maximum at ``a == t``: the
    render's activation keeps growing past the target's size. To reproduce the target itself,
    use :func:`activation_distance`.

    Two deliberate differences from Lucid's ``dot_compare``: the value is divided by ``|t|^2``
    so that ``a == t`` scores exactly 1 at any layer (this changes the scale, not the optimum,
    and makes the weights of added regularisers comparable across layers); and ``cos`` is the
    true cosine similarity (Lucid divides the dot product by one of the two norms only).

    Args:
        layer: layer name.
        target: the activation to match: one image's activation (``(C, H, W)``, ``(C,)``), or
            with a batch dimension of 1 (shared by all images) or of the render's batch size
            (image ``i`` matches ``target[i]``). Where the render's activation map is larger
            than the target's (the standard robustness transforms pad the image by up to 12
            px), its centre is compared, much as Lucid's recipe crops the transformed image
            back to the model's input size.
        cossim_pow: exponent of the cosine similarity (0: plain dot product).
        batch: match only this image of the render's batch.

    Example:
        >>> target = torch.tensor([1.0, 2.0, 2.0])
        >>> obj = activation_match("fc", target, cossim_pow=1.0)
        >>> obj({"fc": target[None]}).item()  # a perfect match
        1.0
        >>> round(obj({"fc": torch.tensor([[2.0, 4.0, 4.0]])}).item(), 4)  # twice as large
        2.0
    """
    goal = _Target(target)
    cossim_pow = finite_real("cossim_pow", cossim_pow, minimum=0)

    def inner(acts: Activations) -> torch.Tensor:
        a, g = _paired(acts, layer, goal, batch)
        dot = (a * g).sum(1)
        g_norm = g.norm(dim=1)
        value = dot / g_norm.pow(2)
        if cossim_pow:
            cossim = dot / (a.norm(dim=1) * g_norm + 1e-8)
            value = value * cossim.clamp(min=0.1) ** cossim_pow
        return value.mean()
    return Objective(inner, [layer])


@wrap_objective
def activation_distance(layer: str, target: torch.Tensor | np.ndarray,
                        batch: int | None = None) -> Objective:
    """Relative squared distance from a target activation: ``|a - t|^2 / |t|^2``.

    Mahendran & Vedaldi's feature-inversion loss (2015), averaged over the images. Like the
    regularisers, higher means *more of the quantity* (here: farther from the target), so
    subtract it: ``-activation_distance(layer, t)`` is largest, 0, exactly at ``a == t``. 1 is
    as far as an all-zero activation.

    Args:
        layer: layer name.
        target: as for :func:`activation_match` (larger activation maps are centre-cropped).
        batch: measure only this image of the render's batch.

    Example:
        >>> target = torch.tensor([3.0, 4.0])
        >>> activation_distance("fc", target)({"fc": torch.tensor([[3.0, 9.0]])}).item()
        1.0
    """
    goal = _Target(target)

    def inner(acts: Activations) -> torch.Tensor:
        a, g = _paired(acts, layer, goal, batch)
        return ((a - g).pow(2).sum(1) / g.pow(2).sum(1)).mean()
    return Objective(inner, [layer])


def _matching(kind: str, model: nn.Module, layer: str, image: ImageSource,
              cossim_pow: float | None, size: Size, preprocess: Preprocessing | None
              ) -> Objective:
    if cossim_pow is not None:  # checked before the model runs
        cossim_pow = finite_real("cossim_pow", cossim_pow, minimum=0)
    target = image_activations(model, layer, image, size=size, preprocess=preprocess)
    if cossim_pow is None:
        objective = -activation_distance(layer, target)
        objective.name = f"{kind}({layer!r})"
    else:
        objective = activation_match(layer, target, cossim_pow=cossim_pow)
        objective.name = f"{kind}({layer!r}, cossim_pow={cossim_pow:g})"
    return objective


def feature_inversion(model: nn.Module, layer: str, image: ImageSource,
                      cossim_pow: float | None = None, size: Size = None,
                      preprocess: Preprocessing | None = None) -> Objective:
    """Objective for *feature inversion*: render an image the model sees as it sees ``image``.

    Runs ``image`` through the model once to get its activation ``t`` at ``layer``, then:

    * ``cossim_pow=None`` (default): ``-activation_distance(layer, t)``, Mahendran & Vedaldi's
      relative L2 loss. Its maximum, 0, is ``a == t``, so the render's activation converges on
      the photo's.
    * a number: Lucid's objective, ``activation_match(layer, t, cossim_pow)`` (dot product
      times cosine similarity to that power; 1 at ``a == t``). Lucid's recipe uses this one
      objective, with ``cossim_pow=0``, for feature inversion and caricatures alike; it keeps
      rewarding activations larger than the photo's, so it drifts into a caricature
      (:func:`caricature`).

    Render it at the image's size (with the standard transforms, which pad the image, the
    centre of the render's activation map is compared), usually with a smoothness penalty::

        objective = feature_inversion(model, "block3_conv1", "photo.jpg", size=128) \\
            - 1e-4 * total_variation()
        render_vis(model, objective, param_f=lambda: param.image(128))

    Args:
        model: the network (its ``preprocessing`` is applied to the image).
        layer: the layer whose activation is matched.
        image: anything :func:`load_image` accepts (PIL image, path, ``(H, W, 3)`` array,
            ``(3, H, W)`` / ``(1, 3, H, W)`` tensor in [0, 1]).
        cossim_pow: None for the L2 loss, or the exponent of :func:`activation_match`.
        size: passed to :func:`load_image` (None: the image's own size).
        preprocess: how images become model input (default: the model's own).

    Returns:
        An :class:`~lucent_core.objectives.Objective` reading ``layer``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> photo = torch.rand(3, 8, 8)
        >>> objective = feature_inversion(net, "0", photo)
        >>> objective.name, objective({"0": image_activations(net, "0", photo)}).item() == 0
        ("feature_inversion('0')", True)
    """
    return _matching("feature_inversion", model, layer, image, cossim_pow, size, preprocess)


def caricature(model: nn.Module, layer: str, image: ImageSource, cossim_pow: float = 0.0,
               size: Size = None, preprocess: Preprocessing | None = None) -> Objective:
    """Objective for a *caricature*: exaggerate what ``layer`` sees in ``image``.

    Lucid's caricature recipe (``lucid/recipes/caricature.py``, and the "Feature Inversion
    Caricatures" notebook behind *The Building Blocks of Interpretability*): maximise the dot
    product between the render's activation and the photo's (``dot_compare``, default
    ``cossim_pow=0``), starting from random noise (Lucid does *not* start from the photo) with
    the standard robustness transforms. Since the dot product keeps growing as the activation
    grows along the photo's, the render amplifies the features the layer finds in the photo.
    Raise ``cossim_pow`` to stay closer to the photo; see :func:`feature_inversion`.

    Args:
        model: the network (its ``preprocessing`` is applied to the image).
        layer: the layer whose activation is exaggerated.
        image: anything :func:`load_image` accepts.
        cossim_pow: the cosine-similarity exponent of :func:`activation_match`.
        size: passed to :func:`load_image` (None: the image's own size).
        preprocess: how images become model input (default: the model's own).

    Returns:
        An :class:`~lucent_core.objectives.Objective` reading ``layer`` (the photo itself
        scores 1).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> caricature(net, "0", torch.rand(3, 8, 8)).name
        "caricature('0', cossim_pow=0)"
    """
    if cossim_pow is None:
        raise ValueError("caricature needs a number for cossim_pow (0 is Lucid's); None is "
                         "feature_inversion's L2 loss")
    return _matching("caricature", model, layer, image, cossim_pow, size, preprocess)
