"""CLIP as a target: text-defined objectives, directions and prompt renders.

The CLIP towers themselves are in the zoo (:mod:`lucent_core.models.clip`); this recipe makes
objectives from prompts (:func:`clip_text`), photos (:func:`clip_image`) and ViT tokens
(:func:`vit_channel`), text directions in a block's activations (:func:`text_direction`), and
renders one image per prompt (:func:`render_prompts`).

Example:
    >>> from lucent_core.models import create_model
    >>> model = create_model("clip_vit_b32", pretrained=False)  # doctest: +SKIP
    >>> obj = clip_text(model, "a photo of a dog", negative="a photo of a cat")  # doctest: +SKIP
"""

from __future__ import annotations

import operator
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lucent_core._device import DeviceCopies
from lucent_core.validate import instance, is_index, not_both, reals, shape, steps_or_thresholds
from lucent_core.activations import image_activations
from lucent_core.hooks import INPUT_LAYER, capture, frozen, model_device, run_to_layers
from lucent_core.io import image_grid
from lucent_core.models.clip import EMBEDDING_LAYER, VIT_BLOCKS, CLIPVisual
from lucent_core.objectives.catalogue import check_arguments, direction, dot_cossim
from lucent_core.objectives.core import Activations, Objective, wrap_objective
from lucent_core.param import image as image_param
from lucent_core.render import RenderResult, render_vis

__all__ = ["clip_image", "clip_text", "render_prompts", "text_direction", "text_direction_vector",
           "vit_channel"]

PROMPT_RENDER_SIZE, PROMPT_RENDER_STEPS = 128, 256  # render_prompts' defaults


def _as_prompts(prompts: str | Sequence[str] | None, what: str, required: bool = True
                ) -> list[str]:
    """The prompts as a list; None is no prompts, an error where some are ``required``."""
    found = [] if prompts is None else [prompts] if isinstance(prompts, str) else \
        list(prompts) if hasattr(prompts, "__iter__") else [prompts]
    if not all(isinstance(p, str) and p for p in found):
        raise TypeError(f"{what} must be a non-empty string or a list of them; got {prompts!r}")
    if required and not found:
        raise ValueError(f"{what} is empty; give at least one prompt")
    return found


def _check_clip(model: nn.Module) -> None:
    instance("model", model, CLIPVisual, "a CLIP model, e.g. create_model('clip_rn50')")


def _cosine(embedding: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` cosine similarities of image embeddings with unit target embeddings."""
    image = F.normalize(embedding.flatten(1), dim=1)
    return image @ targets.to(device=image.device, dtype=image.dtype).T


@torch.no_grad()
def _text_targets(model: CLIPVisual, prompts: list[str]) -> torch.Tensor:
    return F.normalize(model.encode_text(prompts).float(), dim=1).detach()


@wrap_objective
def clip_text(model: nn.Module, prompts: str | Sequence[str],
              weights: Sequence[float] | None = None,
              negative: str | Sequence[str] | None = None) -> Objective:
    """Cosine similarity of the image embedding with text prompts' embeddings.

    The prompts are tokenised with the model's own open_clip tokenizer and embedded once, here,
    without gradient; the render then only runs the image tower. The value is, averaged over
    the images of the batch, ``sum_i weights[i] * cos(image, prompt_i)`` minus the mean cosine
    similarity with the ``negative`` prompts.

    Args:
        model: a CLIP model (:class:`CLIPVisual`).
        prompts: one prompt or a list of them.
        weights: one weight per prompt (default: 1 each).
        negative: prompt(s) to move away from.

    Example:
        >>> model = clip_model("clip_vit_b32", pretrained=False)  # doctest: +SKIP
        >>> obj = clip_text(model, ["a red apple"], negative="a green apple")  # doctest: +SKIP
    """
    _check_clip(model)
    positive = _as_prompts(prompts, "prompts")
    negatives = _as_prompts(negative, "negative", required=False)
    w = [1.0] * len(positive) if weights is None else reals("weights", weights)
    shape("weights", w, (len(positive),))  # one per prompt
    w_copies = DeviceCopies(torch.tensor(w))
    targets = _text_targets(model, positive)
    away = _text_targets(model, negatives) if negatives else None

    def inner(acts: Activations) -> torch.Tensor:
        embedding = acts[EMBEDDING_LAYER]
        value = (_cosine(embedding, targets) * w_copies.like(embedding)).sum(1)
        if away is not None:
            value = value - _cosine(embedding, away).mean(1)
        return value.mean()
    return Objective(inner, [EMBEDDING_LAYER])


@wrap_objective
def clip_image(model: nn.Module, image) -> Objective:
    """Cosine similarity of the image embedding with a reference image's embedding.

    Args:
        model: a CLIP model (:class:`CLIPVisual`).
        image: anything :func:`~lucent_core.objectives.load_image` accepts; it is preprocessed
            with the model's own preprocessing (resized to its fixed input size).

    Example:
        >>> model = clip_model("clip_rn50", pretrained=False)  # doctest: +SKIP
        >>> obj = clip_image(model, torch.rand(3, 64, 64))  # doctest: +SKIP
    """
    _check_clip(model)
    reference = F.normalize(image_activations(model, EMBEDDING_LAYER, image).flatten(1).float(),
                            dim=1)

    def inner(acts: Activations) -> torch.Tensor:
        return _cosine(acts[EMBEDDING_LAYER], reference).mean()
    return Objective(inner, [EMBEDDING_LAYER])


def _layer_name(layer: str | int) -> str:
    """A layer name, or a ViT block number turned into its name."""
    return f"{VIT_BLOCKS}.{layer}" if isinstance(layer, int) else layer


def _tokens_last(t: torch.Tensor, layer: str, batch_first: bool | None,
                 acts: Activations) -> torch.Tensor:
    """The residual stream as ``(B, N, C)`` whatever its layout."""
    shape(f"layer {layer!r}", t, ("B", "N", "C"), ("N", "B", "C"))  # a ViT block's
    if batch_first is None:
        if INPUT_LAYER not in acts:
            raise ValueError("cannot tell the ViT's layout: pass batch_first=model.batch_first")
        batch = acts[INPUT_LAYER].shape[0]
        if t.shape[0] == batch and t.shape[1] != batch:
            batch_first = True
        elif t.shape[1] == batch and t.shape[0] != batch:
            batch_first = False
        else:
            raise ValueError(f"cannot tell the layout of {layer!r}, shape {tuple(t.shape)}: "
                             "pass batch_first=model.batch_first")
    return t if batch_first else t.transpose(0, 1)


@wrap_objective
def vit_channel(layer: str | int, unit: int, token: str | int = "mean",
                batch_first: bool | None = None) -> Objective:
    """One channel of a ViT block's residual stream, at the class token or over the patches.

    open_clip's ViT blocks output ``(B, N, C)`` (batch-first, open_clip >= 2.2x) or
    ``(N, B, C)`` (sequence-first, older versions), with the class token at index 0. Give
    ``batch_first`` (``model.batch_first`` of a :class:`CLIPVisual`), or leave it None: the
    objective then also reads the rendered image (pseudo-layer ``"input"``) and picks the axis
    whose length is the batch size (it refuses to guess when both axes have that length).

    Args:
        layer: ``"visual.transformer.resblocks.N"`` or just the block number ``N``.
        unit: channel of the residual stream.
        token: ``"mean"`` (mean over the patch tokens, the class token excluded), ``"cls"``
            (the class token) or a token index.
        batch_first: the layout, or None to detect it.

    Example:
        >>> acts = {"blk": torch.zeros(2, 5, 4)}  # (B, N, C)
        >>> acts["blk"][:, 0, 3] = 7.0            # class token, channel 3
        >>> vit_channel("blk", 3, token="cls", batch_first=True)(acts).item()
        7.0
    """
    name = _layer_name(layer)
    tokens = ("mean", "cls")
    if is_index(token):
        token = operator.index(token)
    elif not (isinstance(token, str) and token in tokens):
        raise ValueError(f"unknown token {token!r}; choose one of {tokens} or a token index")
    (unit,) = check_arguments(_layer_name(layer), unit=unit)

    def inner(acts: Activations) -> torch.Tensor:
        t = _tokens_last(acts[name], name, batch_first, acts)
        if not 0 <= unit < t.shape[2]:
            raise IndexError(f"channel {unit} of {name!r} is out of range: 0..{t.shape[2] - 1}")
        if token == "cls":
            return t[:, 0, unit].mean()
        if token == "mean":
            return t[:, 1:, unit].mean()
        if not -t.shape[1] <= token < t.shape[1]:
            raise IndexError(f"token {token} of {name!r} is out of range: {t.shape[1]} tokens")
        return t[:, token, unit].mean()
    return Objective(inner, [name] if batch_first is not None else [name, INPUT_LAYER])


def text_direction_vector(model: nn.Module, layer: str | int, prompt: str,
                          reference: torch.Tensor | None = None) -> torch.Tensor:
    """The channel direction at ``layer`` that moves the image towards ``prompt``'s embedding.

    How it is defined: the image tower is not linear, so a text embedding has no exact
    counterpart inside it. This takes the linear approximation around a reference image
    (mid-grey by default): the gradient of ``cos(image embedding, text embedding)`` with
    respect to the layer's activations, averaged over spatial positions (ResNet stages) or
    over the patch tokens (ViT blocks), normalised to unit length. It is defined for every
    layer whose activations are ``(B, C, H, W)`` or a ViT residual stream.

    Args:
        model: a CLIP model from the registry.
        layer: a layer name, or a ViT block number.
        prompt: the text.
        reference: ``(1, 3, H, W)`` image in [0, 1] to linearise around (default: grey).

    Returns:
        A ``(C,)`` unit vector (on the CPU).
    """
    _check_clip(model)
    name = _layer_name(layer)
    device, _ = model_device(model)
    size = model.preprocessing.input_size
    image = torch.full((1, 3, *size), 0.5) if reference is None else reference
    image = image.to(device).requires_grad_(True)
    target = _text_targets(model, [prompt])
    with frozen(model), capture(model, [name, EMBEDDING_LAYER]) as acts:
        run_to_layers(model, model.preprocessing(image), acts)
        similarity = _cosine(acts[EMBEDDING_LAYER], target).sum()
        (grad,) = torch.autograd.grad(similarity, acts[name])
    if grad.dim() == 4:
        vector = grad.mean((0, 2, 3))
    elif grad.dim() == 3:
        vector = _tokens_last(grad, name, model.batch_first, {})[:, 1:].mean((0, 1))
    else:
        raise ValueError(f"layer {name!r} gives shape {tuple(grad.shape)}; a text direction "
                         "needs a (B, C, H, W) layer or a ViT block")
    return F.normalize(vector.float(), dim=0).cpu()


@wrap_objective
def text_direction(model: nn.Module, layer: str | int, prompt: str,
                   cossim_pow: float = 0.0) -> Objective:
    """Maximise, at an intermediate layer, the direction that ``prompt`` defines there.

    The direction is :func:`text_direction_vector` (computed once, here). For a ResNet stage
    this is :func:`~lucent_core.objectives.direction`; for a ViT block, the same over the
    patch tokens (each token's dot product with the direction, times its cosine similarity to
    the power ``cossim_pow``, averaged).

    Example:
        >>> model = create_model("clip_rn50", pretrained=False)  # doctest: +SKIP
        >>> obj = text_direction(model, "visual.layer3", "a photo of a spider")  # doctest: +SKIP
    """
    name = _layer_name(layer)
    vector = text_direction_vector(model, name, prompt)
    if not name.startswith(VIT_BLOCKS):
        return direction(name, vector, cossim_pow=cossim_pow)
    batch_first = model.batch_first
    copies = DeviceCopies(vector)

    def inner(acts: Activations) -> torch.Tensor:
        tokens = _tokens_last(acts[name], name, batch_first, acts)[:, 1:]
        # (B, C, tokens): each patch token as a position, as direction() treats a map
        return dot_cossim(tokens.transpose(1, 2), copies, name, cossim_pow).mean()
    return Objective(inner, [name])


def render_prompts(model: nn.Module, prompts: Sequence[str], size: int | None = None,
                   steps: int | None = None, **render_kwargs
                   ) -> "tuple[RenderResult, Image.Image]":
    """Render one image per prompt in one batch and return them with a labelled grid.

    Image ``i`` maximises ``clip_text(model, prompts[i])`` (and only reads its own image).

    Args:
        model: a CLIP model from ``create_model("clip_...")``.
        prompts: one text per image.
        size: image side (default 128); or give ``param_f=`` (with ``batch=len(prompts)``).
        steps: optimisation steps (default 256); or give ``thresholds=``.
        **render_kwargs: passed to :func:`~lucent_core.render_vis`.

    Returns:
        The :class:`~lucent_core.render.RenderResult` and a PIL grid labelled with the prompts,
        ready to display in a notebook.

    Example:
        >>> result, grid = render_prompts(model, ["a spider", "a cat"])  # doctest: +SKIP
    """

    prompts = _as_prompts(prompts, "prompts")
    _check_clip(model)
    targets = _text_targets(model, prompts)

    def per_image(acts: Activations) -> torch.Tensor:
        cosines = _cosine(acts[EMBEDDING_LAYER], targets)  # (B, prompts)
        return cosines.diagonal().sum()
    objective = Objective(per_image, [EMBEDDING_LAYER], f"clip_text per image {prompts}")
    thresholds = steps_or_thresholds(steps, render_kwargs.pop("thresholds", None),
                                     PROMPT_RENDER_STEPS)
    not_both("size", size, "param_f", render_kwargs.get("param_f"))
    side = PROMPT_RENDER_SIZE if size is None else size
    render_kwargs.setdefault("param_f", lambda: image_param(side, batch=len(prompts)))
    result = render_vis(model, objective, thresholds=thresholds, **render_kwargs)
    return result, image_grid(result.image, labels=[p[:24] for p in prompts])
