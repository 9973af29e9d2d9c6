"""Neuron groups: what a layer sees where, on one image (Olah et al., "The Building Blocks of
Interpretability", Distill 2018).

The activations of a convolutional layer on one image, ``(1, C, H, W)``, are a matrix of
``H * W`` positions by ``C`` channels. Non-negative matrix factorisation splits it into ``k``
groups: each group is a *direction* in channel space (which channels fire together) and a
*spatial map* (where on the image they fire). Rendering each direction shows what the group
responds to; upsampling its map onto the image shows where it found it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    >>> groups = neuron_groups(net, "1", torch.rand(3, 32, 32), k=3)
    >>> groups.directions.shape, groups.spatial_maps.shape
    (torch.Size([3, 8]), torch.Size([3, 30, 30]))
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lucent_core import validate
from lucent_core.validate import (choice, flag, instance, integer, not_both, real, shape,
                                  steps_or_thresholds)
from lucent_core.activations import image_activations, load_image
from lucent_core.objectives import Objective, direction
from lucent_core.param import image as image_param
from lucent_core.render import RenderResult, render_vis

__all__ = ["DEFAULT_COSSIM_POW", "NMF_METHODS", "NeuronGroups", "groups_overlay", "neuron_groups",
           "nmf", "render_groups"]

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]

#: NMF algorithms: ``"hals"`` (hierarchical alternating least squares, Cichocki & Phan 2009:
#: exact coordinate-wise updates, converges in far fewer iterations) and ``"mu"`` (Lee &
#: Seung's multiplicative updates for the Frobenius loss, 2001).
NMF_METHODS = ("hals", "mu")

#: Default cosine-similarity exponent of the group renders. Lucid's Neuron Groups notebook uses
#: a plain direction (``cossim_pow=0``); its activation grids and semantic dictionaries weight
#: the dot product by ``max(0.1, cos) ** cossim_pow`` (1 by default). For groups it matters:
#: activations after a ReLU and NMF directions are both non-negative, so a plain dot product
#: can also be raised by exciting every channel at once, while the cosine weight rewards
#: images whose activations point *along* the group's direction. ``cossim_pow=0`` reproduces
#: the notebook.
DEFAULT_COSSIM_POW = 1.0

DEFAULT_RENDER_STEPS = 256
DEFAULT_RENDER_SIZE = 128
_CHECK_EVERY = 10  # iterations between convergence checks


# --- non-negative matrix factorisation ---------------------------------------------------

def _as_matrix(matrix: "torch.Tensor | np.ndarray") -> torch.Tensor:
    if isinstance(matrix, np.ndarray):
        matrix = torch.from_numpy(matrix)
    instance("matrix", matrix, torch.Tensor, "a real tensor or array")
    if matrix.dtype == torch.bool or matrix.is_complex():
        raise TypeError(f"matrix must be a real tensor or array, got {matrix.dtype}")
    if matrix.dim() != 2 or matrix.numel() == 0:
        raise ValueError(f"matrix must be a non-empty (N, C) matrix, got {tuple(matrix.shape)}")
    return matrix


def _hals_step(x: torch.Tensor, w: torch.Tensor, h: torch.Tensor, tiny: float) -> None:
    """One HALS sweep, in place: every row of ``h``, then every column of ``w``."""
    wtx, wtw = w.T @ x, w.T @ w
    for j in range(h.shape[0]):
        h[j] = (h[j] + (wtx[j] - wtw[j] @ h) / wtw[j, j].clamp(min=tiny)).clamp_(min=0)
    xht, hht = x @ h.T, h @ h.T
    for j in range(w.shape[1]):
        w[:, j] = (w[:, j] + (xht[:, j] - w @ hht[:, j]) / hht[j, j].clamp(min=tiny)).clamp_(min=0)


def _mu_step(x: torch.Tensor, w: torch.Tensor, h: torch.Tensor, tiny: float) -> None:
    """One round of Lee & Seung's multiplicative updates (Frobenius loss), in place."""
    h.mul_((w.T @ x) / ((w.T @ w) @ h).clamp(min=tiny))
    w.mul_((x @ h.T) / (w @ (h @ h.T)).clamp(min=tiny))


def nmf(matrix: "torch.Tensor | np.ndarray", k: int, iterations: int = 1000, seed: int = 0,
        tol: float = 1e-6, method: str = "hals") -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative matrix factorisation ``matrix ~= W @ H`` (Frobenius loss), in torch.

    Starts from a seeded random guess (uniform, scaled so that ``W @ H`` has the matrix's mean)
    and alternates updates of ``H`` and ``W`` until ``iterations`` or until the relative error
    ``||matrix - W @ H|| / ||matrix||`` improves by less than ``tol`` over 10 iterations.
    The result is normalised and ordered: each row of ``H`` has unit L2 norm (its scale moves
    into ``W``), and the components are sorted by decreasing size of ``W[:, j] H[j]``, i.e. by
    how much of the matrix they explain. A component the updates drove to zero (more
    components than the matrix has structure for) comes back as zeros in both, last.
    Computed in float64 (float32 on Apple MPS) on the matrix's device; returned in float64
    for float64 input, else float32.

    Args:
        matrix: ``(N, C)``, every entry >= 0 and finite (tensor or array).
        k: number of components, ``1 <= k <= min(N, C)``.
        iterations: maximum number of update rounds (>= 1).
        seed: seeds the random start (the caller's RNG is not touched); same seed, same result.
        tol: stop once the relative error improves by less than this over 10 iterations
            (0: always run ``iterations``).
        method: ``"hals"`` (default; hierarchical alternating least squares, fast) or
            ``"mu"`` (Lee & Seung multiplicative updates; simple, converges slowly).

    Returns:
        ``(W, H)``: ``W`` is ``(N, k)``, ``H`` is ``(k, C)``, both >= 0.

    Raises:
        ValueError: for negative or non-finite entries, an all-zero matrix, ``k`` out of range,
            or an unknown ``method``.

    Example:
        >>> x = torch.rand(20, 2) @ torch.rand(2, 6)           # a non-negative rank-2 matrix
        >>> w, h = nmf(x, 2)
        >>> w.shape, h.shape, bool((w >= 0).all() and (h >= 0).all())
        (torch.Size([20, 2]), torch.Size([2, 6]), True)
        >>> bool(torch.linalg.norm(x - w @ h) / torch.linalg.norm(x) < 1e-3)
        True
    """
    x = _as_matrix(matrix)
    n, c = x.shape
    choice("method", method, NMF_METHODS)
    k = integer("k", k, minimum=1)
    if k > min(n, c):
        raise ValueError(f"k must be from 1 to min(N, C) = {min(n, c)} for {n} x {c}, got {k}")
    iterations = integer("iterations", iterations, minimum=1)
    tol = real("tol", tol, minimum=0)
    out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    x = x.detach().to(dtype)
    if not torch.isfinite(x).all():
        raise ValueError("matrix has NaN or infinite entries; NMF needs finite values")
    lowest = x.min().item()
    if lowest < 0:
        raise ValueError(f"matrix must be >= 0, got {lowest:.4g}; clamp it or use post-ReLU layers")
    norm = torch.linalg.norm(x)
    if norm == 0:
        raise ValueError("matrix is all zeros: there is nothing to factorise")

    generator = torch.Generator().manual_seed(validate.seed("seed", seed))
    scale = math.sqrt(x.mean().item() / k) / 0.6  # entries 0.6 * scale on average
    # Strictly positive start (multiplicative updates cannot leave an exact zero).
    w = ((torch.rand(n, k, generator=generator, dtype=dtype) + 0.1) * scale).to(x.device)
    h = ((torch.rand(k, c, generator=generator, dtype=dtype) + 0.1) * scale).to(x.device)
    tiny = torch.finfo(dtype).tiny ** 0.5
    step = _hals_step if method == "hals" else _mu_step
    previous = math.inf
    for i in range(1, iterations + 1):
        step(x, w, h, tiny)
        if tol > 0 and i % _CHECK_EVERY == 0:
            error = (torch.linalg.norm(x - w @ h) / norm).item()
            if previous - error < tol:
                break
            previous = error

    sizes = torch.linalg.norm(h, dim=1)
    alive = (sizes > 0) & (torch.linalg.norm(w, dim=0) > 0)
    w[:, ~alive] = 0  # a group that went to zero on either side explains nothing:
    h[~alive] = 0     # no leftover map or direction from before it died
    h[alive] /= sizes[alive, None]
    w[:, alive] *= sizes[alive]
    order = torch.sort(torch.linalg.norm(w, dim=0), descending=True, stable=True).indices
    return w[:, order].to(out_dtype), h[order].to(out_dtype)


# --- images in ----------------------------------------------------------------------------

# --- neuron groups ------------------------------------------------------------------------

@dataclass
class NeuronGroups:
    """The result of :func:`neuron_groups`: ``k`` groups of channels of one layer on one image.

    Groups are ordered by how much of the layer's activation they explain, largest first.

    Attributes:
        layer: the layer name, as given.
        directions: ``(k, C)`` float32, >= 0, each row of unit L2 norm: which channels fire
            together in each group.
        spatial_maps: ``(k, h, w)`` float32, >= 0, at the layer's resolution: how strongly each
            group is present at each position (row 0 is the top of the image); position
            ``(y, x)`` of the activation is approximately ``sum_i spatial_maps[i, y, x] *
            directions[i]``.
        reconstruction_error: ``||A - W H|| / ||A||`` for the ``(h * w, C)`` activation matrix
            ``A`` (0: the groups explain the layer exactly).
        image_size: ``(height, width)`` of the image the activations were computed on (before
            the model's own preprocessing).
        centre_square: the image was the centre square of the original (an ``int`` size),
            so an overlay on the original covers that square only.
    """

    layer: str
    directions: torch.Tensor
    spatial_maps: torch.Tensor
    reconstruction_error: float
    image_size: tuple[int, int]
    centre_square: bool = False

    @property
    def k(self) -> int:
        """Number of groups."""
        return int(self.directions.shape[0])

    def render(self, model: nn.Module, steps: int | None = None, size: int | None = None,
               cossim_pow: float = DEFAULT_COSSIM_POW, **render_kwargs: Any) -> RenderResult:
        """Same as :func:`render_groups` ``(model, self, ...)``."""
        return render_groups(model, self, steps=steps, size=size, cossim_pow=cossim_pow,
                             **render_kwargs)

    def overlay(self, image: "ImageInput | None" = None) -> np.ndarray:
        """Same as :func:`groups_overlay` ``(self, image)``."""
        return groups_overlay(self, image)


def _conv_activation(model: nn.Module, layer: str, pixels: torch.Tensor) -> torch.Tensor:
    activation = image_activations(model, layer, pixels)
    shape(f"layer {layer!r}", activation, ("B", "C", "H", "W"))
    return activation


def neuron_groups(model: nn.Module, layer: str, image: ImageInput, k: int = 6, *,
                  clamp: bool = False, size: "int | Sequence[int] | None" = None,
                  seed: int = 0, iterations: int = 1000, tol: float = 1e-6,
                  method: str = "hals") -> NeuronGroups:
    """Factorise one layer's activations on one image into ``k`` groups of channels.

    Runs the image once through the model (with the model's own preprocessing, see
    :func:`~lucent_core.models.preprocessing_of`), captures ``layer`` as ``(1, C, h, w)``,
    reshapes it to an ``(h * w, C)`` matrix of positions by channels and factorises it with
    :func:`nmf`. The model is left as it was.

    Args:
        model: any ``nn.Module``; it runs on its own device.
        layer: a convolutional layer whose activations are >= 0 (after a ReLU, e.g.
            ``"block3_conv3"``, not ``"block3_conv3_pre_relu"``).
        image: a file path, a PIL image, an ``(H, W, 3)`` array (uint8, or float in [0, 1]) or
            a ``(3, H, W)`` / ``(1, 3, H, W)`` tensor in [0, 1]; RGB.
        k: number of groups, from 1 to ``min(h * w, C)``.
        clamp: set negative activations to zero instead of raising an error.
        size: resize the image to this size (``int`` or ``(height, width)``) first.
        seed, iterations, tol, method: passed to :func:`nmf`.

    Returns:
        A :class:`NeuronGroups` (directions, spatial maps, reconstruction error, image size).

    Raises:
        ValueError: if the layer has negative values (and ``clamp`` is False), is not
            convolutional, or is all zero on this image, or ``k`` is out of range.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        >>> photo = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
        >>> groups = neuron_groups(net, "1", photo, k=2)
        >>> groups.k, tuple(groups.spatial_maps.shape), groups.image_size
        (2, (2, 16, 24), (16, 24))
    """
    clamp = flag("clamp", clamp)
    pixels = load_image(image, size)
    activation = _conv_activation(model, layer, pixels)[0]
    channels, height, width = activation.shape
    matrix = activation.reshape(channels, height * width).T
    lowest = matrix.min().item()
    if lowest < 0:
        if not clamp:
            hint = ""
            if layer.endswith("_pre_relu"):
                hint = f" (e.g. {layer[:-len('_pre_relu')]!r} instead of {layer!r})"
            raise ValueError(f"layer {layer!r} has negative activations: choose a post-ReLU "
                             f"layer{hint}, or pass clamp=True")
        matrix = matrix.clamp(min=0)
    if not matrix.abs().max() > 0:
        raise ValueError(f"layer {layer!r} is all zero on this image: try another image or layer")
    w, h = nmf(matrix, k, iterations=iterations, seed=seed, tol=tol, method=method)
    k = w.shape[1]
    error = (torch.linalg.norm(matrix.double() - w.double() @ h.double())
             / torch.linalg.norm(matrix.double())).item()
    return NeuronGroups(
        layer=layer,
        directions=h.float().cpu(),
        spatial_maps=w.T.reshape(k, height, width).float().cpu().contiguous(),
        reconstruction_error=error,
        image_size=(int(pixels.shape[-2]), int(pixels.shape[-1])),
        centre_square=isinstance(size, (int, np.integer)) and not isinstance(size, bool),
    )


def render_groups(model: nn.Module, groups: NeuronGroups, steps: int | None = None,
                  size: int | None = None, cossim_pow: float = DEFAULT_COSSIM_POW,
                  **render_kwargs: Any) -> RenderResult:
    """Render every group's direction, all ``k`` in one batched render.

    Image ``i`` of the batch maximises ``direction(groups.layer, groups.directions[i],
    batch=i, cossim_pow=cossim_pow)``; the ``k`` objectives are summed with
    :meth:`Objective.sum <lucent_core.objectives.Objective.sum>`.

    Args:
        model: the model the groups were computed on.
        groups: from :func:`neuron_groups`.
        steps: optimisation steps (default 256); or pass ``thresholds=`` for snapshots.
        size: side of the square images (default 128); or pass ``param_f=`` (a batch of
            ``groups.k`` images) instead.
        cossim_pow: weight each position's dot product by ``max(0.1, cos) ** cossim_pow``
            (see :data:`DEFAULT_COSSIM_POW`; 0 is the plain direction of Lucid's notebook).
        **render_kwargs: passed to :func:`~lucent_core.render.render_vis` (``seed``,
            ``transforms``, ``optimizer``, ``progress``, ``param_f``, ``thresholds``, ...).

    Returns:
        The :class:`~lucent_core.render.RenderResult`; ``result.image[i]`` shows group ``i``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> groups = neuron_groups(net, "1", torch.rand(3, 32, 32), k=2)
        >>> result = render_groups(net, groups, steps=4, size=32, progress=False, seed=0)
        >>> result.image.shape
        (2, 32, 32, 3)
    """
    instance("groups", groups, NeuronGroups, "what neuron_groups returns")
    thresholds = steps_or_thresholds(steps, render_kwargs.pop("thresholds", None),
                                     DEFAULT_RENDER_STEPS)
    not_both("size", size, "param_f", render_kwargs.get("param_f"))
    if "param_f" in render_kwargs:
        param_f = render_kwargs.pop("param_f")
    else:
        side = DEFAULT_RENDER_SIZE if size is None else size
        k = groups.k

        def param_f() -> nn.Module:
            return image_param(side, batch=k)
    objective = Objective.sum(direction(groups.layer, groups.directions[i], batch=i,
                                        cossim_pow=cossim_pow) for i in range(groups.k))
    objective.name = f"groups({groups.layer!r}, k={groups.k}, cossim_pow={cossim_pow:g})"
    return render_vis(model, objective, param_f=param_f, thresholds=thresholds, **render_kwargs)


def groups_overlay(groups: NeuronGroups, image: "ImageInput | None" = None) -> np.ndarray:
    """Each group's spatial map, upsampled to the image and scaled to [0, 1], for display.

    Maps are upsampled bilinearly (``align_corners=False``: the centre of each activation cell
    lands on the centre of the image patch it covers) and divided by their own maximum, so
    every group's strongest position is 1; an all-zero map stays 0.

    Args:
        groups: from :func:`neuron_groups`.
        image: the image (any input :func:`neuron_groups` takes), used for its size only; or
            None for ``groups.image_size``. The original works too: the maps then cover what
            the groups saw of it (all of it after a ``(height, width)`` resize, the centre
            square after an ``int`` size), and are 0 elsewhere.

    Returns:
        ``(k, H, W)`` float32 array in [0, 1]. Blend it onto an ``(H, W, 3)`` image with, e.g.,
        ``image * (0.2 + 0.8 * maps[i, ..., None])``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU())
        >>> groups = neuron_groups(net, "1", torch.rand(3, 33, 33), k=2)
        >>> maps = groups_overlay(groups)
        >>> maps.shape, float(maps.max())
        ((2, 33, 33), 1.0)
    """
    instance("groups", groups, NeuronGroups, "what neuron_groups returns")
    height, width = groups.image_size if image is None else load_image(image).shape[-2:]
    top, left, seen_h, seen_w = 0, 0, int(height), int(width)
    if groups.centre_square and image is not None:  # the groups saw the centre square only
        seen_h = seen_w = min(seen_h, seen_w)
        top, left = (int(height) - seen_h) // 2, (int(width) - seen_w) // 2
    seen = F.interpolate(groups.spatial_maps.float()[None], size=(seen_h, seen_w),
                         mode="bilinear", align_corners=False)[0].clamp(min=0)
    maps = torch.zeros(groups.k, int(height), int(width))
    maps[:, top:top + seen_h, left:left + seen_w] = seen
    peaks = maps.amax(dim=(1, 2), keepdim=True)
    maps = torch.where(peaks > 0, maps / peaks.clamp(min=1e-30), torch.zeros_like(maps))
    return maps.clamp(0, 1).numpy()
