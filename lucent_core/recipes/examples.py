"""Dataset examples: the images of a folder that excite each unit most, and where.

:func:`find_examples` streams a folder of images through a model once and keeps, for every
unit of a series (the channels of a layer, its centre neurons, or the rows of a direction
matrix), the ``top`` images with the highest *peak* activation: the maximum of the unit's
activation map over spatial positions. Each winner is saved as a crop of the input region that
the peak position sees (its receptive field,
:func:`~lucent_core.receptive_field.receptive_field`), and all of it is listed in one JSON file
that the atlas index and gallery read.

Layout (paths relative to the output directory, usually an atlas directory)::

    examples/<series dir>/examples.json           the result (written last: marks it finished)
    examples/<series dir>/crops/00012-0.png       unit 12's strongest example, cropped
    examples/<series dir>/progress.pt             the scan's running state, while unfinished

The scan is exact and deterministic: ties are broken by the lower file number (files are
sorted by their relative path), so the result does not depend on batch size, workers or on
where an interrupted scan was resumed. Memory is ``O(units * (top + batch))`` whatever the
number of images.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Sequence, Union

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lucent_core.validate import instance, integer, integers
from lucent_core.results import AtlasError, AtlasWriteError, check_layer_spelling, differences, \
    read_json, write_json
from lucent_core.hooks import (capture, frozen, model_device, model_revision, registry_name,
                               run_to_layers, same_layer)
from lucent_core.io import save_png, write_atomically
from lucent_core.preprocessing import preprocessing_of
from lucent_core.image_folder import (ImageFiles, collate_images, files_sha256, image_files,
                                      leave_stopping_to_the_main_process, load_square,
                                      scan_lines)
from lucent_core.models.weights import state_dict_sha256
from lucent_core.receptive_field import ReceptiveField, measure_receptive_field
from lucent_core.units import Series, layer_shapes, layer_unit_maps, select_units

__all__ = ["EXAMPLES_FORMAT", "ExamplesSummary", "find_examples", "load_examples"]

EXAMPLES_FORMAT = 1
DEFAULT_SIZE = 224
_NO_FILE = torch.iinfo(torch.int64).max  # the file number of an empty top-k slot

Preprocess = Callable[[torch.Tensor], torch.Tensor]


# --- the running top-k ---------------------------------------------------------------------

@dataclass(frozen=True)
class _TopK:
    """The best ``k`` files per unit so far, ordered by (peak descending, file number).

    ``values`` (U, k) float32 peaks, ``files`` (U, k) int64 file numbers (``_NO_FILE`` for an
    empty slot), ``positions`` (U, k, 2) int64 map positions; ``processed`` files read so far
    (in file order) and the numbers of those ``skipped``.
    """

    values: torch.Tensor
    files: torch.Tensor
    positions: torch.Tensor
    processed: int = 0
    skipped: tuple[int, ...] = ()

    @classmethod
    def empty(cls, units: int, k: int) -> "_TopK":
        return cls(torch.full((units, k), -math.inf), torch.full((units, k), _NO_FILE),
                   torch.full((units, k, 2), -1, dtype=torch.int64))

    def merged(self, values: torch.Tensor, files: torch.Tensor, positions: torch.Tensor,
               count: int, skipped: Sequence[int] = ()) -> "_TopK":
        """Merge a batch: ``values`` (B, U), ``files`` (B,), ``positions`` (B, U, 2)."""
        units, k = self.values.shape
        all_values = torch.cat([self.values, values.t().float()], 1)
        all_files = torch.cat([self.files, files.reshape(1, -1).expand(units, -1)], 1)
        all_positions = torch.cat([self.positions, positions.transpose(0, 1)], 1)
        # sort by file number, then stably by value: equal values keep the lower file first
        order = all_files.argsort(dim=1, stable=True)
        all_values, all_files = all_values.gather(1, order), all_files.gather(1, order)
        all_positions = all_positions.gather(1, order[..., None].expand(-1, -1, 2))
        best = all_values.sort(dim=1, descending=True, stable=True).indices[:, :k]
        return _TopK(all_values.gather(1, best), all_files.gather(1, best),
                     all_positions.gather(1, best[..., None].expand(-1, -1, 2)),
                     self.processed + count,
                     self.skipped + tuple(skipped) if skipped else self.skipped)


def _peaks(acts: torch.Tensor, series: Series, index: torch.Tensor,
           rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's peak of each chosen unit, (B, U), and its map position (y, x), (B, U, 2)."""
    maps = layer_unit_maps(acts, series, rows)
    if rows is None:
        maps = maps.index_select(1, index)
    batch, units = maps.shape[:2]
    if maps.dim() == 2:
        return maps.float().cpu(), torch.zeros(batch, units, 2, dtype=torch.int64)
    width = maps.shape[-1]
    peaks, where = maps.reshape(batch, units, -1).float().max(dim=2)  # first max on ties
    positions = torch.stack([where // width, where % width], dim=2)
    fixed = series.unit_kind.fixed_position(acts)
    if fixed is not None:  # every unit reads one position (a neuron: the layer's centre)
        positions = torch.tensor(fixed, device=acts.device).expand(batch, units, 2)
    return peaks.cpu(), positions.cpu()


# --- the job -------------------------------------------------------------------------------

@dataclass
class ExamplesSummary:
    """What one :func:`find_examples` call did.

    Attributes:
        path: the series' ``examples.json`` (written when the scan is finished).
        files: image files found in the folder.
        scanned: files read successfully so far (this call and resumed ones).
        skipped: relative paths of the files that could not be read, in file order.
        units: units in ``examples.json`` for this call's request.
        seconds: wall time of this call.
        processed: files read by this call (0 when resumed at the end, or already complete).
        resumed: files read by earlier, interrupted calls that this call continued.
        interrupted: Ctrl-C stopped it; the progress is saved, run the same call again.
        already_complete: the examples existed already; nothing was done.
        reasons: why this call skipped each file it could not read (relative path -> error).
    """

    path: Path
    files: int
    scanned: int
    skipped: list[str]
    units: int
    seconds: float
    processed: int = 0
    resumed: int = 0
    interrupted: bool = False
    already_complete: bool = False
    reasons: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.already_complete:
            return (f"already complete: {self.units} units, {self.files} files; nothing to do "
                    f"({self.path})")
        lines = scan_lines(self.files, self.processed, self.seconds, self.resumed,
                           f"{self.scanned} scanned", self.skipped, self.reasons)
        if self.interrupted:
            lines.append("interrupted: the progress is saved; run the same command again to "
                         "resume")
        else:
            lines.append(f"examples of {self.units} units: {self.path}")
        return "\n".join(lines)


def _as_series(series: Union[str, Series]) -> Series:
    if isinstance(series, str):
        return Series(series)
    return instance("series", series, Series, "a layer name or a lucent_core.atlas.Series")


def _write_error(error: OSError, what: str, where: Path) -> AtlasWriteError:
    return AtlasWriteError(
        f"could not write {what} in {where}: {error}. The scan's progress so far is kept in "
        f"progress.pt; fix the problem (disk space, permissions) and run the same command "
        f"again to resume.")


def _refuse(path: Path, found: dict, wanted: dict, directory: Path) -> None:
    changed = differences(found, wanted)
    if changed:
        raise AtlasError(
            f"{path} was made with other settings; refusing to mix two sets of dataset "
            f"examples. Differences: "
            + "; ".join(changed).replace(" in the atlas,", f" in {path.name},")
            + f". Use another output directory (--out), or delete {directory} to start over.")


def _save_progress(path: Path, identity: dict, units: list[int], state: _TopK) -> None:
    data = {"format": EXAMPLES_FORMAT, "identity": identity, "units": units,
            "values": state.values, "files": state.files, "positions": state.positions,
            "processed": state.processed, "skipped": list(state.skipped)}
    try:
        write_atomically(path, lambda tmp: torch.save(data, tmp))
    except OSError as error:
        raise _write_error(error, "the scan's progress", path.parent) from error


def _load_progress(path: Path, identity: dict, units: list[int], top: int) -> _TopK:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise AtlasError(f"{path} cannot be read ({type(error).__name__}: {error}); it was not "
                         "written by lucent-core (whose writes are atomic): delete it to scan "
                         "again from the start") from error
    _refuse(path, data.get("identity", {}), identity, path.parent)
    if data.get("units") != units:
        found = data.get("units") or []
        raise AtlasError(f"{path} holds an unfinished scan for {len(found)} units "
                         f"({_unit_list(found)}), not the {len(units)} asked for now "
                         f"({_unit_list(units)}); finish it first by running with its units, "
                         f"or delete {path} to start this scan instead")
    state = _TopK(data["values"], data["files"], data["positions"], int(data["processed"]),
                  tuple(int(n) for n in data["skipped"]))
    if state.values.shape != (len(units), top):
        raise AtlasError(f"{path} holds a top-k state of shape {tuple(state.values.shape)}, "
                         f"expected {(len(units), top)}: delete it to scan again")
    return state


def _unit_list(units: Sequence[int]) -> str:
    shown = ", ".join(str(u) for u in units[:8])
    return shown + (", ..." if len(units) > 8 else "")


def _check_atlas_weights(out: Path, weights_sha256: str) -> None:
    path = out / "atlas.json"
    if not path.is_file():
        return
    found = read_json(path).get("settings", {}).get("weights_sha256")
    if found != weights_sha256:
        raise AtlasError(f"{out} is an atlas rendered with weights {found}, but this model's "
                         f"weights are {weights_sha256}: dataset examples of other weights "
                         "would mislead. Use the atlas's model, or another --out.")


def find_examples(model: nn.Module, images: str | os.PathLike, out: str | os.PathLike,
                  series: Union[str, Series], *, top: int = 9,
                  units: "str | Sequence[int] | None" = None, batch_size: int = 32,
                  workers: int = 0, size: int | None = None,
                  preprocess: Preprocess | None = None, model_name: str | None = None,
                  progress: bool = True, checkpoint_every: int = 20) -> ExamplesSummary:
    """Find the images of a folder that activate each unit most, and crop what it sees.

    Every ``.jpg``, ``.jpeg``, ``.png`` and ``.webp`` file under ``images`` (any case, in
    subfolders too, in order of relative path) is opened, converted to RGB, resized so its
    shorter side is ``size`` (bilinear, antialiased) and centre-cropped to ``size`` x
    ``size``, then preprocessed and run up to the layer. Files that cannot be read are skipped
    and listed. For each unit the ``top`` files with the highest peak activation (maximum
    over the unit's activation map; ties: lower file first) are kept with the peak's map
    position; each is saved as the crop of its receptive-field box
    (:func:`~lucent_core.receptive_field.receptive_field`) in
    ``<out>/examples/<series dir>/crops/<unit:05d>-<rank>.png``, and everything is listed in
    ``<out>/examples/<series dir>/examples.json``::

        {"format": 1, "identity": {...}, "images": "<folder>", "files": N, "scanned": n,
         "skipped": ["bad.jpg", ...], "layer": ..., "kind": ..., "top": k, "size": S,
         "units": {"12": [{"image": "examples/<dir>/crops/00012-0.png",
                           "source": "sub/photo.jpg", "activation": 3.2,
                           "position": [y, x], "box": [top, left, bottom, right]}, ...]}}

    ``position`` is (row, column) in the layer's activation map (the centre for neurons,
    ``[0, 0]`` for layers without spatial dimensions); ``box`` is in pixels of the resized,
    cropped image, bottom and right exclusive.

    Resuming: the running top-k state is saved to ``progress.pt`` every ``checkpoint_every``
    batches, on Ctrl-C and at the end of the scan; the same call again continues from there
    and gives the same ``examples.json`` as an uninterrupted run. A finished series is not
    scanned again; asking for more units of it scans for the new ones and adds them. Other
    settings (model, weights, layer, kind, directions, ``top``, ``size``, or changed files)
    are refused with the differences. If ``out`` is an atlas, its weights must be the model's.

    Args:
        model: the network (on the device to run on).
        images: the folder of images.
        out: the output directory (usually the atlas directory).
        series: a layer name (its channels) or a :class:`~lucent_core.atlas.Series`
            (``"channel"``, ``"neuron"`` or ``"direction"``).
        top: examples kept per unit.
        units: which units: ``"0:64"``, ``[3, 7]``, ... (default: all).
        batch_size: images per forward pass.
        workers: DataLoader worker processes that read and resize images (0: in this one).
        size: the square image size (default: the model's ``config.input_size``, else 224).
        preprocess: model input preprocessing (default: the model's own).
        model_name: the model's name in the identity (default: its registry name, else its
            class name).
        progress: show a progress bar over files.
        checkpoint_every: save the scan's progress every this many batches.

    Returns:
        An :class:`ExamplesSummary` (printable).

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> folder = Path(tempfile.mkdtemp())
        >>> for i in range(3):
        ...     _ = save_png(np.full((8, 8, 3), i / 4), folder / f"grey{i}.png")
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 3))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(1.0), net[0].bias.zero_()
        >>> out = tempfile.mkdtemp()
        >>> summary = find_examples(net, folder, out, "0", top=2, size=8, progress=False)
        >>> summary.scanned, summary.units
        (3, 2)
        >>> [e["source"] for e in load_examples(out, "0")["units"]["0"]]
        ['grey2.png', 'grey1.png']
    """
    started = time.perf_counter()
    series = _as_series(series)
    if size is None:
        input_size = getattr(getattr(model, "config", None), "input_size", None)
        size = int(input_size[0]) if input_size else DEFAULT_SIZE
    top, batch_size, checkpoint_every, size = integers(
        1, top=top, batch_size=batch_size, checkpoint_every=checkpoint_every, size=size)
    workers = integer("workers", workers, minimum=0)
    preprocess = preprocessing_of(model, preprocess)
    folder, out = Path(images), Path(out)
    files = image_files(folder, skip=out)

    weights_sha256 = state_dict_sha256(model)
    identity = {"model": model_name or registry_name(model),
                "weights_sha256": weights_sha256, "layer": series.layer, "kind": series.kind,
                "directions_sha256": series.directions_sha256, "top": top, "size": size,
                "files_sha256": files_sha256(folder, files)}
    if model_revision(model) != 1:  # left out at 1, so that earlier results still resume
        identity["model_revision"] = model_revision(model)
    _check_atlas_weights(out, weights_sha256)
    check_layer_spelling(out, [series.layer], lambda a, b: same_layer(model, a, b))

    shape = layer_shapes(model, [series.layer], size, preprocess)[series.layer]
    if len(shape) not in (1, 3):
        raise ValueError(f"layer {series.layer!r} gives {shape} per image; need (C,) or (C, H, W)")
    series.check_layer(shape)
    wanted = select_units(units, series.count(shape[0]))
    broken = [u for u in wanted if not series.row_is_finite(u)]
    if broken:  # every example's activation would be NaN
        shown = ", ".join(map(str, broken[:10])) + (" ..." if len(broken) > 10 else "")
        raise ValueError(f"series direction row(s) {shown} hold NaN or infinite values: leave "
                         "them out with units= (command line: --units)")

    directory = out / "examples" / series.dir
    result_path, progress_path = directory / "examples.json", directory / "progress.pt"
    done: dict = {}
    if result_path.is_file():
        previous = read_json(result_path)
        _refuse(result_path, previous.get("identity", {}), identity, directory)
        done = previous.get("units", {})
    todo = [u for u in wanted if str(u) not in done]
    common = dict(path=result_path, files=len(files), units=len(wanted))
    if not todo:
        return ExamplesSummary(scanned=previous["scanned"], skipped=list(previous["skipped"]),
                               seconds=time.perf_counter() - started, already_complete=True,
                               **common)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AtlasWriteError(f"cannot create the examples directory {directory}: "
                              f"{error}") from error
    if not os.access(directory, os.W_OK):
        raise AtlasWriteError(f"the examples directory {directory} is not writable")

    state = _load_progress(progress_path, identity, todo, top) if progress_path.is_file() \
        else _TopK.empty(len(todo), top)
    resumed = saved = state.processed
    device, dtype = model_device(model)
    index = torch.tensor(todo, device=device)
    rows = None if series.directions is None else series.directions[todo].to(device)
    rf = measure_receptive_field(model, series.layer, size, preprocess, shape)
    reasons: dict[str, str] = {}
    interrupted = False
    bar = tqdm(total=len(files), initial=state.processed, unit="img", disable=not progress,
               desc=f"examples {series.dir}")
    try:
        if state.processed < len(files):
            # the workers' parent, recorded before they start (forkserver: the server, unknown)
            parent = os.getpid() if workers and \
                torch.multiprocessing.get_start_method() != "forkserver" else None
            loader = DataLoader(ImageFiles(folder, files, size, state.processed),
                                batch_size=batch_size, num_workers=workers,
                                collate_fn=collate_images, shuffle=False,
                                worker_init_fn=partial(leave_stopping_to_the_main_process,
                                                       parent=parent))
            with torch.no_grad(), frozen(model), capture(model, [series.layer]) as acts:
                for batch_number, (numbers, pixels, bad, count) in enumerate(loader, 1):
                    numbers = torch.from_numpy(numbers)
                    if pixels is not None:
                        x = torch.from_numpy(pixels).to(device=device, dtype=dtype) / 255
                        run_to_layers(model, preprocess(x), acts)
                        peaks, positions = _peaks(acts[series.layer], series, index, rows)
                        acts.clear()
                        if torch.isnan(peaks).any():
                            row = int(torch.isnan(peaks).any(1).nonzero()[0])
                            raise FloatingPointError(
                                f"the model gives NaN activations at {series.layer!r} for "
                                f"{files[int(numbers[row])]}")
                    else:
                        peaks = torch.empty(0, len(todo))
                        positions = torch.empty(0, len(todo), 2, dtype=torch.int64)
                    state = state.merged(peaks, numbers, positions, count, [n for n, _ in bad])
                    reasons.update((files[n], reason) for n, reason in bad)
                    bar.update(count)
                    if state.skipped:
                        bar.set_postfix_str(f"{len(state.skipped)} skipped", refresh=False)
                    if batch_number % checkpoint_every == 0:
                        _save_progress(progress_path, identity, todo, state)
                        saved = state.processed
            _save_progress(progress_path, identity, todo, state)
            saved = state.processed
        entries = _write_crops(folder, files, size, state, todo, rf, directory, out)
    except KeyboardInterrupt:
        interrupted = True
        if state.processed != saved:
            _save_progress(progress_path, identity, todo, state)
    except Exception:
        # the state holds whole batches only: keep them for a resume (a DataLoader worker
        # killed by the scheduler's SIGTERM, say), then report the error itself
        if state.processed != saved:
            try:
                _save_progress(progress_path, identity, todo, state)
            except AtlasWriteError:
                pass
        raise
    finally:
        bar.close()

    scanned = state.processed - len(state.skipped)
    skipped = [files[n] for n in state.skipped]
    if not interrupted:
        merged = {**done, **{str(u): entries[i] for i, u in enumerate(todo)}}
        data = {"format": EXAMPLES_FORMAT, "identity": identity, "images": str(images),
                "files": len(files), "scanned": scanned, "skipped": skipped,
                "layer": series.layer, "kind": series.kind, "top": top, "size": size,
                "units": {str(u): merged[str(u)] for u in sorted(map(int, merged))}}
        try:
            write_json(result_path, data)
            progress_path.unlink(missing_ok=True)
        except OSError as error:
            raise _write_error(error, "examples.json", directory) from error
    return ExamplesSummary(scanned=scanned, skipped=skipped,
                           seconds=time.perf_counter() - started,
                           processed=state.processed - resumed, resumed=resumed,
                           interrupted=interrupted, reasons=reasons, **common)


def _write_crops(folder: Path, files: Sequence[str], size: int, state: _TopK,
                 units: list[int], rf: ReceptiveField, directory: Path, out: Path
                 ) -> list[list[dict]]:
    """Save every winner's crop (one image open per file) and return each unit's entries."""
    entries: list[list[dict]] = [[] for _ in units]
    crops: dict[int, list[tuple[Path, tuple[int, int, int, int]]]] = {}
    for u, unit in enumerate(units):
        for rank in range(state.files.shape[1]):
            number = int(state.files[u, rank])
            if number == _NO_FILE:
                break
            y, x = (int(v) for v in state.positions[u, rank])
            box = rf.box(y, x)
            path = directory / "crops" / f"{unit:05d}-{rank}.png"
            crops.setdefault(number, []).append((path, box))
            entries[u].append({"image": path.relative_to(out).as_posix(),
                               "source": files[number],
                               "activation": float(state.values[u, rank]),
                               "position": [y, x], "box": list(box)})
    for number in sorted(crops):
        relative = files[number]
        try:
            pixels = load_square(folder / relative, size)
        except Exception as error:
            raise AtlasError(f"{relative} was read during the scan but cannot be read now "
                             f"({error}): the folder changed; delete "
                             f"{directory / 'progress.pt'} to scan it again") from error
        for crop_path, (top, left, bottom, right) in crops[number]:
            try:
                save_png(pixels[top:bottom, left:right], crop_path)
            except OSError as error:
                raise _write_error(error, f"the crop {crop_path.name}", directory) from error
    return entries


def load_examples(out: str | os.PathLike, series: Union[str, Series]) -> dict:
    """Read the ``examples.json`` of a series (see :func:`find_examples` for its format).

    Args:
        out: the output directory given to :func:`find_examples`.
        series: a layer name (its channels) or a :class:`~lucent_core.atlas.Series`.

    Returns:
        The parsed ``examples.json``; paths in it are relative to ``out``.

    Example:
        >>> import tempfile
        >>> load_examples(tempfile.mkdtemp(), "conv")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: no dataset examples for series 'conv' in ...
    """
    series = _as_series(series)
    path = Path(out) / "examples" / series.dir / "examples.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no dataset examples for series {series.dir!r} in {out} (looked for {path}): find "
            f"them first with `lucent-core examples --model MODEL --layer {series.layer} "
            f"--images FOLDER --out {out}` or lucent_core.recipes.examples.find_examples")
    return read_json(path)
