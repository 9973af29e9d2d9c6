"""Activation atlases: the whole space of a layer across a dataset (Carter, Armstrong, Schubert,
Johnson & Olah, "Exploring Neural Networks with Activation Atlases", Distill 2019).

A unit atlas shows each neuron; an activation atlas shows what a layer represents over many
images, directions no single neuron carries included. Five steps, each resumable and each its
own module, all under one directory:

1. :mod:`.collect`: stream a folder of images through the model and keep the layer's activation
   vectors at a few random positions of each (float16, memory-mapped), with, for classifiers,
   the classes each vector supports.
2. :mod:`.layout`: a 2-D layout of the vectors (UMAP, t-SNE or PCA) in the unit square.
3. :mod:`.cells`: an ``N x N`` grid over the layout; each cell with enough vectors is their
   average (optionally only the vectors that support one class: a class atlas).
4. :mod:`.render`: each cell's average rendered as a direction (``cossim_pow``), many cells per
   batch, each from its own seed, sharded over processes or ``torchrun`` ranks.
5. :mod:`.page`: ``activation_atlas.png`` and a zoomable static ``index.html`` (click a cell:
   its rendering, count, classes and the dataset patches nearest to it).

:func:`activation_atlas` runs them in order (what ``lucent-core activation-atlas`` calls); a
step whose result is on disk with the same settings is not done again.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from torch import nn
    >>> folder = Path(tempfile.mkdtemp())
    >>> for i in range(4):
    ...     Image.effect_noise((32, 32), 40 + 20 * i).convert("RGB").save(folder / f"{i}.png")
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> page = activation_atlas(net, folder, folder / "atlas", "1", grid=2, min_count=1,
    ...                         per_image=4, image_size=16, layout="pca", steps=2, size=16,
    ...                         progress=False, workers=0, say=lambda line: None)
    >>> page.name
    'index.html'
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from torch import nn

from lucent_core._device import distributed_rank, parse_shard
from lucent_core.recipes.activation_atlas.cells import (Cells, bin_cells, class_filter,
                                                        plan_cells, read_cells, whitening)
from lucent_core.recipes.activation_atlas.collect import (CollectSummary, Collected,
                                                          collect_activations, load_vectors)
from lucent_core.recipes.activation_atlas.layout import LAYOUTS, layout_atlas
from lucent_core.recipes.activation_atlas.page import assemble
from lucent_core.recipes.activation_atlas.render import RenderSummary, render_cells

__all__ = ["Cells", "CollectSummary", "Collected", "LAYOUTS", "RenderSummary",
           "activation_atlas", "assemble", "bin_cells", "class_filter", "collect_activations",
           "layout_atlas", "load_vectors", "plan_cells", "read_cells", "render_cells",
           "whitening"]

WAIT_SECONDS = 10  # how often a later shard looks for the plan the first one writes


def _wait_for_plan(out: Path, subdir: str | None, say: Callable[[str], None]) -> None:
    """Later shards and ranks render only: wait until the first has written the plan."""
    plan = (out / subdir if subdir else out) / "cells.json"
    if not plan.is_file():
        say(f"waiting for the first shard to collect, lay out and plan ({plan})")
    while not plan.is_file():
        time.sleep(WAIT_SECONDS)


def activation_atlas(model: nn.Module, images: str | os.PathLike, out: str | os.PathLike,
                     layer: str, *, grid: int = 20, min_count: int = 3,
                     samples: int = 100_000, per_image: int = 8, image_size: int = 224,
                     layout: str = "umap", steps: int = 512, size: int = 80, batch: int = 16,
                     cossim_pow: float = 1.0, whiten: bool = False,
                     class_index: int | None = None, seed: int = 0,
                     shard: "tuple[int, int] | str" = (0, 1), workers: int = 2,
                     progress: bool = True, model_name: str | None = None,
                     say: Callable[[str], None] = print) -> Path | None:
    """Make an activation atlas of ``layer`` over the images under ``images``, in ``out``.

    Collects, lays out, plans, renders and assembles (see the module docstring); each step
    resumes from what is on disk and refuses settings that differ from those on disk. With
    several shards (or ``torchrun`` ranks) the first collects, lays out and plans while the
    others wait for the plan; all render their share, and whoever finds every cell rendered
    assembles the page.

    Args:
        model: the network (on the device to use).
        images: a folder of images (searched recursively).
        out: the atlas directory.
        layer: a layer with spatial positions, e.g. ``"mixed4c"`` or ``"block4_conv3"``.
        grid: cells per side.
        min_count: vectors a cell needs to be rendered.
        samples, per_image, image_size: the collection (see :func:`collect_activations`).
        layout: ``"umap"``, ``"tsne"`` or ``"pca"``.
        steps, size, batch, cossim_pow, whiten: the renders (see :func:`render_cells`).
        class_index: make the class atlas of this class (under ``out/class_<N>``).
        seed: seeds the positions, the layout and every cell's render.
        shard: ``(i, n)`` or ``"i/n"``: this process's share of the renders.
        workers: image-reading processes of the collection.
        progress: show progress bars.
        model_name: the model's name in the records (default: its registry name).
        say: where progress lines go.

    Returns:
        The page (``index.html``), or None while other shards still have cells to render.
    """
    out = Path(out)
    subdir = None if class_index is None else f"class_{class_index}"
    first = parse_shard(shard)[0] == 0 and distributed_rank()[0] == 0
    if first:
        say(str(collect_activations(model, images, out, layer, samples=samples,
                                    per_image=per_image, image_size=image_size, seed=seed,
                                    workers=workers, progress=progress, model_name=model_name)))
        layout_atlas(out, layout, seed=seed, progress=progress)
        cells = plan_cells(out, grid, min_count, class_index=class_index, seed=seed)
        say(f"{len(cells.counts)} of {grid * grid} cells hold at least {min_count} vectors")
    else:
        _wait_for_plan(out, subdir, say)
    summary = render_cells(model, out, layer, steps=steps, size=size, batch=batch,
                           cossim_pow=cossim_pow, whiten=whiten, shard=shard,
                           progress=progress, subdir=subdir)
    say(str(summary))
    if summary.missing or summary.interrupted:
        return None
    return assemble(out, subdir=subdir)
