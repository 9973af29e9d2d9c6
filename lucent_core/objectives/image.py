"""Regularisers: L1, L2, total variation and Lucid's blur-each-step, on the image or any layer.

**Sign convention.** Like every objective, these return a value that is *maximised*, and like
Lucid's they measure *how much of the quantity there is*: ``total_variation()`` is large for a
noisy image, ``L1(constant=0.5)`` is large for an image far from grey. To *penalise* the
quantity, subtract it::

    objective = channel("block4_conv3", 300) - 1e-3 * total_variation()

(adding it would make the render noisier). The default layer is the pseudo-layer ``"input"``:
the rendered image in [0, 1], before the robustness transforms and the model's preprocessing.
Any other layer name works too and reads that layer's activations instead. An objective that
reads only ``"input"`` renders without running the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lucent_core.hooks import INPUT_LAYER
from lucent_core.validate import shape
from lucent_core.objectives.core import Activations, Objective, layer_output, wrap_objective

__all__ = ["L1", "L2", "blur", "blur_input_each_step", "total_variation"]


def _spatial(t: torch.Tensor, layer: str, what: str) -> torch.Tensor:
    shape(f"layer {layer!r} (for {what})", t, ("B", "C", "H", "W"))
    return t


@wrap_objective
def L1(layer: str = INPUT_LAYER, constant: float = 0.0, batch: int | None = None) -> Objective:
    """L1 distance from a constant: ``sum(|x - constant|)`` over every value of ``layer``.

    Higher means *farther* from ``constant``; subtract it to pull values towards it (e.g.
    ``- 0.01 * L1(constant=0.5)`` pulls the image towards grey).

    Args:
        layer: layer name; ``"input"`` (default) is the rendered image in [0, 1].
        constant: the value distances are measured from.
        batch: measure only this image of the batch.

    Example:
        >>> L1(constant=0.5)({"input": torch.tensor([[0.0, 1.0, 0.75]])}).item()
        1.25
    """
    def inner(acts: Activations) -> torch.Tensor:
        return (layer_output(acts, layer, batch) - constant).abs().sum()
    return Objective(inner, [layer])


@wrap_objective
def L2(layer: str = INPUT_LAYER, constant: float = 0.0, epsilon: float = 1e-6,
       batch: int | None = None) -> Objective:
    """L2 distance from a constant: ``sqrt(epsilon + sum((x - constant) ** 2))`` (Lucid's).

    Higher means *farther* from ``constant``; subtract it to pull values towards it. The small
    ``epsilon`` keeps the gradient finite when every value equals ``constant``.

    Args:
        layer: layer name; ``"input"`` (default) is the rendered image in [0, 1].
        constant: the value distances are measured from.
        epsilon: added under the square root.
        batch: measure only this image of the batch.

    Example:
        >>> round(L2()({"input": torch.tensor([[3.0, 4.0]])}).item(), 4)
        5.0
    """
    def inner(acts: Activations) -> torch.Tensor:
        return torch.sqrt(epsilon + (layer_output(acts, layer, batch) - constant).pow(2).sum())
    return Objective(inner, [layer])


@wrap_objective
def total_variation(layer: str = INPUT_LAYER, batch: int | None = None) -> Objective:
    """Total variation: the sum of absolute differences between vertically and horizontally
    adjacent values, over all channels and images (``tf.image.total_variation``, as in Lucid).

    Higher means *noisier*; subtract it to smooth a render, e.g.
    ``channel(l, 3) - 1e-3 * total_variation()``. See Mahendran & Vedaldi (2015),
    *Understanding deep image representations by inverting them*.

    Args:
        layer: a ``(B, C, H, W)`` layer; ``"input"`` (default) is the rendered image.
        batch: measure only this image of the batch.

    Example:
        >>> image = torch.tensor([[[[0.0, 1.0], [3.0, 2.0]]]])  # |3-0| + |2-1| + |1-0| + |2-3|
        >>> total_variation()({"input": image}).item()
        6.0
    """
    def inner(acts: Activations) -> torch.Tensor:
        t = _spatial(layer_output(acts, layer, batch), layer, "total_variation")
        vertical = (t[..., 1:, :] - t[..., :-1, :]).abs().sum()
        horizontal = (t[..., :, 1:] - t[..., :, :-1]).abs().sum()
        return vertical + horizontal
    return Objective(inner, [layer])


def blur(x: torch.Tensor) -> torch.Tensor:
    """Lucid's 3x3 blur, channel by channel: weight 1 for the pixel, 0.5 for its 8 neighbours.

    Each output is the weighted *mean* of the neighbours that lie inside the image (zero
    padding, divided by the weight that fell inside), so a constant image is unchanged,
    borders included.

    Shape: ``(B, C, H, W)`` in, the same out.

    Example:
        >>> delta = torch.zeros(1, 1, 3, 3)
        >>> delta[0, 0, 1, 1] = 1.0
        >>> round(blur(delta)[0, 0, 1, 1].item(), 6)  # interior: weights 1 + 8 * 0.5 = 5
        0.2
    """
    shape("x", x, ("B", "C", "H", "W"))
    channels = x.shape[1]
    kernel = torch.full((3, 3), 0.5, dtype=x.dtype, device=x.device)
    kernel[1, 1] = 1.0
    weight = kernel.expand(channels, 1, 3, 3)
    summed = F.conv2d(x, weight, padding=1, groups=channels)
    mass = F.conv2d(torch.ones_like(x[:1, :1]), kernel.view(1, 1, 3, 3), padding=1)
    return summed / mass


@wrap_objective
def blur_input_each_step(layer: str = INPUT_LAYER) -> Objective:
    """How far the image is from a blurred copy of itself: ``0.5 * sum((x - blur(x)) ** 2)``,
    with ``blur(x)`` computed without gradient (Lucid's ``blur_input_each_step``).

    Its gradient is ``x - blur(x)``, so subtracting it, ``objective - k * blur_input_each_step()``,
    makes each gradient step (for plain gradient ascent with learning rate 1, on pixels) the
    update ``x <- (1 - k) * x + k * blur(x)``: the image is pulled towards a blurred copy of
    itself at every step, the smoothing of early feature visualisation (Nguyen et al., 2015).
    Higher means *rougher*; subtract it. :func:`blur` is the blur used.

    Args:
        layer: a ``(B, C, H, W)`` layer; ``"input"`` (default) is the rendered image.

    Example:
        >>> flat = torch.full((1, 3, 4, 4), 0.3)
        >>> round(blur_input_each_step()({"input": flat}).item(), 6)  # its own blur
        0.0
    """
    def inner(acts: Activations) -> torch.Tensor:
        t = _spatial(acts[layer], layer, "blur_input_each_step")
        with torch.no_grad():
            blurred = blur(t)
        return 0.5 * (t - blurred).pow(2).sum()
    return Objective(inner, [layer])
