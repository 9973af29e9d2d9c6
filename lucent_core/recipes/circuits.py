"""Circuits: the expanded weights between two layers and a unit's strongest connections (Olah
et al., "Zoom In: An Introduction to Circuits" and "An Overview of Early Vision in
InceptionV1", Distill 2020).

Two layers that are not adjacent are joined by many paths (branches, pools, ReLUs). Treating
every ReLU as the identity, every max pool as an average pool and skipping InceptionV1's LRN
makes the net between them linear; its weights, ``(C_target, C_source, kh, kw)``, are the
*expanded weights*: one ``(kh, kw)`` picture per pair of units, showing where a source unit
excites (warm) or inhibits (cool) a target unit.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
    ...                     nn.Conv2d(4, 2, 3, padding=1))
    >>> w = expanded_weights(net, "0", "2", size=16)
    >>> w.shape, torch.equal(w, net[2].weight)      # adjacent layers: the conv's own weights
    (torch.Size([2, 4, 3, 3]), True)
    >>> strongest = top_inputs(net, "2", 0, "0", k=2, weights=w)   # reuses w
    >>> all(c.target == 0 and c.norm > 0 for c in strongest.positive + strongest.negative)
    True
    >>> weight_picture(w[0, 0], upsample=4).shape
    (12, 12, 3)
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import platform
import warnings
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import PIL
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from lucent_core.hooks import (OUTPUT_LAYER, capture, frozen, model_device, registry_name,
                               resolve_layer, run_to_layers)
from lucent_core.io import ImageLike, sha256sum, to_numpy, to_pil, write_atomically
from lucent_core.models.inceptionv1 import LocalResponseNorm, PaddedMaxPool2d
from lucent_core.models.weights import state_dict_sha256
from lucent_core.objectives import batch_channels
from lucent_core.param import DEFAULT_PARAM, make_param
from lucent_core.preprocessing import preprocessing_of
from lucent_core.relu import RedirectedReLU
from lucent_core.render import render_vis
from lucent_core.results import finished_picture
from lucent_core.units import Series
from lucent_core.validate import index, instance, integer, integers, real, shape, size_pair
from lucent_core.validate import seed as validate_seed
from lucent_core.version import __version__

__all__ = ["Connection", "Connections", "CutOffWarning", "expanded_weights", "top_inputs",
           "top_outputs", "weight_picture"]

DEFAULT_SIZE = 224
Preprocess = Callable[[torch.Tensor], torch.Tensor]


class CutOffWarning(UserWarning):
    """The expanded weights reach the edge of the source map: the image was too small to hold
    them all (a larger ``size`` does)."""


# --- the linearised model ------------------------------------------------------------------

_avg_pool2d = F.avg_pool2d  # the original, whatever is patched while a model is linearised


def _identity(input: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return input


def _max_pool2d_as_average(input: torch.Tensor, kernel_size, stride=None, padding=0,
                           dilation=1, ceil_mode=False, return_indices=False) -> torch.Tensor:
    """``F.max_pool2d``'s signature, an average pool over the window's real inputs."""
    if dilation not in (1, (1, 1), [1, 1]) or return_indices:
        raise NotImplementedError("expanded_weights cannot linearise a dilated max pool or "
                                  "one that returns indices")
    return _avg_pool2d(input, kernel_size, stride or kernel_size, padding, ceil_mode,
                       count_include_pad=False)


#: Functions patched during the forward, for models that call them instead of using modules.
_FUNCTIONS = ((F, "relu", _identity), (F, "relu_", _identity), (torch, "relu", _identity),
              (torch, "relu_", _identity), (F, "max_pool2d", _max_pool2d_as_average),
              (torch, "max_pool2d", _max_pool2d_as_average))


class _PaddedAveragePool(nn.Module):
    """:class:`PaddedMaxPool2d`'s geometry, averaging only the real (unpadded) inputs."""

    def __init__(self, pool: PaddedMaxPool2d) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = pool.kernel_size, pool.stride, pool.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        real_inputs = F.pad(torch.ones_like(x[:1, :1]), self.padding)
        return (_avg_pool2d(F.pad(x, self.padding), self.kernel_size, self.stride)
                / _avg_pool2d(real_inputs, self.kernel_size, self.stride))


def _linear_stand_in(module: nn.Module) -> nn.Module | None:
    """The linear module that replaces ``module`` while linearised, or None to keep it."""
    if isinstance(module, (nn.ReLU, RedirectedReLU, LocalResponseNorm, nn.LocalResponseNorm)):
        return nn.Identity()
    if isinstance(module, PaddedMaxPool2d):
        return _PaddedAveragePool(module)
    if isinstance(module, nn.MaxPool2d):
        if module.dilation not in (1, (1, 1)) or module.return_indices:
            raise NotImplementedError("expanded_weights cannot linearise a dilated max pool or "
                                      "one that returns indices")
        return nn.AvgPool2d(module.kernel_size, module.stride, module.padding,
                            module.ceil_mode, count_include_pad=False)
    return None


@contextmanager
def _linearised(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, ``model``'s ReLUs are identities, its max pools average pools and its
    LRNs identities (modules swapped, functions patched); everything is put back after."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    patched: list[tuple[object, str, object]] = []
    try:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                stand_in = _linear_stand_in(child)
                if stand_in is not None:
                    swapped.append((parent, name, child))
                    setattr(parent, name, stand_in)
        for owner, name, stand_in in _FUNCTIONS:
            patched.append((owner, name, getattr(owner, name)))
            setattr(owner, name, stand_in)
        yield model
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)


def _run(model: nn.Module, source: str, target: str, image: torch.Tensor
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward of the (linearised) model with the source layer's output replaced by zeros
    that require grad, stopped after the target: ``(those zeros, the target's output)``."""
    held: dict[str, torch.Tensor] = {}

    def replace(_module, _inputs, output):
        if "s" in held:  # a module called again in the same forward: its first call only
            return None
        _spatial("source_layer", source, output)
        held["s"] = torch.zeros_like(output, requires_grad=True)
        return held["s"].clone()  # not the leaf itself: the forward may write to it in place

    handles = [model.register_forward_pre_hook(lambda *_: held.clear()),
               dict(model.named_modules())[source].register_forward_hook(replace)]
    try:
        with capture(model, [target]) as acts:
            found = run_to_layers(model, image, acts)[target]
    finally:
        for handle in handles:
            handle.remove()
    _spatial("target_layer", target, found)
    if "s" not in held or not found.requires_grad:
        raise ValueError(f"source_layer {source!r} is not upstream of target_layer {target!r}: "
                         "the target's output does not depend on it")
    return held["s"], found


def _spatial(argument: str, layer: str, output: object) -> None:
    if not (isinstance(output, torch.Tensor) and output.dim() == 4):
        found = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"{argument} {layer!r} is not spatial: its output is {found}, not "
                         "(B, C, H, W); choose a convolutional layer such as 'mixed3a'")


# --- expanded weights ----------------------------------------------------------------------

def expanded_weights(model: nn.Module, source_layer: str, target_layer: str, *,
                     size: int | tuple[int, int] | None = None, batch_size: int = 64,
                     preprocess: Preprocess | None = None,
                     targets: Sequence[int] | None = None) -> torch.Tensor:
    """The linear weights from ``source_layer``'s units to ``target_layer``'s, through
    everything in between.

    ``w[o, i, dy, dx]`` is how source unit ``i`` at offset ``(dy - kh // 2, dx - kw // 2)``
    from the target's position drives target unit ``o``; ``kh`` and ``kw`` are odd and just
    large enough to hold every non-zero weight. For adjacent convolutions this is
    ``conv.weight`` itself; through several layers, the response of the linearised net to a
    unit delta at the source.

    The net between is linearised for the call (and restored after): every ``nn.ReLU``
    (:class:`~lucent_core.relu.RedirectedReLU` too) is the identity, every max pool
    (``nn.MaxPool2d``, InceptionV1's ``PaddedMaxPool2d``) an average pool of the same kernel,
    stride and padding over the window's real inputs (a max pool's padding never wins), and
    LRN (InceptionV1's and torch's) is skipped: for typical activations it is a near-identity
    normalisation, and Circuits-style weights ignore it. ``F.relu``, ``torch.relu`` and
    ``F.max_pool2d`` called inside a ``forward`` are patched likewise while it runs (not
    thread-safe). Branches, concatenations, residual additions and eval-mode batch norm are
    linear already and followed exactly. Other non-linearities (ReLU6, GELU, sigmoid, ...)
    are kept: their slope where the source activations are zero is used.

    Method: per chunk of ``batch_size`` target channels, one forward of a grey RGB image (so
    the model must take 3 channels) in eval mode, the source layer's output replaced by zeros
    that require grad and stopped after the target, then one backward from the target map's
    centre (image ``b`` selects target channel ``b`` of the chunk); the gradient, cropped
    around the source position aligned with that centre (coordinates scaled when the maps
    differ in size), is the expanded weight.

    Args:
        model: the network (unchanged after: modules, weights, hooks, train/eval mode).
        source_layer: the earlier layer, with ``(B, C, H, W)`` activations.
        target_layer: the later layer, with ``(B, C, H, W)`` activations.
        size: the grey image's size, an int or ``(height, width)`` (default: the
            preprocessing's ``input_size``, else 224); large enough for the target's
            receptive field to fit inside the source map (else a warning says the weights may
            be cut off).
        batch_size: target channels per forward and backward (bounds the memory).
        preprocess: model input preprocessing (default: the model's own).
        targets: compute only these target channels, in this order (default: all).

    Returns:
        ``(C_target, C_source, kh, kw)`` (``C_target = len(targets)`` when given), on the
        model's device, in its dtype.

    Raises:
        UnknownLayerError: a layer the model does not have (close matches listed).
        ValueError: a source layer that the target does not depend on; a layer without
            ``(B, C, H, W)`` activations.
        IndexError: a target channel out of range.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        ...                     nn.Conv2d(4, 5, 3, padding=1))
        >>> expanded_weights(net, "0", "3", size=32).shape
        torch.Size([5, 4, 7, 7])
    """
    instance("model", model, nn.Module, "an nn.Module")
    batch_size = integer("batch_size", batch_size, minimum=1)
    preprocess = preprocessing_of(model, preprocess)
    if targets is not None:
        targets = list(instance("targets", targets, (list, tuple, range), "a list of channels"))
        if not targets:
            raise ValueError("targets must list at least one target channel, got none")
    return _expanded(model, *_layers(model, source_layer, target_layer),
                     _size(preprocess, size), batch_size, preprocess, targets, "targets")


def _layers(model: nn.Module, source_layer: str, target_layer: str) -> tuple[str, str]:
    source, target = resolve_layer(model, source_layer), resolve_layer(model, target_layer)
    if source == OUTPUT_LAYER:
        raise ValueError(f"source_layer {source_layer!r} is the model's output; choose a layer")
    return source, target


def _size(preprocess: Preprocess, size: object) -> tuple[int, int]:
    if size is None:
        size = getattr(preprocess, "input_size", None) or DEFAULT_SIZE
    return size_pair("size", size)


def _expanded(model: nn.Module, source: str, target: str, size: tuple[int, int],
              batch_size: int, preprocess: Preprocess, targets: list[int] | None,
              argument: str) -> torch.Tensor:
    """:func:`expanded_weights` for checked arguments; ``targets`` are checked here, against
    the target's channel count, and named ``argument`` in errors."""
    device, dtype = model_device(model)

    def grey(count: int) -> torch.Tensor:
        return preprocess(torch.full((count, 3, *size), 0.5, device=device, dtype=dtype))

    pieces = []
    with torch.enable_grad(), frozen(model), _linearised(model):
        s, t = _run(model, source, target, grey(1))  # shapes, and errors before the work
        (_, h_source, w_source), (count, h_target, w_target) = s.shape[1:], t.shape[1:]
        chosen = list(range(count)) if targets is None else \
            [_unit(argument, unit, count, target) for unit in targets]
        cy, cx = h_target // 2, w_target // 2
        at = (_aligned(cy, h_target, h_source), _aligned(cx, w_target, w_source))
        for start in range(0, len(chosen), batch_size):
            chunk = chosen[start:start + batch_size]
            s, t = _run(model, source, target, grey(len(chunk)))
            picks = torch.zeros_like(t)
            picks[torch.arange(len(chunk), device=t.device), chunk, cy, cx] = 1
            (grad,) = torch.autograd.grad(t, s, picks)
            pieces.append(_crop(grad, *at, source))
    ry = max(piece.shape[2] for piece in pieces) // 2
    rx = max(piece.shape[3] for piece in pieces) // 2
    return torch.cat([F.pad(p, (rx - p.shape[3] // 2,) * 2 + (ry - p.shape[2] // 2,) * 2)
                      for p in pieces])


def _aligned(position: int, target_length: int, source_length: int) -> int:
    """The source position whose pixel centre is nearest the target position's (rounding
    halves up): ``floor((position + 0.5) * source_length / target_length)``."""
    return (2 * position + 1) * source_length // (2 * target_length)


def _crop(grad: torch.Tensor, y: int, x: int, source: str) -> torch.Tensor:
    """``grad`` cropped to the smallest odd window centred on ``(y, x)`` that holds every
    non-zero value (zeros where the window leaves the map)."""
    support = grad.abs().amax(dim=(0, 1)) > 0
    rows, cols = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
    if len(rows) and (rows[0] == 0 or rows[-1] == support.shape[0] - 1
                      or cols[0] == 0 or cols[-1] == support.shape[1] - 1):
        warnings.warn(f"the weights reach the edge of the source map ({source!r}) and may be "
                      "cut off: use a larger size", CutOffWarning, stacklevel=4)
    ry = int((rows - y).abs().max()) if len(rows) else 0
    rx = int((cols - x).abs().max()) if len(cols) else 0
    return F.pad(grad, (rx, rx, ry, ry))[:, :, y:y + 2 * ry + 1, x:x + 2 * rx + 1].detach()


def _unit(argument: str, value: object, count: int, layer: str) -> int:
    unit = index(argument, value)
    if not 0 <= unit < count:
        raise IndexError(f"{argument} must be in 0..{count - 1} ({layer!r} has {count} "
                         f"channels), got {unit}")
    return unit


# --- strongest connections -----------------------------------------------------------------

@dataclass(frozen=True, eq=False)  # (compare tensors with torch.equal)
class Connection:
    """One connection of the expanded weights: ``source`` unit -> ``target`` unit.

    Attributes:
        source: the source layer's channel.
        target: the target layer's channel.
        weights: the ``(kh, kw)`` weight picture.
        norm: its L2 norm (the connection's strength).
        sign: ``1`` where the picture sums to more than 0 (excites), else ``-1`` (inhibits).
    """

    source: int
    target: int
    weights: torch.Tensor
    norm: float
    sign: int


class Connections(NamedTuple):
    """The strongest connections of one unit, each list strongest first."""

    positive: list[Connection]
    negative: list[Connection]


def top_inputs(model: nn.Module, target_layer: str, unit: int, source_layer: str, k: int = 8,
               weights: torch.Tensor | None = None) -> Connections:
    """The ``k`` strongest excitatory and inhibitory inputs of ``target_layer``'s ``unit`` from
    ``source_layer``, by the L2 norm of their expanded-weight pictures.

    Args:
        model: the network.
        target_layer: the unit's layer.
        unit: the target channel.
        source_layer: the earlier layer whose units feed it.
        k: connections per sign.
        weights: an :func:`expanded_weights` result for these two layers, to reuse (the model
            then runs nothing); computed at the default size when omitted (this unit only).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 1))
        >>> planted = torch.tensor([[1.0, -3.0, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]])
        >>> with torch.no_grad():
        ...     _ = net[1].weight.copy_(planted[:, :, None, None])
        >>> w = expanded_weights(net, "0", "1", size=8)
        >>> found = top_inputs(net, "1", 0, "0", k=1, weights=w)
        >>> found.positive[0].source, found.negative[0].source, found.negative[0].norm
        (0, 1, 3.0)
    """
    k = integer("k", k, minimum=1)
    if weights is None:
        preprocess = preprocessing_of(model)
        pictures = _expanded(model, *_layers(model, source_layer, target_layer),
                             _size(preprocess, None), 1, preprocess, [unit], "unit")[0]
    else:
        pictures = _weights(weights)[_unit("unit", unit, weights.shape[0], target_layer)]
    return _strongest(pictures, k, lambda i: (i, int(unit)))


def top_outputs(model: nn.Module, source_layer: str, unit: int, target_layer: str, k: int = 8,
                weights: torch.Tensor | None = None) -> Connections:
    """The ``k`` strongest units of ``target_layer`` that ``source_layer``'s ``unit`` excites
    and inhibits, by the L2 norm of their expanded-weight pictures.

    Args:
        model: the network.
        source_layer: the unit's layer.
        unit: the source channel.
        target_layer: the later layer it feeds.
        k: connections per sign.
        weights: an :func:`expanded_weights` result for these two layers, to reuse (the model
            then runs nothing); computed at the default size when omitted.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 3, padding=1))
        >>> w = expanded_weights(net, "0", "1", size=8)
        >>> found = top_outputs(net, "0", 3, "1", k=1, weights=w)
        >>> {c.source for c in found.positive + found.negative}
        {3}
    """
    k = integer("k", k, minimum=1)
    if weights is None:
        weights = expanded_weights(model, source_layer, target_layer)
    pictures = _weights(weights)[:, _unit("unit", unit, weights.shape[1], source_layer)]
    return _strongest(pictures, k, lambda i: (int(unit), i))


def _weights(weights: object) -> torch.Tensor:
    instance("weights", weights, torch.Tensor, "an expanded_weights() result")
    shape("weights", weights, ("C_target", "C_source", "kh", "kw"))
    return weights


def _strongest(pictures: torch.Tensor, k: int, pair: Callable[[int], tuple[int, int]]
               ) -> Connections:
    """The ``k`` largest-norm pictures of each sign; ``pair(i)`` is picture i's units."""
    pictures = pictures.detach()
    norms = pictures.flatten(1).float().norm(dim=1)
    sums = pictures.flatten(1).float().sum(dim=1)
    found = Connections([], [])
    for i in torch.argsort(norms, descending=True, stable=True).tolist():
        if norms[i] == 0:
            break
        sign = 1 if sums[i] > 0 else -1
        side = found.positive if sign > 0 else found.negative
        if len(side) < k:
            side.append(Connection(*pair(i), pictures[i], float(norms[i]), sign))
    return found


# --- weight pictures -----------------------------------------------------------------------

#: The colours of the strongest positive and negative weights (zero is white).
WARM = (214, 64, 24)   # red-orange
COOL = (33, 102, 172)  # blue


def weight_picture(weights: torch.Tensor | np.ndarray, scale: float | None = None,
                   upsample: int = 1) -> np.ndarray:
    """A ``(kh, kw)`` weight picture as RGB: zero white, positive warm (red-orange), negative
    cool (blue), shading linearly to full colour at ``±scale``.

    Args:
        weights: ``(kh, kw)`` weights (a tensor or array).
        scale: the magnitude drawn in full colour (larger ones are clipped); default
            ``max |weights|``. Give one scale to several pictures to compare them.
        upsample: each weight becomes ``upsample x upsample`` pixels (nearest neighbour).

    Returns:
        ``uint8`` array ``(kh * upsample, kw * upsample, 3)``.

    Example:
        >>> weight_picture(np.array([[0.0, 2.0, -2.0]]), upsample=1)[0].tolist()
        [[255, 255, 255], [214, 64, 24], [33, 102, 172]]
    """
    instance("weights", weights, (torch.Tensor, np.ndarray), "a (kh, kw) tensor or array")
    shape("weights", weights, ("kh", "kw"))
    values = (weights.detach().float().cpu().numpy() if isinstance(weights, torch.Tensor)
              else np.asarray(weights, dtype=np.float64))
    if not np.isfinite(values).all():
        raise ValueError("weights must be finite, got NaN or infinite values")
    upsample = integer("upsample", upsample, minimum=1)
    scale = float(np.abs(values).max()) if scale is None else real("scale", scale, positive=True)
    strength = np.clip(values / scale, -1, 1)[..., None] if scale > 0 else \
        np.zeros((*values.shape, 1))
    colour = np.where(strength >= 0, np.array(WARM), np.array(COOL))
    rgb = np.rint(255 + np.abs(strength) * (colour - 255)).astype(np.uint8)
    return rgb.repeat(upsample, axis=0).repeat(upsample, axis=1)


# --- circuit figures -----------------------------------------------------------------------

#: The side-car's format: the one :func:`lucent_core.figures.save_figure` writes.
FIGURE_FORMAT, FIGURE_FORMAT_VERSION = "lucent_core.figure", 1
PADDING, FONT_SIZE = 8, 12  # pixels
WHITE, INK = (255, 255, 255), (0, 0, 0)
ImageSource = Mapping[tuple[str, int], ImageLike]


@dataclass(frozen=True, eq=False)
class CircuitFigure:
    """A unit, its strongest inputs around it and their weights: what :func:`circuit_figure`
    returns and :func:`save_circuit_figure` writes.

    Attributes:
        image: the figure as an RGB picture.
        svg: the same figure as SVG text (lines and labels as vector elements, pictures as
            embedded PNGs).
        panels: one side-car record per picture (the keys of
            :data:`lucent_core.figures.PANEL_KEYS`): the target (row 1), its excitatory
            inputs (row 0) and its inhibitory inputs (row 2), strongest first. ``extra``
            holds the ``role``, ``layer``, ``unit``, ``norm``, ``sign``, where the picture came
            from (``source``: ``"render"``, ``"atlas"`` or ``"given"``) and its ``box``
            ``[left, top, right, bottom]`` in the figure (inputs: ``weights_box`` too).
        connections: the inputs shown (:func:`top_inputs`).
        metadata: the figure's settings, for the side-car.
    """

    image: Image.Image
    svg: str
    panels: list[dict]
    connections: Connections
    metadata: dict


def circuit_figure(model: nn.Module, layer: str, unit: int, source_layer: str, *, top: int = 8,
                   atlas: "str | os.PathLike | None" = None, images: ImageSource | None = None,
                   weights: torch.Tensor | None = None, steps: int = 512, size: int = 128,
                   seed: int = 0, cell: int = 96, progress: bool = False) -> CircuitFigure:
    """``layer``'s ``unit`` in the middle, its ``top`` strongest excitatory inputs from
    ``source_layer`` in a row above it and its ``top`` strongest inhibitory ones in a row
    below (:func:`top_inputs`), each with its weight picture (one colour scale for all) and a
    label ``"#<unit> +<norm>"``, joined to the target by a line whose colour is the sign and
    whose width grows with the norm.

    Each picture is taken from ``images``, else from the unit atlas ``atlas`` (the PNG of a
    channel series, ``<atlas>/<layer>/units/00012.png``, when its record is there, names this
    PNG's SHA256 and the model's weights), else rendered: the missing units of each layer in
    one seeded :func:`~lucent_core.render_vis` call (``batch_channels``, ``size`` px images
    of the default parameterisation, as in an atlas, ``steps`` steps).

    Args:
        model: the network.
        layer: the target unit's layer.
        unit: its channel.
        source_layer: an earlier layer (not the same one).
        top: inputs of each sign.
        atlas: a unit atlas directory to take pictures from.
        images: pictures to use, by ``(layer, unit)`` (the layers spelt as given here).
        weights: an :func:`expanded_weights` result for these layers, to reuse.
        steps, size, seed: the renders of missing pictures.
        cell: the inputs' pictures are ``cell`` px in the figure, the target's ``1.5 * cell``.
        progress: show the renders' progress bars.

    Returns:
        A :class:`CircuitFigure`; save it with :func:`save_circuit_figure`.

    Raises:
        UnknownLayerError: a layer the model does not have.
        ValueError: a source layer that is not upstream of ``layer``; an atlas that is not a
            directory or whose pictures show other weights.
        IndexError: a unit out of range.

    Example:
        >>> _ = torch.manual_seed(0)   # weights with an excitatory and an inhibitory input
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        ...                     nn.Conv2d(4, 2, 3, padding=1))
        >>> figure = circuit_figure(net, "2", 0, "0", top=1, steps=2, size=16, cell=32)
        >>> [p["extra"]["role"] for p in figure.panels]
        ['target', 'excitatory', 'inhibitory']
    """
    instance("model", model, nn.Module, "an nn.Module")
    top, steps, size, cell = integers(1, top=top, steps=steps, size=size, cell=cell)
    seed = validate_seed("seed", seed)
    images = dict(instance("images", images or {}, Mapping, "a dict {(layer, unit): image}"))
    if atlas is not None and not Path(atlas).is_dir():
        raise ValueError(f"atlas {str(atlas)!r} is not a directory; give a unit atlas's folder")
    source, target = _layers(model, source_layer, layer)
    if source == target:
        raise ValueError(f"source_layer {source_layer!r} is the unit's own layer; choose an "
                         "earlier one")
    found = top_inputs(model, layer, unit, source_layer, k=top, weights=weights)
    unit, hash_ = int(unit), state_dict_sha256(model)
    wanted = [(layer, unit)] + [(source_layer, c.source) for c in found.positive + found.negative]
    common = {"model": registry_name(model), "weights_sha256": hash_,
              "versions": {"lucent_core": __version__, "torch": torch.__version__,
                           "numpy": np.__version__, "pillow": PIL.__version__,
                           "python": platform.python_version()}}
    pictures = {key: (_picture(images[key]), {"extra": {"source": "given"}})
                for key in wanted if key in images}
    for key in wanted:
        if key not in pictures and atlas is not None:
            pictures.update(_from_atlas(Path(atlas), *key, hash_))
    for name in (layer, source_layer):
        missing = sorted({u for at, u in wanted if at == name and (at, u) not in pictures})
        if missing:
            pictures.update(_rendered(model, name, missing, steps, size, seed, progress))
    scale = max((float(c.weights.abs().max()) for c in found.positive + found.negative),
                default=None)
    image, svg, boxes = _draw(f"{common['model']} {layer} {unit}: its strongest inputs from "
                              f"{source_layer}", f"{layer} #{unit}", found,
                              [pictures[key][0] for key in wanted], cell, scale)
    roles = [("target", None, 0), *[("excitatory", c, j) for j, c in enumerate(found.positive)],
             *[("inhibitory", c, j) for j, c in enumerate(found.negative)]]
    panels = []
    for key, (role, connection, col), box in zip(wanted, roles, boxes):
        record = {**_PANEL, **pictures[key][1], **common}
        given = record["extra"]["source"] == "given"
        panels.append({**record, "row": CIRCUIT_ROWS.index(role), "col": col,
                       "label": box.pop("label"),
                       "objective": None if given else f"channel({key[0]!r}, {key[1]})",
                       "extra": {**record["extra"], "role": role, "layer": key[0], "unit": key[1],
                                 "norm": connection.norm if connection else None,
                                 "sign": connection.sign if connection else None, **box}})
    metadata = {"kind": "circuit", "layer": layer, "unit": unit, "source_layer": source_layer,
                "top": top, "weights_scale": scale, "cell": cell, **common}
    return CircuitFigure(image, svg, panels, found, metadata)


#: The rows of a circuit figure, top to bottom.
CIRCUIT_ROWS = ("excitatory", "target", "inhibitory")
#: A panel record: the keys of :data:`lucent_core.figures.PANEL_KEYS`, in its order.
_PANEL = dict.fromkeys(("row", "col", "label", "objective", "objective_value", "model",
                        "weights_sha256", "param", "image_size", "batch_index", "steps",
                        "thresholds", "interrupted", "seed", "transforms", "render", "versions",
                        "extra"))


def _picture(image: ImageLike) -> Image.Image:
    return to_pil(to_numpy(image)[0]).convert("RGB")


def _from_atlas(atlas: Path, layer: str, unit: int, weights_sha256: str) -> dict:
    """``{(layer, unit): (picture, record)}`` from a unit atlas, or ``{}`` where it has no
    finished picture of the unit (no record, or a PNG that is not the record's)."""
    record_path = atlas / Series(layer).dir / "units" / f"{unit:05d}.json"
    found = finished_picture(record_path, weights_sha256)
    if found is None:
        return {}
    image, record = found
    return {(layer, unit): (image, {
        "objective_value": record.get("activation"),
        "param": {"kind": record.get("param"), "decorrelate": record.get("decorrelate")},
        "image_size": [image.height, image.width], "steps": record.get("steps"),
        "seed": record.get("seed"), "transforms": record.get("transforms"),
        "render": {key: record.get(key) for key in ("lr", "redirected_relu", "precision")},
        "extra": {"source": "atlas", "atlas_record": str(record_path),
                  "command": record.get("command")}})}


def _rendered(model: nn.Module, layer: str, units: list[int], steps: int, size: int, seed: int,
              progress: bool) -> dict:
    """``{(layer, unit): (picture, record)}``: ``units`` rendered in one batch."""
    result = render_vis(model, batch_channels(layer, units),
                        param_f=lambda: make_param(DEFAULT_PARAM, size, batch=len(units)),
                        thresholds=(steps,), seed=seed, progress=progress)
    if result.interrupted:
        raise KeyboardInterrupt
    settings = dict(result.settings)
    known = {"objective_value": None, "param": {**result.param.describe(), "batch": len(units)},
             "image_size": [size, size], "steps": steps, "thresholds": [steps],
             "interrupted": False, "seed": settings.pop("seed"),
             "transforms": settings.pop("transforms"), "render": settings}
    return {(layer, u): (to_pil(result.image[i]).convert("RGB"),
                         {**known, "batch_index": i, "extra": {"source": "render"}})
            for i, u in enumerate(units)}


# --- drawing: one list of shapes, drawn as a PNG and as SVG --------------------------------

class _Shape(NamedTuple):
    kind: str                  # "line", "image" or "text"
    box: tuple[int, ...]       # line: x1, y1, x2, y2; image: left, top, right, bottom;
    #                            text: x, y (the anchor point, vertically centred)
    value: object = None       # line: (colour, width); image: PIL image; text: the text
    anchor: str = "middle"     # text: "start", "middle" or "end"; image: "pixelated" or not


def _draw(title: str, target_label: str, found: Connections, pictures: list[Image.Image],
          cell: int, scale: float | None) -> tuple[Image.Image, str, list[dict]]:
    """The figure (PNG picture and SVG text) and each picture's label and boxes; ``scale``:
    the weight pictures' (None: no inputs)."""
    inputs = found.positive + found.negative
    kh, kw = inputs[0].weights.shape if inputs else (1, 1)
    upsample = max(1, cell // 2 // max(kh, kw))
    font = _font(FONT_SIZE)
    width_of = lambda text: _text_box(text, font)[0]  # noqa: E731
    labels = [f"#{c.source} {'+' if c.sign > 0 else '-'}{c.norm:.2g}" for c in inputs]
    column = max([cell, kw * upsample, *(width_of(t) + 4 for t in labels)])
    big = cell * 3 // 2
    count = max(len(found.positive), len(found.negative), 1)
    content = max(count * column + (count - 1) * PADDING,
                  big + 2 * (PADDING + width_of(target_label)))
    left = max(width_of("excitatory"), width_of("inhibitory")) + 2 * PADDING
    width = max(left + content + PADDING, width_of(title) + 2 * PADDING)
    centre, line_h = left + content // 2, FONT_SIZE * 3 // 2
    block = cell + PADDING // 2 + kh * upsample + PADDING // 2 + line_h
    gap = max(3 * PADDING, cell // 2)
    shapes = [_Shape("text", (width // 2, 3 * FONT_SIZE // 2), title)]
    y = 3 * FONT_SIZE
    rows = {}
    for role, side in (("excitatory", found.positive), ("target", None),
                       ("inhibitory", found.negative)):
        if side == []:
            continue
        rows[role] = y
        last = role == "inhibitory" or not found.negative
        y += (big if side is None else block) + (PADDING if last else gap)
    target_box = (centre - big // 2, rows["target"], centre - big // 2 + big,
                  rows["target"] + big)
    boxes = [{"label": target_label, "box": list(target_box)}]
    shapes += [_Shape("image", target_box, pictures[0]),
               _Shape("text", (target_box[2] + PADDING, target_box[1] + big // 2), target_label,
                      "start")]
    for role, side in (("excitatory", found.positive), ("inhibitory", found.negative)):
        if not side:
            continue
        top = rows[role]
        shapes.append(_Shape("text", (left - PADDING, top + cell // 2), role, "end"))
        start = centre - (len(side) * column + (len(side) - 1) * PADDING) // 2
        for j, connection in enumerate(side):
            i = len(boxes)
            x = start + j * (column + PADDING) + column // 2  # the column's centre
            box = (x - cell // 2, top, x - cell // 2 + cell, top + cell)
            picture = weight_picture(connection.weights, scale, upsample)
            weights_box = (x - picture.shape[1] // 2, top + cell + PADDING // 2,
                           x - picture.shape[1] // 2 + picture.shape[1],
                           top + cell + PADDING // 2 + picture.shape[0])
            ends = (x, top + block + 2, centre, target_box[1] - 2) if role == "excitatory" \
                else (x, top - 2, centre, target_box[3] + 2)
            stroke = 1 + round(3 * connection.norm / max(c.norm for c in inputs))
            shapes[:0] = [_Shape("line", ends, (WARM if connection.sign > 0 else COOL, stroke))]
            shapes += [_Shape("image", box, pictures[i]),
                       _Shape("image", weights_box, Image.fromarray(picture), "pixelated"),
                       _Shape("text", (x, top + block - line_h // 2), labels[i - 1])]
            boxes.append({"label": labels[i - 1], "box": list(box),
                          "weights_box": list(weights_box)})
    size = (width, y)
    return _png(shapes, size, font), _svg(shapes, size), boxes


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:  # Pillow >= 10.1 scales its built-in font; older ones have one fixed bitmap size
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, ImportError, OSError):
        return ImageFont.load_default()


def _text_box(text: str, font: object) -> tuple[int, int, int, int]:
    """``(width, height, x_offset, y_offset)`` of the inked box of ``text``."""
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(
        (0, 0), text, font=font)
    return right - left, bottom - top, left, top


def _png(shapes: list[_Shape], size: tuple[int, int], font: object) -> Image.Image:
    figure = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(figure)
    for shape_ in shapes:
        if shape_.kind == "line":
            draw.line(shape_.box, fill=shape_.value[0], width=shape_.value[1])
        elif shape_.kind == "image":
            left, top, right, bottom = shape_.box
            picture = shape_.value
            if picture.size != (right - left, bottom - top):
                picture = picture.resize((right - left, bottom - top), Image.Resampling.LANCZOS)
            figure.paste(picture, (left, top))
        else:
            width, height, dx, dy = _text_box(shape_.value, font)
            x = shape_.box[0] - {"start": 0, "middle": width // 2, "end": width}[shape_.anchor]
            draw.text((x - dx, shape_.box[1] - height // 2 - dy), shape_.value, font=font,
                      fill=INK)
    return figure


def _svg(shapes: list[_Shape], size: tuple[int, int]) -> str:
    svg = ET.Element("svg", {"xmlns": "http://www.w3.org/2000/svg",
                             "xmlns:xlink": "http://www.w3.org/1999/xlink",
                             "width": str(size[0]), "height": str(size[1]),
                             "viewBox": f"0 0 {size[0]} {size[1]}"})
    ET.SubElement(svg, "rect", {"width": "100%", "height": "100%", "fill": "white"})
    for shape_ in shapes:
        if shape_.kind == "line":
            (colour, stroke), (x1, y1, x2, y2) = shape_.value, shape_.box
            ET.SubElement(svg, "line", {"x1": str(x1), "y1": str(y1), "x2": str(x2),
                                        "y2": str(y2), "stroke": "rgb{}".format(colour),
                                        "stroke-width": str(stroke), "stroke-linecap": "round"})
        elif shape_.kind == "image":
            left, top, right, bottom = shape_.box
            buffer = BytesIO()
            shape_.value.save(buffer, format="PNG")
            data = base64.b64encode(buffer.getvalue()).decode("ascii")
            ET.SubElement(svg, "image", {
                "x": str(left), "y": str(top), "width": str(right - left),
                "height": str(bottom - top), "preserveAspectRatio": "none",
                "xlink:href": f"data:image/png;base64,{data}",
                **({"style": "image-rendering:pixelated"} if shape_.anchor == "pixelated"
                   else {})})
        else:
            text = ET.SubElement(svg, "text", {
                "x": str(shape_.box[0]), "y": str(shape_.box[1]),
                "font-family": "sans-serif", "font-size": str(FONT_SIZE),
                "text-anchor": shape_.anchor, "dominant-baseline": "central"})
            text.text = shape_.value
    return ET.tostring(svg, encoding="unicode") + "\n"


def save_circuit_figure(figure: CircuitFigure, path: "str | os.PathLike") -> Path:
    """Write a :class:`CircuitFigure` as ``path`` (a PNG), the same name ``.svg`` and the
    side-car ``.json`` of :func:`lucent_core.figures.save_figure` (same format; its
    ``metadata`` also names the SVG and its SHA256). Each file appears atomically, the
    side-car last.

    Returns:
        The PNG's path.

    Example:
        >>> import tempfile
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Conv2d(2, 2, 1))
        >>> figure = circuit_figure(net, "1", 0, "0", top=1, steps=1, size=8, cell=16)
        >>> png = save_circuit_figure(figure, Path(tempfile.mkdtemp()) / "circuit.png")
        >>> sorted(p.name for p in png.parent.iterdir())
        ['circuit.json', 'circuit.png', 'circuit.svg']
    """
    instance("figure", figure, CircuitFigure, "what circuit_figure returns")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    svg = path.with_suffix(".svg")
    write_atomically(path, lambda partial: figure.image.save(partial, format="PNG"))
    write_atomically(svg, lambda partial: partial.write_text(figure.svg, encoding="utf-8"))
    record = {
        "format": FIGURE_FORMAT, "format_version": FIGURE_FORMAT_VERSION, "image": path.name,
        "png_sha256": sha256sum(path),
        "size": {"width": figure.image.width, "height": figure.image.height},
        "mode": figure.image.mode, "layout": None,
        "versions": figure.metadata["versions"],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "panels": figure.panels,
        "metadata": {**figure.metadata, "svg": svg.name,
                     "svg_sha256": sha256sum(svg)}}
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    write_atomically(path.with_suffix(".json"), lambda partial: partial.write_text(text))
    return path
