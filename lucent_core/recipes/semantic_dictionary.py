"""Semantic dictionaries: which features a layer sees at each position of a photo (Olah et al.,
"The Building Blocks of Interpretability", Distill 2018).

A convolutional layer's activation on one photo, ``(C, H, W)``, gives every position a vector
of ``C`` channel values: hard to read as numbers. A semantic dictionary turns each vector into
pictures: at every position it keeps the ``k`` channels that fire most (or that score most by
another measure, such as an attribution) and shows each one by its feature visualisation, so
a position reads as "floppy ear, fur, eye". Each channel is visualised once, however many
positions it appears at: taken from a unit atlas when one has it, else rendered, all the
missing channels in one batched render.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.ReLU())
    >>> found = semantic_dictionary(net, torch.rand(3, 17, 17), "1", k=2, steps=2, size=16)
    >>> tuple(found.channels.shape), set(found.pictures) == set(found.channels.unique().tolist())
    ((8, 8, 2), True)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from lucent_core.activations import ImageSource, image_activations, load_image
from lucent_core.io import to_pil
from lucent_core.models.weights import state_dict_sha256
from lucent_core.objectives import batch_channels
from lucent_core.param import DEFAULT_PARAM, make_param
from lucent_core.preprocessing import Preprocessing
from lucent_core.render import render_vis
from lucent_core.results import finished_picture
from lucent_core.units import Series
from lucent_core.validate import flag, instance, integer, integers, shape
from lucent_core.validate import seed as validate_seed

__all__ = ["SemanticDictionary", "semantic_dictionary"]

PathLike = Union[str, "os.PathLike[str]"]
WHITE, LINE = (255, 255, 255), (225, 225, 225)
GAP = 8  # pixels between the photo and the dictionary in a figure


@dataclass
class SemanticDictionary:
    """What :func:`semantic_dictionary` returns: the top channels of one layer at every
    position of one photo, and a picture of each.

    Every position keeps ``k`` entries, also where fewer than ``k`` channels score above zero
    (an all-zero position of a post-ReLU layer keeps channels ``0 .. k-1``, ties going to the
    lower channel, with score 0); :meth:`figure` leaves entries whose score is not above zero
    blank. Every channel in ``channels`` has a picture.

    Attributes:
        layer: the layer's name, as given.
        channels: ``(H, W, k)`` int64, the top ``k`` channels at each position, best first
            (row 0 is the top of the photo).
        scores: ``(H, W, k)`` float32, their scores: the activations, or the scores given.
        activations: ``(C, H, W)`` float32, the layer's activations on the photo.
        pictures: ``{channel: RGB picture}``, the feature visualisation of every channel that
            appears in ``channels``.
        source: ``{channel: where its picture came from}``: ``"atlas:<path of the PNG>"`` or
            ``"rendered"``.
    """

    layer: str
    channels: torch.Tensor
    scores: torch.Tensor
    activations: torch.Tensor
    pictures: dict[int, Image.Image]
    source: dict[int, str]

    def figure(self, image: ImageSource | None = None, cell: int = 48) -> Image.Image:
        """The dictionary drawn as a grid of ``H x W`` blocks of ``cell`` px, one per position,
        with the photo (resized to the grid) on its left when ``image`` is given.

        A block holds its position's ``k`` pictures in reading order, best first, in a
        square sub-grid (``ceil(sqrt(k))`` columns); each picture's area is proportional to its
        score, the best score of the whole dictionary filling its slot. Entries scoring zero
        or less are left blank. Pass the photo as the dictionary saw it (same crop), so that
        each block lies beside the part of the photo it describes.

        Example:
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU())
            >>> found = semantic_dictionary(net, torch.rand(3, 9, 13), "1", k=1, steps=2, size=8)
            >>> found.figure(cell=10).size, found.figure(torch.rand(3, 9, 13), cell=10).size
            ((60, 40), (128, 40))
        """
        cell = integer("cell", cell, minimum=1)
        height, width, k = self.channels.shape
        columns = math.ceil(math.sqrt(k))
        slot = max(1, cell // columns)
        offset = (cell - columns * slot) // 2, (cell - math.ceil(k / columns) * slot) // 2
        grid = Image.new("RGB", (width * cell, height * cell), WHITE)
        draw = ImageDraw.Draw(grid)
        for y in range(1, height):
            draw.line([(0, y * cell), (width * cell, y * cell)], fill=LINE)
        for x in range(1, width):
            draw.line([(x * cell, 0), (x * cell, height * cell)], fill=LINE)
        best = float(self.scores.max())
        resized: dict[tuple[int, int], Image.Image] = {}
        for (y, x, i), score in np.ndenumerate(self.scores.numpy()):
            side = int(slot * math.sqrt(score / best)) if score > 0 else 0
            if side < 1:
                continue
            channel = int(self.channels[y, x, i])
            if (channel, side) not in resized:
                resized[channel, side] = self.pictures[channel].resize((side, side),
                                                                       Image.BILINEAR)
            row, column = divmod(i, columns)
            grid.paste(resized[channel, side],
                       (x * cell + offset[0] + column * slot + (slot - side) // 2,
                        y * cell + offset[1] + row * slot + (slot - side) // 2))
        if image is None:
            return grid
        photo = to_pil(load_image(image)[0]).resize(grid.size, Image.BILINEAR)
        both = Image.new("RGB", (2 * grid.width + GAP, grid.height), WHITE)
        both.paste(photo, (0, 0))
        both.paste(grid, (grid.width + GAP, 0))
        return both


def _from_atlas(folder: Path, layer: str, channels: Sequence[int], weights_sha256: str
                ) -> dict[int, tuple[Image.Image, str]]:
    """``{channel: (picture, source)}`` for the channels the atlas has a finished picture of
    (a record, and the PNG whose SHA256 the record holds)."""
    found = {}
    for channel in channels:
        record_path = folder / Series(layer).dir / "units" / f"{channel:05d}.json"
        picture = finished_picture(record_path, weights_sha256)
        if picture is not None:
            found[channel] = (picture[0], f"atlas:{record_path.with_suffix('.png')}")
    return found


def _rendered(model: nn.Module, layer: str, channels: list[int], steps: int, size: int,
              seed: int, progress: bool, preprocess: Preprocessing | None
              ) -> dict[int, tuple[Image.Image, str]]:
    """``{channel: (picture, "rendered")}``: all of ``channels`` in one batched render."""
    result = render_vis(model, batch_channels(layer, channels),
                        param_f=lambda: make_param(DEFAULT_PARAM, size, batch=len(channels)),
                        thresholds=(steps,), seed=seed, progress=progress, preprocess=preprocess)
    if result.interrupted:
        raise KeyboardInterrupt
    return {c: (to_pil(result.image[i]).convert("RGB"), "rendered")
            for i, c in enumerate(channels)}


def semantic_dictionary(model: nn.Module, image: ImageSource, layer: str, k: int = 4, *,
                        scores: "torch.Tensor | np.ndarray | None" = None,
                        atlas: PathLike | None = None, steps: int = 256, size: int = 96,
                        seed: int = 0, image_size: "int | Sequence[int] | None" = None,
                        preprocess: Preprocessing | None = None, progress: bool = False
                        ) -> SemanticDictionary:
    """The top ``k`` channels of ``layer`` at every position of ``image``, each with its
    feature visualisation.

    The photo runs once through the model (with ``preprocess``, default the model's own) up to
    ``layer``; at each position the channels are ranked by activation, or by ``scores`` when
    given, highest first (ties: the lower channel first). A channel's picture comes from the
    unit atlas ``atlas`` when it holds a finished picture of that channel of ``layer`` (a
    ``lucent-core atlas`` directory of the same model and weights), else it is rendered: all
    the missing channels in one seeded batched render (``batch_channels``, ``size`` px images
    of the default parameterisation, as in an atlas, ``steps`` steps).

    Args:
        model: the network.
        image: the photo: anything :func:`~lucent_core.activations.load_image` reads.
        layer: a spatial layer (output ``(1, C, H, W)``), e.g. ``"block4_conv3"``.
        k: channels kept per position, from 1 to ``C``.
        scores: ``(C, H, W)`` (or ``(1, C, H, W)``) scores to rank the channels by instead of
            the activations, e.g. an attribution of the layer; the shape of the activations.
        atlas: a unit atlas directory to take pictures from.
        steps, size, seed: the render of the channels the atlas does not have.
        image_size: resize the photo first (see :func:`~lucent_core.activations.load_image`).
        preprocess: how images become model input (default: the model's own).
        progress: show the render's progress bar.

    Returns:
        A :class:`SemanticDictionary`; draw it with :meth:`SemanticDictionary.figure`.

    Raises:
        UnknownLayerError: a layer the model does not have.
        ValueError: a layer that is not spatial; ``k`` out of range; ``scores`` of another
            shape than the activations or not finite; an ``atlas`` that is not an atlas
            directory, or whose pictures were rendered with other weights.
        TypeError: ``k`` not an integer, ``scores`` not a tensor or array.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU())
        >>> found = semantic_dictionary(net, torch.rand(3, 4, 6), "1", k=3, steps=2, size=16)
        >>> tuple(found.scores.shape), bool((found.scores[..., :-1] >= found.scores[..., 1:]).all())
        ((4, 6, 3), True)
    """
    k, steps, size = integers(1, k=k, steps=steps, size=size)
    seed, progress = validate_seed("seed", seed), flag("progress", progress)
    if atlas is not None:
        instance("atlas", atlas, (str, os.PathLike), "a path to a unit atlas directory")
        if not (Path(atlas) / "atlas.json").is_file():
            raise ValueError(f"atlas {os.fspath(atlas)!r} is not a unit atlas directory (it has "
                             "no atlas.json); give a folder that `lucent-core atlas` wrote")
    activations = image_activations(model, layer, image, image_size, preprocess)
    shape(f"the output of layer {layer!r}", activations, (1, "C", "H", "W"))  # spatial
    activations = activations[0].float().cpu()
    if k > activations.shape[0]:
        raise ValueError(f"k must be from 1 to the layer's {activations.shape[0]} channels, "
                         f"got {k}")
    ranking = activations
    if scores is not None:
        instance("scores", scores, (torch.Tensor, np.ndarray), "a (C, H, W) tensor or array")
        ranking = torch.as_tensor(scores).detach().float().cpu()
        ranking = ranking[0] if ranking.dim() == 4 and len(ranking) == 1 else ranking
        if ranking.shape != activations.shape or not torch.isfinite(ranking).all():
            raise ValueError(f"scores must be finite, of the activations' shape "
                             f"{tuple(activations.shape)}, got {tuple(np.shape(scores))}")
    order = torch.sort(ranking.permute(1, 2, 0), dim=-1, descending=True, stable=True)
    channels, top = order.indices[..., :k].contiguous(), order.values[..., :k].contiguous()

    wanted = channels.unique().tolist()  # sorted
    found = {} if atlas is None else \
        _from_atlas(Path(atlas), layer, wanted, state_dict_sha256(model))
    missing = [c for c in wanted if c not in found]
    if missing:
        found.update(_rendered(model, layer, missing, steps, size, seed, progress, preprocess))
    return SemanticDictionary(layer=layer, channels=channels, scores=top,
                              activations=activations,
                              pictures={c: found[c][0] for c in wanted},
                              source={c: found[c][1] for c in wanted})
