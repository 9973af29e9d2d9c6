"""Objectives that match a target activation: caricatures, feature inversion and style.

A *target* is a fixed activation at one layer (usually a photo's, from
:func:`lucent_core.activations.image_activations`); the objectives compare a rendered image's
activation at that layer with it:

* :func:`activation_distance`: minus the relative L2 distance (Mahendran & Vedaldi, 2015),
  for feature inversion.
* :func:`activation_match`: the dot product with the target (Lucid's ``dot_compare`` with a
  cosine-similarity power), for caricatures.
* :func:`style`: minus the squared difference of Gram matrices (:func:`gram_matrix`) at
  several layers (Gatys, Ecker & Bethge, 2016), for textures: it compares which channels fire
  *together*, whatever the positions, so it matches a photo's style, not its layout.

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

from typing import Mapping, Sequence

import numpy as np
import torch

from lucent_core._device import DeviceCopies
from lucent_core.validate import instance, real, reals, shape
from lucent_core.objectives.core import Activations, Objective, layer_output, wrap_objective

__all__ = ["activation_distance", "activation_match", "gram_matrix", "style"]


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


# --- style: Gram matrices ----------------------------------------------------------------

def _gram(acts: torch.Tensor, name: str) -> torch.Tensor:
    shape(name, acts, ("B", "C", "H", "W"))
    flat = acts.flatten(2)
    return flat @ flat.transpose(1, 2) / flat.shape[2]


def gram_matrix(acts: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of each image's activation maps, averaged over positions.

    For ``acts`` of shape ``(B, C, H, W)`` and ``F`` its ``(B, C, H * W)`` reshaping,
    ``G[b] = F[b] @ F[b].T / (H * W)``: entry ``(i, j)`` is the mean over positions of
    channel ``i`` times channel ``j``, how strongly the two fire *together*. Positions are
    summed over, so rearranging them leaves ``G`` unchanged; dividing by their number makes
    ``G`` a mean, so maps of any size with the same statistics (a texture, the same map
    tiled) have the same ``G``. Gatys et al. (2016) sum instead, and divide their loss by
    ``4 N^2 M^2`` (channels, positions); only the scale differs.

    Returns:
        ``(B, C, C)``, symmetric.

    Example:
        >>> acts = torch.tensor([[1.0, 2.0], [0.0, 2.0]]).view(1, 2, 1, 2)  # 2 channels, 2 px
        >>> gram_matrix(acts)
        tensor([[[2.5000, 2.0000],
                 [2.0000, 2.0000]]])
    """
    return _gram(acts, "acts")


def _style_target(target: torch.Tensor | np.ndarray, layer: str) -> torch.Tensor:
    """A style target (activations ``(1, C, H, W)`` or a Gram matrix) as a ``(1, C, C)`` Gram
    matrix in float32."""
    name = f"targets[{layer!r}]"
    instance(name, target, (torch.Tensor, np.ndarray), "activations (1, C, H, W) or a Gram "
             "matrix (C, C)")
    goal = torch.as_tensor(target).detach().float()
    found = shape(name, goal, (1, "C", "H", "W"), ("C", "C"), (1, "C", "C"))
    gram = _gram(goal, name) if len(found) == 4 else goal.reshape(1, *found[-2:])
    if gram.shape[1] != gram.shape[2] or not torch.isfinite(gram).all():
        raise ValueError(f"{name} must be finite activations (1, C, H, W) or a square Gram "
                         f"matrix (C, C), got shape {found}")
    return gram


def style(layers: str | Sequence[str], targets: Mapping[str, torch.Tensor | np.ndarray],
          weights: Sequence[float] | None = None) -> Objective:
    """Style (texture) matching: minus the squared difference of Gram matrices, over layers.

    Gatys, Ecker & Bethge's style loss ("Image Style Transfer Using Convolutional Neural
    Networks", CVPR 2016; Lucid's ``optvis/style.py``). For each layer ``l``, with ``G`` the
    :func:`gram_matrix` of the render's activations (one per image) and ``T`` the target's::

        value = -sum_l weights[l] * mean((G_l - T_l) ** 2)

    the mean running over the ``C x C`` entries and the images. It is 0 exactly when every
    render's Gram matrices equal the targets', and negative otherwise, so maximising it
    matches the style. A Gram matrix forgets where things are, and its size does not depend
    on the map's: the render may have another size than the style image, and any rearrangement
    of the style image's positions scores 0 too.

    Args:
        layers: a layer name or a list of them.
        targets: ``{layer: target}`` for every layer: the style image's activations at that
            layer, ``(1, C, H, W)`` (e.g. from :func:`~lucent_core.activations.
            layer_activations`), or their Gram matrix, ``(C, C)`` or ``(1, C, C)``.
        weights: one weight per layer, in the order of ``layers`` (default: all 1). Gram
            entries grow with the square of the activations, so layers with large activations
            weigh more unless weighted down.

    Returns:
        An :class:`~lucent_core.objectives.Objective` named ``style([...])``; the recipe
        :func:`lucent_core.recipes.inversion.style` builds it from a photo.

    Example:
        >>> texture = torch.rand(1, 4, 6, 6)
        >>> objective = style("conv", {"conv": texture})
        >>> shuffled = texture.flatten(2)[..., torch.randperm(36)].view(1, 4, 6, 6)
        >>> objective.name, abs(objective({"conv": shuffled}).item()) < 1e-6
        ("style(['conv'])", True)
        >>> objective({"conv": 2 * texture}).item() < 0
        True
    """
    names = [layers] if isinstance(layers, str) else layers
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"layers must be a layer name or a list of them, got {layers!r}")
    instance("targets", targets, Mapping, "a dict {layer: activations (1, C, H, W)}")
    if not names or any(name not in targets for name in names):
        raise ValueError(f"layers must be 1 or more layers, each in targets ({list(targets)}), "
                         f"got {layers!r}")
    grams = [DeviceCopies(_style_target(targets[name], name)) for name in names]
    factors = [1.0] * len(names) if weights is None else reals("weights", weights)
    if len(factors) != len(names):
        raise ValueError(f"weights must be {len(names)} numbers, one per layer, got {weights!r}")

    def inner(acts: Activations) -> torch.Tensor:
        total = 0.0
        for name, goal, factor in zip(names, grams, factors):
            gram = _gram(acts[name], f"layer {name!r} (for style)")
            target = goal.like(gram)
            if target.shape[-1] != gram.shape[-1]:
                raise ValueError(f"the style target of layer {name!r} has {target.shape[-1]} "
                                 f"channels, the layer {gram.shape[-1]}")
            total = total + factor * (gram - target).pow(2).mean()
        return -total
    shown = "" if weights is None else f", weights={factors}"
    return Objective(inner, names, f"style({list(names)!r}{shown})")
