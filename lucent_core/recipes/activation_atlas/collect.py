"""Activation atlases, step 1: activation vectors of one layer, gathered across a folder of images.

An activation atlas (Carter, Armstrong, Schubert, Johnson & Olah, "Exploring Neural Networks
with Activation Atlases", Distill 2019) maps the space of a layer as a whole rather than unit
by unit. Its raw material is a large sample of the layer's *activation vectors*: the ``C``
values that all channels take at one spatial position of one image. :func:`collect_activations`
streams every image of a folder through the model once and keeps ``per_image`` such vectors
per image, at random positions of the layer's ``(C, H, W)`` map, until ``samples`` vectors are
kept. For classifiers it also records which classes each vector supports most (see below), so
that the atlas can label its regions.

What it writes under the output directory ``out`` (rows ``0 .. count - 1`` of each array are
valid; :func:`load_vectors` reads it back)::

    collect.json       the settings, the progress ("files_done", "count") and skipped files
    files.json         the sorted relative paths of the image files (a JSON list)
    vectors.npy        float16 (samples, C): the activation vectors
    origins.npy        int32 (samples, 3): (file index, y, x) of each vector in the layer's map
    classes.npy        int32 (samples, k): a classifier's top classes per vector, best first
    class_scores.npy   float16 (samples, k): their attributions (absent for non-classifiers)

The positions of a file are drawn by a generator seeded by ``(seed, file index)``: a file gets
the same positions whatever the batch size, the workers or the point a run was resumed from.
Memory is bounded by the batch: the arrays are memory-mapped ``.npy`` files, filled in place.
The progress is saved after every batch, after the arrays are flushed, so a run stopped by
Ctrl-C or ``kill -9`` continues where it stopped and gives the same arrays as an uninterrupted
run.

Example:
    >>> import tempfile
    >>> from torch import nn
    >>> from lucent_core.io import save_png
    >>> folder = Path(tempfile.mkdtemp())
    >>> for i in range(3):
    ...     _ = save_png(np.full((8, 8, 3), i / 4), folder / f"grey{i}.png")
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> out = Path(tempfile.mkdtemp())
    >>> summary = collect_activations(net, folder, out, "1", per_image=2, image_size=8,
    ...                               workers=0, progress=False)
    >>> summary.count, load_vectors(out).vectors.shape
    (6, (6, 4))
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lucent_core import validate
from lucent_core.validate import flag, integers
from lucent_core.activations import run_layers
from lucent_core.hooks import frozen, model_device, model_revision, registry_name, resolve_layer
from lucent_core.image_folder import (ImageFiles, collate_images, files_sha256, image_files,
                                      leave_stopping_to_the_main_process, scan_lines)
from lucent_core.models.weights import state_dict_sha256
from lucent_core.preprocessing import preprocessing_of
from lucent_core.results import AtlasError, AtlasWriteError, differences, read_json, write_json
from lucent_core.units import layer_shapes

__all__ = ["COLLECT_FORMAT", "CollectSummary", "Collected", "collect_activations",
           "draw_positions", "load_vectors"]

COLLECT_FORMAT = 1
#: The settings of a collection: a directory made with other values is refused.
IDENTITY_KEYS = ("format", "model", "model_revision", "layer", "channels", "per_image",
                 "samples", "seed", "image_size", "images_sha256", "weights_sha256", "files",
                 "classes")

Preprocess = Callable[[torch.Tensor], torch.Tensor]


# --- the summary and the read-back ---------------------------------------------------------

@dataclass
class CollectSummary:
    """What one :func:`collect_activations` call did.

    Attributes:
        out: the output directory.
        files: image files found in the folder.
        count: vectors kept so far (this call and resumed ones).
        samples: the capacity: the most vectors kept.
        skipped: relative paths of the files that could not be read, in file order.
        seconds: wall time of this call.
        stopped_early: the capacity was full before every file was read: later files (or
            positions) were left out.
        processed: files read by this call.
        resumed: files read by earlier, interrupted calls that this call continued.
        interrupted: Ctrl-C stopped it; the progress is saved, run the same call again.
        already_complete: the collection existed already; nothing was done.
        reasons: why this call skipped each file it could not read (relative path -> error).
    """

    out: Path
    files: int
    count: int
    samples: int
    skipped: list[str]
    seconds: float
    stopped_early: bool = False
    processed: int = 0
    resumed: int = 0
    interrupted: bool = False
    already_complete: bool = False
    reasons: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        kept = f"{self.count} vectors kept (capacity {self.samples})"
        if self.already_complete:
            return f"already complete: {kept} from {self.files} files; nothing to do ({self.out})"
        lines = scan_lines(self.files, self.processed, self.seconds, self.resumed, kept,
                           self.skipped, self.reasons)
        if self.stopped_early:
            lines.append(f"stopped early: the capacity of {self.samples} vectors was reached "
                         "before the last file; raise samples= to keep more")
        lines.append("interrupted: the progress is saved; run the same command again to resume"
                     if self.interrupted else f"activation vectors: {self.out}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Collected:
    """A collection read back (read-only memory maps: nothing is loaded until used).

    Attributes:
        vectors: float16 ``(count, C)`` activation vectors.
        origins: int32 ``(count, 3)``: (file index, y, x) of each vector in the layer's map.
        classes: int32 ``(count, k)`` top classes per vector, best first; None without classes.
        class_scores: float16 ``(count, k)`` their attributions; None without classes.
        files: the sorted relative paths of the image files (``origins[:, 0]`` indexes it).
        settings: the content of ``collect.json``.
    """

    vectors: np.ndarray
    origins: np.ndarray
    classes: np.ndarray | None
    class_scores: np.ndarray | None
    files: list[str]
    settings: dict

    @property
    def count(self) -> int:
        """The number of vectors."""
        return len(self.vectors)

    @property
    def complete(self) -> bool:
        """Whether the collection is finished (every file read, or the capacity full)."""
        return bool(self.settings.get("complete"))


def _array_specs(samples: int, channels: int, classes: int) -> dict[str, tuple]:
    """File name -> (dtype, shape) of each array of a collection."""
    specs = {"vectors.npy": (np.float16, (samples, channels)),
             "origins.npy": (np.int32, (samples, 3))}
    if classes:
        specs.update({"classes.npy": (np.int32, (samples, classes)),
                      "class_scores.npy": (np.float16, (samples, classes))})
    return specs


def _open_arrays(out: Path, settings: dict, mode: str) -> dict[str, np.memmap]:
    """The collection's memory-mapped arrays: new (``"w+"``) or existing (``"r+"``, ``"r"``)."""
    arrays = {}
    for name, (dtype, shape) in _array_specs(settings["samples"], settings["channels"],
                                             settings["classes"]).items():
        path = out / name
        if mode == "w+":
            arrays[name] = open_memmap(path, mode="w+", dtype=dtype, shape=shape)
            continue
        try:
            found = np.load(path, mmap_mode=mode)
        except (OSError, ValueError) as error:
            raise AtlasError(f"{path} cannot be read ({error}): delete {out} (or collect.json "
                             "in it) to collect again") from error
        if found.dtype != dtype or found.shape != shape:
            raise AtlasError(f"{path} holds {found.dtype} {found.shape}, collect.json says "
                             f"{np.dtype(dtype)} {shape}: delete {out} to collect again")
        arrays[name] = found
    return arrays


def load_vectors(out: str | os.PathLike) -> Collected:
    """Read the activation vectors that :func:`collect_activations` wrote under ``out``.

    Args:
        out: the output directory of the collection.

    Returns:
        A :class:`Collected` whose arrays are read-only memory maps of the valid rows.

    Example:
        >>> import tempfile
        >>> load_vectors(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: no activation vectors in ...
    """
    out = Path(out)
    path = out / "collect.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no activation vectors in {out} (looked for {path}): collect them first with "
            "lucent_core.recipes.activation_atlas.collect_activations")
    settings = read_json(path)
    arrays = _open_arrays(out, settings, "r")
    count = settings["count"]
    rows = {name: array[:count] for name, array in arrays.items()}
    return Collected(vectors=rows["vectors.npy"], origins=rows["origins.npy"],
                     classes=rows.get("classes.npy"), class_scores=rows.get("class_scores.npy"),
                     files=read_json(out / "files.json"), settings=settings)


# --- reading one batch ---------------------------------------------------------------------

def draw_positions(seed: int, file_index: int, height: int, width: int, per_image: int
              ) -> np.ndarray:
    """The ``per_image`` distinct flat positions (``y * width + x``, ascending) drawn for one
    file: the same for the same ``(seed, file_index)``, whatever else happens.

    Example:
        >>> draw_positions(0, 7, 4, 4, 3).tolist() == draw_positions(0, 7, 4, 4, 3).tolist()
        True
    """
    rng = np.random.default_rng([seed % 2**64, file_index])
    return np.sort(rng.choice(height * width, size=per_image, replace=False))


def _attributions(model: nn.Module, module: nn.Module, x: torch.Tensor, k: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layer's activation (B, C, H, W), each image's ``k`` top logits' classes (B, k), and
    for each of them activation x gradient of its logit, summed over channels (B, k, H, W).

    The layer's output is swapped for a leaf tensor (the model sees a copy, which it may change
    in place): the gradients of the logits with respect to it are what the layer passes on.
    """
    leaf: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        if "act" not in leaf:  # a module called twice: its first output, as capture() keeps
            leaf["act"] = output.detach().requires_grad_()
            return leaf["act"].clone()

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x)
    finally:
        handle.remove()
    act = leaf["act"]
    top = logits.detach().topk(k, dim=1).indices
    maps = []
    for j in range(k):  # one backward per rank: the images of a batch are independent
        grad, = torch.autograd.grad(logits.gather(1, top[:, j:j + 1]).sum(), act,
                                    retain_graph=j < k - 1)
        maps.append((act.detach() * grad).sum(1))
    return act.detach(), top, torch.stack(maps, 1)


def _read_batch(model: nn.Module, module: nn.Module | None, layer: str, x: torch.Tensor,
                preprocess: Preprocess, where: torch.Tensor, classes: int) -> dict[str, np.ndarray]:
    """The rows of one batch (file by file, position by position) for each array."""
    batch, count = where.shape
    if classes:
        act, top, maps = _attributions(model, module, preprocess(x), classes)
    else:
        act = run_layers(model, x, [layer], preprocess)[layer]
    where = where.to(act.device)
    flat = act.flatten(2)  # (B, C, H*W)
    vectors = flat.gather(2, where[:, None].expand(-1, flat.shape[1], -1)).transpose(1, 2)
    rows = {"vectors.npy": vectors.reshape(batch * count, -1).float().cpu().numpy()
            .astype(np.float16)}
    if classes:
        scores = maps.flatten(2).gather(2, where[:, None].expand(-1, classes, -1))  # (B, k, P)
        scores, order = scores.transpose(1, 2).float().sort(dim=2, descending=True)
        ids = top[:, None].expand(-1, count, -1).gather(2, order)  # (B, P, k), best first
        rows["classes.npy"] = ids.reshape(batch * count, classes).cpu().numpy()
        rows["class_scores.npy"] = scores.reshape(batch * count, classes).cpu().numpy()
    return rows


# --- the job -------------------------------------------------------------------------------

def _refuse(path: Path, found: dict, wanted: dict) -> None:
    changed = differences({k: found.get(k) for k in IDENTITY_KEYS},
                          {k: wanted.get(k) for k in IDENTITY_KEYS})
    if changed:
        raise AtlasError(
            f"{path} was made with other settings; refusing to mix two collections. "
            "Differences: " + "; ".join(changed).replace(" in the atlas,", f" in {path.name},")
            + f". Use another output directory, or delete {path.parent} to start over.")


def _save(path: Path, record: dict, arrays: dict[str, np.memmap]) -> None:
    """Flush the arrays, then record the progress: a record never claims unwritten rows."""
    try:
        for array in arrays.values():
            array.flush()
        write_json(path, record)
    except OSError as error:
        raise AtlasWriteError(f"could not save the collection in {path.parent}: {error}. Fix "
                              "the problem (disk space, permissions) and run the same call "
                              "again to resume from the last saved batch.") from error


def _class_count(model: nn.Module, size: int, preprocess: Preprocess, classes: int) -> int:
    """``classes`` (at most the number of classes) if the model outputs (B, classes) logits,
    else 0."""
    if not classes:
        return 0
    device, dtype = model_device(model)
    with frozen(model), torch.no_grad():
        output = model(preprocess(torch.full((1, 3, size, size), 0.5, device=device,
                                             dtype=dtype)))
    is_logits = isinstance(output, torch.Tensor) and output.dim() == 2
    return min(classes, output.shape[1]) if is_logits else 0


def collect_activations(model: nn.Module, images: str | os.PathLike, out: str | os.PathLike,
                        layer: str, *, samples: int = 100_000, per_image: int = 8,
                        image_size: int = 224, seed: int = 0, classes: int = 5,
                        batch: int = 32, workers: int = 2, progress: bool = True,
                        preprocess: Preprocess | None = None, model_name: str | None = None
                        ) -> CollectSummary:
    """Collect activation vectors of ``layer`` at random positions of every image of a folder.

    Every ``.jpg``, ``.jpeg``, ``.png`` and ``.webp`` file under ``images`` (in subfolders too,
    in order of relative path) is read, resized so its shorter side is ``image_size`` and
    centre-cropped to a square, preprocessed (the model's own preprocessing by default) and run
    through the model. Of the layer's ``(C, H, W)`` map, the vectors at ``per_image`` distinct
    random positions are kept (positions drawn from ``(seed, file index)``), in file order, until
    ``samples`` vectors are kept: then the scan stops (the summary says so). Files that cannot
    be read are skipped and listed. The vectors are stored as float16 (values beyond +-65504
    are an error).

    Classes: when the model outputs ``(B, num_classes)`` logits and ``classes > 0``, each kept
    vector gets the classes it supports most, by *attribution*: activation x gradient of the
    class logit with respect to the layer's activation at its position, summed over channels
    (the vector's first-order contribution to the logit). To keep it cheap, only the image's
    ``classes`` highest logits are candidates (one backward pass each per batch); they are
    stored per vector ordered by its attribution, best first. Other models (an edge detector,
    an embedding whose output is not 2-D) get no classes. A model whose output is a 2-D
    embedding rather than logits should be given ``classes=0``.

    Resuming: the progress is saved after every batch; the same call again continues from
    there (after Ctrl-C or ``kill -9``) and gives the same arrays as an uninterrupted run. A
    finished collection is not scanned again. Other settings (model, weights, layer,
    ``per_image``, ``samples``, ``seed``, ``image_size``, ``classes``, or changed files) under an
    existing ``out`` are refused with the differences.

    Args:
        model: the network (on the device to run on).
        images: the folder of images.
        out: the output directory (see the module's docstring for what is written there).
        layer: the layer name; its output must be a spatial ``(B, C, H, W)`` map.
        samples: the capacity: the most vectors kept (the arrays' number of rows).
        per_image: vectors kept per image (at most ``H * W``).
        image_size: the square side images are resized and cropped to.
        seed: the seed of the positions.
        classes: top classes kept per vector for classifiers (0: none).
        batch: images per forward pass.
        workers: DataLoader worker processes that read and resize images (0: in this one).
        progress: show a progress bar over files.
        preprocess: model input preprocessing (default: the model's own).
        model_name: the model's name in ``collect.json`` (default: its registry name, else
            its class name).

    Returns:
        A :class:`CollectSummary` (printable).

    Example:
        >>> import tempfile
        >>> from lucent_core.io import save_png
        >>> folder = Path(tempfile.mkdtemp())
        >>> for i in range(4):
        ...     _ = save_png(np.full((8, 8, 3), i / 4), folder / f"grey{i}.png")
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(72, 5))
        >>> out = tempfile.mkdtemp()
        >>> summary = collect_activations(net, folder, out, "0", samples=10, per_image=3,
        ...                               image_size=8, classes=2, workers=0, progress=False)
        >>> summary.count, summary.stopped_early, load_vectors(out).classes.shape
        (10, True, (10, 2))
    """
    started = time.perf_counter()
    samples, per_image, image_size, batch = integers(
        1, samples=samples, per_image=per_image, image_size=image_size, batch=batch)
    classes, workers = integers(0, classes=classes, workers=workers)
    seed, progress = validate.seed("seed", seed), flag("progress", progress)
    preprocess = preprocessing_of(model, preprocess)
    folder, out = Path(images), Path(out)
    files = image_files(folder, skip=out)

    shape = layer_shapes(model, [layer], image_size, preprocess)[layer]
    if len(shape) != 3:
        raise ValueError(f"layer {layer!r} gives {shape} per image: an activation atlas needs "
                         "a spatial (C, H, W) map, such as a convolution's output")
    channels, height, width = shape
    if per_image > height * width:
        raise ValueError(f"per_image must be at most the {height} x {width} positions of layer "
                         f"{layer!r} at image_size {image_size}, got {per_image}")
    classes = _class_count(model, image_size, preprocess, classes)

    settings = {"format": COLLECT_FORMAT, "model": model_name or registry_name(model),
                "layer": layer, "channels": channels, "per_image": per_image,
                "samples": samples, "seed": seed, "image_size": image_size,
                "images_sha256": files_sha256(folder, files),
                "weights_sha256": state_dict_sha256(model),
                "images": str(folder.resolve()), "files": len(files), "classes": classes}
    if model_revision(model) != 1:  # left out at 1, as dataset examples do
        settings["model_revision"] = model_revision(model)
    path = out / "collect.json"
    if path.is_file():
        record = read_json(path)
        _refuse(path, record, settings)
        if record.get("images") != settings["images"]:  # the same files, moved: follow them
            write_json(path, {**record, "images": settings["images"]})
        if record["complete"]:
            return CollectSummary(out=out, files=len(files), count=record["count"],
                                  samples=samples, skipped=[s for s, _ in record["skipped"]],
                                  seconds=time.perf_counter() - started,
                                  stopped_early=record.get("stopped_early", False),
                                  already_complete=True)
        arrays = _open_arrays(out, record, "r+")
        record["images"] = settings["images"]
    else:
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "files.json", files)  # type: ignore[arg-type]  # a JSON list
            arrays = _open_arrays(out, settings, "w+")
        except OSError as error:
            raise AtlasWriteError(f"cannot write the collection in {out}: {error}") from error
        record = {**settings, "files_done": 0, "count": 0, "skipped": [], "complete": False,
                  "stopped_early": False}
        _save(path, record, arrays)

    resumed = record["files_done"]
    device, dtype = model_device(model)
    module = dict(model.named_modules())[resolve_layer(model, layer)] if classes else None
    reasons: dict[str, str] = {}
    interrupted = False
    bar = tqdm(total=len(files), initial=resumed, unit="img", disable=not progress,
               desc=f"collect {layer}")
    # the workers' parent, recorded before they start (forkserver: the server, unknown)
    parent = os.getpid() if workers and \
        torch.multiprocessing.get_start_method() != "forkserver" else None
    loader = DataLoader(ImageFiles(folder, files, image_size, resumed), batch_size=batch,
                        num_workers=workers, collate_fn=collate_images, shuffle=False,
                        worker_init_fn=partial(leave_stopping_to_the_main_process,
                                               parent=parent))
    try:
        with frozen(model):
            for numbers, pixels, bad, read in loader:
                count, done = record["count"], record["files_done"] + read
                if pixels is not None:
                    where = np.stack([draw_positions(seed, n, height, width, per_image)
                                      for n in numbers])
                    x = torch.from_numpy(pixels).to(device=device, dtype=dtype) / 255
                    rows = _read_batch(model, module, layer, x, preprocess,
                                       torch.from_numpy(where), classes)
                    broken = ~np.isfinite(rows["vectors.npy"]).all(1)
                    if broken.any():
                        raise FloatingPointError(
                            f"layer {layer!r} gives NaN, infinite or values beyond float16 "
                            f"(+-65504) for {files[numbers[broken.argmax() // per_image]]}")
                    rows["origins.npy"] = np.stack([numbers.repeat(per_image),
                                                    where.ravel() // width,
                                                    where.ravel() % width], 1)
                    take = min(samples - count, len(numbers) * per_image)
                    for name, array in arrays.items():
                        array[count:count + take] = rows[name][:take]
                    if take < len(numbers) * per_image:  # full inside this batch
                        done = int(numbers[(take - 1) // per_image]) + 1
                        record["stopped_early"] = True
                    record["count"] = count = count + take
                kept_bad = [(files[n], reason) for n, reason in bad if n < done]
                reasons.update(kept_bad)
                record["skipped"] += [list(entry) for entry in kept_bad]
                record["files_done"] = done
                if count == samples and done < len(files):
                    record["stopped_early"] = True
                record["complete"] = record["stopped_early"] or done == len(files)
                _save(path, record, arrays)
                bar.update(done - bar.n)
                if record["complete"]:
                    break
    except KeyboardInterrupt:  # the last finished batch is saved
        interrupted = True
    finally:
        bar.close()
    return CollectSummary(out=out, files=len(files), count=record["count"], samples=samples,
                          skipped=[s for s, _ in record["skipped"]],
                          seconds=time.perf_counter() - started,
                          stopped_early=record["stopped_early"],
                          processed=record["files_done"] - resumed, resumed=resumed,
                          interrupted=interrupted, reasons=reasons)
