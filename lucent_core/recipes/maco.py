"""MACO's render (Fel et al., 2023): a large natural-spectrum image, seen through many random
crops, optimised by its phase alone; the transparency map records where the gradient went.

The parameterisation (:class:`~lucent_core.param.MacoImage`) and its crops
(:func:`~lucent_core.param.maco_transforms`) are in the core; this recipe runs them with the
paper's settings.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from lucent_core.validate import not_both, steps_or_thresholds
from lucent_core.objectives import Objective
from lucent_core.param.maco import (MACO_CROPS, MACO_LR, MACO_NOISE, MACO_SIZE,
                                    MACO_STEPS, MacoImage, maco, maco_transforms)
from lucent_core.preprocessing import Preprocessing, preprocessing_of
from lucent_core.render import RenderResult, render_vis

__all__ = ["render_maco"]


def render_maco(model: nn.Module, objective: "Objective | str", w: int = MACO_SIZE,
                h: int | None = None, batch: int = 1, steps: int | None = None,
                lr: float = MACO_LR, n_crops: int | None = None,
                crop_scale: tuple[float, float] | None = None,
                crop_decay: tuple[float, float] | None = None, noise: float | None = None,
                crop_size: "int | tuple[int, int] | None" = None,
                magnitude: torch.Tensor | None = None, thresholds: Sequence[int] | None = None,
                transforms: "Callable[[torch.Tensor], torch.Tensor] | None" = None,
                seed: int | None = None, progress: bool = True,
                preprocess: "Preprocessing | None" = None, redirected_relu: bool = True
                ) -> "RenderResult":
    """Render with the MACO recipe; the result also holds the transparency map.

    :func:`~lucent_core.render_vis` with a :class:`MacoImage`, NAdam on its phase at
    learning rate ``lr``, and :func:`maco_transforms`. The cost is ``n_crops`` forward
    passes per step: the paper's defaults (512 px, 32 crops of the model's input size,
    256 steps) are meant for a GPU; on a CPU try fewer, smaller crops.

    Args:
        model: any ``nn.Module``.
        objective: what to maximise (see :func:`~lucent_core.render_vis`); with ``batch > 1``,
            crops of image ``b`` are at batch indices ``b * n_crops ..`` (see
            :class:`RandomCrops`).
        w, h: image size (default 512 x 512, the paper's).
        batch: number of images.
        steps: optimisation steps (default ``MACO_STEPS``); or give ``thresholds``.
        lr: NAdam learning rate on the phase.
        n_crops, crop_scale, noise: see :func:`maco_transforms` (defaults
            ``MACO_CROPS``, ``MACO_CROP_SCALE``, ``MACO_NOISE``).
        crop_decay: ``(start, end)``: crops that shrink over the render instead of
            ``crop_scale`` (``PAPER_CROP_DECAY``, the paper's, is ``(0.5, 0.05)``; see
            :class:`~lucent_core.param.maco.ShrinkingCrops`).
        crop_size: size the crops are resized to; default the model's input size
            (``preprocess.input_size``) if it has one, else the image size.
        magnitude: the amplitude spectrum (default :func:`natural_magnitude`).
        thresholds: steps at which to take images (instead of ``steps``).
        transforms: replace :func:`maco_transforms` by these (then ``n_crops``,
            ``crop_scale``, ``crop_decay``, ``noise`` and ``crop_size``, which only shape
            those, are errors).
        seed, progress, preprocess, redirected_relu: as in :func:`~lucent_core.render_vis`.

    Returns:
        The :class:`~lucent_core.render.RenderResult`, with ``extra["importance"]``: the
        accumulated ``|d objective / d image|``, ``(B, H, W)`` float32, and
        ``extra["transparency"]``: the same divided by each image's maximum, in [0, 1].

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> result = render_maco(net, "0:1", w=32, steps=4, n_crops=2, crop_scale=(0.5, 1.0),
        ...                      progress=False, seed=0)
        >>> result.image.shape, result.extra["transparency"].shape
        ((1, 32, 32, 3), (1, 32, 32))
    """

    h = w if h is None else h
    thresholds = steps_or_thresholds(steps, thresholds, MACO_STEPS)
    crop_options = {"n_crops": n_crops, "crop_scale": crop_scale, "crop_decay": crop_decay,
                    "noise": noise, "crop_size": crop_size}
    not_both("crop_scale", crop_scale, "crop_decay", crop_decay)
    if transforms is not None:
        given = [name for name, value in crop_options.items() if value is not None]
        if given:
            raise ValueError(f"transforms= replaces {given}; pass them to maco_transforms")
    else:
        n_crops = MACO_CROPS if n_crops is None else n_crops
        noise = MACO_NOISE if noise is None else noise
        if crop_size is None:
            own = preprocessing_of(model, preprocess)
            crop_size = getattr(own, "input_size", None) or (h, w)
        transforms = maco_transforms(n_crops, scale=crop_scale, noise=noise, size=crop_size,
                                     decay=crop_decay, steps=max(thresholds))

    def make_param() -> MacoImage:
        return maco(w, h, batch=batch, magnitude=magnitude)

    result = render_vis(model, objective, param_f=make_param,
                        optimizer=lambda params: torch.optim.NAdam(params, lr=lr),
                        transforms=transforms,
                        thresholds=thresholds, seed=seed,
                        progress=progress, preprocess=preprocess,
                        redirected_relu=redirected_relu)
    image: MacoImage = result.param  # type: ignore[assignment]
    result.extra["importance"] = image.importance_map().float().cpu().numpy()
    result.extra["transparency"] = image.importance_map(normalize=True).float().cpu().numpy()
    return result
