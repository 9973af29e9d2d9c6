"""Attribution: how much each position and each channel of a layer contributes to a target, on
one image (Olah et al., "The Building Blocks of Interpretability", Distill 2018).

Pick a *source* layer (say ``block3_conv3``) and a *target* further on (a class logit, a
channel of a later layer, a direction, any objective). The attribution is a ``(C, H, W)``
tensor over the source layer's activation ``a``: entry ``(c, y, x)`` says how much channel
``c`` at position ``(y, x)`` contributes to the target. Summed over channels it is a spatial
map (*where* the target's evidence is), summed over positions a score per channel (*which*
detectors supply it). Two methods, both computed by Captum:

* ``"grad_x_act"``: ``a * d target / d a``, the first-order (linear) estimate of the target
  minus its value at zero activations; exact for a target linear in ``a``.
* ``"integrated_gradients"`` (Sundararajan et al. 2017): ``(a - a0)`` times the gradient
  averaged along the straight line from ``a0``, the activation of a baseline image (black by
  default), to ``a``. It is *complete*: the entries sum to ``target(a) - target(a0)``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    >>> attr = attribution(net, torch.rand(3, 16, 16), "0", "2:1")
    >>> tuple(attr.full.shape), tuple(attr.spatial.shape), tuple(attr.channels.shape)
    ((4, 14, 14), (14, 14), (4,))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lucent_core.activations import ImageSource, load_image
from lucent_core.hooks import (OUTPUT_ALIASES, capture, frozen, model_device, resolve_layer,
                               run_to_layers, same_layer)
from lucent_core.objectives import Objective, as_objective, direction
from lucent_core.preprocessing import preprocessing_of
from lucent_core.validate import choice, flag, instance, integer, real_scalar, shape

__all__ = ["ATTRIBUTION_METHODS", "Attribution", "attribution", "attribution_overlay"]

#: The methods of :func:`attribution`: activation times gradient, and integrated gradients
#: (along the straight path in the source layer's activation space).
ATTRIBUTION_METHODS = ("grad_x_act", "integrated_gradients")

Target = Union[str, tuple, Objective]

_WARM = torch.tensor([1.0, 0.25, 0.0]).view(3, 1, 1)  # positive contributions
_COOL = torch.tensor([0.0, 0.45, 1.0]).view(3, 1, 1)  # negative ones
_OPACITY = 0.75  # how much of the colour covers the photo where the map is strongest


@dataclass(frozen=True)
class Attribution:
    """The result of :func:`attribution`.

    Attributes:
        full: ``(C, H, W)`` float32 on the CPU: the contribution of channel ``c`` of the source
            layer at position ``(y, x)`` (row ``y`` from the top).
        method: ``"grad_x_act"`` or ``"integrated_gradients"``.
        source_layer: the source layer, as given.
        target: the target in words (``"labels:3"``, ``"block5_conv3:12"``, an objective's
            name).
        target_value: the target on the image.
        baseline_value: the target on the baseline (integrated gradients), else None.
        activations: ``(C, H, W)`` float32: the source layer's activation on the image.
    """

    full: torch.Tensor
    method: str
    source_layer: str
    target: str
    target_value: float
    baseline_value: float | None
    activations: torch.Tensor

    @property
    def spatial(self) -> torch.Tensor:
        """``(H, W)``: the contribution of each position, all channels summed."""
        return self.full.sum(0)

    @property
    def channels(self) -> torch.Tensor:
        """``(C,)``: the contribution of each channel, all positions summed."""
        return self.full.sum((1, 2))

    def top_channels(self, k: int = 8) -> list[int]:
        """The ``k`` channels that contribute most (signed total), largest first.

        Example:
            >>> attr = Attribution(torch.arange(3.0).view(3, 1, 1), "grad_x_act", "a", "t",
            ...                    3.0, None, torch.ones(3, 1, 1))
            >>> attr.top_channels(2)
            [2, 1]
        """
        k = integer("k", k, minimum=1)
        return torch.argsort(self.channels, descending=True, stable=True)[:k].tolist()

    def heatmap(self, image: ImageSource | None = None, signed: bool = True) -> Image.Image:
        """Same as :func:`attribution_overlay` ``(self, image, signed=signed)``."""
        return attribution_overlay(self, image, signed=signed)


class _OneImage(dict):
    """Image ``i``'s slice of every captured activation, keeping what :func:`capture` noted
    (``token_major``) for the objectives that read it."""

    def __init__(self, acts: dict, i: int):
        super().__init__({name: value[i:i + 1] for name, value in acts.items()})
        self.token_major = getattr(acts, "token_major", set())


def _per_image(model: nn.Module, objective: Objective, x: torch.Tensor) -> torch.Tensor:
    """The target on each image of ``x`` (model input), shape ``(B,)``. Captum wants one
    value per example, while an objective averages over its batch: each image is read alone."""
    with capture(model, sorted(objective.layers)) as acts:
        run_to_layers(model, x, acts)
        if x.shape[0] == 1:
            return objective(acts).reshape(1)
        return torch.stack([objective(_OneImage(acts, i)) for i in range(x.shape[0])])


def _probe(model: nn.Module, module: nn.Module, objective: Objective, x: torch.Tensor
           ) -> tuple[torch.Tensor | None, float, bool]:
    """One forward and backward pass on the image: the source layer's activation (None if the
    forward stopped before reaching it), the target's value, and whether the target depends on
    the source (a gradient flows from one to the other)."""
    found: list[torch.Tensor] = []

    def swap(_module, _inputs, output):  # a leaf of our own to take the gradient at
        instance("source_layer's output", output, torch.Tensor, "a tensor")
        found.append(output.detach().requires_grad_())
        return found[-1].clone()  # a later in-place op (ReLU(inplace=True)) then writes a copy

    handle = module.register_forward_hook(swap)
    try:
        with torch.enable_grad():
            value = _per_image(model, objective, x)[0]
    finally:
        handle.remove()
    if not found or not value.requires_grad:
        return (found[-1] if found else None), value.item(), False
    gradient = torch.autograd.grad(value, found[-1], allow_unused=True)[0]
    return found[-1], value.item(), gradient is not None


def _objective(target: Target) -> tuple[Objective, str]:
    """The target as an objective, and its name in words."""
    if isinstance(target, Objective):
        return target, target.name
    if isinstance(target, tuple) and len(target) == 2:
        objective = direction(*target)
        return objective, objective.name
    message = (f"target must be 'labels:N', 'layer:unit', a (layer, vector) pair or an "
               f"Objective, got {target!r}")
    if not isinstance(target, str):
        raise TypeError(message)
    try:
        objective = as_objective(target)
    except ValueError:
        raise ValueError(message) from None
    layer = target.rpartition(":")[0]
    if layer not in OUTPUT_ALIASES:
        return objective, target

    def logit(acts: dict) -> torch.Tensor:  # a class needs an output of (1, classes)
        shape(f"the model output (for target {target!r})", acts[layer], ("B", "classes"))
        return objective(acts)
    return Objective(logit, [layer], target), target


def _baseline(baseline: object, pixels: torch.Tensor, size: object) -> torch.Tensor:
    """The baseline image, in [0, 1] and of the image's shape: black, grey or an image."""
    if baseline is None:
        return torch.zeros_like(pixels)
    grey = real_scalar(baseline)
    if grey is not None:
        if not 0 <= grey <= 1:
            raise ValueError(f"baseline must be an image or a grey level in [0, 1], got {grey}")
        return torch.full_like(pixels, grey)
    found = load_image(baseline, size)
    shape("baseline (as the image)", found, tuple(pixels.shape))
    return found.to(pixels.device)


def attribution(model: nn.Module, image: ImageSource, source_layer: str, target: Target,
                method: str = "grad_x_act", *, baseline: ImageSource | float | None = None,
                steps: int = 32, size: "int | Sequence[int] | None" = None,
                preprocess: Callable | None = None) -> Attribution:
    """How much each channel at each position of ``source_layer`` contributes to ``target``.

    The image is read with :func:`~lucent_core.activations.load_image`, passed through the
    model's own preprocessing (or ``preprocess``) and run through the model in eval mode; the
    model's modes and ``requires_grad`` flags are left as found, and no weight gradient is
    stored.

    Args:
        model: any ``nn.Module``; it runs on its own device and dtype.
        image: a path, a PIL image, an ``(H, W, 3)`` array or a ``(3, H, W)`` /
            ``(1, 3, H, W)`` tensor in [0, 1].
        source_layer: a layer giving ``(1, C, H, W)``, before the target's layer.
        target: ``"labels:N"`` (class logit ``N`` of the model output), ``"layer:unit"`` (the
            mean of one channel, as :func:`~lucent_core.objectives.channel`), a ``(layer,
            vector)`` pair (the mean dot product with a direction in channel space, as
            :func:`~lucent_core.objectives.direction`) or any
            :class:`~lucent_core.objectives.Objective` (evaluated on this one image).
        method: one of :data:`ATTRIBUTION_METHODS`.
        baseline: integrated gradients only: None (black), a grey level in [0, 1], or an image
            like ``image`` (of its size once ``size`` is applied).
        steps: integrated gradients only: points on the path (Gauss-Legendre quadrature).
        size: passed to :func:`~lucent_core.activations.load_image` (for the baseline too).
        preprocess: how images become model input (default: the model's own).

    Returns:
        An :class:`Attribution`.

    Raises:
        ValueError: an unknown method or target, a non-spatial source layer, a source layer at
            or after the target's layer, ``"labels:N"`` on a model without a class output.
        IndexError: a unit out of range for its layer.
        ImportError: Captum is missing (``pip install 'lucent_core[explain]'``).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(4, 3))
        >>> attr = attribution(net, torch.rand(3, 8, 8), "0", "labels:2",
        ...                    "integrated_gradients")
        >>> abs(attr.full.sum().item() - (attr.target_value - attr.baseline_value)) < 1e-5
        True
    """
    instance("model", model, nn.Module, "an nn.Module")
    choice("method", method, ATTRIBUTION_METHODS)
    steps = integer("steps", steps, minimum=1)
    if baseline is not None and method == "grad_x_act":
        raise ValueError("baseline is for method='integrated_gradients' only, got a baseline "
                         "with method='grad_x_act'")
    try:
        from captum.attr import LayerGradientXActivation, LayerIntegratedGradients
    except ImportError as error:
        raise ImportError("attribution needs Captum: pip install 'lucent_core[explain]'"
                          ) from error
    objective, name = _objective(target)
    pixels = load_image(image, size)
    module = dict(model.named_modules()).get(resolve_layer(model, source_layer))
    device, dtype = model_device(model)
    preprocess = preprocessing_of(model, preprocess)
    x = preprocess(pixels.to(device=device, dtype=dtype))

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        # Captum's integrated gradients hand the source layer's successors a leaf tensor, to
        # which an in-place op (ReLU(inplace=True)) may not write: they get a copy of it
        handle = module.register_forward_hook(lambda _module, _inputs, out: out.clone())
        try:
            return _per_image(model, objective, inputs)
        finally:
            handle.remove()

    with frozen(model):
        # Captum would fail deep inside autograd on a target that does not depend on the
        # source; one probing pass finds that first (and gives the activation and the value).
        source, value, depends = (None, 0.0, False) if module is None \
            else _probe(model, module, objective, x)
        if not depends or any(same_layer(model, source_layer, layer) for layer in
                              objective.layers):
            raise ValueError(f"source_layer {source_layer!r} comes after (or is) the target's "
                             f"layer {', '.join(sorted(objective.layers))!r}: the target does "
                             f"not depend on it; choose an earlier source_layer")
        shape(f"source_layer {source_layer!r}", source, (1, "C", "H", "W"))
        if method == "grad_x_act":
            full = LayerGradientXActivation(forward, module).attribute(x)
            baseline_value = None
        else:
            # LayerIntegratedGradients takes the baseline as an *input*, runs it to the source
            # layer and integrates from that activation to the image's, in activation space.
            x0 = preprocess(_baseline(baseline, pixels, size).to(device=device, dtype=dtype))
            full = LayerIntegratedGradients(forward, module).attribute(
                x, baselines=x0, n_steps=steps, internal_batch_size=min(steps, 16))
            with torch.no_grad():
                baseline_value = forward(x0)[0].item()
    return Attribution(full=full[0].detach().float().cpu(), method=method,
                       source_layer=source_layer, target=name, target_value=value,
                       baseline_value=baseline_value,
                       activations=source[0].detach().float().cpu())


def attribution_overlay(attr: Attribution, image: ImageSource | None = None,
                        signed: bool = True) -> Image.Image:
    """The spatial map drawn over the photo: warm (orange) where the contribution is positive,
    cool (blue) where it is negative, the colour stronger with the size of the contribution.

    The map is divided by its largest magnitude and upsampled bilinearly (cell centres on
    patch centres) to the image's size; give the image the attribution was computed on (after
    ``size``). ``signed=False`` draws the magnitude, all warm. Without an image the map is
    drawn on grey at the layer's resolution.

    Example:
        >>> full = torch.zeros(2, 4, 4)
        >>> full[0, 1, 2] = 1.0
        >>> attr = Attribution(full, "grad_x_act", "a", "t", 1.0, None, full)
        >>> attribution_overlay(attr, torch.zeros(3, 16, 16)).size
        (16, 16)
    """
    instance("attr", attr, Attribution, "what attribution() returns")
    signed = flag("signed", signed)
    level = attr.spatial if signed else attr.spatial.abs()
    peak = level.abs().max()
    level = level / peak if peak > 0 else torch.zeros_like(level)
    photo = torch.full((3, *level.shape), 0.5) if image is None else load_image(image)[0].cpu()
    level = F.interpolate(level[None, None], size=tuple(photo.shape[-2:]), mode="bilinear",
                          align_corners=False)[0]
    weight = _OPACITY * level.abs()
    blended = photo * (1 - weight) + torch.where(level >= 0, _WARM, _COOL) * weight
    pixels = (blended.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(pixels))
