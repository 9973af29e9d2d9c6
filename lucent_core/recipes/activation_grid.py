"""Activation grid: what a layer sees at each position of one photo (Olah et al., "The Building
Blocks of Interpretability", Distill 2018).

A convolutional layer's activation on a photo, ``(C, H, W)``, holds one vector of ``C``
channels per position. The grid renders every position: cell ``(row, col)`` is an image
optimised for :func:`~lucent_core.objectives.direction_neuron` along that position's whole
vector (weighted by ``max(0.1, cos) ** cossim_pow``, as Lucid does), and the renders are laid
out on the photo's grid. The map can first be average pooled to at most ``grid`` cells a side
(Lucid subsamples the same way). Positions whose vector is zero (dead) are not rendered and
stay blank, white (ones).

All cells render together, one image each in a single batch of one
:func:`~lucent_core.render.render_vis` call, the cell objectives summed. Rendered apart,
neighbouring cells with almost the same vector would come out as unrelated pictures; Lucid
keeps them aligned by sharing part of the parameterisation between cells. So does
:class:`SharedGridImage`: each cell's image is its own Fourier image plus a *shared* part,
a low-resolution image per block of 2 x 2 cells (itself ``cell_size / 4`` pixels a side,
a :class:`~lucent_core.param.multiscale.LowResImage`) upsampled bilinearly over the grid of
cells as well as over the pixels. Adjacent cells then get nearly the same shared part, distant
cells independent ones, and the colour map (:class:`~lucent_core.param.color.ToRGB`) gives RGB.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> result = activation_grid(net, torch.rand(3, 18, 18), "1", grid=4, cell_size=16, steps=2)
    >>> tuple(result.images.shape), tuple(result.vectors.shape), result.mosaic().size
    ((4, 4, 3, 16, 16), (4, 4, 4), (64, 64))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lucent_core.activations import ImageSource, image_activations
from lucent_core.objectives import Objective, direction_neuron
from lucent_core.param.base import Parameterisation
from lucent_core.param.color import ToRGB
from lucent_core.param.multiscale import LowResImage
from lucent_core.param.resample import only_pixels_interpolate, resize
from lucent_core.param.spatial import FourierImage
from lucent_core.preprocessing import Preprocessing
from lucent_core.render import render_vis
from lucent_core.validate import flag, instance, integer, integers, real, shape

__all__ = ["ActivationGrid", "SharedGridImage", "activation_grid"]

#: A cell whose vector's norm is at most this share of the largest one is dead: not rendered.
DEAD = 1e-6
SHARED_BLOCK = 2  # cells a side of one block of the shared part
SHARED_SCALE = 4  # pixels a side of one pixel of the shared part


class SharedGridImage(Parameterisation):
    """One image per live cell of a grid: its own Fourier image plus a part shared across
    neighbouring cells at low resolution (see the module docstring), mapped to RGB.

    Args:
        cells: ``(rows, cols)`` bool: which cells of the grid get an image (at least one);
            the batch holds them in row-major order.
        cell_size: side of each image in pixels.
        shared: add the shared part (False: each image is a plain Fourier image).
        sd: standard deviation of the random initialisation of both parts.

    Shape: ``forward()`` returns ``(number of live cells, 3, cell_size, cell_size)`` in [0, 1].

    Example:
        >>> cells = torch.tensor([[True, False, True], [True, True, True]])
        >>> images = SharedGridImage(cells, 8)
        >>> images().shape, images.shared_part().shape
        (torch.Size([5, 3, 8, 8]), torch.Size([5, 3, 8, 8]))
    """

    def __init__(self, cells: torch.Tensor, cell_size: int, shared: bool = True,
                 sd: float = 0.01):
        super().__init__()
        instance("cells", cells, torch.Tensor, "a (rows, cols) bool tensor")
        rows, cols = shape("cells", cells, ("rows", "cols"))
        if cells.dtype != torch.bool or not cells.any():
            raise ValueError(f"cells must be a bool tensor with a True cell, got {cells.dtype}")
        cell_size = integer("cell_size", cell_size, minimum=1)
        self.size = (cell_size, cell_size)
        self.grid_shape = (rows, cols)
        self.register_buffer("where", cells.nonzero(), persistent=False)  # (N, 2): row, col
        self.own = FourierImage(cell_size, cell_size, batch=len(self.where), sd=sd)
        self.blocks = (math.ceil(rows / SHARED_BLOCK), math.ceil(cols / SHARED_BLOCK))
        self.shared = LowResImage(cell_size, cell_size, batch=self.blocks[0] * self.blocks[1],
                                  scale=SHARED_SCALE, sd=sd, fft=True) \
            if flag("shared", shared) else None
        self.to_rgb = ToRGB()

    def shared_part(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Each image's shared part, unconstrained ``(N, 3, height, width)`` (at ``size``,
        default :attr:`size`); zeros without one."""
        size = tuple(size or self.size)
        if self.shared is None:
            return torch.zeros(len(self.where), 3, *size, device=self.where.device)
        blocks = self.shared() if size == self.size else self.shared.render_at(size)
        over_blocks = blocks.reshape(*self.blocks, -1).permute(2, 0, 1)[None]
        over_cells = resize(over_blocks, self.grid_shape, "bilinear")[0]  # (3 h w, rows, cols)
        return over_cells[:, self.where[:, 0], self.where[:, 1]].T.reshape(-1, 3, *size)

    def spatial(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """The images before the colour map: own part plus shared part."""
        own = self.own() if size is None or tuple(size) == self.size else self.own.render_at(size)
        return own if self.shared is None else own + self.shared_part(size)

    def forward(self) -> torch.Tensor:
        return self.to_rgb(self.spatial())

    def render_at(self, size: tuple[int, int], interpolation: str | None = None
                  ) -> torch.Tensor:
        """Both parts resampled their own way (spectrum, bilinear) to ``size``."""
        only_pixels_interpolate(interpolation, self, "resampled through its parts")
        return self.to_rgb(self.spatial(size))

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "grid": list(self.grid_shape),
                "cells": len(self.where), "shared": self.shared is not None}


@dataclass
class ActivationGrid:
    """The result of :func:`activation_grid`.

    Attributes:
        layer: the layer name, as given.
        images: ``(rows, cols, 3, s, s)`` float32 in [0, 1], the render of each cell;
            ones (white) where a cell was skipped.
        vectors: ``(rows, cols, C)`` the (pooled) activation vector of each cell.
        rendered: ``(rows, cols)`` bool: which cells were rendered (False: dead, blank).
    """

    layer: str
    images: torch.Tensor
    vectors: torch.Tensor
    rendered: torch.Tensor

    def mosaic(self, gap: int = 0) -> Image.Image:
        """The cells laid out on the grid, ``gap`` white pixels between neighbours: an RGB
        image ``cols * s + (cols - 1) * gap`` wide, cell ``(r, c)`` at ``(r, c) * (s + gap)``.

        Example:
            >>> grid = ActivationGrid("x", torch.zeros(2, 3, 3, 4, 4), torch.ones(2, 3, 1),
            ...                       torch.ones(2, 3, dtype=torch.bool))
            >>> grid.mosaic(gap=1).size  # (width, height)
            (14, 9)
        """
        gap = integer("gap", gap, minimum=0)
        rows, cols, _, height, width = self.images.shape
        padded = F.pad(self.images.float(), (0, gap, 0, gap), value=1.0)
        canvas = padded.permute(2, 0, 3, 1, 4).reshape(3, rows * (height + gap),
                                                       cols * (width + gap))
        canvas = canvas[:, :canvas.shape[1] - gap, :canvas.shape[2] - gap]
        pixels = (canvas.clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
        return Image.fromarray(pixels.cpu().numpy())


def _cell_vectors(activation: torch.Tensor, grid: int | None) -> torch.Tensor:
    """``(C, H, W)`` to ``(rows, cols, C)``, average pooled to at most ``grid`` a side."""
    if grid is not None:
        height, width = activation.shape[-2:]
        activation = F.adaptive_avg_pool2d(activation, (min(grid, height), min(grid, width)))
    return activation.permute(1, 2, 0)


def activation_grid(model: nn.Module, image: ImageSource, layer: str, *, grid: int | None = 8,
                    cell_size: int = 48, steps: int = 256, cossim_pow: float = 1.0,
                    shared: bool = True, seed: int = 0,
                    image_size: "int | tuple[int, int] | None" = None,
                    preprocess: Preprocessing | None = None,
                    progress: bool = False) -> ActivationGrid:
    """Render every (pooled) position of ``layer`` on ``image``, laid out on its grid.

    Args:
        model: any ``nn.Module``; it runs on its own device.
        image: anything :func:`~lucent_core.activations.load_image` reads (path, PIL image,
            ``(H, W, 3)`` array, ``(3, H, W)`` tensor), RGB in [0, 1] or uint8.
        layer: a spatial layer (activations ``(1, C, H, W)``).
        grid: average pool the map to at most this many cells a side; None keeps every
            position.
        cell_size: side of each cell's render in pixels.
        steps: optimisation steps of the one batched render.
        cossim_pow: weight of the cosine in each cell's objective (0: a plain dot product).
        shared: share a low-resolution part between neighbouring cells
            (:class:`SharedGridImage`).
        seed: makes the render repeatable.
        image_size: resize the image first (``int``: shorter side, centre square; or
            ``(height, width)``).
        preprocess: how images become model input (default: the model's own).
        progress: show a progress bar.

    Returns:
        An :class:`ActivationGrid`; ``.mosaic()`` is the picture.

    Raises:
        ValueError: for a layer that is unknown, not spatial or zero at every position.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU())
        >>> result = activation_grid(net, torch.rand(3, 8, 8), "1", grid=None, cell_size=8,
        ...                          steps=1)
        >>> tuple(result.rendered.shape), bool(result.images.max() <= 1)
        ((8, 8), True)
    """
    instance("model", model, nn.Module, "a torch nn.Module")
    grid = None if grid is None else integer("grid", grid, minimum=1)
    cell_size, steps = integers(1, cell_size=cell_size, steps=steps)
    cossim_pow = real("cossim_pow", cossim_pow, minimum=0)
    shared = flag("shared", shared)
    activation = image_activations(model, layer, image, image_size, preprocess)
    shape(f"layer {layer!r}", activation, (1, "C", "H", "W"))
    vectors = _cell_vectors(activation[0].float().cpu(), grid)
    norms = vectors.norm(dim=-1)
    live = norms > DEAD * norms.max()
    if not live.any():
        raise ValueError(f"layer {layer!r} is zero at every position of this image: "
                         "try another (earlier) layer")
    objective = Objective.sum(
        direction_neuron(layer, vectors[row, col], batch=i, cossim_pow=cossim_pow)
        for i, (row, col) in enumerate(live.nonzero().tolist()))
    objective.name = (f"activation_grid({layer!r}, cells={int(live.sum())}, "
                      f"cossim_pow={cossim_pow:g})")
    result = render_vis(model, objective, param_f=lambda: SharedGridImage(live, cell_size, shared),
                        thresholds=(steps,), seed=seed, progress=progress, preprocess=preprocess)
    images = torch.ones(*live.shape, 3, cell_size, cell_size)
    images[live] = torch.from_numpy(result.image).permute(0, 3, 1, 2)
    return ActivationGrid(layer=layer, images=images, vectors=vectors, rendered=live)
