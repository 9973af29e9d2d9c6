"""The standard objectives: neuron, channel, direction, diversity, class logits.

Conventions: activations are ``(B, C, H, W)`` for convolutional layers or ``(B, C)`` for
vectors (logits, embeddings). Spatial positions are ``x`` = column, ``y`` = row, counted from
the top-left of the activation map (Lucid's explicit ``x``/``y`` index the other way round,
``x`` = row; the default centre is the same). ``batch=i`` makes an objective read only
image ``i`` of the batch, so one render can optimise a different target in every image.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from lucent_core._device import DeviceCopies
from lucent_core.validate import index, instance, real, shape
from lucent_core.hooks import OUTPUT_LAYER
from lucent_core.objectives.core import Activations, Objective, layer_output, wrap_objective

__all__ = ["as_objective", "batch_channels", "channel", "class_logit", "deepdream", "direction",
           "direction_neuron", "diversity", "neuron"]


def check_arguments(layer: object, **indices: object) -> tuple:
    """When an objective is made: ``layer`` is a name, each index an integer (``x``, ``y`` and
    ``batch`` may be None), ``cossim_pow`` a finite number >= 0. Returns the values in the
    order given, as plain ``int`` (and ``float``), whatever integer type they came as."""
    instance("layer", layer, str, "a layer name such as 'mixed4a'")
    return tuple(real(name, value, minimum=0) if name == "cossim_pow"
                 else value if value is None and name in ("x", "y", "batch")
                 else index(name, value) for name, value in indices.items())


def check_several_images(t: torch.Tensor, what: str) -> None:
    """An objective that compares the images of a batch needs at least two of them."""
    if t.shape[0] < 2:
        raise ValueError(f"{what} needs 2 or more images, got 1: e.g. param.image(128, batch=4)")


def check_unit(t: torch.Tensor, layer: str, unit: int) -> int:
    """``unit`` as a channel of ``t`` (``(B, C, ...)``): negative ones count from the last
    channel, as Python's indices do."""
    if t.dim() < 2:
        raise ValueError(f"layer {layer!r} gives shape {tuple(t.shape)}, not (B, C, ...)")
    if not -t.shape[1] <= unit < t.shape[1]:
        raise IndexError(f"channel {unit} is out of range for layer {layer!r} ({t.shape[1]} units: "
                         f"0..{t.shape[1] - 1}, or -{t.shape[1]}..-1 from the end)")
    return unit % t.shape[1]


def refuse_tokens(acts: Activations, layer: str, unit: object = "unit",
                  what: str | None = None) -> None:
    """Channel objectives read ``(B, C, ...)``: refuse a layer that
    :func:`~lucent_core.hooks.capture` found in a transformer block (``acts.token_major``),
    whose ``(B, tokens, C)`` activations would give tokens for channels."""
    if layer in getattr(acts, "token_major", ()):
        raise ValueError(f"layer {layer!r} is in a transformer block: its activations are "
                         f"(batch, tokens, channels), so {what or f'channel {unit}'} would read "
                         f"tokens, not channels; use lucent_core.recipes.clip.vit_channel("
                         f"{layer!r}, {unit}) for a channel (mean over the patch tokens, or "
                         "token='cls')")


def _position(t: torch.Tensor, layer: str, x: int | None, y: int | None) -> tuple[int, int]:
    shape(f"layer {layer!r} (for x, y)", t, ("B", "C", "H", "W"))
    height, width = t.shape[-2:]
    x = width // 2 if x is None else x
    y = height // 2 if y is None else y
    if not (0 <= x < width and 0 <= y < height):
        raise IndexError(f"(x={x}, y={y}) is outside the {width} x {height} map of layer {layer!r}")
    return x, y


def _as_vector(vector: "torch.Tensor | np.ndarray | Sequence[float]") -> torch.Tensor:
    v = torch.as_tensor(np.asarray(vector) if not isinstance(vector, torch.Tensor) else vector)
    shape("vector", v, ("C",))  # one value per channel
    if not torch.isfinite(v).all():
        raise ValueError("vector must hold finite numbers, got NaN or infinite values")
    return v.float()


def dot_cossim(t: torch.Tensor, vector: DeviceCopies, layer: str, cossim_pow: float
                ) -> torch.Tensor:
    """Per-position dot product with ``vector`` along channels, optionally times cos-sim^pow.

    As in Lucid: ``dot * max(0.1, cos)^cossim_pow`` (``cossim_pow=0`` is the plain dot).
    """
    shape(f"vector for layer {layer!r}", vector.tensor, (t.shape[1],))
    v = vector.like(t).reshape(1, -1, *([1] * (t.dim() - 2)))
    dot = (t * v).sum(1)
    if cossim_pow == 0:
        return dot
    eps = 1e-4
    cossim = dot / (eps + t.norm(dim=1)) / (eps + v.norm())
    return dot * cossim.clamp(min=0.1) ** cossim_pow


@wrap_objective
def neuron(layer: str, unit: int, x: int | None = None, y: int | None = None,
           batch: int | None = None) -> Objective:
    """Activation of one unit at one position (the centre by default).

    Args:
        layer: layer name.
        unit: channel index.
        x: column of the activation map (default: ``width // 2``).
        y: row of the activation map (default: ``height // 2``).
        batch: optimise only this image of the batch.

    Example:
        >>> obj = neuron("conv", 1)
        >>> obj({"conv": torch.arange(2 * 9.).reshape(1, 2, 3, 3)}).item()  # centre of channel 1
        13.0
    """
    unit, x, y, batch = check_arguments(layer, unit=unit, x=x, y=y, batch=batch)

    def inner(acts: Activations) -> torch.Tensor:
        refuse_tokens(acts, layer, unit)
        t = layer_output(acts, layer, batch)
        col, row = _position(t, layer, x, y)
        return t[:, check_unit(t, layer, unit), row, col].mean()
    return Objective(inner, [layer])


@wrap_objective
def channel(layer: str, unit: int, batch: int | None = None) -> Objective:
    """Mean activation of one channel over all positions (and images, unless ``batch``).

    Example:
        >>> channel("fc", 2)({"fc": torch.tensor([[1.0, 2.0, 3.0]])}).item()
        3.0
    """
    unit, batch = check_arguments(layer, unit=unit, batch=batch)

    def inner(acts: Activations) -> torch.Tensor:
        refuse_tokens(acts, layer, unit)
        t = layer_output(acts, layer, batch)
        return t[:, check_unit(t, layer, unit)].mean()
    return Objective(inner, [layer])


@wrap_objective
def batch_channels(layer: str, units: Sequence[int]) -> Objective:
    """Image ``i`` of the batch maximises channel ``units[i]``: a whole set of units in one render.

    Equal to ``sum(channel(layer, u, batch=i) for i, u in enumerate(units))``, computed in one
    vectorised step.

    Example:
        >>> acts = {"fc": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
        >>> batch_channels("fc", [1, 0])(acts).item()  # 2 + 3
        5.0
    """
    if isinstance(units, (str, bytes)) or not hasattr(units, "__iter__"):
        raise TypeError(f"units must be a list of channel indices, one per image, got {units!r}")
    units = list(check_arguments(layer, **{f"units[{i}]": u for i, u in enumerate(units)}))
    if not units:
        raise ValueError("units must hold at least one channel index, got none")
    index = DeviceCopies(torch.tensor(units))

    def inner(acts: Activations) -> torch.Tensor:
        refuse_tokens(acts, layer, what=f"units {units}")
        t = acts[layer]
        shape("units (one per image)", units, (t.shape[0],))
        for unit in (min(units), max(units)):
            check_unit(t, layer, unit)
        picked = t[torch.arange(len(units), device=t.device), index.on(t.device)]
        return picked.reshape(len(units), -1).mean(1).sum()
    return Objective(inner, [layer])


@wrap_objective
def direction(layer: str, vector: "torch.Tensor | np.ndarray | Sequence[float]",
              batch: int | None = None, cossim_pow: float = 0.0) -> Objective:
    """Mean over positions of the activation's dot product with a direction in channel space.

    With ``cossim_pow > 0`` each position's dot product is multiplied by its cosine similarity
    (floored at 0.1) to that power, as Lucid does, which favours aligned rather than merely
    large activations.

    Args:
        layer: layer name.
        vector: shape ``(C,)``, one value per channel of ``layer``.
        batch: optimise only this image of the batch.
        cossim_pow: the cosine-similarity exponent (0: plain dot product).

    Example:
        >>> direction("fc", [1.0, -1.0])({"fc": torch.tensor([[3.0, 1.0]])}).item()
        2.0
    """
    batch, cossim_pow = check_arguments(layer, batch=batch, cossim_pow=cossim_pow)
    v = DeviceCopies(_as_vector(vector))

    def inner(acts: Activations) -> torch.Tensor:
        refuse_tokens(acts, layer, what="a direction")
        return dot_cossim(layer_output(acts, layer, batch), v, layer, cossim_pow).mean()
    return Objective(inner, [layer])


@wrap_objective
def direction_neuron(layer: str, vector: "torch.Tensor | np.ndarray | Sequence[float]",
                     x: int | None = None, y: int | None = None, batch: int | None = None,
                     cossim_pow: float = 0.0) -> Objective:
    """:func:`direction` at a single position (the centre by default).

    Example:
        >>> acts = {"c": torch.zeros(1, 2, 3, 3)}
        >>> acts["c"][0, :, 1, 1] = torch.tensor([2.0, 5.0])
        >>> direction_neuron("c", [1.0, 1.0])(acts).item()
        7.0
    """
    x, y, batch, cossim_pow = check_arguments(layer, x=x, y=y, batch=batch,
                                              cossim_pow=cossim_pow)
    v = DeviceCopies(_as_vector(vector))

    def inner(acts: Activations) -> torch.Tensor:
        refuse_tokens(acts, layer, what="a direction")
        t = layer_output(acts, layer, batch)
        col, row = _position(t, layer, x, y)
        return dot_cossim(t[:, :, row:row + 1, col:col + 1], v, layer, cossim_pow).mean()
    return Objective(inner, [layer])


@wrap_objective
def diversity(layer: str) -> Objective:
    """How *similar* the images of a batch are at ``layer`` (Lucid's definition): subtract it.

    Each image's Gram matrix of channel activations is L2-normalised; the value is the sum of
    dot products between the Gram matrices of all pairs of different images, divided by the
    batch size. Use it with a minus sign, e.g. ``channel(l, 3) - 1e2 * diversity(l)``.

    Example:
        >>> same = torch.ones(2, 3, 4, 4)
        >>> diversity("c")({"c": same}).item()  # two identical images: 2 * 1 / 2
        1.0
    """
    check_arguments(layer)

    def inner(acts: Activations) -> torch.Tensor:
        check_several_images(acts[layer], "diversity")
        similarity = gram_similarity(acts[layer])
        return (similarity.sum() - similarity.diagonal().sum()) / similarity.shape[0]
    return Objective(inner, [layer])


def gram_similarity(acts: torch.Tensor) -> torch.Tensor:
    """Cosine similarities between the images' Gram matrices of channel activations.

    Args:
        acts: ``(B, C, ...)`` activations of one layer.

    Returns:
        ``(B, B)``: entry ``(i, j)`` is the cosine of image i's and image j's Gram matrices
        (1 on the diagonal for any non-zero image).

    Example:
        >>> x = torch.rand(1, 3, 4, 4)
        >>> gram_similarity(torch.cat([x, 2 * x])).round(decimals=4).tolist()  # same pattern
        [[1.0, 1.0], [1.0, 1.0]]
    """
    batch = acts.shape[0]
    flat = acts.reshape(batch, acts.shape[1], -1)
    grams = (flat @ flat.transpose(1, 2)).reshape(batch, -1)
    grams = grams / grams.norm(dim=1, keepdim=True).clamp(min=1e-10)
    return grams @ grams.T


@wrap_objective
def deepdream(layer: str, batch: int | None = None) -> Objective:
    """Mean squared activation of a whole layer (DeepDream).

    Example:
        >>> deepdream("fc")({"fc": torch.tensor([[1.0, 3.0]])}).item()
        5.0
    """
    (batch,) = check_arguments(layer, batch=batch)

    def inner(acts: Activations) -> torch.Tensor:
        return layer_output(acts, layer, batch).pow(2).mean()
    return Objective(inner, [layer])


@wrap_objective
def class_logit(unit: int, layer: str = OUTPUT_LAYER, batch: int | None = None) -> Objective:
    """A class logit: channel ``unit`` of the model output (or of ``layer``).

    Like every objective here it is the mean over the batch's images (Lucid's sums them, so
    its weight against other terms grows with the batch size). The shorthand ``"labels:N"``
    means the same as ``class_logit(N)``.

    Example:
        >>> class_logit(1)({"output": torch.tensor([[0.5, 2.0]])}).item()
        2.0
    """
    return channel(layer, unit, batch)


def as_objective(objective: "Objective | str") -> Objective:
    """Accept an :class:`Objective` or the Lucid shorthand ``"layer:unit"`` (a channel).

    ``"labels:N"`` is class ``N`` of the model output.

    Example:
        >>> as_objective("mixed4a:476").name
        "channel('mixed4a', 476)"
    """
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str):
        layer, sep, unit = objective.rpartition(":")
        if sep and layer and unit.strip().lstrip("-").isdigit():
            return channel(layer, int(unit))
        raise ValueError(f"objective must be 'layer:unit', e.g. 'mixed4a:476', got {objective!r}")
    raise TypeError(f"objective must be an Objective or a 'layer:unit' string, got {objective!r}")
