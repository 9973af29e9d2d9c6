"""CPPN images: a small network maps pixel coordinates to colours (Mordvintsev et al., 2018).

A *compositional pattern-producing network* is an image parameterisation in which the learnable
parameters are the weights of a per-pixel MLP ``(x, y) -> RGB`` (1x1 convolutions), not the
pixels. Because the image is a smooth function of continuous coordinates it can be rendered at
any resolution from the same weights: optimise at 128 px, export at 1024 px ("Differentiable
Image Parameterizations", Distill 2018, section "Compositional Pattern Producing Networks").

The recipe followed here (the article's and Lucid's ``cppn``):

* coordinates in ``[-sqrt(3), sqrt(3)]`` (unit standard deviation over the image);
* ``num_layers`` hidden 1x1 layers of ``hidden_channels`` units, each followed by the
  *composite* activation ``concat(atan(x) / 0.67, atan(x)**2 / 0.6)`` (the constants make both
  halves unit-RMS for unit-normal input: RMS of ``atan(z)`` is 0.6706 and of ``atan(z)**2``
  0.5993 for ``z ~ N(0, 1)``), so each layer sees twice as many inputs as it has units;
* fan-in scaled normal weights, ``N(0, 0.1)`` biases, and an output layer with (here: nearly)
  zero weights followed by a sigmoid, so the image starts close to a flat mid-grey;
* Adam with a small learning rate (the article used 0.005) and few or no robustness
  transforms: the network itself keeps the image smooth.

Conventions: ``x`` runs along columns (left to right), ``y`` along rows (top to bottom).
Coordinates are taken at pixel *centres*, and the longer image side spans
``[-coordinate_range, coordinate_range]`` with square pixels, so any aspect ratio works and a
render at ``k`` times the resolution, averaged over ``k x k`` blocks, gives back the small image.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lucent_core.validate import choice, flag, integer, integers, real
from lucent_core.param.base import Parameterisation
from lucent_core.param.resample import only_pixels_interpolate

__all__ = ["ACTIVATIONS", "CPPNImage", "composite_activation", "cppn", "cppn_coordinates"]

#: RMS of ``atan(z)`` and of ``atan(z)**2`` for ``z ~ N(0, 1)`` (the article's constants).
ATAN_RMS = 0.67
ATAN_SQUARED_RMS = 0.6
#: Mean and standard deviation of ``atan(z)**2`` for ``z ~ N(0, 1)`` (Lucid's unbiased variant).
ATAN_SQUARED_MEAN = 0.45
ATAN_SQUARED_STD = 0.396

#: Valid ``activation`` names (each doubles the number of channels).
ACTIVATIONS = ("composite", "composite_unbiased")

#: The recommended optimiser learning rate *on the weights* (the article's Adam learning rate).
ARTICLE_LR = 0.005
#: Standard deviation of the output layer's pre-sigmoid values at initialisation (see
#: :class:`CPPNImage`).
OUTPUT_STD = 0.1
#: Largest number of pixels evaluated at once by :meth:`CPPNImage.render` (bounds memory).
RENDER_CHUNK_PIXELS = 1 << 18


def composite_activation(x: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """The CPPN nonlinearity: ``concat(atan(x) / 0.67, atan(x)**2 / 0.6)`` along channels.

    Args:
        x: pre-activations ``(B, C, ...)``.
        unbiased: centre the squared half as well: ``(atan(x)**2 - 0.45) / 0.396``
            (zero mean, unit variance for unit-normal input).

    Returns:
        ``(B, 2C, ...)``.

    Example:
        >>> out = composite_activation(torch.tensor([[1.0]]))  # atan(1) = pi / 4
        >>> [round(v, 4) for v in out[0].tolist()]
        [1.1722, 1.0281]
    """
    a = torch.atan(x)
    if unbiased:
        squared = (a * a - ATAN_SQUARED_MEAN) / ATAN_SQUARED_STD
    else:
        squared = a * a / ATAN_SQUARED_RMS
    return torch.cat([a / ATAN_RMS, squared], dim=1)


def cppn_coordinates(width: int, height: int, coordinate_range: float = math.sqrt(3.0),
                     radius: bool = False, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Pixel-centre coordinates of a ``height x width`` image, the CPPN's input.

    The longer side spans ``[-coordinate_range, coordinate_range]`` (its first and last pixel
    centres lie half a pixel inside), the shorter side the same range scaled by the aspect
    ratio, so pixels are square.

    Args:
        width, height: image size in pixels.
        coordinate_range: half-extent of the longer side.
        radius: add a third channel, the distance from the centre ``sqrt(x**2 + y**2)``.
        dtype, device: of the result.

    Returns:
        ``(1, 2, height, width)`` (``x`` then ``y``), or ``(1, 3, height, width)`` with radius.

    Example:
        >>> cppn_coordinates(4, 2, coordinate_range=2.0)[0, 0, 0].tolist()  # x along a row
        [-1.5, -0.5, 0.5, 1.5]
        >>> cppn_coordinates(4, 2, coordinate_range=2.0)[0, 1, :, 0].tolist()  # y down a column
        [-0.5, 0.5]
    """
    width, height = integers(1, width=width, height=height)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    pixel = 2.0 * coordinate_range / max(width, height)

    def centres(n: int) -> torch.Tensor:
        return (torch.arange(n, dtype=torch.float64) - (n - 1) / 2.0) * pixel

    y, x = torch.meshgrid(centres(height), centres(width), indexing="ij")
    channels = [x, y] + ([torch.sqrt(x * x + y * y)] if radius else [])
    return torch.stack(channels).unsqueeze(0).to(dtype=dtype, device=device)


class _BatchedPointwise(nn.Module):
    """A 1x1 convolution with its own weights for every image of the batch.

    ``weight`` is ``(B, out, in)`` and ``bias`` ``(B, out)``; both are stored divided by
    ``lr_scale`` (see :class:`CPPNImage`).
    """

    def __init__(self, batch: int, in_channels: int, out_channels: int, lr_scale: float,
                 weight_std: float, bias_std: float):
        super().__init__()
        self.lr_scale = lr_scale
        self.weight = nn.Parameter(torch.randn(batch, out_channels, in_channels)
                                   * (weight_std / lr_scale))
        self.bias = nn.Parameter(torch.randn(batch, out_channels) * (bias_std / lr_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B or 1, in, H, W) -> (B, out, H, W)
        out = torch.einsum("boi,bihw->bohw", self.weight * self.lr_scale,
                           x.expand(self.weight.shape[0], -1, -1, -1))
        return out + (self.bias * self.lr_scale)[:, :, None, None]

    def extra_repr(self) -> str:
        b, o, i = self.weight.shape
        return f"batch={b}, in_channels={i}, out_channels={o}"


class CPPNImage(Parameterisation):
    """A batch of images, each drawn by its own CPPN; ``forward()`` gives ``(B, 3, H, W)``.

    Every image of the batch has an independent network (weights carry a batch dimension), so
    ``batch=4`` renders four unrelated images, e.g. one per unit with
    :func:`~lucent_core.objectives.batch_channels`.

    Learning rate: parameters are stored divided by ``lr_scale``, so an optimiser step of size
    ``lr`` moves the weights by about ``lr * lr_scale`` (for Adam: exactly a learning rate of
    ``lr * lr_scale``, but for Adam's ``eps``). The default ``lr_scale=0.1`` makes
    :func:`~lucent_core.render_vis`'s default (Adam, lr 0.05) act like the article's Adam at
    lr 0.005. To follow the article literally, build with ``lr_scale=1.0`` and pass
    ``optimizer=lambda p: torch.optim.Adam(p, lr=0.005)``.

    Initialisation follows Lucid (fan-in scaled normal weights, ``N(0, 0.1)`` biases) except
    for the output layer: small random weights (pre-sigmoid std :data:`OUTPUT_STD`) instead of
    zeros, so the first image is a faint pattern rather than a flat colour. A flat start leaves
    a unit behind a plain ReLU with no gradient at all when no transforms are used.

    Args:
        width, height: size of ``forward()``'s images in pixels.
        batch: number of images (independent networks).
        num_layers: hidden layers.
        hidden_channels: units per hidden layer (the activation doubles them).
        activation: one of :data:`ACTIVATIONS`.
        radius: also feed the distance from the image centre.
        coordinate_range: half-extent of the coordinates along the longer side.
        lr_scale: see above.

    Shape: ``forward()`` returns ``(B, 3, height, width)`` in [0, 1];
    ``render(w, h)`` returns ``(B, 3, h, w)``.

    Example:
        >>> image = CPPNImage(64, 48, batch=2)
        >>> image().shape, image.render(256, 192).shape
        (torch.Size([2, 3, 48, 64]), torch.Size([2, 3, 192, 256]))
    """

    def __init__(self, width: int, height: int, batch: int = 1, num_layers: int = 8,
                 hidden_channels: int = 24, activation: str = "composite", radius: bool = False,
                 coordinate_range: float = math.sqrt(3.0), lr_scale: float = 0.1):
        super().__init__()
        self.coordinate_range = real("coordinate_range", coordinate_range, positive=True)
        self.radius = flag("radius", radius)
        width, height, batch, num_layers, hidden_channels = integers(
            1, width=width, height=height, batch=batch, num_layers=num_layers,
            hidden_channels=hidden_channels)
        # the backward keeps each hidden layer's 2 * hidden_channels maps per pixel
        self.check_fits(width, height, batch, 2 * hidden_channels * num_layers / 3)
        coordinates = cppn_coordinates(width, height, self.coordinate_range, self.radius)
        self.size = (height, width)
        self.activation = choice("activation", activation, ACTIVATIONS)
        lr_scale = real("lr_scale", lr_scale, positive=True)
        in_channels = 3 if self.radius else 2
        layers = []
        for _ in range(num_layers):
            layers.append(_BatchedPointwise(batch, in_channels, hidden_channels, lr_scale,
                                            weight_std=1.0 / math.sqrt(in_channels),
                                            bias_std=0.1))
            in_channels = 2 * hidden_channels
        self.hidden = nn.ModuleList(layers)
        self.output = _BatchedPointwise(batch, in_channels, 3, lr_scale,
                                        weight_std=OUTPUT_STD / math.sqrt(in_channels),
                                        bias_std=0.1)
        self.register_buffer("coordinates", coordinates, persistent=False)

    @property
    def batch(self) -> int:
        return self.output.weight.shape[0]

    def _network(self, coordinates: torch.Tensor) -> torch.Tensor:
        x = coordinates
        unbiased = self.activation == "composite_unbiased"
        for layer in self.hidden:
            x = composite_activation(layer(x), unbiased=unbiased)
        return torch.sigmoid(self.output(x))

    def forward(self) -> torch.Tensor:
        return self._network(self.coordinates)

    def render(self, width: int, height: int | None = None) -> torch.Tensor:
        """The same images at another resolution: ``(B, 3, height, width)`` in [0, 1].

        With the aspect ratio of ``forward()`` this is the same picture, sampled more (or less)
        densely; another aspect ratio shows more or less of the same pattern (the longer side
        always spans the full coordinate range). Large images are computed in chunks of rows,
        so memory stays bounded; gradients flow when enabled.

        Args:
            width: width in pixels.
            height: height in pixels (default: keep ``forward()``'s aspect ratio).

        Example:
            >>> image = cppn(32, 16)
            >>> with torch.no_grad():
            ...     big = image.render(1024)
            >>> big.shape
            torch.Size([1, 3, 512, 1024])
        """
        if height is None:
            width = integer("width", width, minimum=1)
            height = max(1, round(width * self.size[0] / self.size[1]))
        param = self.output.weight
        coordinates = cppn_coordinates(width, height, self.coordinate_range, self.radius,
                                       dtype=param.dtype, device=param.device)
        height, width = coordinates.shape[-2:]  # as checked there
        rows = max(1, RENDER_CHUNK_PIXELS // (width * self.batch))
        chunks = [self._network(coordinates[:, :, top:top + rows])
                  for top in range(0, height, rows)]
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=2)

    kind = "cppn"

    def render_at(self, size: tuple[int, int], interpolation: str | None = None
                  ) -> torch.Tensor:
        """The network evaluated at denser coordinates (:meth:`render`)."""
        only_pixels_interpolate(interpolation, self, "evaluated at the new size")
        return self.render(size[1], size[0])

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "channels": 3}

    def extra_repr(self) -> str:
        return (f"size={self.size}, activation={self.activation!r}, radius={self.radius}, "
                f"coordinate_range={self.coordinate_range:.4g}")


def cppn(w: int, h: int | None = None, batch: int = 1, num_layers: int = 8,
         hidden_channels: int = 24, activation: str = "composite", radius: bool = False,
         coordinate_range: float = math.sqrt(3.0), lr_scale: float = 0.1) -> CPPNImage:
    """Make a CPPN image parameterisation (one independent network per image).

    Recommended settings: :func:`~lucent_core.render_vis`'s default optimiser (Adam, lr 0.05,
    which the default ``lr_scale=0.1`` turns into the article's 0.005 on the weights) and
    either the standard transforms or none (``transforms=[]``, as in the article); a few
    hundred steps. Export at high resolution with :meth:`CPPNImage.render`.

    Args:
        w: width in pixels.
        h: height in pixels (default: ``w``).
        batch: number of images, each with its own network.
        num_layers: hidden layers (the article: 8).
        hidden_channels: units per hidden layer (the article: 24).
        activation: ``"composite"`` (the article's) or ``"composite_unbiased"``.
        radius: also feed the distance from the centre (radially symmetric patterns come
            easily).
        coordinate_range: half-extent of the coordinates along the longer side.
        lr_scale: parameters are stored divided by this (see :class:`CPPNImage`).

    Example:
        >>> from lucent_core import render_vis
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> result = render_vis(net, "0:1", param_f=lambda: cppn(32), thresholds=(4,),
        ...                     progress=False, seed=0)
        >>> result.image.shape, result.param.render(128).shape
        ((1, 32, 32, 3), torch.Size([1, 3, 128, 128]))
    """
    h = w if h is None else h
    return CPPNImage(w, h, batch=batch, num_layers=num_layers, hidden_channels=hidden_channels,
                     activation=activation, radius=radius, coordinate_range=coordinate_range,
                     lr_scale=lr_scale)
