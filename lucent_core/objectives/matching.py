"""Objectives that match a target activation: caricatures and feature inversion.

A *target* is a fixed activation at one layer (usually a photo's, from
:func:`lucent_core.activations.image_activations`); the objectives compare a rendered image's
activation at that layer with it:

* :func:`activation_distance`: minus the relative L2 distance (Mahendran & Vedaldi, 2015),
  for feature inversion.
* :func:`activation_match`: the dot product with the target (Lucid's ``dot_compare`` with a
  cosine-similarity power), for caricatures.

The recipes :func:`lucent_core.recipes.inversion.feature_inversion` and
:func:`~lucent_core.recipes.inversion.caricature` build them from a photo.

Example:
    >>> import torch
    >>> target = torch.ones(1, 4, 6, 6)
    >>> objective = activation_distance("conv", target)
    >>> objective({"conv": target}).item(), objective({"conv": 2 * target}).item()
    (0.0, 1.0)
"""

from __future__ import annotations

import numpy as np
import torch

from lucent_core._device import DeviceCopies
from lucent_core.validate import real
from lucent_core.objectives.core import Activations, Objective, layer_output, wrap_objective

__all__ = ["activation_distance", "activation_match"]


# --- the objective -----------------------------------------------------------------------

def _as_target(target: torch.Tensor | np.ndarray) -> torch.Tensor:
    goal = torch.as_tensor(np.asarray(target) if isinstance(target, np.ndarray) else target)
    goal = goal.detach().float()
    if goal.numel() == 0 or not torch.isfinite(goal).all():
        raise ValueError("target must be a non-empty tensor of finite values (no NaN or inf)")
    if goal.pow(2).sum() == 0:
        raise ValueError("target is all zeros: there is nothing to match (try another layer)")
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
    t = layer_output(acts, layer, batch)
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
            raise ValueError(f"target of image(s) {zero} is all zeros: nothing to match there")
        goal.rows_checked = True
    if t.dim() > 2 and g.dim() == t.dim() and g.shape[1] == t.shape[1] and \
            all(have >= want for have, want in zip(t.shape[2:], g.shape[2:])):
        t = _centre_crop(t, tuple(g.shape[2:]))
    if g.dim() != t.dim() or g.shape[1:] != t.shape[1:] or g.shape[0] not in (1, t.shape[0]):
        raise ValueError(f"target {tuple(g.shape)} must fit layer {shape}: use param.image(w, h)")
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
    cossim_pow = real("cossim_pow", cossim_pow, minimum=0)

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
