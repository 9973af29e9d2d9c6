"""Objectives over a whole batch: interpolating between two units, keeping neighbours aligned.

Both read the batch as a sequence: image ``0`` first, image ``B - 1`` last. Render them with a
batch parameterisation, e.g. ``param.image(128, batch=6)``.
"""

from __future__ import annotations

import torch

from lucent_core.validate import integer, real
from lucent_core.objectives.catalogue import (check_arguments, check_several_images, check_unit,
                                              refuse_tokens)
from lucent_core.objectives.core import Activations, Objective, wrap_objective

__all__ = ["alignment", "channel_interpolate"]


@wrap_objective
def channel_interpolate(layer1: str, unit1: int, layer2: str, unit2: int) -> Objective:
    """A batch that sweeps from one channel to another (Lucid's ``channel_interpolate``).

    Image ``i`` of a batch of ``B`` maximises ``(1 - w) * channel(layer1, unit1) +
    w * channel(layer2, unit2)`` with ``w = i / (B - 1)``: image 0 is all ``unit1``, the last
    image all ``unit2``, and those between mix the two. The value is the sum of the ``B``
    per-image terms (each a mean over positions). Add ``alignment`` to keep neighbouring
    images comparable.

    Args:
        layer1: layer of the first channel (100% at image 0).
        unit1: channel index in ``layer1``.
        layer2: layer of the second channel (100% at the last image).
        unit2: channel index in ``layer2``.

    Raises:
        ValueError: for a batch of fewer than 2 images, or layers with different batch sizes.

    Example:
        >>> acts = {"c": torch.tensor([[4.0, 0.0], [2.0, 2.0], [0.0, 8.0]])}
        >>> channel_interpolate("c", 0, "c", 1)(acts).item()  # 4 + (0.5 * 2 + 0.5 * 2) + 8
        14.0
    """
    (unit1,) = check_arguments(layer1, unit1=unit1)
    (unit2,) = check_arguments(layer2, unit2=unit2)

    def inner(acts: Activations) -> torch.Tensor:
        refuse_tokens(acts, layer1, unit1)
        refuse_tokens(acts, layer2, unit2)
        a, b = acts[layer1], acts[layer2]
        i, j = check_unit(a, layer1, unit1), check_unit(b, layer2, unit2)
        batch = a.shape[0]
        if b.shape[0] != batch:
            raise ValueError(f"layers {layer1!r}, {layer2!r} have {batch} != {b.shape[0]} images")
        check_several_images(a, "channel_interpolate")
        first = a[:, i].reshape(batch, -1).mean(1)
        second = b[:, j].reshape(batch, -1).mean(1)
        w = torch.arange(batch, device=a.device, dtype=first.dtype) / (batch - 1)
        return ((1 - w) * first + w * second).sum()
    return Objective(inner, sorted({layer1, layer2}))


@wrap_objective
def alignment(layer: str, decay_ratio: float = 2.0, max_distance: int = 4) -> Objective:
    """How *aligned* neighbouring images of the batch are at ``layer`` (Lucid's ``alignment``).

    The value is ``-sum over d = 1..max_distance, i of mean((act[i] - act[i + d]) ** 2) /
    decay_ratio ** d``: minus the mean squared activation difference between images ``d``
    apart, weighted less the farther apart they are. It is at most 0, and 0 when all images
    agree. As in Lucid it is already negated, so **add** it to reward alignment::

        objective = channel_interpolate("mixed4a", 476, "mixed4a", 460) \
            + 1e-2 * alignment("mixed3b")

    Typical use: an interpolation (:func:`channel_interpolate`) where analogous objects should be
    drawn in the same place in every image, so that the images can be compared.

    Args:
        layer: the layer at which neighbours are compared.
        decay_ratio: how much less each further distance counts (weight ``1 / decay_ratio**d``).
        max_distance: compare images up to this far apart (Lucid: 4).

    Example:
        >>> acts = {"c": torch.tensor([[0.0, 0.0], [2.0, 2.0], [2.0, 2.0]])}
        >>> alignment("c")(acts).item()  # -(4/2 + 0/2 + 4/4)
        -3.0
    """
    check_arguments(layer)
    decay_ratio = real("decay_ratio", decay_ratio, positive=True)
    max_distance = integer("max_distance", max_distance, minimum=1)

    def inner(acts: Activations) -> torch.Tensor:
        t = acts[layer]
        check_several_images(t, "alignment")
        flat = t.reshape(t.shape[0], -1)
        total = flat.sum() * 0.0
        for d in range(1, min(max_distance, t.shape[0] - 1) + 1):
            distance = (flat[:-d] - flat[d:]).pow(2).mean(1).sum()
            total = total + distance / float(decay_ratio) ** d
        return -total
    return Objective(inner, [layer])
