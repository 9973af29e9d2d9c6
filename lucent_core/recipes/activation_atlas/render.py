"""Rendering an activation atlas: one feature visualisation per cell of the plan.

Step (4) of an activation atlas (Carter et al., Distill 2019): each cell's average activation
vector (:mod:`.cells`) is rendered as a *direction* of the layer: the image maximises the dot
product of the layer's activations with the vector, weighted by their cosine similarity to a
power (``cossim_pow``, as Lucid's atlases do, so that the picture shows what points *along*
the vector rather than whatever activates the layer most). With ``whiten`` the vector is first
multiplied by the whitening matrix of the collected activations (:func:`.cells.whitening`).

Cells are optimised ``batch`` at a time. Each cell's initial image and transform draws come
from its own seed (:attr:`.cells.Cells.seeds`), so a cell's picture does not depend on the
batch or shard it lands in (on the CPU to the pixel). The work can be split: ``shard=(i, n)``
renders cell ``j`` when ``j % n == i``, and under ``torchrun`` (``WORLD_SIZE`` > 1) every rank
takes its share of that. Each finished cell is saved as ``cells/r{row:03d}_c{col:03d}.png``
and then its record ``.json`` (both atomically); a cell is done once its record names its PNG's
SHA256, so Ctrl-C or ``kill -9`` lose at most the batch in flight and the same call resumes.

The first call also measures the layer's receptive field (:mod:`lucent_core.receptive_field`)
at the collection's image size into ``receptive_field.json``, which the page's dataset
patches (:mod:`.page`) crop with.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lucent_core import param as param_lib
from lucent_core._device import distributed_rank, parse_shard
from lucent_core.hooks import model_device, registry_name, resolve_layer
from lucent_core.io import save_png, sha256sum
from lucent_core.models.weights import state_dict_sha256
from lucent_core.objectives import Objective, direction
from lucent_core.param import seeded_batch
from lucent_core.receptive_field import receptive_field
from lucent_core.render import describe_transforms, render_vis
from lucent_core.results import AtlasError, AtlasWriteError, differences, read_json, write_json
from lucent_core.transforms import standard_affine
from lucent_core.validate import flag, instance, integers, real
from lucent_core.version import __version__
from lucent_core.recipes.activation_atlas.cells import (Cells, cell_done, plan_dir, read_cells,
                                                        whitening)

__all__ = ["RenderSummary", "render_cells"]

LR = 0.05
_TRANSFORM_SALT = 0x5EED_A71A  # transform draws use another stream than the initialisation


@dataclass
class RenderSummary:
    """What one :func:`render_cells` call did.

    Attributes:
        out: the plan's directory.
        rendered: cells rendered by this call.
        skipped: cells of this call's share that were already done.
        missing: cells (all shards) still not rendered at the end.
        seconds: wall time of the call.
        interrupted: Ctrl-C stopped it (finished cells are saved).
        worker: this call's share, ``(index, count)``.
    """

    out: Path
    rendered: int
    skipped: int
    missing: int
    seconds: float
    interrupted: bool = False
    worker: tuple[int, int] = (0, 1)

    def __str__(self) -> str:
        share = f"worker {self.worker[0]}/{self.worker[1]}: " if self.worker[1] > 1 else ""
        lines = [f"{share}rendered {self.rendered} cells in {self.seconds:.1f}s, "
                 f"{self.skipped} already done"]
        if self.interrupted:
            lines.append("interrupted: every finished cell is saved; run the same call again "
                         "to resume")
        elif self.missing:
            lines.append(f"{self.missing} cells are not rendered yet (other shards or ranks)")
        else:
            lines.append(f"every cell is rendered: assemble {self.out} into its page")
        return "\n".join(lines)


def _receptive_field(model: nn.Module, layer: str, root: Path, image_size: int) -> None:
    """Measure the layer's receptive field once and keep it for the page's patches."""
    path = root / "receptive_field.json"
    if path.is_file() and read_json(path).get("image_size") == image_size:
        return
    rf = receptive_field(model, layer, image_size)
    write_json(path, {"layer": layer, "image_size": image_size, "map_size": rf.map_size,
                      "stride": rf.stride, "offset": rf.offset, "extent": rf.extent})


class _Renderer:
    """Renders batches of cells and writes their PNGs and records."""

    def __init__(self, model: nn.Module, layer: str, directory: Path, cells: Cells,
                 directions: np.ndarray, settings: dict, transforms: object,
                 worker: tuple[int, int]):
        self.model, self.layer, self.directory, self.cells = model, layer, directory, cells
        self.directions, self.settings, self.worker = directions, settings, worker
        self.transforms = transforms
        self.device = model_device(model)[0]
        self.names, self.seeds = cells.names(), cells.seeds

    def _transforms(self, seeds: Sequence[int]) -> object:
        if self.transforms is not None:
            return self.transforms
        affine = standard_affine()
        generators = [torch.Generator().manual_seed(s ^ _TRANSFORM_SALT) for s in seeds]
        return lambda x: affine(x, generators)

    def _images(self, count: int) -> nn.Module:
        return param_lib.image(self.settings["size"], batch=count)

    def render(self, todo: Sequence[int]) -> bool:
        """Render cells ``todo`` together and save them; False if Ctrl-C interrupted it.

        On the CPU a lone cell is rendered beside a copy of itself (dropped after): oneDNN's
        batch-1 kernels round differently from those of larger batches, and the cell's
        picture must not depend on its batch."""
        count = len(todo)
        cells = list(todo) * 2 if count == 1 and self.device.type == "cpu" else list(todo)
        seeds = [self.seeds[j] for j in cells]
        terms = [direction(self.layer, torch.from_numpy(self.directions[j]), batch=i,
                           cossim_pow=self.settings["cossim_pow"]) for i, j in enumerate(cells)]
        history: list[torch.Tensor] = []

        def total(acts: dict) -> torch.Tensor:
            values = torch.stack([term(acts) for term in terms])
            history.append(values.detach())
            return values.sum()

        started = time.perf_counter()
        result = render_vis(self.model, Objective(total, [self.layer],
                                                  name=f"{count} atlas cells of {self.layer}"),
                            param_f=lambda: seeded_batch(self._images, seeds),
                            optimizer=lambda params: torch.optim.Adam(params, lr=LR),
                            transforms=self._transforms(seeds),
                            thresholds=(self.settings["steps"],), seed=seeds[0],
                            progress=False, channels_last=self.device.type != "cpu")
        if result.interrupted:
            return False
        values = torch.stack(history).float().cpu()
        seconds = round((time.perf_counter() - started) / count, 3)
        finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for i, j in enumerate(cells[:count]):
            self._save(j, result.image[i], {
                "row": int(self.cells.rows[j]), "col": int(self.cells.cols[j]), "index": j,
                "count": int(self.cells.counts[j]), "seed": self.seeds[j],
                "image": f"cells/{self.names[j]}.png", "settings": self.settings,
                "objective_first": float(values[0, i]),
                "objective_last": float(values[-1, i]), "batch": count, "seconds": seconds,
                "device": str(self.device), "worker": f"{self.worker[0]}/{self.worker[1]}",
                "lucent_core_version": __version__, "torch_version": torch.__version__,
                "finished_at": finished})
        return True

    def _save(self, j: int, image: np.ndarray, record: dict) -> None:
        """The cell's PNG, then its record naming the PNG's SHA256 (the cell is then done)."""
        base = self.directory / "cells" / self.names[j]
        try:
            picture = save_png(image, base.with_suffix(".png"))
            digest = sha256sum(picture)
            write_json(base.with_suffix(".json"), {**record, "sha256": digest})
        except OSError as error:
            raise AtlasWriteError(f"could not write cell {self.names[j]} in {self.directory}: "
                                  f"{error}. Every cell finished before it is kept; fix the "
                                  "problem (disk space, permissions) and run the same call "
                                  "again to resume.") from error


def _check_records(directory: Path, names: Sequence[str], settings: dict) -> None:
    """Refuse to mix cells rendered with other settings into one atlas."""
    for name in names:
        path = directory / "cells" / f"{name}.json"
        if path.is_file():
            found = read_json(path).get("settings", {})
            if found != settings:
                lines = "; ".join(differences(found, settings))
                raise AtlasError(f"{path} was rendered with other settings ({lines}): render "
                                 "with those, or into another atlas directory")


def render_cells(model: nn.Module, out: "str | os.PathLike", layer: str, *, steps: int = 512,
                 size: int = 80, batch: int = 16, cossim_pow: float = 1.0,
                 whiten: bool = False, shard: "tuple[int, int] | str" = (0, 1),
                 progress: bool = True,
                 transforms: "Callable | Sequence[Callable] | None" = None,
                 subdir: str | None = None) -> RenderSummary:
    """Render every cell of an atlas's plan that is not rendered yet.

    Image ``i`` of a batch maximises ``direction(layer, vector_i, batch=i,
    cossim_pow=cossim_pow)`` (with ``whiten``, ``vector_i`` is ``W @`` the cell's average,
    ``W`` the :func:`~.cells.whitening` of every collected vector), from a Fourier image
    (``param.image(size)``) seeded by the cell's own seed, under Lucid's standard transforms
    drawn from the cell's own generator; Adam, learning rate 0.05. Cells whose record exists
    and names its PNG's SHA256 are skipped; a cell whose PNG is missing or damaged is rendered
    again. Rendered cells with other settings are refused (an :class:`AtlasError` naming the
    differences). Call :func:`~.page.assemble` once every cell is done.

    Args:
        model: the network the vectors were collected from (same weights).
        out: the atlas directory (collected, laid out and planned with
            :func:`~.cells.plan_cells`).
        layer: the collected layer.
        steps: optimisation steps.
        size: side of each rendering in pixels.
        batch: cells optimised together.
        cossim_pow: the cosine-similarity exponent (0: plain dot product).
        whiten: render whitened directions.
        shard: ``(i, n)`` or ``"i/n"``: render the cells ``j`` with ``j % n == i``.
        progress: show a progress bar over the cells.
        transforms: as :func:`~lucent_core.render_vis` takes them, replacing the standard
            per-cell ones; their draws then come from the batch's RNG (seeded by its first
            cell), so a picture depends on its batch.
        subdir: the plan's folder under ``out`` (a class atlas's ``"class_<N>"``).

    Returns:
        A :class:`RenderSummary` (printable).

    Example:
        >>> render_cells(nn.Conv2d(3, 2, 1), "no-such-atlas", "layer", steps=2)
        Traceback (most recent call last):
        ...
        FileNotFoundError: no collect.json in no-such-atlas: collect activations first
    """
    started = time.perf_counter()
    steps, size, batch = integers(1, steps=steps, size=size, batch=batch)
    cossim_pow = real("cossim_pow", cossim_pow, minimum=0)
    whiten, progress = flag("whiten", whiten), flag("progress", progress)
    instance("model", model, nn.Module, "a torch nn.Module")
    first, shards = parse_shard(shard)
    root, directory = Path(out), plan_dir(out, subdir)
    if not (root / "collect.json").is_file():
        raise FileNotFoundError(f"no collect.json in {root}: collect activations first")
    collected = read_json(root / "collect.json")
    layer = resolve_layer(model, layer)
    if layer != resolve_layer(model, collected["layer"]):
        raise ValueError(f"layer {layer!r} is not the collected layer {collected['layer']!r}")
    weights = state_dict_sha256(model)
    if weights != collected.get("weights_sha256"):
        raise AtlasError(f"{root} was collected with weights {collected.get('weights_sha256')}"
                         f" but this model's are {weights}: use the collection's model")
    cells = read_cells(out, subdir)
    directions = cells.vectors
    if whiten:
        stored = np.load(root / "vectors.npy", mmap_mode="r")
        directions = (torch.from_numpy(directions) @ whitening(
            stored[:int(collected["count"])]).T).numpy()
    settings = {"model": registry_name(model), "weights_sha256": weights,
                "layer": collected["layer"], "steps": steps, "size": size,
                "cossim_pow": cossim_pow, "whiten": whiten, "param": "fourier", "lr": LR,
                "transforms": "standard" if transforms is None else
                describe_transforms(transforms), "plan_seed": cells.seed}
    rank, world = distributed_rank()
    worker = (first * world + rank, shards * world)
    names = cells.names()
    mine = [j for j in range(len(cells)) if j % worker[1] == worker[0]]
    _check_records(directory, [names[j] for j in mine], settings)
    _receptive_field(model, layer, root, int(collected["image_size"]))
    todo = [j for j in mine if not cell_done(directory, names[j], settings)]
    again = [names[j] for j in todo if (directory / "cells" / f"{names[j]}.json").is_file()]
    if again:
        warnings.warn(f"rendering {len(again)} cells again whose PNG is missing or not the one "
                      f"its record names (damaged or replaced): {', '.join(again[:10])}",
                      stacklevel=2)
    renderer = _Renderer(model, layer, directory, cells, directions, settings, transforms,
                         worker)
    rendered, interrupted = 0, False
    bar = tqdm(total=len(todo), unit="cell", disable=not progress or rank != 0,
               desc="activation atlas")
    try:
        for start in range(0, len(todo), batch):
            part = todo[start:start + batch]
            if not renderer.render(part):
                interrupted = True
                break
            rendered += len(part)
            bar.update(len(part))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    missing = sum(not cell_done(directory, name, settings) for name in names)
    return RenderSummary(out=directory, rendered=rendered, skipped=len(mine) - len(todo),
                         missing=missing, seconds=time.perf_counter() - started,
                         interrupted=interrupted, worker=worker)
