"""The atlas renderer: many units per optimisation batch, resumable, split over ranks and shards."""

from __future__ import annotations

import math
import os
import shlex
import signal
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lucent_core import param as param_lib
from lucent_core._device import distributed_rank, parse_shard, to_device
from lucent_core.atlas.index import build_index
from lucent_core.atlas.plan import AtlasSettings, Batch, plan_batches, record_settings, \
    unit_seed
from lucent_core.atlas.store import AtlasStore
from lucent_core.param import seeded_batch
from lucent_core.hooks import model_device, model_revision, registry_name, same_layer
from lucent_core.preprocessing import Preprocessing, preprocessing_of
from lucent_core.models.weights import state_dict_sha256
from lucent_core.objectives import Objective
from lucent_core.render import render_vis
from lucent_core.transforms import standard_affine
from lucent_core.activations import run_layers
from lucent_core.recipes.quality import robustness
from lucent_core.units import Series, layer_shapes, select_units, unit_maps, unit_values
from lucent_core.version import __version__

__all__ = ["AtlasSummary", "render_atlas", "reproduce_command", "unit_values"]

SeriesSpec = Union[str, Series, Sequence[Union[str, Series]]]
HISTORY_POINTS = 17
_TRANSFORM_SALT = 0x5EED_7A45  # transform draws use a different stream from the initialisation


@dataclass
class AtlasSummary:
    """What one :func:`render_atlas` call did.

    Attributes:
        out: the atlas directory.
        rendered: units rendered by this call.
        skipped: units of this call's share that were already done (resumed).
        missing: requested units (all workers) still without a picture at the end.
        seconds: wall time of this call.
        interrupted: Ctrl-C stopped it (finished units are saved).
        index: the gallery's ``index.html`` if this call built the index, else None.
        worker: this call's share, ``(index, count)``.
        failed: units (``"series:unit"``) whose objective stopped being finite; each has a
            ``<unit>.failed.json`` record saying when, and counts as done (delete that file to
            try it again).
        failed_earlier: requested units with failure records from earlier runs (or other
            workers).
    """

    out: Path
    rendered: int
    skipped: int
    missing: int
    seconds: float
    interrupted: bool = False
    index: Path | None = None
    worker: tuple[int, int] = (0, 1)
    failed: list[str] = field(default_factory=list)
    failed_earlier: int = 0

    def __str__(self) -> str:
        rate = f" ({self.rendered / self.seconds:.2f} units/s)" if self.rendered else ""
        share = f"worker {self.worker[0]}/{self.worker[1]}: " if self.worker[1] > 1 else ""
        lines = [f"{share}rendered {self.rendered} units in {self.seconds:.1f}s{rate}, "
                 f"{self.skipped} already done"]
        if self.interrupted:
            lines.append("interrupted: every finished unit is saved; run the same command "
                         "again to resume")
        elif self.missing:
            lines.append(f"{self.missing} requested units are not rendered yet (other shards or "
                         f"ranks); the index is built when the last one finishes, or run "
                         f"`lucent-core atlas-index {self.out}`")
        if self.failed:
            shown = ", ".join(self.failed[:10]) + (" ..." if len(self.failed) > 10 else "")
            lines.append(f"{len(self.failed)} units failed (their objective stopped being "
                         f"finite): {shown}; see units/<unit>.failed.json in their series")
        if self.failed_earlier:
            lines.append(f"{self.failed_earlier} requested units failed in earlier runs or "
                         "other workers: see units/*.failed.json (delete one to try that unit "
                         "again)")
        if self.index is not None:
            lines.append(f"gallery: {self.index}")
        return "\n".join(lines)


def reproduce_command(settings: AtlasSettings, series: Series, unit: int,
                      threads: int | None = None) -> str:
    """The ``lucent-core atlas`` command that renders this one unit again, alone (the same
    pixels on the CPU, with the same ``threads``, torch version and CPU kind; on GPUs up to
    the rounding of batch-size-dependent kernels). ``threads``: the CPU thread count the unit
    was rendered with (``--threads``; None on GPUs, where it changes no picture).

    Example:
        >>> s = AtlasSettings(model="vgg16_hed", weights_sha256="ab", steps=64)
        >>> reproduce_command(s, Series("block4_conv3"), 7).split(" --out")[0]
        'lucent-core atlas --model vgg16_hed --layer block4_conv3 --units 7 --steps 64 \
--size 128 --param laplacian_pyramid --transforms standard --lr 0.05 --seed 0 \
--batch 1'
    """
    words = ["lucent-core", "atlas", "--model", settings.model]
    if settings.weights == "random":
        words.append("--random-weights")
        if settings.weights_seed is not None and settings.weights_seed != settings.seed:
            words += ["--weights-seed", str(settings.weights_seed)]
    elif settings.weights not in ("pretrained", "custom"):
        words += ["--weights", settings.weights]
    words += ["--layer", series.layer, "--units", str(unit), *series.command_words()]
    words += ["--steps", str(settings.steps), "--size", str(settings.size),
              "--param", settings.param]
    if not settings.decorrelate:
        words.append("--no-decorrelate")
    words += ["--transforms", settings.transforms, "--lr", repr(float(settings.lr)),
              "--seed", str(settings.seed)]
    if not settings.redirected_relu:
        words.append("--no-redirect")
    if settings.precision != "float32":
        words += ["--precision", settings.precision]
    if threads is not None:
        words += ["--threads", str(threads)]
    words += ["--batch", "1", "--out", f"reproduce-{series.dir}-{unit}"]
    return shlex.join(words)


def _param_factory(settings: AtlasSettings) -> Callable[[int], nn.Module]:
    return lambda batch: param_lib.make_param(settings.param, settings.size, batch=batch,
                                              decorrelate=settings.decorrelate)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


@contextmanager
def _finish_before_interrupt() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done (a batch is written), then deliver the
    first one to the handler that was there before (Ctrl-C: ``KeyboardInterrupt``; SIGTERM:
    by default, the end of the process, as at any other moment)."""
    received: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = [signal.signal(s, lambda number, _: received.append(number)) for s in signals]
    except ValueError:  # not the main thread: signals cannot be caught here anyway
        yield
        return
    try:
        yield
    finally:
        for number, handler in zip(signals, previous):
            signal.signal(number, handler)
    if received:
        signal.raise_signal(received[0])


def _number(value: torch.Tensor) -> float | None:
    """A JSON-safe float: None for NaN (JSON has no NaN)."""
    number = float(value)
    return None if math.isnan(number) else round(number, 6)


def _failure(values: torch.Tensor, image: np.ndarray, finite_row: bool = True) -> str | None:
    """Why a unit's render failed (its objective stopped being finite), or None."""
    if not finite_row:  # e.g. a dead SAE feature normalised as 0 / 0: the unit keeps its number
        return "its direction row has NaN or infinite values"
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):
        step = int(bad[0, 0])
        return (f"the objective became {float(values[step])} at step {step + 1}: the model "
                "overflows on this unit (try another learning rate or precision in a new atlas)")
    if not np.isfinite(image).all():
        return "the image became NaN"
    return None


def _history(values: torch.Tensor, column: int) -> dict:
    steps = values.shape[0]
    at = sorted({int(round(s)) for s in np.linspace(1, steps, min(steps, HISTORY_POINTS))})
    return {"steps": at, "values": [float(values[s - 1, column]) for s in at]}


class _BatchRenderer:
    """Renders one :class:`Batch` with per-unit seeds and builds the units' records."""

    def __init__(self, model: nn.Module, settings: AtlasSettings, preprocess: Preprocessing,
                 store: AtlasStore, worker: tuple[int, int], compile: bool = False):
        self.model, self.settings, self.preprocess = model, settings, preprocess
        self.store, self.worker, self.compile = store, worker, compile
        self.device, self.dtype = model_device(model)
        self.factory = _param_factory(settings)

    def _selection(self, series: Series, units: Sequence[int]
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The units as an index tensor, and their direction rows (direction series), both on
        the model's device once (not copied from the host at every step)."""
        rows = None if series.directions is None else \
            to_device(series.directions[list(units)], self.device)
        return torch.tensor(units, device=self.device), rows

    def _values_fn(self, series: Series, units: Sequence[int]) -> Callable[[dict], torch.Tensor]:
        index, rows = self._selection(series, units)
        return lambda acts: unit_values(acts[series.layer], series, index, rows)

    def _scores(self, series: Series, units: Sequence[int], saved: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Value, peak activation and robustness of each unit on its saved picture."""
        index, rows = self._selection(series, units)
        acts = run_layers(self.model, saved, [series.layer], self.preprocess)
        maps = unit_maps(acts[series.layer], series, index, rows).float()
        flat = maps.reshape(maps.shape[0], -1)  # (B,) maps of a (B, C) layer too
        robust = robustness(self.model, saved, series, units, directions=rows,
                            preprocess=self.preprocess)
        return flat.mean(1).cpu(), flat.amax(1).cpu(), robust

    def render(self, batch: Batch, units: Sequence[int],
               step_done: Callable[[int], object] = lambda units: None
               ) -> list[tuple[int, np.ndarray, dict]]:
        """Render ``units`` (of ``batch.series``); [] if Ctrl-C interrupted the render.
        ``step_done(len(units))`` is called after each optimisation step (a progress bar).

        On the CPU a lone unit is rendered beside a copy of itself (dropped after): oneDNN's
        batch-1 convolution kernels round differently from those of every larger batch,
        enough to change the picture, so the unit's reproduce command (which renders it
        alone) would not give back its atlas picture. (On GPUs the copy would buy nothing
        certain: cuDNN's kernels may differ between other batch sizes too.)
        """
        count = len(units)
        units = list(units) * 2 if count == 1 and self.device.type == "cpu" else list(units)
        series, settings = batch.series, self.settings
        seeds = [unit_seed(settings, series, u) for u in units]
        values_of = self._values_fn(series, units)
        history: list[torch.Tensor] = []
        threads = torch.get_num_threads()  # CPU pictures depend on it: recorded, and set
        command_threads = threads if self.device.type == "cpu" else None  # by the command

        def objective_fn(acts: dict) -> torch.Tensor:  # called once per step
            values = values_of(acts)
            history.append(values.detach())
            step_done(count)
            # a unit whose objective is no longer finite stops here (it is reported as
            # failed); the others, whose images it does not touch, render on
            return torch.where(torch.isfinite(values), values, torch.zeros_like(values)).sum()

        objective = Objective(objective_fn, [series.layer],
                              name=f"{len(units)} {series.kind}s of {series.layer}")
        transforms: object = []
        if settings.transforms == "standard":
            affine = standard_affine()
            generators = [torch.Generator().manual_seed(s ^ _TRANSFORM_SALT) for s in seeds]
            transforms = lambda x: affine(x, generators)  # noqa: E731
        started = time.perf_counter()
        result = render_vis(
            self.model, objective, param_f=seeded_batch(self.factory, seeds),
            optimizer=lambda params: torch.optim.Adam(params, lr=settings.lr),
            transforms=transforms, thresholds=(settings.steps,), progress=False,
            preprocess=self.preprocess, redirected_relu=settings.redirected_relu,
            autocast=None if settings.precision == "float32" else getattr(torch,
                                                                          settings.precision),
            compile=self.compile, check_images=False,  # a NaN image fails its unit only
            # on the CPU, oneDNN's channels-last kernels round more differently from one
            # batch size to another than contiguous ones (neither is exactly batch-invariant)
            channels_last=self.device.type != "cpu")
        if result.interrupted:
            return []
        # a failed unit's NaN image is never saved; zeros keep the cast quiet
        pixels = np.round(np.nan_to_num(result.image) * 255).astype(np.uint8)
        saved = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(self.device, self.dtype) / 255
        final, peaks, robust = self._scores(series, units, saved)
        trained = torch.stack(history).float().cpu()
        seconds = (time.perf_counter() - started) / count
        finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
        records = []
        for i, unit in enumerate(units[:count]):
            failure = _failure(trained[:, i], result.image[i], series.row_is_finite(unit))
            if failure:
                records.append((unit, None, {
                    "unit": unit, "series": series.dir, "failed": failure,
                    "command": reproduce_command(settings, series, unit, command_threads),
                    "seed": seeds[i], "finished_at": finished}))
                continue
            record = {
                "unit": unit,
                "image": self.store.image_path(series, unit).relative_to(
                    self.store.root).as_posix(),
                "series": series.dir, "layer": series.layer, "kind": series.kind,
                "source": series.source,
                "objective": series.objective_name(unit), "python": series.python(unit),
                "command": reproduce_command(settings, series, unit, command_threads),
                "activation": float(final[i]),
                "peak_activation": float(peaks[i]),
                "quality": {"robustness": _number(robust[i])},
                "activation_during_render": float(trained[-1, i]),
                "history": _history(trained, i),
                "seed": seeds[i],
                **record_settings(settings),
                "batch": count, "seconds": round(seconds, 3),
                "device": _device_name(self.device), "threads": threads,
                "lucent_core_version": __version__,
                "torch_version": torch.__version__,
                "worker": f"{self.worker[0]}/{self.worker[1]}",
                "finished_at": finished,
            }
            records.append((unit, pixels[i], record))
        return records


def _say_rendered_again(store: AtlasStore, batches: Sequence[Batch],
                        todos: Sequence[Sequence[int]]) -> None:
    """Warn once of the units to render that have a record: their PNG is missing, unreadable,
    damaged or replaced."""
    again = [f"{b.series.dir}:{u}" for b, todo in zip(batches, todos) for u in todo
             if store.record_path(b.series, u).is_file()]
    if again:
        shown = ", ".join(again[:10]) + (" ..." if len(again) > 10 else "")
        warnings.warn(f"rendering {len(again)} unit{'s' * (len(again) > 1)} again whose PNG is "
                      "missing, unreadable, or not the one its record's SHA256 names (damaged "
                      f"or replaced): {shown}", stacklevel=3)


def _as_series(series: SeriesSpec) -> list[Series]:
    items = [series] if isinstance(series, (str, Series)) else list(series)
    if not items:
        raise ValueError("give at least one layer (or Series) to render")
    out = [Series(s) if isinstance(s, str) else s for s in items]
    dirs = [s.dir for s in out]
    if len(set(dirs)) != len(dirs):
        raise ValueError(f"the same series is requested twice: {dirs}")
    return out


def _select_for_each(units: "str | Sequence[int] | None", counts: Sequence[int]
                     ) -> list[list[int]]:
    """The units of each series. A range that fits at least one of them is clipped to the
    others (one ``--units 0:512`` over layers of different widths); one that fits none is the
    error it is."""
    selected: list[list[int] | None] = []
    first_error = None
    for count in counts:
        try:
            selected.append(select_units(units, count))
        except IndexError as error:
            selected.append(None)
            first_error = first_error or error
    if all(chosen is None for chosen in selected):
        raise first_error
    return [select_units(units, count, clip_ranges=True) if chosen is None else chosen
            for chosen, count in zip(selected, counts)]


def render_atlas(model: nn.Module, out: str | os.PathLike, series: SeriesSpec,
                 units: "str | Sequence[int] | None" = None, *, batch: int = 64,
                 shard: "tuple[int, int] | str" = (0, 1), progress: bool = True,
                 index: bool = True, preprocess: Preprocessing | None = None,
                 model_name: str | None = None, compile: bool = False,
                 **settings: object) -> AtlasSummary:
    """Render every requested unit of one or more layers into an atlas directory.

    Units are optimised ``batch`` at a time (image ``i`` of a batch optimises unit ``i``); each
    unit's initialisation and transform draws come from its own seed, a hash of the settings,
    the series and the unit number, so a unit renders the same alone or in any batch (on the
    CPU to the pixel; on GPUs up to kernel rounding). Finished units are skipped: running the
    same call again after a crash resumes it. The call writes one PNG and one JSON record per
    unit (see :mod:`lucent_core.atlas.store`) and, once every requested unit exists, the manifest,
    contact sheets and HTML gallery (:func:`~lucent_core.atlas.build_index`).

    Scaling out: ``shard=(i, n)`` takes every n-th batch starting at i (e.g. Slurm array
    tasks); under ``torchrun`` (``WORLD_SIZE`` > 1) the batches are also split over the ranks
    (``RANK``). Workers never wait for one another; the one that finds every unit done builds
    the index. All workers can share one directory.

    Args:
        model: the network (on the device to render on).
        out: the atlas directory (created if needed).
        series: a layer name (its channels), a :class:`Series`, or a list of them.
        units: which units of each series: ``"0:64"``, ``[3, 7]``, ... (default: all).
        batch: units optimised together.
        shard: ``(i, n)`` or ``"i/n"``: this call's share of the work.
        progress: show a progress bar over every render step of every unit to render, with
            its ETA.
        index: build the manifest and gallery when the atlas is complete.
        preprocess: model input preprocessing (default: the model's own).
        model_name: the model's name in records (default: its registry name, else its class).
        compile: run the model's forward through ``torch.compile`` (see
            :func:`~lucent_core.render_vis`); compiled once, reused for every batch.
        **settings: :class:`AtlasSettings` fields: ``steps``, ``size``, ``param``,
            ``decorrelate``, ``transforms``, ``lr``, ``redirected_relu``, ``seed``,
            ``precision``, ``weights``.

    Returns:
        An :class:`AtlasSummary` (printable).

    Example:
        >>> import tempfile
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> summary = render_atlas(net, tempfile.mkdtemp(), "0", steps=4, size=16,
        ...                        progress=False)
        >>> summary.rendered, summary.missing
        (4, 0)
    """
    started = time.perf_counter()
    all_series = _as_series(series)
    for derived in ("weights_sha256", "model_revision"):
        if derived in settings:
            raise ValueError(f"{derived} is read from the model; do not pass it")
    settings["model_revision"] = model_revision(model)
    settings["model"] = model_name or registry_name(model)
    settings.setdefault("weights", getattr(model, "weights_origin", "custom"))
    if settings["weights"] == "random":
        settings.setdefault("weights_seed", getattr(model, "weights_seed", None))
    unknown = sorted(set(settings) - set(AtlasSettings.__dataclass_fields__))
    if unknown:
        valid = sorted(set(AtlasSettings.__dataclass_fields__) - {"weights_sha256", "model",
                                                               "model_revision"})
        raise ValueError(f"unknown atlas setting(s) {unknown}; valid settings: {valid}")
    atlas_settings = AtlasSettings(weights_sha256=state_dict_sha256(model), **settings)
    param_lib.check_param(atlas_settings.param, atlas_settings.decorrelate)
    preprocess = preprocessing_of(model, preprocess)
    shard_index, shard_count = parse_shard(shard)
    # ranks never wait for one another (no barrier, whose timeout a rank that finishes hours
    # before the others would hit): each renders its share; who finds it complete indexes
    rank, world = distributed_rank()
    worker = (shard_index * world + rank, shard_count * world)

    shapes = layer_shapes(model, sorted({s.layer for s in all_series}), atlas_settings.size,
                           preprocess)
    counts = []
    for s in all_series:
        s.check_layer(shapes[s.layer])
        counts.append(s.count(shapes[s.layer][0]))
    work = [(s, chosen) for s, chosen in zip(all_series, _select_for_each(units, counts))]
    mine = plan_batches(work, batch, *worker)
    # the atlas is created (and its settings fixed) only once the request is known to be valid
    store = AtlasStore(out)
    store.check_layer_spelling(all_series, lambda a, b: same_layer(model, a, b))
    store.open(atlas_settings)
    for s, count in zip(all_series, counts):
        store.open_series(s, count)
    for s in all_series:  # a stray file in a units folder stops here, before any render
        store.record_paths(store.root / s.dir)

    renderer = _BatchRenderer(model, atlas_settings, preprocess, store, worker, compile)
    rendered, interrupted, failed = 0, False, []
    with store.worker_lock(worker):  # the same share started twice fails here, at once
        todos = [[u for u in b.units if not store.is_done(b.series, u)] for b in mine]
        todo_total = sum(map(len, todos))
        skipped = sum(len(b.units) for b in mine) - todo_total
        _say_rendered_again(store, mine, todos)
        bar = tqdm(total=todo_total * atlas_settings.steps, unit="step",
                   disable=not progress or rank != 0,
                   desc=f"atlas {worker[0]}/{worker[1]}" if worker[1] > 1 else "atlas")
        try:
            for b, todo in zip(mine, todos):
                if not todo:
                    continue
                bar.set_postfix_str(f"{b.series.dir} {todo[0]}..{todo[-1]}")
                records = renderer.render(b, todo, bar.update)
                if not records:
                    interrupted = True
                    break
                with _finish_before_interrupt():
                    for unit, pixels, record in records:
                        if pixels is None:
                            store.write_failure(b.series, unit, record)
                            failed.append(f"{b.series.dir}:{unit}")
                        else:
                            store.write_unit(b.series, unit, pixels, record)
                            rendered += 1
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()

    missing = sum(not store.is_done(s, u) for s, chosen in work for u in chosen)
    failed_earlier = sum(store.failure_path(s, u).is_file() for s, chosen in work
                         for u in chosen) - len(failed)
    index_page = None
    if index and not interrupted and missing == 0:  # the last worker (shard or rank) to finish
        index_page = build_index(out, model=model)  # with the connections between layers
    return AtlasSummary(out=Path(out), rendered=rendered, skipped=skipped, missing=missing,
                        seconds=time.perf_counter() - started, interrupted=interrupted,
                        index=index_page, worker=worker, failed=failed,
                        failed_earlier=failed_earlier)

